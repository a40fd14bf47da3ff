//! The anonymization hash of docs/tags.md "anonymization", behind a bounded cache.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Prefix of every anonymized value.
pub const ANON_PREFIX: &str = "anon_";

/// `anon_` followed by the first 32 lowercase hex characters of the SHA-256 of `value`.
///
/// ```
/// use tracing_usr_core::anonymize::anonymize;
/// assert_eq!(anonymize("user-1"), "anon_c6c289e49e9c05b2145860387b73bcb1");
/// ```
pub fn anonymize(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(ANON_PREFIX.len() + 32);
    out.push_str(ANON_PREFIX);
    for byte in &digest[..16] {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 0xf) as usize] as char);
    }
    out
}

/// [`anonymize`] with a bounded cache, so that hashing the same id again and again does not
/// redo SHA-256.
///
/// The cache holds at most `capacity` entries in two generations: when the young generation is
/// full it becomes the old one and the previous old one is dropped; a hit in the old generation
/// is promoted. Worst-case memory is `capacity` × (raw value + 37-byte hash + map overhead).
#[derive(Debug)]
pub struct Anonymizer {
    generation_capacity: usize,
    cache: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<Box<str>, Box<str>>,
    old: HashMap<Box<str>, Box<str>>,
}

impl Anonymizer {
    /// Default number of cached values.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// An anonymizer caching at most `capacity` values (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            generation_capacity: (capacity / 2).max(1),
            cache: Mutex::new(Generations::default()),
        }
    }

    /// The anonymized form of `value`.
    pub fn anonymize(&self, value: &str) -> String {
        let Ok(mut cache) = self.cache.lock() else {
            return anonymize(value);
        };
        if let Some(hit) = cache.young.get(value) {
            return hit.to_string();
        }
        let hashed: Box<str> = match cache.old.remove(value) {
            Some(hit) => hit,
            None => anonymize(value).into_boxed_str(),
        };
        if cache.young.len() >= self.generation_capacity {
            let young = std::mem::take(&mut cache.young);
            cache.old = young;
        }
        let out = hashed.to_string();
        cache.young.insert(value.into(), hashed);
        out
    }

    /// How many values are cached now (never more than the capacity).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .map(|c| c.young.len() + c.old.len())
            .unwrap_or(0)
    }
}

impl Default for Anonymizer {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        for (raw, hashed) in [
            ("user-1", "anon_c6c289e49e9c05b2145860387b73bcb1"),
            ("user-login", "anon_e9b7a334826ff2ff28b066a92ba8734c"),
            ("sess-1", "anon_abe633f3a47a2758174eabe9160daf36"),
            ("test", "anon_9f86d081884c7d659a2feaa0c55ad015"),
            ("social-security-id", "anon_5f31ffaf95946d2dc703ddc96a100de5"),
            ("invalidUser", "anon_2141e3bee69f7de45b4f1d8d1f29258a"),
            ("new-user", "anon_6724757d2d9a8113ec9ec57003bf7b3e"),
            ("testnew", "anon_3de740d12dc67b5b1db699424c130847"),
        ] {
            assert_eq!(anonymize(raw), hashed);
            assert_eq!(Anonymizer::default().anonymize(raw), hashed);
        }
    }

    #[test]
    fn cache_is_bounded_and_correct_after_eviction() {
        let a = Anonymizer::new(10);
        for i in 0..1000 {
            let v = format!("user-{i}");
            assert_eq!(a.anonymize(&v), anonymize(&v));
            assert!(a.cached() <= 10);
        }
        assert_eq!(a.anonymize("user-1"), "anon_c6c289e49e9c05b2145860387b73bcb1");
    }
}
