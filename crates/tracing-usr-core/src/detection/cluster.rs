//! The rules counted by several processes at once, on a shared store (the layer's Redis mode).
//!
//! An [`Observation`] becomes a [`Plan`]: one [`Step`] per rule it feeds, each naming three
//! store keys (the event log, the distinct values, the signal) and its arguments. [`SCRIPT`]
//! runs every step of a plan in one round trip, atomically, and answers one [`Outcome`] per
//! step; [`Plan::signals`] turns the outcomes into the [`Signal`]s the in-process [`Detector`]
//! would raise. The script claims a signal for the caller only when the caller's event opened
//! it (or escalated it), so one signal is raised per (rule, key) across every process.
//!
//! Pure: no I/O. Keys and stored values are HMAC-SHA-256 tags under the cluster secret
//! ([`Keyer`]), never a raw login, IP or user id.

use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{DetectionConfig, RuleId, MAX_KEY_TEXT};
use super::detector::Detector;
use super::signal::{EventKind, KeyKind, Observation, Severity, Signal};
use crate::blocking::canonical_ip;
use crate::value::truncate;

/// Bytes of HMAC kept in a tag (hex-encoded: twice as many characters).
const TAG_BYTES: usize = 16;

/// Keyed tags of logins, IPs and user ids: HMAC-SHA-256 under the cluster secret, truncated to
/// 128 bits, hex. Without the secret a tag cannot be linked to its value, even for values as
/// easy to enumerate as IPv4 addresses. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Keyer {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Keyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyer { secret: <redacted> }")
    }
}

/// What a tag is of; part of the MAC input, so equal texts of different kinds differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Domain {
    Account,
    Ip,
    User,
    IpAndName,
}

impl Keyer {
    /// A keyer for `secret` (any length; HMAC hashes a long one first).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    fn tag(&self, domain: Domain, value: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(&[domain as u8]);
        mac.update(value);
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(TAG_BYTES * 2);
        for b in &bytes[..TAG_BYTES] {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// The tag of an account, in its counting form (trimmed, lowercase), as the detector counts it.
    pub fn account(&self, account: &str) -> String {
        self.tag(Domain::Account, account.trim().to_lowercase().as_bytes())
    }

    /// The tag of a client IP (IPv4-mapped IPv6 folded to IPv4).
    pub fn ip(&self, ip: IpAddr) -> String {
        self.tag(Domain::Ip, canonical_ip(ip).to_string().as_bytes())
    }

    /// The tag of a user id, exact (case-sensitive, untrimmed), as blocks match it.
    pub fn user(&self, user_id: &str) -> String {
        self.tag(Domain::User, user_id.as_bytes())
    }

    fn ip_and_name(&self, ip: IpAddr, name: &str) -> String {
        let text = format!("{}\n{name}", canonical_ip(ip));
        self.tag(Domain::IpAndName, text.as_bytes())
    }
}

/// What a step does with its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Records the event and checks the rule's condition; opens or keeps open the signal.
    Observe,
    /// A login success: escalates an open signal that was not escalated yet.
    Escalate,
}

/// One rule's part of an observation.
#[derive(Clone, Debug)]
pub struct Step {
    /// The rule.
    pub rule: RuleId,
    /// What the script does.
    pub op: Op,
    /// The event log, distinct values and signal keys, under the plan's prefix.
    pub keys: [String; 3],
    /// Events the condition needs inside the window (0: no count condition).
    need_count: u32,
    /// Events kept in the log (0: no log).
    keep_count: u32,
    /// The distinct value this event adds (a tag), or for an escalation the value that must
    /// have been recorded inside the window; empty for none.
    value: String,
    /// Distinct values kept.
    keep_distinct: u32,
    /// Distinct values the condition needs (0: none).
    need_distinct: u32,
    window: u32,
    max_signal: u32,
    severity: Severity,
    key_kind: KeyKind,
    /// The key as a signal shows it (raw: it stays in the process).
    key_text: String,
    /// The client IP a `block_ip` action blocks.
    block_ip: Option<IpAddr>,
}

/// What the script answered for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What became of the signal.
    pub status: Status,
    /// Events inside the window.
    pub count: u32,
    /// Distinct values inside the window.
    pub distinct: u32,
    /// The oldest event inside the window, in the plan's time unit (Unix seconds).
    pub first: u64,
}

