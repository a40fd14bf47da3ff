//! Shared test support: a subscriber with the layer and an in-memory exporter, installed
//! thread-locally, and helpers to read what was exported.
#![allow(dead_code, unreachable_pub)]

pub mod http_head;
pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::Dispatch;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_usr::export::{InMemoryExporter, LogRecord, SpanRecord};
use tracing_usr::{Builder, Handle, JsonLines};

/// A builder that reads its "environment" from `vars` only (the process environment is never
/// consulted, so tests can run in parallel).
pub fn builder_with_env(vars: &[(&str, &str)]) -> Builder {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tracing_usr::builder().with_env_lookup(move |name| vars.get(name).cloned())
}

/// Captures the events of a target prefix (the layer's own warnings).
#[derive(Clone, Default)]
pub struct Captured {
    pub events: Arc<Mutex<Vec<(String, String)>>>,
}

struct CaptureLayer {
    prefix: &'static str,
    captured: Captured,
}

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with(self.prefix) {
            return;
        }
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.captured
            .events
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), text.0));
    }
}

/// A layer that records the events whose target starts with `tracing_usr`.
pub fn capture_layer<S: tracing::Subscriber>(captured: Captured) -> impl Layer<S> {
    CaptureLayer {
        prefix: "tracing_usr",
        captured,
    }
}

pub struct Harness {
    pub exporter: InMemoryExporter,
    pub handle: Handle,
    pub warnings: Captured,
    dispatch: Dispatch,
}

impl Harness {
    /// The layer from `builder` (JSON lines off), exporting to memory.
    pub fn new(builder: Builder) -> Self {
        let exporter = InMemoryExporter::default();
        let layer = builder
            .with_json_lines(JsonLines::None)
            .with_exporter(exporter.clone())
            .build();
        let handle = layer.handle();
        let warnings = Captured::default();
        let capture = CaptureLayer {
            prefix: "tracing_usr",
            captured: warnings.clone(),
        };
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer).with(capture));
        Self {
            exporter,
            handle,
            warnings,
            dispatch,
        }
    }

    /// The layer with an empty environment.
    pub fn default_env() -> Self {
        Self::new(builder_with_env(&[]))
    }

    /// The layer with these variables as its environment.
    pub fn with_env(vars: &[(&str, &str)]) -> Self {
        Self::new(builder_with_env(vars))
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Runs `f` with this subscriber as the thread's default.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.handle.flush().expect("flush");
        self.exporter.spans()
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        self.handle.flush().expect("flush");
        self.exporter.logs()
    }

    /// The one exported span named `name`.
    pub fn span(&self, name: &str) -> SpanRecord {
        let spans: Vec<_> = self.spans().into_iter().filter(|s| s.name == name).collect();
        assert_eq!(spans.len(), 1, "expected one span named {name:?}, got {spans:#?}");
        spans.into_iter().next().unwrap()
    }

    /// The exported local roots.
    pub fn roots(&self) -> Vec<SpanRecord> {
        self.spans().into_iter().filter(|s| s.local_root).collect()
    }

    /// The one exported log record whose message is `message`.
    pub fn log(&self, message: &str) -> LogRecord {
        let logs: Vec<_> = self
            .logs()
            .into_iter()
            .filter(|l| l.message.as_deref() == Some(message))
            .collect();
        assert_eq!(logs.len(), 1, "expected one log {message:?}, got {logs:#?}");
        logs.into_iter().next().unwrap()
    }

    fn config_events(&self) -> Vec<String> {
        let events = self.warnings.events.lock().unwrap();
        events
            .iter()
            .filter(|(target, _)| target == "tracing_usr::config")
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// The layer's configuration warnings. They are emitted by a helper thread right after
    /// registration, so wait (at most 5 s) until `expected` of them arrived, then a little longer
    /// so that a duplicate would show up too.
    pub fn config_warnings(&self, expected: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.config_events().len() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(if expected > 0 {
            50
        } else {
            100
        }));
        self.config_events()
    }
}

/// The `usr.*` and `_dd.*` tags of a span, sorted, for readable assertions.
pub fn user_tags(span: &SpanRecord) -> Vec<(String, String)> {
    let mut tags: Vec<_> = span
        .tags()
        .iter()
        .filter(|(k, _)| k.starts_with("usr.") || k.starts_with("_dd."))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tags.sort();
    tags
}

/// `[("usr.id", "u1"), …]` as owned, sorted pairs.
pub fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

/// Every string an exported record contains (keys, values, names, messages).
pub fn all_exported_text(h: &Harness) -> String {
    h.handle.flush().expect("flush");
    format!("{:?}", h.exporter.records())
}
