//! The `tracing_subscriber::Layer`: its callbacks decide from the callsite whether there is
//! anything to do, and hand the work to the rooms that hold it (`root`, `state`, `visit`,
//! `detection`, `otel_sync`).

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::{Attributes, Id, Record as SpanFields};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Metadata};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{ExtensionsMut, LookupSpan, SpanRef};
use tracing_usr_core::events::FieldEvent;
use tracing_usr_core::identity::Key;
use tracing_usr_core::{keys, Mode};
use tracing_usr_export::pipeline::is_export_thread;
use tracing_usr_export::{FieldValue, Level, LogRecord, Pipeline, Record, SpanEvent, Text, UserTags};

use crate::callsite::CallsiteInfo;
use crate::clock::unix_nanos;
use crate::handle::Handle;
use crate::root::{self, CurrentRoot, RootAccess, SpanAccess};
use crate::shared::{Parts, Shared};
use crate::state::{RootState, SpanData, SpanState};
use crate::visit::{split_span_fields, Fields};

/// The `tracing_subscriber::Layer` that attributes traces to end users.
///
/// Build it with [`layer()`](crate::layer) (configuration from the environment) or
/// [`builder()`](crate::builder). See the [crate docs](crate) for what it does.
pub struct UserLayer {
    pub(crate) shared: Arc<Shared>,
    /// The subscriber's span store, for the SDK functions (set in `on_layer`; before it,
    /// nothing is found).
    access: Option<Box<dyn RootAccess>>,
}

impl fmt::Debug for UserLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl UserLayer {
    pub(crate) fn from_parts(parts: Parts) -> Self {
        let shared = Arc::new(Shared::new(parts));
        if shared.pipeline.is_some() {
            crate::handle::register(&shared);
        }
        Self { shared, access: None }
    }

    /// A handle to flush or shut down this layer's exporters and read its counters. It works
    /// before and after the layer is installed.
    pub fn handle(&self) -> Handle {
        Handle::new(Arc::clone(&self.shared))
    }

    /// The effective mode of the field path.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// [`RootAccess::with_span`] in this layer's subscriber.
    pub(crate) fn with_span(
        &self,
        dispatch: &Dispatch,
        id: &Id,
        on_span: &mut dyn FnMut(SpanAccess<'_>),
        on_root: &mut dyn FnMut(&mut RootState),
    ) -> bool {
        self.access
            .as_ref()
            .is_some_and(|access| access.with_span(dispatch, &self.shared, id, on_span, on_root))
    }

    /// [`RootAccess::with_current_root`] in this layer's subscriber.
    pub(crate) fn with_current_root(
        &self,
        dispatch: &Dispatch,
        f: &mut dyn FnMut(&mut RootState),
    ) -> CurrentRoot {
        self.access.as_ref().map_or(CurrentRoot::Unknown, |access| {
            access.with_current_root(dispatch, &self.shared, f)
        })
    }

    /// [`RootAccess::with_root`] in this layer's subscriber.
    pub(crate) fn with_root(&self, dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut RootState)) -> bool {
        self.access
            .as_ref()
            .is_some_and(|access| access.with_root(dispatch, &self.shared, id, f))
    }
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

/// Where a new span sits in its trace: its local root (`None`: it is one) and, when exporting,
/// the parent's trace and span ids.
type Lineage = (Option<Id>, Option<u128>, Option<u64>);

/// The lineage of a new span whose parent is `parent`.
fn lineage<'a, S>(parent: Option<SpanRef<'a, S>>, ctx: &'a Context<'a, S>) -> Lineage
where
    S: Subscriber + for<'b> LookupSpan<'b>,
{
    let Some(parent) = parent else {
        return (None, None, None);
    };
    let ext = parent.extensions();
    match ext.get::<SpanState>() {
        Some(p) => (
            Some(p.root.clone().unwrap_or_else(|| parent.id())),
            p.data.as_ref().map(|d| d.trace_id),
            p.data.as_ref().map(|d| d.span_id),
        ),
        None => {
            drop(ext);
            let root = root::root_of(parent, true, |id| ctx.span(id)).map(|root| root.id());
            (root, None, None)
        }
    }
}

