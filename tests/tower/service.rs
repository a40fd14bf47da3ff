//! The tower rig: a request from a TCP peer, sent through [`UserTrackingLayer`] to a handler
//! with a test [`Harness`]'s layer as the subscriber.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};
use tracing_usr::export::SpanRecord;
use tracing_usr_tower::{PeerAddr, UserTrackingLayer};

use crate::support::Harness;

/// A GET of `uri` with `headers`, from the TCP peer `peer` (as a server would record it).
pub(crate) fn request(uri: &str, peer: &str, headers: &[(&str, &str)]) -> Request<String> {
    let mut builder = Request::builder().uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut request = builder.body(String::new()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 40_000)));
    request
}

/// Sends `request` through the middleware (trusting `trusted` as proxies) to `handler`.
pub(crate) async fn send<F, Fut>(
    h: &Harness,
    trusted: &[&str],
    handler: F,
    request: Request<String>,
) -> Response<String>
where
    F: FnMut(Request<String>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<String>, Infallible>> + Send + 'static,
{
    let mut service = UserTrackingLayer::new()
        .with_trusted_proxies(trusted)
        .unwrap()
        .layer(tower::service_fn(handler));
    let _guard = tracing::dispatcher::set_default(h.dispatch());
    service.ready().await.unwrap().call(request).await.unwrap()
}

/// The one local root exported since the last call (the exporter is cleared after).
pub(crate) fn only_root(h: &Harness) -> SpanRecord {
    let roots = h.roots();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    h.exporter.clear();
    roots.into_iter().next().unwrap()
}

/// The value of the request header `name`, if it is text.
pub(crate) fn header(request: &Request<String>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
