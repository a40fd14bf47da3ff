//! tracing-usr as the user layer of an existing tracing-opentelemetry pipeline, with no
//! collector: the OpenTelemetry SDK's in-memory exporter stands in for opentelemetry-otlp, and the
//! example prints the attributes of each span the pipeline would send.
//!
//! ```sh
//! cargo run --example otel_pipeline
//! DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE=anon cargo run --example otel_pipeline   # usr.login hashed
//! ```
//!
//! The root span (`GET /orders`) carries `usr.id`, `user.id`, `usr.email`, the login-success
//! tags…; its children carry none. tracing-usr exports nothing itself here: the pipeline does.
//! The OpenTelemetry layer is wrapped in `tracing_usr::otel_guard`, so the fields the
//! application declares on its own spans (`db.password` below, `usr.login`) reach it after the
//! masking and the mode (`<Redacted>`; hashed in `anon` mode).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::info_span;
use tracing_subscriber::prelude::*;
use tracing_usr::{EventMetadata, LoginUser, SetUserOptions, User};

fn main() {
    // The application's pipeline, as it was before tracing-usr: swap the in-memory exporter for
    // `opentelemetry_otlp::SpanExporter` (or dd-trace-rs, see examples/dd_trace_rs.rs).
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("otel_pipeline"));

    // tracing-usr joins it: one more layer, either order (feature `opentelemetry`), and the
    // guard around the OpenTelemetry layer.
    tracing_subscriber::registry()
        .with(tracing_usr::layer())
        .with(tracing_usr::otel_guard(otel))
        .init();

    {
        let _request = info_span!("GET /orders", http.route = "/orders").entered();
        let _handler = info_span!("login_handler", usr.login = "alice").entered();
        // The user's identity and the business event, through the SDK: the masking applies
        // before anything reaches the OpenTelemetry span (the SDK path does not change with the
        // mode, as in Datadog's tracers; the `usr.login` field above does).
        tracing_usr::track_login_success(
            "alice",
            LoginUser::from(User::new("u-1001").with_email("alice@example.com")),
            EventMetadata::default(),
            SetUserOptions::default(),
        )
        .expect("alice is not blocked");
        let _query = info_span!("db.query", db.password = "hunter2").entered();
    }

    provider
        .force_flush()
        .expect("the in-memory exporter does not fail");
    let spans = exporter.get_finished_spans().expect("the finished spans");
    for span in spans.iter().rev() {
        let kind = if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            "root"
        } else {
            "child"
        };
        println!("{kind} span {:?}", span.name);
        for kv in &span.attributes {
            if !kv.key.as_str().starts_with("code.") && !kv.key.as_str().starts_with("thread.") {
                println!("    {} = {}", kv.key, kv.value);
            }
        }
    }
    let _ = provider.shutdown();
}
