//! In-process detection through the public API: every rule at its exact threshold, sliding
//! windows on a manual clock, the signal lifecycle, deferral until the client IP is known,
//! root tags and exported signal events, actions and their expiry, bounded tables, settings.

#[path = "../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing_subscriber::prelude::*;
use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, Detector, KeyKind, RuleId, Severity, Signal, SignalStats};
use tracing_usr::{Builder, JsonLines, Mode, SetUserOptions, User};

use support::{builder_with_env, Harness};

/// The signals a closure sink received.
#[derive(Clone, Default)]
struct Signals(Arc<Mutex<Vec<Signal>>>);

impl Signals {
    fn take(&self) -> Vec<Signal> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Setup {
    h: Harness,
    clock: ManualClock,
    signals: Signals,
}

fn setup_with(config: DetectionConfig, builder: Builder) -> Setup {
    let clock = ManualClock::new();
    let signals = Signals::default();
    let sink = {
        let signals = signals.clone();
        move |s: &Signal| signals.0.lock().unwrap().push(s.clone())
    };
    let builder = builder
        .with_clock(Arc::new(clock.clone()))
        .with_detection(config)
        .unwrap()
        .with_signal_sink(sink);
    Setup {
        h: Harness::new(builder),
        clock,
        signals,
    }
}

fn setup(config: DetectionConfig) -> Setup {
    setup_with(config, builder_with_env(&[]))
}

impl Setup {
    /// Runs `f` inside a request root span from `ip`.
    fn request<R>(&self, ip: &str, f: impl FnOnce() -> R) -> R {
        self.h.run(|| {
            let _root =
                tracing::info_span!("request", http.client_ip = ip, http.useragent = "attack-bot/1.0")
                    .entered();
            f()
        })
    }

