//! A [`tracing_subscriber::Layer`] that tells you **which end user** did what: it lifts `usr.*`
//! fields recorded on any span of a trace onto the trace's **local root span**, Datadog-style,
//! masks secrets, applies the identification / anonymization / disabled modes from the
//! environment, and exports spans and log records.
//!
//! # Quick start
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! let layer = tracing_usr::builder()
//!     .with_json_lines(tracing_usr::JsonLines::None) // the default writes JSON lines to stdout
//!     .build();
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     let request = tracing::info_span!("request", http.route = "/orders", usr.id = tracing::field::Empty);
//!     let _enter = request.enter();
//!     // …later, anywhere below it, in any child span:
//!     let _auth = tracing::info_span!("auth", usr.id = "u-42", usr.email = "ada@example.com").entered();
//! });
//! ```
//!
//! In an application, `tracing_subscriber::registry().with(tracing_usr::layer()).init()` and a
//! call to [`shutdown()`] before exit is all it takes; the exported root span `request`
//! carries `usr.id` and `usr.email`.
//!
//! The contract behind it is in [`guide`]: [every tag per mode and event](guide::tags), the
//! [detection rules](guide::detection), the [JSON-lines format](guide::json_lines), and
//! [migrating from Datadog's SDKs](guide::sdk_migration).
//!
//! # Special fields
//!
//! | field | meaning |
//! |---|---|
//! | `usr.id` | stable user id; **no user tag is written without it** |
//! | `usr.login`, `usr.name`, `usr.email`, `usr.session_id`, `usr.role`, `usr.scope` | the other standard keys |
//! | `usr.<key>` | free-form attributes, `<key>` used as given (`usr.org.name`); subject to masking |
//! | `usr.token` | always exported as `<Redacted>` |
//! | `usr.event`, `usr.exists` | reserved for business events on `tracing` events; ignored on spans |
//! | `http.client_ip`, `network.client.ip`, `client.address`, `http.useragent`, `user_agent.original` | on the root: the client IP (blocked-IP check, detection) and user agent (copied into signals); exported like any field |
//!
//! * Any span of a trace, and any event inside it, may carry `usr.*` fields; they are collected
//!   onto the trace's local root (the outermost span in the registry). They are **not** exported
//!   on the span or event that carried them: children never carry `usr.*` tags, and log records
//!   carry the trace's identity after the mode, never the raw fields.
//! * A later value overwrites an earlier one key by key. **Two identities in one trace:** a
//!   write whose `usr.id` differs from the one collected so far first forgets everything
//!   collected before (so the email of user A never ends up next to the id of user B); the last
//!   user wins.
//! * `tracing` fixes a span's fields when it is created: to fill `usr.id` in later, declare it
//!   `tracing::field::Empty` and call `Span::record` (recording an undeclared name is silently
//!   ignored by `tracing`). [`user_span!`] declares the seven standard keys for you.
//! * **Other layers see raw values.** A layer cannot change what its siblings see: masking and
//!   anonymization apply to this crate's exports only; a `fmt` layer next to it still prints raw
//!   `usr.*` fields.
//!
//! # The SDK path
//!
//! [`identify`] (or [`UserSpanExt::identify`]) attaches a [`User`] to the current trace's root.
//! SDK identity is never hashed or dropped by the mode, is tagged
//! `_dd.appsec.user.collection_mode=sdk`, and wins over identity collected from fields (the
//! field-path values still go to the private `_dd.appsec.usr.id` / `_dd.appsec.usr.login`
//! copies). [`logout`] ends the association for the log records that follow; [`current_user`]
//! reads it back. Outside any span, [`identify`] sets a process-wide default identity.
//!
//! # Business events
//!
//! [`track_login_success`], [`track_login_failure`], [`track_signup`], [`track_custom_event`]
//! and the helpers [`track_user_delete`], [`track_password_reset`], [`track_payment_failure`],
//! [`track_sensitive_activity`] write the `appsec.events.<name>.*` tags Datadog's tracers write,
//! with flattened [`EventMetadata`], and keep the trace (`_sampling_priority_v1` = 2). [`set_user`],
//! [`track_user`] and [`track_user_id`] set identity; [`record_user`] takes a whole user record
//! on the field path. The same events can be recorded without the SDK, from a `tracing` event
//! with a `usr.event` field (the mode applies there):
//!
//! ```
//! # let _ = tracing::info_span!("request").entered();
//! tracing::info!(usr.event = "users.login.failure", usr.login = "ada", usr.exists = true, reason = "bad password");
//! ```
//!
//! # Blocking
//!
//! Users on the blocked list ([`Builder::with_blocked_users`], a reloaded file, or
//! [`Handle::block_list`] at run time) make the identity calls return [`SdkError::Blocked`]; the
//! trace is kept and tagged (`appsec.blocked`, the `_dd.appsec.json` trigger), also when the id
//! came from fields. [`block_response`] gives the 403 answer; the `tracing-usr-tower` crate sends
//! it for tower/axum/hyper services and blocks listed client IPs.
//!
//! # Detection
//!
//! The business events, with the request's client IP, feed an in-process detector running
//! Datadog's account-takeover and business-logic rules (credential stuffing, brute force, signup
//! floods, …): a match raises a signal (a `WARN` event with target `tracing_usr::signal` by
//! default), tags the root span `tracing_usr.signal.<rule>`, and, where enabled, blocks the
//! attacking IP or the compromised account for 15 minutes. On by default, report-only; see
//! [`detection`].
//!
//! [`propagation`] carries the trace and a propagated user id (`_dd.p.usr.id`) across services
//! with `http::HeaderMap`s.
//!
//! # Modes
//!
//! | mode | field path |
//! |---|---|
//! | `identification` (default) | values as collected |
//! | `anonymization` | `usr.id`, `usr.login`, `usr.session_id` → `anon_` + 32 hex chars of SHA-256; `usr.email`, `usr.name` and free-form keys dropped; role and scope kept |
//! | `disabled` | nothing collected from fields leaves the process |
//!
//! # Environment variables
//!
//! Read once, in [`Builder::build`] (so also by [`layer()`]); a setting on the [`Builder`] wins.
//! Empty values count as unset; a bad value gives one warning (target `tracing_usr::config`)
//! and the fallback below.
//!
//! | variable | values | default / fallback |
//! |---|---|---|
//! | `DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE` | `identification`/`ident`, `anonymization`/`anon`, `disabled` | `identification`; invalid → `disabled` |
//! | `DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING` (deprecated) | `extended`; `safe`/`true`/`1`; `disabled`/`false`/`0` | read only if the above is unset; invalid → `disabled` |
//! | `DD_APPSEC_AUTOMATED_USER_EVENTS_TRACKING_ENABLED` | `true`/`1`, `false`/`0` | `true`; `false` (or invalid) forces `disabled` |
//! | `DD_APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP` | a regex | Datadog's default key pattern; invalid → default |
//! | `DD_APPSEC_OBFUSCATION_PARAMETER_VALUE_REGEXP` | a regex | Datadog's default value pattern; invalid → default |
//! | `TRACING_USR_EXPORT` | `stdout`, `file:PATH`, `none` | `stdout` when no collector or other exporter is configured; invalid → `stdout`; unopenable file → `stdout` |
//! | `DD_REMOTE_CONFIGURATION_ENABLED` | `true`, `false` | `true` (with the Datadog exporter): blocks set in Datadog apply ([`Builder::with_remote_config`]); invalid → `true` |
//! | `DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS` | seconds, fractions allowed | `5`; invalid → `5` |
//! | `TRACING_USR_EXPORT_RETRY_SECONDS` | seconds, fractions allowed | `300`: how long a failed export request is retried; invalid → `300` |
//! | `TRACING_USR_EXPORT_SPOOL_DIR` | a directory | no spool; set, records the collectors cannot take wait there ([`Builder::with_spool`]) |
//! | `TRACING_USR_EXPORT_SPOOL_MAX_MB` | megabytes | `256`; invalid → `256` |
//! | `DD_TRACE_AGENT_URL`, `DD_AGENT_HOST`, `DD_TRACE_AGENT_PORT` | agent URL (`http://`, `unix://`), host, port | any of them enables the Datadog exporter (`localhost:8126`) |
//! | `DD_SERVICE`, `DD_ENV`, `DD_VERSION`, `DD_TAGS` | service, environment, version, `k:v` tags | executable name, none |
//! | `TRACING_USR_DD_LOGS` | `stdout`, `file:PATH`, `none` | Datadog log lines on `stdout` when the Datadog exporter runs |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `…_TRACES_ENDPOINT`, `…_LOGS_ENDPOINT` | URLs | any of them enables the OTLP exporter |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_PROTOCOL`, `…_TIMEOUT`, `…_COMPRESSION` | headers, `http/protobuf`/`http/json`, ms, `gzip` | none, `http/protobuf`, `10000`, none |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | OTLP resource | `DD_SERVICE`, executable name |
//! | `DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH` | bytes | `512` |
//! | `TRACING_USR_DETECTION` | `on`, `off` | `on`; invalid → `on` |
//! | `TRACING_USR_DETECTION_FILE` | JSON detection settings ([`detection::parse_config`]) | the rules' defaults; invalid → defaults |
//! | `TRACING_USR_REDIS_URL`, `TRACING_USR_REDIS_SECRET`, `TRACING_USR_REDIS_PREFIX`, `TRACING_USR_REDIS_CA_FILE` (feature `redis`) | `redis://`, `rediss://` or `unix:` URL; the cluster secret; key prefix; a PEM CA for `rediss://` | detection in process; with a URL but no secret, in process and a warning; `tracing-usr:{<service>}:`; the system's roots |
//!
//! # Export
//!
//! Spans are exported when their trace's local root closes (so the root's user tags are
//! final), children first; log records when they are emitted, with the user of their trace at
//! that moment (or, with [`Builder::with_retroactive_logs`], held until the root closes and
//! stamped with its final user). Records go through a bounded queue to a background thread
//! that applies the value masking rule and runs the exporters; the application never waits on
//! I/O, and a full queue drops and counts records ([`Handle::stats`]). Call [`shutdown()`]
//! (or keep a [`ShutdownGuard`]) before the process exits, or queued records are lost.
//!
//! # Feature flags
//!
//! * `datadog` (default): the Datadog agent exporter and Datadog log lines.
//! * `otlp` (default): the OTLP/HTTP exporter.
//! * `opentelemetry`: be the user layer of a tracing-opentelemetry pipeline (tracing-opentelemetry
//!   0.34, opentelemetry 0.33, dd-trace-rs): in the same registry, in either order, the tags of a
//!   local root are also written as attributes of its OpenTelemetry span, with the
//!   semantic-convention user attributes; with no exporter of its own configured, tracing-usr
//!   then exports nothing itself. [`guide::tags`] lists the attributes ("OTLP attributes").
//! * `redis`: detection windows, signals and blocks shared by the replicas of a service on Redis
//!   (redis-rs, tokio connection manager): [`Builder::with_redis`], `TRACING_USR_REDIS_URL`; see
//!   the `detection` module.
//!
//! Without both, the crate does not compile reqwest, tokio, rmp or prost, and exports JSON lines
//! (or to exporters of your own).
//!
//! # Implementation notes
//!
//! * Whether a callsite declares `usr.*` fields, and which of its field names the key masking
//!   rule matches, is decided once per callsite and cached; with export off, spans without
//!   `usr.*` fields cost one cache lookup.
//! * Per-trace state lives in the local root's registry extensions under private types; the
//!   layer never holds two spans' extension locks at once and never calls into `tracing` or an
//!   exporter while holding one.
//! * The interest check is not a per-layer filter (a filtered layer would find the wrong root).
//!   If you wrap this layer in a per-layer filter anyway, the local root is the outermost span
//!   that filter lets through.
//! * Configuration warnings are emitted through the dispatcher the layer was registered with, at
//!   its first callback (emitting from `on_register_dispatch` itself can deadlock tracing-core's
//!   dispatcher registry).
//!
//! # Missing
//!
//! OTLP over gRPC is not supported; neither is a sampler (the keep decision is written, and
//! `x-datadog-sampling-priority` is 1 unless a keep or an upstream priority says otherwise).
//! Detection counts per process: replicas of a service each see their own share of an attack.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)]

