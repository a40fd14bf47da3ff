//! Detection and blocks shared by several replicas on a real `redis-server` (feature `redis`):
//! three layers (three subscribers in this process) stand for three replicas of one service.
#[path = "../support/mod.rs"]
mod support;

// The tower rig; this binary uses only its request helpers.
#[allow(dead_code)]
#[path = "../tower/service.rs"]
mod service;

mod setup;

mod an_attack_spread_over_replicas_is_seen_whole;
mod blocks_reach_every_replica;
mod every_rule_counts_across_replicas;
mod redis_down_never_stops_a_request;
mod redis_holds_no_personal_data;
mod settings_and_bad_servers;
