//! The middleware end to end: root span, client IP, 403 answers.
mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tracing_subscriber::prelude::*;
use tracing_usr::blocking::BlockEntry;
use tracing_usr::export::{InMemoryExporter, SpanRecord};
use tracing_usr::{JsonLines, User};
use tracing_usr_tower::UserTrackingLayer;

struct App {
    exporter: InMemoryExporter,
    handle: tracing_usr::Handle,
    dispatch: tracing::Dispatch,
    calls: Arc<AtomicUsize>,
}

fn app() -> App {
    let exporter = InMemoryExporter::default();
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(JsonLines::None)
        .with_exporter(exporter.clone())
        .with_blocked_users([BlockEntry {
            value: "bad-user".into(),
            expiration: None,
        }])
        .with_blocked_ips([BlockEntry {
            value: "203.0.113.66".into(),
            expiration: None,
        }])
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    App {
        exporter,
        handle,
        dispatch,
        calls: Arc::default(),
    }
}

impl App {
    /// Sends one request through the middleware around a handler that identifies the user of
    /// its `x-user` header.
    async fn send(&self, request: Request<String>, trusted: &[&str]) -> Response<String> {
        let calls = self.calls.clone();
        let handler = tower::service_fn(move |request: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(user) = request.headers().get("x-user").and_then(|v| v.to_str().ok()) {
                    if let Err(e) = tracing_usr::identify(&User::new(user)) {
                        tracing::warn!(error = %e, "identify");
                    }
                }
                Ok::<_, Infallible>(Response::new("ok".to_owned()))
            }
        });
        let mut service = UserTrackingLayer::new()
            .with_trusted_proxies(trusted)
            .unwrap()
            .layer(handler);
        let _guard = tracing::dispatcher::set_default(&self.dispatch);
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    fn root(&self) -> SpanRecord {
        self.handle.flush().unwrap();
        let roots: Vec<_> = self
            .exporter
            .spans()
            .into_iter()
            .filter(|s| s.local_root)
            .collect();
        assert_eq!(roots.len(), 1, "{roots:#?}");
        self.exporter.clear();
        roots.into_iter().next().unwrap()
    }
}

fn request(peer: &str, headers: &[(&str, &str)]) -> Request<String> {
    support::request("/orders", peer, headers)
}

#[tokio::test]
async fn a_normal_request_passes_with_its_client_ip_and_status() {
    let app = app();
    let response = app
        .send(
            request("198.51.100.1", &[("x-user", "u-1"), ("user-agent", "curl/8")]),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let root = app.root();
    assert_eq!(root.name, "http.request");
    assert_eq!(root.meta("usr.id"), Some("u-1"));
    assert_eq!(root.meta("http.client_ip"), Some("198.51.100.1"));
    assert_eq!(root.meta("network.client.ip"), Some("198.51.100.1"));
    assert_eq!(root.meta("http.useragent"), Some("curl/8"));
    assert_eq!(root.meta("http.status_code"), Some("200"));
    assert_eq!(root.meta("appsec.blocked"), None);
}

#[tokio::test]
async fn a_blocked_user_gets_403_json_or_html_by_accept() {
    let app = app();
    let response = app
        .send(request("198.51.100.1", &[("x-user", "bad-user")]), &[])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["errors"][0]["title"], "You've been blocked");
    let id = body["security_response_id"].as_str().unwrap().to_owned();
    let root = app.root();
    assert_eq!(root.meta("appsec.blocked"), Some("true"));
    assert_eq!(root.meta("http.status_code"), Some("403"));
    assert_eq!(root.meta("actor.ip"), Some("198.51.100.1"));
    assert!(root.meta("_dd.appsec.json").unwrap().contains(&id));

    let response = app
        .send(
            request("198.51.100.1", &[("x-user", "bad-user"), ("accept", "text/html")]),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(response.body().contains("Security Response ID: "));
}

#[tokio::test]
async fn a_blocked_ip_never_reaches_the_service() {
    let app = app();
    let response = app.send(request("203.0.113.66", &[("x-user", "u-1")]), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
    let root = app.root();
    assert_eq!(root.meta("appsec.blocked"), Some("true"));
    assert!(root.meta("_dd.appsec.json").unwrap().contains("blk-001-001"));
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let app = app();
    // An attacker at a blocked address claims to be someone else: ignored, it is not a proxy.
    let spoofed = request("203.0.113.66", &[("x-forwarded-for", "198.51.100.9")]);
    assert_eq!(
        app.send(spoofed, &["10.0.0.0/8"]).await.status(),
        StatusCode::FORBIDDEN
    );
    app.root();
    // Through the trusted proxy, the blocked client is found behind it…
    let proxied = request("10.0.0.5", &[("x-forwarded-for", "203.0.113.66")]);
    assert_eq!(
        app.send(proxied, &["10.0.0.0/8"]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.root().meta("http.client_ip"), Some("203.0.113.66"));
    // …and a client-supplied first hop cannot hide it.
    let prepended = request("10.0.0.5", &[("x-forwarded-for", "198.51.100.9, 203.0.113.66")]);
    assert_eq!(
        app.send(prepended, &["10.0.0.0/8"]).await.status(),
        StatusCode::FORBIDDEN
    );
    app.root();
}
