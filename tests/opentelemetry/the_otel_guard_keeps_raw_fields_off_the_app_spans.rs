//! `tracing_usr::otel_guard` around the OpenTelemetry layer: the fields the application
//! declares on its own spans and events reach the collector after tracing-usr's mode and
//! masking, in either layer order, checked on what the test agent's OTLP intake received.
use std::fmt;

use tracing::{info, info_span};

use crate::agent::TestAgent;
use crate::fields_tracing_usr_cannot_reach_are_warned_about::config_warnings;
use crate::otel::{pipeline_guarded, raw_bodies, Guard, Order, Pipeline, Span, ORDERS};
use crate::support::builder_with_env;

/// Runs `test` once per layer order on a fresh guarded pipeline (environment `vars`) inside its
/// own agent session.
fn in_each_order(vars: &[(&str, &str)], guard: Guard, test: impl Fn(Order, &Pipeline)) {
    let agent = TestAgent::get();
    for order in ORDERS {
        let _session = agent.otlp_session();
        test(order, &pipeline_guarded(order, builder_with_env(vars), guard));
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("a span {name:?} in {spans:#?}"))
}

/// An error with a source, recorded as a span field.
#[derive(Debug)]
struct Outer(Inner);
#[derive(Debug)]
struct Inner;

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("login failed")
    }
}
impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
impl std::error::Error for Inner {}

