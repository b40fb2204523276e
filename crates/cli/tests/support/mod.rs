//! Helpers shared by the `cinnabar` binary's end-to-end tests: one cluster directory driven
//! through the binary on reserved loopback ports, and clients for it.
//!
//! Each test binary uses some of these, so unused ones are expected in any one of them.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_testkit::{PortBlock, reserve_port_block};
use serde_json::Value;

/// Timeout of every connection a test makes, so a stuck step fails instead of hanging.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One cluster directory driven through the binary; `down --purge` on drop, even after a panic.
pub(crate) struct Cinnabar {
    pub(crate) tmp: tempfile::TempDir,
    ports: PortBlock,
    nodes: u16,
    proxy: bool,
}

impl Cinnabar {
    /// A cluster with the proxy (the default): ports for the proxy and each node.
    pub(crate) fn new(masters: u16, replicas: u16) -> Self {
        Self::with(masters, replicas, true)
    }

    /// A cluster made with `--no-proxy`.
    pub(crate) fn without_proxy(masters: u16, replicas: u16) -> Self {
        Self::with(masters, replicas, false)
    }

    pub(crate) fn with(masters: u16, replicas: u16, proxy: bool) -> Self {
        let nodes = masters * (replicas + 1);
        let tmp = tempfile::Builder::new()
            .prefix("cinnabar-cli-")
            .tempdir()
            .unwrap();
        Self {
            tmp,
            ports: reserve_port_block(nodes + u16::from(proxy)),
            nodes,
            proxy,
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `--port`: the proxy's port, or the first node's without a proxy.
    pub(crate) fn port(&self) -> u16 {
        self.ports.first()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub(crate) fn first_node_port(&self) -> u16 {
        self.port() + u16::from(self.proxy)
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        cinnabar()
            .args(args)
            .arg("--dir")
            .arg(self.dir())
            .output()
            .expect("run cinnabar")
    }

    /// `up --detach` with this cluster's ports and shape; returns the printed endpoint.
    pub(crate) fn up_detached(&self, masters: u16, replicas: u16) -> String {
        let (masters, replicas, port) = (
            masters.to_string(),
            replicas.to_string(),
            self.port().to_string(),
        );
        let mut args = vec![
            "up",
            "--detach",
            "--masters",
            &masters,
            "--replicas",
            &replicas,
            "--port",
            &port,
        ];
        if !self.proxy {
            args.push("--no-proxy");
        }
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub(crate) fn status(&self) -> (bool, Value) {
        let out = self.run(&["status", "--json"]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), json)
    }

    /// Polls `status` until healthy; returns how long it took.
    pub(crate) fn wait_healthy(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (healthy, json) = self.status();
            if healthy {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "not healthy after {timeout:?}: {json:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fails unless the state directory is absent: a refused or failed `up` must leave nothing.
    pub(crate) fn assert_nothing_left(&self, what: &str) {
        assert!(
            !self.dir().exists(),
            "{what} left {} behind",
            self.dir().display()
        );
    }

    /// Writes an executable `redis-server` stand-in (a shell script with `body`) into the temp
    /// dir and returns its path: it fakes a broken install, or wraps the real server.
    pub(crate) fn stand_in_server(&self, body: &str) -> PathBuf {
        let path = self.tmp.path().join("redis-server");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    pub(crate) fn seeds(&self) -> Vec<NodeAddr> {
        (0..self.nodes)
            .map(|i| NodeAddr {
                host: "127.0.0.1".into(),
                port: self.first_node_port() + i,
            })
            .collect()
    }
}

impl Drop for Cinnabar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir().join("supervisor.log")).unwrap_or_default();
            eprintln!("--- supervisor.log ---\n{log}\n---");
        }
        let _ = self.run(&["down", "--purge"]);
    }
}

pub(crate) fn cinnabar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cinnabar"));
    cmd.stdin(Stdio::null()).env("RUST_LOG", "info");
    cmd
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

pub(crate) fn pids(status: &Value) -> Vec<u64> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["pid"].as_u64())
        .collect()
}

pub(crate) fn cluster_connection(seeds: &[NodeAddr]) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = seeds.iter().map(NodeAddr::redis_url).collect();
    redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(TEST_TIMEOUT)
        .response_timeout(TEST_TIMEOUT)
        .build()
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A plain (non-cluster) client, as `redis-cli -p` without `-c` is.
pub(crate) fn plain_connection(addr: &str) -> redis::Connection {
    let conn = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection_with_timeout(TEST_TIMEOUT)
        .unwrap();
    conn.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
    conn
}

/// True when nothing accepts connections on `addr` (the proxy is gone).
pub(crate) fn refuses_connections(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, TEST_TIMEOUT).is_err()
}
