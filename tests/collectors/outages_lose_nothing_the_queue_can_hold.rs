//! Collector outages, with the OTLP exporter and a local collector the test switches between
//! down (connection refused), an error status, healthy, and hung: what the queue can hold
//! arrives once the collector recovers, none of it twice; whatever is lost is counted exactly,
//! per record and by reason; a hung collector is warned about and shutdown keeps its deadline;
//! the application thread never waits. Short retry intervals keep the suite fast.
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tracing_subscriber::prelude::*;
use tracing_usr::export::http::RetryPolicy;
use tracing_usr::export::otlp::OtlpConfig;
use tracing_usr::export::spool::SpoolConfig;
use tracing_usr::export::{ExporterStats, PipelineStats};

use crate::support::http_head::read_request;
use crate::support::{builder_with_env, capture_layer, Captured};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Not listening: connections are refused.
    Down,
    /// Every request gets this status and body.
    Answer(u16, &'static str),
    /// Requests are accepted and decoded.
    Healthy,
    /// Requests are read and never answered.
    Hung,
}

/// A local OTLP/HTTP collector: it keeps the span ids, log numbers and trace ids it accepted.
struct Collector {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    accepted: Arc<Mutex<Accepted>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Accepted {
    /// Span id → how many times it arrived.
    spans: HashMap<u64, usize>,
    /// Trace id → spans received of it.
    traces: HashMap<Vec<u8>, usize>,
    /// The `n` attribute of each log record → how many times it arrived.
    logs: HashMap<i64, usize>,
    /// Answers given with a status other than 200.
    errors: usize,
}

impl Collector {
    fn start(mode: Mode) -> Collector {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let collector = Collector {
            port,
            mode: Arc::new(Mutex::new(mode)),
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (mode, accepted, stop) = (
            collector.mode.clone(),
            collector.accepted.clone(),
            collector.stop.clone(),
        );
        std::thread::spawn(move || listen(port, &mode, &accepted, &stop));
        collector
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn otlp(&self, retry: RetryPolicy, timeout: Duration) -> OtlpConfig {
        OtlpConfig {
            traces_endpoint: Some(format!("http://127.0.0.1:{}/v1/traces", self.port)),
            logs_endpoint: Some(format!("http://127.0.0.1:{}/v1/logs", self.port)),
            timeout,
            retry,
            ..OtlpConfig::default()
        }
    }

    /// (distinct spans, distinct logs, records that arrived more than once).
    fn received(&self) -> (u64, u64, usize) {
        let a = self.accepted.lock().unwrap();
        let twice = a
            .spans
            .values()
            .chain(a.logs.values())
            .filter(|n| **n > 1)
            .count();
        (a.spans.len() as u64, a.logs.len() as u64, twice)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Listens on `port` while the mode is not `Down` (re-binding the same port when it comes
/// back up), until `stop`.
fn listen(port: u16, mode: &Arc<Mutex<Mode>>, accepted: &Arc<Mutex<Accepted>>, stop: &Arc<AtomicBool>) {
    let mut listener: Option<TcpListener> = None;
    while !stop.load(Ordering::Relaxed) {
        if *mode.lock().unwrap() == Mode::Down {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            listener = TcpListener::bind(("127.0.0.1", port)).ok();
            if let Some(l) = &listener {
                l.set_nonblocking(true).unwrap();
            }
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((stream, _))) => {
                let (mode, accepted, stop) = (mode.clone(), accepted.clone(), stop.clone());
                std::thread::spawn(move || serve(stream, &mode, &accepted, &stop));
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn serve(stream: TcpStream, mode: &Mutex<Mode>, accepted: &Mutex<Accepted>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let Some((path, body)) = read_request(&mut reader) else {
            return;
        };
        let now = *mode.lock().unwrap();
        let (status, answer) = match now {
            Mode::Down => return,
            Mode::Hung => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Mode::Answer(status, answer) => {
                accepted.lock().unwrap().errors += 1;
                (status, answer)
            }
            Mode::Healthy => {
                keep(&path, &body, &mut accepted.lock().unwrap());
                (200, "")
            }
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} Status\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
    }
}

fn keep(path: &str, body: &[u8], accepted: &mut Accepted) {
    if path == "/v1/traces" {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace request");
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let id = u64::from_be_bytes(span.span_id.as_slice().try_into().unwrap());
            *accepted.spans.entry(id).or_default() += 1;
            *accepted.traces.entry(span.trace_id.clone()).or_default() += 1;
        }
    } else {
        let request = ExportLogsServiceRequest::decode(body).expect("an OTLP logs request");
        for log in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let n = log.attributes.iter().find(|kv| kv.key == "n").and_then(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    Value::IntValue(n) => Some(*n),
                    _ => None,
                }
            });
            *accepted.logs.entry(n.expect("the log's n")).or_default() += 1;
        }
    }
}

/// The export warnings (target `tracing_usr::export`), emitted on the export threads, which
/// have no default subscriber of their own: a global one captures them for this test binary.
fn export_warnings() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture_layer(captured.clone())),
        )
        .expect("no other global subscriber in the collectors tests");
        captured
    })
}

