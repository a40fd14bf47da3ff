//! Tag keys and values: their types (`Key`, `Text`, `Tags`, `UserTags`) and the conversion of
//! field values to the strings the contract exports (docs/tags.md "identity from span fields").

/// A tag key: static for field names, owned for dynamic keys.
pub type Key = std::borrow::Cow<'static, str>;

/// A list of tags, in insertion order.
pub type Tags = Vec<(Key, String)>;

/// A user's tags, shared between records (cheap to clone); values up to 24 bytes are held
/// inline. The export records carry them as they are (`tracing_usr_export::UserTags`).
pub type UserTags = std::sync::Arc<[(Key, Text)]>;

/// Formats an `f64` as the contract says: the shortest round-trip decimal that always contains a
/// `.` or an exponent (`1.0`, `1.5`, `1e+300`, as `serde_json` writes it), and `NaN`, `inf`, `-inf` for non-finite values.
///
/// ```
/// use tracing_usr_core::value::format_f64;
/// assert_eq!(format_f64(1.0), "1.0");
/// assert_eq!(format_f64(1.5), "1.5");
/// assert_eq!(format_f64(f64::NEG_INFINITY), "-inf");
/// ```
pub fn format_f64(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    match serde_json::Number::from_f64(value) {
        Some(n) => n.to_string(),
        None => value.to_string(),
    }
}

/// Formats a boolean as the contract says: `"true"` / `"false"`.
pub fn format_bool(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
///
/// ```
/// use tracing_usr_core::value::truncate;
/// let mut text = "héllo".to_owned();
/// truncate(&mut text, 2);
/// assert_eq!(text, "h");
/// ```
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// An identity value (`usr.*`): up to 24 bytes are held inline, so the short ids, session ids
/// and roles of most requests are recorded without an allocation; longer values keep one heap
/// buffer (taken over, not copied, from a `String`).
///
/// ```
/// use tracing_usr_core::value::Text;
/// let id = Text::from("u-1");
/// assert_eq!(&*id, "u-1");
/// assert_eq!(String::from(id), "u-1");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(compact_str::CompactString);

impl Text {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Builds a value from `Display` output, formatted in place (inline when it fits).
    pub fn display(value: &dyn std::fmt::Display) -> Self {
        use std::fmt::Write;
        let mut text = compact_str::CompactString::default();
        // Writing to a `CompactString` cannot fail; a `Display` impl that errors leaves what it
        // wrote so far.
        let _ = write!(text, "{value}");
        Self(text)
    }

    /// Builds a value from `Debug` output, formatted in place (inline when it fits).
    pub fn debug(value: &dyn std::fmt::Debug) -> Self {
        use std::fmt::Write;
        let mut text = compact_str::CompactString::default();
        let _ = write!(text, "{value:?}");
        Self(text)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Text {
    #[inline]
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for Text {
    #[inline]
    fn from(value: &str) -> Self {
        Self(compact_str::CompactString::new(value))
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Self(compact_str::CompactString::from(value))
    }
}

impl From<Text> for String {
    fn from(value: Text) -> Self {
        value.0.into_string()
    }
}

impl PartialEq<str> for Text {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.0.as_str() == *other
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_a_decimal_point_or_exponent() {
        assert_eq!(format_f64(1.0), "1.0");
        assert_eq!(format_f64(-0.25), "-0.25");
        assert_eq!(format_f64(1e300), "1e+300");
        assert_eq!(format_f64(f64::NAN), "NaN");
        assert_eq!(format_f64(f64::INFINITY), "inf");
    }

    #[test]
    fn text_formats_in_place_and_survives_a_failing_formatter() {
        struct Failing;
        impl std::fmt::Display for Failing {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("partial")?;
                Err(std::fmt::Error)
            }
        }
        // `format!` would panic here; a telemetry value must not.
        assert_eq!(Text::display(&Failing).as_str(), "partial");
        assert_eq!(Text::debug(&"quoted").as_str(), "\"quoted\"");
        let long = "x".repeat(100);
        assert_eq!(Text::display(&long).as_str(), long);
        assert_eq!(String::from(Text::from(long.clone())), long);
    }
}
