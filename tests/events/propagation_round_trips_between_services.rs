//! Inject in one service, extract in a second one on the same machine (docs/tags.md "propagation").
use http::HeaderMap;
use tracing::info_span;
use tracing_usr::propagation::{extract, inject, set_parent};
use tracing_usr::{SdkError, SetUserOptions, User};

use crate::support::Harness;

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Service A: a login with propagation; returns the outgoing headers.
fn service_a(h: &Harness, user: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    h.run(|| {
        let _root = info_span!("checkout").entered();
        tracing_usr::track_login_success("login", user, (), SetUserOptions::propagate()).unwrap();
        let _client = info_span!("http.client").entered();
        inject(&mut headers);
    });
    headers
}

#[test]
fn the_user_id_and_the_trace_travel_downstream_but_never_become_identity() {
    let a = Harness::default_env();
    let headers = service_a(&a, "user-1");
    let a_root = a.span("checkout");
    let a_client = a.span("http.client");
    assert_eq!(
        header(&headers, "x-datadog-trace-id"),
        (a_root.trace_id as u64).to_string()
    );
    assert_eq!(
        header(&headers, "x-datadog-parent-id"),
        a_client.span_id.to_string()
    );
    assert_eq!(header(&headers, "x-datadog-sampling-priority"), "2");
    let tags = header(&headers, "x-datadog-tags");
    assert!(
        tags.contains("_dd.p.usr.id=dXNlci0x") && tags.contains("_dd.p.dm=-5"),
        "{tags}"
    );
    assert!(
        tags.contains(&format!("_dd.p.tid={:016x}", (a_root.trace_id >> 64) as u64)),
        "{tags}"
    );
    assert!(header(&headers, "tracestate").contains("t.usr.id:dXNlci0x"));
    assert_eq!(
        header(&headers, "traceparent"),
        format!("00-{:032x}-{:016x}-01", a_root.trace_id, a_client.span_id)
    );

    let b = Harness::default_env();
    let context = extract(&headers).expect("a valid context");
    let mut downstream = HeaderMap::new();
    b.run(|| {
        let root = info_span!("inventory");
        set_parent(&root, context).unwrap();
        let _enter = root.enter();
        let _child = info_span!("db").entered();
        inject(&mut downstream);
    });
    let b_root = b.span("inventory");
    assert_eq!(b_root.trace_id, a_root.trace_id);
    assert_eq!(b_root.parent_id, Some(a_client.span_id));
    assert!(b_root.local_root);
    assert_eq!(b.span("db").trace_id, a_root.trace_id);
    assert_eq!(b_root.meta("_dd.p.usr.id"), Some("dXNlci0x"));
    assert_eq!(
        b_root.meta("usr.id"),
        None,
        "an upstream user id is never identity"
    );
    assert_eq!(b_root.metric("_sampling_priority_v1"), Some(2.0));
    assert!(header(&downstream, "x-datadog-tags").contains("_dd.p.usr.id=dXNlci0x"));
}

#[test]
fn w3c_headers_alone_carry_the_user_id_with_tildes() {
    let a = Harness::default_env();
    let mut headers = service_a(&a, "user-12");
    assert!(header(&headers, "tracestate").contains("t.usr.id:dXNlci0xMg~~"));
    for name in [
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-sampling-priority",
        "x-datadog-tags",
    ] {
        headers.remove(name);
    }
    let context = extract(&headers).unwrap();
    assert_eq!(context.trace_id, a.span("checkout").trace_id);
    assert!(context
        .tags
        .contains(&("_dd.p.usr.id".to_owned(), "dXNlci0xMg==".to_owned())));
    assert_eq!(context.sampling_priority, Some(2));
}

#[test]
fn a_local_propagating_call_replaces_the_upstream_user_id() {
    let a = Harness::default_env();
    let context = extract(&service_a(&a, "user-1")).unwrap();
    let b = Harness::default_env();
    b.run(|| {
        let root = info_span!("inventory");
        set_parent(&root, context).unwrap();
        let _enter = root.enter();
        tracing_usr::set_user(&User::new("user-12"), SetUserOptions::propagate()).unwrap();
    });
    assert_eq!(b.span("inventory").meta("_dd.p.usr.id"), Some("dXNlci0xMg=="));
}

#[test]
fn an_oversized_x_datadog_tags_is_not_sent_and_flagged() {
    let h = Harness::with_env(&[("DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH", "16")]);
    let headers = service_a(&h, "user-1");
    assert!(headers.get("x-datadog-tags").is_none());
    assert!(headers.get("traceparent").is_some());
    assert_eq!(
        h.span("checkout").meta("_dd.propagation_error"),
        Some("inject_max_size")
    );
}

#[test]
fn bad_headers_give_no_context_and_children_cannot_take_a_remote_parent() {
    for pairs in [
        vec![("x-datadog-trace-id", "abc"), ("x-datadog-parent-id", "1")],
        vec![("traceparent", "00-zz-1-01")],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-0000000000000001-01",
        )],
        vec![("tracestate", "dd=t.usr.id:MTIz")],
        vec![],
    ] {
        let mut headers = HeaderMap::new();
        for (k, v) in &pairs {
            headers.insert(*k, v.parse().unwrap());
        }
        assert!(extract(&headers).is_none(), "{pairs:?}");
    }
    let h = Harness::default_env();
    let a = Harness::default_env();
    let context = extract(&service_a(&a, "user-1")).unwrap();
    h.run(|| {
        let root = info_span!("root");
        let child = info_span!(parent: &root, "child");
        assert_eq!(set_parent(&child, context), Err(SdkError::NotLocalRoot));
    });
}
