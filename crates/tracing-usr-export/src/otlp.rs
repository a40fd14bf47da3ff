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
use std::iter::{Peekable, Take};
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

// ----- Writing the messages in place -----
//
// The messages of a request are written over those of the previous request: their strings,
// byte lists and attribute lists keep their buffers, and entries a request does not need wait in
// `Spare` for the next. A steady stream of batches then allocates almost nothing on the export
// thread: building a hundred small buffers per application request and freeing them after
// encoding (through the allocator's slow paths, a batch being larger than its per-thread caches)
// was the larger part of this exporter's cost.

/// Message parts kept from one request to the next.
#[derive(Debug, Default)]
struct Spare {
    /// The spans of the last traces request.
    span_list: Vec<Span>,
    /// The log records of the last logs request.
    log_list: Vec<OtlpLog>,
    /// Spans the last traces request did not need (a shorter request follows a longer one).
    spans: Vec<Span>,
    /// Log records the last logs request did not need.
    logs: Vec<OtlpLog>,
    /// Span events, from spans that had more of them than the span written over them.
    events: Vec<span::Event>,
    /// Attributes, likewise.
    attributes: Vec<KeyValue>,
}

/// At most this many attributes, and a quarter as many spans, log records and span events, wait
/// in `Spare` (more are freed): an unusually large request does not keep its memory for good.
const MAX_SPARE: usize = 4096;

impl Spare {
    fn trim(&mut self) {
        self.spans.truncate(MAX_SPARE / 4);
        self.logs.truncate(MAX_SPARE / 4);
        self.events.truncate(MAX_SPARE / 4);
        self.attributes.truncate(MAX_SPARE);
    }
}

/// Writes a list in place: each [`Refill::next`] returns the list's next entry to overwrite,
/// taken from `spare` (or created) when the list is exhausted; entries left over when the
/// `Refill` is dropped go back to `spare`.
struct Refill<'a, T> {
    list: &'a mut Vec<T>,
    used: usize,
    spare: &'a mut Vec<T>,
}

impl<'a, T: Default> Refill<'a, T> {
    fn new(list: &'a mut Vec<T>, spare: &'a mut Vec<T>) -> Self {
        Self { list, used: 0, spare }
    }

    fn next(&mut self) -> &mut T {
        if self.used == self.list.len() {
            self.list.push(self.spare.pop().unwrap_or_default());
        }
        self.used += 1;
        &mut self.list[self.used - 1]
    }
}

impl<T> Drop for Refill<'_, T> {
    fn drop(&mut self) {
        self.spare.extend(self.list.drain(self.used..));
    }
}

impl Refill<'_, KeyValue> {
    /// The next attribute, its key set to `key`: its value is left for the caller to set.
    fn key(&mut self, key: &str) -> &mut Option<AnyValue> {
        // Destructured without `..`, as in `write_span`.
        let KeyValue {
            key: out,
            value,
            key_strindex,
        } = self.next();
        set_str(out, key);
        *key_strindex = 0;
        value
    }

    /// The next attribute: `key`, with a string value.
    fn str(&mut self, key: &str, value: &str) {
        set_string_value(self.key(key), value);
    }

    /// The next attribute: `key`, with a value that is not a string.
    fn value(&mut self, key: &str, value: any_value::Value) {
        match self.key(key) {
            Some(any) => any.value = Some(value),
            none => *none = Some(AnyValue { value: Some(value) }),
        }
    }

    /// The next attribute: a record's field.
    fn field(&mut self, key: &str, value: &FieldValue) {
        match value {
            FieldValue::Str(s) => self.str(key, s.as_str()),
            FieldValue::I64(v) => self.value(key, any_value::Value::IntValue(*v)),
            FieldValue::U64(v) => match i64::try_from(*v) {
                Ok(v) => self.value(key, any_value::Value::IntValue(v)),
                Err(_) => self.str(key, &v.to_string()),
            },
            FieldValue::F64(v) => self.value(key, any_value::Value::DoubleValue(*v)),
            FieldValue::Bool(v) => self.value(key, any_value::Value::BoolValue(*v)),
        }
    }

    /// The next attribute: `key`, with an array holding one string.
    fn array_of_one(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        if let Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
        }) = out
        {
            if let [only] = values.as_mut_slice() {
                set_any_string(only, value);
                return;
            }
        }
        *out = Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![string(value)],
            })),
        });
    }
}

fn set_str(out: &mut String, value: &str) {
    out.clear();
    out.push_str(value);
}

fn set_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.clear();
    out.extend_from_slice(value);
}

