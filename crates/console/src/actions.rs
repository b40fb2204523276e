//! Each console action as the `cinnabar` command line it runs: create is `up --detach`, scale
//! is `scale`, and so on, with the request checked first the way the CLI checks it
//! (`Supervisor::preflight` for a new cluster), so a bad request is refused at once with the
//! CLI's own message instead of failing later in the background.
//!
//! Builds arguments only: running them is `jobs`, reading results is `clusters`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cinnabar_local::spec::Topology;
use cinnabar_local::{SpecOverrides, Supervisor, UpOptions};
use serde::Deserialize;

use crate::clusters::check_name;
use crate::error::ApiError;

/// `POST /api/v1/clusters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The cluster's name: its directory under the root.
    pub name: String,
    /// `cluster` (default) or `sentinel`.
    #[serde(default)]
    pub topology: Option<String>,
    /// Shards (default 3; a Sentinel group has 1).
    #[serde(default)]
    pub masters: Option<u16>,
    /// Replicas per shard (default 1; 2 for a Sentinel group).
    #[serde(default)]
    pub replicas: Option<u16>,
    /// Memory limit per node, e.g. `256mb` (default 256mb; `0` = none).
    #[serde(default)]
    pub maxmemory: Option<String>,
    /// Eviction policy (default `allkeys-lru`).
    #[serde(default)]
    pub maxmemory_policy: Option<String>,
}

/// `POST …/scale`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Shards wanted.
    #[serde(default)]
    pub masters: Option<u16>,
    /// Replicas per shard wanted.
    #[serde(default)]
    pub replicas: Option<u16>,
}

/// `POST …/failover`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The shard whose master steps down (default 0).
    #[serde(default)]
    pub shard: usize,
}

/// `POST …/drills`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// The shard whose master is failed (default 0).
    #[serde(default)]
    pub shard: usize,
    /// `kill` (default) or `pause`.
    #[serde(default)]
    pub fault: Option<String>,
    /// Least time the workload runs, seconds (default 10, at most 600).
    #[serde(default)]
    pub duration_seconds: Option<u64>,
}

/// Where new clusters' ports come from.
#[derive(Debug, Clone, Copy)]
pub struct PortRange {
    /// First port a cluster may use.
    pub first: u16,
    /// Last port a cluster may use.
    pub last: u16,
}

/// Ports left free after each cluster, so it can grow (scaling takes the ports above its
/// highest).
pub const GROWTH_PORTS: u16 = 8;

/// The `up --detach` arguments for `request` in `root`, checked as `cinnabar up` checks them.
///
/// # Errors
/// [`ApiError::BadRequest`] for an invalid request (the CLI's message); [`ApiError::Conflict`]
/// when the name is taken or no ports are free.
pub fn create_args(
    request: &CreateRequest,
    root: &Path,
    ports: PortRange,
    redis_server: Option<&Path>,
) -> Result<Vec<String>, ApiError> {
    check_name(&request.name)?;
    let dir = root.join(&request.name);
    if dir.exists() {
        return Err(ApiError::Conflict(format!(
            "a cluster named {} already exists",
            request.name
        )));
    }
    let topology = match request.topology.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<Topology>().map_err(ApiError::BadRequest)?),
    };
    let mut options = UpOptions {
        spec: SpecOverrides {
            masters: request.masters,
            replicas: request.replicas,
            maxmemory: request.maxmemory.clone().filter(|m| !m.is_empty()),
            maxmemory_policy: request.maxmemory_policy.clone().filter(|m| !m.is_empty()),
            topology,
            ..SpecOverrides::default()
        },
        dir: dir.clone(),
        redis_server: redis_server.map(Path::to_path_buf),
        form_timeout: Duration::from_secs(60),
    };
    let (spec, _) =
        Supervisor::preflight(&options).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let count = 1 + spec.node_count() + spec.sentinel_ports().count();
    let port = free_ports(root, ports, count)?;
    options.spec.port = Some(port);
    let mut args = vec![
        "up".to_owned(),
        "--detach".to_owned(),
        "--dir".to_owned(),
        path_arg(&dir),
        "--port".to_owned(),
        port.to_string(),
        "--topology".to_owned(),
        spec.topology.to_string(),
        "--masters".to_owned(),
        spec.masters.to_string(),
        "--replicas".to_owned(),
        spec.replicas.to_string(),
        "--maxmemory".to_owned(),
        spec.maxmemory.clone(),
        "--maxmemory-policy".to_owned(),
        spec.maxmemory_policy.clone(),
    ];
    if spec.is_sentinel() {
        args.extend(["--sentinels".to_owned(), spec.sentinels.to_string()]);
    }
    if let Some(server) = redis_server {
        args.extend(["--redis-server".to_owned(), path_arg(server)]);
    }
    Ok(args)
}

