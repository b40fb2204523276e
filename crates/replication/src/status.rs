//! What a running sync reports about itself, for `cinnabar sync status`: one record per source
//! stream, written to the state directory about once a second (atomically: a reader never
//! sees half a file) and read by any other process.
//!
//! It is a report, not a checkpoint: resuming never reads it (see the checkpoints).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file, inside the state directory.
pub const STATUS_FILE: &str = "status.json";

/// Where a source stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connecting, or waiting to connect again.
    Connecting,
    /// Reading the source's RDB and applying its keys.
    Full,
    /// Applying the source's command stream.
    Streaming,
}

/// How the current replication started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LastStart {
    /// A full resynchronisation (no checkpoint, or the source's backlog no longer held it).
    Full,
    /// `+CONTINUE` from a checkpoint: nothing was copied twice.
    Continue,
}

/// One source stream (a standalone source has one; a Redis Cluster source one per master).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source master's `host:port`.
    pub address: String,
    /// Where it is.
    pub phase: Phase,
    /// How its current replication started (`None` before the first start).
    pub last_start: Option<LastStart>,
    /// The source replication offset applied to the target and acknowledged by it.
    pub offset: u64,
    /// The source's own `master_repl_offset` minus `offset`, when last asked.
    pub lag_bytes: u64,
    /// How long ago the target last acknowledged everything the source had sent then, in
    /// milliseconds (0 when caught up).
    pub lag_ms: u64,
    /// Keys of the full sync applied so far.
    pub keys_applied: u64,
    /// Keys the source said its RDB holds (from the RDB's `RESIZEDB`), when known.
    pub keys_total: Option<u64>,
    /// Commands of the stream applied so far.
    pub commands_applied: u64,
    /// The last error, while retrying.
    pub error: Option<String>,
    /// Something the operator should know that is not an error (a full resync forced by a
    /// checkpoint the source no longer holds).
    #[serde(default)]
    pub warning: Option<String>,
}

/// Every source stream of one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The sync's target, `host:port`.
    pub target: String,
    /// Process id of the running sync.
    pub pid: u32,
    /// When this was written, milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// One per source stream.
    pub sources: Vec<SourceStatus>,
}

/// Reading or writing the status file failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a status document.
    #[error("{path}: not a sync status file: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl SyncStatus {
    /// Writes the status into `dir` atomically (a temporary file renamed over the old one).
    ///
    /// # Errors
    /// [`StatusError::Io`] naming the file.
    pub fn store(&self, dir: &Path) -> Result<(), StatusError> {
        let path = dir.join(STATUS_FILE);
        let temporary = dir.join(format!(".{STATUS_FILE}.tmp"));
        let io = |source| StatusError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)
    }

    /// Reads the status from `dir`.
    ///
    /// # Errors
    /// [`StatusError`] naming the file when it is missing, unreadable or not a status.
    pub fn load(dir: &Path) -> Result<Self, StatusError> {
        let path = dir.join(STATUS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| StatusError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StatusError::Format { path, source })
    }
}

/// One metric: name, type, help, and its value for a source stream.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SourceStatus) -> f64,
);

impl SyncStatus {
    /// The status as Prometheus text (one series per source stream, labelled `source`).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let series: [Series; 6] = [
            (
                "cinnabar_sync_streaming",
                "gauge",
                "1 when the source stream applies the command stream, 0 while connecting or copying.",
                |s| f64::from(u8::from(s.phase == Phase::Streaming)),
            ),
            (
                "cinnabar_sync_offset",
                "gauge",
                "Source replication offset applied and acknowledged by the target.",
                |s| s.offset as f64,
            ),
            (
                "cinnabar_sync_lag_bytes",
                "gauge",
                "Bytes received from the source and not yet acknowledged by the target.",
                |s| s.lag_bytes as f64,
            ),
            (
                "cinnabar_sync_lag_seconds",
                "gauge",
                "Time since the target last had everything received from the source.",
                |s| s.lag_ms as f64 / 1000.0,
            ),
            (
                "cinnabar_sync_keys_applied_total",
                "counter",
                "Keys of the full sync applied.",
                |s| s.keys_applied as f64,
            ),
            (
                "cinnabar_sync_commands_applied_total",
                "counter",
                "Commands of the stream applied.",
                |s| s.commands_applied as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for source in &self.sources {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{}\"}} {}",
                    source.address,
                    value(source)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_the_round_trip_with_its_documented_names() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let status = SyncStatus {
            target: "127.0.0.1:6380".into(),
            pid: 7,
            updated_ms: 1,
            sources: vec![SourceStatus {
                address: "127.0.0.1:6379".into(),
                phase: Phase::Streaming,
                last_start: Some(LastStart::Continue),
                offset: 42,
                lag_bytes: 3,
                lag_ms: 0,
                keys_applied: 10,
                keys_total: Some(10),
                commands_applied: 5,
                error: None,
                warning: None,
            }],
        };
        status.store(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(dir.path().join(STATUS_FILE)).unwrap_or_default();
        for field in [
            "\"phase\": \"streaming\"",
            "\"last_start\": \"continue\"",
            "\"lag_bytes\"",
            "\"lag_ms\"",
            "\"keys_applied\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert_eq!(SyncStatus::load(dir.path()).ok(), Some(status.clone()));
        let metrics = status.prometheus();
        assert!(metrics.contains("cinnabar_sync_streaming{source=\"127.0.0.1:6379\"} 1"));
        assert!(metrics.contains("cinnabar_sync_lag_bytes{source=\"127.0.0.1:6379\"} 3"));
    }
}
