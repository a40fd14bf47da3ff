//! Blocking building blocks (docs/tags.md "blocking"): block lists with expiry on an injectable clock, the block
//! response (body choice from `Accept`, templates, security response id) and the `_dd.appsec.json`
//! trigger. Pure: the layer and the HTTP middleware wire them in.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// A monotonic clock. Detection windows and block expiry are measured on it, so tests can drive
/// time without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since the clock started.
    fn now(&self) -> Duration;
}

/// The real clock: time since it was created.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that only moves when told to (for tests). Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// One block-list entry as configured: a value and an expiration in Unix seconds (`None` or `0`:
/// never).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// The user id (exact, case-sensitive) or the IP address text.
    pub value: String,
    /// When the entry stops applying, in seconds since the Unix epoch.
    pub expiration: Option<u64>,
}

/// The wall clock in Unix seconds, the unit of [`BlockEntry::expiration`] (0 if the clock is
/// before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Folds an IPv4-mapped IPv6 address to IPv4, so `::ffff:1.2.3.4` and `1.2.3.4` are one address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// When an entry expires, on the clock; `None`: never.
type Expiry = Option<Duration>;

/// Where a block-list entry came from. Each source's entries are replaced on their own, so a
/// reload of one source never unblocks what another still lists: the list enforced is the
/// union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockSource {
    /// The builder (`with_blocked_users`, `with_blocked_ips`).
    Code,
    /// The blocked-users file.
    File,
    /// Datadog Remote Configuration (`ASM_DATA`).
    Remote,
    /// Run time: detection's actions and [`BlockList::block_user`] / [`BlockList::block_ip`].
    Runtime,
}

impl BlockSource {
    fn index(self) -> usize {
        match self {
            BlockSource::Code => 0,
            BlockSource::File => 1,
            BlockSource::Remote => 2,
            BlockSource::Runtime => 3,
        }
    }
}

/// An IP range in CIDR notation (`198.51.100.0/24`, `2001:db8::/32`); a single address is a
/// range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `v6/n` (IPv4-mapped IPv6 folded to
    /// IPv4); `None` for anything else.
    pub fn parse(text: &str) -> Option<IpRange> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let ip: IpAddr = address.parse().ok()?;
        let (ip, prefix) = match (ip, prefix) {
            (IpAddr::V6(v6), Some(p)) if v6.to_ipv4_mapped().is_some() && p >= 96 => {
                (canonical_ip(ip), p - 96)
            }
            (ip, p) => (canonical_ip(ip), p.unwrap_or(if ip.is_ipv4() { 32 } else { 128 })),
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| IpRange {
            network: mask(ip, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }

    fn single(&self) -> Option<IpAddr> {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        (self.prefix == bits).then_some(self.network)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

/// One source's entries.
#[derive(Debug, Default)]
struct Entries {
    users: HashMap<String, Expiry>,
    ips: HashMap<IpAddr, Expiry>,
    ranges: Vec<(IpRange, Expiry)>,
}

/// What a block applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// A user id.
    User,
    /// A client IP address.
    Ip,
}

/// A block added or lifted, as [`BlockList::set_listener`] reports it: entries of the builder,
/// the blocked-users file and run time (single addresses; CIDR ranges and Remote Configuration
/// entries are not reported).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockChange {
    /// What is blocked.
    pub kind: BlockKind,
    /// The user id, or the IP address text.
    pub value: String,
    /// When the block ends, in Unix seconds; `None`: never.
    pub expiration: Option<u64>,
    /// Whether the block was lifted (else added).
    pub removed: bool,
}

/// Blocks held outside the list and enforced with it: another process's blocks, which this
/// one may know only by a keyed tag of the value.
pub trait ExternalBlocks: Send + Sync + fmt::Debug {
    /// Whether `user_id` is blocked.
    fn is_user_blocked(&self, user_id: &str) -> bool;
    /// Whether `ip` is blocked (already folded to IPv4 when IPv4-mapped).
    fn is_ip_blocked(&self, ip: IpAddr) -> bool;
}

type Listener = Arc<dyn Fn(&BlockChange) + Send + Sync>;

/// Blocked users and IPs (addresses and CIDR ranges), with expiry on a [`Clock`], kept per
/// [`BlockSource`] and enforced as their union, with [`ExternalBlocks`] when set. Cheap to
/// share behind an `Arc`.
pub struct BlockList {
    clock: Arc<dyn Clock>,
    /// Whether any entry was ever added (a cheap check on the hot path).
    used: std::sync::atomic::AtomicBool,
    sources: RwLock<[Entries; 4]>,
    listener: OnceLock<Listener>,
    external: OnceLock<Arc<dyn ExternalBlocks>>,
}

impl fmt::Debug for BlockList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockList")
            .field("clock", &self.clock)
            .field("used", &self.used)
            .field("sources", &self.sources)
            .field("external", &self.external.get())
            .finish_non_exhaustive()
    }
}

