//! Every rule of docs/detection.md at its exact threshold, its window and its escalation.

use serde_json::json;
use tracing_usr::detection::{DetectionConfig, KeyKind, RuleId, Severity};
use tracing_usr::{SetUserOptions, User};

use crate::setup::{one, quiet, setup};

#[test]
fn credential_stuffing_fires_on_the_31st_failure_with_6_accounts_then_escalates_once() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::CredentialStuffing).block_ip = true;
    config.rule_mut(RuleId::CredentialStuffing).block_user = true;
    let s = setup(config);
    quiet(&s, 30, |i| s.failure("198.51.100.7", &format!("user-{}", i % 6)));
    s.failure("198.51.100.7", "user-0");
    let signal = one(&s);
    assert_eq!(signal.rule, RuleId::CredentialStuffing);
    assert_eq!(signal.severity, Severity::Low);
    assert_eq!(
        (signal.key_kind, signal.key.as_str()),
        (KeyKind::Ip, "198.51.100.7")
    );
    assert_eq!((signal.count, signal.distinct), (31, 6));
    assert_eq!(signal.user_agent.as_deref(), Some("attack-bot/1.0"));
    assert!(signal.trace_id.is_some() && !signal.escalation);
    // Opening blocks the IP (block_ip), not any user.
    assert!(s
        .h
        .handle
        .block_list()
        .is_ip_blocked("198.51.100.7".parse().unwrap()));

    // A login success from the attacking IP while the signal is open: critical, once.
    s.request("198.51.100.7", || {
        let verdict = tracing_usr::track_login_success("user-3", "id-3", (), SetUserOptions::default());
        assert!(verdict.is_ok(), "the id was not blocked yet when it logged in");
    });
    let escalation = one(&s);
    assert_eq!(escalation.severity, Severity::Critical);
    assert!(escalation.escalation);
    assert_eq!(escalation.account.as_deref(), Some("user-3"));
    assert!(tracing_usr::is_user_blocked("id-3") || s.h.handle.block_list().is_user_blocked("id-3"));
    s.request("198.51.100.7", || {
        let _ = tracing_usr::track_login_success("user-4", "id-4", (), SetUserOptions::default());
    });
    assert!(s.signals.take().is_empty(), "one escalation per open signal");
    assert!(!s.h.handle.block_list().is_user_blocked("id-4"));

    // Blocks expire after 15 minutes.
    s.advance(15 * 60);
    assert!(!s
        .h
        .handle
        .block_list()
        .is_ip_blocked("198.51.100.7".parse().unwrap()));
    assert!(!s.h.handle.block_list().is_user_blocked("id-3"));
}

#[test]
fn credential_stuffing_needs_more_than_5_distinct_accounts() {
    let s = setup(DetectionConfig::default());
    // 40 failures over 5 accounts, and failures with neither login nor id count only in total.
    quiet(&s, 40, |i| s.failure("198.51.100.8", &format!("User-{}", i % 5)));
    // Accounts are counted trimmed and lowercase: " user-1 " is not a sixth account.
    s.failure("198.51.100.8", " user-1 ");
    assert!(s.signals.take().is_empty());
    s.failure("198.51.100.8", "user-5");
    assert_eq!(one(&s).distinct, 6);
}

#[test]
fn credential_stuffing_window_slides() {
    let s = setup(DetectionConfig::default());
    quiet(&s, 30, |i| s.failure("192.0.2.1", &format!("a{i}")));
    // The first failure was 600 s ago: outside the 10-minute window.
    s.advance(600);
    s.failure("192.0.2.1", "late");
    assert!(s.signals.take().is_empty());
    // 599 s after the second failure, 31 failures are inside one window.
    let s = setup(DetectionConfig::default());
    quiet(&s, 30, |i| s.failure("192.0.2.2", &format!("a{i}")));
    s.advance(599);
    s.failure("192.0.2.2", "late");
    assert_eq!(one(&s).first_seen, 0);
}

#[test]
fn brute_force_fires_on_the_41st_failure_and_escalates_only_from_a_contributing_ip() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::BruteForce).block_ip = true;
    config.rule_mut(RuleId::BruteForce).block_user = true;
    let s = setup(config);
    // Failures from 4 IPs against one account (case and spaces differ: still one account).
    quiet(&s, 40, |i| {
        s.failure(
            &format!("203.0.113.{}", i % 4),
            if i % 2 == 0 { "victim" } else { " Victim" },
        )
    });
    s.failure("203.0.113.1", "victim");
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.severity),
        (RuleId::BruteForce, Severity::Low)
    );
    assert_eq!(
        (signal.key_kind, signal.key.as_str(), signal.count),
        (KeyKind::Account, "victim", 41)
    );
    assert!(
        !s.h.handle
            .block_list()
            .is_ip_blocked("203.0.113.1".parse().unwrap()),
        "brute force blocks only the IP of an escalating success"
    );
    // The owner logs in from an IP that took no part: no escalation.
    s.request("192.0.2.200", || {
        tracing_usr::track_login_success("victim", "id-victim", (), SetUserOptions::default()).unwrap()
    });
    assert!(s.signals.take().is_empty());
    // From an attacking IP: critical; that IP and the account are blocked.
    s.request("203.0.113.2", || {
        tracing_usr::track_login_success("victim", "id-victim", (), SetUserOptions::default()).unwrap()
    });
    let escalation = one(&s);
    assert_eq!(
        (escalation.severity, escalation.escalation),
        (Severity::Critical, true)
    );
    let blocks = s.h.handle.block_list();
    assert!(blocks.is_ip_blocked("203.0.113.2".parse().unwrap()));
    assert!(!blocks.is_ip_blocked("203.0.113.3".parse().unwrap()));
    assert!(blocks.is_user_blocked("id-victim"));
    // The blocked account's next identification is refused, until the block expires.
    let verdict = s.request("192.0.2.200", || tracing_usr::identify(&User::new("id-victim")));
    assert!(
        matches!(verdict, Err(tracing_usr::SdkError::Blocked { .. })),
        "{verdict:?}"
    );
    s.advance(15 * 60);
    assert!(s
        .request("192.0.2.200", || tracing_usr::identify(&User::new("id-victim")))
        .is_ok());
}

