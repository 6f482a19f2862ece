//! Reading key material and import-token public keys from files and arguments.
//!
//! Material files hold either the raw key bytes or base64 text of them. In `auto` mode the
//! base64 reading wins when the file, with all ASCII whitespace removed, is valid standard
//! base64 of 16, 24 or 32 bytes; otherwise the raw bytes are used as they are. The only files
//! that are valid both ways are 32-byte files made entirely of base64 characters (base64 text of
//! a 24-byte key); random binary material is such a file with probability 2^-64, so the file is
//! taken as text and a note is printed on stderr. `--material-format raw|base64` removes the
//! guess.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::{pem_decode, pem_encode};
use keyward_crypto::SecretBytes;

/// Largest material file read (standard keys are at most 7,500 bytes; base64 of that is 10,000).
pub const MAX_MATERIAL_FILE: u64 = 64 * 1024;

/// The key lengths Key Protect accepts for root keys.
pub const ROOT_KEY_LENGTHS: [usize; 3] = [16, 24, 32];

/// How to read a material file.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaterialFormat {
    /// Base64 text of 16/24/32 bytes if the file is that, raw bytes otherwise.
    #[default]
    Auto,
    /// The file's bytes are the key material.
    Raw,
    /// The file is base64 text (whitespace ignored).
    Base64,
}

/// Which reading of a material file was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Raw,
    Base64,
    /// Valid both as raw 16/24/32 bytes and as base64 of 16/24/32 bytes; base64 was used.
    AmbiguousBase64,
}

fn strip_ws(content: &[u8]) -> Vec<u8> {
    content
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

/// Decodes the content of a material file. Pure; see the module docs for the rule.
pub fn decode_material(
    content: &[u8],
    format: MaterialFormat,
) -> anyhow::Result<(SecretBytes, Reading)> {
    if content.is_empty() {
        bail!("the key material file is empty");
    }
    match format {
        MaterialFormat::Raw => Ok((SecretBytes::copy_from(content), Reading::Raw)),
        MaterialFormat::Base64 => {
            let text = SecretBytes::from_vec(strip_ws(content));
            let bytes = B64
                .decode(text.expose())
                .map_err(|_| anyhow!("the key material file is not valid base64 text"))?;
            if bytes.is_empty() {
                bail!("the key material file decodes to no bytes");
            }
            Ok((SecretBytes::from_vec(bytes), Reading::Base64))
        }
        MaterialFormat::Auto => {
            let text = SecretBytes::from_vec(strip_ws(content));
            if let Ok(bytes) = B64.decode(text.expose()) {
                let decoded = SecretBytes::from_vec(bytes);
                if ROOT_KEY_LENGTHS.contains(&decoded.len()) {
                    let reading = if ROOT_KEY_LENGTHS.contains(&content.len()) {
                        Reading::AmbiguousBase64
                    } else {
                        Reading::Base64
                    };
                    return Ok((decoded, reading));
                }
            }
            Ok((SecretBytes::copy_from(content), Reading::Raw))
        }
    }
}

/// Reads a material file (`-` = stdin), at most [`MAX_MATERIAL_FILE`] bytes, and decodes it.
/// Prints a note on stderr when the reading was ambiguous.
pub fn read_material_file(path: &Path, format: MaterialFormat) -> anyhow::Result<SecretBytes> {
    let mut buf = Vec::new();
    let limit = MAX_MATERIAL_FILE + 1;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .context("reading key material from stdin")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("opening key material file {}", path.display()))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading key material file {}", path.display()))?;
    }
    let content = SecretBytes::from_vec(buf);
    if content.len() as u64 > MAX_MATERIAL_FILE {
        bail!(
            "the key material file is larger than {} bytes",
            MAX_MATERIAL_FILE
        );
    }
    let (material, reading) = decode_material(content.expose(), format)?;
    if reading == Reading::AmbiguousBase64 {
        eprintln!(
            "note: {} is {} bytes of base64 text; using the {} bytes it decodes to \
             (pass --material-format raw to use the file bytes as they are)",
            path.display(),
            content.len(),
            material.len()
        );
    }
    Ok(material)
}

/// Decodes key material given as base64 on the command line.
pub fn decode_material_arg(b64: &str) -> anyhow::Result<SecretBytes> {
    let text = SecretBytes::from_vec(strip_ws(b64.as_bytes()));
    let bytes = B64
        .decode(text.expose())
        .map_err(|_| anyhow!("--key-material is not valid base64"))?;
    if bytes.is_empty() {
        bail!("--key-material decodes to no bytes");
    }
    Ok(SecretBytes::from_vec(bytes))
}

/// Checks that `material` can be a root key.
pub fn check_root_length(material: &SecretBytes) -> anyhow::Result<()> {
    if ROOT_KEY_LENGTHS.contains(&material.len()) {
        Ok(())
    } else {
        bail!(
            "the key material is {} bytes; a securely imported root key must be 16, 24 or 32 \
             bytes (checked locally, nothing was sent)",
            material.len()
        )
    }
}