/// Whether `source`'s changes go to the listener.
fn reported(source: BlockSource) -> bool {
    matches!(
        source,
        BlockSource::Code | BlockSource::File | BlockSource::Runtime
    )
}

impl BlockList {
    /// An empty list timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            used: std::sync::atomic::AtomicBool::new(false),
            sources: RwLock::default(),
            listener: OnceLock::new(),
            external: OnceLock::new(),
        }
    }

    /// Reports every later change of the builder's, the file's and run-time entries to
    /// `listener` (called with no lock held), after reporting the entries held now. Set once;
    /// `false` if a listener was set already.
    pub fn set_listener(&self, listener: impl Fn(&BlockChange) + Send + Sync + 'static) -> bool {
        if self.listener.set(Arc::new(listener)).is_err() {
            return false;
        }
        let now = self.clock.now();
        let unix = unix_now();
        let mut held = Vec::new();
        if let Ok(sources) = self.sources.read() {
            for source in [BlockSource::Code, BlockSource::File, BlockSource::Runtime] {
                let entries = &sources[source.index()];
                let users = entries
                    .users
                    .iter()
                    .map(|(v, x)| (BlockKind::User, v.clone(), *x));
                let ips = entries
                    .ips
                    .iter()
                    .map(|(ip, x)| (BlockKind::Ip, ip.to_string(), *x));
                for (kind, value, expiry) in users.chain(ips) {
                    if Self::live(Some(&expiry), now) {
                        held.push(self.change(kind, value, expiry, now, unix, false));
                    }
                }
            }
        }
        self.notify(&held);
        true
    }

    /// Enforces `external` with the list's own entries. Set once; `false` if one was set already.
    pub fn set_external(&self, external: Arc<dyn ExternalBlocks>) -> bool {
        self.used.store(true, Ordering::Relaxed);
        self.external.set(external).is_ok()
    }

    fn change(
        &self,
        kind: BlockKind,
        value: String,
        expiry: Expiry,
        now: Duration,
        unix: u64,
        removed: bool,
    ) -> BlockChange {
        BlockChange {
            kind,
            value,
            expiration: expiry.map(|at| unix + at.saturating_sub(now).as_secs().max(1)),
            removed,
        }
    }

    fn notify(&self, changes: &[BlockChange]) {
        if let (Some(listener), false) = (self.listener.get(), changes.is_empty()) {
            for change in changes {
                listener(change);
            }
        }
    }

    /// The changes between `old` and `new` entries of a reported source.
    fn diff<K: Eq + std::hash::Hash + ToString>(
        &self,
        kind: BlockKind,
        old: &HashMap<K, Expiry>,
        new: &HashMap<K, Expiry>,
    ) -> Vec<BlockChange> {
        if self.listener.get().is_none() {
            return Vec::new();
        }
        let (now, unix) = (self.clock.now(), unix_now());
        let lifted = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| self.change(kind, k.to_string(), None, now, unix, true));
        let added = new
            .iter()
            .filter(|(k, x)| old.get(*k) != Some(*x))
            .map(|(k, x)| self.change(kind, k.to_string(), *x, now, unix, false));
        lifted.chain(added).collect()
    }

    /// Converts a wall-clock expiration to the clock, once, at load time.
    fn expiry(&self, expiration: Option<u64>, unix_now: u64) -> Option<Expiry> {
        match expiration.filter(|e| *e != 0) {
            None => Some(None),
            Some(at) if at <= unix_now => None,
            Some(at) => Some(Some(self.clock.now() + Duration::from_secs(at - unix_now))),
        }
    }

    fn with_source(&self, source: BlockSource, adds: bool, f: impl FnOnce(&mut Entries)) {
        if adds {
            self.used.store(true, Ordering::Relaxed);
        }
        if let Ok(mut sources) = self.sources.write() {
            f(&mut sources[source.index()]);
        }
    }

    /// Replaces the blocked users of the builder; see [`BlockList::replace_users_from`].
    pub fn replace_users(&self, entries: impl IntoIterator<Item = BlockEntry>, unix_now: u64) {
        self.replace_users_from(BlockSource::Code, entries, unix_now);
    }

    /// Replaces the blocked users that came from `source` (the other sources' stay); entries
    /// already expired at `unix_now` are left out.
    pub fn replace_users_from(
        &self,
        source: BlockSource,
        entries: impl IntoIterator<Item = BlockEntry>,
        unix_now: u64,
    ) {
        let users: HashMap<String, Expiry> = entries
            .into_iter()
            .filter_map(|e| self.expiry(e.expiration, unix_now).map(|x| (e.value, x)))
            .collect();
        let mut changes = Vec::new();
        self.with_source(source, !users.is_empty(), |entries| {
            if reported(source) {
                changes = self.diff(BlockKind::User, &entries.users, &users);
            }
            entries.users = users;
        });
        self.notify(&changes);
    }

    /// Replaces the blocked IPs of the builder; see [`BlockList::replace_ips_from`].
    pub fn replace_ips(&self, entries: impl IntoIterator<Item = BlockEntry>, unix_now: u64) -> Vec<String> {
        self.replace_ips_from(BlockSource::Code, entries, unix_now)
    }

    /// Replaces the blocked IPs and CIDR ranges that came from `source` (the other sources'
    /// stay); entries that are neither are skipped and returned.
    pub fn replace_ips_from(
        &self,
        source: BlockSource,
        entries: impl IntoIterator<Item = BlockEntry>,
        unix_now: u64,
    ) -> Vec<String> {
        let mut rejected = Vec::new();
        let (mut ips, mut ranges) = (HashMap::new(), Vec::new());
        for entry in entries {
            let Some(range) = IpRange::parse(&entry.value) else {
                rejected.push(entry.value);
                continue;
            };
            if let Some(x) = self.expiry(entry.expiration, unix_now) {
                match range.single() {
                    Some(ip) => {
                        ips.insert(ip, x);
                    }
                    None => ranges.push((range, x)),
                }
            }
        }
        let mut changes = Vec::new();
        self.with_source(source, !ips.is_empty() || !ranges.is_empty(), |entries| {
            if reported(source) {
                changes = self.diff(BlockKind::Ip, &entries.ips, &ips);
            }
            entries.ips = ips;
            entries.ranges = ranges;
        });
        self.notify(&changes);
        rejected
    }

    /// Blocks `user_id` for `duration` (forever with `None`), timed on the clock
    /// ([`BlockSource::Runtime`]).
    pub fn block_user(&self, user_id: &str, duration: Option<Duration>) {
        let now = self.clock.now();
        let expiry = duration.map(|d| now + d);
        self.with_source(BlockSource::Runtime, true, |entries| {
            entries.users.insert(user_id.to_owned(), expiry);
        });
        self.runtime_change(BlockKind::User, user_id.to_owned(), expiry, now, false);
    }

    /// Blocks `ip` for `duration` (forever with `None`), timed on the clock
    /// ([`BlockSource::Runtime`]).
    pub fn block_ip(&self, ip: IpAddr, duration: Option<Duration>) {
        let now = self.clock.now();
        let expiry = duration.map(|d| now + d);
        let ip = canonical_ip(ip);
        self.with_source(BlockSource::Runtime, true, |entries| {
            entries.ips.insert(ip, expiry);
        });
        self.runtime_change(BlockKind::Ip, ip.to_string(), expiry, now, false);
    }

    /// Lifts a run-time block of `user_id` ([`BlockList::block_user`], detection's actions);
    /// the other sources' entries stay.
    pub fn unblock_user(&self, user_id: &str) {
        self.with_source(BlockSource::Runtime, false, |entries| {
            entries.users.remove(user_id);
        });
        self.runtime_change(BlockKind::User, user_id.to_owned(), None, self.clock.now(), true);
    }

    /// Lifts a run-time block of `ip` ([`BlockList::block_ip`], detection's actions); the
    /// other sources' entries stay.
    pub fn unblock_ip(&self, ip: IpAddr) {
        let ip = canonical_ip(ip);
        self.with_source(BlockSource::Runtime, false, |entries| {
            entries.ips.remove(&ip);
        });
        self.runtime_change(BlockKind::Ip, ip.to_string(), None, self.clock.now(), true);
    }

    /// Lifts the run-time entries of `kind` whose value `matches` (IPs as text), without
    /// reporting them to the listener: for a block lifted elsewhere and announced.
    pub fn lift_runtime_where(&self, kind: BlockKind, matches: impl Fn(&str) -> bool) {
        self.with_source(BlockSource::Runtime, false, |entries| match kind {
            BlockKind::User => entries.users.retain(|v, _| !matches(v)),
            BlockKind::Ip => entries.ips.retain(|ip, _| !matches(&ip.to_string())),
        });
    }

    fn runtime_change(&self, kind: BlockKind, value: String, expiry: Expiry, now: Duration, removed: bool) {
        if self.listener.get().is_some() {
            self.notify(&[self.change(kind, value, expiry, now, unix_now(), removed)]);
        }
    }

    fn live(expiry: Option<&Expiry>, now: Duration) -> bool {
        matches!(expiry, Some(None)) || matches!(expiry, Some(Some(at)) if now < *at)
    }

    /// Whether the list never held an entry (then nothing needs checking): empty replacements
    /// do not count.
    #[inline]
    pub fn is_unused(&self) -> bool {
        !self.used.load(Ordering::Relaxed)
    }

    /// Whether an unexpired entry of any source equals `user_id` exactly (bytes:
    /// case-sensitive, untrimmed).
    pub fn is_user_blocked(&self, user_id: &str) -> bool {
        if self.is_unused() {
            return false;
        }
        let now = self.clock.now();
        self.sources
            .read()
            .map(|sources| sources.iter().any(|e| Self::live(e.users.get(user_id), now)))
            .unwrap_or(false)
            || self.external.get().is_some_and(|x| x.is_user_blocked(user_id))
    }

    /// Whether an unexpired entry of any source is `ip` or a range holding it (IPv4-mapped IPv6
    /// folded to IPv4).
    pub fn is_ip_blocked(&self, ip: IpAddr) -> bool {
        if self.is_unused() {
            return false;
        }
        let now = self.clock.now();
        let ip = canonical_ip(ip);
        self.sources
            .read()
            .map(|sources| {
                sources.iter().any(|e| {
                    Self::live(e.ips.get(&ip), now)
                        || e.ranges
                            .iter()
                            .any(|(r, x)| r.contains(ip) && Self::live(Some(x), now))
                })
            })
            .unwrap_or(false)
            || self.external.get().is_some_and(|x| x.is_ip_blocked(ip))
    }
}

