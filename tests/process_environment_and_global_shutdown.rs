//! `tracing_usr::layer()` reads the real process environment, and `tracing_usr::shutdown()`
//! flushes every layer. Kept in its own test binary with a single test: it changes the process
//! environment and shuts down every layer of the process.
use std::time::Duration;

use tracing_subscriber::prelude::*;
use tracing_usr::export::InMemoryExporter;
use tracing_usr::Mode;

#[test]
fn layer_reads_the_process_environment_and_shutdown_flushes_it() {
    let path = std::env::temp_dir().join(format!("tracing-usr-process-env-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // SAFETY of the test: this binary has exactly one test, so no other thread reads the
    // environment concurrently.
    std::env::set_var("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon");
    std::env::set_var("TRACING_USR_EXPORT", format!("file:{}", path.display()));

    let memory = InMemoryExporter::default();
    let layer = tracing_usr::layer();
    assert_eq!(layer.mode(), Mode::Anonymization);
    let second = tracing_usr::builder()
        .with_exporter(memory.clone())
        .with_json_lines(tracing_usr::JsonLines::None)
        .with_batch_delay(Duration::from_secs(60))
        .build();
    // Two applications' subscribers, both kept alive (dropping one would flush it by itself).
    let dispatches: Vec<tracing::Dispatch> = [layer, second]
        .into_iter()
        .map(|l| tracing::Dispatch::new(tracing_subscriber::registry().with(l)))
        .collect();
    for dispatch in &dispatches {
        tracing::dispatcher::with_default(dispatch, || {
            let _root = tracing::info_span!("request", usr.id = "user-1").entered();
        });
    }
    assert_eq!(
        memory.spans().len(),
        0,
        "the minute-long batch delay holds the record back"
    );
    tracing_usr::shutdown().unwrap();
    // …and shutdown exported both layers' queues.
    assert_eq!(memory.spans().len(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("anon_c6c289e49e9c05b2145860387b73bcb1"), "{text}");
    assert!(!text.contains("user-1"));
    std::fs::remove_file(&path).unwrap();
    drop(dispatches);
}
