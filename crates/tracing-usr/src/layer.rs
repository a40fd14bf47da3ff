//! The `tracing_subscriber::Layer`.

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::{Attributes, Id, Record as SpanFields};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Metadata};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_usr_core::blocking::{BlockList, BlockReason};
use tracing_usr_core::events;
use tracing_usr_core::identity::Key;
use tracing_usr_core::mode::ConfigWarning;
use tracing_usr_core::trace::{DECISION_MAKER, SAMPLER_RATES, TRACE_SOURCE};
use tracing_usr_core::{keys, Anonymizer, IdentityBucket, Masker, Mode, User};
use tracing_usr_export::pipeline::is_export_thread;
use tracing_usr_export::{
    Exporter, Level, LogRecord, Pipeline, PipelineConfig, PipelineStats, Record, Text, TimeoutError,
};

use crate::callsite::{CallsiteCache, CallsiteInfo};
use crate::state::{unix_nanos, RootState, SpanData, SpanState};
use crate::visit::{split_span_fields, Collector, Fields, IdentityRules};

/// The settings [`Builder::build`](crate::Builder::build) resolved.
pub(crate) struct Parts {
    pub(crate) mode: Mode,
    pub(crate) masker: Arc<Masker>,
    pub(crate) blocks: Arc<BlockList>,
    pub(crate) templates: Arc<tracing_usr_core::blocking::BlockTemplates>,
    pub(crate) exporters: Vec<Box<dyn Exporter>>,
    /// Whether the exporters are the embedded default alone (JSON lines on stdout).
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) default_export: bool,
    pub(crate) retroactive: bool,
    pub(crate) pipeline: PipelineConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_spans_per_trace: usize,
    pub(crate) anonymizer_capacity: usize,
    pub(crate) warnings: Vec<ConfigWarning>,
    pub(crate) tags_max_length: usize,
    pub(crate) detection: Option<tracing_usr_core::detection::DetectionConfig>,
    pub(crate) sink: Box<dyn crate::detection::SignalSink>,
    pub(crate) clock: Arc<dyn tracing_usr_core::blocking::Clock>,
}

/// The SDK identity set outside any span.
#[derive(Debug)]
pub(crate) struct DefaultUser {
    pub(crate) user: User,
    pub(crate) bucket: IdentityBucket,
}

/// State shared by the layer, its [`Handle`]s and the SDK functions.
pub(crate) struct Shared {
    pub(crate) mode: Mode,
    pub(crate) masker: Arc<Masker>,
    pub(crate) blocks: Arc<BlockList>,
    pub(crate) templates: Arc<tracing_usr_core::blocking::BlockTemplates>,
    pub(crate) anonymizer: Anonymizer,
    pub(crate) callsites: CallsiteCache,
    pub(crate) retroactive: bool,
    pub(crate) max_spans_per_trace: usize,
    /// The export pipeline; read through [`Shared::pipeline`], which also says whether it is in use.
    pub(crate) pipeline: Option<Pipeline>,
    /// The tracing-opentelemetry pipeline of the same subscriber, if any.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel: crate::otel::OtelBridge,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) tags_max_length: usize,
    /// The detector, unless detection is off.
    pub(crate) detector: Option<Arc<tracing_usr_core::detection::Detector>>,
    /// Signal delivery.
    pub(crate) signals: Arc<crate::detection::SignalHub>,
    /// Roots holding detection work for their close (checked before a lookup in `on_close`).
    pub(crate) armed_roots: std::sync::atomic::AtomicUsize,
    default_user: RwLock<Option<DefaultUser>>,
    has_default: AtomicBool,
    warnings: Mutex<Vec<ConfigWarning>>,
    has_warnings: AtomicBool,
    /// Set when another tracing-usr layer of the same subscriber is the active one.
    inert: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserLayer")
            .field("mode", &self.mode)
            .field("masker", &self.masker)
            .field("retroactive", &self.retroactive)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    /// Dropping the layer (with its subscriber) exports what is queued in the background but
    /// does not wait: the last reference may be dropped on any thread, even inside
    /// tracing-core's dispatcher registry. Use [`shutdown`] or a [`ShutdownGuard`] to wait.
    fn drop(&mut self) {
        if let Some(pipeline) = &self.pipeline {
            pipeline.close();
        }
    }
}

impl Shared {
    /// The pipeline records go to, unless nothing is exported (none configured, or the embedded
    /// default turned off because a tracing-opentelemetry layer exports the traces).
    #[inline]
    pub(crate) fn pipeline(&self) -> Option<&Pipeline> {
        #[cfg(feature = "opentelemetry")]
        if self.otel.export_off() {
            return None;
        }
        self.pipeline.as_ref()
    }

