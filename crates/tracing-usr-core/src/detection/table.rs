//! One rule's bounded, sharded table of keys, with their open signals.

use std::collections::HashMap;
use std::sync::Mutex;

use super::config::MAX_KEY_TEXT;
use crate::value::truncate;

/// An open signal of one (rule, key).
#[derive(Debug)]
pub(super) struct Open {
    pub(super) opened: u32,
    pub(super) expires: u32,
    pub(super) escalated: bool,
    pub(super) key: String,
}

impl Open {
    pub(super) fn is_open(&self, now: u32, max: u32) -> bool {
        now < self.expires && now.saturating_sub(self.opened) < max
    }
}

/// A table entry: the rule's state for one key, and up to two open signals.
#[derive(Debug)]
pub(super) struct Slot<S> {
    pub(super) state: S,
    pub(super) updated: u32,
    pub(super) signals: [Option<Box<Open>>; 2],
}

impl<S> Slot<S> {
    pub(super) fn has_open(&self, now: u32, max: u32) -> bool {
        self.signals.iter().flatten().any(|o| o.is_open(now, max))
    }

    pub(super) fn open_since(&self) -> u32 {
        self.signals
            .iter()
            .flatten()
            .map(|o| o.opened)
            .min()
            .unwrap_or(u32::MAX)
    }

    /// A match at `now`: opens signal `i` (returns `true`) or keeps an open one alive.
    pub(super) fn matched(
        &mut self,
        i: usize,
        now: u32,
        window: u32,
        max: u32,
        key: impl FnOnce() -> String,
    ) -> bool {
        match &mut self.signals[i] {
            Some(open) if open.is_open(now, max) => {
                open.expires = open.expires.max(now.saturating_add(window));
                false
            }
            slot => {
                let mut key = key();
                truncate(&mut key, MAX_KEY_TEXT);
                key.shrink_to_fit();
                *slot = Some(Box::new(Open {
                    opened: now,
                    expires: now.saturating_add(window),
                    escalated: false,
                    key,
                }));
                true
            }
        }
    }
}

/// Heap bytes a rule state owns (for the memory figures).
pub(super) trait HeapSize {
    fn heap_bytes(&self) -> usize;
}

/// Keys are already keyed 64-bit hashes: the maps use them as they are.
#[derive(Default)]
pub(super) struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type KeyMap<S> = HashMap<u64, Slot<S>, std::hash::BuildHasherDefault<PreHashed>>;

/// How often a shard may be swept, in seconds.
pub(super) const SWEEP_EVERY: u32 = 5;

#[derive(Debug)]
pub(super) struct Shard<S> {
    pub(super) map: KeyMap<S>,
    pub(super) last_sweep: Option<u32>,
}

/// One rule's bounded, sharded table.
#[derive(Debug)]
pub(super) struct Table<S> {
    pub(super) shards: Box<[Mutex<Shard<S>>]>,
    pub(super) per_shard: usize,
    pub(super) window: u32,
    pub(super) max_signal: u32,
}

/// What an access to a table reports besides its result.
#[derive(Default)]
pub(super) struct Evicted {
    pub(super) open_signal: bool,
}

/// Shards of a table of `max_keys` keys: 16, or one below 1,024 keys (so small bounds are
/// exact).
pub(super) fn shard_count(max_keys: usize) -> usize {
    if max_keys >= 1024 {
        16
    } else {
        1
    }
}

