//! Cinnabar's data plane: one address that behaves like a standalone Redis, in front of a
//! Redis Cluster, or of a Sentinel-managed master/replicas group (backend kind "group", see
//! the `group` module: one shard owning every slot, any database). Clients send ordinary commands; the proxy routes each by hash slot, follows
//! MOVED/ASK, retries TRYAGAIN/CLUSTERDOWN within a window so failovers stay invisible, splits
//! multi-key commands per key and merges the replies, and multiplexes every client of a worker
//! onto one pipelined connection per backend node.
//!
//! Shape (see `docs/architecture.md`): one worker thread per core, each a single-threaded
//! runtime with its own `SO_REUSEPORT` listener, backend connections and tickets; a control
//! thread refreshes the routing table and publishes immutable snapshots. The hot path takes no
//! lock and, after warm-up, allocates nothing per request.
//!
//! Transactions (MULTI/EXEC in one slot) run as one contiguous `MULTI … EXEC` chunk on the
//! shared connection; blocking commands get a private connection each.
//!
//! Pub/sub subscriptions switch the client to a private connection relayed by the proxy.
//!
//! WATCH gives the client a connection of its own to the watched slot's master, where EXEC
//! then runs. RESP3 clients (`HELLO 3`) get RESP3 backend connections, so replies are still
//! forwarded untouched. Reads go to replicas only when the read policy says so. WAIT is
//! answered over every master (see the `wait` module).
//!
//! Administration that makes sense through one endpoint is carried over every master or node
//! (`SCRIPT KILL`, `BGSAVE`, `CLIENT PAUSE`, `LATENCY`, `MEMORY STATS` …, see `session::route`);
//! `INFO` has a module of its own (`info`). Not carried (a clear `-ERR`, never a wrong
//! answer): WAITAOF, SELECT of another database, MOVE/SWAPDB, and the remaining
//! administration commands. A RESP3
//! client in subscribed mode may send only pub/sub commands, PING, QUIT and RESET, as under
//! RESP2.

mod admin;
mod backend;
pub mod cidr;
pub mod config;
pub mod file;
mod group;
mod info;
mod keyroute;
mod local;
mod pubsub;
mod refresh;
mod session;
pub mod slotmap;
mod slowlog;
pub mod stats;
pub mod switch;
mod ticket;
pub mod tls;
mod wait;
mod worker;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use cinnabar_audit::AuditOutput;
pub use config::{GroupConfig, ProxyConfig, ReadFrom, Transactions};
pub use switch::{CatchUp, RequestHold, SwitchReport, SwitchRequest};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, watch};

