//! The layer's configuration warnings, as `tracing` events built by hand.
//!
//! They are dispatched straight to the dispatcher the layer was registered with, bypassing the
//! macros' global level hint and interest cache, which may not include that dispatcher yet
//! while it is being registered.

use std::sync::Once;

use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::dispatcher::{Dispatch, WeakDispatch};
use tracing_core::field::{FieldSet, Value};
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, Metadata};

struct WarnCallsite;

static CALLSITE: WarnCallsite = WarnCallsite;

static META: Metadata<'static> = Metadata::new(
    "tracing_usr configuration warning",
    "tracing_usr::config",
    Level::WARN,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["message", "variable"], Identifier(&CALLSITE)),
    Kind::EVENT,
);

impl Callsite for WarnCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &META
    }
}

#[cfg(feature = "opentelemetry")]
struct NoteCallsite;

#[cfg(feature = "opentelemetry")]
static NOTE_CALLSITE: NoteCallsite = NoteCallsite;

#[cfg(feature = "opentelemetry")]
static NOTE_META: Metadata<'static> = Metadata::new(
    "tracing_usr configuration note",
    "tracing_usr::config",
    Level::DEBUG,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["message"], Identifier(&NOTE_CALLSITE)),
    Kind::EVENT,
);

#[cfg(feature = "opentelemetry")]
impl Callsite for NoteCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &NOTE_META
    }
}

/// Emits one `debug` note (target `tracing_usr::config`) from a short-lived thread, as
/// [`emit_later`] does for warnings.
#[cfg(feature = "opentelemetry")]
pub(crate) fn note_later(dispatch: Option<WeakDispatch>, message: &'static str) {
    let note = move || {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| tracing_core::callsite::register(&NOTE_CALLSITE));
        let Some(dispatch) = dispatch.and_then(|d| d.upgrade()) else {
            return;
        };
        if !dispatch.enabled(&NOTE_META) {
            return;
        }
        let fields = NOTE_META.fields();
        let Some(field) = fields.field("message") else {
            return;
        };
        let message = format_args!("{message}");
        let values: [(&tracing_core::field::Field, Option<&dyn Value>); 1] =
            [(&field, Some(&message as &dyn Value))];
        dispatch.event(&Event::new(&NOTE_META, &fields.value_set(&values)));
    };
    let _ = std::thread::Builder::new()
        .name("tracing-usr-note".into())
        .spawn(note);
}

/// Registers the callsite once per process. Takes tracing-core's dispatcher lock, so it also
/// waits for a registration in progress to finish. Never call it from a layer callback.
pub(crate) fn register_callsite() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| tracing_core::callsite::register(&CALLSITE));
}

/// Emits one warning to `dispatch`, if its filters enable it.
pub(crate) fn emit(dispatch: &Dispatch, variable: &str, message: &str) {
    if !dispatch.enabled(&META) {
        return;
    }
    let fields = META.fields();
    let (Some(message_field), Some(variable_field)) = (fields.field("message"), fields.field("variable"))
    else {
        return;
    };
    let message = format_args!("{message}");
    let values: [(&tracing_core::field::Field, Option<&dyn Value>); 2] = [
        (&message_field, Some(&message as &dyn Value)),
        (&variable_field, Some(&variable as &dyn Value)),
    ];
    let values = fields.value_set(&values);
    dispatch.event(&Event::new(&META, &values));
}

/// Emits `warnings` from a short-lived thread, through `dispatch` once it can be upgraded.
///
/// They cannot be emitted from `on_register_dispatch` (tracing-core holds its dispatcher list's
/// write lock there, which registering the callsite needs) nor from inside a layer callback
/// (tracing drops re-entrant events and `with_default` would panic).
pub(crate) fn emit_later(
    dispatch: Option<WeakDispatch>,
    warnings: Vec<tracing_usr_core::mode::ConfigWarning>,
) {
    let emit = move || {
        register_callsite();
        if let Some(dispatch) = dispatch.and_then(|d| d.upgrade()) {
            for w in &warnings {
                emit(&dispatch, w.variable, &w.message);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("tracing-usr-warn".into())
        .spawn(emit)
    {
        eprintln!("tracing-usr: cannot report warnings ({e})");
    }
}
