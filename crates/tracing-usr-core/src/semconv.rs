//! The OpenTelemetry names of a local root's user (docs/tags.md "OTLP attributes"): one mapping
//! from the root's `usr.*` tags to the semantic-convention attributes, used by the OTLP exporter
//! and by the live OpenTelemetry span of a tracing-opentelemetry pipeline.

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

/// Every key [`user_attributes`] may produce.
pub const USER_ATTRIBUTE_KEYS: [&str; 8] = [
    "user.hash",
    "user.id",
    "enduser.id",
    "user.email",
    "user.name",
    "user.full_name",
    "user.roles",
    "session.id",
];

/// The semantic-convention user attributes of a root whose tags `tag` looks up, in a fixed
/// order (at most seven): `user.id` and `enduser.id` from `usr.id` (or `user.hash` when the id was
/// hashed by the field path in anonymization mode), `user.email`, `user.name` from `usr.login`
/// (not for a hashed identity), `user.full_name` from `usr.name`, `user.roles` from `usr.role`,
/// `session.id` from `usr.session_id`. Nothing without `usr.id`.
///
/// ```
/// use tracing_usr_core::semconv::user_attributes;
/// let tags = [("usr.id", "u-1"), ("usr.role", "admin")];
/// let lookup = |k: &str| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
/// let keys: Vec<_> = user_attributes(lookup).into_iter().flatten().map(|a| a.key).collect();
/// assert_eq!(keys, ["user.id", "enduser.id", "user.roles"]);
/// ```
pub fn user_attributes<'a>(tag: impl Fn(&str) -> Option<&'a str>) -> [Option<UserAttribute<'a>>; 7] {
    let mut out = [None; 7];
    let Some(id) = tag("usr.id") else {
        return out;
    };
    let hashed = tag("_dd.appsec.user.collection_mode") == Some("anonymization");
    let attr = |key, value, array| UserAttribute { key, value, array };
    let candidates = [
        hashed.then(|| attr("user.hash", id, false)),
        (!hashed).then(|| attr("user.id", id, false)),
        (!hashed).then(|| attr("enduser.id", id, false)),
        tag("usr.email").map(|v| attr("user.email", v, false)),
        tag("usr.login")
            .filter(|_| !hashed)
            .map(|v| attr("user.name", v, false)),
        tag("usr.name").map(|v| attr("user.full_name", v, false)),
        tag("usr.role").map(|v| attr("user.roles", v, true)),
        tag("usr.session_id").map(|v| attr("session.id", v, false)),
    ];
    for (slot, entry) in out.iter_mut().zip(candidates.into_iter().flatten()) {
        *slot = Some(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(tags: &'a [(&'a str, &'a str)]) -> Vec<(&'static str, &'a str, bool)> {
        user_attributes(|k| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v))
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
