//! tracing-usr as the user layer of a tracing-opentelemetry pipeline: the root's tags reach the
//! OpenTelemetry span that the pipeline exports, checked on what the real Datadog test agent
//! received (OTLP/HTTP decoded with opentelemetry-proto, and Datadog's `/v0.4/traces`).
#[path = "../support/mod.rs"]
mod support;

#[path = "../support/agent.rs"]
mod agent;

mod otel;

mod a_root_created_with_its_user_still_takes_a_remote_parent;
mod datadog_opentelemetry_roots_carry_the_user;
mod fields_tracing_usr_cannot_reach_are_warned_about;
mod otel_roots_carry_the_user_in_either_layer_order;
mod the_otel_guard_keeps_raw_fields_off_the_app_spans;
mod with_an_otel_layer_tracing_usr_exports_nothing_itself;
