//! KMIP for Keyward: the binary TTLV codec ([`ttlv`]), the tags and enumerations it uses
//! ([`tags`]), the request and response messages ([`message`]) and the operations of the
//! Baseline and Symmetric Key Lifecycle server profiles ([`ops`]), dispatched to a
//! [`ops::Backend`] that holds the objects. No database and no network here.

pub mod message;
pub mod ops;
pub mod tags;
pub mod ttlv;

pub use ttlv::{decode, encode, DecodeError, Limits, Ttlv, Value};
