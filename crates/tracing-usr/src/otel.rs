//! The user layer of a tracing-opentelemetry pipeline (feature `opentelemetry`): the tags
//! tracing-usr gives a local root are written as attributes of that root's OpenTelemetry span,
//! with the semantic-convention user attributes beside them.
//!
//! How it reaches the span: `tracing_opentelemetry::get_otel_context` with the subscriber's
//! `Dispatch` (kept from `Layer::on_register_dispatch`), never while any span's extensions are
//! held. When it writes depends on the order of the two layers, found out from the first child
//! span (whether tracing-opentelemetry has seen it before tracing-usr) or the first root's close
//! (whether its OpenTelemetry span is still open):
//!
//! * tracing-usr added first (`registry().with(usr).with(otel)`): tracing-usr's `on_close` of a
//!   root runs before tracing-opentelemetry's, so the root's final tags are written once, just
//!   before the span ends. No key is ever written twice.
//! * tracing-opentelemetry added first, or the order not known yet: its `on_close` ends the span
//!   before tracing-usr sees the close. But a span closes only once no handle, and so no enter
//!   guard, is left: while the root is entered, tags recorded wait for its last exit and are
//!   written then, once, as they are at that moment (enters are counted on the root's state,
//!   which tracing-usr creates with every new local root in this order). Tags recorded while the
//!   root is not entered (a spawned task's span, a root never entered) are written as they are
//!   recorded, each new or changed value once; a value that changes there is written again: the
//!   span then holds both, and a key that disappears cannot be taken back. Tags recorded by a
//!   root's own creation wait for it to be entered, so that the application can still give it a
//!   remote parent.
//!
//! While the order is not known, a new child span is probed: with tracing-opentelemetry first,
//! that starts the child's OpenTelemetry span at once (first trace only), so a `set_parent` on
//! that child would fail.
//!
//! With no OpenTelemetry span seen in the first 64 roots, the layer counts as absent: nothing is
//! probed or written any more, and the feature costs an atomic load per callback.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Array, KeyValue, StringValue, Value};
use smallvec::SmallVec;
use tracing_core::dispatcher::{Dispatch, WeakDispatch};
use tracing_core::span::Id;
use tracing_core::Metadata;
use tracing_usr_core::identity::Key;
use tracing_usr_core::mode::ConfigWarning;
use tracing_usr_core::root::AttributeValue;
use tracing_usr_core::value::Text;
use tracing_usr_core::{Mode, RootFacts};

use crate::callsite::CallsiteInfo;

/// The order of the two layers is not known yet: tags are written as they are recorded (a
/// no-op without a tracing-opentelemetry layer) and what is missing again at the root's close.
const UNKNOWN: u8 = 0;
/// tracing-opentelemetry sees a span's callbacks first: write eagerly.
const OTEL_FIRST: u8 = 1;
/// tracing-usr sees a span's callbacks first: write at the root's close.
const USR_FIRST: u8 = 2;
/// No OpenTelemetry span was seen in the first [`ROOTS_TO_ABSENT`] roots: nothing is probed or
/// written any more.
const ABSENT: u8 = 3;
/// How many roots close, with no OpenTelemetry span seen, before the layer counts as absent.
const ROOTS_TO_ABSENT: usize = 64;

/// The link to the tracing-opentelemetry layer of the same subscriber.
///
/// Nothing here looks at an OpenTelemetry span before its tracing span was entered or has a
/// child: `get_otel_context` starts a span that is still a builder, and a root started early
/// could no longer take a remote parent (`OpenTelemetrySpanExt::set_parent`).
#[derive(Debug)]
pub(crate) struct OtelBridge {
    dispatch: OnceLock<WeakDispatch>,
    order: AtomicU8,
    /// Set once an OpenTelemetry span of this subscriber was seen.
    present: AtomicBool,
    /// Set when the subscriber's OpenTelemetry layer is wrapped in an [`crate::OtelGuard`]: the
    /// fields it exports go through the mode and masking, and need no warning.
    guarded: AtomicBool,
    /// Whether the layer's exporters are the embedded default alone.
    default_export: bool,
    /// Roots closed while no OpenTelemetry span was seen.
    misses: AtomicUsize,
    /// Warnings about callsites whose fields tracing-opentelemetry exports as they are, held
    /// until a tracing-opentelemetry layer is seen (`None` once it is).
    exposed: Mutex<Option<Vec<ConfigWarning>>>,
}

