//! Per-span and per-trace state, kept in the registry's span extensions under private types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing_core::span;
use tracing_usr_core::{Secret, TraceState};
use tracing_usr_export::{Key, LogRecord, Record, SpanEvent, SpanRecord, UserTags};

/// Stored on every span the layer tracks.
#[derive(Debug)]
pub(crate) struct SpanState {
    /// The local root's registry id; `None` when this span is the local root.
    pub(crate) root: Option<span::Id>,
    /// The export data, when exporting.
    pub(crate) data: Option<SpanData>,
}

/// What a span exports.
#[derive(Debug)]
pub(crate) struct SpanData {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) parent_id: Option<u64>,
    pub(crate) start_unix_nanos: u64,
    pub(crate) started: Instant,
    pub(crate) meta: Vec<(Key, tracing_usr_export::Text)>,
    pub(crate) metrics: Vec<(Key, f64)>,
    pub(crate) error: bool,
    pub(crate) events: Vec<SpanEvent>,
}

impl SpanData {
    pub(crate) fn new(trace_id: u128, parent_id: Option<u64>) -> Self {
        let started = Instant::now();
        Self {
            trace_id,
            span_id: crate::ids::span_id(),
            parent_id,
            start_unix_nanos: unix_nanos_at(started),
            started,
            meta: Vec::new(),
            metrics: Vec::new(),
            error: false,
            events: Vec::new(),
        }
    }

    /// The finished record; `meta` so far is field data that still needs the value rule.
    pub(crate) fn finish(
        self,
        meta: &'static tracing_core::Metadata<'static>,
        local_root: bool,
    ) -> SpanRecord {
        let pending_value_mask = self.meta.len();
        SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            local_root,
            name: meta.name().into(),
            target: meta.target().into(),
            start_unix_nanos: self.start_unix_nanos,
            duration_nanos: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            error: self.error,
            meta: self.meta,
            metrics: self.metrics,
            events: self.events,
            pending_value_mask,
        }
    }
}

/// Stored on a local root: everything about its trace.
#[derive(Debug)]
pub(crate) struct RootState {
    pub(crate) trace: TraceState,
    /// The SDK user's token, for `current_user()` (never exported).
    pub(crate) sdk_token: Option<Secret>,
    /// Finished child spans waiting for the root to close.
    pub(crate) finished: Vec<Record>,
    /// Log records held for retroactive identity.
    pub(crate) held_logs: Vec<LogRecord>,
    /// The user tags of log records, shared while the identity version does not change.
    pub(crate) user_cache: Option<(u64, UserTags)>,
    /// The trace id (when exporting), copied into signals.
    pub(crate) trace_id: Option<u128>,
    /// Whether the root holds detection work for its close (counted in `Shared::armed_roots`).
    pub(crate) detection_armed: bool,
    /// Signals raised while the extension lock is held, delivered once it is released.
    pub(crate) signals: Vec<crate::detection::Signal>,
    /// The attributes written so far on the root's OpenTelemetry span.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_written: Vec<opentelemetry::KeyValue>,
    /// Set while tags recorded at the root's creation wait for its first enter.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_deferred: Option<crate::otel::Deferred>,
}

impl RootState {
    /// The user a log record emitted now carries (docs/tags.md "identity from the SDK"), shared between records.
    pub(crate) fn current_user(&mut self, mode: tracing_usr_core::Mode) -> UserTags {
        let version = self.trace.identity.version();
        if let Some((cached, tags)) = &self.user_cache {
            if *cached == version {
                return tags.clone();
            }
        }
        let tags: UserTags = self
            .trace
            .identity
            .current_shared(mode, None)
            .map(|(t, _)| t)
            .unwrap_or_default();
        self.user_cache = Some((version, tags.clone()));
        tags
    }

    pub(crate) fn new() -> Self {
        Self {
            trace: TraceState::default(),
            sdk_token: None,
            finished: Vec::new(),
            held_logs: Vec::new(),
            user_cache: None,
            trace_id: None,
            detection_armed: false,
            signals: Vec::new(),
            #[cfg(feature = "opentelemetry")]
            otel_written: Vec::new(),
            #[cfg(feature = "opentelemetry")]
            otel_deferred: None,
        }
    }
}

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
