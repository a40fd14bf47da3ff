//! In-process detection of account takeover and business-logic abuse (`docs/detection.md`
//! in the repository): ten rules over the business events, exact sliding windows, bounded
//! sharded tables, the signal lifecycle and the block actions.
//!
//! Pure: the [`Detector`] is fed [`Observation`]s and returns [`Signal`]s; the layer delivers
//! them and applies their [`Action`]s. Time is read from an injectable [`Clock`] and kept as
//! `u32` seconds since the detector started.
//!
//! ```
//! use std::sync::Arc;
//! use tracing_usr_core::blocking::ManualClock;
//! use tracing_usr_core::detection::{DetectionConfig, Detector, EventKind, Observation, RuleId};
//!
//! let detector = Detector::new(DetectionConfig::default(), Arc::new(ManualClock::new()));
//! let mut signals = Vec::new();
//! for n in 0..31 {
//!     let mut failure = Observation::new(EventKind::LoginFailure, detector.now());
//!     failure.ip = Some("203.0.113.9".parse().unwrap());
//!     failure.account = Some(format!("user-{n}"));
//!     signals = detector.observe(&failure);
//!     if n < 30 {
//!         assert!(signals.is_empty(), "not before the 31st failure");
//!     }
//! }
//! assert_eq!(signals[0].rule, RuleId::CredentialStuffing);
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blocking::{canonical_ip, Clock};
use crate::value::truncate;

/// A detection rule (Datadog's readable rule ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    /// `appsec-ato-groupby-ip`: credential stuffing from one client IP.
    CredentialStuffing,
    /// `appsec-ato-bf`: brute force against one account.
    BruteForce,
    /// `bl-rate-limiting`: excessive sensitive activity per (client IP, activity name).
    SensitiveActivityRate,
    /// `bl-privilege-violation-user`: a user without the `admin` role did an admin activity.
    PrivilegeViolationUser,
    /// `bl-privilege-violation-ip`: an unauthenticated request did an admin activity.
    PrivilegeViolationIp,
    /// `bl-signup-ratelimit`: excessive account creation from one client IP.
    SignupRate,
    /// `bl-account-deletion-ratelimit`: excessive account deletion from one client IP.
    AccountDeletion,
    /// `bl-password-reset`: user enumeration through password reset from one client IP.
    PasswordResetEnumeration,
    /// `bl-password-reset-bf`: reset-token brute force against one account.
    PasswordResetBruteForce,
    /// `bl-payment-failures`: excessive payment failures from one client IP.
    PaymentFailures,
}

impl RuleId {
    /// Every rule, in the doc's order.
    pub const ALL: [RuleId; 10] = [
        RuleId::CredentialStuffing,
        RuleId::BruteForce,
        RuleId::SensitiveActivityRate,
        RuleId::PrivilegeViolationUser,
        RuleId::PrivilegeViolationIp,
        RuleId::SignupRate,
        RuleId::AccountDeletion,
        RuleId::PasswordResetEnumeration,
        RuleId::PasswordResetBruteForce,
        RuleId::PaymentFailures,
    ];

    /// The readable rule id (`appsec-ato-groupby-ip`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::CredentialStuffing => "appsec-ato-groupby-ip",
            RuleId::BruteForce => "appsec-ato-bf",
            RuleId::SensitiveActivityRate => "bl-rate-limiting",
            RuleId::PrivilegeViolationUser => "bl-privilege-violation-user",
            RuleId::PrivilegeViolationIp => "bl-privilege-violation-ip",
            RuleId::SignupRate => "bl-signup-ratelimit",
            RuleId::AccountDeletion => "bl-account-deletion-ratelimit",
            RuleId::PasswordResetEnumeration => "bl-password-reset",
            RuleId::PasswordResetBruteForce => "bl-password-reset-bf",
            RuleId::PaymentFailures => "bl-payment-failures",
        }
    }

    /// Datadog's newer opaque id (`def-000-yk4`, …), where it has one.
    pub fn opaque_id(self) -> Option<&'static str> {
        match self {
            RuleId::CredentialStuffing => Some("def-000-yk4"),
            RuleId::BruteForce => Some("def-000-0f4"),
            RuleId::SensitiveActivityRate => None,
            RuleId::PrivilegeViolationUser => Some("def-000-7hq"),
            RuleId::PrivilegeViolationIp => Some("def-000-df3"),
            RuleId::SignupRate => Some("def-000-389"),
            RuleId::AccountDeletion => Some("def-000-sp5"),
            RuleId::PasswordResetEnumeration => Some("def-000-dth"),
            RuleId::PasswordResetBruteForce => Some("def-000-m3m"),
            RuleId::PaymentFailures => Some("def-000-zwj"),
        }
    }

    /// The root-span tag a signal of this rule writes: `tracing_usr.signal.<rule id>`.
    pub fn tag_key(self) -> &'static str {
        match self {
            RuleId::CredentialStuffing => "tracing_usr.signal.appsec-ato-groupby-ip",
            RuleId::BruteForce => "tracing_usr.signal.appsec-ato-bf",
            RuleId::SensitiveActivityRate => "tracing_usr.signal.bl-rate-limiting",
            RuleId::PrivilegeViolationUser => "tracing_usr.signal.bl-privilege-violation-user",
            RuleId::PrivilegeViolationIp => "tracing_usr.signal.bl-privilege-violation-ip",
            RuleId::SignupRate => "tracing_usr.signal.bl-signup-ratelimit",
            RuleId::AccountDeletion => "tracing_usr.signal.bl-account-deletion-ratelimit",
            RuleId::PasswordResetEnumeration => "tracing_usr.signal.bl-password-reset",
            RuleId::PasswordResetBruteForce => "tracing_usr.signal.bl-password-reset-bf",
            RuleId::PaymentFailures => "tracing_usr.signal.bl-payment-failures",
        }
    }

    /// The rule with this readable or opaque id.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == id || r.opaque_id() == Some(id))
    }

    /// Whether the doc allows the `block_ip` action for this rule.
    pub fn allows_block_ip(self) -> bool {
        !matches!(
            self,
            RuleId::PrivilegeViolationUser | RuleId::PrivilegeViolationIp | RuleId::PasswordResetBruteForce
        )
    }

    /// Whether the doc allows the `block_user` action (the two account-takeover rules).
    pub fn allows_block_user(self) -> bool {
        matches!(self, RuleId::CredentialStuffing | RuleId::BruteForce)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Datadog's severity scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `info`
    Info,
    /// `low`
    Low,
    /// `medium`
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a signal's key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A client IP.
    Ip,
    /// An account (login, else id, as exported).
    Account,
    /// A client IP and an activity name.
    IpAndName,
    /// One event (the stateless privilege rules).
    Event,
}

impl KeyKind {
    /// `ip`, `account`, `ip+name` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ip => "ip",
            KeyKind::Account => "account",
            KeyKind::IpAndName => "ip+name",
            KeyKind::Event => "event",
        }
    }
}

