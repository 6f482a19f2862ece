//! Typed identifiers. Each wraps a UUID; parsing accepts only the canonical hyphenated form
//! so that an id has exactly one spelling (and one cache / database key).

use std::fmt;

use uuid::Uuid;

use crate::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
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
    InstanceId
);
uuid_id!(
    /// A key (root or standard).
    KeyId
);
uuid_id!(
    /// One version of a key's material; rotation adds a version.
    VersionId
);
uuid_id!(
    /// One import token (identifies the keypair and nonce; replaced tokens get a new id).
    TokenId
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
}
