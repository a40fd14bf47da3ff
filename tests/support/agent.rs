//! The real Datadog test agent (`ddapm-test-agent`), started once per test binary on free
//! loopback ports. It also receives OTLP/HTTP.
//!
//! The binary is `$DDAPM_TEST_AGENT`, else `.venv-ddagent/bin/ddapm-test-agent` of the
//! repository, which `.ci/run` installs and which this setup installs itself (python3 -m venv,
//! pip) when it is missing. When it cannot be installed or does not start, the tests fail with a
//! message that says how to install it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct TestAgent {
    pub dd_port: u16,
    /// The agent also listens for traces on this Unix domain socket.
    pub uds_path: PathBuf,
    pub otlp_port: u16,
    _child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DDAPM_TEST_AGENT") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-ddagent");
    let bin = venv.join("bin/ddapm-test-agent");
    if !bin.exists() {
        install(&venv);
    }
    bin
}

/// Installs the pinned test agent into the repository's `.venv-ddagent` (about 20 s, once).
fn install(venv: &std::path::Path) {
    eprintln!("installing ddapm-test-agent 1.69.1 into {} …", venv.display());
    let status = Command::new("python3").arg("-m").arg("venv").arg(venv).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot create {} with python3 -m venv; {HOW_TO_INSTALL}",
        venv.display()
    );
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "ddapm-test-agent==1.69.1"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "pip could not install ddapm-test-agent==1.69.1; {HOW_TO_INSTALL}"
    );
}

const HOW_TO_INSTALL: &str = "install it with: python3 -m venv .venv-ddagent && \
    .venv-ddagent/bin/pip install 'ddapm-test-agent==1.69.1' (what .ci/run does), or set DDAPM_TEST_AGENT";

impl TestAgent {
    fn start() -> TestAgent {
        let (dd_port, otlp_port, grpc_port) = (free_port(), free_port(), free_port());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ddagent-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("snapshots")).expect("snapshot dir");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let bin = binary();
        // Unix socket paths are short (108 bytes): keep it out of the (possibly deep) target dir.
        let uds_path = std::env::temp_dir().join(format!("tracing-usr-agent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&uds_path);
        // A watchdog shell: the agent is killed when this test process exits, even though the
        // agent lives in a static that is never dropped.
        let script = r#"agent="$1"; shift; parent="$1"; shift; "$agent" "$@" & child=$!
            while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
            kill "$child" 2>/dev/null; wait "$child""#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(&bin)
            .arg(std::process::id().to_string())
            .args(["--host", "127.0.0.1", "--port", &dd_port.to_string()])
            .args([
                "--otlp-http-port",
                &otlp_port.to_string(),
                "--otlp-grpc-port",
                &grpc_port.to_string(),
            ])
            .arg("--trace-uds-socket")
            .arg(&uds_path)
            .arg("--snapshot-dir")
            .arg(dir.join("snapshots"))
            .args(["--log-level", "WARNING"])
            .env(
                "ENABLED_CHECKS",
                "meta_tracer_version_header,trace_count_header,trace_content_length",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); {HOW_TO_INSTALL}", bin.display()));
        let agent = TestAgent {
            dd_port,
            otlp_port,
            uds_path: uds_path.clone(),
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dd = http_get(&format!("http://127.0.0.1:{dd_port}/info")).is_ok();
            let otlp = http_get(&format!("http://127.0.0.1:{otlp_port}/test/session/clear")).is_ok();
            if dd && otlp && agent.uds_path.exists() {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "ddapm-test-agent ({}) did not answer on ports {dd_port}/{otlp_port} within 30 s; see {}; {HOW_TO_INSTALL}",
                bin.display(),
                dir.join("agent.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent of this test binary.
    pub fn get() -> &'static TestAgent {
        static AGENT: OnceLock<TestAgent> = OnceLock::new();
        AGENT.get_or_init(TestAgent::start)
    }

    pub fn dd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.dd_port)
    }

    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    pub fn dd(&self, path_and_query: &str) -> Value {
        json_get(&format!("{}{path_and_query}", self.dd_url()))
    }

    pub fn otlp(&self, path_and_query: &str) -> Value {
        json_get(&format!("{}{path_and_query}", self.otlp_url()))
    }

    /// Starts a Datadog-intake session under `token` (its traces are then read with
    /// `/test/session/traces?test_session_token=`).
    #[allow(dead_code)] // not every test binary that includes this file starts a session
    pub fn dd_session(&self, token: &str) {
        let url = format!("{}/test/session/start?test_session_token={token}", self.dd_url());
        match http_get(&url) {
            Ok((200, _)) => {}
            other => panic!("GET {url}: {other:?}"),
        }
    }

    /// Stores `body` under `token` at `path` (`/test/session/responses/config/path` builds a
    /// Remote Configuration answer from one file; `/test/session/responses/config` stores an
    /// answer verbatim).
    #[allow(dead_code)] // used by the Remote Configuration tests only
    pub fn post_rc(&self, token: &str, path: &str, body: &Value) {
        let url = format!("{}{path}", self.dd_url());
        let response = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("an HTTP client")
            .post(&url)
            .header("X-Datadog-Test-Session-Token", token)
            .body(body.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(
            response.status().is_success(),
            "POST {url}: {}",
            response.status()
        );
    }

    /// OTLP tests share the agent's OTLP session: one at a time, on a cleared session.
    pub fn otlp_session(&self) -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        http_get(&format!("{}/test/session/clear", self.otlp_url())).expect("clear the OTLP session");
        guard
    }
}

fn http_get(url: &str) -> Result<(u16, String), String> {
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?
        .get(url)
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().map_err(|e| e.to_string())?))
}

pub fn json_get(url: &str) -> Value {
    let (status, body) = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}
