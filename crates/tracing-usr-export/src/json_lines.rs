//! The embedded default exporter: one JSON object per line.
//!
//! The format is documented in `docs/json-lines.md` of the repository; the field names
//! `trace_id`, `span_id`, `parent_id`, `name`, `meta` and `metrics` are fixed.

use serde::ser::{SerializeMap, Serializer};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;

use serde_json::Value;

use crate::exporter::{ExportError, Exporter};
use crate::record::{FieldValue, Record, SpanRecord};

/// Writes records as JSON lines to stdout, a file or any writer.
pub struct JsonLinesExporter {
    out: BufWriter<Box<dyn Write + Send>>,
    target: String,
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter")
            .field("target", &self.target)
            .finish()
    }
}

impl JsonLinesExporter {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()), "stdout")
    }

    /// Appends to the file at `path`, creating it if needed.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(Box::new(file), format!("file:{}", path.display())))
    }

    /// Writes to any writer; `target` names it in diagnostics.
    pub fn new(out: Box<dyn Write + Send>, target: impl Into<String>) -> Self {
        Self {
            out: BufWriter::new(out),
            target: target.into(),
        }
    }
}

impl Exporter for JsonLinesExporter {
    fn name(&self) -> &str {
        "json-lines"
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let mut line = Vec::with_capacity(512);
        for record in batch {
            line.clear();
            write_json(&mut line, record)
                .map_err(|e| ExportError::new(crate::ExportErrorKind::Encode, e.to_string()))?;
            line.push(b'\n');
            self.out.write_all(&line)?;
        }
        self.out.flush()?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}

/// A trace id as 32 lowercase hex digits.
pub fn trace_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

/// A span id as 16 lowercase hex digits.
pub fn span_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Fields or tags, as a JSON map.
struct Pairs<'a, V>(&'a [(crate::record::Key, V)]);
impl<V: serde::Serialize> serde::Serialize for Pairs<'_, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// A span's tags, as a JSON map: its own, then its root facts' (Datadog names).
struct Meta<'a>(&'a SpanRecord);
impl serde::Serialize for Meta<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut map = serializer.serialize_map(Some(span.tag_count()))?;
        for (k, v) in &span.meta {
            map.serialize_entry(k.as_ref(), v)?;
        }
        if let Some(facts) = &span.root {
            if let ControlFlow::Break(e) = facts.visit_tags(|k, v| match map.serialize_entry(k, v) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }) {
                return Err(e);
            }
        }
        map.end()
    }
}

/// A span's numeric tags (a root's sampling priority included), as a JSON map (non-finite
/// values as strings).
struct Numbers<'a>(&'a SpanRecord);
impl serde::Serialize for Numbers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.0.all_metrics() {
            map.serialize_entry(k, &FieldValue::F64(v))?;
        }
        map.end()
    }
}

/// A log record's user, as a JSON map keyed without the `usr.` prefix.
struct User<'a>(&'a [(crate::record::Key, crate::record::Text)]);
impl serde::Serialize for User<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.strip_prefix("usr.").unwrap_or(k), v)?;
        }
        map.end()
    }
}

/// Writes one record as a JSON object (no newline).
///
/// # Errors
/// When writing fails.
pub fn write_json(out: &mut impl Write, record: &Record) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::new(out);
    let mut map = ser.serialize_map(None)?;
    match record {
        Record::Span(span) => {
            map.serialize_entry("type", "span")?;
            map.serialize_entry("trace_id", &trace_id_hex(span.trace_id))?;
            map.serialize_entry("span_id", &span_id_hex(span.span_id))?;
            map.serialize_entry("parent_id", &span.parent_id.map(span_id_hex))?;
            map.serialize_entry("name", span.name.as_ref())?;
            map.serialize_entry("target", span.target.as_ref())?;
            map.serialize_entry("local_root", &span.local_root)?;
            map.serialize_entry("start", &span.start_unix_nanos)?;
            map.serialize_entry("duration", &span.duration_nanos)?;
            map.serialize_entry("error", &u8::from(span.error))?;
            map.serialize_entry("meta", &Meta(span))?;
            map.serialize_entry("metrics", &Numbers(span))?;
        }
        Record::Log(log) => {
            map.serialize_entry("type", "log")?;
            map.serialize_entry("timestamp", &log.timestamp_unix_nanos)?;
            map.serialize_entry("level", log.level.as_str())?;
            map.serialize_entry("target", log.target.as_ref())?;
            map.serialize_entry("message", &log.message)?;
            map.serialize_entry("fields", &Pairs(&log.fields))?;
            map.serialize_entry("trace_id", &log.trace_id.map(trace_id_hex))?;
            map.serialize_entry("span_id", &log.span_id.map(span_id_hex))?;
            if log.user.is_empty() {
                map.serialize_entry("usr", &())?;
            } else {
                map.serialize_entry("usr", &User(&log.user))?;
            }
        }
    }
    map.end()
}

/// The JSON object of one record, as written on its line.
pub fn to_json(record: &Record) -> Value {
    let mut buf = Vec::new();
    match write_json(&mut buf, record) {
        Ok(()) => serde_json::from_slice(&buf).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}
