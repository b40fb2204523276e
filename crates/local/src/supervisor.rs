//! Bringing a local cluster up and keeping it up: start nodes, form (or resume) the cluster,
//! start the proxy in front of it, then restart any node that dies, on its own data directory,
//! so it rejoins by itself.
//!
//! The supervisor owns the node processes (they are its children), the proxy (threads of this
//! process, so it lives and dies with the supervisor) and the directory's lock. It never changes
//! cluster topology on its own: a restarted node rejoins from its `nodes.conf`. The one thing it
//! takes orders on is a drill's restart hold (see `faults`), which delays a restart, never more.

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use cinnabar_cluster::{CreateProgress, CreateSpec, NewNode, NodeAddr};
use cinnabar_proxy::{ProxyConfig, ProxyHandle};

mod requests;

use crate::binary::ServerBinary;
use crate::config::NodeConfig;
use crate::control;
use crate::error::{LocalError, Result};
use crate::ports;
use crate::probe;
use crate::process::{NodeProcess, log_tail};
use crate::spec::{LocalSpec, SpecOverrides, machine_memory};
use crate::state::{NodeState, Phase, State, StateDir, SupervisorLock};

/// How often children are checked for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A node that ran at least this long before dying is restarted at once.
const STABLE_UPTIME: Duration = Duration::from_secs(10);
/// Longest wait between restarts of a node that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long each node may take to answer PING after start (AOF load included).
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace period for a node to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The proxy's audit trail, in the state directory (rotated by size).
pub const AUDIT_FILE: &str = "audit.jsonl";

/// How long the proxy may take to answer its first PING once started.
const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running proxy is asked whether it still serves.
const PROXY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What `up` needs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Shape and settings given as flags; the rest comes from the directory or the defaults.
    pub spec: SpecOverrides,
    /// State directory.
    pub dir: PathBuf,
    /// Explicit server binary, else found on PATH.
    pub redis_server: Option<PathBuf>,
    /// Limit for the cluster to form or resume.
    pub form_timeout: Duration,
}

/// Progress of `up`, for the person watching.
#[derive(Debug)]
pub enum UpEvent<'a> {
    /// The server binary in use.
    Server(&'a ServerBinary),
    /// Nodes are being started.
    StartingNodes {
        /// How many.
        count: usize,
        /// Lowest client port.
        first_port: u16,
        /// Highest client port (the range has gaps after nodes were removed).
        last_port: u16,
        /// How many of them are Sentinels (a Sentinel group's; 0 for a cluster).
        sentinels: usize,
    },
    /// Every node answers PING.
    NodesUp(usize),
    /// The proxy answers PING.
    ProxyUp {
        /// Where it listens.
        addr: SocketAddr,
        /// Its worker threads.
        workers: u16,
    },
    /// The directory held a stopped cluster: it is restarted on its data, not re-created.
    Resuming,
    /// A step of cluster creation.
    Cluster(&'a CreateProgress),
    /// Ready to serve.
    Ready(&'a str),
}

impl fmt::Display for UpEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(b) => write!(
                f,
                "using {:?} {} at {}",
                b.flavor,
                b.version,
                b.path.display()
            ),
            Self::StartingNodes {
                count,
                first_port,
                last_port,
                sentinels: 0,
            } => write!(
                f,
                "starting {count} nodes on ports {first_port}-{last_port} (bus ports +10000)"
            ),
            Self::StartingNodes {
                count,
                first_port,
                last_port,
                sentinels,
            } => write!(
                f,
                "starting {} nodes and {sentinels} Sentinels on ports {first_port}-{last_port}",
                count - sentinels
            ),
            Self::NodesUp(n) => write!(f, "{n}/{n} nodes answer PING"),
            Self::Resuming => write!(
                f,
                "found a stopped cluster in this directory: restarting it on its data"
            ),
            Self::ProxyUp { addr, workers } => write!(
                f,
                "proxy serving on {addr} ({workers} worker{})",
                if *workers == 1 { "" } else { "s" }
            ),
            Self::Cluster(p) => write!(f, "{p}"),
            Self::Ready(endpoint) => write!(f, "cluster ready at {endpoint}"),
        }
    }
}

/// One supervised node.
#[derive(Debug)]
struct Child {
    process: NodeProcess,
    started: Instant,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// A drill holds its restart back (logged once per hold).
    held: bool,
}

