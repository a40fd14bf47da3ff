//! A collector that is down, slow, answers 500 or 429, or closes the connection mid-body: the
//! application never waits on it, drops are counted, and everything arrives once it recovers
//! (when the queue did not overflow).
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_usr::export::datadog::{AgentAddress, DatadogConfig};
use tracing_usr::export::http::RetryPolicy;

use crate::support::builder_with_env;
use crate::support::http_head::read_head;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    Status(u16, Option<u64>),
    Slow(Duration),
    CloseMidBody,
}

/// A tiny HTTP/1.1 server whose behaviour the test switches; it records accepted bodies.
struct FaultServer {
    port: u16,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<Mutex<Vec<(Instant, u16)>>>,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    fn start(behaviour: Behaviour) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = FaultServer {
            port,
            behaviour: Arc::new(Mutex::new(behaviour)),
            hits: Arc::default(),
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (b, h, a, stop) = (
            server.behaviour.clone(),
            server.hits.clone(),
            server.accepted.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            // Bounded: the server stops with its test (or after a minute at most).
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (b, h, a) = (b.clone(), h.clone(), a.clone());
                        std::thread::spawn(move || serve(stream, b, h, a));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Waits (at most 10 s) until a request got `status` (0: dropped mid-body).
    fn wait_for_hit(&self, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.hits.lock().unwrap().iter().any(|(_, s)| *s == status) {
            assert!(Instant::now() < deadline, "no request answered {status}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn spans_received(&self) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|body| {
                let traces: Vec<Vec<serde_json::Value>> =
                    rmp_serde::from_slice(body).expect("valid v0.4 msgpack");
                traces.iter().map(Vec::len).sum::<usize>()
            })
            .sum()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<Mutex<Vec<(Instant, u16)>>>,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let Some(length) = read_head(&mut reader) else {
            return;
        };
        let now = *behaviour.lock().unwrap();
        if let Behaviour::CloseMidBody = now {
            // Read half of the request body, then hang up without an answer.
            let mut half = vec![0; length / 2];
            let _ = reader.read_exact(&mut half);
            hits.lock().unwrap().push((Instant::now(), 0));
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = match now {
            Behaviour::Ok => 200,
            Behaviour::Status(s, _) => s,
            Behaviour::Slow(_) => 200,
            Behaviour::CloseMidBody => 0,
        };
        hits.lock().unwrap().push((Instant::now(), status));
        match now {
            Behaviour::Ok => {
                accepted.lock().unwrap().push(body);
                let answer = r#"{"rate_by_service":{"service:,env:":1.0}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
            }
            Behaviour::Status(code, retry_after) => {
                let extra = retry_after
                    .map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default();
                let _ = write!(stream, "HTTP/1.1 {code} Nope\r\n{extra}Content-Length: 0\r\n\r\n");
            }
            Behaviour::Slow(delay) => {
                std::thread::sleep(delay);
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}");
            }
            Behaviour::CloseMidBody => unreachable!("handled above"),
        }
    }
}

fn layer_for(port: u16, retry: RetryPolicy, max_queued: usize) -> (tracing::Dispatch, tracing_usr::Handle) {
    let config = DatadogConfig {
        agent: AgentAddress::Http(format!("http://127.0.0.1:{port}")),
        timeout: Duration::from_millis(500),
        retry,
        ..DatadogConfig::default()
    };
    // The fault server is no agent: no Remote Configuration polls among its requests.
    let layer = builder_with_env(&[("TRACING_USR_DD_LOGS", "none")])
        .with_datadog(config)
        .with_remote_config(false, None)
        .with_max_queued_records(max_queued)
        .with_batch_delay(Duration::from_millis(10))
        .with_shutdown_timeout(Duration::from_secs(30))
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    (dispatch, handle)
}

/// Emits `n` requests of two spans; returns how long the application thread took.
fn emit(dispatch: &tracing::Dispatch, n: usize) -> Duration {
    let started = Instant::now();
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..n {
            info_span!("request", i, usr.id = "u-1").in_scope(|| info_span!("db").in_scope(|| {}));
        }
    });
    started.elapsed()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(20),
    }
}

