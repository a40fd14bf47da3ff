//! Datadog's Rust tracer (`datadog-opentelemetry`, dd-trace-rs) with tracing-usr in the same
//! registry: the root span it sends to the agent's `/v0.4/traces` carries the user and the
//! login-success tags in `meta`.
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use serde_json::Value;
use tracing::info_span;
use tracing_subscriber::prelude::*;
use tracing_usr::{EventMetadata, LoginUser, SetUserOptions, User};

use crate::agent::TestAgent;
use crate::support::builder_with_env;

#[test]
fn the_agent_receives_user_tags_on_the_dd_trace_rs_root() {
    let agent = TestAgent::get();
    // The other tests clear the agent's requests: hold their lock while this session lives.
    let _lock = agent.otlp_session();
    let token = format!("dd-trace-rs-{}", std::process::id());
    agent.dd_session(&token);
    let mut config = datadog_opentelemetry::configuration::Config::builder();
    config
        .set_trace_agent_url(agent.dd_url())
        .set_service("interop".to_owned())
        .set_telemetry_enabled(false)
        .set_remote_config_enabled(false);
    let (provider, _propagator) = datadog_opentelemetry::tracing()
        .with_config(config.build())
        .init_local();
    let usr = builder_with_env(&[]).build();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(usr)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("interop"))),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        let _root = info_span!("login.request").entered();
        let _child = info_span!("check_password").entered();
        tracing_usr::track_login_success(
            "ada",
            LoginUser::from(User::new("user-9").with_email("ada@example.com")),
            EventMetadata::default(),
            SetUserOptions::default(),
        )
        .unwrap();
    });
    provider.force_flush().expect("flush dd-trace-rs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let root = loop {
        let traces = agent.dd(&format!("/test/session/traces?test_session_token={token}"));
        let root = traces
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t.as_array().into_iter().flatten())
            .find(|s| s["name"] == "login.request" || s["resource"] == "login.request")
            .cloned();
        if let Some(root) = root {
            break root;
        }
        assert!(
            Instant::now() < deadline,
            "no dd-trace-rs root at the agent: {traces}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("dd-trace-rs root meta: {}", root["meta"]);
    println!("dd-trace-rs root metrics: {}", root["metrics"]);
    let meta = &root["meta"];
    for (key, value) in [
        ("usr.id", "user-9"),
        ("usr.email", "ada@example.com"),
        ("_dd.appsec.user.collection_mode", "sdk"),
        ("appsec.events.users.login.success.track", "true"),
        ("appsec.events.users.login.success.usr.login", "ada"),
        ("appsec.events.users.login.success.usr.id", "user-9"),
        ("_dd.appsec.events.users.login.success.sdk", "true"),
    ] {
        assert_eq!(meta[key], Value::from(value), "{key} in {meta}");
    }
    let _ = provider.shutdown();
}