/// A request whose app spans and event declare identity, a token, a password and ordinary
/// fields, one identity value recorded late.
fn request() {
    let _root = info_span!("request").entered();
    let auth = info_span!(
        "auth",
        usr.id = "user-1",
        usr.email = "ada@example.com",
        usr.token = "tok-123",
        password = "hunter2",
        http.route = "/login",
        attempt = 3_i64,
        ok = true,
        usr.session_id = tracing::field::Empty,
    );
    let _auth = auth.enter();
    auth.record("usr.session_id", "sess-42");
    let error = Outer(Inner);
    let _db = info_span!("db", error = &error as &(dyn std::error::Error + 'static)).entered();
    info!(usr.login = "ada", api_key = "k-789", "signed in");
}

/// Fails when one of `raws` is anywhere in what the collector received.
fn assert_none_reached_the_collector(order: Order, raws: &[&str]) {
    let bodies = raw_bodies(TestAgent::get());
    for raw in raws {
        assert!(!bodies.contains(raw), "{order:?}: {raw} reached the collector");
    }
}

const ANON: &[(&str, &str)] = &[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")];

/// The raw values `request` gives that must not reach the collector in anonymization mode.
const RAW: [&str; 6] = [
    "user-1",
    "ada@example.com",
    "tok-123",
    "hunter2",
    "sess-42",
    "k-789",
];

#[test]
fn anonymization_mode_hashes_identity_and_redacts_secrets_on_the_app_spans() {
    in_each_order(ANON, Guard::On, |order, p| {
        p.run(request);
        let spans = p.spans();
        let auth = named(&spans, "auth");
        println!("{order:?} auth: {:?}", auth.attrs);
        let id = auth.attr("usr.id").expect("usr.id, hashed");
        assert!(id.starts_with("anon_"), "{order:?}: {id}");
        // The same hash as on the root.
        assert_eq!(named(&spans, "request").attr("usr.id"), Some(id), "{order:?}");
        assert!(
            auth.attr("usr.session_id").unwrap().starts_with("anon_"),
            "{order:?}"
        );
        assert_eq!(auth.attr("usr.email"), None, "{order:?}: no email in anon mode");
        assert_eq!(auth.attr("usr.token"), Some("<Redacted>"), "{order:?}");
        assert_eq!(auth.attr("password"), Some("<Redacted>"), "{order:?}");
        // Ordinary fields pass with their types.
        assert_eq!(auth.attr("http.route"), Some("/login"), "{order:?}");
        assert_eq!(auth.attr("attempt"), Some("3"), "{order:?}");
        assert_eq!(auth.attr("ok"), Some("bool:true"), "{order:?}");
        // An error keeps its message and source chain.
        let db = named(&spans, "db");
        assert_eq!(
            db.attr("error"),
            Some("login failed"),
            "{order:?}: {:?}",
            db.attrs
        );
        assert_eq!(db.attr("error.chain"), Some("[connection reset]"), "{order:?}");
        let (_, event) = db
            .events
            .iter()
            .find(|(name, _)| name == "signed in")
            .unwrap_or_else(|| panic!("{order:?}: the event in {:?}", db.events));
        println!("{order:?} event: {event:?}");
        assert!(event["usr.login"].starts_with("anon_"), "{order:?}: {event:?}");
        assert_eq!(event["api_key"], "<Redacted>", "{order:?}");
        assert_none_reached_the_collector(order, &RAW);
    });
}

#[test]
fn disabled_mode_leaves_every_user_field_out() {
    in_each_order(
        &[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "disabled")],
        Guard::On,
        |order, p| {
            p.run(request);
            let spans = p.spans();
            for span in &spans {
                assert!(
                    !span
                        .keys
                        .iter()
                        .any(|k| k.starts_with("usr.") && k != "usr.token"),
                    "{order:?}: {span:?}"
                );
            }
            let auth = named(&spans, "auth");
            assert_eq!(auth.attr("usr.token"), Some("<Redacted>"), "{order:?}");
            assert_eq!(auth.attr("http.route"), Some("/login"), "{order:?}");
            assert_none_reached_the_collector(order, &RAW);
        },
    );
}

#[test]
fn identification_mode_keeps_identity_and_redacts_secrets_and_values_when_asked() {
    in_each_order(&[], Guard::Values, |order, p| {
        p.run(|| {
            request();
            let _call = info_span!("call", note = "Bearer abc.def.ghi").entered();
        });
        let spans = p.spans();
        let auth = named(&spans, "auth");
        assert_eq!(auth.attr("usr.id"), Some("user-1"), "{order:?}");
        assert_eq!(auth.attr("usr.email"), Some("ada@example.com"), "{order:?}");
        assert_eq!(auth.attr("usr.token"), Some("<Redacted>"), "{order:?}");
        assert_eq!(auth.attr("password"), Some("<Redacted>"), "{order:?}");
        let call = named(&spans, "call");
        println!("{order:?} call: {:?}", call.attrs);
        let header = call.attr("note").unwrap();
        assert!(!header.contains("abc.def.ghi"), "{order:?}: {header}");
        assert_none_reached_the_collector(order, &["tok-123", "hunter2", "k-789", "abc.def.ghi"]);
    });
}

#[test]
fn without_the_guard_the_app_spans_carry_the_raw_values() {
    // What the guard is for: the same request, the layer as it is.
    in_each_order(ANON, Guard::Off, |order, p| {
        p.run(request);
        let spans = p.spans();
        let auth = named(&spans, "auth");
        assert_eq!(auth.attr("usr.id"), Some("user-1"), "{order:?}");
        assert_eq!(auth.attr("usr.token"), Some("tok-123"), "{order:?}");
    });
}

#[test]
fn with_no_tracing_usr_layer_the_guard_reads_its_rules_from_the_environment() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::prelude::*;
    // No tracing-usr layer, no mode variable set for this process: identification mode and
    // the default masking, as `tracing_usr::layer()` would have.
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("guard-alone"));
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(tracing_usr::otel_guard(otel)));
    tracing::dispatcher::with_default(&dispatch, || {
        let _span = info_span!("alone", usr.id = "user-1", usr.token = "tok-123", secret = "s3").entered();
    });
    let spans = exporter.get_finished_spans().unwrap();
    let span = spans.iter().find(|s| s.name == "alone").expect("the span");
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("usr.id").as_deref(), Some("user-1"), "{:?}", span.attributes);
    assert_eq!(attr("usr.token").as_deref(), Some("<Redacted>"));
    assert_eq!(attr("secret").as_deref(), Some("<Redacted>"));
}

#[test]
fn a_guarded_layer_needs_no_warning_about_the_fields_it_receives() {
    in_each_order(ANON, Guard::On, |order, p| {
        p.run(|| {
            let _root = info_span!("request").entered();
            let _auth = info_span!("auth_guarded", usr.id = "user-1", password = "x").entered();
        });
        let warnings = config_warnings(p, "auth_guarded", 0);
        assert!(warnings.is_empty(), "{order:?}: {warnings:#?}");
        let spans = p.spans();
        let auth = named(&spans, "auth_guarded");
        assert!(auth.attr("usr.id").unwrap().starts_with("anon_"), "{order:?}");
    });
}
