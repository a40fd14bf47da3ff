//! Delivery of signals to the sink: inline from SDK frames, or queued for a helper thread.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use tracing_core::dispatcher::{Dispatch, WeakDispatch};
use tracing_usr_core::detection::Signal;

use super::SignalSink;

/// Most signals waiting for the delivery thread; more are dropped and counted.
const MAX_QUEUED: usize = 4096;

/// Delivery of signals: inline from SDK frames, or queued for a helper thread.
pub(crate) struct SignalHub {
    sink: Box<dyn SignalSink>,
    queue: Mutex<VecDeque<Signal>>,
    ready: Condvar,
    thread: AtomicBool,
    dispatch: OnceLock<WeakDispatch>,
    dropped: AtomicU64,
    delivered: AtomicU64,
}

impl fmt::Debug for SignalHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHub")
            .field("delivered", &self.delivered)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl SignalHub {
    pub(crate) fn new(sink: Box<dyn SignalSink>) -> Arc<Self> {
        Arc::new(Self {
            sink,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            thread: AtomicBool::new(false),
            dispatch: OnceLock::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        })
    }

    /// Remembers the dispatcher the layer was registered with (the delivery thread emits
    /// through it).
    pub(crate) fn set_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// Delivers now, from the caller's frame (no lock of the layer may be held). A sink that
    /// panics loses that signal (counted as dropped), never the caller or the delivery thread.
    pub(crate) fn deliver_now(&self, signals: Vec<Signal>) {
        for signal in signals {
            let sink = &self.sink;
            let delivered =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.deliver(&signal))).is_ok();
            let counter = if delivered { &self.delivered } else { &self.dropped };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues signals raised inside a layer callback for the delivery thread.
    #[inline]
    pub(crate) fn enqueue(self: &Arc<Self>, signals: Vec<Signal>) {
        if !signals.is_empty() {
            self.enqueue_some(signals);
        }
    }

    fn enqueue_some(self: &Arc<Self>, signals: Vec<Signal>) {
        if let Ok(mut queue) = self.queue.lock() {
            for signal in signals {
                if queue.len() >= MAX_QUEUED {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    queue.push_back(signal);
                }
            }
        }
        self.ready.notify_one();
        if !self.thread.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("tracing-usr-signals".into())
                .spawn(move || deliver_loop(&weak));
            if spawned.is_err() {
                // Delivered by the next flush instead.
                self.thread.store(false, Ordering::Release);
            }
        }
    }

    /// Delivers everything queued from the caller's frame, through the registered dispatcher.
    pub(crate) fn drain(&self) {
        let pending: Vec<Signal> = self
            .queue
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default();
        if !pending.is_empty() {
            self.deliver_registered(pending);
        }
    }

    /// Delivers through the dispatcher the layer was registered with (the current one if it
    /// is gone), so the default sink's events reach this layer from any thread.
    fn deliver_registered(&self, signals: Vec<Signal>) {
        self.with_registered(|| self.deliver_now(signals));
    }

    /// Runs `f` with the dispatcher the layer was registered with as the default (the current
    /// one if it is gone), so its events reach this layer from a helper thread.
    pub(crate) fn with_registered(&self, f: impl FnOnce()) {
        match self.dispatch.get().and_then(WeakDispatch::upgrade) {
            Some(dispatch) => tracing_core::dispatcher::with_default(&dispatch, f),
            None => f(),
        }
    }

    /// Emits one warning (target `tracing_usr::config`) through the registered dispatcher.
    pub(crate) fn warn_later(&self, variable: &'static str, message: String) {
        crate::warn::emit_later(
            self.dispatch.get().cloned(),
            vec![tracing_usr_core::mode::ConfigWarning { variable, message }],
        );
    }

    /// Signals delivered so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Signals dropped because the delivery queue was full or the sink panicked.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn deliver_loop(hub: &Weak<SignalHub>) {
    loop {
        let Some(hub) = hub.upgrade() else { return };
        let batch: Vec<Signal> = {
            let Ok(queue) = hub.queue.lock() else { return };
            let Ok((mut queue, _)) = hub
                .ready
                .wait_timeout_while(queue, Duration::from_millis(500), |q| q.is_empty())
            else {
                return;
            };
            queue.drain(..).collect()
        };
        if !batch.is_empty() {
            hub.deliver_registered(batch);
        }
    }
}
