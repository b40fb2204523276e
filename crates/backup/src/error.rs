//! What can go wrong in a backup, a restore or the archive, each naming what it concerns.

use cinnabar_replication::apply::ApplyError;

/// Why a backup, restore, listing or archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store's URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// The object store refused or failed an operation.
    #[error("object store {url}: {message}")]
    Store {
        /// The store's URL (never credentials).
        url: String,
        /// What happened.
        message: String,
    },
    /// The source Redis could not be read.
    #[error("source {addr}: {message}")]
    Source {
        /// The node.
        addr: String,
        /// What happened.
        message: String,
    },
    /// No such backup, or none matching the request.
    #[error("{0}")]
    NotFound(String),
    /// An object does not match its manifest: the checksum names it.
    #[error(
        "object {path} is corrupted: the manifest records sha256 {expected} ({expected_bytes} bytes), the object hashes to {actual} ({actual_bytes} bytes)"
    )]
    Corrupt {
        /// The object.
        path: String,
        /// The manifest's checksum.
        expected: String,
        /// Bytes the manifest records.
        expected_bytes: u64,
        /// What the object hashes to.
        actual: String,
        /// Bytes read.
        actual_bytes: u64,
    },
    /// A manifest or segment could not be understood.
    #[error("{path}: {message}")]
    Format {
        /// The object.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The restore target refused, or a check before restoring failed.
    #[error("target: {0}")]
    Target(#[from] ApplyError),
    /// The restore target holds keys already.
    #[error(
        "target is not empty: {keys} keys on its masters (restore into an empty cluster, or pass --force to write over them)"
    )]
    TargetNotEmpty {
        /// Keys found.
        keys: u64,
    },
    /// The archive cannot reach the requested point.
    #[error("{0}")]
    Archive(String),
    /// Invalid request (a name, a time, an option).
    #[error("{0}")]
    Invalid(String),
}
