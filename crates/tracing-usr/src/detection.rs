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

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;
use tracing_core::dispatcher::{Dispatch, WeakDispatch};
pub use tracing_usr_core::detection::{
    Action, DetectionConfig, DetectionConfigError, DetectionConfigErrorKind, Detector, EventKind, KeyKind,
    Observation, RuleConfig, RuleId, Severity, Signal, MAX_KEY_TEXT, MAX_THRESHOLD, MAX_WINDOW,
};

use crate::layer::Shared;
use crate::state::RootState;

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
        match self.dispatch.get().and_then(WeakDispatch::upgrade) {
            Some(dispatch) => tracing_core::dispatcher::with_default(&dispatch, || self.deliver_now(signals)),
            None => self.deliver_now(signals),
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

/// Runs the detector on what `state` holds: the waiting events once the client IP is known (or
/// the root closes), and the privilege rules when it closes. Tags the root, applies the
/// actions, and returns the signals to deliver (the caller delivers them after releasing the
/// extension lock), including those [`submit`] left in `state.signals`.
pub(crate) fn run(shared: &Shared, state: &mut RootState, closing: bool) -> Vec<Signal> {
    let mut signals = std::mem::take(&mut state.signals);
    let Some(detector) = shared.detector.as_deref() else {
        return signals;
    };
    let mut fresh = Vec::new();
    if state.trace.client_ip().is_some() || closing {
        for mut obs in state.trace.take_pending_detections() {
            stamp(&mut obs, state);
            fresh.extend(detector.observe(&obs));
        }
    }
    if closing {
        let checks = state.trace.take_privilege_checks();
        if !checks.is_empty() {
            let default = shared.default_bucket();
            let identity = state
                .trace
                .identity
                .final_identity(shared.mode, default.as_ref())
                .map(|(tags, _)| tags)
                .unwrap_or_default();
            let find = |key: &str| {
                identity
                    .iter()
                    .find(|(k, v)| k.as_ref() == key && !v.is_empty())
                    .map(|(_, v)| v.as_str())
            };
            let role = find(tracing_usr_core::keys::USR_ROLE);
            let has_id = find(tracing_usr_core::keys::USR_ID).is_some();
            let disabled = shared.mode == tracing_usr_core::Mode::Disabled;
            for mut obs in checks {
                stamp(&mut obs, state);
                fresh.extend(detector.privilege(&obs, role, has_id, disabled));
            }
        }
    }
    finish(shared, detector, state, &mut fresh);
    signals.extend(fresh);
    signals
}

/// The request's client IP and trace id, on an observation about to be judged.
fn stamp(obs: &mut Observation, state: &RootState) {
    obs.ip = state.trace.client_ip();
    obs.trace_id = state.trace_id;
}

/// Tags the root with the signals, copies the request's user agent into them, applies their
/// actions, and reports a table that had to evict an open signal.
fn finish(shared: &Shared, detector: &Detector, state: &mut RootState, signals: &mut [Signal]) {
    for signal in signals.iter_mut() {
        state.trace.add_signal(signal.rule, signal.severity);
        if signal.user_agent.is_none() {
            signal.user_agent = state.trace.user_agent().map(str::to_owned);
        }
        for action in &signal.actions {
            match action {
                Action::BlockIp { ip, duration } => shared.blocks.block_ip(*ip, Some(*duration)),
                Action::BlockUser { user_id, duration } => shared.blocks.block_user(user_id, Some(*duration)),
            }
        }
    }
    if !signals.is_empty() && detector.take_eviction_notice() {
        shared.signals.warn_later(
            "tracing_usr::detection",
            format!(
                "a detection table is full of keys with open signals (max_keys = {}): the oldest signal was evicted",
                detector.config().max_keys
            ),
        );
    }
}

/// Hands a business event to detection: judged now when the client IP is known, else queued on
/// the root until it is (or the root closes). Signals raised now wait in `state.signals` for
/// [`run`] or [`take`] once the extension lock is released. An admin-only sensitive activity is
/// also kept for the privilege rules at close.
pub(crate) fn submit(shared: &Shared, state: &mut RootState, mut obs: Observation) {
    let Some(detector) = shared.detector.as_deref() else {
        return;
    };
    let privilege = obs.needs_privilege_check();
    let ip_known = state.trace.client_ip().is_some();
    if (privilege || !ip_known) && !state.detection_armed {
        state.detection_armed = true;
        shared.armed_roots.fetch_add(1, Ordering::AcqRel);
    }
    if privilege {
        state.trace.push_privilege_check(obs.clone());
    }
    if !ip_known {
        state.trace.push_detection(obs);
        return;
    }
    stamp(&mut obs, state);
    let mut signals = detector.observe(&obs);
    if !signals.is_empty() {
        finish(shared, detector, state, &mut signals);
        state.signals.extend(signals);
    }
}

/// The signals [`submit`] raised, taken.
pub(crate) fn take(state: &mut RootState) -> Vec<Signal> {
    std::mem::take(&mut state.signals)
}

/// The observation of a business event, read from its tags, timed now; `None` without
/// detection or for events no rule watches.
pub(crate) fn observation<K: AsRef<str>>(
    shared: &Shared,
    name: &str,
    tags: &[(K, String)],
) -> Option<Observation> {
    let detector = shared.detector.as_deref()?;
    Observation::from_event_tags(name, tags, detector.now())
}

/// What became of the signals raised so far ([`crate::Handle::signal_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Signals handed to the sink.
    pub delivered: u64,
    /// Signals lost: the delivery queue (4,096) was full, or the sink panicked.
    pub dropped: u64,
}

