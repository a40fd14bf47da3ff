//! The typed facts of a local root: what tracing-usr knows about its trace when the root closes
//! (the user after the mode and the masking, where that identity came from, the business
//! events, the signals, the sampling decision, propagation and blocking), carried on the export
//! record as they are and rendered by each sink in its own names:
//!
//! * Datadog tags ([`RootFacts::visit_tags`], [`RootFacts::sampling_priority`]): the `meta` and
//!   `metrics` of the Datadog agent, of JSON lines, of the contract (docs/tags.md);
//! * OpenTelemetry attributes ([`RootFacts::visit_attributes`]): the same tags as strings, a
//!   keep as the integer `sampling.priority`, and the semantic-convention user attributes of
//!   the one naming table, [`crate::semconv::USER_NAMES`]. Used by the OTLP exporter and by the
//!   live OpenTelemetry span of a tracing-opentelemetry pipeline.

use std::ops::ControlFlow;

use crate::detection::{RuleId, Severity};
use crate::identity::{Key, Source, TagValue};
use crate::keys;
use crate::mode::Mode;
use crate::semconv::{user_attributes, UserAttribute, SAMPLING_PRIORITY as OTEL_PRIORITY};
use crate::trace::{DECISION_MAKER, SAMPLER_RATES, SAMPLING_PRIORITY, TRACE_SOURCE};
use crate::value::Text;

/// Everything a local root exports about its trace, typed (see the [module](self) docs).
///
/// Built by [`TraceState::facts`](crate::TraceState::facts) once the root closes; every value is
/// final (the mode, the anonymizer and the masking already applied).
///
/// ```
/// use tracing_usr_core::{Mode, TraceState};
/// let mut trace = TraceState::default();
/// trace.identity.record_sdk(vec![("usr.id".into(), "u-1".to_owned())]);
/// trace.keep();
/// let facts = trace.facts(Mode::Identification, None);
/// assert_eq!(facts.user.id(), Some("u-1"));
/// assert_eq!(facts.tag("usr.id"), Some("u-1"));
/// assert_eq!(facts.tag("_dd.appsec.user.collection_mode"), Some("sdk"));
/// assert_eq!(facts.sampling_priority(), Some(2.0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RootFacts {
    /// The trace's public user (the winning identity's `usr.*` tags).
    pub user: RootUser,
    /// Where the public identity came from (`_dd.appsec.user.collection_mode`); also set by
    /// login and signup events without a public id.
    pub collection_mode: Option<Source>,
    /// The private copy of the field-path user id (`_dd.appsec.usr.id`).
    pub private_id: Option<Text>,
    /// The private copy of the field-path login (`_dd.appsec.usr.login`).
    pub private_login: Option<Text>,
    /// The business events, in the order they were first recorded.
    pub events: Vec<EventFacts>,
    /// The strongest severity each detection rule raised from this trace.
    pub signals: Vec<(RuleId, Severity)>,
    /// The sampling decision tracing-usr makes or forwards.
    pub sampling: Sampling,
    /// The `_dd.p.*` propagation tags (`_dd.p.usr.id`, the decision maker, upstream tags).
    pub propagation: Vec<(Key, Text)>,
    /// The block of this trace, if one was applied.
    pub block: Option<BlockFacts>,
    /// Other root tags (propagation errors and the like), as they are.
    pub extra: Vec<(Key, Text)>,
}

/// The public user of a root: its `usr.*` tags, in the order they were recorded, with typed
/// access to the standard ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootUser {
    entries: Vec<(Key, Text)>,
}

impl RootUser {
    /// A user with these `usr.*` tags (their final values).
    pub fn new(entries: Vec<(Key, Text)>) -> Self {
        Self { entries }
    }

    /// The value of tag `key` (`usr.id`, `usr.org`, …).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `usr.id`.
    pub fn id(&self) -> Option<&str> {
        self.get(keys::USR_ID)
    }

