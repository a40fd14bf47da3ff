//! The SDK's [`User`] and the [`Secret`] wrapper that keeps tokens out of every output.

use std::fmt;
use std::sync::Arc;

use crate::keys;
use crate::mask::REDACTED;

/// A value that must never be printed or exported in clear, such as a session token.
///
/// `Debug` and `Display` print [`REDACTED`]; the raw value is reachable only through
/// [`Secret::expose`], which this crate never calls on an export path.
///
/// ```
/// use tracing_usr_core::Secret;
/// let token = Secret::new("eyJhbGciOi.secret");
/// assert_eq!(format!("{token:?} {token}"), "<Redacted> <Redacted>");
/// assert_eq!(token.expose(), "eyJhbGciOi.secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// An end user, as the application knows it (the SDK path).
///
/// `id` is mandatory; every other attribute is optional. Extra attributes are exported as
/// `usr.<key>`; the token is exported, if at all, as `usr.token` = `<Redacted>`.
///
/// ```
/// use tracing_usr_core::User;
/// let user = User::new("u-42")
///     .with_email("ada@example.com")
///     .with_role("admin")
///     .with_extra("org", "acme")
///     .with_token("s3cr3t-session-token");
/// assert_eq!(user.id(), "u-42");
/// assert!(!format!("{user:?}").contains("s3cr3t"));
/// ```
///
/// Cloning a `User` is cheap (its attributes are shared, copied on the first change of a clone),
/// so the SDK's `identify` keeps the user itself instead of copying its attributes.
#[derive(Clone)]
pub struct User {
    inner: Arc<UserData>,
}

impl PartialEq for User {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner == other.inner
    }
}

impl Eq for User {}

#[derive(Clone, PartialEq, Eq)]
struct UserData {
    id: String,
    login: Option<String>,
    email: Option<String>,
    name: Option<String>,
    session_id: Option<String>,
    role: Option<String>,
    scope: Option<String>,
    extra: Vec<(String, String)>,
    token: Option<Secret>,
}

macro_rules! optional_attr {
    ($(#[$doc:meta] $with:ident $get:ident;)*) => {$(
        #[$doc]
        #[must_use]
        pub fn $with(mut self, value: impl Into<String>) -> Self {
            Arc::make_mut(&mut self.inner).$get = Some(value.into());
            self
        }
    )*};
}

macro_rules! optional_get {
    ($(#[$doc:meta] $get:ident;)*) => {$(
        #[$doc]
        pub fn $get(&self) -> Option<&str> {
            self.inner.$get.as_deref()
        }
    )*};
}

impl User {
    /// A user with the given id (`usr.id`). An empty id is accepted here and rejected by the
    /// SDK calls, which then write nothing.
    pub fn new(id: impl Into<String>) -> Self {
        Self::from_data(UserData {
            id: id.into(),
            login: None,
            email: None,
            name: None,
            session_id: None,
            role: None,
            scope: None,
            extra: Vec::new(),
            token: None,
        })
    }

    fn from_data(data: UserData) -> Self {
        Self {
            inner: Arc::new(data),
        }
    }

    optional_attr! {
        /// Sets `usr.login`, what the user typed to authenticate.
        with_login login;
        /// Sets `usr.email`.
        with_email email;
        /// Sets `usr.name`, the display name.
        with_name name;
        /// Sets `usr.session_id`.
        with_session_id session_id;
        /// Sets `usr.role` (one string, never split).
        with_role role;
        /// Sets `usr.scope`.
        with_scope scope;
    }

    /// Adds a free-form attribute, exported as `usr.<key>` (a leading `usr.` is accepted and not
    /// doubled). A later value for the same key replaces the earlier one.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let key = key
            .strip_prefix(keys::USR_PREFIX)
            .map(str::to_owned)
            .unwrap_or(key);
        let value = value.into();
        let data = Arc::make_mut(&mut self.inner);
        match data.extra.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => data.extra.push((key, value)),
        }
        self
    }

    /// Sets the user's token. It is never printed and never exported in clear.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).token = Some(Secret::new(token));
        self
    }

    /// The user id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    optional_get! {
        /// The login, if set.
        login;
        /// The email, if set.
        email;
        /// The display name, if set.
        name;
        /// The session id, if set.
        session_id;
        /// The role, if set.
        role;
        /// The scope, if set.
        scope;
    }

    /// The free-form attributes, keys without the `usr.` prefix.
    pub fn extra(&self) -> &[(String, String)] {
        &self.inner.extra
    }

    /// The token, if set.
    pub fn token(&self) -> Option<&Secret> {
        self.inner.token.as_ref()
    }

    /// The user as `usr.*` tags, id first. Empty values are left out; the token becomes
    /// `usr.token` = `<Redacted>`. Free-form keys that collide with a standard key are skipped.
    pub fn to_tags(&self) -> crate::value::Tags {
        self.sdk_tags(|_, _| None)
    }
}