fn set_any_string(out: &mut AnyValue, value: &str) {
    match &mut out.value {
        Some(any_value::Value::StringValue(s)) => set_str(s, value),
        other => *other = Some(any_value::Value::StringValue(value.to_owned())),
    }
}

fn set_string_value(out: &mut Option<AnyValue>, value: &str) {
    match out {
        Some(any) => set_any_string(any, value),
        none => *none = Some(string(value)),
    }
}

/// A semantic-convention user attribute: its key, value, and whether the value is an array.
type Semconv<'a> = (&'static str, &'a str, bool);

/// The semantic-convention user attributes of a local root, in order (at most seven), from the
/// one mapping of `tracing_usr_core::semconv`.
fn user_attributes(span: &SpanRecord) -> [Option<Semconv<'_>>; 7] {
    tracing_usr_core::semconv::user_attributes(|k| span.meta(k)).map(|a| a.map(|a| (a.key, a.value, a.array)))
}

/// Writes the W3C `tracestate` `dd` member of a root's propagation tags (empty without any).
fn write_trace_state(out: &mut String, span: &SpanRecord) {
    out.clear();
    for (k, v) in &span.meta {
        let Some(rest) = k.strip_prefix("_dd.p.") else {
            continue;
        };
        out.push_str(if out.is_empty() { "dd=" } else { ";" });
        out.push_str("t.");
        out.push_str(rest);
        out.push(':');
        for c in v.as_str().chars() {
            out.push(if c == '=' { '~' } else { c });
        }
    }
}

/// Writes `record` over `out`, reusing its buffers (every field of the message is set).
fn write_span(
    out: &mut Span,
    record: &SpanRecord,
    events_spare: &mut Vec<span::Event>,
    attributes_spare: &mut Vec<KeyValue>,
) {
    // Destructured without `..`: a field added to the message in a later version must be set
    // here too (it would otherwise keep the previous request's value).
    let Span {
        trace_id,
        span_id,
        trace_state,
        parent_span_id,
        flags,
        name,
        kind,
        start_time_unix_nano,
        end_time_unix_nano,
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status,
    } = out;
    set_bytes(trace_id, &record.trace_id.to_be_bytes());
    set_bytes(span_id, &record.span_id.to_be_bytes());
    match record.parent_id {
        Some(parent) => set_bytes(parent_span_id, &parent.to_be_bytes()),
        None => parent_span_id.clear(),
    }
    if record.local_root {
        write_trace_state(trace_state, record);
    } else {
        trace_state.clear();
    }
    *flags = 0;
    set_str(name, &record.name);
    *kind = if record.local_root && record.parent_id.is_some() {
        span::SpanKind::Server as i32
    } else {
        span::SpanKind::Internal as i32
    };
    *start_time_unix_nano = record.start_unix_nanos;
    *end_time_unix_nano = record.start_unix_nanos.saturating_add(record.duration_nanos);
    {
        let semconv = if record.local_root {
            user_attributes(record)
        } else {
            [None; 7]
        };
        // A tag whose key is also a semantic-convention attribute of this span gives way to it.
        let shadowed = |key: &str| semconv.iter().flatten().any(|(k, _, _)| *k == key);
        let mut attrs = Refill::new(attributes, attributes_spare);
        for (k, v) in &record.meta {
            if k.starts_with("_dd.p.") || shadowed(k) {
                continue;
            }
            attrs.str(k, v.as_str());
        }
        for (k, v) in &record.metrics {
            if k == "_sampling_priority_v1" {
                attrs.value("sampling.priority", any_value::Value::IntValue(*v as i64));
            } else if !shadowed(k) {
                attrs.value(k, any_value::Value::DoubleValue(*v));
            }
        }
        for (key, value, array) in semconv.iter().flatten() {
            if *array {
                attrs.array_of_one(key, value);
            } else {
                attrs.str(key, value);
            }
        }
        attrs.str("code.namespace", &record.target);
    }
    *dropped_attributes_count = 0;
    {
        let mut list = Refill::new(events, events_spare);
        for e in &record.events {
            let span::Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            } = list.next();
            *time_unix_nano = e.time_unix_nanos;
            set_str(name, e.name.as_str());
            let mut attrs = Refill::new(attributes, attributes_spare);
            attrs.str("level", e.level.as_str());
            for (k, v) in &e.fields {
                attrs.field(k, v);
            }
            *dropped_attributes_count = 0;
        }
    }
    *dropped_events_count = 0;
    links.clear();
    *dropped_links_count = 0;
    if record.error {
        let message = record.meta("error.message").unwrap_or_default();
        let code = opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32;
        match status {
            Some(status) => {
                set_str(&mut status.message, message);
                status.code = code;
            }
            none => {
                *none = Some(Status {
                    message: message.to_owned(),
                    code,
                })
            }
        }
    } else {
        *status = None;
    }
}

