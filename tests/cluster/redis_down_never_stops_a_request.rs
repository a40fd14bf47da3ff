//! Redis killed mid-run: no request waits, detection goes on in each process with one warning
//! and the counters; Redis back, shared counting resumes by itself.
use std::time::{Duration, Instant};

use tracing_usr::detection::{DetectionConfig, RuleId};

use crate::setup::{all_signals, replicas, wait_for, RedisServer, Replica};

/// The application thread's time for one failed login (the wait for the Redis thread aside).
fn timed_failure(r: &Replica, ip: &str, login: &str) -> Duration {
    let start = Instant::now();
    r.h.run(|| {
        let _root = tracing::info_span!("request", http.client_ip = ip).entered();
        tracing_usr::track_login_failure(login, true, None, ()).unwrap();
    });
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn detection_warnings(r: &Replica) -> Vec<String> {
    let events = r.h.warnings.events.lock().unwrap();
    events
        .iter()
        .filter(|(target, _)| target == "tracing_usr::detection")
        .map(|(_, text)| text.clone())
        .collect()
}

#[test]
fn redis_killed_mid_run_falls_back_to_local_detection_and_recovers() {
    let mut redis = RedisServer::start();
    let replicas = replicas(Some(&redis), 2, &DetectionConfig::default());
    let up: Vec<Duration> = (0..20)
        .map(|i| timed_failure(&replicas[0], "192.0.2.1", &format!("up-{i}")))
        .collect();

    redis.kill();
    // 40 failures from one IP over 10 accounts, all on replica 0: judged there, at once.
    let down: Vec<Duration> = (0..40)
        .map(|i| timed_failure(&replicas[0], "203.0.113.20", &format!("user-{}", i % 10)))
        .collect();
    let (up, down) = (median(up), median(down));
    eprintln!("app-thread time per login (median): Redis up {up:?}, down {down:?}");
    assert!(
        down <= up * 3 + Duration::from_micros(200),
        "Redis down: {down:?} per login, up: {up:?}"
    );
    wait_for("the local detector's signal", || {
        all_signals(&replicas[..1])
            .iter()
            .any(|(_, s)| s.rule == RuleId::CredentialStuffing && s.key == "203.0.113.20")
    });
    wait_for("one warning", || !detection_warnings(&replicas[0]).is_empty());
    let warnings = detection_warnings(&replicas[0]);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("this replica's events only"), "{warnings:?}");
    let stats = replicas[0].stats();
    assert!(
        !stats.connected && stats.failed >= 1 && stats.fallen_back >= 30,
        "{stats:?}"
    );

    redis.restart();
    for r in &replicas {
        wait_for("the replica to reconnect", || r.stats().connected);
    }
    // Shared again: 31 failures split over the two replicas make one signal.
    for i in 0..31 {
        replicas[i % 2].failure("203.0.113.30", &format!("user-{}", i % 7));
    }
    let signals = all_signals(&replicas);
    let shared: Vec<_> = signals.iter().filter(|(_, s)| s.key == "203.0.113.30").collect();
    assert_eq!(shared.len(), 1, "{signals:#?}");
    assert_eq!(shared[0].0, 30 % 2);
}

#[test]
fn a_redis_that_stops_answering_never_holds_a_request() {
    let redis = RedisServer::start();
    let replicas = replicas(Some(&redis), 1, &DetectionConfig::default());
    let r = &replicas[0];
    redis.freeze(true);
    // Each call to a frozen Redis waits out its 250 ms timeout, on the Redis thread only.
    let times: Vec<Duration> = (0..40)
        .map(|i| timed_failure(r, "203.0.113.40", &format!("user-{}", i % 10)))
        .collect();
    let slowest = *times.iter().max().unwrap();
    assert!(
        slowest < Duration::from_millis(250),
        "a request waited on Redis: {slowest:?}"
    );
    wait_for("the fallback", || !r.stats().connected);
    wait_for("the local detector's signal", || {
        all_signals(&replicas)
            .iter()
            .any(|(_, s)| s.key == "203.0.113.40")
    });
    redis.freeze(false);
    wait_for("the replica to come back", || r.stats().connected);
    let stats = r.stats();
    assert_eq!(
        stats.sent + stats.fallen_back + stats.queue_drops,
        40,
        "every event judged once: {stats:?}"
    );
}
