//! The export thread: batches from the queue, masked, to every exporter; what they report, into
//! the counts (or the batch into the spool).

use std::sync::Arc;
use std::time::Instant;

use tracing_usr_core::Masker;

use super::mask::{mask_record, MaskCache};
use super::report::{report, write_to_spool};
use super::shared::Shared;
use crate::exporter::{ExportContext, ExportError, ExportErrorKind, Exporter, Outcomes, RecordKind};
use crate::record::Record;
use crate::spool::Spool;

/// What one exporter reported about one batch.
struct ExportReport {
    spans: Outcomes,
    logs: Outcomes,
    error: Option<ExportError>,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    exporters: Vec<Box<dyn Exporter>>,
    masker: Arc<Masker>,
    mask_cache: MaskCache,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, exporters: Vec<Box<dyn Exporter>>, masker: Arc<Masker>) -> Self {
        Self {
            shared,
            exporters,
            masker,
            mask_cache: MaskCache::default(),
        }
    }

    pub(super) fn run(mut self) {
        self.open_spool();
        let mut spare = Vec::new();
        loop {
            self.restore();
            let (batch, flush_target, shutdown) = self.next_batch(spare);
            spare = if batch.is_empty() {
                batch
            } else {
                self.export(batch, shutdown)
            };
            if flush_target.is_some() || shutdown {
                self.flush_exporters(shutdown);
            }
            let mut state = self.shared.lock();
            if let Some(target) = flush_target {
                state.flush_done = state.flush_done.max(target);
            }
            if shutdown {
                drop(state);
                report(&self.shared);
                self.shared.lock().stopped = true;
                self.shared.done.notify_all();
                self.shared.wake_reporter.notify_all();
                return;
            }
            drop(state);
            if flush_target.is_some() {
                self.shared.done.notify_all();
            }
        }
    }

    fn open_spool(&self) {
        let Some(config) = self.shared.config.spool.clone() else {
            return;
        };
        let dir = config.dir.clone();
        match Spool::open(config) {
            Ok(spool) => {
                if let Ok(mut slot) = self.shared.spool.lock() {
                    *slot = Some(spool);
                }
            }
            Err(e) => tracing::warn!(
                target: "tracing_usr::export",
                dir = %dir.display(),
                error = %e,
                "cannot open the spool directory; nothing will be spooled"
            ),
        }
    }

    /// Puts spooled records back at the head of the queue, as many as it has room for, while
    /// the collectors deliver.
    fn restore(&self) {
        if self.shared.config.spool.is_none() {
            return;
        }
        let room = {
            let state = self.shared.lock();
            // After a failure, the spooled records are tried again once nothing else waits
            // (else they would wait for new records to show that the collector is back).
            if state.shutdown || !(state.last_ok || state.queue.is_empty()) {
                return;
            }
            self.shared
                .config
                .max_queued_records
                .saturating_sub(state.queue.len())
        };
        let restored = match self.shared.spool.lock() {
            Ok(mut spool) => match spool.as_mut() {
                Some(spool) if !spool.is_empty() && room > 0 => spool.restore(room),
                _ => return,
            },
            Err(_) => return,
        };
        let (spans, logs) = crate::exporter::count_by_kind(&restored.records);
        let mut state = self.shared.lock();
        let mut queue = restored.records;
        queue.append(&mut state.queue);
        state.queue = queue;
        for (k, n) in [spans as u64, logs as u64].into_iter().enumerate() {
            state.counts.restored[k] += n;
            state.counts.queued[k] += n;
        }
        state.counts.torn += restored.torn;
    }

    fn flush_exporters(&mut self, shutdown: bool) {
        for exporter in &mut self.exporters {
            let result = if shutdown {
                exporter.shutdown()
            } else {
                exporter.flush()
            };
            if let Err(e) = result {
                tracing::warn!(target: "tracing_usr::export", exporter = exporter.name(), error = %e, "flush failed");
            }
        }
    }

    fn next_batch(&self, spare: Vec<Record>) -> (Vec<Record>, Option<u64>, bool) {
        let config = &self.shared.config;
        let mut state = self.shared.lock();
        let deadline = Instant::now() + config.batch_delay;
        loop {
            let flush = state.flush_requested > state.flush_done;
            if state.shutdown || flush || state.queue.len() >= config.batch_size {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.shared.wake_worker.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let flush = (state.flush_requested > state.flush_done).then_some(state.flush_requested);
        // Swap in the previous batch's (emptied) buffer, so neither side regrows from zero.
        let mut batch = spare;
        std::mem::swap(&mut batch, &mut state.queue);
        // What was queued is now in flight at every exporter that handles it.
        let taken = std::mem::take(&mut state.counts.queued);
        state.counts.processed += batch.len() as u64;
        for (e, handles) in self.shared.handles.iter().enumerate() {
            for k in 0..2 {
                if handles[k] {
                    state.counts.in_flight[e][k] += taken[k];
                }
            }
        }
        (batch, flush, state.shutdown)
    }

    /// Exports `batch` and hands back its emptied buffer. With a spool, a batch that no
    /// collector took because they were unavailable (or the pipeline stopped) goes to disk
    /// instead of being lost, and so does the last batch at shutdown when the collectors were
    /// failing.
    fn export(&mut self, mut batch: Vec<Record>, shutdown: bool) -> Vec<Record> {
        for record in &mut batch {
            mask_record(&self.masker, &mut self.mask_cache, record);
        }
        let (spans, logs) = crate::exporter::count_by_kind(&batch);
        let taken = [spans as u64, logs as u64];
        let spool = self.shared.config.spool.is_some();
        if spool && shutdown && !self.shared.lock().last_ok {
            self.spool_batch(&batch, taken);
        } else {
            let results: Vec<ExportReport> = (0..self.exporters.len())
                .map(|e| self.export_to(e, &batch))
                .collect();
            self.shared.lock().exporting = None;
            let delivered = results
                .iter()
                .any(|cx| cx.spans.delivered + cx.logs.delivered > 0);
            let unavailable = results.iter().any(|cx| {
                [&cx.spans, &cx.logs]
                    .iter()
                    .any(|o| o.retry_exhausted + o.unsent_at_shutdown > 0)
            });
            let only_unavailable = results
                .iter()
                .all(|cx| [&cx.spans, &cx.logs].iter().all(|o| o.rejected + o.failed == 0));
            self.shared.lock().last_ok = !unavailable;
            if spool && unavailable && only_unavailable && !delivered {
                self.spool_batch(&batch, taken);
            } else {
                for (e, cx) in results.iter().enumerate() {
                    self.settle(e, taken, cx);
                }
            }
        }
        batch.clear();
        batch
    }

    /// Runs exporter `e` on `batch`.
    fn export_to(&mut self, e: usize, batch: &[Record]) -> ExportReport {
        self.shared.lock().exporting = Some((e, Instant::now()));
        let mut cx = ExportContext::new(&self.shared.stopping);
        let exporter = &mut self.exporters[e];
        // A panicking exporter must not take the export thread (and every other exporter)
        // down with it: what it had not reported is lost to the panic.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exporter.export_counted(batch, &mut cx)
        }))
        .is_err();
        if panicked {
            cx.last_error = Some(ExportError::new(ExportErrorKind::Encode, "the exporter panicked"));
        }
        ExportReport {
            spans: cx.spans,
            logs: cx.logs,
            error: cx.last_error,
        }
    }

    /// Moves a batch no exporter delivered from in flight to the spool.
    fn spool_batch(&self, batch: &[Record], taken: [u64; 2]) {
        let mut state = self.shared.lock();
        if state.abandoned {
            drop(state);
            // Counted as unsent already; written anyway, for the next start.
            if let Ok(mut spool) = self.shared.spool.lock() {
                if let Some(spool) = spool.as_mut() {
                    let _ = spool.write(batch);
                }
            }
            return;
        }
        for (e, handles) in self.shared.handles.iter().enumerate() {
            for k in 0..2 {
                if handles[k] {
                    state.counts.in_flight[e][k] = state.counts.in_flight[e][k].saturating_sub(taken[k]);
                }
            }
        }
        for (spooled, n) in state.counts.spooled.iter_mut().zip(taken) {
            *spooled += n;
        }
        drop(state);
        write_to_spool(&self.shared, batch);
    }

    /// Moves exporter `e`'s share of a batch from in flight to its outcomes. Records it
    /// handles but did not report (a panic, an exporter that under-reports) count as failed.
    fn settle(&self, e: usize, taken: [u64; 2], cx: &ExportReport) {
        let mut state = self.shared.lock();
        state.exporting = None;
        if state.abandoned {
            return;
        }
        let counts = &mut state.counts;
        for (k, kind) in [RecordKind::Span, RecordKind::Log].into_iter().enumerate() {
            if !self.shared.handles[e][k] {
                continue;
            }
            let mut outcomes = if kind == RecordKind::Span {
                cx.spans
            } else {
                cx.logs
            };
            outcomes.failed += taken[k].saturating_sub(outcomes.total());
            counts.in_flight[e][k] = counts.in_flight[e][k].saturating_sub(taken[k]);
            counts.outcomes[e][k].add(&outcomes);
        }
        if let Some(error) = &cx.error {
            counts.export_errors += 1;
            counts.last_error[e] = Some(error.to_string());
        }
    }
}
