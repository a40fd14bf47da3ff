//! EventMetadata edge cases (docs/tags.md "metadata flattening"): empty, deep, lists, unicode keys, very long values, masking.
use serde_json::json;
use tracing::info_span;

use crate::support::Harness;

fn custom(metadata: serde_json::Value) -> tracing_usr::export::SpanRecord {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::track_custom_event("evt", metadata).unwrap();
    });
    h.span("request")
}

fn event_meta(root: &tracing_usr::export::SpanRecord) -> Vec<(String, String)> {
    let mut v: Vec<_> = root
        .tags()
        .iter()
        .filter(|(k, _)| k.starts_with("appsec.events.evt."))
        .map(|(k, v)| (k["appsec.events.evt.".len()..].to_owned(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn empty_metadata_still_records_the_event() {
    for metadata in [json!({}), json!([]), json!(null)] {
        let root = custom(metadata);
        assert_eq!(event_meta(&root), vec![("track".to_owned(), "true".to_owned())]);
        assert_eq!(root.meta("_dd.appsec.events.evt.sdk"), Some("true"));
        assert_eq!(root.metric("_sampling_priority_v1"), Some(2.0));
    }
}

#[test]
fn paths_deeper_than_five_segments_are_dropped() {
    let root = custom(json!({"a": {"b": {"c": {"d": {"e": "kept", "f": {"g": "dropped"}}}}}}));
    assert_eq!(
        event_meta(&root),
        vec![
            ("a.b.c.d.e".to_owned(), "kept".to_owned()),
            ("track".to_owned(), "true".to_owned())
        ]
    );
}

#[test]
fn lists_use_indices_and_scalars_convert_as_documented() {
    let root = custom(
        json!({"items": ["x", {"sku": 7}, [true]], "ratio": 0.5, "whole": 2.0, "neg": -3, "none": null}),
    );
    assert_eq!(
        event_meta(&root),
        [
            ("items.0", "x"),
            ("items.1.sku", "7"),
            ("items.2.0", "true"),
            ("neg", "-3"),
            ("ratio", "0.5"),
            ("track", "true"),
            ("whole", "2.0")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn unicode_keys_and_very_long_values_pass_unchanged() {
    let long = "é".repeat(100_000);
    let root = custom(json!({"clé": {"日本": long.clone()}, "emoji 🦀": "ok"}));
    let meta = event_meta(&root);
    assert!(meta.contains(&("clé.日本".to_owned(), long)));
    assert!(meta.contains(&("emoji 🦀".to_owned(), "ok".to_owned())));
}

#[test]
fn metadata_goes_through_masking() {
    let root = custom(
        json!({"creds": {"password": "hunter2"}, "note": "Authorization: Bearer abc.def", "usr.id": "keep=me"}),
    );
    let meta = event_meta(&root);
    assert!(meta.contains(&("creds.password".to_owned(), "<Redacted>".to_owned())));
    assert!(meta.contains(&("note".to_owned(), "Authorization: Bearer <Redacted>".to_owned())));
    assert!(
        meta.contains(&("usr.id".to_owned(), "keep=me".to_owned())),
        "identity keys are exempt"
    );
}

#[test]
fn serialize_values_are_accepted_as_metadata() {
    #[derive(serde::Serialize)]
    struct Order {
        id: u32,
        lines: Vec<Line>,
    }
    #[derive(serde::Serialize)]
    struct Line {
        sku: &'static str,
        qty: u8,
    }
    let metadata = tracing_usr::EventMetadata::serialize(&Order {
        id: 9,
        lines: vec![Line { sku: "A-1", qty: 2 }],
    })
    .unwrap();
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::track_payment_failure(metadata).unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("appsec.events.payment.failure.id"), Some("9"));
    assert_eq!(
        root.meta("appsec.events.payment.failure.lines.0.sku"),
        Some("A-1")
    );
    assert_eq!(root.meta("appsec.events.payment.failure.lines.0.qty"), Some("2"));
}

#[test]
fn track_user_metadata_becomes_usr_keys() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::track_user(
            "login-1",
            "u-1",
            None,
            json!({"email": "a@b.c", "usr.role": "admin", "org": {"name": "acme"}, "id": "spoof", "login": "spoof", "api_key": "k"}),
        )
        .unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("u-1"));
    assert_eq!(root.meta("usr.login"), Some("login-1"));
    assert_eq!(root.meta("usr.email"), Some("a@b.c"));
    assert_eq!(root.meta("usr.role"), Some("admin"));
    assert_eq!(root.meta("usr.org.name"), Some("acme"));
    assert_eq!(root.meta("usr.api_key"), Some("<Redacted>"));
    assert_eq!(
        root.metric("_sampling_priority_v1"),
        None,
        "identity alone does not keep"
    );
}
