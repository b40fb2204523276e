//! What the planner needs from whatever runs the nodes: local child processes, Kubernetes pods.
//!
//! A platform knows which nodes exist, where each one runs (host and zone, for placement) and how
//! to add, restart, start and remove one. It knows nothing about Redis Cluster: every decision
//! about slots, roles and order is the planner's ([`mod@crate::plan`]). Calls are idempotent where
//! the platform allows it (starting a node that runs is a no-op), because the executor may repeat
//! a step after a crash.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::addr::NodeAddr;
use crate::error::ClusterError;

/// A node the platform runs (or should run) for this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlatformNode {
    /// Where its client port listens.
    pub addr: NodeAddr,
    /// The machine it runs on, when the platform knows (placement spreads shards over hosts).
    pub host: Option<String>,
    /// The failure domain above the host (a zone), when known.
    pub zone: Option<String>,
    /// The group the platform made the node for, when it groups nodes by shard (a Kubernetes
    /// StatefulSet per shard, whose disruption budget and anti-affinity cover that group): a
    /// node then only ever replicates a master of its own group.
    #[serde(default)]
    pub group: Option<String>,
    /// The platform wants this node gone (Kubernetes: a pod beyond what the spec asks for, which
    /// only the planner may remove once it holds nothing). A scale-in drops retiring nodes
    /// first, and hands a retiring master's role to a replica before removing it.
    #[serde(default)]
    pub retiring: bool,
}

impl PlatformNode {
    /// A node without placement facts.
    pub fn new(addr: NodeAddr) -> Self {
        Self::placed(addr, None)
    }

    /// A node on host `host`.
    pub fn on_host(addr: NodeAddr, host: impl Into<String>) -> Self {
        Self::placed(addr, Some(host.into()))
    }

    /// A node on `host` when the platform knows it, with no zone, group or retirement.
    pub fn placed(addr: NodeAddr, host: Option<String>) -> Self {
        Self {
            addr,
            host,
            zone: None,
            group: None,
            retiring: false,
        }
    }
}

/// Starts, restarts and removes nodes. Implemented by `cinnabar-local` (processes) and the
/// Kubernetes operator (pods).
///
/// Every method returns once the platform has done its part; the planner then waits for Redis
/// itself (a restarted node answering, rejoining, syncing) with its own bounded waits.
pub trait Platform {
    /// Every node of this cluster the platform runs, running or not, with placement facts.
    ///
    /// # Errors
    /// The platform cannot be asked (state unreadable, API down).
    fn nodes(&self) -> impl Future<Output = Result<Vec<PlatformNode>, ClusterError>> + Send;

    /// Hosts new nodes may be placed on, in the platform's order of preference. Empty when the
    /// platform has no notion of hosts (then placement rules do not apply).
    fn hosts(&self) -> Vec<String>;

    /// Starts one new, empty, cluster-enabled node, on `host` when given, and returns it once
    /// it answers `PING`.
    ///
    /// # Errors
    /// No capacity, no free port, the node does not start.
    fn provision(
        &mut self,
        host: Option<&str>,
    ) -> impl Future<Output = Result<PlatformNode, ClusterError>> + Send;

    /// Stops `addr` gracefully (letting it persist) and starts it again on its data; returns once
    /// it answers `PING`, with the address it now has (a rescheduled pod gets a new IP).
    ///
    /// # Errors
    /// Unknown node, or it does not come back.
    fn restart(
        &mut self,
        addr: &NodeAddr,
    ) -> impl Future<Output = Result<NodeAddr, ClusterError>> + Send;

    /// Makes sure `addr` runs (starting it on its data when it is down; a no-op when it runs);
    /// returns the address it runs at.
    ///
    /// # Errors
    /// Unknown node, or it does not start.
    fn start(
        &mut self,
        addr: &NodeAddr,
    ) -> impl Future<Output = Result<NodeAddr, ClusterError>> + Send;

    /// Stops `addr` for good and releases its resources. Only ever called for a node that owns
    /// no slots.
    ///
    /// # Errors
    /// The platform could not stop it.
    fn remove(&mut self, addr: &NodeAddr) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// The cluster just changed shape (a step moved slots, failed a master over, added or
    /// removed a node), or an operation ended. A platform whose endpoint caches the topology
    /// (the local platform's proxy) tells it here, so its keyspace-wide commands (DBSIZE,
    /// SCAN, …) count every master at once rather than after its next refresh. Called by
    /// [`crate::advance`] after every executed step and by [`crate::run_operation`] at the end;
    /// the default does nothing.
    ///
    /// # Errors
    /// The endpoint could not be told; the operation goes on (the endpoint catches up within
    /// its own bound), and the error is reported as progress.
    fn topology_changed(&mut self) -> impl Future<Output = Result<(), ClusterError>> + Send {
        std::future::ready(Ok(()))
    }
}