fn warned(text: &str) -> bool {
    export_warnings()
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|(target, event)| target == "tracing_usr::export" && event.contains(text))
}

fn quick_retries(max_elapsed: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_elapsed,
    }
}

struct App {
    dispatch: tracing::Dispatch,
    handle: tracing_usr::Handle,
}

fn app(config: OtlpConfig, max_queued: usize, shutdown: Duration) -> App {
    app_with(builder_with_env(&[]), config, max_queued, shutdown)
}

fn app_with(builder: tracing_usr::Builder, config: OtlpConfig, max_queued: usize, shutdown: Duration) -> App {
    export_warnings();
    let layer = builder
        .with_otlp(config)
        .with_max_queued_records(max_queued)
        .with_batch_delay(Duration::from_millis(10))
        .with_export_report_interval(Duration::from_millis(100))
        .with_shutdown_timeout(shutdown)
        .build();
    let handle = layer.handle();
    App {
        dispatch: tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    }
}

impl App {
    /// `n` requests of two spans and one log record each, numbered from `from`; returns the
    /// time per request on the application thread.
    fn requests(&self, from: u64, n: u64) -> Duration {
        let started = Instant::now();
        tracing::dispatcher::with_default(&self.dispatch, || {
            for i in from..from + n {
                tracing::info_span!("request", usr.id = "u-1").in_scope(|| {
                    tracing::info_span!("db").in_scope(|| {});
                    tracing::info!(n = i, "work");
                });
            }
        });
        started.elapsed() / n as u32
    }

