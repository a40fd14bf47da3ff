//! The user guide: the contract documents of the repository's `docs/` folder, shipped in this
//! package and rendered here, one page each.

#[doc = include_str!("../docs/tags.md")]
pub mod tags {}

#[doc = include_str!("../docs/detection.md")]
pub mod detection {}

#[doc = include_str!("../docs/json-lines.md")]
pub mod json_lines {}

#[doc = include_str!("../docs/sdk-migration.md")]
pub mod sdk_migration {}
