//! identification / anonymization / disabled on the field path; SDK identity is never touched.
use tracing::info_span;
use tracing_usr::{Mode, User};

use crate::support::{all_exported_text, builder_with_env, tags, user_tags, Harness};

fn request() {
    let _root = info_span!("request").entered();
    let _auth = info_span!(
        "auth",
        usr.id = "user-1",
        usr.login = "user-login",
        usr.session_id = "sess-1",
        usr.email = "alice@example.com",
        usr.name = "Alice",
        usr.role = "admin",
        usr.scope = "read:all",
        usr.org = "acme-corp",
    )
    .entered();
    tracing::info!(usr.email = "alice@example.com", "inside");
}

#[test]
fn identification_exports_values_as_collected() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "identification")]);
    h.run(request);
    assert_eq!(
        user_tags(&h.span("request")),
        tags(&[
            ("_dd.appsec.user.collection_mode", "identification"),
            ("_dd.appsec.usr.id", "user-1"),
            ("_dd.appsec.usr.login", "user-login"),
            ("usr.email", "alice@example.com"),
            ("usr.id", "user-1"),
            ("usr.login", "user-login"),
            ("usr.name", "Alice"),
            ("usr.org", "acme-corp"),
            ("usr.role", "admin"),
            ("usr.scope", "read:all"),
            ("usr.session_id", "sess-1"),
        ])
    );
}

#[test]
fn anonymization_hashes_ids_and_drops_pii_everywhere() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")]);
    h.run(request);
    assert_eq!(
        user_tags(&h.span("request")),
        tags(&[
            ("_dd.appsec.user.collection_mode", "anonymization"),
            ("_dd.appsec.usr.id", "anon_c6c289e49e9c05b2145860387b73bcb1"),
            ("_dd.appsec.usr.login", "anon_e9b7a334826ff2ff28b066a92ba8734c"),
            ("usr.id", "anon_c6c289e49e9c05b2145860387b73bcb1"),
            ("usr.login", "anon_e9b7a334826ff2ff28b066a92ba8734c"),
            ("usr.role", "admin"),
            ("usr.scope", "read:all"),
            ("usr.session_id", "anon_abe633f3a47a2758174eabe9160daf36"),
        ])
    );
    let text = all_exported_text(&h);
    for raw in [
        "user-1",
        "user-login",
        "sess-1",
        "alice@example.com",
        "Alice",
        "acme-corp",
    ] {
        assert!(!text.contains(&format!("\"{raw}\"")), "{raw} leaked: {text}");
    }
    assert_eq!(
        h.log("inside").user("usr.id"),
        Some("anon_c6c289e49e9c05b2145860387b73bcb1")
    );
}

#[test]
fn disabled_lets_no_field_identity_leave_the_process() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "disabled")]);
    h.run(request);
    assert_eq!(user_tags(&h.span("request")), vec![]);
    let text = all_exported_text(&h);
    for raw in [
        "user-1",
        "user-login",
        "sess-1",
        "alice@example.com",
        "Alice",
        "acme-corp",
        "admin",
    ] {
        assert!(!text.contains(raw), "{raw} leaked: {text}");
    }
    assert!(h.log("inside").user.is_empty());
}

#[test]
fn sdk_identity_is_never_hashed_or_dropped_by_the_mode() {
    for mode in [Mode::Identification, Mode::Anonymization, Mode::Disabled] {
        let h = Harness::new(builder_with_env(&[]).with_mode(mode));
        h.run(|| {
            let _root = info_span!("request").entered();
            tracing_usr::identify(&User::new("user-1").with_email("a@b.c").with_name("Alice")).unwrap();
        });
        assert_eq!(
            user_tags(&h.span("request")),
            tags(&[
                ("_dd.appsec.user.collection_mode", "sdk"),
                ("usr.email", "a@b.c"),
                ("usr.id", "user-1"),
                ("usr.name", "Alice"),
            ]),
            "{mode}"
        );
    }
}

#[test]
fn the_builder_mode_overrides_the_environment() {
    let h = Harness::new(
        builder_with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "disabled")])
            .with_mode(Mode::Identification),
    );
    assert_eq!(h.handle.mode(), Mode::Identification);
    h.run(request);
    assert_eq!(h.span("request").meta("usr.id"), Some("user-1"));
}

#[test]
fn non_string_ids_are_hashed_from_their_string_form() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anonymization")]);
    h.run(|| {
        let _root = info_span!("request", usr.id = 123_u64).entered();
    });
    // printf %s 123 | sha256sum → a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3
    assert_eq!(
        h.span("request").meta("usr.id"),
        Some("anon_a665a45920422f9d417e4867efdc4fb8")
    );
}
