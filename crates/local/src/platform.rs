//! The local cluster as the planner's [`Platform`]: nodes are the ones recorded in the state
//! file, hosts the simulated ones of the spec, and every change goes through the running
//! supervisor's control socket (it owns the processes). After each step the planner executes,
//! the supervisor is told the cluster changed, and passes it on to the proxy it runs.
//!
//! This is a thin adapter: it never starts or signals a process itself, and never decides
//! anything about the cluster (the planner in `cinnabar-cluster` does).

use std::path::Path;

use cinnabar_cluster::{ClusterError, NodeAddr, Platform, PlatformNode};

use crate::control::{ControlReply, ControlRequest, FailureKind};
use crate::error::{LocalError, Result};
use crate::state::{State, StateDir};
use crate::supervisor::local_addr;

/// A local cluster directory seen as a [`Platform`].
#[derive(Debug, Clone)]
pub struct LocalPlatform {
    dir: StateDir,
    hosts: Vec<String>,
}

impl LocalPlatform {
    /// The platform of the cluster in `dir`.
    ///
    /// # Errors
    /// [`LocalError::NotRunning`] when `dir` holds no cluster.
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = StateDir::open(dir)?;
        let state = load(&dir)?;
        Ok(Self {
            hosts: state.spec.host_names(),
            dir,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// Records the cluster's shape after a scale, through the supervisor (which owns the state
    /// file), so `status` and a later `up` agree with the cluster.
    ///
    /// # Errors
    /// The supervisor cannot be asked or cannot write the state.
    pub async fn set_shape(&self, masters: u16, replicas: u16) -> Result<(), ClusterError> {
        self.ask(&ControlRequest::SetShape { masters, replicas })
            .await
            .map(drop)
    }

    async fn ask(&self, request: &ControlRequest) -> Result<Option<u16>, ClusterError> {
        let reply = crate::control::send(self.dir.root(), request)
            .await
            .map_err(|e| ClusterError::Platform(e.to_string()))?;
        match reply {
            ControlReply::Done { port, .. } => Ok(port),
            ControlReply::Switch { .. } | ControlReply::GroupFailover { .. } => {
                Err(ClusterError::Platform(
                    "the supervisor answered with the report of another request".into(),
                ))
            }
            ControlReply::Failed { kind, message } => Err(match kind {
                FailureKind::UnknownNode => ClusterError::InvalidTopology(message),
                FailureKind::UnknownHost => ClusterError::Placement(message),
                FailureKind::Failed => ClusterError::Platform(message),
            }),
        }
    }

    async fn ask_about(
        &self,
        addr: &NodeAddr,
        request: impl FnOnce(u16) -> ControlRequest,
    ) -> Result<(), ClusterError> {
        let port = own_port(addr)?;
        self.ask(&request(port)).await.map(drop)
    }
}

fn load(dir: &StateDir) -> Result<State> {
    dir.load()?.ok_or_else(|| LocalError::NotRunning {
        dir: dir.root().to_path_buf(),
    })
}

/// The port of `addr` when it is a loopback address (the only kind this platform runs).
fn own_port(addr: &NodeAddr) -> Result<u16, ClusterError> {
    if addr.host == "127.0.0.1" || addr.host == "localhost" {
        Ok(addr.port)
    } else {
        Err(ClusterError::InvalidTopology(format!(
            "{addr} is not a node of this local cluster (its nodes listen on 127.0.0.1)"
        )))
    }
}

impl Platform for LocalPlatform {
    async fn nodes(&self) -> Result<Vec<PlatformNode>, ClusterError> {
        // Read afresh every time: the supervisor records provisioned and removed nodes there.
        let state = load(&self.dir).map_err(|e| ClusterError::Platform(e.to_string()))?;
        Ok(state
            .nodes
            .into_iter()
            .map(|n| PlatformNode::placed(local_addr(n.port), n.host))
            .collect())
    }

    fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    async fn provision(&mut self, host: Option<&str>) -> Result<PlatformNode, ClusterError> {
        let reply = crate::control::send(
            self.dir.root(),
            &ControlRequest::Provision {
                host: host.map(str::to_owned),
            },
        )
        .await
        .map_err(|e| ClusterError::Platform(e.to_string()))?;
        match reply {
            ControlReply::Done {
                port: Some(port),
                host,
            } => Ok(PlatformNode::placed(local_addr(port), host)),
            ControlReply::Done { port: None, .. }
            | ControlReply::Switch { .. }
            | ControlReply::GroupFailover { .. } => Err(ClusterError::Platform(
                "the supervisor started a node but did not say on which port".into(),
            )),
            ControlReply::Failed { kind, message } => Err(match kind {
                FailureKind::UnknownHost => ClusterError::Placement(message),
                _ => ClusterError::Platform(message),
            }),
        }
    }

    async fn restart(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        self.ask_about(addr, |port| ControlRequest::Restart { port })
            .await?;
        // Local nodes come back on their own port.
        Ok(addr.clone())
    }

    async fn start(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        self.ask_about(addr, |port| ControlRequest::Start { port })
            .await?;
        Ok(addr.clone())
    }

    async fn remove(&mut self, addr: &NodeAddr) -> Result<(), ClusterError> {
        self.ask_about(addr, |port| ControlRequest::Remove { port })
            .await
    }

    /// The proxy runs in the supervisor: the supervisor tells it, and answers once it
    /// refreshed, so `cinnabar scale` returns with the endpoint already counting every master.
    async fn topology_changed(&mut self) -> Result<(), ClusterError> {
        self.ask(&ControlRequest::TopologyChanged).await.map(drop)
    }
}
