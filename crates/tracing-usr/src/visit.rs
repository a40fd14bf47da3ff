//! The field visitor: splits a span's or event's fields into identity input and ordinary fields.

use std::fmt;

use tracing_core::field::{Field, Visit};
use tracing_usr_core::blocking::BlockList;
use tracing_usr_core::identity::{apply_mode, Key};
use tracing_usr_core::value::{format_bool, Text};
use tracing_usr_core::{keys, Anonymizer, Masker, Mode, REDACTED};
use tracing_usr_export::FieldValue;

use crate::callsite::{CallsiteInfo, FieldKind};

/// The `usr.*` values of one record call, after the mode: inline up to four, and values up to 24
/// bytes inline too (no allocation).
pub(crate) type Identity = smallvec::SmallVec<[(Key, Text); 4]>;

/// The ordinary fields of one record call: inline up to four (a span's fields go straight into
/// its tags, with no intermediate allocation).
pub(crate) type Plain = smallvec::SmallVec<[(Key, FieldValue); 4]>;

/// What one `record` call carried.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    /// Identity: `usr.*` values as strings (docs/tags.md "identity from span fields") after the mode, token and key-masked
    /// free-form keys `<Redacted>`; `usr.event` / `usr.exists` are never here.
    pub(crate) identity: Identity,
    /// With [`Collector::keep_raw`]: every `usr.*` value as a string, before the mode (for
    /// business events).
    pub(crate) usr: Vec<(&'static str, String)>,
    /// Ordinary fields (only when exporting), key-masked ones already `<Redacted>`.
    pub(crate) plain: Plain,
    /// The `message` field of an event (only when exporting).
    pub(crate) message: Option<Text>,
    /// A field-path `usr.id` on the blocked-user list, in its exported form.
    pub(crate) blocked_user: Option<String>,
    /// A client IP field's address.
    pub(crate) client_ip: Option<(std::net::IpAddr, u8)>,
    /// A user-agent field's text.
    pub(crate) user_agent: Option<String>,
}

/// The field-path identity rules (docs/tags.md "modes", "blocking"): the mode, then the block check of the id in
/// its raw and exported forms.
#[derive(Clone, Copy)]
pub(crate) struct IdentityRules<'a> {
    mode: Mode,
    anonymizer: &'a Anonymizer,
    blocks: Option<&'a BlockList>,
    /// Whether detection runs (for classifying uncached callsites).
    detection: bool,
}

impl<'a> IdentityRules<'a> {
    pub(crate) fn new(
        mode: Mode,
        anonymizer: &'a Anonymizer,
        blocks: Option<&'a BlockList>,
        detection: bool,
    ) -> Self {
        Self {
            mode,
            anonymizer,
            blocks,
            detection,
        }
    }

    /// Adds one `usr.*` value to `fields.identity` (and `fields.blocked_user`). Business-event
    /// keys and empty values are skipped.
    pub(crate) fn push(&self, fields: &mut Fields, key: &'static str, value: String) {
        if key != keys::USR_EVENT && key != keys::USR_EXISTS {
            self.push_identity(fields, key, value.into());
        }
    }

    /// [`IdentityRules::push`] for a key known to be an identity key.
    fn push_identity(&self, fields: &mut Fields, key: &'static str, value: Text) {
        if value.is_empty() {
            return;
        }
        // The raw id is used for the block check only, then dropped (docs/tags.md "anonymization").
        let raw_blocked = key == keys::USR_ID && self.blocks.is_some_and(|d| d.is_user_blocked(&value));
        if let Some(value) = apply_mode(self.mode, key, value, self.anonymizer) {
            if key == keys::USR_ID && (raw_blocked || self.blocks.is_some_and(|d| d.is_user_blocked(&value)))
            {
                fields.blocked_user = Some(value.as_str().to_owned());
            }
            fields.identity.push((Key::Borrowed(key), value));
        }
    }
}

pub(crate) struct Collector<'a> {
    info: &'a CallsiteInfo,
    masker: &'a Masker,
    rules: IdentityRules<'a>,
    collect_plain: bool,
    keep_raw: bool,
    /// A standard identity value goes into `fields.identity` as it is: identification mode,
    /// no blocked users to check, values not kept raw.
    as_is: bool,
    /// Dropped by hand (see the `Drop` impl): usually it ends up holding nothing.
    pub(crate) fields: std::mem::ManuallyDrop<Fields>,
}

impl Drop for Collector<'_> {
    /// Most records leave their `Fields` holding no heap memory (identity moved to the root,
    /// nothing else collected while nothing is exported), and such a `Fields` needs no drop:
    /// skipping its drop glue (seven fields, two out-of-line `SmallVec` drops) is a measurable
    /// part of the layer's per-span cost. Anything that may own memory is dropped as usual.
    #[inline]
    fn drop(&mut self) {
        if !self.fields.is_bare() {
            drop(std::mem::take(&mut *self.fields));
        }
    }
}

