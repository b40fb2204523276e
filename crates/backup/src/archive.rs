//! The continuous archive, for point-in-time recovery: every shard's replication stream,
//! uploaded in segments.
//!
//! A *generation* starts with a full resynchronisation per shard: its RDBs become an ordinary
//! backup (with a manifest, listed like any other) and its command streams are cut into
//! segments under `archive/<cluster>/<backup>/<shard>/<start offset>.seg`, every second or
//! 8 MiB by default. A new generation on a schedule bounds how much a restore must replay; the
//! old one stops once the new base is complete, so there is no moment without coverage.
//!
//! Decisions:
//! - A segment records each command with the wall-clock time the archiver received it (the
//!   replication stream carries no times) and the offset after it. A restore `--at T` replays
//!   the commands received at or before `T`. Since a master sends a write to its replicas only
//!   after applying it, a receive time is never earlier than the write: a restore to `T` never
//!   holds a write made after `T`, and may miss one acknowledged just before `T` that was still
//!   on its way (a replica's lag, a millisecond or two here). To be sure of a write whose
//!   acknowledgement time you know, restore to a moment a little later than it.
//! - Segments chain by offsets: each starts where the previous ended (PINGs included), so a
//!   missing segment is detected, never silently skipped. A segment ends only outside a
//!   `MULTI`/`EXEC` block.
//! - The offset acknowledged to the source is the end of the last uploaded segment, and after a
//!   broken connection (a failover, a restart) the stream resumes there with `PSYNC`. When the
//!   source can no longer continue (its backlog moved on), the generation ends and a new one
//!   starts with a fresh base.
//! - A quiet shard still uploads an empty segment every 10 s, so the archive shows how far its
//!   coverage reaches, and every second while another shard is written (a restore needs every
//!   shard to reach its time); every shard uploads one right after its base, so a generation
//!   is an archive's (and chosen by a restore to a later time) from its start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cinnabar_replication::checkpoint::Checkpoint;
use cinnabar_replication::client::{
    AppliedOffset, Auth, CommandSink, Flow, ItemKind, ReplicationClient, Start, StreamItem,
};
use cinnabar_replication::verify::Endpoint;
use cinnabar_replication::{Event, SinkError};
use serde::{Deserialize, Serialize};

use crate::error::BackupError;
use crate::manifest::{FORMAT, Manifest, ShardBackup, check_name, now_ms, rfc3339};
use crate::snapshot::{ShardSource, client_options, copy_shard, default_name, find_shards};
use crate::store::Store;

/// First line of every segment.
const SEGMENT_MAGIC: &[u8] = b"CINNABAR-SEGMENT 1\n";
/// A quiet shard's coverage is extended this often.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How the archive runs.
#[derive(Debug, Clone)]
pub struct ArchiveRequest {
    /// Any node of the cluster (or the standalone server), with credentials.
    pub source: Endpoint,
    /// The cluster's name (backups and archive folders carry it).
    pub cluster: String,
    /// A segment is cut at least this often while commands arrive.
    pub segment_every: Duration,
    /// … or once it holds this many bytes.
    pub segment_bytes: usize,
    /// A new generation (fresh base backup) this often; `None`: never.
    pub base_every: Option<Duration>,
}

impl ArchiveRequest {
    /// The defaults: a segment every second or 8 MiB, a new base every 24 hours.
    pub fn new(source: Endpoint, cluster: impl Into<String>) -> Self {
        Self {
            source,
            cluster: cluster.into(),
            segment_every: Duration::from_secs(1),
            segment_bytes: 8 * 1024 * 1024,
            base_every: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// What a segment's second line says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// The source offset the segment starts at (the previous one's end).
    pub start: u64,
    /// The source offset after its last byte.
    pub end: u64,
    /// The replication id of the stream.
    pub replid: String,
    /// The database current at `start`.
    pub db: u64,
    /// When it was cut (ms since the epoch): it holds every command received before then
    /// (from `start` on).
    pub cut_ms: u64,
    /// Commands in it.
    pub records: u64,
}

/// One archived command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the archiver received it (ms since the epoch).
    pub ms: u64,
    /// The source offset after it.
    pub offset: u64,
    /// The command and its arguments (`SELECT`, `MULTI` and `EXEC` included).
    pub args: Vec<Vec<u8>>,
}

/// Encodes a segment.
pub fn encode_segment(header: &SegmentHeader, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() + 256);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&serde_json::to_vec(header).unwrap_or_default());
    out.push(b'\n');
    out.extend_from_slice(records);
    out
}

