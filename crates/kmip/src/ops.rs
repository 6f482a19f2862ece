//! The operations: Create, Register, Get, Get Attributes, Get Attribute List, Add, Modify and
//! Delete Attribute, Locate, Activate, Revoke, Destroy, Query and Discover Versions (the
//! Baseline and Symmetric Key Lifecycle server profiles), on AES symmetric keys and secret
//! data. Everything else is answered Operation Failed / Operation Not Supported.
//!
//! The objects live in a [`Backend`] (Keyward's service: one KMIP adapter's objects, sealed
//! under its root key). This module checks every request and decides every state change; the
//! backend stores, seals and opens.

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::message::{self, ItemResult, Request, VERSIONS};
use crate::tags::{self, key_format, object_type, op, reason, state};
use crate::ttlv::{self, Limits, Ttlv, Value};

/// A failed operation: a Result Reason and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub reason: u32,
    pub message: String,
}

impl OpError {
    pub fn new(reason: u32, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
    pub fn not_found() -> Self {
        Self::new(
            reason::ITEM_NOT_FOUND,
            "no object with this Unique Identifier",
        )
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(reason::INVALID_FIELD, message)
    }
    fn missing(message: impl Into<String>) -> Self {
        Self::new(reason::MISSING_DATA, message)
    }
    fn denied(message: impl Into<String>) -> Self {
        Self::new(reason::PERMISSION_DENIED, message)
    }
}

type OpResult<T> = Result<T, OpError>;

/// One attribute instance (its value item carries the Attribute Value tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub value: Ttlv,
}

/// A managed object without its material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub uid: String,
    pub object_type: u32,
    pub state: u32,
    pub secret_data_type: Option<u32>,
    /// Stored attributes (Unique Identifier, Object Type and State are the fields above).
    pub attrs: Vec<Attr>,
}

/// Most attribute instances on one object.
pub const MAX_ATTRS: usize = 64;
/// Largest stored metadata of one object, in bytes.
pub const MAX_META: usize = 32 * 1024;
/// Largest secret data or key material, in bytes.
pub const MAX_MATERIAL: usize = 1024;

impl Object {
    /// The stored form of the attributes (and secret data type): TTLV bytes.
    pub fn encode_meta(&self) -> Vec<u8> {
        let mut items = Vec::new();
        if let Some(t) = self.secret_data_type {
            items.push(Ttlv::enumeration(tags::SECRET_DATA_TYPE, t));
        }
        items.extend(self.attrs.iter().map(attr_item));
        ttlv::encode(&Ttlv::structure(tags::KEYWARD_OBJECT_META, items))
    }

    /// Reads back what [`Object::encode_meta`] wrote.
    pub fn decode_meta(
        uid: String,
        object_type: u32,
        state: u32,
        meta: &[u8],
    ) -> Result<Object, ttlv::DecodeError> {
        let limits = Limits {
            max_message: MAX_META + 1024,
            ..Limits::default()
        };
        let t = ttlv::decode(meta, &limits)?;
        let mut obj = Object {
            uid,
            object_type,
            state,
            secret_data_type: None,
            attrs: Vec::new(),
        };
        for c in t.children() {
            if c.tag == tags::SECRET_DATA_TYPE {
                obj.secret_data_type = c.as_enum();
            } else if let Ok((name, _, value)) = read_attr(c) {
                obj.attrs.push(Attr { name, value });
            }
        }
        Ok(obj)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Attr> + 'a {
        self.attrs.iter().filter(move |a| a.name == name)
    }

