//! Reading the clusters under the state root: which there are, their shape, health, memory,
//! load and the operation in progress, each through the same library calls as `cinnabar
//! status --json` and the autoscaler.
//!
//! Read-only: nothing here starts, stops or changes a node.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cinnabar_cluster::Journal as _;
use cinnabar_local::load::LatencyHistogram;
use cinnabar_local::{LocalPlatform, StateDir, StatusReport};
use serde::Serialize;

use crate::error::ApiError;

/// A cluster's name is its directory's name under the root: short, lower case, and safe in a
/// path and a URL.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && name != "new";
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid cluster name {name:?}: 1 to 40 of a-z, 0-9 and '-', not starting with '-', \
             not 'new'"
        )))
    }
}

/// The directory of cluster `name`, which must exist and hold a cluster.
pub fn dir_of(root: &Path, name: &str) -> Result<PathBuf, ApiError> {
    check_name(name)?;
    let dir = root.join(name);
    if dir.join("cinnabar.json").is_file() {
        Ok(dir)
    } else {
        Err(ApiError::NotFound(format!("no cluster named {name}")))
    }
}

/// The names of the clusters under `root`: directories holding a state file, sorted.
pub fn names(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("cinnabar.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| check_name(name).is_ok())
        .collect();
    names.sort();
    names
}

/// One line of the cluster list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The cluster's name (its directory under the root).
    pub name: String,
    /// `cluster` or `sentinel`.
    pub topology: String,
    /// Shards.
    pub masters: u16,
    /// Replicas per shard.
    pub replicas: u16,
    /// `maxmemory` per node as configured (`256mb`).
    pub maxmemory: String,
    /// Where clients connect.
    pub endpoint: String,
    /// `starting`, `ready`, `stopping` or `stopped`.
    pub phase: String,
    /// The `cinnabar status` verdict.
    pub healthy: bool,
    /// The verdict in words.
    pub verdict: String,
    /// Data nodes, and how many of them are `ok`.
    pub nodes: usize,
    /// Nodes whose health is `ok`.
    pub nodes_ok: usize,
    /// `used_memory` summed over the masters, bytes (over every node when the masters could not
    /// be asked).
    pub used_memory: u64,
    /// `maxmemory` summed over the masters, bytes (0: unlimited or unknown).
    pub maxmemory_bytes: u64,
    /// Operations per second over the masters (`null` when they could not be asked).
    pub ops_per_sec: Option<u64>,
    /// Keys over the masters (`null` when they could not be asked).
    pub keys: Option<u64>,
    /// The journaled operation in progress (`cinnabar resume` would continue it), if any.
    pub operation: Option<String>,
}

/// One cluster in full: the summary and the `cinnabar status --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// As in the list.
    #[serde(flatten)]
    pub summary: Summary,
    /// Exactly what `cinnabar status --json` prints for this cluster.
    pub status: StatusReport,
}

/// The load of one cluster now, for the live chart.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// When it was read, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Operations per second over the masters.
    pub ops_per_sec: u64,
    /// `used_memory` over the masters, bytes.
    pub used_memory: u64,
    /// `maxmemory` over the masters, bytes (0: unlimited).
    pub maxmemory: u64,
    /// Keys over the masters.
    pub keys: u64,
    /// Per master, in shard order.
    pub masters: Vec<MasterMetrics>,
    /// Requests the proxy answered since the previous reading (by anyone) of this cluster's
    /// metrics; `null` on the first reading or without a proxy.
    pub requests: Option<u64>,
    /// Their median latency at the proxy, µs (a histogram bucket's bound).
    pub latency_p50_us: Option<u64>,
    /// Their 99th-percentile latency at the proxy, µs.
    pub latency_p99_us: Option<u64>,
    /// The proxy's cumulative histogram now, kept to compute the next window.
    #[serde(skip)]
    pub latency: Option<LatencyHistogram>,
}

/// One master in [`Metrics`].
#[derive(Debug, Clone, Serialize)]
pub struct MasterMetrics {
    /// `host:port`.
    pub address: String,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes.
    pub maxmemory: u64,
    /// Keys.
    pub keys: u64,
}