impl Fields {
    /// Whether this owns no heap memory (so not running its drop glue leaks nothing).
    #[inline]
    fn is_bare(&self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Fields {
            identity,
            usr,
            plain,
            message,
            blocked_user,
            client_ip: _,
            user_agent,
        } = self;
        identity.is_empty()
            && !identity.spilled()
            && plain.is_empty()
            && !plain.spilled()
            && usr.capacity() == 0
            && message.is_none()
            && blocked_user.is_none()
            && user_agent.is_none()
    }
}

impl<'a> Collector<'a> {
    #[inline]
    pub(crate) fn new(
        info: &'a CallsiteInfo,
        rules: IdentityRules<'a>,
        masker: &'a Masker,
        collect_plain: bool,
    ) -> Self {
        Self {
            info,
            masker,
            as_is: rules.mode == Mode::Identification && rules.blocks.is_none(),
            rules,
            collect_plain,
            keep_raw: false,
            fields: std::mem::ManuallyDrop::new(Fields::default()),
        }
    }

    /// Keeps the raw `usr.*` values (in [`Fields::usr`]) instead of applying the mode.
    pub(crate) fn keep_raw(mut self) -> Self {
        self.keep_raw = true;
        self.as_is = false;
        self
    }

    /// One `usr.*` value: kept raw for a business event, else an identity value (`identity`:
    /// not `usr.event` / `usr.exists`) after the mode.
    fn usr(&mut self, key: &'static str, identity: bool, value: impl FnOnce() -> Text) {
        if self.keep_raw {
            self.fields.usr.push((key, value().into()));
        } else if identity && self.rules.mode != Mode::Disabled {
            self.rules.push_identity(&mut self.fields, key, value());
        }
    }

    #[inline]
    fn kind(&self, field: &Field) -> FieldKind {
        self.info
            .kind(field.index())
            .unwrap_or_else(|| FieldKind::classify(field.name(), self.masker, self.rules.detection))
    }

    /// Routes one value by its field's kind; `value` is only converted when, and as far as, it
    /// is needed. An ordinary field while nothing is exported returns at once.
    #[inline]
    fn record(&mut self, field: &Field, raw: impl Raw) {
        let kind = self.kind(field);
        self.record_kind(field, kind, raw);
    }

    #[inline]
    fn record_kind(&mut self, field: &Field, kind: FieldKind, raw: impl Raw) {
        if self.collect_plain || !matches!(kind, FieldKind::Plain | FieldKind::Masked | FieldKind::Message) {
            self.route(field, kind, raw);
        }
    }

    #[inline(never)]
    fn route(&mut self, field: &Field, kind: FieldKind, raw: impl Raw) {
        let name = field.name();
        match kind {
            FieldKind::Plain => {
                if self.collect_plain {
                    self.fields.plain.push((Key::Borrowed(name), raw.value()));
                }
            }
            FieldKind::ClientIp { rank } => {
                let value = raw.value();
                if let Ok(ip) = value.to_string().trim().parse::<std::net::IpAddr>() {
                    if self.fields.client_ip.is_none_or(|(_, r)| rank < r) {
                        self.fields.client_ip = Some((tracing_usr_core::blocking::canonical_ip(ip), rank));
                    }
                }
                if self.collect_plain {
                    self.fields.plain.push((Key::Borrowed(name), value));
                }
            }
            FieldKind::UserAgent => {
                let value = raw.value();
                // `http.useragent` wins over `user_agent.original`.
                if self.fields.user_agent.is_none() || name == "http.useragent" {
                    let mut text = value.to_string();
                    tracing_usr_core::value::truncate(&mut text, 512);
                    self.fields.user_agent = Some(text);
                }
                if self.collect_plain {
                    self.fields.plain.push((Key::Borrowed(name), value));
                }
            }
            FieldKind::Masked => {
                if self.collect_plain {
                    self.fields
                        .plain
                        .push((Key::Borrowed(name), FieldValue::Str(Text::from(REDACTED))));
                }
            }
            FieldKind::Message => {
                if self.collect_plain {
                    self.fields.message = Some(into_text(raw.value()));
                }
            }
            FieldKind::Token | FieldKind::IdentityExtra { masked: true } => {
                self.usr(name, true, || Text::from(REDACTED));
            }
            FieldKind::IdentityExtra { masked: false } => {
                let masker = self.masker;
                self.usr(name, true, || {
                    let text = raw.text();
                    match masker.mask_value(&text) {
                        std::borrow::Cow::Borrowed(_) => text,
                        std::borrow::Cow::Owned(masked) => masked.into(),
                    }
                });
            }
            FieldKind::Identity => self.usr(name, true, || raw.text()),
            FieldKind::Event | FieldKind::Exists => self.usr(name, false, || raw.text()),
        }
    }
}

