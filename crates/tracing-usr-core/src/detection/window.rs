//! Exact sliding windows: the last time stamps of a key, and its distinct values.

use std::collections::VecDeque;

/// Time stamps kept in the rings.
pub(super) trait Stamp: Copy {
    fn time(&self) -> u32;
}

impl Stamp for u32 {
    fn time(&self) -> u32 {
        *self
    }
}

impl Stamp for (u32, u32) {
    fn time(&self) -> u32 {
        self.0
    }
}

/// The last `cap` time stamps of a key, sorted (exact sliding log).
#[derive(Debug)]
pub(super) struct Ring<T> {
    pub(super) items: VecDeque<T>,
}

impl<T: Stamp> Ring<T> {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(cap),
        }
    }

    /// Inserts in time order, dropping the oldest beyond `cap`. An entry older than the oldest
    /// of a full ring cannot change any outcome and is not kept.
    pub(super) fn push(&mut self, item: T, cap: usize) {
        let t = item.time();
        if self.items.len() >= cap {
            if self.items.front().is_some_and(|o| t < o.time()) {
                return;
            }
            // Make room first, so the ring never grows beyond its capacity.
            while self.items.len() >= cap {
                self.items.pop_front();
            }
        }
        if self.items.back().is_none_or(|last| last.time() <= t) {
            // In order: the common case.
            self.items.push_back(item);
        } else {
            let at = self.items.partition_point(|x| x.time() <= t);
            self.items.insert(at, item);
        }
    }

    /// `cap` entries spanning less than `window`: more than `cap - 1` events inside one window.
    pub(super) fn full_within(&self, cap: usize, window: u32) -> bool {
        match (self.items.front(), self.items.back()) {
            (Some(first), Some(last)) => self.items.len() >= cap && last.time() - first.time() < window,
            _ => false,
        }
    }

    pub(super) fn count_within(&self, now: u32, window: u32) -> u32 {
        let n = self
            .items
            .iter()
            .filter(|x| now.saturating_sub(x.time()) < window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub(super) fn first_within(&self, now: u32, window: u32) -> u32 {
        self.items
            .iter()
            .find(|x| now.saturating_sub(x.time()) < window)
            .map_or(now, Stamp::time)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>()
    }
}

/// At most `cap` distinct hashed values with their last sighting.
#[derive(Debug, Default)]
pub(super) struct Distinct {
    pub(super) items: Vec<(u64, u32)>,
}

impl Distinct {
    pub(super) fn observe(&mut self, value: u64, now: u32, window: u32, cap: usize) {
        self.items.retain(|(_, seen)| now.saturating_sub(*seen) < window);
        if let Some(slot) = self.items.iter_mut().find(|(v, _)| *v == value) {
            slot.1 = slot.1.max(now);
            return;
        }
        if self.items.len() >= cap {
            if let Some(oldest) = (0..self.items.len()).min_by_key(|i| self.items[*i].1) {
                self.items.swap_remove(oldest);
            }
        }
        self.items.push((value, now));
    }

    pub(super) fn len_within(&self, now: u32, window: u32) -> u32 {
        let n = self
            .items
            .iter()
            .filter(|(_, seen)| now.saturating_sub(*seen) < window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}