impl OtelBridge {
    pub(crate) fn new(default_export: bool) -> Self {
        Self {
            dispatch: OnceLock::new(),
            order: AtomicU8::new(UNKNOWN),
            present: AtomicBool::new(false),
            guarded: AtomicBool::new(false),
            default_export,
            misses: AtomicUsize::new(0),
            exposed: Mutex::new(Some(Vec::new())),
        }
    }

    /// Keeps the subscriber's dispatch (a weak reference: the dispatch owns the layer).
    pub(crate) fn set_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// Notes that an [`crate::OtelGuard`] wraps the subscriber's OpenTelemetry layer: the
    /// warnings about fields tracing-opentelemetry would export raw are dropped.
    pub(crate) fn set_guarded(&self) {
        self.guarded.store(true, Ordering::Release);
        if let Ok(mut held) = self.exposed.lock() {
            if let Some(list) = held.as_mut() {
                list.clear();
            }
        }
    }

    /// Whether the embedded default export is off because tracing-opentelemetry exports.
    #[inline]
    pub(crate) fn export_off(&self) -> bool {
        self.default_export && self.present.load(Ordering::Relaxed)
    }

    /// Whether a tracing-opentelemetry layer may be there (not ruled out).
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.order.load(Ordering::Relaxed) != ABSENT
    }

    #[inline]
    pub(crate) fn undecided(&self) -> bool {
        self.order.load(Ordering::Relaxed) == UNKNOWN
    }

    /// Whether a write may be wanted as tags are recorded (tracing-opentelemetry closes first,
    /// or the order is not known yet): then [`OtelBridge::probe_unseen`], and
    /// [`OtelBridge::eager`] says whether to write.
    #[inline]
    pub(crate) fn may_write_eagerly(&self) -> bool {
        matches!(self.order.load(Ordering::Relaxed), UNKNOWN | OTEL_FIRST)
    }

    /// Whether tags are written as they are recorded: tracing-opentelemetry closes first, or the
    /// order is not known yet and an OpenTelemetry span was seen.
    #[inline]
    pub(crate) fn eager(&self) -> bool {
        match self.order.load(Ordering::Relaxed) {
            OTEL_FIRST => true,
            UNKNOWN => self.present.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// Whether a root's close may have tags to write (tracing-usr closes first, or not known).
    #[inline]
    pub(crate) fn at_close_wanted(&self) -> bool {
        matches!(self.order.load(Ordering::Relaxed), UNKNOWN | USR_FIRST)
    }

    /// While the order is not known and no OpenTelemetry span was seen: looks for span `id`'s
    /// (one already started: entered, holding an event, or closing), no extension held.
    #[inline]
    pub(crate) fn probe_unseen(&self, id: &Id, fallback: Option<&Dispatch>) {
        if self.undecided() && !self.present.load(Ordering::Relaxed) {
            let _ = self.context(id, fallback);
        }
    }

    /// Whether the subscriber's dispatch is known (given by `on_register_dispatch`), so that a
    /// write can wait for a later callback that has no dispatch of its own.
    #[inline]
    pub(crate) fn has_dispatch(&self) -> bool {
        self.dispatch.get().is_some()
    }

    /// The subscriber's dispatch: the one it was registered with, else `fallback` (an SDK call's
    /// current dispatch, for subscribers that do not forward `on_register_dispatch`).
    fn dispatch(&self, fallback: Option<&Dispatch>) -> Option<Dispatch> {
        self.dispatch
            .get()
            .and_then(WeakDispatch::upgrade)
            .or_else(|| fallback.cloned())
    }

    fn context(&self, id: &Id, fallback: Option<&Dispatch>) -> Option<opentelemetry::Context> {
        let dispatch = self.dispatch(fallback)?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch);
        if cx.is_some() && !self.present.load(Ordering::Relaxed) {
            self.sighted();
        }
        cx
    }

    /// The first OpenTelemetry span seen: the default export stops, held warnings are given.
    #[cold]
    fn sighted(&self) {
        if self.present.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.default_export {
            crate::warn::note_later(
                self.dispatch.get().cloned(),
                "a tracing-opentelemetry layer exports this subscriber's traces and no tracing-usr exporter is configured: tracing-usr exports nothing itself (set TRACING_USR_EXPORT or an exporter to export both)",
            );
        }
        let notes = self
            .exposed
            .lock()
            .map(|mut held| held.take().unwrap_or_default())
            .unwrap_or_default();
        if !notes.is_empty() {
            crate::warn::emit_later(self.dispatch.get().cloned(), notes);
        }
    }

    fn decide(&self, order: u8) {
        let _ = self
            .order
            .compare_exchange(UNKNOWN, order, Ordering::AcqRel, Ordering::Acquire);
    }

    /// From tracing-usr's `on_new_span` of child `id` of `parent`, no extension held: when
    /// tracing-opentelemetry has already seen the child, it runs first; when it has seen only
    /// the parent, tracing-usr does. (Roots are not probed: that would start them.)
    pub(crate) fn probe_child(&self, id: &Id, parent: &Id) {
        if self.context(id, None).is_some() {
            self.decide(OTEL_FIRST);
        } else if self.context(parent, None).is_some() {
            self.decide(USR_FIRST);
        }
    }

    /// At tracing-usr's close of root `id`, no extension held: its OpenTelemetry span when it is
    /// still open (tracing-usr closes first). While the order is not known, a span still open
    /// settles it as tracing-usr first; one already gone, with OpenTelemetry spans seen before,
    /// as tracing-opentelemetry first.
    pub(crate) fn at_close(&self, id: &Id) -> Option<opentelemetry::Context> {
        if !self.at_close_wanted() {
            return None;
        }
        let cx = self.context(id, None);
        if self.undecided() {
            if cx.is_some() {
                self.decide(USR_FIRST);
            } else if self.present.load(Ordering::Acquire) {
                self.decide(OTEL_FIRST);
            } else if self.misses.fetch_add(1, Ordering::Relaxed) + 1 >= ROOTS_TO_ABSENT {
                self.decide(ABSENT);
            }
        }
        cx
    }

    /// Writes `attributes` on the OpenTelemetry span of root `id`, no extension held.
    pub(crate) fn write_now(&self, id: &Id, attributes: Vec<KeyValue>, fallback: Option<&Dispatch>) {
        if attributes.is_empty() {
            return;
        }
        if let Some(cx) = self.context(id, fallback) {
            cx.span().set_attributes(attributes);
        }
    }

    /// Notes a callsite whose fields tracing-opentelemetry exports as they are, which the mode or
    /// the masking would change: warned once, when a tracing-opentelemetry layer is found.
    pub(crate) fn on_register_callsite(
        &self,
        meta: &'static Metadata<'static>,
        info: &CallsiteInfo,
        mode: Mode,
    ) {
        if self.guarded.load(Ordering::Acquire) {
            return;
        }
        let Some(warning) = exposure(meta, info, mode) else {
            return;
        };
        if let Ok(mut held) = self.exposed.lock() {
            if let Some(list) = held.as_mut() {
                list.push(warning);
                return;
            }
        }
        crate::warn::emit_later(self.dispatch.get().cloned(), vec![warning]);
    }
}

