//! What the handle, the worker and the reporter share: the queue and every record's count, under
//! one lock.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tracing_usr_core::Masker;

use super::config::PipelineConfig;
use crate::exporter::{Outcomes, RecordKind};
use crate::record::Record;
use crate::spool::Spool;

/// Index of a record kind in the per-kind counters.
pub(super) fn slot(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Span => 0,
        RecordKind::Log => 1,
    }
}

/// Every record's whereabouts, kept under the queue's lock.
#[derive(Clone, Default)]
pub(super) struct Counts {
    pub(super) offered: [u64; 2],
    pub(super) queued: [u64; 2],
    pub(super) queue_full: [u64; 2],
    pub(super) closed: [u64; 2],
    pub(super) spooled: [u64; 2],
    pub(super) restored: [u64; 2],
    pub(super) spool_full: [u64; 2],
    pub(super) torn: u64,
    pub(super) processed: u64,
    pub(super) export_errors: u64,
    /// Per exporter: records it handles that it has not finished yet, and its outcomes.
    pub(super) in_flight: Vec<[u64; 2]>,
    pub(super) outcomes: Vec<[Outcomes; 2]>,
    /// Per exporter: its last error not yet reported.
    pub(super) last_error: Vec<Option<String>>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: Vec<Record>,
    pub(super) flush_requested: u64,
    pub(super) flush_done: u64,
    pub(super) shutdown: bool,
    pub(super) stopped: bool,
    pub(super) counts: Counts,
    /// The exporter the worker is in, and since when.
    pub(super) exporting: Option<(usize, Instant)>,
    /// A shutdown gave up waiting: what was queued or in flight is counted as unsent, and the
    /// worker's later reports are ignored.
    pub(super) abandoned: bool,
    /// What the last report covered.
    pub(super) reported: Counts,
    /// Whether the last export delivered without the collector being unavailable (spooled
    /// records are sent again only then).
    pub(super) last_ok: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) wake_worker: Condvar,
    pub(super) done: Condvar,
    pub(super) wake_reporter: Condvar,
    pub(super) config: PipelineConfig,
    /// Set when the pipeline starts shutting down: exporters stop retrying.
    pub(super) stopping: AtomicBool,
    pub(super) names: Arc<[String]>,
    /// Per exporter: whether it handles spans, logs.
    pub(super) handles: Vec<[bool; 2]>,
    /// The spool, once the worker opened it.
    pub(super) spool: Mutex<Option<Spool>>,
    /// For records spilled to the spool by the reporter thread.
    pub(super) masker: Arc<Masker>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the worker while holding the lock must not take the host down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A shutdown that gave up waiting: whatever is queued or in flight will not be counted as
/// delivered any more, so it is counted now, as unsent at shutdown.
pub(super) fn abandon(shared: &Shared, state: &mut State) {
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
