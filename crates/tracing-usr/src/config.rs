//! Configuration: the [`Builder`], the environment variables, and their precedence.
//!
//! Every variable is read in one place, [`Builder::build`], through the builder's lookup
//! function (the process environment unless [`Builder::with_env_lookup`] replaces it), never in
//! `Default`. A setting made on the builder always wins over its variable.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use tracing_usr_core::mask::{self, PatternKind};
use tracing_usr_core::mode::{self, ConfigWarning, ModeVars};
use tracing_usr_core::{Masker, Mode, PatternError};
use tracing_usr_export::spool::SpoolConfig;
use tracing_usr_export::{Exporter, JsonLinesExporter, PipelineConfig};

use crate::layer::UserLayer;

/// A JSON file of blocked users, reloaded when it changes.
pub const ENV_BLOCKED_USERS_FILE: &str = "TRACING_USR_BLOCKED_USERS_FILE";
/// A file replacing the JSON block body; every `[security_response_id]` in it is replaced.
pub const ENV_BLOCKED_TEMPLATE_JSON: &str = "DD_APPSEC_HTTP_BLOCKED_TEMPLATE_JSON";
/// A file replacing the HTML block page; every `[security_response_id]` in it is replaced.
pub const ENV_BLOCKED_TEMPLATE_HTML: &str = "DD_APPSEC_HTTP_BLOCKED_TEMPLATE_HTML";

/// Selects the embedded JSON-lines export: `stdout`, `file:PATH` or `none`.
pub const ENV_EXPORT: &str = "TRACING_USR_EXPORT";
/// Directory of the export spool (off when unset): records the collectors cannot take wait
/// there, and are sent at the next start.
pub const ENV_SPOOL_DIR: &str = "TRACING_USR_EXPORT_SPOOL_DIR";
/// Size cap of the spool, in megabytes (default 256).
pub const ENV_SPOOL_MAX_MB: &str = "TRACING_USR_EXPORT_SPOOL_MAX_MB";
pub use tracing_usr_core::mask::{ENV_KEY_REGEXP, ENV_VALUE_REGEXP};
pub use tracing_usr_core::mode::{ENV_MODE, ENV_MODE_DEPRECATED, ENV_MODE_ENABLED};

/// Where the embedded JSON-lines exporter writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonLines {
    /// One JSON object per line on standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
    /// No JSON lines (other exporters are not affected).
    None,
}

impl JsonLines {
    fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("stdout") {
            Some(JsonLines::Stdout)
        } else if v.eq_ignore_ascii_case("none") {
            Some(JsonLines::None)
        } else {
            v.strip_prefix("file:")
                .filter(|p| !p.is_empty())
                .map(|p| JsonLines::File(PathBuf::from(p)))
        }
    }
}