/// The warning for a callsite whose raw fields tracing-opentelemetry would export.
fn exposure(meta: &'static Metadata<'static>, info: &CallsiteInfo, mode: Mode) -> Option<ConfigWarning> {
    let usr = info.usr_field_names(meta);
    let masked = info.masked_field_names(meta);
    let usr_exposed = !usr.is_empty() && mode != Mode::Identification;
    if !usr_exposed && masked.is_empty() {
        return None;
    }
    let mut why = Vec::new();
    if usr_exposed {
        why.push(format!(
            "its identity fields {usr:?} are exported as they are, although the mode is {mode}"
        ));
    }
    if !masked.is_empty() {
        why.push(format!("its fields {masked:?} are exported unmasked"));
    }
    Some(ConfigWarning {
        variable: if usr_exposed {
            tracing_usr_core::mode::ENV_MODE
        } else {
            tracing_usr_core::mask::ENV_KEY_REGEXP
        },
        message: format!(
            "tracing-opentelemetry exports the fields of {} {:?} (target {}, {}:{}) on its own span, where tracing-usr cannot change them: {}. Wrap the OpenTelemetry layer in tracing_usr::otel_guard, or set identity with tracing_usr::identify or record_user instead",
            if meta.is_span() { "span" } else { "event" },
            meta.name(),
            meta.target(),
            meta.file().unwrap_or("?"),
            meta.line().unwrap_or(0),
            why.join("; ")
        ),
    })
}

