//! Errors of the local platform: each one names what the operator must fix.
//!
//! Messages are written for a person at a terminal: they say which node, port, file or package is
//! involved and what to do next. Never lose the underlying `io::Error` source.

use std::path::PathBuf;

/// Everything that can go wrong while running Redis processes on this machine.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No usable server binary: neither the given path nor anything on `PATH`.
    #[error(
        "no redis-server found{searched}: install it with `apt-get install redis-server` \
         (or valkey-server from bookworm-backports), or pass --redis-server PATH"
    )]
    ServerNotFound {
        /// Human description of where we looked, starting with a space, or empty.
        searched: String,
    },
    /// The binary exists but `--version` did not print a Redis/Valkey version.
    #[error(
        "{path} does not look like redis-server or valkey-server: `--version` printed {output:?}"
    )]
    NotARedisServer {
        /// The binary we ran.
        path: PathBuf,
        /// What it printed.
        output: String,
    },
    /// A port we need is taken.
    #[error("port {port} is already in use{holder}")]
    PortInUse {
        /// The busy port.
        port: u16,
        /// ` (held by pid 123, redis-server)` when we could find out, else empty.
        holder: String,
    },
    /// Ports would run past 65535 (bus port = client port + 10000).
    #[error(
        "port {port} is out of range: node ports plus their cluster bus ports (+10000) must stay below 65536"
    )]
    PortOutOfRange {
        /// The first port that does not fit.
        port: u32,
    },
    /// The requested shape cannot be built.
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// The directory already runs a cluster.
    #[error(
        "{dir} already runs a cluster{}; use `cinnabar status --dir {dir}` to see it or \
         `cinnabar down --dir {dir}` to stop it",
        pid.map(|p| format!(" (supervisor pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        /// The state directory.
        dir: PathBuf,
        /// The live supervisor, when `/proc/locks` tells.
        pid: Option<u32>,
    },
    /// Nothing runs from this directory.
    #[error("no cluster found in {dir}: start one with `cinnabar up --dir {dir}`")]
    NotRunning {
        /// The state directory.
        dir: PathBuf,
    },
    /// The cluster has no node on this port.
    #[error("the cluster in {dir} has no node on port {port}")]
    NoSuchNode {
        /// The state directory.
        dir: PathBuf,
        /// The port asked for.
        port: u16,
    },
    /// The node has no live process right now (it died and was not restarted yet).
    #[error("node {port} has no running process right now")]
    NodeNotRunning {
        /// Its port.
        port: u16,
    },
    /// A node process did not start or did not answer in time.
    #[error("node {addr} did not become ready: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    NodeNotReady {
        /// `127.0.0.1:port`.
        addr: String,
        /// What we observed.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// Forming or checking the cluster failed.
    #[error(transparent)]
    Cluster(#[from] cinnabar_cluster::ClusterError),
    /// The cluster did not form in time; the logs of the nodes that were still pending follow.
    #[error("{source}{logs}")]
    FormationStalled {
        /// What the cluster library saw.
        source: cinnabar_cluster::ClusterError,
        /// `\n--- last lines of <log> ---\n…` for each pending node.
        logs: String,
    },
    /// The proxy in front of the cluster could not start.
    #[error("the proxy on {addr} did not start: {source}")]
    ProxyStart {
        /// Where it was to listen.
        addr: std::net::SocketAddr,
        /// Why it did not.
        #[source]
        source: cinnabar_proxy::ProxyError,
    },
    /// The proxy started but does not serve: a dead worker thread, or a listener that never
    /// answers.
    #[error("the proxy on {addr} does not answer PING: {reason}")]
    ProxyNotServing {
        /// Its address.
        addr: std::net::SocketAddr,
        /// What the probe saw.
        reason: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor could not be asked (none runs, or it did not answer).
    #[error(
        "cannot ask the supervisor of {dir}: {reason}; is the cluster running? \
         (`cinnabar status --dir {dir}` tells, `cinnabar up --dir {dir}` starts it)"
    )]
    Control {
        /// The state directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The state file exists but cannot be read.
    #[error("state file {path} is unreadable: {reason}")]
    BadState {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl LocalError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = LocalError> = std::result::Result<T, E>;
