//! Which collector exporters run, from the builder and the environment (Datadog agent, OTLP).

#[cfg(feature = "otlp")]
use std::time::Duration;

#[cfg(any(feature = "datadog", feature = "otlp"))]
use tracing_usr_core::mode::ConfigWarning;
#[cfg(feature = "datadog")]
use tracing_usr_export::datadog::{parse_dd_tags, AgentAddress, DatadogConfig};
#[cfg(feature = "otlp")]
use tracing_usr_export::otlp::{OtlpConfig, OtlpProtocol};

/// Datadog agent URL (`http://host:port` or `unix:///path`); wins over host and port.
pub const ENV_DD_TRACE_AGENT_URL: &str = "DD_TRACE_AGENT_URL";
/// Datadog agent host.
pub const ENV_DD_AGENT_HOST: &str = "DD_AGENT_HOST";
/// Datadog agent port.
pub const ENV_DD_TRACE_AGENT_PORT: &str = "DD_TRACE_AGENT_PORT";
/// Service name.
pub const ENV_DD_SERVICE: &str = "DD_SERVICE";
/// Environment.
pub const ENV_DD_ENV: &str = "DD_ENV";
/// Version.
pub const ENV_DD_VERSION: &str = "DD_VERSION";
/// Tags added to every span.
pub const ENV_DD_TAGS: &str = "DD_TAGS";
/// Where Datadog-format log lines go when the Datadog exporter runs: `stdout`, `file:PATH`,
/// `none`.
pub const ENV_DD_LOGS: &str = "TRACING_USR_DD_LOGS";
/// OTLP base endpoint (`/v1/traces` and `/v1/logs` are appended).
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// OTLP traces endpoint (used as is).
pub const ENV_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// OTLP logs endpoint (used as is).
pub const ENV_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
/// OTLP headers, `key=value` pairs separated by commas (values URL-decoded).
pub const ENV_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `http/protobuf` (default) or `http/json`.
pub const ENV_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Request timeout in milliseconds (default 10000).
pub const ENV_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// `gzip` or `none`.
pub const ENV_OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
/// How long a failed export request is retried, in seconds (fractions allowed), for the
/// Datadog and OTLP exporters configured from the environment. Defaults to 300.
pub const ENV_EXPORT_RETRY_SECONDS: &str = "TRACING_USR_EXPORT_RETRY_SECONDS";
/// OTel service name (wins over `OTEL_RESOURCE_ATTRIBUTES` and `DD_SERVICE`).
pub const ENV_OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// OTel resource attributes, `key=value` pairs separated by commas.
pub const ENV_OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

