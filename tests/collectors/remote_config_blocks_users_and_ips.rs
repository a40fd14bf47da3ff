//! Blocks set in Datadog reach the service through the agent's Remote Configuration
//! (`ASM_DATA`), against the real test agent: `identify` refuses a remotely blocked user and
//! the tower middleware answers 403, within two polls; removals unblock, expired entries never
//! block, CIDR ranges hold their addresses, a file that does not match its hash is refused and
//! reported while the earlier lists stay, and an agent outage keeps the lists until polling
//! resumes. A recording proxy in front of the agent shows what the client sends.
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::User;

use crate::agent::TestAgent;
use crate::support::{builder_with_env, Harness};

const POLL: Duration = Duration::from_millis(100);
const USERS_PATH: &str = "datadog/2/ASM_DATA/blocked_users/config";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A proxy between the client and the test agent: it forwards every request, keeps the
/// `/v0.7/config` request bodies, and can play an agent that is down (connections dropped).
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    /// Answer 404 to config requests (remote config not active in the agent).
    not_found: Arc<AtomicBool>,
    bodies: Arc<Mutex<VecDeque<Value>>>,
}

impl Proxy {
    fn start(agent: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            down: Arc::default(),
            not_found: Arc::default(),
            bodies: Arc::default(),
        };
        let (down, not_found, bodies) = (proxy.down.clone(), proxy.not_found.clone(), proxy.bodies.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (agent, down, not_found, bodies) =
                    (agent.clone(), down.clone(), not_found.clone(), bodies.clone());
                std::thread::spawn(move || forward(stream, &agent, &down, &not_found, &bodies));
            }
        });
        proxy
    }

    /// The config requests received since the last call.
    fn take(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().drain(..).collect()
    }
}

