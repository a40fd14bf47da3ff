//! Detection on the request path: a login request (root span with the client IP and user agent,
//! a handler span, one login event) with detection on vs off, in the same run.
//!
//! * `failure_off` / `failure_on`: `track_login_failure`, keys rotating over 1,000 IPs and
//!   5,000 accounts (credential-stuffing and brute-force tables both updated; signals open and
//!   are kept alive as the run goes on, with a no-op sink);
//! * `success_off` / `success_on`: `track_login_success` (the escalation look-ups).
//!
//! Export is off in all rungs, so the figures are the layer's own work. Before the timings the
//! bench prints allocations per request (a counting global allocator).
//!
//! Run: `cargo bench --bench detection`.
//!
//! Last run (2 shared cores, x86_64; ratios against the `off` rung of the same run):
//!
//! | request | off | on | ratio | allocations off → on |
//! |---|---|---|---|---|
//! | login failure | 0.96 µs | 1.51 µs | 1.57× (+0.55 µs) | 21 → 23 |
//! | login success | 1.22 µs | 1.41 µs | 1.16× (+0.19 µs) | 28 → 31 |
//!
//! Instructions (`TRACING_USR_BENCH=instructions:<rung>:<n>` under callgrind, 20,000 requests,
//! set-up subtracted): failure 12.2 k off, 14.7 k on (1.20×); success 14.4 k off, 16.4 k on
//! (1.14×). The detector itself (`Detector::observe`: two keyed hashes, two shard locks, a ring
//! push, a distinct-set update) is about 0.6 k of the difference, reading the event's inputs
//! from its tags 0.3 k, the user agent's copy and the waiting observation the rest. (Before the
//! hot-path work of this release the same request cost 14.1 k off and 15.9 k on: both got
//! cheaper, the `off` path more.) The keys rotate over 1,000 IPs and 5,000 accounts, so the
//! tables do not fit in the L1 cache, as in a real attack.

#[path = "support/common.rs"]
mod common;
#[path = "support/login.rs"]
mod login;

use common::{allocations, Counting};
use criterion::Criterion;
use login::Logins;
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::JsonLines;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn dispatch(detection: bool) -> Dispatch {
    let layer = tracing_usr::builder()
        .with_env_lookup(|_| None)
        .with_json_lines(JsonLines::None)
        .with_detection_enabled(detection)
        .with_signal_sink(())
        .build();
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

const RUNGS: [(&str, bool, bool); 4] = [
    ("failure_off", false, false),
    ("failure_on", false, true),
    ("success_off", true, false),
    ("success_on", true, true),
];

fn allocations_per_request(keys: &Logins) {
    const N: u64 = 20_000;
    eprintln!("allocations per login request:");
    for (name, success, detection) in RUNGS {
        tracing::dispatcher::with_default(&dispatch(detection), || {
            for _ in 0..N {
                keys.request(success);
            }
            let before = allocations();
            for _ in 0..N {
                keys.request(success);
            }
            eprintln!("  {name:<12} {:>6.1}", (allocations() - before) as f64 / N as f64);
        });
    }
}

fn bench(c: &mut Criterion) {
    let keys = Logins::new();
    allocations_per_request(&keys);
    let mut group = c.benchmark_group("detection");
    for (name, success, detection) in RUNGS {
        let dispatch = dispatch(detection);
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(|| keys.request(success)));
        });
    }
    group.finish();
}

/// `TRACING_USR_BENCH=instructions:<rung>:<requests>`: runs that many requests of one rung and
/// exits (run it under callgrind, and once with 0 requests to subtract set-up).
fn instructions(rung: &str, n: u64) {
    let keys = Logins::new();
    let Some((_, success, detection)) = RUNGS.into_iter().find(|(name, _, _)| *name == rung) else {
        panic!("unknown rung {rung}");
    };
    tracing::dispatcher::with_default(&dispatch(detection), || {
        for _ in 0..n {
            keys.request(success);
        }
    });
}

fn main() {
    common::main_with(instructions, bench);
}
