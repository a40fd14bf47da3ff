//! Everything the local root of one trace accumulates and exports: identity, business events,
//! the keep decision and the propagated user id.

use crate::detection::{Observation, RuleId, Severity};
use crate::events;
use crate::identity::{IdentityBucket, Key, TagValue, Tags, TraceIdentity};
use crate::keys;
use crate::mode::Mode;
use crate::root::{BlockFacts, EventFacts, RootFacts, Sampling};
use crate::value::Text;

/// `_sampling_priority_v1`: USER_KEEP.
pub const SAMPLING_PRIORITY: &str = "_sampling_priority_v1";
/// Decision maker tag.
pub const DECISION_MAKER: &str = "_dd.p.dm";
/// Trace-source tag.
pub const TRACE_SOURCE: &str = "_dd.p.ts";
/// Sampler tags a keep removes from the root.
pub const SAMPLER_RATES: [&str; 3] = ["_dd.rule_psr", "_dd.agent_psr", "_dd.limit_psr"];

#[derive(Clone, Debug, Default)]
struct RecordedEvent {
    name: String,
    sdk: Option<Tags>,
    field: Option<Tags>,
    auto_mode: Option<Mode>,
}

fn merge(into: &mut Option<Tags>, tags: Tags) {
    let into = into.get_or_insert_with(Tags::new);
    for (key, value) in tags {
        match into.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => into.push((key, value)),
        }
    }
}

/// The per-trace state kept on the local root.
///
/// What most traces need (identity, the keep flag, the client IP) is inline; the rest (business
/// events, propagation, blocking, detection input) lives in a box allocated on first use, so a
/// trace that only carries a user stays small.
#[derive(Clone, Debug, Default)]
pub struct TraceState {
    /// The identity buckets.
    pub identity: TraceIdentity,
    login_event_sdk: bool,
    login_event_field: bool,
    keep: bool,
    /// The rank of the field the client IP came from (index in `keys::CLIENT_IP_FIELDS`).
    client_ip_rank: u8,
    /// The client IP, once recorded on the trace.
    client_ip: Option<std::net::IpAddr>,
    cold: Option<Box<Cold>>,
}

/// The less common parts of a [`TraceState`].
#[derive(Clone, Debug, Default)]
struct Cold {
    events: Vec<RecordedEvent>,
    /// `_dd.p.usr.id` (base64), local or from upstream.
    propagated_usr_id: Option<String>,
    /// Upstream `_dd.p.*` tags other than the user id, re-propagated as received.
    upstream_tags: Tags,
    /// Extra root tags (propagation errors, …).
    extra: Tags,
    /// The sampling priority received from upstream.
    upstream_priority: Option<i32>,
    /// The first block of this trace and its security response id.
    block: Option<(crate::blocking::BlockReason, String)>,
    /// The user agent of the request (detection input).
    user_agent: Option<String>,
    /// Business events waiting for detection (until the client IP is known or the root closes).
    pending_detections: Vec<Observation>,
    /// `activity.sensitive` events for the privilege rules, evaluated when the root closes.
    privilege_checks: Vec<Observation>,
    /// The strongest signal each rule raised from this trace.
    signals: Vec<(RuleId, Severity)>,
}

static NO_COLD: Cold = Cold {
    events: Vec::new(),
    propagated_usr_id: None,
    upstream_tags: Vec::new(),
    extra: Vec::new(),
    upstream_priority: None,
    block: None,
    user_agent: None,
    pending_detections: Vec::new(),
    privilege_checks: Vec::new(),
    signals: Vec::new(),
};

impl TraceState {
    fn cold(&self) -> &Cold {
        self.cold.as_deref().unwrap_or(&NO_COLD)
    }

    fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    fn event(&mut self, name: &str) -> &mut RecordedEvent {
        let events = &mut self.cold_mut().events;
        let index = match events.iter().position(|e| e.name == name) {
            Some(i) => i,
            None => {
                events.push(RecordedEvent {
                    name: name.to_owned(),
                    ..RecordedEvent::default()
                });
                events.len() - 1
            }
        };
        &mut events[index]
    }

    /// Records an SDK business event (its public tags, `track` included) and keeps the trace.
    pub fn record_sdk_event(&mut self, name: &str, tags: Tags) {
        merge(&mut self.event(name).sdk, tags);
        if events::is_login_event(name) {
            self.login_event_sdk = true;
        }
        self.keep = true;
    }

