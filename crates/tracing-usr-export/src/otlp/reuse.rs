//! Writing the messages in place: the messages of a request are written over those of the
//! previous request. Their strings, byte lists and attribute lists keep their buffers, and
//! entries a request does not need wait in [`Spare`] for the next. A steady stream of batches
//! then allocates almost nothing on the export thread: building a hundred small buffers per
//! application request and freeing them after encoding (through the allocator's slow paths, a
//! batch being larger than its per-thread caches) was the larger part of this exporter's cost.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord as OtlpLog;
use opentelemetry_proto::tonic::trace::v1::{span, Span};

use crate::record::FieldValue;

pub(super) fn string(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    }
}

pub(super) fn kv(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// Message parts kept from one request to the next.
#[derive(Debug, Default)]
pub(super) struct Spare {
    /// The spans of the last traces request, and those it did not need.
    pub(super) spans: Lists<Span>,
    /// The log records of the last logs request, and those it did not need.
    pub(super) logs: Lists<OtlpLog>,
    /// The parts inside records.
    pub(super) parts: Parts,
}

/// The records of the last request of one signal (`list`), and records it did not need
/// (`spare`: a shorter request follows a longer one).
#[derive(Debug)]
pub(super) struct Lists<T> {
    pub(super) list: Vec<T>,
    pub(super) spare: Vec<T>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            spare: Vec::new(),
        }
    }
}

/// Parts inside records that records written over others did not need.
#[derive(Debug, Default)]
pub(super) struct Parts {
    /// Span events, from spans that had more of them than the span written over them.
    pub(super) events: Vec<span::Event>,
    /// Attributes, likewise.
    pub(super) attributes: Vec<KeyValue>,
}

/// At most this many attributes, and a quarter as many spans, log records and span events, wait
/// in `Spare` (more are freed): an unusually large request does not keep its memory for good.
pub(super) const MAX_SPARE: usize = 4096;

impl Spare {
    pub(super) fn trim(&mut self) {
        self.spans.spare.truncate(MAX_SPARE / 4);
        self.logs.spare.truncate(MAX_SPARE / 4);
        self.parts.events.truncate(MAX_SPARE / 4);
        self.parts.attributes.truncate(MAX_SPARE);
    }
}

/// Writes a list in place: each [`Refill::next`] returns the list's next entry to overwrite,
/// taken from `spare` (or created) when the list is exhausted; entries left over when the
/// `Refill` is dropped go back to `spare`.
pub(super) struct Refill<'a, T> {
    list: &'a mut Vec<T>,
    used: usize,
    spare: &'a mut Vec<T>,
}

impl<'a, T: Default> Refill<'a, T> {
    pub(super) fn new(list: &'a mut Vec<T>, spare: &'a mut Vec<T>) -> Self {
        Self { list, used: 0, spare }
    }

    pub(super) fn next(&mut self) -> &mut T {
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
    pub(super) fn key(&mut self, key: &str) -> &mut Option<AnyValue> {
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
    pub(super) fn str(&mut self, key: &str, value: &str) {
        set_string_value(self.key(key), value);
    }

    /// The next attribute: `key`, with a value that is not a string.
    pub(super) fn value(&mut self, key: &str, value: any_value::Value) {
        match self.key(key) {
            Some(any) => any.value = Some(value),
            none => *none = Some(AnyValue { value: Some(value) }),
        }
    }

    /// The next attribute: a record's field.
    pub(super) fn field(&mut self, key: &str, value: &FieldValue) {
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
    pub(super) fn array_of_one(&mut self, key: &str, value: &str) {
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

pub(super) fn set_str(out: &mut String, value: &str) {
    out.clear();
    out.push_str(value);
}

pub(super) fn set_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.clear();
    out.extend_from_slice(value);
}

pub(super) fn set_any_string(out: &mut AnyValue, value: &str) {
    match &mut out.value {
        Some(any_value::Value::StringValue(s)) => set_str(s, value),
        other => *other = Some(any_value::Value::StringValue(value.to_owned())),
    }
}

pub(super) fn set_string_value(out: &mut Option<AnyValue>, value: &str) {
    match out {
        Some(any) => set_any_string(any, value),
        none => *none = Some(string(value)),
    }
}