#[test]
fn failures_alone_never_block_an_account() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::BruteForce).block_user = true;
    config.rule_mut(RuleId::CredentialStuffing).block_user = true;
    let s = setup(config);
    for i in 0..100 {
        s.request("203.0.113.9", || {
            tracing_usr::track_login_failure("owner", true, Some("id-owner"), ()).unwrap();
            tracing_usr::track_login_failure(&format!("other-{i}"), false, None, ()).unwrap();
        });
    }
    assert_eq!(
        s.signals.take().len(),
        2,
        "one brute-force and one credential-stuffing signal"
    );
    assert!(!s.h.handle.block_list().is_user_blocked("id-owner"));
    assert!(!s
        .h
        .handle
        .block_list()
        .is_ip_blocked("203.0.113.9".parse().unwrap()));
}

#[test]
fn sensitive_activity_rate_is_per_ip_and_name() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::SensitiveActivityRate).block_ip = true;
    let s = setup(config);
    let act = |ip: &str, name: &str| {
        s.request(ip, || {
            tracing_usr::track_sensitive_activity(name, None, ()).unwrap()
        });
    };
    quiet(&s, 100, |_| act("192.0.2.10", "export"));
    act("192.0.2.10", "coupon");
    act("192.0.2.11", "export");
    assert!(s.signals.take().is_empty());
    act("192.0.2.10", "export");
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.severity),
        (RuleId::SensitiveActivityRate, Severity::Medium)
    );
    assert_eq!(
        (signal.key_kind, signal.key.as_str(), signal.count),
        (KeyKind::IpAndName, "192.0.2.10 export", 101)
    );
    assert!(s
        .h
        .handle
        .block_list()
        .is_ip_blocked("192.0.2.10".parse().unwrap()));
}

#[test]
fn signup_deletion_payment_and_reset_rules_fire_exactly_above_their_thresholds() {
    let s = setup(DetectionConfig::default());
    let ip = "192.0.2.20";
    // Signups: > 10 in 5 min.
    quiet(&s, 10, |i| {
        s.request(ip, || {
            tracing_usr::track_signup(&format!("new-{i}"), None, ()).unwrap()
        })
    });
    s.request(ip, || tracing_usr::track_signup("new-x", None, ()).unwrap());
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.severity, signal.count),
        (RuleId::SignupRate, Severity::Medium, 11)
    );

    // Deletions: > 5 distinct deleted ids; repeats do not count.
    quiet(&s, 12, |i| {
        s.request(ip, || {
            tracing_usr::track_user_delete(&format!("gone-{}", i % 5), ()).unwrap()
        })
    });
    s.request(ip, || tracing_usr::track_user_delete("gone-5", ()).unwrap());
    let signal = one(&s);
    assert_eq!((signal.rule, signal.distinct), (RuleId::AccountDeletion, 6));

    // Payment failures: > 3.
    quiet(&s, 3, |_| {
        s.request(ip, || {
            tracing_usr::track_payment_failure(json!({"provider": "acme"})).unwrap()
        })
    });
    s.request(ip, || tracing_usr::track_payment_failure(()).unwrap());
    assert_eq!(one(&s).rule, RuleId::PaymentFailures);

    // Password resets: > 5 distinct existing → medium; > 5 distinct missing → low; and the
    // reset-token brute force per account: > 10.
    let s = setup(DetectionConfig::default());
    quiet(&s, 5, |i| {
        s.request(ip, || {
            tracing_usr::track_password_reset(None, Some(&format!("u{i}")), true, ()).unwrap()
        })
    });
    s.request(ip, || {
        tracing_usr::track_password_reset(None, Some("u5"), true, ()).unwrap()
    });
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.severity, signal.distinct),
        (RuleId::PasswordResetEnumeration, Severity::Medium, 6)
    );
    quiet(&s, 5, |i| {
        s.request(ip, || {
            tracing_usr::track_password_reset(None, Some(&format!("x{i}")), false, ()).unwrap()
        })
    });
    s.request(ip, || {
        tracing_usr::track_password_reset(None, Some("x5"), false, ()).unwrap()
    });
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.severity),
        (RuleId::PasswordResetEnumeration, Severity::Low)
    );

    let s = setup(DetectionConfig::default());
    quiet(&s, 10, |i| {
        s.request(&format!("192.0.2.{}", 30 + i), || {
            tracing_usr::track_password_reset(Some("id-7"), Some("Target"), true, ()).unwrap()
        })
    });
    s.request("192.0.2.99", || {
        tracing_usr::track_password_reset(Some("id-7"), Some("target"), true, ()).unwrap()
    });
    let signal = one(&s);
    assert_eq!(
        (signal.rule, signal.key_kind, signal.count),
        (RuleId::PasswordResetBruteForce, KeyKind::Account, 11)
    );
    assert!(signal.actions.is_empty(), "signal only");
}
