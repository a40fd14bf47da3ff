//! Datadog-format log lines: the shape the agent's log collection parses, with the ids of the
//! trace they belong to (so a user's logs and traces correlate), the user tags, and any string
//! escaped as JSON requires.

use std::io::Write;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::Value;
use tracing_subscriber::prelude::*;
use tracing_usr::export::datadog::{DatadogConfig, DatadogLogsExporter};
use tracing_usr::export::{FieldValue, InMemoryExporter, Level, LogRecord};
use tracing_usr::{JsonLines, User};

use crate::support::builder_with_env;

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config() -> DatadogConfig {
    DatadogConfig {
        service: "checkout".to_owned(),
        env: Some("prod".to_owned()),
        version: Some("1.2.3".to_owned()),
        ..DatadogConfig::default()
    }
}

#[test]
fn log_lines_carry_the_trace_the_user_and_every_field() {
    let out = Shared::default();
    let memory = InMemoryExporter::default();
    let layer = builder_with_env(&[])
        .with_json_lines(JsonLines::None)
        .with_exporter(memory.clone())
        .with_exporter(DatadogLogsExporter::new(Box::new(out.clone()), &config()))
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        let root = tracing::info_span!("request");
        let _root = root.enter();
        tracing_usr::identify(&User::new("u-7").with_email("ada@example.com")).unwrap();
        let inner = tracing::info_span!("db");
        let _inner = inner.enter();
        tracing::warn!(
            rows = 3,
            big = u64::MAX,
            below = -5i64,
            ratio = 0.5,
            nan = f64::NAN,
            ok = true,
            odd = "quote \" backslash \\ newline \n bell \u{7} é",
            status = "spoofed",
            "said \"hi\"\tthere"
        );
    });
    handle.flush().unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line: Value = serde_json::from_str(lines[0]).expect("a JSON object per line");
    let span = memory
        .spans()
        .into_iter()
        .find(|s| s.name == "db")
        .expect("the db span");
    let log = &memory.logs()[0];
    assert_eq!(line["timestamp"], log.timestamp_unix_nanos / 1_000_000);
    assert_eq!(line["status"], "warn");
    assert_eq!(line["message"], "said \"hi\"\tthere");
    assert_eq!(line["logger.name"], module_path!());
    // Decimal strings of the lower 64 bits, as Datadog's tracers inject them.
    assert_eq!(line["dd.trace_id"], (span.trace_id as u64).to_string());
    assert_eq!(line["dd.span_id"], span.span_id.to_string());
    assert_eq!(line["dd.service"], "checkout");
    assert_eq!(line["dd.env"], "prod");
    assert_eq!(line["dd.version"], "1.2.3");
    assert_eq!(line["usr.id"], "u-7");
    assert_eq!(line["usr.email"], "ada@example.com");
    assert_eq!(line["rows"], 3);
    assert_eq!(line["big"], u64::MAX);
    assert_eq!(line["below"], -5);
    assert_eq!(line["ratio"], 0.5);
    assert_eq!(line["nan"], "NaN");
    assert_eq!(line["ok"], true);
    assert_eq!(line["odd"], "quote \" backslash \\ newline \n bell \u{7} é");
    // A field never overrides a reserved key.
    assert_eq!(text.matches("\"status\"").count(), 1);
}

fn record(message: String, target: String, key: String, value: String, user: String) -> LogRecord {
    LogRecord {
        timestamp_unix_nanos: 1_700_000_000_123_456_789,
        level: Level::Info,
        target: target.into(),
        message: Some(message.into()),
        fields: vec![(key.into(), FieldValue::Str(value.into()))],
        trace_id: Some(u128::MAX),
        span_id: Some(42),
        user: vec![("usr.id".into(), user.into())].into(),
    }
}

proptest! {
    /// Whatever the strings hold (quotes, backslashes, control characters, any Unicode), each
    /// record is one JSON line whose values read back exactly.
    #[test]
    fn any_string_reads_back_exactly(
        message in any::<String>(),
        target in any::<String>(),
        key in "[a-z]{1,8}(\\.[\\PC\"\\\\\u{0}-\u{1f}]{0,6})?",
        value in any::<String>(),
        user in any::<String>(),
    ) {
        let exporter = DatadogLogsExporter::new(Box::new(std::io::sink()), &config());
        let log = record(message.clone(), target.clone(), key.clone(), value.clone(), user.clone());
        let mut line = Vec::new();
        exporter.write_json(&mut line, &log).unwrap();
        prop_assert!(!line.contains(&b'\n'));
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        prop_assert_eq!(&parsed["message"], &Value::from(message));
        prop_assert_eq!(&parsed["logger.name"], &Value::from(target));
        prop_assert_eq!(&parsed["usr.id"], &Value::from(user));
        prop_assert_eq!(&parsed["dd.trace_id"], &Value::from(u64::MAX.to_string()));
        prop_assert_eq!(&parsed["timestamp"], &Value::from(1_700_000_000_123u64));
        if !matches!(key.as_str(), "timestamp" | "status" | "message" | "usr.id") {
            prop_assert_eq!(&parsed[key.as_str()], &Value::from(value));
        }
    }
}