/// Parses a detection settings file over the defaults.
///
/// ```json
/// {
///   "enabled": true,
///   "max_keys": 10000,
///   "block_duration_secs": 900,
///   "max_signal_duration_secs": 86400,
///   "rules": {
///     "appsec-ato-groupby-ip": { "threshold": 30, "distinct": 5, "window_secs": 600, "block_ip": true, "block_user": true },
///     "appsec-ato-bf": { "enabled": false },
///     "def-000-389": { "threshold": 20 }
///   }
/// }
/// ```
///
/// Every key is optional; rules are named by their readable or opaque id. Returns the
/// settings and whether detection is enabled.
///
/// # Errors
/// Invalid JSON, unknown keys or rule ids, values of the wrong type or range, and actions the
/// rule does not allow, each named.
///
/// ```
/// use tracing_usr::detection::{parse_config, RuleId};
/// let (config, enabled) = parse_config(r#"{"rules": {"bl-payment-failures": {"threshold": 9, "block_ip": true}}}"#).unwrap();
/// assert!(enabled);
/// assert_eq!(config.rule(RuleId::PaymentFailures).threshold, 9);
/// assert!(parse_config(r#"{"rules": {"bl-password-reset-bf": {"block_ip": true}}}"#).is_err());
/// ```
pub fn parse_config(text: &str) -> Result<(DetectionConfig, bool), DetectionConfigError> {
    use DetectionConfigErrorKind::{InvalidValue, Syntax, Unknown};
    let err = |kind, m: String| DetectionConfigError::new(kind, m);
    let root: Value = serde_json::from_str(text).map_err(|e| err(Syntax, format!("not valid JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(err(Syntax, "expected a JSON object".into()));
    };
    let mut config = DetectionConfig::default();
    let mut enabled = true;
    let uint = |key: &str, v: &Value| -> Result<u64, DetectionConfigError> {
        v.as_u64().ok_or_else(|| {
            err(
                InvalidValue,
                format!("{key}: expected a non-negative integer, found {v}"),
            )
        })
    };
    let boolean = |key: &str, v: &Value| -> Result<bool, DetectionConfigError> {
        v.as_bool()
            .ok_or_else(|| err(InvalidValue, format!("{key}: expected true or false, found {v}")))
    };
    for (key, value) in &root {
        match key.as_str() {
            "enabled" => enabled = boolean(key, value)?,
            "max_keys" => {
                config.max_keys = usize::try_from(uint(key, value)?)
                    .map_err(|_| err(InvalidValue, "max_keys: too large".into()))?
            }
            "block_duration_secs" => config.block_duration = Duration::from_secs(uint(key, value)?),
            "max_signal_duration_secs" => config.max_signal_duration = Duration::from_secs(uint(key, value)?),
            "rules" => {
                let Value::Object(rules) = value else {
                    return Err(err(Syntax, "rules: expected an object keyed by rule id".into()));
                };
                for (id, settings) in rules {
                    let rule = RuleId::from_id(id)
                        .ok_or_else(|| err(Unknown, format!("rules: unknown rule id {id:?}")))?;
                    let Value::Object(settings) = settings else {
                        return Err(err(Syntax, format!("rules.{id}: expected an object")));
                    };
                    let c = config.rule_mut(rule);
                    for (k, v) in settings {
                        let path = format!("rules.{id}.{k}");
                        let small = |n: u64| {
                            u32::try_from(n).map_err(|_| err(InvalidValue, format!("{path}: too large")))
                        };
                        match k.as_str() {
                            "enabled" => c.enabled = boolean(&path, v)?,
                            "threshold" => c.threshold = small(uint(&path, v)?)?,
                            "distinct" if rule == RuleId::CredentialStuffing => {
                                c.distinct = small(uint(&path, v)?)?
                            }
                            "window_secs" => c.window = Duration::from_secs(uint(&path, v)?),
                            "block_ip" => c.block_ip = boolean(&path, v)?,
                            "block_user" => c.block_user = boolean(&path, v)?,
                            _ => return Err(err(Unknown, format!("{path}: unknown setting"))),
                        }
                    }
                }
            }
            other => return Err(err(Unknown, format!("{other}: unknown setting"))),
        }
    }
    config.validate()?;
    Ok((config, enabled))
}

/// Reads and parses a detection settings file (see [`parse_config`]).
///
/// # Errors
/// The file cannot be read, or [`parse_config`] rejects it.
pub fn load_config(path: &Path) -> Result<(DetectionConfig, bool), DetectionConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        DetectionConfigError::new(
            DetectionConfigErrorKind::Read,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_config(&text).map_err(|e| e.context(path.display()))
}
