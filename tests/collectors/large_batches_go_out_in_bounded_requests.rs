//! A large batch (the queue after an outage, say) reaches the collector in several requests of
//! bounded size, every record exactly once: at most `MAX_RECORDS_PER_REQUEST` spans or log
//! records per OTLP request, cut between traces, each written over the previous one's messages
//! without carrying anything over; at most `MAX_SPANS_PER_PAYLOAD` spans per Datadog payload,
//! cut between traces. A refused request loses its own records only.
use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig, DatadogExporter, MAX_SPANS_PER_PAYLOAD};
use tracing_usr::export::otlp::{OtlpConfig, OtlpExporter, MAX_RECORDS_PER_REQUEST};
use tracing_usr::export::{
    ExportContext, ExportErrorKind, Exporter, FieldValue, Key, Level, LogRecord, Record, RecordKind,
    SpanRecord, Text,
};

use crate::support::http_head::read_request;

/// The (path, body) of each request received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Answers `status` to every request and keeps (path, body) of each.
fn sink(status: u16) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let Some((path, body)) = read_request(&mut reader) else {
                        return;
                    };
                    kept.lock().unwrap().push((path, body));
                    let _ = write!(stream, "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, received)
}

fn span(i: u64) -> Record {
    let mut meta = vec![(Key::Borrowed("step"), Text::from(format!("step-{i}")))];
    // Every tenth span is a local root with a user; the others are plain children.
    let root = matches!(i % 10, 0);
    if root {
        meta.push((Key::Borrowed("usr.id"), Text::from(format!("user-{i}"))));
    }
    Record::Span(SpanRecord {
        trace_id: u128::from(i / 10) + 1,
        span_id: i + 1,
        parent_id: (!root).then_some(i / 10 * 10 + 1),
        local_root: root,
        name: "work".into(),
        target: "app".into(),
        start_unix_nanos: 1_700_000_000_000_000_000 + i,
        duration_nanos: 1_000,
        error: matches!(i % 7, 0),
        meta,
        metrics: Vec::new(),
        events: Vec::new(),
        root: None,
        pending_value_mask: 0,
    })
}

fn log(i: u64) -> Record {
    Record::Log(LogRecord {
        timestamp_unix_nanos: 1_700_000_000_000_000_000 + i,
        level: Level::Info,
        target: "app".into(),
        message: (!matches!(i % 3, 0)).then(|| Text::from(format!("message {i}"))),
        fields: vec![(Key::Borrowed("n"), FieldValue::U64(i))],
        trace_id: Some(u128::from(i) + 1),
        span_id: None,
        user: Default::default(),
    })
}

#[test]
fn a_large_batch_goes_out_in_requests_of_at_most_512_records() {
    let (port, received) = sink(200);
    let mut exporter = OtlpExporter::new(OtlpConfig {
        traces_endpoint: Some(format!("http://127.0.0.1:{port}/v1/traces")),
        logs_endpoint: Some(format!("http://127.0.0.1:{port}/v1/logs")),
        ..OtlpConfig::default()
    })
    .unwrap();
    const SPANS: u64 = 1_200;
    const LOGS: u64 = 700;
    let batch: Vec<Record> = (0..SPANS).map(span).chain((0..LOGS).map(log)).collect();
    exporter.export(&batch).expect("the sink accepts everything");
    // A second, smaller batch goes over the first one's messages.
    exporter.export(&batch[..3]).expect("the sink accepts everything");

    let received = received.lock().unwrap();
    let mut span_counts = Vec::new();
    let mut span_ids = HashSet::new();
    let mut traces_seen = HashSet::new();
    let mut log_counts = Vec::new();
    let mut log_times = HashSet::new();
    for (path, body) in received.iter() {
        match path.as_str() {
            "/v1/traces" => {
                let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                let spans = &request.resource_spans[0].scope_spans[0].spans;
                span_counts.push(spans.len());
                // A trace is whole in one request.
                let traces: HashSet<Vec<u8>> = spans.iter().map(|s| s.trace_id.clone()).collect();
                if spans.len() > 3 {
                    for trace in traces {
                        assert!(traces_seen.insert(trace), "a trace split across requests");
                    }
                }
                for s in spans {
                    let id = u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap());
                    let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
                    // A child never carries a user attribute left by a root written before it
                    // in the same place.
                    let root = matches!((id - 1) % 10, 0);
                    assert_eq!(keys.contains(&"usr.id"), root, "span {id}: {keys:?}");
                    assert_eq!(s.status.is_some(), matches!((id - 1) % 7, 0), "span {id}");
                    assert!(span_ids.insert(id) || id <= 3, "span {id} sent twice");
                }
            }
            "/v1/logs" => {
                let request = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
                let logs = &request.resource_logs[0].scope_logs[0].log_records;
                log_counts.push(logs.len());
                for l in logs {
                    let i = l.time_unix_nano - 1_700_000_000_000_000_000;
                    assert_eq!(l.body.is_some(), !matches!(i % 3, 0), "log {i}");
                    log_times.insert(i);
                }
            }
            other => panic!("unexpected path {other}"),
        }
    }
    assert_eq!(MAX_RECORDS_PER_REQUEST, 512);
    // Traces of ten spans: each request ends at the last trace boundary within 512 spans.
    assert_eq!(span_counts, [510, 510, 180, 3], "spans per request");
    assert_eq!(log_counts, [512, 188], "log records per request");
    assert_eq!(span_ids.len() as u64, SPANS);
    assert_eq!(log_times.len() as u64, LOGS);
}

