//! Taking a backup: one RDB per shard over replication, uploaded as it arrives, then the
//! manifest.
//!
//! Decisions:
//! - Each shard's RDB is read from a replica whose link to its master is up when there is one,
//!   so the master never forks; the manifest records which node and role were read. A lone
//!   master is read directly (it forks, as for `BGSAVE`). The same holds for a server that is
//!   not a cluster node (a Sentinel group's master or replica, a standalone master with
//!   replicas): its online replicas come from `INFO replication`, whichever node was named.
//! - `REPLCONF rdb-only` keeps the source from treating us as a replica afterwards; the RDB is
//!   checked by the engine's reader while it uploads (a truncated or corrupted transfer fails
//!   the backup instead of storing it).
//! - Shards are read in parallel; each RDB is a consistent snapshot of its shard, as with any
//!   Redis Cluster backup (there is no cluster-wide instant).
//! - Any failure aborts the uploads, deletes the objects already written, and writes no
//!   manifest; the source is only ever read.

use std::thread;

use cinnabar_cluster::topology::parse_cluster_nodes;
use cinnabar_replication::client::{
    Auth, ClientOptions, Connected, ReplicationClient, ReplicationError,
};
use cinnabar_replication::verify::Endpoint;
use cinnabar_replication::{Event, EventSink, SinkError, ValuePieces};

use crate::error::BackupError;
use crate::manifest::{FORMAT, Manifest, ShardBackup, check_name, now_ms, rfc3339};
use crate::store::Store;

/// What to back up and what to call it.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Any node of the cluster (or the standalone server), with credentials.
    pub source: Endpoint,
    /// The cluster's name, recorded in the manifest and used for default backup names.
    pub cluster: String,
    /// The backup's name; default `<cluster>-<UTC time>`.
    pub name: Option<String>,
}

/// One shard as found before the backup.
#[derive(Debug, Clone)]
pub(crate) struct ShardSource {
    pub(crate) slots: Vec<[u16; 2]>,
    pub(crate) master: String,
    pub(crate) read_from: String,
    pub(crate) read_role: &'static str,
    pub(crate) used_memory: u64,
    pub(crate) redis_version: String,
}

/// The shards of the source and where to read each, in slot order; whether it is a cluster.
///
/// # Errors
/// [`BackupError::Source`] when the source cannot be read or is not serving every slot.
pub(crate) fn find_shards(source: &Endpoint) -> Result<(Vec<ShardSource>, bool), BackupError> {
    let source_error = |addr: &str, message: String| BackupError::Source {
        addr: addr.to_owned(),
        message,
    };
    // `cluster_enabled` rather than `redis_mode`: Valkey 8 calls that field `server_mode`.
    let cluster_info = info(source, &source.addr, "cluster")?;
    let cluster_mode = field(&cluster_info, "cluster_enabled").as_deref() == Some("1");
    if !cluster_mode {
        let (master, read_from, read_role) = standalone_read_point(source)?;
        let (used_memory, redis_version) = memory_and_version(source, &master)?;
        return Ok((
            vec![ShardSource {
                slots: vec![[0, 16383]],
                master,
                read_from,
                read_role,
                used_memory,
                redis_version,
            }],
            false,
        ));
    }
    let text: String = query(source, &source.addr, redis::cmd("CLUSTER").arg("NODES"))?;
    let mut topology =
        parse_cluster_nodes(&text).map_err(|e| source_error(&source.addr, e.to_string()))?;
    if let Some((host, _)) = source.addr.rsplit_once(':') {
        topology.fill_myself_host(host.trim_matches(['[', ']']));
    }
    let mut shards = Vec::new();
    let mut covered = 0usize;
    for master in topology.masters().filter(|m| !m.slots.is_empty()) {
        let Some(master_addr) = master.addr.as_ref().map(ToString::to_string) else {
            return Err(source_error(
                &source.addr,
                format!("master {} has no address in CLUSTER NODES", master.id),
            ));
        };
        if master.flags.fail {
            return Err(source_error(
                &master_addr,
                "the master is marked failed: back up once the cluster is healthy".to_owned(),
            ));
        }
        let mut slots: Vec<[u16; 2]> = master.slots.iter().map(|r| [r.start, r.end]).collect();
        slots.sort_unstable();
        covered += master
            .slots
            .iter()
            .map(|r| usize::from(r.end - r.start) + 1)
            .sum::<usize>();
        let replica = topology
            .replicas_of(&master.id)
            .filter(|r| !r.flags.fail && !r.flags.pfail)
            .filter_map(|r| r.addr.as_ref().map(ToString::to_string))
            .find(|addr| {
                info(source, addr, "replication")
                    .is_ok_and(|i| field(&i, "master_link_status").as_deref() == Some("up"))
            });
        let (used_memory, redis_version) = memory_and_version(source, &master_addr)?;
        let (read_from, read_role) = match replica {
            Some(addr) => (addr, "replica"),
            None => (master_addr.clone(), "master"),
        };
        shards.push(ShardSource {
            slots,
            master: master_addr,
            read_from,
            read_role,
            used_memory,
            redis_version,
        });
    }
    if covered != 16384 {
        return Err(source_error(
            &source.addr,
            format!(
                "the cluster serves {covered} of 16384 slots: back up once every slot is served"
            ),
        ));
    }
    shards.sort_by_key(|s| s.slots[0][0]);
    Ok((shards, true))
}

