//! Business events: logins, signups and custom events (docs/tags.md "business events").

use serde_json::Value;
use tracing_usr_core::events::{
    self, LOGIN_FAILURE, LOGIN_SUCCESS, PASSWORD_RESET, PAYMENT_FAILURE, SENSITIVE_ACTIVITY, SIGNUP,
    USER_DELETE,
};
use tracing_usr_core::identity::Key;
use tracing_usr_core::{keys, User};

use super::identity::{set_user, SetUserOptions};
use super::metadata::EventMetadata;
use super::{blocked, blocked_outcome, on_current_root, optional, required, SdkError};

/// Who logged in, for [`track_login_success`]: nobody known, a user id, or a whole [`User`]
/// (then the call also does [`set_user`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LoginUser {
    /// No user id.
    #[default]
    Unknown,
    /// A user id.
    Id(String),
    /// A whole user.
    User(User),
}

impl From<&str> for LoginUser {
    fn from(id: &str) -> Self {
        LoginUser::Id(id.to_owned())
    }
}

impl From<String> for LoginUser {
    fn from(id: String) -> Self {
        LoginUser::Id(id)
    }
}

impl From<Option<&str>> for LoginUser {
    fn from(id: Option<&str>) -> Self {
        id.map_or(LoginUser::Unknown, LoginUser::from)
    }
}

impl From<&User> for LoginUser {
    fn from(user: &User) -> Self {
        LoginUser::User(user.clone())
    }
}

impl From<User> for LoginUser {
    fn from(user: User) -> Self {
        LoginUser::User(user)
    }
}

