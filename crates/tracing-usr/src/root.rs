//! Finding a span's local root and working on its state: from the layer's callbacks (with a
//! `SpanRef`) and from the SDK functions (with only a `Dispatch`, through [`RootAccess`]).

use std::marker::PhantomData;

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_core::subscriber::Subscriber;
use tracing_subscriber::registry::{Extensions, ExtensionsMut, LookupSpan, SpanRef};
use tracing_usr_core::blocking::BlockReason;
use tracing_usr_core::detection::Signal;

use crate::shared::Shared;
use crate::state::{RootState, SpanData, SpanState};
use crate::visit::Fields;

/// What [`RootAccess::with_current_root`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CurrentRoot {
    /// The closure ran on the current trace's root.
    Found,
    /// The thread is in no span.
    NoSpan,
    /// The current span or its root is unknown to the subscriber.
    Unknown,
}

/// What [`RootAccess::with_span`] hands its closure about the span itself.
#[derive(Debug)]
pub(crate) struct SpanAccess<'a> {
    /// The span's export data (absent when nothing is exported).
    pub(crate) data: Option<&'a mut SpanData>,
    /// Whether the span is its trace's local root.
    pub(crate) is_root: bool,
}

/// The span store of the subscriber the layer sits in, reached from a `Dispatch` (the SDK
/// functions have no `Context`). The layer learns the subscriber's type in `on_layer`.
pub(crate) trait RootAccess: Send + Sync {
    /// Runs `f` on the state of the local root of span `id`; `false` when the span is unknown.
    fn with_root(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        id: &Id,
        f: &mut dyn FnMut(&mut RootState),
    ) -> bool;

    /// Runs `f` on the root of the current span's trace (one typed look-up of the current
    /// span, where `Dispatch::current_span` and [`RootAccess::with_root`] would make two).
    fn with_current_root(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        f: &mut dyn FnMut(&mut RootState),
    ) -> CurrentRoot;

    /// Runs `on_span` with the span's own state, then (with that lock released) `on_root` with
    /// its local root's state. `false` when the span is unknown.
    fn with_span(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        id: &Id,
        on_span: &mut dyn FnMut(SpanAccess<'_>),
        on_root: &mut dyn FnMut(&mut RootState),
    ) -> bool;
}

/// The span store of a subscriber of type `S`.
pub(crate) struct Typed<S>(PhantomData<fn(S)>);

impl<S> Typed<S> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> RootAccess for Typed<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn with_root(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        id: &Id,
        f: &mut dyn FnMut(&mut RootState),
    ) -> bool {
        dispatch
            .downcast_ref::<S>()
            .is_some_and(|subscriber| on_root_of(subscriber, shared, id, f))
    }

