//! SDK calls never panic: missing inputs, no root and reserved names are reported.
use tracing::info_span;
use tracing_usr::{SdkError, SetUserOptions, User};

use crate::support::{user_tags, Harness};

#[test]
fn missing_required_arguments_write_nothing() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        assert_eq!(
            tracing_usr::track_login_success("", "u", (), SetUserOptions::default()),
            Err(SdkError::MissingArgument("login"))
        );
        assert_eq!(
            tracing_usr::track_user("l", "", None, ()),
            Err(SdkError::MissingArgument("user_id"))
        );
        assert_eq!(
            tracing_usr::track_user_delete("", ()),
            Err(SdkError::MissingArgument("user_id"))
        );
        assert_eq!(
            tracing_usr::track_password_reset(None, None, true, ()),
            Err(SdkError::MissingArgument("user_id or login"))
        );
        assert_eq!(
            tracing_usr::track_sensitive_activity("", None, ()),
            Err(SdkError::MissingArgument("name"))
        );
        assert_eq!(
            tracing_usr::track_custom_event("users.delete", serde_json::json!({})),
            Err(SdkError::MissingArgument("usr.id"))
        );
        assert_eq!(
            tracing_usr::track_custom_event("", ()),
            Err(SdkError::MissingArgument("name"))
        );
    });
    let root = h.span("request");
    assert_eq!(user_tags(&root), vec![]);
    assert!(root.tags().iter().all(|(k, _)| !k.starts_with("appsec.")));
}

#[test]
fn login_and_signup_names_are_rejected_by_track_custom_event() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        for name in ["users.login.success", "users.login.failure", "users.signup"] {
            assert_eq!(
                tracing_usr::track_custom_event(name, ()),
                Err(SdkError::ReservedEventName(name.to_owned()))
            );
        }
        assert_eq!(
            tracing_usr::track_custom_event("users.delete", serde_json::json!({"usr.id": "u"})),
            Ok(())
        );
    });
    assert_eq!(
        h.span("request").meta("appsec.events.users.delete.usr.id"),
        Some("u")
    );
}

#[test]
fn calls_outside_any_span_report_no_root_except_set_user() {
    let h = Harness::default_env();
    h.run(|| {
        assert_eq!(tracing_usr::track_custom_event("evt", ()), Err(SdkError::NoRoot));
        assert_eq!(
            tracing_usr::track_login_failure("l", false, None, ()),
            Err(SdkError::NoRoot)
        );
        assert_eq!(
            tracing_usr::track_login_success("l", User::new("u"), (), SetUserOptions::default()),
            Err(SdkError::NoRoot)
        );
        assert_eq!(
            tracing_usr::set_user(&User::new("cli"), SetUserOptions::default()),
            Ok(())
        );
    });
    assert_eq!(tracing_usr::track_custom_event("evt", ()), Err(SdkError::NoLayer));
}

#[test]
fn a_whole_user_at_login_also_sets_the_user() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        let user = User::new("u-7").with_email("u7@x.y").with_role("admin");
        tracing_usr::track_login_success("u7", &user, (), SetUserOptions::propagate()).unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("u-7"));
    assert_eq!(root.meta("usr.email"), Some("u7@x.y"));
    assert_eq!(root.meta("appsec.events.users.login.success.usr.id"), Some("u-7"));
    assert_eq!(root.meta("_dd.p.usr.id"), Some("dS03"));
}
