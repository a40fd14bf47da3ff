//! The pipeline's settings.

use std::time::Duration;

use crate::spool::SpoolConfig;

/// Settings of a [`Pipeline`](super::Pipeline).
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
