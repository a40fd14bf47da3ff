//! Listed users: SDK identity calls report them blocked, and the trace carries the block tags.
use std::sync::Arc;
use std::time::Duration;

use tracing::info_span;
use tracing_usr::blocking::{DenyEntry, ManualClock};
use tracing_usr::{SdkError, SetUserOptions, User};

use crate::support::{builder_with_env, Harness};

type Call = Box<dyn Fn() -> Result<(), SdkError>>;

fn harness(clock: &ManualClock) -> Harness {
    Harness::new(
        builder_with_env(&[])
            .with_clock(Arc::new(clock.clone()))
            .with_blocked_users([DenyEntry {
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
    let deny = h.handle.deny_list();
    deny.block_user("temp-user", Some(Duration::from_secs(900)));
    h.run(|| {
        info_span!("first").in_scope(|| assert!(tracing_usr::identify(&User::new("temp-user")).is_err()));
        clock.advance(Duration::from_secs(900));
        info_span!("second").in_scope(|| assert_eq!(tracing_usr::identify(&User::new("temp-user")), Ok(())));
        deny.replace_users([], 0);
        info_span!("third").in_scope(|| assert_eq!(tracing_usr::identify(&User::new("bad-user")), Ok(())));
    });
    assert_eq!(h.span("first").meta("appsec.blocked"), Some("true"));
    assert_eq!(h.span("second").meta("appsec.blocked"), None);
    assert_eq!(h.span("third").meta("appsec.blocked"), None);
}
