//! A field the application declares on its own span is exported by tracing-opentelemetry on that
//! span, as it is. When an OpenTelemetry layer is present, tracing-usr warns once per callsite
//! that declares a `usr.*` field in `anon`/`disabled` mode, or a field the masking would redact.
use std::time::{Duration, Instant};

use tracing::info_span;

use crate::otel::{in_each_order, Pipeline};

/// The exposure warnings that name span `name` (a new subscriber hears of every callsite the
/// process has registered, so the other tests' spans are warned about too), once `expected` of
/// them arrived (they are emitted from a short-lived thread) or 5 s passed, and 200 ms more so
/// that a second, wrong, warning would be seen too.
pub fn config_warnings(p: &Pipeline, name: &str, expected: usize) -> Vec<String> {
    let name = format!("span {name:?}");
    let matching = || -> Vec<String> {
        p.warnings
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, text)| {
                target == "tracing_usr::config"
                    && text.contains("tracing-opentelemetry exports the fields")
                    && text.contains(&name)
            })
            .map(|(_, text)| text.clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while matching().len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    matching()
}

#[test]
fn a_user_field_on_an_app_span_is_warned_about_once_in_anonymization_mode() {
    in_each_order(
        &[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")],
        |order, p| {
            for _ in 0..3 {
                p.run(|| {
                    let _root = info_span!("request").entered();
                    let _auth = info_span!("auth_anon", usr.id = "user-1").entered();
                });
            }
            let warnings = config_warnings(p, "auth_anon", 1);
            assert_eq!(
                warnings.len(),
                1,
                "{order:?}: one warning for the callsite: {warnings:#?}"
            );
            assert!(
                warnings[0].contains("\"auth_anon\"") && warnings[0].contains("usr.id"),
                "{order:?}: {}",
                warnings[0]
            );
            assert!(
                warnings[0].contains("anonymization"),
                "{order:?}: the mode is named: {}",
                warnings[0]
            );
            // What the warning says is true: the declaring span carries the raw value.
            let spans = p.spans();
            let auth = spans.iter().find(|s| s.name == "auth_anon").unwrap();
            assert_eq!(auth.attr("usr.id"), Some("user-1"), "{order:?}");
            let root = spans.iter().find(|s| s.name == "request").unwrap();
            assert!(
                root.attr("usr.id").unwrap().starts_with("anon_"),
                "{order:?}: the root has the hash"
            );
        },
    );
}

#[test]
fn identification_mode_warns_only_about_fields_the_masking_would_redact() {
    in_each_order(&[], |order, p| {
        p.run(|| {
            let _root = info_span!("request").entered();
            let _auth = info_span!("auth_ident", usr.id = "user-1").entered();
            let _login = info_span!("login_form", password = "hunter2").entered();
        });
        assert_eq!(
            config_warnings(p, "auth_ident", 0),
            Vec::<String>::new(),
            "{order:?}: usr.id is fine in identification"
        );
        let warnings = config_warnings(p, "login_form", 1);
        assert_eq!(warnings.len(), 1, "{order:?}: {warnings:#?}");
        assert!(warnings[0].contains("password"), "{order:?}: {}", warnings[0]);
    });
}
