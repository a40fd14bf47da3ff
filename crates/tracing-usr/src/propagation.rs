//! Carrying the trace and the propagated user id across services over HTTP headers (docs/tags.md "propagation"),
//! with the `http` crate's `HeaderMap` (so with reqwest, hyper, axum and tonic).
//!
//! Downstream: [`inject`] writes `x-datadog-trace-id`, `x-datadog-parent-id`,
//! `x-datadog-sampling-priority`, `x-datadog-tags` (with `_dd.p.usr.id` when a
//! `propagate = true` call set it), `traceparent` and `tracestate` (`dd` member, `t.usr.id`).
//!
//! Upstream: [`extract`] reads them back into a [`RemoteContext`], and [`set_parent`] makes it
//! the parent of a local root span. An incoming `_dd.p.usr.id` is kept on the trace and
//! re-injected downstream, but never becomes `usr.id`.
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! let layer = tracing_usr::builder().with_json_lines(tracing_usr::JsonLines::None).build();
//! tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
//!     let span = tracing::info_span!("checkout");
//!     let _enter = span.enter();
//!     tracing_usr::set_user(&tracing_usr::User::new("user-1"), tracing_usr::SetUserOptions::propagate()).unwrap();
//!     let mut headers = http::HeaderMap::new();
//!     tracing_usr::propagation::inject(&mut headers);
//!     assert!(headers["x-datadog-tags"].to_str().unwrap().contains("_dd.p.usr.id=dXNlci0x"));
//! });
//! ```

use std::fmt;

use http::{HeaderMap, HeaderValue};
use tracing_usr_core::identity::{Key, Tags};
use tracing_usr_core::propagation as wire;

use crate::layer::UserLayer;
use crate::root::SpanAccess;
use crate::sdk::{with_layer, SdkError};

/// `x-datadog-trace-id`.
pub const X_DATADOG_TRACE_ID: &str = "x-datadog-trace-id";
/// `x-datadog-parent-id`.
pub const X_DATADOG_PARENT_ID: &str = "x-datadog-parent-id";
/// `x-datadog-sampling-priority`.
pub const X_DATADOG_SAMPLING_PRIORITY: &str = "x-datadog-sampling-priority";
/// `x-datadog-tags`.
pub const X_DATADOG_TAGS: &str = "x-datadog-tags";
/// W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// Maximum length of `x-datadog-tags`, read when the layer is built. Defaults to 512.
pub const ENV_TAGS_MAX_LENGTH: &str = "DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH";

/// A trace context received from an upstream service.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteContext {
    /// The 128-bit trace id (`0` upper bits when only 64 were received).
    pub trace_id: u128,
    /// The upstream span, parent of the local root.
    pub parent_id: u64,
    /// The upstream sampling priority.
    pub sampling_priority: Option<i32>,
    /// The `_dd.p.*` propagation tags (the user id among them, base64).
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for RemoteContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteContext")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .field("parent_id", &format_args!("{:016x}", self.parent_id))
            .field("sampling_priority", &self.sampling_priority)
            .field("tags", &self.tags)
            .finish()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, parent, flags & 1 == 1))
}