    fn set(&mut self, name: &str, value: Value) {
        let value = Ttlv::new(tags::ATTRIBUTE_VALUE, value);
        match self.attrs.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr {
                name: name.into(),
                value,
            }),
        }
    }

    /// The Name attribute values (text), for listings.
    pub fn names(&self) -> Vec<String> {
        self.values(NAME)
            .filter_map(|a| {
                a.value
                    .child(tags::NAME_VALUE)?
                    .as_text()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Every attribute, computed ones first, as the client sees them.
    fn all_attrs(&self) -> Vec<Attr> {
        let mut v = vec![
            Attr {
                name: UNIQUE_IDENTIFIER.into(),
                value: Ttlv::text(tags::ATTRIBUTE_VALUE, self.uid.clone()),
            },
            Attr {
                name: OBJECT_TYPE.into(),
                value: Ttlv::enumeration(tags::ATTRIBUTE_VALUE, self.object_type),
            },
            Attr {
                name: STATE.into(),
                value: Ttlv::enumeration(tags::ATTRIBUTE_VALUE, self.state),
            },
        ];
        v.extend(self.attrs.iter().cloned());
        v
    }
}

/// What the backend stores for a new object.
#[derive(Debug)]
pub struct NewObject {
    pub object_type: u32,
    pub state: u32,
    pub secret_data_type: Option<u32>,
    pub attrs: Vec<Attr>,
}

/// Where one client's objects live. Every call is already scoped to the client's adapter.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
    /// Fresh random key material.
    fn random(&self, len: usize) -> OpResult<Zeroizing<Vec<u8>>>;
    /// Stores a new object with its material (sealed); returns its Unique Identifier.
    async fn insert(&self, obj: &NewObject, material: &[u8]) -> OpResult<String>;
    /// An object (not its material). [`OpError::not_found`] when it is not this client's.
    async fn load(&self, uid: &str) -> OpResult<Object>;
    /// The object's opened material (fails when the root key cannot open it).
    async fn material(&self, obj: &Object) -> OpResult<Zeroizing<Vec<u8>>>;
    /// Stores new attributes and state, only if the object is still as `before` was read.
    async fn update(&self, before: &Object, after: &Object) -> OpResult<()>;
    /// As `update`, and erases the material for good.
    async fn destroy(&self, before: &Object, after: &Object) -> OpResult<()>;
    /// The client's objects, oldest first (for Locate).
    async fn list(&self) -> OpResult<Vec<Object>>;
}

const UNIQUE_IDENTIFIER: &str = "Unique Identifier";
const OBJECT_TYPE: &str = "Object Type";
const STATE: &str = "State";
const NAME: &str = "Name";
const ALGORITHM: &str = "Cryptographic Algorithm";
const LENGTH: &str = "Cryptographic Length";
const USAGE_MASK: &str = "Cryptographic Usage Mask";
const INITIAL_DATE: &str = "Initial Date";
const LAST_CHANGE_DATE: &str = "Last Change Date";
const ACTIVATION_DATE: &str = "Activation Date";
const DEACTIVATION_DATE: &str = "Deactivation Date";
const COMPROMISE_DATE: &str = "Compromise Date";
const COMPROMISE_OCCURRENCE_DATE: &str = "Compromise Occurrence Date";
const DESTROY_DATE: &str = "Destroy Date";
const REVOCATION_REASON: &str = "Revocation Reason";
const OBJECT_GROUP: &str = "Object Group";
const CONTACT_INFORMATION: &str = "Contact Information";
const OPERATION_POLICY_NAME: &str = "Operation Policy Name";

/// Usage mask given to a created key when the client sets none: Encrypt | Decrypt.
const DEFAULT_USAGE_MASK: i32 = 0x04 | 0x08;

/// Attributes a client may add, modify and delete after creation.
fn client_mutable(name: &str) -> bool {
    matches!(name, NAME | OBJECT_GROUP | CONTACT_INFORMATION)
        || name.starts_with("x-")
        || name.starts_with("y-")
}

/// Attributes a client may set at Create or Register.
fn client_settable(name: &str) -> bool {
    client_mutable(name)
        || matches!(
            name,
            ALGORITHM | LENGTH | USAGE_MASK | OPERATION_POLICY_NAME
        )
}

fn multi_valued(name: &str) -> bool {
    matches!(name, NAME | OBJECT_GROUP) || name.starts_with("x-") || name.starts_with("y-")
}

/// Checks the type of a client-supplied value.
fn check_value(name: &str, v: &Ttlv) -> OpResult<()> {
    let ok = match name {
        NAME => {
            v.child(tags::NAME_VALUE).and_then(Ttlv::as_text).is_some()
                && v.child(tags::NAME_TYPE).and_then(Ttlv::as_enum).is_some()
                && v.children().len() == 2
        }
        ALGORITHM => v.as_enum().is_some(),
        LENGTH | USAGE_MASK => v.as_int().is_some(),
        OBJECT_GROUP | CONTACT_INFORMATION | OPERATION_POLICY_NAME => v.as_text().is_some(),
        _ => !matches!(v.value, Value::Structure(_)),
    };
    if ok {
        Ok(())
    } else {
        Err(OpError::new(
            reason::INVALID_FIELD,
            format!("the value of attribute `{name}` has the wrong type"),
        ))
    }
}

/// (name, index, value) of an Attribute structure.
fn read_attr(t: &Ttlv) -> OpResult<(String, Option<i32>, Ttlv)> {
    if t.tag != tags::ATTRIBUTE {
        return Err(OpError::invalid("expected an Attribute"));
    }
    let name = t
        .child(tags::ATTRIBUTE_NAME)
        .and_then(Ttlv::as_text)
        .ok_or_else(|| OpError::missing("an Attribute has no Attribute Name"))?
        .to_owned();
    let index = match t.child(tags::ATTRIBUTE_INDEX) {
        None => None,
        Some(i) => Some(
            i.as_int()
                .filter(|i| *i >= 0)
                .ok_or_else(|| OpError::invalid("bad Attribute Index"))?,
        ),
    };
    let value = t
        .child(tags::ATTRIBUTE_VALUE)
        .cloned()
        .ok_or_else(|| OpError::missing(format!("attribute `{name}` has no value")))?;
    Ok((name, index, value))
}

fn attr_item(a: &Attr) -> Ttlv {
    Ttlv::structure(
        tags::ATTRIBUTE,
        vec![
            Ttlv::text(tags::ATTRIBUTE_NAME, a.name.clone()),
            a.value.clone(),
        ],
    )
}

fn attr_item_indexed(a: &Attr, index: i32) -> Ttlv {
    Ttlv::structure(
        tags::ATTRIBUTE,
        vec![
            Ttlv::text(tags::ATTRIBUTE_NAME, a.name.clone()),
            Ttlv::int(tags::ATTRIBUTE_INDEX, index),
            a.value.clone(),
        ],
    )
}

/// Adds client-supplied attribute instances (at Create or Register, or Add Attribute).
fn add_attr(attrs: &mut Vec<Attr>, name: String, value: Ttlv, at_creation: bool) -> OpResult<i32> {
    let allowed = if at_creation {
        client_settable(&name)
    } else {
        client_mutable(&name)
    };
    if !allowed {
        return Err(OpError::denied(format!(
            "attribute `{name}` cannot be set by the client"
        )));
    }
    check_value(&name, &value)?;
    let count = attrs.iter().filter(|a| a.name == name).count();
    if count > 0 && !multi_valued(&name) {
        return Err(OpError::invalid(format!(
            "attribute `{name}` has a single value"
        )));
    }
    if attrs.len() >= MAX_ATTRS {
        return Err(OpError::new(
            reason::PERMISSION_DENIED,
            format!("at most {MAX_ATTRS} attributes per object"),
        ));
    }
    attrs.push(Attr { name, value });
    Ok(count as i32)
}

fn template_attrs(payload: &Ttlv) -> OpResult<Vec<Attr>> {
    let mut attrs = Vec::new();
    if let Some(t) = payload.child(tags::TEMPLATE_ATTRIBUTE) {
        if t.child(tags::NAME).is_some() {
            return Err(OpError::new(
                reason::FEATURE_NOT_SUPPORTED,
                "templates are not supported",
            ));
        }
        for a in t.children_with(tags::ATTRIBUTE) {
            let (name, _, value) = read_attr(a)?;
            add_attr(&mut attrs, name, value, true)?;
        }
    }
    Ok(attrs)
}

fn enum_of(attrs: &[Attr], name: &str) -> Option<u32> {
    attrs.iter().find(|a| a.name == name)?.value.as_enum()
}
fn int_of(attrs: &[Attr], name: &str) -> Option<i32> {
    attrs.iter().find(|a| a.name == name)?.value.as_int()
}

/// One request's state: the ID placeholder.
struct Ctx<'b> {
    backend: &'b dyn Backend,
    placeholder: Option<String>,
}