#[test]
fn a_large_batch_goes_to_the_datadog_agent_in_payloads_cut_between_traces() {
    let (port, received) = sink(200);
    let mut exporter = DatadogExporter::new(DatadogConfig {
        agent: AgentAddress::Http(format!("http://127.0.0.1:{port}")),
        ..DatadogConfig::default()
    })
    .unwrap();
    // 2,500 spans in traces of ten, then one trace of 1,500 spans.
    let big_trace = 1_500u64;
    let batch: Vec<Record> = (0..2_500)
        .map(span)
        .chain((0..big_trace).map(|i| {
            let Record::Span(mut s) = span(10_000 + i) else {
                unreachable!()
            };
            s.trace_id = u128::MAX;
            Record::Span(s)
        }))
        .collect();
    exporter.export(&batch).expect("the sink accepts everything");

    let received = received.lock().unwrap();
    let mut sizes = Vec::new();
    let mut seen = HashSet::new();
    for (path, body) in received.iter() {
        assert_eq!(path, "/v0.4/traces");
        let traces: Vec<Vec<serde_json::Value>> = rmp_serde::from_slice(body).expect("valid v0.4 msgpack");
        sizes.push(traces.iter().map(Vec::len).sum::<usize>());
        for trace in &traces {
            // A trace is whole in one payload.
            let id = trace[0]["trace_id"].as_u64().unwrap();
            assert!(seen.insert(id), "trace {id} split across payloads");
            let expected = if id == u64::MAX { big_trace as usize } else { 10 };
            assert_eq!(trace.len(), expected, "trace {id}");
        }
    }
    assert_eq!(MAX_SPANS_PER_PAYLOAD, 1_000);
    assert_eq!(sizes, [1_000, 1_000, 500, 1_500], "spans per payload");
}

#[test]
fn a_refused_request_loses_its_own_records_and_the_others_are_still_sent() {
    let (port, received) = sink(400);
    let batch: Vec<Record> = (0..2_500).map(span).chain((0..1_500).map(log)).collect();
    let stopping = AtomicBool::new(false);
    let mut otlp = OtlpExporter::new(OtlpConfig {
        traces_endpoint: Some(format!("http://127.0.0.1:{port}/v1/traces")),
        logs_endpoint: Some(format!("http://127.0.0.1:{port}/v1/logs")),
        ..OtlpConfig::default()
    })
    .unwrap();
    let mut cx = ExportContext::new(&stopping);
    otlp.export_counted(&batch, &mut cx);
    let (spans, logs) = (cx.outcomes_of(RecordKind::Span), cx.outcomes_of(RecordKind::Log));
    assert_eq!((spans.rejected, spans.delivered), (2_500, 0), "{spans:?}");
    assert_eq!((logs.rejected, logs.delivered), (1_500, 0), "{logs:?}");
    let error = cx.into_result().unwrap_err();
    assert_eq!(error.kind(), ExportErrorKind::Rejected);
    assert!(error.to_string().contains("answered 400"), "{error}");
    let mut datadog = DatadogExporter::new(DatadogConfig {
        agent: AgentAddress::Http(format!("http://127.0.0.1:{port}")),
        ..DatadogConfig::default()
    })
    .unwrap();
    let mut cx = ExportContext::new(&stopping);
    datadog.export_counted(&batch, &mut cx);
    assert_eq!(cx.outcomes_of(RecordKind::Span).rejected, 2_500);
    assert_eq!(
        cx.outcomes_of(RecordKind::Log),
        Default::default(),
        "not the Datadog exporter's"
    );
    // A 400 is not retried: one request per chunk of the batch, each refused once (5 OTLP trace
    // requests, 3 log requests, 3 Datadog payloads).
    let paths: Vec<String> = received.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
    let count = |path: &str| paths.iter().filter(|p| *p == path).count();
    assert_eq!(
        (count("/v1/traces"), count("/v1/logs"), count("/v0.4/traces")),
        (5, 3, 3),
        "{paths:?}"
    );
}
