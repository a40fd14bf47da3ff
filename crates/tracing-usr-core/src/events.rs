//! Business events (docs/tags.md "business events"): built-in names, metadata flattening, and the tags of an event on
//! the SDK path and on the field path.

use serde_json::Value;

use crate::anonymize::Anonymizer;
use crate::identity::{apply_mode, Key, Tags};
use crate::keys;
use crate::mask::{Masker, REDACTED};
use crate::mode::Mode;
use crate::value::format_f64;

/// A successful login.
pub const LOGIN_SUCCESS: &str = "users.login.success";
/// A failed login.
pub const LOGIN_FAILURE: &str = "users.login.failure";
/// A successful account creation.
pub const SIGNUP: &str = "users.signup";
/// An account deletion.
pub const USER_DELETE: &str = "users.delete";
/// A password reset request.
pub const PASSWORD_RESET: &str = "users.password_reset";
/// A failed payment.
pub const PAYMENT_FAILURE: &str = "payment.failure";
/// A sensitive activity (with `name` and `required_role`).
pub const SENSITIVE_ACTIVITY: &str = "activity.sensitive";

/// Metadata paths deeper than this many segments are dropped (docs/tags.md "metadata flattening").
pub const MAX_DEPTH: usize = 5;

/// `appsec.events.<name>.`
pub fn prefix(name: &str) -> String {
    format!("appsec.events.{name}.")
}

/// Whether `name` is one of the three events that touch identity and collection mode.
pub fn is_login_event(name: &str) -> bool {
    matches!(name, LOGIN_SUCCESS | LOGIN_FAILURE | SIGNUP)
}

/// The extra tags (paths below the event prefix) a built-in event's row defines; caller
/// metadata can never produce them in the dedicated calls.
pub fn row_tags(name: &str) -> &'static [&'static str] {
    match name {
        LOGIN_SUCCESS | SIGNUP => &["usr.login", "usr.id"],
        LOGIN_FAILURE => &["usr.login", "usr.exists", "usr.id"],
        USER_DELETE => &["usr.id"],
        PASSWORD_RESET => &["usr.id", "usr.login", "exists"],
        SENSITIVE_ACTIVITY => &["name", "required_role"],
        _ => &[],
    }
}

/// Paths below an event prefix that are exempt from masking (docs/tags.md "masking").
pub fn is_exempt_event_path(path: &str) -> bool {
    matches!(path, "track" | "exists" | "name" | "required_role" | "usr.exists")
        || keys::is_standard_key(path)
}

/// The text of a metadata leaf (docs/tags.md "metadata flattening"): strings as is, booleans `"true"`/`"false"`, integers
/// in decimal, floats as in a.2; `null`, maps and lists have none.
pub fn leaf_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => format_f64(f),
            _ => n.to_string(),
        }),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Flattens `value` (docs/tags.md "metadata flattening"): one `(path, text)` per leaf whose path has at most
/// [`MAX_DEPTH`] segments; maps contribute their keys (dots and all, as one segment), lists
/// their zero-based indices. Returns whether anything was dropped for depth.
///
/// ```
/// use tracing_usr_core::events::flatten;
/// let mut out = Vec::new();
/// let deep = flatten(&serde_json::json!({"a": {"b": [1, {"c": true}]}, "n": null}), &mut |p, v| out.push((p, v)));
/// assert_eq!(out, [("a.b.0".to_owned(), "1".to_owned()), ("a.b.1.c".to_owned(), "true".to_owned())]);
/// assert!(!deep);
/// ```
pub fn flatten(value: &Value, emit: &mut dyn FnMut(String, String)) -> bool {
    fn walk(value: &Value, path: &mut Vec<String>, emit: &mut dyn FnMut(String, String), dropped: &mut bool) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, emit, dropped);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, emit, dropped);
                    path.pop();
                }
            }
            leaf => {
                if path.len() > MAX_DEPTH {
                    *dropped = true;
                } else if let Some(text) = leaf_text(leaf) {
                    emit(path.join("."), text);
                }
            }
        }
    }
    let mut dropped = false;
    match value {
        Value::Object(_) | Value::Array(_) => walk(value, &mut Vec::new(), emit, &mut dropped),
        // A bare leaf has no path: nothing to write.
        _ => {}
    }
    dropped
}

