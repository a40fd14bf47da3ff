//! Which exporters run, from the usual environment variables alone.
use crate::support::builder_with_env;

fn exporters(vars: &[(&str, &str)]) -> Vec<String> {
    builder_with_env(vars).build().handle().exporters()
}

#[test]
fn no_collector_means_json_lines_on_stdout() {
    assert_eq!(exporters(&[]), vec!["json-lines"]);
}

#[test]
fn datadog_variables_enable_the_agent_exporter_and_its_log_lines() {
    for var in ["DD_TRACE_AGENT_URL", "DD_AGENT_HOST", "DD_TRACE_AGENT_PORT"] {
        let value = if var == "DD_TRACE_AGENT_URL" {
            "http://127.0.0.1:9"
        } else if var == "DD_AGENT_HOST" {
            "127.0.0.1"
        } else {
            "9"
        };
        assert_eq!(
            exporters(&[(var, value)]),
            vec!["datadog", "datadog-logs"],
            "{var}"
        );
    }
    assert_eq!(
        exporters(&[("DD_AGENT_HOST", "x"), ("TRACING_USR_DD_LOGS", "none")]),
        vec!["datadog"]
    );
}

#[test]
fn otlp_variables_enable_the_otlp_exporter() {
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ] {
        assert_eq!(exporters(&[(var, "http://127.0.0.1:9")]), vec!["otlp"], "{var}");
    }
}

#[test]
fn both_collectors_and_json_lines_can_run_together() {
    assert_eq!(
        exporters(&[
            ("DD_AGENT_HOST", "127.0.0.1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("TRACING_USR_EXPORT", "stdout"),
            ("TRACING_USR_DD_LOGS", "none"),
        ]),
        vec!["datadog", "otlp", "json-lines"]
    );
    // `none` switches off only the JSON lines, never a configured collector.
    assert_eq!(
        exporters(&[
            ("DD_AGENT_HOST", "h"),
            ("TRACING_USR_EXPORT", "none"),
            ("TRACING_USR_DD_LOGS", "none")
        ]),
        vec!["datadog"]
    );
}

#[test]
fn otlp_settings_follow_the_opentelemetry_precedence() {
    let var = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let mut warnings = Vec::new();
    let config = tracing_usr::collectors::otlp_config_from(
        &var(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/custom"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t%3D,x-team=id"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,team=identity",
            ),
            ("OTEL_SERVICE_NAME", "from-service-name"),
            ("DD_ENV", "prod"),
        ]),
        &mut warnings,
    )
    .unwrap();
    assert_eq!(
        config.traces_endpoint.as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(config.logs_endpoint.as_deref(), Some("http://logs:4318/custom"));
    assert_eq!(
        config.headers,
        vec![
            ("api-key".to_owned(), "s3cr3t=".to_owned()),
            ("x-team".to_owned(), "id".to_owned())
        ]
    );
    assert_eq!(config.timeout, std::time::Duration::from_millis(2500));
    assert!(config.gzip);
    assert_eq!(
        config.resource[0],
        ("service.name".to_owned(), "from-service-name".to_owned())
    );
    assert!(config
        .resource
        .contains(&("team".to_owned(), "identity".to_owned())));
    assert!(config
        .resource
        .contains(&("deployment.environment.name".to_owned(), "prod".to_owned())));
    assert_eq!(warnings.len(), 1, "grpc is not supported: {warnings:?}");
    // Header values never show in Debug output.
    assert!(!format!("{config:?}").contains("s3cr3t"));
}