/// What a root's OpenTelemetry span already holds of the root's tags.
#[derive(Debug, Default)]
pub(crate) struct OtelHeld {
    /// The root's own `usr.*` fields, which tracing-opentelemetry recorded as they are (kept as
    /// tracing-usr's own values: no allocation for a short one).
    own: SmallVec<[(Key, Text); 1]>,
    /// What tracing-usr wrote on it so far (when writing as tags are recorded).
    written: Vec<KeyValue>,
}

impl OtelHeld {
    /// Notes a field of the root itself that tracing-opentelemetry has recorded.
    pub(crate) fn note_own(&mut self, key: &Key, value: &Text) {
        self.own.push((key.clone(), value.clone()));
    }

    /// Notes attributes tracing-usr has written.
    pub(crate) fn note_written(&mut self, attributes: &[KeyValue]) {
        self.written.extend_from_slice(attributes);
    }

    /// Whether the span holds `key` = `value`.
    fn holds(&self, key: &str, value: AttributeValue<'_>) -> bool {
        if let AttributeValue::Str(v) = value {
            if self.own.iter().any(|(k, own)| k == key && own.as_str() == v) {
                return true;
            }
        }
        self.written.iter().any(|kv| {
            kv.key.as_str() == key
                && match (&kv.value, value) {
                    (Value::String(s), AttributeValue::Str(v)) => s.as_str() == v,
                    (Value::Array(Array::String(items)), AttributeValue::StrArray(v)) => {
                        items.len() == 1 && items[0].as_str() == v
                    }
                    (Value::I64(i), AttributeValue::Int(v)) => *i == v,
                    _ => false,
                }
        })
    }
}

/// The values the facts give that are the same every time (collection modes, event flags): no
/// allocation for them.
fn constant(value: &str) -> Option<&'static str> {
    Some(match value {
        "true" => "true",
        "false" => "false",
        "sdk" => "sdk",
        "identification" => "identification",
        "anonymization" => "anonymization",
        _ => return None,
    })
}

/// The OpenTelemetry attributes of a root's facts that the span does not hold yet (`held`), as
/// [`RootFacts::visit_attributes`] renders them: each tag as a string (the sampler's `_dd.p.dm`
/// / `_dd.p.ts` left out), a keep as the integer `sampling.priority`, and the
/// semantic-convention user attributes. An attribute is built only when it is missing, so a
/// root written again allocates only for what changed; a value given under several names
/// (`usr.id`, `user.id`, `enduser.id`, the private `_dd.appsec.usr.id`) is one shared string.
pub(crate) fn attributes_not_in(facts: &RootFacts, held: &OtelHeld) -> Vec<KeyValue> {
    // The values already turned into shared strings.
    let mut shared: SmallVec<[StringValue; 8]> = SmallVec::new();
    let mut string = |v: &str| -> StringValue {
        if let Some(s) = constant(v) {
            return StringValue::from(s);
        }
        if let Some(s) = shared.iter().find(|s| s.as_str() == v) {
            return s.clone();
        }
        let s = StringValue::from(Arc::<str>::from(v));
        shared.push(s.clone());
        s
    };
    let mut out = Vec::with_capacity(16);
    facts.visit_attributes(|_, key, value| {
        if held.holds(key, value) {
            return;
        }
        let value = match value {
            AttributeValue::Str(v) => Value::String(string(v)),
            AttributeValue::StrArray(v) => Value::Array(Array::String(vec![string(v)])),
            AttributeValue::Int(v) => Value::I64(v),
        };
        // Keys are mostly `&'static str`: no copy.
        out.push(KeyValue::new(key.clone(), value));
    });
    out
}

