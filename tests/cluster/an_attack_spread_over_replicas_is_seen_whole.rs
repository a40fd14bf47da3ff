//! One attack spread by a load balancer over three replicas: counted whole on Redis, one
//! signal, raised by the replica whose event crossed the threshold; per process, unseen.
use std::time::{Duration, Instant};

use tracing_usr::detection::{DetectionConfig, KeyKind, RuleId, Severity};

use crate::setup::{all_signals, replica_with, replicas, RedisServer, SECRET};

/// 90 failed logins over 20 accounts from one IP, round-robin over three replicas (30 each).
fn stuffing(replicas: &[crate::setup::Replica]) {
    for i in 0..90 {
        replicas[i % replicas.len()].failure("203.0.113.9", &format!("user-{}", i % 20));
        if i == 29 {
            assert!(
                all_signals(replicas).is_empty(),
                "nothing before the 31st failure"
            );
        }
    }
}

#[test]
fn credential_stuffing_round_robin_raises_one_signal_on_the_replica_of_the_31st_failure() {
    let redis = RedisServer::start();
    let replicas = replicas(Some(&redis), 3, &DetectionConfig::default());
    stuffing(&replicas);
    let signals = all_signals(&replicas);
    assert_eq!(signals.len(), 1, "one signal for the cluster: {signals:#?}");
    let (replica, signal) = &signals[0];
    assert_eq!(*replica, 30 % 3, "raised where the 31st failure landed");
    assert_eq!(signal.rule, RuleId::CredentialStuffing);
    assert_eq!((signal.severity, signal.key_kind), (Severity::Low, KeyKind::Ip));
    assert_eq!(signal.key, "203.0.113.9");
    assert_eq!(signal.count, 31, "the cluster-wide count");
    assert_eq!(
        signal.distinct, 6,
        "distinct accounts, counted up to the threshold"
    );
    assert_eq!(signal.user_agent.as_deref(), Some("attack-bot/1.0"));
    assert!(signal.trace_id.is_some());
    for r in &replicas {
        let stats = r.stats();
        assert!(
            stats.connected && stats.sent == 30 && stats.fallen_back == 0,
            "{stats:?}"
        );
    }
}

#[test]
fn the_same_run_per_process_raises_nothing() {
    let replicas = replicas(None, 3, &DetectionConfig::default());
    stuffing(&replicas);
    assert!(
        all_signals(&replicas).is_empty(),
        "each replica saw 30 failures: not more than 30"
    );
}

#[test]
fn brute_force_over_replicas_then_the_escalation_blocks_the_user_on_all_three() {
    let redis = RedisServer::start();
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::BruteForce).block_user = true;
    let replicas = replicas(Some(&redis), 3, &config);
    for i in 0..41 {
        replicas[i % 3].failure(&format!("198.51.100.{}", i % 4), "victim");
    }
    let signals = all_signals(&replicas);
    assert_eq!(signals.len(), 1, "{signals:#?}");
    let (replica, signal) = &signals[0];
    assert_eq!(
        (*replica, signal.rule, signal.severity),
        (40 % 3, RuleId::BruteForce, Severity::Low)
    );
    assert_eq!((signal.key.as_str(), signal.count), ("victim", 41));

    // A success from an IP that never failed does not escalate.
    replicas[0].success("192.0.2.200", "victim", "id-victim").unwrap();
    assert!(all_signals(&replicas).is_empty());
    assert!(!replicas[2].h.handle.block_list().is_user_blocked("id-victim"));

    // One from an IP that contributed does, once, and the account is blocked everywhere.
    replicas[1]
        .success("198.51.100.2", "victim", "id-victim")
        .unwrap();
    let start = Instant::now();
    let signals = all_signals(&replicas);
    assert_eq!(signals.len(), 1, "{signals:#?}");
    let (replica, signal) = &signals[0];
    assert_eq!(
        (*replica, signal.severity, signal.escalation),
        (1, Severity::Critical, true)
    );
    for r in &replicas {
        crate::setup::wait_for("the block on every replica", || {
            r.h.handle.block_list().is_user_blocked("id-victim")
        });
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "enforced in {:?}",
        start.elapsed()
    );
    let blocked = replicas[2]
        .h
        .run(|| tracing_usr::identify(&tracing_usr::User::new("id-victim")));
    assert!(
        matches!(blocked, Err(tracing_usr::SdkError::Blocked { .. })),
        "{blocked:?}"
    );
    replicas[2]
        .success("198.51.100.3", "victim", "id-second")
        .unwrap();
    assert!(
        all_signals(&replicas).is_empty(),
        "one escalation per open signal"
    );
}

#[test]
fn replicas_with_different_secrets_do_not_share_counts() {
    let redis = RedisServer::start();
    let a = replica_with(Some(&redis), DetectionConfig::default(), SECRET);
    let b = replica_with(Some(&redis), DetectionConfig::default(), "another secret");
    for i in 0..40 {
        [&a, &b][i % 2].failure("203.0.113.10", &format!("user-{i}"));
    }
    assert!(
        a.signals().is_empty() && b.signals().is_empty(),
        "20 failures each, in two key spaces"
    );
    let mut conn = redis.connection();
    let logs: Vec<String> = redis::cmd("KEYS")
        .arg("tracing-usr:{shop}:c:appsec-ato-groupby-ip:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(logs.len(), 2, "one IP, two tags: {logs:?}");
}
