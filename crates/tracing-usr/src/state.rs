//! Per-span and per-trace state, kept in the registry's span extensions under private types.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::clock::unix_nanos_at;
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
            root: None,
            pending_value_mask,
        }
    }
}

/// A counting filter of the spans that hold a [`RootState`], by span id: a close whose id
/// counts zero is not such a root, and needs no span lookup (most closes are of children).
/// Under many concurrent roots every slot counts some, and each close looks its span up as
/// without the filter; a count is never zero while a root of that slot holds its state.
pub(crate) struct LiveRoots([AtomicU32; LIVE_SLOTS]);

const LIVE_SLOTS: usize = 256;

impl LiveRoots {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(std::array::from_fn(|_| AtomicU32::new(0))))
    }

    fn slot(id: &span::Id) -> usize {
        // The registry's ids are slab indexes: spread them over the slots.
        (id.into_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % LIVE_SLOTS
    }

    /// Whether span `id` may hold a [`RootState`] (`false`: it surely does not).
    #[inline]
    pub(crate) fn may_hold(&self, id: &span::Id) -> bool {
        self.0[Self::slot(id)].load(Ordering::Acquire) > 0
    }

    /// Counts span `id` as holding a [`RootState`] until the mark is dropped.
    fn mark(self: &Arc<Self>, id: &span::Id) -> LiveMark {
        let slot = Self::slot(id);
        self.0[slot].fetch_add(1, Ordering::AcqRel);
        LiveMark {
            roots: Arc::clone(self),
            slot,
        }
    }
}

impl std::fmt::Debug for LiveRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live: u32 = self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        f.debug_struct("LiveRoots").field("live", &live).finish()
    }
}

/// A root counted in [`LiveRoots`] (see [`LiveRoots::mark`]), for as long as its state lives.
#[derive(Debug)]
pub(crate) struct LiveMark {
    roots: Arc<LiveRoots>,
    slot: usize,
}

impl Drop for LiveMark {
    fn drop(&mut self) {
        self.roots.0[self.slot].fetch_sub(1, Ordering::AcqRel);
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
    pub(crate) signals: Vec<tracing_usr_core::detection::Signal>,
    /// What the root's OpenTelemetry span holds so far of the root's tags.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_held: crate::otel::OtelHeld,
    /// How many times the root is entered now, counted from its creation (when tracing-usr
    /// writes as tags are recorded): while it is, writes wait for its last exit, which comes
    /// before tracing-opentelemetry can end its span.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_entered: u32,
    /// Set when tags wait for the root's last exit to be written.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_dirty: bool,
    /// The root counted among the live ones while this state exists.
    _live: LiveMark,
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

    /// The state of root `id`, counted in `live`.
    pub(crate) fn new(id: &span::Id, live: &Arc<LiveRoots>) -> Self {
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
            otel_held: crate::otel::OtelHeld::default(),
            #[cfg(feature = "opentelemetry")]
            otel_entered: 0,
            #[cfg(feature = "opentelemetry")]
            otel_dirty: false,
            _live: live.mark(id),
        }
    }
}