impl Child {
    /// A node process that has just been started.
    fn new(process: NodeProcess) -> Self {
        Self {
            process,
            started: Instant::now(),
            restarts: 0,
            backoff: Duration::ZERO,
            restart_at: None,
            held: false,
        }
    }
}

/// A running local cluster and the loop that keeps it running.
#[derive(Debug)]
pub struct Supervisor {
    dir: StateDir,
    binary: ServerBinary,
    state: State,
    children: Vec<Child>,
    /// The running proxy; `None` with `--no-proxy` and until the cluster is ready.
    proxy: Option<ProxyHandle>,
    /// The control socket, bound once the cluster is ready (see [`crate::control`]).
    control: Option<tokio::net::UnixListener>,
    /// What the last check of the proxy saw, so only changes are logged.
    proxy_serving: bool,
    _lock: SupervisorLock,
}

impl Supervisor {
    /// Starts (or resumes) the cluster described by `options` and returns once it is ready.
    ///
    /// On any error every process started here is stopped again, and a cluster that was being
    /// created fresh leaves no data behind, so the same command can simply be run again.
    ///
    /// # Errors
    /// Invalid spec, missing binary, busy ports, a running supervisor, a node that does not start,
    /// a cluster that does not form in time, or a proxy that does not start or serve.
    pub async fn up(
        options: &UpOptions,
        on_event: &mut (dyn FnMut(UpEvent<'_>) + Send),
    ) -> Result<Self> {
        let (spec, binary) = &Self::preflight(options)?;
        on_event(UpEvent::Server(binary));
        if let Ok(existing) = StateDir::open(&options.dir) {
            // Say "already running" rather than "port in use" when it is our own cluster.
            drop(existing.lock()?);
        }
        if let Some(port) = spec.proxy_port() {
            ports::ensure_free(port)?;
        }
        if let Some(port) = spec.admin_port() {
            ports::ensure_free(port)?;
        }
        let existing = StateDir::open(&options.dir).ok();
        let planned = planned_nodes(existing.as_ref(), spec)?;
        for (port, _, _) in &planned {
            ports::ensure_node_ports_free(*port, 1)?;
        }
        let created_dir = !options.dir.exists();
        let dir = StateDir::create(&options.dir)?;
        let nodes: Vec<NodeState> = planned
            .into_iter()
            .map(|(port, host, sentinel)| NodeState {
                port,
                dir: dir.node_dir(port),
                pid: None,
                restarts: 0,
                host,
                sentinel,
            })
            .collect();
        let lock = dir.lock()?;
        let fresh = is_fresh(&dir, &nodes, spec)?;
        // An endpoint switched to another cluster keeps serving it across restarts.
        let serving = if fresh {
            None
        } else {
            dir.load()
                .ok()
                .flatten()
                .and_then(|previous| previous.serving)
        };

        let mut state = State {
            spec: spec.clone(),
            endpoint: spec.endpoint(),
            phase: Phase::Starting,
            supervisor_pid: Some(std::process::id()),
            server_path: binary.path.clone(),
            server_flavor: binary.flavor,
            server_version: binary.version.clone(),
            nodes,
            serving,
            updated_ms: 0,
        };
        dir.save(&mut state)?;
        let mut supervisor = Self {
            dir,
            binary: binary.clone(),
            state,
            children: Vec::new(),
            proxy: None,
            proxy_serving: false,
            control: None,
            _lock: lock,
        };
        match supervisor.bring_up(options, fresh, on_event).await {
            Ok(()) => Ok(supervisor),
            Err(e) => {
                supervisor.abandon(fresh, created_dir);
                Err(e)
            }
        }
    }

    /// Everything that can be refused without touching the machine: flags against a stored
    /// cluster, shape, sizes, memory budget, and the server binary. Nothing is created.
    ///
    /// # Errors
    /// The first rule broken, as [`LocalError::InvalidTopology`] or a missing binary.
    pub fn preflight(options: &UpOptions) -> Result<(LocalSpec, ServerBinary)> {
        let stored = StateDir::open(&options.dir)
            .ok()
            .and_then(|d| d.load().ok().flatten());
        let spec = options.spec.resolve(stored.as_ref().map(|s| &s.spec))?;
        spec.validate()?;
        if stored.is_none() {
            spec.check_hosts()?;
        }
        if let Some(total) = machine_memory() {
            spec.check_fits_memory(total)?;
        }
        let binary = ServerBinary::locate(options.redis_server.as_deref())?;
        Ok((spec, binary))
    }

    async fn bring_up(
        &mut self,
        options: &UpOptions,
        fresh: bool,
        on_event: &mut (dyn FnMut(UpEvent<'_>) + Send),
    ) -> Result<()> {
        let spec = self.state.spec.clone();
        let ports: Vec<u16> = self.state.nodes.iter().map(|n| n.port).collect();
        on_event(UpEvent::StartingNodes {
            count: ports.len(),
            first_port: ports.iter().copied().min().unwrap_or(0),
            last_port: ports.iter().copied().max().unwrap_or(0),
            sentinels: self.state.nodes.iter().filter(|n| n.sentinel).count(),
        });
        for &port in &ports {
            let config = self.node_config(port);
            let process = NodeProcess::spawn(&self.binary, &config)?;
            self.children.push(Child::new(process));
        }
        for child in &mut self.children {
            child.process.wait_ready(NODE_READY_TIMEOUT)?;
        }
        self.record_pids()?;
        on_event(UpEvent::NodesUp(self.children.len()));

        if spec.is_sentinel() {
            if !fresh {
                on_event(UpEvent::Resuming);
            }
            // The replicas were told their master in their first configuration file; what
            // remains is for every Sentinel to see the whole group (and, on a resume, to agree
            // on a master that says so).
            cinnabar_cluster::sentinel::wait_group_ready(
                &self.group_access(),
                usize::from(spec.replicas),
                options.form_timeout,
            )
            .await
            .map_err(|e| {
                LocalError::InvalidTopology(format!("the Sentinel group did not form: {e}"))
            })?;
        } else if fresh {
            let create = CreateSpec {
                nodes: self
                    .state
                    .nodes
                    .iter()
                    .map(|n| NewNode {
                        addr: local_addr(n.port),
                        host_label: n.host.clone(),
                    })
                    .collect(),
                replicas_per_master: usize::from(spec.replicas),
                timeout: options.form_timeout,
            };
            cinnabar_cluster::create_cluster(&create, &mut |p| on_event(UpEvent::Cluster(p)))
                .await
                .map_err(|e| self.with_pending_logs(e))?;
        } else {
            on_event(UpEvent::Resuming);
            self.wait_healthy(options.form_timeout).await?;
        }
        if let Some(port) = spec.proxy_port() {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            self.start_proxy(addr).await?;
            on_event(UpEvent::ProxyUp {
                addr,
                workers: spec.proxy_workers,
            });
        }
        self.control = control::listen(&self.dir);
        self.state.phase = Phase::Ready;
        self.dir.save(&mut self.state)?;
        on_event(UpEvent::Ready(&self.state.endpoint));
        Ok(())
    }

    /// Starts the proxy in front of every node and waits until it answers PING, so the endpoint
    /// we print serves at once.
    async fn start_proxy(&mut self, addr: SocketAddr) -> Result<()> {
        let seeds = match &self.state.serving {
            Some(serving) => serving
                .seeds
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            None => self.seeds(),
        };
        let mut config = ProxyConfig::new(addr, seeds);
        // A group's endpoint switched to a cluster (`cinnabar migrate`) serves that cluster.
        if self.state.spec.is_sentinel() && self.state.serving.is_none() {
            config.seeds.clear();
            config.group = Some(cinnabar_proxy::GroupConfig {
                name: crate::spec::GROUP_NAME.into(),
                sentinels: self.sentinel_addrs(),
                sentinel_credentials: None,
            });
        }
        config.workers = usize::from(self.state.spec.proxy_workers);
        config.admin_listen = self
            .state
            .spec
            .admin_port()
            .map(|port| SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
        // The audit trail lives with the cluster: `up`'s stdout carries only the endpoint.
        config.audit.output = cinnabar_proxy::AuditOutput::File(self.dir.root().join(AUDIT_FILE));
        // `start` blocks while it learns the topology; keep that off the supervision thread.
        let started = tokio::task::spawn_blocking(move || cinnabar_proxy::start(config))
            .await
            .map_err(|e| LocalError::ProxyNotServing {
                addr,
                reason: format!("its start-up thread ended: {e}"),
            })?;
        self.proxy = Some(started.map_err(|source| LocalError::ProxyStart { addr, source })?);
        probe::wait_for_pong(addr, PROXY_READY_TIMEOUT)
            .await
            .map_err(|reason| LocalError::ProxyNotServing { addr, reason })?;
        self.proxy_serving = true;
        Ok(())
    }

    /// Asks the proxy whether it still serves and logs when that changes. The proxy is not
    /// restarted: its threads are part of this process, and one that hangs could not be
    /// stopped safely; `status` reports it down and `cinnabar down` + `up` start a new one.
    async fn check_proxy(&mut self) {
        let Some(addr) = self.proxy.as_ref().map(ProxyHandle::local_addr) else {
            return;
        };
        let outcome = probe::ping(addr, probe::PING_TIMEOUT).await;
        match (&outcome, self.proxy_serving) {
            (Err(reason), true) => tracing::error!(
                proxy = %addr,
                %reason,
                "the proxy does not answer PING; `cinnabar down` then `cinnabar up` restarts it"
            ),
            (Ok(()), false) => tracing::info!(proxy = %addr, "the proxy answers PING again"),
            _ => {}
        }
        self.proxy_serving = outcome.is_ok();
    }

    /// Attaches the log tails of the nodes a creation timeout names as the ones holding it up,
    /// so the person sees why a node stayed out, not just which.
    fn with_pending_logs(&self, error: cinnabar_cluster::ClusterError) -> LocalError {
        let cinnabar_cluster::ClusterError::Timeout { pending_nodes, .. } = &error else {
            return error.into();
        };
        let logs: String = self
            .children
            .iter()
            .filter(|c| {
                pending_nodes
                    .iter()
                    .any(|p| p.port == c.process.config().port)
            })
            .map(|c| {
                let log = c.process.config().log_path();
                format!(
                    "\n--- last lines of {} ---\n{}",
                    log.display(),
                    log_tail(&log, 10)
                )
            })
            .collect();
        LocalError::FormationStalled {
            source: error,
            logs,
        }
    }

    /// Waits until the cluster (resumed from its data) is healthy again.
    async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let options = cinnabar_cluster::CheckOptions::default();
        cinnabar_cluster::wait_healthy(&self.seeds(), &options, timeout).await?;
        Ok(())
    }

    /// The endpoint clients should use.
    pub fn endpoint(&self) -> &str {
        &self.state.endpoint
    }

    /// Addresses of all data nodes (Sentinels are not), as recorded.
    pub fn seeds(&self) -> Vec<NodeAddr> {
        self.state
            .nodes
            .iter()
            .filter(|n| !n.sentinel)
            .map(|n| local_addr(n.port))
            .collect()
    }

    /// Addresses of a Sentinel group's Sentinels.
    pub fn sentinel_addrs(&self) -> Vec<NodeAddr> {
        self.state
            .nodes
            .iter()
            .filter(|n| n.sentinel)
            .map(|n| local_addr(n.port))
            .collect()
    }

    /// How the control plane reaches this Sentinel group.
    pub(crate) fn group_access(&self) -> cinnabar_cluster::sentinel::GroupAccess {
        cinnabar_cluster::sentinel::GroupAccess {
            name: crate::spec::GROUP_NAME.into(),
            sentinels: self.sentinel_addrs(),
            sentinel_credentials: None,
            credentials: None,
        }
    }

    /// Supervises until `shutdown` completes, then stops every node cleanly.
    ///
    /// # Errors
    /// Only when the state file cannot be written.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        let mut proxy_tick = tokio::time::interval(PROXY_CHECK_INTERVAL);
        // Out of `self` so waiting for a client borrows no part of the supervisor.
        let control = self.control.take();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Served inline: a request holds supervision up for as long as one node takes
                // to stop or start, and no crash restart can race a planned one.
                accepted = control::accept(control.as_ref()) => match accepted {
                    Ok(stream) => self.serve_control(stream).await,
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                },
                // A state file we cannot write must not end supervision: the nodes matter more.
                _ = tick.tick() => if let Err(e) = self.tend() {
                    tracing::error!(error = %e, "cannot record node state; still supervising");
                },
                _ = proxy_tick.tick(), if self.proxy.is_some() => self.check_proxy().await,
            }
        }
        drop(control);
        let _ = std::fs::remove_file(control::socket_path(self.dir.root()));
        self.stop_all()
    }

    /// One supervision round: notice exits, restart what is due.
    fn tend(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut changed = false;
        for child in &mut self.children {
            if let Some(due) = child.restart_at {
                if now < due {
                    continue;
                }
                // A drill keeps this node down on purpose, to see the failover a lost machine
                // causes; the hold has a deadline, so a node is never left down for good.
                if crate::faults::restart_held(&child.process.config().dir, SystemTime::now()) {
                    if !child.held {
                        child.held = true;
                        tracing::warn!(node = %child.process.addr(), "restart held back by a drill");
                    }
                    continue;
                }
                child.held = false;
                let config = child.process.config().clone();
                match NodeProcess::spawn(&self.binary, &config) {
                    Ok(process) => {
                        child.process = process;
                        child.started = now;
                        child.restarts += 1;
                        child.restart_at = None;
                        changed = true;
                        tracing::info!(
                            node = %child.process.addr(),
                            pid = child.process.pid(),
                            restarts = child.restarts,
                            "restarted node on its data directory"
                        );
                    }
                    Err(e) => {
                        child.backoff = next_backoff(child.backoff);
                        child.restart_at = Some(now + child.backoff);
                        tracing::error!(node = %child.process.addr(), error = %e, "restart failed; retrying in {:?}", child.backoff);
                    }
                }
            } else if let Some(status) = child.process.try_exit() {
                let uptime = now - child.started;
                child.backoff = if uptime >= STABLE_UPTIME {
                    Duration::ZERO
                } else {
                    next_backoff(child.backoff)
                };
                child.restart_at = Some(now + child.backoff);
                changed = true;
                tracing::warn!(
                    node = %child.process.addr(),
                    %status,
                    uptime = ?uptime,
                    "node exited; restarting in {:?}",
                    child.backoff
                );
            }
        }
        if changed { self.record_pids() } else { Ok(()) }
    }

    /// Writes current pids and restart counts to the state file.
    fn record_pids(&mut self) -> Result<()> {
        for (node, child) in self.state.nodes.iter_mut().zip(&mut self.children) {
            node.pid = child.restart_at.is_none().then(|| child.process.pid());
            node.restarts = child.restarts;
        }
        self.dir.save(&mut self.state)
    }

    /// Stops every node (SIGTERM, then SIGKILL after a grace period) and marks the state stopped.
    fn stop_all(&mut self) -> Result<()> {
        self.state.phase = Phase::Stopping;
        // Best effort: stopping the nodes must not depend on the state file being writable.
        let _ = self.dir.save(&mut self.state);
        // The proxy first: clients see their connections close, not errors from dying nodes.
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown();
        }
        // Signal all first so nodes shut down in parallel, then wait for each.
        for child in &self.children {
            child.process.signal(nix::sys::signal::Signal::SIGTERM);
        }
        for child in &mut self.children {
            child.process.stop(STOP_GRACE);
        }
        for node in &mut self.state.nodes {
            node.pid = None;
        }
        self.state.phase = Phase::Stopped;
        self.state.supervisor_pid = None;
        self.dir.save(&mut self.state)
    }

