//! Events recorded before the client IP is known are judged once it is, at their own time.
use std::sync::Arc;

use tracing_subscriber::prelude::*;
use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, RuleId};
use tracing_usr::JsonLines;

use crate::setup::{one, setup, Signals};
use crate::support::builder_with_env;

#[test]
fn events_wait_for_the_client_ip_and_are_judged_at_their_own_time() {
    let s = setup(DetectionConfig::default());
    // The IP is recorded after the events (as a late middleware would): evaluated then.
    for _ in 0..4 {
        s.h.run(|| {
            let root = tracing::info_span!("request", http.client_ip = tracing::field::Empty);
            let _e = root.enter();
            tracing_usr::track_payment_failure(()).unwrap();
            s.advance(10);
            assert!(
                s.signals.take().is_empty(),
                "nothing judged before the IP is known"
            );
            root.record("http.client_ip", "192.0.2.60");
        });
    }
    s.h.handle.flush().unwrap();
    let signal = one(&s);
    assert_eq!(signal.rule, RuleId::PaymentFailures);
    // Judged at the events' own recording times (0, 10, 20, 30), not when the IP came.
    assert_eq!((signal.first_seen, signal.last_seen), (0, 30));

    // Without any IP: judged when the root closes; IP rules skipped, account rules apply.
    for _ in 0..41 {
        s.h.run(|| {
            let _root = tracing::info_span!("request").entered();
            tracing_usr::track_login_failure("no-ip-victim", true, None, ()).unwrap();
        });
    }
    s.h.handle.flush().unwrap();
    let got = s.signals.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].rule, got[0].key.as_str()),
        (RuleId::BruteForce, "no-ip-victim")
    );
}

#[test]
fn deferred_events_are_judged_when_nothing_is_exported() {
    let clock = ManualClock::new();
    let signals = Signals::default();
    let layer = builder_with_env(&[])
        .with_json_lines(JsonLines::None)
        .with_clock(Arc::new(clock))
        .with_signal_sink(signals.sink())
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..11 {
            let _root = tracing::info_span!("request").entered();
            tracing_usr::track_password_reset(None, Some("someone"), true, ()).unwrap();
        }
        // An admin-only activity without a user: the privilege rule runs when the root closes.
        let _root = tracing::info_span!("admin").entered();
        tracing_usr::track_sensitive_activity("delete_all", Some("admin"), ()).unwrap();
    });
    handle.flush().unwrap();
    let mut rules: Vec<_> = signals.take().into_iter().map(|s| s.rule).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![RuleId::PrivilegeViolationIp, RuleId::PasswordResetBruteForce]
    );
}

#[test]
fn http_client_ip_wins_over_the_peer_address_whatever_the_order() {
    let s = setup(DetectionConfig::default());
    for _ in 0..4 {
        s.h.run(|| {
            // As a proxy-aware middleware records them: the peer first, the client after.
            let root = tracing::info_span!(
                "request",
                network.client.ip = "10.0.0.1",
                http.client_ip = tracing::field::Empty
            );
            root.record("http.client_ip", "203.0.113.77");
            let _e = root.enter();
            tracing_usr::track_payment_failure(()).unwrap();
            // A lower-ranked field recorded later changes nothing.
            root.record("network.client.ip", "10.0.0.2");
        });
    }
    assert_eq!(one(&s).key, "203.0.113.77");
}
