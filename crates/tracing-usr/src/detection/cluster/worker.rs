//! The Redis side of shared detection: one thread with a current-thread tokio runtime, a
//! connection manager (RESP3, so the block channel's messages arrive on the same connection
//! and survive reconnects), the rules' script per event, and the local fallback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushKind, RedisResult, Script, Value};
use tracing_usr_core::blocking::{unix_now, BlockChange, BlockKind};
use tracing_usr_core::detection::cluster::{Keyer, Outcome, Plan, SCRIPT};
use tracing_usr_core::detection::{Action, Observation, Signal};

use super::{Counters, Msg, RedisConfig, SharedBlocks, Wiring};

/// How often a replica that lost Redis tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Stores or lifts one block, and announces it: `KEYS[1]` the index set, `KEYS[2]` the block;
/// `ARGV`: `+` or `-`, the member, the end (Unix seconds, 0 never), the TTL, the channel.
const BLOCK_SCRIPT: &str = r#"
if ARGV[1] == '+' then
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
  redis.call('SADD', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[5], ARGV[1] .. ARGV[2] .. ' ' .. ARGV[3])
return 1
"#;

/// The blocks in force: `KEYS[1]` the index set; `ARGV[1]` the block key prefix. Answers
/// member, end, member, end, …; drops members whose block expired.
const LOAD_SCRIPT: &str = r#"
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ends = redis.call('GET', ARGV[1] .. member)
  if ends then
    out[#out + 1] = member
    out[#out + 1] = ends
  else
    redis.call('SREM', KEYS[1], member)
  end
end
return out
"#;

/// Events sent to Redis at once, at most.
const BATCH: usize = 256;

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "timed out"))
}

/// A client for `url` (`unix:/path` accepted for `unix:///path`), speaking RESP3; with `ca`,
/// TLS trusts those roots only.
pub(super) fn client(url: &str, ca: Option<&[u8]>) -> RedisResult<Client> {
    let url = match url.strip_prefix("unix:") {
        Some(path) if !path.starts_with("//") => format!("unix://{path}"),
        _ => url.to_owned(),
    };
    if url.starts_with("rediss:") {
        // TLS needs a process-wide crypto provider; one set by the application stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let info = url.as_str().into_connection_info()?;
    let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(redis);
    match ca {
        Some(pem) => {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            };
            Client::build_with_tls(info, certificates)
        }
        None => Client::open(info),
    }
}

pub(super) struct Worker {
    client: Client,
    config: RedisConfig,
    keyer: Keyer,
    prefix: String,
    wiring: Wiring,
    counters: Arc<Counters>,
    blocks: Arc<SharedBlocks>,
    script: Arc<Script>,
    block_script: Script,
    load_script: Script,
    replica: String,
    events: u64,
    /// Unix seconds at the detector's zero.
    epoch: u64,
    /// Set by the connection when it drops: the block copy is reloaded once it is back.
    lost: Arc<AtomicBool>,
    /// Block changes Redis did not take yet.
    pending: Vec<BlockChange>,
    warned: bool,
}

