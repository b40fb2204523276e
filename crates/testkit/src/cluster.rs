//! A real Redis Cluster for one test: `masters × (1 + replicas)` test servers formed into a
//! cluster by `cinnabar_cluster::create_cluster`, checked with `cinnabar_cluster::check`.
//!
//! Never forms clusters any other way (no redis-cli), so every test that uses it also tests our
//! creation path. Servers stop and their directories go when the cluster is dropped.

use std::time::Duration;

use cinnabar_cluster::{
    CheckOptions, CheckReport, CreateSpec, NewNode, NodeAddr, Timeouts, check_with, create_cluster,
    wait_healthy,
};

use crate::server::{ServerOptions, TestServer};

/// Upper bound for forming a test cluster (it takes about 3 s on two cores).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Short per-node timeouts for checks: test nodes are local, and a paused node should cost
/// little test time.
const CHECK_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    response: Duration::from_millis(1000),
};

/// A running cluster of test servers. Servers `0..masters` were created as masters; server
/// `masters + i * replicas + j` as replica `j` of master `i`.
#[derive(Debug)]
pub struct TestCluster {
    servers: Vec<TestServer>,
    masters: usize,
    replicas_per_master: usize,
    creation_log: Vec<String>,
}

impl TestCluster {
    /// A ready cluster with `masters` masters and `replicas_per_master` replicas each, on
    /// servers with default options.
    ///
    /// # Panics
    /// When a server does not start or the cluster does not form; the message carries
    /// creation progress and the error.
    pub async fn start(masters: usize, replicas_per_master: usize) -> Self {
        Self::start_with(masters, replicas_per_master, ServerOptions::default()).await
    }

    /// Like [`start`](Self::start), with `options` for every server (`cluster` is forced on).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_with(
        masters: usize,
        replicas_per_master: usize,
        options: ServerOptions,
    ) -> Self {
        assert!(masters > 0, "a test cluster needs at least one master");
        let options = ServerOptions {
            cluster: true,
            ..options
        };
        let servers = TestServer::start_many(masters * (1 + replicas_per_master), &options);
        let spec = CreateSpec {
            nodes: servers.iter().map(|s| NewNode::new(node_addr(s))).collect(),
            replicas_per_master,
            timeout: CREATE_TIMEOUT,
        };
        let mut creation_log = Vec::new();
        let created = create_cluster(&spec, &mut |p| creation_log.push(p.to_string())).await;
        if let Err(e) = created {
            panic!(
                "creating a {masters}×{replicas_per_master} test cluster failed: {e}\nprogress:\n{}",
                creation_log.join("\n")
            );
        }
        Self {
            servers,
            masters,
            replicas_per_master,
            creation_log,
        }
    }

    /// Every node's address, for `check` and clients.
    pub fn seeds(&self) -> Vec<NodeAddr> {
        self.servers.iter().map(node_addr).collect()
    }

    /// The servers, in creation order (masters first).
    pub fn servers(&self) -> &[TestServer] {
        &self.servers
    }

    /// Server `i`, to kill, pause or restart it.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn server_mut(&mut self, i: usize) -> &mut TestServer {
        &mut self.servers[i]
    }

    /// The server listening at `addr`.
    pub fn server_by_addr(&self, addr: &NodeAddr) -> Option<&TestServer> {
        self.servers.iter().find(|s| &node_addr(s) == addr)
    }

    /// The server listening at `addr`, mutably.
    pub fn server_by_addr_mut(&mut self, addr: &NodeAddr) -> Option<&mut TestServer> {
        self.servers.iter_mut().find(|s| &node_addr(s) == addr)
    }

    /// The servers, for a [`TestPlatform`](crate::platform::TestPlatform) to take over.
    pub fn into_servers(self) -> Vec<TestServer> {
        self.servers
    }

    /// Masters the cluster was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// Replicas per master the cluster was created with.
    pub fn replicas_per_master(&self) -> usize {
        self.replicas_per_master
    }

    /// The progress lines `create_cluster` reported while forming this cluster.
    pub fn creation_log(&self) -> &[String] {
        &self.creation_log
    }

    /// Checks the cluster now, expecting each master to have its replicas.
    ///
    /// # Panics
    /// Never in practice: `check` only fails for an empty seed list.
    pub async fn check(&self) -> CheckReport {
        check_with(&self.seeds(), &self.check_options())
            .await
            .unwrap_or_else(|e| panic!("check failed: {e}"))
    }

    /// Polls [`check`](Self::check) until the cluster is healthy (all slots served, no
    /// problem, every master with its replicas) and returns that report; see
    /// [`cinnabar_cluster::wait_healthy`].
    ///
    /// # Panics
    /// When `timeout` passes first, with the last check's problems.
    pub async fn wait_healthy(&self, timeout: Duration) -> CheckReport {
        wait_healthy(&self.seeds(), &self.check_options(), timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn check_options(&self) -> CheckOptions {
        CheckOptions {
            timeouts: CHECK_TIMEOUTS,
            expected_replicas: Some(self.replicas_per_master),
        }
    }
}

/// The `NodeAddr` of a test server.
pub fn node_addr(server: &TestServer) -> NodeAddr {
    let addr = server.addr();
    NodeAddr::new(addr.ip().to_string(), addr.port())
}