/// What became of a step's signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition does not hold (or there is nothing to escalate).
    Quiet,
    /// This event opened the signal: the caller raises it.
    Opened,
    /// The signal was open already (another process raised it); it stays open longer.
    KeptOpen,
    /// This event escalated the open signal: the caller raises the escalation.
    Escalated,
}

impl Outcome {
    /// Reads the script's four integers for one step; `None` for anything else.
    pub fn from_ints(ints: &[i64]) -> Option<Outcome> {
        let [status, count, distinct, first] = *ints else {
            return None;
        };
        let status = match status {
            0 => Status::Quiet,
            1 => Status::Opened,
            2 => Status::KeptOpen,
            3 => Status::Escalated,
            _ => return None,
        };
        Some(Outcome {
            status,
            count: u32::try_from(count).ok()?,
            distinct: u32::try_from(distinct).ok()?,
            first: u64::try_from(first).ok()?,
        })
    }
}

/// The steps of one observation, in the order [`SCRIPT`] answers them.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The steps; empty when no enabled rule watches the observation.
    pub steps: Vec<Step>,
}

fn secs(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// The rule settings a step reads, and the key names.
struct Builder<'a> {
    config: &'a DetectionConfig,
    prefix: &'a str,
    max_signal: u32,
    steps: Vec<Step>,
}

impl Builder<'_> {
    /// A step of `rule` on `key` (a tag), signal `sub` (0, or 1 for missing reset targets).
    fn step(&mut self, rule: RuleId, op: Op, key: &str, sub: u8, shape: Shape) {
        let c = self.config.rule(rule);
        if !c.enabled {
            return;
        }
        let cap = c.threshold.saturating_add(1);
        let id = rule.as_str();
        let p = self.prefix;
        let (need_count, keep_count, keep_distinct, need_distinct) = match shape.counting {
            Counting::Rate => (cap, cap, 0, 0),
            Counting::Stuffing => (
                cap,
                cap,
                c.distinct.saturating_add(1),
                c.distinct.saturating_add(1),
            ),
            Counting::Contributors => (cap, cap, cap, 0),
            Counting::Distinct => (0, cap, cap, cap),
        };
        let mut key_text = shape.text;
        truncate(&mut key_text, MAX_KEY_TEXT);
        self.steps.push(Step {
            rule,
            op,
            keys: [
                format!("{p}c:{id}:{key}"),
                format!("{p}d:{id}:{key}:{sub}"),
                format!("{p}s:{id}:{key}:{sub}"),
            ],
            need_count,
            keep_count,
            value: shape.value,
            keep_distinct,
            need_distinct,
            window: secs(c.window),
            max_signal: self.max_signal,
            severity: shape.severity,
            key_kind: shape.key_kind,
            key_text,
            block_ip: shape.block_ip,
        });
    }
}

/// How a rule counts.
#[derive(Clone, Copy)]
enum Counting {
    /// More than `threshold` events.
    Rate,
    /// More than `threshold` events and more than `distinct` distinct values.
    Stuffing,
    /// More than `threshold` events; the values (IPs) are kept to check an escalation.
    Contributors,
    /// More than `threshold` distinct values.
    Distinct,
}

struct Shape {
    counting: Counting,
    value: String,
    severity: Severity,
    key_kind: KeyKind,
    text: String,
    block_ip: Option<IpAddr>,
}

/// An observation's keys: the client IP and the account, raw (for the signal) and tagged.
struct Inputs<'a> {
    ip: Option<IpAddr>,
    ip_tag: Option<String>,
    account: Option<&'a str>,
    account_tag: Option<String>,
}

impl<'a> Inputs<'a> {
    fn new(obs: &'a Observation, keyer: &Keyer) -> Self {
        let ip = obs.ip.map(canonical_ip);
        let account = obs.account.as_deref();
        Self {
            ip,
            ip_tag: ip.map(|ip| keyer.ip(ip)),
            account,
            account_tag: account.map(|a| keyer.account(a)),
        }
    }

    /// A step keyed by the client IP, whose `block_ip` action blocks it.
    fn by_ip(&self, counting: Counting, value: String, severity: Severity) -> Shape {
        Shape {
            counting,
            value,
            severity,
            key_kind: KeyKind::Ip,
            text: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            block_ip: self.ip,
        }
    }

    /// A step keyed by the account.
    fn by_account(&self, counting: Counting, value: String, severity: Severity) -> Shape {
        Shape {
            counting,
            value,
            severity,
            key_kind: KeyKind::Account,
            text: self.account.unwrap_or_default().to_owned(),
            block_ip: None,
        }
    }
}

