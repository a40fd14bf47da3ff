//! [`otel_guard`]: tracing-usr's mode and masking applied to the fields tracing-opentelemetry
//! exports on the application's own spans and events.
//!
//! A layer cannot change what a sibling layer is given: tracing-opentelemetry reads every field
//! of every span and event as it is. The guard wraps tracing-opentelemetry's layer instead, and
//! hands it the span's or event's values rebuilt, for the callsites that need it: identity
//! fields after the mode (hashed in anonymization mode, left out in disabled mode), masked
//! fields as `<Redacted>`. Every other callsite is passed through untouched, at the cost of one
//! cached callsite look-up.

use std::any::TypeId;
use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::{Arc, OnceLock};

use smallvec::SmallVec;
use tracing_core::field::{display, DisplayValue, Field, Value, ValueSet, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Dispatch, Event, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;
use tracing_usr_core::identity::apply_mode;
use tracing_usr_core::value::format_bool;
use tracing_usr_core::{Anonymizer, Masker, Mode, REDACTED};

use crate::callsite::{CallsiteCache, CallsiteInfo, FieldKind};
use crate::layer::UserLayer;
use crate::shared::Shared;

/// Wraps an OpenTelemetry layer (`tracing_opentelemetry::layer()`, or any layer) so that the
/// fields it is given go through tracing-usr's mode and masking first.
///
/// tracing-opentelemetry exports every field of a span or event as an attribute of *that* span,
/// as it is: `info_span!("login", usr.id = id, usr.token = t)` would reach the collector with
/// the raw id and token, whatever the mode. Through the guard it receives, for such callsites:
///
/// - the identity fields (`usr.id`, `usr.email`, … and free-form `usr.<key>`) after the mode:
///   as they are in identification mode, hashed (`anon_…`) or left out in anonymization mode
///   as on the root, left out in disabled mode;
/// - `usr.token` and every field whose name the key rule matches as `<Redacted>`;
/// - with [`OtelGuard::with_value_masking`], every string value of every span and event with
///   the value rule applied (bearer tokens, …).
///
/// The rules are those of the tracing-usr layer of the same subscriber (found when the
/// subscriber is registered); with none, the guard reads them from the environment as
/// [`builder()`](crate::builder) does. Other callsites are passed through untouched. A
/// rewritten value keeps its type (numbers, booleans, errors with their sources), except that an
/// identity value changed by the mode becomes a string.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// # let tracer = opentelemetry::trace::noop::NoopTracer::new();
/// // `tracer`: the application's, from its OpenTelemetry SDK provider
/// let otel = tracing_opentelemetry::layer().with_tracer(tracer);
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_usr::layer())
///     .with(tracing_usr::otel_guard(otel));
/// tracing::subscriber::with_default(subscriber, || {
///     // tracing-opentelemetry is given `usr.token = "<Redacted>"`.
///     let _span = tracing::info_span!("login", usr.token = "t-123").entered();
/// });
/// ```
pub fn otel_guard<L>(layer: L) -> OtelGuard<L> {
    OtelGuard {
        inner: layer,
        rules: OnceLock::new(),
        scan_values: false,
    }
}

/// An OpenTelemetry layer whose fields go through tracing-usr's mode and masking first (see
/// [`otel_guard`]).
pub struct OtelGuard<L> {
    inner: L,
    rules: OnceLock<Rules>,
    scan_values: bool,
}

impl<L> OtelGuard<L> {
    /// Also applies the value rule (`TRACING_USR_VALUE_REGEXP`, bearer tokens by default) to
    /// every string value of every span and event. Each callsite with fields is then visited
    /// twice, and rebuilt when a value changes.
    pub fn with_value_masking(mut self) -> Self {
        self.scan_values = true;
        self
    }

    /// The wrapped layer.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L: fmt::Debug> fmt::Debug for OtelGuard<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelGuard")
            .field("inner", &self.inner)
            .field("mode", &self.rules.get().map(Rules::mode))
            .field("scan_values", &self.scan_values)
            .finish()
    }
}

/// Where the guard's rules come from.
enum Rules {
    /// The tracing-usr layer of the same subscriber.
    Layer(Arc<Shared>),
    /// Read from the environment (no tracing-usr layer found).
    Own {
        mode: Mode,
        masker: Arc<Masker>,
        anonymizer: Anonymizer,
        callsites: CallsiteCache,
    },
}

