//! The explicit API (the SDK path): identity calls, business events and blocking, with what
//! they share: the error type, the one way to reach a trace's root, the one blocked-user check.

mod blocking;
mod events;
mod identity;
mod metadata;

use std::fmt;
use std::sync::Arc;

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_usr_core::blocking::BlockReason;

pub use blocking::{block_response, is_user_blocked, BlockResponse};
pub use events::{
    track_custom_event, track_login_failure, track_login_success, track_password_reset,
    track_payment_failure, track_sensitive_activity, track_signup, track_user_delete, LoginUser,
};
pub use identity::{
    current_user, identify, logout, record_user, set_user, track_user, track_user_id, SetUserOptions,
    UserSpanExt,
};
pub use metadata::EventMetadata;

use crate::layer::UserLayer;
use crate::root::CurrentRoot;
use crate::shared::Shared;
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

/// Runs `f` on the local root of `span`, or of the current span (`None`): the one way the SDK
/// reaches a trace's root.
pub(crate) fn on_root(
    dispatch: &Dispatch,
    layer: &UserLayer,
    span: Option<&Id>,
    f: &mut dyn FnMut(&mut RootState),
) -> CurrentRoot {
    match span {
        None => layer.with_current_root(dispatch, f),
        Some(id) if layer.with_root(dispatch, id, f) => CurrentRoot::Found,
        Some(_) => CurrentRoot::Unknown,
    }
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
        let shared = &*layer.shared;
        on_root(dispatch, layer, Some(id), &mut |state| {
            if let Some((prepared, apply)) = slot.take() {
                outcome = apply(shared, state, prepared).into_outcome();
                signals = crate::detection::run::take(state);
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

/// The one blocked-user check of the SDK: a fresh security response id when `user_id` is on
/// the blocked-user list.
pub(crate) fn blocked(shared: &Shared, user_id: &str) -> Option<String> {
    shared
        .blocks
        .is_user_blocked(user_id)
        .then(crate::ids::security_response_id)
}

/// Marks the trace blocked by `user_id` with the security response id `rid`.
pub(crate) fn mark_blocked(state: &mut RootState, user_id: String, rid: String) {
    state.trace.block(BlockReason::User(user_id), rid);
}

/// [`mark_blocked`] when `blocked` names a user, and the outcome: the blocked verdict, or `Ok`.
pub(crate) fn blocked_outcome(
    state: &mut RootState,
    blocked: Option<(String, String)>,
) -> Result<(), SdkError> {
    match blocked {
        Some((user_id, security_response_id)) => {
            mark_blocked(state, user_id, security_response_id.clone());
            Err(SdkError::Blocked { security_response_id })
        }
        None => Ok(()),
    }
}