impl Builder<'_> {
    /// Credential stuffing per IP (the account as a distinct value), brute force per account
    /// (the IP kept to check an escalation).
    fn login_failure(&mut self, i: &Inputs<'_>) {
        if let Some(tag) = &i.ip_tag {
            let shape = i.by_ip(
                Counting::Stuffing,
                i.account_tag.clone().unwrap_or_default(),
                Severity::Low,
            );
            self.step(RuleId::CredentialStuffing, Op::Observe, tag, 0, shape);
        }
        if let Some(tag) = &i.account_tag {
            let shape = i.by_account(
                Counting::Contributors,
                i.ip_tag.clone().unwrap_or_default(),
                Severity::Low,
            );
            self.step(RuleId::BruteForce, Op::Observe, tag, 0, shape);
        }
    }

    /// The escalations: of the IP's stuffing signal, and of the account's brute-force signal
    /// when this IP contributed a failure.
    fn login_success(&mut self, i: &Inputs<'_>) {
        let Some(tag) = &i.ip_tag else { return };
        let shape = i.by_ip(Counting::Stuffing, String::new(), Severity::Critical);
        self.step(RuleId::CredentialStuffing, Op::Escalate, tag, 0, shape);
        if let Some(account_tag) = &i.account_tag {
            let mut shape = i.by_account(Counting::Contributors, tag.clone(), Severity::Critical);
            shape.block_ip = i.ip;
            self.step(RuleId::BruteForce, Op::Escalate, account_tag, 0, shape);
        }
    }

    fn ip_rate(&mut self, rule: RuleId, i: &Inputs<'_>) {
        if let Some(tag) = &i.ip_tag {
            self.step(
                rule,
                Op::Observe,
                tag,
                0,
                i.by_ip(Counting::Rate, String::new(), Severity::Medium),
            );
        }
    }

    fn sensitive_activity(&mut self, i: &Inputs<'_>, name: Option<&str>, keyer: &Keyer) {
        let (Some(ip), Some(name)) = (i.ip, name) else {
            return;
        };
        let mut shape = i.by_ip(Counting::Rate, String::new(), Severity::Medium);
        shape.key_kind = KeyKind::IpAndName;
        shape.text = format!("{ip} {name}");
        self.step(
            RuleId::SensitiveActivityRate,
            Op::Observe,
            &keyer.ip_and_name(ip, name),
            0,
            shape,
        );
    }

    fn deletion(&mut self, i: &Inputs<'_>, user_id: Option<&str>, keyer: &Keyer) {
        if let (Some(tag), Some(user_id)) = (&i.ip_tag, user_id) {
            let shape = i.by_ip(Counting::Distinct, keyer.user(user_id), Severity::Medium);
            self.step(RuleId::AccountDeletion, Op::Observe, tag, 0, shape);
        }
    }

    /// Enumeration per IP (existing and missing targets apart), brute force per account.
    fn password_reset(&mut self, i: &Inputs<'_>, exists: Option<bool>) {
        if let (Some(tag), Some(account_tag), Some(exists)) = (&i.ip_tag, &i.account_tag, exists) {
            let (severity, sub) = if exists {
                (Severity::Medium, 0)
            } else {
                (Severity::Low, 1)
            };
            let shape = i.by_ip(Counting::Distinct, account_tag.clone(), severity);
            self.step(RuleId::PasswordResetEnumeration, Op::Observe, tag, sub, shape);
        }
        if let Some(tag) = &i.account_tag {
            let shape = i.by_account(Counting::Rate, String::new(), Severity::Medium);
            self.step(RuleId::PasswordResetBruteForce, Op::Observe, tag, 0, shape);
        }
    }
}

impl Plan {
    /// The steps of `obs` under `config`, with keys under `prefix` (which holds the Redis
    /// Cluster hash tag, so every key of a plan is in one slot). The same rules and inputs as
    /// [`Detector::observe`]; the privilege rules, which keep no state, stay in process.
    pub fn new(config: &DetectionConfig, obs: &Observation, keyer: &Keyer, prefix: &str) -> Plan {
        let mut b = Builder {
            config,
            prefix,
            max_signal: secs(config.max_signal_duration),
            steps: Vec::new(),
        };
        let inputs = Inputs::new(obs, keyer);
        match obs.kind {
            EventKind::LoginFailure => b.login_failure(&inputs),
            EventKind::LoginSuccess => b.login_success(&inputs),
            EventKind::Signup => b.ip_rate(RuleId::SignupRate, &inputs),
            EventKind::PaymentFailure => b.ip_rate(RuleId::PaymentFailures, &inputs),
            EventKind::SensitiveActivity => b.sensitive_activity(&inputs, obs.name.as_deref(), keyer),
            EventKind::Delete => b.deletion(&inputs, obs.user_id.as_deref(), keyer),
            EventKind::PasswordReset => b.password_reset(&inputs, obs.exists),
        }
        Plan { steps: b.steps }
    }

