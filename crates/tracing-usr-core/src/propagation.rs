//! Propagation of the user id across services (docs/tags.md "propagation"): encodings of `_dd.p.usr.id` in
//! `x-datadog-tags` and W3C `tracestate`. Pure functions; the HTTP glue lives in the layer crate.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::identity::{Key, Tags};

/// Default maximum length of `x-datadog-tags` (`DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH`).
pub const DEFAULT_TAGS_MAX_LENGTH: usize = 512;

/// Standard base64 (RFC 4648 alphabet, with padding) of the user id's UTF-8 bytes.
///
/// ```
/// use tracing_usr_core::propagation::encode_user_id;
/// assert_eq!(encode_user_id("user-1"), "dXNlci0x");
/// assert_eq!(encode_user_id("user-12"), "dXNlci0xMg==");
/// ```
pub fn encode_user_id(user_id: &str) -> String {
    STANDARD.encode(user_id.as_bytes())
}

/// Builds the `x-datadog-tags` value from `_dd.p.*` tags; `None` when it would be longer than
/// `max_len` (the caller then sends nothing and sets `_dd.propagation_error=inject_max_size`).
///
/// ```
/// use tracing_usr_core::propagation::x_datadog_tags;
/// let tags = vec![("_dd.p.dm".into(), "-5".to_owned()), ("_dd.p.usr.id".into(), "dXNlci0x".to_owned())];
/// assert_eq!(x_datadog_tags(&tags, 512).as_deref(), Some("_dd.p.dm=-5,_dd.p.usr.id=dXNlci0x"));
/// assert_eq!(x_datadog_tags(&tags, 10), None);
/// ```
pub fn x_datadog_tags(tags: &[(Key, String)], max_len: usize) -> Option<String> {
    let value = tags
        .iter()
        .filter(|(k, _)| k.starts_with("_dd.p."))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    (value.len() <= max_len).then_some(value)
}

/// Parses `x-datadog-tags`: the well-formed `_dd.p.*` pairs, others ignored.
pub fn parse_x_datadog_tags(value: &str) -> Tags {
    value
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.starts_with("_dd.p.") && !v.is_empty() && !k.contains(' '))
                .then(|| (Key::Owned(k.to_owned()), v.to_owned()))
        })
        .collect()
}

/// The `dd` member of W3C `tracestate` for these propagation tags and sampling priority:
/// `s:<priority>;t.<key>:<value>`, with `=` written as `~` (`t.usr.id:dXNlci0xMg~~`).
pub fn tracestate_dd(priority: Option<i32>, tags: &[(Key, String)]) -> String {
    let mut parts = Vec::new();
    if let Some(p) = priority {
        parts.push(format!("s:{p}"));
    }
    for (k, v) in tags {
        if let Some(rest) = k.strip_prefix("_dd.p.") {
            let value: String = v.chars().map(|c| if c == '=' { '~' } else { c }).collect();
            parts.push(format!("t.{rest}:{value}"));
        }
    }
    parts.join(";")
}

/// Parses the `dd` member of a `tracestate` header: its sampling priority and its `t.*` tags as
/// `_dd.p.*` (with `~` turned back into `=`).
pub fn parse_tracestate(value: &str) -> (Option<i32>, Tags) {
    let mut priority = None;
    let mut tags = Tags::new();
    let Some(dd) = value
        .split(',')
        .map(str::trim)
        .find_map(|member| member.strip_prefix("dd="))
    else {
        return (None, tags);
    };
    for part in dd.split(';') {
        let Some((k, v)) = part.split_once(':') else {
            continue;
        };
        if k == "s" {
            priority = v.parse().ok();
        } else if let Some(rest) = k.strip_prefix("t.") {
            let value: String = v.chars().map(|c| if c == '~' { '=' } else { c }).collect();
            tags.push((Key::Owned(format!("_dd.p.{rest}")), value));
        }
    }
    (priority, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        assert_eq!(encode_user_id("usr.id"), "dXNyLmlk");
        let tags = vec![(Key::Borrowed("_dd.p.usr.id"), "dXNlci0xMg==".to_owned())];
        assert_eq!(tracestate_dd(None, &tags), "t.usr.id:dXNlci0xMg~~");
        let (_, back) = parse_tracestate("foo=bar,dd=s:2;t.usr.id:dXNlci0xMg~~;t.dm:-5");
        assert_eq!(
            back[0],
            (Key::Borrowed("_dd.p.usr.id"), "dXNlci0xMg==".to_owned())
        );
        assert_eq!(parse_tracestate("dd=t.usr.id:MTIz").1[0].1, "MTIz");
    }

    #[test]
    fn x_datadog_tags_round_trip() {
        let parsed = parse_x_datadog_tags("_dd.p.dm=-5, _dd.p.usr.id=dXNlci0x,bogus,other=1");
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            x_datadog_tags(&parsed, 512).unwrap(),
            "_dd.p.dm=-5,_dd.p.usr.id=dXNlci0x"
        );
    }
}
