//! Detection and blocks shared by every replica of a service, on Redis (feature `redis`).
//!
//! With [`Builder::with_redis`](crate::Builder::with_redis) or `TRACING_USR_REDIS_URL` and a
//! cluster secret, the stateful rules count every replica's events in Redis: one Lua script per
//! business event, one round trip, exactly one signal per (rule, key) across the cluster, raised
//! by the replica whose event crossed the threshold. Blocks (detection's actions, the builder's
//! and the blocked-users file's entries, [`BlockList::block_user`] and friends) are stored in
//! Redis with their expiry as a TTL, announced on a channel and enforced by every replica.
//!
//! The application thread never waits on Redis: events go through a bounded queue to a
//! background thread; the request-path block check reads a local copy. When Redis is slow or
//! down, the replica counts on its own detector (one warning, target `tracing_usr::detection`)
//! until Redis answers again. Redis holds HMAC-SHA-256 tags under the secret, never a login, an
//! IP or a user id. `docs/detection.md` ("Running several replicas") has the details.
//!
//! [`BlockList::block_user`]: tracing_usr_core::blocking::BlockList::block_user

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing_usr_core::blocking::{unix_now, BlockChange, BlockList, ExternalBlocks};
use tracing_usr_core::detection::cluster::Keyer;
use tracing_usr_core::detection::{Detector, Observation};
use tracing_usr_core::mode::ConfigWarning;

use super::hub::SignalHub;

mod worker;

/// `TRACING_USR_REDIS_URL`: `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) or
/// `unix:/path/to/redis.sock`. Turns shared detection on (with a secret).
pub const ENV_REDIS_URL: &str = "TRACING_USR_REDIS_URL";
/// `TRACING_USR_REDIS_SECRET`: the cluster secret every replica shares (the HMAC key of every
/// login, IP and user id stored in Redis). Without it Redis mode does not start.
pub const ENV_REDIS_SECRET: &str = "TRACING_USR_REDIS_SECRET";
/// `TRACING_USR_REDIS_PREFIX`: the key prefix; defaults to `tracing-usr:{<service>}:`.
pub const ENV_REDIS_PREFIX: &str = "TRACING_USR_REDIS_PREFIX";
/// `TRACING_USR_REDIS_CA_FILE`: a PEM file of the certificate authority that signed the Redis
/// server's certificate (`rediss://`), in place of the system's roots.
pub const ENV_REDIS_CA_FILE: &str = "TRACING_USR_REDIS_CA_FILE";

/// Where and how the replicas of a service share detection: the Redis URL, the cluster secret
/// and the key prefix. `Debug` never shows the secret or the URL's password.
///
/// ```
/// use tracing_usr::detection::RedisConfig;
/// let config = RedisConfig::new("redis://127.0.0.1:6379", "a secret every replica shares")
///     .with_prefix("shop:{checkout}:");
/// let _layer = tracing_usr::builder().with_redis(config).build();
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix:` URL.
    pub url: String,
    secret: Vec<u8>,
    /// Key prefix; `None`: `tracing-usr:{<service>}:` (the braces are the Redis Cluster hash
    /// tag that keeps every key of a service in one slot).
    pub prefix: Option<String>,
    /// Events waiting for Redis at most (10,000); more are judged by the local detector.
    pub queue: usize,
    /// How long one Redis call may take before the replica falls back (250 ms).
    pub timeout: Duration,
    /// PEM root certificates for `rediss://` in place of the system's (a private CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())),
            )
            .finish()
    }
}