    /// After a failed `up`: stop what we started; a fresh cluster leaves nothing behind.
    fn abandon(&mut self, fresh: bool, created_dir: bool) {
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown();
        }
        for child in &mut self.children {
            child.process.stop(STOP_GRACE);
        }
        self.children.clear();
        if created_dir {
            let _ = std::fs::remove_dir_all(self.dir.root());
        } else if fresh {
            let _ = std::fs::remove_dir_all(self.dir.root().join(crate::state::NODES_DIR));
            self.dir.remove_state();
        } else {
            self.state.phase = Phase::Stopped;
            self.state.supervisor_pid = None;
            for node in &mut self.state.nodes {
                node.pid = None;
            }
            let _ = self.dir.save(&mut self.state);
        }
    }

    fn node_config(&self, port: u16) -> NodeConfig {
        let spec = &self.state.spec;
        if spec.is_sentinel() {
            return self.group_node_config(port);
        }
        let mut config = NodeConfig::cluster_node(port, self.dir.node_dir(port));
        config.maxmemory =
            (spec.maxmemory_bytes().unwrap_or(0) > 0).then(|| spec.maxmemory.clone());
        config.maxmemory_policy = spec.maxmemory_policy.clone();
        config.node_timeout_ms = spec.node_timeout_ms;
        config
    }
}