/// Records `name` with its public tags and, for the login and signup events, the root identity
/// `root_id` and propagation.
fn record_event(
    name: &'static str,
    explicit: Vec<(&'static str, String)>,
    metadata: EventMetadata,
    root_id: Option<String>,
    propagate: bool,
) -> Result<(), SdkError> {
    let check = root_id.clone();
    on_current_root(
        |shared| {
            let tags = events::sdk_event_tags(name, &explicit, metadata.as_value(), true, &shared.masker);
            let blocked = check.as_deref().and_then(|id| blocked(shared, id));
            let observation = shared.detection().and_then(|d| d.observation(name, &tags));
            Ok((tags, blocked, observation))
        },
        |shared, state, (tags, blocked, observation)| {
            if let (Some(detection), Some(observation)) = (shared.detection(), observation) {
                detection.submit(state, observation);
            }
            state.trace.record_sdk_event(name, tags);
            let Some(id) = root_id else { return Ok(()) };
            if propagate {
                state.trace.propagate_user_id(&id);
            }
            state
                .trace
                .identity
                .record_sdk(vec![(Key::Borrowed(keys::USR_ID), id.clone())]);
            blocked_outcome(state, blocked.map(|rid| (id, rid)))
        },
    )
}

/// A successful login (`users.login.success`): `appsec.events.users.login.success.usr.login`,
/// the user id (also as the root `usr.id`) when known, the metadata, the SDK marker,
/// `_dd.appsec.user.collection_mode=sdk`, and a keep. Given a whole [`User`], it first does
/// [`set_user`]. With `options.propagate`, the user id is propagated downstream.
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty login; [`SdkError::NoRoot`] outside any span;
/// [`SdkError::NoLayer`] without the layer.
pub fn track_login_success(
    login: &str,
    user: impl Into<LoginUser>,
    metadata: impl Into<EventMetadata>,
    options: SetUserOptions,
) -> Result<(), SdkError> {
    let login = required("login", login)?;
    let user_id = match user.into() {
        LoginUser::Unknown => None,
        LoginUser::Id(id) => optional(Some(&id)).map(str::to_owned),
        LoginUser::User(user) => {
            required("user.id", user.id())?;
            if super::current_span_exists() {
                set_user(&user, SetUserOptions::default())?;
            } else {
                return Err(SdkError::NoRoot);
            }
            Some(user.id().to_owned())
        }
    };
    let mut explicit = vec![("usr.login", login.to_owned())];
    explicit.extend(user_id.clone().map(|id| ("usr.id", id)));
    record_event(
        LOGIN_SUCCESS,
        explicit,
        metadata.into(),
        user_id,
        options.propagate,
    )
}

/// A failed login (`users.login.failure`): the login, whether the account exists, the user id
/// when known (never the root `usr.id`), the metadata, collection mode `sdk`, and a keep.
///
/// # Errors
/// As [`track_login_success`].
pub fn track_login_failure(
    login: &str,
    exists: bool,
    user_id: Option<&str>,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    let login = required("login", login)?;
    let mut explicit = vec![
        ("usr.login", login.to_owned()),
        ("usr.exists", exists.to_string()),
    ];
    explicit.extend(optional(user_id).map(|id| ("usr.id", id.to_owned())));
    record_event(LOGIN_FAILURE, explicit, metadata.into(), None, false)
}

/// A successful account creation (`users.signup`): the login, the user id (also the root
/// `usr.id`) when known, the metadata, collection mode `sdk`, and a keep.
///
/// # Errors
/// As [`track_login_success`].
pub fn track_signup(
    login: &str,
    user_id: Option<&str>,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    let login = required("login", login)?;
    let user_id = optional(user_id).map(str::to_owned);
    let mut explicit = vec![("usr.login", login.to_owned())];
    explicit.extend(user_id.clone().map(|id| ("usr.id", id)));
    record_event(SIGNUP, explicit, metadata.into(), user_id, false)
}

/// A custom business event: `appsec.events.<name>.track=true`, the flattened metadata (empty is
/// fine), the SDK marker and a keep. The built-in names `users.delete`,
/// `users.password_reset`, `payment.failure` and `activity.sensitive` take their row's tags from
/// the metadata and require its inputs; the login and signup names are rejected (use their
/// dedicated calls).
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty name or a built-in event's missing input,
/// [`SdkError::ReservedEventName`] for the login and signup names; [`SdkError::NoRoot`] outside
/// any span; [`SdkError::NoLayer`] without the layer.
pub fn track_custom_event(name: &str, metadata: impl Into<EventMetadata>) -> Result<(), SdkError> {
    let name = required("name", name)?;
    if events::is_login_event(name) {
        return Err(SdkError::ReservedEventName(name.to_owned()));
    }
    let metadata = metadata.into();
    let value = metadata.as_value();
    let text = |key: &str| events::metadata_text(value, key);
    let missing = match name {
        USER_DELETE => text("usr.id").is_none().then_some("usr.id"),
        PASSWORD_RESET => {
            if text("exists").is_none() {
                Some("exists")
            } else if text("usr.id").is_none() && text("usr.login").is_none() {
                Some("usr.id or usr.login")
            } else {
                None
            }
        }
        SENSITIVE_ACTIVITY => text("name").is_none().then_some("name"),
        _ => None,
    };
    if let Some(missing) = missing {
        return Err(SdkError::MissingArgument(missing));
    }
    let name = name.to_owned();
    on_current_root(
        |shared| {
            let tags = events::sdk_event_tags(&name, &[], value, false, &shared.masker);
            let observation = shared.detection().and_then(|d| d.observation(&name, &tags));
            Ok((tags, observation))
        },
        |shared, state, (tags, observation)| {
            if let (Some(detection), Some(observation)) = (shared.detection(), observation) {
                detection.submit(state, observation);
            }
            state.trace.record_sdk_event(&name, tags);
        },
    )
}

/// Merges `extra` (the helper's own arguments) over the caller's metadata, whose entries for
/// the row's tags are dropped.
fn helper_metadata(name: &str, metadata: EventMetadata, extra: Vec<(&'static str, Value)>) -> Value {
    let row = events::row_tags(name);
    let mut map = match metadata.into_value() {
        Some(Value::Object(map)) => map,
        Some(other) => {
            let mut map = serde_json::Map::new();
            map.insert("value".to_owned(), other);
            map
        }
        None => serde_json::Map::new(),
    };
    map.retain(|k, _| !row.contains(&k.as_str()) && k != "track");
    for (k, v) in extra {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

/// An account deletion (`users.delete`) of `user_id` (not the root `usr.id`).
///
/// # Errors
/// As [`track_custom_event`].
pub fn track_user_delete(user_id: &str, metadata: impl Into<EventMetadata>) -> Result<(), SdkError> {
    let user_id = required("user_id", user_id)?;
    track_custom_event(
        USER_DELETE,
        helper_metadata(USER_DELETE, metadata.into(), vec![("usr.id", user_id.into())]),
    )
}

/// A password reset request (`users.password_reset`) for `user_id` and/or `login` (at least one),
/// with whether the account exists.
///
/// # Errors
/// As [`track_custom_event`].
pub fn track_password_reset(
    user_id: Option<&str>,
    login: Option<&str>,
    exists: bool,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    let (user_id, login) = (optional(user_id), optional(login));
    if user_id.is_none() && login.is_none() {
        return Err(SdkError::MissingArgument("user_id or login"));
    }
    let mut extra = vec![("exists", Value::Bool(exists))];
    extra.extend(user_id.map(|id| ("usr.id", Value::from(id))));
    extra.extend(login.map(|l| ("usr.login", Value::from(l))));
    track_custom_event(
        PASSWORD_RESET,
        helper_metadata(PASSWORD_RESET, metadata.into(), extra),
    )
}

/// A failed payment (`payment.failure`), described by its metadata.
///
/// # Errors
/// As [`track_custom_event`].
pub fn track_payment_failure(metadata: impl Into<EventMetadata>) -> Result<(), SdkError> {
    track_custom_event(
        PAYMENT_FAILURE,
        helper_metadata(PAYMENT_FAILURE, metadata.into(), Vec::new()),
    )
}

/// A sensitive activity (`activity.sensitive`) named `name`, optionally requiring a role.
///
/// # Errors
/// As [`track_custom_event`].
pub fn track_sensitive_activity(
    name: &str,
    required_role: Option<&str>,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    let name = required("name", name)?;
    let mut extra = vec![("name", Value::from(name))];
    extra.extend(optional(required_role).map(|r| ("required_role", Value::from(r))));
    track_custom_event(
        SENSITIVE_ACTIVITY,
        helper_metadata(SENSITIVE_ACTIVITY, metadata.into(), extra),
    )
}
