//! The embedded default exporter: one JSON object per line.
//!
//! The format is documented in `docs/json-lines.md` of the repository; the field names
//! `trace_id`, `span_id`, `parent_id`, `name`, `meta` and `metrics` are fixed.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value};

use crate::exporter::{ExportError, Exporter};
use crate::record::{FieldValue, LogRecord, Record, SpanRecord};

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
        for record in batch {
            serde_json::to_writer(&mut self.out, &to_json(record))
                .map_err(|e| ExportError::new(crate::ExportErrorKind::Encode, e.to_string()))?;
            self.out.write_all(b"\n")?;
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

/// The JSON object of one record, as written on its line.
pub fn to_json(record: &Record) -> Value {
    match record {
        Record::Span(span) => span_json(span),
        Record::Log(log) => log_json(log),
    }
}

fn span_json(span: &SpanRecord) -> Value {
    let mut meta = Map::new();
    for (k, v) in &span.meta {
        meta.insert(k.to_string(), Value::String(v.clone()));
    }
    let mut metrics = Map::new();
    for (k, v) in &span.metrics {
        metrics.insert(k.to_string(), number(*v));
    }
    let mut obj = Map::new();
    obj.insert("type".into(), "span".into());
    obj.insert("trace_id".into(), trace_id_hex(span.trace_id).into());
    obj.insert("span_id".into(), span_id_hex(span.span_id).into());
    obj.insert(
        "parent_id".into(),
        span.parent_id.map(span_id_hex).map_or(Value::Null, Value::String),
    );
    obj.insert("name".into(), span.name.as_ref().into());
    obj.insert("target".into(), span.target.as_ref().into());
    obj.insert("local_root".into(), span.local_root.into());
    obj.insert("start".into(), span.start_unix_nanos.into());
    obj.insert("duration".into(), span.duration_nanos.into());
    obj.insert("error".into(), u8::from(span.error).into());
    obj.insert("meta".into(), Value::Object(meta));
    obj.insert("metrics".into(), Value::Object(metrics));
    Value::Object(obj)
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(
        || Value::String(tracing_usr_core::value::format_f64(v)),
        Value::Number,
    )
}

fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Str(s) => Value::String(s.clone()),
        FieldValue::I64(v) => (*v).into(),
        FieldValue::U64(v) => (*v).into(),
        FieldValue::F64(v) => number(*v),
        FieldValue::Bool(v) => (*v).into(),
    }
}

fn log_json(log: &LogRecord) -> Value {
    let mut fields = Map::new();
    for (k, v) in &log.fields {
        fields.insert(k.to_string(), field_json(v));
    }
    let mut usr = Map::new();
    for (k, v) in &log.user {
        let key = k.strip_prefix("usr.").unwrap_or(k);
        usr.insert(key.to_owned(), Value::String(v.clone()));
    }
    let mut obj = Map::new();
    obj.insert("type".into(), "log".into());
    obj.insert("timestamp".into(), log.timestamp_unix_nanos.into());
    obj.insert("level".into(), log.level.as_str().into());
    obj.insert("target".into(), log.target.as_ref().into());
    obj.insert(
        "message".into(),
        log.message.clone().map_or(Value::Null, Value::String),
    );
    obj.insert("fields".into(), Value::Object(fields));
    obj.insert(
        "trace_id".into(),
        log.trace_id.map(trace_id_hex).map_or(Value::Null, Value::String),
    );
    obj.insert(
        "span_id".into(),
        log.span_id.map(span_id_hex).map_or(Value::Null, Value::String),
    );
    obj.insert(
        "usr".into(),
        if usr.is_empty() {
            Value::Null
        } else {
            Value::Object(usr)
        },
    );
    Value::Object(obj)
}