/// Masks one event tag: the key rule is tested on the path below the event prefix.
pub fn mask_event_value(masker: &Masker, path: &str, value: String) -> String {
    if is_exempt_event_path(path) {
        value
    } else if masker.key_matches(path) {
        REDACTED.to_owned()
    } else {
        match masker.mask_value(&value) {
            std::borrow::Cow::Borrowed(_) => value,
            std::borrow::Cow::Owned(masked) => masked,
        }
    }
}

/// Builds the public tags of an SDK event: `track`, the explicit row tags, then the metadata
/// (minus `track` and, when `drop_row_tags`, minus the row's tags), masked.
pub fn sdk_event_tags(
    name: &str,
    explicit: &[(&str, String)],
    metadata: Option<&Value>,
    drop_row_tags: bool,
    masker: &Masker,
) -> Tags {
    let prefix = prefix(name);
    let reserved = row_tags(name);
    let mut tags = Tags::new();
    let push = |tags: &mut Tags, path: &str, value: String| {
        let key = format!("{prefix}{path}");
        let value = mask_event_value(masker, path, value);
        match tags.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => tags.push((Key::Owned(key), value)),
        }
    };
    push(&mut tags, "track", "true".to_owned());
    if let Some(metadata) = metadata {
        flatten(metadata, &mut |path, value| {
            if path == "track" || (drop_row_tags && reserved.contains(&path.as_str())) {
                return;
            }
            push(&mut tags, &path, value);
        });
    }
    for (path, value) in explicit {
        push(&mut tags, path, value.clone());
    }
    tags
}

/// The value of a top-level metadata key as text (for the row tags `track_custom_event` takes
/// from its metadata).
pub fn metadata_text(metadata: Option<&Value>, key: &str) -> Option<String> {
    metadata?.get(key).and_then(leaf_text).filter(|v| !v.is_empty())
}

/// What a field-path business event contributes (docs/tags.md "events from tracing events"), after the mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldEvent {
    /// The event's public tags (`appsec.events.N.*`, `track` included).
    pub tags: Tags,
    /// The root `usr.id` it writes (login success and signup).
    pub root_id: Option<String>,
    /// The private copies it updates (login and signup events).
    pub private_id: Option<String>,
    /// See `private_id`.
    pub private_login: Option<String>,
}

/// Builds a field-path business event from the raw `usr.*` fields and the other fields (as
/// text) of a `tracing` event. `None` when the mode is disabled or a required input is missing.
pub fn field_event(
    name: &str,
    usr: &[(&str, String)],
    others: &[(Key, String)],
    mode: Mode,
    anonymizer: &Anonymizer,
    masker: &Masker,
) -> Option<FieldEvent> {
    if mode == Mode::Disabled || name.is_empty() || !has_required_inputs(name, usr, others) {
        return None;
    }
    let processed =
        |key: &str| last_set(usr, key).and_then(|v| apply_mode(mode, key, v.to_owned(), anonymizer));
    let prefix = prefix(name);
    let mut event = FieldEvent::default();
    event
        .tags
        .push((Key::Owned(format!("{prefix}track")), "true".to_owned()));
    let mut seen: Vec<&str> = Vec::new();
    for (key, _) in usr.iter().rev() {
        if *key == keys::USR_EVENT || seen.contains(key) {
            continue;
        }
        seen.push(key);
        if !event_takes_usr_key(name, key) {
            continue;
        }
        if let Some(value) = processed(key) {
            let value = mask_event_value(masker, key, value);
            event.tags.push((Key::Owned(format!("{prefix}{key}")), value));
        }
    }
    let mut seen_others: Vec<&str> = Vec::new();
    for (key, value) in others.iter().rev() {
        if key == "message" || seen_others.contains(&key.as_ref()) || value.is_empty() {
            continue;
        }
        seen_others.push(key);
        event.tags.push((
            Key::Owned(format!("{prefix}{key}")),
            mask_event_value(masker, key, value.clone()),
        ));
    }
    if is_login_event(name) {
        event.private_id = processed(keys::USR_ID);
        event.private_login = processed(keys::USR_LOGIN);
        if name != LOGIN_FAILURE {
            event.root_id = event.private_id.clone();
        }
    }
    Some(event)
}

