//! The blocked-user list from a file, reloaded when the file changes.
//!
//! The file is a JSON array of entries: `[{"value": "user-42", "expiration": 1767225600}]`
//! (`expiration` in Unix seconds, optional; `0` or absent means never). A background thread
//! checks the file's modification time every interval and replaces the list when it changed;
//! a file that cannot be read or parsed keeps the previous list and gives a warning (target
//! `tracing_usr::config`) through the global subscriber.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tracing_usr_core::blocking::{unix_now, BlockEntry, BlockList, BlockSource};

/// Parses the file's JSON.
pub(crate) fn parse(text: &str) -> Result<Vec<BlockEntry>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = value
        .as_array()
        .ok_or("expected a JSON array of {\"value\", \"expiration\"} objects")?;
    items
        .iter()
        .map(|item| {
            let value = item
                .get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty());
            let value = value.ok_or_else(|| format!("entry without a string \"value\": {item}"))?;
            let expiration = match item.get("expiration") {
                None | Some(Value::Null) => None,
                Some(e) => Some(
                    e.as_u64()
                        .ok_or_else(|| format!("\"expiration\" is not Unix seconds: {item}"))?,
                ),
            };
            Ok(BlockEntry {
                value: value.to_owned(),
                expiration,
            })
        })
        .collect()
}

fn load(path: &Path, list: &BlockList) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    list.replace_users_from(BlockSource::File, entries, unix_now());
    Ok(())
}

/// Loads the file now (the error, if any, is returned for a build-time warning) and starts the
/// watcher thread, which ends when the list is dropped.
pub(crate) fn watch(path: PathBuf, list: &Arc<BlockList>, interval: Duration) -> Result<(), String> {
    let first = load(&path, list);
    let weak: Weak<BlockList> = Arc::downgrade(list);
    // Modification time and size: a coarse clock alone could miss a quick rewrite.
    let modified = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    let mut seen = modified(&path);
    let spawned = std::thread::Builder::new().name("tracing-usr-block-file".into()).spawn(move || loop {
        std::thread::sleep(interval);
        let Some(list) = weak.upgrade() else { return };
        let now = modified(&path);
        if now != seen {
            seen = now;
            if let Err(e) = load(&path, &list) {
                tracing::warn!(target: "tracing_usr::config", "blocked-user file not reloaded, the previous list stays: {e}");
            }
        }
    });
    if let Err(e) = spawned {
        return Err(format!(
            "cannot watch {} ({e}); it is loaded once",
            path_display(&first)
        ));
    }
    first
}

fn path_display(result: &Result<(), String>) -> &str {
    match result {
        Ok(()) => "the blocked-user file",
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_an_array_of_entries() {
        assert_eq!(
            parse(
                r#"[{"value":"u-1"},{"value":"u-2","expiration":0},{"value":"u-3","expiration":1767225600}]"#
            )
            .unwrap(),
            vec![
                BlockEntry {
                    value: "u-1".into(),
                    expiration: None
                },
                BlockEntry {
                    value: "u-2".into(),
                    expiration: Some(0)
                },
                BlockEntry {
                    value: "u-3".into(),
                    expiration: Some(1_767_225_600)
                },
            ]
        );
        assert!(parse("{}").is_err());
        assert!(parse(r#"[{"value": 3}]"#).is_err());
        assert!(parse(r#"[{"value": "u", "expiration": "soon"}]"#).is_err());
        assert!(parse("not json").is_err());
    }
}
