//! Reading request bodies: case-insensitive member names, and errors that name the field.
//!
//! Key Protect matches member names case-insensitively (IBM's Go client sends `Tags`), so a
//! body is rewritten with every object member name lowercased ([`lowercase_keys`]) before it
//! is deserialized into a request type of this crate, whose fields are lowercase. Two names
//! of one object that differ only by case are refused; an exact repeat keeps the last value.
//! Members leave each object in byte order of their lowercased names.

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What was wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (the parser's message).
    Syntax(String),
    /// Two member names of one object differ only by case (the second name, in byte order).
    Duplicate(String),
    /// The body (or a resource that must be one) is not a JSON object.
    NotObject,
    /// A member a strict object does not know (lowercased name).
    Unknown(String),
    /// A member of the wrong type: its wire name and what it must be ("a string").
    Field { name: String, expected: String },
}

/// Marker that [`expect`] visitors put in their `expecting` text, found again in the error.
const MUST: &str = "KW-MUST:";

/// The wire spelling of a lowercased member name (for error messages and targets).
pub fn wire_name(lower: &str) -> &str {
    match lower {
        "encryptednonce" => "encryptedNonce",
        "encryptionalgorithm" => "encryptionAlgorithm",
        "expirationdate" => "expirationDate",
        "maxallowedretrievals" => "maxAllowedRetrievals",
        "targetkeyid" => "targetKeyId",
        "keyid" => "keyId",
        "keyringid" => "keyRingID",
        "dualauthdelete" => "dualAuthDelete",
        "collectiontype" => "collectionType",
        "collectiontotal" => "collectionTotal",
        other => other,
    }
}

/// Whether the body is empty (only whitespace) or JSON `null`, which every endpoint treats as
/// no body.
pub fn is_absent(bytes: &[u8]) -> bool {
    let t = trim(bytes);
    t.is_empty() || t == b"null"
}

/// Whether the (non-empty) body is a JSON object.
pub fn is_object(bytes: &[u8]) -> bool {
    trim(bytes).first() == Some(&b'{')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Checks that `bytes` is JSON and returns it with every member name lowercased.
pub fn lowercase_keys(bytes: &[u8]) -> Result<Vec<u8>, BodyError> {
    serde_json::from_slice::<IgnoredAny>(bytes).map_err(|e| BodyError::Syntax(e.to_string()))?;
    let mut s = Scanner { b: bytes, i: 0 };
    let (out, dup) = s.value()?;
    match dup {
        Some(name) => Err(BodyError::Duplicate(name)),
        None => Ok(out),
    }
}

/// Parses `bytes` into `T` after [`lowercase_keys`].
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    from_lowercased(&lowercase_keys(bytes)?)
}

/// Parses the output of [`lowercase_keys`] into `T`.
pub fn from_lowercased<T: DeserializeOwned>(lowered: &[u8]) -> Result<T, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(lowered);
    let r: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    r.map_err(|e| {
        let field = e.path().iter().rev().find_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        classify(&e.inner().to_string(), field)
    })
}

