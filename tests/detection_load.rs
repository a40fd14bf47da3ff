//! A bounded load test on loopback: an axum login service behind the middleware, 64 concurrent
//! clients mixing legitimate users (with the odd typo) and a credential-stuffing botnet of 24
//! IPs. Every attacking IP must end up blocked, no legitimate user or address may be, and the
//! detector's memory must stay under its documented bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use tracing_subscriber::prelude::*;
use tracing_usr::detection::{DetectionConfig, Detector, RuleId};
use tracing_usr::{JsonLines, SetUserOptions};
use tracing_usr_tower::{PeerAddr, UserTrackingLayer};

const USERS: usize = 60;
const ATTACKERS: usize = 24;
const ATTEMPTS_PER_ATTACKER: usize = 45;

#[derive(serde::Deserialize)]
struct Credentials {
    login: String,
    password: String,
}

async fn login(State(users): State<Arc<HashMap<String, String>>>, Json(c): Json<Credentials>) -> StatusCode {
    match users.get(&c.login) {
        Some(password) if *password == c.password => {
            let id = format!("id-{}", c.login);
            let _ = tracing_usr::track_login_success(&c.login, id.as_str(), (), SetUserOptions::default());
            StatusCode::OK
        }
        known => {
            let _ = tracing_usr::track_login_failure(&c.login, known.is_some(), None, ());
            StatusCode::UNAUTHORIZED
        }
    }
}

async fn peer_addr(ConnectInfo(addr): ConnectInfo<SocketAddr>, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(PeerAddr(addr));
    next.run(request).await
}

async fn post_login(client: &reqwest::Client, base: &str, ip: &str, login: &str, password: &str) -> u16 {
    client
        .post(format!("{base}/login"))
        .header("x-forwarded-for", ip)
        .header("content-type", "application/json")
        .body(serde_json::json!({"login": login, "password": password}).to_string())
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attackers_are_blocked_legitimate_users_are_not_and_memory_stays_bounded() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::CredentialStuffing).block_ip = true;
    config.rule_mut(RuleId::CredentialStuffing).block_user = true;
    config.rule_mut(RuleId::BruteForce).block_ip = true;
    config.rule_mut(RuleId::BruteForce).block_user = true;
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(JsonLines::None)
        .with_detection(config.clone())
        .unwrap()
        .with_signal_sink(())
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    // The server's worker threads need the subscriber too: set it as the global default for this
    // test binary (it runs only this test).
    tracing::dispatcher::set_global_default(dispatch).expect("no other global subscriber");

    let users: Arc<HashMap<String, String>> = Arc::new(
        (0..USERS)
            .map(|i| (format!("user{i}"), format!("pw-{i}")))
            .collect(),
    );
    let app = Router::new()
        .route("/login", post(login))
        .with_state(Arc::clone(&users))
        .layer(
            UserTrackingLayer::new()
                .with_trusted_proxies(["127.0.0.1"])
                .unwrap(),
        )
        .layer(middleware::from_fn(peer_addr));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    let client = reqwest::Client::new();

    let run = async {
        let mut tasks = tokio::task::JoinSet::new();
        // Legitimate users: one address each, a typo now and then, then the right password.
        for i in 0..USERS {
            let (client, base) = (client.clone(), base.clone());
            tasks.spawn(async move {
                let ip = format!("198.51.100.{}", i + 1);
                let mut statuses = Vec::new();
                for round in 0..5 {
                    if (i + round) % 4 == 0 {
                        statuses.push(post_login(&client, &base, &ip, &format!("user{i}"), "typo").await);
                    }
                    statuses
                        .push(post_login(&client, &base, &ip, &format!("user{i}"), &format!("pw-{i}")).await);
                }
                (format!("user{i}"), ip, statuses)
            });
        }
        // The botnet: each IP sprays leaked logins (real ones among them) with wrong passwords.
        for a in 0..ATTACKERS {
            let (client, base) = (client.clone(), base.clone());
            tasks.spawn(async move {
                let ip = format!("203.0.113.{}", a + 1);
                let mut statuses = Vec::new();
                for n in 0..ATTEMPTS_PER_ATTACKER {
                    let login = if n % 3 == 0 {
                        format!("user{}", (a * 7 + n) % USERS)
                    } else {
                        format!("leaked-{a}-{n}@example.com")
                    };
                    statuses.push(post_login(&client, &base, &ip, &login, "123456").await);
                }
                (String::new(), ip, statuses)
            });
        }
        let mut results = Vec::new();
        while let Some(result) = tasks.join_next().await {
            results.push(result.unwrap());
        }
        results
    };
    let results = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the load test finishes within 2 minutes");

    let blocks = handle.block_list();
    for (user, ip, statuses) in &results {
        if user.is_empty() {
            // Every attacking IP was refused after its 31st failure: 31 × 401, then 403s.
            assert!(blocks.is_ip_blocked(ip.parse().unwrap()), "{ip} not blocked");
            assert_eq!(
                statuses.iter().filter(|s| **s == 401).count(),
                31,
                "{ip}: {statuses:?}"
            );
            assert!(statuses[31..].iter().all(|s| *s == 403), "{ip}: {statuses:?}");
        } else {
            assert!(
                !blocks.is_ip_blocked(ip.parse().unwrap()),
                "legitimate {ip} blocked"
            );
            assert!(!blocks.is_user_blocked(&format!("id-{user}")), "{user} blocked");
            assert!(
                statuses.iter().all(|s| *s == 200 || *s == 401),
                "{user}: {statuses:?}"
            );
            assert_eq!(
                statuses.iter().filter(|s| **s == 200).count(),
                5,
                "{user}: {statuses:?}"
            );
        }
    }
    let detector = handle.detector().unwrap();
    let used = detector.memory_usage();
    let bound = Detector::memory_bound(&config);
    assert!(used <= bound, "{used} bytes used, bound {bound}");
    assert!(detector.tracked_keys() <= 8 * config.max_keys);
    println!(
        "{} requests; detector: {} keys, {used} bytes (bound {bound})",
        results.iter().map(|r| r.2.len()).sum::<usize>(),
        detector.tracked_keys()
    );
}
