//! What the layer, its [`Handle`](crate::Handle)s and the SDK functions share: the resolved
//! settings, the export pipeline, the detector and the signal delivery.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_core::dispatcher::Dispatch;
use tracing_usr_core::blocking::{BlockList, BlockTemplates, Clock};
use tracing_usr_core::detection::{DetectionConfig, Detector, Signal};
use tracing_usr_core::events;
use tracing_usr_core::identity::Key;
use tracing_usr_core::mode::ConfigWarning;
use tracing_usr_core::{keys, Anonymizer, IdentityBucket, Masker, Mode};
use tracing_usr_export::{Exporter, FieldValue, Pipeline, PipelineConfig};

use crate::callsite::{CallsiteCache, CallsiteInfo};
use crate::default_user::DefaultUserSlot;
use crate::detection::hub::SignalHub;
use crate::detection::run::{take, Detection};
use crate::detection::SignalSink;
use crate::state::RootState;
use crate::visit::{Collector, Fields, IdentityRules};

/// The settings [`Builder::build`](crate::Builder::build) resolved.
pub(crate) struct Parts {
    pub(crate) mode: Mode,
    pub(crate) masker: Arc<Masker>,
    pub(crate) blocks: Arc<BlockList>,
    pub(crate) templates: Arc<BlockTemplates>,
    pub(crate) exporters: Vec<Box<dyn Exporter>>,
    /// Whether the exporters are the embedded default alone (JSON lines on stdout).
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) default_export: bool,
    pub(crate) retroactive: bool,
    pub(crate) pipeline: PipelineConfig,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_spans_per_trace: usize,
    pub(crate) anonymizer_capacity: usize,
    pub(crate) warnings: Vec<ConfigWarning>,
    pub(crate) tags_max_length: usize,
    pub(crate) detection: Option<DetectionConfig>,
    pub(crate) sink: Box<dyn SignalSink>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The Remote Configuration client, held for as long as the layer lives.
    #[cfg(feature = "datadog")]
    pub(crate) remote_config: Option<tracing_usr_export::remote_config::RemoteConfigClient>,
    /// Shared detection on Redis, and the service its keys are named for.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<(crate::detection::RedisConfig, String)>,
}

/// State shared by the layer, its [`Handle`](crate::Handle)s and the SDK functions.
pub(crate) struct Shared {
    pub(crate) mode: Mode,
    pub(crate) masker: Arc<Masker>,
    pub(crate) blocks: Arc<BlockList>,
    pub(crate) templates: Arc<BlockTemplates>,
    pub(crate) anonymizer: Anonymizer,
    pub(crate) callsites: CallsiteCache,
    pub(crate) retroactive: bool,
    pub(crate) max_spans_per_trace: usize,
    /// The export pipeline; read through [`Shared::pipeline`], which also says whether it is in use.
    pub(crate) pipeline: Option<Pipeline>,
    /// The tracing-opentelemetry pipeline of the same subscriber, if any.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel: crate::otel::OtelBridge,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) tags_max_length: usize,
    /// The detector, unless detection is off.
    pub(crate) detector: Option<Arc<Detector>>,
    /// Signal delivery.
    pub(crate) signals: Arc<SignalHub>,
    /// Roots holding detection work for their close (checked before a lookup in `on_close`).
    pub(crate) armed_roots: AtomicUsize,
    /// The spans holding a root's state (checked before a lookup in `on_close`).
    pub(crate) live_roots: Arc<crate::state::LiveRoots>,
    /// The identity set outside any span.
    pub(crate) default_user: DefaultUserSlot,
    warnings: Mutex<Vec<ConfigWarning>>,
    has_warnings: AtomicBool,
    /// Set when another tracing-usr layer of the same subscriber is the active one.
    inert: AtomicBool,
    /// Stops polling when the layer goes.
    #[cfg(feature = "datadog")]
    pub(crate) remote_config: Option<tracing_usr_export::remote_config::RemoteConfigClient>,
    /// Shared detection on Redis (its thread ends when the layer goes).
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<Arc<crate::detection::cluster::Cluster>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserLayer")
            .field("mode", &self.mode)
            .field("masker", &self.masker)
            .field("retroactive", &self.retroactive)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    /// Dropping the layer (with its subscriber) exports what is queued in the background but
    /// does not wait: the last reference may be dropped on any thread, even inside
    /// tracing-core's dispatcher registry. Use [`shutdown`](crate::shutdown) or a
    /// [`ShutdownGuard`](crate::ShutdownGuard) to wait.
    fn drop(&mut self) {
        if let Some(pipeline) = &self.pipeline {
            pipeline.close();
        }
    }
}

