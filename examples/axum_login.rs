//! An axum service with signup, login and account endpoints behind the `tracing-usr-tower`
//! middleware, and a driver that attacks it on loopback: a credential-stuffing run (one IP,
//! many accounts) and a brute force (one account, many attempts, then a lucky guess). It prints
//! the security signals and the 403s, and checks the outcome (non-zero exit if detection did
//! not do its job).
//!
//! ```text
//! cargo run --example axum_login
//! ```
//!
//! No collector is needed: traces and logs go to a JSON-lines file in the temp directory
//! (printed at the end) unless `TRACING_USR_EXPORT` or a collector variable says otherwise.
//! The driver plays a load balancer: it connects from 127.0.0.1 (a trusted proxy here) and
//! names the client in `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing_subscriber::prelude::*;
use tracing_usr::detection::{DetectionConfig, RuleId, Signal, SignalSink, TracingSink};
use tracing_usr::{JsonLines, SetUserOptions};
use tracing_usr_tower::{PeerAddr, UserTrackingLayer};

#[derive(Default)]
struct Accounts {
    /// login → (user id, password)
    users: Mutex<HashMap<String, (String, String)>>,
}

#[derive(serde::Deserialize)]
struct Credentials {
    login: String,
    password: String,
}

async fn signup(State(accounts): State<Arc<Accounts>>, Json(c): Json<Credentials>) -> StatusCode {
    let id = format!("u-{:04}", accounts.users.lock().unwrap().len() + 1);
    accounts
        .users
        .lock()
        .unwrap()
        .insert(c.login.clone(), (id.clone(), c.password));
    let _ = tracing_usr::track_signup(&c.login, Some(&id), ());
    StatusCode::CREATED
}

async fn login(State(accounts): State<Arc<Accounts>>, Json(c): Json<Credentials>) -> StatusCode {
    let found = accounts.users.lock().unwrap().get(&c.login).cloned();
    match found {
        Some((id, password)) if password == c.password => {
            // A blocked account gets `Err(Blocked)` here; the middleware answers 403.
            let _ = tracing_usr::track_login_success(&c.login, id.as_str(), (), SetUserOptions::default());
            StatusCode::OK
        }
        Some((id, _)) => {
            let _ = tracing_usr::track_login_failure(&c.login, true, Some(&id), ());
            StatusCode::UNAUTHORIZED
        }
        None => {
            let _ = tracing_usr::track_login_failure(&c.login, false, None, ());
            StatusCode::UNAUTHORIZED
        }
    }
}

/// The "session" is the login in a header, to keep the example short.
async fn account(State(accounts): State<Arc<Accounts>>, headers: HeaderMap) -> Result<String, StatusCode> {
    let login = headers
        .get("x-session")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let (id, _) = accounts
        .users
        .lock()
        .unwrap()
        .get(login)
        .cloned()
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let _ = tracing_usr::identify(&tracing_usr::User::new(id.as_str()).with_login(login));
    Ok(format!("account of {login} ({id})"))
}

/// axum keeps the peer address in `ConnectInfo`; the middleware reads a `PeerAddr`.
async fn peer_addr(ConnectInfo(addr): ConnectInfo<SocketAddr>, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(PeerAddr(addr));
    next.run(request).await
}

/// Prints each signal and passes it on to the default sink (a `WARN` event, exported).
struct PrintAndExport(Arc<Mutex<Vec<Signal>>>);

impl SignalSink for PrintAndExport {
    fn deliver(&self, s: &Signal) {
        println!(
            "  SIGNAL {:<24} {:<8} {} {} (count {}, distinct {}){}",
            s.rule.as_str(),
            s.severity.as_str(),
            s.key_kind.as_str(),
            s.key,
            s.count,
            s.distinct,
            s.account
                .as_deref()
                .map(|a| format!(", escalated by a login of {a}"))
                .unwrap_or_default()
        );
        self.0.lock().unwrap().push(s.clone());
        TracingSink.deliver(s);
    }
}

struct Driver {
    client: reqwest::Client,
    base: String,
}

impl Driver {
    async fn post(&self, path: &str, client_ip: &str, login: &str, password: &str) -> StatusCode {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("x-forwarded-for", client_ip)
            .header("user-agent", "driver/1.0")
            .header("content-type", "application/json")
            .body(serde_json::json!({"login": login, "password": password}).to_string())
            .send()
            .await
            .expect("the server answers");
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }

    async fn account(&self, client_ip: &str, login: &str) -> StatusCode {
        let response = self
            .client
            .get(format!("{}/account", self.base))
            .header("x-forwarded-for", client_ip)
            .header("x-session", login)
            .send()
            .await
            .expect("the server answers");
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }
}