fn classify(msg: &str, field: Option<String>) -> BodyError {
    // serde_json appends " at line L column C" to errors raised while parsing.
    let msg = msg.rsplit_once(" at line ").map_or(msg, |(m, _)| m);
    if let Some(rest) = msg.split_once(MUST).map(|(_, r)| r) {
        return BodyError::Field {
            name: wire_name(field.as_deref().unwrap_or("")).to_string(),
            expected: rest.to_string(),
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((name, _)) = rest.split_once('`') {
            return BodyError::Unknown(name.to_string());
        }
    }
    BodyError::Syntax(msg.to_string())
}

/// Re-emits JSON with member names lowercased and members sorted by lowercased name.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

type Scanned = (Vec<u8>, Option<String>);

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn bad(&self) -> BodyError {
        BodyError::Syntax("malformed JSON".into())
    }

    fn expect_byte(&mut self, c: u8) -> Result<(), BodyError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.bad())
        }
    }

    /// One value; the name of the first duplicate found inside it, in the order a sorted map
    /// would meet it.
    fn value(&mut self) -> Result<Scanned, BodyError> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let (s, e) = self.string_span()?;
                Ok((self.b.get(s..e).unwrap_or_default().to_vec(), None))
            }
            Some(_) => {
                let s = self.i;
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, b',' | b']' | b'}') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                Ok((self.b.get(s..self.i).unwrap_or_default().to_vec(), None))
            }
            None => Err(self.bad()),
        }
    }

    /// The span of a string token, quotes included.
    fn string_span(&mut self) -> Result<(usize, usize), BodyError> {
        let s = self.i;
        self.i += 1;
        loop {
            match self.peek() {
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    return Ok((s, self.i));
                }
                Some(_) => self.i += 1,
                None => return Err(self.bad()),
            }
        }
    }

    fn array(&mut self) -> Result<Scanned, BodyError> {
        self.i += 1;
        let mut out = vec![b'['];
        let mut dup = None;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            out.push(b']');
            return Ok((out, None));
        }
        loop {
            let (v, d) = self.value()?;
            out.extend_from_slice(&v);
            dup = dup.or(d);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    out.push(b',');
                }
                Some(b']') => {
                    self.i += 1;
                    out.push(b']');
                    return Ok((out, dup));
                }
                _ => return Err(self.bad()),
            }
        }
    }

    fn object(&mut self) -> Result<Scanned, BodyError> {
        self.i += 1;
        // (original name, value, first duplicate inside the value)
        let mut members: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(self.bad());
                }
                let (s, e) = self.string_span()?;
                let name: String = serde_json::from_slice(self.b.get(s..e).unwrap_or_default())
                    .map_err(|e| BodyError::Syntax(e.to_string()))?;
                self.expect_byte(b':')?;
                let (v, d) = self.value()?;
                // An exact repeat replaces the earlier member (last one wins).
                members.retain(|(n, _, _)| *n != name);
                members.push((name, v, d));
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.bad()),
                }
            }
        }
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lowered: Vec<(String, Vec<u8>)> = Vec::with_capacity(members.len());
        let mut dup = None;
        for (name, v, d) in members {
            let lk = name.to_ascii_lowercase();
            if dup.is_none() {
                if lowered.iter().any(|(k, _)| *k == lk) {
                    dup = Some(name);
                } else {
                    dup = d;
                }
            }
            lowered.push((lk, v));
        }
        lowered.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = vec![b'{'];
        for (n, (k, v)) in lowered.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let key = serde_json::to_vec(k).map_err(|e| BodyError::Syntax(e.to_string()))?;
            out.extend_from_slice(&key);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        Ok((out, dup))
    }
}

// ---- field readers -------------------------------------------------------------------------
//
// Each reader accepts what the wire format accepts and, for anything else, fails with the
// "must be: ..." text the API puts in the `INVALID_FIELD_ERR` message. They serve
// `#[serde(default, deserialize_with = "...")]` on `Option` fields, so an absent member is
// `None` without calling them.

/// An optional string; `null` is absent.
pub fn opt_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{MUST}a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// An optional boolean; `null` is absent.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{MUST}a boolean")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// An integer when present: floats (even `600.0`), strings, booleans and `null` are refused.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{MUST}an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// An optional array of strings; `null` is absent.
pub fn opt_str_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Item;
    impl<'de> de::DeserializeSeed<'de> for Item {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            struct S;
            impl<'de> Visitor<'de> for S {
                type Value = String;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    write!(f, "{MUST}an array of strings")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                    Ok(v.to_string())
                }
            }
            d.deserialize_any(S)
        }
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{MUST}an array of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element_seed(Item)? {
                out.push(s);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(V)
}

/// An optional object read as `T`; `null` is absent.
pub fn opt_obj<'de, D: Deserializer<'de>, T: de::Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{MUST}an object")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

// ---- lenient slots -------------------------------------------------------------------------
//
// Envelope members (`metadata`, `resources`, `collectionTotal`, ...) are checked by the API in
// a fixed order with their own messages, so they are read without failing: a [`Slot`] says
// whether the member was absent, `null`, of another type, or what it held.

/// A member read without failing on its type.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Slot<T> {
    #[default]
    Absent,
    Null,
    /// Present with another JSON type.
    Wrong,
    Value(T),
}

impl<T> Slot<T> {
    /// The value, if it had the right type.
    pub fn value(self) -> Option<T> {
        match self {
            Slot::Value(v) => Some(v),
            _ => None,
        }
    }
}

struct Drain;
impl Drain {
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

macro_rules! wrong_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Slot::Null)
        }
    };
}

/// A string member, read leniently.
pub fn str_slot<'de, D: Deserializer<'de>>(d: D) -> Result<Slot<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Slot<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        wrong_scalars!();
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Slot::Value(v))
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Slot::Value(v.to_string()))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Drain::seq(seq).map(|_| Slot::Wrong)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Drain::map(map).map(|_| Slot::Wrong)
        }
    }
    d.deserialize_any(V)
}

