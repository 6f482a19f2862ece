//! Backup files: `keyward::backup::open_backup`, which verifies and decrypts a whole format-2
//! file (framing, header, the sealed file key, every chunk, the checksum, the manifest) before
//! a restore writes anything, and `keyward::backup::decode_v1`, which checks a format-1 file
//! (read only with `--allow-unauthenticated-v1`). The first byte picks the mode:
//! - 0: the rest is a file for `open_backup`;
//! - 1: a genuine format-2 file with the fuzz bytes XORed into it, then (when the second byte
//!   is odd) its trailing checksum recomputed;
//! - 2: the rest is the JSON header of a format-1 file whose framing and checksums are made
//!   right around it (`$SHA` in it becomes the payload's SHA-256, `$LEN` its length);
//! - 3: the rest is a file for `decode_v1`.
//!
//! Oracle: no panic; `open_backup` accepts only the genuine file (same manifest and payload: no
//! edit gets past the AEAD); `decode_v1` accepts only a file that is well formed (format 1, a
//! SQLite payload of the announced length and SHA-256, row counts that add up, a trailing
//! checksum that matches).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use keyward::backup::{decode_v1, open_backup, seal_backup, Manifest, CHECKSUM_LEN, MAGIC};
use keyward_crypto::master::FileMasterKey;
use keyward_crypto::{sha256, SecretBytes};
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

fn key() -> &'static FileMasterKey {
    static K: OnceLock<FileMasterKey> = OnceLock::new();
    K.get_or_init(|| {
        FileMasterKey::from_secret(&SecretBytes::from_vec(vec![7; 32]))
            .unwrap_or_else(|e| panic!("master key: {e}"))
    })
}

fn manifest() -> Manifest {
    let mut tables = BTreeMap::new();
    tables.insert("keys".to_string(), 3);
    tables.insert("instances".to_string(), 1);
    Manifest {
        source_backend: "sqlite".into(),
        source: "sqlite:///data/keyward.db".into(),
        payload_format: "sqlite3".into(),
        payload_bytes: payload().len() as u64,
        tables,
        rows: 4,
        sealed_rows: 3,
        master_key_ids: vec![keyward_crypto::master::MasterKeyProvider::key_id(key()).into()],
    }
}

/// One genuine format-2 backup, sealed once per process.
fn genuine() -> &'static Vec<u8> {
    static F: OnceLock<Vec<u8>> = OnceLock::new();
    F.get_or_init(|| {
        seal_backup(key(), 1_767_225_600, &manifest(), payload())
            .unwrap_or_else(|e| panic!("seal: {e}"))
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn frame_v1(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    let sum = sha256(&out);
    out.extend_from_slice(&sum);
    out
}

fn check_v2(file: &[u8]) {
    if let Ok(opened) = open_backup(file, key()) {
        assert_eq!(file, genuine().as_slice(), "an edited file was accepted");
        assert_eq!(&opened.payload, payload());
        assert_eq!(opened.manifest.rows, 4);
    }
}

fn check_v1(file: &[u8]) {
    if let Ok((header, p)) = decode_v1(file) {
        assert_eq!(header.format, 1);
        assert!(p.starts_with(SQLITE_MAGIC));
        assert_eq!(p.len() as u64, header.payload_bytes);
        assert_eq!(hex(&sha256(p)), header.payload_sha256.to_ascii_lowercase());
        let sum = header
            .tables
            .values()
            .try_fold(0u64, |a, n| a.checked_add(*n));
        assert_eq!(sum, Some(header.rows));
        let n = file.len() - CHECKSUM_LEN;
        assert_eq!(sha256(&file[..n]).as_slice(), &file[n..]);
        assert!(file.starts_with(MAGIC));
    }
}

fuzz_target!(init: { let _ = genuine(); }, |data: &[u8]| {
    let [mode, flag, rest @ ..] = data else {
        return;
    };
    match mode % 4 {
        0 => {
            let mut f = vec![*flag];
            f.extend_from_slice(rest);
            check_v2(&f);
        }
        1 => {
            let mut f = genuine().clone();
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
            check_v2(&f);
        }
        2 => {
            let p = payload();
            let h = replace(rest, b"$SHA", hex(&sha256(p)).as_bytes());
            let h = replace(&h, b"$LEN", p.len().to_string().as_bytes());
            check_v1(&frame_v1(&h, p));
        }
        _ => {
            let mut f = vec![*flag];
            f.extend_from_slice(rest);
            check_v1(&f);
        }
    }
});
