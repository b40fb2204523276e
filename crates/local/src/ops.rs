//! `status` and `down` for a cluster started from a state directory, by any later invocation.
//!
//! These read the state file and ask the nodes and the proxy themselves; they never trust a pid
//! without checking that the process really is the node we started (its working directory is the
//! node's data dir).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cinnabar_cluster::{CheckReport, NodeAddr, NodeReport};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::error::{LocalError, Result};
use crate::spec::human_bytes;
use crate::state::{NODES_DIR, Phase, State, StateDir};

/// How long `down` waits for the supervisor to stop the nodes.
const SUPERVISOR_STOP_WAIT: Duration = Duration::from_secs(60);
/// How long `down` waits for an orphaned node after SIGTERM.
const ORPHAN_STOP_WAIT: Duration = Duration::from_secs(15);

/// The `cinnabar status` report. Its JSON form is a contract for scripts: fields are added,
/// never renamed (`endpoint`, `nodes[].address/role/master/slots/pid/health/host`,
/// `proxy.address/pid/workers/up`, `admin`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `host:port` clients use: the proxy, or the first node of a cluster without one.
    pub endpoint: String,
    /// The proxy in front of the nodes; `None` (JSON `null`) for a cluster made with
    /// `--no-proxy`.
    pub proxy: Option<ProxyStatus>,
    /// `host:port` of the proxy's admin HTTP listener (`/metrics`, `/healthz`, `/readyz`,
    /// `/topology`, `/config`); `None` without a proxy.
    pub admin: Option<String>,
    /// The state directory.
    pub dir: PathBuf,
    /// `starting`, `ready`, `stopping` or `stopped`.
    pub phase: String,
    /// The live supervisor, if any.
    pub supervisor_pid: Option<u32>,
    /// Overall verdict: every node ok, all slots covered, supervised.
    pub healthy: bool,
    /// The verdict as one sentence.
    pub verdict: String,
    /// Slots with an owner, of 16384.
    pub slots_covered: usize,
    /// Server in use, e.g. `redis 7.0.15`.
    pub server: String,
    /// Every node, in port order.
    pub nodes: Vec<NodeStatus>,
    /// Problems found, one sentence each.
    pub problems: Vec<String>,
    /// `cluster` or `sentinel`.
    pub topology: String,
    /// A Sentinel group's Sentinels and what each says (empty for a cluster).
    pub sentinels: Vec<SentinelStatus>,
}

/// One Sentinel in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct SentinelStatus {
    /// `127.0.0.1:port`.
    pub address: String,
    /// Process id of the running Sentinel.
    pub pid: Option<u32>,
    /// Whether it answered.
    pub up: bool,
    /// The master it names.
    pub master: Option<String>,
    /// Its flags for that master (`master`, `s_down`, `o_down`, `failover_in_progress`).
    pub flags: Vec<String>,
    /// Replicas it knows.
    pub replicas: Option<usize>,
    /// Other Sentinels it knows.
    pub other_sentinels: Option<usize>,
    /// Supervisor restarts since `up`.
    pub restarts: u32,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The proxy in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// `127.0.0.1:port`, the endpoint.
    pub address: String,
    /// The process it runs in: the supervisor's pid (the proxy is threads of the supervisor).
    pub pid: Option<u32>,
    /// Worker threads.
    pub workers: u16,
    /// Whether it answered a PING just now.
    pub up: bool,
    /// Why it is not up, when it is not.
    pub error: Option<String>,
}

/// How long `status` waits for the proxy's PONG.
const PROXY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// One node in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `127.0.0.1:port`.
    pub address: String,
    /// Cluster node id, when known.
    pub id: Option<String>,
    /// `master`, `replica`, or `unknown` when nobody can tell.
    pub role: String,
    /// For a replica, the address of the master it follows.
    pub master: Option<String>,
    /// Owned slot ranges, `start-end` (or a single `slot`).
    pub slots: Vec<String>,
    /// Process id of the running node.
    pub pid: Option<u32>,
    /// `ok`, `unreachable`, or `degraded`.
    pub health: String,
    /// `used_memory` in bytes.
    pub memory_bytes: Option<u64>,
    /// `used_memory`, human readable.
    pub memory: Option<String>,
    /// Supervisor restarts since `up`.
    pub restarts: u32,
    /// Cluster flags as the node reports them.
    pub flags: Vec<String>,
    /// The simulated host it runs on (`up --hosts`); `null` without hosts.
    pub host: Option<String>,
    /// Replication offset (`master_repl_offset`; on a replica, how far it has applied);
    /// reported for a Sentinel group's nodes.
    pub offset: Option<u64>,
    /// On a replica of a Sentinel group: bytes behind its master.
    pub lag_bytes: Option<u64>,
    /// On a replica of a Sentinel group: seconds since its master heard from it.
    pub lag_seconds: Option<u64>,
}

