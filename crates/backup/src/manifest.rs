//! The manifest: what a backup holds, written as the backup's last object so that only a
//! complete backup is ever listed. A format number lets later versions read older backups.

use serde::{Deserialize, Serialize};

use crate::error::BackupError;

/// The manifest format this version writes; it reads this one only.
pub const FORMAT: u32 = 1;

/// One backup: every shard's RDB, where it came from, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The backup's name (unique under the store's prefix).
    pub name: String,
    /// The cluster it was taken from (a name chosen by whoever took it).
    pub cluster: String,
    /// The lowest `redis_version` among the shards read.
    pub redis_version: String,
    /// Whether the source was a Redis Cluster (else one standalone server, all slots).
    pub cluster_mode: bool,
    /// When the backup started, RFC 3339.
    pub started_at: String,
    /// When the manifest was written, RFC 3339.
    pub finished_at: String,
    /// Shards in slot order.
    pub shards: Vec<ShardBackup>,
}

/// One shard's RDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    /// The object, relative to the backup's folder (`shard-0.rdb`).
    pub object: String,
    /// The shard's slot ranges, inclusive (`[[0, 5460]]`); all slots for a standalone source.
    pub slots: Vec<[u16; 2]>,
    /// The shard's master at the time.
    pub master: String,
    /// The node the RDB was read from (a replica when one was healthy).
    pub read_from: String,
    /// `master` or `replica`: whether the master had to fork.
    pub read_role: String,
    /// The replication id the RDB belongs to.
    pub replid: String,
    /// The replication offset the RDB corresponds to (the point a continuous archive goes on
    /// from).
    pub offset: u64,
    /// When the source started the snapshot (ms since the epoch): the point in time the RDB
    /// holds, within the source's fork time.
    pub taken_ms: u64,
    /// The RDB format version.
    pub rdb_version: u32,
    /// Keys in the RDB.
    pub keys: u64,
    /// The object's size.
    pub bytes: u64,
    /// The object's SHA-256, lowercase hex.
    pub sha256: String,
    /// The master's `used_memory` when the backup started (what a restore target must hold).
    pub used_memory: u64,
}

impl Manifest {
    /// Keys over every shard.
    pub fn keys(&self) -> u64 {
        self.shards.iter().map(|s| s.keys).sum()
    }

    /// Bytes over every shard's object.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Memory the source used over every shard.
    pub fn used_memory(&self) -> u64 {
        self.shards.iter().map(|s| s.used_memory).sum()
    }

    /// The latest moment any shard's RDB holds (ms since the epoch).
    pub fn taken_ms(&self) -> u64 {
        self.shards.iter().map(|s| s.taken_ms).max().unwrap_or(0)
    }

    /// Parses and checks a manifest read from `path`.
    ///
    /// # Errors
    /// [`BackupError::Format`] for anything but a well-formed manifest of [`FORMAT`].
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Self, BackupError> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| BackupError::Format {
            path: path.to_owned(),
            message: format!("not a backup manifest: {e}"),
        })?;
        if manifest.format != FORMAT {
            return Err(BackupError::Format {
                path: path.to_owned(),
                message: format!(
                    "manifest format {} (this version reads format {FORMAT})",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }
}

/// Checks a backup or cluster name: letters, digits, `.`, `_`, `-`, at most 128 characters,
/// not starting with `.` (it becomes part of object paths).
///
/// # Errors
/// [`BackupError::Invalid`] naming the rule broken.
pub fn check_name(what: &str, name: &str) -> Result<(), BackupError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "{what} {name:?}: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds (`2026-12-05T17:04:05.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| ms.to_string())
}

/// Parses a point in time: RFC 3339 (`2026-12-05T17:04:05Z`, any offset) or milliseconds since
/// the epoch.
///
/// # Errors
/// [`BackupError::Invalid`] with the accepted forms.
pub fn parse_time(text: &str) -> Result<u64, BackupError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .ok_or_else(|| {
            BackupError::Invalid(format!(
                "time {text:?}: use RFC 3339 such as 2026-12-05T17:04:05Z (or +01:00), or milliseconds since the epoch"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("backup", "orders-2026.12.05_1").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name("backup", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip() {
        let ms = 1_796_490_245_123;
        let text = rfc3339(ms);
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(parse_time(&text).unwrap(), ms);
        assert_eq!(parse_time("1796490245123").unwrap(), ms);
        assert_eq!(
            parse_time("2026-12-05T18:00:00+01:00").unwrap(),
            parse_time("2026-12-05T17:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn a_manifest_of_another_format_is_refused() {
        let error = Manifest::parse("m.json", br#"{"format": 9}"#).unwrap_err();
        assert!(error.to_string().contains("m.json"), "{error}");
        let error = Manifest::parse("m.json", b"garbage").unwrap_err();
        assert!(
            error.to_string().contains("not a backup manifest"),
            "{error}"
        );
    }
}