    /// Processes `usr.*` values by the mode (docs/tags.md "modes"); business-event-only keys are skipped.
    pub(crate) fn field_identity(&self, usr: Vec<(&'static str, String)>) -> Fields {
        let rules = IdentityRules::of(self);
        let mut fields = Fields::default();
        for (key, value) in usr {
            rules.push(&mut fields, key, value);
        }
        fields
    }

    /// The field-path business event a `tracing` event with `usr.event` describes (docs/tags.md "events from tracing events"),
    /// after the mode; `None` in disabled mode or without a required input.
    pub(crate) fn business_event(
        &self,
        usr: &[(&'static str, String)],
        plain: &[(Key, tracing_usr_export::FieldValue)],
    ) -> Option<(String, events::FieldEvent)> {
        let name = usr
            .iter()
            .rev()
            .find(|(k, v)| *k == keys::USR_EVENT && !v.is_empty())?
            .1
            .clone();
        let others: Vec<(Key, String)> = plain.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        events::field_event(&name, usr, &others, self.mode, &self.anonymizer, &self.masker).map(|e| (name, e))
    }

    pub(crate) fn default_bucket(&self) -> Option<IdentityBucket> {
        if !self.has_default.load(Ordering::Acquire) {
            return None;
        }
        self.default_user.read().ok()?.as_ref().map(|d| d.bucket.clone())
    }

    pub(crate) fn default_user(&self) -> Option<User> {
        if !self.has_default.load(Ordering::Acquire) {
            return None;
        }
        self.default_user.read().ok()?.as_ref().map(|d| d.user.clone())
    }

    pub(crate) fn set_default_user(&self, user: Option<DefaultUser>) {
        if let Ok(mut slot) = self.default_user.write() {
            self.has_default.store(user.is_some(), Ordering::Release);
            *slot = user;
        }
    }

    /// Emits the configuration warnings through `dispatch`, once.
    ///
    /// They cannot be emitted from `on_register_dispatch` itself (tracing-core holds its
    /// dispatcher list's write lock there, which a new callsite needs) nor from inside a layer
    /// callback (tracing drops re-entrant events and `with_default` would panic), so a short-lived
    /// thread emits them as soon as the registration has finished.
    fn emit_warnings(&self, dispatch: &Dispatch) {
        let active = dispatch
            .downcast_ref::<UserLayer>()
            .map(|l| Arc::as_ptr(&l.shared));
        if active.is_some_and(|active| !std::ptr::eq(active, self)) {
            // Both layers would keep their state in the same span extensions; the one the SDK
            // functions find (the outermost) stays active, this one does nothing.
            self.inert.store(true, Ordering::Release);
            if let Ok(mut warnings) = self.warnings.lock() {
                warnings.push(ConfigWarning {
                    variable: "tracing_usr::layer",
                    message: "more than one tracing-usr layer in this subscriber: this one is inactive \
                              (use one layer with several exporters)"
                        .to_owned(),
                });
                self.has_warnings.store(true, Ordering::Release);
            }
        }
        if !self.has_warnings.swap(false, Ordering::AcqRel) {
            return;
        }
        let warnings = self
            .warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        crate::warn::emit_later(Some(dispatch.downgrade()), warnings);
    }
}

type WithRoot = fn(&Dispatch, &Shared, &Id, &mut dyn FnMut(&Shared, &mut RootState)) -> bool;

type WithCurrentRoot = fn(&Dispatch, &Shared, &mut dyn FnMut(&Shared, &mut RootState)) -> CurrentRoot;

/// What [`UserLayer::with_current_root`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CurrentRoot {
    /// The closure ran on the current trace's root.
    Found,
    /// The thread is in no span.
    NoSpan,
    /// The current span or its root is unknown to the subscriber.
    Unknown,
}

/// What [`UserLayer::with_span`] hands its closure about the span itself.
#[derive(Debug)]
pub(crate) struct SpanAccess<'a> {
    /// The span's export data (absent when nothing is exported).
    pub(crate) data: Option<&'a mut SpanData>,
    /// Whether the span is its trace's local root.
    pub(crate) is_root: bool,
}

type WithSpan = fn(&Dispatch, &Id, &mut dyn FnMut(SpanAccess<'_>), &mut dyn FnMut(&mut RootState)) -> bool;

/// The `tracing_subscriber::Layer` that attributes traces to end users.
///
/// Build it with [`layer()`](crate::layer) (configuration from the environment) or
/// [`builder()`](crate::builder). See the [crate docs](crate) for what it does.
pub struct UserLayer {
    pub(crate) shared: Arc<Shared>,
    with_root: WithRoot,
    with_current_root: WithCurrentRoot,
    with_span: WithSpan,
}

impl fmt::Debug for UserLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

static LAYERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

fn no_current_root(_: &Dispatch, _: &Shared, _: &mut dyn FnMut(&Shared, &mut RootState)) -> CurrentRoot {
    CurrentRoot::Unknown
}

fn no_root(_: &Dispatch, _: &Shared, _: &Id, _: &mut dyn FnMut(&Shared, &mut RootState)) -> bool {
    false
}

fn no_span(
    _: &Dispatch,
    _: &Id,
    _: &mut dyn FnMut(SpanAccess<'_>),
    _: &mut dyn FnMut(&mut RootState),
) -> bool {
    false
}

impl UserLayer {
    pub(crate) fn from_parts(parts: Parts) -> Self {
        let pipeline = (!parts.exporters.is_empty())
            .then(|| Pipeline::start(parts.exporters, Arc::clone(&parts.masker), parts.pipeline));
        let has_warnings = !parts.warnings.is_empty();
        let shared = Arc::new(Shared {
            mode: parts.mode,
            callsites: CallsiteCache::new(Arc::clone(&parts.masker), parts.detection.is_some()),
            masker: parts.masker,
            blocks: parts.blocks,
            templates: parts.templates,
            anonymizer: Anonymizer::new(parts.anonymizer_capacity),
            retroactive: parts.retroactive,
            max_spans_per_trace: parts.max_spans_per_trace,
            pipeline,
            #[cfg(feature = "opentelemetry")]
            otel: crate::otel::OtelBridge::new(parts.default_export),
            shutdown_timeout: parts.shutdown_timeout,
            tags_max_length: parts.tags_max_length,
            detector: parts
                .detection
                .map(|config| Arc::new(tracing_usr_core::detection::Detector::new(config, parts.clock))),
            signals: crate::detection::SignalHub::new(parts.sink),
            armed_roots: std::sync::atomic::AtomicUsize::new(0),
            default_user: RwLock::new(None),
            has_default: AtomicBool::new(false),
            warnings: Mutex::new(parts.warnings),
            has_warnings: AtomicBool::new(has_warnings),
            inert: AtomicBool::new(false),
        });
        if shared.pipeline.is_some() {
            if let Ok(mut layers) = LAYERS.lock() {
                layers.retain(|w| w.strong_count() > 0);
                layers.push(Arc::downgrade(&shared));
            }
        }
        Self {
            shared,
            with_root: no_root,
            with_current_root: no_current_root,
            with_span: no_span,
        }
    }

    /// A handle to flush or shut down this layer's exporters and read its counters. It works
    /// before and after the layer is installed.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The effective mode of the field path.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// Runs `on_span` with the span's own state, then (with that lock released) `on_root` with
    /// its local root's state. `false` when the span is unknown.
    pub(crate) fn with_span(
        &self,
        dispatch: &Dispatch,
        id: &Id,
        on_span: &mut dyn FnMut(SpanAccess<'_>),
        on_root: &mut dyn FnMut(&mut RootState),
    ) -> bool {
        (self.with_span)(dispatch, id, on_span, on_root)
    }

    /// Runs `f` on the root of the current span's trace (one typed look-up of the current
    /// span, where `Dispatch::current_span` and [`UserLayer::with_root`] would make two).
    pub(crate) fn with_current_root(
        &self,
        dispatch: &Dispatch,
        f: &mut dyn FnMut(&Shared, &mut RootState),
    ) -> CurrentRoot {
        (self.with_current_root)(dispatch, &self.shared, f)
    }

    pub(crate) fn with_root(
        &self,
        dispatch: &Dispatch,
        id: &Id,
        f: &mut dyn FnMut(&Shared, &mut RootState),
    ) -> bool {
        (self.with_root)(dispatch, &self.shared, id, f)
    }

    #[inline]
    fn inert(&self) -> bool {
        self.shared.inert.load(Ordering::Relaxed)
    }

    fn exporting(&self) -> Option<&Pipeline> {
        self.shared.pipeline()
    }
}

/// Flushes and stops the exporters of every layer built in this process (queued records are
/// exported first, within each layer's shutdown timeout). Records produced afterwards are
/// dropped and counted.
///
/// # Errors
/// [`TimeoutError`] when a layer's queue did not drain in time (the others are still shut
/// down).
pub fn shutdown() -> Result<(), TimeoutError> {
    let layers: Vec<Arc<Shared>> = match LAYERS.lock() {
        Ok(layers) => layers.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => Vec::new(),
    };
    let mut result = Ok(());
    for shared in layers {
        if let Some(pipeline) = &shared.pipeline {
            if let Err(e) = pipeline.shutdown(shared.shutdown_timeout) {
                result = Err(e);
            }
        }
    }
    result
}

/// A handle to one layer's export pipeline.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Waits until every record produced so far (of closed traces) is exported and the
    /// exporters are flushed. It blocks the calling thread (at most the shutdown timeout): from
    /// async code, call it through `tokio::task::spawn_blocking` or at shutdown.
    ///
    /// # Errors
    /// [`TimeoutError`] when that takes longer than the layer's shutdown timeout.
    pub fn flush(&self) -> Result<(), TimeoutError> {
        self.shared.signals.drain();
        match &self.shared.pipeline {
            Some(p) => p.flush(self.shared.shutdown_timeout),
            None => Ok(()),
        }
    }

    /// The detector, unless detection is off: its settings, tracked keys and memory.
    pub fn detector(&self) -> Option<Arc<tracing_usr_core::detection::Detector>> {
        self.shared.detector.clone()
    }

    /// Signals delivered to the sink so far, and signals lost because the delivery queue
    /// (4,096) was full or the sink panicked.
    pub fn signal_stats(&self) -> crate::detection::SignalStats {
        crate::detection::SignalStats {
            delivered: self.shared.signals.delivered(),
            dropped: self.shared.signals.dropped(),
        }
    }

    /// Flushes and stops this layer's exporters.
    ///
    /// # Errors
    /// [`TimeoutError`] when the queue did not drain within the shutdown timeout.
    pub fn shutdown(&self) -> Result<(), TimeoutError> {
        match &self.shared.pipeline {
            Some(p) => p.shutdown(self.shared.shutdown_timeout),
            None => Ok(()),
        }
    }

    /// The export counters (all zero when nothing is exported).
    pub fn stats(&self) -> PipelineStats {
        self.shared
            .pipeline
            .as_ref()
            .map(Pipeline::stats)
            .unwrap_or_default()
    }

    /// The effective mode of the field path.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The blocked users and IPs, to replace or extend at run time.
    pub fn block_list(&self) -> Arc<BlockList> {
        Arc::clone(&self.shared.blocks)
    }

    /// The names of the exporters in use (`json-lines`, …); empty when nothing is exported.
    pub fn exporters(&self) -> Vec<String> {
        self.shared
            .pipeline
            .as_ref()
            .map(|p| p.exporter_names().to_vec())
            .unwrap_or_default()
    }

    /// A guard that shuts this layer's exporters down when dropped.
    pub fn shutdown_guard(self) -> ShutdownGuard {
        ShutdownGuard { handle: self }
    }
}

/// Shuts its layer's exporters down (flushing them) when dropped. Get one from
/// [`Handle::shutdown_guard`]; keep it alive in `main`.
#[derive(Debug)]
#[must_use = "the exporters are shut down when the guard is dropped"]
pub struct ShutdownGuard {
    handle: Handle,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
    }
}

/// Room reserved for the tags a local root gets at its close (user tags, collection mode, private
/// copies, sampling and propagation tags): the usual trace needs no regrowth.
const ROOT_TAGS: usize = 12;

/// The local root of `span`. When exporting, every tracked span stores its root id (one
/// lookup); otherwise nothing is stored and the root is the outermost ancestor, reached by
/// walking up.
fn root_of<'a, R>(
    span: SpanRef<'a, R>,
    stored: bool,
    lookup: impl Fn(&Id) -> Option<SpanRef<'a, R>>,
) -> Option<SpanRef<'a, R>>
where
    R: LookupSpan<'a>,
{
    walk_to_root(
        span,
        stored,
        |span| stored_root(&span.extensions()),
        SpanRef::parent,
        lookup,
    )
}

/// The root id a tracked span stores (`Some(None)`: the span is its trace's local root).
fn stored_root(ext: &tracing_subscriber::registry::Extensions<'_>) -> Option<Option<Id>> {
    ext.get::<SpanState>().map(|s| s.root.clone())
}

/// [`root_of`] over any handle on a span: `stored_root` reads the root id a span stores
/// (`Some(None)`: it is the root), `parent` steps up (`None`: no parent, or one no longer
/// known), `lookup` finds a span by id.
fn walk_to_root<T>(
    span: T,
    stored: bool,
    stored_root: impl Fn(&T) -> Option<Option<Id>>,
    parent: impl Fn(&T) -> Option<T>,
    lookup: impl Fn(&Id) -> Option<T>,
) -> Option<T> {
    let mut current = span;
    loop {
        if stored {
            match stored_root(&current) {
                Some(None) => return Some(current),
                Some(Some(root)) => return lookup(&root),
                None => {}
            }
        }
        match parent(&current) {
            Some(parent) => current = parent,
            None => return Some(current),
        }
    }
}

/// Runs `f` on the root's state, created on first use.
fn with_state<R>(
    ext: &mut tracing_subscriber::registry::ExtensionsMut<'_>,
    f: impl FnOnce(&mut RootState) -> R,
) -> R {
    if let Some(state) = ext.get_mut::<RootState>() {
        return f(state);
    }
    // Built in its box rather than on the stack and moved (the state is a few hundred bytes).
    ext.insert(RootState::new());
    match ext.get_mut::<RootState>() {
        Some(state) => f(state),
        // Not reached: inserted just above.
        None => f(&mut RootState::new()),
    }
}

impl Fields {
    /// Whether the record brings anything to its trace's root: identity or a blocked field-path
    /// user from any span, and a client IP or a user agent from the root itself (`is_root`).
    #[inline]
    fn has_root_input(&self, is_root: bool) -> bool {
        !self.identity.is_empty() || self.blocked_user.is_some() || (is_root && self.has_root_only_input())
    }

    /// Moves the record's root input into the root's state (docs/tags.md "which identity reaches the root", "blocking"); the client IP and
    /// user agent count only when the record is the root's own (`is_root`). Returns the signals
    /// of events that were waiting for the client IP.
    #[must_use]
    #[inline]
    fn apply(
        &mut self,
        is_root: bool,
        state: &mut RootState,
        shared: &Shared,
    ) -> Vec<crate::detection::Signal> {
        if !self.identity.is_empty() {
            state.trace.identity.record_field(self.identity.drain(..));
        }
        if is_root || self.blocked_user.is_some() {
            self.apply_rest(is_root, state, shared)
        } else {
            Vec::new()
        }
    }

    /// [`Fields::apply`] past the identity: client IP, user agent, blocked user.
    #[must_use]
    #[inline(never)]
    fn apply_rest(
        &mut self,
        is_root: bool,
        state: &mut RootState,
        shared: &Shared,
    ) -> Vec<crate::detection::Signal> {
        let mut signals = Vec::new();
        if is_root {
            if let Some(user_agent) = self.user_agent.take() {
                state.trace.set_user_agent(user_agent);
            }
            if let Some((ip, rank)) = self.client_ip.take() {
                state.trace.set_client_ip(ip, rank);
                if state.trace.has_detection_work() {
                    signals = crate::detection::run(shared, state, false);
                }
                if shared.blocks.is_ip_blocked(ip) {
                    state
                        .trace
                        .block(BlockReason::Ip(ip), crate::ids::security_response_id());
                }
            }
        }
        if let Some(user) = self.blocked_user.take() {
            state
                .trace
                .block(BlockReason::User(user), crate::ids::security_response_id());
        }
        signals
    }

    /// Whether the record carries what only a root's own record uses (then the caller checks
    /// whether the span is a root).
    #[inline]
    fn has_root_only_input(&self) -> bool {
        self.client_ip.is_some() || self.user_agent.is_some()
    }
}

/// Applies `fields` (recorded on a descendant of `root`) on `root`; signals are queued once the
/// extension lock is released.
fn apply_on<R>(root: &SpanRef<'_, R>, fields: &mut Fields, is_root: bool, shared: &Shared)
where
    R: for<'a> LookupSpan<'a>,
{
    apply_on_from(root, fields, is_root, false, false, shared)
}

/// [`apply_on`], saying whether the fields were recorded on the root itself (`from_root`) and at
/// its creation (`creating`: its OpenTelemetry span is then written at its first enter, not
/// started now).
fn apply_on_from<R>(
    root: &SpanRef<'_, R>,
    fields: &mut Fields,
    is_root: bool,
    creating: bool,
    from_root: bool,
    shared: &Shared,
) where
    R: for<'a> LookupSpan<'a>,
{
    let signals = with_state(&mut root.extensions_mut(), |state| {
        #[cfg(feature = "opentelemetry")]
        if from_root {
            otel_note_own_fields(shared, fields, state);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = from_root;
        fields.apply(is_root, state, shared)
    });
    if !signals.is_empty() {
        shared.signals.enqueue(signals);
    }
    #[cfg(feature = "opentelemetry")]
    if shared.otel.may_write_eagerly() {
        if creating {
            otel_defer(shared, &mut root.extensions_mut());
        } else {
            otel_after_write(shared, &root.id(), || root.extensions_mut(), None);
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = creating;
}

/// Fields recorded on the root itself are already attributes of its OpenTelemetry span
/// (tracing-opentelemetry records them as they are): in identification mode, where tracing-usr
/// keeps them as they are too, they are not written a second time.
#[cfg(feature = "opentelemetry")]
fn otel_note_own_fields(shared: &Shared, fields: &Fields, state: &mut RootState) {
    if shared.mode != tracing_usr_core::Mode::Identification
        || fields.identity.is_empty()
        || !shared.otel.active()
    {
        return;
    }
    for (key, value) in &fields.identity {
        if value.as_str() != tracing_usr_core::REDACTED {
            state.otel_written.push(opentelemetry::KeyValue::new(
                key.clone(),
                value.as_str().to_owned(),
            ));
        }
    }
}

/// Marks a root whose tags were recorded at its creation: written at its first enter.
#[cfg(feature = "opentelemetry")]
fn otel_defer(shared: &Shared, ext: &mut tracing_subscriber::registry::ExtensionsMut<'_>) {
    if let Some(state) = ext.get_mut::<RootState>() {
        if state.otel_deferred.is_none() {
            state.otel_deferred = Some(shared.otel.defer());
        }
    }
}

/// After a write on root `id` (no extension held): while the order is not known, looks for the
/// root's OpenTelemetry span first; then, when tags are written as recorded, writes them.
#[cfg(feature = "opentelemetry")]
fn otel_after_write<'a>(
    shared: &Shared,
    id: &Id,
    ext: impl FnOnce() -> tracing_subscriber::registry::ExtensionsMut<'a>,
    dispatch: Option<&Dispatch>,
) {
    shared.otel.probe_unseen(id, dispatch);
    if shared.otel.eager() {
        otel_sync(shared, id, ext(), dispatch);
    }
}

/// Writes what the root's OpenTelemetry span lacks of the root's current tags (eager order):
/// computed under the root's extension lock, written after it is released.
#[cfg(feature = "opentelemetry")]
fn otel_sync(
    shared: &Shared,
    id: &Id,
    mut ext: tracing_subscriber::registry::ExtensionsMut<'_>,
    dispatch: Option<&Dispatch>,
) {
    let Some(state) = ext.get_mut::<RootState>() else {
        return;
    };
    let (tags, metrics) = root_tags(shared, state);
    let pending = crate::otel::attributes_not_in(&tags, &metrics, &state.otel_written);
    state.otel_written.extend(pending.iter().cloned());
    drop(ext);
    shared.otel.write_now(id, pending, dispatch);
}

/// A root's tags and metrics.
#[cfg(feature = "opentelemetry")]
type RootTags = (Vec<(Key, Text)>, Vec<(Key, f64)>);

/// The tags and metrics the root's state gives it now.
#[cfg(feature = "opentelemetry")]
fn root_tags(shared: &Shared, state: &RootState) -> RootTags {
    let (mut tags, mut metrics) = (Vec::with_capacity(ROOT_TAGS), Vec::new());
    state.trace.finish(
        shared.mode,
        shared.default_bucket().as_ref(),
        &mut tags,
        &mut metrics,
    );
    (tags, metrics)
}

/// Moves what `fields` bring to their trace's root (see [`Fields::has_root_input`]) into the
/// root of `span`, found as [`root_of`] does. Whether `span` is itself the root (a parent
/// look-up) is asked only when the record carries root-only input.
fn lift_to_root<'a, R>(
    span: SpanRef<'a, R>,
    fields: &mut Fields,
    stored: bool,
    creating: bool,
    lookup: impl Fn(&Id) -> Option<SpanRef<'a, R>>,
    shared: &Shared,
) where
    R: for<'b> LookupSpan<'b>,
{
    let is_root = fields.has_root_only_input() && span.parent().is_none();
    if !fields.has_root_input(is_root) {
        return;
    }
    let span_id = span.id();
    if let Some(root) = root_of(span, stored, lookup) {
        let from_root = span_id == root.id();
        apply_on_from(&root, fields, is_root, creating && from_root, from_root, shared);
    }
}

fn with_root_of<S>(
    dispatch: &Dispatch,
    shared: &Shared,
    id: &Id,
    f: &mut dyn FnMut(&Shared, &mut RootState),
) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    dispatch
        .downcast_ref::<S>()
        .is_some_and(|subscriber| on_root_of(subscriber, shared, id, f))
}

/// Runs `f` on the state of the local root of span `id`; `false` when the span is unknown.
fn on_root_of<S>(subscriber: &S, shared: &Shared, id: &Id, f: &mut dyn FnMut(&Shared, &mut RootState)) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use tracing_subscriber::registry::SpanData;
    // As `root_of`, on the registry's span data directly (this path has no per-layer filter to
    // apply, and skips building a `SpanRef` per step).
    let Some(data) = subscriber.span_data(id).and_then(|data| {
        walk_to_root(
            data,
            shared.pipeline().is_some(),
            |data| stored_root(&data.extensions()),
            |data| data.parent().and_then(|parent| subscriber.span_data(parent)),
            |id| subscriber.span_data(id),
        )
    }) else {
        return false;
    };
    with_state(&mut data.extensions_mut(), |state| f(shared, state));
    #[cfg(feature = "opentelemetry")]
    if shared.otel.may_write_eagerly() {
        otel_after_write(shared, &data.id(), || data.extensions_mut(), None);
    }
    true
}

fn with_current_root_of<S>(
    dispatch: &Dispatch,
    shared: &Shared,
    f: &mut dyn FnMut(&Shared, &mut RootState),
) -> CurrentRoot
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(subscriber) = dispatch.downcast_ref::<S>() else {
        return CurrentRoot::Unknown;
    };
    let current = subscriber.current_span();
    let Some(id) = current.id() else {
        return CurrentRoot::NoSpan;
    };
    if on_root_of(subscriber, shared, id, f) {
        CurrentRoot::Found
    } else {
        CurrentRoot::Unknown
    }
}

fn with_span_of<S>(
    dispatch: &Dispatch,
    id: &Id,
    on_span: &mut dyn FnMut(SpanAccess<'_>),
    on_root: &mut dyn FnMut(&mut RootState),
) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(subscriber) = dispatch.downcast_ref::<S>() else {
        return false;
    };
    let Some(span) = subscriber.span(id) else {
        return false;
    };
    {
        let is_root = span.parent().is_none();
        let mut ext = span.extensions_mut();
        let data = ext.get_mut::<SpanState>().and_then(|state| state.data.as_mut());
        on_span(SpanAccess { data, is_root });
    }
    let layer = dispatch.downcast_ref::<UserLayer>();
    let stored = layer.map_or(true, |layer| layer.shared.pipeline().is_some());
    let Some(root) = root_of(span, stored, |id| subscriber.span(id)) else {
        return false;
    };
    with_state(&mut root.extensions_mut(), on_root);
    #[cfg(feature = "opentelemetry")]
    if let Some(layer) = layer.filter(|layer| layer.shared.otel.may_write_eagerly()) {
        otel_after_write(
            &layer.shared,
            &root.id(),
            || root.extensions_mut(),
            Some(dispatch),
        );
    }
    true
}

/// The root's detection work at its close: waiting events and the privilege rules.
fn close_detection(shared: &Shared, state: &mut RootState) -> Vec<crate::detection::Signal> {
    if !state.detection_armed {
        return Vec::new();
    }
    state.detection_armed = false;
    shared.armed_roots.fetch_sub(1, Ordering::AcqRel);
    crate::detection::run(shared, state, true)
}

fn level(meta: &Metadata<'_>) -> Level {
    match *meta.level() {
        tracing_core::Level::TRACE => Level::Trace,
        tracing_core::Level::DEBUG => Level::Debug,
        tracing_core::Level::INFO => Level::Info,
        tracing_core::Level::WARN => Level::Warn,
        tracing_core::Level::ERROR => Level::Error,
    }
}

/// The bodies of the layer's callbacks, out of line: the callbacks themselves only decide,
/// from the callsite, whether there is anything to do.
impl UserLayer {
    #[inline(never)]
    fn new_span<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        let info = shared.callsites.get(attrs.metadata());
        if self.inert() {
            return;
        }
        if shared.pipeline().is_some() {
            if !is_export_thread() {
                self.new_span_exported(attrs, id, ctx, &info);
            }
            return;
        }
        // Nothing to export: only identity and blocking matter, and the root is found by walking
        // up.
        let mut collector = Collector::new(&info, shared, false);
        attrs.record(&mut collector);
        let fields = &mut collector.fields;
        // Checked before the span is looked up: most such records bring nothing.
        if fields.has_root_input(true) {
            if let Some(span) = ctx.span(id) {
                lift_to_root(span, fields, false, true, |id| ctx.span(id), shared);
            }
        }
    }

