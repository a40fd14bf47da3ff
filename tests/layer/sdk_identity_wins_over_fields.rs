//! The SDK path: identify, UserSpanExt::identify, precedence over fields, errors.
use tracing::info_span;
use tracing_usr::{SdkError, User, UserSpanExt};

use crate::support::{tags, user_tags, Harness};

#[test]
fn sdk_identity_wins_and_field_identity_stays_in_private_copies() {
    for sdk_first in [true, false] {
        let h = Harness::default_env();
        h.run(|| {
            let _root = info_span!("request").entered();
            let identify = || tracing_usr::identify(&User::new("sdk-user").with_role("admin")).unwrap();
            if sdk_first {
                identify();
            }
            let _child = info_span!(
                "auth",
                usr.id = "field-user",
                usr.login = "fl",
                usr.email = "f@x.y"
            )
            .entered();
            if !sdk_first {
                identify();
            }
        });
        assert_eq!(
            user_tags(&h.span("request")),
            tags(&[
                ("_dd.appsec.user.collection_mode", "sdk"),
                ("_dd.appsec.usr.id", "field-user"),
                ("_dd.appsec.usr.login", "fl"),
                ("usr.id", "sdk-user"),
                ("usr.role", "admin"),
            ]),
            "sdk_first={sdk_first}"
        );
    }
}

#[test]
fn span_ext_identifies_the_trace_of_that_span() {
    let h = Harness::default_env();
    h.run(|| {
        let root = info_span!("request");
        let child = info_span!(parent: &root, "worker");
        child
            .identify(&User::new("u-5").with_extra("org", "acme"))
            .unwrap();
        drop(child);
        drop(root);
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("u-5"));
    assert_eq!(root.meta("usr.org"), Some("acme"));
}

#[test]
fn calls_without_an_id_or_without_the_layer_write_nothing() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        assert_eq!(
            tracing_usr::identify(&User::new("")),
            Err(SdkError::MissingArgument("id"))
        );
    });
    assert_eq!(user_tags(&h.span("request")), vec![]);
    // No subscriber at all: the call reports it and does not panic.
    assert_eq!(tracing_usr::identify(&User::new("u")), Err(SdkError::NoLayer));
    assert_eq!(
        tracing::Span::none().identify(&User::new("u")),
        Err(SdkError::NoRoot)
    );
}

#[test]
fn identifying_a_second_user_replaces_the_first() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        tracing_usr::identify(&User::new("first").with_email("first@x.y")).unwrap();
        tracing_usr::identify(&User::new("second")).unwrap();
    });
    assert_eq!(
        user_tags(&h.span("request")),
        tags(&[("_dd.appsec.user.collection_mode", "sdk"), ("usr.id", "second")])
    );
}

#[test]
fn two_identities_on_the_field_path_keep_the_last_user_only() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request").entered();
        info_span!("a", usr.id = "user-a", usr.email = "a@x.y").in_scope(|| {});
        info_span!("b", usr.id = "user-b", usr.role = "viewer").in_scope(|| {});
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("user-b"));
    assert_eq!(root.meta("usr.role"), Some("viewer"));
    assert_eq!(
        root.meta("usr.email"),
        None,
        "user A's email must not stick to user B"
    );
}

#[test]
fn current_user_reads_the_sdk_user_back() {
    let h = Harness::default_env();
    h.run(|| {
        assert_eq!(tracing_usr::current_user(), None);
        let _root = info_span!("request").entered();
        let _child = info_span!("child", usr.id = "field-only").entered();
        assert_eq!(
            tracing_usr::current_user(),
            None,
            "field identity is not the SDK user"
        );
        let user = User::new("u-1").with_email("a@b.c").with_token("t");
        tracing_usr::identify(&user).unwrap();
        assert_eq!(tracing_usr::current_user(), Some(user));
        tracing_usr::logout();
        assert_eq!(tracing_usr::current_user(), None);
    });
}

#[test]
fn a_second_layer_in_the_same_subscriber_is_inert_and_says_so() {
    use tracing_subscriber::prelude::*;
    let (a, b) = (
        tracing_usr::export::InMemoryExporter::default(),
        tracing_usr::export::InMemoryExporter::default(),
    );
    let build = |e: &tracing_usr::export::InMemoryExporter| {
        crate::support::builder_with_env(&[])
            .with_json_lines(tracing_usr::JsonLines::None)
            .with_exporter(e.clone())
            .build()
    };
    let (inner, outer) = (build(&a), build(&b));
    let (inner_handle, outer_handle) = (inner.handle(), outer.handle());
    let warnings = crate::support::Captured::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(inner)
            .with(outer)
            .with(crate::support::capture_layer(warnings.clone())),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        let _root = info_span!("request").entered();
        tracing_usr::identify(&User::new("u-1")).unwrap();
    });
    inner_handle.flush().unwrap();
    outer_handle.flush().unwrap();
    assert_eq!(a.spans().len(), 0, "the inner layer is inert");
    assert_eq!(b.spans()[0].meta("usr.id"), Some("u-1"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while warnings.events.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let events = warnings.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|(_, text)| text.contains("more than one tracing-usr layer")),
        "{events:?}"
    );
}