    /// Every key of the plan, in the order [`SCRIPT`] reads them (`KEYS`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().flat_map(|s| s.keys.iter().map(String::as_str))
    }

    /// The script's arguments (`ARGV`): the time (Unix seconds), a unique id for the event,
    /// then eight per step.
    pub fn args(&self, now: u64, event_id: &str) -> Vec<String> {
        let mut args = Vec::with_capacity(2 + self.steps.len() * 8);
        args.push(now.to_string());
        args.push(event_id.to_owned());
        for s in &self.steps {
            args.push(if s.op == Op::Observe { "o" } else { "e" }.to_owned());
            args.push(s.need_count.to_string());
            args.push(s.keep_count.to_string());
            args.push(s.value.clone());
            args.push(s.keep_distinct.to_string());
            args.push(s.need_distinct.to_string());
            args.push(s.window.to_string());
            args.push(s.max_signal.to_string());
        }
        args
    }

    /// The signals this process raises for the script's `outcomes` (one per step): those its
    /// event opened or escalated, with the rules' actions, as [`Detector::observe`] builds them.
    /// `local` turns the store's time (Unix seconds) into the detector's.
    pub fn signals(
        &self,
        detector: &Detector,
        obs: &Observation,
        outcomes: &[Outcome],
        local: impl Fn(u64) -> u32,
    ) -> Vec<Signal> {
        let mut out = Vec::new();
        for (step, outcome) in self.steps.iter().zip(outcomes) {
            let escalation = match outcome.status {
                Status::Opened => false,
                Status::Escalated => true,
                Status::Quiet | Status::KeptOpen => continue,
            };
            let mut signal = detector.signal(
                step.rule,
                step.severity,
                step.key_kind,
                step.key_text.clone(),
                obs,
            );
            signal.count = outcome.count;
            signal.first_seen = local(outcome.first);
            if step.need_distinct > 0 {
                signal.distinct = outcome.distinct;
            }
            if escalation {
                signal.escalation = true;
                signal.account = obs.account.clone();
                detector.block_user(step.rule, obs.user_id.as_ref(), &mut signal);
            }
            detector.block_ip(step.rule, step.block_ip, &mut signal);
            out.push(signal);
        }
        out
    }
}

