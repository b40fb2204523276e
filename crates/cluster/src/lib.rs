//! Redis Cluster control over the Redis protocol: topology model, creation, checks.

/// Errors of cluster operations.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Placeholder while the crate is being written.
    #[error("{0}")]
    Other(String),
}
