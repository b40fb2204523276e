//! `cinnabar sync`: the engine's pieces put together. One stream per source master (a
//! standalone server or a replica has one; a Redis Cluster source one per master, found from
//! `CLUSTER NODES`), each on a thread of its own: connect with the stored checkpoint, take a
//! full resync (RDB applied key by key) or continue, then apply the command stream, store a
//! checkpoint and acknowledge to the source only what the target acknowledged. A status
//! document is written to the state directory five times a second.
//!
//! Delivery is at least once: after a crash, the commands between the last checkpoint (at
//! most about a second old) and the crash are applied again. Idempotent writes (SET, HSET,
//! DEL, EXPIRE …) make that harmless; a non-idempotent one (INCR, LPUSH …) in that window is
//! applied twice. Transient failures (a source or target restarting) are retried with a
//! growing pause; a refusal that would lose data (a target write error, a FLUSHALL without
//! `allow_flush`, a database not mapped) stops the sync with that error.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::apply::{Applier, ApplyError, ApplyOptions, DbRoute};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::client::{
    AppliedOffset, Auth, ClientOptions, CommandSink, Flow, FullSyncReason, ItemKind,
    ReplicationClient, ReplicationError, Start, StreamItem,
};
use crate::error::SinkError;
use crate::event::{Event, EventSink};
use crate::status::{LastStart, Phase, SourceStatus, SyncStatus};
use crate::verify::Endpoint;

/// What to sync, from where, to where.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The source: a standalone server, a replica, or any node of a Redis Cluster.
    pub source: Endpoint,
    /// The target: any node of a Redis Cluster, or a Cinnabar endpoint.
    pub target: Endpoint,
    /// Checkpoints and the status document live here.
    pub state_dir: PathBuf,
    /// Whether a source FLUSHALL/FLUSHDB may flush the target.
    pub allow_flush: bool,
    /// Where each source database goes (default: db 0 only).
    pub db_map: BTreeMap<u64, DbRoute>,
}

impl SyncConfig {
    /// A sync of database 0 from `source` into `target` with checkpoints in `state_dir`, a
    /// source flush refused (the defaults of `cinnabar sync`).
    pub fn new(source: Endpoint, target: Endpoint, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            source,
            target,
            state_dir: state_dir.into(),
            allow_flush: false,
            db_map: BTreeMap::from([(0, DbRoute::Merge)]),
        }
    }
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source could not be read.
    #[error("source {addr}: {message}")]
    Source {
        /// The source node.
        addr: String,
        /// What happened.
        message: String,
    },
    /// The target refused or failed a write, or a check before the full sync failed.
    #[error("target: {0}")]
    Target(#[from] ApplyError),
    /// The target evicted keys during the full sync (its `maxmemory` is too small for the
    /// data, at least on one master: one key's whole value lives on one master).
    #[error(
        "the target evicted keys during the full sync ({0}): its maxmemory is too small for the source's data (a single big key must fit one master); the copy is incomplete"
    )]
    TargetEvicted(String),
    /// The state directory could not be used.
    #[error("state directory {dir}: {message}")]
    State {
        /// The directory.
        dir: PathBuf,
        /// What happened.
        message: String,
    },
}

/// Longest pause between two attempts after a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the status document is written.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// How soon after the source falls silent the target's acknowledgements are collected and the
/// applied offset moves (what an online switch waits for).
const IDLE_POLL: Duration = Duration::from_millis(2);
/// How often the applier's writes are pushed out and acknowledged while the source keeps
/// sending (see `ClientOptions::tick_interval`).
const FLOWING_TICK: Duration = Duration::from_millis(10);
/// How often a checkpoint is stored while the stream flows.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The applied offsets of a running sync as they are now, not as last written: what an online
/// switch polls while clients wait (the status document is written only every 200 ms).
#[derive(Debug, Default)]
pub struct LiveOffsets {
    streams: Mutex<Vec<Arc<Mutex<SourceStatus>>>>,
}

