//! How a drill fails a node: a trait the platform implements, so the drill stays free of
//! processes, pods and signals.
//!
//! The drill decides *which* node and *when*; the platform decides *how*. A killed node must stay
//! down until [`NodeFaults::restore`] (a platform that restarts crashed nodes at once holds that
//! back, or the drill would measure a restart instead of a failover); a paused node keeps its
//! sockets open and answers nothing, as a frozen machine or a long GC pause would.

use std::future::Future;
use std::time::Duration;

use cinnabar_cluster::NodeAddr;
use serde::Serialize;

/// Which failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// `kill -9`: the process is gone, connections are refused; it comes back on its own data.
    Kill,
    /// `SIGSTOP`: the process is frozen with its connections open; `SIGCONT` resumes it.
    Pause,
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill -9",
            Self::Pause => "pause (SIGSTOP)",
        })
    }
}

/// Why the platform could not inject or undo a fault.
#[derive(Debug, thiserror::Error)]
#[error("{action} {node}: {reason}")]
pub struct FaultError {
    /// What was being done (`killing`, `resuming`, …).
    pub action: String,
    /// The node.
    pub node: NodeAddr,
    /// Why it failed, as the platform words it.
    pub reason: String,
}

impl FaultError {
    /// An error while doing `action` to `node`.
    pub fn new(action: impl Into<String>, node: &NodeAddr, reason: impl ToString) -> Self {
        Self {
            action: action.into(),
            node: node.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The platform's side of a drill: fail one node, and undo it.
pub trait NodeFaults {
    /// Kills `node` abruptly; it must stay down until [`restore`](Self::restore).
    ///
    /// # Errors
    /// When the node cannot be found or signalled; nothing was done then.
    fn kill(&mut self, node: &NodeAddr) -> Result<(), FaultError>;

    /// Freezes `node` with its connections open, until [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`kill`](Self::kill).
    fn pause(&mut self, node: &NodeAddr) -> Result<(), FaultError>;

    /// Undoes [`kill`](Self::kill) (the node is started again on its own data) or
    /// [`pause`](Self::pause) (the node resumes). Returns without waiting.
    ///
    /// # Errors
    /// When the node cannot be brought back.
    fn restore(&mut self, node: &NodeAddr) -> Result<(), FaultError>;

    /// Waits until a restored `node` runs and answers again, at most `timeout`. Whether it has
    /// rejoined the cluster is the drill's to check, over the Redis protocol.
    ///
    /// # Errors
    /// When it does not come back in time.
    fn wait_restored(
        &mut self,
        node: &NodeAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), FaultError>> + Send;
}
