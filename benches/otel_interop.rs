//! What tracing-usr adds to a tracing-opentelemetry pipeline: the identity request of
//! `benches/request.rs` (5 spans, 2 events, `usr.*` fields, a late `Span::record`, an SDK
//! `identify`) under
//!
//! 1. `otel_alone`: registry + tracing-opentelemetry (the OpenTelemetry SDK, a simple span
//!    processor and an exporter that discards: the pipeline's own cost, not the network's);
//!    `otel_attrs`: the same with a layer that reads nothing and, at each root's close, writes
//!    the eight attributes below as constants (module [`attrs`]): the bare price of putting
//!    them on the root's OpenTelemetry span, with no identity read at all;
//! 2. `otel_floor`: the same with a hand-written layer (module [`floor`] below) that does only
//!    what puts this request's user attributes on the root's OpenTelemetry span: the same eight
//!    attributes tracing-usr writes, once, at the root's close — no mode, masking, events,
//!    detection or export record: what reading and writing them costs done by hand;
//! 3. `otel_usr_first`: the same with tracing-usr added before it
//!    (`registry().with(usr).with(otel)`: the root's tags written once, at its close);
//! 4. `otel_usr_second`: tracing-usr added after it (tags recorded while the root is entered
//!    written at its last exit);
//!    `otel_usr_guarded`: rung 3 with the OpenTelemetry layer in `tracing_usr::otel_guard`
//!    (identification mode: the request's callsites have no masked field, so this is the
//!    guard's look-up on every callback);
//! 5. `otlp_alone`, `otlp_floor`, `otlp_usr_first`: rungs 1–3 with what a real exporter does
//!    too: a batch span processor and an exporter that groups and encodes the spans as
//!    opentelemetry-otlp's HTTP/protobuf exporter does before the network (the bytes are
//!    dropped; the run checks that every span was encoded).
//!
//! tracing-usr's own export is off in both (the embedded default stops when it finds the
//! tracing-opentelemetry layer). The goal: tracing-usr adds at most 10 % to `otel_alone`.
//!
//! Run: `cargo bench --bench otel_interop`; `bash benches/otel_interop_instructions.sh` counts
//! instructions per request with callgrind and prints the ratios to `otel_alone`.
//!
//! Last run (x86_64; `bash benches/otel_interop_instructions.sh 1000`):
//!
//! | rung | instructions / request | ratio |
//! |---|---|---|
//! | otel_alone | 52.1 k | 1.00× |
//! | otel_attrs | 56.4 k | 1.08× |
//! | otel_floor | 63.1 k | 1.21× |
//! | otel_usr_first | 67.5 k | 1.29× |
//! | otel_usr_second | 70.1 k | 1.34× |
//! | otel_usr_guarded | 68.1 k | 1.31× |
//! | otlp_alone | 187.3 k | 1.00× |
//! | otlp_floor | 218.6 k | 1.17× |
//! | otlp_usr_first | 220.2 k | 1.18× |
//!
//! (The `otlp_` rungs vary by ~0.5 k between runs: the batch processor's thread.) The guard
//! costs 0.6 k instructions per request when it rewrites nothing: a callsite look-up per
//! callback.
//!
//! The goal is not met, and cannot be by any layer that writes these attributes: writing them
//! alone, as constants, with nothing read (`otel_attrs`), adds 8.2 %, which leaves 0.9 k
//! instructions (1.8 %) for reading the identity off five spans and an SDK call; the floor,
//! which does only that, already adds 21 % (17 % with an exporter's work, where tracing-usr
//! is within 1.6 k instructions of it). Of the 15.3 k that tracing-usr adds when it comes first
//! (callgrind, per request):
//!
//! * ~4.3 k (`otel_attrs`) is the OpenTelemetry SDK's own work on the 8 attributes tracing-usr
//!   adds to the root (the `usr.*` tags the root's own fields do not already give, the
//!   collection mode, and the semantic-convention `user.*` / `enduser.id` beside them):
//!   finding the root's context, `set_attribute` behind the span's mutex and the growth of its
//!   attribute list, and dropping them after export. The floor pays it too.
//! * ~5.4 k is tracing-usr's identity work on the request's five spans (new spans, the `usr.*`
//!   fields lifted to the root, the late `Span::record`, `identify`), with the mode and masking
//!   applied, as in the `layer_identity` rung of `benches/request.rs`.
//! * ~3.4 k is building the attributes from the root's facts (one shared string per value,
//!   constants without allocation) and ~1.2 k deriving the facts at the root's close; the rest
//!   is the close itself (the root's state dropped, detection's close work).
//!
//! Holding the attributes on the stack instead of in a `Vec` was tried and measured worse
//! (68.9 k: the list is moved by value through the close). When tracing-opentelemetry comes
//! first, the root's enters and exits are counted (its state is created with it) and the three
//! identity writes of the request reach the span once, at the root's last exit; writing each as
//! it happened cost 75.7 k (1.45×).