/// The script for the steps of one [`Plan`], for Redis 6.2 or later (Lua; `EVALSHA`).
///
/// `KEYS`: three per step (the event log, a sorted set of unique event ids scored by time; the
/// distinct values, a sorted set of tags scored by when last seen; the signal, a hash of when
/// it opened, when it expires and whether it escalated). `ARGV`: the time, the event id, then
/// per step `op need_count keep_count value keep_distinct need_distinct window max_signal`.
/// Answers four integers per step, in one flat array: `status, count, distinct, first`; status 0 quiet, 1 opened by this call,
/// 2 kept open, 3 escalated by this call. Logs are cut to what a decision can use, and every
/// key expires on its own once its window (or its signal) has passed.
pub const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local id = ARGV[2]
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local log, set, sig = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 3 + 8 * i
  local op, value = ARGV[a], ARGV[a + 3]
  local need_count, keep_count = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keep_distinct, need_distinct = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local window, max_signal = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local after = '(' .. (now - window)
  if op == 'o' then
    if keep_count > 0 then
      redis.call('ZADD', log, now, id)
      redis.call('ZREMRANGEBYRANK', log, 0, -(keep_count + 1))
      redis.call('EXPIRE', log, window + 1)
    end
    if value ~= '' then
      redis.call('ZREMRANGEBYSCORE', set, '-inf', now - window)
      redis.call('ZADD', set, 'GT', now, value)
      if redis.call('ZCARD', set) > keep_distinct then
        redis.call('ZREMRANGEBYRANK', set, 0, -(keep_distinct + 1))
      end
      redis.call('EXPIRE', set, window + 1)
    end
  end
  local count, first = 0, now
  if keep_count > 0 then
    count = redis.call('ZCOUNT', log, after, '+inf')
    local oldest = redis.call('ZRANGEBYSCORE', log, after, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if oldest[2] then first = tonumber(oldest[2]) end
  end
  local distinct = redis.call('ZCOUNT', set, after, '+inf')
  local status = 0
  local s = redis.call('HMGET', sig, 'opened', 'expires', 'escalated')
  local opened, expires = tonumber(s[1]), tonumber(s[2])
  local open = opened ~= nil and now < expires and now - opened < max_signal
  if op == 'o' then
    if (need_count == 0 or count >= need_count) and (need_distinct == 0 or distinct >= need_distinct) then
      if open then
        redis.call('HSET', sig, 'expires', math.max(expires, now + window))
        status = 2
      else
        redis.call('HSET', sig, 'opened', now, 'expires', now + window, 'escalated', 0)
        status = 1
      end
      redis.call('EXPIRE', sig, max_signal + window)
    end
  elseif open and s[3] == '0' then
    local contributed = true
    if value ~= '' then
      local seen = redis.call('ZSCORE', set, value)
      contributed = seen ~= false and seen ~= nil and tonumber(seen) > now - window
    end
    if contributed then
      redis.call('HSET', sig, 'escalated', 1)
      status = 3
    end
  end
  out[#out + 1] = status
  out[#out + 1] = count
  out[#out + 1] = distinct
  out[#out + 1] = first
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(ip: &str, account: &str) -> Observation {
        let mut obs = Observation::new(EventKind::LoginFailure, 0);
        obs.ip = Some(ip.parse().unwrap());
        obs.account = Some(account.to_owned());
        obs
    }

    #[test]
    fn tags_are_keyed_and_never_the_value() {
        let a = Keyer::new(b"secret-a");
        let b = Keyer::new(b"secret-b");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(a.ip(ip), a.ip("::ffff:203.0.113.9".parse().unwrap()));
        assert_ne!(a.ip(ip), b.ip(ip), "another secret, another tag");
        assert_eq!(a.account(" Alice "), a.account("alice"));
        assert_ne!(a.account("alice"), a.user("alice"), "kinds are apart");
        assert_eq!(a.ip(ip).len(), 32);
        assert!(!a.ip(ip).contains("203"));
        assert_eq!(format!("{a:?}"), "Keyer { secret: <redacted> }");
    }

    #[test]
    fn a_login_failure_feeds_stuffing_and_brute_force_with_tags_only() {
        let keyer = Keyer::new(b"s");
        let plan = Plan::new(
            &DetectionConfig::default(),
            &failure("203.0.113.9", "alice"),
            &keyer,
            "p:{svc}:",
        );
        let rules: Vec<RuleId> = plan.steps.iter().map(|s| s.rule).collect();
        assert_eq!(rules, [RuleId::CredentialStuffing, RuleId::BruteForce]);
        let text = format!("{:?}{:?}", plan.keys().collect::<Vec<_>>(), plan.args(1, "e1"));
        assert!(!text.contains("alice") && !text.contains("203.0.113.9"), "{text}");
        assert!(plan.keys().all(|k| k.starts_with("p:{svc}:")));
        // 31 failures and 6 accounts for stuffing, 41 failures for brute force.
        let args = plan.args(1, "e1");
        assert_eq!(&args[3..5], ["31", "31"]);
        assert_eq!(&args[6..8], ["6", "6"]);
        assert_eq!(&args[11..13], ["41", "41"]);
    }

    #[test]
    fn disabled_rules_have_no_steps() {
        let keyer = Keyer::new(b"s");
        let mut config = DetectionConfig::default();
        config.rule_mut(RuleId::BruteForce).enabled = false;
        let plan = Plan::new(&config, &failure("203.0.113.9", "alice"), &keyer, "");
        assert_eq!(plan.steps.len(), 1);
        config.rule_mut(RuleId::CredentialStuffing).enabled = false;
        assert!(Plan::new(&config, &failure("203.0.113.9", "alice"), &keyer, "")
            .steps
            .is_empty());
    }

    #[test]
    fn outcomes_read_only_what_the_script_answers() {
        assert_eq!(
            Outcome::from_ints(&[1, 31, 6, 100]),
            Some(Outcome {
                status: Status::Opened,
                count: 31,
                distinct: 6,
                first: 100
            })
        );
        assert_eq!(Outcome::from_ints(&[7, 1, 1, 1]), None);
        assert_eq!(Outcome::from_ints(&[1, -1, 1, 1]), None);
        assert_eq!(Outcome::from_ints(&[1, 1, 1]), None);
    }
}
