//! The exporter contract.

use std::fmt;

use crate::record::Record;

/// Why an export failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportErrorKind {
    /// Writing to a file, pipe or socket failed.
    Io,
    /// A record could not be encoded.
    Encode,
    /// The collector could not be reached, or timed out.
    Transport,
    /// The collector answered with an error status.
    Rejected,
}

/// An export failure. Its message never contains record contents or credentials.
#[derive(Clone, Debug)]
pub struct ExportError {
    kind: ExportErrorKind,
    message: String,
}

impl ExportError {
    /// A new error.
    pub fn new(kind: ExportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ExportErrorKind {
        self.kind
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for ExportError {}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> Self {
        ExportError::new(ExportErrorKind::Io, e.to_string())
    }
}

/// Something that sends records out of the process.
///
/// Exporters run on the pipeline's background thread, never on the application's threads, and
/// only ever see masked records. They should not block indefinitely: a slow collector delays
/// the queue behind it, and a full queue drops (and counts) new records.
pub trait Exporter: Send + 'static {
    /// A short name for diagnostics (`json-lines`, `datadog`, `otlp`, …).
    fn name(&self) -> &str;

    /// Exports one batch.
    ///
    /// # Errors
    /// When the batch could not be delivered; the pipeline counts it and reports it.
    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError>;

    /// Whether this exporter wants `tracing` events copied into their span as span events
    /// ([`SpanRecord::events`](crate::SpanRecord::events)). Defaults to `false`.
    fn wants_span_events(&self) -> bool {
        false
    }

    /// Pushes out anything buffered.
    ///
    /// # Errors
    /// When buffered data could not be delivered.
    fn flush(&mut self) -> Result<(), ExportError> {
        Ok(())
    }

    /// Flushes and releases resources; called once, when the pipeline shuts down.
    ///
    /// # Errors
    /// As [`Exporter::flush`].
    fn shutdown(&mut self) -> Result<(), ExportError> {
        self.flush()
    }
}

impl<E: Exporter + ?Sized> Exporter for Box<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        (**self).export(batch)
    }
    fn wants_span_events(&self) -> bool {
        (**self).wants_span_events()
    }
    fn flush(&mut self) -> Result<(), ExportError> {
        (**self).flush()
    }
    fn shutdown(&mut self) -> Result<(), ExportError> {
        (**self).shutdown()
    }
}
