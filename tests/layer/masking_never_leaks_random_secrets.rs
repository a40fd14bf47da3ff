//! Property: whatever surrounds a secret that matches the patterns, it never reaches an export.
use proptest::prelude::*;
use tracing::{info, info_span};

use crate::support::{all_exported_text, Harness};

fn filler() -> impl Strategy<Value = String> {
    // Text around the secret: anything but the separators that end a `key=value` match.
    "[a-zA-Z0-9 ./:_-]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn value_pattern_secrets_never_appear(prefix in filler(), secret in "[a-zA-Z0-9]{12,30}", suffix in "[a-zA-Z0-9 ./:_-]{0,40}", key in prop::sample::select(vec!["password", "api_key", "access_token", "secret"])) {
        let value = format!("{prefix} {key}={secret}; {suffix}");
        let h = Harness::default_env();
        h.run(|| {
            let _root = info_span!("request", note = value.as_str(), usr.id = "u-1").entered();
            info!(detail = value.as_str(), "{}", value);
            let _c = info_span!("child", usr.org = value.as_str()).entered();
        });
        let text = all_exported_text(&h);
        prop_assert!(!text.contains(&secret), "secret {} leaked in {}", secret, text);
    }

    #[test]
    fn bearer_tokens_never_appear(prefix in filler(), token in "[a-z0-9]{16,40}") {
        let value = format!("{prefix} Authorization: Bearer {token}");
        let h = Harness::default_env();
        h.run(|| {
            let _root = info_span!("request", header = value.as_str()).entered();
            info!(header = value.as_str(), "seen");
        });
        let text = all_exported_text(&h);
        prop_assert!(!text.contains(&token), "token {} leaked in {}", token, text);
    }

    #[test]
    fn values_under_masked_keys_never_appear(value in "\\PC{1,60}") {
        let h = Harness::default_env();
        h.run(|| {
            let _root = info_span!("request", password = value.as_str(), usr.token = value.as_str()).entered();
            info!(client_secret = value.as_str(), "seen");
        });
        let records = { h.handle.flush().unwrap(); h.exporter.records() };
        let spans: Vec<_> = records.iter().filter_map(|r| r.as_span()).collect();
        let logs: Vec<_> = records.iter().filter_map(|r| r.as_log()).collect();
        // The premise: the span and the log were exported, with their masked fields.
        prop_assert_eq!(spans.len(), 1, "one span exported");
        prop_assert_eq!(logs.len(), 1, "one log exported");
        prop_assert_eq!(spans[0].meta("password"), Some(tracing_usr::REDACTED));
        prop_assert_eq!(logs[0].fields.iter().filter(|(k, _)| &**k == "client_secret").count(), 1);
        let exported = spans.iter().flat_map(|s| s.tags().into_iter().map(|(_, v)| v.to_string()))
            .chain(logs.iter().flat_map(|l| l.fields.iter().map(|(_, v)| v.to_string())));
        for v in exported {
            prop_assert_eq!(v, tracing_usr::REDACTED);
        }
    }
}
