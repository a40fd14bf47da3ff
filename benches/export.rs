//! Per-request cost with a collector exporter enabled, against `tracing-opentelemetry` 0.34 +
//! `opentelemetry-otlp` (batch span processor, HTTP/protobuf) and `opentelemetry-appender-tracing`
//! (batch log processor) doing the same work (spans with their events, a log record per event),
//! all sending to the same loopback sink (an HTTP server in this file that answers 200 to
//! everything).
//!
//! The request: 5 spans, 2 events, `usr.*` fields and an identified user (benches/support/common.rs).
//!
//! Three ways to run it:
//!
//! * `cargo bench --bench export`: criterion time per request on the application thread (the
//!   export threads work in the background), and allocations per request of all threads.
//! * `TRACING_USR_BENCH=instructions:<rung>:<requests>`: runs that many requests, flushes and
//!   exits; under `valgrind --tool=callgrind` this counts the instructions of all threads.
//!   `benches/export_instructions.sh` does it for every rung (and for 0 requests, to subtract
//!   set-up and shutdown) and prints instructions per request and the ratios.
//! * `TRACING_USR_BENCH=sustained:<rung>:<requests per second>:<seconds>`: paced load; prints the
//!   spans dropped and the peak resident memory.
//!
//! * `TRACING_USR_BENCH=check:<rung>:<requests>`: the sink decodes what arrives and counts spans
//!   and log records; exits non-zero unless every one arrived (a completeness check, not a
//!   measured run: `export_instructions.sh` runs it first).
//!
//! Rungs: `usr_datadog`, `usr_otlp`, `otel_otlp`; and `otlp_wire` (instructions only): the
//! OTLP/protobuf writer alone, encoding a fixed batch of 700 records (500 spans, 200 logs).
//!
//! Last run (2 shared cores, x86_64; callgrind counts all threads, set-up subtracted, 1,000
//! requests, with the typed root facts; the allocation column is from the run before them, at
//! 2,000 requests, not measured again):
//!
//! | rung | instructions / request | ratio to otel_otlp | allocations / request |
//! |---|---|---|---|
//! | usr_datadog (traces + Datadog log lines) | 49.5 k | 0.229 | 14.6 |
//! | usr_otlp (traces with span events + OTLP logs) | 50.3 k | 0.233 | 17.9 (25.6 with prost) |
//! | otel_otlp (traces with span events + OTLP logs) | 216 k | 1.00 | 213 |
//! | otlp_wire (the writer alone) | 1,388 per record | | 0 |
//!
//! Every rung delivers every span and log record (`check`: 10,000 spans and 4,000 log records
//! for 2,000 requests; the Datadog log lines go to stdout). The comparison pipeline's log bridge
//! takes the application's events only (the exporters' own hyper/reqwest events are not part of
//! the workload).
//!
//! Under callgrind the threads run one at a time: the application thread runs all its requests
//! before the export thread takes the queue, so a run is one batch of 14,000 records, sent as 14
//! Datadog payloads (at most 1,000 spans each) or as OTLP requests of at most 512 spans or log
//! records. The comparison pipeline's queues are sized so it drops nothing. The sink reads and
//! discards request bodies through a stack buffer, so its own work (counted with every
//! pipeline's) stays small.
//!
//! Sustained 10 000 requests/s for 3 s (50 000 spans/s): 0 spans or logs dropped by either
//! tracing-usr rung. `benches/footprint.rs` measures the resident memory under that load in a
//! binary without the comparison pipeline.
//!
//! OTLP/protobuf is written straight from the records in one pass (`otlp/wire.rs`): building
//! opentelemetry-proto messages and prost's encoding of them cost ~30 k instructions per
//! request (prost recomputes each nested message's length at every enclosing level). The
//! messages stay the oracle: a property test decodes the writer's bytes with
//! opentelemetry-proto and compares them with the messages the builder makes. OTLP/JSON still
//! goes through the messages and serde. The Datadog msgpack encoder was already one pass: msgpack
//! prefixes maps and arrays with their element counts, not their byte lengths, so it has no
//! length to patch, and the same trick brings nothing there.

