//! The reporter thread: warnings in records, and the spill of the queue to the spool.

use std::time::{Duration, Instant};

use super::mask::{mask_record, MaskCache};
use super::shared::{Counts, Shared};
use crate::exporter::Outcomes;
use crate::record::Record;

/// Reports, as warnings, what was lost since the last report, and an exporter that has been
/// waiting on its collector for longer than the report interval.
pub(super) fn report(shared: &Shared) {
    let mut state = shared.lock();
    let now = state.counts.clone();
    let before = std::mem::replace(&mut state.reported, now.clone());
    let stuck = state
        .exporting
        .filter(|(_, since)| since.elapsed() >= shared.config.report_interval)
        .map(|(e, since)| (e, since.elapsed(), now.in_flight[e]));
    for error in &mut state.counts.last_error {
        *error = None;
    }
    drop(state);
    report_drops(&now, &before);
    for (e, name) in shared.names.iter().enumerate() {
        report_losses(
            name,
            &now.outcomes[e],
            &before.outcomes[e],
            now.last_error[e].as_deref(),
        );
    }
    if let Some((e, waiting, in_flight)) = stuck {
        tracing::warn!(
            target: "tracing_usr::export",
            exporter = shared.names[e].as_str(),
            waiting_secs = waiting.as_secs(),
            spans = in_flight[0],
            logs = in_flight[1],
            "export waiting on its collector"
        );
    }
}

/// What was dropped before export, and torn spool frames, since `before`.
fn report_drops(now: &Counts, before: &Counts) {
    let delta = |a: &[u64; 2], b: &[u64; 2]| [a[0] - b[0], a[1] - b[1]];
    let full = delta(&now.queue_full, &before.queue_full);
    let closed = delta(&now.closed, &before.closed);
    let spool_full = delta(&now.spool_full, &before.spool_full);
    if full != [0, 0] || closed != [0, 0] || spool_full != [0, 0] {
        tracing::warn!(
            target: "tracing_usr::export",
            spans = full[0] + closed[0] + spool_full[0],
            logs = full[1] + closed[1] + spool_full[1],
            queue_full = full[0] + full[1],
            closed = closed[0] + closed[1],
            spool_full = spool_full[0] + spool_full[1],
            "export queue full or closed: records dropped"
        );
    }
    if now.torn > before.torn {
        tracing::warn!(
            target: "tracing_usr::export",
            torn = now.torn - before.torn,
            "spool frames cut short or corrupt were skipped"
        );
    }
}

/// What one exporter lost since `before`, by reason, with its last error.
fn report_losses(name: &str, now: &[Outcomes; 2], before: &[Outcomes; 2], last_error: Option<&str>) {
    let lost = |k: usize| {
        let (a, b) = (&now[k], &before[k]);
        Outcomes {
            delivered: a.delivered - b.delivered,
            rejected: a.rejected - b.rejected,
            retry_exhausted: a.retry_exhausted - b.retry_exhausted,
            unsent_at_shutdown: a.unsent_at_shutdown - b.unsent_at_shutdown,
            failed: a.failed - b.failed,
        }
    };
    let (spans, logs) = (lost(0), lost(1));
    if spans.lost() + logs.lost() > 0 {
        tracing::warn!(
            target: "tracing_usr::export",
            exporter = name,
            spans = spans.lost(),
            logs = logs.lost(),
            rejected = spans.rejected + logs.rejected,
            retry_exhausted = spans.retry_exhausted + logs.retry_exhausted,
            unsent_at_shutdown = spans.unsent_at_shutdown + logs.unsent_at_shutdown,
            failed = spans.failed + logs.failed,
            last_error = last_error.unwrap_or(""),
            "export failed: records lost"
        );
    }
}

/// How long an export must have been waiting before the reporter thread spills the queue to
/// the spool.
const SPILL_AFTER: Duration = Duration::from_millis(100);

/// The reporter thread: a report every interval until the worker stops; with a spool, it also
/// spills the queue to disk while the worker waits on a collector and the queue fills.
pub(super) fn run_reporter(shared: &Shared) {
    let spool = shared.config.spool.is_some();
    let tick = if spool {
        shared.config.report_interval.min(Duration::from_millis(20))
    } else {
        shared.config.report_interval
    };
    let mut cache = MaskCache::default();
    let mut last_report = Instant::now();
    loop {
        let state = shared.lock();
        if state.stopped {
            return;
        }
        let (state, _) = match shared.wake_reporter.wait_timeout(state, tick) {
            Ok(woken) => woken,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.stopped {
            return;
        }
        drop(state);
        if spool {
            spill_queue_if_stuck(shared, &mut cache);
        }
        if last_report.elapsed() >= shared.config.report_interval {
            last_report = Instant::now();
            report(shared);
        }
    }
}

/// Moves the queue to the spool when it is half full while the worker waits on a collector:
/// those records would be dropped next.
fn spill_queue_if_stuck(shared: &Shared, cache: &mut MaskCache) {
    let mut state = shared.lock();
    let waiting = state
        .exporting
        .is_some_and(|(_, since)| since.elapsed() >= SPILL_AFTER);
    let half_full = state.queue.len() >= shared.config.max_queued_records.div_ceil(2);
    if state.shutdown || state.abandoned || !half_full || !waiting {
        return;
    }
    let mut records = std::mem::take(&mut state.queue);
    let queued = std::mem::take(&mut state.counts.queued);
    // Counted as spooled at once (so the counts always add up), corrected if they do not fit.
    for (spooled, n) in state.counts.spooled.iter_mut().zip(queued) {
        *spooled += n;
    }
    drop(state);
    for record in &mut records {
        mask_record(&shared.masker, cache, record);
    }
    write_to_spool(shared, &records);
}

/// Writes `records` (masked, already counted as spooled) to the spool; what does not fit (or
/// cannot be written) is counted as dropped for a full spool instead.
pub(super) fn write_to_spool(shared: &Shared, records: &[Record]) {
    let written = match shared.spool.lock() {
        Ok(mut spool) => spool
            .as_mut()
            .map_or(0, |spool| spool.write(records).unwrap_or(0)),
        Err(_) => 0,
    };
    let (spans, logs) = crate::exporter::count_by_kind(&records[written..]);
    let mut state = shared.lock();
    for (k, n) in [spans as u64, logs as u64].into_iter().enumerate() {
        state.counts.spooled[k] -= n;
        state.counts.spool_full[k] += n;
    }
}
