//! Binary TTLV (tag, type, length, value), the encoding of every KMIP message.
//!
//! Each item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and the value,
//! padded with zeros to a multiple of 8 bytes. Decoding is strict and bounded: the declared
//! lengths must fit the bytes present (nothing is allocated from a length alone), fixed-size
//! types must declare their exact size, padding must be zero, a structure's length must be
//! the sum of its children, and the [`Limits`] on total size, nesting depth and item count
//! hold. Whatever decodes therefore encodes back to the same bytes.

use std::fmt;

/// The item types of KMIP 1.x and 2.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
    DateTimeExtended = 0x0B,
}

impl ItemType {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Structure,
            0x02 => Self::Integer,
            0x03 => Self::LongInteger,
            0x04 => Self::BigInteger,
            0x05 => Self::Enumeration,
            0x06 => Self::Boolean,
            0x07 => Self::TextString,
            0x08 => Self::ByteString,
            0x09 => Self::DateTime,
            0x0A => Self::Interval,
            0x0B => Self::DateTimeExtended,
            _ => return None,
        })
    }
}

/// A value. Byte strings may hold key material: they are zeroized when dropped, and the
/// `Debug` form never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl Drop for Value {
    fn drop(&mut self) {
        if let Value::ByteString(b) | Value::BigInteger(b) = self {
            zeroize::Zeroize::zeroize(b);
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(v) => f.debug_list().entries(v).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger(<{} bytes>)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            Value::ByteString(v) => write!(f, "ByteString(<{} bytes>)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Value::Structure(_) => ItemType::Structure,
            Value::Integer(_) => ItemType::Integer,
            Value::LongInteger(_) => ItemType::LongInteger,
            Value::BigInteger(_) => ItemType::BigInteger,
            Value::Enumeration(_) => ItemType::Enumeration,
            Value::Boolean(_) => ItemType::Boolean,
            Value::TextString(_) => ItemType::TextString,
            Value::ByteString(_) => ItemType::ByteString,
            Value::DateTime(_) => ItemType::DateTime,
            Value::Interval(_) => ItemType::Interval,
            Value::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }
}

/// One item: a tag (24 bits) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: u32,
    pub value: Value,
}

impl Ttlv {
    pub fn new(tag: u32, value: Value) -> Self {
        Self { tag, value }
    }
    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Self {
        Self::new(tag, Value::Structure(items))
    }
    pub fn int(tag: u32, v: i32) -> Self {
        Self::new(tag, Value::Integer(v))
    }
    pub fn enumeration(tag: u32, v: u32) -> Self {
        Self::new(tag, Value::Enumeration(v))
    }
    pub fn text(tag: u32, v: impl Into<String>) -> Self {
        Self::new(tag, Value::TextString(v.into()))
    }
    pub fn bytes(tag: u32, v: Vec<u8>) -> Self {
        Self::new(tag, Value::ByteString(v))
    }
    pub fn boolean(tag: u32, v: bool) -> Self {
        Self::new(tag, Value::Boolean(v))
    }
    pub fn datetime(tag: u32, v: i64) -> Self {
        Self::new(tag, Value::DateTime(v))
    }

    /// The children of a structure (empty for any other type).
    pub fn children(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(v) => v,
            _ => &[],
        }
    }
    /// The first child with this tag.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.children().iter().find(|c| c.tag == tag)
    }
    /// Every child with this tag.
    pub fn children_with(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.children().iter().filter(move |c| c.tag == tag)
    }
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_datetime(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }
}

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest whole message, header included, in bytes.
    pub max_message: usize,
    /// Deepest nesting of structures (the outermost item is depth 1).
    pub max_depth: usize,
    /// Most items in the whole message.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 256 * 1024,
            max_depth: 16,
            max_items: 4096,
        }
    }
}

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message too large ({0} bytes)")]
    TooLarge(u64),
    #[error("truncated item")]
    Truncated,
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("unknown item type {0:#04x}")]
    UnknownType(u8),
    #[error("item of type {0:?} with length {1}")]
    BadLength(ItemType, u32),
    #[error("non-zero padding")]
    Padding,
    #[error("boolean other than 0 or 1")]
    BadBoolean,
    #[error("text string is not UTF-8")]
    BadUtf8,
    #[error("structures nested too deep")]
    TooDeep,
    #[error("too many items")]
    TooManyItems,
    #[error("structure length does not match its items")]
    StructureLength,
}

