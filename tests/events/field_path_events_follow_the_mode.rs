//! `tracing` events with `usr.event` are business events on the field path (docs/tags.md "events from tracing events", "modes").
use tracing::{info, info_span};

use crate::support::{tags, Harness};

const MODE: &str = "DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE";

fn login_success() {
    let _root = info_span!("request").entered();
    let _child = info_span!("auth").entered();
    info!(
        usr.event = "users.login.success",
        usr.login = "user-login",
        usr.id = "user-1",
        usr.email = "a@b.c",
        method = "password",
        "logged in"
    );
}

fn event_tags(h: &Harness) -> Vec<(String, String)> {
    let root = h.span("request");
    let mut found: Vec<_> = root
        .tags()
        .iter()
        .filter(|(k, _)| k.starts_with("appsec.") || k.starts_with("_dd.") || k.starts_with("usr."))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    found.extend(root.all_metrics().map(|(k, v)| (k.to_string(), v.to_string())));
    found.sort();
    found
}

#[test]
fn login_success_in_identification_mode() {
    let h = Harness::with_env(&[]);
    h.run(login_success);
    assert_eq!(
        event_tags(&h),
        tags(&[
            (
                "_dd.appsec.events.users.login.success.auto.mode",
                "identification"
            ),
            ("_dd.appsec.user.collection_mode", "identification"),
            ("_dd.appsec.usr.id", "user-1"),
            ("_dd.appsec.usr.login", "user-login"),
            ("_dd.p.dm", "-5"),
            ("_dd.p.ts", "02"),
            ("_sampling_priority_v1", "2"),
            ("appsec.events.users.login.success.method", "password"),
            ("appsec.events.users.login.success.track", "true"),
            ("appsec.events.users.login.success.usr.email", "a@b.c"),
            ("appsec.events.users.login.success.usr.login", "user-login"),
            ("usr.id", "user-1"),
        ])
    );
}

#[test]
fn login_success_in_anonymization_mode_hashes_and_drops() {
    let h = Harness::with_env(&[(MODE, "anon")]);
    h.run(login_success);
    assert_eq!(
        event_tags(&h),
        tags(&[
            ("_dd.appsec.events.users.login.success.auto.mode", "anonymization"),
            ("_dd.appsec.user.collection_mode", "anonymization"),
            ("_dd.appsec.usr.id", "anon_c6c289e49e9c05b2145860387b73bcb1"),
            ("_dd.appsec.usr.login", "anon_e9b7a334826ff2ff28b066a92ba8734c"),
            ("_dd.p.dm", "-5"),
            ("_dd.p.ts", "02"),
            ("_sampling_priority_v1", "2"),
            ("appsec.events.users.login.success.method", "password"),
            ("appsec.events.users.login.success.track", "true"),
            (
                "appsec.events.users.login.success.usr.login",
                "anon_e9b7a334826ff2ff28b066a92ba8734c"
            ),
            ("usr.id", "anon_c6c289e49e9c05b2145860387b73bcb1"),
        ])
    );
}

#[test]
fn disabled_mode_ignores_field_path_events_entirely() {
    let h = Harness::with_env(&[(MODE, "disabled")]);
    h.run(login_success);
    assert_eq!(event_tags(&h), vec![]);
    // The log record itself is still exported, without the raw usr fields.
    let log = h.log("logged in");
    assert!(log.fields.iter().all(|(k, _)| !k.starts_with("usr.")));
    assert!(log.user.is_empty());
}

#[test]
fn login_failure_writes_only_login_exists_and_id_and_never_the_root_id() {
    let h = Harness::with_env(&[]);
    h.run(|| {
        let _root = info_span!("request").entered();
        info!(
            usr.event = "users.login.failure",
            usr.login = "bob",
            usr.exists = false,
            usr.id = "u-9",
            usr.email = "b@x.y",
            reason = "bad password"
        );
    });
    let found = event_tags(&h);
    let get = |k: &str| found.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("appsec.events.users.login.failure.usr.login"), Some("bob"));
    assert_eq!(get("appsec.events.users.login.failure.usr.exists"), Some("false"));
    assert_eq!(get("appsec.events.users.login.failure.usr.id"), Some("u-9"));
    assert_eq!(get("appsec.events.users.login.failure.usr.email"), None);
    assert_eq!(
        get("appsec.events.users.login.failure.reason"),
        Some("bad password")
    );
    assert_eq!(get("usr.id"), None);
    assert_eq!(get("_dd.appsec.usr.id"), Some("u-9"));
    assert_eq!(get("_dd.appsec.user.collection_mode"), Some("identification"));
}

#[test]
fn events_missing_a_required_input_write_nothing() {
    let h = Harness::with_env(&[]);
    h.run(|| {
        let _root = info_span!("request").entered();
        info!(
            usr.event = "users.login.failure",
            usr.login = "bob",
            "no exists field"
        );
        info!(
            usr.event = "users.login.success",
            usr.id = "u-1",
            "no login field"
        );
        info!(
            usr.event = "activity.sensitive",
            required_role = "admin",
            "no name field"
        );
    });
    assert_eq!(event_tags(&h), vec![]);
}

#[test]
fn custom_events_write_their_fields_and_keep_the_trace() {
    let h = Harness::with_env(&[]);
    h.run(|| {
        let _root = info_span!("request").entered();
        info!(
            usr.event = "coupon.redeemed",
            code = "SPRING",
            amount = 5,
            usr.id = "u-1",
            password = "x",
            "redeemed"
        );
    });
    let found = event_tags(&h);
    for expected in [
        ("appsec.events.coupon.redeemed.track", "true"),
        ("appsec.events.coupon.redeemed.code", "SPRING"),
        ("appsec.events.coupon.redeemed.amount", "5"),
        ("appsec.events.coupon.redeemed.usr.id", "u-1"),
        ("appsec.events.coupon.redeemed.password", "<Redacted>"),
        ("_dd.appsec.events.coupon.redeemed.auto.mode", "identification"),
        ("_sampling_priority_v1", "2"),
    ] {
        assert!(
            found.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {found:#?}"
        );
    }
    assert!(!found
        .iter()
        .any(|(k, _)| k == "usr.id" || k == "_dd.appsec.user.collection_mode"));
}

#[test]
fn usr_event_on_a_span_is_ignored() {
    let h = Harness::with_env(&[]);
    h.run(|| {
        let _root = info_span!("request", usr.event = "users.login.success", usr.login = "x").entered();
    });
    assert!(event_tags(&h)
        .iter()
        .all(|(k, _)| !k.starts_with("appsec.") && k != "_sampling_priority_v1"));
}

#[test]
fn events_outside_any_span_and_from_the_crate_itself_are_not_business_events() {
    let h = Harness::with_env(&[]);
    h.run(|| {
        info!(usr.event = "users.login.success", usr.login = "x", "outside");
        let _root = info_span!("request").entered();
        tracing::event!(target: "tracing_usr::test", tracing::Level::INFO, { usr.event = "users.login.success", usr.login = "x" }, "internal");
    });
    assert_eq!(event_tags(&h), vec![]);
}