mod block_file;
mod callsite;
mod clock;
pub mod collectors;
mod config;
mod default_user;
pub mod detection;
pub mod guide;
mod handle;
mod ids;
mod layer;
#[cfg(feature = "opentelemetry")]
mod otel;
#[cfg(feature = "opentelemetry")]
mod otel_guard;
#[cfg(feature = "opentelemetry")]
mod otel_sync;
pub mod propagation;
#[cfg(feature = "datadog")]
pub mod remote;
mod root;
mod sdk;
mod shared;
mod state;
mod visit;
mod warn;

pub use config::{
    BuildError, Builder, JsonLines, ENV_BLOCKED_TEMPLATE_HTML, ENV_BLOCKED_TEMPLATE_JSON,
    ENV_BLOCKED_USERS_FILE, ENV_EXPORT, ENV_KEY_REGEXP, ENV_MODE, ENV_MODE_DEPRECATED, ENV_MODE_ENABLED,
    ENV_SPOOL_DIR, ENV_SPOOL_MAX_MB, ENV_VALUE_REGEXP,
};
pub use handle::{shutdown, Handle, ShutdownGuard};
pub use layer::UserLayer;
#[cfg(feature = "opentelemetry")]
pub use otel_guard::{otel_guard, OtelGuard};
pub use sdk::{
    block_response, current_user, identify, is_user_blocked, logout, record_user, set_user,
    track_custom_event, track_login_failure, track_login_success, track_password_reset,
    track_payment_failure, track_sensitive_activity, track_signup, track_user, track_user_delete,
    track_user_id, BlockResponse, EventMetadata, LoginUser, SdkError, SetUserOptions, UserSpanExt,
};
pub use tracing_usr_core::{blocking, keys, Mode, Secret, User, REDACTED};

