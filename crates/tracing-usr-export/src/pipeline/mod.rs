//! The export pipeline: a bounded queue in front of a background thread that masks, batches and
//! hands records to the exporters.
//!
//! The application's threads only ever push into the queue (a short critical section, no I/O);
//! when the queue is full, new records are dropped and counted (a trace handed over whole is
//! kept or dropped whole). The worker applies the value masking rule and calls every exporter;
//! each exporter says what became of every record ([`Exporter::export_counted`]). Every record
//! is accounted for, per kind and per exporter ([`PipelineStats`]). A reporter thread turns
//! losses, and an exporter stuck on its collector, into `tracing` warnings with target
//! `tracing_usr::export`, on an export thread, which the layer ignores (so they never loop back
//! into the exported telemetry).

mod config;
mod mask;
mod report;
mod shared;
mod stats;
mod worker;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_usr_core::Masker;

pub use config::PipelineConfig;
pub use mask::{mask_record, MaskCache};
pub use stats::{ExporterStats, PipelineStats, RecordStats};

use crate::exporter::{Exporter, Outcomes, RecordKind};
use crate::record::Record;
use report::{report, run_reporter};
use shared::{abandon, slot, Shared, State};
use stats::stats_of;
use worker::Worker;

thread_local! {
    static EXPORT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread belongs to an export pipeline. The layer ignores everything that
/// happens on such threads, so exporters' own telemetry never feeds back into the export.
pub fn is_export_thread() -> bool {
    EXPORT_THREAD.with(Cell::get)
}

/// Marks the current thread as an export thread (for exporters that run threads of their own,
/// such as an HTTP client's runtime).
pub fn mark_export_thread() {
    EXPORT_THREAD.with(|f| f.set(true));
}

/// A flush or shutdown that did not complete within its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutError {
    what: &'static str,
    timeout: Duration,
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "export {} did not complete within {:?}",
            self.what, self.timeout
        )
    }
}

impl std::error::Error for TimeoutError {}

