//! The web console and JSON API of Cinnabar (`cinnabar console`): a team lists its clusters,
//! watches one, creates one and operates it (scale, failover, drill, backup) from a browser or
//! a script, on the local platform (`--root DIR`, each subdirectory a `cinnabar up` directory).
//!
//! On Kubernetes (`--kubernetes`, see `kubernetes`) it lists the RedisCluster resources of a
//! namespace and scales them by editing their spec; the operator does the rest.
//!
//! It has no Redis logic of its own and must never grow any: reads go through the same library
//! calls as `cinnabar status --json` (`cinnabar-local`), and every action runs the very
//! `cinnabar` subcommand a person would type (see `actions` and `jobs`), so the console cannot
//! do anything the CLI would refuse. Logins use the proxy's users file (`cinnabar-access`),
//! every action is audited (`cinnabar-audit`), and no secret is ever rendered.
//!
//! Linked only by the `cinnabar` binary, never by the proxy.

pub mod actions;
pub mod api;
pub mod auth;
pub mod clusters;
pub mod error;
pub mod http;
pub mod jobs;
pub mod kubernetes;
pub mod pages;
pub mod routes;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use error::{ApiError, ConsoleError};
pub use server::Console;

/// Everything `cinnabar console` is given.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where the console listens (keep it on loopback or a private network unless fronted by
    /// TLS: the session cookie is not marked Secure, as the console itself serves plain HTTP).
    pub listen: SocketAddr,
    /// The state root: each subdirectory is one cluster's `cinnabar up` directory.
    pub root: PathBuf,
    /// The users file (the proxy's `users_file` format).
    pub users_file: PathBuf,
    /// The audit trail: a JSON-lines file, rotated by size.
    pub audit_file: PathBuf,
    /// The `cinnabar` binary whose subcommands carry out every action.
    pub cinnabar: PathBuf,
    /// Ports new clusters are given.
    pub ports: actions::PortRange,
    /// Where `backup now` writes (`s3://…` or `file:///…`); each cluster in a folder of its
    /// name. Default: `file://<root>/.backups`.
    pub backup_to: Option<String>,
    /// The redis-server (or valkey-server) binary for new clusters; default: found on PATH.
    pub redis_server: Option<PathBuf>,
    /// Kubernetes mode: RedisCluster resources instead of the clusters under `root` (which
    /// then only holds the users file and the audit trail by default).
    pub kubernetes: Option<KubernetesConfig>,
}

/// Kubernetes mode's settings.
#[derive(Debug, Clone, Default)]
pub struct KubernetesConfig {
    /// The namespace shown; default: the client's (kubeconfig context or the pod's).
    pub namespace: Option<String>,
}

/// Locks a mutex of the console's shared state. A poisoned lock only means a request panicked
/// while it updated a plain map or record: the data is still whole, so go on.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
