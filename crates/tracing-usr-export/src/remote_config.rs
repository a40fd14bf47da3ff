//! A Remote Configuration client for the Datadog agent, product `ASM_DATA`: the blocked users
//! and IPs an analyst sets in Datadog reach the service through its agent.
//!
//! A thread of its own (an export thread, with its own HTTP runtime) polls `POST /v0.7/config`
//! every interval with the client state; each answer is checked (every file's sha256 and
//! length against `targets`), its `ASM_DATA` files parsed, and the union of their
//! `blocked_users` and `blocked_ips` handed to a callback. A failure (agent down, 5xx, garbage,
//! a hash mismatch) keeps the last good lists, is counted, and gives one warning per outage;
//! a 404 (remote config not active in the agent) clears the remote lists quietly. Nothing
//! received is logged beyond the path and the error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing_usr_core::blocking::{BlockEntry, IpRange};

use crate::datadog::{AgentAddress, DatadogConfig};
use crate::http::{Request, RetryPolicy, Sender};

/// The product this client subscribes to.
pub const PRODUCT: &str = "ASM_DATA";
/// Capability bits: `ASM_IP_BLOCKING` (2) and `ASM_USER_BLOCKING` (7).
pub const CAPABILITIES: u64 = (1 << 2) | (1 << 7);

/// Who is asking: the tracer identity sent with every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// A random id for this process.
    pub runtime_id: String,
    /// `DD_SERVICE`.
    pub service: String,
    /// `DD_ENV`.
    pub env: Option<String>,
    /// `DD_VERSION`.
    pub app_version: Option<String>,
}

/// The remote block lists: the union of every applied `ASM_DATA` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteBlocks {
    /// `blocked_users` entries.
    pub users: Vec<BlockEntry>,
    /// `blocked_ips` entries (addresses and CIDR ranges).
    pub ips: Vec<BlockEntry>,
}

/// One config as applied (or refused), for the next request's client state.
#[derive(Clone, Debug)]
struct Applied {
    id: String,
    version: u64,
    length: u64,
    sha256: String,
    /// `None`: applied; `Some(reason)`: refused, or applied in part.
    error: Option<String>,
    blocks: RemoteBlocks,
}

/// The protocol state between polls.
#[derive(Debug)]
pub struct RemoteConfigState {
    identity: ClientIdentity,
    client_id: String,
    targets_version: u64,
    backend_client_state: String,
    configs: BTreeMap<String, Applied>,
    /// An error of the whole last answer, reported in the next request.
    error: Option<String>,
}

/// What one answer did.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    Unchanged,
    /// The remote lists are now these.
    Changed(RemoteBlocks),
}

impl RemoteConfigState {
    /// A fresh client for `identity`.
    pub fn new(identity: ClientIdentity) -> Self {
        Self {
            client_id: identity.runtime_id.clone(),
            identity,
            targets_version: 0,
            backend_client_state: String::new(),
            configs: BTreeMap::new(),
            error: None,
        }
    }

    /// The body of the next `POST /v0.7/config`.
    pub fn request(&self) -> Value {
        let capabilities = CAPABILITIES.to_be_bytes();
        let first = capabilities.iter().position(|b| *b != 0).unwrap_or(7);
        let config_states: Vec<Value> = self
            .configs
            .values()
            .map(|c| {
                json!({
                    "id": c.id, "version": c.version, "product": PRODUCT,
                    "apply_state": if c.error.is_some() { 3 } else { 2 },
                    "apply_error": c.error.clone().unwrap_or_default(),
                })
            })
            .collect();
        let cached: Vec<Value> = self
            .configs
            .iter()
            .map(|(path, c)| {
                json!({"path": path, "length": c.length, "hashes": [{"algorithm": "sha256", "hash": c.sha256}]})
            })
            .collect();
        json!({
            "client": {
                "state": {
                    "root_version": 1,
                    "targets_version": self.targets_version,
                    "config_states": config_states,
                    "has_error": self.error.is_some(),
                    "error": self.error.clone().unwrap_or_default(),
                    "backend_client_state": self.backend_client_state,
                },
                "id": self.client_id,
                "products": [PRODUCT],
                "is_tracer": true,
                "client_tracer": {
                    "runtime_id": self.identity.runtime_id,
                    "language": "rust",
                    "tracer_version": env!("CARGO_PKG_VERSION"),
                    "service": self.identity.service,
                    "env": self.identity.env.clone().unwrap_or_default(),
                    "app_version": self.identity.app_version.clone().unwrap_or_default(),
                    "tags": [],
                },
                "capabilities": base64::engine::general_purpose::STANDARD.encode(&capabilities[first..]),
            },
            "cached_target_files": cached,
        })
    }