impl LiveOffsets {
    /// Each source master's address, phase, and the source offset the target acknowledged.
    pub fn offsets(&self) -> Vec<(String, Phase, u64)> {
        let streams = match self.streams.lock() {
            Ok(streams) => streams.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        streams
            .iter()
            .map(|status| {
                let s = match status.lock() {
                    Ok(s) => s,
                    Err(poisoned) => poisoned.into_inner(),
                };
                (s.address.clone(), s.phase, s.offset)
            })
            .collect()
    }

    /// Whether `streams` source streams are known and every one applies the command stream.
    pub fn all_streaming(&self, streams: usize) -> bool {
        let offsets = self.offsets();
        offsets.len() == streams
            && offsets
                .iter()
                .all(|(_, phase, _)| *phase == Phase::Streaming)
    }

    /// The offsets as the JSON document `GET /offsets` serves:
    /// `{"sources":[{"address":…,"phase":…,"offset":…}]}`.
    pub fn json(&self) -> String {
        let sources: Vec<serde_json::Value> = self
            .offsets()
            .into_iter()
            .map(|(address, phase, offset)| {
                serde_json::json!({ "address": address, "phase": phase, "offset": offset })
            })
            .collect();
        serde_json::json!({ "sources": sources }).to_string()
    }
}

/// A sync running on a thread of its own (see [`run`]), its applied offsets followed live,
/// until [`stop`](Self::stop): what a migration or a test runs beside its other work.
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    live: Arc<LiveOffsets>,
    state_dir: PathBuf,
    thread: std::thread::JoinHandle<Result<(), SyncError>>,
}

impl Background {
    /// Starts `config`'s sync; `on_status` sees each status it writes.
    pub fn start(
        config: SyncConfig,
        mut on_status: impl FnMut(&SyncStatus) + Send + 'static,
    ) -> Self {
        let (stop, live) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(LiveOffsets::default()),
        );
        let state_dir = config.state_dir.clone();
        let thread = {
            let (stop, live) = (Arc::clone(&stop), Arc::clone(&live));
            std::thread::spawn(move || run(&config, &stop, &live, &mut on_status))
        };
        Self {
            stop,
            live,
            state_dir,
            thread,
        }
    }

    /// The applied offsets, as they move.
    pub fn live(&self) -> &Arc<LiveOffsets> {
        &self.live
    }

    /// Whether the sync ended on its own (a failure: [`stop`](Self::stop) says which).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the sync (its last checkpoint stored) and returns how it ended.
    ///
    /// # Errors
    /// The [`SyncError`] it stopped on.
    pub fn stop(self) -> Result<(), SyncError> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| {
            Err(SyncError::State {
                dir: self.state_dir,
                message: "the sync thread panicked".to_owned(),
            })
        })
    }
}

/// Runs the sync until `stop` is set (then returns `Ok` after storing the last checkpoint) or a
/// stream fails for good. `on_status` sees the status each time it is written; `live` follows
/// the applied offsets as they move.
///
/// # Errors
/// [`SyncError`] naming the source, the target or the state directory.
pub fn run(
    config: &SyncConfig,
    stop: &Arc<AtomicBool>,
    live: &LiveOffsets,
    mut on_status: impl FnMut(&SyncStatus),
) -> Result<(), SyncError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| SyncError::State {
        dir: config.state_dir.clone(),
        message: e.to_string(),
    })?;
    let masters = source_masters(&config.source).map_err(|e| SyncError::Source {
        addr: config.source.addr.clone(),
        message: e.to_string(),
    })?;
    let statuses: Vec<Arc<Mutex<SourceStatus>>> = masters
        .iter()
        .map(|addr| Arc::new(Mutex::new(new_status(addr))))
        .collect();
    match live.streams.lock() {
        Ok(mut streams) => streams.clone_from(&statuses),
        Err(poisoned) => poisoned.into_inner().clone_from(&statuses),
    }
    // A stream that fails for good stops the others: nothing half-applied runs on unseen.
    let failed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = masters
        .iter()
        .zip(&statuses)
        .map(|(addr, status)| {
            let (config, addr, status) = (config.clone(), addr.clone(), Arc::clone(status));
            let (stop, failed) = (Arc::clone(stop), Arc::clone(&failed));
            std::thread::spawn(move || {
                let result = follow(&config, &addr, &status, &stop, &failed);
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                result
            })
        })
        .collect();
    loop {
        let status = snapshot(config, &statuses);
        let _ = status.store(&config.state_dir);
        on_status(&status);
        if threads.iter().all(std::thread::JoinHandle::is_finished) {
            break;
        }
        std::thread::sleep(STATUS_EVERY);
    }
    let mut first_error = None;
    for thread in threads {
        let result = thread.join().unwrap_or_else(|_| {
            Err(SyncError::State {
                dir: config.state_dir.clone(),
                message: "a source stream panicked".to_owned(),
            })
        });
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    let status = snapshot(config, &statuses);
    let _ = status.store(&config.state_dir);
    on_status(&status);
    first_error.map_or(Ok(()), Err)
}

