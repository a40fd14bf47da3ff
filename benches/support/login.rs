//! The login request of the detection benches: a root span with the client IP and user agent,
//! a handler span and one login event, its keys rotating over 1,000 IPs and 5,000 accounts (so
//! the detector's tables miss the cache as in a real attack).

use std::cell::Cell;

use tracing_usr::SetUserOptions;

/// Client IPs the requests rotate over.
pub const IPS: u32 = 1000;
/// Accounts the requests rotate over.
pub const ACCOUNTS: usize = 5000;

/// The rotating keys, built once so the request itself does not format them.
pub struct Logins {
    ips: Vec<String>,
    logins: Vec<String>,
    n: Cell<usize>,
}

impl Logins {
    pub fn new() -> Self {
        Self {
            ips: (0..IPS)
                .map(|i| std::net::Ipv4Addr::from(0xc633_6400 + i).to_string())
                .collect(),
            logins: (0..ACCOUNTS).map(|i| format!("user-{i}")).collect(),
            n: Cell::new(0),
        }
    }

    /// One login request with the next keys: a success, or a failed login.
    pub fn request(&self, success: bool) {
        let n = self.n.get().wrapping_add(1);
        self.n.set(n);
        let ip = &self.ips[n % self.ips.len()];
        let login = &self.logins[(n * 7) % self.logins.len()];
        let _root = tracing::info_span!(
            "http.request",
            http.client_ip = ip.as_str(),
            http.useragent = "bench/1"
        )
        .entered();
        let _handler = tracing::info_span!("login").entered();
        if success {
            let _ = tracing_usr::track_login_success(login, login.as_str(), (), SetUserOptions::default());
        } else {
            let _ = tracing_usr::track_login_failure(login, true, None, ());
        }
    }
}
