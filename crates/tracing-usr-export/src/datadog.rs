//! The Datadog agent exporter: traces to `/v0.4/traces` in msgpack, with the headers Datadog's
//! tracers send, honouring the agent's `rate_by_service` answer; and Datadog-format JSON log
//! lines (for the agent's log collection) with `dd.trace_id` / `dd.span_id` correlation.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;
use smallvec::SmallVec;

use crate::exporter::{ExportContext, ExportError, ExportErrorKind, Exporter, RecordKind};
use crate::http::{Request, RetryPolicy, Sender};
use crate::record::{FieldValue, LogRecord, Record, RootFacts, SpanRecord};

/// Where the agent listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAddress {
    /// `http://host:port`.
    Http(String),
    /// A Unix domain socket path (`unix:///var/run/datadog/apm.socket`).
    Unix(String),
}

impl AgentAddress {
    /// Parses `DD_TRACE_AGENT_URL`: `http://…`, `https://…` or `unix://PATH`.
    pub fn parse(url: &str) -> Option<Self> {
        let url = url.trim().trim_end_matches('/');
        if let Some(path) = url.strip_prefix("unix://") {
            (!path.is_empty()).then(|| AgentAddress::Unix(path.to_owned()))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            Some(AgentAddress::Http(url.to_owned()))
        } else {
            None
        }
    }
}

/// Settings of the Datadog exporter (see `tracing_usr::Builder` for the variables).
#[derive(Clone, PartialEq)]
pub struct DatadogConfig {
    /// The agent. Defaults to `http://localhost:8126`.
    pub agent: AgentAddress,
    /// `DD_SERVICE`. Defaults to the executable's name.
    pub service: String,
    /// `DD_ENV`.
    pub env: Option<String>,
    /// `DD_VERSION`.
    pub version: Option<String>,
    /// `DD_TAGS`, added to every span.
    pub tags: Vec<(String, String)>,
    /// Extra request headers (for a proxy in front of the agent, a test session token…). Their
    /// values are never printed.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout. Defaults to 2 s.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
}

impl fmt::Debug for DatadogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatadogConfig")
            .field("agent", &self.agent)
            .field("service", &self.service)
            .field("env", &self.env)
            .field("version", &self.version)
            .field("tags", &self.tags)
            .field("headers", &crate::http::redacted_headers(&self.headers))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for DatadogConfig {
    fn default() -> Self {
        Self {
            agent: AgentAddress::Http("http://localhost:8126".to_owned()),
            service: crate::default_service_name(),
            env: None,
            version: None,
            tags: Vec::new(),
            headers: Vec::new(),
            timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
        }
    }
}

/// Parses `DD_TAGS`: `key:value` pairs separated by commas or spaces.
pub fn parse_dd_tags(value: &str) -> Vec<(String, String)> {
    value
        .split([',', ' '])
        .filter_map(|pair| {
            let pair = pair.trim();
            let (k, v) = pair.split_once(':').unwrap_or((pair, ""));
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Sends spans to the Datadog agent.
pub struct DatadogExporter {
    config: DatadogConfig,
    url: String,
    sender: Sender,
    rates: HashMap<String, f64>,
}

impl fmt::Debug for DatadogExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatadogExporter")
            .field("config", &self.config)
            .field("rates", &self.rates)
            .finish()
    }
}

impl DatadogExporter {
    /// An exporter for `config`.
    ///
    /// # Errors
    /// When the HTTP client cannot be created.
    pub fn new(config: DatadogConfig) -> Result<Self, ExportError> {
        let (url, socket) = match &config.agent {
            AgentAddress::Http(base) => (format!("{base}/v0.4/traces"), None),
            AgentAddress::Unix(path) => ("http://localhost/v0.4/traces".to_owned(), Some(path.as_str())),
        };
        let sender = Sender::new(config.timeout, config.retry.clone(), socket)?;
        Ok(Self {
            url,
            sender,
            rates: HashMap::new(),
            config,
        })
    }

    /// The sampling rates the agent last returned, by `service:…,env:…` key.
    pub fn rates(&self) -> &HashMap<String, f64> {
        &self.rates
    }

    fn rate_for(&self) -> f64 {
        let key = format!(
            "service:{},env:{}",
            self.config.service,
            self.config.env.as_deref().unwrap_or("")
        );
        self.rates
            .get(&key)
            .or_else(|| self.rates.get("service:,env:"))
            .copied()
            .unwrap_or(1.0)
    }
}

const KNUTH_FACTOR: u64 = 1_111_111_111_111_111_111;

/// Datadog's deterministic sampling decision for a rate.
fn sampled(trace_id: u64, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    (trace_id.wrapping_mul(KNUTH_FACTOR) as f64) < rate * u64::MAX as f64
}

#[inline]
fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail. rmp writes the marker and length; the payload of a msgpack
    // string is its bytes.
    let _ = rmp::encode::write_str_len(buf, s.len() as u32);
    buf.extend_from_slice(s.as_bytes());
}