fn new_status(addr: &str) -> SourceStatus {
    SourceStatus {
        address: addr.to_owned(),
        phase: Phase::Connecting,
        last_start: None,
        offset: 0,
        lag_bytes: 0,
        lag_ms: 0,
        keys_applied: 0,
        keys_total: None,
        commands_applied: 0,
        error: None,
        warning: None,
    }
}

fn snapshot(config: &SyncConfig, statuses: &[Arc<Mutex<SourceStatus>>]) -> SyncStatus {
    SyncStatus {
        target: config.target.addr.clone(),
        pid: std::process::id(),
        updated_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        sources: statuses
            .iter()
            .map(|s| {
                s.lock()
                    .map(|s| s.clone())
                    .unwrap_or_else(|e| e.into_inner().clone())
            })
            .collect(),
    }
}

fn source_masters(source: &Endpoint) -> redis::RedisResult<Vec<String>> {
    let mut masters = crate::verify::masters(source)?;
    masters.sort();
    Ok(masters)
}

fn connection(endpoint: &Endpoint, addr: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(endpoint.url(addr))?.get_connection_with_timeout(Duration::from_secs(5))
}

/// `redis_version` and `used_memory` of a source node.
fn source_facts(source: &Endpoint, addr: &str) -> redis::RedisResult<(String, u64)> {
    let mut conn = connection(source, addr)?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("memory")
        .query(&mut conn)?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Ok((
        field("redis_version"),
        field("used_memory").parse().unwrap_or(0),
    ))
}

fn set_status(status: &Mutex<SourceStatus>, update: impl FnOnce(&mut SourceStatus)) {
    match status.lock() {
        Ok(mut s) => update(&mut s),
        Err(poisoned) => update(&mut poisoned.into_inner()),
    }
}

