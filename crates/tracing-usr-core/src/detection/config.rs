//! The rules and their settings: which rule, its threshold and window, the detector's bounds.

use std::fmt;
use std::time::Duration;

/// A detection rule (Datadog's readable rule ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum RuleId {
    /// `appsec-ato-groupby-ip`: credential stuffing from one client IP.
    CredentialStuffing,
    /// `appsec-ato-bf`: brute force against one account.
    BruteForce,
    /// `bl-rate-limiting`: excessive sensitive activity per (client IP, activity name).
    SensitiveActivityRate,
    /// `bl-privilege-violation-user`: a user without the `admin` role did an admin activity.
    PrivilegeViolationUser,
    /// `bl-privilege-violation-ip`: an unauthenticated request did an admin activity.
    PrivilegeViolationIp,
    /// `bl-signup-ratelimit`: excessive account creation from one client IP.
    SignupRate,
    /// `bl-account-deletion-ratelimit`: excessive account deletion from one client IP.
    AccountDeletion,
    /// `bl-password-reset`: user enumeration through password reset from one client IP.
    PasswordResetEnumeration,
    /// `bl-password-reset-bf`: reset-token brute force against one account.
    PasswordResetBruteForce,
    /// `bl-payment-failures`: excessive payment failures from one client IP.
    PaymentFailures,
}

impl RuleId {
    /// Every rule, in the doc's order.
    pub const ALL: [RuleId; 10] = [
        RuleId::CredentialStuffing,
        RuleId::BruteForce,
        RuleId::SensitiveActivityRate,
        RuleId::PrivilegeViolationUser,
        RuleId::PrivilegeViolationIp,
        RuleId::SignupRate,
        RuleId::AccountDeletion,
        RuleId::PasswordResetEnumeration,
        RuleId::PasswordResetBruteForce,
        RuleId::PaymentFailures,
    ];

    /// The readable rule id (`appsec-ato-groupby-ip`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::CredentialStuffing => "appsec-ato-groupby-ip",
            RuleId::BruteForce => "appsec-ato-bf",
            RuleId::SensitiveActivityRate => "bl-rate-limiting",
            RuleId::PrivilegeViolationUser => "bl-privilege-violation-user",
            RuleId::PrivilegeViolationIp => "bl-privilege-violation-ip",
            RuleId::SignupRate => "bl-signup-ratelimit",
            RuleId::AccountDeletion => "bl-account-deletion-ratelimit",
            RuleId::PasswordResetEnumeration => "bl-password-reset",
            RuleId::PasswordResetBruteForce => "bl-password-reset-bf",
            RuleId::PaymentFailures => "bl-payment-failures",
        }
    }

    /// Datadog's newer opaque id (`def-000-yk4`, …), where it has one.
    pub fn opaque_id(self) -> Option<&'static str> {
        match self {
            RuleId::CredentialStuffing => Some("def-000-yk4"),
            RuleId::BruteForce => Some("def-000-0f4"),
            RuleId::SensitiveActivityRate => None,
            RuleId::PrivilegeViolationUser => Some("def-000-7hq"),
            RuleId::PrivilegeViolationIp => Some("def-000-df3"),
            RuleId::SignupRate => Some("def-000-389"),
            RuleId::AccountDeletion => Some("def-000-sp5"),
            RuleId::PasswordResetEnumeration => Some("def-000-dth"),
            RuleId::PasswordResetBruteForce => Some("def-000-m3m"),
            RuleId::PaymentFailures => Some("def-000-zwj"),
        }
    }

    /// The root-span tag a signal of this rule writes: `tracing_usr.signal.<rule id>`.
    pub fn tag_key(self) -> &'static str {
        match self {
            RuleId::CredentialStuffing => "tracing_usr.signal.appsec-ato-groupby-ip",
            RuleId::BruteForce => "tracing_usr.signal.appsec-ato-bf",
            RuleId::SensitiveActivityRate => "tracing_usr.signal.bl-rate-limiting",
            RuleId::PrivilegeViolationUser => "tracing_usr.signal.bl-privilege-violation-user",
            RuleId::PrivilegeViolationIp => "tracing_usr.signal.bl-privilege-violation-ip",
            RuleId::SignupRate => "tracing_usr.signal.bl-signup-ratelimit",
            RuleId::AccountDeletion => "tracing_usr.signal.bl-account-deletion-ratelimit",
            RuleId::PasswordResetEnumeration => "tracing_usr.signal.bl-password-reset",
            RuleId::PasswordResetBruteForce => "tracing_usr.signal.bl-password-reset-bf",
            RuleId::PaymentFailures => "tracing_usr.signal.bl-payment-failures",
        }
    }

    /// The rule with this readable or opaque id.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == id || r.opaque_id() == Some(id))
    }

    /// Whether the doc allows the `block_ip` action for this rule.
    pub fn allows_block_ip(self) -> bool {
        !matches!(
            self,
            RuleId::PrivilegeViolationUser | RuleId::PrivilegeViolationIp | RuleId::PasswordResetBruteForce
        )
    }

    /// Whether the doc allows the `block_user` action (the two account-takeover rules).
    pub fn allows_block_user(self) -> bool {
        matches!(self, RuleId::CredentialStuffing | RuleId::BruteForce)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's settings. `threshold` is strict: "more than `threshold`" events (or distinct
/// values, for the account-deletion and password-reset rules) inside `window` match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Events (or distinct values) that must be exceeded.
    pub threshold: u32,
    /// Credential stuffing only: distinct accounts that must be exceeded as well.
    pub distinct: u32,
    /// The sliding window (whole seconds; unused by the privilege rules).
    pub window: Duration,
    /// Put the client IP on the blocked-IP list when a signal opens or escalates.
    pub block_ip: bool,
    /// Account-takeover rules only: block the account that logged in on a critical escalation.
    pub block_user: bool,
}

