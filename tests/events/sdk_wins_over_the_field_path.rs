//! "SDK wins": for identity (a.4) and for events (c.1).
use tracing::{info, info_span};
use tracing_usr::{SetUserOptions, User};

use crate::support::Harness;

#[test]
fn an_sdk_event_hides_the_field_path_tags_of_the_same_event() {
    for sdk_first in [true, false] {
        let h = Harness::default_env();
        h.run(|| {
            let _root = info_span!("request").entered();
            let sdk = || {
                tracing_usr::track_login_success("sdk-login", "sdk-user", (), SetUserOptions::default())
                    .unwrap()
            };
            if sdk_first {
                sdk();
            }
            info!(
                usr.event = "users.login.success",
                usr.login = "field-login",
                usr.id = "field-user",
                via = "form"
            );
            if !sdk_first {
                sdk();
            }
        });
        let root = h.span("request");
        assert_eq!(
            root.meta("appsec.events.users.login.success.usr.login"),
            Some("sdk-login"),
            "sdk_first={sdk_first}"
        );
        assert_eq!(root.meta("appsec.events.users.login.success.via"), None);
        assert_eq!(
            root.meta("_dd.appsec.events.users.login.success.sdk"),
            Some("true")
        );
        assert_eq!(
            root.meta("_dd.appsec.events.users.login.success.auto.mode"),
            Some("identification")
        );
        assert_eq!(root.meta("_dd.appsec.usr.login"), Some("field-login"));
        assert_eq!(root.meta("_dd.appsec.usr.id"), Some("field-user"));
        assert_eq!(root.meta("usr.id"), Some("sdk-user"));
        assert_eq!(root.meta("_dd.appsec.user.collection_mode"), Some("sdk"));
    }
}

#[test]
fn sdk_identity_wins_over_a_field_path_login_in_anonymization_mode() {
    let h = Harness::with_env(&[("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", "anon")]);
    h.run(|| {
        let _root = info_span!("request").entered();
        info!(
            usr.event = "users.signup",
            usr.login = "new-user",
            usr.id = "user-1"
        );
        tracing_usr::set_user(
            &User::new("sdk-user").with_email("s@x.y"),
            SetUserOptions::default(),
        )
        .unwrap();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("sdk-user"));
    assert_eq!(root.meta("usr.email"), Some("s@x.y"));
    assert_eq!(
        root.meta("_dd.appsec.usr.id"),
        Some("anon_c6c289e49e9c05b2145860387b73bcb1")
    );
    assert_eq!(
        root.meta("appsec.events.users.signup.usr.id"),
        Some("anon_c6c289e49e9c05b2145860387b73bcb1")
    );
    assert_eq!(
        root.meta("_dd.appsec.events.users.signup.auto.mode"),
        Some("anonymization")
    );
}
