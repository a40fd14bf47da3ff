//! The exporter contract, and how an exporter says what became of each record.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// The collector refused the records for good (a 4xx other than 408 and 429, or a body it
    /// could not take): they are not retried.
    Rejected,
    /// The collector stayed unreachable or kept failing (connection refused or reset, timeout,
    /// 408, 429, 5xx) until the retry time ran out.
    Unavailable,
    /// The pipeline shut down before the records could be delivered.
    Stopped,
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

    /// The reason a record lost to this error is counted under.
    pub fn reason(&self) -> LossReason {
        match self.kind {
            ExportErrorKind::Rejected => LossReason::Rejected,
            ExportErrorKind::Unavailable => LossReason::RetryExhausted,
            ExportErrorKind::Stopped => LossReason::UnsentAtShutdown,
            ExportErrorKind::Io | ExportErrorKind::Encode | ExportErrorKind::Transport => LossReason::Failed,
        }
    }
}

/// Why an exporter lost a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The collector refused it for good.
    Rejected,
    /// The collector stayed unavailable for the whole retry time.
    RetryExhausted,
    /// The pipeline shut down before it was delivered.
    UnsentAtShutdown,
    /// It could not be encoded or written (an I/O or encoding error, a panicking exporter).
    Failed,
}

/// What one exporter did with the records of one kind (spans or logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Delivered: the collector accepted them, or the sink wrote them.
    pub delivered: u64,
    /// Refused for good by the collector.
    pub rejected: u64,
    /// Given up after the retry time, the collector being unavailable.
    pub retry_exhausted: u64,
    /// Not delivered because the pipeline shut down first.
    pub unsent_at_shutdown: u64,
    /// Lost to an encoding or I/O error.
    pub failed: u64,
}

impl Outcomes {
    /// Every record with an outcome, delivered or lost.
    pub fn total(&self) -> u64 {
        self.delivered + self.lost()
    }

    /// The records lost, whatever the reason.
    pub fn lost(&self) -> u64 {
        self.rejected + self.retry_exhausted + self.unsent_at_shutdown + self.failed
    }

    pub(crate) fn add(&mut self, other: &Outcomes) {
        self.delivered += other.delivered;
        self.rejected += other.rejected;
        self.retry_exhausted += other.retry_exhausted;
        self.unsent_at_shutdown += other.unsent_at_shutdown;
        self.failed += other.failed;
    }

    pub(crate) fn lose(&mut self, reason: LossReason, n: u64) {
        match reason {
            LossReason::Rejected => self.rejected += n,
            LossReason::RetryExhausted => self.retry_exhausted += n,
            LossReason::UnsentAtShutdown => self.unsent_at_shutdown += n,
            LossReason::Failed => self.failed += n,
        }
    }
}

/// What a record is: a span or a log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A span.
    Span,
    /// A log record.
    Log,
}

impl RecordKind {
    /// The kind of `record`.
    pub fn of(record: &Record) -> RecordKind {
        match record {
            Record::Span(_) => RecordKind::Span,
            Record::Log(_) => RecordKind::Log,
        }
    }
}

/// What an exporter reports about one batch, record by record, and whether the pipeline is
/// shutting down (so a retry loop stops waiting).
#[derive(Debug)]
pub struct ExportContext<'a> {
    stopping: &'a AtomicBool,
    pub(crate) spans: Outcomes,
    pub(crate) logs: Outcomes,
    pub(crate) last_error: Option<ExportError>,
}

impl<'a> ExportContext<'a> {
    /// A context whose [`stopping`](Self::stopping) reads `stopping`.
    pub fn new(stopping: &'a AtomicBool) -> Self {
        Self {
            stopping,
            spans: Outcomes::default(),
            logs: Outcomes::default(),
            last_error: None,
        }
    }

    /// Whether the pipeline is shutting down: a retry loop should give up now (reporting
    /// [`ExportErrorKind::Stopped`]).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn outcomes(&mut self, kind: RecordKind) -> &mut Outcomes {
        match kind {
            RecordKind::Span => &mut self.spans,
            RecordKind::Log => &mut self.logs,
        }
    }

    /// `n` records of `kind` were delivered.
    pub fn delivered(&mut self, kind: RecordKind, n: usize) {
        self.outcomes(kind).delivered += n as u64;
    }

    /// `n` records of `kind` were lost to `error`.
    pub fn lost(&mut self, kind: RecordKind, n: usize, error: &ExportError) {
        if n == 0 {
            return;
        }
        self.outcomes(kind).lose(error.reason(), n as u64);
        self.last_error = Some(error.clone());
    }

    /// The last loss's error, if any record was lost (for [`Exporter::export`] written on top
    /// of [`Exporter::export_counted`]).
    ///
    /// # Errors
    /// The error of the last record lost.
    pub fn into_result(self) -> Result<(), ExportError> {
        match self.last_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What was reported for `kind`.
    pub fn outcomes_of(&self, kind: RecordKind) -> Outcomes {
        match kind {
            RecordKind::Span => self.spans,
            RecordKind::Log => self.logs,
        }
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

    /// Exports one batch and reports, in `cx`, what became of each record of the kinds it
    /// [handles](Exporter::handles). The default calls [`Exporter::export`]: every handled
    /// record is delivered when it succeeds, and lost to its error when it fails. Exporters
    /// that send a batch in several requests override it, so that a failed request loses
    /// only its own records.
    fn export_counted(&mut self, batch: &[Record], cx: &mut ExportContext<'_>) {
        let (spans, logs) = count_by_kind(batch);
        let (spans, logs) = (
            if self.handles(RecordKind::Span) { spans } else { 0 },
            if self.handles(RecordKind::Log) { logs } else { 0 },
        );
        match self.export(batch) {
            Ok(()) => {
                cx.delivered(RecordKind::Span, spans);
                cx.delivered(RecordKind::Log, logs);
            }
            Err(e) => {
                cx.lost(RecordKind::Span, spans, &e);
                cx.lost(RecordKind::Log, logs, &e);
                if spans + logs == 0 {
                    cx.last_error = Some(e);
                }
            }
        }
    }

    /// Whether this exporter sends records of `kind` (the others are ignored, and not
    /// counted for it). Defaults to `true`.
    fn handles(&self, kind: RecordKind) -> bool {
        let _ = kind;
        true
    }

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

/// How many spans and log records `batch` holds.
pub fn count_by_kind(batch: &[Record]) -> (usize, usize) {
    let spans = batch.iter().filter(|r| matches!(r, Record::Span(_))).count();
    (spans, batch.len() - spans)
}

impl<E: Exporter + ?Sized> Exporter for Box<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        (**self).export(batch)
    }
    fn export_counted(&mut self, batch: &[Record], cx: &mut ExportContext<'_>) {
        (**self).export_counted(batch, cx)
    }
    fn handles(&self, kind: RecordKind) -> bool {
        (**self).handles(kind)
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
