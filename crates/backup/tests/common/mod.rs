//! Shared by the backup tests: real clusters tuned for backups, connections, the store
//! options of a test S3 server, and a continuous archive on a scoped thread.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use cinnabar_backup::archive::{ArchiveRequest, run};
use cinnabar_backup::{BackupError, Manifest, S3Access, Store, StoreOptions};
use cinnabar_testkit::cluster::node_addr;
use cinnabar_testkit::{S3Server, TestCluster};

/// A `file://` store in a new temporary folder, deleted when the folder guard drops.
pub fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("file://{}", dir.path().display()),
        StoreOptions::default(),
    )
    .unwrap();
    (dir, store)
}

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

/// A continuous archive running on a thread of a [`std::thread::scope`].
///
/// Dropping it (at the end of the scope, or when a test panics inside it) tells the archive to
/// stop: otherwise a failed assertion would leave the scope waiting for the archive forever.
pub struct Archive<'scope> {
    stop: Arc<AtomicBool>,
    thread: Option<ScopedJoinHandle<'scope, Result<(), BackupError>>>,
    /// The base of every generation after the first, as the archive starts it.
    pub bases: mpsc::Receiver<Manifest>,
}

impl<'scope> Archive<'scope> {
    /// Starts archiving `request`'s cluster into `store`, and waits (30 s at most) for the base
    /// backup of the first generation, which it returns.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'scope Store,
        request: &'scope ArchiveRequest,
    ) -> (Self, Manifest) {
        let stop = Arc::new(AtomicBool::new(false));
        let (base_tx, bases) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            scope.spawn(move || {
                run(store, request, &stop, &mut |manifest| {
                    let _ = base_tx.send(manifest.clone());
                })
            })
        };
        // Built before the wait, so a base that never comes stops the archive too.
        let archive = Archive {
            stop,
            thread: Some(thread),
            bases,
        };
        let base = archive
            .bases
            .recv_timeout(Duration::from_secs(30))
            .expect("a base backup");
        (archive, base)
    }

    /// Stops the archive and waits for it; fails if it ended with an error.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}

impl Drop for Archive<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