    /// Records a field-path business event processed by `mode`, and keeps the trace.
    pub fn record_field_event(&mut self, name: &str, event: events::FieldEvent, mode: Mode) {
        let recorded = self.event(name);
        merge(&mut recorded.field, event.tags);
        recorded.auto_mode = Some(mode);
        if events::is_login_event(name) {
            self.login_event_field = true;
            self.identity
                .record_private(event.private_id.as_deref(), event.private_login.as_deref());
        }
        if let Some(id) = event.root_id {
            self.identity
                .record_field_bucket_only(vec![(Key::Borrowed(keys::USR_ID), id)]);
        }
        self.keep = true;
    }

    /// Forces the trace to be kept (docs/tags.md "keep").
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Whether the trace is kept.
    pub fn is_kept(&self) -> bool {
        self.keep
    }

    /// Sets `_dd.p.usr.id` to the base64 of `user_id` (a local `propagate=true` call).
    pub fn propagate_user_id(&mut self, user_id: &str) {
        self.cold_mut().propagated_usr_id = Some(crate::propagation::encode_user_id(user_id));
    }

    /// Takes the propagation tags received from upstream (`_dd.p.*`, the user id included),
    /// unless a local call already set the user id.
    pub fn set_upstream_tags(&mut self, tags: Tags) {
        for (key, value) in tags {
            if key == keys::DD_P_USR_ID {
                let cold = self.cold_mut();
                if cold.propagated_usr_id.is_none() {
                    cold.propagated_usr_id = Some(value);
                }
            } else {
                let upstream = &mut self.cold_mut().upstream_tags;
                upstream.retain(|(k, _)| *k != key);
                upstream.push((key, value));
            }
        }
    }

    /// The `_dd.p.*` tags to propagate downstream, in order.
    pub fn propagation_tags(&self) -> Tags {
        let mut tags: Tags = self
            .cold()
            .upstream_tags
            .iter()
            .filter(|(k, _)| *k != DECISION_MAKER && *k != TRACE_SOURCE)
            .cloned()
            .collect();
        if self.keep {
            tags.push((Key::Borrowed(DECISION_MAKER), "-5".to_owned()));
            tags.push((Key::Borrowed(TRACE_SOURCE), "02".to_owned()));
        } else {
            tags.extend(
                self.cold()
                    .upstream_tags
                    .iter()
                    .filter(|(k, _)| *k == DECISION_MAKER || *k == TRACE_SOURCE)
                    .cloned(),
            );
        }
        if let Some(id) = &self.cold().propagated_usr_id {
            tags.push((Key::Borrowed(keys::DD_P_USR_ID), id.clone()));
        }
        tags
    }

    /// Marks the trace as blocked (docs/tags.md "blocking"): the first block wins, the trace is kept.
    pub fn block(&mut self, reason: crate::blocking::BlockReason, security_response_id: String) {
        let cold = self.cold_mut();
        if cold.block.is_none() {
            cold.block = Some((reason, security_response_id));
        }
        self.keep = true;
    }

    /// Records the client IP of the request (for `actor.ip` on blocks).
    ///
    /// `rank` is the field's index in [`keys::CLIENT_IP_FIELDS`]: `http.client_ip` wins over
    /// `network.client.ip`, which wins over `client.address`, whatever the order they are
    /// recorded in; among equals the first stays.
    pub fn set_client_ip(&mut self, ip: std::net::IpAddr, rank: u8) {
        if self.client_ip.is_none() || rank < self.client_ip_rank {
            self.client_ip = Some(ip);
            self.client_ip_rank = rank;
        }
    }

