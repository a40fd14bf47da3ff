//! Keeping a root's OpenTelemetry span in step with the root's tags: what the layer's
//! callbacks and the SDK functions call after they change a root (see [`crate::otel`] for how
//! the span is found and the layer order learnt).

use opentelemetry::trace::TraceContextExt;
use opentelemetry::KeyValue;
use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_subscriber::registry::ExtensionsMut;
use tracing_usr_core::Mode;
use tracing_usr_core::RootFacts;

use crate::shared::Shared;
use crate::state::RootState;
use crate::visit::Fields;

/// Fields recorded on the root itself are already attributes of its OpenTelemetry span
/// (tracing-opentelemetry records them as they are): in identification mode, where tracing-usr
/// keeps them as they are too, they are not written a second time.
pub(crate) fn note_own_fields(shared: &Shared, fields: &Fields, state: &mut RootState) {
    if shared.mode != Mode::Identification || fields.identity.is_empty() || !shared.otel.active() {
        return;
    }
    for (key, value) in &fields.identity {
        if value.as_str() != tracing_usr_core::REDACTED {
            state.otel_held.note_own(key, value);
        }
    }
}

/// Marks a root whose tags were recorded at its creation: its OpenTelemetry span is not
/// looked at before the root was entered (that would start it), so they are written at the
/// root's last exit.
pub(crate) fn defer(ext: &mut ExtensionsMut<'_>) {
    if let Some(state) = ext.get_mut::<RootState>() {
        state.otel_dirty = true;
    }
}

/// The root's enter (eager order): writes wait for its last exit.
pub(crate) fn enter(ext: &mut ExtensionsMut<'_>) {
    if let Some(state) = ext.get_mut::<RootState>() {
        state.otel_entered = state.otel_entered.saturating_add(1);
    }
}

/// The root's exit (eager order): at its last one, what waited is written (no extension held
/// then). tracing-opentelemetry cannot end the root's span before this exit: a span is closed
/// only once no handle (and so no enter guard) is left.
pub(crate) fn exit<'a>(shared: &Shared, id: &Id, ext: impl Fn() -> ExtensionsMut<'a>) {
    let waiting = {
        let mut ext = ext();
        let Some(state) = ext.get_mut::<RootState>() else {
            return;
        };
        state.otel_entered = state.otel_entered.saturating_sub(1);
        state.otel_entered == 0 && std::mem::take(&mut state.otel_dirty)
    };
    if waiting {
        after_write(shared, id, ext, None);
    }
}

/// After a write on root `id` (no extension held): while the order is not known, looks for the
/// root's OpenTelemetry span first; then, when tags are written as recorded, writes them.
pub(crate) fn after_write<'a>(
    shared: &Shared,
    id: &Id,
    ext: impl FnOnce() -> ExtensionsMut<'a>,
    dispatch: Option<&Dispatch>,
) {
    shared.otel.probe_unseen(id, dispatch);
    if shared.otel.eager() {
        sync(shared, id, ext(), dispatch);
    }
}

/// Writes what the root's OpenTelemetry span lacks of the root's current tags (eager order):
/// computed under the root's extension lock, written after it is released. While the root is
/// entered, the write waits for its last exit (see [`exit`]), so that tags changed several
/// times in one request reach the span once, as they are at the end.
fn sync(shared: &Shared, id: &Id, mut ext: ExtensionsMut<'_>, dispatch: Option<&Dispatch>) {
    let Some(state) = ext.get_mut::<RootState>() else {
        return;
    };
    if state.otel_entered > 0 && shared.otel.has_dispatch() {
        state.otel_dirty = true;
        return;
    }
    let facts = root_facts(shared, state);
    let pending = crate::otel::attributes_not_in(&facts, &state.otel_held);
    state.otel_held.note_written(&pending);
    drop(ext);
    shared.otel.write_now(id, pending, dispatch);
}

/// The root's closing (tracing-usr's `on_close` first, the OpenTelemetry span still open): the
/// attributes the span lacks (`pending`, computed only when the span is there), written once,
/// without keeping a record of them.
pub(crate) fn write_at_close(shared: &Shared, id: &Id, pending: impl FnOnce() -> Vec<KeyValue>) {
    if let Some(cx) = shared.otel.at_close(id) {
        let pending = pending();
        if !pending.is_empty() {
            cx.span().set_attributes(pending);
        }
    }
}

/// The typed facts the root's state gives it now.
pub(crate) fn root_facts(shared: &Shared, state: &RootState) -> RootFacts {
    state.trace.facts(shared.mode, shared.default_bucket().as_ref())
}
