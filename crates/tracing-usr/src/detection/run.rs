//! Running the detector on a root's business events, with the request's client IP.

use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_usr_core::blocking::BlockList;
use tracing_usr_core::detection::{Action, Detector, Observation, Signal};
use tracing_usr_core::{keys, Mode};

use super::hub::SignalHub;
use crate::default_user::DefaultUserSlot;
use crate::state::RootState;

/// What detection needs of the layer: the detector, the lists its actions write, where
/// warnings go, and what the privilege rules read of the identity.
#[derive(Clone, Copy)]
pub(crate) struct Detection<'a> {
    pub(crate) detector: &'a Detector,
    pub(crate) blocks: &'a BlockList,
    pub(crate) signals: &'a SignalHub,
    pub(crate) mode: Mode,
    pub(crate) default_user: &'a DefaultUserSlot,
    /// Roots holding detection work for their close.
    pub(crate) armed_roots: &'a AtomicUsize,
    /// Shared detection on Redis, when configured.
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<&'a super::cluster::Cluster>,
}

impl Detection<'_> {
    /// Runs the detector on what `state` holds: the waiting events once the client IP is known
    /// (or the root closes), and the privilege rules when it closes. Tags the root, applies the
    /// actions, and returns the signals to deliver (the caller delivers them after releasing the
    /// extension lock), including those [`Detection::submit`] left in `state.signals`.
    pub(crate) fn run(&self, state: &mut RootState, closing: bool) -> Vec<Signal> {
        let mut signals = take(state);
        let mut fresh = Vec::new();
        if state.trace.client_ip().is_some() || closing {
            for mut obs in state.trace.take_pending_detections() {
                stamp(&mut obs, state);
                fresh.extend(self.judge(obs, state));
            }
        }
        if closing {
            self.check_privileges(state, &mut fresh);
        }
        self.finish(state, &mut fresh);
        signals.extend(fresh);
        signals
    }

    /// Judges one observation: here, or on Redis when shared detection is up (its signals are
    /// then raised by the Redis thread, so none is returned).
    fn judge(&self, obs: Observation, state: &RootState) -> Vec<Signal> {
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.cluster {
            // The Redis thread cannot read the root: the signal's user agent goes with the event.
            let mut obs = obs;
            obs.user_agent = state.trace.user_agent().map(str::to_owned);
            return match cluster.submit(obs) {
                None => Vec::new(),
                Some(obs) => self.detector.observe(&obs),
            };
        }
        #[cfg(not(feature = "redis"))]
        let _ = state;
        self.detector.observe(&obs)
    }

    /// The privilege rules on the admin-only activities of a closing root, judged with the
    /// root's final identity.
    fn check_privileges(&self, state: &mut RootState, fresh: &mut Vec<Signal>) {
        let checks = state.trace.take_privilege_checks();
        if checks.is_empty() {
            return;
        }
        let default = self.default_user.bucket();
        let identity = state
            .trace
            .identity
            .final_identity(self.mode, default.as_ref())
            .map(|(tags, _)| tags)
            .unwrap_or_default();
        let find = |key: &str| {
            identity
                .iter()
                .find(|(k, v)| k.as_ref() == key && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let role = find(keys::USR_ROLE);
        let has_id = find(keys::USR_ID).is_some();
        let disabled = self.mode == Mode::Disabled;
        for mut obs in checks {
            stamp(&mut obs, state);
            fresh.extend(self.detector.privilege(&obs, role, has_id, disabled));
        }
    }

    /// Tags the root with the signals, copies the request's user agent into them, applies their
    /// actions, and reports a table that had to evict an open signal.
    fn finish(&self, state: &mut RootState, signals: &mut [Signal]) {
        for signal in signals.iter_mut() {
            state.trace.add_signal(signal.rule, signal.severity);
            if signal.user_agent.is_none() {
                signal.user_agent = state.trace.user_agent().map(str::to_owned);
            }
            for action in &signal.actions {
                match action {
                    Action::BlockIp { ip, duration } => self.blocks.block_ip(*ip, Some(*duration)),
                    Action::BlockUser { user_id, duration } => {
                        self.blocks.block_user(user_id, Some(*duration))
                    }
                }
            }
        }
        if !signals.is_empty() && self.detector.take_eviction_notice() {
            self.signals.warn_later(
                "tracing_usr::detection",
                format!(
                    "a detection table is full of keys with open signals (max_keys = {}): the oldest signal was evicted",
                    self.detector.config().max_keys
                ),
            );
        }
    }

    /// Hands a business event to detection: judged now when the client IP is known, else queued
    /// on the root until it is (or the root closes). Signals raised now wait in `state.signals`
    /// for [`Detection::run`] or [`take`] once the extension lock is released. An admin-only
    /// sensitive activity is also kept for the privilege rules at close.
    pub(crate) fn submit(&self, state: &mut RootState, mut obs: Observation) {
        let privilege = obs.needs_privilege_check();
        let ip_known = state.trace.client_ip().is_some();
        if (privilege || !ip_known) && !state.detection_armed {
            state.detection_armed = true;
            self.armed_roots.fetch_add(1, Ordering::AcqRel);
        }
        if privilege {
            state.trace.push_privilege_check(obs.clone());
        }
        if !ip_known {
            state.trace.push_detection(obs);
            return;
        }
        stamp(&mut obs, state);
        let mut signals = self.judge(obs, state);
        if !signals.is_empty() {
            self.finish(state, &mut signals);
            state.signals.extend(signals);
        }
    }

    /// The observation of a business event, read from its tags, timed now; `None` for events
    /// no rule watches.
    pub(crate) fn observation<K: AsRef<str>>(&self, name: &str, tags: &[(K, String)]) -> Option<Observation> {
        Observation::from_event_tags(name, tags, self.detector.now())
    }

    /// Submits the business event `name` (its tags) when a rule watches it.
    pub(crate) fn submit_event<K: AsRef<str>>(
        &self,
        state: &mut RootState,
        name: &str,
        tags: &[(K, String)],
    ) {
        if let Some(obs) = self.observation(name, tags) {
            self.submit(state, obs);
        }
    }

    /// The root's detection work at its close: waiting events and the privilege rules.
    pub(crate) fn close(&self, state: &mut RootState) -> Vec<Signal> {
        if !state.detection_armed {
            return take(state);
        }
        state.detection_armed = false;
        self.armed_roots.fetch_sub(1, Ordering::AcqRel);
        self.run(state, true)
    }
}

/// The request's client IP and trace id, on an observation about to be judged.
fn stamp(obs: &mut Observation, state: &RootState) {
    obs.ip = state.trace.client_ip();
    obs.trace_id = state.trace_id;
}

/// The signals [`Detection::submit`] raised, taken.
pub(crate) fn take(state: &mut RootState) -> Vec<Signal> {
    std::mem::take(&mut state.signals)
}