fn tally(statuses: &[StatusCode]) -> String {
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for s in statuses {
        match counts.iter_mut().find(|(code, _)| *code == s.as_u16()) {
            Some(slot) => slot.1 += 1,
            None => counts.push((s.as_u16(), 1)),
        }
    }
    counts
        .iter()
        .map(|(code, n)| format!("{n}× {code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    // Both account-takeover rules block: the attacking IPs, and an account that an attacker
    // logged into (critical escalation).
    let mut config = DetectionConfig::default();
    for rule in [RuleId::CredentialStuffing, RuleId::BruteForce] {
        config.rule_mut(rule).block_ip = true;
        config.rule_mut(rule).block_user = true;
    }
    let signals = Arc::new(Mutex::new(Vec::new()));
    let mut builder = tracing_usr::builder()
        .with_detection(config)
        .expect("valid detection settings")
        .with_signal_sink(PrintAndExport(Arc::clone(&signals)));
    let export_file = std::env::temp_dir().join("tracing-usr-axum-login.jsonl");
    if std::env::var_os("TRACING_USR_EXPORT").is_none() {
        let _ = std::fs::remove_file(&export_file);
        builder = builder.with_json_lines(JsonLines::File(export_file.clone()));
    }
    let layer = builder.build();
    let handle = layer.handle();
    let guard = handle.clone().shutdown_guard();
    tracing_subscriber::registry().with(layer).init();

    let accounts = Arc::new(Accounts::default());
    let app = Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/account", get(account))
        .with_state(accounts)
        .layer(
            UserTrackingLayer::new()
                .with_trusted_proxies(["127.0.0.1"])
                .expect("valid range"),
        )
        .layer(middleware::from_fn(peer_addr));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .expect("server");
    });
    let d = Driver {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };
    println!("listening on {addr}");

    println!("\n1. Five users sign up and log in (each from their own address)");
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let mut statuses = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let ip = format!("198.51.100.{}", 10 + i);
        statuses.push(d.post("/signup", &ip, user, &format!("{user}-secret")).await);
        statuses.push(d.post("/login", &ip, user, &format!("{user}-secret")).await);
        statuses.push(d.account(&ip, user).await);
    }
    println!("  {}", tally(&statuses));

    println!("\n2. Credential stuffing: 203.0.113.66 replays 60 leaked logins");
    let mut statuses = Vec::new();
    for i in 0..60 {
        statuses.push(
            d.post(
                "/login",
                "203.0.113.66",
                &format!("leaked-{i}@example.com"),
                "hunter2",
            )
            .await,
        );
    }
    println!("  {}", tally(&statuses));
    let stuffing_blocked = statuses.iter().filter(|s| **s == StatusCode::FORBIDDEN).count();

    println!("\n3. Brute force on alice from 192.0.2.1-3, then a right guess from 192.0.2.2");
    let mut statuses = Vec::new();
    for i in 0..45 {
        let ip = format!("192.0.2.{}", 1 + i % 3);
        statuses.push(d.post("/login", &ip, "alice", &format!("guess-{i}")).await);
    }
    statuses.push(d.post("/login", "192.0.2.2", "alice", "alice-secret").await);
    println!("  {}", tally(&statuses));
    println!(
        "  alice's account from her own address now: {}",
        d.account("198.51.100.10", "alice").await
    );
    println!("  bob's account: {}", d.account("198.51.100.11", "bob").await);
    println!(
        "  the attacker's next request: {}",
        d.post("/login", "192.0.2.2", "bob", "x").await
    );

    // Let queued signals be delivered and records be written.
    let _ = handle.flush();
    let signals = signals.lock().unwrap().clone();
    println!(
        "\n{} signals; {stuffing_blocked} stuffing attempts answered 403",
        signals.len()
    );
    if std::env::var_os("TRACING_USR_EXPORT").is_none() {
        println!("traces and logs: {}", export_file.display());
    }
    let expect = |what: &str, ok: bool| {
        if !ok {
            eprintln!("unexpected: {what}");
            std::process::exit(1);
        }
    };
    let has = |rule: RuleId, escalation: bool| {
        signals
            .iter()
            .any(|s| s.rule == rule && s.escalation == escalation)
    };
    expect(
        "a credential-stuffing signal",
        has(RuleId::CredentialStuffing, false),
    );
    expect("a brute-force signal", has(RuleId::BruteForce, false));
    expect("a brute-force escalation", has(RuleId::BruteForce, true));
    expect(
        "403s for the stuffing IP after the 31st failure",
        stuffing_blocked == 29,
    );
    expect(
        "alice blocked, bob not",
        d.account("198.51.100.10", "alice").await == StatusCode::FORBIDDEN
            && d.account("198.51.100.11", "bob").await == StatusCode::OK,
    );
    drop(guard);
}
