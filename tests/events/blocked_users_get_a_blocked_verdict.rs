//! Listed users: SDK identity calls report them blocked, and the trace carries the block tags.
use std::sync::Arc;
use std::time::Duration;

use tracing::info_span;
use tracing_usr::blocking::{BlockEntry, ManualClock};
use tracing_usr::{SdkError, SetUserOptions, User};

use crate::support::{builder_with_env, Harness};

type Call = Box<dyn Fn() -> Result<(), SdkError>>;

fn harness(clock: &ManualClock) -> Harness {
    Harness::new(
        builder_with_env(&[])
            .with_clock(Arc::new(clock.clone()))
            .with_blocked_users([BlockEntry {
                value: "bad-user".into(),
                expiration: None,
            }]),
    )
}

fn blocked_id(result: Result<(), SdkError>) -> String {
    match result {
        Err(SdkError::Blocked { security_response_id }) => security_response_id,
        other => panic!("expected a blocked verdict, got {other:?}"),
    }
}

#[test]
fn every_identity_call_reports_a_blocked_user() {
    let clock = ManualClock::new();
    let h = harness(&clock);
    h.run(|| {
        let calls: Vec<(&str, Call)> = vec![
            (
                "identify",
                Box::new(|| tracing_usr::identify(&User::new("bad-user"))),
            ),
            (
                "set_user",
                Box::new(|| tracing_usr::set_user(&User::new("bad-user"), SetUserOptions::default())),
            ),
            (
                "track_user",
                Box::new(|| tracing_usr::track_user("l", "bad-user", None, ())),
            ),
            (
                "track_user_id",
                Box::new(|| tracing_usr::track_user_id("bad-user", None, ())),
            ),
            (
                "track_login_success",
                Box::new(|| tracing_usr::track_login_success("l", "bad-user", (), SetUserOptions::default())),
            ),
            (
                "track_signup",
                Box::new(|| tracing_usr::track_signup("l", Some("bad-user"), ())),
            ),
        ];
        for (name, call) in calls {
            let _root = info_span!("request", call = name).entered();
            let id = blocked_id(call());
            assert_eq!(id.len(), 36, "{name}: a UUID v4");
            assert!(tracing_usr::is_user_blocked("bad-user"));
        }
        let _root = info_span!("request", call = "someone else").entered();
        assert_eq!(tracing_usr::identify(&User::new("good-user")), Ok(()));
        assert!(
            !tracing_usr::is_user_blocked("Bad-User"),
            "exact, case-sensitive match"
        );
    });
    for root in h.roots() {
        let call = root.meta("call").unwrap().to_owned();
        if call == "someone else" {
            assert_eq!(root.meta("appsec.blocked"), None);
            continue;
        }
        assert_eq!(root.meta("appsec.blocked"), Some("true"), "{call}");
        assert_eq!(root.meta("appsec.event"), Some("true"));
        assert_eq!(root.meta("_dd.origin"), Some("appsec"));
        assert_eq!(
            root.metric("_sampling_priority_v1"),
            Some(2.0),
            "a block keeps the trace"
        );
        let trigger: serde_json::Value = serde_json::from_str(root.meta("_dd.appsec.json").unwrap()).unwrap();
        assert_eq!(trigger["triggers"][0]["rule"]["id"], "blk-001-002");
        assert_eq!(
            trigger["triggers"][0]["rule_matches"][0]["parameters"][0]["value"],
            "bad-user"
        );
        assert_eq!(
            root.meta("usr.id"),
            Some("bad-user"),
            "the identity is still recorded"
        );
    }
}

#[test]
fn failures_and_deletions_never_block_and_the_default_identity_is_checked_too() {
    let clock = ManualClock::new();
    let h = harness(&clock);
    h.run(|| {
        assert!(matches!(
            tracing_usr::set_user(&User::new("bad-user"), SetUserOptions::default()),
            Err(SdkError::Blocked { .. })
        ));
        let _root = info_span!("request").entered();
        assert_eq!(
            tracing_usr::track_login_failure("bad-user", true, Some("bad-user"), ()),
            Ok(())
        );
        assert_eq!(tracing_usr::track_user_delete("bad-user", ()), Ok(()));
    });
    assert_eq!(h.span("request").meta("appsec.blocked"), None);
}

#[test]
fn blocks_expire_on_the_layer_clock_and_the_list_changes_at_run_time() {
    let clock = ManualClock::new();
    let h = harness(&clock);
    let blocks = h.handle.block_list();
    blocks.block_user("temp-user", Some(Duration::from_secs(900)));
    h.run(|| {
        info_span!("first").in_scope(|| assert!(tracing_usr::identify(&User::new("temp-user")).is_err()));
        clock.advance(Duration::from_secs(900));
        info_span!("second").in_scope(|| assert_eq!(tracing_usr::identify(&User::new("temp-user")), Ok(())));
        blocks.replace_users([], 0);
        info_span!("third").in_scope(|| assert_eq!(tracing_usr::identify(&User::new("bad-user")), Ok(())));
    });
    assert_eq!(h.span("first").meta("appsec.blocked"), Some("true"));
    assert_eq!(h.span("second").meta("appsec.blocked"), None);
    assert_eq!(h.span("third").meta("appsec.blocked"), None);
}