    fn with_current_root(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        f: &mut dyn FnMut(&mut RootState),
    ) -> CurrentRoot {
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

    fn with_span(
        &self,
        dispatch: &Dispatch,
        shared: &Shared,
        id: &Id,
        on_span: &mut dyn FnMut(SpanAccess<'_>),
        on_root: &mut dyn FnMut(&mut RootState),
    ) -> bool {
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
        let stored = shared.pipeline().is_some();
        let Some(root) = root_of(span, stored, |id| subscriber.span(id)) else {
            return false;
        };
        with_state(&mut root.extensions_mut(), &root.id(), shared, on_root);
        #[cfg(feature = "opentelemetry")]
        if shared.otel.may_write_eagerly() {
            crate::otel_sync::after_write(shared, &root.id(), || root.extensions_mut(), Some(dispatch));
        }
        true
    }
}

/// Runs `f` on the state of the local root of span `id`; `false` when the span is unknown.
fn on_root_of<S>(subscriber: &S, shared: &Shared, id: &Id, f: &mut dyn FnMut(&mut RootState)) -> bool
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
    with_state(&mut data.extensions_mut(), &data.id(), shared, f);
    #[cfg(feature = "opentelemetry")]
    if shared.otel.may_write_eagerly() {
        crate::otel_sync::after_write(shared, &data.id(), || data.extensions_mut(), None);
    }
    true
}

/// The local root of `span`. When exporting, every tracked span stores its root id (one
/// lookup); otherwise nothing is stored and the root is the outermost ancestor, reached by
/// walking up.
pub(crate) fn root_of<'a, R>(
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
fn stored_root(ext: &Extensions<'_>) -> Option<Option<Id>> {
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

/// Runs `f` on the state of root `id` (whose extensions `ext` are), created on first use.
pub(crate) fn with_state<R>(
    ext: &mut ExtensionsMut<'_>,
    id: &Id,
    shared: &Shared,
    f: impl FnOnce(&mut RootState) -> R,
) -> R {
    if let Some(state) = ext.get_mut::<RootState>() {
        return f(state);
    }
    // Built in its box rather than on the stack and moved (the state is a few hundred bytes).
    ext.insert(RootState::new(id, &shared.live_roots));
    match ext.get_mut::<RootState>() {
        Some(state) => f(state),
        // Not reached: inserted just above.
        None => f(&mut RootState::new(id, &shared.live_roots)),
    }
}

/// Whether the record brings anything to its trace's root: identity or a blocked field-path
/// user from any span, and a client IP or a user agent from the root itself (`is_root`).
#[inline]
pub(crate) fn has_root_input(fields: &Fields, is_root: bool) -> bool {
    !fields.identity.is_empty() || fields.blocked_user.is_some() || (is_root && has_root_only_input(fields))
}

/// Whether the record carries what only a root's own record uses (then the caller checks
/// whether the span is a root).
#[inline]
pub(crate) fn has_root_only_input(fields: &Fields) -> bool {
    fields.client_ip.is_some() || fields.user_agent.is_some()
}

/// Moves the record's root input into the root's state (docs/tags.md "which identity reaches
/// the root", "blocking"); the client IP and user agent count only when the record is the
/// root's own (`is_root`). Returns the signals of events that were waiting for the client IP.
#[must_use]
#[inline]
pub(crate) fn apply(
    fields: &mut Fields,
    is_root: bool,
    state: &mut RootState,
    shared: &Shared,
) -> Vec<Signal> {
    if !fields.identity.is_empty() {
        state.trace.identity.record_field(fields.identity.drain(..));
    }
    if is_root || fields.blocked_user.is_some() {
        apply_rest(fields, is_root, state, shared)
    } else {
        Vec::new()
    }
}

/// [`apply`] past the identity: client IP, user agent, blocked user.
#[must_use]
#[inline(never)]
fn apply_rest(fields: &mut Fields, is_root: bool, state: &mut RootState, shared: &Shared) -> Vec<Signal> {
    let mut signals = Vec::new();
    if is_root {
        if let Some(user_agent) = fields.user_agent.take() {
            state.trace.set_user_agent(user_agent);
        }
        if let Some((ip, rank)) = fields.client_ip.take() {
            state.trace.set_client_ip(ip, rank);
            if state.trace.has_detection_work() {
                signals = shared.run_detection(state, false);
            }
            if shared.blocks.is_ip_blocked(ip) {
                state
                    .trace
                    .block(BlockReason::Ip(ip), crate::ids::security_response_id());
            }
        }
    }
    if let Some(user) = fields.blocked_user.take() {
        state
            .trace
            .block(BlockReason::User(user), crate::ids::security_response_id());
    }
    signals
}

/// Applies `fields` (recorded on a descendant of `root`) on `root`; signals are queued once the
/// extension lock is released.
pub(crate) fn apply_on<R>(root: &SpanRef<'_, R>, fields: &mut Fields, is_root: bool, shared: &Shared)
where
    R: for<'a> LookupSpan<'a>,
{
    apply_on_from(root, fields, is_root, false, false, shared)
}

/// [`apply_on`], saying whether the fields were recorded on the root itself (`from_root`) and at
/// its creation (`creating`: its OpenTelemetry span is then written once it was entered, not
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
    let signals = with_state(&mut root.extensions_mut(), &root.id(), shared, |state| {
        #[cfg(feature = "opentelemetry")]
        if from_root {
            crate::otel_sync::note_own_fields(shared, fields, state);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = from_root;
        apply(fields, is_root, state, shared)
    });
    shared.signals.enqueue(signals);
    #[cfg(feature = "opentelemetry")]
    if shared.otel.may_write_eagerly() {
        if creating {
            crate::otel_sync::defer(&mut root.extensions_mut());
        } else {
            crate::otel_sync::after_write(shared, &root.id(), || root.extensions_mut(), None);
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = creating;
}

/// Moves what `fields` bring to their trace's root (see [`has_root_input`]) into the root of
/// `span`, found as [`root_of`] does. Whether `span` is itself the root (a parent look-up) is
/// asked only when the record carries root-only input.
pub(crate) fn lift_to_root<'a, R>(
    span: SpanRef<'a, R>,
    fields: &mut Fields,
    stored: bool,
    creating: bool,
    lookup: impl Fn(&Id) -> Option<SpanRef<'a, R>>,
    shared: &Shared,
) where
    R: for<'b> LookupSpan<'b>,
{
    let is_root = has_root_only_input(fields) && span.parent().is_none();
    if !has_root_input(fields, is_root) {
        return;
    }
    let span_id = span.id();
    if let Some(root) = root_of(span, stored, lookup) {
        let from_root = span_id == root.id();
        apply_on_from(&root, fields, is_root, creating && from_root, from_root, shared);
    }
}
