//! Random trace and span ids, from a per-thread SplitMix64 seeded by the standard library's
//! per-process random hash keys (no extra dependency, no syscall per id).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A non-zero random span id.
pub(crate) fn span_id() -> u64 {
    loop {
        let id = next();
        if id != 0 {
            return id;
        }
    }
}

/// A non-zero random 128-bit trace id.
pub(crate) fn trace_id() -> u128 {
    ((next() as u128) << 64) | span_id() as u128
}

/// A fresh random UUID v4 for a block response.
pub(crate) fn security_response_id() -> String {
    let (a, b) = (next(), next());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    tracing_usr_core::blocking::uuid_v4(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_and_non_zero() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| super::span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
