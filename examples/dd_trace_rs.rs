//! tracing-usr with Datadog's Rust tracer (`datadog-opentelemetry`, dd-trace-rs): the user tags
//! land in the `meta` of the root span dd-trace-rs sends to the Datadog agent.
//!
//! ```sh
//! cargo run --example dd_trace_rs                                         # no agent needed
//! DD_TRACE_AGENT_URL=http://localhost:8126 cargo run --example dd_trace_rs  # to an agent
//! ```
//!
//! dd-trace-rs reads its configuration from the environment (`DD_TRACE_AGENT_URL`, `DD_SERVICE`…).
//! With no agent, its export fails quietly; the example also keeps a copy of the finished spans
//! in memory and prints the root's attributes as dd-trace-rs turns them into Datadog tags.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor};
use tracing::info_span;
use tracing_subscriber::prelude::*;
use tracing_usr::{EventMetadata, LoginUser, SetUserOptions, User};

fn main() {
    match std::env::var("DD_TRACE_AGENT_URL") {
        Ok(url) => println!("dd-trace-rs sends to {url}"),
        Err(_) => println!("DD_TRACE_AGENT_URL is not set: dd-trace-rs tries its default agent address"),
    }
    let mut config = datadog_opentelemetry::configuration::Config::builder();
    config
        .set_telemetry_enabled(false)
        .set_remote_config_enabled(false);
    let copy = InMemorySpanExporter::default();
    let (provider, _propagator) = datadog_opentelemetry::tracing()
        .with_config(config.build())
        .with_span_processor(SimpleSpanProcessor::new(copy.clone()))
        .init_local();

    tracing_subscriber::registry()
        .with(tracing_usr::layer())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dd_trace_rs")))
        .init();

    {
        let _request = info_span!("POST /login").entered();
        let _handler = info_span!("check_password").entered();
        tracing_usr::track_login_success(
            "alice",
            LoginUser::from(User::new("u-1001").with_email("alice@example.com")),
            EventMetadata::default(),
            SetUserOptions::default(),
        )
        .expect("alice is not blocked");
    }

    let _ = provider.force_flush();
    for span in copy.get_finished_spans().unwrap_or_default() {
        if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
            continue;
        }
        println!("root span {:?}, sent as Datadog meta:", span.name);
        for kv in &span.attributes {
            let key = kv.key.as_str();
            if key.starts_with("usr.")
                || key.starts_with("appsec.")
                || key.starts_with("_dd.")
                || key.starts_with("user.")
            {
                println!("    {key} = {}", kv.value);
            }
        }
    }
    let _ = provider.shutdown();
}
