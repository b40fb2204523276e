//! Proxy settings with production defaults. Plain data: no I/O, no validation side effects.

use std::net::SocketAddr;
use std::time::Duration;

use cinnabar_cluster::NodeAddr;

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Seed nodes of the backend Redis Cluster.
    pub seeds: Vec<NodeAddr>,
    /// Worker threads, each with its own listener and backend connections.
    pub workers: usize,
    /// Connect timeout for backend connections.
    pub connect_timeout: Duration,
    /// How many MOVED/ASK redirects one request may follow before the error goes to the client.
    pub max_redirects: u8,
    /// How long TRYAGAIN / CLUSTERDOWN / connection failures are retried before the client sees
    /// the error: a failover that completes within this window is invisible to clients.
    pub retry_window: Duration,
    /// Periodic topology refresh, in addition to refreshes triggered by redirects and errors.
    pub refresh_interval: Duration,
    /// Tickets one client may have in flight before the proxy stops reading from it. A request
    /// split per key (MGET, DEL, … across slots) holds one per key; one request is always
    /// taken whole, so a client holds at most this many plus one request's keys.
    pub max_pending_per_client: usize,
}

impl ProxyConfig {
    /// Defaults for a proxy on `listen` in front of the cluster reachable through `seeds`.
    pub fn new(listen: SocketAddr, seeds: Vec<NodeAddr>) -> Self {
        Self {
            listen,
            seeds,
            workers: 1,
            connect_timeout: Duration::from_secs(1),
            max_redirects: 5,
            retry_window: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(5),
            max_pending_per_client: 1024,
        }
    }
}
