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

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_usr_core::Masker;

use crate::exporter::{ExportContext, ExportError, ExportErrorKind, Exporter, Outcomes, RecordKind};
use crate::record::{FieldValue, Record};
use crate::spool::{Spool, SpoolConfig};

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
    /// How often, at most, lost records (and an exporter stuck on its collector) are reported.
    /// Defaults to 10 s.
    pub report_interval: Duration,
    /// Where records the collector cannot take wait on disk (off by default: with `None`
    /// nothing touches the disk). See [`crate::spool`].
    pub spool: Option<SpoolConfig>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_queued_records: 16_384,
            batch_size: 512,
            batch_delay: Duration::from_millis(100),
            report_interval: Duration::from_secs(10),
            spool: None,
        }
    }
}

/// Counters of a [`Pipeline`], in records.
///
/// For each exporter and each kind of record it handles, at any moment:
/// `offered + restored = queued + dropped_queue_full + dropped_closed + dropped_spool_full +
/// spooled + in flight + delivered + lost` (`lost` being [`Outcomes::lost`]); after
/// [`Pipeline::shutdown`] returned `Ok`, nothing is queued or in flight. Without a spool,
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

/// Index of a record kind in the per-kind counters.
fn slot(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Span => 0,
        RecordKind::Log => 1,
    }
}

/// Every record's whereabouts, kept under the queue's lock.
#[derive(Clone, Default)]
struct Counts {
    offered: [u64; 2],
    queued: [u64; 2],
    queue_full: [u64; 2],
    closed: [u64; 2],
    spooled: [u64; 2],
    restored: [u64; 2],
    spool_full: [u64; 2],
    torn: u64,
    processed: u64,
    export_errors: u64,
    /// Per exporter: records it handles that it has not finished yet, and its outcomes.
    in_flight: Vec<[u64; 2]>,
    outcomes: Vec<[Outcomes; 2]>,
    /// Per exporter: its last error not yet reported.
    last_error: Vec<Option<String>>,
}

#[derive(Default)]
struct State {
    queue: Vec<Record>,
    flush_requested: u64,
    flush_done: u64,
    shutdown: bool,
    stopped: bool,
    counts: Counts,
    /// The exporter the worker is in, and since when.
    exporting: Option<(usize, Instant)>,
    /// A shutdown gave up waiting: what was queued or in flight is counted as unsent, and the
    /// worker's later reports are ignored.
    abandoned: bool,
    /// What the last report covered.
    reported: Counts,
    /// Whether the last export delivered without the collector being unavailable (spooled
    /// records are sent again only then).
    last_ok: bool,
}

struct Shared {
    state: Mutex<State>,
    wake_worker: Condvar,
    done: Condvar,
    wake_reporter: Condvar,
    config: PipelineConfig,
    /// Set when the pipeline starts shutting down: exporters stop retrying.
    stopping: AtomicBool,
    names: Arc<[String]>,
    /// Per exporter: whether it handles spans, logs.
    handles: Vec<[bool; 2]>,
    /// The spool, once the worker opened it.
    spool: Mutex<Option<Spool>>,
    /// For records spilled to the spool by the reporter thread.
    masker: Arc<Masker>,
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

/// The public counters of `counts`.
fn stats_of(shared: &Shared, counts: &Counts, queued: u64) -> PipelineStats {
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

/// A shutdown that gave up waiting: whatever is queued or in flight will not be counted as
/// delivered any more, so it is counted now, as unsent at shutdown.
fn abandon(shared: &Shared, state: &mut State) {
    if state.abandoned {
        return;
    }
    state.abandoned = true;
    let queued = std::mem::take(&mut state.counts.queued);
    state.queue.clear();
    let counts = &mut state.counts;
    for (e, handles) in shared.handles.iter().enumerate() {
        for k in 0..2 {
            let unsent = std::mem::take(&mut counts.in_flight[e][k]) + if handles[k] { queued[k] } else { 0 };
            counts.outcomes[e][k].unsent_at_shutdown += unsent;
        }
    }
}

/// Reports, as warnings, what was lost since the last report, and an exporter that has been
/// waiting on its collector for longer than the report interval.
fn report(shared: &Shared) {
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
    for (e, name) in shared.names.iter().enumerate() {
        let lost = |k: usize| {
            let (a, b) = (&now.outcomes[e][k], &before.outcomes[e][k]);
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
                exporter = name.as_str(),
                spans = spans.lost(),
                logs = logs.lost(),
                rejected = spans.rejected + logs.rejected,
                retry_exhausted = spans.retry_exhausted + logs.retry_exhausted,
                unsent_at_shutdown = spans.unsent_at_shutdown + logs.unsent_at_shutdown,
                failed = spans.failed + logs.failed,
                last_error = now.last_error[e].as_deref().unwrap_or(""),
                "export failed: records lost"
            );
        }
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

/// How long an export must have been waiting before the reporter thread spills the queue to
/// the spool.
const SPILL_AFTER: Duration = Duration::from_millis(100);

/// The reporter thread: a report every interval until the worker stops; with a spool, it also
/// spills the queue to disk while the worker waits on a collector and the queue fills.
fn run_reporter(shared: &Shared) {
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

/// Moves the queue to the spool when it is half full while the worker waits on a collector
/// (or the collector failed last time): those records would be dropped next.
fn spill_queue_if_stuck(shared: &Shared, cache: &mut MaskCache) {
    let mut state = shared.lock();
    let waiting = state
        .exporting
        .is_some_and(|(_, since)| since.elapsed() >= SPILL_AFTER);
    let half_full = state.queue.len() >= shared.config.max_queued_records.div_ceil(2);
    let collector_trouble = waiting || !state.last_ok;
    if state.shutdown || state.abandoned || !half_full || !collector_trouble {
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
fn write_to_spool(shared: &Shared, records: &[Record]) {
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

/// What one exporter reported about one batch.
struct ExportReport {
    spans: Outcomes,
    logs: Outcomes,
    error: Option<ExportError>,
}

struct Worker {
    shared: Arc<Shared>,
    exporters: Vec<Box<dyn Exporter>>,
    masker: Arc<Masker>,
    mask_cache: MaskCache,
}

impl Worker {
    fn new(shared: Arc<Shared>, exporters: Vec<Box<dyn Exporter>>, masker: Arc<Masker>) -> Self {
        Self {
            shared,
            exporters,
            masker,
            mask_cache: MaskCache::default(),
        }
    }

    fn run(mut self) {
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
        if self.shared.config.spool.is_none() || !self.shared.lock().last_ok {
            return;
        }
        let room = {
            let state = self.shared.lock();
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
