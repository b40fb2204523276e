//! Proxy settings with production defaults. Plain data: no I/O, no validation side effects.

use std::net::SocketAddr;
use std::time::Duration;

use cinnabar_cluster::{Credentials, NodeAddr};

/// Where keyed read-only commands go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command goes to the slot's master: reads see every acknowledged write.
    #[default]
    Master,
    /// Read-only commands go to a replica of the slot's master when one is reachable, else to
    /// the master. Reads may be slightly stale (replication is asynchronous).
    PreferReplica,
    /// Read-only commands go only to replicas; with no reachable replica they fail rather than
    /// load the master.
    ReplicaOnly,
}

impl std::str::FromStr for ReadFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Self::Master),
            "prefer-replica" => Ok(Self::PreferReplica),
            "replica-only" => Ok(Self::ReplicaOnly),
            other => Err(format!(
                "unknown read policy '{other}' (expected master, prefer-replica or replica-only)"
            )),
        }
    }
}

impl std::fmt::Display for ReadFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Master => "master",
            Self::PreferReplica => "prefer-replica",
            Self::ReplicaOnly => "replica-only",
        })
    }
}

pub use cinnabar_access::Transactions;

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
    /// How many MOVED/ASK redirects one request follows in a row. More means nodes disagree
    /// about the slot for a moment: the request starts over from a fresh routing table after a
    /// pause, within `retry_window`, then fails with `-TRYAGAIN` (never a raw redirect).
    pub max_redirects: u8,
    /// How long TRYAGAIN / CLUSTERDOWN / connection failures are retried before the client sees
    /// the error: a failover that completes within this window is invisible to clients.
    pub retry_window: Duration,
    /// Periodic topology refresh, in addition to refreshes triggered by redirects and errors.
    pub refresh_interval: Duration,
    /// The oldest routing table a fan-out (DBSIZE, KEYS, SCAN, FLUSHALL, INFO keyspace, …) may
    /// use: older than this since its last confirmation, or confirmed before the last change
    /// announced to the proxy (`ProxyHandle::topology_changed`, `POST /topology/refresh`),
    /// and the fan-out waits for a refresh first (at most 2 s), so a master
    /// added by a scale is never silently left out. Keyed requests never wait: redirects
    /// correct them.
    pub fan_out_max_staleness: Duration,
    /// Tickets one client may have in flight before the proxy stops reading from it. A request
    /// split per key (MGET, DEL, … across slots) holds one per key; one request is always
    /// taken whole, so a client holds at most this many plus one request's keys.
    pub max_pending_per_client: usize,
    /// Reply bytes the proxy may hold for one client (received, not yet written to it) before
    /// it stops reading that client's requests. Replies already requested still arrive, so a
    /// client can exceed this by its requests in flight; it cannot grow without end.
    pub max_reply_bytes_per_client: usize,
    /// How long a backend connection may leave a request unanswered before the proxy gives up
    /// on it, fails its requests in flight (retrying the read-only ones) and reconnects. Must
    /// exceed the slowest legitimate command (blocking commands have their own connections).
    pub backend_read_timeout: Duration,
    /// The login for backend connections (Redis `requirepass` or an ACL user). Only the proxy
    /// knows it; clients never see it.
    pub backend_credentials: Option<Credentials>,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// How transactions with keys in several slots are carried (`strict` by default; a role
    /// may override it, see `cinnabar_access::RoleConfig::transactions`). Relaxed EXECs are
    /// counted (`cinnabar_relaxed_transactions_total`) and audited.
    pub transactions: Transactions,
    /// Pipelined connections from each worker to each backend node. One carries a worker's
    /// whole load with the fewest syscalls; more spread a node's replies over several sockets
    /// when single large replies would otherwise queue behind each other. Each client stays on
    /// one of them, so its requests to a node keep their order.
    pub backend_connections: usize,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/topology`); `None` runs
    /// without one. Keep it on loopback or a private network: it is not authenticated.
    pub admin_listen: Option<SocketAddr>,
    /// Start even when no seed answers yet (a cluster still forming, as in a new Kubernetes
    /// deployment): `/readyz` says not ready and requests get `CLUSTERDOWN` until the topology
    /// is learned, instead of the start failing.
    pub wait_for_cluster: bool,
    /// Several clusters behind this one endpoint, each owning the keys with its prefixes (see
    /// [`ClusterConfig`]); empty: the one cluster of `seeds` and `backend_credentials`.
    pub clusters: Vec<ClusterConfig>,
    /// A Sentinel-managed master/replicas group instead of a cluster (see [`GroupConfig`]);
    /// `seeds` and `clusters` are then unused (and `clusters` must be empty).
    pub group: Option<GroupConfig>,
    /// The bearer token the admin listener's state-changing endpoint `POST /backend/switch`
    /// requires (`Authorization: Bearer …`); `None` refuses every switch over HTTP.
    pub admin_token: Option<String>,
    /// How long a drain (SIGTERM) waits for clients to finish before cutting them off.
    pub drain_timeout: Duration,
    /// Client connections the proxy serves at once (all workers together); more are answered
    /// `-ERR max number of clients reached` and closed, as Redis does.
    pub max_clients: usize,
    /// A client that sends nothing for this long, with nothing in flight, is closed (`None`:
    /// never, Redis's `timeout 0`). Subscribed and blocked clients are never idle.
    pub idle_timeout: Option<Duration>,
    /// Connections one user may have logged in at once (all workers); `None`: no limit. A
    /// login beyond it is refused; the user's other connections are not touched.
    pub max_connections_per_user: Option<usize>,
    /// TLS on the client listener (certificate and key files); `None`: plain TCP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Client addresses allowed to connect; empty allows every address.
    pub allow_from: Vec<crate::cidr::Cidr>,
    /// Users, roles and guards. With no users, every client is the `default` user with the
    /// `default_role` (`readwrite`: the guards apply out of the box).
    pub access: cinnabar_access::AccessConfig,
    /// The audit trail of high-risk commands, refusals and failed logins.
    pub audit: cinnabar_audit::AuditConfig,
    /// Requests taking at least this long (arrival to reply) enter the proxy's `SLOWLOG`.
    pub slowlog_slower_than: Duration,
    /// Entries the slow log keeps.
    pub slowlog_max_len: usize,
    /// The settings file these came from, if any: reloads (SIGHUP, `POST /reload`) read it
    /// again.
    pub config_file: Option<std::path::PathBuf>,
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
            fan_out_max_staleness: Duration::from_secs(1),
            max_pending_per_client: 1024,
            max_reply_bytes_per_client: 64 * 1024 * 1024,
            backend_read_timeout: Duration::from_secs(5),
            backend_credentials: None,
            read_from: ReadFrom::Master,
            backend_connections: 1,
            transactions: Transactions::Strict,
            admin_listen: None,
            admin_token: None,
            clusters: Vec::new(),
            group: None,
            wait_for_cluster: false,
            drain_timeout: Duration::from_secs(30),
            max_clients: 10_000,
            idle_timeout: None,
            allow_from: Vec::new(),
            max_connections_per_user: None,
            tls: None,
            access: cinnabar_access::AccessConfig::default(),
            audit: cinnabar_audit::AuditConfig::default(),
            config_file: None,
            slowlog_slower_than: Duration::from_millis(10),
            slowlog_max_len: 128,
        }
    }
}

/// One cluster of an endpoint in front of several (`[[clusters]]` in the settings file).
///
/// A key goes to the cluster owning the longest prefix it starts with, else to the default
/// cluster (the one with no prefixes; there is exactly one). A request whose keys fall in
/// different clusters is split per key where the command allows it (MGET, MSET, DEL, …), as
/// for keys in different slots, and refused with a CROSSSLOT error naming the clusters
/// otherwise (MULTI/EXEC included). Fan-outs (DBSIZE, KEYS, FLUSHALL, INFO, …) and SCAN cover
/// every cluster. At most four clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Its name, in errors, metrics (`cluster` label), `/topology` and switches.
    pub name: String,
    /// Nodes to learn its topology from.
    pub seeds: Vec<NodeAddr>,
    /// How the proxy logs in to its nodes.
    pub credentials: Option<Credentials>,
    /// The key prefixes it owns; empty for the default cluster.
    pub prefixes: Vec<String>,
}

/// A master/replicas group managed by Sentinel, behind the endpoint instead of a cluster
/// (backend kind "group", see the `group` module).
///
/// The master is the one the Sentinels name (`SENTINEL get-master-addr-by-name`), confirmed
/// every second by the node itself (`INFO replication` says `role:master`); until both agree,
/// requests wait within the retry window and no write goes anywhere. Every key lives in one
/// place, so SELECT of any database, multi-key commands and MULTI/EXEC across any keys work.
/// The nodes' password is `backend_credentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's name as the Sentinels monitor it.
    pub name: String,
    /// Sentinels to ask (several: the master most of them name wins).
    pub sentinels: Vec<NodeAddr>,
    /// How the proxy logs in to the Sentinels, when they require a password.
    pub sentinel_credentials: Option<Credentials>,
}