impl Rules {
    fn of(shared: &Arc<Shared>) -> Self {
        shared.otel.set_guarded();
        Rules::Layer(Arc::clone(shared))
    }

    fn from_env(dispatch: Option<&Dispatch>) -> Self {
        let (mode, masker, warnings) = crate::builder().privacy_rules();
        if !warnings.is_empty() {
            crate::warn::emit_later(dispatch.map(Dispatch::downgrade), warnings);
        }
        Rules::Own {
            mode,
            callsites: CallsiteCache::new(Arc::clone(&masker), false),
            masker,
            anonymizer: Anonymizer::new(4096),
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Rules::Layer(shared) => shared.mode,
            Rules::Own { mode, .. } => *mode,
        }
    }

    fn masker(&self) -> &Masker {
        match self {
            Rules::Layer(shared) => &shared.masker,
            Rules::Own { masker, .. } => masker,
        }
    }

    fn anonymizer(&self) -> &Anonymizer {
        match self {
            Rules::Layer(shared) => &shared.anonymizer,
            Rules::Own { anonymizer, .. } => anonymizer,
        }
    }

    fn callsites(&self) -> &CallsiteCache {
        match self {
            Rules::Layer(shared) => &shared.callsites,
            Rules::Own { callsites, .. } => callsites,
        }
    }
}

impl<L> OtelGuard<L> {
    fn rules(&self) -> &Rules {
        self.rules.get_or_init(|| Rules::from_env(None))
    }

    /// The values of a span, record or event of `meta` (given to the visitor by `record`) as
    /// the inner layer must see them, or `None` when they pass as they are.
    #[inline]
    fn rewritten(
        &self,
        meta: &'static Metadata<'static>,
        record: impl FnOnce(&mut Capture<'_>),
    ) -> Option<Values> {
        let rules = self.rules();
        let info = rules.callsites().get(meta);
        let touched = info.has_masked
            || (info.has_identity && rules.mode() != Mode::Identification)
            || (self.scan_values && !meta.fields().is_empty());
        if !touched {
            return None;
        }
        let mut capture = Capture {
            info: &info,
            rules,
            scan_values: self.scan_values,
            values: SmallVec::new(),
            changed: false,
        };
        record(&mut capture);
        capture.changed.then_some(capture.values)
    }
}

/// A record's values, rebuilt.
type Values = SmallVec<[(Field, Captured); 8]>;

/// A value as the inner layer is given it again.
enum Captured {
    Str(Box<str>),
    Debug(DisplayValue<Box<str>>),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    Bytes(Box<[u8]>),
    Error(Box<dyn Error + Send + Sync + 'static>),
}

impl Captured {
    fn as_value(&self) -> &dyn Value {
        match self {
            Captured::Str(v) => v,
            Captured::Debug(v) => v,
            Captured::I64(v) => v,
            Captured::U64(v) => v,
            Captured::I128(v) => v,
            Captured::U128(v) => v,
            Captured::F64(v) => v,
            Captured::Bool(v) => v,
            Captured::Bytes(v) => v,
            Captured::Error(v) => v,
        }
    }
}

/// An error as recorded: its message and its sources' messages, in order.
#[derive(Debug)]
struct CapturedError {
    message: String,
    source: Option<Box<CapturedError>>,
}

impl CapturedError {
    fn of(error: &(dyn Error + 'static)) -> Self {
        Self {
            message: error.to_string(),
            source: error.source().map(|s| Box::new(Self::of(s))),
        }
    }
}

impl fmt::Display for CapturedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for CapturedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn Error + 'static))
    }
}

/// Collects a record's values, each as the inner layer must see it.
struct Capture<'a> {
    info: &'a CallsiteInfo,
    rules: &'a Rules,
    scan_values: bool,
    values: Values,
    changed: bool,
}

