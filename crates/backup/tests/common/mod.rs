//! Shared by the backup tests: real clusters tuned for backups, connections, and the store
//! options of a test S3 server.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use cinnabar_backup::{S3Access, StoreOptions};
use cinnabar_testkit::cluster::node_addr;
use cinnabar_testkit::{S3Server, TestCluster};

/// A cluster whose nodes start an RDB transfer at once (no wait for more replicas to share
/// the fork).
pub fn cluster(masters: usize, replicas: usize) -> TestCluster {
    let cluster = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(TestCluster::start(masters, replicas));
    for server in cluster.servers() {
        let mut conn = connection(&server.addr().to_string());
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg("0")
            .exec(&mut conn)
            .unwrap();
    }
    cluster
}

/// A plain connection to one node.
pub fn connection(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A cluster-mode connection.
pub fn cluster_connection(cluster: &TestCluster) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = cluster.seeds().iter().map(|a| a.redis_url()).collect();
    redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap()
}

/// `host:port` of the cluster's first node.
pub fn seed(cluster: &TestCluster) -> String {
    node_addr(&cluster.servers()[0]).to_string()
}

/// The store options for `server`, with short retries so a failing store fails a test fast.
pub fn s3_options(server: &S3Server) -> StoreOptions {
    StoreOptions {
        s3: Some(S3Access {
            endpoint: Some(server.endpoint()),
            region: None,
            access_key_id: server.access_key.clone(),
            secret_access_key: server.secret_key.clone(),
        }),
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        ..StoreOptions::default()
    }
}
