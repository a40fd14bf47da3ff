//! Events identify their trace and are exported with its user.
use tracing::{info, info_span};

use crate::support::Harness;

#[test]
fn an_event_with_usr_fields_identifies_its_trace() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        let _child = info_span!("handler").entered();
        info!(usr.id = "u-7", usr.email = "e@x.y", "authenticated");
        info!("next step");
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("u-7"));
    assert_eq!(root.meta("usr.email"), Some("e@x.y"));
    let auth = h.log("authenticated");
    assert!(
        auth.fields.iter().all(|(k, _)| !k.starts_with("usr.")),
        "raw usr fields are not log fields"
    );
    assert_eq!(auth.user("usr.id"), Some("u-7"));
    assert_eq!(h.log("next step").user("usr.email"), Some("e@x.y"));
}

#[test]
fn log_records_carry_trace_and_span_ids_of_the_span_they_occurred_in() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        let _child = info_span!("handler").entered();
        info!(rows = 2, "in handler");
    });
    let handler = h.span("handler");
    let log = h.log("in handler");
    assert_eq!(log.trace_id, Some(handler.trace_id));
    assert_eq!(log.span_id, Some(handler.span_id));
    assert_eq!(log.level, tracing_usr::export::Level::Info);
    assert_eq!(log.field("rows"), Some(&tracing_usr::export::FieldValue::I64(2)));
}

#[test]
fn an_event_outside_any_span_carries_its_own_identity() {
    let h = Harness::default_env();
    h.run(|| info!(usr.id = "u-3", usr.email = "x@y.z", "standalone"));
    let log = h.log("standalone");
    assert_eq!(log.trace_id, None);
    assert_eq!(log.user("usr.id"), Some("u-3"));
}

#[test]
fn an_error_event_marks_its_span_as_an_error() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        info_span!("db").in_scope(|| tracing::error!("connection refused"));
    });
    let db = h.span("db");
    assert!(db.error);
    assert_eq!(db.meta("error.message"), Some("connection refused"));
    assert!(!h.span("request").error);
}

#[test]
fn business_event_fields_are_not_trace_identity() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        info!(
            usr.event = "users.delete",
            usr.id = "deleted-user",
            "account removed"
        );
    });
    assert_eq!(h.span("request").meta("usr.id"), None);
}