impl<S: HeapSize> Table<S> {
    pub(super) fn new(max_keys: usize, window: u32, max_signal: u32) -> Self {
        let shards = shard_count(max_keys);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: KeyMap::default(),
                        last_sweep: None,
                    })
                })
                .collect(),
            per_shard: (max_keys / shards).max(1),
            window,
            max_signal,
        }
    }

    /// The shard of a key: bits the map itself does not use for its buckets or tags.
    pub(super) fn shard(&self, key: u64) -> &Mutex<Shard<S>> {
        let len = self.shards.len() as u64;
        &self.shards[usize::try_from((key >> 32) % len).unwrap_or(0)]
    }

    /// Runs `f` on the key's slot, creating it with `init` (after a sweep or an eviction when
    /// the shard is full).
    pub(super) fn upsert<R>(
        &self,
        key: u64,
        hash: u64,
        now: u32,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut Slot<S>) -> R,
        evicted: &mut Evicted,
    ) -> Option<R> {
        let mut shard = self.shard(hash).lock().ok()?;
        if !shard.map.contains_key(&key) {
            if shard
                .last_sweep
                .is_none_or(|at| now.saturating_sub(at) >= SWEEP_EVERY)
            {
                shard.last_sweep = Some(now);
                let (window, max) = (self.window, self.max_signal);
                shard
                    .map
                    .retain(|_, slot| now.saturating_sub(slot.updated) < window || slot.has_open(now, max));
            }
            if shard.map.len() >= self.per_shard {
                self.evict_one(&mut shard.map, now, evicted);
            }
            shard.map.insert(
                key,
                Slot {
                    state: init(),
                    updated: now,
                    signals: [None, None],
                },
            );
        }
        let slot = shard.map.get_mut(&key)?;
        slot.updated = slot.updated.max(now);
        Some(f(slot))
    }

    /// Evicts the least recently updated key without an open signal; only if every key has
    /// one, the key with the oldest signal.
    pub(super) fn evict_one(&self, map: &mut KeyMap<S>, now: u32, evicted: &mut Evicted) {
        let max = self.max_signal;
        let quiet = map
            .iter()
            .filter(|(_, s)| !s.has_open(now, max))
            .min_by_key(|(_, s)| s.updated)
            .map(|(k, _)| *k);
        let victim = quiet.or_else(|| {
            evicted.open_signal = true;
            map.iter().min_by_key(|(_, s)| s.open_since()).map(|(k, _)| *k)
        });
        if let Some(victim) = victim {
            map.remove(&victim);
        }
    }

    /// Runs `f` on the key's slot if it exists.
    pub(super) fn existing<R>(&self, key: u64, hash: u64, f: impl FnOnce(&mut Slot<S>) -> R) -> Option<R> {
        let mut shard = self.shard(hash).lock().ok()?;
        shard.map.get_mut(&key).map(f)
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// Bytes used now: buckets (key, slot, control byte), rule state, open signals.
    pub(super) fn memory(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map(|s| {
                        let buckets = buckets_for(s.map.capacity());
                        let heap: usize = s
                            .map
                            .values()
                            .map(|slot| {
                                slot.state.heap_bytes()
                                    + slot
                                        .signals
                                        .iter()
                                        .flatten()
                                        .map(|o| std::mem::size_of::<Open>() + o.key.capacity())
                                        .sum::<usize>()
                            })
                            .sum();
                        buckets * (std::mem::size_of::<(u64, Slot<S>)>() + 1) + heap
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Buckets a `HashMap` of this capacity allocates (hashbrown: load factor 7/8, power of two).
pub(super) fn buckets_for(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else if capacity < 8 {
        if capacity < 4 {
            4
        } else {
            8
        }
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}

/// Key text capacity of an IP-keyed signal (an IPv6 address is at most 39 bytes).
pub(super) const IP_KEY_TEXT: usize = 64;

/// The worst-case bytes of one table: full shards, every key with its largest state and
/// `signals` open signals whose key text takes `key_text` bytes.
pub(super) fn table_bound<S>(max_keys: usize, state_heap: usize, signals: usize, key_text: usize) -> usize {
    let shards = shard_count(max_keys);
    let per_shard = (max_keys / shards).max(1);
    // A map holding `per_shard` keys may have grown to the next capacity step.
    let buckets = buckets_for(per_shard * 8 / 7 + 1);
    let per_key_heap = state_heap + signals * (std::mem::size_of::<Open>() + key_text);
    shards * (buckets * (std::mem::size_of::<(u64, Slot<S>)>() + 1) + per_shard * per_key_heap)
        + shards * std::mem::size_of::<Mutex<Shard<S>>>()
}