    /// [`UserLayer::new_span`] when exporting: the span's export data, its root and trace ids.
    #[inline(never)]
    fn new_span_exported<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>, info: &CallsiteInfo)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        let mut collector = Collector::new(info, shared, true);
        attrs.record(&mut collector);
        let fields = &mut collector.fields;
        let Some(span) = ctx.span(id) else { return };
        let (root, trace_id, parent_span_id) = match span.parent() {
            None => (None, None, None),
            Some(parent) => {
                let ext = parent.extensions();
                match ext.get::<SpanState>() {
                    Some(p) => (
                        Some(p.root.clone().unwrap_or_else(|| parent.id())),
                        p.data.as_ref().map(|d| d.trace_id),
                        p.data.as_ref().map(|d| d.span_id),
                    ),
                    None => {
                        drop(ext);
                        (
                            root_of(parent, true, |id| ctx.span(id)).map(|root| root.id()),
                            None,
                            None,
                        )
                    }
                }
            }
        };
        let mut data = SpanData::new(trace_id.unwrap_or_else(crate::ids::trace_id), parent_span_id);
        let span_trace_id = data.trace_id;
        if root.is_none() {
            // Room for the root's own fields and the trace's tags added at its close, so the
            // tags do not make the list grow step by step.
            data.meta.reserve(fields.plain.len() + ROOT_TAGS);
        }
        split_span_fields(fields.plain.drain(..), &mut data.meta, &mut data.metrics);
        let mut ext = span.extensions_mut();
        ext.replace(SpanState {
            root: root.clone(),
            data: Some(data),
        });
        match root {
            None => {
                let mut state = RootState::new();
                state.trace_id = Some(span_trace_id);
                #[cfg(feature = "opentelemetry")]
                if shared.otel.may_write_eagerly() && fields.has_root_input(true) {
                    state.otel_deferred = Some(shared.otel.defer());
                }
                #[cfg(feature = "opentelemetry")]
                otel_note_own_fields(shared, fields, &mut state);
                // A new root has no waiting events: no signals here.
                let _ = fields.apply(true, &mut state, shared);
                ext.replace(state);
            }
            Some(root) => {
                drop(ext);
                if fields.has_root_input(false) {
                    if let Some(root) = ctx.span(&root) {
                        apply_on(&root, fields, false, shared);
                    }
                }
            }
        }
    }

    #[inline(never)]
    fn event<S>(&self, event: &Event<'_>, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        let info = shared.callsites.get(event.metadata());
        let meta = event.metadata();
        let pipeline = self.exporting();
        if self.inert() || is_export_thread() {
            return;
        }
        let mut collector = Collector::new(&info, shared, pipeline.is_some() || info.has_event);
        if info.has_event {
            collector = collector.keep_raw();
        }
        event.record(&mut collector);
        let fields = &mut collector.fields;
        let (usr, plain, message) = (
            std::mem::take(&mut fields.usr),
            std::mem::take(&mut fields.plain).into_vec(),
            fields.message.take(),
        );
        // A business event (`usr.event`) describes its subject, not the trace's user: its fields
        // never enter the identity bucket here (docs/tags.md "which identity reaches the root", rule 4a).
        // The crate's own events (configuration warnings, signals) are exported but never feed
        // identity or business events back (feedback guard).
        let internal = meta.target().starts_with("tracing_usr");
        if internal {
            fields.blocked_user = None;
        }
        let business = info.has_event && usr.iter().any(|(k, v)| *k == keys::USR_EVENT && !v.is_empty());
        let business_event = match (internal, business, info.has_event) {
            (true, _, _) => {
                fields.identity.clear();
                None
            }
            (false, true, _) => {
                fields.identity.clear();
                let event = shared.business_event(&usr, &plain);
                // A login success or signup names the trace's user: check it (raw or hashed).
                if let Some((_, e)) = &event {
                    if let Some(id) = &e.root_id {
                        let raw = usr
                            .iter()
                            .find(|(k, _)| *k == keys::USR_ID)
                            .map(|(_, v)| v.as_str());
                        if shared.blocks.is_user_blocked(id)
                            || raw.is_some_and(|r| shared.blocks.is_user_blocked(r))
                        {
                            fields.blocked_user = Some(id.clone());
                        }
                    }
                }
                event
            }
            (false, false, true) => {
                let mut identity = shared.field_identity(usr);
                fields.blocked_user = identity.blocked_user.take();
                fields.identity = std::mem::take(&mut identity.identity);
                None
            }
            (false, false, false) => None,
        };
        let level = level(meta);

        let Some(span) = ctx.event_span(event) else {
            // Outside any span: the event's own identity, else the default identity.
            if let Some(pipeline) = pipeline {
                let user: tracing_usr_export::UserTags =
                    if fields.identity.iter().any(|(k, _)| k == keys::USR_ID) {
                        std::mem::take(&mut fields.identity).into_iter().collect()
                    } else {
                        shared.default_bucket().map(|b| b.shared()).unwrap_or_default()
                    };
                pipeline.send_one(Record::Log(LogRecord {
                    timestamp_unix_nanos: unix_nanos(),
                    level,
                    target: meta.target().into(),
                    message,
                    fields: plain,
                    trace_id: None,
                    span_id: None,
                    user,
                }));
            }
            return;
        };

        // The span the event occurred in: its ids, and the error flag for ERROR events.
        let timestamp = if pipeline.is_some() { unix_nanos() } else { 0 };
        let (stored_root, ids) = {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<SpanState>() {
                Some(state) => {
                    let ids = state.data.as_mut().map(|data| {
                        if pipeline.is_some_and(Pipeline::wants_span_events) {
                            data.events.push(tracing_usr_export::SpanEvent {
                                time_unix_nanos: timestamp,
                                name: message.clone().unwrap_or_else(|| Text::from("event")),
                                level,
                                fields: plain.clone(),
                            });
                        }
                        if level == Level::Error {
                            data.error = true;
                            if let Some(message) = &message {
                                if !data.meta.iter().any(|(k, _)| k == "error.message") {
                                    data.meta.push((Key::Borrowed("error.message"), message.clone()));
                                }
                            }
                        }
                        (data.trace_id, data.span_id)
                    });
                    (Some(state.root.clone()), ids)
                }
                None => (None, None),
            }
        };
        let root = match stored_root {
            Some(None) => Some(span),
            Some(Some(root)) => ctx.span(&root),
            None => root_of(span, pipeline.is_some(), |id| ctx.span(id)),
        };
        let Some(root) = root else { return };
        let mut record = pipeline.map(|_| LogRecord {
            timestamp_unix_nanos: timestamp,
            level,
            target: meta.target().into(),
            message,
            fields: plain,
            trace_id: ids.map(|(t, _)| t),
            span_id: ids.map(|(_, s)| s),
            user: Default::default(),
        });
        let signals = with_state(&mut root.extensions_mut(), |state| {
            let mut signals = fields.apply(false, state, shared);
            if let Some((name, event)) = business_event {
                if let Some(obs) = crate::detection::observation(shared, &name, &event.tags) {
                    crate::detection::submit(shared, state, obs);
                }
                state.trace.record_field_event(&name, event, shared.mode);
                signals.extend(crate::detection::take(state));
            }
            if shared.retroactive {
                if let Some(log) = record.take() {
                    state.held_logs.push(log);
                }
            } else if let Some(log) = record.as_mut() {
                log.user = state.current_user(shared.mode);
            }
            signals
        });
        shared.signals.enqueue(signals);
        if let (Some(pipeline), Some(mut log)) = (pipeline, record) {
            if log.user.is_empty() {
                if let Some(default) = shared.default_bucket() {
                    log.user = default.shared();
                }
            }
            pipeline.send_one(Record::Log(log));
        }
    }

    #[inline(never)]
    fn close_armed<S>(&self, id: Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        if self.inert() {
            return;
        }
        if let Some(span) = ctx.span(&id) {
            let signals = span
                .extensions_mut()
                .get_mut::<RootState>()
                .map(|state| close_detection(shared, state))
                .unwrap_or_default();
            shared.signals.enqueue(signals);
        }
    }

    /// A root's close when nothing is exported and the OpenTelemetry span may still be open
    /// (tracing-usr closes first): the root's final tags, written on it once; detection as
    /// [`UserLayer::close_armed`].
    #[cfg(feature = "opentelemetry")]
    #[inline(never)]
    fn close_otel<S>(&self, id: Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        if self.inert() {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let found = span.extensions_mut().remove::<RootState>();
        let Some(mut state) = found else {
            if shared.otel.undecided() && span.parent().is_none() {
                let _ = shared.otel.at_close(&id);
            }
            return;
        };
        drop(span);
        let signals = close_detection(shared, &mut state);
        shared.signals.enqueue(signals);
        if let Some(cx) = shared.otel.at_close(&id) {
            use opentelemetry::trace::TraceContextExt;
            let (tags, metrics) = root_tags(shared, &state);
            // The last write: what is missing, without keeping a record of it.
            let pending = crate::otel::attributes_not_in(&tags, &metrics, &state.otel_written);
            if !pending.is_empty() {
                cx.span().set_attributes(pending);
            }
        }
    }

    /// The first enter of a root whose creation recorded tags: they are written now, on the
    /// OpenTelemetry span that tracing-opentelemetry has just started.
    #[cfg(feature = "opentelemetry")]
    #[inline(never)]
    fn enter_deferred<S>(&self, id: &Id, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        let taken = span
            .extensions_mut()
            .get_mut::<RootState>()
            .and_then(|state| state.otel_deferred.take());
        if taken.is_some() && self.shared.otel.may_write_eagerly() {
            otel_after_write(&self.shared, id, || span.extensions_mut(), None);
        }
    }

    /// While the layer order is not known, a new child tells it (see
    /// [`crate::otel::OtelBridge::probe_child`]).
    #[cfg(feature = "opentelemetry")]
    #[inline(never)]
    fn probe_child<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let parent = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            Some(parent.clone())
        } else {
            ctx.current_span().id().cloned()
        };
        if let Some(parent) = parent {
            self.shared.otel.probe_child(id, &parent);
        }
    }

    #[inline(never)]
    fn close_exported<S>(&self, id: Id, ctx: Context<'_, S>, pipeline: &Pipeline)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        if self.inert() {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let mut ext = span.extensions_mut();
        let Some(SpanState {
            root,
            data: Some(data),
        }) = ext.remove::<SpanState>()
        else {
            return;
        };
        match root {
            None => {
                let mut state = ext.remove::<RootState>();
                drop(ext);
                let signals = state
                    .as_mut()
                    .map(|state| close_detection(shared, state))
                    .unwrap_or_default();
                shared.signals.enqueue(signals);
                let mut record = data.finish(span.metadata(), true);
                let Some(state) = state else {
                    #[cfg(feature = "opentelemetry")]
                    if shared.otel.undecided() {
                        let _ = shared.otel.at_close(&id);
                    }
                    pipeline.send_one(Record::Span(record));
                    return;
                };
                let default = shared.default_bucket();
                let mut tags: Vec<(Key, Text)> = Vec::with_capacity(ROOT_TAGS);
                state
                    .trace
                    .finish(shared.mode, default.as_ref(), &mut tags, &mut record.metrics);
                if state.trace.is_kept() {
                    record.meta.retain(|(k, _)| {
                        !SAMPLER_RATES.contains(&k.as_ref()) && k != DECISION_MAKER && k != TRACE_SOURCE
                    });
                }
                if record.meta.iter().any(|(k, _)| k == "_dd.origin") {
                    // An origin set by the application wins over the blocking one.
                    tags.retain(|(k, _)| k != "_dd.origin");
                }
                #[cfg(feature = "opentelemetry")]
                if let Some(cx) = shared.otel.at_close(&id) {
                    use opentelemetry::trace::TraceContextExt;
                    let pending = crate::otel::attributes_not_in(&tags, &record.metrics, &state.otel_written);
                    if !pending.is_empty() {
                        cx.span().set_attributes(pending);
                    }
                }
                record.meta.retain(|(k, _)| !tags.iter().any(|(t, _)| t == k));
                // Field values still need the value rule; the tags from `finish` are final.
                record.pending_value_mask = record.meta.len();
                record.meta.extend(tags);
                let trace_id = record.trace_id;
                let mut batch = state.finished;
                // Children created before a late `set_parent` still carry the first trace id.
                for child in &mut batch {
                    if let Record::Span(child) = child {
                        child.trace_id = trace_id;
                    }
                }
                batch.push(Record::Span(record));
                if !state.held_logs.is_empty() {
                    let user: tracing_usr_export::UserTags = state
                        .trace
                        .identity
                        .final_shared(shared.mode, default.as_ref())
                        .map(|(tags, _)| tags)
                        .unwrap_or_default();
                    batch.extend(state.held_logs.into_iter().map(|mut log| {
                        log.user = user.clone();
                        Record::Log(log)
                    }));
                }
                pipeline.send_all(batch);
            }
            Some(root) => {
                drop(ext);
                let record = Record::Span(data.finish(span.metadata(), false));
                let Some(root) = ctx.span(&root) else {
                    pipeline.send_one(record);
                    return;
                };
                let mut ext = root.extensions_mut();
                match ext.get_mut::<RootState>() {
                    Some(state) => {
                        if state.finished.capacity() == 0 {
                            // Room for a small trace's children and its root (sent as one batch).
                            state.finished.reserve(8);
                        }
                        state.finished.push(record);
                        if state.finished.len() >= shared.max_spans_per_trace {
                            let partial = std::mem::take(&mut state.finished);
                            drop(ext);
                            pipeline.send_all(partial);
                        }
                    }
                    None => {
                        drop(ext);
                        pipeline.send_one(record);
                    }
                }
            }
        }
    }
}