/// Follows one source master until stopped, retrying transient failures.
fn follow(
    config: &SyncConfig,
    addr: &str,
    status: &Mutex<SourceStatus>,
    stop: &AtomicBool,
    failed: &AtomicBool,
) -> Result<(), SyncError> {
    let store = CheckpointStore::open(&config.state_dir, &addr.replace(':', "_")).map_err(|e| {
        SyncError::State {
            dir: config.state_dir.clone(),
            message: e.to_string(),
        }
    })?;
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) && !failed.load(Ordering::SeqCst) {
        match follow_once(config, addr, status, stop, failed, &store) {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(e)) => {
                set_status(status, |s| s.error = Some(e.to_string()));
                return Err(e);
            }
            Err(Attempt::Retry(message)) => {
                set_status(status, |s| {
                    s.phase = Phase::Connecting;
                    s.error = Some(message);
                });
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Ok(())
}

/// How one attempt ended, when not with a clean stop.
enum Attempt {
    /// Try again after a pause (the source or the target went away for a while).
    Retry(String),
    /// Stop the sync.
    Fatal(SyncError),
}

fn source_error(addr: &str, e: &ReplicationError) -> Attempt {
    if e.is_transient() {
        Attempt::Retry(e.to_string())
    } else {
        Attempt::Fatal(SyncError::Source {
            addr: addr.to_owned(),
            message: e.to_string(),
        })
    }
}

fn target_error(e: ApplyError) -> Attempt {
    match e {
        // A target node that closes the connection is one being restarted or failed over (a
        // rolling restart, a deleted pod): the next attempt resumes from the checkpoint, as a
        // restarted sync process would, without stopping the whole sync for it.
        ApplyError::Io { .. } | ApplyError::Connect { .. } | ApplyError::Closed { .. } => {
            Attempt::Retry(e.to_string())
        }
        // What a cluster answers while a node restarts or an election runs: a few seconds later
        // the same write succeeds.
        ApplyError::Rejected { ref reply, .. }
            if ["CLUSTERDOWN", "TRYAGAIN", "LOADING", "MASTERDOWN"]
                .iter()
                .any(|code| reply.starts_with(code)) =>
        {
            Attempt::Retry(e.to_string())
        }
        other => Attempt::Fatal(SyncError::Target(other)),
    }
}

fn follow_once(
    config: &SyncConfig,
    addr: &str,
    status: &Mutex<SourceStatus>,
    stop: &AtomicBool,
    failed: &AtomicBool,
    store: &CheckpointStore,
) -> Result<(), Attempt> {
    let options = ApplyOptions {
        user: config.target.user.clone(),
        password: config.target.password.clone(),
        allow_flush: config.allow_flush,
        db_map: config.db_map.clone(),
        ..ApplyOptions::default()
    };
    let mut applier = Applier::connect(&config.target.addr, options).map_err(target_error)?;
    let checkpoint = store.load().map_err(|e| {
        Attempt::Fatal(SyncError::State {
            dir: config.state_dir.clone(),
            message: e.to_string(),
        })
    })?;
    let (version, used_memory) =
        source_facts(&config.source, addr).map_err(|e| Attempt::Retry(format!("{addr}: {e}")))?;
    if checkpoint.is_none() {
        applier
            .check_full_sync(used_memory)
            .map_err(|e| Attempt::Fatal(SyncError::Target(e)))?;
    }
    // A target that evicts keys to stay under `maxmemory` would lose data silently; what it
    // evicted during the full sync is checked once the copy is acknowledged.
    let evicted_before = evicted_keys(&config.target, &applier.masters())
        .map_err(|e| Attempt::Retry(format!("target: {e}")))?;
    let reader = applier.reader_options(u32::from(crate::apply::target::rdb_version_of(&version)));
    let auth = Auth {
        user: config.source.user.clone(),
        password: config.source.password.clone(),
    };
    let client_options = ClientOptions {
        reader,
        // A silent source is when the target's acknowledgements are collected (the sink's
        // idle hook): an online switch holds clients until they arrive, so look often.
        poll_interval: IDLE_POLL,
        // While writes flow, each tick waits for the target's replies: often enough that a
        // trickle of writes is never long behind, rare enough to keep the pipeline full.
        tick_interval: FLOWING_TICK,
        ..ClientOptions::default()
    };
    let connected = ReplicationClient::connect(addr, &auth, client_options)
        .map_err(|e| source_error(addr, &e))?;
    let mut rdb = RdbSink {
        applier: &mut applier,
        status,
        keys: 0,
    };
    set_status(status, |s| s.error = None);
    let (mut client, start) = connected
        .psync(checkpoint.as_ref(), &mut rdb)
        .map_err(|e| source_error(addr, &e))?;
    let start_offset = match &start {
        Start::Full { offset, .. } => {
            applier.mark_offset(*offset);
            applier.flush().map_err(target_error)?;
            check_no_eviction(&config.target, &evicted_before)?;
            *offset
        }
        Start::Continue { offset, .. } => *offset,
    };
    let replid = start.replid().to_owned();
    store
        .store(&Checkpoint {
            replid: replid.clone(),
            offset: start_offset,
            db: client.db(),
        })
        .map_err(|e| {
            Attempt::Fatal(SyncError::State {
                dir: config.state_dir.clone(),
                message: e.to_string(),
            })
        })?;
    let counters = applier.counters();
    let warning = match &start {
        Start::Full {
            reason: FullSyncReason::CheckpointRefused { asked },
            ..
        } => Some(format!(
            "the source no longer held offset {} of {} (backlog too small, or a restart): a full \
             resync replaced every key it sent, but keys the source deleted meanwhile may remain \
             on the target; run `cinnabar sync verify`",
            asked.offset, asked.replid
        )),
        _ => None,
    };
    set_status(status, |s| {
        if warning.is_some() {
            s.warning.clone_from(&warning);
        }
        s.phase = Phase::Streaming;
        s.last_start = Some(if start.is_full() {
            LastStart::Full
        } else {
            LastStart::Continue
        });
        s.offset = start_offset;
        s.keys_applied = counters.keys_applied;
    });
    let applied = client.applied_offset();
    applied.advance_to(start_offset);
    let commands_at_start = applier.counters().commands_applied;
    let mut sink = StreamSink {
        commands_at_start,
        applier: &mut applier,
        store,
        status,
        stop,
        failed,
        applied,
        replid,
        start_db: client.db(),
        selects: VecDeque::new(),
        transaction: None,
        received: start_offset,
        checkpointed: start_offset,
        last_checkpoint: Instant::now(),
        unacknowledged: VecDeque::new(),
        error: None,
    };
    let streamed = client.stream(&mut sink);
    if let Some(e) = sink.error.take() {
        return Err(e);
    }
    streamed.map_err(|e| source_error(addr, &e))?;
    // Stopped: everything sent is acknowledged and checkpointed before returning.
    sink.settle(true)
        .map_err(|e| e.into_attempt(&config.state_dir))?;
    Ok(())
}

/// `evicted_keys` of every target master.
fn evicted_keys(target: &Endpoint, masters: &[String]) -> redis::RedisResult<Vec<(String, u64)>> {
    masters
        .iter()
        .map(|master| {
            let mut conn = connection(target, master)?;
            let info: String = redis::cmd("INFO").arg("stats").query(&mut conn)?;
            let evicted = info
                .lines()
                .find_map(|l| l.strip_prefix("evicted_keys:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Ok((master.clone(), evicted))
        })
        .collect()
}

/// Fails when a target master evicted keys since `before`: the copy is then incomplete, and
/// saying "streaming" would hide it.
fn check_no_eviction(target: &Endpoint, before: &[(String, u64)]) -> Result<(), Attempt> {
    let masters: Vec<String> = before.iter().map(|(m, _)| m.clone()).collect();
    let after =
        evicted_keys(target, &masters).map_err(|e| Attempt::Retry(format!("target: {e}")))?;
    let evicted: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|((_, b), (_, a))| a > b)
        .map(|((master, b), (_, a))| format!("{master} evicted {} keys", a - b))
        .collect();
    if evicted.is_empty() {
        return Ok(());
    }
    Err(Attempt::Fatal(SyncError::TargetEvicted(evicted.join(", "))))
}

/// The full sync's events, to the applier.
struct RdbSink<'a> {
    applier: &'a mut Applier,
    status: &'a Mutex<SourceStatus>,
    keys: u64,
}

impl EventSink for RdbSink<'_> {
    fn event(&mut self, event: Event) -> Result<(), SinkError> {
        match &event {
            Event::Header { .. } => set_status(self.status, |s| s.phase = Phase::Full),
            Event::ResizeDb { keys, .. } => {
                let keys = *keys;
                set_status(self.status, |s| {
                    s.keys_total = Some(s.keys_total.unwrap_or(0) + keys);
                });
            }
            Event::KeyEnd { .. } => {
                self.keys += 1;
                if self.keys.is_multiple_of(1000) {
                    let applied = self.applier.counters().keys_applied;
                    set_status(self.status, |s| s.keys_applied = applied);
                }
            }
            _ => {}
        }
        self.applier
            .apply_rdb_event(event)
            .map_err(|e| Box::new(e) as SinkError)
    }
}

