//! The OTLP/HTTP exporter: traces to `/v1/traces` and logs to `/v1/logs`, protobuf (or JSON)
//! encoded with `opentelemetry-proto`'s types, optionally gzip-compressed.
//!
//! The local root carries every tag of the user-tracking contract as a string attribute, except
//! `_sampling_priority_v1` (the integer `sampling.priority`) and the `_dd.p.*` propagation state
//! (in the span's W3C `trace_state`), plus the OpenTelemetry semantic-convention user attributes
//! derived from the public identity (`user.id`, `enduser.id` or `user.hash`, `user.email`,
//! `user.name`, `user.full_name`, `user.roles`, `session.id`).

use std::fmt;
use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use crate::exporter::{ExportError, ExportErrorKind, Exporter};
use crate::http::{Request, RetryPolicy, Sender};
use crate::record::{FieldValue, Level, LogRecord, Record, SpanRecord};

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

/// Sends spans and log records to an OTLP/HTTP collector.
pub struct OtlpExporter {
    config: OtlpConfig,
    sender: Sender,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("config", &self.config)
            .finish()
    }
}

fn string(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    }
}

fn kv(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn field_value(value: &FieldValue) -> AnyValue {
    let value = match value {
        FieldValue::Str(s) => any_value::Value::StringValue(s.as_str().to_owned()),
        FieldValue::I64(v) => any_value::Value::IntValue(*v),
        FieldValue::U64(v) => match i64::try_from(*v) {
            Ok(v) => any_value::Value::IntValue(v),
            Err(_) => any_value::Value::StringValue(v.to_string()),
        },
        FieldValue::F64(v) => any_value::Value::DoubleValue(*v),
        FieldValue::Bool(v) => any_value::Value::BoolValue(*v),
    };
    AnyValue { value: Some(value) }
}

fn resource(config: &OtlpConfig) -> Resource {
    Resource {
        attributes: config
            .resource
            .iter()
            .map(|(k, v)| kv(k.clone(), string(v.clone())))
            .collect(),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "tracing-usr".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// The semantic-convention user attributes of a local root (spec f).
fn user_attributes(span: &SpanRecord) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let Some(id) = span.meta("usr.id") else { return out };
    let anonymized = span.meta("_dd.appsec.user.collection_mode") == Some("anonymization");
    if anonymized {
        out.push(kv("user.hash", string(id)));
    } else {
        out.push(kv("user.id", string(id)));
        out.push(kv("enduser.id", string(id)));
    }
    if let Some(email) = span.meta("usr.email") {
        out.push(kv("user.email", string(email)));
    }
    if let Some(login) = span.meta("usr.login").filter(|_| !anonymized) {
        out.push(kv("user.name", string(login)));
    }
    if let Some(name) = span.meta("usr.name") {
        out.push(kv("user.full_name", string(name)));
    }
    if let Some(role) = span.meta("usr.role") {
        out.push(kv(
            "user.roles",
            AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![string(role)],
                })),
            },
        ));
    }
    if let Some(session) = span.meta("usr.session_id") {
        out.push(kv("session.id", string(session)));
    }
    out
}

/// The W3C `tracestate` `dd` member of a root's propagation tags.
fn trace_state(span: &SpanRecord) -> String {
    let parts: Vec<String> = span
        .meta
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("_dd.p.")?;
            Some(format!("t.{rest}:{}", v.replace('=', "~")))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("dd={}", parts.join(";"))
    }
}

