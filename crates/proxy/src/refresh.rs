//! Keeps the routing table current: asks the cluster for `CLUSTER NODES` on a timer and
//! whenever a worker reports a redirect or a broken backend, and publishes a new snapshot only
//! when routes changed. Runs on the control thread; never on a worker's hot path.
//!
//! Keyed requests can live with a stale table (a redirect corrects them), but a fan-out
//! (DBSIZE, KEYS, SCAN, FLUSHALL, INFO keyspace …) cannot: a master missing from the table is
//! silently left out. So the refresh loop also keeps [`Freshness`]: which requests for a
//! refresh ("asks") a completed refresh has answered, and when the table was last confirmed,
//! changed or not. Whoever changes the cluster (the local platform after each step of an
//! operation, or anyone through `POST /topology/refresh`) announces the change; a fan-out runs
//! only on a table confirmed after the last announced change and within
//! `fan_out_max_staleness`, and otherwise asks for a refresh and waits for it first (bounded).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cinnabar_cluster::{Credentials, NodeAddr, NodeClient, Timeouts};
use tokio::sync::{Notify, watch};

use crate::slotmap::SlotMap;
use crate::stats::ControlStats;

/// Minimum gap between two refreshes, so a burst of MOVED replies costs one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The backend the proxy serves: where to learn its topology, and how to log in to its nodes.
/// Replaced whole by an online switch; the refresh loop holds it (locked) for the length of
/// each refresh, so a refresh of the old backend can never publish over a switch.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// The cluster's name (`default` for a proxy of one cluster).
    pub(crate) name: String,
    pub(crate) seeds: Vec<NodeAddr>,
    pub(crate) credentials: Option<Arc<Credentials>>,
    /// 0 for the backend the proxy started with, one more per switch (`SlotMap::upstream`).
    pub(crate) epoch: u64,
    /// A Sentinel group instead of a cluster: its table comes from the Sentinels and the
    /// master's role check (`crate::group`), not from `CLUSTER NODES`.
    pub(crate) group: Option<Arc<crate::config::GroupConfig>>,
    /// For a group: the newest Sentinel configuration epoch whose master was confirmed; an
    /// answer from Sentinels behind it is not trusted (see `crate::group`).
    pub(crate) group_epoch: Arc<std::sync::atomic::AtomicU64>,
}