/// Length of the item header.
pub const HEADER_LEN: usize = 8;

/// The tag, type and declared value length of an item header (for framing a stream).
pub fn peek_header(h: &[u8; HEADER_LEN]) -> (u32, u8, u32) {
    let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    (tag, h[3], len)
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Decodes exactly one item filling `buf`.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Ttlv, DecodeError> {
    if buf.len() > limits.max_message {
        return Err(DecodeError::TooLarge(buf.len() as u64));
    }
    let mut items = 0usize;
    let (item, used) = decode_item(buf, 1, limits, &mut items)?;
    if used != buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(item)
}

fn decode_item(
    buf: &[u8],
    depth: usize,
    limits: &Limits,
    items: &mut usize,
) -> Result<(Ttlv, usize), DecodeError> {
    if depth > limits.max_depth {
        return Err(DecodeError::TooDeep);
    }
    *items += 1;
    if *items > limits.max_items {
        return Err(DecodeError::TooManyItems);
    }
    let header: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated)?;
    let (tag, ty, len) = peek_header(header);
    let ty = ItemType::from_byte(ty).ok_or(DecodeError::UnknownType(ty))?;
    let len_usize = len as usize;
    let total = HEADER_LEN
        .checked_add(padded(len_usize))
        .ok_or(DecodeError::Truncated)?;
    let body = buf.get(HEADER_LEN..total).ok_or(DecodeError::Truncated)?;
    let (data, pad) = body.split_at(len_usize);
    if pad.iter().any(|&b| b != 0) {
        return Err(DecodeError::Padding);
    }
    let fixed = |n: u32| {
        if len == n {
            Ok(())
        } else {
            Err(DecodeError::BadLength(ty, len))
        }
    };
    let be4 = |d: &[u8]| u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let be8 = |d: &[u8]| i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    let value = match ty {
        ItemType::Structure => {
            if len % 8 != 0 {
                return Err(DecodeError::StructureLength);
            }
            let mut children = Vec::new();
            let mut at = 0usize;
            while at < data.len() {
                let (child, used) =
                    decode_item(&data[at..], depth + 1, limits, items).map_err(|e| match e {
                        DecodeError::Truncated => DecodeError::StructureLength,
                        e => e,
                    })?;
                children.push(child);
                at += used;
            }
            Value::Structure(children)
        }
        ItemType::Integer => {
            fixed(4)?;
            Value::Integer(be4(data) as i32)
        }
        ItemType::Enumeration => {
            fixed(4)?;
            Value::Enumeration(be4(data))
        }
        ItemType::Interval => {
            fixed(4)?;
            Value::Interval(be4(data))
        }
        ItemType::LongInteger => {
            fixed(8)?;
            Value::LongInteger(be8(data))
        }
        ItemType::DateTime => {
            fixed(8)?;
            Value::DateTime(be8(data))
        }
        ItemType::DateTimeExtended => {
            fixed(8)?;
            Value::DateTimeExtended(be8(data))
        }
        ItemType::Boolean => {
            fixed(8)?;
            match be8(data) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(DecodeError::BadBoolean),
            }
        }
        ItemType::BigInteger => {
            if len == 0 || len % 8 != 0 {
                return Err(DecodeError::BadLength(ty, len));
            }
            Value::BigInteger(data.to_vec())
        }
        ItemType::TextString => Value::TextString(
            std::str::from_utf8(data)
                .map_err(|_| DecodeError::BadUtf8)?
                .to_owned(),
        ),
        ItemType::ByteString => Value::ByteString(data.to_vec()),
    };
    Ok((Ttlv { tag, value }, total))
}

/// Encodes one item.
pub fn encode(item: &Ttlv) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(item, &mut out);
    out
}

