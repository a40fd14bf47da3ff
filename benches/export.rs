//! Per-request cost with a collector exporter enabled, against `tracing-opentelemetry` 0.34 +
//! `opentelemetry-otlp` (batch span processor, HTTP/protobuf) and `opentelemetry-appender-tracing`
//! (batch log processor) doing the same work (spans with their events, a log record per event),
//! all sending to the same loopback sink (an HTTP server in this file that answers 200 to
//! everything).
//!
//! The request: 5 spans, 2 events, `usr.*` fields and an identified user (benches/common.rs).
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
//! Rungs: `usr_datadog`, `usr_otlp`, `otel_otlp`.
//!
//! Last run (2 shared cores, x86_64; callgrind counts all threads, set-up subtracted; the
//! allocation and time figures are from the run before the log bridge joined `otel_otlp`):
//!
//! | rung | instructions / request | ratio to otel_otlp |
//! |---|---|---|
//! | usr_datadog (traces + Datadog log lines) | 66 k | 0.48 |
//! | usr_otlp (traces with span events + OTLP logs) | 135 k | 0.98 |
//! | otel_otlp (traces with span events + OTLP logs) | 137 k | 1.00 |
//!
//! Sustained 10 000 requests/s for 3 s (50 000 spans/s): 0 spans or logs dropped by either
//! tracing-usr rung; peak RSS of the whole bench process 9.7 MiB (Datadog), 9.9 MiB (OTLP),
//! 11.5 MiB (tracing-opentelemetry with the log bridge). The goal of a quarter of
//! tracing-opentelemetry's instructions is not reached: most of the remaining cost is record
//! materialisation on the application thread (a span record and a log record per event, ~36 k
//! instructions) and, for OTLP, building and encoding the opentelemetry-proto messages.

#[path = "common.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{allocations, identity_request, Counting};
use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::export::otlp::OtlpConfig;
use tracing_usr::{Export, User};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Answers every HTTP/1.1 request with 200 and an empty JSON object, keep-alive.
fn start_sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let port = listener.local_addr().expect("sink address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut stream = stream;
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            .is_err()
        {
            return;
        }
    }
}

/// One pipeline under test: its dispatcher, and how to flush it and read its drops.
struct Rung {
    dispatch: Dispatch,
    flush: Box<dyn Fn()>,
    dropped: Box<dyn Fn() -> u64>,
}

fn rung(name: &str, port: u16) -> Rung {
    let env = |_: &str| None;
    match name {
        "usr_datadog" | "usr_otlp" => {
            let builder = tracing_usr::builder()
                .with_env_lookup(env)
                .with_export(Export::None);
            let builder = if name == "usr_datadog" {
                builder.with_datadog(DatadogConfig {
                    agent: AgentAddress::Http(format!("http://127.0.0.1:{port}")),
                    ..DatadogConfig::default()
                })
            } else {
                builder.with_otlp(OtlpConfig {
                    traces_endpoint: Some(format!("http://127.0.0.1:{port}/v1/traces")),
                    logs_endpoint: Some(format!("http://127.0.0.1:{port}/v1/logs")),
                    ..OtlpConfig::default()
                })
            };
            let layer = builder.build();
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
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("bench");
            let log_exporter = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://127.0.0.1:{port}/v1/logs"))
                .build()
                .expect("the OTLP log exporter");
            let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                .with_batch_exporter(log_exporter)
                .build();
            let logs =
                opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&logger_provider);
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

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sustained(rung: &Rung, rate: u64, seconds: u64) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let total = rate * seconds;
    let started = Instant::now();
    tracing::dispatcher::with_default(&rung.dispatch, || {
        for i in 0..total {
            // Pace: request i is due at i / rate seconds.
            let due = Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
            identity_request(&user);
        }
    });
    let took = started.elapsed();
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
            ["instructions", name, n] => {
                let rung = rung(name, port);
                run_requests(&rung, n.parse().expect("a request count"));
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
