//! Every reserved field name and tag key of the contract, in one place.
//!
//! The names are wire facts (see the user-tracking specification): they are reproduced byte for
//! byte in every export.

/// Prefix of every identity field and tag.
pub const USR_PREFIX: &str = "usr.";
/// Stable, unique user id. Mandatory: no identity tag is written without it.
pub const USR_ID: &str = "usr.id";
/// What the user typed to authenticate (username, email, phone).
pub const USR_LOGIN: &str = "usr.login";
/// Display name.
pub const USR_NAME: &str = "usr.name";
/// Email address.
pub const USR_EMAIL: &str = "usr.email";
/// Session identifier.
pub const USR_SESSION_ID: &str = "usr.session_id";
/// Role (one string, never split).
pub const USR_ROLE: &str = "usr.role";
/// Scopes / permissions (one string).
pub const USR_SCOPE: &str = "usr.scope";
/// The user's token: always exported as [`REDACTED`](crate::mask::REDACTED), if at all.
pub const USR_TOKEN: &str = "usr.token";
/// Names a business event on a `tracing` event; ignored on spans.
pub const USR_EVENT: &str = "usr.event";
/// Whether the account of a business event exists; ignored on spans.
pub const USR_EXISTS: &str = "usr.exists";

/// The seven standard identity keys, in the order they are exported.
pub const STANDARD_KEYS: [&str; 7] = [
    USR_ID,
    USR_LOGIN,
    USR_NAME,
    USR_EMAIL,
    USR_SESSION_ID,
    USR_ROLE,
    USR_SCOPE,
];

/// Which path set the root's public identity: `sdk`, `identification` or `anonymization`.
pub const COLLECTION_MODE: &str = "_dd.appsec.user.collection_mode";
/// Private copy of the field-path user id.
pub const DD_APPSEC_USR_ID: &str = "_dd.appsec.usr.id";
/// Private copy of the field-path login.
pub const DD_APPSEC_USR_LOGIN: &str = "_dd.appsec.usr.login";
/// Propagated user id (base64), a trace-level propagation tag.
pub const DD_P_USR_ID: &str = "_dd.p.usr.id";

/// Client IP fields read from the local root, in priority order.
pub const CLIENT_IP_FIELDS: [&str; 3] = ["http.client_ip", "network.client.ip", "client.address"];
/// User-agent fields read from the local root, in priority order.
pub const USER_AGENT_FIELDS: [&str; 2] = ["http.useragent", "user_agent.original"];

/// Prefix of tags that are exempt from masking (private Datadog tags).
pub const DD_PRIVATE_PREFIX: &str = "_dd.";
/// Prefix of detection-signal tags, exempt from masking.
pub const SIGNAL_PREFIX: &str = "tracing_usr.signal.";

/// The standard identity key for a field name, if it is one.
pub fn is_standard_key(key: &str) -> bool {
    STANDARD_KEYS.contains(&key)
}