/// An integer member (`i64`), read leniently: floats and out-of-range numbers are `Wrong`.
pub fn int_slot<'de, D: Deserializer<'de>>(d: D) -> Result<Slot<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Slot<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Slot::Value(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).map_or(Slot::Wrong, Slot::Value))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Slot::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Drain::seq(seq).map(|_| Slot::Wrong)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Drain::map(map).map(|_| Slot::Wrong)
        }
    }
    d.deserialize_any(V)
}

/// An object member read as `T`, leniently (errors inside the object still fail).
pub fn obj_slot<'de, D: Deserializer<'de>, T: de::Deserialize<'de>>(
    d: D,
) -> Result<Slot<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Slot<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        wrong_scalars!();
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Drain::seq(seq).map(|_| Slot::Wrong)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Slot::Value)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// An array member whose elements are objects read as `T`, leniently: the array is `Wrong`
/// when it is not an array, and each element is a [`Slot`] (`Wrong` for a non-object).
pub fn obj_list_slot<'de, D: Deserializer<'de>, T: de::Deserialize<'de>>(
    d: D,
) -> Result<Slot<Vec<Slot<T>>>, D::Error> {
    struct Elem<T>(std::marker::PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> de::DeserializeSeed<'de> for Elem<T> {
        type Value = Slot<T>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<T>, D::Error> {
            obj_slot(d)
        }
    }
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Slot<Vec<Slot<T>>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        wrong_scalars!();
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(e) = seq.next_element_seed(Elem(std::marker::PhantomData))? {
                out.push(e);
            }
            Ok(Slot::Value(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Drain::map(map).map(|_| Slot::Wrong)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// Any JSON value, ignored (members accepted whatever their type).
pub fn any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IgnoredAny>, D::Error> {
    <IgnoredAny as de::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> Result<String, BodyError> {
        lowercase_keys(s.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn lowercases_names_at_every_level_and_keeps_values() {
        assert_eq!(
            lc(r#" {"Tags": ["A"], "Name" : "X", "a":{"B":[{"C\u0044":1.5e3}]}} "#),
            Ok(r#"{"a":{"b":[{"cd":1.5e3}]},"name":"X","tags":["A"]}"#.into())
        );
        assert_eq!(
            lc(r#"[true,null,"x\"y"]"#),
            Ok(r#"[true,null,"x\"y"]"#.into())
        );
        assert_eq!(lc("{}"), Ok("{}".into()));
    }

    #[test]
    fn names_differing_by_case_are_refused_and_exact_repeats_keep_the_last() {
        assert_eq!(
            lc(r#"{"tags":1,"Tags":2}"#),
            Err(BodyError::Duplicate("tags".into()))
        );
        assert_eq!(
            lc(r#"{"x":{"aB":1,"Ab":2}}"#),
            Err(BodyError::Duplicate("aB".into()))
        );
        assert_eq!(lc(r#"{"a":1,"a":2}"#), Ok(r#"{"a":2}"#.into()));
        assert!(matches!(lc("{"), Err(BodyError::Syntax(_))));
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[serde(default, deserialize_with = "opt_str")]
        #[allow(dead_code)]
        encryptednonce: Option<String>,
        #[serde(default, deserialize_with = "opt_int")]
        #[allow(dead_code)]
        n: Option<i64>,
        #[serde(default, deserialize_with = "opt_str_list")]
        #[allow(dead_code)]
        tags: Option<Vec<String>>,
    }

    #[test]
    fn type_errors_name_the_field_in_its_wire_spelling() {
        let field = |n: &str, e: &str| {
            Err::<Strict, _>(BodyError::Field {
                name: n.into(),
                expected: e.into(),
            })
        };
        assert_eq!(
            parse::<Strict>(br#"{"EncryptedNonce": 5}"#),
            field("encryptedNonce", "a string")
        );
        assert_eq!(parse::<Strict>(br#"{"n": 1.0}"#), field("n", "an integer"));
        assert_eq!(parse::<Strict>(br#"{"n": null}"#), field("n", "an integer"));
        assert_eq!(
            parse::<Strict>(br#"{"tags": ["a", 1]}"#),
            field("tags", "an array of strings")
        );
        assert_eq!(
            parse::<Strict>(br#"{"zz": 1}"#),
            Err(BodyError::Unknown("zz".into()))
        );
        assert!(parse::<Strict>(br#"{"n": 9223372036854775807, "tags": null}"#).is_ok());
        assert_eq!(
            parse::<Strict>(br#"{"n": 9223372036854775808}"#),
            field("n", "an integer")
        );
    }
}
