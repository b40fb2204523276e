//! Restoring a backup into a Redis Cluster of any shape, optionally up to a point in time.
//!
//! Every shard's RDB is read from the store and written key by key through the engine's
//! applier, which routes each key by slot to the target's own masters (so 3 shards can be
//! restored into 5), with `RESTORE` payloads where the target's RDB version allows. With a time,
//! the archived commands of the base's generation are replayed up to it.
//!
//! Checked before anything is written: the target serves every slot, holds no keys (unless
//! forced), and its `maxmemory` over all masters can hold what the source used. A checksum
//! mismatch is found when the object has been read (the RDB's own CRC-64 catches corruption of
//! its content first): the report names the object, and the target holds a partial restore.

use std::thread;
use std::time::Instant;

use cinnabar_replication::apply::{Applier, ApplyOptions};
use cinnabar_replication::verify::Endpoint;
use cinnabar_replication::{Event, RdbReader};
use serde::Serialize;

use crate::archive::{decode_segment, has_generation, segments};
use crate::catalog;
use crate::error::BackupError;
use crate::manifest::{Manifest, ShardBackup, rfc3339};
use crate::store::Store;

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// This backup; default: the newest (that holds data from at or before `at_ms`).
    pub backup: Option<String>,
    /// Restore the state at this time (ms since the epoch): a base and its archive.
    pub at_ms: Option<u64>,
    /// Only backups of this cluster (default: any).
    pub cluster: Option<String>,
    /// Write into a target that holds keys already.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    /// The base backup.
    pub backup: String,
    /// The cluster it came from.
    pub cluster: String,
    /// Keys written from the RDBs.
    pub keys: u64,
    /// RDB bytes read.
    pub bytes: u64,
    /// Archived commands replayed.
    pub commands: u64,
    /// Wall-clock milliseconds.
    pub elapsed_ms: u64,
    /// The point restored to (RFC 3339): the requested time, or the base's snapshot time.
    pub restored_to: String,
    /// Per shard of the backup: the source offset restored to.
    pub shards: Vec<ShardRestored>,
}

/// One shard's part of a restore.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShardRestored {
    /// The shard's RDB object.
    pub object: String,
    /// Keys written from it.
    pub keys: u64,
    /// Commands replayed from the archive.
    pub commands: u64,
    /// The source offset its data reaches.
    pub offset: u64,
    /// When the last replayed command was received (RFC 3339), if any.
    pub last_command_at: Option<String>,
}

/// Picks the backup a request means.
///
/// # Errors
/// [`BackupError::NotFound`] when none fits.
pub fn choose(store: &Store, request: &RestoreRequest) -> Result<Manifest, BackupError> {
    if let Some(name) = &request.backup {
        let manifest = catalog::get(store, name)?;
        if let Some(at) = request.at_ms
            && manifest.taken_ms() > at
        {
            return Err(BackupError::NotFound(format!(
                "backup {name} holds data from {}, after the requested time {}",
                rfc3339(manifest.taken_ms()),
                rfc3339(at)
            )));
        }
        return Ok(manifest);
    }
    let candidates: Vec<Manifest> = catalog::list(store)?
        .into_iter()
        .filter(|m| request.cluster.as_ref().is_none_or(|c| *c == m.cluster))
        .collect();
    let chosen = match request.at_ms {
        None => candidates.into_iter().next_back(),
        Some(at) => candidates
            .into_iter()
            .rev()
            .filter(|m| m.taken_ms() <= at)
            .find(|m| has_generation(store, &m.cluster, &m.name).unwrap_or(false)),
    };
    chosen.ok_or_else(|| {
        BackupError::NotFound(match request.at_ms {
            None => format!("no complete backup in {}", store.url()),
            Some(at) => format!(
                "no backup with a continuous archive holds data from before {} in {} (cinnabar backup list shows what there is)",
                rfc3339(at),
                store.url()
            ),
        })
    })
}

