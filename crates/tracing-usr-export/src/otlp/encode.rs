//! Records to OTLP messages: spans, log records, and the request of each signal, built over
//! the previous request's messages ([`super::reuse`]).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use super::reuse::{kv, set_bytes, set_str, set_string_value, string, Lists, Parts, Refill, Spare};
use super::semconv::{root_attributes, severity, shadowed, write_trace_state};
use super::wire::Wire;
use super::OtlpConfig;
use crate::exporter::RecordKind;
use crate::record::{LogRecord, Record, SpanRecord};
use tracing_usr_core::root::AttributeValue;

pub(super) fn resource(config: &OtlpConfig) -> Resource {
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

/// Writes `record` over `out`, reusing its buffers (every field of the message is set).
fn write_span(out: &mut Span, record: &SpanRecord, parts: &mut Parts) {
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
    write_span_attributes(attributes, record, &mut parts.attributes);
    *dropped_attributes_count = 0;
    write_span_events(events, record, parts);
    *dropped_events_count = 0;
    links.clear();
    *dropped_links_count = 0;
    write_status(status, record);
}

/// A span's attributes: its own tags (those of the root's user given way to the
/// semantic-convention attributes), its own metrics, its root facts' attributes, its target.
fn write_span_attributes(attributes: &mut Vec<KeyValue>, record: &SpanRecord, spare: &mut Vec<KeyValue>) {
    let mut attrs = Refill::new(attributes, spare);
    for (k, v) in &record.meta {
        if k.starts_with("_dd.p.") || shadowed(record, k) {
            continue;
        }
        attrs.str(k, v.as_str());
    }
    for (k, v) in &record.metrics {
        if k == "_sampling_priority_v1" {
            attrs.value("sampling.priority", any_value::Value::IntValue(*v as i64));
        } else if !shadowed(record, k) {
            attrs.value(k, any_value::Value::DoubleValue(*v));
        }
    }
    root_attributes(record, |key, value| match value {
        AttributeValue::Str(s) => attrs.str(key, s),
        AttributeValue::StrArray(s) => attrs.array_of_one(key, s),
        AttributeValue::Int(i) => attrs.value(key, any_value::Value::IntValue(i)),
    });
    attrs.str("code.namespace", &record.target);
}

/// A span's events (its `tracing` events), each with its level and fields.
fn write_span_events(events: &mut Vec<span::Event>, record: &SpanRecord, parts: &mut Parts) {
    let mut list = Refill::new(events, &mut parts.events);
    for e in &record.events {
        let span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        } = list.next();
        *time_unix_nano = e.time_unix_nanos;
        set_str(name, e.name.as_str());
        let mut attrs = Refill::new(attributes, &mut parts.attributes);
        attrs.str("level", e.level.as_str());
        for (k, v) in &e.fields {
            attrs.field(k, v);
        }
        *dropped_attributes_count = 0;
    }
}

/// A span's status: an error with the `error.message`, or unset.
fn write_status(status: &mut Option<Status>, record: &SpanRecord) {
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
    write_span(&mut span, record, &mut Parts::default());
    span
}

/// Writes `record` over `out`, reusing its buffers (every field of the message is set).
fn write_log(out: &mut OtlpLog, record: &LogRecord, parts: &mut Parts) {
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
        let mut attrs = Refill::new(attributes, &mut parts.attributes);
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
    write_log(&mut log, record, &mut Parts::default());
    log
}

/// One OTLP signal's request, so that building a request over the last one's parts and taking
/// them back after encoding is written once for both signals.
pub(super) trait Signal: prost::Message + serde::Serialize + Sized {
    /// The record the signal carries.
    type Record;
    /// Its OTLP message.
    type Message: Default;
    /// Where the signal's messages wait between requests, and the parts inside them.
    fn lists(spare: &mut Spare) -> (&mut Lists<Self::Message>, &mut Parts);
    /// Writes `record` over `out`.
    fn write(out: &mut Self::Message, record: &Self::Record, parts: &mut Parts);
    /// The request of `messages`.
    fn wrap(messages: Vec<Self::Message>, resource: &Resource) -> Self;
    /// The messages of an encoded request.
    fn unwrap(self) -> Option<Vec<Self::Message>>;
    /// What the signal's records are.
    const KIND: RecordKind;
    /// The group a record must not be separated from across requests (its trace, for spans).
    fn group(record: &Self::Record) -> Option<u128>;
    /// Writes the protobuf request of `records` into `wire` (one pass, no messages).
    fn write_wire(wire: &mut Wire, records: &[&Self::Record], resource: &[(String, String)]);
}