/// One rule's settings. `threshold` is strict: "more than `threshold`" events (or distinct
/// values, for the account-deletion and password-reset rules) inside `window` match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Events (or distinct values) that must be exceeded.
    pub threshold: u32,
    /// Credential stuffing only: distinct accounts that must be exceeded as well.
    pub distinct: u32,
    /// The sliding window (whole seconds; unused by the privilege rules).
    pub window: Duration,
    /// Put the client IP on the blocked-IP list when a signal opens or escalates.
    pub block_ip: bool,
    /// Account-takeover rules only: block the account that logged in on a critical escalation.
    pub block_user: bool,
}

impl RuleConfig {
    const fn new(threshold: u32, window_secs: u64) -> Self {
        Self {
            enabled: true,
            threshold,
            distinct: 0,
            window: Duration::from_secs(window_secs),
            block_ip: false,
            block_user: false,
        }
    }
}

/// The largest configurable threshold: a ring of `threshold + 1` time stamps is kept per key.
pub const MAX_THRESHOLD: u32 = 10_000;
/// The longest configurable window (one day).
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Raw key text kept inside an open signal is cut to this many bytes.
pub const MAX_KEY_TEXT: usize = 256;

/// The detector's settings; [`Default`] is the doc's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionConfig {
    rules: [RuleConfig; 10],
    /// Most keys tracked per rule (default 10,000).
    pub max_keys: usize,
    /// How long a `block_ip` / `block_user` action blocks (default 15 min).
    pub block_duration: Duration,
    /// The longest a signal stays open, keep-alives included (default 24 h).
    pub max_signal_duration: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let mut credential_stuffing = RuleConfig::new(30, 600);
        credential_stuffing.distinct = 5;
        Self {
            rules: [
                credential_stuffing,
                RuleConfig::new(40, 900),
                RuleConfig::new(100, 300),
                RuleConfig::new(0, 0),
                RuleConfig::new(0, 0),
                RuleConfig::new(10, 300),
                RuleConfig::new(5, 300),
                RuleConfig::new(5, 300),
                RuleConfig::new(10, 300),
                RuleConfig::new(3, 300),
            ],
            max_keys: 10_000,
            block_duration: Duration::from_secs(15 * 60),
            max_signal_duration: Duration::from_secs(24 * 3600),
        }
    }
}

/// What kind of problem a [`DetectionConfigError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DetectionConfigErrorKind {
    /// The settings file could not be read.
    Read,
    /// The settings are not valid JSON, or not shaped as documented.
    Syntax,
    /// A setting or rule id that does not exist.
    Unknown,
    /// A setting has a value it cannot take (wrong type, out of range).
    InvalidValue,
}

/// A detection setting that cannot be used: its [kind](DetectionConfigError::kind), and a
/// message that names the setting and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionConfigError {
    kind: DetectionConfigErrorKind,
    message: String,
}

impl DetectionConfigError {
    /// An error of `kind` with this message.
    pub fn new(kind: DetectionConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> DetectionConfigErrorKind {
        self.kind
    }

    /// What is wrong, and with which setting.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, its message prefixed with `context` (a file path).
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for DetectionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DetectionConfigError {}

impl DetectionConfig {
    /// One rule's settings.
    pub fn rule(&self, rule: RuleId) -> &RuleConfig {
        &self.rules[rule.index()]
    }

    /// One rule's settings, to change.
    pub fn rule_mut(&mut self, rule: RuleId) -> &mut RuleConfig {
        &mut self.rules[rule.index()]
    }

    /// Checks the settings: actions the doc does not allow for a rule, thresholds above
    /// [`MAX_THRESHOLD`], windows of zero or above [`MAX_WINDOW`], `max_keys` of zero.
    ///
    /// # Errors
    /// The first problem found, naming the rule and the setting.
    pub fn validate(&self) -> Result<(), DetectionConfigError> {
        let err = |m: String| {
            Err(DetectionConfigError::new(
                DetectionConfigErrorKind::InvalidValue,
                m,
            ))
        };
        if self.max_keys == 0 {
            return err("max_keys must be at least 1".into());
        }
        if self.block_duration.is_zero() {
            return err("block_duration must be longer than zero".into());
        }
        if self.max_signal_duration.as_secs() == 0 {
            return err("max_signal_duration must be at least one second".into());
        }
        for rule in RuleId::ALL {
            let c = self.rule(rule);
            if c.block_ip && !rule.allows_block_ip() {
                return err(format!(
                    "{rule}: block_ip is not allowed for this rule (signal only)"
                ));
            }
            if c.block_user && !rule.allows_block_user() {
                return err(format!(
                    "{rule}: block_user is allowed only for appsec-ato-groupby-ip and appsec-ato-bf"
                ));
            }
            if matches!(
                rule,
                RuleId::PrivilegeViolationUser | RuleId::PrivilegeViolationIp
            ) {
                continue;
            }
            if c.threshold > MAX_THRESHOLD || c.distinct > MAX_THRESHOLD {
                return err(format!(
                    "{rule}: thresholds above {MAX_THRESHOLD} are not supported"
                ));
            }
            if c.window.as_secs() == 0 || c.window > MAX_WINDOW {
                return err(format!("{rule}: window must be between 1 s and 24 h"));
            }
        }
        Ok(())
    }
}

/// A business event the detector understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `users.login.success`
    LoginSuccess,
    /// `users.login.failure`
    LoginFailure,
    /// `users.signup`
    Signup,
    /// `users.delete`
    Delete,
    /// `users.password_reset`
    PasswordReset,
    /// `payment.failure`
    PaymentFailure,
    /// `activity.sensitive`
    SensitiveActivity,
}

impl EventKind {
    /// The kind of a business event name; `None` for custom events.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            crate::events::LOGIN_SUCCESS => EventKind::LoginSuccess,
            crate::events::LOGIN_FAILURE => EventKind::LoginFailure,
            crate::events::SIGNUP => EventKind::Signup,
            crate::events::USER_DELETE => EventKind::Delete,
            crate::events::PASSWORD_RESET => EventKind::PasswordReset,
            crate::events::PAYMENT_FAILURE => EventKind::PaymentFailure,
            crate::events::SENSITIVE_ACTIVITY => EventKind::SensitiveActivity,
            _ => return None,
        })
    }
}

/// One business event as the detector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The event.
    pub kind: EventKind,
    /// When it was recorded ([`Detector::now`]).
    pub time: u32,
    /// The request's client IP.
    pub ip: Option<IpAddr>,
    /// The account: the event's `usr.login`, else its `usr.id`, as exported.
    pub account: Option<String>,
    /// The event's `usr.id` as exported (the deleted account, the user who logged in, …).
    pub user_id: Option<String>,
    /// `exists` of a password reset.
    pub exists: Option<bool>,
    /// `name` of a sensitive activity.
    pub name: Option<String>,
    /// `required_role` of a sensitive activity.
    pub required_role: Option<String>,
    /// The request's user agent (only copied into signals).
    pub user_agent: Option<String>,
    /// The request's trace id (only copied into signals).
    pub trace_id: Option<u128>,
}