/// An invalid setting given to the [`Builder`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A masking pattern does not compile.
    Pattern(PatternError),
    /// Detection settings are invalid (or their file cannot be read).
    Detection(crate::detection::DetectionConfigError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Pattern(e) => e.fmt(f),
            BuildError::Detection(e) => write!(f, "invalid detection settings: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Pattern(e) => Some(e),
            BuildError::Detection(e) => Some(e),
        }
    }
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds a [`UserLayer`]. Every setter states its default; settings made here win over the
/// environment.
///
/// ```
/// use tracing_usr::{JsonLines, Mode};
/// let layer = tracing_usr::builder()
///     .with_mode(Mode::Anonymization)
///     .with_json_lines(JsonLines::None)
///     .with_key_pattern(Some(r"(?i)pass|token|secret"))
///     .expect("valid pattern")
///     .build();
/// # drop(layer);
/// ```
#[must_use]
pub struct Builder {
    pub(crate) mode: Option<Mode>,
    pub(crate) export: Option<JsonLines>,
    pub(crate) exporters: Vec<Box<dyn Exporter>>,
    key_pattern: Option<Option<Regex>>,
    value_pattern: Option<Option<Regex>>,
    pub(crate) retroactive: bool,
    pub(crate) pipeline: PipelineConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_spans_per_trace: usize,
    pub(crate) anonymizer_capacity: usize,
    clock: Option<Arc<dyn tracing_usr_core::blocking::Clock>>,
    blocked_users: Vec<tracing_usr_core::blocking::BlockEntry>,
    blocked_ips: Vec<tracing_usr_core::blocking::BlockEntry>,
    blocked_users_file: Option<(PathBuf, Duration)>,
    remote_config: Option<(bool, Option<Duration>)>,
    #[cfg(feature = "redis")]
    redis: Option<crate::detection::RedisConfig>,
    detection: Option<crate::detection::DetectionConfig>,
    detection_enabled: Option<bool>,
    sink: Option<Box<dyn crate::detection::SignalSink>>,
    #[cfg(feature = "datadog")]
    datadog: Option<tracing_usr_export::datadog::DatadogConfig>,
    #[cfg(feature = "otlp")]
    otlp: Option<tracing_usr_export::otlp::OtlpConfig>,
    lookup: Lookup,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("mode", &self.mode)
            .field("export", &self.export)
            .field(
                "exporters",
                &self
                    .exporters
                    .iter()
                    .map(|e| e.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("retroactive", &self.retroactive)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with every setting at its default (read from the environment at
    /// [`Builder::build`]).
    pub fn new() -> Self {
        Self {
            mode: None,
            export: None,
            exporters: Vec::new(),
            key_pattern: None,
            value_pattern: None,
            retroactive: false,
            pipeline: PipelineConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
            max_spans_per_trace: 1000,
            anonymizer_capacity: tracing_usr_core::Anonymizer::DEFAULT_CAPACITY,
            clock: None,
            blocked_users: Vec::new(),
            blocked_ips: Vec::new(),
            blocked_users_file: None,
            remote_config: None,
            #[cfg(feature = "redis")]
            redis: None,
            detection: None,
            detection_enabled: None,
            sink: None,
            #[cfg(feature = "datadog")]
            datadog: None,
            #[cfg(feature = "otlp")]
            otlp: None,
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Sets the mode of the field path, overriding the mode variables. Defaults to the
    /// variables, else [`Mode::Identification`].
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the embedded JSON-lines export, overriding `TRACING_USR_EXPORT`. Defaults to the
    /// variable, else [`JsonLines::Stdout`] when no other exporter is configured and
    /// [`JsonLines::None`] otherwise.
    pub fn with_json_lines(mut self, export: JsonLines) -> Self {
        self.export = Some(export);
        self
    }

    /// Adds an exporter (for example an [`InMemoryExporter`](crate::export::InMemoryExporter)
    /// in tests). Defaults to none.
    pub fn with_exporter(mut self, exporter: impl Exporter) -> Self {
        self.exporters.push(Box::new(exporter));
        self
    }

    /// Exports traces to a Datadog agent (and Datadog-format log lines, see
    /// `TRACING_USR_DD_LOGS`), whatever the environment says. Defaults to the Datadog variables:
    /// the exporter runs when `DD_TRACE_AGENT_URL`, `DD_AGENT_HOST` or `DD_TRACE_AGENT_PORT` is
    /// set.
    #[cfg(feature = "datadog")]
    pub fn with_datadog(mut self, config: tracing_usr_export::datadog::DatadogConfig) -> Self {
        self.datadog = Some(config);
        self
    }

    /// Exports traces and logs over OTLP/HTTP, whatever the environment says. Defaults to the
    /// OpenTelemetry variables: the exporter runs when `OTEL_EXPORTER_OTLP_ENDPOINT` or a
    /// signal-specific endpoint is set.
    #[cfg(feature = "otlp")]
    pub fn with_otlp(mut self, config: tracing_usr_export::otlp::OtlpConfig) -> Self {
        self.otlp = Some(config);
        self
    }

    /// Sets the detection settings (thresholds, windows, actions, table size); see
    /// [`detection`](crate::detection). Defaults to the values of `docs/detection.md`, or
    /// the file named by `TRACING_USR_DETECTION_FILE`. Also turns detection on.
    ///
    /// # Errors
    /// [`BuildError::Detection`] when [`DetectionConfig::validate`](crate::detection::DetectionConfig::validate)
    /// rejects the settings.
    ///
    /// ```
    /// use tracing_usr::detection::{DetectionConfig, RuleId};
    /// let mut config = DetectionConfig::default();
    /// config.rule_mut(RuleId::CredentialStuffing).block_ip = true;
    /// config.rule_mut(RuleId::CredentialStuffing).block_user = true;
    /// let layer = tracing_usr::builder().with_detection(config).unwrap().build();
    /// # drop(layer);
    /// ```
    pub fn with_detection(mut self, config: crate::detection::DetectionConfig) -> Result<Self, BuildError> {
        config.validate().map_err(BuildError::Detection)?;
        self.detection = Some(config);
        self.detection_enabled = Some(true);
        Ok(self)
    }

    /// Reads the detection settings from a JSON file now (format:
    /// [`parse_config`](crate::detection::parse_config)); its `enabled` applies unless
    /// [`Builder::with_detection_enabled`] says otherwise.
    ///
    /// # Errors
    /// [`BuildError::Detection`] when the file cannot be read or is invalid.
    pub fn with_detection_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, BuildError> {
        let (config, enabled) =
            crate::detection::load_config(path.as_ref()).map_err(BuildError::Detection)?;
        self.detection = Some(config);
        self.detection_enabled = self.detection_enabled.or(Some(enabled));
        Ok(self)
    }

    /// Turns detection on or off. Default: on, unless `TRACING_USR_DETECTION=off`.
    pub fn with_detection_enabled(mut self, enabled: bool) -> Self {
        self.detection_enabled = Some(enabled);
        self
    }

    /// Sets where signals go. Default: [`TracingSink`](crate::detection::TracingSink) (one
    /// `WARN` event per signal, target `tracing_usr::signal`). `()` drops them (the root tags and
    /// actions still apply).
    pub fn with_signal_sink(mut self, sink: impl crate::detection::SignalSink) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Sets the clock that block expiry and detection windows are measured on; tests
    /// use a [`ManualClock`](tracing_usr_core::blocking::ManualClock). Defaults to the system's
    /// monotonic clock.
    pub fn with_clock(mut self, clock: Arc<dyn tracing_usr_core::blocking::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sets the blocked users (exact `usr.id` match; expiration in Unix seconds, `None` for
    /// never). SDK identity calls then report [`SdkError::Blocked`](crate::SdkError::Blocked)
    /// for them. Defaults to none; [`Handle::block_list`](crate::Handle::block_list) changes the
    /// list at run time.
    pub fn with_blocked_users(
        mut self,
        entries: impl IntoIterator<Item = tracing_usr_core::blocking::BlockEntry>,
    ) -> Self {
        self.blocked_users = entries.into_iter().collect();
        self
    }

    /// Reads the blocked users from a JSON file (`[{"value": "user-42", "expiration": 0}]`) and
    /// reloads it when it changes (checked every `interval`); it replaces the list of
    /// [`Builder::with_blocked_users`]. A file that cannot be read or parsed gives a warning and
    /// keeps the previous list. Defaults to `TRACING_USR_BLOCKED_USERS_FILE` (checked every 2 s),
    /// else none.
    pub fn with_blocked_users_file(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.blocked_users_file = Some((path.into(), interval));
        self
    }

    /// Sets the blocked client IPs (same shape as the users). Defaults to none.
    pub fn with_blocked_ips(
        mut self,
        entries: impl IntoIterator<Item = tracing_usr_core::blocking::BlockEntry>,
    ) -> Self {
        self.blocked_ips = entries.into_iter().collect();
        self
    }

    /// Sets the key masking pattern; `None` switches the key rule off (`usr.token` stays
    /// masked). Defaults to `DD_APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP`, else Datadog's
    /// default pattern.
    ///
    /// # Errors
    /// [`BuildError::Pattern`] when the pattern does not compile.
    pub fn with_key_pattern(mut self, pattern: Option<&str>) -> Result<Self, BuildError> {
        self.key_pattern = Some(compile(PatternKind::Key, pattern)?);
        Ok(self)
    }

    /// Sets the value masking pattern; `None` switches the value rule off. Defaults to
    /// `DD_APPSEC_OBFUSCATION_PARAMETER_VALUE_REGEXP`, else Datadog's default pattern.
    ///
    /// # Errors
    /// [`BuildError::Pattern`] when the pattern does not compile.
    pub fn with_value_pattern(mut self, pattern: Option<&str>) -> Result<Self, BuildError> {
        self.value_pattern = Some(compile(PatternKind::Value, pattern)?);
        Ok(self)
    }

    /// Holds the log records of a trace until its local root closes and stamps them with the
    /// root's final identity, so that events emitted before identification carry the user too.
    /// Defaults to `false`: each record carries the identity current when it was emitted.
    pub fn with_retroactive_logs(mut self, enabled: bool) -> Self {
        self.retroactive = enabled;
        self
    }

    /// Caps the records waiting for export; beyond it new records are dropped and counted.
    /// Defaults to 16 384.
    pub fn with_max_queued_records(mut self, max: usize) -> Self {
        self.pipeline.max_queued_records = max.max(1);
        self
    }

    /// How long the export thread waits to fill a batch. Defaults to 100 ms.
    pub fn with_batch_delay(mut self, delay: Duration) -> Self {
        self.pipeline.batch_delay = delay;
        self
    }

    /// How often, at most, the export warnings (target `tracing_usr::export`) report the
    /// records lost since the last one, and an exporter still waiting on its collector.
    /// Defaults to 10 s.
    pub fn with_export_report_interval(mut self, interval: Duration) -> Self {
        self.pipeline.report_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Turns Datadog Remote Configuration on or off (it is on whenever the Datadog exporter
    /// runs, unless `DD_REMOTE_CONFIGURATION_ENABLED=false`), polling the agent every `interval`
    /// (`None`: `DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS`, else 5 s). The `ASM_DATA` block lists
    /// set in Datadog join the ones from code and the blocked-users file.
    pub fn with_remote_config(mut self, enabled: bool, interval: Option<Duration>) -> Self {
        self.remote_config = Some((enabled, interval.map(|i| i.max(Duration::from_millis(10)))));
        self
    }

    /// Shares detection with the other replicas of the service on Redis (feature `redis`):
    /// windows counted cluster-wide, one signal per attack, blocks enforced everywhere. Wins
    /// over `TRACING_USR_REDIS_URL`; see [`crate::detection::RedisConfig`] and
    /// `docs/detection.md` ("Running several replicas"). Needs detection on. Defaults to off
    /// (detection in process), unless `TRACING_USR_REDIS_URL` is set.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis(mut self, config: crate::detection::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// Keeps on disk, in `config.dir`, the records the collectors cannot take: what would be
    /// dropped for a full queue while a collector is down, what an unavailable collector did
    /// not take, and what is still queued at shutdown during an outage. They are sent first at
    /// the next start, or as soon as the collectors deliver again. Off by default (nothing
    /// touches the disk); `TRACING_USR_EXPORT_SPOOL_DIR` sets it from the environment.
    pub fn with_spool(mut self, config: SpoolConfig) -> Self {
        self.pipeline.spool = Some(config);
        self
    }

    /// How long [`shutdown`](crate::shutdown) and dropping the layer wait for the queue to
    /// drain. Defaults to 5 s.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many finished spans a trace buffers before they are exported ahead of their root
    /// (a partial flush; children carry no user tags, so nothing is lost). Defaults to 1000.
    pub fn with_max_spans_per_trace(mut self, max: usize) -> Self {
        self.max_spans_per_trace = max.max(1);
        self
    }

    /// How many raw → anonymized values are cached. Defaults to 4096.
    pub fn with_anonymizer_cache(mut self, capacity: usize) -> Self {
        self.anonymizer_capacity = capacity;
        self
    }

    /// Reads configuration variables through `lookup` instead of the process environment (for
    /// tests, or to feed values from a configuration system). Defaults to `std::env::var`.
    pub fn with_env_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.lookup = Box::new(lookup);
        self
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// Reads the environment and builds the layer. Problems in variables do not fail the
    /// build: each gives one warning (target `tracing_usr::config`) once the layer is
    /// registered, and the documented fallback applies.
    pub fn build(self) -> UserLayer {
        let mut warnings = Vec::new();
        let mode = self.resolve_mode(&mut warnings);
        let key = self.pattern(PatternKind::Key, &mut warnings);
        let value = self.pattern(PatternKind::Value, &mut warnings);
        let masker = Arc::new(Masker::new(key, value));
        let (mut exporters, default_export) = self.exporters(&mut warnings);
        let tags_max_length = self.tags_max_length(&mut warnings);
        let clock = self
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(tracing_usr_core::blocking::SystemClock::new()));
        let blocks = self.block_list(&clock, &mut warnings);
        let templates = self.block_templates(&mut warnings);
        let detection = self.detection_settings(&mut warnings);
        let spool = self.spool(&mut warnings);
        #[cfg(feature = "datadog")]
        let remote_config = self.remote_config(&blocks, &mut warnings);
        #[cfg(feature = "redis")]
        let redis = self.redis_settings(detection.is_some(), &mut warnings);
        let Builder {
            sink,
            exporters: extra,
            retroactive,
            mut pipeline,
            shutdown_timeout,
            max_spans_per_trace,
            anonymizer_capacity,
            ..
        } = self;
        pipeline.spool = spool;
        exporters.extend(extra);
        UserLayer::from_parts(crate::shared::Parts {
            mode,
            masker,
            exporters,
            default_export,
            retroactive,
            pipeline,
            shutdown_timeout,
            max_spans_per_trace,
            anonymizer_capacity,
            warnings,
            tags_max_length,
            blocks,
            templates: Arc::new(templates),
            detection,
            sink: sink.unwrap_or_else(|| Box::new(crate::detection::TracingSink)),
            clock,
            #[cfg(feature = "datadog")]
            remote_config,
            #[cfg(feature = "redis")]
            redis,
        })
    }

    /// Shared detection's settings (the builder's, else the environment's) and the service its
    /// keys are named for; `None` without a URL, without a secret, or with detection off.
    #[cfg(feature = "redis")]
    fn redis_settings(
        &self,
        detection: bool,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<(crate::detection::RedisConfig, String)> {
        let config = match self.redis.clone() {
            Some(config) => config.checked(warnings)?,
            None => crate::detection::RedisConfig::from_env(&|name| self.var(name), warnings)?,
        };
        if !detection {
            warnings.push(ConfigWarning::new(
                crate::detection::ENV_REDIS_URL,
                "detection is off: nothing is shared on Redis".to_owned(),
            ));
            return None;
        }
        let service = self
            .var(crate::collectors::ENV_DD_SERVICE)
            .unwrap_or_else(tracing_usr_export::default_service_name);
        Some((config, service))
    }

    /// The Remote Configuration client, when the Datadog exporter runs and it is not turned off.
    #[cfg(feature = "datadog")]
    fn remote_config(
        &self,
        blocks: &Arc<tracing_usr_core::blocking::BlockList>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<tracing_usr_export::remote_config::RemoteConfigClient> {
        // The exporter's own step already reported its bad settings.
        let config = self
            .datadog
            .clone()
            .or_else(|| crate::collectors::datadog_from_env(&|name| self.var(name), &mut Vec::new()))?;
        let (enabled, interval) = crate::remote::settings(&|name| self.var(name), warnings);
        let (enabled, interval) = match self.remote_config {
            Some((on, every)) => (on, every.unwrap_or(interval)),
            None => (enabled, interval),
        };
        enabled.then(|| crate::remote::start(&config, interval, blocks, warnings))?
    }

    /// The mode and masking this builder gives (for an OpenTelemetry guard with no tracing-usr
    /// layer beside it), with the warnings their variables raise.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn privacy_rules(&self) -> (Mode, Arc<Masker>, Vec<ConfigWarning>) {
        let mut warnings = Vec::new();
        let mode = self.resolve_mode(&mut warnings);
        let key = self.pattern(PatternKind::Key, &mut warnings);
        let value = self.pattern(PatternKind::Value, &mut warnings);
        (mode, Arc::new(Masker::new(key, value)), warnings)
    }

    fn resolve_mode(&self, warnings: &mut Vec<ConfigWarning>) -> Mode {
        let (mode_var, dep_var, enabled_var) = (
            self.var(mode::ENV_MODE),
            self.var(mode::ENV_MODE_DEPRECATED),
            self.var(mode::ENV_MODE_ENABLED),
        );
        let vars = ModeVars {
            mode: mode_var.as_deref(),
            deprecated: dep_var.as_deref(),
            enabled: enabled_var.as_deref(),
        };
        let (mode, mode_warnings) = mode::resolve_mode(self.mode, &vars);
        warnings.extend(mode_warnings);
        mode
    }

    /// The collector exporters, then the JSON lines, without the builder's own exporters
    /// (added last); and whether the JSON lines are the embedded default (nothing else set).
    /// The spool: the builder's, else from the environment.
    fn spool(&self, warnings: &mut Vec<ConfigWarning>) -> Option<SpoolConfig> {
        if self.pipeline.spool.is_some() {
            return self.pipeline.spool.clone();
        }
        let mut config = SpoolConfig::new(self.var(ENV_SPOOL_DIR)?);
        if let Some(mb) = self.var(ENV_SPOOL_MAX_MB) {
            match mb.trim().parse::<u64>() {
                Ok(mb) if mb > 0 => config.max_bytes = mb.saturating_mul(1 << 20),
                _ => warnings.push(ConfigWarning::new(
                    ENV_SPOOL_MAX_MB,
                    format!("invalid size {mb:?} (megabytes, more than 0); using 256"),
                )),
            }
        }
        Some(config)
    }

    fn exporters(&self, warnings: &mut Vec<ConfigWarning>) -> (Vec<Box<dyn Exporter>>, bool) {
        let json_lines = match &self.export {
            Some(json_lines) => Some(json_lines.clone()),
            None => self.var(ENV_EXPORT).map(|v| {
                JsonLines::parse(&v).unwrap_or_else(|| {
                    warnings.push(ConfigWarning::new(
                        ENV_EXPORT,
                        format!("invalid value {v:?} (expected stdout, file:PATH or none); falling back to stdout"),
                    ));
                    JsonLines::Stdout
                })
            }),
        };
        let mut exporters: Vec<Box<dyn Exporter>> = Vec::with_capacity(self.exporters.len() + 3);
        self.collectors(&mut exporters, warnings);
        // A tracing-opentelemetry layer found in the subscriber turns the default off (`crate::otel`).
        let default_export = json_lines.is_none() && self.exporters.is_empty() && exporters.is_empty();
        match json_lines.unwrap_or(if default_export {
            JsonLines::Stdout
        } else {
            JsonLines::None
        }) {
            JsonLines::None => {}
            JsonLines::Stdout => exporters.push(Box::new(JsonLinesExporter::stdout())),
            JsonLines::File(path) => match JsonLinesExporter::file(&path) {
                Ok(exporter) => exporters.push(Box::new(exporter)),
                Err(e) => {
                    warnings.push(ConfigWarning::new(
                        ENV_EXPORT,
                        format!(
                            "cannot open {} for appending ({e}); falling back to stdout",
                            path.display()
                        ),
                    ));
                    exporters.push(Box::new(JsonLinesExporter::stdout()));
                }
            },
        }
        (exporters, default_export)
    }

    fn tags_max_length(&self, warnings: &mut Vec<ConfigWarning>) -> usize {
        use tracing_usr_core::propagation::DEFAULT_TAGS_MAX_LENGTH;
        let variable = crate::propagation::ENV_TAGS_MAX_LENGTH;
        self.var(variable).map_or(DEFAULT_TAGS_MAX_LENGTH, |v| {
            v.trim().parse().unwrap_or_else(|_| {
                warnings.push(ConfigWarning::new(
                    variable,
                    format!(
                        "invalid value {v:?} (expected a length in bytes); using {DEFAULT_TAGS_MAX_LENGTH}"
                    ),
                ));
                DEFAULT_TAGS_MAX_LENGTH
            })
        })
    }

    /// The block list from the builder's users and IPs, watching the blocked-users file if one
    /// is set.
    fn block_list(
        &self,
        clock: &Arc<dyn tracing_usr_core::blocking::Clock>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Arc<tracing_usr_core::blocking::BlockList> {
        let blocks = Arc::new(tracing_usr_core::blocking::BlockList::new(Arc::clone(clock)));
        let unix_now = tracing_usr_core::blocking::unix_now();
        blocks.replace_users(self.blocked_users.iter().cloned(), unix_now);
        let file = self.blocked_users_file.clone().or_else(|| {
            self.var(ENV_BLOCKED_USERS_FILE)
                .map(|p| (PathBuf::from(p), Duration::from_secs(2)))
        });
        if let Some((path, interval)) = file {
            if let Err(e) = crate::block_file::watch(path, &blocks, interval) {
                warnings.push(ConfigWarning::new(ENV_BLOCKED_USERS_FILE, e));
            }
        }
        for rejected in blocks.replace_ips(self.blocked_ips.iter().cloned(), unix_now) {
            warnings.push(ConfigWarning::new(
                "tracing_usr::blocked_ips",
                format!("{rejected:?} is not an IP address; entry ignored"),
            ));
        }
        blocks
    }

    fn block_templates(
        &self,
        warnings: &mut Vec<ConfigWarning>,
    ) -> tracing_usr_core::blocking::BlockTemplates {
        let mut templates = tracing_usr_core::blocking::BlockTemplates::default();
        for (variable, slot) in [
            (ENV_BLOCKED_TEMPLATE_JSON, &mut templates.json),
            (ENV_BLOCKED_TEMPLATE_HTML, &mut templates.html),
        ] {
            if let Some(path) = self.var(variable) {
                match std::fs::read_to_string(&path) {
                    Ok(text) => *slot = text,
                    Err(e) => warnings.push(ConfigWarning::new(
                        variable,
                        format!("cannot read {path:?} ({e}); using the built-in template"),
                    )),
                }
            }
        }
        templates
    }

    /// The detection settings in force, if detection is on: the builder's, else the file of
    /// `TRACING_USR_DETECTION_FILE`, else the defaults; on unless the builder or
    /// `TRACING_USR_DETECTION` (or the file's `enabled`) says off.
    fn detection_settings(
        &self,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Option<crate::detection::DetectionConfig> {
        use crate::detection::{ENV_DETECTION, ENV_DETECTION_FILE};
        let mut file_enabled = None;
        let config = match &self.detection {
            Some(config) => config.clone(),
            None => match self.var(ENV_DETECTION_FILE) {
                None => crate::detection::DetectionConfig::default(),
                Some(path) => match crate::detection::load_config(std::path::Path::new(&path)) {
                    Ok((config, enabled)) => {
                        file_enabled = Some(enabled);
                        config
                    }
                    Err(e) => {
                        warnings.push(ConfigWarning::new(
                            ENV_DETECTION_FILE,
                            format!("{e}; using the default detection settings"),
                        ));
                        crate::detection::DetectionConfig::default()
                    }
                },
            },
        };
        let env_enabled =
            self.var(ENV_DETECTION)
                .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "on" | "true" | "1" => Some(true),
                    "off" | "false" | "0" => Some(false),
                    _ => {
                        warnings.push(ConfigWarning::new(
                            ENV_DETECTION,
                            format!("invalid value {v:?} (expected on or off); detection stays on"),
                        ));
                        None
                    }
                });
        let enabled = self
            .detection_enabled
            .or(env_enabled)
            .or(file_enabled)
            .unwrap_or(true);
        enabled.then_some(config)
    }

    /// Adds the collector exporters the builder or the environment asks for.
    fn collectors(&self, exporters: &mut Vec<Box<dyn Exporter>>, warnings: &mut Vec<ConfigWarning>) {
        #[cfg(feature = "datadog")]
        self.datadog_exporters(exporters, warnings);
        #[cfg(feature = "otlp")]
        self.otlp_exporter(exporters, warnings);
        let _ = (exporters, warnings);
    }

    /// The Datadog agent's trace exporter and, unless `TRACING_USR_DD_LOGS=none`, its log lines.
    #[cfg(feature = "datadog")]
    fn datadog_exporters(&self, exporters: &mut Vec<Box<dyn Exporter>>, warnings: &mut Vec<ConfigWarning>) {
        use crate::collectors::{ENV_DD_LOGS, ENV_DD_TRACE_AGENT_URL};
        use tracing_usr_export::datadog::{DatadogExporter, DatadogLogsExporter};
        let Some(config) = self
            .datadog
            .clone()
            .or_else(|| crate::collectors::datadog_from_env(&|name| self.var(name), warnings))
        else {
            return;
        };
        match DatadogExporter::new(config.clone()) {
            Ok(exporter) => exporters.push(Box::new(exporter)),
            Err(e) => warnings.push(ConfigWarning::new(
                ENV_DD_TRACE_AGENT_URL,
                format!("cannot create the Datadog exporter ({e}); traces are not sent to the agent"),
            )),
        }
        let logs = self.var(ENV_DD_LOGS).map_or(JsonLines::Stdout, |v| {
            JsonLines::parse(&v).unwrap_or_else(|| {
                warnings.push(ConfigWarning::new(
                    ENV_DD_LOGS,
                    format!("invalid value {v:?} (expected stdout, file:PATH or none); using stdout"),
                ));
                JsonLines::Stdout
            })
        });
        let out: Box<dyn std::io::Write + Send> = match logs {
            JsonLines::None => return,
            JsonLines::Stdout => Box::new(std::io::stdout()),
            JsonLines::File(path) => {
                match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => Box::new(file),
                    Err(e) => {
                        warnings.push(ConfigWarning::new(
                            ENV_DD_LOGS,
                            format!("cannot open {} ({e}); using stdout", path.display()),
                        ));
                        Box::new(std::io::stdout())
                    }
                }
            }
        };
        exporters.push(Box::new(DatadogLogsExporter::new(out, &config)));
    }

    #[cfg(feature = "otlp")]
    fn otlp_exporter(&self, exporters: &mut Vec<Box<dyn Exporter>>, warnings: &mut Vec<ConfigWarning>) {
        let Some(config) = self
            .otlp
            .clone()
            .or_else(|| crate::collectors::otlp_config_from(&|name| self.var(name), warnings))
        else {
            return;
        };
        match tracing_usr_export::otlp::OtlpExporter::new(config) {
            Ok(exporter) => exporters.push(Box::new(exporter)),
            Err(e) => warnings.push(ConfigWarning::new(
                crate::collectors::ENV_OTLP_ENDPOINT,
                format!("cannot create the OTLP exporter ({e}); nothing is sent over OTLP"),
            )),
        }
    }

    fn pattern(&self, kind: PatternKind, warnings: &mut Vec<ConfigWarning>) -> Option<Regex> {
        let (set, variable, default) = match kind {
            PatternKind::Key => (&self.key_pattern, mask::ENV_KEY_REGEXP, mask::DEFAULT_KEY_REGEXP),
            PatternKind::Value => (
                &self.value_pattern,
                mask::ENV_VALUE_REGEXP,
                mask::DEFAULT_VALUE_REGEXP,
            ),
        };
        if let Some(set) = set {
            return set.clone();
        }
        let default = || mask::compile(kind, default).ok();
        match self.var(variable) {
            None => default(),
            Some(pattern) => match mask::compile(kind, &pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    warnings.push(ConfigWarning::new(
                        variable,
                        format!("{e}; using the default pattern"),
                    ));
                    default()
                }
            },
        }
    }
}

fn compile(kind: PatternKind, pattern: Option<&str>) -> Result<Option<Regex>, BuildError> {
    pattern
        .map(|p| mask::compile(kind, p))
        .transpose()
        .map_err(BuildError::Pattern)
}
