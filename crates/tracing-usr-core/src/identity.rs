//! Identity buckets, the field-path mode rules and the merge of docs/tags.md "which identity reaches the root".

use std::sync::{Arc, OnceLock};

use crate::anonymize::Anonymizer;
use crate::keys;
use crate::mode::Mode;
use crate::user::{Secret, User};
use crate::value::Text;
use smallvec::SmallVec;

/// A type tag values are written as: `String` or [`Text`].
pub trait TagValue: From<String> + for<'a> From<&'a str> + From<Text> {}

impl<T: From<String> + for<'a> From<&'a str> + From<Text>> TagValue for T {}

pub use crate::value::{Key, Tags, UserTags};

/// Whether `key` is `name`. The keys of one callsite's fields are the same static strings, so
/// a pointer check settles most comparisons before any byte is compared.
#[inline]
fn is_key(key: &str, name: &str) -> bool {
    (key.as_ptr() == name.as_ptr() && key.len() == name.len()) || key == name
}

/// One identity bucket: `usr.*` tags, last write wins per key (docs/tags.md "which identity reaches the root", rule 1).
///
/// A typical identity (up to four keys, values up to 24 bytes) is held without an allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityBucket {
    entries: SmallVec<[(Key, Text); 4]>,
}

impl IdentityBucket {
    /// An empty bucket.
    pub const fn new() -> Self {
        Self {
            entries: SmallVec::new_const(),
        }
    }

    /// A bucket holding `entries` (written as by [`IdentityBucket::write`]).
    pub fn from_tags<V: Into<Text>>(entries: impl IntoIterator<Item = (Key, V)>) -> Self {
        let mut bucket = Self::new();
        bucket.write(entries);
        bucket
    }

    /// Writes `entries`: empty values are skipped; if they carry a `usr.id` different from the
    /// one held, the bucket is cleared first; then each key is last-write-wins.
    pub fn write<V: Into<Text>>(&mut self, entries: impl IntoIterator<Item = (Key, V)>) {
        for (key, value) in entries {
            self.write_one(key, value.into());
        }
    }

    /// Writes one entry as [`IdentityBucket::write`] does.
    pub fn write_one(&mut self, key: Key, value: Text) {
        if value.is_empty() {
            return;
        }
        let new_id = is_key(&key, keys::USR_ID) && self.is_other_id(&value);
        self.write_nonempty(key, value, new_id);
    }

    /// Whether the bucket holds a `usr.id` other than `id` (writing `id` then clears it).
    #[inline]
    fn is_other_id(&self, id: &str) -> bool {
        self.id().is_some_and(|held| held != id)
    }

