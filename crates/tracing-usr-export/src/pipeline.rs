//! The export pipeline: a bounded queue in front of a background thread that masks, batches and
//! hands records to the exporters.
//!
//! The application's threads only ever push into the queue (a short critical section, no I/O);
//! when the queue is full, new records are dropped and counted. The worker applies the value
//! masking rule, calls every exporter, and reports drops and export errors as `tracing` warnings
//! with target `tracing_usr::export`, emitted on its own thread, which the layer ignores (so they
//! never loop back into the exported telemetry).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_usr_core::Masker;

use crate::exporter::{ExportError, ExportErrorKind, Exporter};
use crate::record::{FieldValue, Record};

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

/// Settings of a [`Pipeline`].
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Records held at most; beyond it new records are dropped and counted. Defaults to 16 384.
    pub max_queued_records: usize,
    /// The worker wakes up when this many records are queued… Defaults to 512.
    pub batch_size: usize,
    /// …or after this delay. Defaults to 100 ms.
    pub batch_delay: Duration,
    /// How often, at most, drops and export errors are reported. Defaults to 10 s.
    pub report_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_queued_records: 16_384,
            batch_size: 512,
            batch_delay: Duration::from_millis(100),
            report_interval: Duration::from_secs(10),
        }
    }
}

/// Counters of a [`Pipeline`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records waiting in the queue.
    pub queued: u64,
    /// Records handed to the exporters.
    pub processed: u64,
    /// Records dropped because the queue was full or the pipeline was shut down.
    pub dropped: u64,
    /// Failed `export` calls, over all exporters.
    pub export_errors: u64,
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

