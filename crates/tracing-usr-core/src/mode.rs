//! The identification / anonymization / disabled modes and their variables (docs/tags.md "modes").
//!
//! Parsing is pure: the caller reads the variables (once, when the layer is built) and hands
//! the values in. See [`resolve_mode`].

use std::fmt;
use std::str::FromStr;

/// Canonical mode variable.
pub const ENV_MODE: &str = "DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE";
/// Deprecated mode variable, read only when [`ENV_MODE`] is unset.
pub const ENV_MODE_DEPRECATED: &str = "DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING";
/// Flag that forces `disabled` when false.
pub const ENV_MODE_ENABLED: &str = "DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING_ENABLED";

/// What the field path (identity collected from `usr.*` fields) does with what it collects.
///
/// SDK calls are never affected by the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Values are exported as collected. The default.
    #[default]
    Identification,
    /// `usr.id`, `usr.login` and `usr.session_id` are hashed (`anon_…`); email, name and
    /// free-form keys are dropped; role and scope are kept.
    Anonymization,
    /// Nothing collected from fields leaves the process; field-path business events are ignored.
    Disabled,
}

impl Mode {
    /// The canonical name, as written in `_dd.appsec.user.collection_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Identification => "identification",
            Mode::Anonymization => "anonymization",
            Mode::Disabled => "disabled",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Mode`] from an unknown spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseModeError {
    value: String,
}

impl fmt::Display for ParseModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown user instrumentation mode {:?} (expected identification, ident, anonymization, anon or disabled)",
            self.value
        )
    }
}

impl std::error::Error for ParseModeError {}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// Parses the canonical spellings and their aliases: ASCII whitespace trimmed, ASCII
    /// case-insensitive, no prefix matching.
    ///
    /// ```
    /// use tracing_usr_core::Mode;
    /// assert_eq!(" ANON ".parse::<Mode>(), Ok(Mode::Anonymization));
    /// assert!("dis".parse::<Mode>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let eq = |name: &str| v.eq_ignore_ascii_case(name);
        if eq("identification") || eq("ident") {
            Ok(Mode::Identification)
        } else if eq("anonymization") || eq("anon") {
            Ok(Mode::Anonymization)
        } else if eq("disabled") {
            Ok(Mode::Disabled)
        } else {
            Err(ParseModeError { value: s.to_owned() })
        }
    }
}

/// A problem found in the configuration, reported once as a warning (target
/// `tracing_usr::config`) after the layer is registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The variable concerned.
    pub variable: &'static str,
    /// What is wrong and which fallback applies.
    pub message: String,
}

impl ConfigWarning {
    /// A warning about `variable`: what is wrong and which fallback applies.
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// The values of the three mode variables, as read from the environment (`None` = unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModeVars<'a> {
    /// `DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE`.
    pub mode: Option<&'a str>,
    /// `DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING` (deprecated).
    pub deprecated: Option<&'a str>,
    /// `DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING_ENABLED`.
    pub enabled: Option<&'a str>,
}

