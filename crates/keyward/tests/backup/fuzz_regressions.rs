//! Inputs that once crashed a fuzz target (`fuzz/`), as ordinary tests of the `keyward` crate
//! (in this binary because every one so far is a backup input). Each input is also kept in
//! `fuzz/regressions/<target>/`, which `scripts/fuzz-smoke` replays.

use std::collections::BTreeMap;

use keyward::backup::{decode_v1, HeaderV1, MAGIC};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `backup_decode` (fuzz/regressions/backup_decode/table_counts_overflow): a format-1 header
/// whose per-table row counts overflow a u64 when added panicked in the decoder (debug builds)
/// or wrapped around (release builds, where a wrapped sum could pass the consistency check). It
/// must be refused as inconsistent.
#[test]
fn backup_header_whose_table_counts_overflow_is_refused() {
    let mut payload = b"SQLite format 3\0".to_vec();
    payload.extend_from_slice(&[0u8; 84]);
    for (counts, rows) in [
        (vec![u64::MAX, 1], 0),
        (vec![u64::MAX, 2], 1),
        (vec![u64::MAX / 2 + 1, u64::MAX / 2 + 1], 0),
    ] {
        let tables: BTreeMap<String, u64> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("t{i}"), *n))
            .collect();
        let header = HeaderV1 {
            format: 1,
            created: "2026-01-01T00:00:00Z".into(),
            created_unix: 1_767_225_600,
            keyward_version: "test".into(),
            source_backend: "sqlite".into(),
            source: "sqlite:///x".into(),
            payload_format: "sqlite3".into(),
            payload_bytes: payload.len() as u64,
            payload_sha256: hex(&keyward_crypto::sha256(&payload)),
            tables,
            rows,
            sealed_rows: 0,
            master_key_ids: vec![],
        };
        let h = serde_json::to_vec(&header).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&(h.len() as u32).to_be_bytes());
        file.extend_from_slice(&h);
        file.extend_from_slice(&payload);
        let sum = keyward_crypto::sha256(&file);
        file.extend_from_slice(&sum);
        let err = decode_v1(&file).expect_err("an overflowing header must be refused");
        assert!(
            err.to_string().contains("do not add up"),
            "unexpected error: {err:#}"
        );
    }
}
