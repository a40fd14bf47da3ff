//! The OTLP/HTTP exporter: traces to `/v1/traces` and logs to `/v1/logs`, protobuf (or JSON)
//! encoded with `opentelemetry-proto`'s types, optionally gzip-compressed.
//!
//! The local root carries every tag of the user-tracking contract as a string attribute, except
//! `_sampling_priority_v1` (the integer `sampling.priority`) and the `_dd.p.*` propagation state
//! (in the span's W3C `trace_state`), plus the OpenTelemetry semantic-convention user attributes
//! derived from the public identity (`user.id`, `enduser.id` or `user.hash`, `user.email`,
//! `user.name`, `user.full_name`, `user.roles`, `session.id`).

mod encode;
mod reuse;
mod semconv;
mod wire;

use std::fmt;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;

pub use encode::{logs_request, otlp_log, otlp_span, traces_request};

/// Writes the OTLP/protobuf `ExportTraceServiceRequest` body of `spans` (what the exporter
/// sends for them in one request) into `out`, replacing its contents and reusing its capacity,
/// in one pass.
pub fn encode_traces(spans: &[&SpanRecord], config: &OtlpConfig, out: &mut Vec<u8>) {
    let mut wire = wire::Wire {
        buf: std::mem::take(out),
    };
    wire.traces(spans, &config.resource);
    *out = wire.buf;
}

/// Writes the OTLP/protobuf `ExportLogsServiceRequest` body of `logs` into `out`, as
/// [`encode_traces`] does for spans.
pub fn encode_logs(logs: &[&LogRecord], config: &OtlpConfig, out: &mut Vec<u8>) {
    let mut wire = wire::Wire {
        buf: std::mem::take(out),
    };
    wire.logs(logs, &config.resource);
    *out = wire.buf;
}

use crate::exporter::{ExportContext, ExportError, ExportErrorKind, Exporter, RecordKind};
use crate::http::{Request, RetryPolicy, Sender};
use crate::record::{cut_between_groups, LogRecord, Record, SpanRecord};
use encode::{build, recycle, resource, Signal};
use reuse::Spare;

/// The OTLP/HTTP body encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    #[default]
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// Settings of the OTLP exporter (see `tracing_usr::Builder` for the variables and their
/// precedence).
#[derive(Clone, PartialEq)]
pub struct OtlpConfig {
    /// Full URL for traces (`…/v1/traces`); `None` sends no traces.
    pub traces_endpoint: Option<String>,
    /// Full URL for logs (`…/v1/logs`); `None` sends no logs.
    pub logs_endpoint: Option<String>,
    /// Extra request headers (API keys…). Their values are never printed.
    pub headers: Vec<(String, String)>,
    /// Body encoding.
    pub protocol: OtlpProtocol,
    /// Per-request timeout. Defaults to 10 s.
    pub timeout: Duration,
    /// Gzip request bodies.
    pub gzip: bool,
    /// Resource attributes (`service.name`, …).
    pub resource: Vec<(String, String)>,
    /// Retries.
    pub retry: RetryPolicy,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("logs_endpoint", &self.logs_endpoint)
            .field("headers", &crate::http::redacted_headers(&self.headers))
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .field("resource", &self.resource)
            .finish()
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            traces_endpoint: Some("http://localhost:4318/v1/traces".to_owned()),
            logs_endpoint: Some("http://localhost:4318/v1/logs".to_owned()),
            headers: Vec::new(),
            protocol: OtlpProtocol::HttpProtobuf,
            timeout: Duration::from_secs(10),
            gzip: false,
            resource: vec![("service.name".to_owned(), crate::default_service_name())],
            retry: RetryPolicy::default(),
        }
    }
}

/// At most this many spans, or log records, go in one request (OpenTelemetry's batch processors
/// send at most 512 as well): a large batch goes out in several requests, each of a size every
/// collector accepts.
pub const MAX_RECORDS_PER_REQUEST: usize = 512;