/// The first of `count` consecutive ports (each with its bus port) in `range`, above every
/// port the root's clusters use plus their growth room, and free right now.
fn free_ports(root: &Path, range: PortRange, count: usize) -> Result<u16, ApiError> {
    let used_above = crate::clusters::names(root)
        .iter()
        .filter_map(|name| {
            cinnabar_local::StateDir::open(&root.join(name))
                .ok()?
                .load()
                .ok()
                .flatten()
        })
        .filter_map(|state| {
            state
                .nodes
                .iter()
                .map(|n| n.port)
                .max()
                .map(|p| p.max(state.spec.port))
        })
        .max()
        .map(|highest| highest.saturating_add(1 + GROWTH_PORTS));
    let count_u16 = u16::try_from(count).unwrap_or(u16::MAX);
    let mut first = used_above.unwrap_or(range.first).max(range.first);
    while u32::from(first) + u32::from(count_u16) + u32::from(GROWTH_PORTS)
        <= u32::from(range.last) + 1
    {
        if cinnabar_local::ports::ensure_node_ports_free(first, count + usize::from(GROWTH_PORTS))
            .is_ok()
        {
            return Ok(first);
        }
        first += 1;
    }
    Err(ApiError::Conflict(format!(
        "no {count} free consecutive ports (and {GROWTH_PORTS} to grow) left in {}-{}",
        range.first, range.last
    )))
}

/// `scale` for cluster `dir`.
///
/// # Errors
/// [`ApiError::BadRequest`] when neither number is given or one is 0 masters.
pub fn scale_args(request: &ScaleRequest, dir: &Path) -> Result<Vec<String>, ApiError> {
    if request.masters.is_none() && request.replicas.is_none() {
        return Err(ApiError::BadRequest(
            "give masters, replicas or both".to_owned(),
        ));
    }
    if request.masters == Some(0) {
        return Err(ApiError::BadRequest(
            "a cluster needs at least one master".to_owned(),
        ));
    }
    let mut args = vec!["scale".to_owned()];
    if let Some(masters) = request.masters {
        args.extend(["--masters".to_owned(), masters.to_string()]);
    }
    if let Some(replicas) = request.replicas {
        args.extend(["--replicas".to_owned(), replicas.to_string()]);
    }
    args.extend(common(dir));
    Ok(args)
}

/// `failover` for cluster `dir`.
pub fn failover_args(request: &FailoverRequest, dir: &Path) -> Vec<String> {
    let mut args = vec![
        "failover".to_owned(),
        "--shard".to_owned(),
        request.shard.to_string(),
    ];
    args.extend(common(dir));
    args
}

/// `drill failover` for cluster `dir`, writing its report into `report`.
///
/// # Errors
/// [`ApiError::BadRequest`] for an unknown fault or a duration outside 1–600 s.
pub fn drill_args(
    request: &DrillRequest,
    dir: &Path,
    report: &Path,
) -> Result<Vec<String>, ApiError> {
    let fault = match request.fault.as_deref() {
        None | Some("kill") => "--kill",
        Some("pause") => "--pause",
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown fault {other:?} (kill or pause)"
            )));
        }
    };
    let seconds = request.duration_seconds.unwrap_or(10);
    if !(1..=600).contains(&seconds) {
        return Err(ApiError::BadRequest(
            "duration_seconds must be 1 to 600".to_owned(),
        ));
    }
    Ok(vec![
        "drill".to_owned(),
        "failover".to_owned(),
        fault.to_owned(),
        "--shard".to_owned(),
        request.shard.to_string(),
        "--duration".to_owned(),
        format!("{seconds}s"),
        "--dir".to_owned(),
        path_arg(dir),
        "--report".to_owned(),
        path_arg(report),
        "--json".to_owned(),
    ])
}

/// The store folder of cluster `name`'s backups.
pub fn store_of(store: &str, name: &str) -> String {
    format!("{}/{name}", store.trim_end_matches('/'))
}

/// `backup` of cluster `dir` into `store/name`.
pub fn backup_args(dir: &Path, store: &str, name: &str) -> Vec<String> {
    vec![
        "backup".to_owned(),
        "--dir".to_owned(),
        path_arg(dir),
        "--to".to_owned(),
        store_of(store, name),
        "--json".to_owned(),
    ]
}

/// `backup list` of cluster `name`'s backups (a read, run as the CLI runs it).
pub fn backup_list_args(store: &str, name: &str) -> Vec<String> {
    vec![
        "backup".to_owned(),
        "list".to_owned(),
        "--from".to_owned(),
        store_of(store, name),
        "--json".to_owned(),
    ]
}

/// `restart --rolling` of cluster `dir`.
pub fn restart_args(dir: &Path) -> Vec<String> {
    let mut args = vec!["restart".to_owned(), "--rolling".to_owned()];
    args.extend(common(dir));
    args
}

