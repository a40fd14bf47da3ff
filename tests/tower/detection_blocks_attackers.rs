//! Detection through the middleware: a credential-stuffing attack gets its IP blocked (403 JSON
//! or HTML by `Accept`), a spoofed `X-Forwarded-For` does not help it, the block expires on the
//! clock, and a critical escalation blocks the account that logged in.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, RuleId};
use tracing_usr::SetUserOptions;

use crate::service::{header, request, send};
use crate::support::{builder_with_env, Harness};

struct App {
    h: Harness,
    clock: ManualClock,
}

fn app(block_ip: bool, block_user: bool) -> App {
    let clock = ManualClock::new();
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::CredentialStuffing).block_ip = block_ip;
    config.rule_mut(RuleId::CredentialStuffing).block_user = block_user;
    let builder = builder_with_env(&[])
        .with_clock(Arc::new(clock.clone()))
        .with_detection(config)
        .unwrap()
        .with_signal_sink(());
    App {
        h: Harness::new(builder),
        clock,
    }
}

/// `POST /login` with `x-login` and `x-ok` (the password was right) headers; `GET /me` with
/// `x-user` identifies that user.
async fn handler(request: Request<String>) -> Result<Response<String>, Infallible> {
    if let Some(login) = header(&request, "x-login") {
        if header(&request, "x-ok").is_some() {
            let id = format!("id-{login}");
            let _ = tracing_usr::track_login_success(&login, id.as_str(), (), SetUserOptions::default());
        } else {
            tracing_usr::track_login_failure(&login, true, None, ()).unwrap();
            return Ok(Response::builder().status(401).body(String::new()).unwrap());
        }
    }
    if let Some(user) = header(&request, "x-user") {
        let _ = tracing_usr::identify(&tracing_usr::User::new(user));
    }
    Ok(Response::new("ok".to_owned()))
}

impl App {
    async fn send(&self, peer: &str, headers: &[(&str, &str)]) -> Response<String> {
        send(
            &self.h,
            &["10.0.0.0/8"],
            handler,
            request("/login", peer, headers),
        )
        .await
    }

    async fn stuff(&self, peer: &str, headers: &[(&str, &str)]) -> Vec<StatusCode> {
        let mut statuses = Vec::new();
        for i in 0..31 {
            let login = format!("user-{}", i % 8);
            let mut h = vec![("x-login", login.as_str())];
            h.extend_from_slice(headers);
            statuses.push(self.send(peer, &h).await.status());
        }
        statuses
    }
}

#[tokio::test]
async fn credential_stuffing_blocks_the_ip_until_the_block_expires() {
    let app = app(true, false);
    let statuses = app.stuff("203.0.113.10", &[]).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // The 31st failure opened the signal and blocked the IP: every request is now refused.
    let response = app.send("203.0.113.10", &[("x-login", "user-1")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["content-type"], "application/json");
    let html = app.send("203.0.113.10", &[("accept", "text/html")]).await;
    assert_eq!(html.status(), StatusCode::FORBIDDEN);
    assert_eq!(html.headers()["content-type"], "text/html");
    // The attacker is not a trusted proxy: a forged X-Forwarded-For changes nothing.
    let spoofed = app
        .send("203.0.113.10", &[("x-forwarded-for", "198.51.100.20")])
        .await;
    assert_eq!(spoofed.status(), StatusCode::FORBIDDEN);
    // Behind the trusted proxy, the attacker is still found.
    let proxied = app.send("10.1.2.3", &[("x-forwarded-for", "203.0.113.10")]).await;
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);
    // Other clients are unaffected.
    assert_eq!(app.send("198.51.100.20", &[]).await.status(), StatusCode::OK);
    // 15 minutes later the block is gone.
    app.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(app.send("203.0.113.10", &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_critical_escalation_blocks_the_account_that_logged_in() {
    let app = app(false, true);
    app.stuff("203.0.113.11", &[]).await;
    // The attacker's guess succeeds: the account is presumed compromised.
    let success = app
        .send("203.0.113.11", &[("x-login", "user-5"), ("x-ok", "1")])
        .await;
    assert_eq!(
        success.status(),
        StatusCode::OK,
        "the escalating request itself was not blocked yet"
    );
    // Its next request, from anywhere, gets the 403 for a blocked user.
    let next = app.send("198.51.100.30", &[("x-user", "id-user-5")]).await;
    assert_eq!(next.status(), StatusCode::FORBIDDEN);
    // Other users are fine, and the block expires.
    assert_eq!(
        app.send("198.51.100.30", &[("x-user", "id-user-6")])
            .await
            .status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(
        app.send("198.51.100.30", &[("x-user", "id-user-5")])
            .await
            .status(),
        StatusCode::OK
    );
}
