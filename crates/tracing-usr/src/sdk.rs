//! The explicit API (the SDK path): identify, logout, current_user.

use std::fmt;

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_usr_core::blocking::BlockReason;
use tracing_usr_core::identity::Tags;
use tracing_usr_core::{IdentityBucket, Masker, User};

use crate::layer::{CurrentRoot, DefaultUser, Shared, UserLayer};
use crate::state::RootState;

/// Why an SDK call wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdkError {
    /// A required argument (the user id, …) is empty or missing.
    MissingArgument(&'static str),
    /// The current subscriber has no tracing-usr layer.
    NoLayer,
    /// There is no local root to write to: the call was made outside any span, or the span is
    /// disabled or closed.
    NoRoot,
    /// The user is on the blocked-user list (docs/tags.md "blocking"): the caller must stop its work. The trace is
    /// marked as blocked (its root gets `appsec.blocked=true` and the trigger); the identity was
    /// still recorded.
    Blocked {
        /// The security response id to show the user (in the 403 body).
        security_response_id: String,
    },
    /// `set_parent` was given a span that has a parent in the registry.
    NotLocalRoot,
    /// `track_custom_event` was called with a name that has a dedicated call
    /// (`users.login.success`, `users.login.failure`, `users.signup`).
    ReservedEventName(String),
}

impl fmt::Display for SdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkError::MissingArgument(name) => write!(f, "required argument `{name}` is empty or missing"),
            SdkError::NoLayer => f.write_str("the current subscriber has no tracing-usr layer"),
            SdkError::NoRoot => {
                f.write_str("no local root to write to (outside any span, or the span is disabled or closed)")
            }
            SdkError::Blocked { security_response_id } => {
                write!(
                    f,
                    "the user is blocked (security response id {security_response_id})"
                )
            }
            SdkError::NotLocalRoot => {
                f.write_str("the span has a parent: only a local root can take a remote parent")
            }
            SdkError::ReservedEventName(name) => {
                write!(
                    f,
                    "event name `{name}` has a dedicated call; use it instead of track_custom_event"
                )
            }
        }
    }
}

impl std::error::Error for SdkError {}

/// The user's tags for the SDK bucket: free-form values masked, the token `<Redacted>`.
pub(crate) fn sdk_tags(user: &User, masker: &Masker) -> Tags {
    user.sdk_tags(|key, value| Some(masker.mask_field(key, value).into_owned()))
}

/// Runs `f` with the current dispatcher's layer and current span.
pub(crate) fn with_layer<R>(f: impl FnOnce(&Dispatch, &UserLayer, Option<&Id>) -> R) -> Option<R> {
    let mut f = Some(f);
    tracing::dispatcher::get_default(|dispatch| {
        let layer = dispatch.downcast_ref::<UserLayer>()?;
        let current = dispatch.current_span();
        f.take().map(|f| f(dispatch, layer, current.id()))
    })
}

/// Whether the current thread is inside a span of a subscriber with the layer.
pub(crate) fn current_span_exists() -> bool {
    with_layer(|_, _, span| span.is_some()).unwrap_or(false)
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
    let blocked = layer
        .shared
        .blocks
        .is_user_blocked(user.id())
        .then(crate::ids::security_response_id);
    // Free-form attributes are masked before the root is locked. Without them there is nothing
    // to mask: the trace keeps the user itself (a cheap clone) and derives its tags when they
    // are exported.
    let mut tags = (!user.extra().is_empty()).then(|| sdk_tags(user, &layer.shared.masker));
    let mut record = |_: &Shared, state: &mut RootState| {
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
            state
                .trace
                .block(BlockReason::User(user.id().to_owned()), rid.clone());
        }
    };
    let found = match span {
        None => layer.with_current_root(dispatch, &mut record),
        Some(id) if layer.with_root(dispatch, id, &mut record) => CurrentRoot::Found,
        Some(_) => CurrentRoot::Unknown,
    };
    match found {
        CurrentRoot::Found => {}
        CurrentRoot::NoSpan => {
            let tags = tags
                .take()
                .unwrap_or_else(|| sdk_tags(user, &layer.shared.masker));
            let bucket = IdentityBucket::from_tags(tags);
            layer.shared.set_default_user(Some(DefaultUser {
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

/// Whether `user_id` is on the blocked-user list of the current subscriber's layer (exact match,
/// unexpired). `false` without a tracing-usr layer.
pub fn is_user_blocked(user_id: &str) -> bool {
    with_layer(|_, layer, _| layer.shared.blocks.is_user_blocked(user_id)).unwrap_or(false)
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
        None => layer.shared.set_default_user(None),
        Some(id) => {
            layer.with_root(dispatch, id, &mut |_, state| {
                state.trace.identity.logout();
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
            layer.with_root(dispatch, id, &mut |_, state| {
                found = state.trace.identity.current_sdk_user(|| state.sdk_token.clone());
            });
        }
        found.or_else(|| layer.shared.default_user())
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

/// The 403 answer for a blocked request (docs/tags.md "blocking").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockResponse {
    /// The security response id (a UUID v4), also in the body and the trace's trigger.
    pub security_response_id: String,
    /// `application/json` or `text/html`, chosen from the request's `Accept` header.
    pub content_type: &'static str,
    /// The body, from the built-in or the configured template.
    pub body: String,
}

/// When the trace `span` belongs to is blocked (a blocked user or client IP, from the SDK or the
/// field path), the response to send instead of the application's: status 403, the body chosen
/// from `accept`. `None` when the trace is not blocked or has no tracing-usr layer. This is what
/// HTTP middlewares call once the handler has run (and before, for a blocked client IP).
pub fn block_response(span: &tracing::Span, accept: Option<&str>) -> Option<BlockResponse> {
    span.with_subscriber(|(id, dispatch)| {
        let layer = dispatch.downcast_ref::<UserLayer>()?;
        let mut found = None;
        layer.with_root(dispatch, id, &mut |_, state| {
            found = state.trace.blocked().map(str::to_owned);
        });
        let security_response_id = found?;
        let (content_type, body) = layer.shared.templates.render(accept, &security_response_id);
        Some(BlockResponse {
            security_response_id,
            content_type,
            body,
        })
    })
    .flatten()
}
