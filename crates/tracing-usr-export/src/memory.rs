//! An exporter that keeps records in memory, for tests.

use std::sync::{Arc, Mutex};

use crate::exporter::{ExportError, Exporter};
use crate::record::{LogRecord, Record, SpanRecord};

/// Keeps every exported record in memory. Clones share the same storage, so keep one clone to
/// read what the layer exported (after a flush).
///
/// ```
/// use tracing_usr_export::{Exporter, InMemoryExporter};
/// let exporter = InMemoryExporter::default();
/// let mut writer = exporter.clone();
/// writer.export(&[]).unwrap();
/// assert!(exporter.records().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryExporter {
    records: Arc<Mutex<Vec<Record>>>,
}

impl InMemoryExporter {
    /// Everything exported so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The exported spans.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.records()
            .into_iter()
            .filter_map(|r| r.as_span().cloned())
            .collect()
    }

    /// The exported log records.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.records()
            .into_iter()
            .filter_map(|r| r.as_log().cloned())
            .collect()
    }

    /// Forgets everything exported so far.
    pub fn clear(&self) {
        if let Ok(mut r) = self.records.lock() {
            r.clear();
        }
    }
}

impl Exporter for InMemoryExporter {
    fn name(&self) -> &str {
        "in-memory"
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        if let Ok(mut r) = self.records.lock() {
            r.extend_from_slice(batch);
        }
        Ok(())
    }
}
