//! Bounded tables under many keys, exact counts under concurrency.
use std::sync::Arc;

use tracing_usr::detection::{DetectionConfig, Detector, RuleId};

use crate::setup::{one, quiet, setup};

#[test]
fn tables_evict_the_stalest_key_without_an_open_signal_and_never_exceed_the_bound() {
    let mut config = DetectionConfig::default();
    config.max_keys = 4;
    let s = setup(config);
    let signup = |ip: &str| s.request(ip, || tracing_usr::track_signup("x", None, ()).unwrap());
    // 192.0.2.1 opens a signal; 192.0.2.2 has 10 signups (one short).
    quiet(&s, 10, |_| signup("192.0.2.1"));
    signup("192.0.2.1");
    one(&s);
    s.advance(1);
    quiet(&s, 10, |_| signup("192.0.2.2"));
    // Three more IPs: the table holds 4 keys, so 192.0.2.2 (stalest without a signal) goes.
    for ip in ["192.0.2.3", "192.0.2.4", "192.0.2.5"] {
        s.advance(1);
        signup(ip);
    }
    let detector = s.h.handle.detector().unwrap();
    assert_eq!(detector.tracked_keys(), 4);
    signup("192.0.2.2");
    assert!(
        s.signals.take().is_empty(),
        "192.0.2.2 was evicted: its count restarted"
    );
    // 192.0.2.1 kept its open signal: its next matches extend it instead of opening a new one.
    signup("192.0.2.1");
    assert!(s.signals.take().is_empty());
    // Spraying 10,000 IPs never grows the table beyond the bound.
    for i in 0..10_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        signup(&ip);
    }
    assert!(detector.tracked_keys() <= 4);
    assert!(detector.memory_usage() <= Detector::memory_bound(detector.config()));
}

#[test]
fn concurrent_requests_count_exactly() {
    let s = Arc::new(setup(DetectionConfig::default()));
    // 8 threads × 50 failures against one account from one IP: 400 failures, exactly one
    // brute-force signal (one account: no credential stuffing).
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.failure("192.0.2.100", "shared-account");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = s.signals.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].rule, RuleId::BruteForce);
}
