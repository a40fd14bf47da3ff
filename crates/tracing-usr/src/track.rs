//! The business-event SDK (docs/tags.md "identity from the SDK", "business events", "propagation"): `set_user`, `track_*`, and their arguments.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tracing_usr_core::blocking::BlockReason;
use tracing_usr_core::events::{
    self, LOGIN_FAILURE, LOGIN_SUCCESS, PASSWORD_RESET, PAYMENT_FAILURE, SENSITIVE_ACTIVITY, SIGNUP,
    USER_DELETE,
};
use tracing_usr_core::identity::{Key, Tags};
use tracing_usr_core::{keys, User};

use crate::layer::Shared;
use crate::sdk::{with_layer, SdkError};
use crate::state::RootState;

/// Event metadata: any JSON-like tree (maps, lists, strings, numbers, booleans), flattened into
/// tags with `.` between path segments, list indices as segments, at most 5 segments deep;
/// `null` writes nothing.
///
/// ```
/// use tracing_usr::EventMetadata;
/// let from_json: EventMetadata = serde_json::json!({"plan": "free", "seats": 3}).into();
/// #[derive(serde::Serialize)]
/// struct Order { id: u64, items: Vec<&'static str> }
/// let from_struct = EventMetadata::serialize(&Order { id: 7, items: vec!["book"] }).unwrap();
/// assert!(from_json.as_value().is_some() && from_struct.as_value().is_some());
/// assert!(EventMetadata::none().as_value().is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventMetadata(Option<Value>);

impl EventMetadata {
    /// No metadata.
    pub fn none() -> Self {
        Self(None)
    }

    /// Metadata from anything `serde::Serialize`.
    ///
    /// # Errors
    /// When the value cannot be represented as JSON (for example a map with non-string keys).
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(value).map(|v| Self(Some(v)))
    }

    /// The metadata as JSON, if any.
    pub fn as_value(&self) -> Option<&Value> {
        self.0.as_ref()
    }
}

impl From<Value> for EventMetadata {
    fn from(value: Value) -> Self {
        Self(Some(value))
    }
}

impl From<&Value> for EventMetadata {
    fn from(value: &Value) -> Self {
        Self(Some(value.clone()))
    }
}

impl From<Option<Value>> for EventMetadata {
    fn from(value: Option<Value>) -> Self {
        Self(value)
    }
}

impl From<()> for EventMetadata {
    fn from((): ()) -> Self {
        Self(None)
    }
}

/// Options of [`set_user`] and [`track_login_success`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetUserOptions {
    /// Propagate the user id downstream as `_dd.p.usr.id` (base64). Defaults to `false`.
    pub propagate: bool,
}

impl SetUserOptions {
    /// Options with propagation on.
    pub fn propagate() -> Self {
        Self { propagate: true }
    }
}

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

fn required<'a>(name: &'static str, value: &'a str) -> Result<&'a str, SdkError> {
    if value.is_empty() {
        Err(SdkError::MissingArgument(name))
    } else {
        Ok(value)
    }
}

