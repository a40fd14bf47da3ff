//! In-process detection through the public API: every rule at its exact threshold, sliding
//! windows on a manual clock, the signal lifecycle, deferral until the client IP is known,
//! root tags and exported signal events, actions and their expiry, bounded tables, settings.

#[path = "../support/mod.rs"]
mod support;

mod setup;

mod events_wait_for_the_client_ip;
mod every_rule_fires_at_its_exact_threshold;
mod identity_and_modes_feed_the_rules;
mod settings_come_from_the_builder_a_file_or_the_environment;
mod signals_reach_the_root_the_export_and_the_sink;
mod tables_stay_bounded_and_counts_exact;
mod windows_slide_and_signals_close_on_the_clock;
