//! A tracing-opentelemetry + opentelemetry-otlp (HTTP/protobuf) pipeline to the test agent, with
//! tracing-usr in the same registry, and the spans the agent received, decoded.
use std::collections::HashMap;

use base64::Engine as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

use crate::agent::TestAgent;
use crate::support::{builder_with_env, capture_layer, Captured};

/// Which layer the registry gets first.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// `registry().with(tracing_usr).with(otel)`.
    UsrFirst,
    /// `registry().with(otel).with(tracing_usr)`.
    OtelFirst,
}

pub const ORDERS: [Order; 2] = [Order::UsrFirst, Order::OtelFirst];

/// Whether the OpenTelemetry layer is wrapped in `tracing_usr::otel_guard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// `tracing_opentelemetry::layer()` as it is.
    Off,
    /// `otel_guard(layer)`.
    On,
    /// `otel_guard(layer).with_value_masking()`.
    Values,
}

/// One decoded OTLP span: its name, ids, and attributes as text (arrays as `[a, b]`).
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: Vec<u8>,
    pub parent: Vec<u8>,
    pub attrs: HashMap<String, String>,
    /// Keys in the order written (duplicates kept).
    pub keys: Vec<String>,
    /// The span's events: name and attributes as text.
    pub events: Vec<(String, HashMap<String, String>)>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    pub fn is_root(&self) -> bool {
        self.parent.is_empty()
    }
}

pub struct Pipeline {
    pub dispatch: Dispatch,
    pub provider: SdkTracerProvider,
    pub handle: tracing_usr::Handle,
    /// tracing-usr's own events (warnings, notes), from a layer above both.
    pub warnings: Captured,
}

/// tracing-usr (environment `vars`, no exporter of its own) and tracing-opentelemetry exporting
/// to the test agent's OTLP intake, in `order`.
pub fn pipeline(order: Order, vars: &[(&str, &str)]) -> Pipeline {
    pipeline_with(order, builder_with_env(vars))
}

pub fn pipeline_with(order: Order, builder: tracing_usr::Builder) -> Pipeline {
    pipeline_guarded(order, builder, Guard::Off)
}

/// The OpenTelemetry layer in `otel_guard`, boxed (its type names its subscriber).
fn guarded<S>(
    tracer: opentelemetry_sdk::trace::Tracer,
    guard: Guard,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let otel = tracing_usr::otel_guard(tracing_opentelemetry::layer().with_tracer(tracer));
    match guard {
        Guard::Values => Box::new(otel.with_value_masking()),
        _ => Box::new(otel),
    }
}

/// [`pipeline_with`], the OpenTelemetry layer wrapped as `guard` says.
pub fn pipeline_guarded(order: Order, builder: tracing_usr::Builder, guard: Guard) -> Pipeline {
    let agent = TestAgent::get();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", agent.otlp_url()))
        .build()
        .expect("the OTLP span exporter");
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    let tracer = provider.tracer("interop-test");
    let usr = builder.build();
    let handle = usr.handle();
    let warnings = Captured::default();
    // The OTel layer's type names its subscriber, so it is built in each arm.
    let dispatch = match (order, guard) {
        (Order::UsrFirst, Guard::Off) => Dispatch::new(
            tracing_subscriber::registry()
                .with(usr)
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .with(capture_layer(warnings.clone())),
        ),
        (Order::OtelFirst, Guard::Off) => Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .with(usr)
                .with(capture_layer(warnings.clone())),
        ),
        (Order::UsrFirst, guard) => Dispatch::new(
            tracing_subscriber::registry()
                .with(usr)
                .with(guarded(tracer, guard))
                .with(capture_layer(warnings.clone())),
        ),
        (Order::OtelFirst, guard) => Dispatch::new(
            tracing_subscriber::registry()
                .with(guarded(tracer, guard))
                .with(usr)
                .with(capture_layer(warnings.clone())),
        ),
    };
    Pipeline {
        dispatch,
        provider,
        handle,
        warnings,
    }
}

impl Pipeline {
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// Flushes the OTel pipeline and returns every span the agent's OTLP session holds.
    pub fn spans(&self) -> Vec<Span> {
        self.provider.force_flush().expect("flush the OTel pipeline");
        received_spans(TestAgent::get())
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => format!("bool:{b}"),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            format!(
                "[{}]",
                a.values
                    .iter()
                    .map(|v| text(&Some(v.clone())))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        other => format!("{other:?}"),
    }
}

/// Every span of the OTLP requests the agent received (bodies decoded with opentelemetry-proto).
pub fn received_spans(agent: &TestAgent) -> Vec<Span> {
    let requests = agent.otlp("/test/session/requests");
    let mut out = Vec::new();
    for request in requests.as_array().unwrap() {
        if !request["url"].as_str().unwrap_or("").ends_with("/v1/traces") {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(request["body"].as_str().unwrap())
            .unwrap();
        let decoded = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP trace request");
        for span in decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            out.push(Span {
                name: span.name.clone(),
                trace_id: span.trace_id.clone(),
                parent: span.parent_span_id.clone(),
                attrs: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                    .collect(),
                keys: span.attributes.iter().map(|kv| kv.key.clone()).collect(),
                events: span
                    .events
                    .iter()
                    .map(|e| {
                        let attrs = e
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect();
                        (e.name.clone(), attrs)
                    })
                    .collect(),
            });
        }
    }
    out
}

/// The raw text of every OTLP request body the agent received (to check nothing leaked).
pub fn raw_bodies(agent: &TestAgent) -> String {
    let requests = agent.otlp("/test/session/requests");
    let mut all = String::new();
    for request in requests.as_array().unwrap() {
        let body = base64::engine::general_purpose::STANDARD
            .decode(request["body"].as_str().unwrap_or(""))
            .unwrap_or_default();
        all.push_str(&String::from_utf8_lossy(&body));
    }
    all
}

/// Runs `test` once per layer order, each on a fresh pipeline (environment `vars`) inside its own
/// agent session.
pub fn in_each_order(vars: &[(&str, &str)], test: impl Fn(Order, &Pipeline)) {
    let agent = TestAgent::get();
    for order in ORDERS {
        let _session = agent.otlp_session();
        test(order, &pipeline(order, vars));
    }
}