/// The last non-empty value of `key` among `fields`.
fn last_set<'a, K: AsRef<str>>(fields: &'a [(K, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(k, v)| k.as_ref() == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Whether a field-path event `name` has the inputs its row requires (docs/tags.md "events
/// from tracing events").
fn has_required_inputs(name: &str, usr: &[(&str, String)], others: &[(Key, String)]) -> bool {
    let raw = |key: &str| last_set(usr, key);
    match name {
        LOGIN_SUCCESS | SIGNUP => raw(keys::USR_LOGIN).is_some(),
        LOGIN_FAILURE => {
            raw(keys::USR_LOGIN).is_some()
                && raw(keys::USR_EXISTS).is_some_and(|v| v == "true" || v == "false")
        }
        USER_DELETE => raw(keys::USR_ID).is_some(),
        PASSWORD_RESET => last_set(others, "exists").is_some(),
        SENSITIVE_ACTIVITY => last_set(others, "name").is_some(),
        _ => true,
    }
}

/// Whether event `name` writes its `usr.*` field `key` among its tags: a login success's user
/// id goes to the root instead, a login failure keeps only the login, `exists` and the id.
fn event_takes_usr_key(name: &str, key: &str) -> bool {
    match name {
        LOGIN_SUCCESS => key != keys::USR_ID,
        LOGIN_FAILURE => matches!(key, keys::USR_LOGIN | keys::USR_EXISTS | keys::USR_ID),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: Value) -> (Vec<(String, String)>, bool) {
        let mut out = Vec::new();
        let dropped = flatten(&v, &mut |p, t| out.push((p, t)));
        (out, dropped)
    }

    #[test]
    fn flattening_follows_the_spec_example() {
        let (out, dropped) = paths(json!({
            "prop1": {"prop2": {"prop3": {"prop4": {"data1": "metavalue1", "prop5": {"prop6": "x"}}}}},
            "arr": [{"key": "metavalue2"}, "metavalue3"],
            "flag": true, "count": 123, "ratio": 1.5, "missing": null, "empty": {}, "none": []
        }));
        assert!(dropped);
        let mut out = out;
        out.sort();
        assert_eq!(
            out,
            [
                ("arr.0.key", "metavalue2"),
                ("arr.1", "metavalue3"),
                ("count", "123"),
                ("flag", "true"),
                ("prop1.prop2.prop3.prop4.data1", "metavalue1"),
                ("ratio", "1.5"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn keys_with_dots_are_one_segment() {
        let (out, _) = paths(json!({"a.b.c.d": {"e.f": {"g": {"h": {"i": "deep"}}}}}));
        assert_eq!(out, [("a.b.c.d.e.f.g.h.i".to_owned(), "deep".to_owned())]);
    }

    #[test]
    fn sdk_tags_drop_reserved_metadata_and_mask() {
        let tags = sdk_event_tags(
            LOGIN_SUCCESS,
            &[("usr.login", "l".into())],
            Some(
                &json!({"usr.id": "spoof", "track": "false", "creds": {"password": "x"}, "note": "token=abc"}),
            ),
            true,
            &Masker::default(),
        );
        let get = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("appsec.events.users.login.success.track"), Some("true"));
        assert_eq!(get("appsec.events.users.login.success.usr.id"), None);
        assert_eq!(get("appsec.events.users.login.success.usr.login"), Some("l"));
        assert_eq!(
            get("appsec.events.users.login.success.creds.password"),
            Some(REDACTED)
        );
        assert_eq!(
            get("appsec.events.users.login.success.note"),
            Some("token=<Redacted>")
        );
    }

    #[test]
    fn field_events_follow_the_mode_and_the_row_rules() {
        let a = Anonymizer::default();
        let m = Masker::default();
        let usr = [
            ("usr.login", "user-login".to_owned()),
            ("usr.id", "user-1".to_owned()),
            ("usr.email", "a@b.c".to_owned()),
        ];
        let e = field_event(LOGIN_SUCCESS, &usr, &[], Mode::Anonymization, &a, &m).unwrap();
        assert_eq!(
            e.tags,
            vec![
                (
                    "appsec.events.users.login.success.track".into(),
                    "true".to_owned()
                ),
                (
                    "appsec.events.users.login.success.usr.login".into(),
                    "anon_e9b7a334826ff2ff28b066a92ba8734c".to_owned()
                ),
            ]
        );
        assert_eq!(
            e.root_id.as_deref(),
            Some("anon_c6c289e49e9c05b2145860387b73bcb1")
        );
        assert!(field_event(LOGIN_SUCCESS, &usr, &[], Mode::Disabled, &a, &m).is_none());
        assert!(
            field_event(LOGIN_FAILURE, &usr, &[], Mode::Identification, &a, &m).is_none(),
            "usr.exists required"
        );
    }
}
