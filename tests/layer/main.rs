//! Integration tests of the layer, one behaviour per file.
#[path = "../support/mod.rs"]
mod support;

mod concurrent_requests_never_mix_users;
mod environment_variables_resolve_the_mode;
mod events_carry_the_user_of_their_trace;
mod export_pipeline_never_blocks_or_loses_silently;
mod identity_is_lifted_to_the_local_root;
mod json_lines_are_the_embedded_default;
mod logout_and_default_identity;
mod masking_never_leaks_random_secrets;
mod modes_govern_the_field_path;
mod odd_field_values_are_handled;
mod retroactive_logs_carry_the_final_user;
mod sdk_identity_wins_over_fields;
mod secrets_are_masked_before_export;