impl Supervisor {
    /// A Sentinel group's node or Sentinel. Their files are written once (`keep_file`): the
    /// first data node starts as the master, the others as its replicas, and from then on
    /// Sentinel keeps each file's `replicaof` (and its own state) current.
    fn group_node_config(&self, port: u16) -> NodeConfig {
        let spec = &self.state.spec;
        let dir = self.dir.node_dir(port);
        let first = self.seeds().first().map_or(port, |n| n.port);
        if self
            .state
            .nodes
            .iter()
            .any(|n| n.port == port && n.sentinel)
        {
            let mut monitor = crate::config::SentinelMonitor::new(
                crate::spec::GROUP_NAME,
                "127.0.0.1",
                first,
                spec.quorum(),
            );
            monitor.down_after_ms = spec.node_timeout_ms;
            return NodeConfig::sentinel(port, dir, monitor);
        }
        let mut config = NodeConfig::group_node(port, dir);
        config.maxmemory =
            (spec.maxmemory_bytes().unwrap_or(0) > 0).then(|| spec.maxmemory.clone());
        config.maxmemory_policy = spec.maxmemory_policy.clone();
        if port != first {
            config
                .extra
                .push(("replicaof".into(), format!("127.0.0.1 {first}")));
        }
        // With two or more replicas, a master that no replica reaches refuses writes: an old
        // master cut off by a partition then acknowledges none that its demotion would drop
        // (the proxy retries the refusal on the new master). With one replica this would stop
        // every write while that replica restarts or is down, so it is left out.
        if spec.replicas >= 2 {
            config
                .extra
                .push(("min-replicas-to-write".into(), "1".into()));
            config
                .extra
                .push(("min-replicas-max-lag".into(), "10".into()));
        }
        config
    }
}