/// Reads an upstream trace context: Datadog headers first, else W3C `traceparent`; the
/// propagation tags come from `x-datadog-tags` and the `tracestate` `dd` member (Datadog wins
/// on conflicts). `None` when no valid trace context is present. Never panics on bad input.
pub fn extract(headers: &HeaderMap) -> Option<RemoteContext> {
    let mut tags: Tags = header(headers, X_DATADOG_TAGS)
        .map(wire::parse_x_datadog_tags)
        .unwrap_or_default();
    let (state_priority, state_tags) = header(headers, TRACESTATE)
        .map(wire::parse_tracestate)
        .unwrap_or_default();
    for (key, value) in state_tags {
        if !tags.iter().any(|(k, _)| *k == key) {
            tags.push((key, value));
        }
    }
    let datadog = (|| {
        let low: u64 = header(headers, X_DATADOG_TRACE_ID)?
            .parse()
            .ok()
            .filter(|t| *t != 0)?;
        let parent: u64 = header(headers, X_DATADOG_PARENT_ID)?.parse().ok()?;
        let high = tags
            .iter()
            .find(|(k, _)| k == "_dd.p.tid")
            .and_then(|(_, v)| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let priority = header(headers, X_DATADOG_SAMPLING_PRIORITY).and_then(|p| p.parse().ok());
        Some((((high as u128) << 64) | low as u128, parent, priority))
    })();
    let (trace_id, parent_id, sampling_priority) = match datadog {
        Some(found) => found,
        None => {
            let (trace, parent, sampled) = parse_traceparent(header(headers, TRACEPARENT)?)?;
            (trace, parent, state_priority.or(Some(i32::from(sampled))))
        }
    };
    tags.retain(|(k, _)| k != "_dd.p.tid");
    Some(RemoteContext {
        trace_id,
        parent_id,
        sampling_priority,
        tags: tags.into_iter().map(|(k, v)| (k.into_owned(), v)).collect(),
    })
}

/// Makes `context` the remote parent of `span`, which must be a local root (no parent in the
/// registry). Call it right after creating the span, before any child span or event: the trace
/// id of records already emitted does not change. The upstream `_dd.p.*` tags (the user id among
/// them) are kept on the trace and re-injected downstream; they never become identity.
///
/// # Errors
/// [`SdkError::NotLocalRoot`] when `span` has a parent; [`SdkError::NoLayer`] /
/// [`SdkError::NoRoot`] when there is no layer or the span is disabled.
pub fn set_parent(span: &tracing::Span, context: RemoteContext) -> Result<(), SdkError> {
    span.with_subscriber(|(id, dispatch)| {
        let Some(layer) = dispatch.downcast_ref::<UserLayer>() else {
            return Err(SdkError::NoLayer);
        };
        let mut not_root = false;
        let mut context = Some(context);
        let remote = std::cell::RefCell::new(None);
        let found = layer.with_span(
            dispatch,
            id,
            &mut |access: SpanAccess<'_>| {
                if !access.is_root {
                    not_root = true;
                    return;
                }
                let context = context.take();
                if let (Some(data), Some(context)) = (access.data, context.as_ref()) {
                    data.trace_id = context.trace_id;
                    data.parent_id = Some(context.parent_id);
                }
                *remote.borrow_mut() = context;
            },
            &mut |state| {
                if let Some(remote) = remote.borrow_mut().take() {
                    if state.trace_id.is_some() {
                        state.trace_id = Some(remote.trace_id);
                    }
                    state.trace.set_upstream_priority(remote.sampling_priority);
                    state.trace.set_upstream_tags(
                        remote.tags.into_iter().map(|(k, v)| (Key::Owned(k), v)).collect(),
                    );
                }
            },
        );
        match (found, not_root) {
            (_, true) => Err(SdkError::NotLocalRoot),
            (true, false) => Ok(()),
            (false, false) => Err(SdkError::NoRoot),
        }
    })
    .unwrap_or(Err(SdkError::NoRoot))
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// Writes the current span's trace context into `headers` (see the module docs). Without a
/// tracing-usr layer or outside any span it writes nothing. When nothing is exported the layer
/// has no trace ids, and only `x-datadog-tags` and `tracestate` are written.
pub fn inject(headers: &mut HeaderMap) {
    with_layer(|dispatch, layer, span| {
        if let Some(id) = span {
            inject_for(dispatch, layer, id, headers);
        }
    });
}

/// [`inject`] for a given span instead of the current one.
pub fn inject_span(span: &tracing::Span, headers: &mut HeaderMap) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(layer) = dispatch.downcast_ref::<UserLayer>() {
            inject_for(dispatch, layer, id, headers);
        }
    });
}

fn inject_for(
    dispatch: &tracing::Dispatch,
    layer: &UserLayer,
    id: &tracing::span::Id,
    headers: &mut HeaderMap,
) {
    let ids = std::cell::Cell::new(None);
    let mut tags = Tags::new();
    let mut priority = 1;
    let max = layer.shared.tags_max_length;
    layer.with_span(
        dispatch,
        id,
        &mut |access: SpanAccess<'_>| ids.set(access.data.map(|d| (d.trace_id, d.span_id))),
        &mut |state| {
            tags = state.trace.propagation_tags();
            priority = state.trace.sampling_priority();
            let high = ids.get().map_or(0, |(trace, _)| (trace >> 64) as u64);
            let mut dd_tags = tags.clone();
            if high != 0 {
                dd_tags.insert(0, (Key::Borrowed("_dd.p.tid"), format!("{high:016x}")));
            }
            match wire::x_datadog_tags(&dd_tags, max) {
                Some(value) => {
                    if !value.is_empty() {
                        insert(headers, X_DATADOG_TAGS, value);
                    }
                }
                None => state
                    .trace
                    .set_root_tag("_dd.propagation_error", "inject_max_size".to_owned()),
            }
        },
    );
    if let Some((trace, span)) = ids.get() {
        insert(headers, X_DATADOG_TRACE_ID, (trace as u64).to_string());
        insert(headers, X_DATADOG_PARENT_ID, span.to_string());
        insert(headers, X_DATADOG_SAMPLING_PRIORITY, priority.to_string());
        let sampled = if priority > 0 { "01" } else { "00" };
        insert(
            headers,
            TRACEPARENT,
            format!("00-{trace:032x}-{span:016x}-{sampled}"),
        );
    }
    let dd = wire::tracestate_dd(Some(priority), &tags);
    insert(headers, TRACESTATE, format!("dd={dd}"));
}
