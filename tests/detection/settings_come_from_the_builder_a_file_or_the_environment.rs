//! Detection settings: builder, file, environment, and the errors a bad one gives.

use tracing_usr::detection::{DetectionConfig, RuleId};
use tracing_usr::{Builder, JsonLines};

use crate::support::{builder_with_env, Harness};

#[test]
fn settings_come_from_the_builder_a_file_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("tracing-usr-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("detection.json");
    std::fs::write(
        &file,
        r#"{"max_keys": 50, "rules": {"def-000-zwj": {"threshold": 1, "block_ip": true}, "appsec-ato-bf": {"enabled": false}}}"#,
    )
    .unwrap();
    let from_file = |builder: Builder| {
        let layer = builder.with_json_lines(JsonLines::None).build();
        layer.handle().detector()
    };
    let detector = from_file(builder_with_env(&[]).with_detection_file(&file).unwrap()).unwrap();
    assert_eq!(detector.config().max_keys, 50);
    assert_eq!(detector.config().rule(RuleId::PaymentFailures).threshold, 1);
    assert!(detector.config().rule(RuleId::PaymentFailures).block_ip);
    assert!(!detector.config().rule(RuleId::BruteForce).enabled);
    let path = file.to_str().unwrap();
    let detector = from_file(builder_with_env(&[("TRACING_USR_DETECTION_FILE", path)])).unwrap();
    assert_eq!(detector.config().max_keys, 50);
    assert!(from_file(builder_with_env(&[("TRACING_USR_DETECTION", "off")])).is_none());
    assert!(from_file(builder_with_env(&[]).with_detection_enabled(false)).is_none());
    assert!(from_file(builder_with_env(&[])).unwrap().config() == &DetectionConfig::default());

    // Invalid settings: an error from the builder, a warning and the defaults from the env.
    std::fs::write(&file, r#"{"rules": {"appsec-ato-bf": {"threshold": "many"}}}"#).unwrap();
    let err = builder_with_env(&[])
        .with_detection_file(&file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rules.appsec-ato-bf.threshold"), "{err}");
    let h = Harness::with_env(&[
        ("TRACING_USR_DETECTION_FILE", path),
        ("TRACING_USR_DETECTION", "maybe"),
    ]);
    let warnings = h.config_warnings(2);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("rules.appsec-ato-bf.threshold")));
    assert!(warnings.iter().any(|w| w.contains("maybe")));
    assert_eq!(h.handle.detector().unwrap().config(), &DetectionConfig::default());
    let mut bad = DetectionConfig::default();
    bad.rule_mut(RuleId::PrivilegeViolationUser).block_ip = true;
    assert!(builder_with_env(&[]).with_detection(bad).is_err());
    let mut bad = DetectionConfig::default();
    bad.rule_mut(RuleId::SignupRate).block_user = true;
    assert!(builder_with_env(&[]).with_detection(bad).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_detection_setting_says_what_kind_of_problem_it_is() {
    use tracing_usr::detection::{load_config, parse_config, DetectionConfigErrorKind as Kind};
    let kind = |text: &str| parse_config(text).map(|_| ()).unwrap_err().kind();
    assert_eq!(kind("{not json"), Kind::Syntax);
    assert_eq!(kind("[1]"), Kind::Syntax);
    assert_eq!(kind(r#"{"max_keyz": 3}"#), Kind::Unknown);
    assert_eq!(kind(r#"{"rules": {"no-such-rule": {}}}"#), Kind::Unknown);
    assert_eq!(kind(r#"{"max_keys": -1}"#), Kind::InvalidValue);
    assert_eq!(
        kind(r#"{"max_keys": 0}"#),
        Kind::InvalidValue,
        "validated after parsing"
    );
    let missing = load_config(std::path::Path::new("/nonexistent/tracing-usr-detection.json")).unwrap_err();
    assert_eq!(missing.kind(), Kind::Read);
    assert!(
        missing
            .message()
            .contains("/nonexistent/tracing-usr-detection.json"),
        "{missing}"
    );
}
