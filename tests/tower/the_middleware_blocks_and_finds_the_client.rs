//! The middleware end to end: root span, client IP, 403 answers.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tracing_usr::blocking::BlockEntry;
use tracing_usr::export::SpanRecord;
use tracing_usr::User;

use crate::service::{header, only_root, send};
use crate::support::{builder_with_env, Harness};

struct App {
    h: Harness,
    calls: Arc<AtomicUsize>,
}

fn app() -> App {
    let builder = builder_with_env(&[])
        .with_blocked_users([BlockEntry {
            value: "bad-user".into(),
            expiration: None,
        }])
        .with_blocked_ips([BlockEntry {
            value: "203.0.113.66".into(),
            expiration: None,
        }]);
    App {
        h: Harness::new(builder),
        calls: Arc::default(),
    }
}

impl App {
    /// Sends one request through the middleware around a handler that identifies the user of
    /// its `x-user` header.
    async fn send(&self, request: Request<String>, trusted: &[&str]) -> Response<String> {
        let calls = self.calls.clone();
        let handler = move |request: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(user) = header(&request, "x-user") {
                    if let Err(e) = tracing_usr::identify(&User::new(user)) {
                        tracing::warn!(error = %e, "identify");
                    }
                }
                Ok(Response::new("ok".to_owned()))
            }
        };
        send(&self.h, trusted, handler, request).await
    }

    fn root(&self) -> SpanRecord {
        only_root(&self.h)
    }
}

fn request(peer: &str, headers: &[(&str, &str)]) -> Request<String> {
    crate::service::request("/orders", peer, headers)
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