impl Shared {
    pub(crate) fn new(mut parts: Parts) -> Self {
        let detector = parts
            .detection
            .take()
            .map(|config| Arc::new(Detector::new(config, Arc::clone(&parts.clock))));
        let callsites = CallsiteCache::new(Arc::clone(&parts.masker), detector.is_some());
        let signals = SignalHub::new(parts.sink);
        #[cfg(feature = "redis")]
        let cluster = match (parts.redis.take(), &detector) {
            (Some((config, service)), Some(detector)) => {
                let wiring = crate::detection::cluster::Wiring {
                    detector: Arc::clone(detector),
                    blocks: Arc::clone(&parts.blocks),
                    signals: Arc::clone(&signals),
                    service,
                };
                crate::detection::cluster::Cluster::start(config, wiring, &mut parts.warnings)
            }
            _ => None,
        };
        let pipeline = (!parts.exporters.is_empty())
            .then(|| Pipeline::start(parts.exporters, Arc::clone(&parts.masker), parts.pipeline));
        let has_warnings = !parts.warnings.is_empty();
        Shared {
            mode: parts.mode,
            callsites,
            masker: parts.masker,
            blocks: parts.blocks,
            templates: parts.templates,
            anonymizer: Anonymizer::new(parts.anonymizer_capacity),
            retroactive: parts.retroactive,
            max_spans_per_trace: parts.max_spans_per_trace,
            pipeline,
            #[cfg(feature = "opentelemetry")]
            otel: crate::otel::OtelBridge::new(parts.default_export),
            shutdown_timeout: parts.shutdown_timeout,
            tags_max_length: parts.tags_max_length,
            detector,
            signals,
            armed_roots: AtomicUsize::new(0),
            live_roots: crate::state::LiveRoots::new(),
            default_user: DefaultUserSlot::default(),
            warnings: Mutex::new(parts.warnings),
            has_warnings: AtomicBool::new(has_warnings),
            inert: AtomicBool::new(false),
            #[cfg(feature = "datadog")]
            remote_config: parts.remote_config,
            #[cfg(feature = "redis")]
            cluster,
        }
    }

    /// The pipeline records go to, unless nothing is exported (none configured, or the embedded
    /// default turned off because a tracing-opentelemetry layer exports the traces).
    #[inline]
    pub(crate) fn pipeline(&self) -> Option<&Pipeline> {
        #[cfg(feature = "opentelemetry")]
        if self.otel.export_off() {
            return None;
        }
        self.pipeline.as_ref()
    }

    /// Whether another tracing-usr layer of the subscriber is the active one.
    #[inline]
    pub(crate) fn inert(&self) -> bool {
        self.inert.load(Ordering::Relaxed)
    }

