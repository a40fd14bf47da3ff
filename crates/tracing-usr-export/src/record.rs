//! The record model shared by the layer and every exporter.

use std::borrow::Cow;
use std::fmt;

pub use tracing_usr_core::root::RootFacts;
pub use tracing_usr_core::value::{Key, Text, UserTags};

/// One finished span, in the shape every exporter encodes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// The span's own string tags (its fields). A local root's facts (user, events, signals,
    /// sampling) are in [`SpanRecord::root`]; [`SpanRecord::meta`] and [`SpanRecord::tags`]
    /// read both. Values up to 24 bytes are held inline ([`Text`]), so the short values of most
    /// spans cost no allocation.
    pub meta: Vec<(Key, Text)>,
    /// The span's own numeric tags.
    pub metrics: Vec<(Key, f64)>,
    /// The typed facts of a local root (see [`RootFacts`]), rendered by each exporter in its
    /// own names; `None` on other spans and on roots without tracing-usr state. The span's own
    /// tags never repeat a key the facts write ([`SpanRecord::set_root`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Box<RootFacts>>,
    /// `tracing` events recorded directly in the span (only collected when an exporter asks for
    /// span events, such as OTLP).
    pub events: Vec<SpanEvent>,
    /// How many leading `meta` entries still have to pass the value masking rule. The export
    /// pipeline applies it before any exporter runs, so exporters always see `0`.
    pub pending_value_mask: usize,
}

impl SpanRecord {
    /// The value of a Datadog tag: one of the span's own, or one its root facts write.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.own_meta(key)
            .or_else(|| self.root.as_deref().and_then(|facts| facts.tag(key)))
    }

    /// The value of one of the span's own tags (its fields), not looking at its root facts: for
    /// keys the facts never write (`resource.name`, `service.name`, `span.type`, `env`,
    /// `version`), the same as [`SpanRecord::meta`] without walking the facts.
    pub fn own_meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a numeric tag (a root's `_sampling_priority_v1` included).
    pub fn metric(&self, key: &str) -> Option<f64> {
        let own = self.metrics.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v);
        own.or_else(|| {
            (key == tracing_usr_core::trace::SAMPLING_PRIORITY)
                .then(|| self.root.as_deref().and_then(RootFacts::sampling_priority))
                .flatten()
        })
    }

    /// Every Datadog tag of the span, as the Datadog and JSON lines exporters write them: its own,
    /// then its root facts'.
    pub fn tags(&self) -> Vec<(Key, Text)> {
        let mut tags = self.meta.clone();
        if let Some(facts) = &self.root {
            facts.write_tags(&mut tags, &mut Vec::new());
        }
        tags
    }

    /// Every numeric tag of the span: its own, then the root's sampling priority.
    pub fn all_metrics(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        let root = self.root.as_deref().and_then(RootFacts::sampling_priority);
        self.metrics
            .iter()
            .map(|(k, v)| (k.as_ref(), *v))
            .chain(root.map(|p| (tracing_usr_core::trace::SAMPLING_PRIORITY, p)))
    }

    /// How many Datadog tags [`SpanRecord::tags`] gives.
    pub fn tag_count(&self) -> usize {
        self.meta.len() + self.root.as_deref().map_or(0, RootFacts::tag_count)
    }

    /// Makes this span its trace's local root for export, with the trace's `facts` (final, past
    /// every mask). The span's own fields of a key the facts write give way to them; a keep
    /// drops the sampler's decision tags and metrics the span's fields may carry; an
    /// `_dd.origin` set by the application wins over a block's. The span's own fields still
    /// have to pass the value masking rule ([`SpanRecord::pending_value_mask`]).
    pub fn set_root(&mut self, mut facts: RootFacts) {
        self.local_root = true;
        if self.meta.iter().any(|(k, _)| k == "_dd.origin") {
            if let Some(block) = &mut facts.block {
                block.keep_origin = false;
            }
        }
        self.meta.retain(|(k, _)| !facts.overrides(k));
        self.metrics.retain(|(k, _)| !facts.overrides(k));
        self.pending_value_mask = self.meta.len();
        self.root = Some(Box::new(facts));
    }
}

/// A `tracing` event inside a span, as a span event.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
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

