//! Sliding windows on a manual clock and the open/close life of a signal.
use std::time::Duration;

use tracing_usr::detection::{DetectionConfig, RuleId};

use crate::setup::{one, quiet, setup};

#[test]
fn windows_slide_on_the_clock_and_signals_live_by_keep_alive() {
    let s = setup(DetectionConfig::default());
    let ip = "192.0.2.40";
    let signup = |n: &str| s.request(ip, || tracing_usr::track_signup(n, None, ()).unwrap());
    // 10 signups, then 300 s later one more: the window (5 min) holds only 1.
    quiet(&s, 10, |i| signup(&format!("a{i}")));
    s.advance(300);
    quiet(&s, 10, |i| signup(&format!("b{i}")));
    // The 11th inside the window.
    s.advance(10);
    signup("b10");
    let opened = one(&s);
    assert_eq!(opened.count, 11);
    // While open, further matches extend the signal without a duplicate.
    s.advance(200);
    quiet(&s, 20, |i| signup(&format!("c{i}")));
    // The keep-alive runs out 300 s after the last match; counters keep running, so the next
    // burst opens a new signal.
    s.advance(301);
    quiet(&s, 10, |i| signup(&format!("d{i}")));
    signup("d10");
    assert_eq!(one(&s).rule, RuleId::SignupRate);
}

#[test]
fn a_signal_closes_after_the_maximum_duration_even_when_kept_alive() {
    let mut config = DetectionConfig::default();
    config.max_signal_duration = Duration::from_secs(3600);
    let s = setup(config);
    let ip = "192.0.2.41";
    let pay = || s.request(ip, || tracing_usr::track_payment_failure(()).unwrap());
    quiet(&s, 3, |_| pay());
    pay();
    one(&s);
    // A burst of 4 every 4 minutes matches each time and keeps it open (window 5 min) until
    // the hour is over.
    let mut reopened = 0;
    for _ in 0..20 {
        s.advance(240);
        for _ in 0..4 {
            pay();
        }
        reopened += s.signals.take().len();
    }
    assert_eq!(reopened, 1, "exactly one new signal after the 1-hour maximum");
}