impl Ctx<'_> {
    fn uid(&self, payload: &Ttlv) -> OpResult<String> {
        match payload.child(tags::UNIQUE_IDENTIFIER) {
            Some(u) => u
                .as_text()
                .map(str::to_owned)
                .ok_or_else(|| OpError::invalid("the Unique Identifier is not a text string")),
            None => self
                .placeholder
                .clone()
                .ok_or_else(|| OpError::missing("no Unique Identifier and no ID placeholder")),
        }
    }

    async fn object(&self, payload: &Ttlv) -> OpResult<Object> {
        let uid = self.uid(payload)?;
        self.backend.load(&uid).await
    }

    fn touched(&self, obj: &mut Object) {
        obj.set(LAST_CHANGE_DATE, Value::DateTime(self.backend.now()));
    }

    async fn run(&mut self, operation: u32, payload: &Ttlv) -> OpResult<Vec<Ttlv>> {
        match operation {
            op::CREATE => self.create(payload).await,
            op::REGISTER => self.register(payload).await,
            op::GET => self.get(payload).await,
            op::GET_ATTRIBUTES => self.get_attributes(payload).await,
            op::GET_ATTRIBUTE_LIST => self.get_attribute_list(payload).await,
            op::ADD_ATTRIBUTE => self.add_attribute(payload).await,
            op::MODIFY_ATTRIBUTE => self.modify_attribute(payload).await,
            op::DELETE_ATTRIBUTE => self.delete_attribute(payload).await,
            op::LOCATE => self.locate(payload).await,
            op::ACTIVATE => self.activate(payload).await,
            op::REVOKE => self.revoke(payload).await,
            op::DESTROY => self.destroy(payload).await,
            op::QUERY => Ok(query(payload)),
            op::DISCOVER_VERSIONS => Ok(discover_versions(payload)),
            other => Err(OpError::new(
                reason::OPERATION_NOT_SUPPORTED,
                format!("operation {other:#x} is not supported"),
            )),
        }
    }

    fn new_attrs(&self, mut attrs: Vec<Attr>) -> Vec<Attr> {
        let now = self.backend.now();
        for (n, v) in [(INITIAL_DATE, now), (LAST_CHANGE_DATE, now)] {
            attrs.push(Attr {
                name: n.into(),
                value: Ttlv::datetime(tags::ATTRIBUTE_VALUE, v),
            });
        }
        attrs
    }

    async fn create(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let ty = p
            .child(tags::OBJECT_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| OpError::missing("the Object Type is missing"))?;
        if ty != object_type::SYMMETRIC_KEY {
            return Err(OpError::new(
                reason::FEATURE_NOT_SUPPORTED,
                "Create makes symmetric keys only",
            ));
        }
        let mut attrs = template_attrs(p)?;
        if enum_of(&attrs, ALGORITHM) != Some(tags::ALGORITHM_AES) {
            return Err(OpError::new(
                reason::INVALID_FIELD,
                "Cryptographic Algorithm must be AES",
            ));
        }
        let bits = int_of(&attrs, LENGTH)
            .ok_or_else(|| OpError::missing("the Cryptographic Length is missing"))?;
        if !matches!(bits, 128 | 192 | 256) {
            return Err(OpError::invalid(
                "Cryptographic Length must be 128, 192 or 256",
            ));
        }
        if int_of(&attrs, USAGE_MASK).is_none() {
            attrs.push(Attr {
                name: USAGE_MASK.into(),
                value: Ttlv::int(tags::ATTRIBUTE_VALUE, DEFAULT_USAGE_MASK),
            });
        }
        let material = self.backend.random(bits as usize / 8)?;
        let obj = NewObject {
            object_type: ty,
            state: state::PRE_ACTIVE,
            secret_data_type: None,
            attrs: self.new_attrs(attrs),
        };
        let uid = self.backend.insert(&obj, &material).await?;
        self.placeholder = Some(uid.clone());
        Ok(vec![
            Ttlv::enumeration(tags::OBJECT_TYPE, ty),
            Ttlv::text(tags::UNIQUE_IDENTIFIER, uid),
        ])
    }

    async fn register(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let ty = p
            .child(tags::OBJECT_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| OpError::missing("the Object Type is missing"))?;
        let mut attrs = template_attrs(p)?;
        let (obj_tag, formats): (u32, &[u32]) = match ty {
            object_type::SYMMETRIC_KEY => (
                tags::SYMMETRIC_KEY,
                &[key_format::RAW, key_format::TRANSPARENT_SYMMETRIC_KEY],
            ),
            object_type::SECRET_DATA => (tags::SECRET_DATA, &[key_format::OPAQUE]),
            _ => {
                return Err(OpError::new(
                    reason::FEATURE_NOT_SUPPORTED,
                    "Register takes symmetric keys and secret data only",
                ))
            }
        };
        let object = p
            .child(obj_tag)
            .ok_or_else(|| OpError::missing("the object to register is missing"))?;
        let block = object
            .child(tags::KEY_BLOCK)
            .ok_or_else(|| OpError::missing("the Key Block is missing"))?;
        let format = block
            .child(tags::KEY_FORMAT_TYPE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| OpError::missing("the Key Format Type is missing"))?;
        if !formats.contains(&format) {
            return Err(OpError::new(
                reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "unsupported Key Format Type",
            ));
        }
        if block.child(tags::KEY_WRAPPING_DATA).is_some()
            || block.child(tags::KEY_COMPRESSION_TYPE).is_some()
        {
            return Err(OpError::new(
                reason::FEATURE_NOT_SUPPORTED,
                "wrapped or compressed key blocks are not supported",
            ));
        }
        let value = block
            .child(tags::KEY_VALUE)
            .ok_or_else(|| OpError::missing("the Key Value is missing"))?;
        let km = value
            .child(tags::KEY_MATERIAL)
            .ok_or_else(|| OpError::missing("the Key Material is missing"))?;
        let material = match (&km.value, format) {
            (Value::ByteString(b), key_format::RAW | key_format::OPAQUE) => b.as_slice(),
            (Value::Structure(_), key_format::TRANSPARENT_SYMMETRIC_KEY) => km
                .child(tags::KEY)
                .and_then(Ttlv::as_bytes)
                .ok_or_else(|| OpError::missing("the Key is missing"))?,
            _ => {
                return Err(OpError::invalid(
                    "the Key Material does not match its format",
                ))
            }
        };
        if material.is_empty() || material.len() > MAX_MATERIAL {
            return Err(OpError::invalid(format!(
                "the key material must be 1 to {MAX_MATERIAL} bytes"
            )));
        }
        for a in value.children_with(tags::ATTRIBUTE) {
            let (name, _, v) = read_attr(a)?;
            add_attr(&mut attrs, name, v, true)?;
        }
        let mut secret_data_type = None;
        if ty == object_type::SYMMETRIC_KEY {
            let block_alg = block
                .child(tags::CRYPTOGRAPHIC_ALGORITHM)
                .and_then(Ttlv::as_enum);
            let block_len = block
                .child(tags::CRYPTOGRAPHIC_LENGTH)
                .and_then(Ttlv::as_int);
            let alg = enum_of(&attrs, ALGORITHM).or(block_alg);
            let bits = (material.len() * 8) as i32;
            for given in [int_of(&attrs, LENGTH), block_len].into_iter().flatten() {
                if given != bits {
                    return Err(OpError::invalid(
                        "the Cryptographic Length does not match the key material",
                    ));
                }
            }
            if block_alg.is_some() && enum_of(&attrs, ALGORITHM).is_some() && block_alg != alg {
                return Err(OpError::invalid("two different Cryptographic Algorithms"));
            }
            let alg =
                alg.ok_or_else(|| OpError::missing("the Cryptographic Algorithm is missing"))?;
            if alg == tags::ALGORITHM_AES && !matches!(bits, 128 | 192 | 256) {
                return Err(OpError::invalid("an AES key is 128, 192 or 256 bits"));
            }
            if enum_of(&attrs, ALGORITHM).is_none() {
                attrs.push(Attr {
                    name: ALGORITHM.into(),
                    value: Ttlv::enumeration(tags::ATTRIBUTE_VALUE, alg),
                });
            }
            if int_of(&attrs, LENGTH).is_none() {
                attrs.push(Attr {
                    name: LENGTH.into(),
                    value: Ttlv::int(tags::ATTRIBUTE_VALUE, bits),
                });
            }
        } else {
            secret_data_type = Some(
                object
                    .child(tags::SECRET_DATA_TYPE)
                    .and_then(Ttlv::as_enum)
                    .ok_or_else(|| OpError::missing("the Secret Data Type is missing"))?,
            );
        }
        if int_of(&attrs, USAGE_MASK).is_none() {
            attrs.push(Attr {
                name: USAGE_MASK.into(),
                value: Ttlv::int(tags::ATTRIBUTE_VALUE, DEFAULT_USAGE_MASK),
            });
        }
        let obj = NewObject {
            object_type: ty,
            state: state::PRE_ACTIVE,
            secret_data_type,
            attrs: self.new_attrs(attrs),
        };
        let uid = self.backend.insert(&obj, material).await?;
        self.placeholder = Some(uid.clone());
        Ok(vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, uid)])
    }

    async fn get(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let obj = self.object(p).await?;
        if p.child(tags::KEY_WRAPPING_SPECIFICATION).is_some()
            || p.child(tags::KEY_COMPRESSION_TYPE).is_some()
        {
            return Err(OpError::new(
                reason::FEATURE_NOT_SUPPORTED,
                "key wrapping and compression are not supported",
            ));
        }
        if matches!(obj.state, state::DESTROYED | state::DESTROYED_COMPROMISED) {
            return Err(OpError::new(
                reason::ITEM_NOT_FOUND,
                "the object was destroyed: its key material is gone",
            ));
        }
        let asked = p.child(tags::KEY_FORMAT_TYPE).map(|f| f.as_enum());
        let material = self.backend.material(&obj).await?;
        let mut block = Vec::new();
        let object = if obj.object_type == object_type::SYMMETRIC_KEY {
            let format = match asked {
                None => key_format::RAW,
                Some(Some(f @ (key_format::RAW | key_format::TRANSPARENT_SYMMETRIC_KEY))) => f,
                Some(_) => {
                    return Err(OpError::new(
                        reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                        "a symmetric key is served as Raw or Transparent Symmetric Key",
                    ))
                }
            };
            block.push(Ttlv::enumeration(tags::KEY_FORMAT_TYPE, format));
            let km = if format == key_format::RAW {
                Ttlv::bytes(tags::KEY_MATERIAL, material.to_vec())
            } else {
                Ttlv::structure(
                    tags::KEY_MATERIAL,
                    vec![Ttlv::bytes(tags::KEY, material.to_vec())],
                )
            };
            block.push(Ttlv::structure(tags::KEY_VALUE, vec![km]));
            if let Some(a) = enum_of(&obj.attrs, ALGORITHM) {
                block.push(Ttlv::enumeration(tags::CRYPTOGRAPHIC_ALGORITHM, a));
            }
            block.push(Ttlv::int(
                tags::CRYPTOGRAPHIC_LENGTH,
                (material.len() * 8) as i32,
            ));
            Ttlv::structure(
                tags::SYMMETRIC_KEY,
                vec![Ttlv::structure(tags::KEY_BLOCK, block)],
            )
        } else {
            if !matches!(asked, None | Some(Some(key_format::OPAQUE))) {
                return Err(OpError::new(
                    reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                    "secret data is served as Opaque",
                ));
            }
            block.push(Ttlv::enumeration(tags::KEY_FORMAT_TYPE, key_format::OPAQUE));
            block.push(Ttlv::structure(
                tags::KEY_VALUE,
                vec![Ttlv::bytes(tags::KEY_MATERIAL, material.to_vec())],
            ));
            Ttlv::structure(
                tags::SECRET_DATA,
                vec![
                    Ttlv::enumeration(tags::SECRET_DATA_TYPE, obj.secret_data_type.unwrap_or(1)),
                    Ttlv::structure(tags::KEY_BLOCK, block),
                ],
            )
        };
        Ok(vec![
            Ttlv::enumeration(tags::OBJECT_TYPE, obj.object_type),
            Ttlv::text(tags::UNIQUE_IDENTIFIER, obj.uid),
            object,
        ])
    }

    async fn get_attributes(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let obj = self.object(p).await?;
        let mut names = Vec::new();
        for n in p.children_with(tags::ATTRIBUTE_NAME) {
            names.push(
                n.as_text()
                    .ok_or_else(|| OpError::invalid("an Attribute Name is not a text string"))?,
            );
        }
        let mut out = vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, obj.uid.clone())];
        let all = obj.all_attrs();
        let mut index: Vec<(String, i32)> = Vec::new();
        for a in &all {
            let i = match index.iter_mut().find(|(n, _)| *n == a.name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    index.push((a.name.clone(), 0));
                    0
                }
            };
            if names.is_empty() || names.contains(&a.name.as_str()) {
                out.push(if multi_valued(&a.name) {
                    attr_item_indexed(a, i)
                } else {
                    attr_item(a)
                });
            }
        }
        Ok(out)
    }

    async fn get_attribute_list(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let obj = self.object(p).await?;
        let mut out = vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, obj.uid.clone())];
        let mut seen: Vec<String> = Vec::new();
        for a in obj.all_attrs() {
            if !seen.contains(&a.name) {
                out.push(Ttlv::text(tags::ATTRIBUTE_NAME, a.name.clone()));
                seen.push(a.name);
            }
        }
        Ok(out)
    }

    fn attribute_arg(p: &Ttlv) -> OpResult<(String, Option<i32>, Ttlv)> {
        read_attr(
            p.child(tags::ATTRIBUTE)
                .ok_or_else(|| OpError::missing("the Attribute is missing"))?,
        )
    }

    async fn add_attribute(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        let (name, _, value) = Self::attribute_arg(p)?;
        let mut after = before.clone();
        let index = add_attr(&mut after.attrs, name, value, false)?;
        let added = after
            .attrs
            .last()
            .cloned()
            .ok_or_else(|| OpError::missing("?"))?;
        self.touched(&mut after);
        self.backend.update(&before, &after).await?;
        Ok(vec![
            Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid),
            attr_item_indexed(&added, index),
        ])
    }

    /// The position in `attrs` of instance `index` of `name`.
    fn position(obj: &Object, name: &str, index: i32) -> OpResult<usize> {
        obj.attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.name == name)
            .nth(index as usize)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                OpError::new(
                    reason::ITEM_NOT_FOUND,
                    format!("attribute `{name}` has no instance {index}"),
                )
            })
    }

    async fn modify_attribute(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        let (name, index, value) = Self::attribute_arg(p)?;
        if !client_mutable(&name) {
            return Err(OpError::denied(format!(
                "attribute `{name}` cannot be modified by the client"
            )));
        }
        check_value(&name, &value)?;
        let index = index.unwrap_or(0);
        let mut after = before.clone();
        let at = Self::position(&after, &name, index)?;
        after.attrs[at].value = value;
        let changed = after.attrs[at].clone();
        self.touched(&mut after);
        self.backend.update(&before, &after).await?;
        Ok(vec![
            Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid),
            attr_item_indexed(&changed, index),
        ])
    }

    async fn delete_attribute(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        let name = p
            .child(tags::ATTRIBUTE_NAME)
            .and_then(Ttlv::as_text)
            .ok_or_else(|| OpError::missing("the Attribute Name is missing"))?
            .to_owned();
        let index = match p.child(tags::ATTRIBUTE_INDEX) {
            None => 0,
            Some(i) => i
                .as_int()
                .filter(|i| *i >= 0)
                .ok_or_else(|| OpError::invalid("bad Attribute Index"))?,
        };
        if !client_mutable(&name) {
            return Err(OpError::denied(format!(
                "attribute `{name}` cannot be deleted by the client"
            )));
        }
        let mut after = before.clone();
        let at = Self::position(&after, &name, index)?;
        let removed = after.attrs.remove(at);
        self.touched(&mut after);
        self.backend.update(&before, &after).await?;
        Ok(vec![
            Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid),
            attr_item_indexed(&removed, index),
        ])
    }

    async fn locate(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let max = match p.child(tags::MAXIMUM_ITEMS) {
            None => usize::MAX,
            Some(m) => {
                m.as_int()
                    .filter(|m| *m >= 0)
                    .ok_or_else(|| OpError::invalid("bad Maximum Items"))? as usize
            }
        };
        let offset = match p.child(tags::OFFSET_ITEMS) {
            None => 0,
            Some(m) => {
                m.as_int()
                    .filter(|m| *m >= 0)
                    .ok_or_else(|| OpError::invalid("bad Offset Items"))? as usize
            }
        };
        let mut wanted = Vec::new();
        for a in p.children_with(tags::ATTRIBUTE) {
            let (name, _, value) = read_attr(a)?;
            wanted.push(Attr { name, value });
        }
        let objects = self.backend.list().await?;
        let found: Vec<String> = objects
            .into_iter()
            .filter(|o| {
                let all = o.all_attrs();
                wanted.iter().all(|w| all.iter().any(|a| a == w))
            })
            .map(|o| o.uid)
            .collect();
        let total = found.len();
        let mut out = Vec::new();
        if p.child(tags::OFFSET_ITEMS).is_some() {
            out.push(Ttlv::int(
                tags::LOCATED_ITEMS,
                total.min(i32::MAX as usize) as i32,
            ));
        }
        out.extend(
            found
                .into_iter()
                .skip(offset)
                .take(max)
                .map(|u| Ttlv::text(tags::UNIQUE_IDENTIFIER, u)),
        );
        Ok(out)
    }

    async fn activate(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        if before.state != state::PRE_ACTIVE {
            return Err(OpError::denied(
                "the object is not pre-active and cannot be activated",
            ));
        }
        // The root key must still open it.
        self.backend.material(&before).await?;
        let mut after = before.clone();
        after.state = state::ACTIVE;
        after.set(ACTIVATION_DATE, Value::DateTime(self.backend.now()));
        self.touched(&mut after);
        self.backend.update(&before, &after).await?;
        Ok(vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid)])
    }

    async fn revoke(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        let rr = p
            .child(tags::REVOCATION_REASON)
            .ok_or_else(|| OpError::missing("the Revocation Reason is missing"))?;
        let code = rr
            .child(tags::REVOCATION_REASON_CODE)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| OpError::missing("the Revocation Reason Code is missing"))?;
        if rr
            .child(tags::REVOCATION_MESSAGE)
            .is_some_and(|m| m.as_text().is_none())
        {
            return Err(OpError::invalid("the Revocation Message is not text"));
        }
        let now = self.backend.now();
        let mut after = before.clone();
        let compromise = matches!(
            code,
            tags::REVOCATION_KEY_COMPROMISE | tags::REVOCATION_CA_COMPROMISE
        );
        if compromise {
            if !matches!(
                before.state,
                state::PRE_ACTIVE | state::ACTIVE | state::DEACTIVATED
            ) {
                return Err(OpError::denied("the object cannot be marked compromised"));
            }
            let occurred = match p.child(tags::COMPROMISE_OCCURRENCE_DATE) {
                None => now,
                Some(d) => d
                    .as_datetime()
                    .ok_or_else(|| OpError::invalid("bad Compromise Occurrence Date"))?,
            };
            after.state = state::COMPROMISED;
            after.set(COMPROMISE_DATE, Value::DateTime(now));
            after.set(COMPROMISE_OCCURRENCE_DATE, Value::DateTime(occurred));
        } else {
            if before.state != state::ACTIVE {
                return Err(OpError::denied(
                    "the object is not active and cannot be revoked",
                ));
            }
            after.state = state::DEACTIVATED;
            after.set(DEACTIVATION_DATE, Value::DateTime(now));
        }
        let mut rr = rr.clone();
        rr.tag = tags::ATTRIBUTE_VALUE;
        after.set(REVOCATION_REASON, rr.value.clone());
        self.touched(&mut after);
        self.backend.update(&before, &after).await?;
        Ok(vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid)])
    }

    async fn destroy(&mut self, p: &Ttlv) -> OpResult<Vec<Ttlv>> {
        let before = self.object(p).await?;
        let next = match before.state {
            state::ACTIVE => {
                return Err(OpError::denied(
                    "the object is active and cannot be destroyed: revoke it first",
                ))
            }
            state::COMPROMISED => state::DESTROYED_COMPROMISED,
            state::DESTROYED | state::DESTROYED_COMPROMISED => {
                return Err(OpError::new(
                    reason::ITEM_NOT_FOUND,
                    "the object was already destroyed",
                ))
            }
            _ => state::DESTROYED,
        };
        let mut after = destroyed(&before, self.backend.now());
        after.state = next;
        self.backend.destroy(&before, &after).await?;
        Ok(vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, before.uid)])
    }
}

