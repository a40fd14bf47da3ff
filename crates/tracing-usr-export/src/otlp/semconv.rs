//! The OpenTelemetry names of a local root's facts: the semantic-convention user attributes
//! (from the one mapping of `tracing_usr_core::semconv`) and the `_dd.p.*` propagation state as
//! the W3C `tracestate` `dd` member.

use crate::record::{Level, SpanRecord};

/// A semantic-convention user attribute: its key, value, and whether the value is an array.
pub(super) type Semconv<'a> = (&'static str, &'a str, bool);

/// The semantic-convention user attributes of a local root, in order (at most seven), from the
/// one mapping of `tracing_usr_core::semconv`.
pub(super) fn user_attributes(span: &SpanRecord) -> [Option<Semconv<'_>>; 7] {
    tracing_usr_core::semconv::user_attributes(|k| span.meta(k)).map(|a| a.map(|a| (a.key, a.value, a.array)))
}

/// Writes the W3C `tracestate` `dd` member of a root's propagation tags (empty without any).
pub(super) fn write_trace_state(out: &mut String, span: &SpanRecord) {
    out.clear();
    for (k, v) in &span.meta {
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
