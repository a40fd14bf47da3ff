//! The tower middleware end to end (root span, client IP behind trusted proxies, 403 answers,
//! detection's blocks), one behaviour per file.
#[path = "../support/mod.rs"]
mod support;

mod service;

mod detection_blocks_attackers;
mod the_middleware_blocks_and_finds_the_client;