/// Where to read a server that is not a cluster node (a standalone master, or a Sentinel
/// group's master or replica): its master, the node to read and that node's role.
///
/// As for a cluster's shards, a replica whose link is up is read rather than the master, so
/// the master never forks. A named replica whose link is down holds an old copy (right after
/// a failover, or cut off), so the read point is then chosen among its master's replicas, as
/// if the master had been named; the backup fails when that master does not answer.
///
/// # Errors
/// [`BackupError::Source`] when the source, or the master a cut-off replica names, cannot
/// be read.
fn standalone_read_point(source: &Endpoint) -> Result<(String, String, &'static str), BackupError> {
    let replication = info(source, &source.addr, "replication")?;
    if field(&replication, "role").as_deref() != Some("slave") {
        return Ok(master_read_point(source, &source.addr, &replication));
    }
    let master = match (
        field(&replication, "master_host"),
        field(&replication, "master_port"),
    ) {
        (Some(host), Some(port)) => join_host_port(&host, &port),
        _ => {
            return Err(BackupError::Source {
                addr: source.addr.clone(),
                message: "a replica that names no master in INFO replication".to_owned(),
            });
        }
    };
    if link_up(&replication) {
        return Ok((master, source.addr.clone(), "replica"));
    }
    let master_replication = info(source, &master, "replication")?;
    Ok(master_read_point(source, &master, &master_replication))
}

/// A master's read point: the first of its online replicas whose link is up, else itself.
fn master_read_point(
    source: &Endpoint,
    master: &str,
    replication: &str,
) -> (String, String, &'static str) {
    let replica = replicas_in(replication)
        .into_iter()
        .find(|addr| info(source, addr, "replication").is_ok_and(|i| link_up(&i)));
    match replica {
        Some(addr) => (master.to_owned(), addr, "replica"),
        None => (master.to_owned(), master.to_owned(), "master"),
    }
}

fn link_up(replication: &str) -> bool {
    field(replication, "master_link_status").as_deref() == Some("up")
}

/// The online replicas a master lists in `INFO replication` (`slaveN:ip=…,port=…,state=online`).
fn replicas_in(replication: &str) -> Vec<String> {
    replication
        .lines()
        .filter(|line| {
            line.strip_prefix("slave")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        })
        .filter_map(|line| {
            let (_, fields) = line.split_once(':')?;
            let value = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            };
            if value("state")? != "online" {
                return None;
            }
            Some(join_host_port(value("ip")?, value("port")?))
        })
        .collect()
}

