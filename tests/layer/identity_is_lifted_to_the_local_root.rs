//! `usr.*` fields on any span of a trace end up on its local root, and only there.
use tracing::{field, info_span};

use crate::support::{tags, user_tags, Harness};

#[test]
fn identity_in_a_child_of_a_child_is_lifted_to_the_root() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", http.route = "/orders").entered();
        let _child = info_span!("handler").entered();
        let _grandchild =
            info_span!("auth", usr.id = "u-1", usr.email = "a@b.c", usr.role = "admin").entered();
    });
    let root = h.span("request");
    assert!(root.local_root);
    assert_eq!(root.meta("usr.id"), Some("u-1"));
    assert_eq!(root.meta("usr.email"), Some("a@b.c"));
    assert_eq!(root.meta("usr.role"), Some("admin"));
    assert_eq!(
        root.meta("_dd.appsec.user.collection_mode"),
        Some("identification")
    );
    assert_eq!(root.meta("_dd.appsec.usr.id"), Some("u-1"));
    assert_eq!(root.meta("http.route"), Some("/orders"));
}

#[test]
fn child_spans_keep_their_fields_but_never_carry_usr_tags() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        let _child = info_span!(
            "auth",
            usr.id = "u-1",
            usr.org = "acme",
            db.system = "pg",
            rows = 3
        )
        .entered();
    });
    let child = h.span("auth");
    assert!(!child.local_root);
    assert!(child
        .tags()
        .iter()
        .all(|(k, _)| !k.starts_with("usr.") && !k.starts_with("_dd.appsec")));
    assert_eq!(child.meta("db.system"), Some("pg"));
    assert_eq!(child.metric("rows"), Some(3.0));
    let root = h.span("request");
    assert_eq!(root.meta("usr.org"), Some("acme"));
}

#[test]
fn late_record_on_the_root_reaches_the_root() {
    let h = Harness::default_env();
    h.run(|| {
        let root = info_span!("request", usr.id = field::Empty, usr.email = field::Empty);
        let _enter = root.enter();
        let _child = info_span!("handler").entered();
        root.record("usr.id", "u-9");
        root.record("usr.email", "late@b.c");
    });
    assert_eq!(
        user_tags(&h.span("request")),
        tags(&[
            ("_dd.appsec.user.collection_mode", "identification"),
            ("_dd.appsec.usr.id", "u-9"),
            ("usr.email", "late@b.c"),
            ("usr.id", "u-9"),
        ])
    );
}

#[test]
fn late_record_on_a_grandchild_reaches_the_root() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        let _child = info_span!("handler").entered();
        let grandchild = tracing_usr::user_span!(tracing::Level::INFO, "auth", step = 1);
        let _g = grandchild.enter();
        grandchild.record("usr.id", 42_u64);
        grandchild.record("usr.session_id", "s-1");
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("42"));
    assert_eq!(root.meta("usr.session_id"), Some("s-1"));
    assert!(h.span("auth").tags().iter().all(|(k, _)| !k.starts_with("usr.")));
}

#[test]
fn a_later_value_overwrites_an_earlier_one_key_by_key() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!(
            "request",
            usr.id = "u-1",
            usr.email = "old@b.c",
            usr.role = "user"
        )
        .entered();
        let _child = info_span!("upgrade", usr.id = "u-1", usr.role = "admin").entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.email"), Some("old@b.c"));
    assert_eq!(root.meta("usr.role"), Some("admin"));
}

#[test]
fn a_root_without_user_fields_has_no_user_tags() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", http.route = "/health").entered();
        tracing::info!("ok");
    });
    assert_eq!(user_tags(&h.span("request")), vec![]);
    assert!(h.log("ok").user.is_empty());
}

#[test]
fn identity_without_an_id_writes_no_public_tag() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", usr.email = "a@b.c", usr.login = "alice").entered();
    });
    assert_eq!(
        user_tags(&h.span("request")),
        tags(&[("_dd.appsec.usr.login", "alice")])
    );
}

#[test]
fn separate_root_spans_are_separate_traces() {
    let h = Harness::default_env();
    h.run(|| {
        info_span!("first", usr.id = "u-1").in_scope(|| {});
        info_span!("second").in_scope(|| {});
    });
    let (first, second) = (h.span("first"), h.span("second"));
    assert_ne!(first.trace_id, second.trace_id);
    assert_eq!(second.meta("usr.id"), None);
}
