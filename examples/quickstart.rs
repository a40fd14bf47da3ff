//! A simulated request flow, exported as JSON lines on stdout with no collector.
//!
//! ```sh
//! cargo run --example quickstart
//! DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE=anon cargo run --example quickstart   # hashed ids
//! ```
//!
//! Every line is one span or log record (format: docs/json-lines.md). Look at the local roots
//! (`"local_root":true`): their `meta` carries the user of the request.

use tracing::{field, info, info_span, warn};
use tracing_subscriber::prelude::*;
use tracing_usr::User;

struct Account {
    id: &'static str,
    email: &'static str,
    login: &'static str,
}

const ALICE: Account = Account {
    id: "u-1001",
    email: "alice@example.com",
    login: "alice",
};
const BOB: Account = Account {
    id: "u-2002",
    email: "bob@example.com",
    login: "bob",
};

fn main() {
    tracing_subscriber::registry().with(tracing_usr::layer()).init();

    anonymous_request();
    login(&ALICE, "sess-a1");
    authenticated_request(&ALICE, "sess-a1", "/orders");
    authenticated_request(&BOB, "sess-b7", "/cart");
    logout_request(&BOB);
    request_with_secrets();

    // Export everything still queued before the process exits.
    if let Err(e) = tracing_usr::shutdown() {
        eprintln!("export did not finish: {e}");
    }
}

/// No user: the root carries no `usr.*` tag.
fn anonymous_request() {
    let _request = info_span!("request", http.method = "GET", http.route = "/health").entered();
    info!(status = 200, "healthy");
}

/// The user is found in a child span (the field path) and lifted onto the root.
fn login(account: &Account, session: &str) {
    let request = tracing_usr::user_span!(
        tracing::Level::INFO,
        "request",
        http.method = "POST",
        http.route = "/login"
    );
    let _enter = request.enter();
    info!("checking credentials");
    {
        let _auth = info_span!(
            "auth",
            usr.id = account.id,
            usr.login = account.login,
            usr.email = account.email,
            usr.session_id = session,
        )
        .entered();
        info!(method = "password", "credentials accepted");
    }
    info!(status = 200, "logged in");
}

/// The root declares `usr.id` as Empty and a grandchild fills it in later with `record`.
fn authenticated_request(account: &Account, session: &str, route: &'static str) {
    let request = info_span!(
        "request",
        http.method = "GET",
        http.route = route,
        usr.id = field::Empty
    );
    let _enter = request.enter();
    let _handler = info_span!("handler").entered();
    let _db = info_span!("db.query", db.system = "postgresql").entered();
    request.record("usr.id", account.id);
    info!(usr.session_id = session, rows = 3, "orders loaded");
}

/// The SDK path: identify, then logout; the event after logout carries no user.
fn logout_request(account: &Account) {
    let _request = info_span!("request", http.method = "POST", http.route = "/logout").entered();
    let user = User::new(account.id)
        .with_email(account.email)
        .with_role("customer");
    if let Err(e) = tracing_usr::identify(&user) {
        warn!(error = %e, "could not identify the user");
    }
    info!("session closed by the user");
    tracing_usr::logout();
    info!("after logout: this record carries no user");
}

/// Secrets are masked before anything leaves the process.
fn request_with_secrets() {
    let _request = info_span!(
        "request",
        http.method = "POST",
        http.route = "/api/keys",
        http.query = "page=1&password=hunter2",
        usr.id = ALICE.id,
        usr.token = "eyJhbGciOiJIUzI1NiJ9.secret-session-token",
    )
    .entered();
    info!(
        authorization = "Bearer abc.def-123",
        note = "Authorization: Bearer abc.def-123",
        "api key rotated"
    );
}
