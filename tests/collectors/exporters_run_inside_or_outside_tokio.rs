//! The pipeline works whether or not the application runs tokio, and an exporter's own
//! `tracing` events never come back into the export.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::info_span;
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::export::{ExportError, Exporter, InMemoryExporter, Record};

use crate::agent::TestAgent;
use crate::support::builder_with_env;

fn token(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn the_datadog_exporter_works_from_inside_a_multi_thread_tokio_runtime() {
    let token = token("dd-tokio");
    let agent = TestAgent::get();
    let layer = builder_with_env(&[("TRACING_USR_DD_LOGS", "none")])
        .with_datadog(DatadogConfig {
            agent: AgentAddress::Http(agent.dd_url()),
            headers: vec![("X-Datadog-Test-Session-Token".into(), token.clone())],
            ..DatadogConfig::default()
        })
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _guard = tracing::dispatcher::set_default(&dispatch);
        for i in 0..10 {
            info_span!("in-tokio", i, usr.id = "u-1").in_scope(|| {});
            tokio::task::yield_now().await;
        }
        // Flushing and shutting down from async code must not panic (no runtime is dropped or
        // blocked on inside this one).
        handle.flush().unwrap();
    });
    drop(runtime);
    handle.shutdown().unwrap();
    assert_eq!(handle.stats().export_errors, 0);
    let traces = agent.dd(&format!("/test/session/traces?test_session_token={token}"));
    assert_eq!(traces.as_array().unwrap().len(), 10);
}

/// An exporter that logs through the application's own subscriber while exporting, as an HTTP
/// client with tracing instrumentation would.
struct Chatty {
    dispatch: Arc<OnceLock<tracing::Dispatch>>,
}

impl Exporter for Chatty {
    fn name(&self) -> &str {
        "chatty"
    }
    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        if let Some(dispatch) = self.dispatch.get() {
            tracing::dispatcher::with_default(dispatch, || {
                let _span = info_span!("http.client.request", usr.id = "exporter").entered();
                tracing::warn!(records = batch.len(), "exporter internals");
            });
        }
        Ok(())
    }
}

#[test]
fn an_exporters_own_telemetry_never_loops_back() {
    let memory = InMemoryExporter::default();
    let slot = Arc::new(OnceLock::new());
    let layer = builder_with_env(&[])
        .with_json_lines(tracing_usr::JsonLines::None)
        .with_exporter(Chatty {
            dispatch: slot.clone(),
        })
        .with_exporter(memory.clone())
        .with_batch_delay(Duration::from_millis(5))
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    slot.set(dispatch.clone()).unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..3 {
            info_span!("request").in_scope(|| tracing::info!("app event"));
            handle.flush().unwrap();
        }
    });
    handle.flush().unwrap();
    let records = memory.records();
    assert_eq!(
        records.len(),
        6,
        "3 spans and 3 logs of the application only: {records:#?}"
    );
    assert!(records.iter().all(|r| r
        .as_log()
        .is_none_or(|l| l.message.as_deref() == Some("app event"))));
    assert!(records
        .iter()
        .all(|r| r.as_span().is_none_or(|s| s.name == "request")));
}
