//! Where a source's replication stream was left: `Checkpoint { replid, offset, db }`, one small
//! text file per source in a state directory, replaced atomically (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves either the old checkpoint or the new one.
//!
//! **The caller's duty:** store a checkpoint only once the target has acknowledged everything
//! up to its offset, and never inside a `MULTI`/`EXEC` block
//! ([`StreamItem::in_transaction`](crate::client::StreamItem::in_transaction)). A checkpoint
//! ahead of the target silently loses the commands in between at the next `PSYNC`; one behind
//! it only replays commands the target already has.
//!
//! It must never write a checkpoint in place (a torn file would be read as garbage), and never
//! accept a source name that could reach outside the state directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File format marker: the first line of every checkpoint file.
const FORMAT_LINE: &str = "cinnabar-replication-checkpoint 1";

/// A position in a source's replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The source's replication id (`master_replid`) the offset belongs to.
    pub replid: String,
    /// The replication offset applied: `PSYNC` resumes at `offset + 1`.
    pub offset: u64,
    /// The database current at `offset`. A source does not repeat `SELECT` when a replica
    /// continues, so a resumed stream starts in this database.
    pub db: u64,
}

/// Why a checkpoint could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("checkpoint {path}: {action} failed: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a checkpoint this code wrote.
    #[error("checkpoint {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The source name is empty or has characters other than letters, digits, `-`, `_`, `.`
    /// (or starts with `.`).
    #[error("invalid source name for a checkpoint: {0:?}")]
    BadSourceName(String),
    /// The replication id would not survive the text format (empty, or with whitespace).
    #[error("invalid replication id for a checkpoint: {0:?}")]
    BadReplid(String),
}

/// The checkpoint file of one source in a state directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
    temp_path: PathBuf,
}

impl CheckpointStore {
    /// The store of `source_name` in `dir`, creating the directory if needed.
    ///
    /// # Errors
    /// [`CheckpointError::BadSourceName`], or an I/O error creating the directory.
    pub fn open(dir: impl AsRef<Path>, source_name: &str) -> Result<Self, CheckpointError> {
        let valid = !source_name.is_empty()
            && !source_name.starts_with('.')
            && source_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(CheckpointError::BadSourceName(source_name.to_owned()));
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.clone(),
            action: "creating the state directory",
            source,
        })?;
        Ok(Self {
            path: dir.join(format!("{source_name}.checkpoint")),
            temp_path: dir.join(format!("{source_name}.checkpoint.tmp")),
            dir,
        })
    }

    /// The state directory holding the checkpoint.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored checkpoint, or `None` when none was ever stored.
    ///
    /// # Errors
    /// An I/O error, or [`CheckpointError::Corrupt`] for a file that does not parse.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    action: "reading",
                    source,
                });
            }
        };
        parse(&text)
            .map(Some)
            .map_err(|detail| CheckpointError::Corrupt {
                path: self.path.clone(),
                detail,
            })
    }

    /// Replaces the stored checkpoint with `checkpoint`, durably: when this returns, a crash
    /// of the machine leaves `checkpoint` on disk. See the module documentation for when a
    /// checkpoint may be stored.
    ///
    /// # Errors
    /// [`CheckpointError::BadReplid`], or an I/O error (the previous checkpoint then stays).
    pub fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        if checkpoint.replid.is_empty() || checkpoint.replid.contains(char::is_whitespace) {
            return Err(CheckpointError::BadReplid(checkpoint.replid.clone()));
        }
        let text = format!(
            "{FORMAT_LINE}\nreplid {}\noffset {}\ndb {}\n",
            checkpoint.replid, checkpoint.offset, checkpoint.db
        );
        let io_error = |path: &Path, action| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io {
                path,
                action,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.temp_path)
            .map_err(io_error(&self.temp_path, "creating the temporary file"))?;
        file.write_all(text.as_bytes())
            .map_err(io_error(&self.temp_path, "writing the temporary file"))?;
        // The data must be on disk before the rename makes it the checkpoint.
        file.sync_all()
            .map_err(io_error(&self.temp_path, "syncing the temporary file"))?;
        drop(file);
        fs::rename(&self.temp_path, &self.path)
            .map_err(io_error(&self.path, "renaming the temporary file over"))?;
        // The rename itself is durable only once the directory entry is synced.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir, "syncing the state directory"))?;
        Ok(())
    }
}

fn parse(text: &str) -> Result<Checkpoint, String> {
    let mut lines = text.lines();
    if lines.next() != Some(FORMAT_LINE) {
        return Err(format!("the first line is not `{FORMAT_LINE}`"));
    }
    let mut field = |name: &str| -> Result<String, String> {
        let line = lines.next().ok_or_else(|| format!("`{name}` is missing"))?;
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .filter(|value| !value.is_empty() && !value.contains(char::is_whitespace))
            .map(str::to_owned)
            .ok_or_else(|| format!("expected `{name} <value>`, found {line:?}"))
    };
    let replid = field("replid")?;
    let number = |name: &str, value: String| {
        value
            .parse::<u64>()
            .map_err(|_| format!("`{name}` is not a number: {value:?}"))
    };
    let offset = number("offset", field("offset")?)?;
    let db = number("db", field("db")?)?;
    if lines.any(|line| !line.is_empty()) {
        return Err("unexpected lines after `db`".to_owned());
    }
    Ok(Checkpoint { replid, offset, db })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cinnabar-checkpoint-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_stored_checkpoint_loads_back_and_replaces_the_previous_one() {
        let dir = temp_dir();
        let store = CheckpointStore::open(&dir, "orders-eu").unwrap();
        assert_eq!(store.load().unwrap(), None);
        let first = Checkpoint {
            replid: "a".repeat(40),
            offset: 17,
            db: 0,
        };
        store.store(&first).unwrap();
        assert_eq!(store.load().unwrap(), Some(first));
        let second = Checkpoint {
            replid: "b".repeat(40),
            offset: u64::MAX,
            db: 15,
        };
        store.store(&second).unwrap();
        assert_eq!(store.load().unwrap(), Some(second));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["orders-eu.checkpoint"], "no temporary file is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_leave_the_directory_and_corrupt_files_are_refused() {
        let dir = temp_dir();
        for name in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(matches!(
                CheckpointStore::open(&dir, name),
                Err(CheckpointError::BadSourceName(_))
            ));
        }
        let store = CheckpointStore::open(&dir, "s").unwrap();
        for text in [
            "",
            "cinnabar-replication-checkpoint 1\nreplid x\noffset -1\ndb 0\n",
            "cinnabar-replication-checkpoint 1\nreplid x\noffset 1\n",
            "cinnabar-replication-checkpoint 2\nreplid x\noffset 1\ndb 0\n",
        ] {
            fs::write(store.path(), text).unwrap();
            assert!(
                matches!(store.load(), Err(CheckpointError::Corrupt { .. })),
                "{text:?}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