#[test]
fn field_path_ids_are_checked_raw_or_hashed_but_not_in_disabled_mode() {
    for (mode, entry, blocked) in [
        ("identification", "user-1", true),
        ("anonymization", "user-1", true),
        ("anonymization", "anon_c6c289e49e9c05b2145860387b73bcb1", true),
        ("disabled", "user-1", false),
    ] {
        let h = Harness::new(
            builder_with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", mode)]).with_blocked_users([
                BlockEntry {
                    value: entry.into(),
                    expiration: None,
                },
            ]),
        );
        h.run(|| {
            let _root = info_span!("request").entered();
            info_span!("auth", usr.id = "user-1").in_scope(|| {});
        });
        let root = h.span("request");
        assert_eq!(root.meta("appsec.blocked").is_some(), blocked, "{mode} / {entry}");
        if blocked {
            let trigger: serde_json::Value =
                serde_json::from_str(root.meta("_dd.appsec.json").unwrap()).unwrap();
            let value = &trigger["triggers"][0]["rule_matches"][0]["parameters"][0]["value"];
            let exported = if mode == "anonymization" {
                "anon_c6c289e49e9c05b2145860387b73bcb1"
            } else {
                "user-1"
            };
            assert_eq!(value, exported, "the id that matched, in its exported form");
        }
    }
}

#[test]
fn a_login_success_event_of_a_blocked_user_blocks_the_trace() {
    let h = Harness::new(builder_with_env(&[]).with_blocked_users([BlockEntry {
        value: "u-9".into(),
        expiration: None,
    }]));
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing::info!(
            usr.event = "users.login.success",
            usr.login = "mallory",
            usr.id = "u-9"
        );
    });
    assert_eq!(h.span("request").meta("appsec.blocked"), Some("true"));
}

#[test]
fn a_blocked_client_ip_on_the_root_blocks_the_trace_and_actor_ip_is_tagged() {
    let h = Harness::new(
        builder_with_env(&[])
            .with_blocked_ips([BlockEntry {
                value: "203.0.113.7".into(),
                expiration: None,
            }])
            .with_blocked_users([BlockEntry {
                value: "bad-user".into(),
                expiration: None,
            }]),
    );
    h.run(|| {
        info_span!("from-ip", http.client_ip = "::ffff:203.0.113.7").in_scope(|| {});
        info_span!("child-field-only")
            .in_scope(|| info_span!("inner", network.client.ip = "203.0.113.7").in_scope(|| {}));
        let root = info_span!("user-from-ip", http.client_ip = tracing::field::Empty);
        root.record("http.client_ip", "198.51.100.1");
        root.in_scope(|| {
            let _ = tracing_usr::identify(&User::new("bad-user"));
        });
    });
    let by_ip = h.span("from-ip");
    assert_eq!(by_ip.meta("appsec.blocked"), Some("true"));
    assert_eq!(by_ip.meta("actor.ip"), Some("203.0.113.7"));
    let trigger: serde_json::Value = serde_json::from_str(by_ip.meta("_dd.appsec.json").unwrap()).unwrap();
    assert_eq!(trigger["triggers"][0]["rule"]["id"], "blk-001-001");
    assert_eq!(
        h.span("child-field-only").meta("appsec.blocked"),
        None,
        "only the root's client IP counts"
    );
    let by_user = h.span("user-from-ip");
    assert_eq!(by_user.meta("appsec.blocked"), Some("true"));
    assert_eq!(by_user.meta("actor.ip"), Some("198.51.100.1"));
}

#[test]
fn the_blocked_user_file_is_reloaded_when_it_changes() {
    let path = std::env::temp_dir().join(format!("tracing-usr-blocked-{}.json", std::process::id()));
    std::fs::write(&path, r#"[{"value": "from-file"}]"#).unwrap();
    let h = Harness::new(builder_with_env(&[]).with_blocked_users_file(&path, Duration::from_millis(20)));
    let blocked = |id: &str| h.run(|| info_span!("probe").in_scope(|| tracing_usr::is_user_blocked(id)));
    assert!(blocked("from-file"));
    assert!(!blocked("later"));
    // A broken file keeps the previous list.
    std::fs::write(&path, "not json").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(blocked("from-file"));
    std::fs::write(&path, r#"[{"value": "later", "expiration": 0}]"#).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !blocked("later") {
        assert!(std::time::Instant::now() < deadline, "the file was not reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!blocked("from-file"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn user_records_and_events_with_an_empty_usr_event_are_checked_like_fields() {
    let h = Harness::new(builder_with_env(&[]).with_blocked_users([BlockEntry {
        value: "u-5".into(),
        expiration: None,
    }]));
    h.run(|| {
        info_span!("record")
            .in_scope(|| tracing_usr::record_user(&serde_json::json!({"id": "u-5"})).unwrap());
        info_span!("event")
            .in_scope(|| tracing::info!(usr.event = "", usr.id = "u-5", "not a business event"));
    });
    assert_eq!(h.span("record").meta("appsec.blocked"), Some("true"));
    assert_eq!(h.span("event").meta("appsec.blocked"), Some("true"));
    assert_eq!(h.span("event").meta("usr.id"), Some("u-5"));
}
