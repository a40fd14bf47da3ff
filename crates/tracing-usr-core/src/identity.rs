//! Identity buckets, the field-path mode rules and the merge of spec a.4.

use std::borrow::Cow;

use crate::anonymize::Anonymizer;
use crate::keys;
use crate::mode::Mode;

/// A tag key: static for field names, owned for dynamic keys.
pub type Key = Cow<'static, str>;

/// A list of tags, in insertion order.
pub type Tags = Vec<(Key, String)>;

/// One identity bucket: `usr.*` tags, last write wins per key (spec a.4, rule 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityBucket {
    entries: Tags,
}

impl IdentityBucket {
    /// An empty bucket.
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// A bucket holding `entries` (written as by [`IdentityBucket::write`]).
    pub fn from_tags(entries: impl IntoIterator<Item = (Key, String)>) -> Self {
        let mut bucket = Self::new();
        bucket.write(entries);
        bucket
    }

    /// Writes `entries`: empty values are skipped; if they carry a `usr.id` different from the
    /// one held, the bucket is cleared first; then each key is last-write-wins.
    pub fn write(&mut self, entries: impl IntoIterator<Item = (Key, String)>) {
        self.write_each(entries);
    }

    /// [`IdentityBucket::write`] for an owned list: an empty bucket takes the list as it is when
    /// it has no empty value and no repeated key (no allocation).
    pub fn write_tags(&mut self, entries: Tags) {
        let clean = entries
            .iter()
            .enumerate()
            .all(|(i, (key, value))| !value.is_empty() && !entries[..i].iter().any(|(k, _)| k == key));
        if self.entries.is_empty() && clean {
            self.entries = entries;
        } else {
            self.write_each(entries);
        }
    }

    fn write_each(&mut self, entries: impl IntoIterator<Item = (Key, String)>) {
        for (key, value) in entries {
            if value.is_empty() {
                continue;
            }
            if key == keys::USR_ID && self.id().is_some_and(|id| id != value) {
                self.entries.clear();
            }
            match self.entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.entries.push((key, value)),
            }
        }
    }

    /// The value of `key`, if held.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `usr.id`, if held.
    pub fn id(&self) -> Option<&str> {
        self.get(keys::USR_ID)
    }

    /// All entries, in insertion order.
    pub fn tags(&self) -> &[(Key, String)] {
        &self.entries
    }

    /// Whether the bucket holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the bucket.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// What the mode does to one field-path identity value (spec b.2): `None` means the value is not
/// collected. `key` is the full field name (`usr.id`, `usr.org`, …).
///
/// ```
/// use tracing_usr_core::{identity::apply_mode, Anonymizer, Mode};
/// let a = Anonymizer::default();
/// assert_eq!(apply_mode(Mode::Anonymization, "usr.id", "user-1".into(), &a).as_deref(),
///            Some("anon_c6c289e49e9c05b2145860387b73bcb1"));
/// assert_eq!(apply_mode(Mode::Anonymization, "usr.email", "a@b.c".into(), &a), None);
/// assert_eq!(apply_mode(Mode::Disabled, "usr.id", "user-1".into(), &a), None);
/// ```
pub fn apply_mode(mode: Mode, key: &str, value: String, anonymizer: &Anonymizer) -> Option<String> {
    match mode {
        Mode::Disabled => None,
        Mode::Identification => Some(value),
        Mode::Anonymization => match key {
            keys::USR_ID | keys::USR_LOGIN | keys::USR_SESSION_ID => Some(anonymizer.anonymize(&value)),
            keys::USR_ROLE | keys::USR_SCOPE | keys::USR_EXISTS => Some(value),
            _ => None,
        },
    }
}

/// The identity state of one trace, kept on its local root: the SDK bucket, the field-path
/// bucket (already processed by the mode) and the private `_dd.appsec.usr.*` copies.
#[derive(Clone, Debug, Default)]
pub struct TraceIdentity {
    sdk: IdentityBucket,
    field: IdentityBucket,
    private_id: Option<String>,
    private_login: Option<String>,
    logged_out: bool,
    version: u64,
}

/// Where the public identity of a root or record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An SDK call (or the process-wide default identity).
    Sdk,
    /// Span or event fields, processed by this mode.
    Field(Mode),
}

