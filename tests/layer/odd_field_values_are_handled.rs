//! Huge, odd and non-string values: converted as the contract says, never a panic.
use tracing::info_span;

use crate::support::Harness;

#[derive(Debug)]
struct Opaque {
    #[allow(dead_code)]
    n: u8,
}

#[test]
fn values_are_converted_to_strings_as_the_contract_says() {
    let h = Harness::default_env();
    h.run(|| {
        let err = std::io::Error::other("boom");
        let _root = info_span!(
            "request",
            usr.id = 1.0_f64,
            usr.flag = true,
            usr.big = u128::MAX,
            usr.neg = -5_i64,
            usr.inf = f64::NEG_INFINITY,
            usr.dbg = ?Opaque { n: 1 },
            usr.disp = %"shown",
            usr.err = &err as &(dyn std::error::Error + 'static),
        )
        .entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id"), Some("1.0"));
    assert_eq!(root.meta("usr.flag"), Some("true"));
    assert_eq!(root.meta("usr.big"), Some(u128::MAX.to_string().as_str()));
    assert_eq!(root.meta("usr.neg"), Some("-5"));
    assert_eq!(root.meta("usr.inf"), Some("-inf"));
    assert_eq!(root.meta("usr.dbg"), Some("Opaque { n: 1 }"));
    assert_eq!(root.meta("usr.disp"), Some("shown"));
    assert_eq!(root.meta("usr.err"), Some("boom"));
}

#[test]
fn huge_and_unicode_values_pass_unchanged() {
    let huge = "x".repeat(1 << 20);
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!(
            "request",
            usr.id = huge.as_str(),
            usr.name = "Zoë 🦀 Ωmega",
            note = "\u{0}\u{1b}[31m"
        )
        .entered();
    });
    let root = h.span("request");
    assert_eq!(root.meta("usr.id").map(str::len), Some(1 << 20));
    assert_eq!(root.meta("usr.name"), Some("Zoë 🦀 Ωmega"));
    assert_eq!(root.meta("note"), Some("\u{0}\u{1b}[31m"));
}

#[test]
fn empty_strings_count_as_absent() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", usr.id = "u-1", usr.email = "").entered();
    });
    assert_eq!(h.span("request").meta("usr.email"), None);
}

#[test]
fn large_integers_stay_exact() {
    let h = Harness::default_env();
    h.run(|| {
        let _root = info_span!("request", small = 7_u64, huge = u64::MAX).entered();
    });
    let root = h.span("request");
    assert_eq!(root.metric("small"), Some(7.0));
    assert_eq!(root.meta("huge"), Some(u64::MAX.to_string().as_str()));
}
