//! Secret byte strings: zeroized on drop, redacted in `Debug`, never `Clone` or `PartialEq`.

use std::fmt;

use zeroize::Zeroizing;

/// Key material or another secret. The bytes are reachable only through [`SecretBytes::expose`],
/// whose call sites are the places where a secret is actually used.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `v`; the buffer is zeroized when this value drops.
    pub fn from_vec(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }

    /// Copies `s` into a new zeroizing buffer.
    pub fn copy_from(s: &[u8]) -> Self {
        Self(Zeroizing::new(s.to_vec()))
    }

    pub(crate) fn zeroed(n: usize) -> Self {
        Self(Zeroizing::new(vec![0u8; n]))
    }

    /// The secret bytes. Use only to feed them to a cryptographic operation or an encoder
    /// whose output is itself treated as secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A second copy in its own zeroizing buffer; an explicit call rather than `Clone`, so that
    /// every duplication of a secret is visible.
    pub fn duplicate(&self) -> Self {
        Self::copy_from(&self.0)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_vec(b"super-secret-material".to_vec());
        let d = format!("{s:?}");
        assert!(!d.contains("super"));
        assert!(d.contains("REDACTED"));
    }
}