    /// Clears everything received (remote config is not active in the agent).
    pub fn clear(&mut self) -> Change {
        let had = !self.configs.is_empty();
        self.configs.clear();
        self.targets_version = 0;
        self.backend_client_state.clear();
        self.error = None;
        if had {
            Change::Changed(RemoteBlocks::default())
        } else {
            Change::Unchanged
        }
    }

    /// Applies one answer of the agent.
    ///
    /// # Errors
    /// When the answer as a whole cannot be read (bad JSON, bad base64 `targets`): nothing is
    /// changed, and the error is reported in the next request. A bad file only fails that file
    /// (its earlier version, if any, stays applied).
    pub fn apply(&mut self, body: &[u8]) -> Result<Change, String> {
        if body.len() <= 3 {
            return Ok(Change::Unchanged);
        }
        let result = self.apply_answer(body);
        self.error = result.as_ref().err().cloned();
        result
    }

    fn apply_answer(&mut self, body: &[u8]) -> Result<Change, String> {
        let answer: Value =
            serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        if answer.get("config_status").and_then(Value::as_str) == Some("expired") {
            return Ok(self.clear());
        }
        let signed = decode_targets(&answer)?;
        let paths: Vec<String> = answer
            .get("client_configs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let files = target_files(&answer)?;
        let before = self.fingerprint();
        self.configs.retain(|path, _| paths.contains(path));
        for path in paths.iter().filter(|p| p.contains(&format!("/{PRODUCT}/"))) {
            let update = self.read_config(path, &signed, &files);
            if let Some(applied) = update {
                self.configs.insert(path.clone(), applied);
            }
        }
        if let Some(version) = signed.get("version").and_then(Value::as_u64) {
            self.targets_version = version;
        }
        if let Some(state) = signed
            .pointer("/custom/opaque_backend_state")
            .and_then(Value::as_str)
        {
            self.backend_client_state = state.to_owned();
        }
        Ok(if before == self.fingerprint() {
            Change::Unchanged
        } else {
            Change::Changed(self.blocks())
        })
    }

    /// What identifies the applied configs: a change of any file's content, version or error
    /// is a change of the lists (the agent may serve new content under the same version).
    fn fingerprint(&self) -> Vec<(String, u64, String, Option<String>)> {
        self.configs
            .iter()
            .map(|(p, c)| (p.clone(), c.version, c.sha256.clone(), c.error.clone()))
            .collect()
    }

    /// The config at `path`, read from its target file; `None` to keep what is there.
    fn read_config(&self, path: &str, signed: &Value, files: &HashMap<String, Vec<u8>>) -> Option<Applied> {
        let id = path.split('/').rev().nth(1).unwrap_or(path).to_owned();
        let refused = |error: String, version: u64| {
            let mut kept = self.configs.get(path).cloned().unwrap_or(Applied {
                id: id.clone(),
                version,
                length: 0,
                sha256: String::new(),
                error: None,
                blocks: RemoteBlocks::default(),
            });
            kept.error = Some(error);
            Some(kept)
        };
        let Some(target) = signed.get("targets").and_then(|t| t.get(path)) else {
            return refused(format!("{path}: not in targets"), 0);
        };
        let version = target.pointer("/custom/v").and_then(Value::as_u64).unwrap_or(0);
        let sha256 = target
            .pointer("/hashes/sha256")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let length = target.get("length").and_then(Value::as_u64).unwrap_or(0);
        let raw = match (files.get(path), self.configs.get(path)) {
            (Some(raw), _) => raw,
            (None, Some(cached)) if cached.sha256 == sha256 && cached.error.is_none() => return None,
            (None, _) => return refused(format!("{path}: no target file"), version),
        };
        let actual = hex(&Sha256::digest(raw));
        if actual != sha256 || raw.len() as u64 != length {
            return refused(
                format!("{path}: the file does not match its sha256 and length"),
                version,
            );
        }
        let (blocks, error) = match parse_asm_data(raw) {
            Ok(parsed) => parsed,
            Err(e) => return refused(format!("{path}: {e}"), version),
        };
        Some(Applied {
            id,
            version,
            length,
            sha256: actual,
            error: error.map(|e| format!("{path}: {e}")),
            blocks,
        })
    }

    /// The union of every applied config's lists.
    pub fn blocks(&self) -> RemoteBlocks {
        let mut all = RemoteBlocks::default();
        for config in self.configs.values() {
            all.users.extend(config.blocks.users.iter().cloned());
            all.ips.extend(config.blocks.ips.iter().cloned());
        }
        all
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_targets(answer: &Value) -> Result<Value, String> {
    let Some(targets) = answer.get("targets").and_then(Value::as_str) else {
        return Ok(json!({"targets": {}}));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(targets)
        .map_err(|e| format!("targets are not base64: {e}"))?;
    let targets: Value = serde_json::from_slice(&bytes).map_err(|e| format!("targets are not JSON: {e}"))?;
    Ok(targets.get("signed").cloned().unwrap_or(targets))
}

fn target_files(answer: &Value) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut files = HashMap::new();
    for file in answer
        .get("target_files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = file.get("path").and_then(Value::as_str).unwrap_or_default();
        let raw = file.get("raw").and_then(Value::as_str).unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| format!("{path}: the file is not base64: {e}"))?;
        files.insert(path.to_owned(), raw);
    }
    Ok(files)
}

/// An `ASM_DATA` file's `blocked_users` and `blocked_ips`; bad entries are skipped and named in
/// the second value.
fn parse_asm_data(raw: &[u8]) -> Result<(RemoteBlocks, Option<String>), String> {
    let file: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let rules = file
        .get("rules_data")
        .and_then(Value::as_array)
        .ok_or("no rules_data list")?;
    let mut blocks = RemoteBlocks::default();
    let mut errors = Vec::new();
    for rule in rules {
        let list = match rule.get("id").and_then(Value::as_str) {
            Some("blocked_users") => &mut blocks.users,
            Some("blocked_ips") => &mut blocks.ips,
            _ => continue,
        };
        for entry in rule.get("data").and_then(Value::as_array).into_iter().flatten() {
            let value = entry
                .get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty());
            let expiration = match entry.get("expiration") {
                None | Some(Value::Null) => Ok(None),
                Some(e) => e.as_u64().map(Some).ok_or(()),
            };
            let is_ip_list = rule.get("id").and_then(Value::as_str) == Some("blocked_ips");
            match (value, expiration) {
                (Some(value), Ok(_)) if is_ip_list && IpRange::parse(value).is_none() => {
                    errors.push(
                        "a blocked_ips value that is neither an IP address nor a CIDR range".to_owned(),
                    );
                }
                (Some(value), Ok(expiration)) => list.push(BlockEntry {
                    value: value.to_owned(),
                    expiration,
                }),
                _ => errors.push("an entry without a string value or with a bad expiration".to_owned()),
            }
        }
    }
    errors.dedup();
    Ok((blocks, (!errors.is_empty()).then(|| errors.join("; "))))
}

/// The client's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteConfigCounts {
    /// Polls answered and read.
    pub polls: u64,
    /// Polls that failed (agent down, an error status, an answer that cannot be read).
    pub failures: u64,
    /// Answers that changed the remote lists.
    pub changes: u64,
}

