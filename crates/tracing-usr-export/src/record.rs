//! The record model shared by the layer and every exporter.

use std::borrow::Cow;
use std::fmt;

pub use tracing_usr_core::value::{Key, Text, UserTags};

/// One finished span, in the shape every exporter encodes.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// 128-bit trace id (random, shared by every span of the trace).
    pub trace_id: u128,
    /// 64-bit span id (random, never 0).
    pub span_id: u64,
    /// The parent's span id; `None` for a root without a remote parent.
    pub parent_id: Option<u64>,
    /// Whether this span is the local root of its trace in this process (it carries the user
    /// tags). A local root may still have a remote `parent_id`.
    pub local_root: bool,
    /// The span name.
    pub name: Cow<'static, str>,
    /// The span's target (module path by default).
    pub target: Cow<'static, str>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Duration in nanoseconds, from a monotonic clock.
    pub duration_nanos: u64,
    /// Whether an `ERROR`-level event was recorded directly in the span.
    pub error: bool,
    /// String tags. On the local root this includes the user tags. Values up to 24 bytes are
    /// held inline ([`Text`]), so the short values of most spans cost no allocation.
    pub meta: Vec<(Key, Text)>,
    /// Numeric tags.
    pub metrics: Vec<(Key, f64)>,
    /// `tracing` events recorded directly in the span (only collected when an exporter asks for
    /// span events, such as OTLP).
    pub events: Vec<SpanEvent>,
    /// How many leading `meta` entries still have to pass the value masking rule. The export
    /// pipeline applies it before any exporter runs, so exporters always see `0`.
    pub pending_value_mask: usize,
}

impl SpanRecord {
    /// The value of a `meta` tag.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a `metrics` tag.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A `tracing` event inside a span, as a span event.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    /// When it was recorded, in nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// The message (or `event` without one).
    pub name: Text,
    /// The event's level.
    pub level: Level,
    /// The other fields (never `usr.*`).
    pub fields: Vec<(Key, FieldValue)>,
}

/// Severity of a log record (the `tracing` level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

impl Level {
    /// Upper-case name, as `tracing` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field value of a log record.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// A string (also `Debug`/`Display` output and errors); up to 24 bytes held inline.
    Str(Text),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl serde::Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Str(s) => serializer.serialize_str(s),
            FieldValue::I64(v) => serializer.serialize_i64(*v),
            FieldValue::U64(v) => serializer.serialize_u64(*v),
            FieldValue::F64(v) if v.is_finite() => serializer.serialize_f64(*v),
            FieldValue::F64(v) => serializer.serialize_str(&tracing_usr_core::value::format_f64(*v)),
            FieldValue::Bool(v) => serializer.serialize_bool(*v),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::I64(v) => write!(f, "{v}"),
            FieldValue::U64(v) => write!(f, "{v}"),
            FieldValue::F64(v) => f.write_str(&tracing_usr_core::value::format_f64(*v)),
            FieldValue::Bool(v) => f.write_str(tracing_usr_core::value::format_bool(*v)),
        }
    }
}

/// One `tracing` event, with the user of its trace.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// When the event was recorded, in nanoseconds since the Unix epoch.
    pub timestamp_unix_nanos: u64,
    /// The event's level.
    pub level: Level,
    /// The event's target.
    pub target: Cow<'static, str>,
    /// The `message` field, if any.
    pub message: Option<Text>,
    /// The other fields (`usr.*` identity fields are never among them).
    pub fields: Vec<(Key, FieldValue)>,
    /// The trace the event belongs to, if it occurred inside a span.
    pub trace_id: Option<u128>,
    /// The span the event occurred in.
    pub span_id: Option<u64>,
    /// The user of the trace (`usr.*` tags after the mode), or empty. Shared between the records
    /// of a trace while its identity does not change.
    pub user: UserTags,
}

impl LogRecord {
    /// The value of a user tag (`usr.id`, …).
    pub fn user(&self, key: &str) -> Option<&str> {
        self.user.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of a field.
    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// What the layer hands to the export pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A finished span.
    Span(SpanRecord),
    /// An event.
    Log(LogRecord),
}

impl Record {
    /// The span, if this is one.
    pub fn as_span(&self) -> Option<&SpanRecord> {
        match self {
            Record::Span(s) => Some(s),
            Record::Log(_) => None,
        }
    }

    /// The log record, if this is one.
    pub fn as_log(&self) -> Option<&LogRecord> {
        match self {
            Record::Log(l) => Some(l),
            Record::Span(_) => None,
        }
    }
}