/// Why the stream sink stopped.
enum SinkFailure {
    Apply(ApplyError),
    State(String),
}

impl SinkFailure {
    /// How the attempt ends: a target failure is retried when transient, a state directory
    /// that cannot take a checkpoint (`dir`) stops the sync.
    fn into_attempt(self, dir: &std::path::Path) -> Attempt {
        match self {
            Self::Apply(e) => target_error(e),
            Self::State(message) => Attempt::Fatal(SyncError::State {
                dir: dir.to_path_buf(),
                message,
            }),
        }
    }
}

/// The command stream, to the applier; checkpoints and acknowledgements as the target
/// acknowledges.
struct StreamSink<'a> {
    applier: &'a mut Applier,
    store: &'a CheckpointStore,
    status: &'a Mutex<SourceStatus>,
    stop: &'a AtomicBool,
    failed: &'a AtomicBool,
    applied: AppliedOffset,
    replid: String,
    /// The database at the start offset, and each `SELECT` since with its offset, so the
    /// checkpoint at an acknowledged offset names the database current there.
    start_db: u64,
    selects: VecDeque<(u64, u64)>,
    /// The commands of a MULTI in progress.
    transaction: Option<Vec<Vec<Vec<u8>>>>,
    received: u64,
    checkpointed: u64,
    last_checkpoint: Instant,
    /// Received but not yet acknowledged: (end offset, when its first byte arrived), at most
    /// one entry per millisecond, oldest first. The oldest entry's age is the lag.
    unacknowledged: VecDeque<(u64, Instant)>,
    /// A failure that must end the attempt (kept here: the client sees only a boxed error).
    error: Option<Attempt>,
    /// The applier's command count when the stream started: the full sync's `RESTORE`s are
    /// not stream commands.
    commands_at_start: u64,
}

/// Most entries kept in [`StreamSink::unacknowledged`] (beyond, the newest absorbs the rest,
/// which can only overstate the lag).
const MAX_UNACKNOWLEDGED: usize = 100_000;

