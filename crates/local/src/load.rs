//! What each master of a local cluster carries right now: memory used against `maxmemory`,
//! operations per second and keys, read from its `INFO`. Shared by the autoscaler (which
//! decides on it) and the web console (which charts it).
//!
//! Read-only: it never changes a node, and a master that does not answer is an error for the
//! caller to show, not something to repair here.

use cinnabar_cluster::autoscale::ShardLoad;
use cinnabar_cluster::{ClusterError, NodeAddr, NodeClient, Platform as _, Timeouts, observe};

use crate::LocalPlatform;

/// One master's load, with its key count (which the autoscale policy does not use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterLoad {
    /// Memory, maxmemory and operations per second, as the autoscale policy takes them.
    pub load: ShardLoad,
    /// Keys in database 0 (`INFO keyspace`), the only database a cluster has.
    pub keys: u64,
}

/// Asks every master for its load: a cluster's in the planner's shard order, a Sentinel
/// group's one master.
///
/// # Errors
/// [`ClusterError`] when the state cannot be read or a master does not answer.
pub async fn master_loads(platform: &LocalPlatform) -> Result<Vec<MasterLoad>, ClusterError> {
    let state = platform
        .dir()
        .load()
        .map_err(|e| ClusterError::Platform(e.to_string()))?;
    let masters: Vec<NodeAddr> = match state {
        Some(state) if state.spec.is_sentinel() => group_master(&state).await.into_iter().collect(),
        _ => {
            let nodes = platform.nodes().await?;
            let observed = observe(&nodes, Timeouts::default(), None).await;
            observed.shards().into_iter().map(|s| s.master).collect()
        }
    };
    let mut loads = Vec::new();
    for master in masters {
        let mut client = NodeClient::connect(&master, Timeouts::default()).await?;
        let memory = client.info("memory").await?;
        let stats = client.info("stats").await?;
        let keyspace = client.info("keyspace").await?;
        loads.push(MasterLoad {
            load: ShardLoad {
                master: master.to_string(),
                used_memory: memory.get_u64("used_memory").unwrap_or(0),
                maxmemory: memory.get_u64("maxmemory").unwrap_or(0),
                ops_per_sec: stats.get_u64("instantaneous_ops_per_sec").unwrap_or(0),
            },
            keys: keyspace.get("db0").map_or(0, db_keys),
        });
    }
    Ok(loads)
}

/// A Sentinel group's one master: the data node that says `role:master` (none while a
/// failover is under way).
async fn group_master(state: &crate::state::State) -> Option<NodeAddr> {
    for node in state.nodes.iter().filter(|n| !n.sentinel) {
        let addr = crate::supervisor::local_addr(node.port);
        let Ok(mut client) = NodeClient::connect(&addr, Timeouts::default()).await else {
            continue;
        };
        if let Ok(info) = client.info("replication").await
            && info.get("role") == Some("master")
        {
            return Some(addr);
        }
    }
    None
}

/// `keys=N` out of an `INFO keyspace` line such as `keys=12,expires=0,avg_ttl=0`.
fn db_keys(line: &str) -> u64 {
    line.split(',')
        .find_map(|field| field.strip_prefix("keys="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::db_keys;

    #[test]
    fn the_key_count_is_read_from_the_keyspace_line() {
        assert_eq!(db_keys("keys=12,expires=0,avg_ttl=0"), 12);
        assert_eq!(db_keys("expires=0"), 0);
    }
}
