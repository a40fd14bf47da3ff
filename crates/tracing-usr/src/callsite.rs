//! Per-callsite interest, decided once from static metadata and cached lock-free.
//!
//! Whether a span or event declares `usr.*` fields, and which of its field names the key masking
//! rule matches, depends only on its callsite's static metadata. [`CallsiteCache`] computes that
//! once per callsite (in `register_callsite`, or on first sight) so the hot callbacks only do a
//! hash and one atomic load ([`CallsiteCache::has_usr`]); the full facts are read only when
//! there is work to do.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tracing_core::Metadata;
use tracing_usr_core::{keys, Masker};

/// What a field of a callsite is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// An ordinary field: exported as a span tag or log field.
    Plain,
    /// An ordinary field whose name matches the key masking rule: exported as `<Redacted>`.
    Masked,
    /// The `message` field of an event.
    Message,
    /// One of the seven standard identity keys.
    Identity,
    /// A free-form `usr.<key>`; `masked` when the key rule matches its name.
    IdentityExtra { masked: bool },
    /// `usr.token`: always `<Redacted>`.
    Token,
    /// `usr.event`: names a business event (events only; ignored on spans).
    Event,
    /// `usr.exists`: business-event input (events only; ignored on spans).
    Exists,
    /// `http.client_ip`, `network.client.ip` or `client.address`: an ordinary field that is
    /// also checked against the blocked IPs; `rank` is its index in `keys::CLIENT_IP_FIELDS`
    /// (a lower rank wins on the root).
    ClientIp { rank: u8 },
    /// `http.useragent` or `user_agent.original` while detection runs: an ordinary field that
    /// is also detection input (copied into signals). Without detection these are `Plain`.
    UserAgent,
}

impl FieldKind {
    /// The kind of the field `name`; user-agent fields count only when `detection` runs.
    pub(crate) fn classify(name: &str, masker: &Masker, detection: bool) -> Self {
        match name {
            "message" => FieldKind::Message,
            keys::USR_EVENT => FieldKind::Event,
            keys::USR_EXISTS => FieldKind::Exists,
            keys::USR_TOKEN => FieldKind::Token,
            _ if keys::CLIENT_IP_FIELDS.contains(&name) => FieldKind::ClientIp {
                rank: keys::CLIENT_IP_FIELDS
                    .iter()
                    .position(|f| *f == name)
                    .and_then(|i| u8::try_from(i).ok())
                    .unwrap_or(u8::MAX),
            },
            _ if detection && keys::USER_AGENT_FIELDS.contains(&name) => FieldKind::UserAgent,
            _ if keys::is_standard_key(name) => FieldKind::Identity,
            _ if name.starts_with(keys::USR_PREFIX) => FieldKind::IdentityExtra {
                masked: masker.key_matches(name),
            },
            _ if masker.key_matches(name) => FieldKind::Masked,
            _ => FieldKind::Plain,
        }
    }

    /// Whether the key rule or the token rule masks the field's value.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn is_masked(self) -> bool {
        matches!(
            self,
            FieldKind::Masked | FieldKind::Token | FieldKind::IdentityExtra { masked: true }
        )
    }

    /// Whether the field is identity input (or business-event input) rather than a tag.
    pub(crate) fn is_usr(self) -> bool {
        !matches!(
            self,
            FieldKind::Plain
                | FieldKind::Masked
                | FieldKind::Message
                | FieldKind::ClientIp { .. }
                | FieldKind::UserAgent
        )
    }
}

/// The cached facts about one callsite.
#[derive(Debug)]
pub(crate) struct CallsiteInfo {
    kinds: Box<[FieldKind]>,
    /// Declares any `usr.*` or client-IP field: the layer has work to do even when nothing is
    /// exported.
    pub(crate) has_usr: bool,
    /// Declares `usr.event` (a business-event callsite, when it is an event).
    pub(crate) has_event: bool,
    /// Declares an identity field the mode applies to (for the OpenTelemetry guard).
    #[cfg(feature = "opentelemetry")]
    pub(crate) has_identity: bool,
    /// Declares a field whose value the key rule or the token rule masks.
    #[cfg(feature = "opentelemetry")]
    pub(crate) has_masked: bool,
}

