//! Typed identifiers. Each wraps a UUID; parsing accepts only the canonical hyphenated form
//! so that an id has exactly one spelling (and one cache / database key).

use std::fmt;

use uuid::Uuid;

use crate::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $gen:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self($gen)
            }

            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }

            /// Parses the canonical lowercase-or-uppercase hyphenated form only.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                if s.len() != 36 {
                    return Err(DomainError::InvalidUuid);
                }
                Uuid::try_parse(s)
                    .map(|u| Self(u))
                    .map_err(|_| DomainError::InvalidUuid)
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

uuid_id!(
    /// A service instance (tenant); every API call is scoped to one by `bluemix-instance`.
    InstanceId,
    Uuid::new_v4()
);
uuid_id!(
    /// A key (root or standard). Time-ordered (UUID version 7: 48 bits of milliseconds, then
    /// 74 random bits), so a new key's entries land at the right-hand end of the id-ordered
    /// indexes instead of on a random page (docs/design.md, "Listing at scale"). The id shows
    /// the creation time to the millisecond, which the key's metadata shows anyway.
    KeyId,
    Uuid::now_v7()
);
uuid_id!(
    /// One version of a key's material; rotation adds a version. Time-ordered like [`KeyId`].
    VersionId,
    Uuid::now_v7()
);
uuid_id!(
    /// One import token (identifies the keypair and nonce; replaced tokens get a new id).
    TokenId,
    Uuid::new_v4()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_canonical_only() {
        let k = KeyId::new();
        assert_eq!(KeyId::parse(&k.to_string()), Ok(k));
        assert!(KeyId::parse("not-a-uuid").is_err());
        assert!(KeyId::parse(&k.as_uuid().simple().to_string()).is_err());
        assert!(KeyId::parse(&format!("{{{k}}}")).is_err());
    }

    #[test]
    fn key_ids_are_time_ordered_and_random_in_their_last_digit() {
        let a = KeyId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = KeyId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b && a.to_string() < b.to_string());
        // The counters of migration 0007 spread an instance over 16 rows by the id's last
        // hex digit, which must therefore take every value.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            seen.insert(KeyId::new().to_string().chars().last());
        }
        assert_eq!(seen.len(), 16);
    }
}