    /// `usr.email`.
    pub fn email(&self) -> Option<&str> {
        self.get(keys::USR_EMAIL)
    }

    /// `usr.name`.
    pub fn name(&self) -> Option<&str> {
        self.get(keys::USR_NAME)
    }

    /// `usr.login`.
    pub fn login(&self) -> Option<&str> {
        self.get(keys::USR_LOGIN)
    }

    /// `usr.session_id`.
    pub fn session_id(&self) -> Option<&str> {
        self.get(keys::USR_SESSION_ID)
    }

    /// `usr.role`.
    pub fn role(&self) -> Option<&str> {
        self.get(keys::USR_ROLE)
    }

    /// `usr.scope`.
    pub fn scope(&self) -> Option<&str> {
        self.get(keys::USR_SCOPE)
    }

    /// Every tag, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Key, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v.as_str()))
    }

    /// Whether the root has no public user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One business event of a root.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventFacts {
    /// The event name (`users.login.success`, a custom name, …).
    pub name: String,
    /// Its public tags (`appsec.events.<name>.*`, the root `usr.id` of a login success, …).
    pub tags: Vec<(Key, Text)>,
    /// Whether an SDK call recorded it (`_dd.appsec.events.<name>.sdk`).
    pub sdk: bool,
    /// The mode of the automatic (field-path) instrumentation that recorded it, if any
    /// (`_dd.appsec.events.<name>.auto.mode`).
    pub auto_mode: Option<Mode>,
}

/// The sampling decision of a root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sampling {
    /// Left to the sampler (nothing written).
    #[default]
    Sampler,
    /// Kept by tracing-usr (an event, a signal or `keep()`): priority 2, the sampler's tags
    /// dropped.
    Kept,
    /// The priority received from upstream, forwarded.
    Upstream(i32),
}

/// A blocked trace (docs/tags.md "blocking").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockFacts {
    /// The client IP of the block (`actor.ip`), as text.
    pub actor_ip: Option<Text>,
    /// The trigger (`_dd.appsec.json`).
    pub trigger_json: String,
    /// Whether the block writes `_dd.origin` = `appsec` (not when the application set its own
    /// origin on the root).
    pub keep_origin: bool,
}

/// An OpenTelemetry attribute value of a root fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeValue<'a> {
    /// A string.
    Str(&'a str),
    /// A one-element string array (`user.roles`).
    StrArray(&'a str),
    /// An integer (`sampling.priority`).
    Int(i64),
}

/// Which part of the facts an OpenTelemetry attribute renders, for sinks that treat them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeKind {
    /// A Datadog tag as a string attribute.
    Tag,
    /// A `_dd.p.*` propagation tag (the OTLP exporter writes those into `tracestate`).
    Propagation,
    /// The sampling decision (`sampling.priority`).
    Sampling,
    /// A semantic-convention user attribute (`user.id`, …).
    SemanticConvention,
}

impl RootFacts {
    /// Visits every Datadog tag, in order: the user, the collection mode, the private copies,
    /// the events, the propagation tags, the block, the signals, the rest. Keys may be
    /// transient (an event's `_dd.appsec.events.<name>.sdk`); values live as long as the facts.
    pub fn visit_tags<'a, B>(&'a self, f: impl FnMut(&Key, &'a str) -> ControlFlow<B>) -> ControlFlow<B> {
        self.visit(true, f)
    }

