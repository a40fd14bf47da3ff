//! The detector's internals: rings, tables and rules, and window properties against brute force.

use super::detector::*;
use std::sync::Arc;
use std::time::Duration;

use super::window::*;
use super::*;
use crate::blocking::ManualClock;

#[test]
fn rings_keep_the_last_entries_sorted_and_match_on_span() {
    let mut ring = Ring::<u32>::new(3);
    for t in [10, 20, 30] {
        ring.push(t, 3);
    }
    assert!(ring.full_within(3, 21) && !ring.full_within(3, 20));
    // A deferred, older entry goes in time order; one older than a full ring's oldest is
    // dropped.
    ring.push(15, 3);
    assert_eq!(ring.items.iter().copied().collect::<Vec<_>>(), vec![15, 20, 30]);
    ring.push(1, 3);
    assert_eq!(ring.items.iter().copied().collect::<Vec<_>>(), vec![15, 20, 30]);
    assert_eq!(ring.count_within(30, 11), 2);
}

#[test]
fn distinct_sets_forget_stale_values_and_evict_the_oldest() {
    let mut set = Distinct::default();
    for (v, t) in [(1, 0), (2, 1), (3, 2)] {
        set.observe(v, t, 10, 3);
    }
    set.observe(2, 5, 10, 3);
    assert_eq!(set.len_within(5, 10), 3);
    set.observe(4, 6, 10, 3);
    assert!(
        !set.items.iter().any(|(v, _)| *v == 1),
        "the oldest (1) was evicted"
    );
    assert_eq!(set.len_within(12, 10), 2, "3 (seen at 2) is stale at 12");
}

#[test]
fn the_documented_memory_figure_holds_for_the_defaults() {
    let bound = Detector::memory_bound(&DetectionConfig::default());
    // docs/detection.md and the `detection` module docs quote this figure.
    assert!(bound < 40 << 20, "{bound} bytes");
    println!("worst case with the defaults: {bound} bytes");
    let small = DetectionConfig {
        max_keys: 1000,
        ..DetectionConfig::default()
    };
    assert!(Detector::memory_bound(&small) < bound / 5);
}

#[test]
fn long_account_text_is_cut_and_does_not_keep_its_allocation() {
    let detector = Detector::new(DetectionConfig::default(), Arc::new(ManualClock::new()));
    let long = "a".repeat(100_000);
    let mut signals = Vec::new();
    for _ in 0..41 {
        let mut obs = Observation::new(EventKind::LoginFailure, 0);
        obs.account = Some(long.clone());
        signals = detector.observe(&obs);
    }
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].key.len(), MAX_KEY_TEXT);
    assert!(detector.memory_usage() < 10_000, "{}", detector.memory_usage());
}

#[test]
fn invalid_settings_are_named() {
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::SignupRate).window = Duration::ZERO;
    let error = config.validate().unwrap_err();
    assert!(error.message().contains("bl-signup-ratelimit"));
    assert_eq!(error.kind(), DetectionConfigErrorKind::InvalidValue);
    let mut config = DetectionConfig::default();
    config.rule_mut(RuleId::BruteForce).threshold = MAX_THRESHOLD + 1;
    assert!(config.validate().is_err());
    assert_eq!(RuleId::from_id("def-000-yk4"), Some(RuleId::CredentialStuffing));
    assert_eq!(RuleId::from_id("appsec-ato-bf"), Some(RuleId::BruteForce));
    assert_eq!(RuleId::from_id("nope"), None);
}

mod window_properties {
    use super::*;
    use crate::blocking::ManualClock;
    use proptest::prelude::*;

    /// The first event at which more than `n` events lie in `(t - w, t]`, by brute force.
    fn first_match(times: &[u32], n: usize, w: u32) -> Option<usize> {
        (0..times.len()).find(|&i| {
            let t = times[i];
            times[..=i].iter().filter(|&&e| t - e < w).count() > n
        })
    }

    proptest! {
        /// The ring detector fires exactly where a brute-force count over the whole history
        /// says the threshold is first exceeded, for any arrival pattern.
        #[test]
        fn rate_rules_fire_exactly_where_the_brute_force_count_does(
            gaps in proptest::collection::vec(0u32..120, 1..80),
            threshold in 0u32..6,
            window in 1u64..400,
        ) {
            let mut config = DetectionConfig::default();
            config.rule_mut(RuleId::PaymentFailures).threshold = threshold;
            config.rule_mut(RuleId::PaymentFailures).window = Duration::from_secs(window);
            let clock = ManualClock::new();
            let detector = Detector::new(config, Arc::new(clock.clone()));
            let mut times = Vec::new();
            let mut fired = None;
            for (i, gap) in gaps.iter().enumerate() {
                clock.advance(Duration::from_secs(u64::from(*gap)));
                let mut obs = Observation::new(EventKind::PaymentFailure, detector.now());
                obs.ip = Some("192.0.2.1".parse().unwrap());
                times.push(obs.time);
                if !detector.observe(&obs).is_empty() && fired.is_none() {
                    fired = Some(i);
                }
            }
            let expected = first_match(&times, threshold as usize, u32::try_from(window).unwrap());
            prop_assert_eq!(fired, expected);
        }
    }
}