impl Observation {
    /// An event with no inputs yet.
    pub fn new(kind: EventKind, time: u32) -> Self {
        Self {
            kind,
            time,
            ip: None,
            account: None,
            user_id: None,
            exists: None,
            name: None,
            required_role: None,
            user_agent: None,
            trace_id: None,
        }
    }

    /// The observation for a recorded business event, read from its exported tags
    /// (`appsec.events.<name>.usr.login`, `.usr.id`, `.exists`, `.name`, `.required_role`);
    /// `None` for events no rule watches.
    pub fn from_event_tags<K: AsRef<str>>(name: &str, tags: &[(K, String)], time: u32) -> Option<Self> {
        let kind = EventKind::from_name(name)?;
        let get = |suffix: &str| {
            tags.iter()
                .rev()
                .find(|(k, v)| {
                    !v.is_empty()
                        && k.as_ref()
                            .strip_prefix("appsec.events.")
                            .and_then(|rest| rest.strip_prefix(name))
                            .and_then(|rest| rest.strip_prefix('.'))
                            == Some(suffix)
                })
                .map(|(_, v)| v.clone())
        };
        let mut obs = Self::new(kind, time);
        obs.user_id = get("usr.id");
        obs.account = get("usr.login").or_else(|| obs.user_id.clone());
        match kind {
            EventKind::PasswordReset => {
                obs.exists = get("exists").and_then(|v| match v.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                });
            }
            EventKind::SensitiveActivity => {
                obs.name = get("name");
                obs.required_role = get("required_role");
            }
            _ => {}
        }
        Some(obs)
    }

    /// Whether the privilege rules must look at this event when its root closes
    /// (`activity.sensitive` with `required_role` = `admin`, case-sensitive).
    pub fn needs_privilege_check(&self) -> bool {
        self.kind == EventKind::SensitiveActivity && self.required_role.as_deref() == Some("admin")
    }
}

/// What a signal asks the layer to do beyond reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Block this client IP for `duration`.
    BlockIp {
        /// The IP.
        ip: IpAddr,
        /// How long.
        duration: Duration,
    },
    /// Block this user id for `duration`.
    BlockUser {
        /// The `usr.id` (as exported).
        user_id: String,
        /// How long.
        duration: Duration,
    },
}

/// A security signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// The rule.
    pub rule: RuleId,
    /// Its severity.
    pub severity: Severity,
    /// What the key is.
    pub key_kind: KeyKind,
    /// The key: IP text, the account as exported, `ip name`, or the activity name.
    pub key: String,
    /// Qualifying events inside the window (for the distinct rules: the events seen for the key).
    pub count: u32,
    /// Distinct values inside the window (accounts, deleted ids, reset targets); 0 if none.
    pub distinct: u32,
    /// The rule's window.
    pub window: Duration,
    /// The oldest counted event, in seconds since the detector started.
    pub first_seen: u32,
    /// The newest counted event, in seconds since the detector started.
    pub last_seen: u32,
    /// Whether this is the critical escalation of an open signal.
    pub escalation: bool,
    /// The account of the login success that escalated the signal.
    pub account: Option<String>,
    /// The request's user agent.
    pub user_agent: Option<String>,
    /// The trace id of the request that raised the signal.
    pub trace_id: Option<u128>,
    /// The actions the rule's configuration asks for.
    pub actions: Vec<Action>,
}

/// Time stamps kept in the rings.
trait Stamp: Copy {
    fn time(&self) -> u32;
}

impl Stamp for u32 {
    fn time(&self) -> u32 {
        *self
    }
}

impl Stamp for (u32, u32) {
    fn time(&self) -> u32 {
        self.0
    }
}

/// The last `cap` time stamps of a key, sorted (exact sliding log).
#[derive(Debug)]
struct Ring<T> {
    items: VecDeque<T>,
}

impl<T: Stamp> Ring<T> {
    fn new(cap: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(cap),
        }
    }

    /// Inserts in time order, dropping the oldest beyond `cap`. An entry older than the oldest
    /// of a full ring cannot change any outcome and is not kept.
    fn push(&mut self, item: T, cap: usize) {
        let t = item.time();
        if self.items.len() >= cap {
            if self.items.front().is_some_and(|o| t < o.time()) {
                return;
            }
            // Make room first, so the ring never grows beyond its capacity.
            while self.items.len() >= cap {
                self.items.pop_front();
            }
        }
        if self.items.back().map_or(true, |last| last.time() <= t) {
            // In order: the common case.
            self.items.push_back(item);
        } else {
            let at = self.items.partition_point(|x| x.time() <= t);
            self.items.insert(at, item);
        }
    }

    /// `cap` entries spanning less than `window`: more than `cap - 1` events inside one window.
    fn full_within(&self, cap: usize, window: u32) -> bool {
        match (self.items.front(), self.items.back()) {
            (Some(first), Some(last)) => self.items.len() >= cap && last.time() - first.time() < window,
            _ => false,
        }
    }

    fn count_within(&self, now: u32, window: u32) -> u32 {
        let n = self
            .items
            .iter()
            .filter(|x| now.saturating_sub(x.time()) < window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn first_within(&self, now: u32, window: u32) -> u32 {
        self.items
            .iter()
            .find(|x| now.saturating_sub(x.time()) < window)
            .map_or(now, Stamp::time)
    }

    fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>()
    }
}

/// At most `cap` distinct hashed values with their last sighting.
#[derive(Debug, Default)]
struct Distinct {
    items: Vec<(u64, u32)>,
}

impl Distinct {
    fn observe(&mut self, value: u64, now: u32, window: u32, cap: usize) {
        self.items.retain(|(_, seen)| now.saturating_sub(*seen) < window);
        if let Some(slot) = self.items.iter_mut().find(|(v, _)| *v == value) {
            slot.1 = slot.1.max(now);
            return;
        }
        if self.items.len() >= cap {
            if let Some(oldest) = (0..self.items.len()).min_by_key(|i| self.items[*i].1) {
                self.items.swap_remove(oldest);
            }
        }
        self.items.push((value, now));
    }

