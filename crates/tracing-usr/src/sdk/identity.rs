//! Who the trace's user is: `identify`, `set_user`, `track_user*`, `record_user`, `logout`,
//! `current_user` (docs/tags.md "identity from the SDK", "identity from a user record").

use serde::Serialize;
use serde_json::Value;
use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_usr_core::identity::{Key, Tags};
use tracing_usr_core::{events, keys, IdentityBucket, Masker, User};

use super::metadata::EventMetadata;
use super::{
    blocked, blocked_outcome, mark_blocked, on_current_root, on_root, optional, required, with_layer,
    SdkError,
};
use crate::default_user::DefaultUser;
use crate::layer::UserLayer;
use crate::root::CurrentRoot;
use crate::shared::Shared;
use crate::state::RootState;

/// The user's tags for the SDK bucket: free-form values masked, the token `<Redacted>`.
pub(crate) fn sdk_tags(user: &User, masker: &Masker) -> Tags {
    user.sdk_tags(|key, value| Some(masker.mask_field(key, value).into_owned()))
}

pub(crate) fn identify_with(user: &User, propagate: bool) -> Result<(), SdkError> {
    if user.id().is_empty() {
        return Err(SdkError::MissingArgument("id"));
    }
    tracing::dispatcher::get_default(|dispatch| {
        let layer = dispatch.downcast_ref::<UserLayer>()?;
        Some(identify_in(dispatch, layer, None, user, propagate))
    })
    .unwrap_or(Err(SdkError::NoLayer))
}

/// `span`: the span whose trace gets the user; `None` for the current span (or the process-wide
/// default outside any span).
fn identify_in(
    dispatch: &Dispatch,
    layer: &UserLayer,
    span: Option<&Id>,
    user: &User,
    propagate: bool,
) -> Result<(), SdkError> {
    let blocked = blocked(&layer.shared, user.id());
    // Free-form attributes are masked before the root is locked. Without them there is nothing
    // to mask: the trace keeps the user itself (a cheap clone) and derives its tags when they
    // are exported.
    let mut tags = (!user.extra().is_empty()).then(|| sdk_tags(user, &layer.shared.masker));
    let mut record = |state: &mut RootState| {
        // Kept for `current_user()` should a later `set_user` merge tags in.
        state.sdk_token = user.token().cloned();
        match tags.take() {
            None => state.trace.identity.record_sdk_user(user.clone()),
            Some(tags) => state.trace.identity.record_sdk(tags),
        }
        if propagate {
            state.trace.propagate_user_id(user.id());
        }
        if let Some(rid) = &blocked {
            mark_blocked(state, user.id().to_owned(), rid.clone());
        }
    };
    match on_root(dispatch, layer, span, &mut record) {
        CurrentRoot::Found => {}
        CurrentRoot::NoSpan => {
            let tags = tags
                .take()
                .unwrap_or_else(|| sdk_tags(user, &layer.shared.masker));
            let bucket = IdentityBucket::from_tags(tags);
            layer.shared.default_user.set(Some(DefaultUser {
                user: user.clone(),
                bucket,
            }));
        }
        CurrentRoot::Unknown => return Err(SdkError::NoRoot),
    }
    match blocked {
        Some(security_response_id) => Err(SdkError::Blocked { security_response_id }),
        None => Ok(()),
    }
}

/// Attaches `user` to the local root of the current trace (the SDK path): its tags are written
/// on the root as given, never hashed or dropped by the mode, with
/// `_dd.appsec.user.collection_mode=sdk`, and win over identity collected from fields. Log
/// records emitted afterwards in the trace carry the user.
///
/// Called outside any span, it sets the process-wide default identity, used by every trace and
/// event that has no identity of its own, until [`logout`].
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty id; [`SdkError::NoLayer`] when the current
/// subscriber has no tracing-usr layer. Nothing is written then.
///
/// ```
/// use tracing_usr::User;
/// let span = tracing::info_span!("request");
/// let _entered = span.enter();
/// // With no tracing-usr layer installed the call reports it instead of panicking.
/// assert_eq!(tracing_usr::identify(&User::new("u-1")), Err(tracing_usr::SdkError::NoLayer));
/// ```
pub fn identify(user: &User) -> Result<(), SdkError> {
    identify_with(user, false)
}

/// Ends the SDK association for what follows: in a trace, log records emitted after it carry no
/// SDK user, while the local root keeps the tags it had (the request was made by that user);
/// outside any span, it clears the process-wide default identity. Does nothing without a
/// tracing-usr layer.
pub fn logout() {
    with_layer(|dispatch, layer, span| match span {
        None => layer.shared.default_user.set(None),
        Some(id) => {
            on_root(dispatch, layer, Some(id), &mut |state| {
                state.trace.identity.logout()
            });
        }
    });
}

/// The SDK user in force: the one [`identify`] attached to the current trace (unless
/// [`logout`] followed), else the process-wide default identity. Identity collected from
/// `usr.*` fields is not returned (it may be hashed or dropped by the mode).
pub fn current_user() -> Option<User> {
    with_layer(|dispatch, layer, span| {
        let mut found = None;
        if let Some(id) = span {
            on_root(dispatch, layer, Some(id), &mut |state| {
                found = state.trace.identity.current_sdk_user(|| state.sdk_token.clone());
            });
        }
        found.or_else(|| layer.shared.default_user.user())
    })
    .flatten()
}

/// SDK calls on a given span instead of the current one.
pub trait UserSpanExt {
    /// [`identify`] for the trace this span belongs to.
    ///
    /// # Errors
    /// As [`identify`]; [`SdkError::NoRoot`] when the span is disabled.
    fn identify(&self, user: &User) -> Result<(), SdkError>;
}

impl UserSpanExt for tracing::Span {
    fn identify(&self, user: &User) -> Result<(), SdkError> {
        if user.id().is_empty() {
            return Err(SdkError::MissingArgument("id"));
        }
        self.with_subscriber(|(id, dispatch)| match dispatch.downcast_ref::<UserLayer>() {
            Some(layer) => identify_in(dispatch, layer, Some(id), user, false),
            None => Err(SdkError::NoLayer),
        })
        .unwrap_or(Err(SdkError::NoRoot))
    }
}

/// Options of [`set_user`] and [`track_login_success`](crate::track_login_success).
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

/// [`identify`] with options: `set_user(user, SetUserOptions::default())` is `identify(user)`
/// (the SDK path, docs/tags.md "identity from the SDK": each given attribute as `usr.<key>` on
/// the local root, `_dd.appsec.user.collection_mode=sdk`, never changed by the mode, winning
/// over field-path identity). With `options.propagate`, also `_dd.p.usr.id` for downstream
/// services. Outside any span it sets the process-wide default identity (never propagated).
///
/// # Errors
/// [`SdkError::MissingArgument`] for an empty id, [`SdkError::NoLayer`] without a tracing-usr
/// layer. Nothing is written then.
pub fn set_user(user: &User, options: SetUserOptions) -> Result<(), SdkError> {
    identify_with(user, options.propagate)
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
            blocked_outcome(state, blocked)
        },
    )
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
                mark_blocked(state, user, crate::ids::security_response_id());
            }
        },
    )
}
