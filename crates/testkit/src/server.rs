//! One real `redis-server` on a free loopback port, in a temporary directory, for one test.
//!
//! Dropping a [`TestServer`] stops the process and deletes its directory; if the test is
//! panicking, the server's log tail is printed first so the failure explains itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cinnabar_local::{NodeConfig, NodeProcess, ServerBinary};
use nix::sys::signal::Signal;

use crate::ports::{PortReservation, reserve_node_port};

/// How long a test waits for a server to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The server binary tests use: `$CINNABAR_TEST_REDIS_SERVER`, else redis-server/valkey-server.
///
/// # Panics
/// When none is installed, with the install command in the message.
pub fn server_binary() -> &'static ServerBinary {
    static BINARY: OnceLock<ServerBinary> = OnceLock::new();
    BINARY.get_or_init(|| {
        let explicit = std::env::var_os("CINNABAR_TEST_REDIS_SERVER").map(PathBuf::from);
        ServerBinary::locate(explicit.as_deref()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// How to start a test server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Start as a Redis Cluster node (`cluster-enabled yes`).
    pub cluster: bool,
    /// `cluster-node-timeout` in ms for cluster nodes (default: the production default).
    pub node_timeout_ms: Option<u64>,
    /// Extra configuration directives.
    pub extra: Vec<(String, String)>,
    /// Use this binary instead of [`server_binary`].
    pub binary: Option<ServerBinary>,
    /// Start a Sentinel watching this group instead of a data node.
    pub sentinel: Option<cinnabar_local::config::SentinelMonitor>,
}

/// A running test server. Stopped and cleaned up on drop.
#[derive(Debug)]
pub struct TestServer {
    process: NodeProcess,
    binary: ServerBinary,
    dir: tempfile::TempDir,
    _port: PortReservation,
}

impl TestServer {
    /// A standalone server with default settings.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    /// An empty cluster-enabled node (not yet part of any cluster).
    pub fn start_cluster_node() -> Self {
        Self::start_with(ServerOptions {
            cluster: true,
            ..ServerOptions::default()
        })
    }

    /// A server started with `options`.
    ///
    /// # Panics
    /// When the server does not become ready; the message carries its log tail.
    pub fn start_with(options: ServerOptions) -> Self {
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| server_binary().clone());
        let port = reserve_node_port();
        let dir = tempfile::Builder::new()
            .prefix("cinnabar-test-")
            .tempdir()
            .expect("temp dir");
        let mut config = match options.sentinel {
            Some(monitor) => NodeConfig::sentinel(port.port(), dir.path().join("data"), monitor),
            None => NodeConfig::cluster_node(port.port(), dir.path().join("data")),
        };
        config.cluster = options.cluster;
        config.maxmemory = None;
        if let Some(ms) = options.node_timeout_ms {
            config.node_timeout_ms = ms;
        }
        config.extra = options.extra;
        let mut process = NodeProcess::spawn(&binary, &config).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = process.wait_ready(READY_TIMEOUT) {
            // A server that never became ready must not outlive the failed test.
            let _ = process.stop(Duration::from_secs(5));
            panic!("{e}");
        }
        Self {
            process,
            binary,
            dir,
            _port: port,
        }
    }

    /// Starts `n` servers with `options` in parallel, one thread each (each waits for its own
    /// readiness), in a stable order.
    ///
    /// # Panics
    /// As [`start_with`](Self::start_with), when any server does not start.
    pub fn start_many(n: usize, options: &ServerOptions) -> Vec<Self> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|_| scope.spawn(|| Self::start_with(options.clone())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.process.config().port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// `redis://127.0.0.1:<port>/` for the `redis` crate.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr())
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.process.config().dir
    }

    /// The process id of the current incarnation.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        cinnabar_local::process::log_tail(&self.process.config().log_path(), lines)
    }

    /// Crashes the server with SIGKILL (no clean shutdown, no AOF flush beyond the OS cache).
    pub fn kill(&mut self) {
        self.process.signal(Signal::SIGKILL);
        // Reap it, so a later `restart` does not race the dying process for the port.
        let _ = self.process.stop(Duration::from_secs(5));
    }

    /// Freezes the server with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// Resumes a paused server with SIGCONT.
    pub fn resume(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.process.try_exit().is_none()
    }

    /// Stops the server (SIGTERM, so it saves its state) and starts it again on its data but on
    /// a new port, as a pod rescheduled with a new address would: its `nodes.conf` still lists
    /// the other nodes at their old addresses.
    ///
    /// # Panics
    /// When it does not become ready.
    pub fn move_to_new_port(&mut self) {
        let _ = self.process.stop(Duration::from_secs(10));
        let port = reserve_node_port();
        let mut config = self.process.config().clone();
        config.port = port.port();
        self.process = NodeProcess::spawn(&self.binary, &config).unwrap_or_else(|e| panic!("{e}"));
        self.process
            .wait_ready(READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        self._port = port;
    }

    /// Stops the server gracefully (SIGTERM, waiting for it to exit) without starting it again.
    pub fn stop(&mut self) {
        let _ = self.process.stop(Duration::from_secs(10));
    }

    /// Starts the server again on the same port and data (after [`kill`](Self::kill) or a crash).
    ///
    /// # Panics
    /// When it does not become ready.
    pub fn restart(&mut self) {
        let _ = self.process.stop(Duration::from_secs(5));
        let config = self.process.config().clone();
        self.process = NodeProcess::spawn(&self.binary, &config).unwrap_or_else(|e| panic!("{e}"));
        self.process
            .wait_ready(READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server {} log ({}) ---\n{}\n---",
                self.addr(),
                self.dir.path().display(),
                self.log_tail(40)
            );
        }
        let _ = self.process.stop(Duration::from_secs(5));
    }
}
