//! Keeps the routing table current: asks the cluster for `CLUSTER NODES` on a timer and
//! whenever a worker reports a redirect or a broken backend, and publishes a new snapshot only
//! when routes changed. Runs on the control thread; never on a worker's hot path.

use std::sync::Arc;
use std::time::Duration;

use cinnabar_cluster::{Credentials, NodeAddr, NodeClient, Timeouts};
use tokio::sync::{Notify, watch};

use crate::slotmap::SlotMap;
use crate::stats::ControlStats;

/// Minimum gap between two refreshes, so a burst of MOVED replies costs one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Fetches a fresh map from the first node that answers: known masters first, then the seeds.
///
/// # Errors
/// A sentence naming every node tried and why it failed.
pub(crate) async fn fetch(
    candidates: &[NodeAddr],
    credentials: Option<&Credentials>,
    timeout: Duration,
    version: u64,
) -> Result<SlotMap, String> {
    let timeouts = Timeouts {
        connect: timeout,
        response: timeout,
    };
    let mut failures = Vec::new();
    for addr in candidates {
        let view = async {
            let mut client = NodeClient::connect_as(addr, timeouts, credentials).await?;
            client.cluster_nodes().await
        };
        match view.await {
            Ok(topology) => {
                let map = SlotMap::from_topology(&topology, version);
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

/// Refresh loop: wakes on `wake` or every `interval`, publishes changes on `tx`.
pub(crate) async fn run(
    seeds: Vec<NodeAddr>,
    credentials: Option<Credentials>,
    tx: watch::Sender<Arc<SlotMap>>,
    wake: Arc<Notify>,
    interval: Duration,
    timeout: Duration,
    stats: Arc<ControlStats>,
) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        let current = tx.borrow().clone();
        let mut candidates: Vec<NodeAddr> = current.masters().to_vec();
        candidates.extend(
            seeds
                .iter()
                .filter(|s| !current.masters().contains(s))
                .cloned(),
        );
        stats.refreshes.inc();
        match fetch(
            &candidates,
            credentials.as_ref(),
            timeout,
            current.version + 1,
        )
        .await
        {
            Ok(map) if !map.same_routes(&current) => {
                stats.topology_changes.inc();
                tracing::info!(
                    version = map.version,
                    masters = map.masters().len(),
                    "routing table changed"
                );
                tx.send_replace(Arc::new(map));
            }
            Ok(_) => {}
            Err(e) => {
                stats.refresh_failures.inc();
                tracing::warn!(error = %e, "topology refresh failed; keeping the current routes");
            }
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