/// Counters of the client.
#[derive(Debug, Default)]
struct RemoteConfigStats {
    polls: AtomicU64,
    failures: AtomicU64,
    changes: AtomicU64,
}

/// The running client; stops polling when dropped.
pub struct RemoteConfigClient {
    stop: Arc<AtomicBool>,
    stats: Arc<RemoteConfigStats>,
}

impl fmt::Debug for RemoteConfigClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfigClient")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for RemoteConfigClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl RemoteConfigClient {
    /// Starts polling the agent of `config` every `interval`; `apply` receives the remote
    /// lists after every change (on the client's thread).
    ///
    /// # Errors
    /// When the HTTP client or the thread cannot be created.
    pub fn start(
        config: &DatadogConfig,
        interval: Duration,
        identity: ClientIdentity,
        apply: impl Fn(&RemoteBlocks) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (url, socket) = match &config.agent {
            AgentAddress::Http(base) => (format!("{base}/v0.7/config"), None),
            AgentAddress::Unix(path) => ("http://localhost/v0.7/config".to_owned(), Some(path.clone())),
        };
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let mut sender = Sender::new(config.timeout, once, socket.as_deref())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let headers = config.headers.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RemoteConfigStats::default());
        let (thread_stop, thread_stats) = (Arc::clone(&stop), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("tracing-usr-remote-config".into())
            .spawn(move || {
                crate::pipeline::mark_export_thread();
                let mut state = RemoteConfigState::new(identity);
                let mut poller = Poller {
                    url,
                    headers,
                    in_outage: false,
                };
                while !thread_stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    if let Some(blocks) = poller.poll(&mut sender, &mut state, &thread_stats) {
                        thread_stats.changes.fetch_add(1, Ordering::Relaxed);
                        apply(&blocks);
                    }
                    while started.elapsed() < interval && !thread_stop.load(Ordering::Relaxed) {
                        std::thread::sleep((interval - started.elapsed()).min(Duration::from_millis(20)));
                    }
                }
            })?;
        Ok(Self { stop, stats })
    }

    /// The client's counters, now.
    pub fn counts(&self) -> RemoteConfigCounts {
        RemoteConfigCounts {
            polls: self.stats.polls.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            changes: self.stats.changes.load(Ordering::Relaxed),
        }
    }
}

