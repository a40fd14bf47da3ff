//! Shared by the export benches: a loopback HTTP sink, the tracing-usr layers under test and the
//! process's peak resident memory.
#![allow(dead_code)]

#[path = "../../tests/support/http_head.rs"]
mod http_head;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prost::Message as _;

use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::export::otlp::OtlpConfig;
use tracing_usr::{JsonLines, UserLayer};

/// When set, the sink decodes what it receives and counts spans and log records (a
/// completeness check, run outside the measured runs: decoding is not free).
pub static COUNT: AtomicBool = AtomicBool::new(false);
/// Spans and log records the sink received, when counting.
pub static SPANS: AtomicU64 = AtomicU64::new(0);
pub static LOGS: AtomicU64 = AtomicU64::new(0);

/// Counts the spans or log records of one request body.
fn count(path: &str, body: &[u8]) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let (spans, logs) = match path {
        "/v1/traces" => {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace request");
            let n = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            (n, 0)
        }
        "/v1/logs" => {
            let request = ExportLogsServiceRequest::decode(body).expect("an OTLP logs request");
            let n = request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            (0, n)
        }
        "/v0.4/traces" => {
            let traces: Vec<Vec<serde_json::Value>> = rmp_serde::from_slice(body).expect("v0.4 msgpack");
            (traces.iter().map(Vec::len).sum(), 0)
        }
        _ => (0, 0),
    };
    SPANS.fetch_add(spans as u64, Ordering::Relaxed);
    LOGS.fetch_add(logs as u64, Ordering::Relaxed);
}

/// Answers every HTTP/1.1 request with 200 and an empty JSON object, keep-alive.
pub fn start_sink() -> u16 {
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
    loop {
        if COUNT.load(Ordering::Relaxed) {
            let Some((path, body)) = http_head::read_request(&mut reader) else {
                return;
            };
            count(&path, &body);
            if !answer(&mut stream) {
                return;
            }
            continue;
        }
        let Some(length) = http_head::read_head(&mut reader) else {
            return;
        };
        // Read and discarded through a small stack buffer: the sink's own work, counted with
        // every pipeline's in an instructions run, stays as small as it can be.
        let read = std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink());
        if !matches!(read, Ok(n) if n == length as u64) {
            return;
        }
        if !answer(&mut stream) {
            return;
        }
    }
}

/// The layer exporting to the sink on `port`: to the Datadog agent API (with Datadog log lines
/// on stdout) when `datadog`, else over OTLP/HTTP protobuf (traces with span events, logs).
pub fn usr_layer(datadog: bool, port: u16) -> UserLayer {
    let builder = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(JsonLines::None);
    let builder = if datadog {
        // The sink is no agent: no Remote Configuration polls in the measured traffic.
        builder
            .with_datadog(DatadogConfig {
                agent: AgentAddress::Http(format!("http://127.0.0.1:{port}")),
                ..DatadogConfig::default()
            })
            .with_remote_config(false, None)
    } else {
        builder.with_otlp(OtlpConfig {
            traces_endpoint: Some(format!("http://127.0.0.1:{port}/v1/traces")),
            logs_endpoint: Some(format!("http://127.0.0.1:{port}/v1/logs")),
            ..OtlpConfig::default()
        })
    };
    builder.build()
}

/// The peak resident memory of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `total = rate * seconds` requests under `dispatch`, request i due at i / rate seconds;
/// returns the request count and the time taken.
pub fn paced(
    dispatch: &tracing::Dispatch,
    rate: u64,
    seconds: u64,
    request: impl Fn(),
) -> (u64, std::time::Duration) {
    use std::time::{Duration, Instant};
    let total = rate * seconds;
    let started = Instant::now();
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..total {
            let due = Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
            request();
        }
    });
    (total, started.elapsed())
}

/// The sink's one answer: 200 with an empty JSON object; `false` when the client went away.
fn answer(stream: &mut TcpStream) -> bool {
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .is_ok()
}
