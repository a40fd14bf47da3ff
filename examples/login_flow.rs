//! A small login service: signup, failed logins, a successful login, a custom event, and a call
//! to a downstream service with the user id propagated. Exported as JSON lines on stdout.
//!
//! ```sh
//! cargo run --example login_flow
//! DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE=anon cargo run --example login_flow
//! ```
//!
//! Look at the local roots (`"local_root":true`): each carries the `appsec.events.*` tags that
//! Datadog's tracers write for the same calls, and `_sampling_priority_v1: 2` so no sampler drops
//! a login attempt. The failed logins use the field path (a plain `tracing` event with
//! `usr.event`), so the mode applies to them; the others use the SDK.

use std::collections::HashMap;

use serde_json::json;
use tracing::{info, info_span, warn};
use tracing_subscriber::prelude::*;
use tracing_usr::{SetUserOptions, User};

struct Accounts {
    by_login: HashMap<String, (String, String)>, // login → (user id, password)
    next_id: u32,
}

impl Accounts {
    fn signup(&mut self, login: &str, password: &str) -> String {
        let _request = info_span!("request", http.method = "POST", http.route = "/signup").entered();
        self.next_id += 1;
        let id = format!("u-{}", self.next_id);
        self.by_login
            .insert(login.to_owned(), (id.clone(), password.to_owned()));
        if let Err(e) = tracing_usr::track_signup(login, Some(&id), json!({"plan": "free"})) {
            warn!(error = %e, "signup not tracked");
        }
        info!(status = 201, "account created");
        id
    }

    fn login(&self, login: &str, password: &str) -> Option<String> {
        let _request = info_span!("request", http.method = "POST", http.route = "/login").entered();
        match self.by_login.get(login) {
            Some((id, expected)) if expected == password => {
                let user = User::new(id.as_str()).with_login(login).with_role("customer");
                if let Err(e) = tracing_usr::track_login_success(
                    login,
                    &user,
                    json!({"mfa": false}),
                    SetUserOptions::propagate(),
                ) {
                    warn!(error = %e, "login not tracked");
                }
                info!(status = 200, "logged in");
                Some(id.clone())
            }
            found => {
                // The field path: no SDK call, just fields on an event.
                let exists = found.is_some();
                info!(
                    usr.event = "users.login.failure",
                    usr.login = login,
                    usr.exists = exists,
                    reason = if exists { "bad password" } else { "unknown login" },
                    status = 401,
                    "login refused"
                );
                None
            }
        }
    }

    fn redeem_coupon(&self, user_id: &str, code: &str) {
        let _request = info_span!(
            "request",
            http.method = "POST",
            http.route = "/coupons",
            usr.id = user_id
        )
        .entered();
        if let Err(e) = tracing_usr::track_custom_event(
            "coupon.redeemed",
            json!({"code": code, "discount": {"percent": 10}}),
        ) {
            warn!(error = %e, "event not tracked");
        }
        // A call to a downstream service: the trace context and the propagated user id.
        let mut headers = http::HeaderMap::new();
        tracing_usr::propagation::inject(&mut headers);
        info!(downstream_tags = ?headers.get("x-datadog-tags"), "called the billing service");
    }
}

fn main() {
    tracing_subscriber::registry().with(tracing_usr::layer()).init();

    let mut accounts = Accounts {
        by_login: HashMap::new(),
        next_id: 0,
    };
    let id = accounts.signup("ada", "correct horse");
    accounts.login("ada", "wrong");
    accounts.login("mallory", "guess");
    if let Some(logged_in) = accounts.login("ada", "correct horse") {
        assert_eq!(logged_in, id);
        accounts.redeem_coupon(&logged_in, "SPRING10");
    }

    if let Err(e) = tracing_usr::shutdown() {
        eprintln!("export did not finish: {e}");
    }
}
