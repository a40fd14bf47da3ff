//! The [`Detector`]: the rules' tables, the judging of each observation, and the clock.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::config::*;
use super::signal::*;
use super::table::*;
use super::window::*;
use crate::blocking::{canonical_ip, Clock};
use crate::value::truncate;

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

/// The key of a rate rule: its keyed hash, what it is, its text for a signal (built only when
/// one opens), and the client IP a `block_ip` action blocks.
struct RateKey<'a> {
    key: u64,
    kind: KeyKind,
    text: &'a dyn Fn() -> String,
    ip: Option<IpAddr>,
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

    pub(super) fn signal(
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

    pub(super) fn block_ip(&self, rule: RuleId, ip: Option<IpAddr>, signal: &mut Signal) {
        if let (true, Some(ip)) = (self.config.rule(rule).block_ip, ip) {
            signal.actions.push(Action::BlockIp {
                ip,
                duration: self.config.block_duration,
            });
        }
    }

    pub(super) fn block_user(&self, rule: RuleId, user_id: Option<&String>, signal: &mut Signal) {
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
        let ip = ip.map(|ip| (ip, self.hash(&ip)));
        let account_key = obs.account.as_deref().map(|a| self.account_hash(a));
        match obs.kind {
            EventKind::LoginFailure => {
                if let Some((ip, ip_key)) = ip {
                    self.stuffing_failure(obs, ip, ip_key, account_key, &mut out, &mut evicted);
                }
                if let Some(account_key) = account_key {
                    let ip_key = ip.map(|(_, key)| key);
                    self.brute_force_failure(obs, account_key, ip_key, &mut out, &mut evicted);
                }
            }
            EventKind::LoginSuccess => {
                if let Some((ip, ip_key)) = ip {
                    self.stuffing_success(obs, ip, ip_key, &mut out);
                    if let Some(account_key) = account_key {
                        self.brute_force_success(obs, ip, ip_key, account_key, &mut out);
                    }
                }
            }
            EventKind::Signup | EventKind::PaymentFailure | EventKind::SensitiveActivity => {
                if let Some(ip) = ip {
                    self.observe_ip_rate(obs, ip, &mut out, &mut evicted);
                }
            }
            EventKind::Delete => {
                if let (Some((ip, ip_key)), Some(user_id)) = (ip, obs.user_id.as_deref()) {
                    self.deletion(obs, ip, ip_key, user_id, &mut out, &mut evicted);
                }
            }
            EventKind::PasswordReset => self.observe_reset(obs, ip, account_key, &mut out, &mut evicted),
        }
        if evicted.open_signal {
            self.evicted_open_signal.store(true, Ordering::Relaxed);
        }
        out
    }

    /// The password-reset rules: enumeration per IP, brute force per account.
    fn observe_reset(
        &self,
        obs: &Observation,
        ip: Option<(IpAddr, u64)>,
        account_key: Option<u64>,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        if let (Some((ip, ip_key)), Some(account_key)) = (ip, account_key) {
            self.reset_enumeration(obs, ip, ip_key, account_key, out, evicted);
        }
        if let (Some(account), Some(key)) = (obs.account.as_deref(), account_key) {
            let text = || account.to_owned();
            let key = RateKey {
                key,
                kind: KeyKind::Account,
                text: &text,
                ip: None,
            };
            self.rate(
                RuleId::PasswordResetBruteForce,
                &self.tables.reset_bf,
                key,
                obs,
                out,
                evicted,
            );
        }
    }

    /// The rate rules keyed by the client IP (`ip` with its keyed hash): signups and payment
    /// failures per IP, sensitive activities per IP and activity name.
    fn observe_ip_rate(
        &self,
        obs: &Observation,
        ip: (IpAddr, u64),
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let (ip, ip_key) = ip;
        let ip_text = || ip.to_string();
        let by_ip = |key| RateKey {
            key,
            kind: KeyKind::Ip,
            text: &ip_text,
            ip: Some(ip),
        };
        match obs.kind {
            EventKind::Signup => self.rate(
                RuleId::SignupRate,
                &self.tables.signup,
                by_ip(ip_key),
                obs,
                out,
                evicted,
            ),
            EventKind::PaymentFailure => self.rate(
                RuleId::PaymentFailures,
                &self.tables.payment,
                by_ip(ip_key),
                obs,
                out,
                evicted,
            ),
            EventKind::SensitiveActivity => {
                let Some(name) = obs.name.as_deref() else { return };
                let text = || format!("{ip} {name}");
                let key = RateKey {
                    key: self.hash(&(ip, name)),
                    kind: KeyKind::IpAndName,
                    text: &text,
                    ip: Some(ip),
                };
                self.rate(
                    RuleId::SensitiveActivityRate,
                    &self.tables.sensitive,
                    key,
                    obs,
                    out,
                    evicted,
                )
            }
            _ => {}
        }
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
    fn rate(
        &self,
        rule: RuleId,
        table: &Table<RateState>,
        key: RateKey<'_>,
        obs: &Observation,
        out: &mut Vec<Signal>,
        evicted: &mut Evicted,
    ) {
        let RateKey {
            key,
            kind: key_kind,
            text: key_text,
            ip,
        } = key;
        if !self.enabled(rule) {
            return;
        }
        let c = self.config.rule(rule);
        let (n, w) = (cap(c.threshold), secs(c.window).max(1));
        let (t, max) = (obs.time, table.max_signal);
        let fired = table.upsert(
            key,
            key,
            t,
            || RateState { events: Ring::new(n) },
            |slot| {
                slot.state.events.push(t, n);
                let opened = slot.state.events.full_within(n, w) && slot.matched(0, t, w, max, key_text);
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