/// `POST …/restore`: a backup of this cluster into a new cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The new cluster's name.
    pub name: String,
    /// The backup (default: the newest).
    #[serde(default)]
    pub backup: Option<String>,
    /// Shards of the new cluster (default 3; any number: keys are routed by slot).
    #[serde(default)]
    pub masters: Option<u16>,
    /// Replicas per shard (default 1).
    #[serde(default)]
    pub replicas: Option<u16>,
    /// Memory per node (default: the CLI's).
    #[serde(default)]
    pub maxmemory: Option<String>,
}

/// `restore --from store/source --dir ROOT/NAME …`, checked like a create (the new cluster is
/// made by `up --detach` inside the restore).
///
/// # Errors
/// As [`create_args`].
pub fn restore_args(
    request: &RestoreRequest,
    source: &str,
    store: &str,
    root: &Path,
    ports: PortRange,
    redis_server: Option<&Path>,
) -> Result<Vec<String>, ApiError> {
    let create = CreateRequest {
        name: request.name.clone(),
        topology: None,
        masters: request.masters,
        replicas: request.replicas,
        maxmemory: request.maxmemory.clone(),
        maxmemory_policy: None,
    };
    // The same checks and port choice as a create; the restore takes over from there.
    let up = create_args(&create, root, ports, redis_server)?;
    let value = |flag: &str| {
        up.iter()
            .position(|a| a == flag)
            .and_then(|i| up.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let mut args = vec![
        "restore".to_owned(),
        "--from".to_owned(),
        store_of(store, source),
        "--dir".to_owned(),
        value("--dir"),
        "--port".to_owned(),
        value("--port"),
        "--masters".to_owned(),
        value("--masters"),
        "--replicas".to_owned(),
        value("--replicas"),
        "--maxmemory".to_owned(),
        value("--maxmemory"),
        "--json".to_owned(),
    ];
    if let Some(backup) = request.backup.as_deref().filter(|b| !b.is_empty()) {
        if !backup
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(ApiError::BadRequest(format!(
                "invalid backup name {backup:?}"
            )));
        }
        args.extend(["--backup".to_owned(), backup.to_owned()]);
    }
    Ok(args)
}

/// `down --purge` of cluster `dir`.
pub fn delete_args(dir: &Path) -> Vec<String> {
    vec![
        "down".to_owned(),
        "--purge".to_owned(),
        "--dir".to_owned(),
        path_arg(dir),
    ]
}

/// The flags every planner operation takes.
fn common(dir: &Path) -> [String; 3] {
    ["--dir".to_owned(), path_arg(dir), "--json".to_owned()]
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// The default backup store: a folder beside the clusters, outside any cluster's directory so
/// `down --purge` keeps it.
pub fn default_store(root: &Path) -> String {
    let absolute: PathBuf =
        std::path::absolute(root.join(".backups")).unwrap_or_else(|_| root.join(".backups"));
    format!("file://{}", absolute.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_needs_a_shape_and_at_least_one_master() {
        let dir = Path::new("/r/a");
        let none = ScaleRequest {
            masters: None,
            replicas: None,
        };
        assert!(scale_args(&none, dir).is_err());
        let zero = ScaleRequest {
            masters: Some(0),
            replicas: None,
        };
        assert!(scale_args(&zero, dir).is_err());
        let four = ScaleRequest {
            masters: Some(4),
            replicas: None,
        };
        assert_eq!(
            scale_args(&four, dir).unwrap(),
            ["scale", "--masters", "4", "--dir", "/r/a", "--json"]
        );
    }

    #[test]
    fn a_drill_takes_a_known_fault_and_a_bounded_duration() {
        let dir = Path::new("/r/a");
        let report = Path::new("/r/a/drills/x");
        let bad = DrillRequest {
            fault: Some("crash".into()),
            ..DrillRequest::default()
        };
        assert!(drill_args(&bad, dir, report).is_err());
        let long = DrillRequest {
            duration_seconds: Some(601),
            ..DrillRequest::default()
        };
        assert!(drill_args(&long, dir, report).is_err());
        let args = drill_args(&DrillRequest::default(), dir, report).unwrap();
        assert!(args.contains(&"10s".to_owned()) && args.contains(&"--kill".to_owned()));
    }

    #[test]
    fn create_refuses_what_the_cli_refuses() {
        let root = tempfile::tempdir().unwrap();
        let range = PortRange {
            first: 30_000,
            last: 30_100,
        };
        let request = |masters, maxmemory: &str| CreateRequest {
            name: "a".into(),
            topology: None,
            masters: Some(masters),
            replicas: Some(1),
            maxmemory: Some(maxmemory.into()),
            maxmemory_policy: None,
        };
        assert!(matches!(
            create_args(&request(0, "64mb"), root.path(), range, None),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            create_args(&request(3, "lots"), root.path(), range, None),
            Err(ApiError::BadRequest(_))
        ));
        let bad_topology = CreateRequest {
            topology: Some("ring".into()),
            ..request(3, "64mb")
        };
        assert!(create_args(&bad_topology, root.path(), range, None).is_err());
    }
}
