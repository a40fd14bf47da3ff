//! Secret masking (docs/tags.md "masking"): the key rule, the value rule and the always-masked token.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;

use crate::keys;

/// The literal that replaces masked text.
pub const REDACTED: &str = "<Redacted>";

/// Variable overriding the key pattern.
pub const ENV_KEY_REGEXP: &str = "DD_APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP";
/// Variable overriding the value pattern.
pub const ENV_VALUE_REGEXP: &str = "DD_APPSEC_OBFUSCATION_PARAMETER_VALUE_REGEXP";

/// Datadog's default key pattern: a value whose key matches it is replaced as a whole.
pub const DEFAULT_KEY_REGEXP: &str = r"(?i)pass|pw(?:or)?d|secret|(?:api|private|public|access)[_-]?key|token|consumer[_-]?(?:id|key|secret)|sign(?:ed|ature)|bearer|authorization|jsessionid|phpsessid|asp\.net[_-]sessionid|sid|jwt";

/// Datadog's default value pattern: in string values, its capture groups (or its whole match
/// when it has none) are replaced.
pub const DEFAULT_VALUE_REGEXP: &str = r#"(?i)(?:p(?:ass)?w(?:or)?d|pass(?:[_-]?phrase)?|secret(?:[_-]?key)?|(?:(?:api|private|public|access)[_-]?)key(?:[_-]?id)?|(?:(?:auth|access|id|refresh)[_-]?)?token|consumer[_-]?(?:id|key|secret)|sign(?:ed|ature)?|auth(?:entication|orization)?|jsessionid|phpsessid|asp\.net(?:[_-]|-)sessionid|sid|jwt)(?:\s*=([^;&]+)|"\s*:\s*("[^"]+"|\d+))|bearer\s+([a-z0-9\._\-]+)|token\s*:\s*([a-z0-9]{13})|gh[opsu]_([0-9a-zA-Z]{36})|ey[I-L][\w=-]+\.(ey[I-L][\w=-]+(?:\.[\w.+\/=-]+)?)|[\-]{5}BEGIN[a-z\s]+PRIVATE\sKEY[\-]{5}([^\-]+)[\-]{5}END[a-z\s]+PRIVATE\sKEY|ssh-rsa\s*([a-z0-9\/\.+]{100,})"#;

/// Which pattern an invalid regex was given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// The key pattern.
    Key,
    /// The value pattern.
    Value,
}

/// An invalid masking pattern.
#[derive(Clone, Debug)]
pub struct PatternError {
    kind: PatternKind,
    message: String,
}

impl PatternError {
    /// Which pattern was invalid.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = match self.kind {
            PatternKind::Key => "key",
            PatternKind::Value => "value",
        };
        // The regex error quotes the pattern, which is configuration, not a secret.
        write!(f, "invalid {which} masking pattern: {}", self.message)
    }
}

impl std::error::Error for PatternError {}

/// Compiles a masking pattern.
///
/// # Errors
/// A [`PatternError`] naming the pattern kind when the regex does not compile.
pub fn compile(kind: PatternKind, pattern: &str) -> Result<Regex, PatternError> {
    Regex::new(pattern).map_err(|e| PatternError {
        kind,
        message: e.to_string(),
    })
}

/// The masking rules in force. Cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct Masker {
    key: Option<Regex>,
    value: Option<Regex>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("key", &self.key.as_ref().map(Regex::as_str))
            .field("value", &self.value.as_ref().map(Regex::as_str))
            .finish()
    }
}

impl Default for Masker {
    /// Datadog's default patterns.
    fn default() -> Self {
        Self {
            key: Some(Regex::new(DEFAULT_KEY_REGEXP).expect("default key pattern compiles")),
            value: Some(Regex::new(DEFAULT_VALUE_REGEXP).expect("default value pattern compiles")),
        }
    }
}

impl Masker {
    /// A masker with the given rules; `None` switches a rule off (the token stays masked).
    pub fn new(key: Option<Regex>, value: Option<Regex>) -> Self {
        Self { key, value }
    }

    /// Whether the key rule masks values of `key` as a whole. `usr.token` always is.
    pub fn key_matches(&self, key: &str) -> bool {
        key == keys::USR_TOKEN || self.key.as_ref().is_some_and(|re| re.is_match(key))
    }

