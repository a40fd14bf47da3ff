//! OTLP/protobuf written straight from the records, in one pass: no `opentelemetry-proto`
//! message tree, no second walk to count lengths. A leaf message (an attribute and its value)
//! has its length computed exactly before it is written; a container (a span, an event, a
//! scope) gets a four-byte length prefix, patched once its contents are written (a varint with
//! redundant continuation bytes, which every protobuf decoder reads). The output decodes to
//! the same messages as [`super::encode`] builds (the property test holds it to that).
//!
//! Field numbers are those of the OTLP proto definitions (`opentelemetry/proto/**/*.proto`).

use super::semconv::{root_attributes, severity, shadowed, write_trace_state};
use crate::record::{FieldValue, LogRecord, SpanRecord};
use tracing_usr_core::root::AttributeValue;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// `Export*ServiceRequest.resource_*` (1), `Resource*.resource` (1), `Resource*.scope_*` (2),
/// `Scope*.scope` (1), `Scope*.spans` / `log_records` (2), `Resource.attributes` (1).
mod request {
    pub(super) const RESOURCE_ITEMS: u32 = 1;
    pub(super) const RESOURCE: u32 = 1;
    pub(super) const SCOPE_ITEMS: u32 = 2;
    pub(super) const SCOPE: u32 = 1;
    pub(super) const RECORDS: u32 = 2;
    pub(super) const RESOURCE_ATTRIBUTES: u32 = 1;
    pub(super) const SCOPE_NAME: u32 = 1;
    pub(super) const SCOPE_VERSION: u32 = 2;
}

/// `opentelemetry.proto.trace.v1.Span`, its `Event` and `Status`.
mod span {
    pub(super) const TRACE_ID: u32 = 1;
    pub(super) const SPAN_ID: u32 = 2;
    pub(super) const TRACE_STATE: u32 = 3;
    pub(super) const PARENT_SPAN_ID: u32 = 4;
    pub(super) const NAME: u32 = 5;
    pub(super) const KIND: u32 = 6;
    pub(super) const START: u32 = 7;
    pub(super) const END: u32 = 8;
    pub(super) const ATTRIBUTES: u32 = 9;
    pub(super) const EVENTS: u32 = 11;
    pub(super) const STATUS: u32 = 15;
    pub(super) const EVENT_TIME: u32 = 1;
    pub(super) const EVENT_NAME: u32 = 2;
    pub(super) const EVENT_ATTRIBUTES: u32 = 3;
    pub(super) const STATUS_MESSAGE: u32 = 2;
    pub(super) const STATUS_CODE: u32 = 3;
    /// `SpanKind`: internal, server.
    pub(super) const KIND_INTERNAL: u64 = 1;
    pub(super) const KIND_SERVER: u64 = 2;
    /// `Status.StatusCode.STATUS_CODE_ERROR`.
    pub(super) const CODE_ERROR: u64 = 2;
}

/// `opentelemetry.proto.logs.v1.LogRecord`.
mod log {
    pub(super) const TIME: u32 = 1;
    pub(super) const SEVERITY_NUMBER: u32 = 2;
    pub(super) const SEVERITY_TEXT: u32 = 3;
    pub(super) const BODY: u32 = 5;
    pub(super) const ATTRIBUTES: u32 = 6;
    pub(super) const TRACE_ID: u32 = 9;
    pub(super) const SPAN_ID: u32 = 10;
    pub(super) const OBSERVED_TIME: u32 = 11;
}

/// `KeyValue`, `AnyValue` (a oneof: always written, even when empty), `ArrayValue`.
mod value {
    pub(super) const KEY: u32 = 1;
    pub(super) const VALUE: u32 = 2;
    pub(super) const STRING: u32 = 1;
    pub(super) const BOOL: u32 = 2;
    pub(super) const INT: u32 = 3;
    pub(super) const DOUBLE: u32 = 4;
    pub(super) const ARRAY: u32 = 5;
    pub(super) const ARRAY_VALUES: u32 = 1;
}

/// A value of an attribute.
#[derive(Clone, Copy)]
enum Any<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// An array of one string.
    One(&'a str),
}

#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn len_field(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3)) + varint_len(len as u64) + len
}

impl Any<'_> {
    /// The encoded length of the `AnyValue` message.
    #[inline]
    fn len(self) -> usize {
        match self {
            Any::Str(s) => len_field(value::STRING, s.len()),
            Any::Int(i) => 1 + varint_len(i as u64),
            Any::Double(_) => 9,
            Any::Bool(_) => 2,
            Any::One(s) => {
                let inner = len_field(value::STRING, s.len());
                len_field(value::ARRAY, len_field(value::ARRAY_VALUES, inner))
            }
        }
    }
}