impl Source {
    /// The value of `_dd.appsec.user.collection_mode`.
    pub fn collection_mode(self) -> &'static str {
        match self {
            Source::Sdk => "sdk",
            Source::Field(mode) => mode.as_str(),
        }
    }
}

impl TraceIdentity {
    /// Records field-path identity (values already processed by the mode). `usr.id` and
    /// `usr.login` also update the private copies.
    pub fn record_field(&mut self, entries: Tags) {
        self.version += 1;
        for (key, value) in &entries {
            if value.is_empty() {
                continue;
            }
            match key.as_ref() {
                keys::USR_ID => self.private_id = Some(value.clone()),
                keys::USR_LOGIN => self.private_login = Some(value.clone()),
                _ => {}
            }
        }
        self.field.write_tags(entries);
    }

    /// Updates the private `_dd.appsec.usr.*` copies only (field-path login and signup events,
    /// spec a.4 rule 4a).
    pub fn record_private(&mut self, id: Option<&str>, login: Option<&str>) {
        self.version += 1;
        if let Some(id) = id.filter(|v| !v.is_empty()) {
            self.private_id = Some(id.to_owned());
        }
        if let Some(login) = login.filter(|v| !v.is_empty()) {
            self.private_login = Some(login.to_owned());
        }
    }

    /// Records an SDK identity: the SDK bucket takes `entries` (rule 1 applies) and log records
    /// that follow carry it again after a [`TraceIdentity::logout`].
    pub fn record_sdk(&mut self, entries: Tags) {
        self.version += 1;
        self.sdk.write_tags(entries);
        self.logged_out = false;
    }

    /// Ends the SDK association for what follows; the root keeps its tags.
    pub fn logout(&mut self) {
        self.version += 1;
        self.logged_out = true;
    }

    /// The SDK bucket.
    pub fn sdk(&self) -> &IdentityBucket {
        &self.sdk
    }

    /// The field-path bucket.
    pub fn field(&self) -> &IdentityBucket {
        &self.field
    }

    /// A counter that changes whenever the identity may have changed (for caches).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `logout()` was called since the last SDK identity.
    pub fn is_logged_out(&self) -> bool {
        self.logged_out
    }