/// Appends one record to a segment's body.
fn push_record(
    body: &mut Vec<u8>,
    ms: u64,
    offset: u64,
    args: impl ExactSizeIterator<Item = impl AsRef<[u8]>>,
) {
    body.extend_from_slice(&ms.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&u32::try_from(args.len()).unwrap_or(u32::MAX).to_le_bytes());
    for arg in args {
        let arg = arg.as_ref();
        body.extend_from_slice(&u32::try_from(arg.len()).unwrap_or(u32::MAX).to_le_bytes());
        body.extend_from_slice(arg);
    }
}

/// Decodes a segment read from `path`.
///
/// # Errors
/// [`BackupError::Format`] naming the path and what is wrong.
pub fn decode_segment(
    path: &str,
    bytes: &[u8],
) -> Result<(SegmentHeader, Vec<Record>), BackupError> {
    let bad = |message: &str| BackupError::Format {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let rest = bytes
        .strip_prefix(SEGMENT_MAGIC)
        .ok_or_else(|| bad("not an archive segment"))?;
    let line_end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header: SegmentHeader =
        serde_json::from_slice(&rest[..line_end]).map_err(|e| bad(&format!("header: {e}")))?;
    let mut cursor = Cursor {
        bytes: &rest[line_end + 1..],
    };
    let mut records = Vec::new();
    while !cursor.bytes.is_empty() {
        let record = (|| {
            let ms = cursor.u64()?;
            let offset = cursor.u64()?;
            let argc = cursor.u32()?;
            let mut args = Vec::with_capacity(argc.min(1024));
            for _ in 0..argc {
                let len = cursor.u32()?;
                args.push(cursor.take(len)?.to_vec());
            }
            Some(Record { ms, offset, args })
        })()
        .ok_or_else(|| bad("cut short inside a record"))?;
        records.push(record);
    }
    if records.len() as u64 != header.records {
        return Err(bad(&format!(
            "{} records, the header says {}",
            records.len(),
            header.records
        )));
    }
    Ok((header, records))
}

/// Reads little-endian fields off a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
}

/// The folder of one shard's segments in one generation.
pub(crate) fn shard_folder(cluster: &str, base: &str, shard: usize) -> String {
    format!("archive/{cluster}/{base}/{shard}")
}

/// The segment objects of a shard in a generation, sorted by start offset.
pub(crate) fn segments(
    store: &Store,
    cluster: &str,
    base: &str,
    shard: usize,
) -> Result<Vec<String>, BackupError> {
    Ok(store
        .list(&shard_folder(cluster, base, shard))?
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.ends_with(".seg"))
        .collect())
}

/// How far the archive of `base`'s generation reaches: the earliest, over its shards, of the
/// last segment's cut time (`None` when a shard has no segment).
///
/// # Errors
/// [`BackupError::Store`] or [`BackupError::Format`].
pub fn coverage(store: &Store, base: &Manifest) -> Result<Option<u64>, BackupError> {
    let mut reached: Option<u64> = None;
    for index in 0..base.shards.len() {
        let Some(last) = segments(store, &base.cluster, &base.name, index)?.pop() else {
            return Ok(None);
        };
        let bytes = store
            .get(&last)?
            .ok_or_else(|| BackupError::NotFound(format!("segment {last} disappeared")))?;
        let (header, _) = decode_segment(&last, &bytes)?;
        reached = Some(reached.map_or(header.cut_ms, |r| r.min(header.cut_ms)));
    }
    Ok(reached)
}

/// Whether `base` has an archive generation.
pub(crate) fn has_generation(
    store: &Store,
    cluster: &str,
    base: &str,
) -> Result<bool, BackupError> {
    Ok(!store.list(&format!("archive/{cluster}/{base}"))?.is_empty())
}

