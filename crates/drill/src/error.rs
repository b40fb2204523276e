//! Why a drill could not run or could not finish. A cluster that fails the drill is not an
//! error: that is a report with a failing verdict. These are the cases where no honest report
//! can be written (or where writing one would mean touching a cluster we must not touch).

use cinnabar_cluster::{ClusterError, NodeAddr};

use crate::fault::FaultError;

/// Everything that stops a drill before it can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrillError {
    /// The cluster has fewer shards than the index asked for.
    #[error("no shard {shard}: the cluster has {shards} shard(s), numbered 0 to {} by their first slot", shards.saturating_sub(1))]
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// How many shards there are.
        shards: usize,
    },
    /// Failing this master would leave its slots unserved: nobody could take over.
    #[error(
        "shard {shard} (master {master}) has no replica: failing it over would lose the shard; nothing was touched"
    )]
    NoReplica {
        /// The shard index.
        shard: usize,
        /// Its master.
        master: NodeAddr,
    },
    /// Without the victim, fewer than a majority of the masters serving slots would remain,
    /// so none could agree it failed and no replica could be elected.
    #[error("failing a master of this cluster cannot fail over: Redis needs a majority of the {masters} masters serving slots ({needed}) to agree and vote, and only {} would remain; nothing was touched", masters - 1)]
    NoQuorum {
        /// Masters serving slots.
        masters: usize,
        /// Votes a failover needs.
        needed: usize,
    },
    /// The cluster is not healthy before the drill: its result would mean nothing.
    #[error("the cluster is not healthy, so the drill did not start:\n- {}", problems.join("\n- "))]
    NotHealthy {
        /// The check's problems, one sentence each.
        problems: Vec<String>,
    },
    /// The endpoint does not answer before the drill.
    #[error("the endpoint {endpoint} does not answer: {reason}")]
    EndpointUnreachable {
        /// The endpoint.
        endpoint: NodeAddr,
        /// What the client said.
        reason: String,
    },
    /// Reading the cluster failed outright (not a problem in a report: no node answered at all).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The platform could not inject or undo the fault.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A workload connection task died.
    #[error("the workload stopped unexpectedly: {0}")]
    Workload(String),
    /// Acknowledged writes could not be read back, so losses cannot be counted.
    #[error("cannot read the acknowledged writes back through {endpoint}: {reason}")]
    Verify {
        /// The endpoint.
        endpoint: NodeAddr,
        /// The last error.
        reason: String,
    },
    /// Writing the report files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