#[derive(Default)]
struct State {
    queue: Vec<Record>,
    flush_requested: u64,
    flush_done: u64,
    shutdown: bool,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    wake_worker: Condvar,
    done: Condvar,
    config: PipelineConfig,
    processed: AtomicU64,
    dropped: AtomicU64,
    export_errors: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the worker while holding the lock must not take the host down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The handle to a running pipeline. Cheap to clone; every clone feeds the same queue.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
    names: Arc<[String]>,
    span_events: bool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("exporters", &self.names)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pipeline {
    /// Starts the worker thread for `exporters`, masking values with `masker`.
    ///
    /// If the thread cannot be spawned, the pipeline is closed from the start: every record is
    /// dropped and counted, and one warning says why.
    pub fn start(exporters: Vec<Box<dyn Exporter>>, masker: Arc<Masker>, config: PipelineConfig) -> Self {
        let names: Arc<[String]> = exporters.iter().map(|e| e.name().to_owned()).collect();
        let span_events = exporters.iter().any(|e| e.wants_span_events());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake_worker: Condvar::new(),
            done: Condvar::new(),
            config,
            processed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            export_errors: AtomicU64::new(0),
        });
        let worker_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("tracing-usr-export".into())
            .spawn(move || {
                mark_export_thread();
                Worker::new(worker_shared, exporters, masker).run();
            });
        let worker = match spawned {
            Ok(handle) => Some(handle),
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
            names,
            span_events,
        }
    }

    /// Queues `batch` for export. Never blocks on I/O; drops (and counts) the batch when the
    /// queue is full or the pipeline is shut down.
    pub fn send(&self, batch: impl IntoIterator<Item = Record>) {
        self.enqueue(|queue, max, shutdown| {
            if shutdown {
                return batch.into_iter().count() as u64;
            }
            let mut dropped = 0u64;
            for record in batch {
                if queue.len() < max {
                    queue.push(record);
                } else {
                    dropped += 1;
                }
            }
            dropped
        });
    }

    /// [`Pipeline::send`] for a list: moved into the queue in one copy when it fits.
    pub fn send_all(&self, mut batch: Vec<Record>) {
        self.enqueue(|queue, max, shutdown| {
            if shutdown {
                return batch.len() as u64;
            }
            let room = max.saturating_sub(queue.len());
            let dropped = batch.len().saturating_sub(room);
            batch.truncate(room);
            queue.append(&mut batch);
            dropped as u64
        });
    }

    /// Queues one record; see [`Pipeline::send`].
    pub fn send_one(&self, record: Record) {
        self.enqueue(|queue, max, shutdown| {
            if shutdown || queue.len() >= max {
                return 1;
            }
            queue.push(record);
            0
        });
    }

    /// Runs `push` on the queue under the lock (`push` returns how many records it dropped),
    /// then counts the drops and wakes the worker when a batch filled.
    fn enqueue(&self, push: impl FnOnce(&mut Vec<Record>, usize, bool) -> u64) {
        let mut state = self.shared.lock();
        let before = state.queue.len();
        let shutdown = state.shutdown;
        let dropped = push(&mut state.queue, self.shared.config.max_queued_records, shutdown);
        let wake =
            before < self.shared.config.batch_size && state.queue.len() >= self.shared.config.batch_size;
        drop(state);
        if dropped > 0 {
            self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
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

    /// Exports what is queued, shuts every exporter down and stops the worker. Records sent
    /// afterwards are dropped and counted. Calling it again does nothing.
    ///
    /// # Errors
    /// [`TimeoutError`] when the worker did not finish within `timeout` (it is left to finish
    /// in the background).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), TimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        state.shutdown = true;
        self.shared.wake_worker.notify_one();
        while !state.stopped {
            let now = Instant::now();
            if now >= deadline {
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
        self.shared.lock().shutdown = true;
        self.shared.wake_worker.notify_one();
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let queued = self.shared.lock().queue.len() as u64;
        PipelineStats {
            queued,
            processed: self.shared.processed.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            export_errors: self.shared.export_errors.load(Ordering::Relaxed),
        }
    }

    /// Whether an exporter wants span events.
    pub fn wants_span_events(&self) -> bool {
        self.span_events
    }

    /// The names of the exporters this pipeline feeds.
    pub fn exporter_names(&self) -> &[String] {
        &self.names
    }
}

struct Worker {
    shared: Arc<Shared>,
    exporters: Vec<Box<dyn Exporter>>,
    masker: Arc<Masker>,
    mask_cache: MaskCache,
    last_report: Instant,
    reported_drops: u64,
    unreported_errors: Vec<(u64, Option<String>)>,
}

impl Worker {
    fn new(shared: Arc<Shared>, exporters: Vec<Box<dyn Exporter>>, masker: Arc<Masker>) -> Self {
        let unreported_errors = vec![(0, None); exporters.len()];
        Self {
            shared,
            exporters,
            masker,
            mask_cache: MaskCache::default(),
            last_report: Instant::now(),
            reported_drops: 0,
            unreported_errors,
        }
    }

    fn run(mut self) {
        let mut spare = Vec::new();
        loop {
            let (batch, flush_target, shutdown) = self.next_batch(spare);
            spare = if batch.is_empty() {
                batch
            } else {
                self.export(batch)
            };
            if flush_target.is_some() || shutdown {
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
            self.report(shutdown);
            let mut state = self.shared.lock();
            if let Some(target) = flush_target {
                state.flush_done = state.flush_done.max(target);
            }
            if shutdown {
                state.stopped = true;
                drop(state);
                self.shared.done.notify_all();
                return;
            }
            drop(state);
            if flush_target.is_some() {
                self.shared.done.notify_all();
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
        (batch, flush, state.shutdown)
    }

    /// Exports `batch` and hands back its emptied buffer.
    fn export(&mut self, mut batch: Vec<Record>) -> Vec<Record> {
        for record in &mut batch {
            mask_record(&self.masker, &mut self.mask_cache, record);
        }
        self.shared
            .processed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (i, exporter) in self.exporters.iter_mut().enumerate() {
            // A panicking exporter must not take the export thread (and every other exporter)
            // down with it: the panic counts as a failed export.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exporter.export(&batch)))
                .unwrap_or_else(|_| Err(ExportError::new(ExportErrorKind::Encode, "the exporter panicked")));
            if let Err(e) = result {
                self.shared.export_errors.fetch_add(1, Ordering::Relaxed);
                let slot = &mut self.unreported_errors[i];
                slot.0 += 1;
                slot.1 = Some(e.to_string());
            }
        }
        batch.clear();
        batch
    }

    fn report(&mut self, force: bool) {
        if !force && self.last_report.elapsed() < self.shared.config.report_interval {
            return;
        }
        self.last_report = Instant::now();
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            tracing::warn!(
                target: "tracing_usr::export",
                dropped = dropped - self.reported_drops,
                dropped_total = dropped,
                "export queue full or closed: records dropped"
            );
            self.reported_drops = dropped;
        }
        for (i, exporter) in self.exporters.iter().enumerate() {
            let slot = &mut self.unreported_errors[i];
            if slot.0 > 0 {
                tracing::warn!(
                    target: "tracing_usr::export",
                    exporter = exporter.name(),
                    failures = slot.0,
                    last_error = slot.1.as_deref().unwrap_or(""),
                    "export failed"
                );
                *slot = (0, None);
            }
        }
    }
}

/// Values seen to match nothing of the value masking rule, remembered by the export thread:
/// applications repeat the same tag values (routes, methods, systems) on every request, and a
/// set look-up costs a fraction of a regex search. Whole values are kept and compared (a hash
/// alone could let a secret through); only short values, at most [`MaskCache::CAPACITY`] of
/// them, emptied when full. They are values about to be exported in clear anyway.
#[derive(Debug, Default)]
pub struct MaskCache {
    clean: std::collections::HashSet<Box<str>, foldhash::fast::RandomState>,
}

impl MaskCache {
    /// At most this many values are remembered.
    pub const CAPACITY: usize = 4096;
    /// Longer values are never remembered.
    pub const MAX_LEN: usize = 128;

    fn mask_in_place<V: AsRef<str> + From<String>>(&mut self, masker: &Masker, value: &mut V) {
        let text = value.as_ref();
        let short = text.len() <= Self::MAX_LEN;
        if short && self.clean.contains(text) {
            return;
        }
        match masker.mask_value(text) {
            std::borrow::Cow::Owned(masked) => *value = masked.into(),
            std::borrow::Cow::Borrowed(_) if short => {
                if self.clean.len() >= Self::CAPACITY {
                    self.clean.clear();
                }
                self.clean.insert(text.into());
            }
            std::borrow::Cow::Borrowed(_) => {}
        }
    }
}

/// Applies the value masking rule to what the layer left for the pipeline: the pending `meta`
/// entries of a span, and the message and string fields of a log record. `cache` remembers
/// values that match nothing (see [`MaskCache`]).
pub fn mask_record(masker: &Masker, cache: &mut MaskCache, record: &mut Record) {
    match record {
        Record::Span(span) => {
            let pending = span.pending_value_mask.min(span.meta.len());
            for (_, value) in &mut span.meta[..pending] {
                cache.mask_in_place(masker, value);
            }
            span.pending_value_mask = 0;
            for event in &mut span.events {
                cache.mask_in_place(masker, &mut event.name);
                for (_, value) in &mut event.fields {
                    if let FieldValue::Str(s) = value {
                        cache.mask_in_place(masker, s);
                    }
                }
            }
        }
        Record::Log(log) => {
            if let Some(message) = &mut log.message {
                cache.mask_in_place(masker, message);
            }
            for (_, value) in &mut log.fields {
                if let FieldValue::Str(s) = value {
                    cache.mask_in_place(masker, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_cache_remembers_only_clean_short_values() {
        let masker = Masker::default();
        let mut cache = MaskCache::default();
        for _ in 0..3 {
            let mut secret = "Authorization: Bearer abc.def-1".to_owned();
            cache.mask_in_place(&masker, &mut secret);
            assert_eq!(secret, "Authorization: Bearer <Redacted>");
            let mut clean = "/orders".to_owned();
            cache.mask_in_place(&masker, &mut clean);
            assert_eq!(clean, "/orders");
        }
        assert_eq!(cache.clean.len(), 1, "only the clean value is remembered");
        let mut long = "x".repeat(MaskCache::MAX_LEN + 1);
        cache.mask_in_place(&masker, &mut long);
        assert_eq!(cache.clean.len(), 1, "long values are not remembered");
        for i in 0..MaskCache::CAPACITY + 10 {
            cache.mask_in_place(&masker, &mut format!("value-{i}"));
        }
        assert!(cache.clean.len() <= MaskCache::CAPACITY);
    }
}
