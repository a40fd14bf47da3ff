//! The value masking the export thread applies to every record before any exporter sees it.

use tracing_usr_core::Masker;

use crate::record::{FieldValue, Record};

/// Values seen to match nothing of the value masking rule, remembered by the export thread:
/// applications repeat the same tag values (routes, methods, systems) on every request, and a
/// set look-up costs a fraction of a regex search. Whole values are kept and compared (a hash
/// alone could let a secret through); only short values, at most [`MaskCache::CAPACITY`] of
/// them, emptied when full. They are values about to be exported in clear anyway.
#[derive(Debug, Default)]
pub struct MaskCache {
    clean: std::collections::HashSet<Box<str>, foldhash::fast::RandomState>,
}

impl MaskCache {
    /// At most this many values are remembered.
    pub const CAPACITY: usize = 4096;
    /// Longer values are never remembered.
    pub const MAX_LEN: usize = 128;

    fn mask_in_place<V: AsRef<str> + From<String>>(&mut self, masker: &Masker, value: &mut V) {
        let text = value.as_ref();
        let short = text.len() <= Self::MAX_LEN;
        if short && self.clean.contains(text) {
            return;
        }
        match masker.mask_value(text) {
            std::borrow::Cow::Owned(masked) => *value = masked.into(),
            std::borrow::Cow::Borrowed(_) if short => {
                if self.clean.len() >= Self::CAPACITY {
                    self.clean.clear();
                }
                self.clean.insert(text.into());
            }
            std::borrow::Cow::Borrowed(_) => {}
        }
    }
}

/// Applies the value masking rule to what the layer left for the pipeline: the pending `meta`
/// entries of a span, and the message and string fields of a log record. `cache` remembers
/// values that match nothing (see [`MaskCache`]).
pub fn mask_record(masker: &Masker, cache: &mut MaskCache, record: &mut Record) {
    match record {
        Record::Span(span) => {
            let pending = span.pending_value_mask.min(span.meta.len());
            for (_, value) in &mut span.meta[..pending] {
                cache.mask_in_place(masker, value);
            }
            span.pending_value_mask = 0;
            for event in &mut span.events {
                cache.mask_in_place(masker, &mut event.name);
                for (_, value) in &mut event.fields {
                    if let FieldValue::Str(s) = value {
                        cache.mask_in_place(masker, s);
                    }
                }
            }
        }
        Record::Log(log) => {
            if let Some(message) = &mut log.message {
                cache.mask_in_place(masker, message);
            }
            for (_, value) in &mut log.fields {
                if let FieldValue::Str(s) = value {
                    cache.mask_in_place(masker, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_cache_remembers_only_clean_short_values() {
        let masker = Masker::default();
        let mut cache = MaskCache::default();
        for _ in 0..3 {
            let mut secret = "Authorization: Bearer abc.def-1".to_owned();
            cache.mask_in_place(&masker, &mut secret);
            assert_eq!(secret, "Authorization: Bearer <Redacted>");
            let mut clean = "/orders".to_owned();
            cache.mask_in_place(&masker, &mut clean);
            assert_eq!(clean, "/orders");
        }
        assert_eq!(cache.clean.len(), 1, "only the clean value is remembered");
        let mut long = "x".repeat(MaskCache::MAX_LEN + 1);
        cache.mask_in_place(&masker, &mut long);
        assert_eq!(cache.clean.len(), 1, "long values are not remembered");
        for i in 0..MaskCache::CAPACITY + 10 {
            cache.mask_in_place(&masker, &mut format!("value-{i}"));
        }
        assert!(cache.clean.len() <= MaskCache::CAPACITY);
    }
}