/// Turns a public key given as PEM text, base64 of PEM text (an import token's `payload`), or
/// base64 of DER into PKIX PEM text. The result is checked to hold one PEM block.
pub fn public_key_pem(input: &[u8]) -> anyhow::Result<String> {
    let as_text = std::str::from_utf8(input).ok();
    if let Some(text) = as_text {
        if text.contains("-----BEGIN ") {
            return checked_pem(text.to_owned());
        }
    }
    let decoded = B64
        .decode(strip_ws(input))
        .map_err(|_| anyhow!("the public key is neither PEM text nor base64"))?;
    match std::str::from_utf8(&decoded) {
        Ok(text) if text.contains("-----BEGIN ") => checked_pem(text.to_owned()),
        // base64 of DER (the format HPCS shows); wrap it as PEM.
        _ => Ok(pem_encode("PUBLIC KEY", &decoded)),
    }
}

fn checked_pem(pem: String) -> anyhow::Result<String> {
    if pem_decode(&pem).is_none() {
        bail!("the public key PEM text is malformed");
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn raw_binary_is_raw() {
        for n in [16usize, 24, 32] {
            let content: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37) ^ 0x80).collect();
            let (m, r) = decode_material(&content, MaterialFormat::Auto).unwrap();
            assert_eq!(r, Reading::Raw);
            assert_eq!(m.expose(), &content[..]);
        }
    }

    #[test]
    fn base64_text_with_newline_is_decoded() {
        for n in [16usize, 24, 32] {
            let key: Vec<u8> = (0..n as u8).collect();
            let content = format!("{}\n", B64.encode(&key));
            let (m, r) = decode_material(content.as_bytes(), MaterialFormat::Auto).unwrap();
            assert_eq!(r, Reading::Base64);
            assert_eq!(m.expose(), &key[..]);
        }
    }

    #[test]
    fn base64_of_other_length_is_taken_raw_in_auto() {
        // base64 of 20 bytes: valid base64 but not a root key length, so the raw bytes win.
        let content = B64.encode([7u8; 20]);
        let (m, r) = decode_material(content.as_bytes(), MaterialFormat::Auto).unwrap();
        assert_eq!(r, Reading::Raw);
        assert_eq!(m.expose(), content.as_bytes());
        // ... and explicitly base64 it is 20 bytes.
        let (m, _) = decode_material(content.as_bytes(), MaterialFormat::Base64).unwrap();
        assert_eq!(m.len(), 20);
    }

    #[test]
    fn ambiguous_32_char_text_prefers_base64() {
        let content = b"abcdefghijklmnopqrstuvwxyz012345";
        assert_eq!(content.len(), 32);
        let (m, r) = decode_material(content, MaterialFormat::Auto).unwrap();
        assert_eq!(r, Reading::AmbiguousBase64);
        assert_eq!(m.len(), 24);
        let (m, r) = decode_material(content, MaterialFormat::Raw).unwrap();
        assert_eq!(r, Reading::Raw);
        assert_eq!(m.len(), 32);
    }

    #[test]
    fn empty_and_bad_base64() {
        assert!(decode_material(b"", MaterialFormat::Auto).is_err());
        assert!(decode_material(b"not base64!!", MaterialFormat::Base64).is_err());
        assert!(decode_material(b"\n\n", MaterialFormat::Base64).is_err());
        assert!(decode_material_arg("%%%").is_err());
        assert_eq!(
            decode_material_arg(&B64.encode([1u8; 24])).unwrap().len(),
            24
        );
    }

    #[test]
    fn root_length_check() {
        assert!(check_root_length(&SecretBytes::copy_from(&[0; 16])).is_ok());
        assert!(check_root_length(&SecretBytes::copy_from(&[0; 24])).is_ok());
        assert!(check_root_length(&SecretBytes::copy_from(&[0; 32])).is_ok());
        let e = check_root_length(&SecretBytes::copy_from(&[0; 20])).unwrap_err();
        assert!(e.to_string().contains("20 bytes"));
    }

    #[test]
    fn error_never_echoes_material() {
        let e = decode_material(b"sekrit-material-#", MaterialFormat::Base64).unwrap_err();
        assert!(!format!("{e:#}").contains("sekrit"));
    }

    #[test]
    fn public_key_forms() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x05];
        let pem = pem_encode("PUBLIC KEY", &der);
        // PEM text
        assert_eq!(public_key_pem(pem.as_bytes()).unwrap(), pem);
        // base64 of PEM (import token payload)
        let payload = B64.encode(pem.as_bytes());
        assert_eq!(public_key_pem(payload.as_bytes()).unwrap(), pem);
        // base64 of DER
        assert_eq!(public_key_pem(B64.encode(der).as_bytes()).unwrap(), pem);
        // garbage
        assert!(public_key_pem(b"%%%").is_err());
        assert!(public_key_pem(b"-----BEGIN PUBLIC KEY-----\n%%%\n").is_err());
    }
}