/// The handle to a running pipeline. Cheap to clone; every clone feeds the same queue.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
    span_events: bool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("exporters", &self.shared.names)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pipeline {
    /// Starts the worker thread for `exporters`, masking values with `masker`, and the thread
    /// that reports losses.
    ///
    /// If the worker cannot be spawned, the pipeline is closed from the start: every record is
    /// dropped and counted, and one warning says why.
    pub fn start(exporters: Vec<Box<dyn Exporter>>, masker: Arc<Masker>, config: PipelineConfig) -> Self {
        let names: Arc<[String]> = exporters.iter().map(|e| e.name().to_owned()).collect();
        let span_events = exporters.iter().any(|e| e.wants_span_events());
        let handles = exporters
            .iter()
            .map(|e| [e.handles(RecordKind::Span), e.handles(RecordKind::Log)])
            .collect();
        let mut state = State::default();
        let n = exporters.len();
        state.counts.in_flight = vec![[0; 2]; n];
        state.counts.outcomes = vec![[Outcomes::default(); 2]; n];
        state.counts.last_error = vec![None; n];
        state.reported = state.counts.clone();
        state.last_ok = true;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake_worker: Condvar::new(),
            done: Condvar::new(),
            wake_reporter: Condvar::new(),
            config,
            stopping: AtomicBool::new(false),
            names,
            handles,
            spool: Mutex::new(None),
            masker: Arc::clone(&masker),
        });
        let worker_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("tracing-usr-export".into())
            .spawn(move || {
                mark_export_thread();
                Worker::new(worker_shared, exporters, masker).run();
            });
        let worker = match spawned {
            Ok(handle) => {
                let reporter_shared = Arc::clone(&shared);
                // Without it, losses are still counted and reported at shutdown.
                let _ = std::thread::Builder::new()
                    .name("tracing-usr-export-report".into())
                    .spawn(move || {
                        mark_export_thread();
                        run_reporter(&reporter_shared);
                    });
                Some(handle)
            }
            Err(e) => {
                let mut state = shared.lock();
                state.shutdown = true;
                state.stopped = true;
                drop(state);
                eprintln!("tracing-usr: cannot start the export thread ({e}); records will be dropped");
                None
            }
        };
        Self {
            shared,
            worker: Arc::new(Mutex::new(worker)),
            span_events,
        }
    }

    /// Queues `batch` for export. Never blocks on I/O; drops (and counts) the batch when the
    /// queue is full or the pipeline is shut down.
    pub fn send(&self, batch: impl IntoIterator<Item = Record>) {
        self.send_all(batch.into_iter().collect());
    }

    /// [`Pipeline::send`] for a list, such as the spans of one trace: queued whole, or dropped
    /// whole when the queue cannot take all of it.
    pub fn send_all(&self, mut batch: Vec<Record>) {
        let spans = batch.iter().filter(|r| matches!(r, Record::Span(_))).count() as u64;
        let kinds = [spans, batch.len() as u64 - spans];
        self.enqueue(kinds, |queue| queue.append(&mut batch));
    }

    /// Queues one record; see [`Pipeline::send`].
    pub fn send_one(&self, record: Record) {
        let mut kinds = [0; 2];
        kinds[slot(RecordKind::of(&record))] = 1;
        self.enqueue(kinds, |queue| queue.push(record));
    }

    /// Counts `kinds` as offered, then runs `push` on the queue under the lock if they all fit
    /// (else counts them as dropped), and wakes the worker when a batch filled.
    fn enqueue(&self, kinds: [u64; 2], push: impl FnOnce(&mut Vec<Record>)) {
        let config = &self.shared.config;
        let n = (kinds[0] + kinds[1]) as usize;
        let mut state = self.shared.lock();
        let before = state.queue.len();
        let counts = &mut state.counts;
        for (offered, k) in counts.offered.iter_mut().zip(kinds) {
            *offered += k;
        }
        let full = before + n > config.max_queued_records;
        let dropped = if state.shutdown {
            Some(&mut state.counts.closed)
        } else if full {
            Some(&mut state.counts.queue_full)
        } else {
            None
        };
        if let Some(dropped) = dropped {
            for (d, k) in dropped.iter_mut().zip(kinds) {
                *d += k;
            }
            return;
        }
        for (q, k) in state.counts.queued.iter_mut().zip(kinds) {
            *q += k;
        }
        push(&mut state.queue);
        let wake = before < config.batch_size && state.queue.len() >= config.batch_size;
        drop(state);
        if wake {
            self.shared.wake_worker.notify_one();
        }
    }

    /// Waits until everything queued before the call is exported and every exporter flushed.
    ///
    /// # Errors
    /// [`TimeoutError`] when that did not happen within `timeout`; the records stay queued.
    pub fn flush(&self, timeout: Duration) -> Result<(), TimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        if state.stopped {
            return Ok(());
        }
        state.flush_requested += 1;
        let target = state.flush_requested;
        self.shared.wake_worker.notify_one();
        while state.flush_done < target && !state.stopped {
            let now = Instant::now();
            if now >= deadline {
                return Err(TimeoutError {
                    what: "flush",
                    timeout,
                });
            }
            state = match self.shared.done.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(())
    }

    /// Exports what is queued (one attempt per request: exporters stop retrying), shuts every
    /// exporter down and stops the worker. Records sent afterwards are dropped and counted.
    /// Calling it again does nothing.
    ///
    /// # Errors
    /// [`TimeoutError`] when the worker did not finish within `timeout`: what was still queued
    /// or in flight is then counted as unsent at shutdown, and the worker is left to finish in
    /// the background (its results no longer counted).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), TimeoutError> {
        let deadline = Instant::now() + timeout;
        self.shared.stopping.store(true, Ordering::Relaxed);
        let mut state = self.shared.lock();
        state.shutdown = true;
        self.shared.wake_worker.notify_one();
        while !state.stopped {
            let now = Instant::now();
            if now >= deadline {
                abandon(&self.shared, &mut state);
                drop(state);
                report(&self.shared);
                return Err(TimeoutError {
                    what: "shutdown",
                    timeout,
                });
            }
            state = match self.shared.done.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(state);
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        Ok(())
    }

    /// Asks the worker to export what is queued, shut the exporters down and stop, without
    /// waiting for it. Records sent afterwards are dropped and counted.
    pub fn close(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.lock().shutdown = true;
        self.shared.wake_worker.notify_one();
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let state = self.shared.lock();
        stats_of(&self.shared, &state.counts, state.queue.len() as u64)
    }

    /// Whether an exporter wants span events.
    pub fn wants_span_events(&self) -> bool {
        self.span_events
    }

    /// The names of the exporters this pipeline feeds.
    pub fn exporter_names(&self) -> &[String] {
        &self.shared.names
    }
}