impl Capture<'_> {
    /// One value: `text` is its string form, needed only when the mode or the masking changes
    /// it; `as_is` the value itself.
    fn take(&mut self, field: &Field, text: impl FnOnce() -> String, as_is: impl FnOnce() -> Captured) {
        let kind = self.info.kind(field.index()).unwrap_or(FieldKind::Plain);
        let mode = self.rules.mode();
        let value = match kind {
            k if k.is_masked() => {
                self.changed = true;
                Some(Captured::Str(REDACTED.into()))
            }
            FieldKind::Identity | FieldKind::Exists | FieldKind::IdentityExtra { .. }
                if mode != Mode::Identification =>
            {
                self.changed = true;
                apply_mode(mode, field.name(), text(), self.rules.anonymizer())
                    .map(|v| Captured::Str(v.into_boxed_str()))
            }
            _ => Some(as_is()),
        };
        if let Some(value) = value {
            self.values.push((field.clone(), value));
        }
    }

    /// A string value, with the value rule applied when asked for.
    fn take_text(&mut self, field: &Field, value: &str, debug: bool) {
        let scanned = if self.scan_values {
            self.rules.masker().mask_value(value)
        } else {
            Cow::Borrowed(value)
        };
        if matches!(scanned, Cow::Owned(_)) {
            self.changed = true;
        }
        self.take(
            field,
            || scanned.as_ref().to_owned(),
            || {
                let text: Box<str> = scanned.as_ref().into();
                if debug {
                    Captured::Debug(display(text))
                } else {
                    Captured::Str(text)
                }
            },
        );
    }
}