/// A fresh-looking UUID v4 (lowercase, hyphenated) from 16 random bytes.
///
/// ```
/// use tracing_usr_core::blocking::uuid_v4;
/// let id = uuid_v4([0xab; 16]);
/// assert_eq!(id, "abababab-abab-4bab-abab-abababababab");
/// ```
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn q_value(params: &str, default: f64) -> f64 {
    params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|q| q.is_finite())
        .map_or(default, |q| q.clamp(0.0, 1.0))
}

/// Whether the block response should be HTML rather than JSON for this `Accept` header
/// (docs/tags.md "blocking"): HTML only when its best score is strictly greater than JSON's.
///
/// ```
/// use tracing_usr_core::blocking::prefers_html;
/// assert!(!prefers_html(None));
/// assert!(prefers_html(Some("text/html,application/xhtml+xml,*/*;q=0.8")));
/// assert!(!prefers_html(Some("text/html;q=0.5, application/json")));
/// ```
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return false;
    };
    let (mut html, mut json) = (0.0f64, 0.0f64);
    for entry in accept.split(',') {
        if entry.len() > 128 {
            continue;
        }
        let entry = entry.trim();
        let (media, params) = entry.split_once(';').unwrap_or((entry, ""));
        let media = media.trim().to_ascii_lowercase();
        match media.as_str() {
            "text/html" => html = html.max(q_value(params, 1.0)),
            "text/*" => html = html.max(q_value(params, 0.2)),
            "application/json" => json = json.max(q_value(params, 1.0)),
            "application/*" => json = json.max(q_value(params, 0.2)),
            _ => {}
        }
    }
    html > json
}

