//! Where a signal goes: the root's tags, the exported signal event, the sink (never on the application's callback path, never at the cost of the request).
use std::sync::Arc;
use std::time::Duration;

use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, RuleId, Signal, SignalStats};

use crate::setup::setup;
use crate::support::{builder_with_env, Harness};

#[test]
fn the_root_gets_the_signal_tag_and_the_signal_event_is_exported() {
    // The default sink: one WARN event, exported like any other.
    let clock = ManualClock::new();
    let h = Harness::new(builder_with_env(&[]).with_clock(Arc::new(clock)));
    for i in 0..4 {
        h.run(|| {
            let _root = tracing::info_span!("checkout", http.client_ip = "192.0.2.50", attempt = i).entered();
            tracing_usr::track_payment_failure(()).unwrap();
        });
    }
    let roots = h.roots();
    let tagged: Vec<_> = roots
        .iter()
        .filter(|r| {
            r.tags()
                .iter()
                .any(|(k, _)| k == "tracing_usr.signal.bl-payment-failures")
        })
        .collect();
    assert_eq!(tagged.len(), 1, "only the request that opened the signal");
    let root = tagged[0];
    assert!(root
        .tags()
        .iter()
        .any(|(k, v)| k == "tracing_usr.signal.bl-payment-failures" && v == "medium"));
    assert_eq!(root.metric("_sampling_priority_v1"), Some(2.0));
    let logs: Vec<_> = h
        .logs()
        .into_iter()
        .filter(|l| l.target == "tracing_usr::signal")
        .collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let log = &logs[0];
    assert_eq!(
        log.trace_id,
        Some(root.trace_id),
        "delivered inside the request that raised it"
    );
    let field = |name: &str| {
        log.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(field("rule").as_deref(), Some("bl-payment-failures"));
    assert_eq!(field("severity").as_deref(), Some("medium"));
    assert_eq!(field("count").as_deref(), Some("4"));
    assert_eq!(field("signal_trace_id"), Some(format!("{:032x}", root.trace_id)));
    // The signal event is not read as a business event.
    assert!(!root
        .tags()
        .iter()
        .any(|(k, _)| k.starts_with("appsec.events.tracing")));
}

#[test]
fn signals_raised_inside_layer_callbacks_are_delivered_by_the_helper_thread() {
    let s = setup(DetectionConfig::default());
    for _ in 0..4 {
        // Field-path events are seen inside `on_event`: the signal cannot be delivered there.
        s.request("192.0.2.120", || {
            tracing::info!(usr.event = "payment.failure", provider = "acme")
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        got = s.signals.take();
    }
    assert_eq!(got.len(), 1, "delivered without a flush");
    assert_eq!(got[0].rule, RuleId::PaymentFailures);
    assert_eq!(
        s.h.handle.signal_stats(),
        SignalStats {
            delivered: 1,
            dropped: 0
        }
    );
}

#[test]
fn a_panicking_sink_loses_the_signal_not_the_request() {
    let clock = ManualClock::new();
    let h = Harness::new(
        builder_with_env(&[])
            .with_clock(Arc::new(clock))
            .with_signal_sink(|_: &Signal| panic!("sink bug")),
    );
    for _ in 0..4 {
        let verdict = h.run(|| {
            let _root = tracing::info_span!("request", http.client_ip = "192.0.2.130").entered();
            tracing_usr::track_payment_failure(())
        });
        assert!(verdict.is_ok());
    }
    assert_eq!(
        h.handle.signal_stats(),
        SignalStats {
            delivered: 0,
            dropped: 1
        }
    );
    // The root still carries the signal tag.
    assert!(h.roots().iter().any(|r| r
        .tags()
        .iter()
        .any(|(k, _)| k == "tracing_usr.signal.bl-payment-failures")));
}
