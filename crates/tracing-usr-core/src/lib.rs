//! The I/O-free model and rules of [tracing-usr](https://docs.rs/tracing-usr): the SDK
//! [`User`], identity buckets and their merge, the modes and the anonymizer, secret masking,
//! blocking lists and the detection engine.
//!
//! Nothing here does I/O or touches `tracing`; the layer crate wires these rules into a
//! `tracing_subscriber::Layer`. Most users want the `tracing-usr` crate, which re-exports what
//! they need from here.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod anonymize;
pub mod blocking;
pub mod detection;
pub mod events;
pub mod identity;
pub mod keys;
pub mod mask;
pub mod mode;
pub mod propagation;
pub mod root;
pub mod semconv;
pub mod trace;
pub mod user;
pub mod value;

pub use anonymize::Anonymizer;
pub use identity::{IdentityBucket, Source, TraceIdentity};
pub use mask::{Masker, PatternError, REDACTED};
pub use mode::Mode;
pub use root::RootFacts;
pub use trace::TraceState;
pub use user::{Secret, User};
