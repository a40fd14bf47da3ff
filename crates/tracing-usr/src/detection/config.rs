//! The detection settings file.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tracing_usr_core::detection::DetectionConfigErrorKind::{self, InvalidValue, Syntax, Unknown};
use tracing_usr_core::detection::{DetectionConfig, DetectionConfigError, RuleId};

/// Parses a detection settings file over the defaults.
///
/// ```json
/// {
///   "enabled": true,
///   "max_keys": 10000,
///   "block_duration_secs": 900,
///   "max_signal_duration_secs": 86400,
///   "rules": {
///     "appsec-ato-groupby-ip": { "threshold": 30, "distinct": 5, "window_secs": 600, "block_ip": true, "block_user": true },
///     "appsec-ato-bf": { "enabled": false },
///     "def-000-389": { "threshold": 20 }
///   }
/// }
/// ```
///
/// Every key is optional; rules are named by their readable or opaque id. Returns the
/// settings and whether detection is enabled.
///
/// # Errors
/// Invalid JSON, unknown keys or rule ids, values of the wrong type or range, and actions the
/// rule does not allow, each named.
///
/// ```
/// use tracing_usr::detection::{parse_config, RuleId};
/// let (config, enabled) = parse_config(r#"{"rules": {"bl-payment-failures": {"threshold": 9, "block_ip": true}}}"#).unwrap();
/// assert!(enabled);
/// assert_eq!(config.rule(RuleId::PaymentFailures).threshold, 9);
/// assert!(parse_config(r#"{"rules": {"bl-password-reset-bf": {"block_ip": true}}}"#).is_err());
/// ```
pub fn parse_config(text: &str) -> Result<(DetectionConfig, bool), DetectionConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| err(Syntax, format!("not valid JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(err(Syntax, "expected a JSON object".into()));
    };
    let mut config = DetectionConfig::default();
    let mut enabled = true;
    for (key, value) in &root {
        match key.as_str() {
            "enabled" => enabled = boolean(key, value)?,
            "max_keys" => {
                config.max_keys = usize::try_from(uint(key, value)?)
                    .map_err(|_| err(InvalidValue, "max_keys: too large".into()))?
            }
            "block_duration_secs" => config.block_duration = Duration::from_secs(uint(key, value)?),
            "max_signal_duration_secs" => config.max_signal_duration = Duration::from_secs(uint(key, value)?),
            "rules" => {
                let Value::Object(rules) = value else {
                    return Err(err(Syntax, "rules: expected an object keyed by rule id".into()));
                };
                for (id, settings) in rules {
                    parse_rule(&mut config, id, settings)?;
                }
            }
            other => return Err(err(Unknown, format!("{other}: unknown setting"))),
        }
    }
    config.validate()?;
    Ok((config, enabled))
}

/// The settings of rule `id` (`rules.<id>` of the file) over its defaults in `config`.
fn parse_rule(config: &mut DetectionConfig, id: &str, settings: &Value) -> Result<(), DetectionConfigError> {
    let rule = RuleId::from_id(id).ok_or_else(|| err(Unknown, format!("rules: unknown rule id {id:?}")))?;
    let Value::Object(settings) = settings else {
        return Err(err(Syntax, format!("rules.{id}: expected an object")));
    };
    let c = config.rule_mut(rule);
    for (k, v) in settings {
        let path = format!("rules.{id}.{k}");
        let small = |n: u64| u32::try_from(n).map_err(|_| err(InvalidValue, format!("{path}: too large")));
        match k.as_str() {
            "enabled" => c.enabled = boolean(&path, v)?,
            "threshold" => c.threshold = small(uint(&path, v)?)?,
            "distinct" if rule == RuleId::CredentialStuffing => c.distinct = small(uint(&path, v)?)?,
            "window_secs" => c.window = Duration::from_secs(uint(&path, v)?),
            "block_ip" => c.block_ip = boolean(&path, v)?,
            "block_user" => c.block_user = boolean(&path, v)?,
            _ => return Err(err(Unknown, format!("{path}: unknown setting"))),
        }
    }
    Ok(())
}

fn err(kind: DetectionConfigErrorKind, message: String) -> DetectionConfigError {
    DetectionConfigError::new(kind, message)
}

fn uint(key: &str, v: &Value) -> Result<u64, DetectionConfigError> {
    v.as_u64().ok_or_else(|| {
        err(
            InvalidValue,
            format!("{key}: expected a non-negative integer, found {v}"),
        )
    })
}

fn boolean(key: &str, v: &Value) -> Result<bool, DetectionConfigError> {
    v.as_bool()
        .ok_or_else(|| err(InvalidValue, format!("{key}: expected true or false, found {v}")))
}

/// Reads and parses a detection settings file (see [`parse_config`]).
///
/// # Errors
/// The file cannot be read, or [`parse_config`] rejects it.
pub fn load_config(path: &Path) -> Result<(DetectionConfig, bool), DetectionConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        DetectionConfigError::new(
            DetectionConfigErrorKind::Read,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_config(&text).map_err(|e| e.context(path.display()))
}