    /// The client IP, if recorded.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.client_ip
    }

    /// The security response id when the trace is blocked.
    pub fn blocked(&self) -> Option<&str> {
        self.cold().block.as_ref().map(|(_, id)| id.as_str())
    }

    /// Takes the sampling priority received from upstream.
    pub fn set_upstream_priority(&mut self, priority: Option<i32>) {
        self.cold_mut().upstream_priority = priority;
    }

    /// The sampling priority to propagate: 2 (USER_KEEP) when kept, else the upstream one, else
    /// 1 (this crate does not sample).
    pub fn sampling_priority(&self) -> i32 {
        if self.keep {
            2
        } else {
            self.cold().upstream_priority.unwrap_or(1)
        }
    }

    /// Adds a tag to the root (for example `_dd.propagation_error`).
    pub fn set_root_tag(&mut self, key: &'static str, value: String) {
        let extra = &mut self.cold_mut().extra;
        extra.retain(|(k, _)| *k != key);
        extra.push((Key::Borrowed(key), value));
    }

    /// Sets the request's user agent (the first one recorded is kept).
    pub fn set_user_agent(&mut self, user_agent: String) {
        self.cold_mut().user_agent.get_or_insert(user_agent);
    }

    /// The request's user agent, if recorded.
    pub fn user_agent(&self) -> Option<&str> {
        self.cold().user_agent.as_deref()
    }

    /// Queues a business event for detection until the client IP is known.
    pub fn push_detection(&mut self, observation: Observation) {
        self.cold_mut().pending_detections.push(observation);
    }

    /// Keeps an admin-only sensitive activity for the privilege rules at close.
    pub fn push_privilege_check(&mut self, observation: Observation) {
        self.cold_mut().privilege_checks.push(observation);
    }

    /// Whether events wait for detection (now or at close).
    pub fn has_detection_work(&self) -> bool {
        !self.cold().pending_detections.is_empty() || !self.cold().privilege_checks.is_empty()
    }

    /// The events waiting for detection, taken.
    pub fn take_pending_detections(&mut self) -> Vec<Observation> {
        self.cold
            .as_mut()
            .map(|c| std::mem::take(&mut c.pending_detections))
            .unwrap_or_default()
    }

    /// The events for the privilege rules, taken.
    pub fn take_privilege_checks(&mut self) -> Vec<Observation> {
        self.cold
            .as_mut()
            .map(|c| std::mem::take(&mut c.privilege_checks))
            .unwrap_or_default()
    }

    /// Records a signal raised from this trace: the root gets `tracing_usr.signal.<rule>` =
    /// the strongest severity (detection rules §3).
    pub fn add_signal(&mut self, rule: RuleId, severity: Severity) {
        let signals = &mut self.cold_mut().signals;
        match signals.iter_mut().find(|(r, _)| *r == rule) {
            Some(slot) => slot.1 = slot.1.max(severity),
            None => signals.push((rule, severity)),
        }
        self.keep = true;
    }

    /// Writes everything the local root exports into `meta` and `metrics` (docs/tags.md "which identity reaches the root", "collection mode", "business events", "propagation"): [`TraceState::facts`] as Datadog tags.
    pub fn finish<V: TagValue>(
        &self,
        mode: Mode,
        default: Option<&IdentityBucket>,
        meta: &mut Vec<(Key, V)>,
        metrics: &mut Vec<(Key, f64)>,
    ) {
        self.facts(mode, default).write_tags(meta, metrics);
    }

    /// The typed facts the local root exports now (docs/tags.md "which identity reaches the
    /// root", "collection mode", "business events", "propagation", "blocking"), every value
    /// final. `default` is the process-wide default identity.
    pub fn facts(&self, mode: Mode, default: Option<&IdentityBucket>) -> RootFacts {
        let mut facts = RootFacts::default();
        let login_events = (self.login_event_sdk || self.login_event_field).then_some(self.login_event_sdk);
        self.identity.write_facts(mode, default, login_events, &mut facts);
        let cold = self.cold();
        facts.events = cold
            .events
            .iter()
            .map(|event| EventFacts {
                name: event.name.clone(),
                tags: event
                    .sdk
                    .as_ref()
                    .or(event.field.as_ref())
                    .map(|tags| {
                        tags.iter()
                            .map(|(k, v)| (k.clone(), Text::from(v.as_str())))
                            .collect()
                    })
                    .unwrap_or_default(),
                sdk: event.sdk.is_some(),
                auto_mode: event.auto_mode,
            })
            .collect();
        facts.sampling = if self.keep {
            Sampling::Kept
        } else {
            cold.upstream_priority
                .map_or(Sampling::Sampler, Sampling::Upstream)
        };
        facts.propagation = self
            .propagation_tags()
            .into_iter()
            .map(|(k, v)| (k, Text::from(v)))
            .collect();
        facts.block = cold.block.as_ref().map(|(reason, id)| BlockFacts {
            actor_ip: match reason {
                crate::blocking::BlockReason::Ip(ip) => Some(*ip),
                crate::blocking::BlockReason::User(_) => self.client_ip,
            }
            .map(|ip| Text::display(&ip)),
            trigger_json: crate::blocking::trigger_json(reason, id),
            keep_origin: true,
        });
        facts.signals = cold.signals.clone();
        facts.extra = cold
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), Text::from(v.as_str())))
            .collect();
        facts
    }
}