/// The URL with any password replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}<redacted>{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl RedisConfig {
    /// Redis at `url`, with the cluster `secret` (every replica must use the same one).
    pub fn new(url: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        Self {
            url: url.into(),
            secret: secret.as_ref().to_vec(),
            prefix: None,
            queue: 10_000,
            timeout: Duration::from_millis(250),
            ca_pem: None,
        }
    }

    /// Trusts the certificate authorities of `pem` (PEM certificates) for `rediss://`, in place
    /// of the system's roots. Defaults to the system's roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Sets the key prefix (keep a `{hash tag}` in it for Redis Cluster). Defaults to
    /// `TRACING_USR_REDIS_PREFIX`, else `tracing-usr:{<service>}:`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Sets how many events may wait for Redis. Defaults to 10,000.
    pub fn with_queue(mut self, events: usize) -> Self {
        self.queue = events.max(1);
        self
    }

    /// Sets how long one Redis call may take. Defaults to 250 ms.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Reads `TRACING_USR_REDIS_URL`, `TRACING_USR_REDIS_SECRET` and `TRACING_USR_REDIS_PREFIX`
    /// through `var`; `None` without a URL, or (with a warning naming the variable) without a
    /// secret.
    pub(crate) fn from_env(
        var: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<Self> {
        let url = var(ENV_REDIS_URL)?;
        let mut config = Self::new(url.trim(), var(ENV_REDIS_SECRET).unwrap_or_default());
        config.prefix = var(ENV_REDIS_PREFIX);
        if let Some(path) = var(ENV_REDIS_CA_FILE) {
            match std::fs::read(&path) {
                Ok(pem) => config.ca_pem = Some(pem),
                Err(e) => warnings.push(ConfigWarning::new(
                    ENV_REDIS_CA_FILE,
                    format!("cannot read {path:?} ({e}); trusting the system's roots"),
                )),
            }
        }
        config.checked(warnings)
    }

    /// `self`, unless it has no secret (a warning names the setting).
    pub(crate) fn checked(self, warnings: &mut Vec<ConfigWarning>) -> Option<Self> {
        if self.secret.is_empty() {
            warnings.push(ConfigWarning::new(
                ENV_REDIS_SECRET,
                format!(
                    "shared detection needs a cluster secret ({ENV_REDIS_SECRET} or RedisConfig::new); \
                     detection stays in this process"
                ),
            ));
            return None;
        }
        Some(self)
    }

    /// The prefix of the keys and the channel, for `service`.
    fn key_prefix(&self, service: &str) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("tracing-usr:{{{service}}}:"))
    }
}

/// What shared detection did ([`crate::Handle::cluster_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Whether Redis answers now (events are counted cluster-wide).
    pub connected: bool,
    /// Events counted in Redis.
    pub sent: u64,
    /// Redis calls that failed or timed out (each event of them was judged locally instead).
    pub failed: u64,
    /// Events judged by the local detector because Redis was down or slow.
    pub fallen_back: u64,
    /// What the full queue to Redis did not take: events (judged locally instead) and block
    /// changes (enforced here only).
    pub queue_drops: u64,
    /// Block changes stored in Redis and announced.
    pub blocks_shared: u64,
    /// Blocks of other replicas enforced here now (known by tag only).
    pub remote_blocks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
    fallen_back: AtomicU64,
    queue_drops: AtomicU64,
    blocks_shared: AtomicU64,
}

/// What the worker is handed.
enum Msg {
    Observe(Observation),
    Block(BlockChange),
}

/// The blocks announced in Redis, by tag (`u:<tag>`, `i:<tag>`) with their end in Unix seconds
/// (0: never): the request path's local copy.
#[derive(Debug)]
pub(crate) struct SharedBlocks {
    keyer: Keyer,
    entries: RwLock<HashMap<String, u64>>,
    len: AtomicUsize,
}

impl SharedBlocks {
    fn new(keyer: Keyer) -> Self {
        Self {
            keyer,
            entries: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
        }
    }

    fn holds(&self, member: String) -> bool {
        let Ok(entries) = self.entries.read() else {
            return false;
        };
        entries
            .get(&member)
            .is_some_and(|end| *end == 0 || unix_now() < *end)
    }