impl CallsiteInfo {
    /// The names of the callsite's `usr.*` fields.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn usr_field_names(&self, meta: &'static Metadata<'static>) -> Vec<&'static str> {
        self.names(meta, |k| k.is_usr())
    }

    /// The names of the callsite's fields whose values the key rule (or the token rule) masks.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn masked_field_names(&self, meta: &'static Metadata<'static>) -> Vec<&'static str> {
        self.names(meta, FieldKind::is_masked)
    }

    #[cfg(feature = "opentelemetry")]
    fn names(&self, meta: &'static Metadata<'static>, pick: impl Fn(FieldKind) -> bool) -> Vec<&'static str> {
        meta.fields()
            .iter()
            .zip(self.kinds.iter())
            .filter(|(_, k)| pick(**k))
            .map(|(f, _)| f.name())
            .collect()
    }

    fn compute(meta: &Metadata<'_>, masker: &Masker, detection: bool) -> Self {
        let kinds: Box<[FieldKind]> = meta
            .fields()
            .iter()
            .map(|f| FieldKind::classify(f.name(), masker, detection))
            .collect();
        let has_usr = kinds
            .iter()
            .any(|k| k.is_usr() || matches!(k, FieldKind::ClientIp { .. } | FieldKind::UserAgent));
        let has_event = kinds.contains(&FieldKind::Event);
        Self {
            #[cfg(feature = "opentelemetry")]
            has_identity: kinds.iter().any(|k| {
                matches!(
                    k,
                    FieldKind::Identity | FieldKind::Exists | FieldKind::IdentityExtra { masked: false }
                )
            }),
            #[cfg(feature = "opentelemetry")]
            has_masked: kinds.iter().any(|k| k.is_masked()),
            kinds,
            has_usr,
            has_event,
        }
    }

    /// The kind of the field at `index` (fields of a callsite are indexed in declaration order).
    pub(crate) fn kind(&self, index: usize) -> Option<FieldKind> {
        self.kinds.get(index).copied()
    }
}

/// A borrowed cached entry, or one computed on the spot when the table is full.
pub(crate) enum InfoRef<'a> {
    Cached(&'a CallsiteInfo),
    Computed(Box<CallsiteInfo>),
}

impl Deref for InfoRef<'_> {
    type Target = CallsiteInfo;
    fn deref(&self) -> &CallsiteInfo {
        match self {
            InfoRef::Cached(info) => info,
            InfoRef::Computed(info) => info,
        }
    }
}

struct Slot {
    key: AtomicUsize,
    info: OnceLock<CallsiteInfo>,
}

