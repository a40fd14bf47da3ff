//! The replicas: each a [`Harness`] whose layer shares detection on one test `redis-server`,
//! with a signal sink, and the helpers the behaviour files share.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_usr::detection::{ClusterStats, DetectionConfig, RedisConfig, Signal};

pub(crate) use crate::support::redis::RedisServer;
use crate::support::{builder_with_env, Harness};

pub(crate) const SECRET: &str = "a secret every replica shares";

pub(crate) struct Replica {
    pub(crate) h: Harness,
    signals: Arc<Mutex<Vec<Signal>>>,
}

/// A replica on `redis` (none: detection in process only) with `config` and `secret`.
pub(crate) fn replica_with(redis: Option<&RedisServer>, config: DetectionConfig, secret: &str) -> Replica {
    replica_from(
        redis,
        secret,
        builder_with_env(&[("DD_SERVICE", "shop")])
            .with_detection(config)
            .unwrap(),
    )
}

/// A replica of `builder` (service `shop`, its detection settings) on `redis`.
pub(crate) fn replica_from(
    redis: Option<&RedisServer>,
    secret: &str,
    builder: tracing_usr::Builder,
) -> Replica {
    let signals = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let signals = Arc::clone(&signals);
        move |s: &Signal| signals.lock().unwrap().push(s.clone())
    };
    let mut builder = builder.with_signal_sink(sink);
    if let Some(redis) = redis {
        builder = builder.with_redis(RedisConfig::new(redis.url(), secret));
    }
    let replica = Replica {
        h: Harness::new(builder),
        signals,
    };
    if redis.is_some() {
        wait_for("the replica to reach Redis", || replica.stats().connected);
    }
    replica
}

/// A replica with the Redis settings `config`, not waiting for a connection.
pub(crate) fn unchecked_replica(config: RedisConfig) -> Replica {
    let signals = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let signals = Arc::clone(&signals);
        move |s: &Signal| signals.lock().unwrap().push(s.clone())
    };
    let builder = builder_with_env(&[]).with_signal_sink(sink).with_redis(config);
    Replica {
        h: Harness::new(builder),
        signals,
    }
}

/// `n` replicas on `redis` with `config`.
pub(crate) fn replicas(redis: Option<&RedisServer>, n: usize, config: &DetectionConfig) -> Vec<Replica> {
    (0..n)
        .map(|_| replica_with(redis, config.clone(), SECRET))
        .collect()
}

/// Polls `f` for at most 5 s.
pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Replica {
    pub(crate) fn stats(&self) -> ClusterStats {
        self.h.handle.cluster_stats().unwrap_or_default()
    }

    /// Events this replica's Redis thread has finished with (shared or judged locally).
    fn done(&self) -> u64 {
        let s = self.stats();
        s.sent + s.fallen_back
    }

    /// Runs `f` in a request root span from `ip`, then waits until the Redis thread has judged
    /// the business events it recorded (`events` of them), so the replicas' events interleave
    /// in a known order.
    pub(crate) fn request(&self, ip: &str, events: u64, f: impl FnOnce()) {
        let before = self.done();
        self.h.run(|| {
            let _root =
                tracing::info_span!("request", http.client_ip = ip, http.useragent = "attack-bot/1.0")
                    .entered();
            f()
        });
        if self.stats().connected {
            wait_for("the event to be judged", || self.done() >= before + events);
        }
    }

    pub(crate) fn failure(&self, ip: &str, login: &str) {
        self.request(ip, 1, || {
            tracing_usr::track_login_failure(login, true, None, ()).unwrap()
        });
    }

    /// A login success (the SDK's answer: `Blocked` for a blocked user).
    pub(crate) fn success(&self, ip: &str, login: &str, user_id: &str) -> Result<(), tracing_usr::SdkError> {
        let mut result = Ok(());
        self.request(ip, 1, || {
            result =
                tracing_usr::track_login_success(login, user_id, (), tracing_usr::SetUserOptions::default())
        });
        result
    }

    /// The signals delivered so far, taken.
    pub(crate) fn signals(&self) -> Vec<Signal> {
        self.h.handle.flush().unwrap();
        std::mem::take(&mut *self.signals.lock().unwrap())
    }
}

/// The signals of every replica, with the index of the replica that raised each.
pub(crate) fn all_signals(replicas: &[Replica]) -> Vec<(usize, Signal)> {
    replicas
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.signals().into_iter().map(move |s| (i, s)))
        .collect()
}
