//! Errors of cluster operations: each one names the node, the command and what it answered.
//!
//! Messages are written for a person at a terminal who must decide what to fix. Never drop the
//! underlying client error, and never report a node without its address.

use std::time::Duration;

use crate::addr::NodeAddr;

/// Everything that can go wrong while reading or changing a Redis Cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A node could not be connected to, or stopped answering within the timeout.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The node we tried.
        addr: NodeAddr,
        /// What the client reported (refused, timed out, reset, …).
        source: redis::RedisError,
    },
    /// A node answered a command with an error.
    #[error("{addr} refused `{command}`: {message}")]
    Command {
        /// The node that answered.
        addr: NodeAddr,
        /// The command, with its arguments when they help.
        command: String,
        /// The error text the node sent.
        message: String,
    },
    /// A node runs without `cluster-enabled yes`.
    #[error("{addr} is not a cluster node (cluster support is disabled in its configuration)")]
    NotClusterEnabled {
        /// The node.
        addr: NodeAddr,
    },
    /// The requested shape is impossible or inconsistent (for example zero masters).
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// Nodes cannot be arranged into shards that satisfy the placement rules.
    #[error("impossible placement: {0}")]
    Placement(String),
    /// Creation was asked to use a node that already holds state.
    #[error("{addr} is not empty: {reason}; refusing to use it for a new cluster")]
    NodeNotEmpty {
        /// The node.
        addr: NodeAddr,
        /// What it holds (other nodes, slots, keys).
        reason: String,
    },
    /// Something we wait for did not happen in time.
    #[error("timed out waiting for {what}; still pending: {}", pending.join("; "))]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// One line per node that was not there yet, with what it reported.
        pending: Vec<String>,
        /// The nodes to look at first, in the order they were given: those that had not joined
        /// or were not ready. When every node is waiting on another, it names the ones the
        /// others complain about (see [`create_cluster`](crate::create::create_cluster)), not
        /// every node that complains.
        pending_nodes: Vec<NodeAddr>,
    },
    /// The cluster did not become healthy in time (see [`wait_healthy`](crate::check::wait_healthy)).
    #[error(
        "cluster not healthy after {}: {}",
        duration_text(*after),
        problems.join("; ")
    )]
    NotHealthy {
        /// How long we waited.
        after: Duration,
        /// The problems of the last check, one sentence each.
        problems: Vec<String>,
    },
    /// The platform could not provide, restart, start or remove a node (no supervisor, no free
    /// port, a process that does not start); the message says which and why.
    #[error("{0}")]
    Platform(String),
    /// The operation journal could not be read or written.
    #[error("operation journal {0}")]
    Journal(String),
    /// A key could not be moved even on its own with the longest allowed `MIGRATE` timeout.
    #[error(
        "key {key:?} in slot {slot} did not move off {from} even alone with a {} MIGRATE timeout; the slot stays open on both nodes and the key stays on {from}",
        duration_text(*timeout)
    )]
    KeyTooBig {
        /// The slot being moved.
        slot: u16,
        /// The key (lossy UTF-8).
        key: String,
        /// The node that still holds it.
        from: NodeAddr,
        /// The last `MIGRATE` timeout tried.
        timeout: Duration,
    },
    /// A migration names a node that is not a master we can reach.
    #[error("node {id} is not a reachable master of this cluster: {reason}")]
    MasterUnavailable {
        /// The node id asked for.
        id: String,
        /// Why it cannot be used (unknown, unreachable, a replica…).
        reason: String,
    },
    /// An open (migrating or importing) slot cannot be closed without risking keys.
    #[error("slot {slot} is open and cannot be closed safely: {reason}")]
    OpenSlotUnresolvable {
        /// The slot.
        slot: u16,
        /// What blocks it and what to do.
        reason: String,
    },
    /// A reply or input text could not be parsed.
    #[error("cannot parse {what} ({reason}): {line:?}")]
    Parse {
        /// What was being parsed (`CLUSTER NODES`, `node address`, …).
        what: String,
        /// The offending line or value.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClusterError {
    /// A parse error for `what`, quoting `line`.
    pub(crate) fn parse(what: &str, line: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Parse {
            what: what.to_owned(),
            line: line.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error says the node could not be reached (as opposed to a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// `30s` for whole seconds, else `1500ms`.
fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Results of this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_healthy_is_one_sentence_listing_the_problems() {
        let err = ClusterError::NotHealthy {
            after: Duration::from_secs(30),
            problems: vec![
                "127.0.0.1:7000 is unreachable: Connection refused (os error 111)".into(),
                "1 slot is served by no master: 5".into(),
            ],
        };
        assert_eq!(
            err.to_string(),
            "cluster not healthy after 30s: 127.0.0.1:7000 is unreachable: Connection refused \
             (os error 111); 1 slot is served by no master: 5"
        );
        let err = ClusterError::NotHealthy {
            after: Duration::from_millis(1500),
            problems: vec!["127.0.0.1:7000 reports cluster_state:fail".into()],
        };
        assert_eq!(
            err.to_string(),
            "cluster not healthy after 1500ms: 127.0.0.1:7000 reports cluster_state:fail"
        );
    }
}