impl RuleConfig {
    const fn new(threshold: u32, window_secs: u64) -> Self {
        Self {
            enabled: true,
            threshold,
            distinct: 0,
            window: Duration::from_secs(window_secs),
            block_ip: false,
            block_user: false,
        }
    }
}

/// The largest configurable threshold: a ring of `threshold + 1` time stamps is kept per key.
pub const MAX_THRESHOLD: u32 = 10_000;
/// The longest configurable window (one day).
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Raw key text kept inside an open signal is cut to this many bytes.
pub const MAX_KEY_TEXT: usize = 256;

/// The detector's settings; [`Default`] is the doc's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionConfig {
    pub(super) rules: [RuleConfig; 10],
    /// Most keys tracked per rule (default 10,000).
    pub max_keys: usize,
    /// How long a `block_ip` / `block_user` action blocks (default 15 min).
    pub block_duration: Duration,
    /// The longest a signal stays open, keep-alives included (default 24 h).
    pub max_signal_duration: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let mut credential_stuffing = RuleConfig::new(30, 600);
        credential_stuffing.distinct = 5;
        Self {
            rules: [
                credential_stuffing,
                RuleConfig::new(40, 900),
                RuleConfig::new(100, 300),
                RuleConfig::new(0, 0),
                RuleConfig::new(0, 0),
                RuleConfig::new(10, 300),
                RuleConfig::new(5, 300),
                RuleConfig::new(5, 300),
                RuleConfig::new(10, 300),
                RuleConfig::new(3, 300),
            ],
            max_keys: 10_000,
            block_duration: Duration::from_secs(15 * 60),
            max_signal_duration: Duration::from_secs(24 * 3600),
        }
    }
}

/// What kind of problem a [`DetectionConfigError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DetectionConfigErrorKind {
    /// The settings file could not be read.
    Read,
    /// The settings are not valid JSON, or not shaped as documented.
    Syntax,
    /// A setting or rule id that does not exist.
    Unknown,
    /// A setting has a value it cannot take (wrong type, out of range).
    InvalidValue,
}

/// A detection setting that cannot be used: its [kind](DetectionConfigError::kind), and a
/// message that names the setting and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionConfigError {
    kind: DetectionConfigErrorKind,
    message: String,
}

impl DetectionConfigError {
    /// An error of `kind` with this message.
    pub fn new(kind: DetectionConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> DetectionConfigErrorKind {
        self.kind
    }

    /// What is wrong, and with which setting.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, its message prefixed with `context` (a file path).
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for DetectionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DetectionConfigError {}

impl DetectionConfig {
    /// One rule's settings.
    pub fn rule(&self, rule: RuleId) -> &RuleConfig {
        &self.rules[rule.index()]
    }

    /// One rule's settings, to change.
    pub fn rule_mut(&mut self, rule: RuleId) -> &mut RuleConfig {
        &mut self.rules[rule.index()]
    }

    /// Checks the settings: actions the doc does not allow for a rule, thresholds above
    /// [`MAX_THRESHOLD`], windows of zero or above [`MAX_WINDOW`], `max_keys` of zero.
    ///
    /// # Errors
    /// The first problem found, naming the rule and the setting.
    pub fn validate(&self) -> Result<(), DetectionConfigError> {
        let err = |m: String| {
            Err(DetectionConfigError::new(
                DetectionConfigErrorKind::InvalidValue,
                m,
            ))
        };
        if self.max_keys == 0 {
            return err("max_keys must be at least 1".into());
        }
        if self.block_duration.is_zero() {
            return err("block_duration must be longer than zero".into());
        }
        if self.max_signal_duration.as_secs() == 0 {
            return err("max_signal_duration must be at least one second".into());
        }
        for rule in RuleId::ALL {
            let c = self.rule(rule);
            if c.block_ip && !rule.allows_block_ip() {
                return err(format!(
                    "{rule}: block_ip is not allowed for this rule (signal only)"
                ));
            }
            if c.block_user && !rule.allows_block_user() {
                return err(format!(
                    "{rule}: block_user is allowed only for appsec-ato-groupby-ip and appsec-ato-bf"
                ));
            }
            if matches!(
                rule,
                RuleId::PrivilegeViolationUser | RuleId::PrivilegeViolationIp
            ) {
                continue;
            }
            if c.threshold > MAX_THRESHOLD || c.distinct > MAX_THRESHOLD {
                return err(format!(
                    "{rule}: thresholds above {MAX_THRESHOLD} are not supported"
                ));
            }
            if c.window.as_secs() == 0 || c.window > MAX_WINDOW {
                return err(format!("{rule}: window must be between 1 s and 24 h"));
            }
        }
        Ok(())
    }
}