impl User {
    /// The user an identity bucket describes (the inverse of [`User::to_tags`]), with `token`;
    /// `None` when the bucket has no `usr.id`. The `usr.token` tag, always `<Redacted>`, is not
    /// read back.
    pub fn from_tags(tags: &[(crate::value::Key, String)], token: Option<Secret>) -> Option<Self> {
        let id = tags.iter().find(|(k, _)| k == keys::USR_ID)?.1.clone();
        let mut user = User::new(id);
        let data = Arc::make_mut(&mut user.inner);
        data.token = token;
        for (key, value) in tags {
            let slot = match key.as_ref() {
                keys::USR_ID | keys::USR_TOKEN => continue,
                keys::USR_LOGIN => &mut data.login,
                keys::USR_EMAIL => &mut data.email,
                keys::USR_NAME => &mut data.name,
                keys::USR_SESSION_ID => &mut data.session_id,
                keys::USR_ROLE => &mut data.role,
                keys::USR_SCOPE => &mut data.scope,
                other => {
                    let extra = other.strip_prefix(keys::USR_PREFIX).unwrap_or(other);
                    data.extra.push((extra.to_owned(), value.clone()));
                    continue;
                }
            };
            *slot = Some(value.clone());
        }
        Some(user)
    }

    /// The user as `usr.*` tags for the SDK bucket: standard keys are static, free-form values go
    /// through `mask` (key, value) → masked value.
    pub fn sdk_tags(&self, mask: impl FnMut(&str, &str) -> Option<String>) -> crate::value::Tags {
        let mut tags = Vec::with_capacity(8 + self.inner.extra.len());
        self.visit_tags(mask, |key, value| tags.push((key, value.into_owned())));
        tags
    }

    /// Calls `f` with each of [`User::sdk_tags`]'s tags, borrowing the values it does not mask.
    pub fn visit_tags(
        &self,
        mut mask: impl FnMut(&str, &str) -> Option<String>,
        mut f: impl FnMut(crate::value::Key, std::borrow::Cow<'_, str>),
    ) {
        use crate::value::Key;
        use std::borrow::Cow;
        let standard = [
            (keys::USR_ID, Some(self.inner.id.as_str())),
            (keys::USR_LOGIN, self.login()),
            (keys::USR_NAME, self.name()),
            (keys::USR_EMAIL, self.email()),
            (keys::USR_SESSION_ID, self.session_id()),
            (keys::USR_ROLE, self.role()),
            (keys::USR_SCOPE, self.scope()),
        ];
        for (key, value) in standard {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                f(Key::Borrowed(key), Cow::Borrowed(value));
            }
        }
        for (key, value) in &self.inner.extra {
            let key = format!("{}{key}", keys::USR_PREFIX);
            if value.is_empty() || keys::is_standard_key(&key) || key == keys::USR_TOKEN {
                continue;
            }
            let value = match mask(&key, value) {
                Some(masked) => Cow::Owned(masked),
                None => Cow::Borrowed(value.as_str()),
            };
            f(Key::Owned(key), value);
        }
        if self.inner.token.is_some() {
            f(Key::Borrowed(keys::USR_TOKEN), Cow::Borrowed(REDACTED));
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &*self.inner;
        f.debug_struct("User")
            .field("id", &u.id)
            .field("login", &u.login)
            .field("email", &u.email)
            .field("name", &u.name)
            .field("session_id", &u.session_id)
            .field("role", &u.role)
            .field("scope", &u.scope)
            .field("extra", &u.extra)
            .field("token", &u.token)
            .finish()
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}", self.inner.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_never_printed() {
        let user = User::new("u1").with_token("tok-123456");
        assert!(!format!("{user:?}").contains("tok-123456"));
        assert!(!format!("{user}").contains("tok-123456"));
        let tags = user.to_tags();
        assert!(tags.contains(&("usr.token".into(), REDACTED.to_owned())));
        assert!(!tags.iter().any(|(_, v)| v.contains("tok-123456")));
    }

    #[test]
    fn tags_skip_empty_values_and_keep_extra_keys_with_dots() {
        let user = User::new("u1")
            .with_email("")
            .with_extra("usr.org.name", "acme")
            .with_extra("id", "spoof");
        assert_eq!(
            user.to_tags(),
            vec![
                ("usr.id".into(), "u1".to_owned()),
                ("usr.org.name".into(), "acme".to_owned())
            ]
        );
        let back = User::from_tags(&user.to_tags(), None).unwrap();
        assert_eq!(back, User::new("u1").with_extra("org.name", "acme"));
    }
}
