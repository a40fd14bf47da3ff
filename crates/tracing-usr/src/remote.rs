//! Datadog Remote Configuration (`ASM_DATA`) wired into the block list: the client polls the
//! Datadog exporter's agent and replaces the list's remote entries after every change.

use std::sync::Arc;
use std::time::Duration;

use tracing_usr_core::blocking::{unix_now, BlockList, BlockSource};
use tracing_usr_core::mode::ConfigWarning;
use tracing_usr_export::datadog::DatadogConfig;
use tracing_usr_export::remote_config::{ClientIdentity, RemoteConfigClient};

/// `false` turns Remote Configuration off (it is on whenever the Datadog exporter runs).
pub const ENV_REMOTE_CONFIG_ENABLED: &str = "DD_REMOTE_CONFIGURATION_ENABLED";
/// Seconds between polls (fractions allowed). Defaults to 5.
pub const ENV_REMOTE_CONFIG_POLL_INTERVAL: &str = "DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS";

const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Whether Remote Configuration runs, and how often it polls, from `var`.
pub(crate) fn settings(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> (bool, Duration) {
    let enabled = match var(ENV_REMOTE_CONFIG_ENABLED).as_deref().map(str::trim) {
        None => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) => {
            warnings.push(ConfigWarning::new(
                ENV_REMOTE_CONFIG_ENABLED,
                format!("invalid value {v:?} (expected true or false); remote configuration stays on"),
            ));
            true
        }
    };
    let interval = match var(ENV_REMOTE_CONFIG_POLL_INTERVAL) {
        None => DEFAULT_INTERVAL,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Duration::from_secs_f64(secs),
            _ => {
                warnings.push(ConfigWarning::new(
                    ENV_REMOTE_CONFIG_POLL_INTERVAL,
                    format!("invalid interval {v:?} (seconds, more than 0); polling every 5 s"),
                ));
                DEFAULT_INTERVAL
            }
        },
    };
    (enabled, interval)
}

/// Starts the client for the agent of `config`; its lists replace `blocks`' remote entries.
pub(crate) fn start(
    config: &DatadogConfig,
    interval: Duration,
    blocks: &Arc<BlockList>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<RemoteConfigClient> {
    let identity = ClientIdentity {
        runtime_id: crate::ids::security_response_id(),
        service: config.service.clone(),
        env: config.env.clone(),
        app_version: config.version.clone(),
    };
    let blocks = Arc::clone(blocks);
    let apply = move |remote: &tracing_usr_export::remote_config::RemoteBlocks| {
        let now = unix_now();
        blocks.replace_users_from(BlockSource::Remote, remote.users.iter().cloned(), now);
        // Entries that are not addresses or ranges were skipped (and reported to the agent as
        // part of the file's state when they did not parse).
        let _ = blocks.replace_ips_from(BlockSource::Remote, remote.ips.iter().cloned(), now);
    };
    match RemoteConfigClient::start(config, interval, identity, apply) {
        Ok(client) => Some(client),
        Err(e) => {
            warnings.push(ConfigWarning::new(
                ENV_REMOTE_CONFIG_ENABLED,
                format!("cannot start the remote configuration client ({e}); remote blocks are not received"),
            ));
            None
        }
    }
}
