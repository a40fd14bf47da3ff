//! Shared by the middleware tests.

use std::net::SocketAddr;

use http::Request;
use tracing_usr_tower::PeerAddr;

/// A GET of `uri` with `headers`, from the TCP peer `peer` (as a server would record it).
pub fn request(uri: &str, peer: &str, headers: &[(&str, &str)]) -> Request<String> {
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