#[path = "support/common.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use prost::Message as _;
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::User;

use common::{identity_request, identity_request_with, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An exporter that drops what it is given.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        drop(black_box(batch));
        std::future::ready(Ok(()))
    }
}

/// An exporter that does what opentelemetry-otlp's HTTP/protobuf exporter does before the
/// network: the spans grouped into an OTLP request and encoded; the bytes are dropped.
/// Counts the spans it is given, so that a run can check that the batch processor dropped none.
#[derive(Debug)]
struct EncodeOtlp(ResourceAttributesWithSchema);

/// Spans [`EncodeOtlp`] has encoded.
static ENCODED: AtomicUsize = AtomicUsize::new(0);

impl SpanExporter for EncodeOtlp {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        ENCODED.fetch_add(batch.len(), Ordering::Relaxed);
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.0),
        };
        drop(black_box(request.encode_to_vec()));
        std::future::ready(Ok(()))
    }
}

const RUNGS: [&str; 9] = [
    "otel_alone",
    "otel_attrs",
    "otel_floor",
    "otel_usr_first",
    "otel_usr_second",
    "otel_usr_guarded",
    "otlp_alone",
    "otlp_floor",
    "otlp_usr_first",
];

fn dispatch(rung: &str) -> (Dispatch, SdkTracerProvider) {
    let provider = match rung.strip_prefix("otlp_") {
        Some(_) => {
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("bench")
                .build();
            // A queue that holds a whole run: none of its spans is dropped.
            let processor = BatchSpanProcessor::builder(EncodeOtlp((&resource).into()))
                .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(1 << 20).build())
                .build();
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource)
                .build()
        }
        None => SdkTracerProvider::builder().with_simple_exporter(Discard).build(),
    };
    let tracer = provider.tracer("bench");
    let usr = || tracing_usr::builder().with_env_lookup(|_| None).build();
    let dispatch = match rung {
        "otel_alone" | "otlp_alone" => Dispatch::new(
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_attrs" => Dispatch::new(
            tracing_subscriber::registry()
                .with(attrs::Attrs::default())
                .with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_floor" | "otlp_floor" => Dispatch::new(
            tracing_subscriber::registry()
                .with(floor::Floor::default())
                .with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_usr_first" | "otlp_usr_first" => Dispatch::new(
            tracing_subscriber::registry()
                .with(usr())
                .with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_usr_second" => Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .with(usr()),
        ),
        "otel_usr_guarded" => Dispatch::new(tracing_subscriber::registry().with(usr()).with(
            tracing_usr::otel_guard(tracing_opentelemetry::layer().with_tracer(tracer)),
        )),
        other => panic!("unknown rung {other}"),
    };
    (dispatch, provider)
}

/// The request of `rung`: the floor's own `identify` in place of the SDK call (nothing in
/// place of it for `otel_attrs`).
fn request(rung: &str, user: &User) {
    if rung == "otel_attrs" {
        identity_request_with(user, |_| {});
    } else if rung.ends_with("_floor") {
        identity_request_with(user, floor::identify);
    } else {
        identity_request(user);
    }
}