/// `obj` as destroyed at `now` (Destroyed, or Destroyed Compromised from Compromised): what
/// the Destroy operation and the management API's delete store.
pub fn destroyed(obj: &Object, now: i64) -> Object {
    let mut after = obj.clone();
    after.state = if obj.state == state::COMPROMISED {
        state::DESTROYED_COMPROMISED
    } else {
        state::DESTROYED
    };
    after.set(DESTROY_DATE, Value::DateTime(now));
    after.set(LAST_CHANGE_DATE, Value::DateTime(now));
    after
}

/// The operations served (what Query answers).
pub const OPERATIONS: [u32; 14] = [
    op::CREATE,
    op::REGISTER,
    op::LOCATE,
    op::GET,
    op::GET_ATTRIBUTES,
    op::GET_ATTRIBUTE_LIST,
    op::ADD_ATTRIBUTE,
    op::MODIFY_ATTRIBUTE,
    op::DELETE_ATTRIBUTE,
    op::ACTIVATE,
    op::REVOKE,
    op::DESTROY,
    op::QUERY,
    op::DISCOVER_VERSIONS,
];

fn query(p: &Ttlv) -> Vec<Ttlv> {
    let mut out = Vec::new();
    let functions: Vec<u32> = p
        .children_with(tags::QUERY_FUNCTION)
        .filter_map(Ttlv::as_enum)
        .collect();
    if functions.contains(&tags::query::OPERATIONS) {
        out.extend(
            OPERATIONS
                .iter()
                .map(|o| Ttlv::enumeration(tags::OPERATION, *o)),
        );
    }
    if functions.contains(&tags::query::OBJECTS) {
        out.push(Ttlv::enumeration(
            tags::OBJECT_TYPE,
            object_type::SYMMETRIC_KEY,
        ));
        out.push(Ttlv::enumeration(
            tags::OBJECT_TYPE,
            object_type::SECRET_DATA,
        ));
    }
    if functions.contains(&tags::query::SERVER_INFORMATION) {
        out.push(Ttlv::text(tags::VENDOR_IDENTIFICATION, "Keyward"));
        out.push(Ttlv::structure(tags::SERVER_INFORMATION, vec![]));
    }
    out
}