/// Deletes the generations whose base is not in `kept`; returns how many segments went.
pub(crate) fn prune_segments(
    store: &Store,
    cluster: &str,
    kept: &[&Manifest],
    dry_run: bool,
) -> Result<usize, BackupError> {
    let mut deleted = 0;
    for base in store.folders(&format!("archive/{cluster}"))? {
        if kept.iter().any(|m| m.name == base) {
            continue;
        }
        for (path, _) in store.list(&format!("archive/{cluster}/{base}"))? {
            if !dry_run {
                store.delete(&path)?;
            }
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Runs the archive until `stop` is set: generation after generation. Each generation's base
/// is reported through `on_base` once its manifest is written.
///
/// # Errors
/// A failure that retrying cannot fix (a bad name, the store refusing writes after its retries);
/// source failures are retried with a new generation.
pub fn run(
    store: &Store,
    request: &ArchiveRequest,
    stop: &AtomicBool,
    on_base: &mut dyn FnMut(&Manifest),
) -> Result<(), BackupError> {
    check_name("cluster name", &request.cluster)?;
    let mut pause = Duration::from_millis(500);
    thread::scope(|scope| {
        // The generation that covers the present, kept streaming until its successor's base
        // is complete: a schedule leaves no moment that no generation can restore.
        let mut current: Option<Generation<'_>> = None;
        let outcome = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let generation_stop = Arc::new(AtomicBool::new(false));
            let (base_tx, base_rx) = mpsc::channel();
            let runner = scope.spawn({
                let generation_stop = Arc::clone(&generation_stop);
                move || run_generation(store, request, &generation_stop, base_tx)
            });
            let next = Generation {
                stop: generation_stop,
                runner,
            };
            let Ok(manifest) = base_rx.recv() else {
                // No base: the new generation failed before it covered anything; the current
                // one (if it still runs) keeps covering.
                match next.finish() {
                    Err(error @ (BackupError::Invalid(_) | BackupError::Url(_))) => {
                        break Err(error);
                    }
                    Err(error) => eprintln!("archive: {error}; next attempt in {pause:?}"),
                    Ok(()) => {}
                }
                sleep_unless(stop, pause);
                pause = (pause * 2).min(Duration::from_secs(10));
                continue;
            };
            on_base(&manifest);
            pause = Duration::from_millis(500);
            if let Some(previous) = current.replace(next)
                && let Err(error) = previous.finish()
            {
                eprintln!("archive: the previous generation ended with: {error}");
            }
            let started = Instant::now();
            let running = current.as_ref().map(|g| &g.runner);
            while !stop.load(Ordering::SeqCst)
                && running.is_some_and(|r| !r.is_finished())
                && request
                    .base_every
                    .is_none_or(|every| started.elapsed() < every)
            {
                thread::sleep(Duration::from_millis(50));
            }
            if current.as_ref().is_some_and(|g| g.runner.is_finished()) {
                // It failed while streaming; keep it as the one to report, start another.
                let failed = current.take();
                if let Some(Err(error)) = failed.map(Generation::finish) {
                    if matches!(error, BackupError::Invalid(_) | BackupError::Url(_)) {
                        break Err(error);
                    }
                    eprintln!("archive: {error}; starting a new generation in {pause:?}");
                }
                sleep_unless(stop, pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        };
        if let Some(last) = current
            && let Err(error) = last.finish()
        {
            eprintln!("archive: the last generation ended with: {error}");
        }
        outcome
    })
}

/// A running generation: its stop flag and its thread.
struct Generation<'scope> {
    stop: Arc<AtomicBool>,
    runner: thread::ScopedJoinHandle<'scope, Result<(), BackupError>>,
}

impl Generation<'_> {
    /// Stops it (its last segments are uploaded) and returns how it ended.
    fn finish(self) -> Result<(), BackupError> {
        self.stop.store(true, Ordering::SeqCst);
        self.runner.join().unwrap_or_else(|_| {
            Err(BackupError::Invalid(
                "the archive thread panicked".to_owned(),
            ))
        })
    }
}

/// Sleeps `pause` in short steps, returning early once `stop` is set.
fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
}

/// One generation: a base per shard (a backup with its manifest, sent to `base_ready`), then
/// the streams until `stop`.
fn run_generation(
    store: &Store,
    request: &ArchiveRequest,
    stop: &AtomicBool,
    base_ready: mpsc::Sender<Manifest>,
) -> Result<(), BackupError> {
    let started_ms = now_ms();
    let name = default_name(&request.cluster, started_ms);
    let (shards, cluster_mode) = find_shards(&request.source)?;
    let auth = Auth {
        user: request.source.user.clone(),
        password: request.source.password.clone(),
    };
    let failed = AtomicBool::new(false);
    // When any shard last received a command (Unix ms): quiet shards keep pace with it.
    let activity = AtomicU64::new(0);
    let (shard_tx, shard_rx) = mpsc::channel::<(usize, ShardBackup)>();
    thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                let shard_tx = shard_tx.clone();
                let (auth, name, failed, activity) = (&auth, &name, &failed, &activity);
                scope.spawn(move || {
                    let result = follow_shard(
                        store, request, name, i, shard, auth, stop, failed, activity, shard_tx,
                    );
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    result
                })
            })
            .collect();
        drop(shard_tx);
        let mut bases: Vec<Option<ShardBackup>> = vec![None; shards.len()];
        for (i, base) in shard_rx.iter().take(shards.len()) {
            bases[i] = Some(base);
        }
        if !failed.load(Ordering::SeqCst) && bases.iter().all(Option::is_some) {
            let manifest = Manifest {
                format: FORMAT,
                name: name.clone(),
                cluster: request.cluster.clone(),
                redis_version: shards
                    .iter()
                    .map(|s| s.redis_version.clone())
                    .min()
                    .unwrap_or_default(),
                cluster_mode,
                started_at: rfc3339(started_ms),
                finished_at: rfc3339(now_ms()),
                shards: bases.into_iter().flatten().collect(),
            };
            let written = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| BackupError::Invalid(e.to_string()))
                .and_then(|text| store.put(&format!("backups/{name}/manifest.json"), text));
            match written {
                Ok(()) => {
                    let _ = base_ready.send(manifest);
                }
                Err(e) => {
                    failed.store(true, Ordering::SeqCst);
                    for handle in handles {
                        let _ = handle.join();
                    }
                    return Err(e);
                }
            }
        } else {
            failed.store(true, Ordering::SeqCst);
        }
        let mut first_error = None;
        for handle in handles {
            let result = handle.join().unwrap_or_else(|_| {
                Err(BackupError::Invalid("a shard thread panicked".to_owned()))
            });
            if let Err(e) = result
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

/// Takes a shard's base, sends it, then archives its stream until a stop, resuming after
/// broken connections.
#[allow(clippy::too_many_arguments)]
fn follow_shard(
    store: &Store,
    request: &ArchiveRequest,
    base: &str,
    index: usize,
    shard: &ShardSource,
    auth: &Auth,
    stop: &AtomicBool,
    failed: &AtomicBool,
    activity: &AtomicU64,
    base_sent: mpsc::Sender<(usize, ShardBackup)>,
) -> Result<(), BackupError> {
    let ((client, start), backup) =
        copy_shard(store, base, index, shard, auth, |connected, sink, copy| {
            let (client, start) = connected.psync_copying(None, sink, copy)?;
            let rdb_version = match &start {
                Start::Full { rdb, .. } => rdb.version,
                Start::Continue { .. } => 0,
            };
            let (replid, offset) = (start.replid().to_owned(), start.offset());
            Ok(((client, start), replid, offset, rdb_version))
        })?;
    let _ = base_sent.send((index, backup));
    drop(base_sent);
    thread::scope(|scope| {
        let (queue, segments) = mpsc::sync_channel(UPLOAD_QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let uploader = {
            let failure = Arc::clone(&failure);
            scope.spawn(move || upload_segments(store, &segments, &failure))
        };
        let uploads = SegmentQueue { queue, failure };
        let mut segmenter = Segmenter::new(
            uploads, request, base, index, &start, stop, failed, activity,
        );
        // An empty first segment at once: the base is known as an archive's from now on (a
        // restore to a later time picks this generation and waits for it, instead of choosing
        // an older one that stops before this base), and its coverage starts at the base.
        segmenter.cut(true)?;
        let streamed = stream_shard(request, index, shard, auth, stop, client, segmenter);
        // The segmenter (and with it the queue) is gone: the uploader finishes what is queued.
        let uploaded = uploader.join().unwrap_or_else(|_| {
            Err(BackupError::Invalid(
                "a segment upload thread panicked".to_owned(),
            ))
        });
        streamed.and(uploaded)
    })
}

/// Segments waiting for the uploader; a short queue, so a store slower than the stream makes
/// the stream wait instead of memory grow.
const UPLOAD_QUEUE: usize = 4;

/// One segment on its way to the store.
struct SegmentUpload {
    path: String,
    bytes: Vec<u8>,
    /// The stream offset the segment ends at: acknowledged to the source once it is stored.
    end: u64,
    applied: Option<AppliedOffset>,
}

/// The stream thread's end of a shard's uploads.
struct SegmentQueue {
    queue: mpsc::SyncSender<SegmentUpload>,
    /// The first failed upload; later segments are not uploaded (they would leave a gap).
    failure: Arc<Mutex<Option<BackupError>>>,
}

impl SegmentQueue {
    fn failed(&self) -> Option<BackupError> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn send(&self, upload: SegmentUpload) -> Result<(), BackupError> {
        if let Some(error) = self.failed() {
            return Err(error);
        }
        self.queue.send(upload).map_err(|_| {
            self.failed()
                .unwrap_or_else(|| BackupError::Archive("the segment uploader stopped".to_owned()))
        })
    }
}

/// Uploads a shard's segments in order, on its own thread: reading (and stamping) the stream
/// goes on while an upload runs, so a stamp trails its write by a replica's lag, not by an
/// upload. A segment is acknowledged to the source only once stored.
fn upload_segments(
    store: &Store,
    segments: &mpsc::Receiver<SegmentUpload>,
    failure: &Mutex<Option<BackupError>>,
) -> Result<(), BackupError> {
    for segment in segments {
        if let Err(error) = store.put(&segment.path, segment.bytes) {
            let message = error.to_string();
            *failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            // Nothing after a missing segment may be stored: drop the rest of the queue.
            return Err(BackupError::Archive(format!(
                "uploading {}: {message}",
                segment.path
            )));
        }
        if let Some(applied) = &segment.applied {
            applied.advance_to(segment.end);
        }
    }
    Ok(())
}

/// Archives a shard's stream until a stop, resuming after broken connections.
fn stream_shard(
    request: &ArchiveRequest,
    index: usize,
    shard: &ShardSource,
    auth: &Auth,
    stop: &AtomicBool,
    mut client: ReplicationClient,
    mut segmenter: Segmenter<'_>,
) -> Result<(), BackupError> {
    segmenter.applied = Some(client.applied_offset());
    loop {
        let streamed = client.stream(&mut segmenter);
        // A stop, and a broken stream too, upload what arrived even when it is nothing: the
        // coverage then reaches the moment the stream ended (when the source died, that is
        // the failure), and a resumed stream's next segment replaces an empty one.
        let ended = streamed.is_err() || segmenter.stopping();
        segmenter.cut(ended)?;
        if let Some(error) = segmenter.error.take() {
            return Err(error);
        }
        match streamed {
            Ok(_) if segmenter.stopping() => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                // Resume where the archive ends, from the shard's current nodes.
                eprintln!("archive shard {index}: {e}; resuming");
                let checkpoint = segmenter.checkpoint();
                segmenter.rewind();
                drop(client);
                client = resume(request, shard, auth, &checkpoint, stop)?;
                client.replid().clone_into(&mut segmenter.replid);
                segmenter.applied = Some(client.applied_offset());
            }
        }
    }
}

/// Why one reconnection attempt failed: worth another try, or the end of this generation.
enum ResumeFailure {
    /// The cluster is between owners or the node is down: try again shortly.
    Transient(BackupError),
    /// The source can no longer continue the stream.
    Final(BackupError),
}

/// Reconnects to the shard that serves `shard`'s first slot and continues at `checkpoint`.
fn resume(
    request: &ArchiveRequest,
    shard: &ShardSource,
    auth: &Auth,
    checkpoint: &Checkpoint,
    stop: &AtomicBool,
) -> Result<ReplicationClient, BackupError> {
    let mut pause = Duration::from_millis(200);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(BackupError::Archive(
                "stopped while reconnecting".to_owned(),
            ));
        }
        match resume_once(request, shard, auth, checkpoint) {
            Ok(client) => return Ok(client),
            Err(ResumeFailure::Final(error)) => return Err(error),
            Err(ResumeFailure::Transient(error)) => {
                eprintln!("archive: {error}; retrying in {pause:?}");
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn resume_once(
    request: &ArchiveRequest,
    shard: &ShardSource,
    auth: &Auth,
    checkpoint: &Checkpoint,
) -> Result<ReplicationClient, ResumeFailure> {
    let (shards, _) = find_shards(&request.source).map_err(ResumeFailure::Transient)?;
    let first_slot = shard.slots[0][0];
    let now = shards
        .into_iter()
        .find(|s| {
            s.slots
                .iter()
                .any(|r| r[0] <= first_slot && first_slot <= r[1])
        })
        .ok_or_else(|| {
            ResumeFailure::Transient(BackupError::Archive(format!(
                "slot {first_slot} is not served by any node yet"
            )))
        })?;
    let source_error = |e: &dyn std::fmt::Display| {
        ResumeFailure::Transient(BackupError::Source {
            addr: now.read_from.clone(),
            message: e.to_string(),
        })
    };
    let connected = ReplicationClient::connect(&now.read_from, auth, client_options())
        .map_err(|e| source_error(&e))?;
    let mut ignore = |_: Event| -> Result<(), SinkError> { Ok(()) };
    let (client, start) = connected
        .psync(Some(checkpoint), &mut ignore)
        .map_err(|e| source_error(&e))?;
    if start.is_full() {
        return Err(ResumeFailure::Final(BackupError::Archive(format!(
            "{} could not continue the stream at offset {}: a new base is needed",
            now.read_from, checkpoint.offset
        ))));
    }
    Ok(client)
}

/// Cuts a shard's stream into segments and uploads them.
struct Segmenter<'a> {
    uploads: SegmentQueue,
    request: &'a ArchiveRequest,
    folder: String,
    stop: &'a AtomicBool,
    failed: &'a AtomicBool,
    /// Where the segment being built starts.
    start: u64,
    start_db: u64,
    /// The stream's replication id (changes when the source fails over).
    replid: String,
    /// The end of the last item outside a transaction: where a cut may fall.
    safe_end: u64,
    safe_db: u64,
    /// Body bytes up to `safe_end`.
    safe_len: usize,
    safe_records: u64,
    body: Vec<u8>,
    records: u64,
    db: u64,
    opened: Instant,
    last_upload: Instant,
    /// When this shard's last segment was cut (Unix ms).
    last_cut_ms: u64,
    /// When any shard of the generation last received a command (Unix ms).
    activity: &'a AtomicU64,
    applied: Option<cinnabar_replication::client::AppliedOffset>,
    error: Option<BackupError>,
}

impl<'a> Segmenter<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        uploads: SegmentQueue,
        request: &'a ArchiveRequest,
        base: &str,
        index: usize,
        start: &Start,
        stop: &'a AtomicBool,
        failed: &'a AtomicBool,
        activity: &'a AtomicU64,
    ) -> Self {
        Self {
            uploads,
            request,
            folder: shard_folder(&request.cluster, base, index),
            stop,
            failed,
            start: start.offset(),
            start_db: 0,
            replid: start.replid().to_owned(),
            safe_end: start.offset(),
            safe_db: 0,
            safe_len: 0,
            safe_records: 0,
            body: Vec::new(),
            records: 0,
            db: 0,
            opened: Instant::now(),
            last_upload: Instant::now(),
            last_cut_ms: now_ms(),
            activity,
            applied: None,
            error: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst)
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            replid: self.replid.clone(),
            offset: self.start,
            db: self.start_db,
        }
    }

    fn due(&self) -> bool {
        self.safe_len >= self.request.segment_bytes
            || (self.safe_records > 0 && self.opened.elapsed() >= self.request.segment_every)
            || (self.safe_end > self.start && self.last_upload.elapsed() >= HEARTBEAT)
    }

    /// A quiet shard of a busy cluster: another shard received a command since this one last
    /// cut, a segment interval ago or more. Its (usually empty) segment then moves its coverage
    /// with the others', so a restore to a moment after the last write waits a segment
    /// interval, not a heartbeat. It costs one upload a second per quiet shard while the
    /// cluster is written, as a written shard costs; an idle cluster still uploads only its
    /// heartbeats.
    fn keeps_pace(&self) -> bool {
        self.safe_records == 0
            && self.last_upload.elapsed() >= self.request.segment_every
            && self.activity.load(Ordering::Relaxed) > self.last_cut_ms
    }

    /// Uploads everything up to the last safe point as one segment. A `last` cut is uploaded
    /// even when empty: it records that nothing happened until now, so the coverage reaches
    /// the moment the stream stopped (a scheduled successor's base is taken before that).
    fn cut(&mut self, last: bool) -> Result<(), BackupError> {
        if self.safe_end == self.start && !last {
            return Ok(());
        }
        let header_cut_ms = now_ms();
        let header = SegmentHeader {
            start: self.start,
            end: self.safe_end,
            replid: self.replid.clone(),
            db: self.start_db,
            cut_ms: header_cut_ms,
            records: self.safe_records,
        };
        let bytes = encode_segment(&header, &self.body[..self.safe_len]);
        self.uploads.send(SegmentUpload {
            path: format!("{}/{:020}.seg", self.folder, self.start),
            bytes,
            end: self.safe_end,
            applied: self.applied.clone(),
        })?;
        self.body.drain(..self.safe_len);
        self.records -= self.safe_records;
        self.start = self.safe_end;
        self.start_db = self.safe_db;
        self.safe_len = 0;
        self.safe_records = 0;
        self.opened = Instant::now();
        self.last_upload = Instant::now();
        self.last_cut_ms = header_cut_ms;
        Ok(())
    }

    /// Forgets what follows the last cut (an unfinished transaction): the resumed stream
    /// sends it again.
    fn rewind(&mut self) {
        self.body.clear();
        self.records = 0;
        self.safe_len = 0;
        self.safe_records = 0;
        self.safe_end = self.start;
        self.db = self.start_db;
        self.safe_db = self.start_db;
    }

    fn mark_safe(&mut self, offset: u64) {
        self.safe_end = offset;
        self.safe_db = self.db;
        self.safe_len = self.body.len();
        self.safe_records = self.records;
    }

    fn after(&mut self) -> Result<Flow, SinkError> {
        let keep_pace = !self.due() && self.keeps_pace();
        if (keep_pace || self.due())
            && let Err(e) = self.cut(keep_pace)
        {
            let message = e.to_string();
            self.error = Some(e);
            return Err(message.into());
        }
        Ok(if self.stopping() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

impl CommandSink for Segmenter<'_> {
    fn item(&mut self, item: &StreamItem<'_>) -> Result<Flow, SinkError> {
        let ms = now_ms();
        self.activity.fetch_max(ms, Ordering::Relaxed);
        match item.kind {
            ItemKind::Command(args) => push_record(&mut self.body, ms, item.offset, args.iter()),
            ItemKind::SelectDb { db } => {
                let db_text = db.to_string();
                push_record(
                    &mut self.body,
                    ms,
                    item.offset,
                    [b"SELECT".as_slice(), db_text.as_bytes()].into_iter(),
                );
            }
            ItemKind::Multi => push_record(
                &mut self.body,
                ms,
                item.offset,
                [b"MULTI".as_slice()].into_iter(),
            ),
            ItemKind::Exec => push_record(
                &mut self.body,
                ms,
                item.offset,
                [b"EXEC".as_slice()].into_iter(),
            ),
        }
        self.records += 1;
        self.db = item.db;
        if !item.in_transaction {
            self.mark_safe(item.offset);
        }
        self.after()
    }

    fn idle(&mut self, offset: u64) -> Result<Flow, SinkError> {
        // PINGs move the offset; outside a transaction that end is a safe cut.
        if self.safe_len == self.body.len() {
            self.safe_end = offset;
        }
        self.after()
    }
}
