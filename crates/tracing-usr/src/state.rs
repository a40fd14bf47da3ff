//! Per-span and per-trace state, kept in the registry's span extensions under private types.

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
