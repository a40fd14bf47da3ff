//! Time stamps: Unix nanoseconds from the monotonic clock, anchored to the wall clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos() -> u64 {
    unix_nanos_at(Instant::now())
}

/// The process's first time stamp (the monotonic origin of [`unix_nanos_at`]).
static BASE: OnceLock<Instant> = OnceLock::new();
/// Unix nanoseconds of [`BASE`], as of the last anchoring.
static OFFSET: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds after [`BASE`] of the last anchoring, plus one (0: never anchored).
static ANCHORED: AtomicU64 = AtomicU64::new(0);
/// How often the wall clock is read again, so a stepped system clock is followed.
const REANCHOR_NANOS: u64 = 1_000_000_000;

/// `at` in nanoseconds since the Unix epoch, from the monotonic clock anchored to the wall clock
/// (re-anchored every second): one clock read per time stamp instead of two, as Datadog's own
/// tracers do. Durations always come from the monotonic clock.
pub(crate) fn unix_nanos_at(at: Instant) -> u64 {
    let base = *BASE.get_or_init(|| at);
    let since = nanos(at.saturating_duration_since(base));
    let anchored = ANCHORED.load(Ordering::Relaxed);
    if anchored == 0 || since.saturating_sub(anchored - 1) >= REANCHOR_NANOS {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(nanos)
            .unwrap_or(0);
        let now_since = nanos(now.saturating_duration_since(base));
        OFFSET.store(wall.saturating_sub(now_since), Ordering::Relaxed);
        ANCHORED.store(now_since.saturating_add(1), Ordering::Relaxed);
    }
    OFFSET.load(Ordering::Relaxed).saturating_add(since)
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_follow_the_wall_clock() {
        let wall = || nanos(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        let before = wall();
        let stamp = unix_nanos();
        let after = wall();
        // Within the time the anchoring itself can take.
        assert!(
            stamp + 5_000_000 >= before && stamp <= after + 5_000_000,
            "{before} {stamp} {after}"
        );
        let earlier = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(unix_nanos_at(earlier) + 2_000_000 <= unix_nanos());
    }
}
