//! Shared by the benches: the request under test and a counting allocator.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{field, info, info_span};
use tracing_usr::User;

/// Counts allocations of all threads.
pub struct Counting;

pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// A bench's entry point: with `TRACING_USR_BENCH=instructions:<rung>:<requests>`, runs
/// `instructions(rung, requests)` and exits (for callgrind: the `*_instructions.sh` scripts);
/// otherwise the criterion benchmarks of `bench`.
pub fn main_with(instructions: impl FnOnce(&str, u64), bench: impl FnOnce(&mut criterion::Criterion)) {
    if let Ok(mode) = std::env::var("TRACING_USR_BENCH") {
        match mode.split(':').collect::<Vec<_>>().as_slice() {
            ["instructions", rung, n] => instructions(rung, n.parse().expect("a request count")),
            _ => panic!("TRACING_USR_BENCH={mode}: expected instructions:<rung>:<n>"),
        }
        return;
    }
    let mut criterion = criterion::Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}

/// 5 spans and 2 events, without `usr.*` fields.
pub fn plain_request() {
    let _root = info_span!("request", http.method = "GET", http.route = "/orders").entered();
    let _handler = info_span!("handler", step = 1).entered();
    {
        let _db = info_span!("db.query", db.system = "postgresql").entered();
        info!(rows = 3, "loaded");
    }
    {
        let _cache = info_span!("cache", hit = true).entered();
    }
    let _render = info_span!("render").entered();
    info!("rendered");
}

/// 5 spans and 2 events with `usr.*` fields, a late `Span::record` and an SDK `identify`.
pub fn identity_request(user: &User) {
    identity_request_with(user, |user| {
        let _ = tracing_usr::identify(user);
    })
}

/// [`identity_request`] with `identify` in place of the SDK call.
pub fn identity_request_with(user: &User, identify: impl FnOnce(&User)) {
    let root = info_span!(
        "request",
        http.method = "GET",
        http.route = "/orders",
        usr.id = field::Empty
    );
    let _root = root.enter();
    let _handler = info_span!("handler", step = 1, usr.session_id = "sess-1").entered();
    identify(user);
    {
        let _db = info_span!("db.query", db.system = "postgresql").entered();
        info!(rows = 3, "loaded");
    }
    root.record("usr.id", "u-1");
    {
        let _cache = info_span!("cache", hit = true).entered();
    }
    let _render = info_span!("render").entered();
    info!("rendered");
}