#[test]
fn a_slow_collector_never_stalls_the_application_and_overflow_is_counted() {
    let server = FaultServer::start(Behaviour::Slow(Duration::from_secs(2)));
    let (dispatch, handle) = layer_for(server.port, quick_retries(), 100);
    // Each export takes 2 s (and times out at 0.5 s); 500 requests are 1000 spans.
    let took = emit(&dispatch, 500);
    assert!(
        took < Duration::from_secs(2),
        "the application thread waited on the collector: {took:?}"
    );
    let stats = handle.stats();
    assert!(stats.queued <= 100, "the queue is bounded: {stats:?}");
    assert!(stats.dropped > 0, "overflow is counted: {stats:?}");
    server.set(Behaviour::Ok);
    handle.flush().unwrap();
    let stats = handle.stats();
    assert_eq!(stats.processed + stats.dropped, 1000, "{stats:?}");
}

#[test]
fn everything_is_delivered_after_500s_and_a_dropped_connection() {
    let server = FaultServer::start(Behaviour::Status(500, None));
    let (dispatch, handle) = layer_for(server.port, quick_retries(), 10_000);
    emit(&dispatch, 50);
    server.wait_for_hit(500);
    server.set(Behaviour::CloseMidBody);
    server.wait_for_hit(0);
    server.set(Behaviour::Ok);
    handle.flush().unwrap();
    assert_eq!(server.spans_received(), 100, "every span arrives exactly once");
    assert_eq!(handle.stats().dropped, 0);
    let hits = server.hits.lock().unwrap();
    assert!(hits.iter().any(|(_, s)| *s == 500), "the 500s were retried");
    assert!(
        hits.iter().any(|(_, s)| *s == 0),
        "a connection was dropped mid-body: {hits:?}"
    );
}

#[test]
fn retry_after_is_honoured() {
    let server = FaultServer::start(Behaviour::Status(429, Some(1)));
    let (dispatch, handle) = layer_for(server.port, quick_retries(), 10_000);
    emit(&dispatch, 1);
    // Let the first attempt be refused, then recover.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hits.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.set(Behaviour::Ok);
    handle.flush().unwrap();
    let hits = server.hits.lock().unwrap().clone();
    assert!(hits.len() >= 2, "{hits:?}");
    let waited = hits[1].0 - hits[0].0;
    assert!(
        waited >= Duration::from_millis(900),
        "the retry came after {waited:?}, before Retry-After: 1"
    );
    assert_eq!(server.spans_received(), 2);
}

#[test]
fn a_collector_that_is_down_costs_the_application_nothing_and_failures_are_counted() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(1),
    };
    let (dispatch, handle) = layer_for(port, retry, 10_000);
    let took = emit(&dispatch, 200);
    assert!(took < Duration::from_secs(2), "{took:?}");
    handle.flush().unwrap();
    let stats = handle.stats();
    assert!(stats.export_errors >= 1, "{stats:?}");
    assert_eq!(stats.processed, 400);
}

/// The Datadog trace exporter's counters for spans (it handles no logs).
fn datadog_spans(handle: &tracing_usr::Handle) -> tracing_usr::export::Outcomes {
    let stats = handle.stats();
    let datadog = stats
        .exporters
        .iter()
        .find(|e| e.name == "datadog")
        .expect("the Datadog exporter");
    assert_eq!(datadog.logs, Default::default(), "not the trace exporter's");
    datadog.spans
}

#[test]
fn the_datadog_exporter_counts_what_it_loses_per_span_and_by_reason() {
    // A refusal: every span of the payload is rejected, at once.
    let server = FaultServer::start(Behaviour::Status(400, None));
    let (dispatch, handle) = layer_for(server.port, quick_retries(), 10_000);
    emit(&dispatch, 30);
    handle.flush().unwrap();
    let spans = datadog_spans(&handle);
    assert_eq!((spans.rejected, spans.delivered), (60, 0), "{spans:?}");
    assert_eq!(handle.stats().spans.offered, 60);

    // A collector down for longer than the retry time: the spans are given up, counted.
    let server = FaultServer::start(Behaviour::Status(503, None));
    let retry = RetryPolicy {
        max_elapsed: Duration::from_millis(150),
        ..quick_retries()
    };
    let (dispatch, handle) = layer_for(server.port, retry, 10_000);
    emit(&dispatch, 20);
    handle.flush().unwrap();
    server.set(Behaviour::Ok);
    emit(&dispatch, 10);
    handle.flush().unwrap();
    let spans = datadog_spans(&handle);
    assert_eq!((spans.retry_exhausted, spans.delivered), (40, 20), "{spans:?}");
    assert_eq!(server.spans_received(), 20, "what was delivered arrived");
}
