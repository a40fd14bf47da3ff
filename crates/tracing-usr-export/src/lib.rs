//! Export side of [tracing-usr](https://docs.rs/tracing-usr): the record model shared by the layer
//! and every exporter, the [`Exporter`] trait, the background [`Pipeline`] (bounded queue,
//! batching, value masking, drop counts) and the embedded JSON-lines exporter.
//!
//! Most users never touch this crate directly: `tracing_usr::layer()` builds the pipeline from
//! the environment. Implement [`Exporter`] to send records somewhere else, and use
//! [`InMemoryExporter`] in tests.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

#[cfg(feature = "datadog")]
pub mod datadog;
pub mod exporter;
#[cfg(any(feature = "datadog", feature = "otlp"))]
pub mod http;
pub mod json_lines;
pub mod memory;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pipeline;
pub mod record;
#[cfg(feature = "datadog")]
pub mod remote_config;
pub mod spool;

pub use exporter::{ExportContext, ExportError, ExportErrorKind, Exporter, LossReason, Outcomes, RecordKind};
pub use json_lines::JsonLinesExporter;
pub use memory::InMemoryExporter;
pub use pipeline::{ExporterStats, Pipeline, PipelineConfig, PipelineStats, RecordStats, TimeoutError};
pub use record::{FieldValue, Key, Level, LogRecord, Record, SpanEvent, SpanRecord, Text, UserTags};

/// The executable's file name, the default service name.
pub fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unnamed-rust-service".to_owned())
}
