//! Resident memory and drops of the export pipelines under sustained load, in a binary that links
//! tracing-usr and nothing else of the export benches (`benches/export.rs` also carries the
//! tracing-opentelemetry comparison pipeline and criterion, whose code pages add about 1 MiB to
//! its resident memory).
//!
//! Each exporter runs in a child process of its own (the peak is per process): the request of
//! `support/common.rs` (5 spans, 2 events, a user identified), paced at a fixed rate, exported to a
//! loopback HTTP sink that answers 200.
//!
//! Run: `cargo bench --bench footprint`; `TRACING_USR_FOOTPRINT=<requests per second>:<seconds>`
//! changes the load (default `10000:3`).
//!
//! Last run (2 shared cores, x86_64): 10,000 requests/s (50,000 spans/s) for 3 s, 0 spans or logs
//! dropped by either exporter, everything flushed; peak resident memory of the whole process
//! 8.8–8.9 MiB (Datadog, log lines to stdout) and 9.5–9.7 MiB (OTLP), under the 10 MiB goal
//! (three runs each). About 0.2–0.3 MiB of the OTLP figure are the message parts the exporter
//! keeps from one request to the next (at most one request's worth: 512 spans and 512 log
//! records with their buffers); without them it peaked at 9.2–9.5 MiB. Of 9.4 MiB, 4.9 MiB are
//! the binary's code and read-only data, 1.6 MiB libc and the loader, and 2.5 MiB the heap and
//! the threads (application, export worker, sink). The same load in the export bench's binary
//! peaks about 1 MiB higher.

#[path = "support/common.rs"]
mod common;
#[path = "support/loopback.rs"]
mod loopback;

use common::identity_request;
use loopback::{paced, peak_rss_kib, start_sink, usr_layer};
use std::process::{Command, Stdio};
use tracing_subscriber::prelude::*;
use tracing_usr::User;

const CHILD: &str = "TRACING_USR_FOOTPRINT_EXPORTER";

/// Runs the paced load with one exporter and prints one line: exporter, requests, drops, RSS.
fn child(exporter: &str, rate: u64, seconds: u64) {
    let port = start_sink();
    let layer = usr_layer(exporter == "datadog", port);
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let (total, took) = paced(&dispatch, rate, seconds, || identity_request(&user));
    let flushed = handle.flush().is_ok();
    let stats = handle.stats();
    eprintln!(
        "{exporter:<8} {total} requests ({} spans) in {took:.2?} ({:.0} req/s): dropped spans+logs {}, \
         flushed {flushed}, peak RSS {} KiB ({:.1} MiB)",
        total * 5,
        total as f64 / took.as_secs_f64(),
        stats.dropped,
        peak_rss_kib(),
        peak_rss_kib() as f64 / 1024.0,
    );
}

fn main() {
    let load = std::env::var("TRACING_USR_FOOTPRINT").unwrap_or_else(|_| "10000:3".to_owned());
    let (rate, seconds) = load
        .split_once(':')
        .and_then(|(r, s)| Some((r.parse().ok()?, s.parse().ok()?)))
        .unwrap_or_else(|| panic!("TRACING_USR_FOOTPRINT={load}: expected <requests per second>:<seconds>"));
    if let Ok(exporter) = std::env::var(CHILD) {
        child(&exporter, rate, seconds);
        return;
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    for exporter in ["datadog", "otlp"] {
        // The Datadog log lines go to the child's stdout: discarded.
        let status = Command::new(&exe)
            .env(CHILD, exporter)
            .env("TRACING_USR_FOOTPRINT", &load)
            .stdout(Stdio::null())
            .status()
            .expect("run the child");
        assert!(status.success(), "the {exporter} run failed: {status}");
    }
}