/// The export side: record model, [`Exporter`](export::Exporter) trait, pipeline, JSON lines
/// and the in-memory exporter for tests.
pub mod export {
    pub use tracing_usr_export::*;
}

#[doc(hidden)]
pub mod __private {
    pub use tracing;
}

/// The layer, configured from the environment. Same as `builder().build()`.
pub fn layer() -> UserLayer {
    Builder::new().build()
}

/// A [`Builder`] to configure the layer in code.
pub fn builder() -> Builder {
    Builder::new()
}

/// A span that declares the seven standard identity keys as `tracing::field::Empty`, so they
/// can be filled in later with `Span::record`. Takes a level, a name and any other fields.
///
/// ```
/// let span = tracing_usr::user_span!(tracing::Level::INFO, "request", http.route = "/orders");
/// span.record("usr.id", "u-42");
/// ```
#[macro_export]
macro_rules! user_span {
    ($level:expr, $name:expr $(, $($fields:tt)*)?) => {
        $crate::__private::tracing::span!(
            $level,
            $name,
            usr.id = $crate::__private::tracing::field::Empty,
            usr.login = $crate::__private::tracing::field::Empty,
            usr.name = $crate::__private::tracing::field::Empty,
            usr.email = $crate::__private::tracing::field::Empty,
            usr.session_id = $crate::__private::tracing::field::Empty,
            usr.role = $crate::__private::tracing::field::Empty,
            usr.scope = $crate::__private::tracing::field::Empty
            $(, $($fields)*)?
        )
    };
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
