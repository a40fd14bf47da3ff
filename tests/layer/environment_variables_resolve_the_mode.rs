//! Every edge case of the mode variables, read through the builder's lookup.
use tracing_usr::Mode;

use crate::support::Harness;

const MODE: &str = "DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE";
const DEPRECATED: &str = "DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING";
const ENABLED: &str = "DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING_ENABLED";

/// The mode, and the warnings (waiting for `expected` of them).
fn mode_warned(vars: &[(&str, &str)], expected: usize) -> (Mode, Vec<String>) {
    let h = Harness::with_env(vars);
    (h.handle.mode(), h.config_warnings(expected))
}

fn mode_of(vars: &[(&str, &str)]) -> Mode {
    tracing_usr::builder()
        .with_env_lookup({
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .with_json_lines(tracing_usr::JsonLines::None)
        .build()
        .mode()
}

#[test]
fn unset_and_empty_mean_identification() {
    assert_eq!(mode_warned(&[], 0), (Mode::Identification, vec![]));
    assert_eq!(
        mode_warned(&[(MODE, ""), (DEPRECATED, ""), (ENABLED, "")], 0),
        (Mode::Identification, vec![])
    );
}

#[test]
fn spellings_are_trimmed_and_case_insensitive_without_prefix_matching() {
    assert_eq!(
        mode_warned(&[(MODE, " Anonymization\t")], 0),
        (Mode::Anonymization, vec![])
    );
    assert_eq!(mode_of(&[(MODE, "IDENT")]), Mode::Identification);
    assert_eq!(mode_of(&[(MODE, "disabled")]), Mode::Disabled);
    let (mode, warnings) = mode_warned(&[(MODE, "anonym")], 1);
    assert_eq!(mode, Mode::Disabled);
    assert_eq!(warnings.len(), 1, "exactly one warning: {warnings:?}");
    assert!(
        warnings[0].contains(MODE) && warnings[0].contains("anonym"),
        "{warnings:?}"
    );
}

#[test]
fn the_deprecated_variable_is_read_only_when_the_canonical_one_is_unset() {
    let (mode, warnings) = mode_warned(&[(DEPRECATED, "safe")], 1);
    assert_eq!(mode, Mode::Anonymization);
    assert_eq!(warnings.len(), 1, "one deprecation warning");
    assert!(warnings[0].contains("deprecated"));
    assert_eq!(mode_of(&[(DEPRECATED, "extended")]), Mode::Identification);
    assert_eq!(
        mode_warned(&[(MODE, "ident"), (DEPRECATED, "disabled")], 0),
        (Mode::Identification, vec![])
    );
    assert_eq!(mode_of(&[(DEPRECATED, "bogus")]), Mode::Disabled);
}

#[test]
fn the_enabled_flag_can_only_force_disabled() {
    assert_eq!(mode_of(&[(MODE, "ident"), (ENABLED, "false")]), Mode::Disabled);
    assert_eq!(mode_of(&[(MODE, "anon"), (ENABLED, "0")]), Mode::Disabled);
    assert_eq!(mode_of(&[(MODE, "anon"), (ENABLED, "true")]), Mode::Anonymization);
    let (mode, warnings) = mode_warned(&[(MODE, "anon"), (ENABLED, "maybe")], 1);
    assert_eq!((mode, warnings.len()), (Mode::Disabled, 1));
}
