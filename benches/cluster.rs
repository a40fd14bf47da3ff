//! Shared detection on Redis vs detection in process, in the same run, on a real `redis-server`
//! the bench starts on a free loopback port: the login request of `benches/detection.rs` (root
//! span with the client IP and user agent, a handler span, one login event; export off), keys
//! rotating over 1,000 IPs and 5,000 accounts.
//!
//! * `failure_local` / `failure_redis`: `track_login_failure`;
//! * `success_local` / `success_redis`: `track_login_success`.
//!
//! The criterion rungs with Redis run faster than one replica's Redis thread can share (about
//! 24,000 events/s): once the queue is full, the rest is judged locally, as in production. So
//! before the timings the bench also prints the application-thread time per failed login for
//! 40,000 logins in a row, local and with Redis (the queue holds them all), and, for the Redis
//! rungs, the Redis commands per login event (round
//! trips: `EVALSHA` and friends from `INFO commandstats`) and Redis's memory per attacking IP
//! once a full 10-minute window of failures from 1,000 IPs is stored (`used_memory` before and
//! after). The time is the application thread's (Redis is waited on by the Redis thread only);
//! the instruction counts (`benches/cluster_instructions.sh`) are of the whole process, the
//! Redis thread's work included.
//!
//! Run: `cargo bench --bench cluster` (needs `redis-server`, as the tests do).

#[path = "support/common.rs"]
mod common;
#[path = "support/login.rs"]
mod login;
#[path = "../tests/support/redis.rs"]
#[allow(dead_code)]
mod redis_server;

use std::time::{Duration, Instant};

use criterion::Criterion;
use login::{Logins, ACCOUNTS, IPS};
use redis_server::RedisServer;
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::detection::RedisConfig;
use tracing_usr::{Handle, JsonLines};

fn layer(redis: Option<&RedisServer>) -> (Dispatch, Handle) {
    let mut builder = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(JsonLines::None)
        .with_signal_sink(());
    if let Some(redis) = redis {
        // Generous: under callgrind the Redis thread runs tens of times slower.
        let config = RedisConfig::new(redis.url(), "bench secret")
            .with_timeout(Duration::from_secs(10))
            .with_queue(1_000_000);
        builder = builder.with_redis(config);
    }
    let layer = builder.build();
    let handle = layer.handle();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    if redis.is_some() {
        wait(|| handle.cluster_stats().is_some_and(|s| s.connected));
    }
    (dispatch, handle)
}

fn wait(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !f() {
        assert!(Instant::now() < deadline, "Redis did not keep up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the Redis thread has judged `n` events.
fn drained(handle: &Handle, n: u64) {
    wait(|| {
        handle
            .cluster_stats()
            .is_some_and(|s| s.sent + s.fallen_back + s.queue_drops >= n)
    });
}

const RUNGS: [(&str, bool, bool); 4] = [
    ("failure_local", false, false),
    ("failure_redis", false, true),
    ("success_local", true, false),
    ("success_redis", true, true),
];

fn info(redis: &RedisServer, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut redis.connection())
        .expect("INFO")
}

/// `name:value` of an INFO answer, or for `cmdstat_*` lines the `calls=` count.
fn info_number(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| {
            v.strip_prefix("calls=")
                .map_or(v, |c| c.split(',').next().unwrap_or("0"))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn round_trips(text: &str) -> u64 {
    [
        "cmdstat_evalsha",
        "cmdstat_eval",
        "cmdstat_script|load",
        "cmdstat_script",
    ]
    .iter()
    .map(|c| info_number(text, c))
    .sum()
}

/// Commands per login event, and Redis memory per attacking IP with a full window stored.
fn figures() {
    let keys = Logins::new();
    for (name, success) in [("failure", false), ("success", true)] {
        let redis = RedisServer::start();
        let (dispatch, handle) = layer(Some(&redis));
        let memory_before = info_number(&info(&redis, "memory"), "used_memory");
        let before = round_trips(&info(&redis, "commandstats"));
        const N: u64 = 40_000;
        let start = Instant::now();
        tracing::dispatcher::with_default(&dispatch, || {
            // Failures first for the successes, so their look-ups find state.
            for _ in 0..N {
                keys.request(false);
            }
        });
        let app_thread = start.elapsed();
        drained(&handle, N);
        let throughput = N as f64 / start.elapsed().as_secs_f64();
        let memory_after = info_number(&info(&redis, "memory"), "used_memory");
        let mid = round_trips(&info(&redis, "commandstats"));
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..N {
                keys.request(success);
            }
        });
        drained(&handle, 2 * N);
        let after = round_trips(&info(&redis, "commandstats"));
        if !success {
            let (local, _) = layer(None);
            let start = Instant::now();
            tracing::dispatcher::with_default(&local, || {
                for _ in 0..N {
                    keys.request(false);
                }
            });
            eprintln!(
                "application-thread time per failed login, {N} in a row: local {:.2} µs, Redis {:.2} µs",
                start.elapsed().as_secs_f64() * 1e6 / N as f64,
                app_thread.as_secs_f64() * 1e6 / N as f64,
            );
        }
        eprintln!(
            "{name}: {:.2} Redis commands per login event (round trips); Redis memory per attacking IP \
             ({} failures each over {ACCOUNTS} accounts, a full window): {} bytes; {throughput:.0} \
             failures/s shared by one replica; {:?}",
            (after - mid) as f64 / N as f64,
            N / u64::from(IPS),
            (memory_after - memory_before) / u64::from(IPS),
            handle.cluster_stats(),
        );
        let _ = before;
    }
}

fn bench(c: &mut Criterion) {
    figures();
    let redis = RedisServer::start();
    let keys = Logins::new();
    let mut group = c.benchmark_group("cluster");
    for (name, success, shared) in RUNGS {
        let (dispatch, handle) = layer(shared.then_some(&redis));
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(|| keys.request(success)));
        });
        if let Some(stats) = handle.cluster_stats() {
            eprintln!("{name}: {stats:?}");
        }
    }
    group.finish();
}

/// `TRACING_USR_BENCH=instructions:<rung>:<requests>`: that many requests of one rung, then the
/// wait for the Redis thread to judge them all; run under callgrind, and with 0 to subtract set-up.
fn instructions(rung: &str, n: u64) {
    let Some((_, success, shared)) = RUNGS.into_iter().find(|(name, _, _)| *name == rung) else {
        panic!("unknown rung {rung}");
    };
    let redis = shared.then(RedisServer::start);
    let keys = Logins::new();
    let (dispatch, handle) = layer(redis.as_ref());
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..n {
            keys.request(success);
        }
    });
    if shared {
        drained(&handle, n);
    }
}

fn main() {
    common::main_with(instructions, bench);
}
