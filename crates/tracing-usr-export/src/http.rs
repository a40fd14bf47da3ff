//! The HTTP side of the collector exporters: a reqwest client on a private current-thread tokio
//! runtime, owned by the export thread (so it works whether or not the application runs tokio,
//! and none of its internal `tracing` events reach the layer), with retries.

use std::fmt;
use std::time::{Duration, Instant};

use crate::exporter::{ExportContext, ExportError, ExportErrorKind};

/// When and how long a failed request is retried.
///
/// Retried: connection errors (refused, reset, cut short), timeouts, 408, 429 and 5xx. The wait
/// doubles from `initial_backoff` up to `max_backoff`, each wait drawn between half of it and
/// all of it (jitter, so that many processes do not retry in step); a `Retry-After` in seconds
/// replaces it. The request is given up when `max_elapsed` has passed since its first attempt
/// (its records are then counted as `retry_exhausted`), after `max_attempts`, or when the
/// pipeline shuts down (`unsent_at_shutdown`). While a request is retried, the records behind
/// it wait in the queue; when the queue is full, new records are dropped and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. Defaults to unlimited (`u32::MAX`): the time
    /// budget decides.
    pub max_attempts: u32,
    /// The first wait. Defaults to 1 s.
    pub initial_backoff: Duration,
    /// The longest wait. Defaults to 30 s.
    pub max_backoff: Duration,
    /// How long one request is retried, from its first attempt. Defaults to 5 minutes.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// Whether an answer with this status is worth retrying.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

/// The first bytes of a collector's answer, as text safe to log (control characters escaped).
fn answer_excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut out: String = text.chars().flat_map(char::escape_default).collect();
    if body.len() > MAX {
        out.push('…');
    }
    out
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

    /// Sends `request`, retrying as the policy says. 2xx is success; other answers that are
    /// not worth retrying fail at once ([`ExportErrorKind::Rejected`], naming the status and
    /// the start of the answer); a request still failing when the retry time is up fails with
    /// [`ExportErrorKind::Unavailable`]; one failing while `cx` says the pipeline is stopping,
    /// with [`ExportErrorKind::Stopped`].
    pub(crate) fn send(
        &mut self,
        request: &Request,
        cx: &ExportContext<'_>,
    ) -> Result<Response, ExportError> {
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.attempt(request)? {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let wait = retry_after.unwrap_or_else(|| self.jittered(backoff));
            let out_of_time = started.elapsed() + wait > self.retry.max_elapsed;
            if attempt >= self.retry.max_attempts || out_of_time {
                return Err(ExportError::new(
                    ExportErrorKind::Unavailable,
                    format!(
                        "gave up after {attempt} attempts in {:.1} s: {error}",
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            if sleep_unless_stopping(wait, cx) {
                return Err(ExportError::new(
                    ExportErrorKind::Stopped,
                    format!("shutting down after {attempt} attempts: {error}"),
                ));
            }
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// One attempt: `Ok(Ok(_))` delivered, `Ok(Err((error, retry_after)))` worth retrying,
    /// `Err` for good.
    #[allow(clippy::type_complexity)]
    fn attempt(
        &mut self,
        request: &Request,
    ) -> Result<Result<Response, (ExportError, Option<Duration>)>, ExportError> {
        match self.exchange(request) {
            Ok(response) if (200..300).contains(&response.status) => Ok(Ok(response)),
            Ok(response) if retryable(response.status) => Ok(Err((
                ExportError::new(
                    ExportErrorKind::Unavailable,
                    format!("{} answered {}", request.url, response.status),
                ),
                response.retry_after,
            ))),
            Ok(response) => Err(ExportError::new(
                ExportErrorKind::Rejected,
                format!(
                    "{} answered {}: {}",
                    request.url,
                    response.status,
                    answer_excerpt(&response.body)
                ),
            )),
            Err(error) => Ok(Err((error, None))),
        }
    }

    /// One request, no retry: the answer whatever its status (for protocols that read the
    /// status themselves), or the transport error.
    pub(crate) fn exchange(&mut self, request: &Request) -> Result<Response, ExportError> {
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
        outcome
    }

    /// A wait between half of `backoff` and all of it.
    fn jittered(&mut self, backoff: Duration) -> Duration {
        let half = (backoff.as_millis() as u64 / 2).max(1);
        Duration::from_millis(half + self.next_jitter() % (half + 1))
    }
}

/// Sleeps `wait`, waking early when the pipeline starts shutting down; `true` in that case.
fn sleep_unless_stopping(wait: Duration, cx: &ExportContext<'_>) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if cx.stopping() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
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
