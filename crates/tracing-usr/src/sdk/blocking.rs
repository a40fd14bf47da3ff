//! Blocking from the application's side: the blocked-user check and the 403 answer
//! (docs/tags.md "blocking").

use crate::layer::UserLayer;

use super::{on_root, with_layer};

/// Whether `user_id` is on the blocked-user list of the current subscriber's layer (exact match,
/// unexpired). `false` without a tracing-usr layer.
pub fn is_user_blocked(user_id: &str) -> bool {
    with_layer(|_, layer, _| layer.shared.blocks.is_user_blocked(user_id)).unwrap_or(false)
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
        on_root(dispatch, layer, Some(id), &mut |state| {
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
