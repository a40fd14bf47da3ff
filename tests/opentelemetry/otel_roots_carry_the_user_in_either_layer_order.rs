//! The root span that tracing-opentelemetry exports carries tracing-usr's tags and the
//! semantic-convention user attributes, in both layer orders; its children carry none.
use tracing::info_span;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;
use tracing_usr::{EventMetadata, LoginUser, SetUserOptions, User};

use crate::agent::TestAgent;
use crate::otel::{in_each_order, raw_bodies, Span};

fn root(spans: &[Span], name: &str) -> Span {
    let roots: Vec<_> = spans.iter().filter(|s| s.is_root() && s.name == name).collect();
    assert_eq!(roots.len(), 1, "one root {name:?} in {spans:#?}");
    roots[0].clone()
}

fn named(spans: &[Span], name: &str) -> Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("a span {name:?} in {spans:#?}"))
        .clone()
}

fn assert_written_once(span: &Span) {
    let mut keys = span.keys.clone();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(
        before,
        keys.len(),
        "a key written twice on {:?}: {:?}",
        span.name,
        span.keys
    );
}

#[test]
fn identity_recorded_in_a_grandchild_lands_on_the_root() {
    in_each_order(&[], |order, p| {
        p.run(|| {
            let _root =
                info_span!("request", http.route = "/orders", usr.id = tracing::field::Empty).entered();
            let _handler = info_span!("handler").entered();
            let _auth =
                info_span!("auth", usr.id = "user-1", usr.email = "a@b.c", usr.role = "admin").entered();
        });
        let spans = p.spans();
        let root = root(&spans, "request");
        println!("{order:?} root attributes: {:?}", root.attrs);
        assert_eq!(root.attr("usr.id"), Some("user-1"), "{order:?}: {root:?}");
        assert_eq!(root.attr("usr.email"), Some("a@b.c"), "{order:?}");
        assert_eq!(root.attr("user.id"), Some("user-1"), "{order:?}");
        assert_eq!(root.attr("enduser.id"), Some("user-1"), "{order:?}");
        assert_eq!(root.attr("user.email"), Some("a@b.c"), "{order:?}");
        assert_eq!(root.attr("user.roles"), Some("[admin]"), "{order:?}");
        assert_eq!(
            root.attr("_dd.appsec.user.collection_mode"),
            Some("identification"),
            "{order:?}"
        );
        assert_eq!(
            root.attr("http.route"),
            Some("/orders"),
            "{order:?}: the root's own fields stay"
        );
        assert_written_once(&root);
        let handler = named(&spans, "handler");
        assert!(
            handler
                .keys
                .iter()
                .all(|k| !k.starts_with("usr.") && !k.starts_with("user.")),
            "{order:?}: the child carries no user attribute: {handler:?}"
        );
        // The span that declared the fields keeps them (tracing-opentelemetry's own export), but
        // gets none of tracing-usr's attributes.
        let auth = named(&spans, "auth");
        assert_eq!(auth.attr("user.id"), None, "{order:?}");
        assert_eq!(auth.attr("_dd.appsec.user.collection_mode"), None, "{order:?}");
    });
}

#[test]
fn sdk_identity_and_a_login_failure_event_land_on_the_root() {
    in_each_order(&[], |order, p| {
        p.run(|| {
            let _root = info_span!("login").entered();
            let _child = info_span!("check").entered();
            tracing_usr::track_login_failure("ada", false, None, EventMetadata::default()).unwrap();
            tracing_usr::track_login_success(
                "ada",
                LoginUser::from(
                    User::new("user-7")
                        .with_email("ada@example.com")
                        .with_login("ada"),
                ),
                EventMetadata::default(),
                SetUserOptions::propagate(),
            )
            .unwrap();
        });
        let root = root(&p.spans(), "login");
        println!("{order:?} root attributes: {:?}", root.attrs);
        for (key, value) in [
            ("usr.id", "user-7"),
            ("usr.email", "ada@example.com"),
            ("user.id", "user-7"),
            ("user.name", "ada"),
            ("_dd.appsec.user.collection_mode", "sdk"),
            ("appsec.events.users.login.failure.track", "true"),
            ("appsec.events.users.login.failure.usr.login", "ada"),
            ("appsec.events.users.login.failure.usr.exists", "false"),
            ("_dd.appsec.events.users.login.failure.sdk", "true"),
            ("appsec.events.users.login.success.track", "true"),
            ("appsec.events.users.login.success.usr.id", "user-7"),
            ("_dd.p.usr.id", "dXNlci03"),
            ("sampling.priority", "2"),
        ] {
            assert_eq!(
                root.attr(key),
                Some(value),
                "{order:?}: {key} in {:?}",
                root.attrs
            );
        }
        assert_eq!(
            root.attr("_dd.p.dm"),
            None,
            "{order:?}: the sampler's state is not an attribute"
        );
        assert_written_once(&root);
    });
}

