//! [`AuditError`]: why an auditor could not start or take a new configuration. Errors while
//! writing records are never returned to anyone (no caller waits for a write); they are counted
//! in [`crate::Auditor::write_errors`] and logged.

use std::path::PathBuf;

/// Why [`crate::Auditor::start`], [`crate::Auditor::reconfigure`] or
/// [`crate::AuditConfig::validate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A setting is out of range.
    #[error("audit: bad value for `{field}`: {reason}")]
    Config {
        /// The field of the `[audit]` section.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The output file could not be opened for appending.
    #[error("audit: cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be created.
    #[error("audit: cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The auditor was shut down (or its writer thread ended), so it takes no new
    /// configuration.
    #[error("audit: the auditor is stopped")]
    Stopped,
}