fn optional(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// Runs `prepare` (tag building, masking: no lock held) then `apply` on the current trace's
/// local root, then detection; signals are delivered from the caller's frame once every lock
/// is released.
fn on_current_root<T, R: IntoOutcome>(
    prepare: impl FnOnce(&Shared) -> Result<T, SdkError>,
    apply: impl FnOnce(&Shared, &mut RootState, T) -> R,
) -> Result<(), SdkError> {
    let (outcome, signals) = with_layer(|dispatch, layer, span| {
        let Some(id) = span else {
            return (Err(SdkError::NoRoot), None);
        };
        let prepared = match prepare(&layer.shared) {
            Ok(prepared) => prepared,
            Err(e) => return (Err(e), None),
        };
        let mut slot = Some((prepared, apply));
        let mut outcome = Err(SdkError::NoRoot);
        let mut signals = Vec::new();
        layer.with_root(dispatch, id, &mut |shared, state| {
            if let Some((prepared, apply)) = slot.take() {
                outcome = apply(shared, state, prepared).into_outcome();
                signals = crate::detection::take(state);
            }
        });
        let signals = (!signals.is_empty()).then(|| (Arc::clone(&layer.shared.signals), signals));
        (outcome, signals)
    })
    .unwrap_or((Err(SdkError::NoLayer), None));
    // Outside the dispatcher's `get_default`, so the sink's own events are dispatched.
    if let Some((hub, signals)) = signals {
        hub.deliver_now(signals);
    }
    outcome
}

/// What an `apply` closure of [`on_current_root`] may return.
trait IntoOutcome {
    fn into_outcome(self) -> Result<(), SdkError>;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Result<(), SdkError> {
        Ok(())
    }
}

impl IntoOutcome for Result<(), SdkError> {
    fn into_outcome(self) -> Result<(), SdkError> {
        self
    }
}

/// Sets the trace's user (the SDK path, docs/tags.md "identity from the SDK"): each given attribute as `usr.<key>` on the
/// local root, `_dd.appsec.user.collection_mode=sdk`, never changed by the mode, winning over
/// field-path identity. With `options.propagate`, also `_dd.p.usr.id` for downstream services.
/// Outside any span it sets the process-wide default identity (never propagated), as
/// [`identify`](crate::identify) does.
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty id, [`SdkError::NoLayer`] without a tracing-usr
/// layer. Nothing is written then.
pub fn set_user(user: &User, options: SetUserOptions) -> Result<(), SdkError> {
    crate::sdk::identify_with(user, options.propagate)
}

/// The metadata of `track_user*` as `usr.*` tags (docs/tags.md "identity from the SDK"): `k` or `usr.k` becomes `usr.k`,
/// nested values are flattened; `skip` keys are left to the explicit arguments.
fn user_metadata_tags(shared: &Shared, metadata: &EventMetadata, skip: &[&str]) -> Tags {
    let mut tags = Tags::new();
    if let Some(value) = metadata.as_value() {
        events::flatten(value, &mut |path, text| {
            let path = path.strip_prefix(keys::USR_PREFIX).unwrap_or(&path).to_owned();
            if skip.contains(&path.as_str()) || path == "token" {
                return;
            }
            let key = format!("{}{path}", keys::USR_PREFIX);
            let text = shared.masker.mask_field(&key, &text).into_owned();
            let key = match keys::STANDARD_KEYS.iter().find(|k| **k == key) {
                Some(k) => Key::Borrowed(k),
                None => Key::Owned(key),
            };
            tags.push((key, text));
        });
    }
    tags
}

fn track_identity(
    user_id: &str,
    login: Option<&str>,
    session_id: Option<&str>,
    metadata: EventMetadata,
) -> Result<(), SdkError> {
    let user_id = required("user_id", user_id)?.to_owned();
    let login = optional(login).map(str::to_owned);
    let session_id = optional(session_id).map(str::to_owned);
    on_current_root(
        |shared| {
            let mut skip = vec!["id"];
            if login.is_some() {
                skip.push("login");
            }
            if session_id.is_some() {
                skip.push("session_id");
            }
            let blocked = blocked(shared, &user_id);
            let mut tags: Tags = vec![(Key::Borrowed(keys::USR_ID), user_id.clone())];
            tags.extend(login.map(|l| (Key::Borrowed(keys::USR_LOGIN), l)));
            tags.extend(session_id.map(|s| (Key::Borrowed(keys::USR_SESSION_ID), s)));
            tags.extend(user_metadata_tags(shared, &metadata, &skip));
            Ok((tags, blocked.map(|rid| (user_id, rid))))
        },
        |_, state, (tags, blocked)| {
            state.trace.identity.record_sdk(tags);
            mark_blocked(state, blocked)
        },
    )
}

/// A fresh security response id when `user_id` is blocked.
fn blocked(shared: &Shared, user_id: &str) -> Option<String> {
    shared
        .blocks
        .is_user_blocked(user_id)
        .then(crate::ids::security_response_id)
}

/// Marks the trace blocked and turns the outcome into the blocked verdict.
fn mark_blocked(state: &mut RootState, blocked: Option<(String, String)>) -> Result<(), SdkError> {
    match blocked {
        Some((user_id, security_response_id)) => {
            state
                .trace
                .block(BlockReason::User(user_id), security_response_id.clone());
            Err(SdkError::Blocked { security_response_id })
        }
        None => Ok(()),
    }
}

/// Identifies the trace's user by login and id (docs/tags.md "identity from the SDK"): `usr.id`, `usr.login`,
/// `usr.session_id` and the metadata as `usr.<key>` (`name`, `email`, `role`, `scope` become the
/// standard keys; nested values are flattened). No event and no keep.
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty login or id; [`SdkError::NoRoot`] outside any
/// span; [`SdkError::NoLayer`] without the layer.
pub fn track_user(
    login: &str,
    user_id: &str,
    session_id: Option<&str>,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    required("login", login)?;
    track_identity(user_id, Some(login), session_id, metadata.into())
}

/// [`track_user`] without a login.
///
/// # Errors
/// As [`track_user`].
pub fn track_user_id(
    user_id: &str,
    session_id: Option<&str>,
    metadata: impl Into<EventMetadata>,
) -> Result<(), SdkError> {
    track_identity(user_id, None, session_id, metadata.into())
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
            let observation = crate::detection::observation(shared, name, &tags);
            Ok((tags, blocked, observation))
        },
        |shared, state, (tags, blocked, observation)| {
            if let Some(observation) = observation {
                crate::detection::submit(shared, state, observation);
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
            mark_blocked(state, blocked.map(|rid| (id, rid)))
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
            if crate::sdk::current_span_exists() {
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
            let observation = crate::detection::observation(shared, &name, &tags);
            Ok((tags, observation))
        },
        |shared, state, (tags, observation)| {
            if let Some(observation) = observation {
                crate::detection::submit(shared, state, observation);
            }
            state.trace.record_sdk_event(&name, tags);
        },
    )
}

/// Merges `extra` (the helper's own arguments) over the caller's metadata, whose entries for
/// the row's tags are dropped.
fn helper_metadata(name: &str, metadata: EventMetadata, extra: Vec<(&'static str, Value)>) -> Value {
    let row = events::row_tags(name);
    let mut map = match metadata.0 {
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

/// Hands the layer a whole user record (any `serde::Serialize` value) as field-path identity of
/// the current trace (docs/tags.md "identity from a user record"): the mode applies. `usr.id` is taken from the first usable key
/// of `id`, `_id`, `email`, `username`, `login`, `user`; `usr.login` from `login`, `username`,
/// `email`, `user`; `usr.email` from `email`, `mail`; `usr.name` from `name`, `full_name`,
/// `fullname`; `usr.session_id`, `usr.role`, `usr.scope` from the same-named keys. Only non-empty
/// strings and integers are used; a record with no usable id contributes nothing.
///
/// # Errors
/// [`SdkError::MissingArgument`] when the record has no usable id (or is not a JSON object);
/// [`SdkError::NoRoot`] outside any span; [`SdkError::NoLayer`] without the layer.
pub fn record_user<T: Serialize + ?Sized>(record: &T) -> Result<(), SdkError> {
    let value = serde_json::to_value(record).map_err(|_| SdkError::MissingArgument("id"))?;
    let pick = |candidates: &[&str]| -> Option<String> {
        candidates.iter().find_map(|key| match value.get(*key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        })
    };
    let id =
        pick(&["id", "_id", "email", "username", "login", "user"]).ok_or(SdkError::MissingArgument("id"))?;
    let raw: Vec<(&'static str, Option<String>)> = vec![
        (keys::USR_ID, Some(id)),
        (keys::USR_LOGIN, pick(&["login", "username", "email", "user"])),
        (keys::USR_EMAIL, pick(&["email", "mail"])),
        (keys::USR_NAME, pick(&["name", "full_name", "fullname"])),
        (keys::USR_SESSION_ID, pick(&["session_id"])),
        (keys::USR_ROLE, pick(&["role"])),
        (keys::USR_SCOPE, pick(&["scope"])),
    ];
    on_current_root(
        |shared| Ok(shared.field_identity(raw.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())),
        |_, state, fields| {
            if !fields.identity.is_empty() {
                state.trace.identity.record_field(fields.identity);
            }
            // Field-path input: a blocked id blocks the trace (the response shows it).
            if let Some(user) = fields.blocked_user {
                state
                    .trace
                    .block(BlockReason::User(user), crate::ids::security_response_id());
            }
        },
    )
}
