//! OTLP/HTTP to the test agent's OTLP port, read back raw and decoded with opentelemetry-proto.
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message as _;
use tracing::{info, info_span};
use tracing_usr::export::otlp::{OtlpConfig, OtlpProtocol};
use tracing_usr::export::InMemoryExporter;
use tracing_usr::{SetUserOptions, User};

use crate::agent::TestAgent;
use crate::support::builder_with_env;

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The raw bodies the agent received on `path`, decoded from base64 (and gunzipped).
fn bodies(agent: &TestAgent, path: &str) -> Vec<Vec<u8>> {
    let requests = agent.otlp("/test/session/requests");
    requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["url"].as_str().unwrap_or("").ends_with(path))
        .map(|r| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r["body"].as_str().unwrap())
                .unwrap();
            // The agent may store the body already decompressed; gunzip only real gzip data.
            if raw.starts_with(&[0x1f, 0x8b]) {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                raw
            }
        })
        .collect()
}

fn run(config: OtlpConfig, mode: &str) -> InMemoryExporter {
    let memory = InMemoryExporter::default();
    let layer = builder_with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", mode)])
        .with_otlp(config)
        .with_exporter(memory.clone())
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    tracing::dispatcher::with_default(&dispatch, || {
        let _root = info_span!("request", http.route = "/orders", api_key = "k-1").entered();
        let _child = info_span!("auth", usr.id = "user-1", usr.login = "user-login").entered();
        tracing_usr::set_user(
            &User::new("user-1")
                .with_email("a@b.c")
                .with_name("Alice")
                .with_role("admin")
                .with_session_id("sess-1"),
            SetUserOptions::propagate(),
        )
        .unwrap();
        info!(rows = 3, note = "password=hunter2", "loaded");
    });
    handle.flush().unwrap();
    assert_eq!(handle.stats().export_errors, 0, "{:?}", handle.stats());
    memory
}

fn config(agent: &TestAgent) -> OtlpConfig {
    OtlpConfig {
        traces_endpoint: Some(format!("{}/v1/traces", agent.otlp_url())),
        logs_endpoint: Some(format!("{}/v1/logs", agent.otlp_url())),
        resource: vec![
            ("service.name".into(), "checkout".into()),
            ("deployment.environment.name".into(), "test".into()),
        ],
        ..OtlpConfig::default()
    }
}

