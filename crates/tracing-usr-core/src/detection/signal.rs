//! What the detector is fed (an [`Observation`] of a business event) and what it returns (a
//! [`Signal`], with its severity, key and actions).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::config::RuleId;

/// Datadog's severity scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    /// `info`
    Info,
    /// `low`
    Low,
    /// `medium`
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a signal's key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A client IP.
    Ip,
    /// An account (login, else id, as exported).
    Account,
    /// A client IP and an activity name.
    IpAndName,
    /// One event (the stateless privilege rules).
    Event,
}

impl KeyKind {
    /// `ip`, `account`, `ip+name` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ip => "ip",
            KeyKind::Account => "account",
            KeyKind::IpAndName => "ip+name",
            KeyKind::Event => "event",
        }
    }
}

/// A business event the detector understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `users.login.success`
    LoginSuccess,
    /// `users.login.failure`
    LoginFailure,
    /// `users.signup`
    Signup,
    /// `users.delete`
    Delete,
    /// `users.password_reset`
    PasswordReset,
    /// `payment.failure`
    PaymentFailure,
    /// `activity.sensitive`
    SensitiveActivity,
}

impl EventKind {
    /// The kind of a business event name; `None` for custom events.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            crate::events::LOGIN_SUCCESS => EventKind::LoginSuccess,
            crate::events::LOGIN_FAILURE => EventKind::LoginFailure,
            crate::events::SIGNUP => EventKind::Signup,
            crate::events::USER_DELETE => EventKind::Delete,
            crate::events::PASSWORD_RESET => EventKind::PasswordReset,
            crate::events::PAYMENT_FAILURE => EventKind::PaymentFailure,
            crate::events::SENSITIVE_ACTIVITY => EventKind::SensitiveActivity,
            _ => return None,
        })
    }
}

/// One business event as the detector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The event.
    pub kind: EventKind,
    /// When it was recorded ([`Detector::now`](super::Detector::now)).
    pub time: u32,
    /// The request's client IP.
    pub ip: Option<IpAddr>,
    /// The account: the event's `usr.login`, else its `usr.id`, as exported.
    pub account: Option<String>,
    /// The event's `usr.id` as exported (the deleted account, the user who logged in, …).
    pub user_id: Option<String>,
    /// `exists` of a password reset.
    pub exists: Option<bool>,
    /// `name` of a sensitive activity.
    pub name: Option<String>,
    /// `required_role` of a sensitive activity.
    pub required_role: Option<String>,
    /// The request's user agent (only copied into signals).
    pub user_agent: Option<String>,
    /// The request's trace id (only copied into signals).
    pub trace_id: Option<u128>,
}

impl Observation {
    /// An event with no inputs yet.
    pub fn new(kind: EventKind, time: u32) -> Self {
        Self {
            kind,
            time,
            ip: None,
            account: None,
            user_id: None,
            exists: None,
            name: None,
            required_role: None,
            user_agent: None,
            trace_id: None,
        }
    }

    /// The observation for a recorded business event, read from its exported tags
    /// (`appsec.events.<name>.usr.login`, `.usr.id`, `.exists`, `.name`, `.required_role`);
    /// `None` for events no rule watches.
    pub fn from_event_tags<K: AsRef<str>>(name: &str, tags: &[(K, String)], time: u32) -> Option<Self> {
        let kind = EventKind::from_name(name)?;
        let get = |suffix: &str| {
            tags.iter()
                .rev()
                .find(|(k, v)| {
                    !v.is_empty()
                        && k.as_ref()
                            .strip_prefix("appsec.events.")
                            .and_then(|rest| rest.strip_prefix(name))
                            .and_then(|rest| rest.strip_prefix('.'))
                            == Some(suffix)
                })
                .map(|(_, v)| v.clone())
        };
        let mut obs = Self::new(kind, time);
        obs.user_id = get("usr.id");
        obs.account = get("usr.login").or_else(|| obs.user_id.clone());
        match kind {
            EventKind::PasswordReset => {
                obs.exists = get("exists").and_then(|v| match v.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                });
            }
            EventKind::SensitiveActivity => {
                obs.name = get("name");
                obs.required_role = get("required_role");
            }
            _ => {}
        }
        Some(obs)
    }

    /// Whether the privilege rules must look at this event when its root closes
    /// (`activity.sensitive` with `required_role` = `admin`, case-sensitive).
    pub fn needs_privilege_check(&self) -> bool {
        self.kind == EventKind::SensitiveActivity && self.required_role.as_deref() == Some("admin")
    }
}

/// What a signal asks the layer to do beyond reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Block this client IP for `duration`.
    BlockIp {
        /// The IP.
        ip: IpAddr,
        /// How long.
        duration: Duration,
    },
    /// Block this user id for `duration`.
    BlockUser {
        /// The `usr.id` (as exported).
        user_id: String,
        /// How long.
        duration: Duration,
    },
}

/// A security signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// The rule.
    pub rule: RuleId,
    /// Its severity.
    pub severity: Severity,
    /// What the key is.
    pub key_kind: KeyKind,
    /// The key: IP text, the account as exported, `ip name`, or the activity name.
    pub key: String,
    /// Qualifying events inside the window (for the distinct rules: the events seen for the key).
    pub count: u32,
    /// Distinct values inside the window (accounts, deleted ids, reset targets); 0 if none.
    pub distinct: u32,
    /// The rule's window.
    pub window: Duration,
    /// The oldest counted event, in seconds since the detector started.
    pub first_seen: u32,
    /// The newest counted event, in seconds since the detector started.
    pub last_seen: u32,
    /// Whether this is the critical escalation of an open signal.
    pub escalation: bool,
    /// The account of the login success that escalated the signal.
    pub account: Option<String>,
    /// The request's user agent.
    pub user_agent: Option<String>,
    /// The trace id of the request that raised the signal.
    pub trace_id: Option<u128>,
    /// The actions the rule's configuration asks for.
    pub actions: Vec<Action>,
}