#[path = "support/common.rs"]
mod common;
#[path = "support/loopback.rs"]
mod loopback;

use common::{allocations, identity_request, Counting};
use criterion::Criterion;
use loopback::{paced, peak_rss_kib, start_sink, usr_layer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::User;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One pipeline under test: its dispatcher, and how to flush it and read its drops.
struct Rung {
    dispatch: Dispatch,
    flush: Box<dyn Fn()>,
    dropped: Box<dyn Fn() -> u64>,
}

fn rung(name: &str, port: u16) -> Rung {
    match name {
        "usr_datadog" | "usr_otlp" => {
            let layer = usr_layer(name == "usr_datadog", port);
            let handle = layer.handle();
            let flush_handle = handle.clone();
            Rung {
                dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)),
                flush: Box::new(move || {
                    let _ = flush_handle.flush();
                }),
                dropped: Box::new(move || handle.stats().dropped),
            }
        }
        "otel_otlp" => {
            // The same work as usr_otlp: spans (with their events) and log records, both batched
            // to OTLP/HTTP protobuf.
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
                .build()
                .expect("the OTLP span exporter");
            // Queues large enough for a whole instructions run: under callgrind the threads run
            // one at a time, and a processor that drops (silently) does less work.
            let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    opentelemetry_sdk::trace::BatchConfigBuilder::default()
                        .with_max_queue_size(OTEL_QUEUE)
                        .build(),
                )
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_span_processor(processor)
                .build();
            let tracer = provider.tracer("bench");
            let log_exporter = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://127.0.0.1:{port}/v1/logs"))
                .build()
                .expect("the OTLP log exporter");
            let log_processor = opentelemetry_sdk::logs::BatchLogProcessor::builder(log_exporter)
                .with_batch_config(
                    opentelemetry_sdk::logs::BatchConfigBuilder::default()
                        .with_max_queue_size(OTEL_QUEUE)
                        .build(),
                )
                .build();
            let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                .with_log_processor(log_processor)
                .build();
            // The application's events only: the exporters' own (hyper, reqwest) are not logs
            // of the workload.
            let logs =
                opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&logger_provider)
                    .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                        meta.target().starts_with(env!("CARGO_CRATE_NAME"))
                    }));
            let layer = tracing_opentelemetry::layer().with_tracer(tracer);
            Rung {
                dispatch: Dispatch::new(tracing_subscriber::registry().with(layer).with(logs)),
                flush: Box::new(move || {
                    let _ = provider.force_flush();
                    let _ = logger_provider.force_flush();
                }),
                // The batch processors drop silently when their queues are full; they report nothing.
                dropped: Box::new(|| 0),
            }
        }
        other => panic!("unknown rung {other:?} (usr_datadog, usr_otlp, otel_otlp)"),
    }
}

/// The comparison pipeline's queue sizes (spans, log records): no drop in a 10,000-request run.
const OTEL_QUEUE: usize = 1 << 17;

const RUNGS: [&str; 3] = ["usr_datadog", "usr_otlp", "otel_otlp"];

fn run_requests(rung: &Rung, n: u64) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    tracing::dispatcher::with_default(&rung.dispatch, || {
        for _ in 0..n {
            identity_request(&user);
        }
    });
    (rung.flush)();
}

/// The records of 100 workload requests (500 spans, 200 log records), as the layer makes them.
fn workload_records() -> Vec<tracing_usr::export::Record> {
    let memory = tracing_usr::export::InMemoryExporter::default();
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(tracing_usr::JsonLines::None)
        .with_exporter(memory.clone())
        .build();
    let handle = layer.handle();
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    tracing::dispatcher::with_default(&Dispatch::new(tracing_subscriber::registry().with(layer)), || {
        for _ in 0..100 {
            identity_request(&user);
        }
    });
    handle.flush().expect("flush");
    memory.records()
}