    /// [`RootFacts::visit_tags`]; `markers`: with the events' `.sdk` / `.auto.mode` tags (whose
    /// keys are formatted).
    fn visit<'a, B>(
        &'a self,
        markers: bool,
        mut f: impl FnMut(&Key, &'a str) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        for (k, v) in &self.user.entries {
            f(k, v.as_str())?;
        }
        if let Some(source) = self.collection_mode {
            f(&Key::Borrowed(keys::COLLECTION_MODE), source.collection_mode())?;
        }
        if let Some(id) = &self.private_id {
            f(&Key::Borrowed(keys::DD_APPSEC_USR_ID), id.as_str())?;
        }
        if let Some(login) = &self.private_login {
            f(&Key::Borrowed(keys::DD_APPSEC_USR_LOGIN), login.as_str())?;
        }
        for event in &self.events {
            for (k, v) in &event.tags {
                f(k, v.as_str())?;
            }
            if !markers {
                continue;
            }
            if event.sdk {
                f(&event_key(&event.name, ".sdk"), "true")?;
            }
            if let Some(mode) = event.auto_mode {
                f(&event_key(&event.name, ".auto.mode"), mode.as_str())?;
            }
        }
        for (k, v) in &self.propagation {
            f(k, v.as_str())?;
        }
        if let Some(block) = &self.block {
            f(&Key::Borrowed("appsec.blocked"), "true")?;
            f(&Key::Borrowed("appsec.event"), "true")?;
            if block.keep_origin {
                f(&Key::Borrowed("_dd.origin"), "appsec")?;
            }
            if let Some(ip) = &block.actor_ip {
                f(&Key::Borrowed("actor.ip"), ip.as_str())?;
            }
            f(&Key::Borrowed("_dd.appsec.json"), &block.trigger_json)?;
        }
        for (rule, severity) in &self.signals {
            f(&Key::Borrowed(rule.tag_key()), severity.as_str())?;
        }
        for (k, v) in &self.extra {
            f(k, v.as_str())?;
        }
        ControlFlow::Continue(())
    }

    /// The value of Datadog tag `key` (the last one, when the facts write a key twice).
    pub fn tag(&self, key: &str) -> Option<&str> {
        if let Some(rest) = key.strip_prefix("_dd.appsec.events.") {
            let marker = self.events.iter().find_map(|event| {
                let suffix = rest.strip_prefix(event.name.as_str())?;
                match (suffix, event.auto_mode) {
                    (".sdk", _) if event.sdk => Some("true"),
                    (".auto.mode", Some(mode)) => Some(mode.as_str()),
                    _ => None,
                }
            });
            if marker.is_some() {
                return marker;
            }
        }
        // The last one written wins, as in a map decoded from the tags.
        let mut found = None;
        let _ = self.visit(false, |k, v| {
            if k == key {
                found = Some(v);
            }
            ControlFlow::<()>::Continue(())
        });
        found
    }

    /// How many Datadog tags [`RootFacts::visit_tags`] gives.
    pub fn tag_count(&self) -> usize {
        let mut n = 0;
        let _ = self.visit_tags(|_, _| {
            n += 1;
            ControlFlow::<()>::Continue(())
        });
        n
    }

    /// `_sampling_priority_v1`: 2 for a keep, the upstream priority when forwarded.
    pub fn sampling_priority(&self) -> Option<f64> {
        match self.sampling {
            Sampling::Sampler => None,
            Sampling::Kept => Some(2.0),
            Sampling::Upstream(priority) => Some(f64::from(priority)),
        }
    }

    /// Whether tracing-usr kept the trace (then the span's own sampler tags are dropped).
    pub fn is_kept(&self) -> bool {
        self.sampling == Sampling::Kept
    }

    /// Whether a Datadog tag or metric of the span's own fields gives way to these facts: the
    /// facts write the key, or (kept) it is one of the sampler's.
    pub fn overrides(&self, key: &str) -> bool {
        (self.is_kept() && is_sampler_tag(key))
            || (key == SAMPLING_PRIORITY && self.sampling != Sampling::Sampler)
            || self.tag(key).is_some()
    }

    /// Whether the identity was hashed by the field path in anonymization mode.
    pub fn is_hashed(&self) -> bool {
        self.collection_mode == Some(Source::Field(Mode::Anonymization))
    }

    /// The semantic-convention user attributes (see [`crate::semconv::user_attributes`]).
    pub fn user_attributes(&self) -> impl Iterator<Item = UserAttribute<'_>> + '_ {
        user_attributes(|k| self.user.get(k), self.is_hashed())
            .into_iter()
            .flatten()
    }

    /// Visits every OpenTelemetry attribute of the facts, in order: each Datadog tag as a string
    /// (the sampler's `_dd.p.dm` / `_dd.p.ts` left out: the OpenTelemetry sampler owns those),
    /// the sampling decision as the integer `sampling.priority` (for a keep, or a forwarded
    /// priority), then the semantic-convention user attributes.
    pub fn visit_attributes<'a>(&'a self, mut f: impl FnMut(AttributeKind, &Key, AttributeValue<'a>)) {
        let _ = self.visit_tags(|k, v| {
            if k != DECISION_MAKER && k != TRACE_SOURCE {
                let kind = if k.starts_with("_dd.p.") {
                    AttributeKind::Propagation
                } else {
                    AttributeKind::Tag
                };
                f(kind, k, AttributeValue::Str(v));
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some(priority) = self.sampling_priority() {
            f(
                AttributeKind::Sampling,
                &Key::Borrowed(OTEL_PRIORITY),
                AttributeValue::Int(priority as i64),
            );
        }
        for attribute in self.user_attributes() {
            let value = if attribute.array {
                AttributeValue::StrArray(attribute.value)
            } else {
                AttributeValue::Str(attribute.value)
            };
            f(
                AttributeKind::SemanticConvention,
                &Key::Borrowed(attribute.key),
                value,
            );
        }
    }

    /// Writes the Datadog tags into `meta` and the sampling decision into `metrics` (a keep or a
    /// forwarded priority replaces the sampler's metrics already there).
    pub fn write_tags<V: TagValue>(&self, meta: &mut Vec<(Key, V)>, metrics: &mut Vec<(Key, f64)>) {
        if let Some(priority) = self.sampling_priority() {
            let kept = self.is_kept();
            metrics.retain(|(k, _)| k != SAMPLING_PRIORITY && !(kept && SAMPLER_RATES.contains(&k.as_ref())));
            metrics.push((Key::Borrowed(SAMPLING_PRIORITY), priority));
        }
        let _ = self.visit_tags(|k, v| {
            meta.push((k.clone(), V::from(v)));
            ControlFlow::<()>::Continue(())
        });
    }
}

/// Whether `key` is one of the sampler's tags a keep removes.
pub fn is_sampler_tag(key: &str) -> bool {
    SAMPLER_RATES.contains(&key) || key == DECISION_MAKER || key == TRACE_SOURCE
}

/// `_dd.appsec.events.<name><suffix>`.
fn event_key(name: &str, suffix: &str) -> Key {
    Key::Owned(format!("_dd.appsec.events.{name}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::BlockReason;
    use crate::TraceState;

    /// A trace with something of every kind of fact.
    fn full_trace() -> TraceState {
        let mut trace = TraceState::default();
        trace.identity.record_field([
            (Key::Borrowed(keys::USR_ID), "u-1".to_owned()),
            (Key::Borrowed(keys::USR_LOGIN), "ada".to_owned()),
        ]);
        trace.record_sdk_event(
            "users.login.success",
            vec![(
                "appsec.events.users.login.success.track".into(),
                "true".to_owned(),
            )],
        );
        trace.add_signal(RuleId::CredentialStuffing, Severity::Medium);
        trace.propagate_user_id("u-1");
        trace.set_client_ip("203.0.113.7".parse().unwrap(), 0);
        trace.block(BlockReason::User("u-1".into()), "r-1".into());
        trace
    }

    #[test]
    fn every_kind_of_fact_is_typed_and_renders_as_datadog_tags() {
        let facts = full_trace().facts(Mode::Identification, None);
        assert_eq!(facts.user.id(), Some("u-1"));
        assert_eq!(facts.user.login(), Some("ada"));
        // An SDK login event names the SDK as the source, over the field it rode with.
        assert_eq!(facts.collection_mode, Some(Source::Sdk));
        assert_eq!(facts.private_id.as_ref().map(Text::as_str), Some("u-1"));
        assert_eq!(facts.events.len(), 1);
        assert!(facts.events[0].sdk);
        assert_eq!(facts.signals, [(RuleId::CredentialStuffing, Severity::Medium)]);
        assert_eq!(facts.sampling, Sampling::Kept);
        assert_eq!(
            facts
                .block
                .as_ref()
                .and_then(|b| b.actor_ip.as_ref())
                .map(Text::as_str),
            Some("203.0.113.7")
        );

        let mut meta: Vec<(Key, String)> = Vec::new();
        let mut metrics = vec![(Key::Borrowed("_dd.rule_psr"), 0.5)];
        facts.write_tags(&mut meta, &mut metrics);
        assert_eq!(
            metrics,
            [(Key::Borrowed(SAMPLING_PRIORITY), 2.0)],
            "a keep drops the sampler's"
        );
        assert_eq!(meta.len(), facts.tag_count());
        for (key, value) in &meta {
            assert_eq!(facts.tag(key), Some(value.as_str()), "{key}");
        }
        let keys: Vec<&str> = meta.iter().map(|(k, _)| k.as_ref()).collect();
        for expected in [
            "usr.id",
            "_dd.appsec.user.collection_mode",
            "_dd.appsec.usr.id",
            "_dd.appsec.usr.login",
            "appsec.events.users.login.success.track",
            "_dd.appsec.events.users.login.success.sdk",
            "_dd.p.dm",
            "_dd.p.usr.id",
            "appsec.blocked",
            "_dd.origin",
            "actor.ip",
            "_dd.appsec.json",
            "tracing_usr.signal.appsec-ato-groupby-ip",
        ] {
            assert!(keys.contains(&expected), "{expected} in {keys:?}");
        }
        assert!(facts.overrides("usr.id") && facts.overrides("_dd.rule_psr"));
        assert!(facts.overrides(SAMPLING_PRIORITY) && !facts.overrides("http.route"));
    }

    #[test]
    fn opentelemetry_attributes_come_from_the_same_facts_with_the_semantic_names() {
        let facts = full_trace().facts(Mode::Identification, None);
        let mut attrs = Vec::new();
        facts.visit_attributes(|kind, key, value| attrs.push((kind, key.to_string(), value)));
        let find = |k: &str| {
            attrs
                .iter()
                .find(|(_, key, _)| key == k)
                .map(|(kind, _, v)| (*kind, *v))
        };
        assert_eq!(
            find("usr.id"),
            Some((AttributeKind::Tag, AttributeValue::Str("u-1")))
        );
        assert_eq!(
            find("user.id"),
            Some((AttributeKind::SemanticConvention, AttributeValue::Str("u-1")))
        );
        assert_eq!(
            find("user.name"),
            Some((AttributeKind::SemanticConvention, AttributeValue::Str("ada")))
        );
        assert_eq!(
            find("sampling.priority"),
            Some((AttributeKind::Sampling, AttributeValue::Int(2)))
        );
        assert_eq!(
            find("_dd.p.usr.id").map(|(kind, _)| kind),
            Some(AttributeKind::Propagation)
        );
        assert_eq!(find("_dd.p.dm"), None, "the OpenTelemetry sampler owns it");
        let hashed = {
            let mut trace = TraceState::default();
            trace
                .identity
                .record_field([(Key::Borrowed(keys::USR_ID), "anon_1".to_owned())]);
            trace.facts(Mode::Anonymization, None)
        };
        assert!(hashed.is_hashed());
        let keys: Vec<&str> = hashed.user_attributes().map(|a| a.key).collect();
        assert_eq!(keys, ["user.hash"]);
    }

    #[test]
    fn facts_survive_a_serde_round_trip() {
        let facts = full_trace().facts(Mode::Identification, None);
        let json = serde_json::to_string(&facts).unwrap();
        let back: RootFacts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, facts);
    }
}
