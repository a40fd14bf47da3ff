//! [`Handle`]: flush, shut down and read the counters of one layer; [`shutdown`] for all.

use std::sync::{Arc, Mutex, Weak};

use tracing_usr_core::blocking::BlockList;
use tracing_usr_core::detection::Detector;
use tracing_usr_core::Mode;
use tracing_usr_export::{Pipeline, PipelineStats, TimeoutError};

use crate::detection::SignalStats;
use crate::shared::Shared;

/// Every layer with an export pipeline, for [`shutdown`].
static LAYERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Lists a layer that exports, for [`shutdown`].
pub(crate) fn register(shared: &Arc<Shared>) {
    if let Ok(mut layers) = LAYERS.lock() {
        layers.retain(|w| w.strong_count() > 0);
        layers.push(Arc::downgrade(shared));
    }
}

/// Flushes and stops the exporters of every layer built in this process (queued records are
/// exported first, within each layer's shutdown timeout). Records produced afterwards are
/// dropped and counted.
///
/// # Errors
/// [`TimeoutError`] when a layer's queue did not drain in time (the others are still shut
/// down).
pub fn shutdown() -> Result<(), TimeoutError> {
    let layers: Vec<Arc<Shared>> = match LAYERS.lock() {
        Ok(layers) => layers.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => Vec::new(),
    };
    let mut result = Ok(());
    for shared in layers {
        if let Some(pipeline) = &shared.pipeline {
            if let Err(e) = pipeline.shutdown(shared.shutdown_timeout) {
                result = Err(e);
            }
        }
    }
    result
}

/// A handle to one layer's export pipeline.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Waits until every record produced so far (of closed traces) is exported and the
    /// exporters are flushed. It blocks the calling thread (at most the shutdown timeout): from
    /// async code, call it through `tokio::task::spawn_blocking` or at shutdown.
    ///
    /// # Errors
    /// [`TimeoutError`] when that takes longer than the layer's shutdown timeout.
    pub fn flush(&self) -> Result<(), TimeoutError> {
        self.shared.signals.drain();
        match &self.shared.pipeline {
            Some(p) => p.flush(self.shared.shutdown_timeout),
            None => Ok(()),
        }
    }

    /// The detector, unless detection is off: its settings, tracked keys and memory.
    pub fn detector(&self) -> Option<Arc<Detector>> {
        self.shared.detector.clone()
    }

    /// Signals delivered to the sink so far, and signals lost because the delivery queue
    /// (4,096) was full or the sink panicked.
    pub fn signal_stats(&self) -> SignalStats {
        SignalStats {
            delivered: self.shared.signals.delivered(),
            dropped: self.shared.signals.dropped(),
        }
    }

    /// Flushes and stops this layer's exporters.
    ///
    /// # Errors
    /// [`TimeoutError`] when the queue did not drain within the shutdown timeout.
    pub fn shutdown(&self) -> Result<(), TimeoutError> {
        match &self.shared.pipeline {
            Some(p) => p.shutdown(self.shared.shutdown_timeout),
            None => Ok(()),
        }
    }

    /// The export counters, in records (all zero when nothing is exported): per kind, what
    /// was offered, is queued or was dropped before export, and per exporter what is in flight,
    /// delivered, or lost by reason. See [`PipelineStats`] for how they add up.
    pub fn stats(&self) -> PipelineStats {
        self.shared
            .pipeline
            .as_ref()
            .map(Pipeline::stats)
            .unwrap_or_default()
    }

    /// The Remote Configuration client's counters (polls read, polls failed, changes
    /// applied), when it runs.
    #[cfg(feature = "datadog")]
    pub fn remote_config_counts(&self) -> Option<tracing_usr_export::remote_config::RemoteConfigCounts> {
        self.shared.remote_config.as_ref().map(|c| c.counts())
    }

    /// What shared detection on Redis did (events counted there or locally, failures, blocks
    /// shared), when it is configured.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn cluster_stats(&self) -> Option<crate::detection::ClusterStats> {
        self.shared.cluster.as_ref().map(|c| c.stats())
    }

    /// The effective mode of the field path.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The blocked users and IPs, to replace or extend at run time.
    pub fn block_list(&self) -> Arc<BlockList> {
        Arc::clone(&self.shared.blocks)
    }

    /// The names of the exporters in use (`json-lines`, …); empty when nothing is exported.
    pub fn exporters(&self) -> Vec<String> {
        self.shared
            .pipeline
            .as_ref()
            .map(|p| p.exporter_names().to_vec())
            .unwrap_or_default()
    }

    /// A guard that shuts this layer's exporters down when dropped.
    pub fn shutdown_guard(self) -> ShutdownGuard {
        ShutdownGuard { handle: self }
    }
}

/// Shuts its layer's exporters down (flushing them) when dropped. Get one from
/// [`Handle::shutdown_guard`]; keep it alive in `main`.
#[derive(Debug)]
#[must_use = "the exporters are shut down when the guard is dropped"]
pub struct ShutdownGuard {
    handle: Handle,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
    }
}