/// `host:port`, with an IPv6 host in brackets.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Takes a backup of `request.source` into `store`; returns its manifest.
///
/// # Errors
/// [`BackupError::Source`] when a node cannot be read, [`BackupError::Store`] when the store
/// fails (after its retries), [`BackupError::Invalid`] for a bad or taken name.
pub fn backup(store: &Store, request: &BackupRequest) -> Result<Manifest, BackupError> {
    check_name("cluster name", &request.cluster)?;
    let started_ms = now_ms();
    let name = match &request.name {
        Some(name) => name.clone(),
        None => default_name(&request.cluster, started_ms),
    };
    check_name("backup name", &name)?;
    if store
        .get(&format!("backups/{name}/manifest.json"))?
        .is_some()
    {
        return Err(BackupError::Invalid(format!(
            "a backup named {name} exists already in {}",
            store.url()
        )));
    }
    let (shards, cluster_mode) = find_shards(&request.source)?;
    let auth = Auth {
        user: request.source.user.clone(),
        password: request.source.password.clone(),
    };
    let results: Vec<Result<ShardBackup, BackupError>> = thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                let auth = &auth;
                let name = &name;
                scope.spawn(move || take_shard(store, name, i, shard, auth))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BackupError::Invalid(
                        "a shard's backup thread panicked".to_owned(),
                    ))
                })
            })
            .collect()
    });
    let mut taken = Vec::with_capacity(results.len());
    let mut first_error = None;
    for result in results {
        match result {
            Ok(shard) => taken.push(shard),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        for shard in &taken {
            let _ = store.delete(&format!("backups/{name}/{}", shard.object));
        }
        return Err(error);
    }
    let redis_version = shards
        .iter()
        .map(|s| s.redis_version.clone())
        .min_by_key(|v| version_key(v))
        .unwrap_or_default();
    let manifest = Manifest {
        format: FORMAT,
        name: name.clone(),
        cluster: request.cluster.clone(),
        redis_version,
        cluster_mode,
        started_at: rfc3339(started_ms),
        finished_at: rfc3339(now_ms()),
        shards: taken,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    store.put(&format!("backups/{name}/manifest.json"), text)?;
    Ok(manifest)
}

fn take_shard(
    store: &Store,
    name: &str,
    index: usize,
    shard: &ShardSource,
    auth: &Auth,
) -> Result<ShardBackup, BackupError> {
    let ((), backup) = copy_shard(store, name, index, shard, auth, |connected, sink, copy| {
        let (replid, offset, summary) = connected.take_rdb(sink, copy)?;
        Ok(((), replid, offset, summary.version))
    })?;
    Ok(backup)
}

/// Streams one shard's RDB into `backups/<name>/shard-<index>.rdb`: connects to the node to
/// read, and lets `take` run the transfer (a one-off RDB, or the start of a continuous stream,
/// whose client it returns as `T`) with a key-counting sink and the upload as the copy.
/// `take` returns its `T`, the replication id, offset and RDB version.
pub(crate) fn copy_shard<T>(
    store: &Store,
    name: &str,
    index: usize,
    shard: &ShardSource,
    auth: &Auth,
    take: impl FnOnce(
        Connected,
        &mut dyn EventSink,
        &mut dyn std::io::Write,
    ) -> Result<(T, String, u64, u32), ReplicationError>,
) -> Result<(T, ShardBackup), BackupError> {
    let object = format!("shard-{index}.rdb");
    let mut writer = store.writer(&format!("backups/{name}/{object}"))?;
    let source_error = |e: &dyn std::fmt::Display| BackupError::Source {
        addr: shard.read_from.clone(),
        message: e.to_string(),
    };
    let connected = ReplicationClient::connect(&shard.read_from, auth, client_options())
        .map_err(|e| source_error(&e))?;
    let mut keys = 0u64;
    let mut count_keys = |event: Event| -> Result<(), SinkError> {
        if matches!(event, Event::KeyEnd { .. }) {
            keys += 1;
        }
        Ok(())
    };
    let taken_ms = now_ms();
    let (session, replid, offset, rdb_version) = match take(connected, &mut count_keys, &mut writer)
    {
        Ok(taken) => taken,
        Err(e) => return Err(writer.failure().unwrap_or_else(|| source_error(&e))),
    };
    let (sha256, bytes) = writer.finish()?;
    let backup = ShardBackup {
        object,
        slots: shard.slots.clone(),
        master: shard.master.clone(),
        read_from: shard.read_from.clone(),
        read_role: shard.read_role.to_owned(),
        replid,
        offset,
        taken_ms,
        rdb_version,
        keys,
        bytes,
        sha256,
        used_memory: shard.used_memory,
    };
    Ok((session, backup))
}

/// How backups read an RDB: checked whole (CRC-64, every structure), but a value the reader
/// captures is not also cut into batches nobody applies (half the reader's work).
pub(crate) fn client_options() -> ClientOptions {
    let mut options = ClientOptions::default();
    options.reader.value_pieces = ValuePieces::OnlyUncaptured;
    options
}

/// `<cluster>-<UTC time to the millisecond>`, sortable by time.
pub(crate) fn default_name(cluster: &str, ms: u64) -> String {
    let stamp = rfc3339(ms).replace(['-', ':'], "");
    format!("{cluster}-{stamp}")
}

/// Major, minor, patch of a `redis_version` for comparisons.
fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn query<T: redis::FromRedisValue>(
    endpoint: &Endpoint,
    addr: &str,
    command: &mut redis::Cmd,
) -> Result<T, BackupError> {
    let error = |e: redis::RedisError| BackupError::Source {
        addr: addr.to_owned(),
        message: e.to_string(),
    };
    let client = redis::Client::open(endpoint.url(addr)).map_err(error)?;
    let mut connection = client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .map_err(error)?;
    command.query(&mut connection).map_err(error)
}

pub(crate) fn info(endpoint: &Endpoint, addr: &str, section: &str) -> Result<String, BackupError> {
    query(endpoint, addr, redis::cmd("INFO").arg(section))
}

pub(crate) fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

fn memory_and_version(endpoint: &Endpoint, addr: &str) -> Result<(u64, String), BackupError> {
    let info: String = query(
        endpoint,
        addr,
        redis::cmd("INFO").arg("server").arg("memory"),
    )?;
    Ok((
        field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        field(&info, "redis_version").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_online_replicas_are_read_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
                    slave0:ip=10.0.0.2,port=6379,state=online,offset=10,lag=0\r\n\
                    slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=0\r\n\
                    slave2:ip=fd00::4,port=6379,state=online,offset=10,lag=1\r\n\
                    slave_read_repl_offset:10\r\nmaster_repl_offset:10\r\n";
        assert_eq!(
            replicas_in(info),
            vec!["10.0.0.2:6379".to_owned(), "[fd00::4]:6379".to_owned()]
        );
    }

    #[test]
    fn default_names_sort_by_time() {
        let early = default_name("orders", 1_796_490_245_123);
        let late = default_name("orders", 1_796_490_305_000);
        assert!(early < late, "{early} {late}");
        assert!(check_name("backup", &early).is_ok(), "{early}");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_key("7.0.15") < version_key("7.2.4"));
        assert!(version_key("7.10.0") > version_key("7.9.9"));
    }
}
