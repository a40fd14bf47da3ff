//! The detection test rig: a harness on a manual clock with a signal sink, and the helpers the
//! behaviour files share.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_usr::blocking::ManualClock;
use tracing_usr::detection::{DetectionConfig, Signal};
use tracing_usr::Builder;

use crate::support::{builder_with_env, Harness};

/// The signals a closure sink received.
#[derive(Clone, Default)]
pub(crate) struct Signals(Arc<Mutex<Vec<Signal>>>);

impl Signals {
    pub(crate) fn take(&self) -> Vec<Signal> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// A signal sink that collects into this list.
    pub(crate) fn sink(&self) -> impl Fn(&Signal) + Send + Sync + 'static {
        let signals = self.clone();
        move |s: &Signal| signals.0.lock().unwrap().push(s.clone())
    }
}

pub(crate) struct Setup {
    pub(crate) h: Harness,
    pub(crate) clock: ManualClock,
    pub(crate) signals: Signals,
}

pub(crate) fn setup_with(config: DetectionConfig, builder: Builder) -> Setup {
    let clock = ManualClock::new();
    let signals = Signals::default();
    let builder = builder
        .with_clock(Arc::new(clock.clone()))
        .with_detection(config)
        .unwrap()
        .with_signal_sink(signals.sink());
    Setup {
        h: Harness::new(builder),
        clock,
        signals,
    }
}

pub(crate) fn setup(config: DetectionConfig) -> Setup {
    setup_with(config, builder_with_env(&[]))
}

impl Setup {
    /// Runs `f` inside a request root span from `ip`.
    pub(crate) fn request<R>(&self, ip: &str, f: impl FnOnce() -> R) -> R {
        self.h.run(|| {
            let _root =
                tracing::info_span!("request", http.client_ip = ip, http.useragent = "attack-bot/1.0")
                    .entered();
            f()
        })
    }

    pub(crate) fn failure(&self, ip: &str, login: &str) {
        self.request(ip, || {
            tracing_usr::track_login_failure(login, true, None, ()).unwrap()
        });
    }

    pub(crate) fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

/// `n` calls of `f(i)`, asserting that none raised a signal.
pub(crate) fn quiet(s: &Setup, n: usize, f: impl Fn(usize)) {
    for i in 0..n {
        f(i);
        let got = s.signals.take();
        assert!(got.is_empty(), "signal after {} events: {got:#?}", i + 1);
    }
}

pub(crate) fn one(s: &Setup) -> Signal {
    let got = s.signals.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    got.into_iter().next().unwrap()
}