    /// [`IdentityBucket::write_one`] for a non-empty value; `new_id`: the value is a `usr.id`
    /// other than the one held, so the bucket is cleared first.
    #[inline]
    fn write_nonempty(&mut self, key: Key, value: Text, new_id: bool) {
        if new_id {
            self.entries.clear();
        }
        match self.entries.iter_mut().find(|(k, _)| is_key(k, &key)) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value of `key`, if held.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| is_key(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// The `usr.id`, if held.
    #[inline]
    pub fn id(&self) -> Option<&str> {
        self.get(keys::USR_ID)
    }

    /// All entries, in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Key, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v.as_str()))
    }

    /// All entries, in insertion order, as a shared list (one allocation).
    pub fn shared(&self) -> UserTags {
        Arc::from(&self.entries[..])
    }

    /// All entries, in insertion order, as an owned list.
    pub fn to_tags(&self) -> Tags {
        self.iter().map(|(k, v)| (k.clone(), v.to_owned())).collect()
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

/// What the mode does to one field-path identity value (docs/tags.md "modes"): `None` means the value is not
/// collected. `key` is the full field name (`usr.id`, `usr.org`, …). The value is a `String` or
/// a [`Text`].
///
/// ```
/// use tracing_usr_core::{identity::apply_mode, Anonymizer, Mode};
/// let a = Anonymizer::default();
/// assert_eq!(apply_mode(Mode::Anonymization, "usr.id", "user-1".to_owned(), &a).as_deref(),
///            Some("anon_c6c289e49e9c05b2145860387b73bcb1"));
/// assert_eq!(apply_mode(Mode::Anonymization, "usr.email", "a@b.c".to_owned(), &a), None);
/// assert_eq!(apply_mode(Mode::Disabled, "usr.id", "user-1".to_owned(), &a), None);
/// ```
#[inline]
pub fn apply_mode<V>(mode: Mode, key: &str, value: V, anonymizer: &Anonymizer) -> Option<V>
where
    V: AsRef<str> + From<String>,
{
    match mode {
        Mode::Disabled => None,
        Mode::Identification => Some(value),
        Mode::Anonymization => match key {
            keys::USR_ID | keys::USR_LOGIN | keys::USR_SESSION_ID => {
                Some(anonymizer.anonymize(value.as_ref()).into())
            }
            keys::USR_ROLE | keys::USR_SCOPE | keys::USR_EXISTS => Some(value),
            _ => None,
        },
    }
}

/// The SDK identity of a trace: the [`User`] given to `identify` as it is (its tags are derived
/// when they are needed, so recording it copies nothing), or the tags of several calls merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum SdkIdentity {
    #[default]
    Empty,
    /// A user whose tags need no masking ([`User::to_tags`]), and those tags once derived.
    User(User, OnceLock<UserTags>),
    /// Boxed: rare, and it keeps the trace state small.
    Tags(Box<IdentityBucket>),
}

impl SdkIdentity {
    #[inline]
    fn id(&self) -> Option<&str> {
        match self {
            SdkIdentity::Empty => None,
            SdkIdentity::User(user, _) => Some(user.id()),
            SdkIdentity::Tags(bucket) => bucket.id(),
        }
    }

    fn view(&self) -> IdentityView<'_> {
        match self {
            SdkIdentity::User(user, tags) => IdentityView::User(user, tags),
            SdkIdentity::Tags(bucket) => IdentityView::Bucket(bucket),
            SdkIdentity::Empty => IdentityView::Bucket(&EMPTY_BUCKET),
        }
    }

    /// The bucket, materialised from the user if needed.
    fn bucket(&mut self) -> &mut IdentityBucket {
        match self {
            SdkIdentity::Tags(bucket) => bucket,
            other => {
                let tags = match other {
                    SdkIdentity::User(user, _) => user.to_tags(),
                    _ => Tags::new(),
                };
                *other = SdkIdentity::Tags(Box::new(IdentityBucket::from_tags(tags)));
                match other {
                    SdkIdentity::Tags(bucket) => bucket,
                    _ => unreachable!("just set"),
                }
            }
        }
    }
}

static EMPTY_BUCKET: IdentityBucket = IdentityBucket::new();

/// One identity source's tags, borrowed: a bucket, or a user whose tags are derived on demand.
#[derive(Clone, Copy, Debug)]
pub enum IdentityView<'a> {
    /// Tags held in a bucket.
    Bucket(&'a IdentityBucket),
    /// A user given to the SDK ([`User::to_tags`]), with the slot caching its tags.
    User(&'a User, &'a OnceLock<UserTags>),
}

impl<'a> IdentityView<'a> {
    /// Appends the tags to `out` (as `String` or [`Text`] values).
    pub fn extend_into<V: TagValue>(self, out: &mut Vec<(Key, V)>) {
        match self {
            IdentityView::Bucket(bucket) => out.extend(
                bucket
                    .entries
                    .iter()
                    .map(|(k, v)| (k.clone(), V::from(v.clone()))),
            ),
            IdentityView::User(user, tags) => match tags.get() {
                Some(tags) => out.extend(tags.iter().map(|(k, v)| (k.clone(), V::from(v.clone())))),
                None => user.visit_tags(|_, _| None, |k, v| out.push((k, V::from(&*v)))),
            },
        }
    }

    /// The tags, as a list.
    pub fn to_tags(self) -> Tags {
        let mut tags = Tags::new();
        self.extend_into(&mut tags);
        tags
    }

    /// The tags, shared: a user's are derived once and then handed out without copying.
    pub fn shared(self) -> UserTags {
        match self {
            IdentityView::Bucket(bucket) => bucket.shared(),
            IdentityView::User(user, tags) => Arc::clone(tags.get_or_init(|| {
                // Gathered on the stack, then one allocation for the shared list.
                let mut list: SmallVec<[(Key, Text); 8]> = SmallVec::new();
                user.visit_tags(|_, _| None, |k, v| list.push((k, Text::from(&*v))));
                Arc::from(&list[..])
            })),
        }
    }