/// Reads the untagged form [`Serialize`](serde::Serialize) writes (the spool's records): a
/// non-negative integer comes back as `U64`, a non-finite float as the string it was written as.
impl<'de> serde::Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Untagged;
        impl serde::de::Visitor<'_> for Untagged {
            type Value = FieldValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::Str(Text::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<FieldValue, E> {
                Ok(FieldValue::I64(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<FieldValue, E> {
                Ok(FieldValue::U64(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<FieldValue, E> {
                Ok(FieldValue::F64(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<FieldValue, E> {
                Ok(FieldValue::Bool(v))
            }
        }
        deserializer.deserialize_any(Untagged)
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    #[serde(with = "user_tags")]
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// A finished span.
    Span(SpanRecord),
    /// An event.
    Log(LogRecord),
}

/// (De)serializes a log record's shared user tags as a list (the spool's format).
mod user_tags {
    use super::{Key, Text, UserTags};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(tags: &UserTags, serializer: S) -> Result<S::Ok, S::Error> {
        tags.as_ref().serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UserTags, D::Error> {
        Vec::<(Key, Text)>::deserialize(deserializer).map(UserTags::from)
    }
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

/// `items` cut into slices of at most `max`, never between two items of one group (a trace):
/// a cut that would fall inside a group moves back to where the group starts, unless the
/// group fills the slice alone, which then holds the whole group. Items without a group can
/// be cut anywhere.
pub fn cut_between_groups<T>(
    items: &[T],
    max: usize,
    group: impl Fn(&T) -> Option<u128>,
) -> impl Iterator<Item = &[T]> {
    let max = max.max(1);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = max.min(rest.len());
        if let Some(cut) = rest.get(end).and_then(&group) {
            let start = rest[..end]
                .iter()
                .rposition(|item| group(item) != Some(cut))
                .map_or(0, |i| i + 1);
            if start > 0 {
                end = start;
            } else {
                while end < rest.len() && group(&rest[end]) == Some(cut) {
                    end += 1;
                }
            }
        }
        let (slice, after) = rest.split_at(end);
        rest = after;
        Some(slice)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(meta: &[(&'static str, &str)]) -> SpanRecord {
        SpanRecord {
            trace_id: 1,
            span_id: 2,
            parent_id: None,
            local_root: true,
            name: "request".into(),
            target: "app".into(),
            start_unix_nanos: 0,
            duration_nanos: 0,
            error: false,
            meta: meta
                .iter()
                .map(|(k, v)| (Key::Borrowed(k), Text::from(*v)))
                .collect(),
            metrics: Vec::new(),
            events: Vec::new(),
            root: None,
            pending_value_mask: 0,
        }
    }

    fn tags(list: &[(&'static str, &str)]) -> Vec<(Key, Text)> {
        list.iter()
            .map(|(k, v)| (Key::Borrowed(k), Text::from(*v)))
            .collect()
    }

    fn facts(user: &[(&'static str, &str)], kept: bool) -> RootFacts {
        RootFacts {
            user: tracing_usr_core::root::RootUser::new(tags(user)),
            collection_mode: Some(tracing_usr_core::Source::Field(
                tracing_usr_core::Mode::Identification,
            )),
            sampling: if kept {
                tracing_usr_core::root::Sampling::Kept
            } else {
                tracing_usr_core::root::Sampling::Sampler
            },
            ..RootFacts::default()
        }
    }

    #[test]
    fn root_facts_replace_fields_of_the_same_key_and_skip_the_value_mask() {
        let mut span = root(&[("usr.id", "raw"), ("http.route", "/orders")]);
        span.set_root(facts(&[("usr.id", "u-1")], false));
        assert_eq!(span.meta("usr.id"), Some("u-1"));
        assert_eq!(
            span.meta("_dd.appsec.user.collection_mode"),
            Some("identification")
        );
        assert_eq!(span.tags().iter().filter(|(k, _)| k == "usr.id").count(), 1);
        assert_eq!(span.tag_count(), span.tags().len());
        // Only the span's own fields still pass the value rule.
        assert_eq!(span.pending_value_mask, 1);
        assert_eq!(span.meta[0].0, "http.route");
    }

    #[test]
    fn a_keep_drops_the_sampler_tags_and_the_application_origin_wins() {
        let mut span = root(&[
            ("_dd.p.dm", "-0"),
            ("_dd.rule_psr", "0.5"),
            ("_dd.origin", "synthetics"),
        ]);
        span.metrics.push(("_sampling_priority_v1".into(), 0.0));
        span.metrics.push(("_dd.rule_psr".into(), 0.5));
        let mut kept = facts(&[], true);
        kept.propagation = tags(&[("_dd.p.dm", "-5")]);
        kept.block = Some(tracing_usr_core::root::BlockFacts {
            actor_ip: None,
            trigger_json: "{}".to_owned(),
            keep_origin: true,
        });
        span.set_root(kept);
        assert_eq!(span.meta("_dd.rule_psr"), None);
        assert_eq!(span.meta("_dd.p.dm"), Some("-5"));
        assert_eq!(span.meta("_dd.origin"), Some("synthetics"));
        assert_eq!(span.tags().iter().filter(|(k, _)| k == "_dd.origin").count(), 1);
        assert_eq!(span.metric("_sampling_priority_v1"), Some(2.0));
        assert_eq!(span.metric("_dd.rule_psr"), None);
        assert_eq!(span.all_metrics().count(), 1);
        let mut unkept = root(&[("_dd.rule_psr", "0.5")]);
        unkept.set_root(facts(&[], false));
        assert_eq!(unkept.meta("_dd.rule_psr"), Some("0.5"));
    }
}