/// Restores into the cluster `target` belongs to.
///
/// # Errors
/// [`BackupError::NotFound`], [`BackupError::TargetNotEmpty`], [`BackupError::Target`] (a
/// refusal or a capacity check), [`BackupError::Corrupt`], [`BackupError::Archive`] when the
/// archive does not reach the requested time.
pub fn restore(
    store: &Store,
    target: &Endpoint,
    request: &RestoreRequest,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let manifest = choose(store, request)?;
    let options = ApplyOptions {
        user: target.user.clone(),
        password: target.password.clone(),
        // A flush in the archive happened on the source at that time: replay it.
        allow_flush: true,
        ..ApplyOptions::default()
    };
    let mut applier = Applier::connect(&target.addr, options.clone())?;
    applier.check_slot_coverage()?;
    if !request.force {
        let keys = target_keys(target, &applier.masters())?;
        if keys > 0 {
            return Err(BackupError::TargetNotEmpty { keys });
        }
    }
    applier.check_capacity(manifest.used_memory())?;
    // The archive must reach the time for every shard before anything is written.
    let plans: Vec<Vec<String>> = match request.at_ms {
        Some(at) => manifest
            .shards
            .iter()
            .enumerate()
            .map(|(i, shard)| archive_plan(store, &manifest, i, shard, at))
            .collect::<Result<_, _>>()
            .map_err(|e| name_the_hole(store, &manifest, at, e))?,
        None => vec![Vec::new(); manifest.shards.len()],
    };
    drop(applier);
    let results: Vec<Result<ShardRestored, BackupError>> = thread::scope(|scope| {
        let handles: Vec<_> = manifest
            .shards
            .iter()
            .zip(&plans)
            .map(|(shard, plan)| {
                let (options, manifest) = (&options, &manifest);
                scope.spawn(move || {
                    restore_shard(store, target, options, manifest, shard, plan, request.at_ms)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BackupError::Invalid("a restore thread panicked".to_owned()))
                })
            })
            .collect()
    });
    let shards: Vec<ShardRestored> = results.into_iter().collect::<Result<_, _>>()?;
    Ok(RestoreReport {
        backup: manifest.name.clone(),
        cluster: manifest.cluster.clone(),
        keys: shards.iter().map(|s| s.keys).sum(),
        bytes: manifest.bytes(),
        commands: shards.iter().map(|s| s.commands).sum(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restored_to: rfc3339(request.at_ms.unwrap_or_else(|| manifest.taken_ms())),
        shards,
    })
}

/// An archive that stops short of `at` while a later base exists ended there (its stream or
/// store failed, and a new generation began with a fresh base): say so, with the times that can
/// be restored on either side, rather than suggest waiting.
fn name_the_hole(store: &Store, manifest: &Manifest, at: u64, error: BackupError) -> BackupError {
    let BackupError::Archive(message) = &error else {
        return error;
    };
    let next = catalog::list(store).ok().and_then(|all| {
        all.into_iter()
            .find(|m| m.cluster == manifest.cluster && m.taken_ms() > at)
    });
    match next {
        Some(next) if message.contains("reaches only") => BackupError::Archive(format!(
            "{}; the archive stopped there, and the next base, {}, holds data from {}: the time \
             in between cannot be restored (restore to the earlier time, or to the later one or \
             after)",
            message
                .split_once(": restore to")
                .map_or(message.as_str(), |(head, _)| head),
            next.name,
            rfc3339(next.taken_ms())
        )),
        _ => error,
    }
}

/// The segments to replay for shard `index` up to `at`, checked to chain from the base's offset
/// and to reach `at`.
fn archive_plan(
    store: &Store,
    manifest: &Manifest,
    index: usize,
    shard: &ShardBackup,
    at: u64,
) -> Result<Vec<String>, BackupError> {
    let mut plan = Vec::new();
    let mut expected = shard.offset;
    let mut reached_ms = shard.taken_ms;
    for path in segments(store, &manifest.cluster, &manifest.name, index)? {
        let start: u64 = path
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(".seg"))
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| BackupError::Format {
                path: path.clone(),
                message: "not named <start offset>.seg".to_owned(),
            })?;
        if start < expected {
            continue;
        }
        if start > expected {
            return Err(BackupError::Archive(format!(
                "the archive of shard {index} of {} has a gap: offsets {expected} to {start} are missing (it covers until {}); restore to that time or earlier",
                manifest.name,
                rfc3339(reached_ms)
            )));
        }
        let bytes = store.get(&path)?.ok_or_else(|| {
            BackupError::NotFound(format!("segment {path} disappeared while reading"))
        })?;
        let (header, _) = decode_segment(&path, &bytes)?;
        plan.push(path);
        expected = header.end;
        reached_ms = header.cut_ms;
        if reached_ms >= at {
            return Ok(plan);
        }
    }
    Err(BackupError::Archive(format!(
        "the archive of shard {index} of {} reaches only {} (requested {}): restore to that time or earlier, or wait for the archive to upload",
        manifest.name,
        rfc3339(reached_ms),
        rfc3339(at)
    )))
}

