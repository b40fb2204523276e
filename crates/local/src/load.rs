//! What each master of a local cluster carries right now: memory used against `maxmemory`,
//! operations per second and keys, read from its `INFO`; and the latency its proxy's clients
//! see (the admin listener's histogram). Shared by the autoscaler (which decides on it), the
//! migration report and the web console (which charts it).
//!
//! Read-only: it never changes a node, and a master that does not answer is an error for the
//! caller to show, not something to repair here.

use std::net::SocketAddr;

use cinnabar_cluster::autoscale::{ShardLoad, read_loads};
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

/// Asks every master for its load: a cluster's masters that serve slots (through the
/// autoscaler's own reading, `cinnabar_cluster::autoscale::read_loads`), or a Sentinel group's
/// one master; then each for its key count.
///
/// # Errors
/// [`ClusterError`] when the state cannot be read or a master does not answer.
pub async fn master_loads(platform: &LocalPlatform) -> Result<Vec<MasterLoad>, ClusterError> {
    let state = platform
        .dir()
        .load()
        .map_err(|e| ClusterError::Platform(e.to_string()))?;
    let loads = match state {
        Some(state) if state.spec.is_sentinel() => match group_master(&state).await {
            Some(master) => vec![group_load(&master).await?],
            None => Vec::new(),
        },
        _ => {
            let nodes = platform.nodes().await?;
            let observed = observe(&nodes, Timeouts::default(), None).await;
            read_loads(&observed, Timeouts::default(), None).await?
        }
    };
    let mut out = Vec::new();
    for load in loads {
        let master: NodeAddr = load
            .master
            .parse()
            .map_err(|e| ClusterError::Platform(format!("master {}: {e}", load.master)))?;
        let mut client = NodeClient::connect(&master, Timeouts::default()).await?;
        let keyspace = client.info("keyspace").await?;
        out.push(MasterLoad {
            load,
            keys: keyspace.get("db0").map_or(0, db_keys),
        });
    }
    Ok(out)
}

/// A Sentinel group master's memory and operations (it serves no slots, so the cluster
/// reading skips it).
async fn group_load(master: &NodeAddr) -> Result<ShardLoad, ClusterError> {
    let mut client = NodeClient::connect(master, Timeouts::default()).await?;
    let memory = client.info("memory").await?;
    let stats = client.info("stats").await?;
    Ok(ShardLoad {
        master: master.to_string(),
        used_memory: memory.get_u64("used_memory").unwrap_or(0),
        maxmemory: memory.get_u64("maxmemory").unwrap_or(0),
        ops_per_sec: stats.get_u64("instantaneous_ops_per_sec").unwrap_or(0),
    })
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

/// The proxy's cumulative request-latency histogram, from its admin listener's `/metrics`:
/// (upper bound in µs, `None` for +Inf; requests at or under it) per bucket. Two readings
/// subtracted give the latency clients saw in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram(pub Vec<(Option<u64>, u64)>);

impl LatencyHistogram {
    /// Reads `cinnabar_request_duration_seconds_bucket` from the proxy's admin listener (2 s
    /// timeouts; blocking: call it off an async runtime's workers). `None` when it does not
    /// answer.
    pub fn read(admin: SocketAddr) -> Option<LatencyHistogram> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect_timeout(&admin, METRICS_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(METRICS_TIMEOUT)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Self::parse(&text)
    }

    /// The histogram in a Prometheus text page.
    pub fn parse(text: &str) -> Option<LatencyHistogram> {
        let buckets = text
            .lines()
            .filter_map(|line| line.strip_prefix("cinnabar_request_duration_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let bound = match le {
                    "+Inf" => None,
                    seconds => Some((seconds.parse::<f64>().ok()? * 1e6).round() as u64),
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect::<Vec<_>>();
        (!buckets.is_empty()).then_some(LatencyHistogram(buckets))
    }

    /// What was added since `earlier`.
    #[must_use]
    pub fn minus(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(le, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0, |(_, c)| *c);
                    (*le, count.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, c)| *c)
    }

    /// The bucket bound at quantile `q` (cumulative buckets); `None` without requests or when
    /// it falls in the unbounded bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        self.0
            .iter()
            .find(|(_, c)| *c >= rank)
            .and_then(|(le, _)| *le)
    }
}

/// How long a `/metrics` read may take.
const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `keys=N` out of an `INFO keyspace` line such as `keys=12,expires=0,avg_ttl=0`.
fn db_keys(line: &str) -> u64 {
    line.split(',')
        .find_map(|field| field.strip_prefix("keys="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{LatencyHistogram, db_keys};

    #[test]
    fn a_latency_window_is_the_difference_of_two_readings() {
        let page = |a: u64, b: u64, c: u64| {
            format!(
                "cinnabar_request_duration_seconds_bucket{{le=\"0.0001\"}} {a}\n\
                 cinnabar_request_duration_seconds_bucket{{le=\"0.001\"}} {b}\n\
                 cinnabar_request_duration_seconds_bucket{{le=\"+Inf\"}} {c}\n"
            )
        };
        let before = LatencyHistogram::parse(&page(10, 10, 10)).unwrap();
        let after = LatencyHistogram::parse(&page(100, 199, 200)).unwrap();
        let window = after.minus(&before);
        assert_eq!(window.count(), 190);
        assert_eq!(window.quantile(0.5), Some(1000));
        assert_eq!(window.quantile(0.99), Some(1000));
        assert_eq!(window.quantile(1.0), None);
        assert!(LatencyHistogram::parse("other 1").is_none());
    }

    #[test]
    fn the_key_count_is_read_from_the_keyspace_line() {
        assert_eq!(db_keys("keys=12,expires=0,avg_ttl=0"), 12);
        assert_eq!(db_keys("expires=0"), 0);
    }
}
