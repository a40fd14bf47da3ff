//! With retroactive logs on, records are held until the root closes and stamped with its final
//! identity.
use tracing::{info, info_span};
use tracing_usr::User;

use crate::support::{builder_with_env, Harness};

#[test]
fn events_emitted_before_identification_carry_the_user() {
    let h = Harness::new(builder_with_env(&[]).with_retroactive_logs(true));
    h.run(|| {
        let _root = info_span!("request").entered();
        info!("before login");
        info_span!("auth").in_scope(|| {
            info!("authenticating");
            tracing_usr::identify(&User::new("u-1")).unwrap();
        });
        tracing_usr::logout();
        info!("after logout");
    });
    for message in ["before login", "authenticating", "after logout"] {
        assert_eq!(h.log(message).user("usr.id"), Some("u-1"), "{message}");
    }
}

#[test]
fn held_records_are_exported_when_the_root_closes_not_before() {
    let h = Harness::new(builder_with_env(&[]).with_retroactive_logs(true));
    let root = h.run(|| info_span!("request", usr.id = tracing::field::Empty));
    h.run(|| root.in_scope(|| info!("held")));
    assert!(h.logs().is_empty());
    h.run(|| root.record("usr.id", "late-user"));
    drop(root);
    assert_eq!(h.log("held").user("usr.id"), Some("late-user"));
}

#[test]
fn field_identity_is_stamped_after_the_mode() {
    let h = Harness::new(
        builder_with_env(&[])
            .with_retroactive_logs(true)
            .with_mode(tracing_usr::Mode::Anonymization),
    );
    h.run(|| {
        let _root = info_span!("request").entered();
        info!("early");
        info_span!("auth", usr.id = "user-1", usr.email = "a@b.c").in_scope(|| {});
    });
    let log = h.log("early");
    assert_eq!(log.user("usr.id"), Some("anon_c6c289e49e9c05b2145860387b73bcb1"));
    assert_eq!(log.user("usr.email"), None);
}