    fn failure(&self, ip: &str, login: &str) {
        self.request(ip, || {
            tracing_usr::track_login_failure(login, true, None, ()).unwrap()
        });
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

/// `n` calls of `f(i)`, asserting that none raised a signal.
fn quiet(s: &Setup, n: usize, f: impl Fn(usize)) {
    for i in 0..n {
        f(i);
        let got = s.signals.take();
        assert!(got.is_empty(), "signal after {} events: {got:#?}", i + 1);
    }
}

fn one(s: &Setup) -> Signal {
    let got = s.signals.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    got.into_iter().next().unwrap()
}

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

#[test]
fn windows_slide_on_the_clock_and_signals_live_by_keep_alive() {
    let s = setup(DetectionConfig::default());
    let ip = "192.0.2.40";
    let signup = |n: &str| s.request(ip, || tracing_usr::track_signup(n, None, ()).unwrap());
    // 10 signups, then 300 s later one more: the window (5 min) holds only 1.
    quiet(&s, 10, |i| signup(&format!("a{i}")));
    s.advance(300);
    quiet(&s, 10, |i| signup(&format!("b{i}")));
    // The 11th inside the window.
    s.advance(10);
    signup("b10");
    let opened = one(&s);
    assert_eq!(opened.count, 11);
    // While open, further matches extend the signal without a duplicate.
    s.advance(200);
    quiet(&s, 20, |i| signup(&format!("c{i}")));
    // The keep-alive runs out 300 s after the last match; counters keep running, so the next
    // burst opens a new signal.
    s.advance(301);
    quiet(&s, 10, |i| signup(&format!("d{i}")));
    signup("d10");
    assert_eq!(one(&s).rule, RuleId::SignupRate);
}

#[test]
fn a_signal_closes_after_the_maximum_duration_even_when_kept_alive() {
    let mut config = DetectionConfig::default();
    config.max_signal_duration = Duration::from_secs(3600);
    let s = setup(config);
    let ip = "192.0.2.41";
    let pay = || s.request(ip, || tracing_usr::track_payment_failure(()).unwrap());
    quiet(&s, 3, |_| pay());
    pay();
    one(&s);
    // A burst of 4 every 4 minutes matches each time and keeps it open (window 5 min) until
    // the hour is over.
    let mut reopened = 0;
    for _ in 0..20 {
        s.advance(240);
        for _ in 0..4 {
            pay();
        }
        reopened += s.signals.take().len();
    }
    assert_eq!(reopened, 1, "exactly one new signal after the 1-hour maximum");
}

#[test]
fn the_root_gets_the_signal_tag_and_the_signal_event_is_exported() {
    // The default sink: one WARN event, exported like any other.
    let clock = ManualClock::new();
    let h = Harness::new(builder_with_env(&[]).with_clock(Arc::new(clock)));
    for i in 0..4 {
        h.run(|| {
            let _root = tracing::info_span!("checkout", http.client_ip = "192.0.2.50", attempt = i).entered();
            tracing_usr::track_payment_failure(()).unwrap();
        });
    }
    let roots = h.roots();
    let tagged: Vec<_> = roots
        .iter()
        .filter(|r| {
            r.meta
                .iter()
                .any(|(k, _)| k == "tracing_usr.signal.bl-payment-failures")
        })
        .collect();
    assert_eq!(tagged.len(), 1, "only the request that opened the signal");
    let root = tagged[0];
    assert!(root
        .meta
        .iter()
        .any(|(k, v)| k == "tracing_usr.signal.bl-payment-failures" && v == "medium"));
    assert!(root
        .metrics
        .iter()
        .any(|(k, v)| k == "_sampling_priority_v1" && *v == 2.0));
    let logs: Vec<_> = h
        .logs()
        .into_iter()
        .filter(|l| l.target == "tracing_usr::signal")
        .collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let log = &logs[0];
    assert_eq!(
        log.trace_id,
        Some(root.trace_id),
        "delivered inside the request that raised it"
    );
    let field = |name: &str| {
        log.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(field("rule").as_deref(), Some("bl-payment-failures"));
    assert_eq!(field("severity").as_deref(), Some("medium"));
    assert_eq!(field("count").as_deref(), Some("4"));
    assert_eq!(field("signal_trace_id"), Some(format!("{:032x}", root.trace_id)));
    // The signal event is not read as a business event.
    assert!(!root
        .meta
        .iter()
        .any(|(k, _)| k.starts_with("appsec.events.tracing")));
}

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
    let sink = {
        let signals = signals.clone();
        move |s: &Signal| signals.0.lock().unwrap().push(s.clone())
    };
    let layer = builder_with_env(&[])
        .with_json_lines(JsonLines::None)
        .with_clock(Arc::new(clock))
        .with_signal_sink(sink)
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

#[test]
fn tables_evict_the_stalest_key_without_an_open_signal_and_never_exceed_the_bound() {
    let mut config = DetectionConfig::default();
    config.max_keys = 4;
    let s = setup(config);
    let signup = |ip: &str| s.request(ip, || tracing_usr::track_signup("x", None, ()).unwrap());
    // 192.0.2.1 opens a signal; 192.0.2.2 has 10 signups (one short).
    quiet(&s, 10, |_| signup("192.0.2.1"));
    signup("192.0.2.1");
    one(&s);
    s.advance(1);
    quiet(&s, 10, |_| signup("192.0.2.2"));
    // Three more IPs: the table holds 4 keys, so 192.0.2.2 (stalest without a signal) goes.
    for ip in ["192.0.2.3", "192.0.2.4", "192.0.2.5"] {
        s.advance(1);
        signup(ip);
    }
    let detector = s.h.handle.detector().unwrap();
    assert_eq!(detector.tracked_keys(), 4);
    signup("192.0.2.2");
    assert!(
        s.signals.take().is_empty(),
        "192.0.2.2 was evicted: its count restarted"
    );
    // 192.0.2.1 kept its open signal: its next matches extend it instead of opening a new one.
    signup("192.0.2.1");
    assert!(s.signals.take().is_empty());
    // Spraying 10,000 IPs never grows the table beyond the bound.
    for i in 0..10_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        signup(&ip);
    }
    assert!(detector.tracked_keys() <= 4);
    assert!(detector.memory_usage() <= Detector::memory_bound(detector.config()));
}

#[test]
fn settings_come_from_the_builder_a_file_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("tracing-usr-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("detection.json");
    std::fs::write(
        &file,
        r#"{"max_keys": 50, "rules": {"def-000-zwj": {"threshold": 1, "block_ip": true}, "appsec-ato-bf": {"enabled": false}}}"#,
    )
    .unwrap();
    let from_file = |builder: Builder| {
        let layer = builder.with_json_lines(JsonLines::None).build();
        layer.handle().detector()
    };
    let detector = from_file(builder_with_env(&[]).with_detection_file(&file).unwrap()).unwrap();
    assert_eq!(detector.config().max_keys, 50);
    assert_eq!(detector.config().rule(RuleId::PaymentFailures).threshold, 1);
    assert!(detector.config().rule(RuleId::PaymentFailures).block_ip);
    assert!(!detector.config().rule(RuleId::BruteForce).enabled);
    let path = file.to_str().unwrap();
    let detector = from_file(builder_with_env(&[("TRACING_USR_DETECTION_FILE", path)])).unwrap();
    assert_eq!(detector.config().max_keys, 50);
    assert!(from_file(builder_with_env(&[("TRACING_USR_DETECTION", "off")])).is_none());
    assert!(from_file(builder_with_env(&[]).with_detection_enabled(false)).is_none());
    assert!(from_file(builder_with_env(&[])).unwrap().config() == &DetectionConfig::default());

    // Invalid settings: an error from the builder, a warning and the defaults from the env.
    std::fs::write(&file, r#"{"rules": {"appsec-ato-bf": {"threshold": "many"}}}"#).unwrap();
    let err = builder_with_env(&[])
        .with_detection_file(&file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rules.appsec-ato-bf.threshold"), "{err}");
    let h = Harness::with_env(&[
        ("TRACING_USR_DETECTION_FILE", path),
        ("TRACING_USR_DETECTION", "maybe"),
    ]);
    let warnings = h.config_warnings(2);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("rules.appsec-ato-bf.threshold")));
    assert!(warnings.iter().any(|w| w.contains("maybe")));
    assert_eq!(h.handle.detector().unwrap().config(), &DetectionConfig::default());
    let mut bad = DetectionConfig::default();
    bad.rule_mut(RuleId::PrivilegeViolationUser).block_ip = true;
    assert!(builder_with_env(&[]).with_detection(bad).is_err());
    let mut bad = DetectionConfig::default();
    bad.rule_mut(RuleId::SignupRate).block_user = true;
    assert!(builder_with_env(&[]).with_detection(bad).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn concurrent_requests_count_exactly() {
    let s = Arc::new(setup(DetectionConfig::default()));
    // 8 threads × 50 failures against one account from one IP: 400 failures, exactly one
    // brute-force signal (one account: no credential stuffing).
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.failure("192.0.2.100", "shared-account");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = s.signals.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].rule, RuleId::BruteForce);
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

#[test]
fn signals_raised_inside_layer_callbacks_are_delivered_by_the_helper_thread() {
    let s = setup(DetectionConfig::default());
    for _ in 0..4 {
        // Field-path events are seen inside `on_event`: the signal cannot be delivered there.
        s.request("192.0.2.120", || {
            tracing::info!(usr.event = "payment.failure", provider = "acme")
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        got = s.signals.take();
    }
    assert_eq!(got.len(), 1, "delivered without a flush");
    assert_eq!(got[0].rule, RuleId::PaymentFailures);
    assert_eq!(
        s.h.handle.signal_stats(),
        SignalStats {
            delivered: 1,
            dropped: 0
        }
    );
}

#[test]
fn a_panicking_sink_loses_the_signal_not_the_request() {
    let clock = ManualClock::new();
    let h = Harness::new(
        builder_with_env(&[])
            .with_clock(Arc::new(clock))
            .with_signal_sink(|_: &Signal| panic!("sink bug")),
    );
    for _ in 0..4 {
        let verdict = h.run(|| {
            let _root = tracing::info_span!("request", http.client_ip = "192.0.2.130").entered();
            tracing_usr::track_payment_failure(())
        });
        assert!(verdict.is_ok());
    }
    assert_eq!(
        h.handle.signal_stats(),
        SignalStats {
            delivered: 0,
            dropped: 1
        }
    );
    // The root still carries the signal tag.
    assert!(h.roots().iter().any(|r| r
        .meta
        .iter()
        .any(|(k, _)| k == "tracing_usr.signal.bl-payment-failures")));
}

#[test]
fn a_bad_detection_setting_says_what_kind_of_problem_it_is() {
    use tracing_usr::detection::{load_config, parse_config, DetectionConfigErrorKind as Kind};
    let kind = |text: &str| parse_config(text).map(|_| ()).unwrap_err().kind();
    assert_eq!(kind("{not json"), Kind::Syntax);
    assert_eq!(kind("[1]"), Kind::Syntax);
    assert_eq!(kind(r#"{"max_keyz": 3}"#), Kind::Unknown);
    assert_eq!(kind(r#"{"rules": {"no-such-rule": {}}}"#), Kind::Unknown);
    assert_eq!(kind(r#"{"max_keys": -1}"#), Kind::InvalidValue);
    assert_eq!(
        kind(r#"{"max_keys": 0}"#),
        Kind::InvalidValue,
        "validated after parsing"
    );
    let missing = load_config(std::path::Path::new("/nonexistent/tracing-usr-detection.json")).unwrap_err();
    assert_eq!(missing.kind(), Kind::Read);
    assert!(
        missing
            .message()
            .contains("/nonexistent/tracing-usr-detection.json"),
        "{missing}"
    );
}