/// Reads the state of `dir` and asks the nodes how they are.
///
/// # Errors
/// [`LocalError::NotRunning`] when the directory holds no cluster.
pub async fn status(dir: &Path) -> Result<StatusReport> {
    let (dir, state) = load_state(dir)?;
    let supervisor = dir.supervisor_pid();
    if state.spec.is_sentinel() {
        let proxy = match state.spec.proxy_port() {
            Some(port) => Some(proxy_status(&state, port, supervisor).await),
            None => None,
        };
        return Ok(crate::group::status(&dir, &state, supervisor, proxy).await);
    }

    let seeds: Vec<NodeAddr> = state
        .nodes
        .iter()
        .map(|n| crate::supervisor::local_addr(n.port))
        .collect();
    let check = if state.phase == Phase::Stopped {
        None
    } else {
        cinnabar_cluster::check(&seeds).await.ok()
    };
    let proxy = match state.spec.proxy_port() {
        Some(port) => Some(proxy_status(&state, port, supervisor).await),
        None => None,
    };
    Ok(build_report(
        &dir,
        &state,
        supervisor,
        check.as_ref(),
        proxy,
    ))
}

/// Asks the proxy for a PONG, unless the cluster is stopped (then it is down by definition).
pub(crate) async fn proxy_status(state: &State, port: u16, supervisor: Option<u32>) -> ProxyStatus {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let outcome = if state.phase == Phase::Stopped {
        Err("the cluster is stopped".to_owned())
    } else {
        crate::probe::ping(addr, PROXY_PING_TIMEOUT).await
    };
    ProxyStatus {
        address: addr.to_string(),
        pid: supervisor,
        workers: state.spec.proxy_workers,
        up: outcome.is_ok(),
        error: outcome.err(),
    }
}

fn build_report(
    dir: &StateDir,
    state: &State,
    supervisor: Option<u32>,
    check: Option<&CheckReport>,
    proxy: Option<ProxyStatus>,
) -> StatusReport {
    let supervised = supervisor.is_some();
    let find = |port: u16| check.and_then(|c| c.nodes.iter().find(|n| n.addr.port == port));
    let nodes: Vec<NodeStatus> = state
        .nodes
        .iter()
        .map(|node| {
            let address = format!("127.0.0.1:{}", node.port);
            let pid = if supervised { node.pid } else { None };
            let mut status = match find(node.port) {
                Some(report) => node_status(address, report, pid, node.restarts),
                None => NodeStatus {
                    address,
                    id: None,
                    role: "unknown".into(),
                    master: None,
                    slots: Vec::new(),
                    pid,
                    health: "unreachable".into(),
                    memory_bytes: None,
                    memory: None,
                    restarts: node.restarts,
                    flags: Vec::new(),
                    host: None,
                    offset: None,
                    lag_bytes: None,
                    lag_seconds: None,
                },
            };
            status.host.clone_from(&node.host);
            status
        })
        .collect();
    let mut problems: Vec<String> = check
        .map(|c| c.problems.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if !supervised && state.phase != Phase::Stopped {
        problems.push("no supervisor is running: crashed nodes will not be restarted".into());
    }
    let proxy_down = proxy.as_ref().filter(|p| !p.up);
    if let Some(p) = proxy_down.filter(|_| state.phase != Phase::Stopped) {
        problems.push(format!(
            "the proxy on {} does not answer PING ({}): clients cannot use the endpoint",
            p.address,
            p.error.as_deref().unwrap_or("no reason")
        ));
    }
    let ok_nodes = nodes.iter().filter(|n| n.health == "ok").count();
    let slots_covered = check.map_or(0, |c| c.slots_covered);
    let phase = match state.phase {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    };
    let healthy = state.phase == Phase::Ready
        && supervised
        && check.is_some_and(CheckReport::is_healthy)
        && ok_nodes == nodes.len()
        && proxy_down.is_none();
    let verdict = if state.phase == Phase::Stopped {
        format!(
            "stopped: data kept in {}; `cinnabar up --dir {0}` resumes it",
            dir.root().display()
        )
    } else if healthy {
        let proxy = proxy.as_ref().map_or(String::new(), |p| {
            format!(", proxy serving on {}", p.address)
        });
        format!(
            "healthy: {ok_nodes}/{} nodes ok, {slots_covered}/16384 slots covered{proxy}",
            nodes.len()
        )
    } else {
        format!(
            "degraded: {ok_nodes}/{} nodes ok, {slots_covered}/16384 slots covered, {} problem(s)",
            nodes.len(),
            problems.len()
        )
    };
    StatusReport {
        endpoint: state.endpoint.clone(),
        admin: state
            .spec
            .admin_port()
            .map(|port| format!("127.0.0.1:{port}")),
        proxy,
        dir: dir.root().to_path_buf(),
        phase: phase.into(),
        supervisor_pid: supervisor,
        healthy,
        verdict,
        slots_covered,
        server: format!("{:?} {}", state.server_flavor, state.server_version).to_lowercase(),
        nodes,
        problems,
        topology: "cluster".into(),
        sentinels: Vec::new(),
    }
}

fn node_status(
    address: String,
    report: &NodeReport,
    pid: Option<u32>,
    restarts: u32,
) -> NodeStatus {
    let role = match report.role {
        cinnabar_cluster::Role::Master => "master",
        cinnabar_cluster::Role::Replica => "replica",
    };
    let health = if report.healthy {
        "ok"
    } else if !report.reachable {
        "unreachable"
    } else {
        "degraded"
    };
    NodeStatus {
        address,
        id: Some(report.id.clone()),
        role: role.into(),
        master: report.master_addr.as_ref().map(ToString::to_string),
        slots: report.slots.iter().map(ToString::to_string).collect(),
        pid,
        health: health.into(),
        memory_bytes: report.used_memory,
        memory: report.used_memory.map(human_bytes),
        restarts,
        flags: report.flags.clone(),
        host: None,
        offset: None,
        lag_bytes: None,
        lag_seconds: None,
    }
}

/// What `down` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// The supervisor we asked to stop.
    pub supervisor_pid: Option<u32>,
    /// The proxy's address, when it stopped with that supervisor.
    pub proxy_stopped: Option<String>,
    /// Node processes we had to stop ourselves (no supervisor was alive to do it).
    pub orphans_stopped: Vec<u32>,
    /// Whether data was removed.
    pub purged: bool,
}

