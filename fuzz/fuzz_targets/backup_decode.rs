//! Backup files: `keyward::backup::decode`, which checks a whole file (magic, lengths, header,
//! checksums, payload type) before a restore writes anything. The first byte picks the mode:
//! - 0: the rest is the file;
//! - 1: the rest is the JSON header of a file whose framing and checksums are made right
//!   around it (`$SHA` in it becomes the payload's SHA-256, `$LEN` its length), so the header
//!   checks see arbitrary input;
//! - 2: a well-formed file with the fuzz bytes XORed into it, then (when the second byte is
//!   odd) its trailing checksum recomputed.
//!
//! Oracle: no panic, and a file is accepted only when it really is well formed: format 1,
//! a SQLite payload of the announced length and SHA-256, and a trailing checksum that matches.
//!
//! The backup format is being reworked; when it changes, point this target at the new
//! decoder (the function `keyward admin restore` calls before it writes anything).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use keyward::backup::{decode, encode, Header, CHECKSUM_LEN, MAGIC};
use keyward_crypto::sha256;
use keyward_fuzz::replace;
use libfuzzer_sys::fuzz_target;

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

fn payload() -> &'static Vec<u8> {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = SQLITE_MAGIC.to_vec();
        p.extend((0..240u32).map(|i| (i * 7) as u8));
        p
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn well_formed() -> &'static Vec<u8> {
    static F: OnceLock<Vec<u8>> = OnceLock::new();
    F.get_or_init(|| {
        let p = payload();
        let mut tables = BTreeMap::new();
        tables.insert("keys".to_string(), 3);
        tables.insert("instances".to_string(), 1);
        let h = Header {
            format: 1,
            created: "2026-01-01T00:00:00Z".into(),
            created_unix: 1_767_225_600,
            keyward_version: "0.1.0 (fuzz)".into(),
            source_backend: "sqlite".into(),
            source: "sqlite:///data/keyward.db".into(),
            payload_format: "sqlite3".into(),
            payload_bytes: p.len() as u64,
            payload_sha256: hex(&sha256(p)),
            tables,
            rows: 4,
            sealed_rows: 3,
            master_key_ids: vec!["file:0123456789abcdef".into()],
        };
        encode(&h, p).unwrap_or_else(|e| panic!("encode: {e}"))
    })
}

fn frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    let sum = sha256(&out);
    out.extend_from_slice(&sum);
    out
}

fuzz_target!(init: { let _ = well_formed(); }, |data: &[u8]| {
    let [mode, flag, rest @ ..] = data else {
        return;
    };
    let file = match mode % 3 {
        0 => {
            let mut f = vec![*flag];
            f.extend_from_slice(rest);
            f
        }
        1 => {
            let p = payload();
            let h = replace(rest, b"$SHA", hex(&sha256(p)).as_bytes());
            let h = replace(&h, b"$LEN", p.len().to_string().as_bytes());
            frame(&h, p)
        }
        _ => {
            let mut f = well_formed().clone();
            for (i, x) in rest.iter().enumerate() {
                if let Some(b) = f.get_mut(i) {
                    *b ^= x;
                }
            }
            if flag % 2 == 1 && f.len() >= CHECKSUM_LEN {
                let n = f.len() - CHECKSUM_LEN;
                let sum = sha256(&f[..n]);
                f[n..].copy_from_slice(&sum);
            }
            f
        }
    };
    if let Ok((header, payload)) = decode(&file) {
        assert_eq!(header.format, 1);
        assert!(payload.starts_with(SQLITE_MAGIC));
        assert_eq!(payload.len() as u64, header.payload_bytes);
        assert_eq!(hex(&sha256(payload)), header.payload_sha256.to_ascii_lowercase());
        let n = file.len() - CHECKSUM_LEN;
        assert_eq!(sha256(&file[..n]).as_slice(), &file[n..]);
        assert!(file.starts_with(MAGIC));
    }
});