fn restore_shard(
    store: &Store,
    target: &Endpoint,
    options: &ApplyOptions,
    manifest: &Manifest,
    shard: &ShardBackup,
    plan: &[String],
    at_ms: Option<u64>,
) -> Result<ShardRestored, BackupError> {
    let mut applier = Applier::connect(&target.addr, options.clone())?;
    let object = format!("backups/{}/{}", manifest.name, shard.object);
    let mut reader = store.reader(&object)?;
    let mut keys = 0u64;
    let mut apply_error = None;
    let reader_options = applier.reader_options(shard.rdb_version);
    let read = {
        let mut sink = |event: Event| {
            let is_key = matches!(event, Event::KeyEnd { .. });
            match applier.apply_rdb_event(event) {
                Ok(()) => {
                    keys += u64::from(is_key);
                    Ok(())
                }
                Err(e) => {
                    let message = e.to_string();
                    apply_error = Some(e);
                    Err(message.into())
                }
            }
        };
        RdbReader::new(&mut reader, reader_options).read_all(&mut sink)
    };
    if let Some(error) = apply_error {
        return Err(error.into());
    }
    if let Err(e) = read {
        return Err(BackupError::Format {
            path: object,
            message: format!("the RDB cannot be read: {e}"),
        });
    }
    applier.flush()?;
    reader.verify(&shard.sha256, shard.bytes)?;
    let mut restored = ShardRestored {
        object: shard.object.clone(),
        keys,
        commands: 0,
        offset: shard.offset,
        last_command_at: None,
    };
    let Some(at) = at_ms else {
        return Ok(restored);
    };
    let mut transaction: Option<Vec<Vec<Vec<u8>>>> = None;
    'segments: for path in plan {
        let bytes = store
            .get(path)?
            .ok_or_else(|| BackupError::NotFound(format!("segment {path} disappeared")))?;
        let (_, records) = decode_segment(path, &bytes)?;
        for record in records {
            if record.offset <= restored.offset {
                continue;
            }
            if record.ms > at {
                break 'segments;
            }
            let name = record.args.first().map(|a| a.to_ascii_uppercase());
            match name.as_deref() {
                Some(b"MULTI") => transaction = Some(Vec::new()),
                Some(b"EXEC") => {
                    let commands = transaction.take().unwrap_or_default();
                    restored.commands += commands.len() as u64;
                    applier.apply_transaction(&commands, record.offset)?;
                }
                _ => match transaction.as_mut() {
                    Some(commands) => commands.push(record.args),
                    None => {
                        restored.commands += 1;
                        applier.apply_command(&record.args, record.offset)?;
                    }
                },
            }
            if transaction.is_none() {
                restored.offset = record.offset;
                restored.last_command_at = Some(rfc3339(record.ms));
            }
        }
    }
    applier.flush()?;
    Ok(restored)
}

/// Keys over the target's masters.
fn target_keys(target: &Endpoint, masters: &[String]) -> Result<u64, BackupError> {
    let mut total = 0;
    for addr in masters {
        let error = |e: redis::RedisError| BackupError::Source {
            addr: addr.clone(),
            message: e.to_string(),
        };
        let client = redis::Client::open(target.url(addr)).map_err(error)?;
        let mut connection = client
            .get_connection_with_timeout(std::time::Duration::from_secs(5))
            .map_err(error)?;
        let keys: u64 = redis::cmd("DBSIZE").query(&mut connection).map_err(error)?;
        total += keys;
    }
    Ok(total)
}
