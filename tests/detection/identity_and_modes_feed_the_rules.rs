//! What the rules see of the user: the merged identity at close, the mode, the field path.

use tracing_usr::detection::{DetectionConfig, RuleId};
use tracing_usr::{Mode, User};

use crate::setup::{one, quiet, setup, setup_with};
use crate::support::builder_with_env;

#[test]
fn privilege_rules_judge_the_merged_identity_at_close() {
    let s = setup(DetectionConfig::default());
    let admin_activity = |user: Option<User>| {
        s.request("192.0.2.70", || {
            tracing_usr::track_sensitive_activity("refund", Some("admin"), ()).unwrap();
            // Identified after the activity: the merged identity at close counts.
            if let Some(user) = user {
                tracing_usr::identify(&user).unwrap();
            }
        });
        s.h.handle.flush().unwrap();
        let mut rules: Vec<_> = s.signals.take().into_iter().map(|s| s.rule).collect();
        rules.sort();
        rules
    };
    assert_eq!(
        admin_activity(Some(User::new("u1").with_role("user"))),
        vec![RuleId::PrivilegeViolationUser]
    );
    assert_eq!(admin_activity(Some(User::new("u2").with_role("admin"))), vec![]);
    assert_eq!(
        admin_activity(Some(User::new("u3").with_role("Admin"))),
        vec![RuleId::PrivilegeViolationUser]
    );
    assert_eq!(
        admin_activity(Some(User::new("u4"))),
        vec![],
        "no role at all: no signal"
    );
    assert_eq!(admin_activity(None), vec![RuleId::PrivilegeViolationIp]);
    // Another required role never matches.
    s.request("192.0.2.70", || {
        tracing_usr::track_sensitive_activity("refund", Some("user"), ()).unwrap()
    });
    s.h.handle.flush().unwrap();
    assert!(s.signals.take().is_empty());
    // The field-path role counts too.
    s.h.run(|| {
        let _root = tracing::info_span!("request", usr.id = "f1", usr.role = "viewer").entered();
        tracing::info!(
            usr.event = "activity.sensitive",
            name = "refund",
            required_role = "admin"
        );
    });
    s.h.handle.flush().unwrap();
    let got = s.signals.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rule, RuleId::PrivilegeViolationUser);
}

#[test]
fn disabled_mode_sees_only_sdk_events_and_skips_the_unauthenticated_rule() {
    let s = setup_with(
        DetectionConfig::default(),
        builder_with_env(&[]).with_mode(Mode::Disabled),
    );
    for _ in 0..10 {
        s.request("192.0.2.80", || tracing::info!(usr.event = "payment.failure"));
    }
    s.h.handle.flush().unwrap();
    assert!(
        s.signals.take().is_empty(),
        "field-path events are ignored in disabled mode"
    );
    s.request("192.0.2.80", || {
        tracing_usr::track_sensitive_activity("wipe", Some("admin"), ()).unwrap()
    });
    s.h.handle.flush().unwrap();
    assert!(s.signals.take().is_empty());
    quiet(&s, 3, |_| {
        s.request("192.0.2.80", || tracing_usr::track_payment_failure(()).unwrap())
    });
    s.request("192.0.2.80", || tracing_usr::track_payment_failure(()).unwrap());
    assert_eq!(one(&s).rule, RuleId::PaymentFailures);
}

#[test]
fn field_path_events_feed_detection_with_the_exported_account() {
    let s = setup_with(
        DetectionConfig::default(),
        builder_with_env(&[]).with_mode(Mode::Anonymization),
    );
    for _ in 0..41 {
        s.request("192.0.2.90", || {
            tracing::info!(
                usr.event = "users.login.failure",
                usr.login = "ada",
                usr.exists = true
            );
        });
    }
    s.h.handle.flush().unwrap();
    let got = s.signals.take();
    let bf: Vec<_> = got.iter().filter(|s| s.rule == RuleId::BruteForce).collect();
    assert_eq!(bf.len(), 1, "{got:#?}");
    assert!(
        bf[0].key.starts_with("anon_"),
        "the account as exported: {}",
        bf[0].key
    );
    assert!(!format!("{got:?}").contains("\"ada\""));
}