    fn len_within(&self, now: u32, window: u32) -> u32 {
        let n = self
            .items
            .iter()
            .filter(|(_, seen)| now.saturating_sub(*seen) < window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

/// An open signal of one (rule, key).
#[derive(Debug)]
struct Open {
    opened: u32,
    expires: u32,
    escalated: bool,
    key: String,
}

impl Open {
    fn is_open(&self, now: u32, max: u32) -> bool {
        now < self.expires && now.saturating_sub(self.opened) < max
    }
}

/// A table entry: the rule's state for one key, and up to two open signals.
#[derive(Debug)]
struct Slot<S> {
    state: S,
    updated: u32,
    signals: [Option<Box<Open>>; 2],
}

impl<S> Slot<S> {
    fn has_open(&self, now: u32, max: u32) -> bool {
        self.signals.iter().flatten().any(|o| o.is_open(now, max))
    }

    fn open_since(&self) -> u32 {
        self.signals
            .iter()
            .flatten()
            .map(|o| o.opened)
            .min()
            .unwrap_or(u32::MAX)
    }

    /// A match at `now`: opens signal `i` (returns `true`) or keeps an open one alive.
    fn matched(&mut self, i: usize, now: u32, window: u32, max: u32, key: impl FnOnce() -> String) -> bool {
        match &mut self.signals[i] {
            Some(open) if open.is_open(now, max) => {
                open.expires = open.expires.max(now.saturating_add(window));
                false
            }
            slot => {
                let mut key = key();
                truncate(&mut key, MAX_KEY_TEXT);
                key.shrink_to_fit();
                *slot = Some(Box::new(Open {
                    opened: now,
                    expires: now.saturating_add(window),
                    escalated: false,
                    key,
                }));
                true
            }
        }
    }
}

/// Heap bytes a rule state owns (for the memory figures).
trait HeapSize {
    fn heap_bytes(&self) -> usize;
}

/// Keys are already keyed 64-bit hashes: the maps use them as they are.
#[derive(Default)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<S> = HashMap<u64, Slot<S>, std::hash::BuildHasherDefault<PreHashed>>;

/// How often a shard may be swept, in seconds.
const SWEEP_EVERY: u32 = 5;

#[derive(Debug)]
struct Shard<S> {
    map: KeyMap<S>,
    last_sweep: Option<u32>,
}

/// One rule's bounded, sharded table.
#[derive(Debug)]
struct Table<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    per_shard: usize,
    window: u32,
    max_signal: u32,
}

/// What an access to a table reports besides its result.
#[derive(Default)]
struct Evicted {
    open_signal: bool,
}

/// Shards of a table of `max_keys` keys: 16, or one below 1,024 keys (so small bounds are
/// exact).
fn shard_count(max_keys: usize) -> usize {
    if max_keys >= 1024 {
        16
    } else {
        1
    }
}

impl<S: HeapSize> Table<S> {
    fn new(max_keys: usize, window: u32, max_signal: u32) -> Self {
        let shards = shard_count(max_keys);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: KeyMap::default(),
                        last_sweep: None,
                    })
                })
                .collect(),
            per_shard: (max_keys / shards).max(1),
            window,
            max_signal,
        }
    }

    /// The shard of a key: bits the map itself does not use for its buckets or tags.
    fn shard(&self, key: u64) -> &Mutex<Shard<S>> {
        let len = self.shards.len() as u64;
        &self.shards[usize::try_from((key >> 32) % len).unwrap_or(0)]
    }

    /// Runs `f` on the key's slot, creating it with `init` (after a sweep or an eviction when
    /// the shard is full).
    fn upsert<R>(
        &self,
        key: u64,
        hash: u64,
        now: u32,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut Slot<S>) -> R,
        evicted: &mut Evicted,
    ) -> Option<R> {
        let mut shard = self.shard(hash).lock().ok()?;
        if !shard.map.contains_key(&key) {
            if shard
                .last_sweep
                .map_or(true, |at| now.saturating_sub(at) >= SWEEP_EVERY)
            {
                shard.last_sweep = Some(now);
                let (window, max) = (self.window, self.max_signal);
                shard
                    .map
                    .retain(|_, slot| now.saturating_sub(slot.updated) < window || slot.has_open(now, max));
            }
            if shard.map.len() >= self.per_shard {
                self.evict_one(&mut shard.map, now, evicted);
            }
            shard.map.insert(
                key,
                Slot {
                    state: init(),
                    updated: now,
                    signals: [None, None],
                },
            );
        }
        let slot = shard.map.get_mut(&key)?;
        slot.updated = slot.updated.max(now);
        Some(f(slot))
    }

    /// Evicts the least recently updated key without an open signal; only if every key has
    /// one, the key with the oldest signal.
    fn evict_one(&self, map: &mut KeyMap<S>, now: u32, evicted: &mut Evicted) {
        let max = self.max_signal;
        let quiet = map
            .iter()
            .filter(|(_, s)| !s.has_open(now, max))
            .min_by_key(|(_, s)| s.updated)
            .map(|(k, _)| *k);
        let victim = quiet.or_else(|| {
            evicted.open_signal = true;
            map.iter().min_by_key(|(_, s)| s.open_since()).map(|(k, _)| *k)
        });
        if let Some(victim) = victim {
            map.remove(&victim);
        }
    }

    /// Runs `f` on the key's slot if it exists.
    fn existing<R>(&self, key: u64, hash: u64, f: impl FnOnce(&mut Slot<S>) -> R) -> Option<R> {
        let mut shard = self.shard(hash).lock().ok()?;
        shard.map.get_mut(&key).map(f)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// Bytes used now: buckets (key, slot, control byte), rule state, open signals.
    fn memory(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map(|s| {
                        let buckets = buckets_for(s.map.capacity());
                        let heap: usize = s
                            .map
                            .values()
                            .map(|slot| {
                                slot.state.heap_bytes()
                                    + slot
                                        .signals
                                        .iter()
                                        .flatten()
                                        .map(|o| std::mem::size_of::<Open>() + o.key.capacity())
                                        .sum::<usize>()
                            })
                            .sum();
                        buckets * (std::mem::size_of::<(u64, Slot<S>)>() + 1) + heap
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Buckets a `HashMap` of this capacity allocates (hashbrown: load factor 7/8, power of two).
fn buckets_for(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else if capacity < 8 {
        if capacity < 4 {
            4
        } else {
            8
        }
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}

/// Key text capacity of an IP-keyed signal (an IPv6 address is at most 39 bytes).
const IP_KEY_TEXT: usize = 64;

/// The worst-case bytes of one table: full shards, every key with its largest state and
/// `signals` open signals whose key text takes `key_text` bytes.
fn table_bound<S>(max_keys: usize, state_heap: usize, signals: usize, key_text: usize) -> usize {
    let shards = shard_count(max_keys);
    let per_shard = (max_keys / shards).max(1);
    // A map holding `per_shard` keys may have grown to the next capacity step.
    let buckets = buckets_for(per_shard * 8 / 7 + 1);
    let per_key_heap = state_heap + signals * (std::mem::size_of::<Open>() + key_text);
    shards * (buckets * (std::mem::size_of::<(u64, Slot<S>)>() + 1) + per_shard * per_key_heap)
        + shards * std::mem::size_of::<Mutex<Shard<S>>>()
}

/// Credential stuffing per IP: failure times and distinct accounts.
#[derive(Debug)]
struct StuffingState {
    failures: Ring<u32>,
    accounts: Distinct,
}

/// Brute force per account: failure times with the hashed IP of each failure.
#[derive(Debug)]
struct BruteForceState {
    failures: Ring<(u32, u32)>,
}

#[derive(Debug)]
struct RateState {
    events: Ring<u32>,
}

#[derive(Debug)]
struct DistinctState {
    values: Distinct,
    events: u32,
}

#[derive(Debug)]
struct ResetState {
    existing: Distinct,
    missing: Distinct,
    events: u32,
}

impl HeapSize for StuffingState {
    fn heap_bytes(&self) -> usize {
        self.failures.heap_bytes() + self.accounts.heap_bytes()
    }
}
impl HeapSize for BruteForceState {
    fn heap_bytes(&self) -> usize {
        self.failures.heap_bytes()
    }
}
impl HeapSize for RateState {
    fn heap_bytes(&self) -> usize {
        self.events.heap_bytes()
    }
}
impl HeapSize for DistinctState {
    fn heap_bytes(&self) -> usize {
        self.values.heap_bytes()
    }
}
impl HeapSize for ResetState {
    fn heap_bytes(&self) -> usize {
        self.existing.heap_bytes() + self.missing.heap_bytes()
    }
}

/// A ring's allocation: `with_capacity(n)`, never grown.
fn ring_bytes<T>(n: usize) -> usize {
    n * std::mem::size_of::<T>()
}

/// A distinct set's allocation for `n` items (a `Vec` grown by doubling from 4).
fn vec_bytes<T>(n: usize) -> usize {
    n.next_power_of_two().max(4) * std::mem::size_of::<T>()
}

struct Tables {
    stuffing: Table<StuffingState>,
    brute_force: Table<BruteForceState>,
    sensitive: Table<RateState>,
    signup: Table<RateState>,
    deletion: Table<DistinctState>,
    reset_enum: Table<ResetState>,
    reset_bf: Table<RateState>,
    payment: Table<RateState>,
}

/// The detector: rules, tables, and the clock.
pub struct Detector {
    config: DetectionConfig,
    clock: Arc<dyn Clock>,
    start: Duration,
    hasher: foldhash::quality::RandomState,
    tables: Tables,
    evicted_open_signal: AtomicBool,
    evicted_open_signal_reported: AtomicBool,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("config", &self.config)
            .field("tracked_keys", &self.tracked_keys())
            .finish_non_exhaustive()
    }
}

/// The 32 bits of an IP's key kept with each brute-force failure; never 0, so it cannot match
/// a failure without an IP.
fn ip_hash32(ip_key: u64) -> u32 {
    (ip_key as u32) | 1
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn cap(threshold: u32) -> usize {
    usize::try_from(threshold).unwrap_or(usize::MAX).saturating_add(1)
}

impl Detector {
    /// A detector with `config` (use [`DetectionConfig::validate`] first; invalid values are
    /// clamped), timed by `clock`.
    pub fn new(config: DetectionConfig, clock: Arc<dyn Clock>) -> Self {
        let max_signal = secs(config.max_signal_duration).max(1);
        let keys = config.max_keys.max(1);
        let window = |rule: RuleId| secs(config.rule(rule).window).max(1);
        let tables = Tables {
            stuffing: Table::new(keys, window(RuleId::CredentialStuffing), max_signal),
            brute_force: Table::new(keys, window(RuleId::BruteForce), max_signal),
            sensitive: Table::new(keys, window(RuleId::SensitiveActivityRate), max_signal),
            signup: Table::new(keys, window(RuleId::SignupRate), max_signal),
            deletion: Table::new(keys, window(RuleId::AccountDeletion), max_signal),
            reset_enum: Table::new(keys, window(RuleId::PasswordResetEnumeration), max_signal),
            reset_bf: Table::new(keys, window(RuleId::PasswordResetBruteForce), max_signal),
            payment: Table::new(keys, window(RuleId::PaymentFailures), max_signal),
        };
        let start = clock.now();
        Self {
            config,
            clock,
            start,
            hasher: foldhash::quality::RandomState::default(),
            tables,
            evicted_open_signal: AtomicBool::new(false),
            evicted_open_signal_reported: AtomicBool::new(false),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectionConfig {
        &self.config
    }

    /// Seconds since the detector started, on its clock (saturating).
    pub fn now(&self) -> u32 {
        secs(self.clock.now().saturating_sub(self.start))
    }

    /// Keys tracked now, over all tables.
    pub fn tracked_keys(&self) -> usize {
        let t = &self.tables;
        t.stuffing.len()
            + t.brute_force.len()
            + t.sensitive.len()
            + t.signup.len()
            + t.deletion.len()
            + t.reset_enum.len()
            + t.reset_bf.len()
            + t.payment.len()
    }

    /// Bytes the tables use now (buckets, rule state, open signals; allocator overhead aside).
    pub fn memory_usage(&self) -> usize {
        let t = &self.tables;
        t.stuffing.memory()
            + t.brute_force.memory()
            + t.sensitive.memory()
            + t.signup.memory()
            + t.deletion.memory()
            + t.reset_enum.memory()
            + t.reset_bf.memory()
            + t.payment.memory()
    }

    /// The most bytes the tables can use with `config`: every table full, every key with its
    /// largest state and open signals (allocator overhead aside). With the defaults this is
    /// about 39 MiB (40.5 MB); it scales linearly with `max_keys`.
    pub fn memory_bound(config: &DetectionConfig) -> usize {
        let keys = config.max_keys.max(1);
        let c = |rule: RuleId| cap(config.rule(rule).threshold);
        let d = cap(config.rule(RuleId::CredentialStuffing).distinct);
        let (ip, text) = (IP_KEY_TEXT, MAX_KEY_TEXT);
        table_bound::<StuffingState>(
            keys,
            ring_bytes::<u32>(c(RuleId::CredentialStuffing)) + vec_bytes::<(u64, u32)>(d),
            1,
            ip,
        ) + table_bound::<BruteForceState>(keys, ring_bytes::<(u32, u32)>(c(RuleId::BruteForce)), 1, text)
            + table_bound::<RateState>(keys, ring_bytes::<u32>(c(RuleId::SensitiveActivityRate)), 1, text)
            + table_bound::<RateState>(keys, ring_bytes::<u32>(c(RuleId::SignupRate)), 1, ip)
            + table_bound::<DistinctState>(keys, vec_bytes::<(u64, u32)>(c(RuleId::AccountDeletion)), 1, ip)
            + table_bound::<ResetState>(
                keys,
                2 * vec_bytes::<(u64, u32)>(c(RuleId::PasswordResetEnumeration)),
                2,
                ip,
            )
            + table_bound::<RateState>(
                keys,
                ring_bytes::<u32>(c(RuleId::PasswordResetBruteForce)),
                1,
                text,
            )
            + table_bound::<RateState>(keys, ring_bytes::<u32>(c(RuleId::PaymentFailures)), 1, ip)
    }

    /// `true` once after a table had to evict a key with an open signal (every key had one):
    /// report it, once.
    pub fn take_eviction_notice(&self) -> bool {
        self.evicted_open_signal.load(Ordering::Relaxed)
            && !self.evicted_open_signal_reported.swap(true, Ordering::Relaxed)
    }

    fn hash<T: Hash + ?Sized>(&self, value: &T) -> u64 {
        self.hasher.hash_one(value)
    }

    /// The counting form of an account: trimmed, lowercase, hashed.
    fn account_hash(&self, account: &str) -> u64 {
        let trimmed = account.trim();
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) || !trimmed.is_ascii() {
            self.hash(trimmed.to_lowercase().as_str())
        } else {
            self.hash(trimmed)
        }
    }

    fn signal(
        &self,
        rule: RuleId,
        severity: Severity,
        key_kind: KeyKind,
        key: String,
        obs: &Observation,
    ) -> Signal {
        Signal {
            rule,
            severity,
            key_kind,
            key,
            count: 1,
            distinct: 0,
            window: self.config.rule(rule).window,
            first_seen: obs.time,
            last_seen: obs.time,
            escalation: false,
            account: None,
            user_agent: obs.user_agent.clone(),
            trace_id: obs.trace_id,
            actions: Vec::new(),
        }
    }

    fn block_ip(&self, rule: RuleId, ip: Option<IpAddr>, signal: &mut Signal) {
        if let (true, Some(ip)) = (self.config.rule(rule).block_ip, ip) {
            signal.actions.push(Action::BlockIp {
                ip,
                duration: self.config.block_duration,
            });
        }
    }

    fn block_user(&self, rule: RuleId, user_id: Option<&String>, signal: &mut Signal) {
        if let (true, Some(user_id)) = (self.config.rule(rule).block_user, user_id) {
            signal.actions.push(Action::BlockUser {
                user_id: user_id.clone(),
                duration: self.config.block_duration,
            });
        }
    }

    fn enabled(&self, rule: RuleId) -> bool {
        self.config.rule(rule).enabled
    }

    /// Evaluates one event against the stateful rules (everything but the two privilege
    /// rules, which [`Detector::privilege`] evaluates when the root closes).
    pub fn observe(&self, obs: &Observation) -> Vec<Signal> {
        let mut out = Vec::new();
        let mut evicted = Evicted::default();
        let ip = obs.ip.map(canonical_ip);
        // One keyed hash per input, shared by every table.
        let ip_key = ip.map(|ip| self.hash(&ip));
        let account_key = obs.account.as_deref().map(|a| self.account_hash(a));
        match obs.kind {
            EventKind::LoginFailure => {
                if let (Some(ip), Some(ip_key)) = (ip, ip_key) {
                    self.stuffing_failure(obs, ip, ip_key, account_key, &mut out, &mut evicted);
                }
                if let Some(account_key) = account_key {
                    self.brute_force_failure(obs, account_key, ip_key, &mut out, &mut evicted);
                }
            }
            EventKind::LoginSuccess => {
                if let (Some(ip), Some(ip_key)) = (ip, ip_key) {
                    self.stuffing_success(obs, ip, ip_key, &mut out);
                    if let Some(account_key) = account_key {
                        self.brute_force_success(obs, ip, ip_key, account_key, &mut out);
                    }
                }
            }
            EventKind::Signup => {
                if let (Some(ip), Some(ip_key)) = (ip, ip_key) {
                    self.rate(
                        RuleId::SignupRate,
                        &self.tables.signup,
                        ip_key,
                        ip_key,
                        KeyKind::Ip,
                        || ip.to_string(),
                        obs,
                        Some(ip),
                        &mut out,
                        &mut evicted,
                    );
                }
            }
            EventKind::PaymentFailure => {
                if let (Some(ip), Some(ip_key)) = (ip, ip_key) {
                    self.rate(
                        RuleId::PaymentFailures,
                        &self.tables.payment,
                        ip_key,
                        ip_key,
                        KeyKind::Ip,
                        || ip.to_string(),
                        obs,
                        Some(ip),
                        &mut out,
                        &mut evicted,
                    );
                }
            }
            EventKind::SensitiveActivity => {
                if let (Some(ip), Some(name)) = (ip, obs.name.as_deref()) {
                    let key = self.hash(&(ip, name));
                    self.rate(
                        RuleId::SensitiveActivityRate,
                        &self.tables.sensitive,
                        key,
                        key,
                        KeyKind::IpAndName,
                        || format!("{ip} {name}"),
                        obs,
                        Some(ip),
                        &mut out,
                        &mut evicted,
                    );
                }
            }
            EventKind::Delete => {
                if let (Some(ip), Some(ip_key), Some(user_id)) = (ip, ip_key, obs.user_id.as_deref()) {
                    self.deletion(obs, ip, ip_key, user_id, &mut out, &mut evicted);
                }
            }
            EventKind::PasswordReset => {
                if let (Some(ip), Some(ip_key), Some(account_key)) = (ip, ip_key, account_key) {
                    self.reset_enumeration(obs, ip, ip_key, account_key, &mut out, &mut evicted);
                }
                if let (Some(account), Some(key)) = (obs.account.as_deref(), account_key) {
                    self.rate(
                        RuleId::PasswordResetBruteForce,
                        &self.tables.reset_bf,
                        key,
                        key,
                        KeyKind::Account,
                        || account.to_owned(),
                        obs,
                        None,
                        &mut out,
                        &mut evicted,
                    );
                }
            }
        }
        if evicted.open_signal {
            self.evicted_open_signal.store(true, Ordering::Relaxed);
        }
        out
    }

    /// The stateless privilege rules for an `activity.sensitive` event, against the trace's
    /// merged identity when its root closes: `role` is the public `usr.role`, `has_user_id`
    /// whether the trace has a `usr.id`; `disabled` is the disabled mode (the IP rule does not
    /// run then).
    pub fn privilege(
        &self,
        obs: &Observation,
        role: Option<&str>,
        has_user_id: bool,
        disabled: bool,
    ) -> Vec<Signal> {
        let mut out = Vec::new();
        if !obs.needs_privilege_check() {
            return out;
        }
        let key = obs.name.clone().unwrap_or_default();
        if self.enabled(RuleId::PrivilegeViolationUser) && role.is_some_and(|r| r != "admin") {
            out.push(self.signal(
                RuleId::PrivilegeViolationUser,
                Severity::Medium,
                KeyKind::Event,
                key.clone(),
                obs,
            ));
        }
        if self.enabled(RuleId::PrivilegeViolationIp) && !has_user_id && !disabled {
            out.push(self.signal(
                RuleId::PrivilegeViolationIp,
                Severity::Medium,
                KeyKind::Event,
                key,
                obs,
            ));
        }
        out
    }

    fn stuffing_failure(
        &self,
        obs: &Observation,
        ip: IpAddr,
        ip_key: u64,
        account: Option<u64>,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let rule = RuleId::CredentialStuffing;
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, d, w) = (cap(c.threshold), cap(c.distinct), secs(c.window).max(1));
        let max = self.tables.stuffing.max_signal;
        let t = obs.time;
        let fired = self.tables.stuffing.upsert(
            ip_key,
            ip_key,
            t,
            || StuffingState {
                failures: Ring::new(n),
                accounts: Distinct::default(),
            },
            |slot| {
                slot.state.failures.push(t, n);
                if let Some(account) = account {
                    slot.state.accounts.observe(account, t, w, d);
                }
                let distinct = slot.state.accounts.len_within(t, w);
                let matched = slot.state.failures.full_within(n, w) && distinct as usize >= d;
                (matched && slot.matched(0, t, w, max, || ip.to_string())).then(|| {
                    (
                        slot.state.failures.count_within(t, w),
                        distinct,
                        slot.state.failures.first_within(t, w),
                    )
                })
            },
            evicted,
        );
        if let Some(Some((count, distinct, first))) = fired {
            let mut signal = self.signal(rule, Severity::Low, KeyKind::Ip, ip.to_string(), obs);
            (signal.count, signal.distinct, signal.first_seen) = (count, distinct, first);
            self.block_ip(rule, Some(ip), &mut signal);
            out.push(signal);
        }
    }

    fn stuffing_success(&self, obs: &Observation, ip: IpAddr, ip_key: u64, out: &mut Vec<Signal>) {
        let rule = RuleId::CredentialStuffing;
        if !self.enabled(rule) {
            return;
        }
        let (t, max) = (obs.time, self.tables.stuffing.max_signal);
        let w = secs(self.config.rule(rule).window).max(1);
        let escalated = self.tables.stuffing.existing(ip_key, ip_key, |slot| {
            let open = slot.signals[0]
                .as_mut()
                .filter(|o| o.is_open(t, max) && !o.escalated)?;
            open.escalated = true;
            Some((
                slot.state.failures.count_within(t, w),
                slot.state.accounts.len_within(t, w),
                slot.state.failures.first_within(t, w),
            ))
        });
        if let Some(Some((count, distinct, first))) = escalated {
            let mut signal = self.signal(rule, Severity::Critical, KeyKind::Ip, ip.to_string(), obs);
            (signal.count, signal.distinct, signal.first_seen) = (count, distinct, first);
            signal.escalation = true;
            signal.account = obs.account.clone();
            self.block_ip(rule, Some(ip), &mut signal);
            self.block_user(rule, obs.user_id.as_ref(), &mut signal);
            out.push(signal);
        }
    }

    fn brute_force_failure(
        &self,
        obs: &Observation,
        key: u64,
        ip_key: Option<u64>,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let rule = RuleId::BruteForce;
        let Some(account) = obs.account.as_deref() else {
            return;
        };
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, w) = (cap(c.threshold), secs(c.window).max(1));
        let ip_hash = ip_key.map_or(0, ip_hash32);
        let (t, max) = (obs.time, self.tables.brute_force.max_signal);
        let fired = self.tables.brute_force.upsert(
            key,
            key,
            t,
            || BruteForceState {
                failures: Ring::new(n),
            },
            |slot| {
                slot.state.failures.push((t, ip_hash), n);
                let matched = slot.state.failures.full_within(n, w);
                (matched && slot.matched(0, t, w, max, || account.to_owned())).then(|| {
                    (
                        slot.state.failures.count_within(t, w),
                        slot.state.failures.first_within(t, w),
                    )
                })
            },
            evicted,
        );
        if let Some(Some((count, first))) = fired {
            let mut signal = self.signal(rule, Severity::Low, KeyKind::Account, account.to_owned(), obs);
            (signal.count, signal.first_seen) = (count, first);
            truncate(&mut signal.key, MAX_KEY_TEXT);
            out.push(signal);
        }
    }

    fn brute_force_success(
        &self,
        obs: &Observation,
        ip: IpAddr,
        ip_key: u64,
        key: u64,
        out: &mut Vec<Signal>,
    ) {
        let rule = RuleId::BruteForce;
        if !self.enabled(rule) {
            return;
        }
        let w = secs(self.config.rule(rule).window).max(1);
        let ip_hash = ip_hash32(ip_key);
        let (t, max) = (obs.time, self.tables.brute_force.max_signal);
        let escalated = self.tables.brute_force.existing(key, key, |slot| {
            let contributed = slot
                .state
                .failures
                .items
                .iter()
                .any(|(at, h)| *h == ip_hash && t.saturating_sub(*at) < w);
            let open = slot.signals[0]
                .as_mut()
                .filter(|o| contributed && o.is_open(t, max) && !o.escalated)?;
            open.escalated = true;
            Some((
                open.key.clone(),
                slot.state.failures.count_within(t, w),
                slot.state.failures.first_within(t, w),
            ))
        });
        if let Some(Some((key_text, count, first))) = escalated {
            let mut signal = self.signal(rule, Severity::Critical, KeyKind::Account, key_text, obs);
            (signal.count, signal.first_seen) = (count, first);
            signal.escalation = true;
            signal.account = obs.account.clone();
            self.block_ip(rule, Some(ip), &mut signal);
            self.block_user(rule, obs.user_id.as_ref(), &mut signal);
            out.push(signal);
        }
    }

    /// "More than N events in W" for one key.
    #[allow(clippy::too_many_arguments)]
    fn rate(
        &self,
        rule: RuleId,
        table: &Table<RateState>,
        key: u64,
        hash: u64,
        key_kind: KeyKind,
        key_text: impl Fn() -> String,
        obs: &Observation,
        ip: Option<IpAddr>,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, w) = (cap(c.threshold), secs(c.window).max(1));
        let (t, max) = (obs.time, table.max_signal);
        let fired = table.upsert(
            key,
            hash,
            t,
            || RateState { events: Ring::new(n) },
            |slot| {
                slot.state.events.push(t, n);
                let opened = slot.state.events.full_within(n, w) && slot.matched(0, t, w, max, &key_text);
                opened.then(|| {
                    (
                        slot.state.events.count_within(t, w),
                        slot.state.events.first_within(t, w),
                    )
                })
            },
            evicted,
        );
        if let Some(Some((count, first))) = fired {
            let mut signal = self.signal(rule, Severity::Medium, key_kind, key_text(), obs);
            (signal.count, signal.first_seen) = (count, first);
            truncate(&mut signal.key, MAX_KEY_TEXT);
            self.block_ip(rule, ip, &mut signal);
            out.push(signal);
        }
    }

    fn deletion(
        &self,
        obs: &Observation,
        ip: IpAddr,
        ip_key: u64,
        user_id: &str,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let rule = RuleId::AccountDeletion;
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, w) = (cap(c.threshold), secs(c.window).max(1));
        let (t, max) = (obs.time, self.tables.deletion.max_signal);
        let value = self.hash(user_id);
        let fired = self.tables.deletion.upsert(
            ip_key,
            ip_key,
            t,
            || DistinctState {
                values: Distinct::default(),
                events: 0,
            },
            |slot| {
                slot.state.events = slot.state.events.saturating_add(1);
                slot.state.values.observe(value, t, w, n);
                let distinct = slot.state.values.len_within(t, w);
                (distinct as usize >= n && slot.matched(0, t, w, max, || ip.to_string()))
                    .then_some((slot.state.events, distinct))
            },
            evicted,
        );
        if let Some(Some((count, distinct))) = fired {
            let mut signal = self.signal(rule, Severity::Medium, KeyKind::Ip, ip.to_string(), obs);
            (signal.count, signal.distinct) = (count, distinct);
            self.block_ip(rule, Some(ip), &mut signal);
            out.push(signal);
        }
    }

    fn reset_enumeration(
        &self,
        obs: &Observation,
        ip: IpAddr,
        ip_key: u64,
        value: u64,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let rule = RuleId::PasswordResetEnumeration;
        let Some(exists) = obs.exists else {
            return;
        };
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, w) = (cap(c.threshold), secs(c.window).max(1));
        let (t, max) = (obs.time, self.tables.reset_enum.max_signal);
        let fired = self.tables.reset_enum.upsert(
            ip_key,
            ip_key,
            t,
            || ResetState {
                existing: Distinct::default(),
                missing: Distinct::default(),
                events: 0,
            },
            |slot| {
                slot.state.events = slot.state.events.saturating_add(1);
                let (set, index) = if exists {
                    (&mut slot.state.existing, 0)
                } else {
                    (&mut slot.state.missing, 1)
                };
                set.observe(value, t, w, n);
                let distinct = set.len_within(t, w);
                (distinct as usize >= n && slot.matched(index, t, w, max, || ip.to_string()))
                    .then_some((slot.state.events, distinct))
            },
            evicted,
        );
        if let Some(Some((count, distinct))) = fired {
            let severity = if exists { Severity::Medium } else { Severity::Low };
            let mut signal = self.signal(rule, severity, KeyKind::Ip, ip.to_string(), obs);
            (signal.count, signal.distinct) = (count, distinct);
            self.block_ip(rule, Some(ip), &mut signal);
            out.push(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::ManualClock;

    #[test]
    fn rings_keep_the_last_entries_sorted_and_match_on_span() {
        let mut ring = Ring::<u32>::new(3);
        for t in [10, 20, 30] {
            ring.push(t, 3);
        }
        assert!(ring.full_within(3, 21) && !ring.full_within(3, 20));
        // A deferred, older entry goes in time order; one older than a full ring's oldest is
        // dropped.
        ring.push(15, 3);
        assert_eq!(ring.items.iter().copied().collect::<Vec<_>>(), vec![15, 20, 30]);
        ring.push(1, 3);
        assert_eq!(ring.items.iter().copied().collect::<Vec<_>>(), vec![15, 20, 30]);
        assert_eq!(ring.count_within(30, 11), 2);
    }

    #[test]
    fn distinct_sets_forget_stale_values_and_evict_the_oldest() {
        let mut set = Distinct::default();
        for (v, t) in [(1, 0), (2, 1), (3, 2)] {
            set.observe(v, t, 10, 3);
        }
        set.observe(2, 5, 10, 3);
        assert_eq!(set.len_within(5, 10), 3);
        set.observe(4, 6, 10, 3);
        assert!(
            !set.items.iter().any(|(v, _)| *v == 1),
            "the oldest (1) was evicted"
        );
        assert_eq!(set.len_within(12, 10), 2, "3 (seen at 2) is stale at 12");
    }

    #[test]
    fn the_documented_memory_figure_holds_for_the_defaults() {
        let bound = Detector::memory_bound(&DetectionConfig::default());
        // docs/detection.md and the `detection` module docs quote this figure.
        assert!(bound < 40 << 20, "{bound} bytes");
        println!("worst case with the defaults: {bound} bytes");
        let small = DetectionConfig {
            max_keys: 1000,
            ..DetectionConfig::default()
        };
        assert!(Detector::memory_bound(&small) < bound / 5);
    }

    #[test]
    fn long_account_text_is_cut_and_does_not_keep_its_allocation() {
        let detector = Detector::new(DetectionConfig::default(), Arc::new(ManualClock::new()));
        let long = "a".repeat(100_000);
        let mut signals = Vec::new();
        for _ in 0..41 {
            let mut obs = Observation::new(EventKind::LoginFailure, 0);
            obs.account = Some(long.clone());
            signals = detector.observe(&obs);
        }
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0].key.len(), MAX_KEY_TEXT);
        assert!(detector.memory_usage() < 10_000, "{}", detector.memory_usage());
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut config = DetectionConfig::default();
        config.rule_mut(RuleId::SignupRate).window = Duration::ZERO;
        let error = config.validate().unwrap_err();
        assert!(error.message().contains("bl-signup-ratelimit"));
        assert_eq!(error.kind(), DetectionConfigErrorKind::InvalidValue);
        let mut config = DetectionConfig::default();
        config.rule_mut(RuleId::BruteForce).threshold = MAX_THRESHOLD + 1;
        assert!(config.validate().is_err());
        assert_eq!(RuleId::from_id("def-000-yk4"), Some(RuleId::CredentialStuffing));
        assert_eq!(RuleId::from_id("appsec-ato-bf"), Some(RuleId::BruteForce));
        assert_eq!(RuleId::from_id("nope"), None);
    }
}

#[cfg(test)]
mod window_properties {
    use super::*;
    use crate::blocking::ManualClock;
    use proptest::prelude::*;

    /// The first event at which more than `n` events lie in `(t - w, t]`, by brute force.
    fn first_match(times: &[u32], n: usize, w: u32) -> Option<usize> {
        (0..times.len()).find(|&i| {
            let t = times[i];
            times[..=i].iter().filter(|&&e| t - e < w).count() > n
        })
    }

    proptest! {
        /// The ring detector fires exactly where a brute-force count over the whole history
        /// says the threshold is first exceeded, for any arrival pattern.
        #[test]
        fn rate_rules_fire_exactly_where_the_brute_force_count_does(
            gaps in proptest::collection::vec(0u32..120, 1..80),
            threshold in 0u32..6,
            window in 1u64..400,
        ) {
            let mut config = DetectionConfig::default();
            config.rule_mut(RuleId::PaymentFailures).threshold = threshold;
            config.rule_mut(RuleId::PaymentFailures).window = Duration::from_secs(window);
            let clock = ManualClock::new();
            let detector = Detector::new(config, Arc::new(clock.clone()));
            let mut times = Vec::new();
            let mut fired = None;
            for (i, gap) in gaps.iter().enumerate() {
                clock.advance(Duration::from_secs(u64::from(*gap)));
                let mut obs = Observation::new(EventKind::PaymentFailure, detector.now());
                obs.ip = Some("192.0.2.1".parse().unwrap());
                times.push(obs.time);
                if !detector.observe(&obs).is_empty() && fired.is_none() {
                    fired = Some(i);
                }
            }
            let expected = first_match(&times, threshold as usize, u32::try_from(window).unwrap());
            prop_assert_eq!(fired, expected);
        }
    }
}