    /// Waits (at most 20 s) until nothing is queued or in flight.
    fn settled(&self) -> PipelineStats {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.handle.stats();
            let otlp = &stats.exporters[0];
            if stats.queued == 0 && otlp.in_flight_spans + otlp.in_flight_logs == 0 {
                return stats;
            }
            assert!(Instant::now() < deadline, "the export never settled: {stats:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Checks, for spans and logs, `offered = delivered + lost + dropped` (nothing queued or in
/// flight), and returns the OTLP exporter's counters.
fn balanced(stats: &PipelineStats) -> &ExporterStats {
    let otlp = &stats.exporters[0];
    assert_eq!(otlp.name, "otlp");
    for (kind, outcomes, in_flight) in [
        ("spans", &stats.spans, otlp.in_flight_spans),
        ("logs", &stats.logs, otlp.in_flight_logs),
    ] {
        let done = if kind == "spans" { otlp.spans } else { otlp.logs };
        assert_eq!(outcomes.queued + in_flight, 0, "{kind}: {stats:#?}");
        assert_eq!(
            outcomes.offered + outcomes.restored,
            done.total()
                + outcomes.dropped_queue_full
                + outcomes.dropped_closed
                + outcomes.dropped_spool_full
                + outcomes.spooled,
            "{kind}: every record is accounted for: {stats:#?}"
        );
    }
    otlp
}

#[test]
fn an_outage_the_queue_holds_loses_nothing_and_sends_nothing_twice() {
    let healthy = Collector::start(Mode::Healthy);
    let app_healthy = app(
        healthy.otlp(quick_retries(Duration::from_secs(30)), Duration::from_secs(2)),
        10_000,
        Duration::from_secs(5),
    );
    let per_request_healthy = app_healthy.requests(0, 200);
    app_healthy.handle.flush().unwrap();

    let collector = Collector::start(Mode::Down);
    let app = app(
        collector.otlp(quick_retries(Duration::from_secs(30)), Duration::from_secs(2)),
        10_000,
        Duration::from_secs(5),
    );
    let per_request_outage = app.requests(0, 200);
    std::thread::sleep(Duration::from_millis(300));
    collector.set(Mode::Answer(503, "unavailable"));
    app.requests(200, 100);
    std::thread::sleep(Duration::from_millis(300));
    collector.set(Mode::Healthy);
    app.handle.flush().unwrap();

    println!("time per request on the application thread: healthy {per_request_healthy:?}, collector down {per_request_outage:?}");
    assert!(
        collector.accepted.lock().unwrap().errors > 0,
        "the 503s were seen and retried"
    );
    assert_eq!(
        collector.received(),
        (600, 300, 0),
        "every record once, none twice"
    );
    let stats = app.handle.stats();
    let otlp = balanced(&stats);
    assert_eq!(
        (otlp.spans.delivered, otlp.logs.delivered),
        (600, 300),
        "{stats:#?}"
    );
    assert_eq!(stats.dropped, 0);
    assert!(
        per_request_outage < Duration::from_millis(5),
        "the application thread waited on the collector: {per_request_outage:?} per request"
    );
}

#[test]
fn an_outage_longer_than_the_retry_time_is_counted_as_retry_exhausted() {
    let collector = Collector::start(Mode::Down);
    let app = app(
        collector.otlp(quick_retries(Duration::from_millis(200)), Duration::from_secs(2)),
        10_000,
        Duration::from_secs(5),
    );
    app.requests(0, 100);
    // Every request of the outage gives up after 200 ms.
    app.settled();
    collector.set(Mode::Healthy);
    app.requests(100, 50);
    app.handle.flush().unwrap();
    let stats = app.settled();
    let otlp = balanced(&stats);
    assert_eq!(collector.received(), (100, 50, 0));
    assert_eq!(
        (otlp.spans.delivered, otlp.logs.delivered),
        (100, 50),
        "{stats:#?}"
    );
    assert_eq!(
        (otlp.spans.retry_exhausted, otlp.logs.retry_exhausted),
        (200, 100),
        "{stats:#?}"
    );
    assert_eq!(otlp.spans.lost(), otlp.spans.retry_exhausted, "no other reason");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !warned("retry_exhausted=300") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(warned("records lost"), "the loss is reported, in records");
}

#[test]
fn a_queue_smaller_than_the_outage_drops_whole_traces_and_counts_them_exactly() {
    let collector = Collector::start(Mode::Answer(503, ""));
    let app = app(
        collector.otlp(quick_retries(Duration::from_secs(30)), Duration::from_secs(2)),
        60,
        Duration::from_secs(5),
    );
    app.requests(0, 300);
    collector.set(Mode::Healthy);
    app.handle.flush().unwrap();
    let stats = app.settled();
    let otlp = balanced(&stats);
    let (spans, logs, twice) = collector.received();
    println!(
        "offered {} spans / {} logs; delivered {spans} / {logs}; dropped, queue full: {} / {}",
        stats.spans.offered,
        stats.logs.offered,
        stats.spans.dropped_queue_full,
        stats.logs.dropped_queue_full
    );
    assert_eq!(twice, 0);
    assert_eq!(
        (otlp.spans.delivered, otlp.logs.delivered),
        (spans, logs),
        "{stats:#?}"
    );
    assert_eq!((stats.spans.offered, stats.logs.offered), (600, 300));
    assert!(
        stats.spans.dropped_queue_full > 0,
        "the queue overflowed: {stats:#?}"
    );
    assert_eq!(
        otlp.spans.lost() + otlp.logs.lost(),
        0,
        "nothing given up: {stats:#?}"
    );
    let accepted = collector.accepted.lock().unwrap();
    assert!(
        accepted.traces.values().all(|n| *n == 2),
        "a trace arrives whole or not at all"
    );
}

#[test]
fn a_hung_collector_is_warned_about_and_shutdown_keeps_its_deadline() {
    let collector = Collector::start(Mode::Hung);
    let timeout = Duration::from_secs(5);
    let app = app(
        collector.otlp(quick_retries(Duration::from_secs(30)), timeout),
        10_000,
        Duration::from_secs(1),
    );
    app.requests(0, 20);
    let started = Instant::now();
    while !warned("export waiting on its collector") {
        assert!(
            started.elapsed() < timeout,
            "no warning within the request timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let warned_after = started.elapsed();
    let started = Instant::now();
    assert!(
        app.handle.shutdown().is_err(),
        "the hung request outlives the deadline"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_500), "shutdown took {took:?}");
    let stats = app.handle.stats();
    let otlp = balanced(&stats);
    assert_eq!(otlp.spans.delivered + otlp.logs.delivered, 0);
    assert_eq!(
        (otlp.spans.unsent_at_shutdown, otlp.logs.unsent_at_shutdown),
        (40, 20),
        "{stats:#?}"
    );
    println!("warned after {warned_after:?}; shutdown returned after {took:?}");
}

#[test]
fn a_refusal_is_counted_as_rejected_and_named_in_a_warning() {
    let collector = Collector::start(Mode::Answer(400, "bad payload: no resource"));
    let app = app(
        collector.otlp(quick_retries(Duration::from_secs(30)), Duration::from_secs(2)),
        10_000,
        Duration::from_secs(5),
    );
    app.requests(0, 10);
    app.handle.flush().unwrap();
    let stats = app.settled();
    let otlp = balanced(&stats);
    assert_eq!((otlp.spans.rejected, otlp.logs.rejected), (20, 10), "{stats:#?}");
    assert_eq!(
        collector.accepted.lock().unwrap().errors,
        2,
        "not retried: one request per signal"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !warned("answered 400: bad payload: no resource") {
        assert!(
            Instant::now() < deadline,
            "no warning names the status and the answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spool_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tracing-usr-test-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spooled_app(collector: &Collector, dir: &std::path::Path, max_queued: usize) -> App {
    app_with(
        builder_with_env(&[]).with_spool(SpoolConfig::new(dir)),
        collector.otlp(quick_retries(Duration::from_secs(30)), Duration::from_secs(2)),
        max_queued,
        Duration::from_secs(5),
    )
}

impl App {
    /// Waits (at most 20 s) until the OTLP exporter delivered `spans` and `logs`.
    fn delivered(&self, spans: u64, logs: u64) -> PipelineStats {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.handle.stats();
            let otlp = &stats.exporters[0];
            if (otlp.spans.delivered, otlp.logs.delivered) == (spans, logs) {
                return self.settled();
            }
            assert!(Instant::now() < deadline, "not delivered: {stats:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_restart_during_an_outage_with_the_spool_on_loses_nothing() {
    let dir = spool_dir("restart");
    let collector = Collector::start(Mode::Down);
    let first = spooled_app(&collector, &dir, 10_000);
    first.requests(0, 100);
    std::thread::sleep(Duration::from_millis(200));
    first.handle.shutdown().expect("shutdown within its deadline");
    let stats = first.handle.stats();
    balanced(&stats);
    assert_eq!(
        (stats.spans.spooled, stats.logs.spooled),
        (200, 100),
        "{stats:#?}"
    );

    collector.set(Mode::Healthy);
    let second = spooled_app(&collector, &dir, 10_000);
    second.requests(100, 50);
    let stats = second.delivered(300, 150);
    balanced(&stats);
    assert_eq!(
        (stats.spans.restored, stats.logs.restored),
        (200, 100),
        "{stats:#?}"
    );
    assert_eq!(
        collector.received(),
        (300, 150, 0),
        "both runs' records, once each"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the spool is empty again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_spool_file_cut_mid_record_restores_the_rest_and_counts_the_torn_record() {
    let dir = spool_dir("torn");
    let collector = Collector::start(Mode::Down);
    let first = spooled_app(&collector, &dir, 10_000);
    first.requests(0, 100);
    std::thread::sleep(Duration::from_millis(200));
    first.handle.shutdown().expect("shutdown within its deadline");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().expect("a spool file");
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..bytes.len() - 7]).unwrap();

    collector.set(Mode::Healthy);
    let second = spooled_app(&collector, &dir, 10_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.handle.stats().spans.restored + second.handle.stats().logs.restored < 299 {
        assert!(Instant::now() < deadline, "{:#?}", second.handle.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    second.handle.flush().unwrap();
    let stats = second.settled();
    balanced(&stats);
    assert_eq!(stats.spool_torn, 1, "{stats:#?}");
    assert_eq!(
        stats.spans.restored + stats.logs.restored,
        299,
        "all but the torn record"
    );
    let (spans, logs, twice) = collector.received();
    assert_eq!((spans + logs, twice), (299, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_long_outage_overflows_to_the_spool_instead_of_dropping() {
    let dir = spool_dir("overflow");
    let collector = Collector::start(Mode::Answer(503, ""));
    let app = spooled_app(&collector, &dir, 300);
    // 900 records through a queue of 300, 30 every 40 ms: the spill (every 20 ms, from half
    // full) has five rounds to act before the queue could overflow, even on a loaded machine.
    for chunk in 0..30 {
        app.requests(chunk * 10, 10);
        std::thread::sleep(Duration::from_millis(40));
    }
    collector.set(Mode::Healthy);
    let stats = app.delivered(600, 300);
    balanced(&stats);
    assert!(
        stats.spans.spooled > 300,
        "most of the outage went through the spool: {stats:#?}"
    );
    assert_eq!(stats.dropped, 0, "nothing dropped: {stats:#?}");
    assert_eq!(collector.received(), (600, 300, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spooled_records_go_out_when_the_collector_is_back_even_with_no_new_traffic() {
    let dir = spool_dir("idle");
    let collector = Collector::start(Mode::Down);
    let app = app_with(
        builder_with_env(&[]).with_spool(SpoolConfig::new(&dir)),
        collector.otlp(quick_retries(Duration::from_millis(200)), Duration::from_secs(2)),
        10_000,
        Duration::from_secs(5),
    );
    app.requests(0, 20);
    // The outage outlasts the retry time: the batch goes to the spool, not to the loss counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.handle.stats().spans.spooled < 40 {
        assert!(Instant::now() < deadline, "{:#?}", app.handle.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    collector.set(Mode::Healthy);
    // Nothing new is sent: the spooled records are tried again by themselves.
    let stats = app.delivered(40, 20);
    balanced(&stats);
    assert_eq!(stats.exporters[0].spans.retry_exhausted, 0, "{stats:#?}");
    assert_eq!(collector.received(), (40, 20, 0));
    let _ = std::fs::remove_dir_all(&dir);
}
