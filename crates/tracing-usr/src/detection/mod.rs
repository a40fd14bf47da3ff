//! In-process detection of account takeover and business-logic abuse.
//!
//! The layer feeds every business event (SDK and field path) with the request's client IP and
//! user agent to a [`Detector`] running the ten rules of `docs/detection.md`
//! (credential stuffing, brute force, sensitive-activity rate, the two privilege violations,
//! signup flood, account deletion, password-reset enumeration and brute force, payment
//! failures). A match raises a [`Signal`]:
//!
//! * it is handed to the [`SignalSink`] of the builder; the default sink ([`TracingSink`]) emits
//!   one `WARN` event with target `tracing_usr::signal`, which this crate exports like any event
//!   (and never reads as a business event);
//! * the local root of the request gets `tracing_usr.signal.<rule id>` = the severity;
//! * the rule's actions run: `block_ip` puts the client IP on the blocked-IP list, `block_user`
//!   (credential stuffing and brute force, on a critical escalation) the account that just logged
//!   in from the attacking source, both for [`DetectionConfig::block_duration`] (15 min).
//!
//! Signals raised by an SDK call are delivered from the caller's frame before the call returns;
//! signals raised inside a layer callback (field-path events, a client IP recorded late, a
//! root closing) are queued and delivered by a helper thread, or by [`Handle::flush`].
//!
//! Detection is on by default with the doc's thresholds and report-only actions. Configure it
//! with [`Builder::with_detection`], [`Builder::with_detection_file`] or the
//! `TRACING_USR_DETECTION` (`on`/`off`) and `TRACING_USR_DETECTION_FILE` variables; the file
//! format is described at [`parse_config`].
//!
//! # Several replicas
//!
//! Per process, each replica of a service counts only its share of an attack. With the feature
//! `redis` and `Builder::with_redis` (or `TRACING_USR_REDIS_URL` and
//! `TRACING_USR_REDIS_SECRET`), the stateful rules count every replica's events on Redis, one
//! signal is raised per attack across the cluster, and blocks reach every replica; see
//! `RedisConfig` and `docs/detection.md` ("Running several replicas").
//!
//! # Memory
//!
//! Each rule keeps at most `max_keys` keys (10,000 by default) in 16 shards (one shard below
//! 1,024 keys), sweeps expired keys at most every 5 s when inserting, and evicts the least
//! recently updated key without an open signal when a shard is full. [`Detector::memory_bound`]
//! computes the worst case for a configuration: about 39 MiB (40.5 MB) for the defaults (every table full
//! of keys with full rings and two open signals with 256-byte key texts); a realistic table of
//! 10,000 attacking IPs with no open signals uses a few MiB. [`Handle::detector`] exposes
//! [`Detector::memory_usage`].
//!
//! [`Handle::flush`]: crate::Handle::flush
//! [`Handle::detector`]: crate::Handle::detector
//! [`Builder::with_detection`]: crate::Builder::with_detection
//! [`Builder::with_detection_file`]: crate::Builder::with_detection_file

#[cfg(feature = "redis")]
pub(crate) mod cluster;
mod config;
pub(crate) mod hub;
pub(crate) mod run;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use cluster::{
    ClusterStats, RedisConfig, ENV_REDIS_CA_FILE, ENV_REDIS_PREFIX, ENV_REDIS_SECRET, ENV_REDIS_URL,
};
pub use config::{load_config, parse_config};
pub use tracing_usr_core::detection::{
    Action, DetectionConfig, DetectionConfigError, DetectionConfigErrorKind, Detector, EventKind, KeyKind,
    Observation, RuleConfig, RuleId, Severity, Signal, MAX_KEY_TEXT, MAX_THRESHOLD, MAX_WINDOW,
};

/// `TRACING_USR_DETECTION`: `on` (default) or `off`.
pub const ENV_DETECTION: &str = "TRACING_USR_DETECTION";
/// `TRACING_USR_DETECTION_FILE`: a JSON file of detection settings (see [`parse_config`]).
pub const ENV_DETECTION_FILE: &str = "TRACING_USR_DETECTION_FILE";
/// The target of the default sink's events.
pub const SIGNAL_TARGET: &str = "tracing_usr::signal";

/// Where signals go. Implemented for closures `Fn(&Signal)` and for `()` (drop them).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = {
///     let seen = Arc::clone(&seen);
///     move |signal: &tracing_usr::detection::Signal| seen.lock().unwrap().push(signal.rule)
/// };
/// let _layer = tracing_usr::builder().with_signal_sink(sink).build();
/// ```
pub trait SignalSink: Send + Sync + 'static {
    /// Receives one signal. Called with no lock of the layer held, from the SDK caller's
    /// thread or the signal delivery thread; `tracing` may be used.
    fn deliver(&self, signal: &Signal);
}

impl<F: Fn(&Signal) + Send + Sync + 'static> SignalSink for F {
    fn deliver(&self, signal: &Signal) {
        self(signal)
    }
}

impl SignalSink for () {
    fn deliver(&self, _signal: &Signal) {}
}

/// The default sink: one `WARN` event per signal, target [`SIGNAL_TARGET`], with the fields
/// `rule`, `severity`, `key_kind`, `key`, `count`, `distinct`, `window_secs`, `first_seen`,
/// `last_seen` (seconds since the detector started), `escalation`, `account`, `user_agent`,
/// `signal_trace_id`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink;

impl SignalSink for TracingSink {
    fn deliver(&self, s: &Signal) {
        let trace_id = s.trace_id.map(|t| format!("{t:032x}"));
        tracing::warn!(
            target: "tracing_usr::signal",
            rule = s.rule.as_str(),
            severity = s.severity.as_str(),
            key_kind = s.key_kind.as_str(),
            key = s.key.as_str(),
            count = s.count,
            distinct = s.distinct,
            window_secs = s.window.as_secs(),
            first_seen = s.first_seen,
            last_seen = s.last_seen,
            escalation = s.escalation,
            account = s.account.as_deref(),
            user_agent = s.user_agent.as_deref(),
            signal_trace_id = trace_id.as_deref(),
            "security signal {} ({}) for {} {}",
            s.rule,
            s.severity,
            s.key_kind.as_str(),
            s.key,
        );
    }
}

/// What became of the signals raised so far ([`crate::Handle::signal_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Signals handed to the sink.
    pub delivered: u64,
    /// Signals lost: the delivery queue (4,096) was full, or the sink panicked.
    pub dropped: u64,
}
