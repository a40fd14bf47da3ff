//! Every stateful rule of docs/detection.md counted over three replicas: quiet up to its
//! threshold, one signal on the event after, raised by the replica that got it; and the
//! windows slide on Redis as they do in process.
use std::sync::Arc;
use std::time::Duration;

use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, KeyKind, RuleId, Severity};

use crate::setup::{all_signals, replica_from, replicas, RedisServer, Replica, SECRET};

/// `threshold` events round-robin over `replicas` are quiet, the next one raises one signal of
/// `rule` on the replica that got it; the signal, for more checks.
fn fires_after(
    replicas: &[Replica],
    threshold: usize,
    rule: RuleId,
    event: impl Fn(&Replica, usize),
) -> tracing_usr::detection::Signal {
    for i in 0..threshold {
        event(&replicas[i % replicas.len()], i);
    }
    let early = all_signals(replicas);
    assert!(
        early.is_empty(),
        "{rule}: a signal before the threshold: {early:#?}"
    );
    event(&replicas[threshold % replicas.len()], threshold);
    let signals = all_signals(replicas);
    assert_eq!(signals.len(), 1, "{rule}: {signals:#?}");
    let (replica, signal) = signals.into_iter().next().unwrap();
    assert_eq!((replica, signal.rule), (threshold % replicas.len(), rule));
    signal
}

#[test]
fn every_rate_and_distinct_rule_fires_once_across_three_replicas() {
    let redis = RedisServer::start();
    let r = replicas(Some(&redis), 3, &DetectionConfig::default());
    let signup = fires_after(&r, 10, RuleId::SignupRate, |r, i| {
        r.request("192.0.2.10", 1, || {
            tracing_usr::track_signup(&format!("new-{i}"), None, ()).unwrap()
        })
    });
    assert_eq!(
        (signup.severity, signup.key_kind, signup.count),
        (Severity::Medium, KeyKind::Ip, 11)
    );
    let payment = fires_after(&r, 3, RuleId::PaymentFailures, |r, _| {
        r.request("192.0.2.11", 1, || {
            tracing_usr::track_payment_failure(()).unwrap()
        })
    });
    assert_eq!((payment.severity, payment.count), (Severity::Medium, 4));
    let sensitive = fires_after(&r, 100, RuleId::SensitiveActivityRate, |r, _| {
        r.request("192.0.2.12", 1, || {
            tracing_usr::track_sensitive_activity("export", None, ()).unwrap()
        })
    });
    assert_eq!(
        (sensitive.key_kind, sensitive.key.as_str()),
        (KeyKind::IpAndName, "192.0.2.12 export")
    );
    let deletion = fires_after(&r, 5, RuleId::AccountDeletion, |r, i| {
        r.request("192.0.2.13", 1, || {
            tracing_usr::track_user_delete(&format!("del-{i}"), ()).unwrap()
        })
    });
    assert_eq!((deletion.severity, deletion.distinct), (Severity::Medium, 6));
    let existing = fires_after(&r, 5, RuleId::PasswordResetEnumeration, |r, i| {
        let target = format!("exists-{i}");
        r.request("192.0.2.14", 1, || {
            tracing_usr::track_password_reset(None, Some(&target), true, ()).unwrap()
        })
    });
    assert_eq!((existing.severity, existing.distinct), (Severity::Medium, 6));
    let missing = fires_after(&r, 5, RuleId::PasswordResetEnumeration, |r, i| {
        let target = format!("missing-{i}");
        r.request("192.0.2.15", 1, || {
            tracing_usr::track_password_reset(None, Some(&target), false, ()).unwrap()
        })
    });
    assert_eq!((missing.severity, missing.distinct), (Severity::Low, 6));
    let reset_bf = fires_after(&r, 10, RuleId::PasswordResetBruteForce, |r, i| {
        r.request(&format!("192.0.2.{}", 20 + i), 1, || {
            tracing_usr::track_password_reset(None, Some("the-target"), true, ()).unwrap()
        })
    });
    assert_eq!(
        (reset_bf.key_kind, reset_bf.key.as_str(), reset_bf.count),
        (KeyKind::Account, "the-target", 11)
    );
}

#[test]
fn windows_slide_on_redis_as_in_process() {
    let redis = RedisServer::start();
    let clock = ManualClock::new();
    let builder = crate::support::builder_with_env(&[("DD_SERVICE", "shop")])
        .with_clock(Arc::new(clock.clone()))
        .with_detection(DetectionConfig::default())
        .unwrap();
    let r = [replica_from(Some(&redis), SECRET, builder)];
    for i in 0..30 {
        r[0].failure("192.0.2.1", &format!("a{i}"));
    }
    // The first failure was 600 s ago: outside the 10-minute window.
    clock.advance(Duration::from_secs(600));
    r[0].failure("192.0.2.1", "late");
    assert!(all_signals(&r).is_empty());
    // 599 s after the second failure, 31 failures are inside one window.
    for i in 0..30 {
        r[0].failure("192.0.2.2", &format!("a{i}"));
    }
    clock.advance(Duration::from_secs(599));
    r[0].failure("192.0.2.2", "late");
    let signals = all_signals(&r);
    assert_eq!(signals.len(), 1, "{signals:#?}");
    assert_eq!(
        (signals[0].1.key.as_str(), signals[0].1.first_seen),
        ("192.0.2.2", 600)
    );
}