    /// The field-path identity rules of this layer's settings.
    #[inline]
    pub(crate) fn identity_rules(&self) -> IdentityRules<'_> {
        IdentityRules::new(
            self.mode,
            &self.anonymizer,
            (!self.blocks.is_unused()).then_some(&*self.blocks),
            self.detector.is_some(),
        )
    }

    /// A visitor for the fields of a span or event of callsite `info`.
    #[inline]
    pub(crate) fn collector<'a>(&'a self, info: &'a CallsiteInfo, collect_plain: bool) -> Collector<'a> {
        Collector::new(info, self.identity_rules(), &self.masker, collect_plain)
    }

    /// Processes `usr.*` values by the mode (docs/tags.md "modes"); business-event-only keys are skipped.
    pub(crate) fn field_identity(&self, usr: Vec<(&'static str, String)>) -> Fields {
        let rules = self.identity_rules();
        let mut fields = Fields::default();
        for (key, value) in usr {
            rules.push(&mut fields, key, value);
        }
        fields
    }

    /// The field-path business event a `tracing` event with `usr.event` describes (docs/tags.md "events from tracing events"),
    /// after the mode; `None` in disabled mode or without a required input.
    pub(crate) fn business_event(
        &self,
        usr: &[(&'static str, String)],
        plain: &[(Key, FieldValue)],
    ) -> Option<(String, events::FieldEvent)> {
        let name = usr
            .iter()
            .rev()
            .find(|(k, v)| *k == keys::USR_EVENT && !v.is_empty())?
            .1
            .clone();
        let others: Vec<(Key, String)> = plain.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        events::field_event(&name, usr, &others, self.mode, &self.anonymizer, &self.masker).map(|e| (name, e))
    }

    /// The default identity's tags, if one is set.
    pub(crate) fn default_bucket(&self) -> Option<IdentityBucket> {
        self.default_user.bucket()
    }

    /// Detection, unless it is off.
    #[inline]
    pub(crate) fn detection(&self) -> Option<Detection<'_>> {
        Some(Detection {
            detector: self.detector.as_deref()?,
            blocks: &self.blocks,
            signals: &self.signals,
            mode: self.mode,
            default_user: &self.default_user,
            armed_roots: &self.armed_roots,
            #[cfg(feature = "redis")]
            cluster: self.cluster.as_deref(),
        })
    }

    /// [`Detection::run`], or the signals already raised when detection is off.
    pub(crate) fn run_detection(&self, state: &mut RootState, closing: bool) -> Vec<Signal> {
        match self.detection() {
            Some(detection) => detection.run(state, closing),
            None => take(state),
        }
    }

    /// The root's detection work at its close ([`Detection::close`]).
    pub(crate) fn close_detection(&self, state: &mut RootState) -> Vec<Signal> {
        match self.detection() {
            Some(detection) => detection.close(state),
            None => take(state),
        }
    }

    /// At registration: `other_active` says that another tracing-usr layer of the subscriber
    /// is the active one (both would keep their state in the same span extensions; the one the
    /// SDK functions find, the outermost, stays active), and this one does nothing. Then emits
    /// the configuration warnings through `dispatch`, once.
    ///
    /// They cannot be emitted from `on_register_dispatch` itself (tracing-core holds its
    /// dispatcher list's write lock there, which a new callsite needs) nor from inside a layer
    /// callback (tracing drops re-entrant events and `with_default` would panic), so a short-lived
    /// thread emits them as soon as the registration has finished.
    pub(crate) fn register(&self, dispatch: &Dispatch, other_active: bool) {
        self.signals.set_dispatch(dispatch);
        #[cfg(feature = "opentelemetry")]
        self.otel.set_dispatch(dispatch);
        if other_active {
            self.inert.store(true, Ordering::Release);
            if let Ok(mut warnings) = self.warnings.lock() {
                warnings.push(ConfigWarning {
                    variable: "tracing_usr::layer",
                    message: "more than one tracing-usr layer in this subscriber: this one is inactive \
                              (use one layer with several exporters)"
                        .to_owned(),
                });
                self.has_warnings.store(true, Ordering::Release);
            }
        }
        if !self.has_warnings.swap(false, Ordering::AcqRel) {
            return;
        }
        let warnings = self
            .warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        crate::warn::emit_later(Some(dispatch.downgrade()), warnings);
    }
}