impl StreamSink<'_> {
    /// Records that the stream reached `offset` now.
    fn received_up_to(&mut self, offset: u64) {
        if offset <= self.received {
            return;
        }
        self.received = offset;
        let now = Instant::now();
        let full = self.unacknowledged.len() >= MAX_UNACKNOWLEDGED;
        match self.unacknowledged.back_mut() {
            Some((end, since)) if full || now.duration_since(*since) < Duration::from_millis(1) => {
                *end = (*end).max(offset);
            }
            _ => self.unacknowledged.push_back((offset, now)),
        }
    }

    fn db_at(&mut self, offset: u64) -> u64 {
        while let Some(&(at, db)) = self.selects.front() {
            if at > offset {
                break;
            }
            self.start_db = db;
            self.selects.pop_front();
        }
        self.start_db
    }

    /// Acknowledges and checkpoints what the target has; with `flush`, first waits for every
    /// reply.
    fn settle(&mut self, flush: bool) -> Result<(), SinkFailure> {
        if flush {
            self.applier.flush().map_err(SinkFailure::Apply)?;
        }
        let acknowledged = self.applier.acknowledged_offset().unwrap_or(0);
        self.applied.advance_to(acknowledged);
        let now = Instant::now();
        while self
            .unacknowledged
            .front()
            .is_some_and(|&(end, _)| end <= acknowledged)
        {
            self.unacknowledged.pop_front();
        }
        let due = flush || now.duration_since(self.last_checkpoint) >= CHECKPOINT_EVERY;
        if due && acknowledged > self.checkpointed && self.transaction.is_none() {
            let db = self.db_at(acknowledged);
            self.store
                .store(&Checkpoint {
                    replid: self.replid.clone(),
                    offset: acknowledged,
                    db,
                })
                .map_err(|e| SinkFailure::State(e.to_string()))?;
            self.checkpointed = acknowledged;
            self.last_checkpoint = now;
        }
        let counters = self.applier.counters();
        // How long ago the target last had everything the source had sent then: the age of
        // the oldest write not yet acknowledged (0 when there is none).
        let lag_ms = self.unacknowledged.front().map_or(0, |&(_, since)| {
            u64::try_from(now.duration_since(since).as_millis()).unwrap_or(u64::MAX)
        });
        let received = self.received;
        set_status(self.status, |s| {
            s.offset = acknowledged.max(s.offset);
            s.lag_bytes = received.saturating_sub(acknowledged);
            s.lag_ms = lag_ms;
            s.commands_applied = counters
                .commands_applied
                .saturating_sub(self.commands_at_start);
        });
        Ok(())
    }

    /// Keeps `failure` to end the attempt with, and gives the client a boxed copy of its text.
    fn fail(&mut self, failure: SinkFailure) -> SinkError {
        let message = match &failure {
            SinkFailure::Apply(e) => e.to_string(),
            SinkFailure::State(m) => m.clone(),
        };
        self.error = Some(failure.into_attempt(self.store.dir()));
        message.into()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst)
    }
}

impl CommandSink for StreamSink<'_> {
    fn item(&mut self, item: &StreamItem<'_>) -> Result<Flow, SinkError> {
        self.received_up_to(item.offset);
        let applied = match item.kind {
            ItemKind::Command(args) => match &mut self.transaction {
                Some(commands) => {
                    commands.push(args.to_vec());
                    Ok(())
                }
                None => self.applier.apply_command(&args.to_vec(), item.offset),
            },
            ItemKind::SelectDb { db } => {
                self.selects.push_back((item.offset, db));
                self.applier.apply_command(
                    &[b"SELECT".to_vec(), db.to_string().into_bytes()],
                    item.offset,
                )
            }
            ItemKind::Multi => {
                self.transaction = Some(Vec::new());
                Ok(())
            }
            ItemKind::Exec => {
                let commands = self.transaction.take().unwrap_or_default();
                self.applier.apply_transaction(&commands, item.offset)
            }
        };
        if let Err(e) = applied {
            return Err(self.fail(SinkFailure::Apply(e)));
        }
        if let Err(e) = self.settle(false) {
            return Err(self.fail(e));
        }
        Ok(if self.stopping() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn idle(&mut self, offset: u64) -> Result<Flow, SinkError> {
        // PINGs and REPLCONF advance the offset without writing anything.
        if self.transaction.is_none() {
            self.applier.mark_offset(offset);
        }
        self.received_up_to(offset);
        if let Err(e) = self.settle(true) {
            return Err(self.fail(e));
        }
        Ok(if self.stopping() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}