impl Visit for Capture<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.take(field, || value.to_string(), || Captured::F64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.take(field, || value.to_string(), || Captured::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.take(field, || value.to_string(), || Captured::U64(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.take(field, || value.to_string(), || Captured::I128(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.take(field, || value.to_string(), || Captured::U128(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.take(field, || format_bool(value).to_owned(), || Captured::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.take_text(field, value, false);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.take(
            field,
            || String::from_utf8_lossy(value).into_owned(),
            || Captured::Bytes(value.into()),
        );
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.take(
            field,
            || value.to_string(),
            || Captured::Error(Box::new(CapturedError::of(value))),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.take_text(field, &format!("{value:?}"), true);
    }
}

/// Runs `f` on a value set of `meta`'s fields holding `values`. tracing-core builds a value set
/// only from an array: up to 32 values in one of 32 entries, else one of 128 (the padding
/// entries repeat the first field with no value, which visitors never see).
fn rebuild<R>(
    meta: &'static Metadata<'static>,
    values: &[(Field, Captured)],
    f: impl FnOnce(&ValueSet<'_>) -> R,
) -> R {
    let fields = meta.fields();
    match values.len() {
        0..=32 => with_array::<32, R>(fields, values, f),
        _ => with_array::<128, R>(fields, values, f),
    }
}

fn with_array<const N: usize, R>(
    fields: &tracing_core::field::FieldSet,
    values: &[(Field, Captured)],
    f: impl FnOnce(&ValueSet<'_>) -> R,
) -> R {
    let Some(first) = values.first().map(|(field, _)| field) else {
        let none: [(&Field, Option<&dyn Value>); 0] = [];
        return f(&fields.value_set(&none));
    };
    let mut entries: [(&Field, Option<&dyn Value>); N] = [(first, None); N];
    // A callsite has at most 32 fields today; beyond 128 values, the rest are left out rather
    // than passed raw.
    for (entry, (field, value)) in entries.iter_mut().zip(values) {
        *entry = (field, Some(value.as_value()));
    }
    f(&fields.value_set(&entries))
}

impl<S, L> Layer<S> for OtelGuard<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let rules = match subscriber.downcast_ref::<UserLayer>() {
            Some(usr) => Rules::of(&usr.shared),
            None => Rules::from_env(Some(subscriber)),
        };
        let _ = self.rules.set(rules);
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let Some(values) = self.rewritten(meta, |c| attrs.record(c)) else {
            return self.inner.on_new_span(attrs, id, ctx);
        };
        rebuild(meta, &values, |values| {
            let rebuilt = if attrs.is_root() {
                Attributes::new_root(meta, values)
            } else if let Some(parent) = attrs.parent() {
                Attributes::child_of(parent.clone(), meta, values)
            } else {
                Attributes::new(meta, values)
            };
            self.inner.on_new_span(&rebuilt, id, ctx);
        });
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let rewritten = ctx
            .metadata(span)
            .and_then(|meta| Some((meta, self.rewritten(meta, |c| values.record(c))?)));
        let Some((meta, rewritten)) = rewritten else {
            return self.inner.on_record(span, values, ctx);
        };
        rebuild(meta, &rewritten, |rebuilt| {
            self.inner.on_record(span, &Record::new(rebuilt), ctx);
        });
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let Some(values) = self.rewritten(meta, |c| event.record(c)) else {
            return self.inner.on_event(event, ctx);
        };
        rebuild(meta, &values, |values| {
            let rebuilt = if event.is_root() {
                Event::new_child_of(None, meta, values)
            } else if let Some(parent) = event.parent() {
                Event::new_child_of(parent.clone(), meta, values)
            } else {
                Event::new(meta, values)
            };
            self.inner.on_event(&rebuilt, ctx);
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }

    #[allow(unsafe_code)]
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: forwarded as tracing-subscriber's own wrappers do: the inner layer
            // answers for its own type ids (tracing-opentelemetry's `WithContext` among them).
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use super::*;

    /// Records the fields each new span, record and event hands it, as `name=value`.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    struct Fields<'a>(&'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push(format!("{}={value}", field.name()));
        }
    }

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            attrs.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            event.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
    }

    fn seen_through_guard(mode: &'static str, f: impl FnOnce()) -> Vec<String> {
        let seen = Seen::default();
        let usr = crate::builder()
            .with_env_lookup(move |name| match name {
                tracing_usr_core::mode::ENV_MODE => Some(mode.to_owned()),
                crate::ENV_EXPORT => Some("none".to_owned()),
                _ => None,
            })
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(usr)
            .with(otel_guard(seen.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let out = seen.0.lock().unwrap().clone();
        out
    }

    #[test]
    fn identity_follows_the_mode_and_secrets_are_redacted_in_spans_records_and_events() {
        let seen = seen_through_guard("anon", || {
            let span = tracing::info_span!(
                "s",
                usr.id = "u-1",
                usr.token = "t",
                n = 1_i64,
                usr.email = tracing::field::Empty
            );
            span.record("usr.email", "a@b.c");
            tracing::info!(parent: &span, usr.login = "ada", secret = "s", "hi");
        });
        let hashed = tracing_usr_core::anonymize::anonymize("u-1");
        assert_eq!(
            seen,
            [
                format!("usr.id={hashed}"),
                "usr.token=<Redacted>".to_owned(),
                "n=1".to_owned(),
                // `usr.email` is left out in anonymization mode: the record hands nothing.
                "message=hi".to_owned(),
                format!("usr.login={}", tracing_usr_core::anonymize::anonymize("ada")),
                "secret=<Redacted>".to_owned(),
            ]
        );
    }

    #[test]
    fn callsites_with_nothing_to_change_pass_as_they_are() {
        let seen = seen_through_guard("identification", || {
            let _span = tracing::info_span!("s", usr.id = "u-1", route = "/a").entered();
            tracing::info!(route = "/b", "plain");
        });
        assert_eq!(seen, ["usr.id=u-1", "route=/a", "message=plain", "route=/b"]);
    }

    #[test]
    fn a_callsite_of_many_fields_keeps_them_all() {
        let seen = seen_through_guard("identification", || {
            let _span = tracing::info_span!(
                "wide",
                f1 = 1_i64,
                f2 = 2_i64,
                f3 = 3_i64,
                f4 = 4_i64,
                f5 = 5_i64,
                f6 = 6_i64,
                f7 = 7_i64,
                f8 = 8_i64,
                f9 = 9_i64,
                f10 = 10_i64,
                f11 = 11_i64,
                f12 = 12_i64,
                f13 = 13_i64,
                f14 = 14_i64,
                f15 = 15_i64,
                f16 = 16_i64,
                f17 = 17_i64,
                f18 = 18_i64,
                f19 = 19_i64,
                f20 = 20_i64,
                f21 = 21_i64,
                f22 = 22_i64,
                f23 = 23_i64,
                f24 = 24_i64,
                f25 = 25_i64,
                f26 = 26_i64,
                f27 = 27_i64,
                f28 = 28_i64,
                f29 = 29_i64,
                f30 = 30_i64,
                f31 = 31_i64,
                f32 = 32_i64,
                f33 = 33_i64,
                f34 = 34_i64,
                password = "p"
            )
            .entered();
        });
        assert_eq!(seen.len(), 35, "{seen:?}");
        assert_eq!(seen[0], "f1=1");
        assert_eq!(seen[33], "f34=34");
        assert_eq!(seen[34], "password=<Redacted>");
    }
}
