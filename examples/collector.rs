//! Export to a collector with nothing but the usual environment variables.
//!
//! ```sh
//! # A Datadog agent on localhost:8126 (traces) — log lines go to stdout for its log collection:
//! DD_AGENT_HOST=localhost DD_SERVICE=shop DD_ENV=dev cargo run --example collector
//! # An OTLP/HTTP collector (OpenTelemetry Collector, the Datadog agent's OTLP intake):
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=shop cargo run --example collector
//! # Both at once, or neither (JSON lines on stdout):
//! cargo run --example collector
//! ```
//!
//! The program never waits on the collector: if it is down, the exporter retries in the
//! background and the final line reports what was dropped or failed.

use tracing::{info, info_span};
use tracing_subscriber::prelude::*;
use tracing_usr::{SetUserOptions, User};

fn main() {
    let layer = tracing_usr::layer();
    let handle = layer.handle();
    eprintln!("exporters: {:?}", handle.exporters());
    tracing_subscriber::registry().with(layer).init();

    for (i, user) in ["u-1", "u-2", "u-3"].into_iter().enumerate() {
        let _request = info_span!(
            "request",
            http.method = "GET",
            http.route = "/orders",
            attempt = i
        )
        .entered();
        let _ = tracing_usr::set_user(&User::new(user).with_role("customer"), SetUserOptions::default());
        let _db = info_span!("db.query", db.system = "postgresql").entered();
        info!(rows = 3, "orders loaded");
    }
    {
        let _login = info_span!("request", http.route = "/login").entered();
        let _ = tracing_usr::track_login_success("ada", "u-1", (), SetUserOptions::default());
    }

    if let Err(e) = tracing_usr::shutdown() {
        eprintln!("export did not finish: {e}");
    }
    eprintln!("export stats: {:?}", handle.stats());
}
