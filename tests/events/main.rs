//! Integration tests of business events, the SDK calls and propagation, one behaviour per file.
#[path = "../support/mod.rs"]
mod support;

mod blocked_users_get_a_blocked_verdict;
mod calling_twice_follows_the_overwrite_rules;
mod field_path_events_follow_the_mode;
mod metadata_is_flattened_as_documented;
mod propagation_round_trips_between_services;
mod sdk_calls_report_what_they_could_not_do;
mod sdk_wins_over_the_field_path;
mod user_records_are_field_path_identity;