/// Sends spans and log records to an OTLP/HTTP collector.
pub struct OtlpExporter {
    config: OtlpConfig,
    sender: Sender,
    /// Built once: the same for every request.
    resource: Resource,
    /// The last batch's messages, overwritten by the next.
    spare: Spare,
    /// The protobuf writer's buffer.
    wire: wire::Wire,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("config", &self.config)
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter for `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be created.
    pub fn new(config: OtlpConfig) -> Result<Self, ExportError> {
        let sender = Sender::new(config.timeout, config.retry.clone(), None)?;
        Ok(Self {
            resource: resource(&config),
            config,
            sender,
            spare: Spare::default(),
            wire: wire::Wire::default(),
        })
    }

    /// Sends `body`; hands the buffer back for the next request when nothing else holds it.
    fn post(
        &mut self,
        url: &str,
        body: Vec<u8>,
        cx: &ExportContext<'_>,
    ) -> (Result<(), ExportError>, Option<Vec<u8>>) {
        let mut headers: Vec<(String, String)> = vec![(
            "Content-Type".into(),
            match self.config.protocol {
                OtlpProtocol::HttpProtobuf => "application/x-protobuf",
                OtlpProtocol::HttpJson => "application/json",
            }
            .into(),
        )];
        let (body, plain) = if self.config.gzip {
            headers.push(("Content-Encoding".into(), "gzip".into()));
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            match encoder.write_all(&body).and_then(|()| encoder.finish()) {
                Ok(zipped) => (zipped, Some(body)),
                Err(e) => return (Err(e.into()), Some(body)),
            }
        } else {
            (body, None)
        };
        headers.extend(self.config.headers.iter().cloned());
        let request = Request {
            url: url.to_owned(),
            method: reqwest::Method::POST,
            headers,
            body: body.into(),
        };
        let result = self.sender.send(&request, cx).map(|_| ());
        let sent = request.body.try_into_mut().ok().map(Vec::from);
        (result, plain.or(sent))
    }

    /// `records` in requests of at most [`MAX_RECORDS_PER_REQUEST`] that do not cut a trace
    /// (a larger trace goes alone, whole), each written over the parts taken back from the previous one.
    /// A request that fails loses its own records only: the next ones are still sent.
    fn send_in_requests<'a, S: Signal>(
        &mut self,
        url: &str,
        records: impl Iterator<Item = &'a S::Record>,
        cx: &mut ExportContext<'_>,
    ) where
        S::Record: 'a,
    {
        let records: Vec<&S::Record> = records.collect();
        for chunk in cut_between_groups(&records, MAX_RECORDS_PER_REQUEST, |r| S::group(r)) {
            let body = match self.config.protocol {
                // Protobuf is written straight from the records, in one pass.
                OtlpProtocol::HttpProtobuf => {
                    S::write_wire(&mut self.wire, chunk, &self.config.resource);
                    Ok(std::mem::take(&mut self.wire.buf))
                }
                OtlpProtocol::HttpJson => {
                    let request: S = build(chunk.iter().copied(), &self.resource, &mut self.spare);
                    let body = json(&request);
                    recycle(request, &mut self.spare);
                    body
                }
            };
            let result = body.and_then(|body| {
                let (result, spare) = self.post(url, body, cx);
                // The next request is written over this one's buffer.
                if let Some(spare) = spare {
                    self.wire.buf = spare;
                }
                result
            });
            match result {
                Ok(()) => cx.delivered(S::KIND, chunk.len()),
                Err(e) => cx.lost(S::KIND, chunk.len(), &e),
            }
        }
    }
}

/// The OTLP/JSON body of `message`.
fn json<M: serde::Serialize>(message: &M) -> Result<Vec<u8>, ExportError> {
    serde_json::to_vec(message).map_err(|e| ExportError::new(ExportErrorKind::Encode, e.to_string()))
}

impl Exporter for OtlpExporter {
    fn name(&self) -> &str {
        "otlp"
    }

    fn wants_span_events(&self) -> bool {
        true
    }

    fn handles(&self, kind: RecordKind) -> bool {
        match kind {
            RecordKind::Span => self.config.traces_endpoint.is_some(),
            RecordKind::Log => self.config.logs_endpoint.is_some(),
        }
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let stopping = AtomicBool::new(false);
        let mut cx = ExportContext::new(&stopping);
        self.export_counted(batch, &mut cx);
        cx.into_result()
    }

    fn export_counted(&mut self, batch: &[Record], cx: &mut ExportContext<'_>) {
        // Traces and logs may go to different collectors: each signal is sent whatever befell
        // the other.
        if let Some(url) = self.config.traces_endpoint.clone() {
            self.send_in_requests::<ExportTraceServiceRequest>(
                &url,
                batch.iter().filter_map(Record::as_span),
                cx,
            );
        }
        if let Some(url) = self.config.logs_endpoint.clone() {
            self.send_in_requests::<ExportLogsServiceRequest>(
                &url,
                batch.iter().filter_map(Record::as_log),
                cx,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reuse::MAX_SPARE;
    use super::*;
    use crate::record::{FieldValue, Key, Level, LogRecord, SpanEvent, SpanRecord, Text};
    use proptest::prelude::*;
    use prost::Message as _;

    fn text(s: &str) -> Text {
        Text::from(s)
    }

    /// Empty, ASCII, any Unicode, or long (past one-byte lengths and inline storage).
    fn odd_string() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9=]{0,30}",
            "\\PC{0,40}",
            "[a-z]{100,300}"
        ]
    }

    fn field_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            odd_string().prop_map(|s| FieldValue::Str(text(&s))),
            any::<i64>().prop_map(FieldValue::I64),
            any::<u64>().prop_map(FieldValue::U64),
            any::<f64>().prop_map(FieldValue::F64),
            any::<bool>().prop_map(FieldValue::Bool),
        ]
    }

    fn key() -> impl Strategy<Value = Key> {
        prop_oneof![
            Just("usr.id"),
            Just("usr.email"),
            Just("usr.login"),
            Just("usr.name"),
            Just("usr.role"),
            Just("usr.session_id"),
            Just("user.id"),
            Just("session.id"),
            Just("_dd.appsec.user.collection_mode"),
            Just("_dd.p.dm"),
            Just("_dd.p.usr.id"),
            Just("error.message"),
            Just("http.route"),
            Just("sampling.priority"),
        ]
        .prop_map(Key::Borrowed)
    }

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Level::Debug), Just(Level::Info), Just(Level::Error)]
    }

    fn span_event() -> impl Strategy<Value = SpanEvent> {
        (
            any::<u64>(),
            "[a-z ]{0,20}",
            level(),
            prop::collection::vec((key(), field_value()), 0..4),
        )
            .prop_map(|(time, name, level, fields)| SpanEvent {
                time_unix_nanos: time,
                name: text(&name),
                level,
                fields,
            })
    }

    fn span_record() -> impl Strategy<Value = Record> {
        (
            (
                any::<u128>(),
                any::<u64>(),
                any::<Option<u64>>(),
                any::<bool>(),
                any::<bool>(),
            ),
            prop::collection::vec((key(), odd_string()), 0..10),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("_sampling_priority_v1"),
                        Just("_dd.measured"),
                        Just("user.id")
                    ],
                    any::<f64>(),
                ),
                0..3,
            ),
            prop::collection::vec(span_event(), 0..3),
            (odd_string(), any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (trace_id, span_id, parent_id, local_root, error),
                    meta,
                    metrics,
                    events,
                    (name, start, duration),
                )| {
                    Record::Span(SpanRecord {
                        trace_id,
                        span_id,
                        parent_id,
                        local_root,
                        name: name.into(),
                        target: "app::handler".into(),
                        start_unix_nanos: start,
                        duration_nanos: duration,
                        error,
                        meta: meta.into_iter().map(|(k, v)| (k, text(&v))).collect(),
                        metrics: metrics.into_iter().map(|(k, v)| (Key::Borrowed(k), v)).collect(),
                        events,
                        root: None,
                        pending_value_mask: 0,
                    })
                },
            )
    }

    fn log_record() -> impl Strategy<Value = Record> {
        (
            (any::<u64>(), level(), any::<Option<u128>>(), any::<Option<u64>>()),
            prop::option::of(odd_string()),
            prop::collection::vec((key(), field_value()), 0..4),
            prop::collection::vec((key(), odd_string()), 0..4),
        )
            .prop_map(|((timestamp, level, trace_id, span_id), message, fields, user)| {
                Record::Log(LogRecord {
                    timestamp_unix_nanos: timestamp,
                    level,
                    target: "app".into(),
                    message: message.map(|m| text(&m)),
                    fields,
                    trace_id,
                    span_id,
                    user: user.into_iter().map(|(k, v)| (k, text(&v))).collect(),
                })
            })
    }

    fn batch() -> impl Strategy<Value = Vec<Record>> {
        prop::collection::vec(prop_oneof![span_record(), log_record()], 0..12)
    }

    fn config_with_resource() -> OtlpConfig {
        OtlpConfig {
            resource: vec![
                ("service.name".into(), "shop".into()),
                ("empty".into(), String::new()),
                (String::new(), "no key".into()),
            ],
            ..OtlpConfig::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The one-pass writer's bytes decode (with opentelemetry-proto, the oracle) to exactly
        /// the messages the message builder makes for the same records.
        #[test]
        fn the_wire_writer_matches_the_message_builder(batches in prop::collection::vec(batch(), 1..4)) {
            let config = config_with_resource();
            let resource = resource(&config);
            let mut wire = wire::Wire::default();
            for batch in &batches {
                let spans: Vec<&SpanRecord> = batch.iter().filter_map(Record::as_span).collect();
                let decoded = ExportTraceServiceRequest::decode(wire.traces(&spans, &config.resource)).unwrap();
                let built = build::<ExportTraceServiceRequest>(spans.iter().copied(), &resource, &mut Spare::default());
                prop_assert_eq!(decoded, built);
                let logs: Vec<&LogRecord> = batch.iter().filter_map(Record::as_log).collect();
                let decoded = ExportLogsServiceRequest::decode(wire.logs(&logs, &config.resource)).unwrap();
                let built = build::<ExportLogsServiceRequest>(logs.iter().copied(), &resource, &mut Spare::default());
                prop_assert_eq!(decoded, built);
            }
        }
    }

    proptest! {
        /// Messages written over the previous batches' are the messages built from scratch: no
        /// value of an earlier batch survives into a later one (a stale attribute, event, status
        /// or id would be a wrong export).
        #[test]
        fn messages_written_in_place_equal_fresh_ones(batches in prop::collection::vec(batch(), 1..5)) {
            let resource = resource(&OtlpConfig::default());
            let mut spare = Spare::default();
            for batch in &batches {
                let spans = || batch.iter().filter_map(Record::as_span);
                let fresh = build::<ExportTraceServiceRequest>(spans(), &resource, &mut Spare::default());
                let reused = build::<ExportTraceServiceRequest>(spans(), &resource, &mut spare);
                prop_assert_eq!(&reused, &fresh);
                recycle(reused, &mut spare);
                let logs = || batch.iter().filter_map(Record::as_log);
                let fresh = build::<ExportLogsServiceRequest>(logs(), &resource, &mut Spare::default());
                let reused = build::<ExportLogsServiceRequest>(logs(), &resource, &mut spare);
                prop_assert_eq!(&reused, &fresh);
                recycle(reused, &mut spare);
            }
        }
    }

    #[test]
    fn spare_parts_stay_bounded() {
        let resource = resource(&OtlpConfig::default());
        let mut spare = Spare::default();
        let log = |i: u64| LogRecord {
            timestamp_unix_nanos: i,
            level: Level::Info,
            target: "app".into(),
            message: None,
            fields: vec![(Key::Borrowed("n"), FieldValue::U64(i)); 8],
            trace_id: None,
            span_id: None,
            user: Default::default(),
        };
        let big: Vec<LogRecord> = (0..5_000).map(log).collect();
        let request = build::<ExportLogsServiceRequest>(&big, &resource, &mut spare);
        recycle(request, &mut spare);
        // The next, small batch leaves the big one's surplus in the spare lists, trimmed.
        let request = build::<ExportLogsServiceRequest>(&big[..1], &resource, &mut spare);
        recycle(request, &mut spare);
        assert_eq!(spare.logs.list.len(), 1);
        assert!(
            spare.logs.spare.len() <= MAX_SPARE / 4,
            "{}",
            spare.logs.spare.len()
        );
        assert!(
            spare.parts.attributes.len() <= MAX_SPARE,
            "{}",
            spare.parts.attributes.len()
        );
    }
}
