//! The spool: records the collector could not take, kept on disk until it can (opt in).
//!
//! Files are named `spool-<unix nanos>-<pid>-<n>.bin` in the spool directory, written by the
//! export threads only, and hold frames of `length (u32 LE) | FNV-1a 64 of the payload (u64 LE)
//! | payload` where the payload is one record in JSON, already masked. A frame cut short or
//! whose checksum does not match (a crash in the middle of a write) ends its file: it is
//! counted as torn and never sent. Files are read back oldest first and deleted once read.
//! One process per directory.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::Record;

/// Where the spool lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The directory (created when missing).
    pub dir: PathBuf,
    /// The most bytes the spool's files may hold together; records beyond it are dropped and
    /// counted. Defaults to 256 MiB.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// A spool in `dir`, with the default cap.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 256 << 20,
        }
    }
}

/// What reading the spool back gave.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) records: Vec<Record>,
    /// Frames cut short or corrupt, skipped.
    pub(crate) torn: u64,
}

/// An open spool.
#[derive(Debug)]
pub(crate) struct Spool {
    config: SpoolConfig,
    /// Bytes in the spool's files.
    used: u64,
    /// Files written and not yet read back, oldest first.
    files: Vec<PathBuf>,
    written: u64,
}

const HEADER: usize = 12;

/// FNV-1a, 64 bits: a checksum that catches a torn or garbled frame.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Spool {
    /// Opens (creating) the directory and finds the files a previous run left.
    pub(crate) fn open(config: SpoolConfig) -> io::Result<Spool> {
        fs::create_dir_all(&config.dir)?;
        let mut files: Vec<PathBuf> = fs::read_dir(&config.dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_spool_file(path))
            .collect();
        files.sort();
        let used = files
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        Ok(Spool {
            config,
            used,
            files,
            written: 0,
        })
    }

    /// Whether records wait on disk.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes `records` to a new file, as many as the cap allows; returns how many were
    /// written (the first ones), the rest being left to the caller to count as dropped.
    pub(crate) fn write(&mut self, records: &[Record]) -> io::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut frames = Vec::new();
        let mut written = 0;
        for record in records {
            let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
            let size = (HEADER + payload.len()) as u64;
            if self.used + frames.len() as u64 + size > self.config.max_bytes {
                break;
            }
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frames.extend_from_slice(&checksum(&payload).to_le_bytes());
            frames.extend_from_slice(&payload);
            written += 1;
        }
        if written == 0 {
            return Ok(0);
        }
        let path = self.next_path();
        let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        file.write_all(&frames)?;
        file.sync_data()?;
        self.used += frames.len() as u64;
        self.files.push(path);
        Ok(written)
    }

    /// Reads back and deletes the oldest files, up to `max` records' worth (whole files).
    pub(crate) fn restore(&mut self, max: usize) -> Restored {
        let mut restored = Restored::default();
        while restored.records.len() < max && !self.files.is_empty() {
            let path = self.files.remove(0);
            let bytes = fs::read(&path).unwrap_or_default();
            restored.torn += read_frames(&bytes, &mut restored.records);
            self.used = self.used.saturating_sub(bytes.len() as u64);
            let _ = fs::remove_file(&path);
        }
        restored
    }

    fn next_path(&mut self) -> PathBuf {
        self.written += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.config.dir.join(format!(
            "spool-{nanos:024}-{}-{:06}.bin",
            std::process::id(),
            self.written
        ))
    }
}

fn is_spool_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("spool-") && n.ends_with(".bin"))
}

/// Appends the records of `bytes` to `out`; returns 1 when the file ended in a torn or corrupt
/// frame (the rest of the file is skipped), else 0.
fn read_frames(mut bytes: &[u8], out: &mut Vec<Record>) -> u64 {
    while !bytes.is_empty() {
        let Some((length, sum)) = bytes.get(..HEADER).map(|h| {
            (
                u32::from_le_bytes(h[..4].try_into().unwrap_or_default()) as usize,
                u64::from_le_bytes(h[4..].try_into().unwrap_or_default()),
            )
        }) else {
            return 1;
        };
        let Some(payload) = bytes.get(HEADER..HEADER + length) else {
            return 1;
        };
        if checksum(payload) != sum {
            return 1;
        }
        match serde_json::from_slice(payload) {
            Ok(record) => out.push(record),
            Err(_) => return 1,
        }
        bytes = &bytes[HEADER + length..];
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FieldValue, Key, Level, LogRecord};

    fn log(i: u64) -> Record {
        Record::Log(LogRecord {
            timestamp_unix_nanos: i,
            level: Level::Warn,
            target: "app".into(),
            message: Some("checked".into()),
            fields: vec![(Key::Borrowed("n"), FieldValue::U64(i))],
            trace_id: Some(u128::MAX - u128::from(i)),
            span_id: Some(7),
            user: vec![(Key::Borrowed("usr.id"), "u-1".into())].into(),
        })
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracing-usr-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_come_back_in_order_across_a_restart_and_the_files_go() {
        let dir = dir("order");
        let records: Vec<Record> = (0..50).map(log).collect();
        let mut spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
        assert_eq!(spool.write(&records[..20]).unwrap(), 20);
        assert_eq!(spool.write(&records[20..]).unwrap(), 30);
        drop(spool);
        let mut spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
        let restored = spool.restore(usize::MAX);
        assert_eq!(restored.records, records);
        assert_eq!(restored.torn, 0);
        assert!(spool.is_empty());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_file_cut_mid_record_gives_back_the_records_before_the_cut() {
        let dir = dir("torn");
        let records: Vec<Record> = (0..10).map(log).collect();
        let mut spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
        spool.write(&records).unwrap();
        let path = spool.files[0].clone();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let mut spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
        let restored = spool.restore(usize::MAX);
        assert_eq!(restored.records, records[..9]);
        assert_eq!(restored.torn, 1);
        // A flipped byte inside a frame is caught by the checksum.
        let mut spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
        spool.write(&records).unwrap();
        let path = spool.files[0].clone();
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        let restored = Spool::open(SpoolConfig::new(&dir)).unwrap().restore(usize::MAX);
        assert!(restored.records.len() < 10 && restored.records[..] == records[..restored.records.len()]);
        assert_eq!(restored.torn, 1);
    }

    #[test]
    fn the_cap_holds() {
        let dir = dir("cap");
        let records: Vec<Record> = (0..100).map(log).collect();
        let one = serde_json::to_vec(&records[0]).unwrap().len() as u64 + HEADER as u64;
        let mut spool = Spool::open(SpoolConfig {
            dir: dir.clone(),
            max_bytes: one * 10 + one / 2,
        })
        .unwrap();
        let written = spool.write(&records).unwrap();
        assert!((9..=10).contains(&written), "{written}");
        assert_eq!(spool.write(&records).unwrap(), 0, "full");
        let size: u64 = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(size <= one * 10 + one / 2);
    }
}
