//! [tower] middleware for [tracing-usr](https://docs.rs/tracing-usr): works with axum, tonic and
//! hyper services.
//!
//! For every request, [`UserTrackingLayer`]:
//!
//! * opens the request's root span (`http.request`, with `http.method`, `url.path`,
//!   `http.useragent`, `http.status_code`) and runs the inner service inside it, so the user that
//!   the handler identifies lands on it;
//! * takes the trace context of the incoming headers as the remote parent
//!   ([`tracing_usr::propagation`]);
//! * finds the client IP — the peer address, or the forwarding headers (`X-Forwarded-For`,
//!   `Forwarded`, `X-Real-IP`, …) only when the peer is one of the configured trusted proxies —
//!   and records it as `http.client_ip` / `network.client.ip`;
//! * answers a blocked client IP with 403 before calling the service, and replaces the response
//!   of a request whose user turned out blocked (SDK or field path) with 403; the body is JSON
//!   or HTML by the `Accept` header, and the root span gets `http.status_code=403`.
//!
//! The peer address is read from the request's extensions: a [`PeerAddr`] or a
//! `std::net::SocketAddr` (with axum, copy `ConnectInfo<SocketAddr>` into one).
//!
//! ```
//! use tracing_usr_tower::UserTrackingLayer;
//! let layer = UserTrackingLayer::new().with_trusted_proxies(["10.0.0.0/8", "127.0.0.1"]).unwrap();
//! # let _ = layer;
//! ```
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod client_ip;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;
use tracing::Instrument;

pub use client_ip::{IpRange, ParseRangeError};

/// The connection's peer address, for requests whose extensions carry no `SocketAddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Debug, Default)]
struct Config {
    trusted: Vec<IpRange>,
}

/// The middleware's [`Layer`]. Defaults: no trusted proxy (forwarding headers are ignored).
#[derive(Clone, Debug, Default)]
pub struct UserTrackingLayer {
    config: Arc<Config>,
}

impl UserTrackingLayer {
    /// A layer that trusts no proxy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts forwarding headers from these peers (addresses or `ADDRESS/PREFIX` ranges).
    /// Defaults to none.
    ///
    /// # Errors
    /// [`ParseRangeError`] for a malformed entry.
    pub fn with_trusted_proxies<I, T>(self, ranges: I) -> Result<Self, ParseRangeError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let trusted = ranges
            .into_iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config: Arc::new(Config { trusted }),
        })
    }
}

impl<S> Layer<S> for UserTrackingLayer {
    type Service = UserTracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UserTracking {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The middleware's [`Service`]; see the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct UserTracking<S> {
    inner: S,
    config: Arc<Config>,
}

fn forbidden<B: From<String>>(block: tracing_usr::BlockResponse) -> Response<B> {
    let mut response = Response::new(B::from(block.body));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(block.content_type),
    );
    response
}

fn peer(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for UserTracking<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let peer = peer(request.extensions());
        let client = client_ip::client_ip(peer, request.headers(), &self.config.trusted);
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = tracing::info_span!(
            parent: None,
            "http.request",
            http.method = %request.method(),
            url.path = %request.uri().path(),
            http.client_ip = Empty,
            network.client.ip = Empty,
            http.useragent = Empty,
            http.status_code = Empty,
        );
        if let Some(remote) = tracing_usr::propagation::extract(request.headers()) {
            let _ = tracing_usr::propagation::set_parent(&span, remote);
        }
        if let Some(ua) = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            span.record("http.useragent", ua);
        }
        if let Some(peer) = peer {
            span.record("network.client.ip", peer.to_string().as_str());
        }
        if let Some(client) = client {
            span.record("http.client_ip", client.to_string().as_str());
        }
        // A blocked client IP never reaches the service.
        if let Some(block) = tracing_usr::block_response(&span, accept.as_deref()) {
            span.record("http.status_code", "403");
            return Box::pin(std::future::ready(Ok(forbidden(block))));
        }
        // The clone that was polled ready is the one to call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).instrument(span.clone()).await?;
            if let Some(block) = tracing_usr::block_response(&span, accept.as_deref()) {
                span.record("http.status_code", "403");
                return Ok(forbidden(block));
            }
            span.record("http.status_code", response.status().as_str());
            Ok(response)
        })
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