    /// Applies one announcement (`+<member> <end>` or `-<member> <end>`); `false` for garbage.
    fn apply(&self, message: &str) -> bool {
        let Some((sign, rest)) = message.split_at_checked(1) else {
            return false;
        };
        let Some((member, end)) = rest.split_once(' ') else {
            return false;
        };
        let (Ok(end), true) = (end.parse::<u64>(), valid_member(member)) else {
            return false;
        };
        let Ok(mut entries) = self.entries.write() else {
            return false;
        };
        match sign {
            "+" => entries.insert(member.to_owned(), end),
            "-" => entries.remove(member),
            _ => return false,
        };
        // Blocks that ran out go with the next announcement (they are rare; no sweeper needed).
        let now = unix_now();
        entries.retain(|_, end| *end == 0 || now < *end);
        self.len.store(entries.len(), Ordering::Relaxed);
        true
    }

    /// Replaces the copy with the set loaded from Redis.
    fn replace(&self, loaded: HashMap<String, u64>) {
        if let Ok(mut entries) = self.entries.write() {
            *entries = loaded;
            self.len.store(entries.len(), Ordering::Relaxed);
        }
    }
}

/// `u:` or `i:` and a 32-digit hex tag.
fn valid_member(member: &str) -> bool {
    let tag = member.strip_prefix("u:").or_else(|| member.strip_prefix("i:"));
    tag.is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl ExternalBlocks for SharedBlocks {
    fn is_user_blocked(&self, user_id: &str) -> bool {
        self.len.load(Ordering::Relaxed) > 0 && self.holds(format!("u:{}", self.keyer.user(user_id)))
    }

    fn is_ip_blocked(&self, ip: IpAddr) -> bool {
        self.len.load(Ordering::Relaxed) > 0 && self.holds(format!("i:{}", self.keyer.ip(ip)))
    }
}

/// The layer's side of shared detection: hands events to the worker without waiting.
pub(crate) struct Cluster {
    tx: tokio::sync::mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    blocks: Arc<SharedBlocks>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What the worker needs of the layer.
pub(crate) struct Wiring {
    pub(crate) detector: Arc<Detector>,
    pub(crate) blocks: Arc<BlockList>,
    pub(crate) signals: Arc<SignalHub>,
    pub(crate) service: String,
}

impl Cluster {
    /// Starts the worker for `config` and wires the block list to it; `None` (with a warning)
    /// when the URL is invalid or the thread cannot start.
    pub(crate) fn start(
        config: RedisConfig,
        wiring: Wiring,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<Arc<Self>> {
        let client = match worker::client(&config.url, config.ca_pem.as_deref()) {
            Ok(client) => client,
            Err(e) => {
                warnings.push(ConfigWarning::new(
                    ENV_REDIS_URL,
                    format!(
                        "invalid Redis URL {:?} ({e}); detection stays in this process",
                        redact_url(&config.url)
                    ),
                ));
                return None;
            }
        };
        let keyer = Keyer::new(&config.secret);
        let (tx, rx) = tokio::sync::mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let blocks = Arc::new(SharedBlocks::new(keyer));
        let prefix = config.key_prefix(&wiring.service);
        // Weak: the worker ends when the layer (which holds the only strong sender) goes.
        let listener_tx = tx.downgrade();
        let listener_counters = Arc::clone(&counters);
        let block_list = Arc::clone(&wiring.blocks);
        let worker = worker::Worker::new(
            client,
            config,
            prefix,
            wiring,
            Arc::clone(&counters),
            Arc::clone(&blocks),
        );
        if let Err(e) = std::thread::Builder::new()
            .name("tracing-usr-redis".into())
            .spawn(move || worker.run(rx))
        {
            warnings.push(ConfigWarning::new(
                ENV_REDIS_URL,
                format!("cannot start the Redis thread ({e}); detection stays in this process"),
            ));
            return None;
        }
        block_list.set_external(Arc::clone(&blocks) as Arc<dyn ExternalBlocks>);
        block_list.set_listener(move |change: &BlockChange| {
            let Some(tx) = listener_tx.upgrade() else { return };
            if tx.try_send(Msg::Block(change.clone())).is_err() {
                listener_counters.queue_drops.fetch_add(1, Ordering::Relaxed);
            }
        });
        Some(Arc::new(Self { tx, counters, blocks }))
    }

    /// Hands `obs` to Redis; gives it back when Redis is down or the queue is full (the caller
    /// judges it locally). Never waits.
    pub(crate) fn submit(&self, obs: Observation) -> Option<Observation> {
        if !self.counters.connected.load(Ordering::Acquire) {
            self.counters.fallen_back.fetch_add(1, Ordering::Relaxed);
            return Some(obs);
        }
        let Err(e) = self.tx.try_send(Msg::Observe(obs)) else {
            return None;
        };
        self.counters.queue_drops.fetch_add(1, Ordering::Relaxed);
        match e.into_inner() {
            Msg::Observe(obs) => Some(obs),
            Msg::Block(_) => None,
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        ClusterStats {
            connected: c.connected.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            fallen_back: c.fallen_back.load(Ordering::Relaxed),
            queue_drops: c.queue_drops.load(Ordering::Relaxed),
            blocks_shared: c.blocks_shared.load(Ordering::Relaxed),
            remote_blocks: self.blocks.len.load(Ordering::Relaxed) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret_and_the_password() {
        let config = RedisConfig::new("redis://app:hunter2@cache:6379/0", "s3cret");
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("cache:6379"), "{text}");
    }

    #[test]
    fn no_secret_no_redis_mode() {
        let mut warnings = Vec::new();
        let var = |name: &str| (name == ENV_REDIS_URL).then(|| "redis://127.0.0.1:1".to_owned());
        assert!(RedisConfig::from_env(&var, &mut warnings).is_none());
        assert_eq!(warnings[0].variable, ENV_REDIS_SECRET);
    }

    #[test]
    fn an_unreadable_ca_file_warns_and_keeps_the_system_roots() {
        let mut warnings = Vec::new();
        let var = |name: &str| match name {
            ENV_REDIS_URL => Some("rediss://cache:6380".to_owned()),
            ENV_REDIS_SECRET => Some("s".to_owned()),
            ENV_REDIS_CA_FILE => Some("/nonexistent/ca.pem".to_owned()),
            _ => None,
        };
        let config = RedisConfig::from_env(&var, &mut warnings).expect("still configured");
        assert!(config.ca_pem.is_none());
        assert_eq!(warnings[0].variable, ENV_REDIS_CA_FILE);
    }

    #[test]
    fn announcements_are_read_strictly() {
        let blocks = SharedBlocks::new(Keyer::new(b"k"));
        let tag = blocks.keyer.user("alice");
        assert!(blocks.apply(&format!("+u:{tag} 0")));
        assert!(blocks.is_user_blocked("alice") && !blocks.is_user_blocked("bob"));
        for garbage in [
            "",
            "+",
            "+u:zz 0",
            &format!("*u:{tag} 0"),
            &format!("+u:{tag} soon"),
            "é",
        ] {
            assert!(!blocks.apply(garbage), "{garbage:?}");
        }
        assert!(blocks.apply(&format!("-u:{tag} 0")));
        assert!(!blocks.is_user_blocked("alice"));
        assert!(blocks.apply(&format!("+u:{tag} 1")), "an end in the past");
        assert!(!blocks.is_user_blocked("alice"));
        assert_eq!(blocks.len.load(Ordering::Relaxed), 0, "ended blocks are not kept");
    }

    #[test]
    fn a_bad_url_is_an_error_that_does_not_show_its_password() {
        for url in [
            "redis://:hunter2@cache:notaport",
            "http://:hunter2@cache",
            "rediss://:hunter2@",
        ] {
            let e = worker::client(url, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.is_empty(), "{url} is not a Redis URL");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(worker::client("unix:/run/redis.sock", None).is_ok());
    }
}