/// The record of an event that occurred outside any span: the event's own identity, else the
/// default identity.
fn log_outside_span(shared: &Shared, fields: &mut Fields, mut log: LogRecord) -> LogRecord {
    log.user = if fields.identity.iter().any(|(k, _)| k == keys::USR_ID) {
        std::mem::take(&mut fields.identity).into_iter().collect()
    } else {
        shared.default_bucket().map(|b| b.shared()).unwrap_or_default()
    };
    log
}

/// What an event brings to its trace (docs/tags.md "which identity reaches the root", rule 4a):
/// a business event (`usr.event`) describes its subject, not the trace's user, so its fields
/// never enter the identity; a login success or signup naming a blocked user blocks the trace.
/// The crate's own events (configuration warnings, signals) are exported but never feed
/// identity or business events back (feedback guard).
fn event_input(
    shared: &Shared,
    meta: &Metadata<'_>,
    info: &CallsiteInfo,
    fields: &mut Fields,
    usr: Vec<(&'static str, String)>,
    plain: &[(Key, FieldValue)],
) -> Option<(String, FieldEvent)> {
    if meta.target().starts_with("tracing_usr") {
        fields.blocked_user = None;
        fields.identity.clear();
        return None;
    }
    if !info.has_event {
        return None;
    }
    if !usr.iter().any(|(k, v)| *k == keys::USR_EVENT && !v.is_empty()) {
        let mut identity = shared.field_identity(usr);
        fields.blocked_user = identity.blocked_user.take();
        fields.identity = std::mem::take(&mut identity.identity);
        return None;
    }
    fields.identity.clear();
    let event = shared.business_event(&usr, plain);
    if let Some(id) = event.as_ref().and_then(|(_, e)| e.root_id.as_ref()) {
        let raw = usr
            .iter()
            .find(|(k, _)| *k == keys::USR_ID)
            .map(|(_, v)| v.as_str());
        if shared.blocks.is_user_blocked(id) || raw.is_some_and(|r| shared.blocks.is_user_blocked(r)) {
            fields.blocked_user = Some(id.clone());
        }
    }
    event
}

/// An event's fields split into what it brings to its trace ([`event_input`]) and, when a
/// pipeline runs, its log record (ids and user filled in later).
#[inline]
fn event_parts(
    shared: &Shared,
    meta: &'static Metadata<'static>,
    info: &CallsiteInfo,
    fields: &mut Fields,
    exported: bool,
) -> (Option<(String, FieldEvent)>, Option<LogRecord>) {
    let (usr, plain, message) = (
        std::mem::take(&mut fields.usr),
        std::mem::take(&mut fields.plain).into_vec(),
        fields.message.take(),
    );
    let business_event = event_input(shared, meta, info, fields, usr, &plain);
    let log = exported.then(|| LogRecord {
        timestamp_unix_nanos: unix_nanos(),
        level: level(meta),
        target: meta.target().into(),
        message,
        fields: plain,
        trace_id: None,
        span_id: None,
        user: UserTags::default(),
    });
    (business_event, log)
}

/// Notes an event on the span it occurred in (a span event when the exporters want them, the
/// error flag and message for `ERROR`), returning the span's stored root and its ids.
fn note_event_on_span(
    ext: &mut ExtensionsMut<'_>,
    log: Option<&LogRecord>,
    span_events: bool,
) -> (Option<Option<Id>>, Option<(u128, u64)>) {
    let Some(state) = ext.get_mut::<SpanState>() else {
        return (None, None);
    };
    let ids = state.data.as_mut().map(|data| {
        if let Some(log) = log {
            if span_events {
                data.events.push(SpanEvent {
                    time_unix_nanos: log.timestamp_unix_nanos,
                    name: log.message.clone().unwrap_or_else(|| Text::from("event")),
                    level: log.level,
                    fields: log.fields.clone(),
                });
            }
            if log.level == Level::Error {
                data.error = true;
                if let Some(message) = &log.message {
                    if !data.meta.iter().any(|(k, _)| k == "error.message") {
                        data.meta.push((Key::Borrowed("error.message"), message.clone()));
                    }
                }
            }
        }
        (data.trace_id, data.span_id)
    });
    (Some(state.root.clone()), ids)
}

/// An event's work on its trace's root: identity, a business event (and its detection), and
/// the user of its log record (or the record held for retroactive identity).
fn apply_event(
    shared: &Shared,
    state: &mut RootState,
    fields: &mut Fields,
    business_event: Option<(String, FieldEvent)>,
    log: &mut Option<LogRecord>,
) -> Vec<tracing_usr_core::detection::Signal> {
    let mut signals = root::apply(fields, false, state, shared);
    if let Some((name, event)) = business_event {
        if let Some(detection) = shared.detection() {
            detection.submit_event(state, &name, &event.tags);
        }
        state.trace.record_field_event(&name, event, shared.mode);
        signals.extend(crate::detection::run::take(state));
    }
    if shared.retroactive {
        if let Some(log) = log.take() {
            state.held_logs.push(log);
        }
    } else if let Some(log) = log.as_mut() {
        log.user = state.current_user(shared.mode);
    }
    signals
}

/// The batch a closing root sends: its finished children (given the root's trace id: those
/// created before a late `set_parent` still carry the first one), itself, and the log records
/// held for retroactive identity, which get the trace's final user.
fn root_batch(shared: &Shared, state: RootState, record: tracing_usr_export::SpanRecord) -> Vec<Record> {
    let trace_id = record.trace_id;
    let mut batch = state.finished;
    for child in &mut batch {
        if let Record::Span(child) = child {
            child.trace_id = trace_id;
        }
    }
    batch.push(Record::Span(record));
    if !state.held_logs.is_empty() {
        let default = shared.default_bucket();
        let user: UserTags = state
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
    batch
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
        if shared.inert() {
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
        let mut collector = shared.collector(&info, false);
        attrs.record(&mut collector);
        let fields = &mut collector.fields;
        // Checked before the span is looked up: most such records bring nothing.
        if root::has_root_input(fields, true) {
            if let Some(span) = ctx.span(id) {
                root::lift_to_root(span, fields, false, true, |id| ctx.span(id), shared);
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
        let mut collector = shared.collector(info, true);
        attrs.record(&mut collector);
        let fields = &mut collector.fields;
        let Some(span) = ctx.span(id) else { return };
        let (root, trace_id, parent_span_id) = lineage(span.parent(), &ctx);
        let mut data = SpanData::new(trace_id.unwrap_or_else(crate::ids::trace_id), parent_span_id);
        let span_trace_id = data.trace_id;
        split_span_fields(fields.plain.drain(..), &mut data.meta, &mut data.metrics);
        let mut ext = span.extensions_mut();
        ext.replace(SpanState {
            root: root.clone(),
            data: Some(data),
        });
        let Some(root) = root else {
            ext.replace(self.new_root_state(id, fields, span_trace_id));
            return;
        };
        drop(ext);
        if root::has_root_input(fields, false) {
            if let Some(root) = ctx.span(&root) {
                root::apply_on(&root, fields, false, shared);
            }
        }
    }

    /// The state of a new local root of trace `trace_id`, with the root input of its own
    /// fields.
    fn new_root_state(&self, id: &Id, fields: &mut Fields, trace_id: u128) -> RootState {
        let shared = &*self.shared;
        let mut state = RootState::new(id, &shared.live_roots);
        state.trace_id = Some(trace_id);
        #[cfg(feature = "opentelemetry")]
        {
            if shared.otel.may_write_eagerly() && root::has_root_input(fields, true) {
                state.otel_dirty = true;
            }
            crate::otel_sync::note_own_fields(shared, fields, &mut state);
        }
        // A new root has no waiting events: no signals here.
        let _ = root::apply(fields, true, &mut state, shared);
        state
    }

    #[inline(never)]
    fn event<S>(&self, event: &Event<'_>, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let shared = &*self.shared;
        let info = shared.callsites.get(event.metadata());
        let meta = event.metadata();
        let pipeline = shared.pipeline();
        if shared.inert() || is_export_thread() {
            return;
        }
        let mut collector = shared.collector(&info, pipeline.is_some() || info.has_event);
        if info.has_event {
            collector = collector.keep_raw();
        }
        event.record(&mut collector);
        let fields = &mut collector.fields;
        let (business_event, mut log) = event_parts(shared, meta, &info, fields, pipeline.is_some());
        let Some(span) = ctx.event_span(event) else {
            if let (Some(pipeline), Some(log)) = (pipeline, log) {
                pipeline.send_one(Record::Log(log_outside_span(shared, fields, log)));
            }
            return;
        };
        let span_events = pipeline.is_some_and(Pipeline::wants_span_events);
        let (stored_root, ids) = note_event_on_span(&mut span.extensions_mut(), log.as_ref(), span_events);
        let root = match stored_root {
            Some(None) => Some(span),
            Some(Some(root)) => ctx.span(&root),
            None => root::root_of(span, pipeline.is_some(), |id| ctx.span(id)),
        };
        let Some(root) = root else { return };
        if let Some(log) = log.as_mut() {
            log.trace_id = ids.map(|(t, _)| t);
            log.span_id = ids.map(|(_, s)| s);
        }
        let signals = root::with_state(&mut root.extensions_mut(), &root.id(), shared, |state| {
            apply_event(shared, state, fields, business_event, &mut log)
        });
        shared.signals.enqueue(signals);
        if let (Some(pipeline), Some(mut log)) = (pipeline, log) {
            if log.user.is_empty() {
                log.user = shared.default_bucket().map(|b| b.shared()).unwrap_or_default();
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
        if shared.inert() || !shared.live_roots.may_hold(&id) {
            return;
        }
        if let Some(span) = ctx.span(&id) {
            let signals = span
                .extensions_mut()
                .get_mut::<RootState>()
                .map(|state| shared.close_detection(state))
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
        // Once the order is known, only a root holding state has work here.
        if shared.inert() || (!shared.otel.undecided() && !shared.live_roots.may_hold(&id)) {
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
        let signals = shared.close_detection(&mut state);
        shared.signals.enqueue(signals);
        crate::otel_sync::write_at_close(shared, &id, || {
            let facts = crate::otel_sync::root_facts(shared, &state);
            crate::otel::attributes_not_in(&facts, &state.otel_held)
        });
    }

    /// A root's enter or exit while tags may be written as recorded: counted, and at the last
    /// exit what waited is written (see [`crate::otel_sync::exit`]).
    #[cfg(feature = "opentelemetry")]
    #[inline(never)]
    fn enter_or_exit_root<S>(&self, id: &Id, ctx: Context<'_, S>, entering: bool)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        if entering {
            crate::otel_sync::enter(&mut span.extensions_mut());
        } else {
            crate::otel_sync::exit(&self.shared, id, || span.extensions_mut());
        }
    }

    /// A new local root while tags may be written as recorded (and nothing is exported): its
    /// state from the start, so that its enters are counted.
    #[cfg(feature = "opentelemetry")]
    #[inline(never)]
    fn hold_root<S>(&self, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if ext.get_mut::<RootState>().is_none() {
            ext.insert(RootState::new(id, &self.shared.live_roots));
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
        if self.shared.inert() {
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
                let state = ext.remove::<RootState>();
                drop(ext);
                self.close_root_exported(&id, data.finish(span.metadata(), true), state, pipeline);
            }
            Some(root) => {
                drop(ext);
                let record = Record::Span(data.finish(span.metadata(), false));
                match ctx.span(&root) {
                    Some(root) => self.close_child_exported(&root, record, pipeline),
                    None => pipeline.send_one(record),
                }
            }
        }
    }

    /// A local root's close when exporting: detection's close work, the trace's tags on the
    /// root (and on its OpenTelemetry span, when tracing-usr closes first), then the trace.
    #[inline(always)]
    fn close_root_exported(
        &self,
        id: &Id,
        mut record: tracing_usr_export::SpanRecord,
        state: Option<RootState>,
        pipeline: &Pipeline,
    ) {
        let shared = &*self.shared;
        let Some(mut state) = state else {
            #[cfg(feature = "opentelemetry")]
            if shared.otel.undecided() {
                let _ = shared.otel.at_close(id);
            }
            pipeline.send_one(Record::Span(record));
            return;
        };
        let signals = shared.close_detection(&mut state);
        shared.signals.enqueue(signals);
        record.set_root(state.trace.facts(shared.mode, shared.default_bucket().as_ref()));
        #[cfg(feature = "opentelemetry")]
        crate::otel_sync::write_at_close(shared, id, || {
            let facts = record.root.as_deref();
            facts
                .map(|facts| crate::otel::attributes_not_in(facts, &state.otel_held))
                .unwrap_or_default()
        });
        #[cfg(not(feature = "opentelemetry"))]
        let _ = id;
        pipeline.send_all(root_batch(shared, state, record));
    }

    /// A child's close when exporting: it waits in its root's state for the root, sent ahead
    /// (with no lock held) when the trace has reached its span limit.
    fn close_child_exported<R>(&self, root: &SpanRef<'_, R>, record: Record, pipeline: &Pipeline)
    where
        R: for<'a> LookupSpan<'a>,
    {
        let mut ext = root.extensions_mut();
        let Some(state) = ext.get_mut::<RootState>() else {
            drop(ext);
            pipeline.send_one(record);
            return;
        };
        if state.finished.capacity() == 0 {
            // Room for a small trace's children and its root (sent as one batch).
            state.finished.reserve(8);
        }
        state.finished.push(record);
        if state.finished.len() >= self.shared.max_spans_per_trace {
            let partial = std::mem::take(&mut state.finished);
            drop(ext);
            pipeline.send_all(partial);
        }
    }
}

impl<S> Layer<S> for UserLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let other_active = subscriber
            .downcast_ref::<UserLayer>()
            .is_some_and(|active| !Arc::ptr_eq(&active.shared, &self.shared));
        self.shared.register(subscriber, other_active);
    }

    fn on_layer(&mut self, _subscriber: &mut S) {
        self.access = Some(Box::new(root::Typed::<S>::new()));
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
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.may_write_eagerly()
            && self.shared.pipeline().is_none()
            && !self.shared.inert()
            && (attrs.is_root() || (attrs.is_contextual() && ctx.current_span().id().is_none()))
        {
            self.hold_root(id, &ctx);
        }
        if self.shared.pipeline().is_some() || self.shared.callsites.has_usr(attrs.metadata()) {
            self.new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &SpanFields<'_>, ctx: Context<'_, S>) {
        let shared = &*self.shared;
        if shared.inert() || (shared.pipeline().is_some() && is_export_thread()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let info = shared.callsites.get(span.metadata());
        let exporting = shared.pipeline().is_some();
        if !exporting && !info.has_usr {
            return;
        }
        let mut collector = shared.collector(&info, exporting);
        values.record(&mut collector);
        let fields = &mut collector.fields;
        if !fields.plain.is_empty() {
            let mut ext = span.extensions_mut();
            if let Some(data) = ext.get_mut::<SpanState>().and_then(|s| s.data.as_mut()) {
                split_span_fields(fields.plain.drain(..), &mut data.meta, &mut data.metrics);
            }
        }
        if root::has_root_input(fields, true) {
            root::lift_to_root(span, fields, exporting, false, |id| ctx.span(id), shared);
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
        if self.shared.otel.may_write_eagerly() && self.shared.live_roots.may_hold(id) {
            self.enter_or_exit_root(id, ctx, true);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = (id, ctx);
    }

    #[inline]
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        #[cfg(feature = "opentelemetry")]
        if self.shared.otel.may_write_eagerly() && self.shared.live_roots.may_hold(id) {
            self.enter_or_exit_root(id, ctx, false);
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