/// `127.0.0.1:<port>` as a cluster address.
pub(crate) fn local_addr(port: u16) -> NodeAddr {
    NodeAddr {
        host: "127.0.0.1".into(),
        port,
    }
}

/// Doubles the wait, from 250 ms up to [`MAX_BACKOFF`].
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(250), MAX_BACKOFF)
}

/// The nodes to start: those recorded in the directory's state (after scaling they are no
/// longer the spec's consecutive ports), or, for a new cluster, the spec's layout with hosts
/// assigned round robin.
fn planned_nodes(
    existing: Option<&StateDir>,
    spec: &LocalSpec,
) -> Result<Vec<(u16, Option<String>, bool)>> {
    let recorded = match existing {
        Some(dir) => dir.load()?.map(|s| s.nodes).unwrap_or_default(),
        None => Vec::new(),
    };
    if !recorded.is_empty() {
        return Ok(recorded
            .into_iter()
            .map(|n| (n.port, n.host, n.sentinel))
            .collect());
    }
    Ok(spec
        .ports()
        .enumerate()
        .map(|(i, port)| (port, spec.host_of(i), false))
        .chain(spec.sentinel_ports().map(|port| (port, None, true)))
        .collect())
}

/// True when no node directory holds cluster state yet; an error when only some do. A
/// cluster node's state is its `nodes.conf`; a Sentinel group's nodes keep their first
/// configuration file (see `NodeConfig::keep_file`).
fn is_fresh(dir: &StateDir, nodes: &[NodeState], spec: &LocalSpec) -> Result<bool> {
    let marker = if spec.is_sentinel() {
        "redis.conf"
    } else {
        "nodes.conf"
    };
    let initialised: Vec<u16> = nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| dir.node_dir(*p).join(marker).exists())
        .collect();
    if initialised.is_empty() {
        return Ok(true);
    }
    if initialised.len() == nodes.len() {
        return Ok(false);
    }
    Err(LocalError::InvalidTopology(format!(
        "{} holds cluster data for ports {initialised:?} but not for all {} recorded nodes; \
         start it with the flags it was created with, or run `cinnabar down --purge --dir {}`",
        dir.root().display(),
        nodes.len(),
        dir.root().display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_and_caps() {
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            b = next_backoff(b);
            seen.push(b);
        }
        assert_eq!(seen[0], Duration::from_millis(250));
        assert_eq!(seen[1], Duration::from_millis(500));
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
    }
}
