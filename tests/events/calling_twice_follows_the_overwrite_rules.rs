//! Calling twice: last write wins per key; a different id clears the bucket; events merge.
use serde_json::json;
use tracing::info_span;
use tracing_usr::{SetUserOptions, User};

use crate::support::Harness;

#[test]
fn set_user_twice_with_the_same_id_merges_and_with_another_id_replaces() {
    let h = Harness::default_env();
    h.run(|| {
        info_span!("same").in_scope(|| {
            tracing_usr::set_user(&User::new("u-1").with_email("a@b.c"), SetUserOptions::default()).unwrap();
            tracing_usr::set_user(&User::new("u-1").with_role("admin"), SetUserOptions::default()).unwrap();
        });
        info_span!("other").in_scope(|| {
            tracing_usr::set_user(&User::new("u-1").with_email("a@b.c"), SetUserOptions::default()).unwrap();
            tracing_usr::set_user(&User::new("u-2"), SetUserOptions::default()).unwrap();
        });
    });
    let same = h.span("same");
    assert_eq!(
        (same.meta("usr.email"), same.meta("usr.role")),
        (Some("a@b.c"), Some("admin"))
    );
    let other = h.span("other");
    assert_eq!(
        (other.meta("usr.id"), other.meta("usr.email")),
        (Some("u-2"), None)
    );
}

#[test]
fn the_same_event_twice_merges_per_key() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::track_custom_event("evt", json!({"a": "1", "b": "1"})).unwrap();
        tracing_usr::track_custom_event("evt", json!({"b": "2", "c": "2"})).unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("appsec.events.evt.a"), Some("1"));
    assert_eq!(root.meta("appsec.events.evt.b"), Some("2"));
    assert_eq!(root.meta("appsec.events.evt.c"), Some("2"));
    assert_eq!(
        root.tags()
            .iter()
            .filter(|(k, _)| k == "appsec.events.evt.b")
            .count(),
        1
    );
}

#[test]
fn a_later_propagate_replaces_the_value_and_a_later_call_without_it_keeps_it() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::set_user(&User::new("user-1"), SetUserOptions::propagate()).unwrap();
        tracing_usr::set_user(&User::new("user-12"), SetUserOptions::propagate()).unwrap();
        tracing_usr::set_user(&User::new("user-3"), SetUserOptions::default()).unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("_dd.p.usr.id"), Some("dXNlci0xMg=="));
    assert_eq!(root.meta("usr.id"), Some("user-3"));
}

#[test]
fn login_then_signup_then_failure_keep_separate_event_tags() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::track_login_failure("bob", true, Some("u-2"), ()).unwrap();
        tracing_usr::track_login_success("bob", "u-2", (), SetUserOptions::default()).unwrap();
    });
    let root = h.span("request");
    assert_eq!(
        root.meta("appsec.events.users.login.failure.usr.exists"),
        Some("true")
    );
    assert_eq!(root.meta("appsec.events.users.login.success.usr.id"), Some("u-2"));
    assert_eq!(root.meta("usr.id"), Some("u-2"));
    assert_eq!(root.meta("_dd.appsec.user.collection_mode"), Some("sdk"));
}
