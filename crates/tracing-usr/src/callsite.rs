//! Per-callsite interest, decided once from static metadata and cached lock-free.
//!
//! Whether a span or event declares `usr.*` fields, and which of its field names the key masking
//! rule matches, depends only on its callsite's static metadata. [`CallsiteCache`] computes that
//! once per callsite (in `register_callsite`, or on first sight) so the hot callbacks only do a
//! hash and two atomic loads.

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
}

impl CallsiteInfo {
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

/// An insert-only open-addressing table from callsite metadata address to [`CallsiteInfo`].
pub(crate) struct CallsiteCache {
    slots: Box<[Slot]>,
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
            used: AtomicUsize::new(0),
            masker,
            detection,
        }
    }

    fn start(key: usize) -> usize {
        ((key as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
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
                    return match slot.info.get() {
                        Some(info) => InfoRef::Cached(info),
                        // Another thread claimed the slot and is filling it in right now.
                        None => InfoRef::Computed(Box::new(CallsiteInfo::compute(
                            meta,
                            &self.masker,
                            self.detection,
                        ))),
                    };
                }
                0 => return self.insert(meta, key, index),
                _ => index = (index + 1) % SLOTS,
            }
        }
        InfoRef::Computed(Box::new(CallsiteInfo::compute(
            meta,
            &self.masker,
            self.detection,
        )))
    }

    fn insert(&self, meta: &'static Metadata<'static>, key: usize, mut index: usize) -> InfoRef<'_> {
        if self.used.load(Ordering::Relaxed) >= MAX_CACHED {
            return InfoRef::Computed(Box::new(CallsiteInfo::compute(
                meta,
                &self.masker,
                self.detection,
            )));
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
                    return match slot.info.get() {
                        Some(info) => InfoRef::Cached(info),
                        None => InfoRef::Computed(Box::new(CallsiteInfo::compute(
                            meta,
                            &self.masker,
                            self.detection,
                        ))),
                    };
                }
                Err(_) => index = (index + 1) % SLOTS,
            }
        }
        InfoRef::Computed(Box::new(CallsiteInfo::compute(
            meta,
            &self.masker,
            self.detection,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