/// Stops everything started from `dir`; with `purge`, deletes its data too.
///
/// # Errors
/// [`LocalError::NotRunning`] when the directory holds no cluster; I/O errors while purging.
pub fn down(dir: &Path, purge: bool) -> Result<DownReport> {
    let (dir, state) = load_state(dir)?;
    let mut report = DownReport::default();
    // Only the process actually holding the lock is signalled, never a pid from the file.
    if let Some(pid) = dir.supervisor_pid() {
        report.supervisor_pid = Some(pid);
        // The proxy is threads of the supervisor: stopping one stops the other.
        report.proxy_stopped = state.spec.proxy.then(|| state.spec.endpoint());
        stop_process(pid, SUPERVISOR_STOP_WAIT, || {
            dir.supervisor_pid() == Some(pid)
        });
        // The lock goes before the process does (the runtime, the proxy's threads and the
        // control socket wind down after it): `down` returns once the supervisor is gone.
        wait_exit(pid, Duration::from_secs(5));
    }
    // The supervisor rewrote the state on its way out; nodes it could not stop (or whose
    // supervisor had died earlier) are listed there with their pids.
    let state = dir.load()?.unwrap_or(state);
    for node in &state.nodes {
        if let Some(pid) = node.pid.filter(|pid| is_our_node(*pid, node)) {
            stop_process(pid, ORPHAN_STOP_WAIT, || is_our_node(pid, node));
            report.orphans_stopped.push(pid);
        }
    }
    if purge {
        // Holding the lock while deleting guarantees no supervisor is using the data, and that
        // no new `up` starts on it halfway through.
        let _lock = dir.lock()?;
        remove_if_exists(&dir.root().join(NODES_DIR))?;
        for file in [
            crate::state::STATE_FILE,
            crate::state::SUPERVISOR_LOG,
            crate::state::LOCK_FILE,
            crate::state::OPERATION_JOURNAL,
            crate::control::CONTROL_SOCKET,
        ] {
            let _ = std::fs::remove_file(dir.root().join(file));
        }
        // Leave the directory itself only if someone else put files there.
        let _ = std::fs::remove_dir(dir.root());
        report.purged = true;
    }
    Ok(report)
}

fn load_state(dir: &Path) -> Result<(StateDir, State)> {
    let state_dir = StateDir::open(dir)?;
    let state = state_dir.load()?.ok_or_else(|| LocalError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    Ok((state_dir, state))
}

/// True when `pid` is the node we started: its working directory is the node's data
/// directory and its process title (Redis sets `redis-server 127.0.0.1:<port> [cluster]`)
/// names the node's port. A shell that happens to sit in that directory does not qualify.
pub(crate) fn is_our_node(pid: u32, node: &crate::state::NodeState) -> bool {
    let in_dir = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == node.dir);
    let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let port = format!(":{}", node.port);
    in_dir && String::from_utf8_lossy(&title).contains(&port)
}

/// A pid we may signal: one that fits in `pid_t` and is not 0 or 1 (`kill(0)` would hit our
/// own process group, `kill(-1)` everything).
fn signal_target(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// SIGTERM, wait up to `grace` while `still_ours()`, then SIGKILL if it is still ours.
fn stop_process(pid: u32, grace: Duration, still_ours: impl Fn() -> bool) {
    let Some(target) = signal_target(pid) else {
        return;
    };
    let _ = kill(target, Signal::SIGCONT);
    let _ = kill(target, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while still_ours() {
        if Instant::now() >= deadline {
            let _ = kill(target, Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A SIGKILLed process needs a moment to release its locks and ports.
    let deadline = Instant::now() + Duration::from_secs(5);
    while still_ours() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until process `pid` has exited (gone, or a zombie nobody reaped yet), at most `limit`.
/// Only called right after the process was seen holding our lock, so the pid is still ours.
fn wait_exit(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LocalError::io(format!("removing {}", path.display()), e)),
    }
}
