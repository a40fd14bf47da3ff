//! In-process detection of account takeover and business-logic abuse (`docs/detection.md`
//! in the repository): ten rules over the business events, exact sliding windows, bounded
//! sharded tables, the signal lifecycle and the block actions.
//!
//! Pure: the [`Detector`] is fed [`Observation`]s and returns [`Signal`]s; the layer delivers
//! them and applies their [`Action`]s. Time is read from an injectable [`Clock`](crate::blocking::Clock) and kept as
//! `u32` seconds since the detector started.
//!
//! ```
//! use std::sync::Arc;
//! use tracing_usr_core::blocking::ManualClock;
//! use tracing_usr_core::detection::{DetectionConfig, Detector, EventKind, Observation, RuleId};
//!
//! let detector = Detector::new(DetectionConfig::default(), Arc::new(ManualClock::new()));
//! let mut signals = Vec::new();
//! for n in 0..31 {
//!     let mut failure = Observation::new(EventKind::LoginFailure, detector.now());
//!     failure.ip = Some("203.0.113.9".parse().unwrap());
//!     failure.account = Some(format!("user-{n}"));
//!     signals = detector.observe(&failure);
//!     if n < 30 {
//!         assert!(signals.is_empty(), "not before the 31st failure");
//!     }
//! }
//! assert_eq!(signals[0].rule, RuleId::CredentialStuffing);
//! ```

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
mod config;
mod detector;
mod signal;
mod table;
mod window;

pub use config::{
    DetectionConfig, DetectionConfigError, DetectionConfigErrorKind, RuleConfig, RuleId, MAX_KEY_TEXT,
    MAX_THRESHOLD, MAX_WINDOW,
};
pub use detector::Detector;
pub use signal::{Action, EventKind, KeyKind, Observation, Severity, Signal};

#[cfg(test)]
mod tests;