fn bench(c: &mut Criterion) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let mut group = c.benchmark_group("otel_interop");
    for rung in RUNGS {
        let (dispatch, _provider) = dispatch(rung);
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(rung, |b| b.iter(|| request(rung, black_box(&user))));
        });
    }
    group.finish();
}

/// `TRACING_USR_BENCH=instructions:<rung>:<requests>` (for `benches/otel_interop_instructions.sh`).
fn instructions(rung: &str, n: u64) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let (dispatch, provider) = dispatch(rung);
    tracing::dispatcher::with_default(&dispatch, || {
        // The first request settles the layer order; it is part of the set-up.
        request(rung, &user);
        for _ in 0..n {
            request(rung, black_box(&user));
        }
    });
    let _ = provider.shutdown();
    if rung.starts_with("otlp_") {
        let spans = (n as usize + 1) * 5;
        assert_eq!(
            ENCODED.load(Ordering::Relaxed),
            spans,
            "every span of the run encoded"
        );
    }
}

fn main() {
    common::main_with(instructions, bench);
}

/// The floor: the least a layer can do to put this request's user attributes on the root's
/// OpenTelemetry span, written by hand for this workload — the `usr.*` values kept as they come
/// (no mode, no masking, no events, no detection, no export record), and the same attributes
/// as tracing-usr writes, once, at the root's close (the layer added first). What tracing-usr
/// costs above this rung is its own work; what this rung costs above `otel_alone` is the
/// attributes' price in any implementation.
mod floor {
    use std::sync::OnceLock;

    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::{Array, KeyValue, StringValue, Value};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Dispatch, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::{LookupSpan, Registry, SpanRef};
    use tracing_usr::User;

