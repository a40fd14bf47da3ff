//! A whole user record as field-path identity (docs/tags.md "identity from a user record").
use serde_json::json;
use tracing::info_span;

use crate::support::Harness;

#[test]
fn record_keys_are_picked_in_priority_order() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::record_user(&json!({
            "_id": "mongo-1", "username": "ada", "mail": "ada@x.y", "full_name": "Ada L.",
            "role": "admin", "nested": {"id": "ignored"}, "password": "never"
        }))
        .unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("mongo-1"));
    assert_eq!(root.meta("usr.login"), Some("ada"));
    assert_eq!(root.meta("usr.email"), Some("ada@x.y"));
    assert_eq!(root.meta("usr.name"), Some("Ada L."));
    assert_eq!(root.meta("usr.role"), Some("admin"));
    assert_eq!(
        root.meta("_dd.appsec.user.collection_mode"),
        Some("identification")
    );
    assert!(!format!("{:?}", root.tags()).contains("never"));
}

#[test]
fn integer_ids_count_and_objects_without_an_id_contribute_nothing() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anonymization")]);
    h.run(|| {
        info_span!("first")
            .in_scope(|| tracing_usr::record_user(&json!({"id": 123, "email": "x@y.z"})).unwrap());
        info_span!("second").in_scope(|| {
            assert!(tracing_usr::record_user(&json!({"id": {"nested": 1}, "name": "n"})).is_err());
            assert!(tracing_usr::record_user(&json!({"id": ""})).is_err());
        });
    });
    let first = h.span("first");
    assert_eq!(
        first.meta("usr.id"),
        Some("anon_a665a45920422f9d417e4867efdc4fb8")
    );
    assert_eq!(first.meta("usr.email"), None, "dropped in anonymization");
    assert_eq!(h.span("second").meta("usr.id"), None);
}