impl Signal for ExportTraceServiceRequest {
    type Record = SpanRecord;
    type Message = Span;
    const KIND: RecordKind = RecordKind::Span;

    fn group(record: &SpanRecord) -> Option<u128> {
        Some(record.trace_id)
    }

    fn write_wire(wire: &mut Wire, records: &[&SpanRecord], resource: &[(String, String)]) {
        wire.traces(records, resource);
    }

    fn lists(spare: &mut Spare) -> (&mut Lists<Span>, &mut Parts) {
        (&mut spare.spans, &mut spare.parts)
    }

    fn write(out: &mut Span, record: &SpanRecord, parts: &mut Parts) {
        write_span(out, record, parts)
    }

    fn wrap(spans: Vec<Span>, resource: &Resource) -> Self {
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

    fn unwrap(self) -> Option<Vec<Span>> {
        let resource = self.resource_spans.into_iter().next()?;
        resource.scope_spans.into_iter().next().map(|s| s.spans)
    }
}

impl Signal for ExportLogsServiceRequest {
    type Record = LogRecord;
    type Message = OtlpLog;
    const KIND: RecordKind = RecordKind::Log;

    fn group(_: &LogRecord) -> Option<u128> {
        None
    }

    fn write_wire(wire: &mut Wire, records: &[&LogRecord], resource: &[(String, String)]) {
        wire.logs(records, resource);
    }

    fn lists(spare: &mut Spare) -> (&mut Lists<OtlpLog>, &mut Parts) {
        (&mut spare.logs, &mut spare.parts)
    }

    fn write(out: &mut OtlpLog, record: &LogRecord, parts: &mut Parts) {
        write_log(out, record, parts)
    }

    fn wrap(log_records: Vec<OtlpLog>, resource: &Resource) -> Self {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn unwrap(self) -> Option<Vec<OtlpLog>> {
        let resource = self.resource_logs.into_iter().next()?;
        resource.scope_logs.into_iter().next().map(|s| s.log_records)
    }
}

/// The request of signal `S` for `records`, written over the messages `spare` kept.
pub(super) fn build<'a, S: Signal>(
    records: impl IntoIterator<Item = &'a S::Record>,
    resource: &Resource,
    spare: &mut Spare,
) -> S
where
    S::Record: 'a,
{
    let (lists, parts) = S::lists(spare);
    let mut messages = std::mem::take(&mut lists.list);
    {
        let mut list = Refill::new(&mut messages, &mut lists.spare);
        for record in records {
            S::write(list.next(), record, parts);
        }
    }
    S::wrap(messages, resource)
}

/// Takes the messages of an encoded request back into `spare`, for the next request.
pub(super) fn recycle<S: Signal>(request: S, spare: &mut Spare) {
    if let Some(messages) = request.unwrap() {
        S::lists(spare).0.list = messages;
    }
    spare.trim();
}

/// The traces request for all the spans of `batch`, in one request (the exporter itself sends
/// at most [`MAX_RECORDS_PER_REQUEST`](super::MAX_RECORDS_PER_REQUEST) per request).
pub fn traces_request(batch: &[Record], config: &OtlpConfig) -> ExportTraceServiceRequest {
    build(
        batch.iter().filter_map(Record::as_span),
        &resource(config),
        &mut Spare::default(),
    )
}

/// The logs request for all the log records of `batch`, in one request (the exporter itself
/// sends at most [`MAX_RECORDS_PER_REQUEST`](super::MAX_RECORDS_PER_REQUEST) per request).
pub fn logs_request(batch: &[Record], config: &OtlpConfig) -> ExportLogsServiceRequest {
    build(
        batch.iter().filter_map(Record::as_log),
        &resource(config),
        &mut Spare::default(),
    )
}