/// Fetches a fresh map of `upstream` from the first node that answers: `candidates` first
/// (the known masters), then its seeds.
///
/// # Errors
/// A sentence naming every node tried and why it failed.
pub(crate) async fn fetch(
    candidates: &[NodeAddr],
    upstream: &Upstream,
    timeout: Duration,
    version: u64,
) -> Result<SlotMap, String> {
    if let Some(group) = &upstream.group {
        return crate::group::fetch(group, upstream, timeout, version).await;
    }
    let timeouts = Timeouts {
        connect: timeout,
        response: timeout,
    };
    let mut failures = Vec::new();
    let seeds = upstream.seeds.iter().filter(|s| !candidates.contains(s));
    for addr in candidates.iter().chain(seeds) {
        let view = async {
            let credentials = upstream.credentials.as_deref();
            let mut client = NodeClient::connect_as(addr, timeouts, credentials).await?;
            client.cluster_nodes().await
        };
        match view.await {
            Ok(topology) => {
                let map = SlotMap::from_topology(&topology, version).named(
                    &upstream.name,
                    upstream.credentials.clone(),
                    upstream.epoch,
                );
                if !map.masters().is_empty() {
                    return Ok(map);
                }
                failures.push(format!("{addr}: knows no master with slots"));
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(format!(
        "no cluster node answered CLUSTER NODES ({})",
        failures.join("; ")
    ))
}

/// The first table: every cluster must answer.
///
/// # Errors
/// A sentence naming the cluster (when there are several) and every node tried.
pub(crate) async fn fetch_all(
    upstreams: &[Upstream],
    timeout: Duration,
) -> Result<SlotMap, String> {
    let mut parts = Vec::with_capacity(upstreams.len());
    for upstream in upstreams {
        match fetch(&[], upstream, timeout, 1).await {
            Ok(map) => parts.push(Arc::new(map)),
            Err(e) if upstreams.len() > 1 => return Err(format!("cluster {}: {e}", upstream.name)),
            Err(e) => return Err(e),
        }
    }
    Ok(SlotMap::combine(&parts, 1))
}

/// A table that routes nowhere yet, shaped for `upstreams` (a proxy waiting for its clusters
/// to form: see `ProxyConfig::wait_for_cluster`).
pub(crate) fn unknown(upstreams: &[Upstream]) -> SlotMap {
    let parts: Vec<Arc<SlotMap>> = upstreams
        .iter()
        .map(|u| {
            let empty = match u.group {
                Some(_) => SlotMap::group(None, Vec::new(), 0),
                None => SlotMap::empty(),
            };
            Arc::new(empty.named(&u.name, u.credentials.clone(), u.epoch))
        })
        .collect();
    SlotMap::combine(&parts, 0)
}

/// How far refreshes have got, as the control thread publishes it after each attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refreshed {
    /// Every ask numbered up to this was followed by a refresh attempt that started after it.
    pub(crate) attempted: u64,
    /// Every ask numbered up to this was followed by a successful refresh that started after
    /// it: the table in force reflects the cluster as it was when that ask was made.
    pub(crate) confirmed: u64,
    /// When the last successful refresh started (its view is at least that recent).
    pub(crate) confirmed_at: Instant,
}

/// Shared by the control thread, the workers, the admin listener and the handle: asks for a
/// refresh, announced cluster changes, and what the refresh loop has answered.
#[derive(Debug)]
pub(crate) struct Freshness {
    /// Asks so far; each ask takes the next number.
    asks: AtomicU64,
    /// The number of the ask that announced the last cluster change.
    changed: AtomicU64,
    wake: Arc<Notify>,
    refreshed: watch::Sender<Refreshed>,
}

impl Freshness {
    /// Starts from a table confirmed just now (the first fetch, before anything listens).
    pub(crate) fn new(wake: Arc<Notify>) -> Self {
        let (refreshed, _) = watch::channel(Refreshed {
            attempted: 0,
            confirmed: 0,
            confirmed_at: Instant::now(),
        });
        Self {
            asks: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            wake,
            refreshed,
        }
    }

    /// Asks for a refresh that starts from now on; returns the ask's number to wait for.
    pub(crate) fn ask(&self) -> u64 {
        let ask = self.asks.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        ask
    }

    /// The cluster changed (a slot moved, a master failed over, a node came or went): no
    /// fan-out may use a table confirmed before now. Returns the ask to wait for.
    pub(crate) fn announce_change(&self) -> u64 {
        let ask = self.ask();
        self.changed.fetch_max(ask, Ordering::SeqCst);
        ask
    }

    /// Whether a fan-out may use the table in force: confirmed after the last announced change
    /// and no longer than `bound` ago.
    pub(crate) fn fresh_within(&self, bound: Duration) -> bool {
        let changed = self.changed.load(Ordering::SeqCst);
        let refreshed = *self.refreshed.borrow();
        refreshed.confirmed >= changed && refreshed.confirmed_at.elapsed() <= bound
    }

    /// Resolves once a refresh that started after ask `ask` was attempted; true when it
    /// succeeded (its routes are published by then). Never resolves if the control thread is
    /// gone, so callers bound it.
    pub(crate) async fn attempted(&self, ask: u64) -> bool {
        let mut rx = self.refreshed.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        rx.wait_for(|r| r.attempted >= ask)
            .await
            .is_ok_and(|r| r.confirmed >= ask)
    }

    /// The control thread finished a refresh that covered asks up to `covers`.
    fn record(&self, covers: u64, started: Instant, succeeded: bool) {
        self.refreshed.send_modify(|r| {
            r.attempted = r.attempted.max(covers);
            if succeeded {
                r.confirmed = r.confirmed.max(covers);
                r.confirmed_at = r.confirmed_at.max(started);
            }
        });
    }
}

/// Refresh loop: wakes on `wake` or every `interval`, publishes changes on `tx`, and records
/// every attempt in `freshness` (after the routes it found are published).
pub(crate) async fn run(
    upstreams: Arc<tokio::sync::Mutex<Vec<Upstream>>>,
    tx: Arc<watch::Sender<Arc<SlotMap>>>,
    freshness: Arc<Freshness>,
    interval: Duration,
    timeout: Duration,
    stats: Arc<ControlStats>,
) {
    loop {
        tokio::select! {
            () = freshness.wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        // Held until the result is published: a switch waits for this refresh, or this
        // refresh for the switch, never both at once.
        let upstreams = upstreams.lock().await;
        // Asks made before this point are answered by this refresh: it starts after them.
        let covers = freshness.asks.load(Ordering::SeqCst);
        let started = Instant::now();
        let current = tx.borrow().clone();
        stats.refreshes.inc();
        let mut parts = Vec::with_capacity(upstreams.len());
        let mut failures = Vec::new();
        for (c, upstream) in upstreams.iter().enumerate() {
            let known = current.cluster_map(c);
            // Right after a switch the table in force has the new cluster's masters, so they
            // come first; the old cluster's never do.
            let candidates = known
                .as_ref()
                .filter(|k| k.upstream == upstream.epoch)
                .map(|k| k.masters().to_vec())
                .unwrap_or_default();
            match fetch(&candidates, upstream, timeout, current.version + 1).await {
                Ok(map) => parts.push(Arc::new(map)),
                Err(e) => {
                    failures.push(if upstreams.len() > 1 {
                        format!("cluster {}: {e}", upstream.name)
                    } else {
                        e
                    });
                    match known {
                        Some(known) => parts.push(Arc::new(known)),
                        None => break,
                    }
                }
            }
        }
        let fetched =
            (parts.len() == upstreams.len()).then(|| SlotMap::combine(&parts, current.version + 1));
        match fetched {
            Some(map) if !map.same_routes(&current) => {
                stats.topology_changes.inc();
                tracing::info!(
                    version = map.version,
                    masters = map.masters().len(),
                    "routing table changed"
                );
                tx.send_replace(Arc::new(map));
            }
            _ => {}
        }
        if failures.is_empty() {
            freshness.record(covers, started, true);
        } else {
            stats.refresh_failures.inc();
            freshness.record(covers, started, false);
            tracing::warn!(error = %failures.join("; "), "topology refresh failed; keeping the current routes");
        }
        drop(upstreams);
        tokio::time::sleep(DEBOUNCE).await;
    }
}