#[cfg(feature = "otlp")]
fn percent_decode(value: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `key=value,key2=value2` (OTel headers and resource attributes).
#[cfg(feature = "otlp")]
pub(crate) fn parse_pairs(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

/// The retry policy, with the retry time of `TRACING_USR_EXPORT_RETRY_SECONDS` when it is set.
#[cfg(any(feature = "datadog", feature = "otlp"))]
fn retry_from_env(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> tracing_usr_export::http::RetryPolicy {
    let mut retry = tracing_usr_export::http::RetryPolicy::default();
    if let Some(v) = var(ENV_EXPORT_RETRY_SECONDS) {
        match v.trim().parse::<f64>() {
            Ok(secs) if (0.0..=86_400.0).contains(&secs) => {
                retry.max_elapsed = std::time::Duration::from_secs_f64(secs);
            }
            _ => warnings.push(ConfigWarning::new(
                ENV_EXPORT_RETRY_SECONDS,
                format!("invalid retry time {v:?} (seconds, 0 to 86400); retrying for 300 s"),
            )),
        }
    }
    retry
}

/// Reads the Datadog exporter's settings; `None` when none of its variables is set.
#[cfg(feature = "datadog")]
pub(crate) fn datadog_from_env(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<DatadogConfig> {
    let url = var(ENV_DD_TRACE_AGENT_URL);
    let host = var(ENV_DD_AGENT_HOST);
    let port = var(ENV_DD_TRACE_AGENT_PORT);
    if url.is_none() && host.is_none() && port.is_none() {
        return None;
    }
    let mut config = DatadogConfig::default();
    let from_parts = |warnings: &mut Vec<ConfigWarning>| {
        let port = port.as_deref().map_or(8126, |p| {
            p.trim().parse::<u16>().unwrap_or_else(|_| {
                warnings.push(ConfigWarning::new(
                    ENV_DD_TRACE_AGENT_PORT,
                    format!("invalid port {p:?}; using 8126"),
                ));
                8126
            })
        });
        let host = host.as_deref().map_or("localhost", str::trim);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        AgentAddress::Http(format!("http://{host}:{port}"))
    };
    config.agent = match url.as_deref() {
        Some(url) => AgentAddress::parse(url).unwrap_or_else(|| {
            warnings.push(ConfigWarning::new(
                ENV_DD_TRACE_AGENT_URL,
                format!("invalid URL {url:?} (expected http://, https:// or unix://); using host and port"),
            ));
            from_parts(warnings)
        }),
        None => from_parts(warnings),
    };
    if let Some(service) = var(ENV_DD_SERVICE) {
        config.service = service;
    }
    config.env = var(ENV_DD_ENV);
    config.version = var(ENV_DD_VERSION);
    config.tags = var(ENV_DD_TAGS).map(|t| parse_dd_tags(&t)).unwrap_or_default();
    config.retry = retry_from_env(var, warnings);
    Some(config)
}

/// The OTLP settings that `var` (a variable lookup) describes, as the builder reads them;
/// `None` when no endpoint variable is set. Problems are added to `warnings`.
#[cfg(feature = "otlp")]
pub fn otlp_config_from(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<OtlpConfig> {
    let base = var(ENV_OTLP_ENDPOINT);
    let traces = var(ENV_OTLP_TRACES_ENDPOINT);
    let logs = var(ENV_OTLP_LOGS_ENDPOINT);
    if base.is_none() && traces.is_none() && logs.is_none() {
        return None;
    }
    let base = base
        .map(|b| b.trim().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| "http://localhost:4318".to_owned());
    let mut config = OtlpConfig {
        traces_endpoint: Some(traces.unwrap_or_else(|| format!("{base}/v1/traces"))),
        logs_endpoint: Some(logs.unwrap_or_else(|| format!("{base}/v1/logs"))),
        resource: otlp_resource(var),
        retry: retry_from_env(var, warnings),
        ..OtlpConfig::default()
    };
    if let Some(headers) = var(ENV_OTLP_HEADERS) {
        config.headers = parse_pairs(&headers);
    }
    if let Some(protocol) = var(ENV_OTLP_PROTOCOL) {
        config.protocol = match protocol.trim() {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "http/json" => OtlpProtocol::HttpJson,
            other => {
                warnings.push(ConfigWarning::new(
                    ENV_OTLP_PROTOCOL,
                    format!(
                        "unsupported protocol {other:?} (http/protobuf or http/json); using http/protobuf"
                    ),
                ));
                OtlpProtocol::HttpProtobuf
            }
        };
    }
    if let Some(timeout) = var(ENV_OTLP_TIMEOUT) {
        match timeout.trim().parse::<u64>() {
            Ok(ms) => config.timeout = Duration::from_millis(ms.max(1)),
            Err(_) => warnings.push(ConfigWarning::new(
                ENV_OTLP_TIMEOUT,
                format!("invalid timeout {timeout:?} (milliseconds); using 10000"),
            )),
        }
    }
    if let Some(compression) = var(ENV_OTLP_COMPRESSION) {
        match compression.trim() {
            "gzip" => config.gzip = true,
            "none" => config.gzip = false,
            other => warnings.push(ConfigWarning::new(
                ENV_OTLP_COMPRESSION,
                format!("unsupported compression {other:?} (gzip or none); sending uncompressed"),
            )),
        }
    }
    Some(config)
}

/// The resource attributes: `service.name` first (`OTEL_SERVICE_NAME`, then the resource
/// variable's, then `DD_SERVICE`), then the resource variable's, then `DD_ENV` and `DD_VERSION`
/// under their OTel names where the resource variable does not set them.
#[cfg(feature = "otlp")]
fn otlp_resource(var: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut resource = var(ENV_OTEL_RESOURCE_ATTRIBUTES)
        .map(|r| parse_pairs(&r))
        .unwrap_or_default();
    let service = var(ENV_OTEL_SERVICE_NAME)
        .or_else(|| {
            resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| var(ENV_DD_SERVICE))
        .unwrap_or_else(tracing_usr_export::default_service_name);
    resource.retain(|(k, _)| k != "service.name");
    resource.insert(0, ("service.name".to_owned(), service));
    for (key, variable) in [
        ("deployment.environment.name", ENV_DD_ENV),
        ("service.version", ENV_DD_VERSION),
    ] {
        if !resource.iter().any(|(k, _)| k == key) {
            if let Some(value) = var(variable) {
                resource.push((key.to_owned(), value));
            }
        }
    }
    resource
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use super::*;

    #[test]
    fn the_retry_time_comes_from_the_environment_with_a_documented_fallback() {
        let config = |value: &str| {
            let var = |name: &str| match name {
                ENV_OTLP_ENDPOINT => Some("http://collector:4318".to_owned()),
                ENV_EXPORT_RETRY_SECONDS => Some(value.to_owned()),
                _ => None,
            };
            let mut warnings = Vec::new();
            let config = otlp_config_from(&var, &mut warnings).expect("an OTLP config");
            (config.retry.max_elapsed, warnings.len())
        };
        assert_eq!(config("2.5"), (Duration::from_millis(2_500), 0));
        assert_eq!(config("0"), (Duration::ZERO, 0));
        assert_eq!(config("soon"), (Duration::from_secs(300), 1));
        assert_eq!(config("-1"), (Duration::from_secs(300), 1));
    }

    #[test]
    fn pairs_are_split_and_decoded() {
        assert_eq!(
            parse_pairs("api-key=a%3Db, x = y ,bad,=v"),
            vec![
                ("api-key".to_owned(), "a=b".to_owned()),
                ("x".to_owned(), "y".to_owned())
            ]
        );
    }
}
