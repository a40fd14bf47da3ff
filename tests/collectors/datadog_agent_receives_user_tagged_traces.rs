//! Traces reach the real Datadog test agent (with its header checks on) with user tags, parent
//! links and masking.
use serde_json::Value;
use tracing::{info, info_span};
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::export::InMemoryExporter;
use tracing_usr::{SetUserOptions, User};

use crate::agent::TestAgent;
use crate::support::builder_with_env;

fn token(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn run(token: &str, body: impl FnOnce()) -> (InMemoryExporter, tracing_usr::Handle) {
    run_via(AgentAddress::Http(TestAgent::get().dd_url()), token, body)
}

fn run_via(
    address: AgentAddress,
    token: &str,
    body: impl FnOnce(),
) -> (InMemoryExporter, tracing_usr::Handle) {
    let memory = InMemoryExporter::default();
    let config = DatadogConfig {
        agent: address,
        service: "checkout".into(),
        env: Some("test".into()),
        version: Some("1.2.3".into()),
        tags: vec![("team".into(), "identity".into())],
        headers: vec![("X-Datadog-Test-Session-Token".into(), token.into())],
        ..DatadogConfig::default()
    };
    let layer = builder_with_env(&[("TRACING_USR_DD_LOGS", "none")])
        .with_datadog(config)
        .with_exporter(memory.clone())
        .build();
    let handle = layer.handle();
    assert_eq!(
        handle.exporters(),
        vec!["datadog".to_owned(), "in-memory".to_owned()]
    );
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    tracing::dispatcher::with_default(&dispatch, body);
    handle.flush().unwrap();
    (memory, handle)
}

fn find<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[test]
fn spans_arrive_with_parents_user_tags_masking_and_headers() {
    let token = token("dd-basic");
    let (memory, handle) = run(&token, || {
        let _root = info_span!("request", http.route = "/orders", password = "hunter2").entered();
        let _child = info_span!(
            "auth",
            usr.id = "user-1",
            usr.email = "a@b.c",
            note = "token=abc123"
        )
        .entered();
        info!("checked");
    });
    assert_eq!(
        handle.stats().export_errors,
        0,
        "the agent rejected a payload: {:?}",
        handle.stats()
    );
    let expected = memory.spans();
    let traces = TestAgent::get().dd(&format!("/test/session/traces?test_session_token={token}"));
    let traces = traces.as_array().unwrap();
    assert_eq!(traces.len(), 1, "{traces:#?}");
    let spans = traces[0].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let (root, child) = (find(spans, "request"), find(spans, "auth"));
    let memory_root = expected.iter().find(|s| s.name == "request").unwrap();
    assert_eq!(root["trace_id"].as_u64(), Some(memory_root.trace_id as u64));
    assert_eq!(root["span_id"].as_u64(), Some(memory_root.span_id));
    assert_eq!(child["parent_id"], root["span_id"]);
    assert_eq!(child["trace_id"], root["trace_id"]);
    assert!(root.get("parent_id").is_none() || root["parent_id"] == 0);
    assert_eq!(root["service"], "checkout");
    assert_eq!(root["resource"], "request");
    let meta = &root["meta"];
    assert_eq!(meta["usr.id"], "user-1");
    assert_eq!(meta["usr.email"], "a@b.c");
    assert_eq!(meta["_dd.appsec.user.collection_mode"], "identification");
    assert_eq!(meta["password"], "<Redacted>");
    assert_eq!(meta["env"], "test");
    assert_eq!(meta["version"], "1.2.3");
    assert_eq!(meta["team"], "identity");
    assert_eq!(
        meta["_dd.p.tid"],
        format!("{:016x}", (memory_root.trace_id >> 64) as u64)
    );
    assert_eq!(child["meta"]["note"], "token=<Redacted>");
    assert!(child["meta"].get("usr.id").is_none());
    assert_eq!(root["metrics"]["_dd.top_level"], 1.0);

    let requests = TestAgent::get().dd(&format!("/test/session/requests?test_session_token={token}"));
    let request = requests
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"].as_str().unwrap_or("").ends_with("/v0.4/traces"))
        .expect("the intake request");
    // Header names are case-insensitive (hyper sends them in lower case).
    let header = |name: &str| -> String {
        request["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("Datadog-Meta-Lang"), "rust");
    assert_eq!(header("Content-Type"), "application/msgpack");
    assert_eq!(header("X-Datadog-Trace-Count"), "1");
    assert!(!header("Datadog-Meta-Tracer-Version").is_empty());
    assert!(header("Datadog-Meta-Lang-Version").starts_with('1'));
    assert!(header("Content-Length").parse::<u64>().unwrap() > 0);
}

#[test]
fn business_events_are_kept_and_carry_datadog_tags() {
    let token = token("dd-events");
    let (_, handle) = run(&token, || {
        let _root = info_span!("login").entered();
        tracing_usr::track_login_success(
            "user-login",
            "user-1",
            serde_json::json!({"usr.email": "a@b.c"}),
            SetUserOptions::default(),
        )
        .unwrap();
        info_span!("second")
            .in_scope(|| tracing_usr::set_user(&User::new("u-2"), SetUserOptions::default()).unwrap());
    });
    assert_eq!(handle.stats().export_errors, 0);
    let traces = TestAgent::get().dd(&format!("/test/session/traces?test_session_token={token}"));
    let login = traces
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t.as_array().unwrap())
        .find(|s| s["name"] == "login")
        .unwrap();
    assert_eq!(login["metrics"]["_sampling_priority_v1"], 2.0);
    assert_eq!(login["meta"]["_dd.p.dm"], "-5");
    assert_eq!(
        login["meta"]["appsec.events.users.login.success.usr.login"],
        "user-login"
    );
    assert_eq!(login["meta"]["_dd.appsec.events.users.login.success.sdk"], "true");
}

#[test]
fn traces_without_a_keep_get_the_agents_sampling_decision() {
    let token = token("dd-rates");
    let (_, handle) = run(&token, || info_span!("plain").in_scope(|| {}));
    assert_eq!(handle.stats().export_errors, 0);
    let traces = TestAgent::get().dd(&format!("/test/session/traces?test_session_token={token}"));
    let span = &traces[0][0];
    assert_eq!(
        span["metrics"]["_sampling_priority_v1"], 1.0,
        "rate 1.0 by default: {span}"
    );
    assert_eq!(span["meta"]["_dd.p.dm"], "-1");
}

#[test]
fn traces_reach_an_agent_on_a_unix_domain_socket() {
    let token = token("dd-uds");
    let agent = TestAgent::get();
    let url = format!("unix://{}", agent.uds_path.display());
    let address = AgentAddress::parse(&url).expect("a unix:// URL");
    let (_, handle) = run_via(address, &token, || {
        info_span!("over-uds", usr.id = "u-1").in_scope(|| {})
    });
    assert_eq!(handle.stats().export_errors, 0);
    let traces = agent.dd(&format!("/test/session/traces?test_session_token={token}"));
    assert_eq!(traces[0][0]["name"], "over-uds");
    assert_eq!(traces[0][0]["meta"]["usr.id"], "u-1");
}