#[test]
fn anonymization_hashes_and_disabled_writes_no_user_attribute() {
    let agent = TestAgent::get();
    let record = serde_json::json!({"id": "user-1", "email": "ada@example.com", "name": "Ada Lovelace", "session_id": "sess-1"});
    in_each_order(
        &[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")],
        |order, p| {
            p.run(|| {
                let _root = info_span!("request").entered();
                let _child = info_span!("handler").entered();
                tracing_usr::record_user(&record).unwrap();
            });
            let r = root(&p.spans(), "request");
            println!("{order:?} anon root attributes: {:?}", r.attrs);
            let hash = "anon_c6c289e49e9c05b2145860387b73bcb1";
            assert_eq!(r.attr("usr.id"), Some(hash), "{order:?}");
            assert_eq!(r.attr("user.hash"), Some(hash), "{order:?}");
            assert_eq!(r.attr("user.id"), None, "{order:?}");
            assert_eq!(
                r.attr("_dd.appsec.user.collection_mode"),
                Some("anonymization"),
                "{order:?}"
            );
            let raw = raw_bodies(agent);
            for clear in ["user-1", "ada@example.com", "Ada Lovelace", "sess-1"] {
                assert!(!raw.contains(clear), "{order:?}: {clear} in the payload");
            }
        },
    );
    in_each_order(
        &[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "disabled")],
        |order, p| {
            p.run(|| {
                let _root = info_span!("request").entered();
                let _child = info_span!("handler").entered();
                let _ = tracing_usr::record_user(&record);
            });
            let r = root(&p.spans(), "request");
            assert!(
                r.keys.iter().all(|k| !k.starts_with("usr.")
                    && !k.starts_with("user.")
                    && !k.starts_with("_dd.appsec")),
                "{order:?}: disabled writes no user attribute: {:?}",
                r.attrs
            );
            assert!(!raw_bodies(agent).contains("user-1"), "{order:?}");
        },
    );
}

#[test]
fn masked_values_never_reach_the_otel_span_in_clear() {
    let agent = TestAgent::get();
    in_each_order(&[], |order, p| {
        p.run(|| {
            let _root = info_span!("request").entered();
            let _child = info_span!("handler").entered();
            tracing_usr::identify(&User::new("user-1").with_extra("api_key", "s3cr3t-value")).unwrap();
            tracing_usr::track_custom_event("export", serde_json::json!({"password": "hunter2-value"}))
                .unwrap();
        });
        let root = root(&p.spans(), "request");
        assert_eq!(
            root.attr("usr.api_key"),
            Some(tracing_usr::REDACTED),
            "{order:?}: {:?}",
            root.attrs
        );
        assert_eq!(
            root.attr("appsec.events.export.password"),
            Some(tracing_usr::REDACTED),
            "{order:?}"
        );
        let raw = raw_bodies(agent);
        assert!(
            !raw.contains("s3cr3t-value") && !raw.contains("hunter2-value"),
            "{order:?}"
        );
    });
}

#[test]
fn a_thousand_concurrent_requests_keep_their_own_user() {
    in_each_order(&[], |order, p| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        let dispatch = p.dispatch.clone();
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for n in 0..1000u32 {
                let request = async move {
                    tokio::task::yield_now().await;
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(u64::from(n % 5))).await;
                        tracing_usr::identify(&User::new(format!("user-{n}"))).unwrap();
                    }
                    .instrument(info_span!("handler"))
                    .await;
                };
                // The request span is made under the pipeline's dispatch (this thread has none).
                let request = tracing::dispatcher::with_default(&dispatch, || {
                    request.instrument(info_span!("request", n = n))
                });
                tasks.push(tokio::spawn(request.with_subscriber(dispatch.clone())));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let spans = p.spans();
        let roots: Vec<_> = spans.iter().filter(|s| s.is_root()).collect();
        assert_eq!(roots.len(), 1000, "{order:?}: every root exported");
        let mut user_of_trace = std::collections::HashMap::new();
        for root in &roots {
            let n = root
                .attr("n")
                .unwrap_or_else(|| panic!("{order:?}: a root without n: {root:?}"));
            assert_eq!(
                root.attr("usr.id"),
                Some(format!("user-{n}").as_str()),
                "{order:?}"
            );
            assert_eq!(
                root.attr("user.id"),
                Some(format!("user-{n}").as_str()),
                "{order:?}"
            );
            assert_written_once(root);
            assert!(
                user_of_trace.insert(root.trace_id.clone(), n).is_none(),
                "{order:?}: one root per trace"
            );
        }
        let handlers: Vec<_> = spans.iter().filter(|s| s.name == "handler").collect();
        assert_eq!(handlers.len(), 1000, "{order:?}");
        for handler in handlers {
            assert!(
                user_of_trace.contains_key(&handler.trace_id),
                "{order:?}: the handler's trace has its root"
            );
            assert_eq!(
                handler.attr("usr.id"),
                None,
                "{order:?}: a child carries no user tag"
            );
        }
    });
}