#[test]
fn protobuf_traces_and_logs_decode_with_ids_parents_attributes_events_and_users() {
    let agent = TestAgent::get();
    let _session = agent.otlp_session();
    let memory = run(config(agent), "identification");
    let expected = memory.spans();
    let root_record = expected.iter().find(|s| s.name == "request").unwrap();

    let traces: Vec<ExportTraceServiceRequest> = bodies(agent, "/v1/traces")
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(&b[..]).unwrap())
        .collect();
    assert_eq!(traces.len(), 1);
    let resource_spans = &traces[0].resource_spans[0];
    let resource = resource_spans.resource.as_ref().unwrap();
    assert_eq!(text(&resource.attributes, "service.name"), Some("checkout"));
    let spans = &resource_spans.scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    let root = spans.iter().find(|s| s.name == "request").unwrap();
    let child = spans.iter().find(|s| s.name == "auth").unwrap();
    assert_eq!(root.trace_id, root_record.trace_id.to_be_bytes().to_vec());
    assert_eq!(root.span_id, root_record.span_id.to_be_bytes().to_vec());
    assert!(root.parent_span_id.is_empty());
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(child.trace_id, root.trace_id);
    // Identity: usr.* and the semantic conventions, on the root only.
    for (key, value) in [
        ("usr.id", "user-1"),
        ("usr.email", "a@b.c"),
        ("usr.name", "Alice"),
        ("_dd.appsec.user.collection_mode", "sdk"),
        ("_dd.appsec.usr.id", "user-1"),
        ("user.id", "user-1"),
        ("enduser.id", "user-1"),
        ("user.email", "a@b.c"),
        ("user.full_name", "Alice"),
        ("session.id", "sess-1"),
        ("api_key", "<Redacted>"),
    ] {
        assert_eq!(text(&root.attributes, key), Some(value), "{key}");
    }
    match attr(&root.attributes, "user.roles") {
        Some(any_value::Value::ArrayValue(roles)) => assert_eq!(roles.values.len(), 1),
        other => panic!("user.roles: {other:?}"),
    }
    assert!(
        attr(&root.attributes, "_dd.p.usr.id").is_none(),
        "propagation state is not an attribute"
    );
    assert!(
        root.trace_state.contains("t.usr.id:dXNlci0x"),
        "{}",
        root.trace_state
    );
    assert!(child
        .attributes
        .iter()
        .all(|a| !a.key.starts_with("usr.") && !a.key.starts_with("user.")));
    // The event inside the child span, as a span event.
    let event = child
        .events
        .iter()
        .find(|e| e.name == "loaded")
        .expect("span event");
    assert_eq!(text(&event.attributes, "note"), Some("password=<Redacted>"));

    let logs: Vec<ExportLogsServiceRequest> = bodies(agent, "/v1/logs")
        .iter()
        .map(|b| ExportLogsServiceRequest::decode(&b[..]).unwrap())
        .collect();
    let records: Vec<_> = logs
        .iter()
        .flat_map(|l| &l.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect();
    assert_eq!(records.len(), 1);
    let log = records[0];
    assert_eq!(log.trace_id, root.trace_id);
    assert_eq!(log.span_id, child.span_id);
    assert_eq!(log.severity_text, "INFO");
    assert_eq!(text(&log.attributes, "usr.id"), Some("user-1"));
    assert_eq!(text(&log.attributes, "note"), Some("password=<Redacted>"));
    match log.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => assert_eq!(s, "loaded"),
        other => panic!("body: {other:?}"),
    }
}

#[test]
fn json_and_gzip_requests_decode_too() {
    let agent = TestAgent::get();
    let _session = agent.otlp_session();
    let mut json = config(agent);
    json.protocol = OtlpProtocol::HttpJson;
    json.logs_endpoint = None;
    run(json, "identification");
    let bodies_json = bodies(agent, "/v1/traces");
    assert_eq!(bodies_json.len(), 1);
    let request: ExportTraceServiceRequest = serde_json::from_slice(&bodies_json[0]).unwrap();
    assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 2);
    drop(_session);

    let _session = agent.otlp_session();
    let mut gzip = config(agent);
    gzip.gzip = true;
    gzip.logs_endpoint = None;
    run(gzip, "identification");
    let bodies_gzip = bodies(agent, "/v1/traces");
    assert_eq!(bodies_gzip.len(), 1);
    let requests = agent.otlp("/test/session/requests");
    let sent = requests
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"].as_str().unwrap_or("").ends_with("/v1/traces"))
        .unwrap();
    assert_eq!(sent["headers"]["Content-Encoding"], "gzip");
    let request = ExportTraceServiceRequest::decode(&bodies_gzip[0][..]).unwrap();
    assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 2);
}

#[test]
fn anonymized_identity_is_a_user_hash() {
    let agent = TestAgent::get();
    let _session = agent.otlp_session();
    let memory = InMemoryExporter::default();
    let mut cfg = config(agent);
    cfg.logs_endpoint = None;
    let layer = builder_with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")])
        .with_otlp(cfg)
        .with_exporter(memory)
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    tracing::dispatcher::with_default(&dispatch, || {
        info_span!("request", usr.id = "user-1", usr.login = "user-login").in_scope(|| {});
    });
    handle.flush().unwrap();
    let request = ExportTraceServiceRequest::decode(&bodies(agent, "/v1/traces")[0][..]).unwrap();
    let root = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        text(&root.attributes, "user.hash"),
        Some("anon_c6c289e49e9c05b2145860387b73bcb1")
    );
    assert_eq!(text(&root.attributes, "user.id"), None);
    assert_eq!(text(&root.attributes, "user.name"), None);
    assert_eq!(
        text(&root.attributes, "usr.login"),
        Some("anon_e9b7a334826ff2ff28b066a92ba8734c")
    );
}
