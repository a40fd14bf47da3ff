//! The pipeline: failing and slow exporters, a full queue, shutdown, partial flushes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_usr::export::{ExportError, ExportErrorKind, Exporter, InMemoryExporter, Record};

use crate::support::{builder_with_env, Harness};

struct Failing(Arc<AtomicUsize>);

impl Exporter for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn export(&mut self, _batch: &[Record]) -> Result<(), ExportError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(ExportError::new(ExportErrorKind::Rejected, "503 from collector"))
    }
}

/// Blocks every export until the gate opens.
struct Gated(Arc<Mutex<()>>, InMemoryExporter);

impl Exporter for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let _open = self.0.lock().unwrap();
        self.1.export(batch)
    }
}

#[test]
fn a_failing_exporter_is_counted_and_does_not_stop_the_others() {
    let calls = Arc::new(AtomicUsize::new(0));
    let h = Harness::new(builder_with_env(&[]).with_exporter(Failing(calls.clone())));
    h.run(|| info_span!("request", usr.id = "u").in_scope(|| {}));
    assert_eq!(h.span("request").meta("usr.id"), Some("u"));
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(h.handle.stats().export_errors >= 1);
}

#[test]
fn a_stalled_exporter_never_blocks_the_application_and_drops_are_counted() {
    let gate = Arc::new(Mutex::new(()));
    let sink = InMemoryExporter::default();
    let closed = gate.lock().unwrap();
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(tracing_usr::JsonLines::None)
        .with_exporter(Gated(gate.clone(), sink.clone()))
        .with_max_queued_records(100)
        .with_batch_delay(Duration::from_millis(1))
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    let started = Instant::now();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..1000 {
            info_span!("request", n = i).in_scope(|| tracing::info!("event"));
        }
    });
    // 2000 records against a stalled exporter and a queue of 100: the loop must not wait.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the application thread stalled"
    );
    let stats = handle.stats();
    assert!(stats.dropped >= 1000, "{stats:?}");
    assert!(stats.queued <= 100, "{stats:?}");
    drop(closed);
    handle.flush().unwrap();
    let stats = handle.stats();
    assert_eq!(
        stats.processed + stats.dropped,
        2000,
        "every record is either exported or counted: {stats:?}"
    );
    assert_eq!(sink.records().len() as u64, stats.processed);
}

#[test]
fn records_after_shutdown_are_dropped_and_counted() {
    let h = Harness::default_env();
    h.run(|| info_span!("before").in_scope(|| {}));
    h.handle.shutdown().unwrap();
    assert_eq!(h.exporter.spans().len(), 1, "shutdown exported what was queued");
    h.run(|| info_span!("after").in_scope(|| {}));
    assert_eq!(h.handle.stats().dropped, 1);
    h.handle.shutdown().unwrap();
}

#[test]
fn dropping_the_subscriber_exports_the_queue_in_the_background() {
    let sink = InMemoryExporter::default();
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(tracing_usr::JsonLines::None)
        .with_exporter(sink.clone())
        .with_batch_delay(Duration::from_secs(60))
        .build();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
    tracing::subscriber::with_default(subscriber, || info_span!("request").in_scope(|| {}));
    // The batch delay is a minute: only the close on drop gets the span out this fast.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.spans().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sink.spans().len(), 1);
}

#[test]
fn long_traces_are_flushed_in_parts_without_losing_spans() {
    let h = Harness::new(builder_with_env(&[]).with_max_spans_per_trace(10));
    h.run(|| {
        let _root = info_span!("request", usr.id = "u").entered();
        for i in 0..35 {
            info_span!("step", i).in_scope(|| {});
        }
    });
    let spans = h.spans();
    assert_eq!(spans.len(), 36);
    assert_eq!(spans.iter().filter(|s| s.meta("usr.id").is_some()).count(), 1);
}

#[test]
fn the_guard_shuts_down_on_drop() {
    let h = Harness::default_env();
    {
        let _guard = h.handle.clone().shutdown_guard();
        h.run(|| info_span!("request").in_scope(|| {}));
    }
    assert_eq!(h.exporter.spans().len(), 1);
    h.run(|| info_span!("late").in_scope(|| {}));
    assert_eq!(h.handle.stats().dropped, 1);
}

struct Panicking;

impl Exporter for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    fn export(&mut self, _batch: &[Record]) -> Result<(), ExportError> {
        panic!("a bug in a custom exporter");
    }
}

#[test]
fn a_panicking_exporter_is_counted_and_the_others_keep_exporting() {
    let h = Harness::new(builder_with_env(&[]).with_exporter(Panicking));
    for i in 0..3 {
        h.run(|| info_span!("request", i).in_scope(|| {}));
        h.handle.flush().unwrap();
    }
    assert_eq!(h.spans().len(), 3, "the in-memory exporter still got every span");
    assert_eq!(h.handle.stats().export_errors, 3);
}