/// The placeholder that templates carry for the security response id.
pub const RESPONSE_ID_PLACEHOLDER: &str = "[security_response_id]";

/// The built-in JSON block body (compact, exactly as Datadog's tracers send it).
pub const DEFAULT_JSON_TEMPLATE: &str = r#"{"errors":[{"title":"You've been blocked","detail":"Sorry, you cannot access this page. Please contact the customer service team. Security provided by Datadog."}],"security_response_id":"[security_response_id]"}"#;

/// The built-in HTML block page.
pub const DEFAULT_HTML_TEMPLATE: &str = r#"<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>You've been blocked</title><style>body{font-family:sans-serif;margin:10vh auto;max-width:40rem;text-align:center;color:#222}footer{margin-top:4rem;font-size:.8rem;color:#666}</style></head><body><main><h1>Sorry, you cannot access this page. Please contact the customer service team.</h1><p>Security Response ID: [security_response_id]</p></main><footer>Security provided by Datadog</footer></body></html>"#;

/// The block response bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTemplates {
    /// The JSON body, with [`RESPONSE_ID_PLACEHOLDER`]s.
    pub json: String,
    /// The HTML body, with [`RESPONSE_ID_PLACEHOLDER`]s.
    pub html: String,
}

impl Default for BlockTemplates {
    fn default() -> Self {
        Self {
            json: DEFAULT_JSON_TEMPLATE.to_owned(),
            html: DEFAULT_HTML_TEMPLATE.to_owned(),
        }
    }
}

