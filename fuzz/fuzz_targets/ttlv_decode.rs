//! The KMIP TTLV decoder (`keyward_kmip::ttlv::decode`) and the request parser above it
//! (`keyward_kmip::message::parse_request`) on arbitrary bytes, with small limits so that the
//! depth, item-count and size bounds are reached.
//!
//! Oracle: no panic; whatever decodes encodes back to exactly the input bytes (the codec is
//! strict: one encoding per value); a decoded item never exceeds the limits.
#![no_main]

use keyward_kmip::ttlv::{decode, encode, Limits, Ttlv};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_message: 8 * 1024,
    max_depth: 8,
    max_items: 256,
};

fn measure(t: &Ttlv, depth: usize, items: &mut usize, max_depth: &mut usize) {
    *items += 1;
    *max_depth = (*max_depth).max(depth);
    for c in t.children() {
        measure(c, depth + 1, items, max_depth);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = decode(data, &LIMITS) {
        assert_eq!(
            encode(&t),
            data,
            "decoded item did not encode back to its bytes"
        );
        let (mut items, mut depth) = (0, 0);
        measure(&t, 1, &mut items, &mut depth);
        assert!(items <= LIMITS.max_items && depth <= LIMITS.max_depth);
        let _ = keyward_kmip::message::parse_request(&t);
    }
});
