//! The OpenTelemetry names of a local root's facts: their attributes (rendered by
//! `tracing_usr_core::root`, with the one naming table of `tracing_usr_core::semconv`) and the
//! `_dd.p.*` propagation state as the W3C `tracestate` `dd` member.

use tracing_usr_core::root::{AttributeKind, AttributeValue};
use tracing_usr_core::semconv::USER_ATTRIBUTE_KEYS;

use crate::record::{Level, SpanRecord};

/// Whether a span's own tag `key` gives way to a semantic-convention user attribute its root
/// facts write (an application field named `user.id` on the root, say). Keys that are no such
/// attribute are told apart by name, without deriving the root's user attributes.
pub(super) fn shadowed(span: &SpanRecord, key: &str) -> bool {
    USER_ATTRIBUTE_KEYS.contains(&key)
        && span
            .root
            .as_deref()
            .is_some_and(|facts| facts.user_attributes().any(|a| a.key == key))
}

/// The OTLP attributes of a root's facts, in order (see
/// [`RootFacts::visit_attributes`](tracing_usr_core::RootFacts::visit_attributes)): all but the
/// `_dd.p.*` propagation tags, which go into `tracestate`.
pub(super) fn root_attributes<'a>(span: &'a SpanRecord, mut f: impl FnMut(&str, AttributeValue<'a>)) {
    if let Some(facts) = &span.root {
        facts.visit_attributes(|kind, key, value| {
            if kind != AttributeKind::Propagation {
                f(key, value);
            }
        });
    }
}

/// Writes the W3C `tracestate` `dd` member of a root's propagation tags (empty without any):
/// the span's own `_dd.p.*` tags, then its facts'.
pub(super) fn write_trace_state(out: &mut String, span: &SpanRecord) {
    out.clear();
    let facts = span
        .root
        .as_deref()
        .map(|f| &f.propagation[..])
        .unwrap_or_default();
    for (k, v) in span.meta.iter().chain(facts) {
        let Some(rest) = k.strip_prefix("_dd.p.") else {
            continue;
        };
        out.push_str(if out.is_empty() { "dd=" } else { ";" });
        out.push_str("t.");
        out.push_str(rest);
        out.push(':');
        for c in v.as_str().chars() {
            out.push(if c == '=' { '~' } else { c });
        }
    }
}

/// The OTLP `SeverityNumber` of a level: TRACE=1, DEBUG=5, INFO=9, WARN=13, ERROR=17.
pub(super) fn severity(level: Level) -> i32 {
    match level {
        Level::Trace => 1,
        Level::Debug => 5,
        Level::Info => 9,
        Level::Warn => 13,
        Level::Error => 17,
    }
}