impl<S> Layer<S> for UserLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.shared.signals.set_dispatch(subscriber);
        #[cfg(feature = "opentelemetry")]
        self.shared.otel.set_dispatch(subscriber);
        self.shared.emit_warnings(subscriber);
    }

    fn on_layer(&mut self, _subscriber: &mut S) {
        self.with_root = with_root_of::<S>;
        self.with_current_root = with_current_root_of::<S>;
        self.with_span = with_span_of::<S>;
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Fills both the full facts and the one-word interest entry.
        let _ = self.shared.callsites.has_usr(metadata);
        #[cfg(feature = "opentelemetry")]
        self.shared.otel.on_register_callsite(
            metadata,
            &self.shared.callsites.get(metadata),
            self.shared.mode,
        );
        Interest::always()
    }

    #[inline]
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.undecided() {
            self.probe_child(attrs, id, &ctx);
        }
        // The common case (nothing exported, no `usr.*` field) returns here, before the frame
        // of the full handler is set up.
        if self.shared.pipeline().is_some() || self.shared.callsites.has_usr(attrs.metadata()) {
            self.new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &SpanFields<'_>, ctx: Context<'_, S>) {
        let shared = &*self.shared;
        if self.inert() || (shared.pipeline().is_some() && is_export_thread()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let info = shared.callsites.get(span.metadata());
        let exporting = shared.pipeline().is_some();
        if !exporting && !info.has_usr {
            return;
        }
        let mut collector = Collector::new(&info, shared, exporting);
        values.record(&mut collector);
        let fields = &mut collector.fields;
        if !fields.plain.is_empty() {
            let mut ext = span.extensions_mut();
            if let Some(data) = ext.get_mut::<SpanState>().and_then(|s| s.data.as_mut()) {
                split_span_fields(fields.plain.drain(..), &mut data.meta, &mut data.metrics);
            }
        }
        if fields.has_root_input(true) {
            lift_to_root(span, fields, exporting, false, |id| ctx.span(id), shared);
        }
    }

    #[inline]
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.undecided() && !event.metadata().target().starts_with("tracing_usr") {
            if let Some(span) = event
                .parent()
                .cloned()
                .or_else(|| ctx.current_span().id().cloned())
            {
                self.shared.otel.probe_unseen(&span, None);
            }
        }
        if self.shared.pipeline().is_some() || self.shared.callsites.has_usr(event.metadata()) {
            self.event(event, ctx);
        }
    }

    #[inline]
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.any_deferred() {
            self.enter_deferred(id, ctx);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = (id, ctx);
    }

    #[inline]
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        // A root closing before the order is known: when its OpenTelemetry span is still open
        // (tracing-usr first), the default export stops before this trace is sent.
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.undecided() && self.shared.pipeline().is_some() {
            self.shared.otel.probe_unseen(&id, None);
        }
        match self.shared.pipeline() {
            Some(pipeline) => self.close_exported(id, ctx, pipeline),
            // Not exporting: only a root holding detection work needs its close.
            None => {
                #[cfg(feature = "opentelemetry")]
                if self.shared.otel.at_close_wanted() {
                    self.close_otel(id, ctx);
                    return;
                }
                if self.shared.armed_roots.load(Ordering::Acquire) > 0 {
                    self.close_armed(id, ctx);
                }
            }
        }
    }

    #[allow(unsafe_code)]
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        (id == TypeId::of::<Self>()).then_some(self as *const Self as *const ())
    }
}
