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

/// Marks a root whose tags were recorded at its creation: written at its first enter.
pub(crate) fn defer(shared: &Shared, ext: &mut ExtensionsMut<'_>) {
    if let Some(state) = ext.get_mut::<RootState>() {
        if state.otel_deferred.is_none() {
            state.otel_deferred = Some(shared.otel.defer());
        }
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
/// computed under the root's extension lock, written after it is released.
fn sync(shared: &Shared, id: &Id, mut ext: ExtensionsMut<'_>, dispatch: Option<&Dispatch>) {
    let Some(state) = ext.get_mut::<RootState>() else {
        return;
    };
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