struct Poller {
    url: String,
    headers: Vec<(String, String)>,
    in_outage: bool,
}

impl Poller {
    /// One poll; the remote lists when they changed.
    fn poll(
        &mut self,
        sender: &mut Sender,
        state: &mut RemoteConfigState,
        stats: &RemoteConfigStats,
    ) -> Option<RemoteBlocks> {
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        headers.extend(self.headers.iter().cloned());
        let request = Request {
            url: self.url.clone(),
            method: reqwest::Method::POST,
            headers,
            body: state.request().to_string().into_bytes().into(),
        };
        let outcome = match sender.exchange(&request) {
            Ok(response) if response.status == 404 => Ok(state.clear()),
            Ok(response) if (200..300).contains(&response.status) => state.apply(&response.body),
            Ok(response) => Err(format!("{} answered {}", self.url, response.status)),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(applied) => {
                stats.polls.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut self.in_outage) {
                    tracing::info!(target: "tracing_usr::remote_config", "remote configuration polls work again");
                }
                match applied {
                    Change::Changed(blocks) => Some(blocks),
                    Change::Unchanged => None,
                }
            }
            Err(error) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.in_outage, true) {
                    tracing::warn!(
                        target: "tracing_usr::remote_config",
                        error = %error,
                        "remote configuration poll failed; the last lists stay in force"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClientIdentity {
        ClientIdentity {
            runtime_id: "rt-1".into(),
            service: "shop".into(),
            env: Some("prod".into()),
            app_version: Some("1.2".into()),
        }
    }

    /// An answer as the agent sends it, serving `files` (path → file JSON) at `version`.
    fn answer(files: &[(&str, &str)], version: u64, corrupt: bool) -> Vec<u8> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut targets = serde_json::Map::new();
        for (path, raw) in files {
            let sha = hex(&Sha256::digest(raw.as_bytes()));
            let sha = if corrupt {
                sha.replace('a', "b").replace('0', "1")
            } else {
                sha
            };
            targets.insert(
                (*path).to_owned(),
                json!({"custom": {"v": version}, "hashes": {"sha256": sha}, "length": raw.len()}),
            );
        }
        let signed = json!({"signed": {"_type": "targets", "version": version, "custom": {"opaque_backend_state": "b-s"}, "targets": targets}});
        json!({
            "roots": [],
            "targets": b64(signed.to_string().as_bytes()),
            "target_files": files.iter().map(|(p, raw)| json!({"path": p, "raw": b64(raw.as_bytes())})).collect::<Vec<_>>(),
            "client_configs": files.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    const USERS: &str = r#"{"rules_data": [{"id": "blocked_users", "type": "data_with_expiration", "data": [{"value": "user-1"}, {"value": "user-2", "expiration": 1700000000}, {"nope": 1}]}, {"id": "blocked_ips", "type": "ip_with_expiration", "data": [{"value": "198.51.100.0/24"}, {"value": "not-an-ip"}]}]}"#;
    const PATH: &str = "datadog/2/ASM_DATA/blocked_users/config";

    #[test]
    fn the_request_names_the_product_capabilities_and_tracer() {
        let state = RemoteConfigState::new(identity());
        let request = state.request();
        assert_eq!(request["client"]["products"], json!(["ASM_DATA"]));
        // Bits 2 and 7: one byte, 0x84.
        assert_eq!(request["client"]["capabilities"], "hA==");
        let tracer = &request["client"]["client_tracer"];
        assert_eq!(
            (tracer["language"].as_str(), tracer["service"].as_str()),
            (Some("rust"), Some("shop"))
        );
        assert_eq!(request["client"]["state"]["root_version"], 1);
        assert_eq!(request["cached_target_files"], json!([]));
    }

    #[test]
    fn an_applied_file_is_acknowledged_and_cached_in_the_next_request() {
        let mut state = RemoteConfigState::new(identity());
        let Change::Changed(blocks) = state.apply(&answer(&[(PATH, USERS)], 3, false)).unwrap() else {
            panic!("a change");
        };
        assert_eq!(
            blocks.users.iter().map(|e| e.value.as_str()).collect::<Vec<_>>(),
            ["user-1", "user-2"]
        );
        assert_eq!(
            blocks.ips.iter().map(|e| e.value.as_str()).collect::<Vec<_>>(),
            ["198.51.100.0/24"]
        );
        let request = state.request();
        let config = &request["client"]["state"]["config_states"][0];
        assert_eq!(
            (config["id"].as_str(), config["version"].as_u64()),
            (Some("blocked_users"), Some(3))
        );
        // The bad entry is reported; the good ones apply.
        assert_eq!(config["apply_state"], 3);
        assert!(config["apply_error"]
            .as_str()
            .unwrap()
            .contains("without a string value"));
        assert_eq!(request["client"]["state"]["targets_version"], 3);
        assert_eq!(request["client"]["state"]["backend_client_state"], "b-s");
        let cached = &request["cached_target_files"][0];
        assert_eq!(cached["path"], PATH);
        assert_eq!(
            cached["hashes"][0]["hash"].as_str().unwrap(),
            hex(&Sha256::digest(USERS.as_bytes()))
        );
        // New content under the same version is a change too.
        let other = r#"{"rules_data": [{"id": "blocked_users", "type": "data_with_expiration", "data": [{"value": "user-9"}]}]}"#;
        let Change::Changed(blocks) = state.apply(&answer(&[(PATH, other)], 3, false)).unwrap() else {
            panic!("new content is a change");
        };
        assert_eq!(blocks.users[0].value, "user-9");
        state.apply(&answer(&[(PATH, USERS)], 3, false)).unwrap();
        // The same answer again changes nothing; an answer without the path removes it.
        assert_eq!(
            state.apply(&answer(&[(PATH, USERS)], 3, false)).unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            state.apply(&answer(&[], 4, false)).unwrap(),
            Change::Changed(RemoteBlocks::default())
        );
        assert_eq!(state.apply(b"{}").unwrap(), Change::Unchanged);
    }

    #[test]
    fn a_hash_mismatch_or_garbage_keeps_the_lists_and_is_reported() {
        let mut state = RemoteConfigState::new(identity());
        state.apply(&answer(&[(PATH, USERS)], 1, false)).unwrap();
        let good = state.blocks();
        let other = r#"{"rules_data": [{"id": "blocked_users", "type": "data_with_expiration", "data": [{"value": "evil"}]}]}"#;
        state.apply(&answer(&[(PATH, other)], 2, true)).unwrap();
        assert_eq!(state.blocks(), good, "the earlier version stays applied");
        let config = &state.request()["client"]["state"]["config_states"][0];
        assert_eq!(config["apply_state"], 3);
        assert!(config["apply_error"].as_str().unwrap().contains("sha256"));
        assert!(state.apply(b"not json at all").is_err());
        assert_eq!(state.blocks(), good);
        assert_eq!(state.request()["client"]["state"]["has_error"], true);
        assert_eq!(state.clear(), Change::Changed(RemoteBlocks::default()));
    }
}