    /// What a root collected: the SDK user's tags, and the `usr.*` fields of its spans (key,
    /// value, recorded on the root itself).
    #[derive(Default)]
    struct Collected {
        sdk: Vec<(&'static str, String)>,
        fields: Vec<(&'static str, String, bool)>,
    }

    #[derive(Default)]
    struct Usr(Vec<(&'static str, String)>);

    impl Visit for Usr {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name().starts_with("usr.") {
                self.0.push((field.name(), value.to_owned()));
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    #[derive(Default)]
    pub struct Floor {
        dispatch: OnceLock<tracing_core::dispatcher::WeakDispatch>,
    }

    fn has_usr(meta: &tracing::Metadata<'_>) -> bool {
        meta.fields().iter().any(|f| f.name().starts_with("usr."))
    }

    /// Adds `usr` to the root of `span`: the SDK user's tags (`sdk`), else fields (a later
    /// value of a key replaces the earlier one).
    fn collect<R: for<'a> LookupSpan<'a>>(span: SpanRef<'_, R>, usr: Usr, sdk: bool) {
        if usr.0.is_empty() {
            return;
        }
        let own = span.parent().is_none();
        let Some(root) = span.scope().last() else { return };
        let mut ext = root.extensions_mut();
        if ext.get_mut::<Collected>().is_none() {
            ext.insert(Collected::default());
        }
        let Some(collected) = ext.get_mut::<Collected>() else {
            return;
        };
        if sdk {
            collected.sdk = usr.0;
            return;
        }
        for (k, v) in usr.0 {
            collected.fields.retain(|(key, _, _)| *key != k);
            collected.fields.push((k, v, own));
        }
    }

    /// The SDK call of this rung: the user's tags on the current span's root.
    pub fn identify(user: &User) {
        tracing::dispatcher::get_default(|dispatch| {
            let Some(registry) = dispatch.downcast_ref::<Registry>() else {
                return;
            };
            let Some(id) = registry.current_span().id().cloned() else {
                return;
            };
            let mut usr = Usr::default();
            usr.0.push(("usr.id", user.id().to_owned()));
            if let Some(email) = user.email() {
                usr.0.push(("usr.email", email.to_owned()));
            }
            if let Some(role) = user.role() {
                usr.0.push(("usr.role", role.to_owned()));
            }
            if let Some(span) = registry.span(&id) {
                collect(span, usr, true);
            }
        });
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Floor {
        fn on_register_dispatch(&self, subscriber: &Dispatch) {
            let _ = self.dispatch.set(subscriber.downgrade());
        }

        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if has_usr(attrs.metadata()) {
                let mut usr = Usr::default();
                attrs.record(&mut usr);
                if let Some(span) = ctx.span(id) {
                    collect(span, usr, false);
                }
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let mut usr = Usr::default();
            values.record(&mut usr);
            if let Some(span) = ctx.span(id) {
                collect(span, usr, false);
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(&id) else { return };
            let Some(collected) = span.extensions_mut().remove::<Collected>() else {
                return;
            };
            drop(span);
            let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade()) else {
                return;
            };
            let Some(cx) = tracing_opentelemetry::get_otel_context(&id, &dispatch) else {
                return;
            };
            // The SDK user wins over the fields (tracing-usr's rule); the root's own fields are
            // on the span already; a field-path id is kept as the private copy.
            let Collected { sdk, fields } = collected;
            let own = |k: &str, v: &str| {
                fields
                    .iter()
                    .any(|(key, value, own)| *own && *key == k && value == v)
            };
            let mut attributes = Vec::with_capacity(12);
            for (key, value) in sdk {
                let skip = own(key, &value);
                let value = StringValue::from(value);
                match key {
                    "usr.id" => {
                        attributes.push(KeyValue::new("user.id", value.clone()));
                        attributes.push(KeyValue::new("enduser.id", value.clone()));
                    }
                    "usr.email" => attributes.push(KeyValue::new("user.email", value.clone())),
                    "usr.role" => attributes.push(KeyValue::new(
                        "user.roles",
                        Value::Array(Array::String(vec![value.clone()])),
                    )),
                    _ => {}
                }
                if !skip {
                    attributes.push(KeyValue::new(key, value));
                }
            }
            if let Some((_, id, _)) = fields.into_iter().find(|(k, _, _)| *k == "usr.id") {
                attributes.push(KeyValue::new("_dd.appsec.usr.id", id));
            }
            attributes.push(KeyValue::new("_dd.appsec.user.collection_mode", "sdk"));
            cx.span().set_attributes(attributes);
        }
    }
}

/// The bare price of the attributes: a layer that reads nothing and, at each root's close,
/// writes the eight attributes tracing-usr and the floor write for this request, as constants
/// (no allocation). Any layer that puts them on the root's OpenTelemetry span pays at least
/// this: a look-up at each span's close to find the root, the root's OpenTelemetry context,
/// and the SDK's own work on the attributes (stored behind the span's mutex, dropped after
/// export).
mod attrs {
    use std::sync::OnceLock;

    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::{Array, KeyValue, StringValue, Value};
    use tracing::span::Id;
    use tracing::{Dispatch, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Default)]
    pub struct Attrs {
        dispatch: OnceLock<tracing_core::dispatcher::WeakDispatch>,
        attributes: OnceLock<Vec<KeyValue>>,
    }

    fn attributes() -> Vec<KeyValue> {
        let id = StringValue::from("u-1");
        let email = StringValue::from("ada@example.com");
        vec![
            KeyValue::new("user.id", id.clone()),
            KeyValue::new("enduser.id", id.clone()),
            KeyValue::new("user.email", email.clone()),
            KeyValue::new("usr.email", email),
            KeyValue::new(
                "user.roles",
                Value::Array(Array::String(vec![StringValue::from("admin")])),
            ),
            KeyValue::new("usr.role", "admin"),
            KeyValue::new("_dd.appsec.usr.id", id),
            KeyValue::new("_dd.appsec.user.collection_mode", "sdk"),
        ]
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Attrs {
        fn on_register_dispatch(&self, subscriber: &Dispatch) {
            let _ = self.dispatch.set(subscriber.downgrade());
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            if ctx.span(&id).is_none_or(|span| span.parent().is_some()) {
                return;
            }
            let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade()) else {
                return;
            };
            let Some(cx) = tracing_opentelemetry::get_otel_context(&id, &dispatch) else {
                return;
            };
            let attributes = self.attributes.get_or_init(attributes);
            cx.span().set_attributes(attributes.iter().cloned());
        }
    }
}
