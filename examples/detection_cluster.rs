//! Three replicas of one service share detection on Redis: a credential-stuffing run spread
//! round-robin over them raises one signal, and the IP it blocks is refused by all three.
//!
//! ```text
//! TRACING_USR_REDIS_URL=redis://127.0.0.1:6379 cargo run --example detection_cluster
//! ```
//!
//! Without `TRACING_USR_REDIS_URL` the example starts a throwaway `redis-server` (Debian package
//! `redis-server`) on a free loopback port. `TRACING_USR_REDIS_SECRET` sets the cluster secret
//! (a demo secret otherwise). Each replica is its own layer and subscriber, as three processes
//! would be.

use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::detection::{DetectionConfig, RedisConfig, RuleId, Signal};
use tracing_usr::{Handle, JsonLines};

const ATTACKER: &str = "203.0.113.9";

/// A `redis-server` of this example's own, stopped at the end.
struct Throwaway(Child);

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_url() -> Result<(String, Option<Throwaway>), String> {
    if let Ok(url) = std::env::var("TRACING_USR_REDIS_URL") {
        return Ok((url, None));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("TRACING_USR_REDIS_URL is not set and redis-server cannot be started ({e}); install Redis (Debian: apt-get install redis-server) or point TRACING_USR_REDIS_URL at one")
        })?;
    println!("started a throwaway redis-server on 127.0.0.1:{port}");
    Ok((format!("redis://127.0.0.1:{port}"), Some(Throwaway(child))))
}

struct Replica {
    dispatch: Dispatch,
    handle: Handle,
}

fn replica(n: usize, url: &str, secret: &str) -> Replica {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::CredentialStuffing).block_ip = true;
    let sink = move |s: &Signal| {
        println!(
            "[replica {n}] signal {} ({}) for {} {}: {} failures, {} accounts",
            s.rule,
            s.severity,
            s.key_kind.as_str(),
            s.key,
            s.count,
            s.distinct
        )
    };
    let layer = tracing_usr::builder()
        .with_json_lines(JsonLines::None)
        .with_detection(config)
        .expect("valid detection settings")
        .with_signal_sink(sink)
        .with_redis(RedisConfig::new(url, secret))
        .build();
    let handle = layer.handle();
    Replica {
        dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(start.elapsed())
}

fn judged(handle: &Handle) -> u64 {
    handle
        .cluster_stats()
        .map_or(0, |s| s.sent + s.fallen_back + s.queue_drops)
}

fn main() -> Result<(), String> {
    let (url, _server) = redis_url()?;
    let secret = std::env::var("TRACING_USR_REDIS_SECRET")
        .unwrap_or_else(|_| "demo secret, not for production".into());
    let replicas: Vec<Arc<Replica>> = (0..3).map(|n| Arc::new(replica(n, &url, &secret))).collect();
    for r in &replicas {
        wait_for("Redis", || r.handle.cluster_stats().is_some_and(|s| s.connected))?;
    }
    println!("3 replicas share detection on {url}; 40 failed logins over 20 accounts from {ATTACKER}, round-robin:");
    for i in 0..40 {
        let r = &replicas[i % 3];
        let before = judged(&r.handle);
        tracing::dispatcher::with_default(&r.dispatch, || {
            let _root = tracing::info_span!("POST /login", http.client_ip = ATTACKER).entered();
            let _ = tracing_usr::track_login_failure(&format!("user-{}", i % 20), true, None, ());
        });
        // Keep the order of the run visible: each failure is counted before the next.
        wait_for("the failure to be counted", || judged(&r.handle) > before)?;
    }
    let ip: IpAddr = ATTACKER.parse().expect("an IP");
    for (n, r) in replicas.iter().enumerate() {
        let took = wait_for("the block", || r.handle.block_list().is_ip_blocked(ip))?;
        r.handle.flush().map_err(|e| e.to_string())?;
        println!(
            "[replica {n}] {ATTACKER} is blocked here (within {took:?}); {:?}",
            r.handle.cluster_stats().unwrap_or_default()
        );
    }
    Ok(())
}
