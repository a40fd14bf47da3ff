//! What Redis holds after a run of every stateful rule: keyed tags only, never a login, an IP
//! or a user id in clear, in any key name or value.
use tracing_usr::detection::{DetectionConfig, RuleId};

use crate::setup::{all_signals, replicas, wait_for, RedisServer};

const IP: &str = "203.0.113.77";
const LOGIN: &str = "alice.smith@example.com";
const USER_ID: &str = "user-4711";
const OTHER_ID: &str = "user-4712";

#[test]
fn no_key_or_value_holds_a_login_an_ip_or_a_user_id() {
    let redis = RedisServer::start();
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::CredentialStuffing).block_ip = true;
    config.rule_mut(RuleId::CredentialStuffing).block_user = true;
    let replicas = replicas(Some(&redis), 2, &config);
    for i in 0..31 {
        replicas[i % 2].failure(IP, &format!("{i}.{LOGIN}"));
    }
    replicas[0].success(IP, LOGIN, USER_ID).unwrap();
    // The IP is blocked now; the SDK still records these events.
    replicas[1].request(IP, 5, || {
        tracing_usr::track_signup(LOGIN, Some(OTHER_ID), ()).unwrap();
        tracing_usr::track_user_delete(OTHER_ID, ()).unwrap();
        tracing_usr::track_password_reset(Some(OTHER_ID), Some(LOGIN), true, ()).unwrap();
        tracing_usr::track_payment_failure(()).unwrap();
        tracing_usr::track_sensitive_activity("export", None, ()).unwrap();
    });
    let signals = all_signals(&replicas);
    assert_eq!(
        signals.len(),
        2,
        "the stuffing signal and its escalation: {signals:#?}"
    );
    wait_for("the blocks in Redis", || replicas[0].stats().blocks_shared >= 2);

    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let rules = [
        "appsec-ato-groupby-ip",
        "appsec-ato-bf",
        "bl-signup-ratelimit",
        "bl-password-reset",
        "b:u:",
        "b:i:",
    ];
    for rule in rules {
        assert!(
            keys.iter().any(|k| k.contains(rule)),
            "no key for {rule}: {keys:#?}"
        );
    }
    let mut everything = String::new();
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
        everything.push_str(key);
        everything.push_str(&String::from_utf8_lossy(&dump));
    }
    for raw in [IP, LOGIN, "alice", USER_ID, "4711", OTHER_ID, "4712", "export"] {
        assert!(!everything.contains(raw), "{raw:?} is in Redis in clear");
    }
}