fn discover_versions(p: &Ttlv) -> Vec<Ttlv> {
    let asked: Vec<(i32, i32)> = p
        .children_with(tags::PROTOCOL_VERSION)
        .filter_map(|v| {
            Some((
                v.child(tags::PROTOCOL_VERSION_MAJOR)?.as_int()?,
                v.child(tags::PROTOCOL_VERSION_MINOR)?.as_int()?,
            ))
        })
        .collect();
    VERSIONS
        .iter()
        .filter(|v| asked.is_empty() || asked.contains(v))
        .map(|v| message::protocol_version(*v))
        .collect()
}

/// Runs every batch item of a parsed request and builds the response.
pub async fn handle_request(backend: &dyn Backend, req: &Request<'_>) -> Ttlv {
    let mut ctx = Ctx {
        backend,
        placeholder: None,
    };
    let empty = Ttlv::structure(tags::REQUEST_PAYLOAD, vec![]);
    let mut results = Vec::new();
    for item in &req.items {
        let payload = item.payload.unwrap_or(&empty);
        let outcome = ctx
            .run(item.operation, payload)
            .await
            .map_err(|e| (e.reason, e.message));
        let failed = outcome.is_err();
        results.push(ItemResult {
            operation: Some(item.operation),
            id: item.id.map(<[u8]>::to_vec),
            outcome,
        });
        if failed && !req.continue_on_error {
            break;
        }
    }
    message::response(req.version, backend.now(), results)
}