    /// Applies the value rule to `value`.
    ///
    /// ```
    /// use tracing_usr_core::Masker;
    /// let m = Masker::default();
    /// assert_eq!(m.mask_value("password=hunter2; x=1"), "password=<Redacted>; x=1");
    /// assert_eq!(m.mask_value("Authorization: Bearer abc.def-1"), "Authorization: Bearer <Redacted>");
    /// assert_eq!(m.mask_value(r#"{"api_key": "s3cr3t"}"#), r#"{"api_key": <Redacted>}"#);
    /// ```
    pub fn mask_value<'a>(&self, value: &'a str) -> Cow<'a, str> {
        let Some(re) = &self.value else {
            return Cow::Borrowed(value);
        };
        // Most values match nothing: the match-only search is much cheaper than captures.
        if !re.is_match(value) {
            return Cow::Borrowed(value);
        }
        let groups = re.captures_len() > 1;
        let mut out = String::new();
        let mut last = 0;
        for caps in re.captures_iter(value) {
            if groups {
                for group in caps.iter().skip(1).flatten() {
                    out.push_str(&value[last..group.start()]);
                    out.push_str(REDACTED);
                    last = group.end();
                }
            } else if let Some(whole) = caps.get(0) {
                out.push_str(&value[last..whole.start()]);
                out.push_str(REDACTED);
                last = whole.end();
            }
        }
        if last == 0 && out.is_empty() {
            return Cow::Borrowed(value);
        }
        out.push_str(&value[last..]);
        Cow::Owned(out)
    }

    /// Masks a value under a key: exempt keys pass, a key that matches the key rule masks the
    /// whole value, anything else goes through the value rule.
    pub fn mask_field<'a>(&self, key: &str, value: &'a str) -> Cow<'a, str> {
        if key == keys::USR_TOKEN {
            Cow::Borrowed(REDACTED)
        } else if is_exempt(key) {
            Cow::Borrowed(value)
        } else if self.key_matches(key) {
            Cow::Borrowed(REDACTED)
        } else {
            self.mask_value(value)
        }
    }
}

/// Keys exempt from both rules: the standard identity keys, `usr.exists`, and tags starting with
/// `_dd.` or `tracing_usr.signal.`.
pub fn is_exempt(key: &str) -> bool {
    keys::is_standard_key(key)
        || key == keys::USR_EXISTS
        || key.starts_with(keys::DD_PRIVATE_PREFIX)
        || key.starts_with(keys::SIGNAL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_compile() {
        compile(PatternKind::Key, DEFAULT_KEY_REGEXP).unwrap();
        compile(PatternKind::Value, DEFAULT_VALUE_REGEXP).unwrap();
    }

    #[test]
    fn key_rule_is_unanchored_and_case_insensitive() {
        let m = Masker::default();
        for key in [
            "password",
            "X-Api-Key",
            "user_token",
            "jsessionid",
            "consider",
            "usr.token",
        ] {
            assert!(m.key_matches(key), "{key}");
        }
        for key in ["http.route", "usr.email", "count"] {
            assert!(!m.key_matches(key), "{key}");
        }
    }

    #[test]
    fn token_is_masked_with_rules_off() {
        let m = Masker::new(None, None);
        assert_eq!(m.mask_field("usr.token", "abc"), REDACTED);
        assert_eq!(m.mask_field("password", "abc"), "abc");
    }

    #[test]
    fn value_rule_replaces_groups_and_keeps_the_rest() {
        let m = Masker::default();
        assert_eq!(m.mask_value("a=1&password=x&b=2"), "a=1&password=<Redacted>&b=2");
        assert_eq!(
            m.mask_value("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 end"),
            "token ghp_<Redacted> end"
        );
        assert_eq!(m.mask_value("nothing here"), "nothing here");
    }

    #[test]
    fn value_rule_without_groups_replaces_the_whole_match() {
        let m = Masker::new(None, Some(Regex::new("s3cr3t").unwrap()));
        assert_eq!(m.mask_value("a s3cr3t b s3cr3t"), "a <Redacted> b <Redacted>");
    }

    #[test]
    fn exempt_keys_pass_unchanged() {
        let m = Masker::default();
        assert_eq!(m.mask_field("usr.id", "password=x"), "password=x");
        assert_eq!(m.mask_field("_dd.appsec.usr.login", "password=x"), "password=x");
        assert_eq!(m.mask_field("note", "password=x"), "password=<Redacted>");
        assert_eq!(m.mask_field("api_key", "anything"), REDACTED);
    }

    #[test]
    fn invalid_pattern_is_a_clear_error() {
        let err = compile(PatternKind::Value, "(unclosed").unwrap_err();
        assert_eq!(err.kind(), PatternKind::Value);
        assert!(err.to_string().starts_with("invalid value masking pattern"));
    }
}
