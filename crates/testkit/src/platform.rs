//! A [`Platform`] made of test servers, so the planner's operations run against real
//! `redis-server` processes in tests: provision starts a new cluster node on a free port,
//! restart and remove act on the process, and optional simulated hosts give placement facts.

use std::time::Duration;

use cinnabar_cluster::{ClusterError, NodeAddr, Platform, PlatformNode};

use crate::cluster::{TestCluster, node_addr};
use crate::server::{ServerOptions, TestServer};

/// Test servers run as one cluster's platform.
#[derive(Debug)]
pub struct TestPlatform {
    nodes: Vec<(TestServer, Option<String>)>,
    hosts: Vec<String>,
    options: ServerOptions,
}

impl TestPlatform {
    /// Takes over the servers of `cluster`. With `hosts > 0`, servers get host labels
    /// `h0..` the way a careful placement would: shard `i`'s master on host `i`, its replica `j`
    /// on host `i + j + 1` (modulo `hosts`).
    pub fn from_cluster(cluster: TestCluster, hosts: usize) -> Self {
        let masters = cluster.masters();
        let replicas = cluster.replicas_per_master();
        let labels: Vec<String> = (0..hosts).map(|h| format!("h{h}")).collect();
        let host_of = |i: usize| -> Option<String> {
            if labels.is_empty() {
                return None;
            }
            let slot = if i < masters {
                i
            } else {
                let r = i - masters;
                r / replicas.max(1) + r % replicas.max(1) + 1
            };
            Some(labels[slot % labels.len()].clone())
        };
        let nodes = cluster
            .into_servers()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, host_of(i)))
            .collect();
        Self {
            nodes,
            hosts: labels,
            options: ServerOptions {
                cluster: true,
                ..ServerOptions::default()
            },
        }
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<NodeAddr> {
        self.nodes.iter().map(|(s, _)| node_addr(s)).collect()
    }

    /// The server at `addr`.
    pub fn server_mut(&mut self, addr: &NodeAddr) -> Option<&mut TestServer> {
        self.nodes
            .iter_mut()
            .find(|(s, _)| &node_addr(s) == addr)
            .map(|(s, _)| s)
    }

    /// Every server.
    pub fn servers_mut(&mut self) -> impl Iterator<Item = &mut TestServer> {
        self.nodes.iter_mut().map(|(s, _)| s)
    }

    /// Adds a running server (for example an empty node started by the test) with a host label.
    pub fn adopt(&mut self, server: TestServer, host: Option<String>) {
        self.nodes.push((server, host));
    }

    fn find(&mut self, addr: &NodeAddr) -> Result<&mut TestServer, ClusterError> {
        self.server_mut(addr).ok_or_else(|| {
            ClusterError::InvalidTopology(format!("the test platform runs no node at {addr}"))
        })
    }
}

impl Platform for TestPlatform {
    async fn nodes(&self) -> Result<Vec<PlatformNode>, ClusterError> {
        Ok(self
            .nodes
            .iter()
            .map(|(s, host)| PlatformNode::placed(node_addr(s), host.clone()))
            .collect())
    }

    fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    async fn provision(&mut self, host: Option<&str>) -> Result<PlatformNode, ClusterError> {
        if let Some(h) = host
            && !self.hosts.iter().any(|x| x == h)
        {
            return Err(ClusterError::Placement(format!(
                "no host {h} in the test platform"
            )));
        }
        let server = TestServer::start_with(self.options.clone());
        let node = PlatformNode::placed(node_addr(&server), host.map(str::to_owned));
        self.nodes.push((server, node.host.clone()));
        Ok(node)
    }

    async fn restart(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        let server = self.find(addr)?;
        server.stop();
        // A real restart takes a moment; the cluster notices the gap.
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
        Ok(addr.clone())
    }

    async fn start(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        let server = self.find(addr)?;
        if !server.is_running() {
            server.restart();
        }
        Ok(addr.clone())
    }

    async fn remove(&mut self, addr: &NodeAddr) -> Result<(), ClusterError> {
        if let Some(i) = self.nodes.iter().position(|(s, _)| &node_addr(s) == addr) {
            // Dropping the server stops it and deletes its data.
            drop(self.nodes.remove(i));
        }
        Ok(())
    }
}