/// One record's OTLP span.
pub fn otlp_span(record: &SpanRecord) -> Span {
    let mut span = Span::default();
    write_span(&mut span, record, &mut Vec::new(), &mut Vec::new());
    span
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

/// Writes `record` over `out`, reusing its buffers (every field of the message is set).
fn write_log(out: &mut OtlpLog, record: &LogRecord, attributes_spare: &mut Vec<KeyValue>) {
    // Destructured without `..`, as in `write_span`.
    let OtlpLog {
        time_unix_nano,
        observed_time_unix_nano,
        severity_number,
        severity_text,
        body,
        attributes,
        dropped_attributes_count,
        flags,
        trace_id,
        span_id,
        event_name,
    } = out;
    *time_unix_nano = record.timestamp_unix_nanos;
    *observed_time_unix_nano = record.timestamp_unix_nanos;
    *severity_number = severity(record.level);
    set_str(severity_text, record.level.as_str());
    match &record.message {
        Some(message) => set_string_value(body, message.as_str()),
        None => *body = None,
    }
    {
        let mut attrs = Refill::new(attributes, attributes_spare);
        for (k, v) in &record.fields {
            attrs.field(k, v);
        }
        for (k, v) in record.user.iter() {
            attrs.str(k, v.as_str());
        }
        attrs.str("code.namespace", &record.target);
    }
    *dropped_attributes_count = 0;
    *flags = 0;
    match record.trace_id {
        Some(t) => set_bytes(trace_id, &t.to_be_bytes()),
        None => trace_id.clear(),
    }
    match record.span_id {
        Some(s) => set_bytes(span_id, &s.to_be_bytes()),
        None => span_id.clear(),
    }
    event_name.clear();
}

/// One record's OTLP log record.
pub fn otlp_log(record: &LogRecord) -> OtlpLog {
    let mut log = OtlpLog::default();
    write_log(&mut log, record, &mut Vec::new());
    log
}

/// The traces request for `records`, written over the spans `spare` kept.
fn build_traces<'a>(
    records: impl IntoIterator<Item = &'a SpanRecord>,
    resource: &Resource,
    spare: &mut Spare,
) -> ExportTraceServiceRequest {
    let mut spans = std::mem::take(&mut spare.span_list);
    {
        let Spare {
            spans: spans_spare,
            events,
            attributes,
            ..
        } = spare;
        let mut list = Refill::new(&mut spans, spans_spare);
        for record in records {
            write_span(list.next(), record, events, attributes);
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Takes the spans of an encoded request back into `spare`, for the next request.
fn recycle_traces(request: ExportTraceServiceRequest, spare: &mut Spare) {
    if let Some(spans) = request
        .resource_spans
        .into_iter()
        .next()
        .and_then(|r| r.scope_spans.into_iter().next())
        .map(|s| s.spans)
    {
        spare.span_list = spans;
    }
    spare.trim();
}

/// The logs request for `records`, written over the records `spare` kept.
fn build_logs<'a>(
    records: impl IntoIterator<Item = &'a LogRecord>,
    resource: &Resource,
    spare: &mut Spare,
) -> ExportLogsServiceRequest {
    let mut logs = std::mem::take(&mut spare.log_list);
    {
        let Spare {
            logs: logs_spare,
            attributes,
            ..
        } = spare;
        let mut list = Refill::new(&mut logs, logs_spare);
        for record in records {
            write_log(list.next(), record, attributes);
        }
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: logs,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Takes the log records of an encoded request back into `spare`, for the next request.
fn recycle_logs(request: ExportLogsServiceRequest, spare: &mut Spare) {
    if let Some(logs) = request
        .resource_logs
        .into_iter()
        .next()
        .and_then(|r| r.scope_logs.into_iter().next())
        .map(|s| s.log_records)
    {
        spare.log_list = logs;
    }
    spare.trim();
}

/// The traces request for all the spans of `batch`, in one request (the exporter itself sends
/// at most [`MAX_RECORDS_PER_REQUEST`] per request).
pub fn traces_request(batch: &[Record], config: &OtlpConfig) -> ExportTraceServiceRequest {
    build_traces(
        batch.iter().filter_map(Record::as_span),
        &resource(config),
        &mut Spare::default(),
    )
}

/// The logs request for all the log records of `batch`, in one request (the exporter itself
/// sends at most [`MAX_RECORDS_PER_REQUEST`] per request).
pub fn logs_request(batch: &[Record], config: &OtlpConfig) -> ExportLogsServiceRequest {
    build_logs(
        batch.iter().filter_map(Record::as_log),
        &resource(config),
        &mut Spare::default(),
    )
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
        })
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

    /// `records` in requests of at most [`MAX_RECORDS_PER_REQUEST`], each written by `build`
    /// over the parts `recycle` took back from the previous one.
    fn send_in_requests<I, M>(
        &mut self,
        url: &str,
        records: I,
        build: impl Fn(Take<&mut Peekable<I>>, &Resource, &mut Spare) -> M,
        recycle: impl Fn(M, &mut Spare),
    ) -> Result<(), ExportError>
    where
        I: Iterator,
        M: prost::Message + serde::Serialize,
    {
        let mut records = records.peekable();
        while records.peek().is_some() {
            let request = build(
                records.by_ref().take(MAX_RECORDS_PER_REQUEST),
                &self.resource,
                &mut self.spare,
            );
            let body = self.encode(&request);
            recycle(request, &mut self.spare);
            self.post(url, body?)?;
        }
        Ok(())
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
        // Traces and logs may go to different collectors: each signal is sent whatever befell
        // the other. Within a signal, a request that fails after its retries ends the batch (the
        // error counts it): each further request would wait out the same retry budget while the
        // queue fills.
        let traces = match self.config.traces_endpoint.clone() {
            Some(url) => self.send_in_requests(
                &url,
                batch.iter().filter_map(Record::as_span),
                |records, resource, spare| build_traces(records, resource, spare),
                recycle_traces,
            ),
            None => Ok(()),
        };
        let logs = match self.config.logs_endpoint.clone() {
            Some(url) => self.send_in_requests(
                &url,
                batch.iter().filter_map(Record::as_log),
                |records, resource, spare| build_logs(records, resource, spare),
                recycle_logs,
            ),
            None => Ok(()),
        };
        traces.and(logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Key, SpanEvent, Text};
    use proptest::prelude::*;

    fn text(s: &str) -> Text {
        Text::from(s)
    }

    fn field_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            "[a-z=]{0,30}".prop_map(|s| FieldValue::Str(text(&s))),
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
            prop::collection::vec((key(), "[a-z0-9=]{0,30}"), 0..10),
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
        )
            .prop_map(
                |((trace_id, span_id, parent_id, local_root, error), meta, metrics, events)| {
                    Record::Span(SpanRecord {
                        trace_id,
                        span_id,
                        parent_id,
                        local_root,
                        name: "request".into(),
                        target: "app::handler".into(),
                        start_unix_nanos: 1_700_000_000_000_000_000,
                        duration_nanos: 1_000,
                        error,
                        meta: meta.into_iter().map(|(k, v)| (k, text(&v))).collect(),
                        metrics: metrics.into_iter().map(|(k, v)| (Key::Borrowed(k), v)).collect(),
                        events,
                        pending_value_mask: 0,
                    })
                },
            )
    }

    fn log_record() -> impl Strategy<Value = Record> {
        (
            (any::<u64>(), level(), any::<Option<u128>>(), any::<Option<u64>>()),
            prop::option::of("[a-z ]{0,20}"),
            prop::collection::vec((key(), field_value()), 0..4),
            prop::collection::vec((key(), "[a-z0-9]{0,30}"), 0..4),
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
                let fresh = build_traces(spans(), &resource, &mut Spare::default());
                let reused = build_traces(spans(), &resource, &mut spare);
                prop_assert_eq!(&reused, &fresh);
                recycle_traces(reused, &mut spare);
                let logs = || batch.iter().filter_map(Record::as_log);
                let fresh = build_logs(logs(), &resource, &mut Spare::default());
                let reused = build_logs(logs(), &resource, &mut spare);
                prop_assert_eq!(&reused, &fresh);
                recycle_logs(reused, &mut spare);
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
        let request = build_logs(&big, &resource, &mut spare);
        recycle_logs(request, &mut spare);
        // The next, small batch leaves the big one's surplus in the spare lists, trimmed.
        let request = build_logs(&big[..1], &resource, &mut spare);
        recycle_logs(request, &mut spare);
        assert_eq!(spare.log_list.len(), 1);
        assert!(spare.logs.len() <= MAX_SPARE / 4, "{}", spare.logs.len());
        assert!(spare.attributes.len() <= MAX_SPARE, "{}", spare.attributes.len());
    }
}
