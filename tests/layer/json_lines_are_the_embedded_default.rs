//! The JSON-lines exporter: selected by TRACING_USR_EXPORT or the builder, one record per line,
//! with the fixed field names.
use std::path::PathBuf;

use serde_json::Value;
use tracing::{info, info_span};

use crate::support::builder_with_env;

fn temp_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tracing-usr-{}-{name}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn run_with(builder: tracing_usr::Builder) {
    let layer = builder.build();
    let handle = layer.handle();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
    tracing::subscriber::with_default(subscriber, || {
        let _root = info_span!("request", http.route = "/orders", latency_ms = 1.5).entered();
        let _child = info_span!("auth", usr.id = "u-1", usr.email = "a@b.c").entered();
        info!(rows = 3, ok = true, "loaded");
    });
    handle.shutdown().unwrap();
}

fn lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn tracing_usr_export_file_writes_one_record_per_line() {
    let path = temp_file("env");
    let var = format!("file:{}", path.display());
    run_with(builder_with_env(&[("TRACING_USR_EXPORT", &var)]));
    let records = lines(&path);
    assert_eq!(records.len(), 3, "{records:#?}");
    let log = records.iter().find(|r| r["type"] == "log").unwrap();
    assert_eq!(log["message"], "loaded");
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["fields"]["rows"], 3);
    assert_eq!(log["fields"]["ok"], true);
    assert_eq!(log["usr"]["id"], "u-1");
    let root = records.iter().find(|r| r["name"] == "request").unwrap();
    let child = records.iter().find(|r| r["name"] == "auth").unwrap();
    for span in [root, child] {
        for key in [
            "trace_id",
            "span_id",
            "parent_id",
            "name",
            "start",
            "duration",
            "error",
            "meta",
            "metrics",
        ] {
            assert!(span.get(key).is_some(), "{key} missing in {span}");
        }
    }
    assert_eq!(root["parent_id"], Value::Null);
    assert_eq!(child["parent_id"], root["span_id"]);
    assert_eq!(child["trace_id"], root["trace_id"]);
    assert_eq!(log["trace_id"], root["trace_id"]);
    assert_eq!(log["span_id"], child["span_id"]);
    assert_eq!(root["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(root["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(root["meta"]["usr.id"], "u-1");
    assert_eq!(root["meta"]["http.route"], "/orders");
    assert_eq!(root["metrics"]["latency_ms"], 1.5);
    assert!(child["meta"].get("usr.id").is_none());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_builder_overrides_the_variable_and_none_writes_nothing() {
    let path = temp_file("none");
    let var = format!("file:{}", path.display());
    run_with(builder_with_env(&[("TRACING_USR_EXPORT", &var)]).with_json_lines(tracing_usr::JsonLines::None));
    assert!(!path.exists());
    run_with(builder_with_env(&[]).with_json_lines(tracing_usr::JsonLines::File(path.clone())));
    assert_eq!(lines(&path).len(), 3);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_unopenable_file_falls_back_to_stdout_with_a_warning() {
    use tracing_subscriber::prelude::*;
    let layer = builder_with_env(&[("TRACING_USR_EXPORT", "file:/nonexistent-dir/x/y.jsonl")]).build();
    assert_eq!(layer.handle().exporters(), vec!["json-lines".to_owned()]);
    let warnings = crate::support::Captured::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(layer)
            .with(crate::support::capture_layer(warnings.clone())),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while warnings.events.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let events = warnings.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].1.contains("/nonexistent-dir/x/y.jsonl") && events[0].1.contains("falling back to stdout")
    );
    drop(dispatch);
}

#[test]
fn an_invalid_export_value_falls_back_to_stdout() {
    let layer = builder_with_env(&[("TRACING_USR_EXPORT", "kafka://nope")]).build();
    assert_eq!(layer.handle().exporters(), vec!["json-lines".to_owned()]);
    let layer = builder_with_env(&[("TRACING_USR_EXPORT", "none")]).build();
    assert!(layer.handle().exporters().is_empty());
}