impl Worker {
    pub(super) fn new(
        client: Client,
        config: RedisConfig,
        prefix: String,
        wiring: Wiring,
        counters: Arc<Counters>,
        blocks: Arc<SharedBlocks>,
    ) -> Self {
        let epoch = unix_now().saturating_sub(u64::from(wiring.detector.now()));
        let replica = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), epoch)
        );
        Self {
            client,
            config,
            keyer: blocks.keyer.clone(),
            prefix,
            wiring,
            counters,
            blocks,
            script: Arc::new(Script::new(SCRIPT)),
            block_script: Script::new(BLOCK_SCRIPT),
            load_script: Script::new(LOAD_SCRIPT),
            replica,
            events: 0,
            epoch,
            lost: Arc::new(AtomicBool::new(false)),
            pending: Vec::new(),
            warned: false,
        }
    }

    pub(super) fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Msg>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            self.warn("cannot start the Redis runtime; detection stays in this process".to_owned());
            return;
        };
        runtime.block_on(async move {
            let mut conn = None;
            loop {
                match conn.as_mut() {
                    None => conn = self.connect().await,
                    Some(c) if self.lost.swap(false, Ordering::AcqRel) => self.resume(c).await,
                    Some(_) => {}
                }
                match tokio::time::timeout(RETRY, rx.recv()).await {
                    Ok(None) => return,
                    Ok(Some(msg)) => {
                        let mut batch = vec![msg];
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(msg) => batch.push(msg),
                                Err(_) => break,
                            }
                        }
                        self.handle(&mut conn, batch).await;
                    }
                    Err(_) => {
                        if let Some(c) = conn.as_mut() {
                            if !self.counters.connected.load(Ordering::Acquire) {
                                self.resume(c).await;
                            }
                        }
                    }
                }
            }
        });
    }

    /// The first connection; `None` while Redis cannot be reached (retried every second).
    async fn connect(&mut self) -> Option<ConnectionManager> {
        let timeout = self.config.timeout;
        let manager = ConnectionManagerConfig::new()
            .set_push_sender(self.push_handler())
            .set_automatic_resubscription()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(RETRY);
        let connected = tokio::time::timeout(
            timeout.max(Duration::from_secs(1)),
            ConnectionManager::new_with_config(self.client.clone(), manager),
        )
        .await;
        let why = match connected {
            Ok(Ok(mut conn)) => match conn.subscribe(&self.channel()).await {
                Ok(()) => {
                    self.resume(&mut conn).await;
                    return Some(conn);
                }
                // Dropped: a connection that missed the channel would miss every block.
                Err(e) => format!("cannot subscribe to the block channel ({e})"),
            },
            Ok(Err(e)) => format!("cannot connect ({e})"),
            Err(_) => "cannot connect (timed out)".to_owned(),
        };
        self.down(why);
        None
    }

    /// What the connection does with Redis's push messages: block announcements update the
    /// local copy (a lift also lifts this replica's own entry); a disconnection turns local
    /// judging on until the worker has reconnected and reloaded.
    fn push_handler(
        &self,
    ) -> impl Fn(redis::PushInfo) -> Result<(), redis::aio::SendError> + Send + Sync + 'static {
        let lost = Arc::clone(&self.lost);
        let counters = Arc::clone(&self.counters);
        let blocks = Arc::clone(&self.blocks);
        let list = Arc::clone(&self.wiring.blocks);
        let keyer = self.keyer.clone();
        move |info| {
            match info.kind {
                PushKind::Message => {
                    let Some(Value::BulkString(bytes)) = info.data.last() else {
                        return Ok(());
                    };
                    let message = String::from_utf8_lossy(bytes);
                    if !blocks.apply(&message) {
                        return Ok(());
                    }
                    let lifted = |prefix| message.strip_prefix(prefix).and_then(|m| m.split(' ').next());
                    if let Some(tag) = lifted("-u:") {
                        list.lift_runtime_where(BlockKind::User, |v| keyer.user(v) == tag);
                    } else if let Some(tag) = lifted("-i:") {
                        list.lift_runtime_where(BlockKind::Ip, |v| {
                            v.parse().is_ok_and(|ip| keyer.ip(ip) == tag)
                        });
                    }
                }
                PushKind::Disconnection => {
                    counters.connected.store(false, Ordering::Release);
                    lost.store(true, Ordering::Release);
                }
                _ => {}
            }
            Ok(())
        }
    }

    fn channel(&self) -> String {
        format!("{}blocks", self.prefix)
    }

    /// Back on Redis: the current blocks loaded, the changes it missed sent, shared counting on.
    async fn resume(&mut self, conn: &mut ConnectionManager) {
        let loaded: RedisResult<Vec<String>> = self
            .call(
                self.load_script
                    .key(self.channel())
                    .arg(format!("{}b:", self.prefix))
                    .invoke_async(conn),
            )
            .await;
        let Ok(loaded) = loaded else {
            self.down("cannot load the blocks".to_owned());
            return;
        };
        let entries: HashMap<String, u64> = loaded
            .chunks_exact(2)
            .filter_map(|pair| Some((pair[0].clone(), pair[1].parse().ok()?)))
            .collect();
        self.blocks.replace(entries);
        for change in std::mem::take(&mut self.pending) {
            if !self.share_block(conn, &change).await {
                return;
            }
        }
        if !self.counters.connected.swap(true, Ordering::AcqRel) && self.warned {
            self.wiring.signals.with_registered(|| {
                tracing::info!(target: "tracing_usr::detection", "Redis answers again: detection is shared again");
            });
        }
        self.warned = false;
    }

    async fn call<T>(&self, fut: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(timed_out()),
        }
    }

    /// Redis failed: count locally from now on, warn once per outage.
    fn down(&mut self, why: String) {
        self.counters.connected.store(false, Ordering::Release);
        if !self.warned {
            self.warned = true;
            self.warn(format!(
                "Redis {why}: detection counts this replica's events only until Redis answers again"
            ));
        }
    }

    fn warn(&self, message: String) {
        self.wiring.signals.with_registered(|| {
            tracing::warn!(target: "tracing_usr::detection", "{message}");
        });
    }

    /// Handles what the queue held: block changes one by one, the events' scripts all sent at
    /// once on the multiplexed connection (Redis runs them in order) and answered in order.
    async fn handle(&mut self, conn: &mut Option<ConnectionManager>, batch: Vec<Msg>) {
        let mut observations = Vec::with_capacity(batch.len());
        for msg in batch {
            match msg {
                Msg::Observe(obs) => observations.push(obs),
                Msg::Block(change) => match conn.as_mut() {
                    Some(c) if self.counters.connected.load(Ordering::Acquire) => {
                        self.share_block(c, &change).await;
                    }
                    _ => self.pending.push(change),
                },
            }
        }
        let mut shared = match conn.as_ref() {
            Some(c) if self.counters.connected.load(Ordering::Acquire) => {
                self.observe(c, &observations).await
            }
            _ => Vec::new(),
        };
        shared.resize_with(observations.len(), || None);
        for (obs, shared) in observations.iter().zip(shared) {
            // Counted once its signals are queued, so a reader of the counters sees them.
            let (signals, counter) = match shared {
                Some(signals) => (signals, &self.counters.sent),
                None => (self.wiring.detector.observe(obs), &self.counters.fallen_back),
            };
            self.raise(signals);
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The rules' script for each observation; `None` for those Redis did not judge (the
    /// caller judges them locally).
    async fn observe(
        &mut self,
        conn: &ConnectionManager,
        observations: &[Observation],
    ) -> Vec<Option<Vec<Signal>>> {
        let mut sent = Vec::with_capacity(observations.len());
        for obs in observations {
            let mut plan = Plan::new(self.wiring.detector.config(), obs, &self.keyer, &self.prefix);
            if plan.steps.is_empty() {
                sent.push((plan, None));
                continue;
            }
            self.events += 1;
            let event = format!("{}:{}", self.replica, self.events);
            let args = plan.args(self.epoch + u64::from(obs.time), &event);
            // The answer needs only the steps' rules and texts: the keys move to the script.
            let keys: Vec<String> = plan
                .steps
                .iter_mut()
                .flat_map(|s| s.keys.iter_mut().map(std::mem::take))
                .collect();
            let (script, mut conn, timeout) = (Arc::clone(&self.script), conn.clone(), self.config.timeout);
            let task = tokio::spawn(async move {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for arg in args {
                    invocation.arg(arg);
                }
                match tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(timed_out()),
                }
            });
            sent.push((plan, Some(task)));
        }
        let mut out = Vec::with_capacity(sent.len());
        for ((plan, task), obs) in sent.into_iter().zip(observations) {
            let Some(task) = task else {
                out.push(Some(Vec::new()));
                continue;
            };
            let answer = task.await.unwrap_or_else(|_| Err(timed_out()));
            out.push(self.outcome(&plan, obs, answer));
        }
        out
    }

    /// The signals of one answer of the rules' script; `None` (Redis is down from now on) for
    /// an error or an answer of another shape.
    fn outcome(
        &mut self,
        plan: &Plan,
        obs: &Observation,
        answer: RedisResult<Vec<i64>>,
    ) -> Option<Vec<Signal>> {
        let outcomes: Option<Vec<Outcome>> = match &answer {
            Ok(ints) if ints.len() == 4 * plan.steps.len() => {
                ints.chunks_exact(4).map(Outcome::from_ints).collect()
            }
            _ => None,
        };
        let Some(outcomes) = outcomes else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            let why = match answer {
                Err(e) => format!("failed ({e})"),
                Ok(_) => "answered something else than the detection script's counts".to_owned(),
            };
            self.down(why);
            return None;
        };
        let epoch = self.epoch;
        let local = |unix: u64| u32::try_from(unix.saturating_sub(epoch)).unwrap_or(u32::MAX);
        Some(plan.signals(&self.wiring.detector, obs, &outcomes, local))
    }

    /// Applies the signals' actions (which the block list reports back as changes to share)
    /// and queues them for the sink.
    fn raise(&self, signals: Vec<Signal>) {
        for signal in &signals {
            for action in &signal.actions {
                match action {
                    Action::BlockIp { ip, duration } => self.wiring.blocks.block_ip(*ip, Some(*duration)),
                    Action::BlockUser { user_id, duration } => {
                        self.wiring.blocks.block_user(user_id, Some(*duration))
                    }
                }
            }
        }
        self.wiring.signals.enqueue(signals);
    }

    /// Stores and announces one block change; `false` (kept for later) when Redis failed.
    async fn share_block(&mut self, conn: &mut ConnectionManager, change: &BlockChange) -> bool {
        let (member, kind) = match change.kind {
            BlockKind::User => (format!("u:{}", self.keyer.user(&change.value)), "u"),
            BlockKind::Ip => match change.value.parse() {
                Ok(ip) => (format!("i:{}", self.keyer.ip(ip)), "i"),
                Err(_) => return true,
            },
        };
        debug_assert!(member.starts_with(kind));
        let now = unix_now();
        let end = change.expiration.unwrap_or(0);
        if !change.removed && end != 0 && end <= now {
            return true;
        }
        let ttl = if end == 0 { 0 } else { end - now };
        let sign = if change.removed { "-" } else { "+" };
        let result: RedisResult<i64> = self
            .call(
                self.block_script
                    .key(self.channel())
                    .key(format!("{}b:{member}", self.prefix))
                    .arg(sign)
                    .arg(&member)
                    .arg(end)
                    .arg(ttl)
                    .arg(self.channel())
                    .invoke_async(conn),
            )
            .await;
        match result {
            Ok(_) => {
                self.counters.blocks_shared.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.pending.push(change.clone());
                self.down(format!("failed ({e})"));
                false
            }
        }
    }
}