    fn public<'a>(
        &'a self,
        mode: Mode,
        default: Option<&'a IdentityBucket>,
        with_sdk: bool,
    ) -> Option<(&'a IdentityBucket, Source)> {
        if with_sdk && self.sdk.id().is_some() {
            Some((&self.sdk, Source::Sdk))
        } else if self.field.id().is_some() {
            Some((&self.field, Source::Field(mode)))
        } else {
            default.filter(|d| d.id().is_some()).map(|d| (d, Source::Sdk))
        }
    }

    /// The tags the local root exports (spec a.4/a.5): the public `usr.*` tags of the winning
    /// bucket with `_dd.appsec.user.collection_mode`, then the private field-path copies.
    /// `default` is the process-wide default identity.
    pub fn root_tags(&self, mode: Mode, default: Option<&IdentityBucket>, out: &mut Tags) {
        self.root_tags_with(mode, default, None, out);
    }

    /// [`TraceIdentity::root_tags`] when login or signup events were recorded:
    /// `login_events` is `Some(true)` if one came from the SDK, `Some(false)` if all came from
    /// the field path. Such events write the collection mode even without a public id.
    pub fn root_tags_with(
        &self,
        mode: Mode,
        default: Option<&IdentityBucket>,
        login_events: Option<bool>,
        out: &mut Tags,
    ) {
        let public = self.public(mode, default, true);
        if let Some((bucket, _)) = public {
            out.extend(bucket.tags().iter().cloned());
        }
        if public.is_some() || login_events.is_some() {
            let sdk = public.is_some_and(|(_, source)| source == Source::Sdk) || login_events == Some(true);
            let value = if sdk { Source::Sdk } else { Source::Field(mode) }.collection_mode();
            out.push((Key::Borrowed(keys::COLLECTION_MODE), value.to_owned()));
        }
        if let Some(id) = &self.private_id {
            out.push((Key::Borrowed(keys::DD_APPSEC_USR_ID), id.clone()));
        }
        if let Some(login) = &self.private_login {
            out.push((Key::Borrowed(keys::DD_APPSEC_USR_LOGIN), login.clone()));
        }
    }

    /// Writes field-path identity without touching the private copies (the root `usr.id` of
    /// login-success and signup events).
    pub fn record_field_bucket_only(&mut self, entries: Tags) {
        self.version += 1;
        self.field.write_tags(entries);
    }

    /// The identity a log record emitted now carries: like the root's public identity, but
    /// without the SDK user after a logout.
    pub fn current(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(Tags, Source)> {
        self.public(mode, default, !self.logged_out)
            .map(|(bucket, source)| (bucket.tags().to_vec(), source))
    }

    /// The root's final public identity, whatever `logout()` did (for records held until the
    /// root closes).
    pub fn final_identity(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(Tags, Source)> {
        self.public(mode, default, true)
            .map(|(bucket, source)| (bucket.tags().to_vec(), source))
    }

    /// The SDK identity in force now (`None` after a logout).
    pub fn current_sdk(&self) -> Option<&IdentityBucket> {
        (!self.logged_out && self.sdk.id().is_some()).then_some(&self.sdk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&'static str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (Key::Borrowed(*k), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn later_value_overwrites_key_by_key() {
        let mut b = IdentityBucket::new();
        b.write(tags(&[("usr.id", "u1"), ("usr.email", "a@b.c")]));
        b.write(tags(&[("usr.id", "u1"), ("usr.role", "admin")]));
        b.write(tags(&[("usr.email", "z@b.c")]));
        assert_eq!(
            b.tags(),
            tags(&[("usr.id", "u1"), ("usr.email", "z@b.c"), ("usr.role", "admin")])
        );
    }

    #[test]
    fn a_different_id_clears_the_bucket() {
        let mut b = IdentityBucket::new();
        b.write(tags(&[("usr.id", "u1"), ("usr.email", "a@b.c")]));
        b.write(tags(&[("usr.id", "u2")]));
        assert_eq!(b.tags(), tags(&[("usr.id", "u2")]));
    }

    #[test]
    fn sdk_wins_and_private_copies_come_from_fields() {
        let mut t = TraceIdentity::default();
        t.record_field(tags(&[
            ("usr.id", "f1"),
            ("usr.login", "fl"),
            ("usr.email", "f@x"),
        ]));
        t.record_sdk(tags(&[("usr.id", "s1")]));
        let mut out = Tags::new();
        t.root_tags(Mode::Identification, None, &mut out);
        assert_eq!(
            out,
            tags(&[
                ("usr.id", "s1"),
                ("_dd.appsec.user.collection_mode", "sdk"),
                ("_dd.appsec.usr.id", "f1"),
                ("_dd.appsec.usr.login", "fl"),
            ])
        );
    }

    #[test]
    fn no_public_tags_without_an_id() {
        let mut t = TraceIdentity::default();
        t.record_field(tags(&[("usr.email", "a@b.c"), ("usr.login", "l")]));
        let mut out = Tags::new();
        t.root_tags(Mode::Identification, None, &mut out);
        assert_eq!(out, tags(&[("_dd.appsec.usr.login", "l")]));
    }

    #[test]
    fn default_identity_applies_only_without_ids() {
        let default = IdentityBucket::from_tags(tags(&[("usr.id", "cli")]));
        let mut t = TraceIdentity::default();
        let mut out = Tags::new();
        t.root_tags(Mode::Anonymization, Some(&default), &mut out);
        assert_eq!(
            out,
            tags(&[("usr.id", "cli"), ("_dd.appsec.user.collection_mode", "sdk")])
        );
        t.record_field(tags(&[("usr.id", "anon_x")]));
        out.clear();
        t.root_tags(Mode::Anonymization, Some(&default), &mut out);
        assert_eq!(
            out[1],
            (Key::Borrowed(keys::COLLECTION_MODE), "anonymization".to_owned())
        );
    }

    #[test]
    fn logout_hides_the_sdk_user_from_later_records_only() {
        let mut t = TraceIdentity::default();
        t.record_sdk(tags(&[("usr.id", "s1")]));
        t.logout();
        assert!(t.current(Mode::Identification, None).is_none());
        let mut out = Tags::new();
        t.root_tags(Mode::Identification, None, &mut out);
        assert_eq!(out[0].1, "s1");
        t.record_sdk(tags(&[("usr.id", "s2")]));
        assert_eq!(t.current(Mode::Identification, None).unwrap().0[0].1, "s2");
    }
}
