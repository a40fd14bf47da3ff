//! The pipeline's public counters.

use super::shared::{Counts, Shared};
use crate::exporter::{Outcomes, RecordKind};

/// Counters of a [`Pipeline`](super::Pipeline), in records.
///
/// For each exporter and each kind of record it handles, at any moment:
/// `offered + restored = queued + dropped_queue_full + dropped_closed + dropped_spool_full +
/// spooled + in flight + delivered + lost` (`lost` being [`Outcomes::lost`]); after
/// [`Pipeline::shutdown`](super::Pipeline::shutdown) returned `Ok`, nothing is queued or in flight. Without a spool,
/// `spooled` and `restored` are 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records waiting in the queue.
    pub queued: u64,
    /// Records handed to the exporters.
    pub processed: u64,
    /// Records dropped before any exporter saw them: the queue was full, or the pipeline
    /// closed (`spans.dropped_* + logs.dropped_*`).
    pub dropped: u64,
    /// `export` calls that lost at least one record, over all exporters.
    pub export_errors: u64,
    /// The spans' counters.
    pub spans: RecordStats,
    /// The log records' counters.
    pub logs: RecordStats,
    /// What each exporter did with the records it handles, in the order they were given.
    pub exporters: Vec<ExporterStats>,
    /// Spool frames found cut short or corrupt (a crash mid-write), skipped.
    pub spool_torn: u64,
}

/// The queue's counters for one kind of record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Handed to the pipeline by the application.
    pub offered: u64,
    /// Waiting in the queue.
    pub queued: u64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Dropped because the pipeline was closed (shut down, or its thread could not start).
    pub dropped_closed: u64,
    /// Written to the spool: they would have been dropped for a full queue, or lost to an
    /// unavailable collector or a shutdown.
    pub spooled: u64,
    /// Read back from the spool (written by this run or an earlier one) and queued again.
    pub restored: u64,
    /// Dropped because the spool was full (or could not be written).
    pub dropped_spool_full: u64,
}

/// What one exporter did with the records it handles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// The exporter's name.
    pub name: String,
    /// Its spans: delivered, and lost by reason.
    pub spans: Outcomes,
    /// Its log records: delivered, and lost by reason.
    pub logs: Outcomes,
    /// Spans it is sending right now.
    pub in_flight_spans: u64,
    /// Log records it is sending right now.
    pub in_flight_logs: u64,
}

impl ExporterStats {
    /// Its counters of `kind`: outcomes, and how many are in flight.
    pub fn of(&self, kind: RecordKind) -> (Outcomes, u64) {
        match kind {
            RecordKind::Span => (self.spans, self.in_flight_spans),
            RecordKind::Log => (self.logs, self.in_flight_logs),
        }
    }
}

/// The public counters of `counts`.
pub(super) fn stats_of(shared: &Shared, counts: &Counts, queued: u64) -> PipelineStats {
    let kind = |i: usize| RecordStats {
        offered: counts.offered[i],
        queued: counts.queued[i],
        dropped_queue_full: counts.queue_full[i],
        dropped_closed: counts.closed[i],
        spooled: counts.spooled[i],
        restored: counts.restored[i],
        dropped_spool_full: counts.spool_full[i],
    };
    PipelineStats {
        queued,
        processed: counts.processed,
        dropped: counts.queue_full.iter().chain(&counts.closed).sum(),
        export_errors: counts.export_errors,
        spans: kind(0),
        logs: kind(1),
        exporters: shared
            .names
            .iter()
            .enumerate()
            .map(|(e, name)| ExporterStats {
                name: name.clone(),
                spans: counts.outcomes[e][0],
                logs: counts.outcomes[e][1],
                in_flight_spans: counts.in_flight[e][0],
                in_flight_logs: counts.in_flight[e][1],
            })
            .collect(),
        spool_torn: counts.torn,
    }
}
