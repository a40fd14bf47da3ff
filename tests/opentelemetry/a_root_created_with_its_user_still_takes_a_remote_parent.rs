//! A root whose creation records the user (`info_span!("request", usr.id = ..)`) can still be
//! given a remote parent with `OpenTelemetrySpanExt::set_parent` before it is entered: tracing-usr
//! does not start its OpenTelemetry span early, in either layer order, and the user still lands
//! on it. A second identity in one request leaves one `usr.id` (in either order while the root is
//! entered).
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::info_span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_usr::User;

use crate::otel::{in_each_order, Order, Pipeline, Span};

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn set_parent_after_creation_with_user_fields_works_in_both_orders() {
    in_each_order(&[], |order, p| {
        // Two requests: the first runs before the layer order is known, the second after.
        for n in 0..2 {
            p.run(|| {
                let remote = SpanContext::new(
                    TraceId::from_hex(REMOTE_TRACE).unwrap(),
                    SpanId::from_hex(REMOTE_SPAN).unwrap(),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                );
                let root = info_span!("request", n = n, usr.id = "user-5");
                root.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
                    .unwrap_or_else(|e| panic!("{order:?} request {n}: set_parent failed: {e:?}"));
                let _root = root.entered();
                let _child = info_span!("handler").entered();
            });
        }
        let spans = p.spans();
        let requests: Vec<_> = spans.iter().filter(|s| s.name == "request").collect();
        assert_eq!(requests.len(), 2, "{order:?}: {spans:#?}");
        for request in requests {
            println!("{order:?} request attributes: {:?}", request.attrs);
            assert_eq!(
                hex(&request.trace_id),
                REMOTE_TRACE,
                "{order:?}: the remote trace is kept"
            );
            assert_eq!(
                hex(&request.parent),
                REMOTE_SPAN,
                "{order:?}: the remote parent is kept"
            );
            assert_eq!(
                request.attr("_dd.appsec.user.collection_mode"),
                Some("identification"),
                "{order:?}"
            );
            assert_eq!(
                request.attr("user.id"),
                Some("user-5"),
                "{order:?}: {:?}",
                request.attrs
            );
        }
    });
}

/// Runs a request that identifies `user-1` (with an email), then `user-2`, from a child of the
/// root, the root entered or not; returns the exported root.
fn two_identities(p: &Pipeline, root_entered: bool) -> Span {
    p.run(|| {
        let root = info_span!("request");
        let _root = root_entered.then(|| root.enter());
        let _child = info_span!(parent: &root, "handler").entered();
        tracing_usr::identify(&User::new("user-1").with_email("one@example.com")).unwrap();
        tracing_usr::identify(&User::new("user-2")).unwrap();
    });
    let root = p.spans().into_iter().find(|s| s.is_root()).expect("the root");
    assert_eq!(root.attr("usr.id"), Some("user-2"), "{:?}", root.attrs);
    root
}

fn count(span: &Span, key: &str) -> usize {
    span.keys.iter().filter(|k| *k == key).count()
}

#[test]
fn a_second_identity_in_one_request_is_written_once_in_either_order() {
    in_each_order(&[], |order, p| {
        let root = two_identities(p, true);
        println!("{order:?} root keys: {:?}", root.keys);
        assert_eq!(root.attr("user.id"), Some("user-2"), "{order:?}");
        // Written once, as the tags are at the end (the root's close, or its last exit when
        // tracing-opentelemetry comes first): the first user's email is gone too.
        assert_eq!(count(&root, "usr.id"), 1, "{order:?}: {:?}", root.keys);
        assert_eq!(root.attr("usr.email"), None, "{order:?}: {:?}", root.attrs);
    });
}

#[test]
fn identities_recorded_while_the_root_is_not_entered_are_written_as_recorded() {
    in_each_order(&[], |order, p| {
        let root = two_identities(p, false);
        println!("{order:?} root keys: {:?}", root.keys);
        let ids = count(&root, "usr.id");
        match order {
            // Written once at the root's close.
            Order::UsrFirst => assert_eq!(ids, 1, "{:?}", root.keys),
            // Nothing tells tracing-usr when the span will end: each identity is written as it
            // is recorded, and a started span keeps each value (documented in the README).
            Order::OtelFirst => {
                assert_eq!(ids, 2, "{:?}", root.keys);
                let email = root.attr("usr.email");
                assert_eq!(email, Some("one@example.com"), "{:?}", root.attrs);
            }
        }
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn user_fields_recorded_on_the_root_itself_are_not_written_twice() {
    in_each_order(&[], |order, p| {
        for _ in 0..2 {
            p.run(|| {
                let root = info_span!("request", usr.id = "user-3", usr.email = tracing::field::Empty);
                let _root = root.enter();
                let _child = info_span!("handler").entered();
                root.record("usr.email", "three@example.com");
            });
        }
        for root in p.spans().iter().filter(|s| s.is_root()) {
            println!("{order:?} root keys: {:?}", root.keys);
            for key in ["usr.id", "usr.email"] {
                let n = root.keys.iter().filter(|k| *k == key).count();
                assert_eq!(n, 1, "{order:?}: {key} once in {:?}", root.keys);
            }
            assert_eq!(root.attr("usr.id"), Some("user-3"), "{order:?}");
            assert_eq!(root.attr("user.id"), Some("user-3"), "{order:?}");
            assert_eq!(root.attr("user.email"), Some("three@example.com"), "{order:?}");
        }
    });
}
