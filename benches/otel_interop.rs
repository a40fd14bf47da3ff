//! What tracing-usr adds to a tracing-opentelemetry pipeline: the identity request of
//! `benches/request.rs` (5 spans, 2 events, `usr.*` fields, a late `Span::record`, an SDK
//! `identify`) under
//!
//! 1. `otel_alone`: registry + tracing-opentelemetry (the OpenTelemetry SDK, a simple span
//!    processor and an exporter that discards: the pipeline's own cost, not the network's);
//! 2. `otel_usr_first`: the same with tracing-usr added before it
//!    (`registry().with(usr).with(otel)`: the root's tags written once, at its close);
//! 3. `otel_usr_second`: tracing-usr added after it (tags written as they are recorded).
//!
//! tracing-usr's own export is off in both (the embedded default stops when it finds the
//! tracing-opentelemetry layer). The goal: tracing-usr adds at most 10 % to `otel_alone`.
//!
//! Run: `cargo bench --bench otel_interop`; `bash benches/otel_interop_instructions.sh` counts
//! instructions per request with callgrind and prints the ratios to `otel_alone`.
//!
//! Last run (x86_64; `bash benches/otel_interop_instructions.sh 1000`, with the typed root facts
//! of `RootFacts`):
//!
//! | rung | instructions / request | ratio |
//! |---|---|---|
//! | otel_alone | 52.2 k | 1.00× |
//! | otel_usr_first | 68.5 k | 1.31× |
//! | otel_usr_second | 75.6 k | 1.45× |
//!
//! The goal is not met, and cannot be with the attributes this workload writes. Of the 16.3 k
//! that tracing-usr adds when it comes first (callgrind, per request):
//!
//! * ~3.7 k is the OpenTelemetry SDK's own work on the 8 attributes tracing-usr adds to the root
//!   (the `usr.*` tags the root's own fields do not already give, the collection mode, and the
//!   semantic-convention `user.*` / `enduser.id` / `session.id` beside them): `set_attribute`
//!   behind the span's mutex and the growth of its attribute list (+2.5 k, ~300 each), and
//!   dropping them after export (+1.3 k). That alone is 7 % of `otel_alone`.
//! * ~5 k is tracing-usr's identity work on the request's five spans (new spans, the `usr.*`
//!   fields lifted to the root, the late `Span::record`, `identify`), as in the
//!   `layer_identity` rung of `benches/request.rs`.
//! * ~3.3 k is building the attributes from the root's facts (one shared string per value, five
//!   allocations) and ~1.2 k deriving the facts at the root's close; the rest is the close
//!   itself (the root's state dropped, detection's close work).
//!
//! Holding the attributes on the stack instead of in a `Vec` was tried and measured worse
//! (68.9 k: the list is moved by value through the close). When tracing-opentelemetry comes
//! first, each of the request's three identity writes is written as it happens (new or changed
//! values only), hence the higher second rung.

#[path = "support/common.rs"]
mod common;

use std::hint::black_box;

use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;
use tracing_usr::User;

use common::{identity_request, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An exporter that drops what it is given.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        drop(black_box(batch));
        std::future::ready(Ok(()))
    }
}

const RUNGS: [&str; 3] = ["otel_alone", "otel_usr_first", "otel_usr_second"];

fn dispatch(rung: &str) -> (Dispatch, SdkTracerProvider) {
    let provider = SdkTracerProvider::builder().with_simple_exporter(Discard).build();
    let tracer = provider.tracer("bench");
    let usr = || tracing_usr::builder().with_env_lookup(|_| None).build();
    let dispatch = match rung {
        "otel_alone" => Dispatch::new(
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_usr_first" => Dispatch::new(
            tracing_subscriber::registry()
                .with(usr())
                .with(tracing_opentelemetry::layer().with_tracer(tracer)),
        ),
        "otel_usr_second" => Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .with(usr()),
        ),
        other => panic!("unknown rung {other}"),
    };
    (dispatch, provider)
}

fn bench(c: &mut Criterion) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let mut group = c.benchmark_group("otel_interop");
    for rung in RUNGS {
        let (dispatch, _provider) = dispatch(rung);
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(rung, |b| b.iter(|| identity_request(black_box(&user))));
        });
    }
    group.finish();
}

/// `TRACING_USR_BENCH=instructions:<rung>:<requests>` (for `benches/otel_interop_instructions.sh`).
fn instructions(rung: &str, n: u64) {
    let user = User::new("u-1").with_email("ada@example.com").with_role("admin");
    let (dispatch, provider) = dispatch(rung);
    tracing::dispatcher::with_default(&dispatch, || {
        // The first request settles the layer order; it is part of the set-up.
        identity_request(&user);
        for _ in 0..n {
            identity_request(black_box(&user));
        }
    });
    let _ = provider.shutdown();
}

fn main() {
    common::main_with(instructions, bench);
}
