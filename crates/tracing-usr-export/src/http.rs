//! The HTTP side of the collector exporters: a reqwest client on a private current-thread tokio
//! runtime, owned by the export thread (so it works whether or not the application runs tokio,
//! and none of its internal `tracing` events reach the layer), with retries.

use std::fmt;
use std::time::{Duration, Instant};

use crate::exporter::{ExportError, ExportErrorKind};

/// When and how often a failed request is retried: 429, 5xx, timeouts and connection errors,
/// with exponential backoff and full jitter, honouring `Retry-After` (in seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. Defaults to 5.
    pub max_attempts: u32,
    /// The first backoff. Defaults to 100 ms.
    pub initial_backoff: Duration,
    /// The longest backoff. Defaults to 5 s. (`Retry-After` is honoured as given, within
    /// `max_elapsed`.)
    pub max_backoff: Duration,
    /// Time budget of one batch, retries included. Defaults to 30 s.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// Header names with `<Redacted>` values, for `Debug` output of configurations (header values
/// may carry API keys).
pub fn redacted_headers(headers: &[(String, String)]) -> Vec<String> {
    headers.iter().map(|(k, _)| format!("{k}: <Redacted>")).collect()
}

/// A request to send: everything but the client.
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) url: String,
    pub(crate) method: reqwest::Method,
    /// Header values may carry credentials: they never appear in diagnostics.
    pub(crate) headers: Vec<(String, String)>,
    /// Shared, so a retry re-sends it without a copy.
    pub(crate) body: bytes::Bytes,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry API keys: names only.
        f.debug_struct("Request")
            .field("url", &self.url)
            .field("method", &self.method)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Read by the Datadog exporter (the agent's sampling rates).
    #[cfg_attr(not(feature = "datadog"), allow(dead_code))]
    pub(crate) body: Vec<u8>,
    /// `Retry-After`, when given in seconds.
    pub(crate) retry_after: Option<Duration>,
}

pub(crate) struct Sender {
    /// Created on first use, on the export thread (a runtime must not be dropped inside another
    /// runtime, and the exporter may be built on an application thread that runs one).
    runtime: Option<tokio::runtime::Runtime>,
    client: reqwest::Client,
    retry: RetryPolicy,
    jitter: u64,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() | 1
}

impl Sender {
    /// A sender whose requests time out after `timeout`; `unix_socket` routes every request
    /// through that socket.
    pub(crate) fn new(
        timeout: Duration,
        retry: RetryPolicy,
        unix_socket: Option<&str>,
    ) -> Result<Self, ExportError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy();
        if let Some(path) = unix_socket {
            builder = builder.unix_socket(path.to_owned());
        }
        let client = builder.build().map_err(|e| {
            ExportError::new(
                ExportErrorKind::Transport,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(Self {
            runtime: None,
            client,
            retry,
            jitter: seed(),
        })
    }

    fn next_jitter(&mut self) -> u64 {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        x
    }

    /// Sends `request`, retrying as the policy says. 2xx is success; other 4xx fail at once.
    pub(crate) fn send(&mut self, request: &Request) -> Result<Response, ExportError> {
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let runtime = match self.runtime.take() {
                Some(runtime) => runtime,
                None => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        ExportError::new(
                            ExportErrorKind::Transport,
                            format!("cannot start the HTTP runtime: {e}"),
                        )
                    })?,
            };
            let outcome = runtime.block_on(attempt_once(&self.client, request));
            self.runtime = Some(runtime);
            let (error, retry_after) = match outcome {
                Ok(response) if (200..300).contains(&response.status) => return Ok(response),
                Ok(response) => {
                    let retryable = response.status == 429 || response.status >= 500;
                    let error = ExportError::new(
                        ExportErrorKind::Rejected,
                        format!("{} answered {}", request.url, response.status),
                    );
                    if !retryable {
                        return Err(error);
                    }
                    (error, response.retry_after)
                }
                Err(error) => (error, None),
            };
            let wait = match retry_after {
                // The server's word wins over the backoff; the time budget still applies.
                Some(wait) => wait,
                // Full jitter: a random wait between 0 and the current backoff.
                None => {
                    let cap = backoff.as_millis().max(1) as u64;
                    Duration::from_millis(self.next_jitter() % cap + 1)
                }
            };
            if attempt >= self.retry.max_attempts || started.elapsed() + wait > self.retry.max_elapsed {
                return Err(error);
            }
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }
}

async fn attempt_once(client: &reqwest::Client, request: &Request) -> Result<Response, ExportError> {
    let mut builder = client.request(request.method.clone(), &request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder.body(request.body.clone()).send().await.map_err(|e| {
        let kind = if e.is_timeout() { "timed out" } else { "failed" };
        // reqwest errors name the URL, never headers.
        ExportError::new(
            ExportErrorKind::Transport,
            format!("request to {} {kind}: {e}", request.url),
        )
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // An answer cut short is a transport failure: the request is retried.
    let body = response.bytes().await.map(|b| b.to_vec()).map_err(|e| {
        ExportError::new(
            ExportErrorKind::Transport,
            format!("answer from {} cut short: {e}", request.url),
        )
    })?;
    Ok(Response {
        status,
        body,
        retry_after,
    })
}
