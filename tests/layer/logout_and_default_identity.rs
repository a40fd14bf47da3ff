//! logout() and the process-wide default identity set outside any span.
use tracing::{info, info_span};
use tracing_usr::User;

use crate::support::Harness;

#[test]
fn logout_strips_the_user_from_later_records_but_the_root_keeps_it() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::identify(&User::new("u-1")).unwrap();
        info!("before logout");
        tracing_usr::logout();
        info!("after logout");
        tracing_usr::identify(&User::new("u-2")).unwrap();
        info!("after second login");
    });
    assert_eq!(h.log("before logout").user("usr.id"), Some("u-1"));
    assert!(h.log("after logout").user.is_empty());
    assert_eq!(h.log("after second login").user("usr.id"), Some("u-2"));
    assert_eq!(h.span("request").meta("usr.id"), Some("u-2"));
}

#[test]
fn logout_keeps_field_identity_on_later_records() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", usr.id = "field-user").entered();
        tracing_usr::identify(&User::new("sdk-user")).unwrap();
        tracing_usr::logout();
        info!("after logout");
    });
    assert_eq!(h.log("after logout").user("usr.id"), Some("field-user"));
    assert_eq!(h.span("request").meta("usr.id"), Some("sdk-user"));
}

#[test]
fn identify_outside_any_span_sets_a_default_for_traces_without_identity() {
    let h = Harness::default_env();
    h.run(|| {
        tracing_usr::identify(&User::new("cli-user").with_role("operator")).unwrap();
        info!("outside");
        info_span!("job").in_scope(|| info!("in job"));
        info_span!("other", usr.id = "field-user").in_scope(|| {});
        assert_eq!(
            tracing_usr::current_user().map(|u| u.id().to_owned()),
            Some("cli-user".into())
        );
        tracing_usr::logout();
        info_span!("after").in_scope(|| info!("after logout"));
    });
    assert_eq!(h.log("outside").user("usr.id"), Some("cli-user"));
    assert_eq!(h.log("in job").user("usr.id"), Some("cli-user"));
    let job = h.span("job");
    assert_eq!(job.meta("usr.id"), Some("cli-user"));
    assert_eq!(job.meta("_dd.appsec.user.collection_mode"), Some("sdk"));
    assert_eq!(h.span("other").meta("usr.id"), Some("field-user"));
    assert_eq!(h.span("after").meta("usr.id"), None);
    assert!(h.log("after logout").user.is_empty());
}

#[test]
fn by_default_each_record_carries_the_identity_current_when_it_was_emitted() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        info!("early");
        tracing_usr::identify(&User::new("u-1")).unwrap();
        info!("late");
    });
    assert!(h.log("early").user.is_empty());
    assert_eq!(h.log("late").user("usr.id"), Some("u-1"));
}