    /// How many tags the view holds (a user's, once derived; else an estimate), to size a list.
    pub fn size_hint(self) -> usize {
        match self {
            IdentityView::Bucket(bucket) => bucket.entries.len(),
            IdentityView::User(_, tags) => tags.get().map_or(8, |tags| tags.len()),
        }
    }

    /// The `usr.id`, if any.
    pub fn id(self) -> Option<&'a str> {
        match self {
            IdentityView::Bucket(bucket) => bucket.id(),
            IdentityView::User(user, _) => Some(user.id()),
        }
    }
}

/// A private `_dd.appsec.usr.*` copy: usually the field bucket's own value (no second copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Private {
    #[default]
    None,
    /// The value the field bucket holds under the same key.
    Field,
    Own(String),
}

impl Private {
    fn get<'a>(&'a self, field: &'a IdentityBucket, key: &str) -> Option<&'a str> {
        match self {
            Private::None => None,
            Private::Field => field.get(key),
            Private::Own(value) => Some(value),
        }
    }

    /// Takes its own copy before the field bucket's value under `key` changes.
    fn detach(&mut self, field: &IdentityBucket, key: &str) {
        if *self == Private::Field {
            *self = field
                .get(key)
                .map_or(Private::None, |v| Private::Own(v.to_owned()));
        }
    }
}

/// The identity state of one trace, kept on its local root: the SDK identity, the field-path
/// bucket (already processed by the mode) and the private `_dd.appsec.usr.*` copies.
#[derive(Clone, Debug, Default)]
pub struct TraceIdentity {
    sdk: SdkIdentity,
    field: IdentityBucket,
    private_id: Private,
    private_login: Private,
    logged_out: bool,
    version: u64,
}