fn into_text(value: FieldValue) -> Text {
    match value {
        FieldValue::Str(s) => s,
        other => Text::display(&other),
    }
}

/// A value as the visitor received it: converted to an exported field value or to an identity
/// value only when its field needs it.
trait Raw: Sized {
    fn value(self) -> FieldValue;

    /// The value as identity text (strings and formatted values without an intermediate
    /// `String`).
    fn text(self) -> Text {
        into_text(self.value())
    }
}

/// Numbers and booleans.
struct Scalar(FieldValue);

impl Raw for Scalar {
    fn value(self) -> FieldValue {
        self.0
    }
}

struct Str<'a>(&'a str);

impl Raw for Str<'_> {
    fn value(self) -> FieldValue {
        FieldValue::Str(Text::from(self.0))
    }

    fn text(self) -> Text {
        Text::from(self.0)
    }
}

struct Dbg<'a>(&'a dyn fmt::Debug);

impl Raw for Dbg<'_> {
    fn value(self) -> FieldValue {
        FieldValue::Str(Text::debug(self.0))
    }

    fn text(self) -> Text {
        Text::debug(self.0)
    }
}

/// Values recorded through `Display`: 128-bit integers and errors, formatted only when needed.
struct Shown<T: fmt::Display>(T);

impl<T: fmt::Display> Raw for Shown<T> {
    fn value(self) -> FieldValue {
        FieldValue::Str(Text::display(&self.0))
    }

    fn text(self) -> Text {
        Text::display(&self.0)
    }
}

impl Visit for Collector<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, Scalar(FieldValue::F64(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, Scalar(FieldValue::I64(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, Scalar(FieldValue::U64(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.record(field, Shown(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.record(field, Shown(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, Scalar(FieldValue::Bool(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // The common identity value, without the general routing ([`IdentityRules::push`]
        // does the same in this case). Checked here, before any value is built, rather than
        // once in `record` (tried: about 40 more instructions per identity request); the same
        // check stands in `record_debug`.
        let kind = self.kind(field);
        if kind == FieldKind::Identity && self.as_is {
            if !value.is_empty() {
                self.fields
                    .identity
                    .push((Key::Borrowed(field.name()), Text::from(value)));
            }
            return;
        }
        self.record_kind(field, kind, Str(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, Shown(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let kind = self.kind(field);
        if kind == FieldKind::Identity && self.as_is {
            let text = Text::debug(value);
            if !text.is_empty() {
                self.fields.identity.push((Key::Borrowed(field.name()), text));
            }
            return;
        }
        self.record_kind(field, kind, Dbg(value));
    }
}

/// Splits ordinary span fields into Datadog `meta` (strings) and `metrics` (numbers). Integers
/// that an `f64` cannot hold exactly stay strings.
pub(crate) fn split_span_fields(
    plain: impl IntoIterator<Item = (Key, FieldValue)>,
    meta: &mut Vec<(Key, Text)>,
    metrics: &mut Vec<(Key, f64)>,
) {
    const EXACT: u64 = 1 << 53;
    for (key, value) in plain {
        meta.retain(|(k, _)| *k != key);
        metrics.retain(|(k, _)| *k != key);
        match value {
            FieldValue::F64(v) => metrics.push((key, v)),
            FieldValue::I64(v) if v.unsigned_abs() <= EXACT => metrics.push((key, v as f64)),
            FieldValue::U64(v) if v <= EXACT => metrics.push((key, v as f64)),
            FieldValue::Bool(v) => meta.push((key, Text::from(format_bool(v)))),
            FieldValue::Str(s) => meta.push((key, s)),
            other => meta.push((key, Text::display(&other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fields_without_heap_memory_is_bare() {
        let mut fields = Fields::default();
        assert!(fields.is_bare());
        fields.identity.push((Key::Borrowed("usr.id"), Text::from("u-1")));
        assert!(!fields.is_bare());
        fields.identity.clear();
        assert!(fields.is_bare());
        // Drained after spilling: the buffer is still owned.
        for _ in 0..5 {
            fields.identity.push((Key::Borrowed("usr.id"), Text::from("u-1")));
        }
        fields.identity.clear();
        assert!(!fields.is_bare());
        let mut fields = Fields {
            message: Some(Text::from("a message longer than twenty-four bytes")),
            ..Fields::default()
        };
        assert!(!fields.is_bare());
        fields.message = None;
        fields.usr.reserve(1);
        assert!(!fields.is_bare());
    }
}