/// `value` as 16 lowercase hex digits (the upper half of a 128-bit trace id, `_dd.p.tid`).
fn hex16(value: u64, out: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or("")
}

/// Encodes trace chunks (spans grouped by trace, in order) as the agent's v0.4 msgpack payload.
/// Returns the payload and the number of chunks.
pub fn encode_v04(spans: &[&SpanRecord], config: &DatadogConfig, rate: f64) -> (Vec<u8>, usize) {
    // Chunk numbers in order of first appearance. The spans of a trace arrive together
    // (children, then their root): a hash look-up only when the trace changes.
    let mut chunk_ids: HashMap<u128, u32> = HashMap::new();
    let mut sizes: Vec<u32> = Vec::new();
    let mut chunk_of: Vec<u32> = Vec::with_capacity(spans.len());
    let mut last: Option<(u128, u32)> = None;
    for span in spans {
        let chunk = match last {
            Some((trace, chunk)) if trace == span.trace_id => chunk,
            _ => {
                let next = sizes.len() as u32;
                let chunk = *chunk_ids.entry(span.trace_id).or_insert(next);
                if chunk == next {
                    sizes.push(0);
                }
                last = Some((span.trace_id, chunk));
                chunk
            }
        };
        sizes[chunk as usize] += 1;
        chunk_of.push(chunk);
    }
    // The spans grouped by chunk, each chunk in arrival order (a counting sort: no per-trace
    // allocation).
    let mut next_slot: Vec<usize> = Vec::with_capacity(sizes.len());
    let mut total = 0usize;
    for size in &sizes {
        next_slot.push(total);
        total += *size as usize;
    }
    let mut order = vec![0usize; spans.len()];
    for (i, chunk) in chunk_of.iter().enumerate() {
        let slot = &mut next_slot[*chunk as usize];
        order[*slot] = i;
        *slot += 1;
    }
    let mut buf = Vec::with_capacity(256 * spans.len());
    let _ = rmp::encode::write_array_len(&mut buf, sizes.len() as u32);
    let mut start = 0usize;
    for size in &sizes {
        let size = *size as usize;
        let _ = rmp::encode::write_array_len(&mut buf, size as u32);
        for &i in &order[start..start + size] {
            encode_span(&mut buf, spans[i], config, rate);
        }
        start += size;
    }
    (buf, sizes.len())
}

