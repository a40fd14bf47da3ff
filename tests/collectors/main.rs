//! Export to real collectors: the Datadog test agent (Datadog intake and OTLP/HTTP), and faulty
//! servers written here.
#[path = "../support/mod.rs"]
mod support;

#[path = "../support/agent.rs"]
mod agent;

// The tower rig, for the middleware's answers to remote blocks.
#[allow(dead_code)]
#[path = "../tower/service.rs"]
mod service;

mod collectors_are_chosen_from_the_environment;
mod datadog_agent_receives_user_tagged_traces;
mod datadog_log_lines_correlate_with_traces;
mod datadog_payload_groups_spans_by_trace;
mod exporters_run_inside_or_outside_tokio;
mod faulty_collectors_never_stall_the_application;
mod large_batches_go_out_in_bounded_requests;
mod otlp_collector_receives_traces_and_logs;
mod outages_lose_nothing_the_queue_can_hold;
mod remote_config_blocks_users_and_ips;