use crate::slotmap::SlotMap;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No seed answered with a usable topology.
    #[error("cannot learn the cluster topology: {0}")]
    Topology(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start the proxy runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The users and roles do not compile.
    #[error("{0}")]
    Access(#[from] cinnabar_access::AccessError),
    /// The audit trail cannot start.
    #[error("cannot start the audit trail: {0}")]
    Audit(#[from] cinnabar_audit::AuditError),
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// A reload from the settings file was asked for, but the proxy was not started from one.
    #[error("the proxy was not started with a settings file, so there is nothing to reload")]
    NoConfigFile,
    /// The settings file is wrong.
    #[error("{0}")]
    File(#[from] file::FileError),
    /// The `[[clusters]]` cannot serve together.
    #[error("clusters: {0}")]
    Clusters(String),
}

/// Applies new access and audit settings; shared by the handle (SIGHUP) and the admin
/// listener (`POST /reload`).
pub(crate) struct Reloader {
    access: watch::Sender<Arc<worker::Policy>>,
    auditor: cinnabar_audit::Auditor,
    file: Option<std::path::PathBuf>,
    /// The client listener's TLS acceptor, when TLS is on: a reload re-reads its files (a
    /// renewed certificate), for connections accepted afterwards.
    tls: Option<watch::Sender<tokio_rustls::TlsAcceptor>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("file", &self.file)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Compiles and checks both parts before changing either, so a bad file changes nothing.
    fn apply(
        &self,
        access: &cinnabar_access::AccessConfig,
        audit: &cinnabar_audit::AuditConfig,
    ) -> Result<Vec<String>, ProxyError> {
        let (compiled, warnings) = cinnabar_access::Access::compile(access)?;
        audit.validate()?;
        self.auditor.reconfigure(audit)?;
        self.access
            .send_replace(Arc::new(worker::Policy::new(compiled, audit)));
        Ok(warnings)
    }

    pub(crate) fn reread_file(&self) -> Result<Vec<String>, ProxyError> {
        let path = self.file.as_ref().ok_or(ProxyError::NoConfigFile)?;
        let mut config = ProxyConfig::new(([127, 0, 0, 1], 0).into(), Vec::new());
        file::ProxyFile::read(path)?.apply_to(&mut config);
        // Everything is checked before anything changes.
        let acceptor = match (&self.tls, &config.tls) {
            (Some(_), Some(files)) => Some(tls::acceptor(files)?),
            _ => None,
        };
        let warnings = self.apply(&config.access, &config.audit)?;
        if let (Some(sender), Some(acceptor)) = (&self.tls, acceptor) {
            sender.send_replace(acceptor);
        }
        tracing::info!(file = %path.display(), "reloaded users, roles and audit settings");
        Ok(warnings)
    }
}

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    reloader: Arc<Reloader>,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    drain_timeout: std::time::Duration,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<stats::Stats>,
    routes: watch::Receiver<Arc<SlotMap>>,
    freshness: Arc<refresh::Freshness>,
    switcher: Arc<switch::Switcher>,
}

impl ProxyHandle {
    /// The address clients connect to (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin HTTP listener's address (`/metrics`, `/healthz`, `/readyz`, `/topology`), if
    /// one was configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Every counter, in the Prometheus text format (what `/metrics` serves).
    pub fn metrics(&self) -> String {
        let routes = self.routes.borrow().clone();
        self.stats.render(gauges(&routes))
    }

    /// Drains the proxy, then stops it: `/readyz` turns false, the listeners close, clients
    /// with nothing in flight are closed at once, and the others get every reply to what they
    /// sent (nothing more is read from them) before their connection closes. Returns when every
    /// client is gone or after the configured `drain_timeout`, with the number of clients that
    /// were still connected (cut off) at that point.
    pub fn drain(mut self) -> usize {
        let _ = self.drain.send(true);
        let deadline = std::time::Instant::now() + self.drain_timeout;
        let mut remaining = self.stats.open_clients();
        while remaining > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            remaining = self.stats.open_clients();
        }
        self.stop_threads();
        remaining
    }

    /// Applies new users, roles, guards and audit settings without dropping a connection: each
    /// client's next command is checked against them (a client whose user is gone or disabled
    /// must log in again). Nothing changes when either part is invalid.
    ///
    /// # Errors
    /// [`ProxyError::Access`] or [`ProxyError::Audit`] naming the field at fault.
    pub fn reload(
        &self,
        access: &cinnabar_access::AccessConfig,
        audit: &cinnabar_audit::AuditConfig,
    ) -> Result<Vec<String>, ProxyError> {
        self.reloader.apply(access, audit)
    }

    /// Reads the settings file again (`ProxyConfig::config_file`) and applies its `[access]`
    /// and `[audit]` sections as [`reload`](Self::reload) does; the other settings need a
    /// restart. What SIGHUP and the admin listener's `POST /reload` do.
    ///
    /// # Errors
    /// [`ProxyError::NoConfigFile`], [`ProxyError::File`] naming the file and key, or as
    /// [`reload`](Self::reload).
    pub fn reload_from_file(&self) -> Result<Vec<String>, ProxyError> {
        self.reloader.reread_file()
    }

    /// The audit trail's counters (records written, dropped, failed).
    pub fn audit_stats(&self) -> cinnabar_audit::AuditStats {
        self.reloader.auditor.stats()
    }

    /// Tells the proxy the cluster just changed (a slot moved, a master failed over, a node
    /// came or went): from now on no fan-out (DBSIZE, KEYS, SCAN, FLUSHALL, INFO keyspace …)
    /// runs on a routing table confirmed before this call; the proxy refreshes at once.
    /// Resolves when a refresh that started after the call completed (true), or after `wait`
    /// (false: the refresh failed or is late; fan-outs still wait for one, within their own
    /// bound). What the local platform calls after each step of an operation, and what
    /// `POST /topology/refresh` on the admin listener does.
    pub async fn topology_changed(&self, wait: std::time::Duration) -> bool {
        let ask = self.freshness.announce_change();
        tokio::time::timeout(wait, self.freshness.attempted(ask))
            .await
            .unwrap_or(false)
    }

    /// Switches the proxy to another backend while its clients stay connected (see the
    /// `switch` module): holds new requests, waits for every request sent to be answered and
    /// for the target to have applied every write the source acknowledged, then routes to the
    /// target; or, when that takes longer than `request.max_pause`, abandons and goes on with
    /// the source. Never fails: the report says what happened and why.
    pub async fn switch_backend(&self, request: SwitchRequest) -> SwitchReport {
        self.switcher.switch(request).await
    }

    /// The first phase of a switch coordinated over several proxies (all proxies of one
    /// deployment must flip together, or clients of different proxies would write to different
    /// clusters): checks, holds, drains and reads the source offsets, then holds until
    /// [`switch_commit`](Self::switch_commit) or [`switch_abort`](Self::switch_abort), or
    /// abandons by itself after `request.max_pause`. `request.catch_up` is not used: the
    /// coordinator waits for the target to reach the highest offset any proxy reported.
    ///
    /// # Errors
    /// The report of a refused or abandoned switch.
    pub async fn switch_prepare(
        &self,
        request: SwitchRequest,
    ) -> Result<switch::Prepared, SwitchReport> {
        self.switcher.prepare(request).await
    }

    /// Flips the switch prepared as `id`.
    pub async fn switch_commit(&self, id: u64) -> SwitchReport {
        self.switcher.commit(id).await
    }

    /// Abandons the switch prepared as `id`; the proxy goes on with the source.
    pub async fn switch_abort(&self, id: u64) -> SwitchReport {
        self.switcher
            .abort(id, "aborted by its coordinator".into())
            .await
    }

    /// Holds every client's new requests (they wait in the proxy, nothing fails) and
    /// resolves once everything sent before is answered: the quiet moment a planned failover
    /// of a Sentinel group needs (see [`RequestHold`]). Release it after the failover, once
    /// [`topology_changed`](Self::topology_changed) has published the new master.
    ///
    /// # Errors
    /// A sentence when a switch runs, a hold is in force, or the drain takes longer than
    /// `max_pause` (the requests are let go then).
    pub async fn hold_requests(
        &self,
        max_pause: std::time::Duration,
    ) -> Result<RequestHold, String> {
        self.switcher.hold_requests(max_pause).await
    }

    /// The masters of the backend served now.
    pub fn masters(&self) -> Vec<cinnabar_cluster::NodeAddr> {
        self.routes.borrow().masters().to_vec()
    }

    /// Client connections open now (across all workers).
    pub fn open_clients(&self) -> usize {
        self.stats.open_clients()
    }

    /// Stops the proxy and waits for its threads.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        let _ = self.stop.send(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Starts the proxy: learns the topology, binds the listeners, starts workers.
///
/// # Errors
/// [`ProxyError`] when no seed answers, the address cannot be bound, or threads cannot start.
pub fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let (access, warnings) = cinnabar_access::Access::compile(&config.access)?;
    for warning in warnings {
        tracing::warn!("access: {warning}");
    }
    let (access_tx, access_rx) =
        watch::channel(Arc::new(worker::Policy::new(access, &config.audit)));
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let (tls_tx, tls_rx) = match tls {
        Some(acceptor) => {
            let (tx, rx) = watch::channel(acceptor);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let auditor = cinnabar_audit::Auditor::start(config.audit.clone())?;
    let config = Arc::new(config);
    let control_stats = Arc::new(stats::ControlStats::default());
    let worker_stats: Vec<Arc<stats::WorkerStats>> =
        (0..config.workers.max(1)).map(|_| Arc::default()).collect();
    let stats = Arc::new(stats::Stats {
        workers: worker_stats.clone(),
        control: Arc::clone(&control_stats),
        started: std::time::Instant::now(),
        audit: Some(auditor.clone()),
        slowlog: slowlog::SlowLog::new(config.slowlog_max_len),
        user_connections: std::sync::Mutex::default(),
        backend_version: std::sync::Mutex::default(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(false);
    let refresh = Arc::new(Notify::new());
    let freshness = Arc::new(refresh::Freshness::new(Arc::clone(&refresh)));
    let gate = Arc::new(switch::Gate::new(config.workers.max(1)));
    let router = Arc::new(keyroute::KeyRouter::new(&config).map_err(ProxyError::Clusters)?);
    let upstreams: Vec<refresh::Upstream> = if config.clusters.is_empty() {
        vec![refresh::Upstream {
            name: "default".into(),
            seeds: config.seeds.clone(),
            credentials: config.backend_credentials.clone().map(Arc::new),
            epoch: 0,
            group: config.group.clone().map(Arc::new),
            group_epoch: Arc::default(),
        }]
    } else {
        config
            .clusters
            .iter()
            .map(|c| refresh::Upstream {
                name: c.name.clone(),
                seeds: c.seeds.clone(),
                credentials: c.credentials.clone().map(Arc::new),
                epoch: 0,
                group: None,
                group_epoch: Arc::default(),
            })
            .collect()
    };
    let shared_upstream = Arc::new(tokio::sync::Mutex::new(upstreams.clone()));

    // The control thread learns the first topology before anything listens, and keeps it
    // current afterwards. Waiting on a channel (not `block_on`) lets callers that already run
    // inside a runtime start a proxy too.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    {
        let (config, freshness, mut stop_rx) =
            (Arc::clone(&config), Arc::clone(&freshness), stop_rx.clone());
        let shared_upstream = Arc::clone(&shared_upstream);
        let control_stats = Arc::clone(&control_stats);
        threads.push(
            std::thread::Builder::new()
                .name("cinnabar-control".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(e) => return drop(first_tx.send(Err(ProxyError::Runtime(e)))),
                    };
                    runtime.block_on(async {
                        let first = match refresh::fetch_all(&upstreams, config.connect_timeout).await {
                            Err(e) if config.wait_for_cluster => {
                                tracing::warn!(error = %e, "no cluster topology yet; serving CLUSTERDOWN and not ready until it is learned");
                                freshness.ask();
                                Ok(refresh::unknown(&upstreams))
                            }
                            first => first,
                        };
                        let routes_tx = match first {
                            Ok(map) => {
                                let (routes_tx, routes_rx) = watch::channel(Arc::new(map));
                                let routes_tx = Arc::new(routes_tx);
                                if first_tx.send(Ok((routes_rx, Arc::clone(&routes_tx)))).is_err() {
                                    return;
                                }
                                routes_tx
                            }
                            Err(e) => return drop(first_tx.send(Err(ProxyError::Topology(e)))),
                        };
                        // A group's master is confirmed every second (the seed's HAProxy check),
                        // and every Sentinel event triggers a check at once.
                        let interval = match &config.group {
                            Some(group) => {
                                group::watch_sentinels(group, &freshness);
                                config.refresh_interval.min(group::ROLE_CHECK_INTERVAL)
                            }
                            None => config.refresh_interval,
                        };
                        tokio::select! {
                            () = refresh::run(shared_upstream, routes_tx, freshness, interval, config.connect_timeout, control_stats) => {}
                            _ = stop_rx.wait_for(|stop| *stop) => {}
                        }
                    });
                })
                .map_err(ProxyError::Runtime)?,
        );
    }
    let (routes_rx, routes_tx) = first_rx.recv().map_err(|_| {
        ProxyError::Topology("the control thread ended before learning the topology".into())
    })??;
    let switcher = Arc::new(switch::Switcher::new(
        Arc::clone(&gate),
        shared_upstream,
        routes_tx,
        Arc::clone(&router),
        config.connect_timeout,
    ));

    let bound = bind(config.listen, config.workers.max(1)).and_then(|sockets| {
        let addr = sockets[0].local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok((sockets, addr))
    });
    let (sockets, addr) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            let _ = stop.send(true);
            threads.into_iter().for_each(|t| drop(t.join()));
            return Err(e);
        }
    };

    // Each worker listens on its own thread, in its own runtime (a `LocalRuntime`, which
    // cannot move between threads), and says so before `start` returns: a client connecting
    // right after `start` is accepted.
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let workers = sockets.len();
    for (i, socket) in sockets.into_iter().enumerate() {
        let listening_tx = listening_tx.clone();
        let (config, routes_rx, refresh, freshness, stop_rx, drain_rx) = (
            Arc::clone(&config),
            routes_rx.clone(),
            Arc::clone(&refresh),
            Arc::clone(&freshness),
            stop_rx.clone(),
            drain_rx.clone(),
        );
        let (own_stats, all_stats) = (Arc::clone(&worker_stats[i]), Arc::clone(&stats));
        let (access_rx, auditor, tls) = (access_rx.clone(), auditor.clone(), tls_rx.clone());
        let gate = Arc::clone(&gate);
        let router = Arc::clone(&router);
        threads.push(
            std::thread::Builder::new()
                .name(format!("cinnabar-worker-{i}"))
                .spawn(move || {
                    let setup = WorkerSetup {
                        config,
                        announce: addr,
                        routes: routes_rx,
                        refresh,
                        freshness,
                        stats: own_stats,
                        all_stats,
                        drain: drain_rx,
                        access: access_rx,
                        auditor,
                        tls,
                        gate,
                        index: i,
                        router,
                    };
                    run_worker(setup, socket, &listening_tx, stop_rx)
                })
                .map_err(ProxyError::Runtime)?,
        );
    }
    drop(listening_tx);
    for _ in 0..workers {
        // A worker that could not start says why; one that died without a word dropped its
        // sender, and the channel ends.
        let listening = listening_rx.recv().unwrap_or_else(|_| {
            Err(ProxyError::Runtime(std::io::Error::other(
                "a worker thread ended before listening",
            )))
        });
        if let Err(e) = listening {
            let _ = stop.send(true);
            threads.into_iter().for_each(|t| drop(t.join()));
            return Err(e);
        }
    }
    let reloader = Arc::new(Reloader {
        access: access_tx,
        auditor: auditor.clone(),
        file: config.config_file.clone(),
        tls: tls_tx,
    });
    let admin_addr = match config.admin_listen {
        Some(listen) => {
            let shared = admin::Shared {
                reloader: Arc::clone(&reloader),
                stats: Arc::clone(&stats),
                routes: routes_rx.clone(),
                freshness: Arc::clone(&freshness),
                drain: drain_rx,
                config: Arc::clone(&config),
                switcher: Arc::clone(&switcher),
            };
            let started = admin::start(listen, shared, stop_rx);
            match started {
                Ok((admin_addr, thread)) => {
                    threads.push(thread);
                    Some(admin_addr)
                }
                Err(e) => {
                    let _ = stop.send(true);
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(e);
                }
            }
        }
        None => None,
    };
    Ok(ProxyHandle {
        addr,
        reloader,
        admin_addr,
        stop,
        drain,
        drain_timeout: config.drain_timeout,
        threads,
        stats,
        routes: routes_rx,
        freshness,
        switcher,
    })
}

/// What the routing table says, for the metrics.
pub(crate) fn gauges(routes: &SlotMap) -> stats::Gauges {
    stats::Gauges {
        masters: routes.masters().len(),
        slots_covered: routes.covered_slots(),
        topology_version: routes.version,
        clusters: (0..routes.clusters())
            .filter_map(|c| routes.cluster_map(c))
            .map(|one| stats::ClusterGauges {
                name: one.cluster_name(0).to_owned(),
                masters: one.masters().len(),
                slots_covered: one.covered_slots(),
                switches: one.upstream,
            })
            .collect(),
    }
}

/// One socket per worker on the same address (`SO_REUSEPORT`: the kernel spreads connections).
fn bind(listen: SocketAddr, workers: usize) -> Result<Vec<TcpSocket>, ProxyError> {
    let err = |source| ProxyError::Bind {
        addr: listen,
        source,
    };
    let mut sockets = Vec::with_capacity(workers);
    let mut addr = listen;
    for _ in 0..workers {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(err)?;
        socket.set_reuseaddr(true).map_err(err)?;
        socket.set_reuseport(true).map_err(err)?;
        socket.bind(addr).map_err(err)?;
        // With port 0 the first bind picks the port; the other workers join it.
        addr = socket.local_addr().map_err(err)?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Why a new client is refused, if it is: not on the allow-list, or too many clients. The
/// client count is read from every worker's counters: a few atomic loads per connection, never
/// per request.
fn admission(config: &ProxyConfig, stats: &stats::Stats, peer: SocketAddr) -> Option<String> {
    if !config.allow_from.is_empty() && !config.allow_from.iter().any(|c| c.contains(peer.ip())) {
        return Some(format!(
            "-ERR cinnabar: connections from {} are not allowed\r\n",
            peer.ip()
        ));
    }
    (stats.open_clients() >= config.max_clients)
        .then(|| "-ERR max number of clients reached\r\n".to_owned())
}

/// What a worker thread starts from.
struct WorkerSetup {
    config: Arc<ProxyConfig>,
    announce: SocketAddr,
    routes: watch::Receiver<Arc<SlotMap>>,
    refresh: Arc<Notify>,
    freshness: Arc<refresh::Freshness>,
    stats: Arc<stats::WorkerStats>,
    /// Every worker's counters, for the client limit.
    all_stats: Arc<stats::Stats>,
    drain: watch::Receiver<bool>,
    access: watch::Receiver<Arc<worker::Policy>>,
    auditor: cinnabar_audit::Auditor,
    tls: Option<watch::Receiver<tokio_rustls::TlsAcceptor>>,
    gate: Arc<switch::Gate>,
    index: usize,
    router: Arc<keyroute::KeyRouter>,
}

/// Runs one worker on this thread until the proxy stops: listens on `socket`, reports on
/// `listening`, then accepts and serves. Its runtime is a `LocalRuntime`: sessions and backend
/// connections are `spawn_local` tasks the runtime schedules itself, with no `LocalSet` queue
/// and no second wake-up in between (`bench/proxy-instructions.sh`: 1.4 % fewer instructions
/// per unpipelined request at 50 clients than with a `LocalSet`, 14 % with one client).
fn run_worker(
    setup: WorkerSetup,
    socket: TcpSocket,
    listening: &std::sync::mpsc::Sender<Result<(), ProxyError>>,
    mut stop: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(tokio::runtime::LocalOptions::default())
    {
        Ok(runtime) => runtime,
        Err(e) => return drop(listening.send(Err(ProxyError::Runtime(e)))),
    };
    let listener = {
        let _entered = runtime.enter();
        let addr = setup.announce;
        match socket.listen(1024) {
            Ok(listener) => listener,
            Err(source) => return drop(listening.send(Err(ProxyError::Bind { addr, source }))),
        }
    };
    if listening.send(Ok(())).is_err() {
        return;
    }
    runtime.block_on(async move {
        let WorkerSetup {
            config,
            announce,
            routes,
            refresh,
            freshness,
            stats,
            all_stats,
            mut drain,
            access,
            auditor,
            tls,
            gate,
            index,
            router,
        } = setup;
        let worker = worker::Worker::new(worker::Shared {
            config,
            routes,
            refresh,
            freshness,
            announce,
            stats,
            all_stats: Arc::clone(&all_stats),
            access,
            auditor,
            gate,
            index,
            router,
        });
        tokio::task::spawn_local(Rc::clone(&worker).follow_gate());
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match admission(&worker.config, &all_stats, peer) {
                        None => match &tls {
                            Some(acceptor) => {
                                let (worker, acceptor) = (Rc::clone(&worker), acceptor.borrow().clone());
                                tokio::task::spawn_local(session::serve_tls(worker, acceptor, stream));
                            }
                            None => {
                                tokio::task::spawn_local(session::serve(Rc::clone(&worker), stream));
                            }
                        },
                        Some(refusal) => {
                            worker.stats.clients_rejected.inc();
                            tokio::task::spawn_local(session::refuse(stream, refusal));
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                _ = drain.wait_for(|draining| *draining) => break,
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
        // Draining: no new clients; the sessions finish what they accepted and close.
        drop(listener);
        worker.begin_drain();
        let _ = stop.wait_for(|stop| *stop).await;
    });
}