/// Where the public identity of a root or record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    pub fn record_field<V: Into<Text>>(&mut self, entries: impl IntoIterator<Item = (Key, V)>) {
        self.field_changed();
        for (key, value) in entries {
            let value: Text = value.into();
            if value.is_empty() {
                continue;
            }
            let mut new_id = false;
            if is_key(&key, keys::USR_ID) {
                new_id = self.field.is_other_id(&value);
                if new_id {
                    // The bucket is about to be cleared: the login copy keeps its value.
                    self.private_login.detach(&self.field, keys::USR_LOGIN);
                }
                self.private_id = Private::Field;
            } else if is_key(&key, keys::USR_LOGIN) {
                self.private_login = Private::Field;
            }
            self.field.write_nonempty(key, value, new_id);
        }
    }

    /// Updates the private `_dd.appsec.usr.*` copies only (field-path login and signup events,
    /// docs/tags.md "which identity reaches the root" rule 4a).
    pub fn record_private(&mut self, id: Option<&str>, login: Option<&str>) {
        if let Some(id) = id.filter(|v| !v.is_empty()) {
            self.private_id = Private::Own(id.to_owned());
        }
        if let Some(login) = login.filter(|v| !v.is_empty()) {
            self.private_login = Private::Own(login.to_owned());
        }
    }

    /// Records an SDK identity from tags: the SDK bucket takes `entries` (rule 1 applies) and log
    /// records that follow carry it again after a [`TraceIdentity::logout`].
    pub fn record_sdk(&mut self, entries: Tags) {
        self.version += 1;
        self.sdk.bucket().write(entries);
        self.logged_out = false;
    }

    /// Records an SDK identity from a user whose tags need no masking (no free-form attributes):
    /// the user is kept as it is (a cheap clone), its tags derived when they are needed. Rule 1
    /// applies as for [`TraceIdentity::record_sdk`].
    pub fn record_sdk_user(&mut self, user: User) {
        self.version += 1;
        self.logged_out = false;
        match &mut self.sdk {
            SdkIdentity::User(held, _) if *held == user => {}
            current if current.id().is_some_and(|id| id == user.id()) => {
                current.bucket().write(user.to_tags());
            }
            current => *current = SdkIdentity::User(user, OnceLock::new()),
        }
    }

    /// Ends the SDK association for what follows; the root keeps its tags.
    pub fn logout(&mut self) {
        self.version += 1;
        self.logged_out = true;
    }

    /// The SDK identity (empty when none was recorded).
    pub fn sdk(&self) -> IdentityView<'_> {
        self.sdk.view()
    }

    /// The field-path bucket.
    pub fn field(&self) -> &IdentityBucket {
        &self.field
    }

    /// A counter that changes whenever the identity [`TraceIdentity::current`] returns may have
    /// changed (for caches of it). A field-path write behind an SDK user in force leaves it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Bumps the version for a field-path write, unless an SDK user in force hides the field
    /// bucket from [`TraceIdentity::current`].
    #[inline]
    fn field_changed(&mut self) {
        if self.logged_out || self.sdk.id().is_none() {
            self.version += 1;
        }
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
    ) -> Option<(IdentityView<'a>, Source)> {
        if with_sdk && self.sdk.id().is_some() {
            Some((self.sdk.view(), Source::Sdk))
        } else if self.field.id().is_some() {
            Some((IdentityView::Bucket(&self.field), Source::Field(mode)))
        } else {
            default
                .filter(|d| d.id().is_some())
                .map(|d| (IdentityView::Bucket(d), Source::Sdk))
        }
    }

    /// The tags the local root exports (docs/tags.md "which identity reaches the root", "collection mode"): the public `usr.*` tags of the winning
    /// bucket with `_dd.appsec.user.collection_mode`, then the private field-path copies.
    /// `default` is the process-wide default identity.
    pub fn root_tags<V: TagValue>(
        &self,
        mode: Mode,
        default: Option<&IdentityBucket>,
        out: &mut Vec<(Key, V)>,
    ) {
        self.root_tags_with(mode, default, None, out);
    }

    /// [`TraceIdentity::root_tags`] when login or signup events were recorded:
    /// `login_events` is `Some(true)` if one came from the SDK, `Some(false)` if all came from
    /// the field path. Such events write the collection mode even without a public id.
    pub fn root_tags_with<V: TagValue>(
        &self,
        mode: Mode,
        default: Option<&IdentityBucket>,
        login_events: Option<bool>,
        out: &mut Vec<(Key, V)>,
    ) {
        let mut facts = crate::root::RootFacts::default();
        self.write_facts(mode, default, login_events, &mut facts);
        facts.write_tags(out, &mut Vec::new());
    }

    /// Fills the identity part of a root's facts (see [`TraceIdentity::root_tags_with`]): the
    /// public user, the collection mode and the private field-path copies.
    pub fn write_facts(
        &self,
        mode: Mode,
        default: Option<&IdentityBucket>,
        login_events: Option<bool>,
        facts: &mut crate::root::RootFacts,
    ) {
        let public = self.public(mode, default, true);
        if let Some((view, _)) = public {
            let mut entries = Vec::with_capacity(view.size_hint());
            view.extend_into(&mut entries);
            facts.user = crate::root::RootUser::new(entries);
        }
        if public.is_some() || login_events.is_some() {
            let sdk = public.is_some_and(|(_, source)| source == Source::Sdk) || login_events == Some(true);
            facts.collection_mode = Some(if sdk { Source::Sdk } else { Source::Field(mode) });
        }
        facts.private_id = self.private_id.get(&self.field, keys::USR_ID).map(Text::from);
        facts.private_login = self
            .private_login
            .get(&self.field, keys::USR_LOGIN)
            .map(Text::from);
    }

    /// Writes field-path identity without touching the private copies (the root `usr.id` of
    /// login-success and signup events).
    pub fn record_field_bucket_only(&mut self, entries: Tags) {
        self.field_changed();
        self.private_id.detach(&self.field, keys::USR_ID);
        self.private_login.detach(&self.field, keys::USR_LOGIN);
        self.field.write(entries);
    }

    /// The identity a log record emitted now carries: like the root's public identity, but
    /// without the SDK user after a logout.
    pub fn current(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(Tags, Source)> {
        self.public(mode, default, !self.logged_out)
            .map(|(view, source)| (view.to_tags(), source))
    }

    /// [`TraceIdentity::current`], shared: an SDK user's tags are derived once per trace.
    pub fn current_shared(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(UserTags, Source)> {
        self.public(mode, default, !self.logged_out)
            .map(|(view, source)| (view.shared(), source))
    }

    /// The root's final public identity, whatever `logout()` did (for records held until the
    /// root closes).
    pub fn final_identity(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(Tags, Source)> {
        self.public(mode, default, true)
            .map(|(view, source)| (view.to_tags(), source))
    }

    /// [`TraceIdentity::final_identity`], shared (as log records carry it).
    pub fn final_shared(&self, mode: Mode, default: Option<&IdentityBucket>) -> Option<(UserTags, Source)> {
        self.public(mode, default, true)
            .map(|(view, source)| (view.shared(), source))
    }

    /// The SDK user in force now (`None` after a logout): the user given to the SDK, or one
    /// rebuilt from merged tags with `token`.
    pub fn current_sdk_user(&self, token: impl FnOnce() -> Option<Secret>) -> Option<User> {
        if self.logged_out {
            return None;
        }
        match &self.sdk {
            SdkIdentity::Empty => None,
            SdkIdentity::User(user, _) => Some(user.clone()),
            SdkIdentity::Tags(bucket) => User::from_tags(&bucket.to_tags(), token()),
        }
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
            b.to_tags(),
            tags(&[("usr.id", "u1"), ("usr.email", "z@b.c"), ("usr.role", "admin")])
        );
    }

    #[test]
    fn short_and_long_values_read_back_alike() {
        // Up to 24 bytes are held inline, longer values on the heap; more than four keys spill.
        let long = "x".repeat(25);
        let mut b = IdentityBucket::new();
        b.write(tags(&[
            ("usr.id", "u1"),
            ("usr.email", long.as_str()),
            ("usr.name", "é".repeat(12).as_str()),
            ("usr.role", "r"),
            ("usr.scope", "s"),
        ]));
        b.write_one(Key::Borrowed("usr.email"), Text::from("short@x"));
        assert_eq!(b.get("usr.name"), Some("é".repeat(12).as_str()));
        assert_eq!(b.get("usr.email"), Some("short@x"));
        assert_eq!(b.to_tags().len(), 5);
        assert_eq!(b.iter().last(), Some((&Key::Borrowed("usr.scope"), "s")));
        b.write_one(Key::Borrowed("usr.role"), Text::from(long.clone()));
        assert_eq!(b.get("usr.role"), Some(long.as_str()));
    }

    #[test]
    fn a_different_id_clears_the_bucket() {
        let mut b = IdentityBucket::new();
        b.write(tags(&[("usr.id", "u1"), ("usr.email", "a@b.c")]));
        b.write(tags(&[("usr.id", "u2")]));
        assert_eq!(b.to_tags(), tags(&[("usr.id", "u2")]));
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

    #[test]
    fn sdk_users_merge_by_id_like_tags() {
        let mut t = TraceIdentity::default();
        t.record_sdk_user(User::new("s1").with_email("a@x"));
        t.record_sdk_user(User::new("s1").with_role("admin"));
        assert_eq!(
            t.sdk().to_tags(),
            tags(&[("usr.id", "s1"), ("usr.email", "a@x"), ("usr.role", "admin")])
        );
        t.record_sdk(tags(&[("usr.id", "s1"), ("usr.email", "b@x")]));
        assert_eq!(t.sdk().to_tags()[1].1, "b@x");
        // A different id replaces everything.
        t.record_sdk_user(User::new("s2"));
        assert_eq!(t.sdk().to_tags(), tags(&[("usr.id", "s2")]));
        let user = User::new("s3").with_token("tok");
        t.record_sdk_user(user.clone());
        assert_eq!(t.current_sdk_user(|| None), Some(user));
        // A field write behind the SDK user does not change what log records carry.
        let version = t.version();
        t.record_field(tags(&[("usr.id", "f1")]));
        assert_eq!(t.version(), version);
        t.logout();
        assert_eq!(t.current_sdk_user(|| None), None);
        let version = t.version();
        t.record_field(tags(&[("usr.id", "f2")]));
        assert_ne!(t.version(), version);
        assert_eq!(t.current(Mode::Identification, None).unwrap().0[0].1, "f2");
    }

    #[test]
    fn private_copies_survive_later_field_writes() {
        let mut t = TraceIdentity::default();
        t.record_field(tags(&[("usr.login", "l1"), ("usr.id", "f1")]));
        // A new id clears the bucket (rule 1) but the private login stays.
        t.record_field(tags(&[("usr.id", "f2")]));
        // The root id of a login event changes the bucket, not the private copies.
        t.record_field_bucket_only(tags(&[("usr.id", "f3")]));
        let mut out = Tags::new();
        t.root_tags(Mode::Identification, None, &mut out);
        assert_eq!(
            out,
            tags(&[
                ("usr.id", "f3"),
                ("_dd.appsec.user.collection_mode", "identification"),
                ("_dd.appsec.usr.id", "f2"),
                ("_dd.appsec.usr.login", "l1"),
            ])
        );
    }
}