/// Decodes one request message, runs it, and encodes the response. `Err` carries the encoded
/// error response for bytes that are not TTLV at all (the caller sends it and closes).
pub async fn handle_bytes(
    backend: &dyn Backend,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, Vec<u8>> {
    let now = backend.now();
    let msg = match ttlv::decode(bytes, limits) {
        Ok(m) => m,
        Err(e) => {
            let err = message::MessageError {
                reason: reason::INVALID_MESSAGE,
                message: format!("malformed TTLV: {e}"),
                version: (1, 0),
            };
            return Err(ttlv::encode(&message::error_response(&err, now)));
        }
    };
    let resp = match message::parse_request(&msg) {
        Ok(req) => handle_request(backend, &req).await,
        Err(e) => message::error_response(&e, now),
    };
    Ok(ttlv::encode(&resp))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::message::parse_request;

    /// An in-memory backend for the dispatch logic (the real one is Keyward's service, tested
    /// over the network with PyKMIP in tests/python/test_kmip.py).
    #[derive(Default)]
    struct Mem {
        objects: Mutex<Vec<(Object, Vec<u8>)>>,
    }

    #[async_trait]
    impl Backend for Mem {
        fn now(&self) -> i64 {
            1_700_000_000
        }
        fn random(&self, len: usize) -> OpResult<Zeroizing<Vec<u8>>> {
            Ok(Zeroizing::new(vec![7; len]))
        }
        async fn insert(&self, obj: &NewObject, material: &[u8]) -> OpResult<String> {
            let mut v = self.objects.lock().unwrap();
            let uid = format!("obj-{}", v.len());
            v.push((
                Object {
                    uid: uid.clone(),
                    object_type: obj.object_type,
                    state: obj.state,
                    secret_data_type: obj.secret_data_type,
                    attrs: obj.attrs.clone(),
                },
                material.to_vec(),
            ));
            Ok(uid)
        }
        async fn load(&self, uid: &str) -> OpResult<Object> {
            let v = self.objects.lock().unwrap();
            v.iter()
                .find(|(o, _)| o.uid == uid)
                .map(|(o, _)| o.clone())
                .ok_or_else(OpError::not_found)
        }
        async fn material(&self, obj: &Object) -> OpResult<Zeroizing<Vec<u8>>> {
            let v = self.objects.lock().unwrap();
            v.iter()
                .find(|(o, _)| o.uid == obj.uid)
                .map(|(_, m)| Zeroizing::new(m.clone()))
                .ok_or_else(OpError::not_found)
        }
        async fn update(&self, before: &Object, after: &Object) -> OpResult<()> {
            let mut v = self.objects.lock().unwrap();
            let slot = v
                .iter_mut()
                .find(|(o, _)| o == before)
                .ok_or_else(OpError::not_found)?;
            slot.0 = after.clone();
            Ok(())
        }
        async fn destroy(&self, before: &Object, after: &Object) -> OpResult<()> {
            let mut v = self.objects.lock().unwrap();
            let slot = v
                .iter_mut()
                .find(|(o, _)| o == before)
                .ok_or_else(OpError::not_found)?;
            slot.0 = after.clone();
            slot.1.clear();
            Ok(())
        }
        async fn list(&self) -> OpResult<Vec<Object>> {
            Ok(self
                .objects
                .lock()
                .unwrap()
                .iter()
                .map(|(o, _)| o.clone())
                .collect())
        }
    }

    fn attr(name: &str, value: Value) -> Ttlv {
        Ttlv::structure(
            tags::ATTRIBUTE,
            vec![
                Ttlv::text(tags::ATTRIBUTE_NAME, name),
                Ttlv::new(tags::ATTRIBUTE_VALUE, value),
            ],
        )
    }

    fn name_attr(n: &str) -> Ttlv {
        attr(
            NAME,
            Value::Structure(vec![
                Ttlv::text(tags::NAME_VALUE, n),
                Ttlv::enumeration(tags::NAME_TYPE, tags::NAME_TYPE_TEXT),
            ]),
        )
    }

    fn create_payload(bits: i32, name: &str) -> Vec<Ttlv> {
        vec![
            Ttlv::enumeration(tags::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
            Ttlv::structure(
                tags::TEMPLATE_ATTRIBUTE,
                vec![
                    attr(ALGORITHM, Value::Enumeration(tags::ALGORITHM_AES)),
                    attr(LENGTH, Value::Integer(bits)),
                    name_attr(name),
                ],
            ),
        ]
    }

    fn uid(u: &str) -> Vec<Ttlv> {
        vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, u)]
    }

    /// Runs a request of (operation, payload) items; returns each item's payload or reason.
    async fn run(b: &Mem, items: Vec<(u32, Vec<Ttlv>)>, cont: bool) -> Vec<Result<Ttlv, u32>> {
        let mut header = vec![
            message::protocol_version((1, 2)),
            Ttlv::int(tags::BATCH_COUNT, items.len() as i32),
        ];
        if cont {
            header.push(Ttlv::enumeration(
                tags::BATCH_ERROR_CONTINUATION_OPTION,
                tags::BATCH_CONTINUE,
            ));
        }
        let mut body = vec![Ttlv::structure(tags::REQUEST_HEADER, header)];
        for (op, payload) in items {
            body.push(Ttlv::structure(
                tags::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(tags::OPERATION, op),
                    Ttlv::structure(tags::REQUEST_PAYLOAD, payload),
                ],
            ));
        }
        let bytes = ttlv::encode(&Ttlv::structure(tags::REQUEST_MESSAGE, body));
        let resp = handle_bytes(b, &bytes, &Limits::default()).await.unwrap();
        let resp = ttlv::decode(&resp, &Limits::default()).unwrap();
        resp.children_with(tags::BATCH_ITEM)
            .map(|i| {
                if i.child(tags::RESULT_STATUS).unwrap().as_enum() == Some(0) {
                    Ok(i.child(tags::RESPONSE_PAYLOAD).unwrap().clone())
                } else {
                    Err(i.child(tags::RESULT_REASON).unwrap().as_enum().unwrap())
                }
            })
            .collect()
    }

    async fn one(b: &Mem, op: u32, payload: Vec<Ttlv>) -> Result<Ttlv, u32> {
        run(b, vec![(op, payload)], false).await.remove(0)
    }

    fn state_of(p: &Ttlv) -> Option<u32> {
        p.children_with(tags::ATTRIBUTE)
            .find(|a| a.child(tags::ATTRIBUTE_NAME).unwrap().as_text() == Some(STATE))
            .and_then(|a| a.child(tags::ATTRIBUTE_VALUE)?.as_enum())
    }

    #[tokio::test]
    async fn key_lifecycle() {
        let b = Mem::default();
        let r = one(&b, op::CREATE, create_payload(256, "k1"))
            .await
            .unwrap();
        let id = r
            .child(tags::UNIQUE_IDENTIFIER)
            .unwrap()
            .as_text()
            .unwrap()
            .to_owned();
        let got = one(&b, op::GET, uid(&id)).await.unwrap();
        let km = got
            .child(tags::SYMMETRIC_KEY)
            .and_then(|k| k.child(tags::KEY_BLOCK))
            .and_then(|k| k.child(tags::KEY_VALUE))
            .and_then(|k| k.child(tags::KEY_MATERIAL))
            .and_then(Ttlv::as_bytes)
            .unwrap();
        assert_eq!(km.len(), 32);
        // destroying an active key is refused; activate, revoke, then destroy
        assert_eq!(one(&b, op::ACTIVATE, uid(&id)).await.map(|_| ()), Ok(()));
        assert_eq!(
            one(&b, op::ACTIVATE, uid(&id)).await.unwrap_err(),
            reason::PERMISSION_DENIED
        );
        assert_eq!(
            one(&b, op::DESTROY, uid(&id)).await.unwrap_err(),
            reason::PERMISSION_DENIED
        );
        let attrs = one(&b, op::GET_ATTRIBUTES, uid(&id)).await.unwrap();
        assert_eq!(state_of(&attrs), Some(state::ACTIVE));
        let mut revoke = uid(&id);
        revoke.push(Ttlv::structure(
            tags::REVOCATION_REASON,
            vec![Ttlv::enumeration(tags::REVOCATION_REASON_CODE, 1)],
        ));
        assert!(one(&b, op::REVOKE, revoke).await.is_ok());
        assert!(one(&b, op::DESTROY, uid(&id)).await.is_ok());
        assert_eq!(
            one(&b, op::GET, uid(&id)).await.unwrap_err(),
            reason::ITEM_NOT_FOUND
        );
        let attrs = one(&b, op::GET_ATTRIBUTES, uid(&id)).await.unwrap();
        assert_eq!(state_of(&attrs), Some(state::DESTROYED));
        assert_eq!(
            one(&b, op::GET, uid("nope")).await.unwrap_err(),
            reason::ITEM_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn bad_creates_change_nothing() {
        let b = Mem::default();
        for bits in [0, 64, 512, -1] {
            assert_eq!(
                one(&b, op::CREATE, create_payload(bits, "x"))
                    .await
                    .unwrap_err(),
                reason::INVALID_FIELD
            );
        }
        let mut p = create_payload(128, "x");
        p[0] = Ttlv::enumeration(tags::OBJECT_TYPE, 4);
        assert_eq!(
            one(&b, op::CREATE, p).await.unwrap_err(),
            reason::FEATURE_NOT_SUPPORTED
        );
        let mut p = create_payload(128, "x");
        if let Value::Structure(v) = &mut p[1].value {
            v.push(attr(STATE, Value::Enumeration(2)));
        }
        assert_eq!(
            one(&b, op::CREATE, p).await.unwrap_err(),
            reason::PERMISSION_DENIED
        );
        assert!(b.objects.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn batch_placeholder_locate_and_attributes() {
        let b = Mem::default();
        let r = run(
            &b,
            vec![
                (op::CREATE, create_payload(128, "a")),
                (op::ACTIVATE, vec![]),
                (
                    op::ADD_ATTRIBUTE,
                    vec![attr("x-purpose", Value::TextString("t".into()))],
                ),
                (0x25, vec![]),
                (op::GET_ATTRIBUTE_LIST, vec![]),
            ],
            true,
        )
        .await;
        assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_ok());
        assert_eq!(r[3].clone().unwrap_err(), reason::OPERATION_NOT_SUPPORTED);
        let names: Vec<_> = r[4]
            .as_ref()
            .unwrap()
            .children_with(tags::ATTRIBUTE_NAME)
            .map(|n| n.as_text().unwrap().to_owned())
            .collect();
        assert!(names.contains(&"x-purpose".to_owned()) && names.contains(&STATE.to_owned()));
        one(&b, op::CREATE, create_payload(192, "b")).await.unwrap();
        let found = one(&b, op::LOCATE, vec![name_attr("b")]).await.unwrap();
        let ids: Vec<_> = found.children_with(tags::UNIQUE_IDENTIFIER).collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].as_text(), Some("obj-1"));
        let all = one(&b, op::LOCATE, vec![]).await.unwrap();
        assert_eq!(all.children_with(tags::UNIQUE_IDENTIFIER).count(), 2);
        // stop on error (the default): the items after a failure are not run
        let r = run(
            &b,
            vec![
                (op::GET, uid("nope")),
                (op::CREATE, create_payload(128, "c")),
            ],
            false,
        )
        .await;
        assert_eq!(r.len(), 1);
        assert_eq!(b.objects.lock().unwrap().len(), 2);
        // modify and delete a name; a read-only attribute cannot be modified
        let mut m = uid("obj-1");
        m.push(name_attr("b2"));
        assert!(one(&b, op::MODIFY_ATTRIBUTE, m).await.is_ok());
        let mut m = uid("obj-1");
        m.push(attr(LENGTH, Value::Integer(128)));
        assert_eq!(
            one(&b, op::MODIFY_ATTRIBUTE, m).await.unwrap_err(),
            reason::PERMISSION_DENIED
        );
        let found = one(&b, op::LOCATE, vec![name_attr("b2")]).await.unwrap();
        assert_eq!(found.children_with(tags::UNIQUE_IDENTIFIER).count(), 1);
    }

    #[tokio::test]
    async fn meta_round_trips() {
        let o = Object {
            uid: "u".into(),
            object_type: object_type::SECRET_DATA,
            state: state::ACTIVE,
            secret_data_type: Some(2),
            attrs: vec![Attr {
                name: "x-a".into(),
                value: Ttlv::text(tags::ATTRIBUTE_VALUE, "v"),
            }],
        };
        let back =
            Object::decode_meta("u".into(), o.object_type, o.state, &o.encode_meta()).unwrap();
        assert_eq!(back, o);
    }

    #[tokio::test]
    async fn query_and_discover() {
        let b = Mem::default();
        let q = one(
            &b,
            op::QUERY,
            vec![Ttlv::enumeration(tags::QUERY_FUNCTION, 1)],
        )
        .await
        .unwrap();
        assert_eq!(q.children_with(tags::OPERATION).count(), OPERATIONS.len());
        let d = one(&b, op::DISCOVER_VERSIONS, vec![]).await.unwrap();
        assert_eq!(
            d.children_with(tags::PROTOCOL_VERSION).count(),
            VERSIONS.len()
        );
        let garbage = handle_bytes(&b, &[1, 2, 3], &Limits::default()).await;
        assert!(garbage.is_err());
        let _ = parse_request;
    }
}