/// The bytes of one request, written in place; kept between requests.
#[derive(Debug, Default)]
pub(super) struct Wire {
    pub(super) buf: Vec<u8>,
}

impl Wire {
    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    #[inline]
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    /// A string or bytes field; empty ones are left out, as proto3 does.
    #[inline]
    fn bytes(&mut self, field: u32, data: &[u8]) {
        if !data.is_empty() {
            self.key(field, LEN);
            self.varint(data.len() as u64);
            self.buf.extend_from_slice(data);
        }
    }

    #[inline]
    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    #[inline]
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    /// Opens a nested message: its key and a four-byte length placeholder.
    fn open(&mut self, field: u32) -> usize {
        self.key(field, LEN);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0x80, 0x80, 0x80, 0x00]);
        at
    }

    /// Writes the length of the message opened at `at`, as a four-byte varint.
    fn close(&mut self, at: usize) {
        let len = self.buf.len() - at - 4;
        debug_assert!(len < 1 << 28, "an OTLP message over 256 MiB");
        for (i, byte) in self.buf[at..at + 4].iter_mut().enumerate() {
            *byte = ((len >> (7 * i)) & 0x7f) as u8 | if i < 3 { 0x80 } else { 0 };
        }
    }

    /// One `AnyValue` message's contents.
    #[inline]
    fn any(&mut self, v: Any<'_>) {
        match v {
            Any::Str(s) => {
                self.key(value::STRING, LEN);
                self.varint(s.len() as u64);
                self.buf.extend_from_slice(s.as_bytes());
            }
            Any::Int(i) => {
                self.key(value::INT, VARINT);
                self.varint(i as u64);
            }
            Any::Double(d) => {
                self.key(value::DOUBLE, FIXED64);
                self.buf.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Any::Bool(b) => {
                self.key(value::BOOL, VARINT);
                self.buf.push(u8::from(b));
            }
            Any::One(s) => {
                let inner = len_field(value::STRING, s.len());
                self.key(value::ARRAY, LEN);
                self.varint(len_field(value::ARRAY_VALUES, inner) as u64);
                self.key(value::ARRAY_VALUES, LEN);
                self.varint(inner as u64);
                self.any(Any::Str(s));
            }
        }
    }

    /// One `KeyValue` in field `field`, its length computed exactly.
    #[inline]
    fn attribute(&mut self, field: u32, key: &str, v: Any<'_>) {
        let any = v.len();
        let key_len = if key.is_empty() {
            0
        } else {
            len_field(value::KEY, key.len())
        };
        self.key(field, LEN);
        self.varint((key_len + len_field(value::VALUE, any)) as u64);
        self.bytes(value::KEY, key.as_bytes());
        self.key(value::VALUE, LEN);
        self.varint(any as u64);
        self.any(v);
    }

    fn field_attribute(&mut self, field: u32, key: &str, v: &FieldValue) {
        let any = match v {
            FieldValue::Str(s) => Any::Str(s.as_str()),
            FieldValue::I64(i) => Any::Int(*i),
            FieldValue::U64(u) => match i64::try_from(*u) {
                Ok(i) => Any::Int(i),
                Err(_) => return self.attribute(field, key, Any::Str(&u.to_string())),
            },
            FieldValue::F64(d) => Any::Double(*d),
            FieldValue::Bool(b) => Any::Bool(*b),
        };
        self.attribute(field, key, any);
    }

    /// The request's head: the resource (its attributes) and the scope, leaving the scope's
    /// list open; returns the three positions to close, innermost last.
    fn head(&mut self, resource: &[(String, String)]) -> [usize; 2] {
        let items = self.open(request::RESOURCE_ITEMS);
        let res = self.open(request::RESOURCE);
        for (k, v) in resource {
            self.attribute(request::RESOURCE_ATTRIBUTES, k, Any::Str(v));
        }
        self.close(res);
        let scope_items = self.open(request::SCOPE_ITEMS);
        let scope = self.open(request::SCOPE);
        self.bytes(request::SCOPE_NAME, b"tracing-usr");
        self.bytes(request::SCOPE_VERSION, env!("CARGO_PKG_VERSION").as_bytes());
        self.close(scope);
        [items, scope_items]
    }

    fn tail(&mut self, [items, scope_items]: [usize; 2]) {
        self.close(scope_items);
        self.close(items);
    }

    /// An `ExportTraceServiceRequest` of `spans` over `buf` (cleared first).
    pub(super) fn traces(&mut self, spans: &[&SpanRecord], resource: &[(String, String)]) -> &[u8] {
        self.buf.clear();
        let open = self.head(resource);
        let mut trace_state = String::new();
        for record in spans {
            self.span(record, &mut trace_state);
        }
        self.tail(open);
        &self.buf
    }

    /// An `ExportLogsServiceRequest` of `logs` over `buf` (cleared first).
    pub(super) fn logs(&mut self, logs: &[&LogRecord], resource: &[(String, String)]) -> &[u8] {
        self.buf.clear();
        let open = self.head(resource);
        for record in logs {
            self.log(record);
        }
        self.tail(open);
        &self.buf
    }

    fn span(&mut self, record: &SpanRecord, trace_state: &mut String) {
        let at = self.open(request::RECORDS);
        self.bytes(span::TRACE_ID, &record.trace_id.to_be_bytes());
        self.bytes(span::SPAN_ID, &record.span_id.to_be_bytes());
        if record.local_root {
            write_trace_state(trace_state, record);
            self.bytes(span::TRACE_STATE, trace_state.as_bytes());
        }
        if let Some(parent) = record.parent_id {
            self.bytes(span::PARENT_SPAN_ID, &parent.to_be_bytes());
        }
        self.bytes(span::NAME, record.name.as_bytes());
        let server = record.local_root && record.parent_id.is_some();
        self.uint(
            span::KIND,
            if server {
                span::KIND_SERVER
            } else {
                span::KIND_INTERNAL
            },
        );
        self.fixed64(span::START, record.start_unix_nanos);
        self.fixed64(
            span::END,
            record.start_unix_nanos.saturating_add(record.duration_nanos),
        );
        self.span_attributes(record);
        for e in &record.events {
            let event = self.open(span::EVENTS);
            self.fixed64(span::EVENT_TIME, e.time_unix_nanos);
            self.bytes(span::EVENT_NAME, e.name.as_str().as_bytes());
            self.attribute(span::EVENT_ATTRIBUTES, "level", Any::Str(e.level.as_str()));
            for (k, v) in &e.fields {
                self.field_attribute(span::EVENT_ATTRIBUTES, k, v);
            }
            self.close(event);
        }
        if record.error {
            let status = self.open(span::STATUS);
            self.bytes(
                span::STATUS_MESSAGE,
                record.meta("error.message").unwrap_or_default().as_bytes(),
            );
            self.uint(span::STATUS_CODE, span::CODE_ERROR);
            self.close(status);
        }
        self.close(at);
    }

    /// As `encode::write_span_attributes`: tags (giving way to the root's semantic-convention
    /// user attributes), metrics, the user attributes, the target.
    fn span_attributes(&mut self, record: &SpanRecord) {
        for (k, v) in &record.meta {
            if !k.starts_with("_dd.p.") && !shadowed(record, k) {
                self.attribute(span::ATTRIBUTES, k, Any::Str(v.as_str()));
            }
        }
        for (k, v) in &record.metrics {
            if k == "_sampling_priority_v1" {
                self.attribute(span::ATTRIBUTES, "sampling.priority", Any::Int(*v as i64));
            } else if !shadowed(record, k) {
                self.attribute(span::ATTRIBUTES, k, Any::Double(*v));
            }
        }
        root_attributes(record, |key, value| {
            let v = match value {
                AttributeValue::Str(s) => Any::Str(s),
                AttributeValue::StrArray(s) => Any::One(s),
                AttributeValue::Int(i) => Any::Int(i),
            };
            self.attribute(span::ATTRIBUTES, key, v);
        });
        self.attribute(span::ATTRIBUTES, "code.namespace", Any::Str(&record.target));
    }

    fn log(&mut self, record: &LogRecord) {
        let at = self.open(request::RECORDS);
        self.fixed64(log::TIME, record.timestamp_unix_nanos);
        self.uint(log::SEVERITY_NUMBER, severity(record.level) as u64);
        self.bytes(log::SEVERITY_TEXT, record.level.as_str().as_bytes());
        if let Some(message) = &record.message {
            self.key(log::BODY, LEN);
            let v = Any::Str(message.as_str());
            self.varint(v.len() as u64);
            self.any(v);
        }
        for (k, v) in &record.fields {
            self.field_attribute(log::ATTRIBUTES, k, v);
        }
        for (k, v) in record.user.iter() {
            self.attribute(log::ATTRIBUTES, k, Any::Str(v.as_str()));
        }
        self.attribute(log::ATTRIBUTES, "code.namespace", Any::Str(&record.target));
        if let Some(t) = record.trace_id {
            self.bytes(log::TRACE_ID, &t.to_be_bytes());
        }
        if let Some(s) = record.span_id {
            self.bytes(log::SPAN_ID, &s.to_be_bytes());
        }
        self.fixed64(log::OBSERVED_TIME, record.timestamp_unix_nanos);
        self.close(at);
    }
}