fn encode_into(item: &Ttlv, out: &mut Vec<u8>) {
    let tag = item.tag.to_be_bytes();
    out.extend_from_slice(&tag[1..]);
    out.push(item.value.item_type() as u8);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    match &item.value {
        Value::Structure(children) => {
            for c in children {
                encode_into(c, out);
            }
        }
        Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
            out.extend_from_slice(&v.to_be_bytes())
        }
        Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
        Value::BigInteger(v) | Value::ByteString(v) => out.extend_from_slice(v),
        Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
    }
    let len = out.len() - start;
    out[len_at..len_at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out.resize(start + padded(len), 0);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '|')
            .collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn round_trip(item: Ttlv, bytes: &str) {
        let b = hex(bytes);
        assert_eq!(encode(&item), b, "encoding of {item:?}");
        assert_eq!(decode(&b, &Limits::default()).unwrap(), item);
    }

    // The example encodings of the KMIP 1.x specification, section 9.1.2.
    #[test]
    fn spec_examples() {
        round_trip(
            Ttlv::int(0x420020, 8),
            "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
        );
        round_trip(
            Ttlv::new(0x420020, Value::LongInteger(123456789000000000)),
            "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
        );
        round_trip(
            Ttlv::new(
                0x420020,
                Value::BigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
            ),
            "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
        );
        round_trip(
            Ttlv::enumeration(0x420020, 255),
            "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        );
        round_trip(
            Ttlv::boolean(0x420020, true),
            "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
        );
        round_trip(
            Ttlv::text(0x420020, "Hello World"),
            "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
        );
        round_trip(
            Ttlv::bytes(0x420020, vec![1, 2, 3]),
            "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
        );
        round_trip(
            Ttlv::datetime(0x420020, 0x47DA67F8),
            "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
        );
        round_trip(
            Ttlv::new(0x420020, Value::Interval(864000)),
            "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
        );
        round_trip(
            Ttlv::structure(
                0x420020,
                vec![
                    Ttlv::enumeration(0x420004, 254),
                    Ttlv::int(0x420005, 255),
                ],
            ),
            "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | \
             42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        );
    }

    #[test]
    fn empty_values_round_trip() {
        round_trip(Ttlv::text(0x420055, ""), "42 00 55 07 00 00 00 00");
        round_trip(Ttlv::bytes(0x420055, vec![]), "42 00 55 08 00 00 00 00");
        round_trip(Ttlv::structure(0x420055, vec![]), "42 00 55 01 00 00 00 00");
    }

    fn err(bytes: &[u8]) -> DecodeError {
        decode(bytes, &Limits::default()).unwrap_err()
    }

    #[test]
    fn malformed_items_are_refused() {
        assert_eq!(err(&hex("42 00 20 02 00 00 00")), DecodeError::Truncated);
        assert_eq!(err(&[]), DecodeError::Truncated);
        // a length far past the bytes present allocates nothing and is refused
        assert_eq!(err(&hex("42 00 20 08 FF FF FF FF")), DecodeError::Truncated);
        assert_eq!(
            err(&hex("42 00 20 02 00 00 00 08 00 00 00 08 00 00 00 00")),
            DecodeError::BadLength(ItemType::Integer, 8)
        );
        assert_eq!(
            err(&hex("42 00 20 09 00 00 00 04 00 00 00 08 00 00 00 00")),
            DecodeError::BadLength(ItemType::DateTime, 4)
        );
        assert_eq!(
            err(&hex("42 00 20 04 00 00 00 04 00 00 00 08 00 00 00 00")),
            DecodeError::BadLength(ItemType::BigInteger, 4)
        );
        assert_eq!(
            err(&hex("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 01")),
            DecodeError::Padding
        );
        assert_eq!(
            err(&hex("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02")),
            DecodeError::BadBoolean
        );
        assert_eq!(
            err(&hex("42 00 20 07 00 00 00 02 C3 28 00 00 00 00 00 00")),
            DecodeError::BadUtf8
        );
        assert_eq!(
            err(&hex("42 00 20 0C 00 00 00 00")),
            DecodeError::UnknownType(0x0C)
        );
        assert_eq!(
            err(&hex("42 00 20 00 00 00 00 00")),
            DecodeError::UnknownType(0)
        );
        // trailing bytes after the one item
        assert_eq!(
            err(&hex("42 00 20 01 00 00 00 00 00 00 00 00 00 00 00 00")),
            DecodeError::Trailing
        );
        // a structure whose length cuts its child
        assert_eq!(
            err(&hex(
                "42 00 20 01 00 00 00 08 42 00 04 05 00 00 00 04 00 00 00 FE 00 00 00 00"
            )),
            DecodeError::StructureLength
        );
        assert_eq!(
            err(&hex("42 00 20 01 00 00 00 04 00 00 00 00 00 00 00 00")),
            DecodeError::StructureLength
        );
    }

    fn nested(depth: usize) -> Ttlv {
        let mut t = Ttlv::int(0x420001, 1);
        for _ in 1..depth {
            t = Ttlv::structure(0x420001, vec![t]);
        }
        t
    }

    #[test]
    fn depth_bound() {
        let limits = Limits::default();
        assert!(decode(&encode(&nested(limits.max_depth)), &limits).is_ok());
        assert_eq!(
            decode(&encode(&nested(limits.max_depth + 1)), &limits).unwrap_err(),
            DecodeError::TooDeep
        );
    }

    #[test]
    fn item_count_bound() {
        let limits = Limits {
            max_items: 10,
            ..Limits::default()
        };
        let ok = Ttlv::structure(0x420001, (0..9).map(|i| Ttlv::int(0x420002, i)).collect());
        assert!(decode(&encode(&ok), &limits).is_ok());
        let over = Ttlv::structure(0x420001, (0..10).map(|i| Ttlv::int(0x420002, i)).collect());
        assert_eq!(
            decode(&encode(&over), &limits).unwrap_err(),
            DecodeError::TooManyItems
        );
    }

    #[test]
    fn size_bound() {
        let limits = Limits {
            max_message: 64,
            ..Limits::default()
        };
        assert!(decode(&encode(&Ttlv::bytes(0x420001, vec![7; 56])), &limits).is_ok());
        assert_eq!(
            decode(&encode(&Ttlv::bytes(0x420001, vec![7; 57])), &limits).unwrap_err(),
            DecodeError::TooLarge(72)
        );
    }

    #[test]
    fn debug_hides_bytes() {
        let s = format!("{:?}", Ttlv::bytes(0x420043, vec![0xAB; 4]));
        assert!(s.contains("<4 bytes>") && !s.contains("171"), "{s}");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<i32>().prop_map(Value::Integer),
                any::<i64>().prop_map(Value::LongInteger),
                proptest::collection::vec(any::<u8>(), 1..3)
                    .prop_map(|v| Value::BigInteger(v.repeat(8))),
                any::<u32>().prop_map(Value::Enumeration),
                any::<bool>().prop_map(Value::Boolean),
                ".{0,20}".prop_map(Value::TextString),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
                any::<i64>().prop_map(Value::DateTime),
                any::<u32>().prop_map(Value::Interval),
                any::<i64>().prop_map(Value::DateTimeExtended),
            ]
        }

        fn item() -> impl Strategy<Value = Ttlv> {
            let leaf = (0u32..0x1000000, leaf()).prop_map(|(tag, value)| Ttlv { tag, value });
            leaf.prop_recursive(4, 64, 8, |inner| {
                (0u32..0x1000000, proptest::collection::vec(inner, 0..8))
                    .prop_map(|(tag, v)| Ttlv::structure(tag, v))
            })
        }

        proptest! {
            #[test]
            fn round_trips(t in item()) {
                let b = encode(&t);
                prop_assert_eq!(b.len() % 8, 0);
                prop_assert_eq!(decode(&b, &Limits::default()).unwrap(), t);
            }

            #[test]
            fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(t) = decode(&b, &Limits::default()) {
                    prop_assert_eq!(encode(&t), b);
                }
            }
        }
    }
}