fn forward(
    stream: TcpStream,
    agent: &str,
    down: &AtomicBool,
    not_found: &AtomicBool,
    bodies: &Mutex<VecDeque<Value>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || down.load(Ordering::Relaxed) {
            return;
        }
        let mut parts = line.split(' ');
        let (method, path) = (
            parts.next().unwrap_or("GET").to_owned(),
            parts.next().unwrap_or("/").to_owned(),
        );
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.trim_end().split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("x-datadog-test-session-token")
                    || name.eq_ignore_ascii_case("content-type")
                {
                    headers.push((name.to_owned(), value.trim().to_owned()));
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if path == "/v0.7/config" {
            bodies
                .lock()
                .unwrap()
                .push_back(serde_json::from_slice(&body).expect("a JSON request"));
            if not_found.load(Ordering::Relaxed) {
                let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
        }
        let mut request = client
            .request(method.parse().unwrap(), format!("{agent}{path}"))
            .body(body);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let Ok(response) = request.send() else { return };
        let status = response.status().as_u16();
        let answer = response.bytes().unwrap_or_default();
        let _ = write!(
            stream,
            "HTTP/1.1 {status} Status\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        let _ = stream.write_all(&answer);
    }
}

struct Remote {
    token: String,
    proxy: Proxy,
    h: Harness,
}

impl Remote {
    /// A layer whose Datadog exporter (and so its Remote Configuration client, polling every
    /// 100 ms) talks to the test agent through a proxy, under a session token of its own.
    fn start() -> Remote {
        let agent = TestAgent::get();
        let token = format!(
            "rc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let proxy = Proxy::start(agent.dd_url());
        let config = DatadogConfig {
            agent: AgentAddress::Http(format!("http://127.0.0.1:{}", proxy.port)),
            headers: vec![("X-Datadog-Test-Session-Token".into(), token.clone())],
            ..DatadogConfig::default()
        };
        let builder = builder_with_env(&[("TRACING_USR_DD_LOGS", "none")])
            .with_datadog(config)
            .with_remote_config(true, Some(POLL));
        Remote {
            token,
            proxy,
            h: Harness::new(builder),
        }
    }

    /// Serves one `ASM_DATA` file at `path`.
    fn serve(&self, path: &str, rules_data: Value) {
        TestAgent::get().post_rc(
            &self.token,
            "/test/session/responses/config/path",
            &json!({"path": path, "msg": {"rules_data": rules_data}}),
        );
    }

    /// Serves a whole answer, as given.
    fn serve_raw(&self, answer: &Value) {
        TestAgent::get().post_rc(&self.token, "/test/session/responses/config", answer);
    }

    fn blocked(&self, user: &str) -> bool {
        self.h.run(|| {
            let _root = tracing::info_span!("request").entered();
            tracing_usr::identify(&User::new(user)).is_err()
        })
    }

    /// Waits (at most 5 s) until `user` is blocked or not; returns how long it took.
    fn until_blocked(&self, user: &str, blocked: bool) -> Duration {
        let started = Instant::now();
        while self.blocked(user) != blocked {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{user} never became blocked={blocked}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    /// Waits (at most 5 s) for `n` config requests to pass the proxy since the last look, and
    /// returns them.
    fn polls(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        let mut seen = Vec::new();
        while seen.len() < n {
            seen.extend(self.proxy.take());
            assert!(started.elapsed() < Duration::from_secs(5), "no polls: {seen:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    }
}

fn users(entries: Value) -> Value {
    json!([{"id": "blocked_users", "type": "data_with_expiration", "data": entries}])
}

/// A whole answer serving `files` (path → raw JSON text), with hashes as given.
fn answer(files: &[(&str, &str, &str)]) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut targets = serde_json::Map::new();
    for (path, raw, sha) in files {
        targets.insert(
            (*path).to_owned(),
            json!({"custom": {"c": [""], "v": 1}, "hashes": {"sha256": sha}, "length": raw.len()}),
        );
    }
    let signed = json!({"signed": {"_type": "targets", "custom": {"opaque_backend_state": "state-1"},
        "expires": "2099-01-01T00:00:00Z", "spec_version": "1.0.0", "version": 2, "targets": targets}});
    json!({
        "roots": [],
        "targets": b64(signed.to_string().as_bytes()),
        "target_files": files.iter().map(|(p, raw, _)| json!({"path": p, "raw": b64(raw.as_bytes())})).collect::<Vec<_>>(),
        "client_configs": files.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
    })
}

#[test]
fn a_user_blocked_in_datadog_is_refused_within_two_polls_and_unblocked_when_removed() {
    let remote = Remote::start();
    assert!(!remote.blocked("user-1"));
    remote.serve(
        USERS_PATH,
        users(json!([{"value": "user-1"}, {"value": "user-2", "expiration": 1_700_000_000}])),
    );
    let took = remote.until_blocked("user-1", true);
    println!("a remote block applied after {took:?} (poll interval {POLL:?})");
    assert!(took <= POLL * 2 + Duration::from_millis(100), "took {took:?}");
    assert!(
        !remote.blocked("user-2"),
        "an entry that expired in 2023 never blocks"
    );
    // The client acknowledges the file and caches it, from the next poll on.
    remote.proxy.take();
    let state = remote.polls(1).pop().unwrap();
    let config = &state["client"]["state"]["config_states"][0];
    assert_eq!(
        (config["id"].as_str(), config["apply_state"].as_u64()),
        (Some("blocked_users"), Some(2))
    );
    assert_eq!(state["cached_target_files"][0]["path"], USERS_PATH);
    assert_eq!(state["client"]["products"], json!(["ASM_DATA"]));
    assert_eq!(
        state["client"]["capabilities"], "hA==",
        "IP (2) and user (7) blocking"
    );
    assert_eq!(state["client"]["client_tracer"]["language"], "rust");
    // The path leaves `client_configs`: the block is gone.
    remote.serve_raw(&answer(&[]));
    remote.until_blocked("user-1", false);
    let counts = remote.h.handle.remote_config_counts().expect("the client runs");
    assert!(counts.changes >= 2 && counts.failures == 0, "{counts:?}");
}

#[test]
fn a_file_that_does_not_match_its_hash_is_refused_and_the_earlier_lists_stay() {
    let remote = Remote::start();
    remote.serve(USERS_PATH, users(json!([{"value": "kept"}])));
    remote.until_blocked("kept", true);
    let evil = r#"{"rules_data": [{"id": "blocked_users", "type": "data_with_expiration", "data": [{"value": "evil"}]}]}"#;
    let wrong = "0".repeat(64);
    remote.serve_raw(&answer(&[(USERS_PATH, evil, &wrong)]));
    remote.proxy.take();
    let polls = remote.polls(3);
    assert!(!remote.blocked("evil"), "not applied");
    assert!(remote.blocked("kept"), "the earlier list stays");
    let state = polls.last().unwrap();
    let config = &state["client"]["state"]["config_states"][0];
    assert_eq!(config["apply_state"], 3, "{state}");
    assert!(
        config["apply_error"].as_str().unwrap().contains("sha256"),
        "{state}"
    );
}

#[test]
fn an_agent_outage_keeps_the_lists_and_polling_resumes() {
    let remote = Remote::start();
    remote.serve(USERS_PATH, users(json!([{"value": "during-outage"}])));
    remote.until_blocked("during-outage", true);
    remote.proxy.down.store(true, Ordering::Relaxed);
    let failures = |r: &Remote| r.h.handle.remote_config_counts().unwrap().failures;
    let started = Instant::now();
    while failures(&remote) < 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "polls go on failing");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        remote.blocked("during-outage"),
        "the list stays while the agent is away"
    );
    remote.proxy.down.store(false, Ordering::Relaxed);
    remote.serve_raw(&answer(&[]));
    remote.until_blocked("during-outage", false);
}

#[test]
fn an_agent_without_remote_config_clears_the_remote_lists_quietly() {
    let remote = Remote::start();
    remote.serve(USERS_PATH, users(json!([{"value": "until-404"}])));
    remote.until_blocked("until-404", true);
    remote.proxy.not_found.store(true, Ordering::Relaxed);
    remote.until_blocked("until-404", false);
    let counts = remote.h.handle.remote_config_counts().unwrap();
    assert_eq!(counts.failures, 0, "a 404 is not a failure: {counts:?}");
    remote.proxy.not_found.store(false, Ordering::Relaxed);
    remote.until_blocked("until-404", true);
}

#[test]
fn the_middleware_answers_403_to_remote_users_and_ip_ranges() {
    let remote = Remote::start();
    remote.serve(
        USERS_PATH,
        json!([
            {"id": "blocked_users", "type": "data_with_expiration", "data": [{"value": "bad-user"}]},
            {"id": "blocked_ips", "type": "ip_with_expiration", "data": [{"value": "198.51.100.0/24"}, {"value": "2001:db8::/32"}]},
        ]),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(middleware_answers(&remote));
}

async fn middleware_answers(remote: &Remote) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let handler = |request: Request<String>| async move {
        if let Some(user) = crate::service::header(&request, "x-user") {
            let _ = tracing_usr::identify(&User::new(user));
        }
        Ok::<_, std::convert::Infallible>(Response::new("ok".to_owned()))
    };
    let status = |peer: &'static str, user: &'static str| {
        let request = crate::service::request("/orders", peer, &[("x-user", user)]);
        let h = &remote.h;
        async move { crate::service::send(h, &[], handler, request).await.status() }
    };
    while status("198.51.100.7", "u-1").await != StatusCode::FORBIDDEN {
        assert!(Instant::now() < deadline, "the range was never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status("2001:db8::9", "u-1").await,
        StatusCode::FORBIDDEN,
        "IPv6 range"
    );
    assert_eq!(
        status("198.51.101.7", "u-1").await,
        StatusCode::OK,
        "outside the range"
    );
    assert_eq!(
        status("203.0.113.5", "bad-user").await,
        StatusCode::FORBIDDEN,
        "blocked user"
    );
    assert_eq!(status("203.0.113.5", "good-user").await, StatusCode::OK);
    let roots = remote.h.roots();
    assert!(
        roots.iter().any(|r| r
            .meta("_dd.appsec.json")
            .is_some_and(|j| j.contains("blk-001-001"))),
        "the IP block's trigger"
    );
    assert!(
        roots.iter().any(|r| r
            .meta("_dd.appsec.json")
            .is_some_and(|j| j.contains("blk-001-002"))),
        "the user block's trigger"
    );
}

#[test]
fn a_new_file_under_the_same_version_replaces_the_list() {
    let remote = Remote::start();
    remote.serve(USERS_PATH, users(json!([{"value": "first"}])));
    remote.until_blocked("first", true);
    // The test agent serves every file at version 0: only the content changes.
    remote.serve(USERS_PATH, users(json!([{"value": "second"}])));
    remote.until_blocked("second", true);
    assert!(!remote.blocked("first"), "the old file's entries are gone");
}