/// A callsite's metadata address is at least 2-aligned, so its lowest bit is free for
/// `has_usr` in [`CallsiteCache::has_usr`]'s one-word entries.
const _: () = assert!(std::mem::align_of::<Metadata<'static>>() >= 2);

/// An insert-only open-addressing table from callsite metadata address to [`CallsiteInfo`].
pub(crate) struct CallsiteCache {
    slots: Box<[Slot]>,
    /// Direct-mapped, one word per entry: a callsite's metadata address with its `has_usr` in
    /// the lowest bit (0: empty). A colliding callsite overwrites the entry; the loser takes the
    /// slower path through `slots` on its next call.
    interest: Box<[AtomicUsize; SLOTS]>,
    used: AtomicUsize,
    masker: std::sync::Arc<Masker>,
    /// Whether detection runs (user-agent fields are then read).
    detection: bool,
}

const BITS: u32 = 11;
const SLOTS: usize = 1 << BITS;
/// At most this many callsites are cached (75 % load); others are classified on each use.
const MAX_CACHED: usize = SLOTS / 4 * 3;

impl std::fmt::Debug for CallsiteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallsiteCache")
            .field("cached", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl CallsiteCache {
    pub(crate) fn new(masker: std::sync::Arc<Masker>, detection: bool) -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                key: AtomicUsize::new(0),
                info: OnceLock::new(),
            })
            .collect();
        Self {
            slots,
            interest: Box::new(std::array::from_fn(|_| AtomicUsize::new(0))),
            used: AtomicUsize::new(0),
            masker,
            detection,
        }
    }

    fn start(key: usize) -> usize {
        ((key as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
    }

    /// Whether `meta`'s callsite declares any `usr.*`, client-IP or user-agent field (its
    /// [`CallsiteInfo::has_usr`]): one load and a comparison on the usual path.
    #[inline]
    pub(crate) fn has_usr(&self, meta: &'static Metadata<'static>) -> bool {
        let key = meta as *const Metadata<'static> as usize;
        let index = Self::start(key);
        if let Some(entry) = self.interest.get(index) {
            // The entry is written whole from immutable facts: no ordering with other memory.
            let word = entry.load(Ordering::Relaxed);
            if word & !1 == key {
                return word & 1 == 1;
            }
        }
        self.has_usr_slow(meta, key, index)
    }

    #[cold]
    #[inline(never)]
    fn has_usr_slow(&self, meta: &'static Metadata<'static>, key: usize, index: usize) -> bool {
        let has_usr = self.get(meta).has_usr;
        if let Some(entry) = self.interest.get(index) {
            entry.store(key | usize::from(has_usr), Ordering::Relaxed);
        }
        has_usr
    }

    /// The facts about `meta`'s callsite, computing and caching them on first sight.
    #[inline]
    pub(crate) fn get(&self, meta: &'static Metadata<'static>) -> InfoRef<'_> {
        let key = meta as *const Metadata<'static> as usize;
        let index = Self::start(key);
        // The hot path: the callsite sits in its home slot.
        if let Some(slot) = self.slots.get(index) {
            if slot.key.load(Ordering::Acquire) == key {
                if let Some(info) = slot.info.get() {
                    return InfoRef::Cached(info);
                }
            }
        }
        self.probe(meta, key, index)
    }

    #[cold]
    fn probe(&self, meta: &'static Metadata<'static>, key: usize, mut index: usize) -> InfoRef<'_> {
        for _ in 0..SLOTS {
            let slot = &self.slots[index];
            match slot.key.load(Ordering::Acquire) {
                k if k == key => {
                    return self.filled(slot, meta);
                }
                0 => return self.insert(meta, key, index),
                _ => index = (index + 1) % SLOTS,
            }
        }
        self.uncached(meta)
    }

    /// The info of a slot whose key is `meta`'s: cached, or computed for this call while another
    /// thread that claimed the slot is still filling it in.
    fn filled<'a>(&'a self, slot: &'a Slot, meta: &'static Metadata<'static>) -> InfoRef<'a> {
        match slot.info.get() {
            Some(info) => InfoRef::Cached(info),
            None => self.uncached(meta),
        }
    }

    /// The info computed for this call only (the table is full, or the slot is being filled).
    fn uncached(&self, meta: &'static Metadata<'static>) -> InfoRef<'_> {
        InfoRef::Computed(Box::new(CallsiteInfo::compute(
            meta,
            &self.masker,
            self.detection,
        )))
    }

    fn insert(&self, meta: &'static Metadata<'static>, key: usize, mut index: usize) -> InfoRef<'_> {
        if self.used.load(Ordering::Relaxed) >= MAX_CACHED {
            return self.uncached(meta);
        }
        for _ in 0..SLOTS {
            let slot = &self.slots[index];
            match slot
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.used.fetch_add(1, Ordering::Relaxed);
                    return InfoRef::Cached(
                        slot.info
                            .get_or_init(|| CallsiteInfo::compute(meta, &self.masker, self.detection)),
                    );
                }
                Err(existing) if existing == key => {
                    return self.filled(slot, meta);
                }
                Err(_) => index = (index + 1) % SLOTS,
            }
        }
        self.uncached(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaked metadata of a (never registered) span callsite with these field names.
    fn metadata(fields: &'static [&'static str]) -> &'static Metadata<'static> {
        struct Cs;
        impl tracing_core::Callsite for Cs {
            fn set_interest(&self, _: tracing_core::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static CS: Cs = Cs;
        Box::leak(Box::new(Metadata::new(
            "test",
            "test",
            tracing_core::Level::INFO,
            None,
            None,
            None,
            tracing_core::field::FieldSet::new(fields, tracing_core::identify_callsite!(&CS)),
            tracing_core::metadata::Kind::SPAN,
        )))
    }

    #[test]
    fn interest_word_agrees_with_the_full_facts() {
        let cache = CallsiteCache::new(std::sync::Arc::new(Masker::default()), false);
        let plain = metadata(&["http.route", "step"]);
        let usr = metadata(&["step", "usr.id"]);
        let ip = metadata(&["http.client_ip"]);
        for _ in 0..3 {
            // First call: the slow path fills the entry; later ones read it.
            assert!(!cache.has_usr(plain));
            assert!(cache.has_usr(usr));
            assert!(cache.has_usr(ip));
            assert_eq!(cache.has_usr(plain), cache.get(plain).has_usr);
            assert_eq!(cache.has_usr(usr), cache.get(usr).has_usr);
        }
    }

    #[test]
    fn colliding_callsites_keep_their_own_interest() {
        let cache = CallsiteCache::new(std::sync::Arc::new(Masker::default()), false);
        // Many callsites, so some share an interest entry: each still reads its own facts.
        let all: Vec<(&'static Metadata<'static>, bool)> = (0..3 * SLOTS)
            .map(|i| {
                if i % 2 == 0 {
                    (metadata(&["usr.id"]), true)
                } else {
                    (metadata(&["step"]), false)
                }
            })
            .collect();
        for _ in 0..2 {
            for (meta, has_usr) in &all {
                assert_eq!(cache.has_usr(meta), *has_usr);
            }
        }
    }

    #[test]
    fn classification_follows_the_contract() {
        let m = Masker::default();
        assert_eq!(FieldKind::classify("usr.id", &m, false), FieldKind::Identity);
        assert_eq!(
            FieldKind::classify("usr.org.name", &m, false),
            FieldKind::IdentityExtra { masked: false }
        );
        assert_eq!(
            FieldKind::classify("usr.api_key", &m, false),
            FieldKind::IdentityExtra { masked: true }
        );
        assert_eq!(FieldKind::classify("usr.token", &m, false), FieldKind::Token);
        assert_eq!(FieldKind::classify("usr.event", &m, false), FieldKind::Event);
        assert_eq!(FieldKind::classify("password", &m, false), FieldKind::Masked);
        assert_eq!(FieldKind::classify("http.route", &m, false), FieldKind::Plain);
        assert_eq!(FieldKind::classify("message", &m, false), FieldKind::Message);
        assert_eq!(
            FieldKind::classify("network.client.ip", &m, false),
            FieldKind::ClientIp { rank: 1 }
        );
        assert_eq!(FieldKind::classify("http.useragent", &m, false), FieldKind::Plain);
        assert_eq!(
            FieldKind::classify("http.useragent", &m, true),
            FieldKind::UserAgent
        );
    }
}
