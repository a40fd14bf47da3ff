//! The OpenTelemetry names of a local root's user (docs/tags.md "OTLP attributes"): one mapping
//! from the root's `usr.*` tags to the semantic-convention attributes, used by the OTLP exporter
//! and by the live OpenTelemetry span of a tracing-opentelemetry pipeline.

use crate::keys;

/// The integer attribute that carries a keep (`_sampling_priority_v1`) in OpenTelemetry.
pub const SAMPLING_PRIORITY: &str = "sampling.priority";

/// One semantic-convention user attribute: its key, its value, and whether it is a one-element
/// string array (`user.roles`) rather than a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserAttribute<'a> {
    /// The attribute key (`user.id`, `user.email`, …).
    pub key: &'static str,
    /// The value, as the root's `usr.*` tag holds it (masking and the mode already applied).
    pub value: &'a str,
    /// Whether the value is exported as a one-element string array.
    pub array: bool,
}

/// For which identities a [`UserName`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// Always.
    Always,
    /// Only for a clear identity (not hashed by the field path in anonymization mode).
    Clear,
    /// Only for a hashed identity.
    Hashed,
}

/// How one `usr.*` tag is named in OpenTelemetry's semantic conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserName {
    /// The tracing-usr / Datadog tag (`usr.email`).
    pub tag: &'static str,
    /// The semantic-convention attribute (`user.email`).
    pub attribute: &'static str,
    /// Whether the attribute is a one-element string array rather than a string.
    pub array: bool,
    /// For which identities the attribute is written.
    pub applies: Applies,
}

const fn name(tag: &'static str, attribute: &'static str, array: bool, applies: Applies) -> UserName {
    UserName {
        tag,
        attribute,
        array,
        applies,
    }
}

/// The one naming table of a root's user in OpenTelemetry (docs/tags.md "OTLP attributes"),
/// in the order the attributes are written: `usr.id` is `user.hash` for an identity hashed in
/// anonymization mode, else `user.id` and `enduser.id`; `usr.login` is `user.name` (not for a
/// hashed identity); `usr.name` is `user.full_name`; `usr.role` is the array `user.roles`.
pub const USER_NAMES: [UserName; 8] = [
    name(keys::USR_ID, "user.hash", false, Applies::Hashed),
    name(keys::USR_ID, "user.id", false, Applies::Clear),
    name(keys::USR_ID, "enduser.id", false, Applies::Clear),
    name(keys::USR_EMAIL, "user.email", false, Applies::Always),
    name(keys::USR_LOGIN, "user.name", false, Applies::Clear),
    name(keys::USR_NAME, "user.full_name", false, Applies::Always),
    name(keys::USR_ROLE, "user.roles", true, Applies::Always),
    name(keys::USR_SESSION_ID, "session.id", false, Applies::Always),
];

/// Every key [`user_attributes`] may produce.
pub const USER_ATTRIBUTE_KEYS: [&str; 8] = {
    let mut keys = [""; 8];
    let mut i = 0;
    while i < USER_NAMES.len() {
        keys[i] = USER_NAMES[i].attribute;
        i += 1;
    }
    keys
};

/// The semantic-convention user attributes of a root whose `usr.*` tags `tag` looks up, in
/// the order of [`USER_NAMES`] (at most seven); `hashed`: the identity was hashed by the field
/// path in anonymization mode. Nothing without `usr.id`.
///
/// ```
/// use tracing_usr_core::semconv::user_attributes;
/// let tags = [("usr.id", "u-1"), ("usr.role", "admin")];
/// let lookup = |k: &str| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
/// let keys: Vec<_> = user_attributes(lookup, false).into_iter().flatten().map(|a| a.key).collect();
/// assert_eq!(keys, ["user.id", "enduser.id", "user.roles"]);
/// ```
pub fn user_attributes<'a>(
    tag: impl Fn(&str) -> Option<&'a str>,
    hashed: bool,
) -> [Option<UserAttribute<'a>>; 7] {
    let mut out = [None; 7];
    if tag(keys::USR_ID).is_none() {
        return out;
    }
    let applies = |a: Applies| match a {
        Applies::Always => true,
        Applies::Clear => !hashed,
        Applies::Hashed => hashed,
    };
    let found = USER_NAMES.iter().filter(|n| applies(n.applies)).filter_map(|n| {
        tag(n.tag).map(|value| UserAttribute {
            key: n.attribute,
            value,
            array: n.array,
        })
    });
    for (slot, entry) in out.iter_mut().zip(found) {
        *slot = Some(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(tags: &'a [(&'a str, &'a str)]) -> Vec<(&'static str, &'a str, bool)> {
        let hashed = tags.contains(&("_dd.appsec.user.collection_mode", "anonymization"));
        user_attributes(|k| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v), hashed)
            .into_iter()
            .flatten()
            .map(|a| (a.key, a.value, a.array))
            .collect()
    }

    #[test]
    fn a_clear_identity_maps_to_the_semantic_conventions() {
        let tags = [
            ("usr.id", "u-1"),
            ("usr.email", "a@b.c"),
            ("usr.login", "ada"),
            ("usr.name", "Ada"),
            ("usr.role", "admin"),
            ("usr.session_id", "s-1"),
            ("usr.scope", "read"),
        ];
        assert_eq!(
            attrs(&tags),
            [
                ("user.id", "u-1", false),
                ("enduser.id", "u-1", false),
                ("user.email", "a@b.c", false),
                ("user.name", "ada", false),
                ("user.full_name", "Ada", false),
                ("user.roles", "admin", true),
                ("session.id", "s-1", false),
            ]
        );
    }

    #[test]
    fn a_hashed_identity_gives_user_hash_and_no_login() {
        let tags = [
            ("usr.id", "anon_1"),
            ("usr.login", "anon_2"),
            ("usr.session_id", "anon_3"),
            ("_dd.appsec.user.collection_mode", "anonymization"),
        ];
        assert_eq!(
            attrs(&tags),
            [("user.hash", "anon_1", false), ("session.id", "anon_3", false)]
        );
    }

    #[test]
    fn no_id_no_attribute() {
        assert!(attrs(&[("usr.email", "a@b.c")]).is_empty());
    }

    #[test]
    fn every_produced_key_is_listed() {
        let tags = [
            ("usr.id", "u"),
            ("usr.email", "e"),
            ("usr.login", "l"),
            ("usr.name", "n"),
            ("usr.role", "r"),
            ("usr.session_id", "s"),
        ];
        for (key, _, _) in attrs(&tags) {
            assert!(USER_ATTRIBUTE_KEYS.contains(&key), "{key}");
        }
        assert!(USER_ATTRIBUTE_KEYS.contains(&"user.hash"));
    }
}