/// One record's OTLP span.
pub fn otlp_span(record: &SpanRecord) -> Span {
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(record.meta.len() + record.metrics.len() + 8);
    for (k, v) in &record.meta {
        if k.starts_with("_dd.p.") {
            continue;
        }
        attributes.push(kv(k.to_string(), string(v.clone())));
    }
    for (k, v) in &record.metrics {
        if k == "_sampling_priority_v1" {
            attributes.push(kv(
                "sampling.priority",
                AnyValue {
                    value: Some(any_value::Value::IntValue(*v as i64)),
                },
            ));
        } else {
            attributes.push(kv(
                k.to_string(),
                AnyValue {
                    value: Some(any_value::Value::DoubleValue(*v)),
                },
            ));
        }
    }
    if record.local_root {
        for semconv in user_attributes(record) {
            attributes.retain(|a| a.key != semconv.key);
            attributes.push(semconv);
        }
    }
    attributes.push(kv("code.namespace", string(record.target.to_string())));
    let events = record
        .events
        .iter()
        .map(|e| span::Event {
            time_unix_nano: e.time_unix_nanos,
            name: e.name.as_str().to_owned(),
            attributes: std::iter::once(kv("level", string(e.level.as_str())))
                .chain(e.fields.iter().map(|(k, v)| kv(k.to_string(), field_value(v))))
                .collect(),
            ..Default::default()
        })
        .collect();
    Span {
        trace_id: record.trace_id.to_be_bytes().to_vec(),
        span_id: record.span_id.to_be_bytes().to_vec(),
        parent_span_id: record
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        trace_state: if record.local_root {
            trace_state(record)
        } else {
            String::new()
        },
        name: record.name.to_string(),
        kind: if record.local_root && record.parent_id.is_some() {
            span::SpanKind::Server as i32
        } else {
            span::SpanKind::Internal as i32
        },
        start_time_unix_nano: record.start_unix_nanos,
        end_time_unix_nano: record.start_unix_nanos.saturating_add(record.duration_nanos),
        attributes,
        events,
        status: record.error.then(|| Status {
            message: record.meta("error.message").unwrap_or_default().to_owned(),
            code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn severity(level: Level) -> i32 {
    // SeverityNumber: TRACE=1, DEBUG=5, INFO=9, WARN=13, ERROR=17.
    match level {
        Level::Trace => 1,
        Level::Debug => 5,
        Level::Info => 9,
        Level::Warn => 13,
        Level::Error => 17,
    }
}

/// One record's OTLP log record.
pub fn otlp_log(record: &LogRecord) -> OtlpLog {
    let mut attributes: Vec<KeyValue> = record
        .fields
        .iter()
        .map(|(k, v)| kv(k.to_string(), field_value(v)))
        .collect();
    for (k, v) in record.user.iter() {
        attributes.push(kv(k.to_string(), string(v.clone())));
    }
    attributes.push(kv("code.namespace", string(record.target.to_string())));
    OtlpLog {
        time_unix_nano: record.timestamp_unix_nanos,
        observed_time_unix_nano: record.timestamp_unix_nanos,
        severity_number: severity(record.level),
        severity_text: record.level.as_str().to_owned(),
        body: record.message.clone().map(string),
        attributes,
        trace_id: record
            .trace_id
            .map(|t| t.to_be_bytes().to_vec())
            .unwrap_or_default(),
        span_id: record
            .span_id
            .map(|s| s.to_be_bytes().to_vec())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The traces request for the spans of `batch`.
pub fn traces_request(batch: &[Record], config: &OtlpConfig) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(config)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: batch.iter().filter_map(Record::as_span).map(otlp_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The logs request for the log records of `batch`.
pub fn logs_request(batch: &[Record], config: &OtlpConfig) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(config)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: batch.iter().filter_map(Record::as_log).map(otlp_log).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl OtlpExporter {
    /// An exporter for `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be created.
    pub fn new(config: OtlpConfig) -> Result<Self, ExportError> {
        let sender = Sender::new(config.timeout, config.retry.clone(), None)?;
        Ok(Self { config, sender })
    }

    fn post(&mut self, url: &str, body: Vec<u8>) -> Result<(), ExportError> {
        let mut headers: Vec<(String, String)> = vec![(
            "Content-Type".into(),
            match self.config.protocol {
                OtlpProtocol::HttpProtobuf => "application/x-protobuf",
                OtlpProtocol::HttpJson => "application/json",
            }
            .into(),
        )];
        let body = if self.config.gzip {
            headers.push(("Content-Encoding".into(), "gzip".into()));
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body)?;
            encoder.finish()?
        } else {
            body
        };
        headers.extend(self.config.headers.iter().cloned());
        let request = Request {
            url: url.to_owned(),
            method: reqwest::Method::POST,
            headers,
            body: body.into(),
        };
        self.sender.send(&request).map(|_| ())
    }

    fn encode<M: prost::Message + serde::Serialize>(&self, message: &M) -> Result<Vec<u8>, ExportError> {
        match self.config.protocol {
            OtlpProtocol::HttpProtobuf => Ok(message.encode_to_vec()),
            OtlpProtocol::HttpJson => serde_json::to_vec(message)
                .map_err(|e| ExportError::new(ExportErrorKind::Encode, e.to_string())),
        }
    }
}

impl Exporter for OtlpExporter {
    fn name(&self) -> &str {
        "otlp"
    }

    fn wants_span_events(&self) -> bool {
        true
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let mut result = Ok(());
        if let Some(url) = self.config.traces_endpoint.clone() {
            if batch.iter().any(|r| r.as_span().is_some()) {
                let body = self.encode(&traces_request(batch, &self.config))?;
                result = self.post(&url, body);
            }
        }
        if let Some(url) = self.config.logs_endpoint.clone() {
            if batch.iter().any(|r| r.as_log().is_some()) {
                let body = self.encode(&logs_request(batch, &self.config))?;
                let logs = self.post(&url, body);
                result = result.and(logs);
            }
        }
        result
    }
}