/// The OTLP/protobuf writer alone: `n` encodings of the traces and logs requests of a fixed
/// batch of 700 records (`benches/export_instructions.sh` divides by the records).
fn encode_loop(n: u64) {
    use tracing_usr::export::otlp::{encode_logs, encode_traces, OtlpConfig};
    let records = workload_records();
    let spans: Vec<_> = records
        .iter()
        .filter_map(tracing_usr::export::Record::as_span)
        .collect();
    let logs: Vec<_> = records
        .iter()
        .filter_map(tracing_usr::export::Record::as_log)
        .collect();
    assert_eq!((spans.len(), logs.len()), (500, 200));
    let config = OtlpConfig::default();
    let (mut traces, mut logs_body) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..n {
        encode_traces(&spans, &config, &mut traces);
        encode_logs(&logs, &config, &mut logs_body);
        bytes += traces.len() + logs_body.len();
    }
    eprintln!("otlp_wire: {n} encodings, {bytes} bytes");
}

fn sustained(rung: &Rung, rate: u64, seconds: u64) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let (total, took) = paced(&rung.dispatch, rate, seconds, || identity_request(&user));
    (rung.flush)();
    println!(
        "sustained: {total} requests ({} spans) in {took:.2?} ({:.0} req/s): dropped spans+logs {}, peak RSS {} KiB",
        total * 5,
        total as f64 / took.as_secs_f64(),
        (rung.dropped)(),
        peak_rss_kib()
    );
}

fn main() {
    let port = start_sink();
    if let Ok(mode) = std::env::var("TRACING_USR_BENCH") {
        let parts: Vec<&str> = mode.split(':').collect();
        match parts.as_slice() {
            ["instructions", "otlp_wire", n] => encode_loop(n.parse().expect("an encode count")),
            ["instructions", name, n] => {
                let rung = rung(name, port);
                run_requests(&rung, n.parse().expect("a request count"));
                eprintln!("{name}: dropped spans+logs {}", (rung.dropped)());
            }
            ["check", name, n] => {
                // Completeness: the sink decodes and counts what arrives (not a measured run).
                loopback::COUNT.store(true, std::sync::atomic::Ordering::Relaxed);
                let n: u64 = n.parse().expect("a request count");
                let rung = rung(name, port);
                run_requests(&rung, n);
                let want = (n * 5, if *name == "usr_datadog" { 0 } else { n * 2 });
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let got = loop {
                    let got = (loopback::SPANS.load(std::sync::atomic::Ordering::Relaxed), loopback::LOGS.load(std::sync::atomic::Ordering::Relaxed));
                    if got == want || std::time::Instant::now() > deadline {
                        break got;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                };
                println!("{name}: the sink received {} spans of {} and {} log records of {}", got.0, want.0, got.1, want.1);
                assert_eq!(got, want, "{name} lost records");
            }
            ["sustained", name, rate, secs] => {
                let rung = rung(name, port);
                sustained(&rung, rate.parse().expect("a rate"), secs.parse().expect("seconds"));
            }
            _ => panic!("TRACING_USR_BENCH={mode}: expected instructions:<rung>:<n> or sustained:<rung>:<rate>:<secs>"),
        }
        return;
    }

    eprintln!("allocations per request, all threads (after a flush):");
    for name in RUNGS {
        let rung = rung(name, port);
        run_requests(&rung, 200);
        let before = allocations();
        run_requests(&rung, 2_000);
        eprintln!("  {name:<12} {:>7.1}", (allocations() - before) as f64 / 2_000.0);
    }

    let mut criterion = Criterion::default().configure_from_args();
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let mut group = criterion.benchmark_group("export");
    for name in RUNGS {
        let rung = rung(name, port);
        tracing::dispatcher::with_default(&rung.dispatch, || {
            group.bench_function(name, |b| b.iter(|| identity_request(&user)));
        });
        (rung.flush)();
    }
    group.finish();
    criterion.final_summary();
}