/// Extra meta entries: env, version, DD_TAGS (unless the span has them), and on the local root
/// the language, the upper trace-id bits (written in `tid`) and a sampling decision. Filled in
/// place: the two inline vectors are too big to return by value on every span.
fn extra_entries<'a>(
    span: &'a SpanRecord,
    config: &'a DatadogConfig,
    rate: f64,
    tid: &'a mut [u8; 16],
    extra: &mut SmallVec<[(&'a str, &'a str); 8]>,
    extra_metrics: &mut SmallVec<[(&'a str, f64); 4]>,
) {
    let has = |key: &str| span.meta(key).is_some();
    // Root facts never write `env` or `version`: the span's own tags tell.
    if let Some(env) = config.env.as_ref().filter(|_| span.own_meta("env").is_none()) {
        extra.push(("env", env.as_str()));
    }
    if let Some(version) = config
        .version
        .as_ref()
        .filter(|_| span.own_meta("version").is_none())
    {
        extra.push(("version", version.as_str()));
    }
    for (k, v) in &config.tags {
        if !has(k) {
            extra.push((k, v.as_str()));
        }
    }
    if span.local_root {
        extra.push(("language", "rust"));
        if span.trace_id >> 64 != 0 {
            extra.push(("_dd.p.tid", hex16((span.trace_id >> 64) as u64, tid)));
        }
        extra_metrics.push(("_dd.top_level", 1.0));
        if span.metric("_sampling_priority_v1").is_none() {
            let priority = if sampled(span.trace_id as u64, rate) {
                1.0
            } else {
                0.0
            };
            extra_metrics.push(("_sampling_priority_v1", priority));
            extra_metrics.push(("_dd.agent_psr", rate));
            if !has("_dd.p.dm") {
                extra.push(("_dd.p.dm", "-1"));
            }
        }
    }
}

fn encode_span(buf: &mut Vec<u8>, span: &SpanRecord, config: &DatadogConfig, rate: f64) {
    let mut tid = [0u8; 16];
    let mut extra = SmallVec::new();
    let mut extra_metrics = SmallVec::new();
    extra_entries(span, config, rate, &mut tid, &mut extra, &mut extra_metrics);
    let root_priority = span.root.as_deref().and_then(RootFacts::sampling_priority);
    let metrics_len = span.metrics.len() + usize::from(root_priority.is_some()) + extra_metrics.len();
    let resource = span.own_meta("resource.name").unwrap_or(&span.name);
    // trace_id, span_id, name, resource, service, type, start, duration, meta.
    let fields =
        9 + usize::from(span.parent_id.is_some()) + usize::from(span.error) + usize::from(metrics_len > 0);
    let _ = rmp::encode::write_map_len(buf, fields as u32);
    write_str(buf, "trace_id");
    let _ = rmp::encode::write_uint(buf, span.trace_id as u64);
    write_str(buf, "span_id");
    let _ = rmp::encode::write_uint(buf, span.span_id);
    if let Some(parent) = span.parent_id {
        write_str(buf, "parent_id");
        let _ = rmp::encode::write_uint(buf, parent);
    }
    write_str(buf, "name");
    write_str(buf, &span.name);
    write_str(buf, "resource");
    write_str(buf, resource);
    write_str(buf, "service");
    write_str(buf, span.own_meta("service.name").unwrap_or(&config.service));
    write_str(buf, "type");
    write_str(buf, span.own_meta("span.type").unwrap_or("custom"));
    write_str(buf, "start");
    let _ = rmp::encode::write_sint(buf, span.start_unix_nanos.min(i64::MAX as u64) as i64);
    write_str(buf, "duration");
    let _ = rmp::encode::write_sint(buf, span.duration_nanos.min(i64::MAX as u64) as i64);
    if span.error {
        write_str(buf, "error");
        let _ = rmp::encode::write_sint(buf, 1);
    }
    write_str(buf, "meta");
    let _ = rmp::encode::write_map_len(buf, (span.tag_count() + extra.len()) as u32);
    for (k, v) in &span.meta {
        write_str(buf, k);
        write_str(buf, v);
    }
    if let Some(facts) = &span.root {
        let _ = facts.visit_tags(|k, v| {
            write_str(buf, k);
            write_str(buf, v);
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    for (k, v) in &extra {
        write_str(buf, k);
        write_str(buf, v);
    }
    if metrics_len > 0 {
        write_str(buf, "metrics");
        let _ = rmp::encode::write_map_len(buf, metrics_len as u32);
        for (k, v) in span.all_metrics().chain(extra_metrics.iter().copied()) {
            write_str(buf, k);
            let _ = rmp::encode::write_f64(buf, v);
        }
    }
}

/// A payload holds at most this many spans, unless a single trace has more (a trace is never
/// split by the exporter): a large batch, such as the queue after an outage, goes out in several
/// requests, each well within the size limit of the agent's intake.
pub const MAX_SPANS_PER_PAYLOAD: usize = 1_000;

/// `spans` cut into payloads of at most `max` spans, each cut between two traces: the spans of
/// a trace arrive together, and stay together. A trace of more than `max` spans forms a payload
/// of its own.
pub fn payloads<'a, 's>(
    spans: &'a [&'s SpanRecord],
    max: usize,
) -> impl Iterator<Item = &'a [&'s SpanRecord]> {
    crate::record::cut_between_groups(spans, max, |span| Some(span.trace_id))
}

impl DatadogExporter {
    /// Sends one payload and takes the agent's sampling rates from its answer.
    fn send(&mut self, spans: &[&SpanRecord], cx: &ExportContext<'_>) -> Result<(), ExportError> {
        let (body, chunks) = encode_v04(spans, &self.config, self.rate_for());
        let request = Request {
            url: self.url.clone(),
            method: reqwest::Method::PUT,
            headers: vec![
                ("Content-Type".into(), "application/msgpack".into()),
                ("Datadog-Meta-Lang".into(), "rust".into()),
                (
                    "Datadog-Meta-Lang-Version".into(),
                    env!("TRACING_USR_RUSTC_VERSION").into(),
                ),
                ("Datadog-Meta-Lang-Interpreter".into(), "rustc".into()),
                (
                    "Datadog-Meta-Tracer-Version".into(),
                    env!("CARGO_PKG_VERSION").into(),
                ),
                ("X-Datadog-Trace-Count".into(), chunks.to_string()),
            ]
            .into_iter()
            .chain(self.config.headers.iter().cloned())
            .collect(),
            body: body.into(),
        };
        let response = self.sender.send(&request, cx)?;
        if let Ok(answer) = serde_json::from_slice::<Value>(&response.body) {
            if let Some(rates) = answer.get("rate_by_service").and_then(Value::as_object) {
                self.rates = rates
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect();
            }
        }
        Ok(())
    }
}

impl Exporter for DatadogExporter {
    fn name(&self) -> &str {
        "datadog"
    }

    fn handles(&self, kind: RecordKind) -> bool {
        kind == RecordKind::Span
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let stopping = AtomicBool::new(false);
        let mut cx = ExportContext::new(&stopping);
        self.export_counted(batch, &mut cx);
        cx.into_result()
    }

    /// A payload that fails loses its own spans only (its traces are whole): the next ones are
    /// still sent.
    fn export_counted(&mut self, batch: &[Record], cx: &mut ExportContext<'_>) {
        let spans: Vec<&SpanRecord> = batch.iter().filter_map(Record::as_span).collect();
        for payload in payloads(&spans, MAX_SPANS_PER_PAYLOAD) {
            match self.send(payload, cx) {
                Ok(()) => cx.delivered(RecordKind::Span, payload.len()),
                Err(e) => cx.lost(RecordKind::Span, payload.len(), &e),
            }
        }
    }
}

/// A JSON object written piece by piece. Strings that need no escaping (the usual case) are
/// copied as they are; the others, and floats, go through `serde_json`.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

/// Writes one JSON object into a byte buffer: single bytes are pushed (a call to copy a
/// one-byte slice costs several times more), and nothing can fail but `serde_json`'s fallback.
impl<'a> JsonObject<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    #[inline]
    fn separator(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
    }

    /// A key known to need no escaping.
    #[inline]
    fn raw_key(&mut self, key: &str) {
        self.separator();
        self.raw_str(key);
        self.out.push(b':');
    }

    fn key(&mut self, key: &str) -> serde_json::Result<()> {
        self.separator();
        self.str(key)?;
        self.out.push(b':');
        Ok(())
    }

    /// A string known to need no escaping.
    #[inline]
    fn raw_str(&mut self, s: &str) {
        self.out.push(b'"');
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(b'"');
    }

    fn str(&mut self, s: &str) -> serde_json::Result<()> {
        // Branch-free over the bytes, so the check vectorises.
        let plain = s
            .bytes()
            .fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
        if plain {
            self.raw_str(s);
            Ok(())
        } else {
            serde_json::to_writer(&mut *self.out, s)
        }
    }

    #[inline]
    fn u64(&mut self, v: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    #[inline]
    fn u64_str(&mut self, v: u64) {
        self.out.push(b'"');
        self.u64(v);
        self.out.push(b'"');
    }

    fn value(&mut self, v: &FieldValue) -> serde_json::Result<()> {
        match v {
            FieldValue::Str(s) => self.str(s),
            FieldValue::I64(v) => {
                self.out
                    .extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
                Ok(())
            }
            FieldValue::U64(v) => {
                self.u64(*v);
                Ok(())
            }
            FieldValue::Bool(v) => {
                self.out.extend_from_slice(if *v { b"true" } else { b"false" });
                Ok(())
            }
            other => serde_json::to_writer(&mut *self.out, other),
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Writes log records as Datadog-format JSON lines (for the agent's log collection):
/// `timestamp` (ms), `status`, `message`, `logger.name`, `dd.trace_id` / `dd.span_id` (decimal,
/// lower 64 bits, as Datadog's tracers inject them), `dd.service`, `dd.env`, `dd.version`,
/// `usr.*` and the event's fields.
pub struct DatadogLogsExporter {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    service: String,
    env: Option<String>,
    version: Option<String>,
}

impl fmt::Debug for DatadogLogsExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatadogLogsExporter")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl DatadogLogsExporter {
    /// Writes to `out` with the service, env and version of `config`.
    pub fn new(out: Box<dyn Write + Send>, config: &DatadogConfig) -> Self {
        Self {
            out: std::io::BufWriter::new(out),
            service: config.service.clone(),
            env: config.env.clone(),
            version: config.version.clone(),
        }
    }

    /// Writes one record as a JSON object (no newline).
    ///
    /// # Errors
    /// When writing fails.
    pub fn write_json(&self, out: &mut Vec<u8>, log: &LogRecord) -> serde_json::Result<()> {
        const RESERVED: [&str; 9] = [
            "timestamp",
            "status",
            "message",
            "logger.name",
            "dd.trace_id",
            "dd.span_id",
            "dd.service",
            "dd.env",
            "dd.version",
        ];
        let mut line = JsonObject::new(out);
        line.raw_key("timestamp");
        line.u64(log.timestamp_unix_nanos / 1_000_000);
        line.raw_key("status");
        line.raw_str(match log.level {
            crate::record::Level::Trace => "trace",
            crate::record::Level::Debug => "debug",
            crate::record::Level::Info => "info",
            crate::record::Level::Warn => "warn",
            crate::record::Level::Error => "error",
        });
        line.raw_key("message");
        line.str(log.message.as_deref().unwrap_or(""))?;
        line.raw_key("logger.name");
        line.str(&log.target)?;
        if let (Some(trace), Some(span)) = (log.trace_id, log.span_id) {
            // Decimal strings, as Datadog's tracers inject them.
            line.raw_key("dd.trace_id");
            line.u64_str(trace as u64);
            line.raw_key("dd.span_id");
            line.u64_str(span);
        }
        line.raw_key("dd.service");
        line.str(&self.service)?;
        if let Some(env) = &self.env {
            line.raw_key("dd.env");
            line.str(env)?;
        }
        if let Some(version) = &self.version {
            line.raw_key("dd.version");
            line.str(version)?;
        }
        for (k, v) in log.user.iter() {
            line.key(k)?;
            line.str(v)?;
        }
        for (k, v) in &log.fields {
            if !RESERVED.contains(&k.as_ref()) && !log.user.iter().any(|(u, _)| u == k) {
                line.key(k)?;
                line.value(v)?;
            }
        }
        line.end();
        Ok(())
    }

    /// The JSON object of one record.
    pub fn to_json(&self, log: &LogRecord) -> Value {
        let mut buf = Vec::new();
        match self.write_json(&mut buf, log) {
            Ok(()) => serde_json::from_slice(&buf).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

impl Exporter for DatadogLogsExporter {
    fn name(&self) -> &str {
        "datadog-logs"
    }

    fn handles(&self, kind: RecordKind) -> bool {
        kind == RecordKind::Log
    }

    fn export(&mut self, batch: &[Record]) -> Result<(), ExportError> {
        let mut line = Vec::with_capacity(512);
        for log in batch.iter().filter_map(Record::as_log) {
            line.clear();
            self.write_json(&mut line, log)
                .map_err(|e| ExportError::new(ExportErrorKind::Encode, e.to_string()))?;
            line.push(b'\n');
            self.out.write_all(&line)?;
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace_id: u128) -> SpanRecord {
        SpanRecord {
            trace_id,
            span_id: 1,
            parent_id: None,
            local_root: false,
            name: "s".into(),
            target: "t".into(),
            start_unix_nanos: 0,
            duration_nanos: 0,
            error: false,
            meta: Vec::new(),
            metrics: Vec::new(),
            events: Vec::new(),
            root: None,
            pending_value_mask: 0,
        }
    }

    /// The traces of each payload `payloads` makes of spans of these traces (in order).
    fn cut(traces: &[u128], max: usize) -> Vec<Vec<u128>> {
        let spans: Vec<SpanRecord> = traces.iter().map(|t| span(*t)).collect();
        let refs: Vec<&SpanRecord> = spans.iter().collect();
        payloads(&refs, max)
            .map(|p| p.iter().map(|s| s.trace_id).collect())
            .collect()
    }

    #[test]
    fn payloads_are_cut_between_traces() {
        assert_eq!(cut(&[], 3), Vec::<Vec<u128>>::new());
        assert_eq!(cut(&[1, 1, 2], 3), [vec![1, 1, 2]]);
        // The cut would fall inside trace 2: it moves back to where trace 2 starts.
        assert_eq!(cut(&[1, 1, 2, 2, 3], 3), [vec![1, 1], vec![2, 2, 3]]);
        // A trace larger than a payload goes alone, whole.
        assert_eq!(cut(&[1, 1, 1, 1, 2], 3), [vec![1, 1, 1, 1], vec![2]]);
        assert_eq!(cut(&[1, 2, 2, 2, 2, 3], 3), [vec![1], vec![2, 2, 2, 2], vec![3]]);
        // A maximum of 0 still makes progress.
        assert_eq!(cut(&[1, 2], 0), [vec![1], vec![2]]);
    }

    #[test]
    fn every_span_is_in_exactly_one_payload() {
        let traces: Vec<u128> = (0..5_000u128).map(|i| i / 7 + (i % 3) * 1_000).collect();
        let payloads = cut(&traces, 100);
        assert_eq!(payloads.concat(), traces);
        assert!(payloads
            .iter()
            .all(|p| p.len() <= 100 || p.iter().all(|t| *t == p[0])));
    }
}