/// Every OpenTelemetry attribute of a root's facts (see [`attributes_not_in`]).
#[cfg(test)]
pub(crate) fn attributes(facts: &RootFacts) -> Vec<KeyValue> {
    attributes_not_in(facts, &OtelHeld::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &'static str) -> RootFacts {
        use tracing_usr_core::root::{EventFacts, RootUser, Sampling};
        RootFacts {
            user: RootUser::new(vec![
                ("usr.id".into(), id.into()),
                ("usr.role".into(), "admin".into()),
            ]),
            events: vec![EventFacts {
                name: "users.login.success".into(),
                tags: vec![("appsec.events.users.login.success.track".into(), "true".into())],
                sdk: true,
                auto_mode: None,
            }],
            sampling: Sampling::Kept,
            propagation: vec![
                ("_dd.p.dm".into(), "-5".into()),
                ("_dd.p.usr.id".into(), "dS0x".into()),
            ],
            ..RootFacts::default()
        }
    }

    #[test]
    fn facts_become_string_attributes_and_the_keep_an_integer() {
        let attrs = attributes(&facts("u-1"));
        let find = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(find("usr.id"), Some(Value::from("u-1")));
        assert_eq!(
            find("appsec.events.users.login.success.track"),
            Some(Value::from("true"))
        );
        assert_eq!(
            find("_dd.appsec.events.users.login.success.sdk"),
            Some(Value::from("true"))
        );
        assert_eq!(find("_dd.p.usr.id"), Some(Value::from("dS0x")));
        assert_eq!(find("_dd.p.dm"), None);
        assert_eq!(find("sampling.priority"), Some(Value::I64(2)));
        assert_eq!(find("user.id"), Some(Value::from("u-1")));
        assert_eq!(
            find("user.roles"),
            Some(Value::Array(Array::String(vec![StringValue::from("admin")])))
        );
        let keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "each key once: {keys:?}");
    }

    #[test]
    fn without_an_otel_layer_the_probing_stops_after_a_bounded_number_of_roots() {
        let bridge = OtelBridge::new(true);
        let id = Id::from_u64(1);
        for _ in 1..ROOTS_TO_ABSENT {
            assert!(bridge.at_close(&id).is_none());
            assert!(bridge.undecided() && bridge.may_write_eagerly() && bridge.at_close_wanted());
        }
        assert!(bridge.at_close(&id).is_none());
        assert!(!bridge.undecided() && !bridge.may_write_eagerly() && !bridge.at_close_wanted());
        assert!(
            !bridge.eager() && !bridge.export_off(),
            "the default export keeps running"
        );
    }

    #[test]
    fn only_new_or_changed_values_are_written_again() {
        let mut held = OtelHeld::default();
        held.note_written(&attributes(&facts("a")));
        assert_eq!(held.written.len(), 9, "{:?}", held.written);
        assert!(attributes_not_in(&facts("a"), &held).is_empty());
        let changed = attributes_not_in(&facts("b"), &held);
        let keys: Vec<&str> = changed.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["usr.id", "user.id", "enduser.id"]);
        held.note_written(&changed);
        assert!(attributes_not_in(&facts("b"), &held).is_empty());
    }
}