impl BlockTemplates {
    /// The content type and body to send for this `Accept` header and response id.
    pub fn render(&self, accept: Option<&str>, response_id: &str) -> (&'static str, String) {
        if prefers_html(accept) {
            (
                "text/html",
                self.html.replace(RESPONSE_ID_PLACEHOLDER, response_id),
            )
        } else {
            (
                "application/json",
                self.json.replace(RESPONSE_ID_PLACEHOLDER, response_id),
            )
        }
    }
}

/// What a block matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A blocked user id (in its exported form).
    User(String),
    /// A blocked client IP.
    Ip(IpAddr),
}

/// The `_dd.appsec.json` tag of a blocked trace (docs/tags.md "blocking"), compact.
pub fn trigger_json(reason: &BlockReason, response_id: &str) -> String {
    let (rule, name, kind, operator, address, value) = match reason {
        BlockReason::User(id) => (
            "blk-001-002",
            "Block User Addresses",
            "block_user",
            "exact_match",
            "usr.id",
            id.clone(),
        ),
        BlockReason::Ip(ip) => (
            "blk-001-001",
            "Block IP Addresses",
            "block_ip",
            "ip_match",
            "http.client_ip",
            ip.to_string(),
        ),
    };
    serde_json::json!({
        "triggers": [{
            "rule": {"id": rule, "name": name, "on_match": ["block"], "tags": {"category": "security_response", "type": kind}},
            "rule_matches": [{"operator": operator, "operator_value": "", "parameters": [{"address": address, "highlight": [value], "key_path": [], "value": value}]}],
            "security_response_id": response_id,
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> (BlockList, ManualClock) {
        let clock = ManualClock::new();
        (BlockList::new(Arc::new(clock.clone())), clock)
    }

    #[test]
    fn the_listener_hears_held_entries_then_every_change_but_remote_ones() {
        let (list, _clock) = list();
        list.replace_users(
            [BlockEntry {
                value: "u1".into(),
                expiration: None,
            }],
            0,
        );
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&heard);
        assert!(list.set_listener(move |c: &BlockChange| sink.lock().unwrap().push(c.clone())));
        list.block_ip(
            "::ffff:198.51.100.7".parse().unwrap(),
            Some(Duration::from_secs(60)),
        );
        list.replace_users_from(
            BlockSource::Remote,
            [BlockEntry {
                value: "r".into(),
                expiration: None,
            }],
            0,
        );
        list.unblock_ip("198.51.100.7".parse().unwrap());
        list.replace_users([], 0);
        let changes = heard.lock().unwrap().clone();
        let summary: Vec<(BlockKind, &str, bool)> = changes
            .iter()
            .map(|c| (c.kind, c.value.as_str(), c.removed))
            .collect();
        assert_eq!(
            summary,
            [
                (BlockKind::User, "u1", false),
                (BlockKind::Ip, "198.51.100.7", false),
                (BlockKind::Ip, "198.51.100.7", true),
                (BlockKind::User, "u1", true),
            ]
        );
        let expires = changes[1].expiration.unwrap();
        assert!(expires.abs_diff(unix_now() + 60) <= 1, "{expires}");
        assert!(!list.is_ip_blocked("198.51.100.7".parse().unwrap()), "unblocked");
        list.block_user("u2", None);
        list.lift_runtime_where(BlockKind::User, |v| v == "u2");
        assert!(!list.is_user_blocked("u2"));
        assert_eq!(
            heard.lock().unwrap().len(),
            5,
            "a lift from elsewhere is not reported back"
        );
    }

    #[derive(Debug)]
    struct Everyone;
    impl ExternalBlocks for Everyone {
        fn is_user_blocked(&self, user_id: &str) -> bool {
            user_id == "far"
        }
        fn is_ip_blocked(&self, ip: IpAddr) -> bool {
            ip == IpAddr::from([192, 0, 2, 1])
        }
    }

    #[test]
    fn external_blocks_are_enforced_with_the_list() {
        let (list, _clock) = list();
        assert!(list.set_external(Arc::new(Everyone)));
        assert!(list.is_user_blocked("far") && !list.is_user_blocked("near"));
        assert!(list.is_ip_blocked("::ffff:192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn users_match_exactly_and_expire_on_the_clock() {
        let (list, clock) = list();
        list.replace_users(
            [
                BlockEntry {
                    value: "u-1".into(),
                    expiration: None,
                },
                BlockEntry {
                    value: "u-2".into(),
                    expiration: Some(1_000 + 60),
                },
                BlockEntry {
                    value: "gone".into(),
                    expiration: Some(999),
                },
            ],
            1_000,
        );
        assert!(list.is_user_blocked("u-1"));
        assert!(!list.is_user_blocked("U-1") && !list.is_user_blocked(" u-1"));
        assert!(list.is_user_blocked("u-2"));
        assert!(!list.is_user_blocked("gone"));
        clock.advance(Duration::from_secs(59));
        assert!(list.is_user_blocked("u-2"));
        clock.advance(Duration::from_secs(1));
        assert!(!list.is_user_blocked("u-2"));
        assert!(list.is_user_blocked("u-1"));
    }

    #[test]
    fn temporary_blocks_from_detection_expire() {
        let (list, clock) = list();
        list.block_user("victim", Some(Duration::from_secs(900)));
        list.block_ip("::ffff:10.0.0.1".parse().unwrap(), Some(Duration::from_secs(900)));
        assert!(list.is_user_blocked("victim"));
        assert!(list.is_ip_blocked("10.0.0.1".parse().unwrap()));
        clock.advance(Duration::from_secs(900));
        assert!(!list.is_user_blocked("victim"));
        assert!(!list.is_ip_blocked("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ip_entries_are_parsed_and_folded() {
        let (list, _) = list();
        let rejected = list.replace_ips(
            [
                BlockEntry {
                    value: "1.2.3.4".into(),
                    expiration: None,
                },
                BlockEntry {
                    value: "not-an-ip".into(),
                    expiration: None,
                },
                BlockEntry {
                    value: "2001:db8::1".into(),
                    expiration: Some(0),
                },
            ],
            0,
        );
        assert_eq!(rejected, vec!["not-an-ip".to_owned()]);
        assert!(list.is_ip_blocked("::ffff:1.2.3.4".parse().unwrap()));
        assert!(list.is_ip_blocked("2001:db8::1".parse().unwrap()));
        assert!(!list.is_ip_blocked("1.2.3.5".parse().unwrap()));
    }

    #[test]
    fn sources_are_replaced_on_their_own_and_enforced_as_a_union() {
        let (list, _) = list();
        let entry = |v: &str| BlockEntry {
            value: v.into(),
            expiration: None,
        };
        list.replace_users([entry("both"), entry("code-only")], 0);
        list.replace_users_from(BlockSource::Remote, [entry("both"), entry("remote-only")], 0);
        list.block_user("detected", None);
        assert!(["both", "code-only", "remote-only", "detected"]
            .iter()
            .all(|u| list.is_user_blocked(u)));
        // The remote source drops everything: what code and detection list stays blocked.
        list.replace_users_from(BlockSource::Remote, [], 0);
        assert!(list.is_user_blocked("both") && list.is_user_blocked("code-only"));
        assert!(list.is_user_blocked("detected"));
        assert!(!list.is_user_blocked("remote-only"));
        // A file reload does not drop the builder's users either.
        list.replace_users_from(BlockSource::File, [entry("from-file")], 0);
        assert!(list.is_user_blocked("code-only") && list.is_user_blocked("from-file"));
    }

    #[test]
    fn cidr_ranges_hold_the_addresses_inside_them() {
        let (list, _) = list();
        let entry = |v: &str| BlockEntry {
            value: v.into(),
            expiration: None,
        };
        let rejected = list.replace_ips_from(
            BlockSource::Remote,
            [
                entry("198.51.100.0/24"),
                entry("2001:db8::/32"),
                entry("10.0.0.0/33"),
                entry("::ffff:192.0.2.0/120"),
            ],
            0,
        );
        assert_eq!(rejected, vec!["10.0.0.0/33".to_owned()]);
        for inside in [
            "198.51.100.0",
            "198.51.100.255",
            "::ffff:198.51.100.7",
            "2001:db8:ffff::1",
            "192.0.2.9",
        ] {
            assert!(list.is_ip_blocked(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["198.51.101.0", "198.51.99.255", "2001:db9::1", "192.0.3.1"] {
            assert!(!list.is_ip_blocked(outside.parse().unwrap()), "{outside}");
        }
        assert_eq!(
            IpRange::parse("0.0.0.0/0").map(|r| r.contains("8.8.8.8".parse().unwrap())),
            Some(true)
        );
        assert!(IpRange::parse("1.2.3.4/x").is_none() && IpRange::parse("nope").is_none());
    }

    #[test]
    fn accept_negotiation_follows_the_documented_scores() {
        for (accept, html) in [
            (None, false),
            (Some(""), false),
            (Some("*/*"), false),
            (Some("text/html"), true),
            (Some("TEXT/HTML"), true),
            (Some("text/*"), true),
            (Some("text/*, application/*"), false),
            (Some("text/html;q=0.9, application/json;q=0.8"), true),
            (Some("text/html;q=0.8, application/json;q=0.8"), false),
            (Some("text/html;q=2, application/json;q=0.99"), true),
            (Some("text/html;q=abc, application/json;q=0.99"), true),
            (Some("application/json, text/html"), false),
        ] {
            assert_eq!(prefers_html(accept), html, "{accept:?}");
        }
        let long = format!("text/html;{}", "x".repeat(130));
        assert!(
            !prefers_html(Some(&long)),
            "entries longer than 128 characters are skipped"
        );
    }

    #[test]
    fn bodies_and_ids() {
        let id = uuid_v4([0x12; 16]);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let (ct, body) = BlockTemplates::default().render(None, &id);
        assert_eq!(ct, "application/json");
        assert_eq!(
            body,
            format!(
                r#"{{"errors":[{{"title":"You've been blocked","detail":"Sorry, you cannot access this page. Please contact the customer service team. Security provided by Datadog."}}],"security_response_id":"{id}"}}"#
            )
        );
        let (ct, body) = BlockTemplates::default().render(Some("text/html"), &id);
        assert_eq!(ct, "text/html");
        assert!(
            body.contains("You've been blocked") && body.contains(&format!("Security Response ID: {id}"))
        );
        assert!(body.contains("Security provided by Datadog"));
    }

    #[test]
    fn trigger_json_has_the_datadog_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&trigger_json(&BlockReason::User("anon_x".into()), "rid")).unwrap();
        let trigger = &json["triggers"][0];
        assert_eq!(trigger["rule"]["id"], "blk-001-002");
        assert_eq!(trigger["rule_matches"][0]["parameters"][0]["value"], "anon_x");
        assert_eq!(trigger["security_response_id"], "rid");
        let json: serde_json::Value =
            serde_json::from_str(&trigger_json(&BlockReason::Ip("1.2.3.4".parse().unwrap()), "rid")).unwrap();
        assert_eq!(json["triggers"][0]["rule_matches"][0]["operator"], "ip_match");
    }
}
