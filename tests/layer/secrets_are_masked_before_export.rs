//! The token is always masked; key and value patterns apply to every exported tag and field.
use tracing::{info, info_span};
use tracing_usr::{BuildError, User, REDACTED};

use crate::support::{all_exported_text, builder_with_env, Harness};

#[test]
fn the_user_token_never_leaves_the_process() {
    let h = Harness::new(
        builder_with_env(&[])
            .with_key_pattern(None)
            .unwrap()
            .with_value_pattern(None)
            .unwrap(),
    );
    h.run(|| {
        let _root = info_span!("request", usr.id = "u-1", usr.token = "field-token-123").entered();
        let user = User::new("u-2").with_token("sdk-token-456");
        assert!(!format!("{user:?} {user}").contains("sdk-token-456"));
        let _child = info_span!("child").entered();
        tracing_usr::identify(&user).unwrap();
        info!(usr.token = "event-token-789", "with token");
    });
    let text = all_exported_text(&h);
    for secret in ["field-token-123", "sdk-token-456", "event-token-789"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(h.span("request").meta("usr.token"), Some(REDACTED));
}

#[test]
fn fields_whose_key_matches_the_key_pattern_are_replaced_whole() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!(
            "request",
            password = "hunter2",
            api_key = "k-123",
            http.route = "/x"
        )
        .entered();
        info!(
            client_secret = "cs-999",
            authorization = "Basic Zm9vOmJhcg==",
            count = 3,
            "login"
        );
        let _c = info_span!("child", usr.id = "u-1", usr.api_key = "uk-1").entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("password"), Some(REDACTED));
    assert_eq!(root.meta("api_key"), Some(REDACTED));
    assert_eq!(root.meta("http.route"), Some("/x"));
    assert_eq!(root.meta("usr.api_key"), Some(REDACTED));
    let text = all_exported_text(&h);
    for secret in ["hunter2", "k-123", "cs-999", "Zm9vOmJhcg", "uk-1"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

#[test]
fn parts_of_values_that_match_the_value_pattern_are_replaced() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", http.url = "/cb?a=1&password=hunter2&b=2").entered();
        info!(
            header = "Authorization: Bearer abc.def-1",
            body = r#"{"api_key": "s3cr3t"}"#,
            "Bearer tok.en-9 seen"
        );
    });
    assert_eq!(
        h.span("request").meta("http.url"),
        Some("/cb?a=1&password=<Redacted>&b=2")
    );
    let log = h.log("Bearer <Redacted> seen");
    assert_eq!(
        log.field("header"),
        Some(&tracing_usr::export::FieldValue::Str(
            "Authorization: Bearer <Redacted>".into()
        ))
    );
    assert_eq!(
        log.field("body"),
        Some(&tracing_usr::export::FieldValue::Str(
            r#"{"api_key": <Redacted>}"#.into()
        ))
    );
}

#[test]
fn standard_identity_keys_are_exempt() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", usr.id = "token=abc", usr.login = "password=x").entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("token=abc"));
    assert_eq!(root.meta("usr.login"), Some("password=x"));
}

#[test]
fn builder_patterns_replace_the_defaults() {
    let h = Harness::new(
        builder_with_env(&[])
            .with_key_pattern(Some("(?i)^internal_"))
            .unwrap()
            .with_value_pattern(Some(r"card=(\d+)"))
            .unwrap(),
    );
    h.run(|| {
        let _root = info_span!(
            "request",
            internal_ref = "r-1",
            password = "kept",
            note = "card=4111; ok"
        )
        .entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("internal_ref"), Some(REDACTED));
    assert_eq!(root.meta("password"), Some("kept"));
    assert_eq!(root.meta("note"), Some("card=<Redacted>; ok"));
}

#[test]
fn an_invalid_builder_pattern_is_a_clear_error() {
    let err = tracing_usr::builder()
        .with_value_pattern(Some("(unclosed"))
        .unwrap_err();
    assert!(matches!(err, BuildError::Pattern(_)));
    assert!(err.to_string().contains("invalid value masking pattern"), "{err}");
}

#[test]
fn an_invalid_pattern_variable_warns_once_and_uses_the_default() {
    let h = Harness::with_env(&[("DD_APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP", "([bad")]);
    h.run(|| {
        let _root = info_span!("request", password = "hunter2").entered();
        info!("second callback");
    });
    assert_eq!(h.span("request").meta("password"), Some(REDACTED));
    let warnings = h.config_warnings(1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("DD_APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP"));
}

#[test]
fn a_pattern_variable_replaces_the_default() {
    let h = Harness::with_env(&[("DD_APPSEC_OBFUSCATION_PARAMETER_VALUE_REGEXP", "ssn-[0-9]+")]);
    h.run(|| {
        let _root = info_span!("request", note = "id ssn-123 and password=kept").entered();
    });
    assert_eq!(
        h.span("request").meta("note"),
        Some("id <Redacted> and password=kept")
    );
}