fn set(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn parse_deprecated(value: &str) -> Option<Mode> {
    let v = value.trim_matches(|c: char| c.is_ascii_whitespace());
    let eq = |name: &str| v.eq_ignore_ascii_case(name);
    if eq("extended") {
        Some(Mode::Identification)
    } else if eq("safe") || eq("true") || eq("1") {
        Some(Mode::Anonymization)
    } else if eq("disabled") || eq("false") || eq("0") {
        Some(Mode::Disabled)
    } else {
        None
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    let v = value.trim_matches(|c: char| c.is_ascii_whitespace());
    if v.eq_ignore_ascii_case("true") || v == "1" {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// Resolves the effective mode: `programmatic` (the builder) > the `_ENABLED` flag (can only
/// force `disabled`) > the canonical variable > the deprecated variable > `identification`.
///
/// Empty values count as unset. An unrecognised value gives one warning and falls back to
/// `disabled` (for the flag: to `false`, which also means `disabled`). Using the deprecated
/// variable gives one deprecation warning.
///
/// ```
/// use tracing_usr_core::mode::{resolve_mode, ModeVars};
/// use tracing_usr_core::Mode;
/// let (mode, warnings) = resolve_mode(None, &ModeVars { mode: Some("anon"), ..Default::default() });
/// assert_eq!(mode, Mode::Anonymization);
/// assert!(warnings.is_empty());
/// let (mode, warnings) = resolve_mode(None, &ModeVars { mode: Some("bogus"), ..Default::default() });
/// assert_eq!((mode, warnings.len()), (Mode::Disabled, 1));
/// ```
pub fn resolve_mode(programmatic: Option<Mode>, vars: &ModeVars<'_>) -> (Mode, Vec<ConfigWarning>) {
    let mut warnings = Vec::new();
    if let Some(mode) = programmatic {
        return (mode, warnings);
    }
    let enabled = match set(vars.enabled) {
        None => true,
        Some(v) => parse_flag(v).unwrap_or_else(|| {
            warnings.push(ConfigWarning {
                variable: ENV_MODE_ENABLED,
                message: format!(
                    "invalid value {v:?} (expected true, false, 1 or 0); treating it as false: user instrumentation mode is disabled"
                ),
            });
            false
        }),
    };
    let from_vars = if let Some(v) = set(vars.mode) {
        v.parse::<Mode>().unwrap_or_else(|_| {
            warnings.push(ConfigWarning {
                variable: ENV_MODE,
                message: format!(
                    "invalid value {v:?} (expected identification, ident, anonymization, anon or disabled); falling back to disabled"
                ),
            });
            Mode::Disabled
        })
    } else if let Some(v) = set(vars.deprecated) {
        match parse_deprecated(v) {
            Some(mode) => {
                warnings.push(ConfigWarning {
                    variable: ENV_MODE_DEPRECATED,
                    message: format!("is deprecated; use {ENV_MODE}={} instead", mode.as_str()),
                });
                mode
            }
            None => {
                warnings.push(ConfigWarning {
                    variable: ENV_MODE_DEPRECATED,
                    message: format!(
                        "invalid value {v:?} (expected extended, safe or disabled; the variable is deprecated, use {ENV_MODE}); falling back to disabled"
                    ),
                });
                Mode::Disabled
            }
        }
    } else {
        Mode::Identification
    };
    let mode = if enabled { from_vars } else { Mode::Disabled };
    (mode, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(mode: Option<&'a str>, dep: Option<&'a str>, en: Option<&'a str>) -> ModeVars<'a> {
        ModeVars {
            mode,
            deprecated: dep,
            enabled: en,
        }
    }

    #[test]
    fn default_is_identification() {
        assert_eq!(
            resolve_mode(None, &vars(None, None, None)).0,
            Mode::Identification
        );
        assert_eq!(
            resolve_mode(None, &vars(Some(""), Some(""), Some(""))).0,
            Mode::Identification
        );
    }

    #[test]
    fn canonical_spellings_and_aliases() {
        for (v, m) in [
            ("identification", Mode::Identification),
            ("IDENT", Mode::Identification),
            ("anonymization", Mode::Anonymization),
            ("\tanon\n", Mode::Anonymization),
            ("Disabled", Mode::Disabled),
        ] {
            let (mode, warnings) = resolve_mode(None, &vars(Some(v), None, None));
            assert_eq!(mode, m, "{v:?}");
            assert!(warnings.is_empty());
        }
    }

    #[test]
    fn no_prefix_matching() {
        for v in ["i", "dis", "anonym", "identificationx"] {
            let (mode, warnings) = resolve_mode(None, &vars(Some(v), None, None));
            assert_eq!(mode, Mode::Disabled, "{v:?}");
            assert_eq!(warnings.len(), 1);
            assert_eq!(warnings[0].variable, ENV_MODE);
            assert!(warnings[0].message.contains(v));
        }
    }

    #[test]
    fn deprecated_variable_is_read_only_when_canonical_is_unset() {
        assert_eq!(
            resolve_mode(None, &vars(None, Some("extended"), None)).0,
            Mode::Identification
        );
        assert_eq!(
            resolve_mode(None, &vars(None, Some("safe"), None)).0,
            Mode::Anonymization
        );
        assert_eq!(resolve_mode(None, &vars(None, Some("0"), None)).0, Mode::Disabled);
        let (mode, warnings) = resolve_mode(None, &vars(Some("ident"), Some("safe"), None));
        assert_eq!(mode, Mode::Identification);
        assert!(warnings.is_empty());
        let (_, warnings) = resolve_mode(None, &vars(None, Some("safe"), None));
        assert_eq!(warnings.len(), 1, "one deprecation warning");
    }

    #[test]
    fn enabled_false_forces_disabled_but_not_over_the_builder() {
        assert_eq!(
            resolve_mode(None, &vars(Some("ident"), None, Some("false"))).0,
            Mode::Disabled
        );
        assert_eq!(
            resolve_mode(None, &vars(Some("ident"), None, Some("1"))).0,
            Mode::Identification
        );
        let (mode, w) = resolve_mode(None, &vars(Some("ident"), None, Some("nope")));
        assert_eq!((mode, w.len()), (Mode::Disabled, 1));
        let (mode, w) = resolve_mode(Some(Mode::Anonymization), &vars(Some("x"), None, Some("false")));
        assert_eq!((mode, w.len()), (Mode::Anonymization, 0));
    }
}
