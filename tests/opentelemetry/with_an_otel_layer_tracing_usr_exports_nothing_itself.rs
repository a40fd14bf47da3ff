//! With a tracing-opentelemetry layer in the subscriber and no tracing-usr exporter configured,
//! tracing-usr writes nothing to stdout (the embedded default is off), and blocking still works.
use std::process::Command;

use tracing::info_span;
use tracing_usr::blocking::BlockEntry;
use tracing_usr::{SdkError, User};

use crate::otel::{pipeline_with, ORDERS};
use crate::support::builder_with_env;

/// Run in a child process so its stdout can be read: the test binary itself with this variable.
const CHILD: &str = "TRACING_USR_OTEL_STDOUT_CHILD";

#[test]
fn stdout_stays_empty_and_blocked_users_are_still_blocked() {
    if let Some(order) = std::env::var_os(CHILD) {
        let order = ORDERS[order.to_string_lossy().parse::<usize>().unwrap()];
        // The real default: no `with_json_lines`, no exporter, so JSON lines would go to stdout.
        let builder = builder_with_env(&[]).with_blocked_users([BlockEntry {
            value: "user-bad".into(),
            expiration: None,
        }]);
        let p = pipeline_with(order, builder);
        for n in 0..3 {
            p.run(|| {
                let _root = info_span!("request", n = n).entered();
                let _child = info_span!("handler", usr.id = "user-1").entered();
                tracing::info!("working");
                let blocked = tracing_usr::identify(&User::new("user-bad"));
                assert!(matches!(blocked, Err(SdkError::Blocked { .. })), "{blocked:?}");
            });
        }
        p.handle.flush().unwrap();
        let spans = p.spans();
        assert!(spans
            .iter()
            .any(|s| s.is_root() && s.attr("usr.id") == Some("user-bad")));
        return;
    }
    let agent = crate::agent::TestAgent::get();
    for (index, order) in ORDERS.iter().enumerate() {
        let _session = agent.otlp_session();
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "with_an_otel_layer_tracing_usr_exports_nothing_itself::stdout_stays_empty_and_blocked_users_are_still_blocked", "--nocapture", "--test-threads=1"])
            .env(CHILD, index.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{order:?}: the child failed:\n{stdout}\n{stderr}"
        );
        assert!(
            !stdout.contains("\"usr.id\"") && !stdout.contains("\"trace_id\""),
            "{order:?}: tracing-usr wrote JSON lines to stdout:\n{stdout}"
        );
    }
}