/// The load of cluster `dir` now.
///
/// # Errors
/// [`ApiError::Internal`] when a master does not answer or the state is unreadable.
pub async fn metrics(dir: &Path) -> Result<Metrics, ApiError> {
    let platform = LocalPlatform::open(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
    let loads = cinnabar_local::load::master_loads(&platform)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let masters: Vec<MasterMetrics> = loads
        .into_iter()
        .map(|m| MasterMetrics {
            address: m.load.master,
            ops_per_sec: m.load.ops_per_sec,
            used_memory: m.load.used_memory,
            maxmemory: m.load.maxmemory,
            keys: m.keys,
        })
        .collect();
    let admin = StateDir::open(dir)
        .ok()
        .and_then(|d| d.load().ok().flatten())
        .and_then(|state| state.spec.admin_port())
        .map(|port| std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
    // A blocking read with short timeouts: keep it off the runtime's workers.
    let latency = match admin {
        Some(admin) => tokio::task::spawn_blocking(move || LatencyHistogram::read(admin))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    Ok(Metrics {
        requests: None,
        latency_p50_us: None,
        latency_p99_us: None,
        latency,
        at_ms: now_ms(),
        ops_per_sec: masters.iter().map(|m| m.ops_per_sec).sum(),
        used_memory: masters.iter().map(|m| m.used_memory).sum(),
        maxmemory: masters.iter().map(|m| m.maxmemory).sum(),
        keys: masters.iter().map(|m| m.keys).sum(),
        masters,
    })
}

/// Cluster `name` in full.
///
/// # Errors
/// [`ApiError::NotFound`] when there is no such cluster; [`ApiError::Internal`] when its state
/// cannot be read.
pub async fn detail(root: &Path, name: &str) -> Result<Detail, ApiError> {
    let dir = dir_of(root, name)?;
    let status = cinnabar_local::status(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let state = StateDir::open(&dir)
        .and_then(|d| d.load())
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no cluster named {name}")))?;
    // A stopped cluster has nobody to ask; its load is unknown rather than an error.
    let load = if status.phase == "stopped" {
        None
    } else {
        metrics(&dir).await.ok()
    };
    let nodes_ok = status.nodes.iter().filter(|n| n.health == "ok").count();
    let summary = Summary {
        name: name.to_owned(),
        topology: status.topology.clone(),
        masters: state.spec.masters,
        replicas: state.spec.replicas,
        maxmemory: state.spec.maxmemory.clone(),
        endpoint: status.endpoint.clone(),
        phase: status.phase.clone(),
        healthy: status.healthy,
        verdict: status.verdict.clone(),
        nodes: status.nodes.len(),
        nodes_ok,
        // Over the masters when they answered, to compare with their maxmemory.
        used_memory: load.as_ref().map_or_else(
            || status.nodes.iter().filter_map(|n| n.memory_bytes).sum(),
            |l| l.used_memory,
        ),
        maxmemory_bytes: load.as_ref().map_or(0, |l| l.maxmemory),
        ops_per_sec: load.as_ref().map(|l| l.ops_per_sec),
        keys: load.as_ref().map(|l| l.keys),
        operation: journaled_operation(&dir),
    };
    Ok(Detail { summary, status })
}

/// The operation a killed or running `cinnabar` command left journaled in `dir`, in words.
fn journaled_operation(dir: &Path) -> Option<String> {
    let journal = cinnabar_cluster::FileJournal::new(dir.join("operation.json"));
    if let Ok(Some(entry)) = journal.load() {
        return Some(entry.to_string());
    }
    cinnabar_local::group::pending(dir)
        .ok()
        .flatten()
        .map(|op| op.to_string())
}

/// Every cluster's summary.
pub async fn list(root: &Path) -> Vec<Summary> {
    let mut out = Vec::new();
    for name in names(root) {
        match detail(root, &name).await {
            Ok(d) => out.push(d.summary),
            Err(e) => tracing::warn!("cluster {name}: {e}"),
        }
    }
    out
}

/// One failover drill's report folder, named by when it started.
#[derive(Debug, Clone, Serialize)]
pub struct DrillEntry {
    /// The folder's name: when it started, e.g. `20261205T193015123Z`.
    pub id: String,
    /// `passed`/`failed` from the report, when it is complete.
    pub verdict: Option<String>,
    /// Whether the timeline picture exists.
    pub timeline: bool,
}

/// Where the console keeps a cluster's drill reports.
pub fn drills_dir(dir: &Path) -> PathBuf {
    dir.join("drills")
}

/// The drill reports of cluster `dir`, newest first.
pub fn drills(dir: &Path) -> Vec<DrillEntry> {
    let Ok(entries) = std::fs::read_dir(drills_dir(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<DrillEntry> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id = e.file_name().into_string().ok()?;
            let path = e.path();
            let verdict = std::fs::read_to_string(path.join("report.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|report| verdict_of(&report));
            Some(DrillEntry {
                id,
                verdict,
                timeline: path.join("timeline.svg").is_file(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.id.cmp(&a.id));
    out
}

/// The verdict field of a drill report, whatever its exact shape (`passed: bool` or a string).
fn verdict_of(report: &serde_json::Value) -> Option<String> {
    let verdict = report.get("verdict")?;
    if let Some(passed) = verdict.get("passed").and_then(serde_json::Value::as_bool) {
        return Some(if passed { "passed" } else { "failed" }.to_owned());
    }
    verdict.as_str().map(str::to_owned).or_else(|| {
        verdict
            .as_bool()
            .map(|p| if p { "passed" } else { "failed" }.to_owned())
    })
}

/// A drill report id is a folder name the console made: refuse anything else before it
/// reaches a path.
pub fn check_drill_id(id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no drill report {id:?}")))
    }
}

/// One refusal from the cluster proxy's audit trail, without its keys (the page shows who was
/// refused what, not which data they aimed at).
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// UTC, RFC 3339.
    pub time: String,
    /// The client's address.
    pub client: String,
    /// The proxy user.
    pub user: String,
    /// The command (and subcommand).
    pub command: String,
    /// `denied` or `auth_failed`.
    pub outcome: String,
    /// The error the client got.
    pub error: Option<String>,
}

/// How much of the end of the proxy's audit file is read for recent refusals.
const AUDIT_TAIL_BYTES: u64 = 256 * 1024;

/// The last `limit` refusals (denied commands, failed logins) in the audit trail the proxy of
/// `cinnabar up` writes to `DIR/audit.jsonl`, newest first.
pub fn refusals(dir: &Path, limit: usize) -> Vec<Refusal> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(dir.join("audit.jsonl")) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(AUDIT_TAIL_BYTES);
    let mut text = String::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    let field = |line: &serde_json::Value, name: &str| {
        line.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| matches!(line["outcome"].as_str(), Some("denied" | "auth_failed")))
        .take(limit)
        .map(|line| Refusal {
            time: field(&line, "time").unwrap_or_default(),
            client: field(&line, "client").unwrap_or_default(),
            user: field(&line, "user").unwrap_or_default(),
            command: match field(&line, "subcommand") {
                Some(sub) => format!("{} {sub}", field(&line, "command").unwrap_or_default()),
                None => field(&line, "command").unwrap_or_default(),
            },
            outcome: field(&line, "outcome").unwrap_or_default(),
            error: field(&line, "error"),
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_come_newest_first_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        let line = |user: &str, outcome: &str| {
            format!(
                "{{\"time\":\"t\",\"client\":\"c\",\"user\":\"{user}\",\"command\":\"FLUSHALL\",\
                 \"subcommand\":null,\"key_count\":1,\"keys\":[\"secret-key\"],\"targets\":[],\
                 \"outcome\":\"{outcome}\",\"error\":\"NOPERM\",\"latency_us\":1}}\n"
            )
        };
        let text = [
            line("a", "denied"),
            line("b", "ok"),
            line("c", "auth_failed"),
        ]
        .concat();
        std::fs::write(dir.path().join("audit.jsonl"), text).unwrap();
        let found = refusals(dir.path(), 10);
        let users: Vec<&str> = found.iter().map(|r| r.user.as_str()).collect();
        assert_eq!(users, ["c", "a"]);
        assert!(
            !serde_json::to_string(&found)
                .unwrap()
                .contains("secret-key")
        );
    }

    #[test]
    fn names_are_path_and_url_safe() {
        assert!(check_name("orders-1").is_ok());
        for bad in ["", "Orders", "../x", "a/b", "-x", "new", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_drill_id("20261205T193015Z").is_ok());
        assert!(check_drill_id("../x").is_err());
    }
}
