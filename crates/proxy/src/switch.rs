//! The online backend switch: the proxy starts serving another cluster (a migration's target)
//! while its clients stay connected, without losing an acknowledged write.
//!
//! The sequence, run by `switch` (from `ProxyHandle::switch_backend` or the admin listener's
//! `POST /backend/switch`):
//!
//! 1. **Pre-flight**, before any client waits: the target answers with a table covering every
//!    slot, the catch-up source (a sync's `/offsets`) answers and follows every source master.
//!    A failure here refuses the switch and nobody noticed anything.
//! 2. **Hold**: the `Gate` closes. Sessions stop parsing (requests stay in their input
//!    buffers, read but not handled); each worker acknowledges once every request handed to a
//!    backend before the hold is answered, and releases its clients blocked in BLPOP & co. with
//!    `CLIENT UNBLOCK … TIMEOUT` (the node itself decides: a command that already took an
//!    element returns it; the others return the timeout reply and the client sends them again,
//!    to be held like the rest).
//! 3. **Catch-up**: each source master's `master_repl_offset` is read; every acknowledged write
//!    is below it. The sync's applied offsets are polled until each reaches its master's.
//! 4. **Flip**: the target's table is published (with its credentials and a new upstream
//!    epoch), the refresh loop follows the target from now on, and the gate opens: held
//!    requests go to the target.
//!
//! If the hold would last longer than `max_pause` (the drain or the catch-up is late) the
//! switch is abandoned: the gate opens on the source, nothing changed, and the report says why.
//!
//! Connections that cannot be carried over: a pub/sub client's relay is ended (its connection
//! closes; client libraries reconnect and subscribe again, now on the target), and a WATCH
//! taken on the source makes the following EXEC return a null reply, exactly as if a watched
//! key had changed, which every client library's optimistic-transaction loop retries.
//!
//! From a Sentinel group to a cluster, the key router stops putting every key in one slot at
//! the flip. A connection in another database than 0 is closed with the reason at its next
//! request (a cluster has no other database, and it was not copied), and a transaction queued
//! across the flip is discarded with `EXECABORT` (its keys may span slots now).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cinnabar_cluster::{Credentials, NodeAddr, NodeClient, Timeouts};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, watch};

use crate::keyroute::KeyRouter;
use crate::refresh::{self, Upstream};
use crate::slotmap::SlotMap;

/// The longest a switch may hold requests when the caller names no bound.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(2);
/// How often the drain and the catch-up are looked at while requests are held.
const POLL: Duration = Duration::from_millis(1);

/// What workers see of a switch: whether requests are held now, and which backend is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GateState {
    /// Counts holds; a worker acknowledges each by its number.
    pub(crate) generation: u64,
    pub(crate) closed: bool,
    /// The upstream epoch in force (see `SlotMap::upstream`).
    pub(crate) upstream: u64,
}

/// The barrier every worker's sessions respect, and what the workers report back.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Read by sessions before each request they parse: one atomic load.
    closed: AtomicBool,
    state: watch::Sender<GateState>,
    /// Per worker: the last hold it has drained (everything sent before it answered, its
    /// blocked clients released).
    drained: Vec<AtomicU64>,
    /// Blocked clients released with `CLIENT UNBLOCK` during the current hold.
    released: AtomicU64,
    /// Client connections in subscribed mode, and with a WATCH open, now (for the report).
    pub(crate) subscribed: AtomicI64,
    pub(crate) watching: AtomicI64,
    /// Client connections that selected a database other than 0 (only a group has them).
    pub(crate) other_database: AtomicI64,
}

impl Gate {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            closed: AtomicBool::new(false),
            state: watch::Sender::new(GateState::default()),
            drained: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            released: AtomicU64::new(0),
            subscribed: AtomicI64::new(0),
            watching: AtomicI64::new(0),
            other_database: AtomicI64::new(0),
        }
    }

    /// Whether sessions must hold their requests now.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Follows the gate's state changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<GateState> {
        self.state.subscribe()
    }

    /// Worker `index` has drained hold `generation`, after releasing `released` blocked clients.
    pub(crate) fn drained(&self, index: usize, generation: u64, released: u64) {
        self.released.fetch_add(released, Ordering::SeqCst);
        if let Some(slot) = self.drained.get(index) {
            slot.store(generation, Ordering::SeqCst);
        }
    }

    fn close(&self) -> u64 {
        self.released.store(0, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
        let mut generation = 0;
        self.state.send_modify(|s| {
            s.generation += 1;
            s.closed = true;
            generation = s.generation;
        });
        generation
    }

    fn open(&self, upstream: u64) {
        self.closed.store(false, Ordering::SeqCst);
        self.state.send_modify(|s| {
            s.closed = false;
            s.upstream = upstream;
        });
    }

    fn all_drained(&self, generation: u64) -> bool {
        self.drained
            .iter()
            .all(|d| d.load(Ordering::SeqCst) >= generation)
    }
}

/// How the switch learns that the target has every write the source acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// A running `cinnabar sync`'s admin listener (`host:port` or `http://host:port`): its
    /// `GET /offsets` gives the source replication offset applied to the target, per source
    /// master.
    Sync(String),
    /// No check: the caller knows the target already holds everything (a backend with no
    /// data, or one filled by other means and verified). Said in the report.
    Unchecked,
}

/// A switch, as asked for.
#[derive(Debug, Clone)]
pub struct SwitchRequest {
    /// Which of the endpoint's clusters is replaced (`[[clusters]]` name); `None` when it
    /// serves one.
    pub cluster: Option<String>,
    /// Nodes of the target cluster to learn its topology from.
    pub seeds: Vec<NodeAddr>,
    /// How the proxy logs in to the target's nodes (`None`: no password).
    pub credentials: Option<Credentials>,
    /// How the target's catch-up is checked during the hold.
    pub catch_up: CatchUp,
    /// The longest requests may be held; beyond, the switch is abandoned.
    pub max_pause: Duration,
}

/// How a switch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The proxy serves the target now.
    Switched,
    /// Requests were held, but the switch could not finish within `max_pause`; the proxy
    /// still serves the source, as before.
    Abandoned,
    /// Nothing was held: a check before the hold failed.
    Refused,
}

/// One source master at the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCatchUp {
    /// The master, `host:port`.
    pub master: String,
    /// Its `master_repl_offset` once every held-back request was answered.
    pub barrier_offset: u64,
    /// What the sync had applied to the target when last asked.
    pub applied_offset: Option<u64>,
}

/// What a switch did, for a person and for scripts (serialised as JSON by the admin listener).
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// Switched, abandoned or refused.
    pub outcome: Outcome,
    /// The cluster of the endpoint that was switched (`default` for a proxy of one).
    pub cluster: String,
    /// Why it was abandoned or refused.
    pub reason: Option<String>,
    /// Masters served before.
    pub from_masters: Vec<String>,
    /// The target's masters (what is served after a switch).
    pub to_masters: Vec<String>,
    /// How long new requests were held, in milliseconds (0 when refused).
    pub hold_ms: f64,
    /// The part of the hold spent waiting for requests sent before it to be answered.
    pub drain_ms: f64,
    /// The part spent reading the source offsets and waiting for the target to reach them.
    pub catch_up_ms: f64,
    /// How the catch-up was checked (`sync` or `unchecked`).
    pub catch_up: String,
    /// Each source master's offset at the barrier, and what the sync had applied.
    pub sources: Vec<SourceCatchUp>,
    /// Clients blocked in BLPOP & co. released with a timeout reply (they send again).
    pub blocked_released: u64,
    /// Client connections in subscribed mode: closed after the flip, to subscribe again.
    pub subscribers_ended: i64,
    /// Client connections with a WATCH open: their next EXEC returns a null reply.
    pub watches_aborted: i64,
    /// A Sentinel group was switched to a cluster: connections that had selected a database
    /// other than 0 (a cluster has none), each ended with an error at its next request.
    pub databases_ended: i64,
}

/// Everything a switch touches, shared by the handle and the admin listener.
#[derive(Debug)]
pub(crate) struct Switcher {
    pub(crate) gate: Arc<Gate>,
    pub(crate) upstreams: Arc<Mutex<Vec<Upstream>>>,
    pub(crate) routes: Arc<watch::Sender<Arc<SlotMap>>>,
    /// Told to route keys by slot when a Sentinel group is switched to a cluster.
    router: Arc<KeyRouter>,
    pub(crate) connect_timeout: Duration,
    /// One switch at a time: taken for the length of a one-shot switch or a prepare.
    running: Mutex<()>,
    /// A prepared switch (two-phase, see [`Switcher::prepare`]), until committed, aborted or
    /// expired.
    prepared: Mutex<Option<Held>>,
    next_id: AtomicU64,
}

/// A switch between its hold and its flip: requests are held, and the refresh loop waits on
/// the upstreams' lock this owns.
#[derive(Debug)]
struct Held {
    /// Opens the gate on the source if this is dropped unfinished (the caller of a one-shot
    /// switch gave up on it mid-hold): clients must never stay held.
    reopen: Reopen,
    id: u64,
    upstreams: tokio::sync::OwnedMutexGuard<Vec<Upstream>>,
    cluster: usize,
    target: Upstream,
    to: SlotMap,
    from: Arc<SlotMap>,
    held: Instant,
    deadline: Instant,
    max_pause: Duration,
    watching: i64,
    subscribed: i64,
    /// The source is a Sentinel group.
    from_group: bool,
    other_database: i64,
    report: SwitchReport,
}

/// Reopens the gate on drop unless disarmed.
#[derive(Debug)]
struct Reopen {
    gate: Arc<Gate>,
    upstream: u64,
    armed: bool,
}

impl Reopen {
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Opens the gate now, as planned (no warning).
    fn open(self) {
        self.gate.open(self.upstream);
        self.disarm();
    }
}

/// Requests held at every session, with everything sent before the hold answered: what a
/// planned failover of a Sentinel group needs, so that no write reaches the old master once
/// its replica may be promoted (Sentinel does not pause the old master itself; a write it
/// took after the promotion would be dropped when it turns into a replica). Released by
/// [`release`](Self::release) or on drop.
#[derive(Debug)]
pub struct RequestHold {
    reopen: Reopen,
    held: Instant,
    /// How long the drain took.
    pub drain: Duration,
}

impl RequestHold {
    /// Lets the held requests go (to the routes in force now: refresh them first).
    /// Returns how long requests were held.
    pub fn release(self) -> Duration {
        let held = self.held.elapsed();
        self.reopen.open();
        held
    }
}

impl Switcher {
    /// Holds every client's new requests and waits until everything sent before is
    /// answered, within `max_pause` (else the hold ends and the error says so). Refused
    /// while a switch runs or is prepared, or another hold is in force.
    pub(crate) async fn hold_requests(&self, max_pause: Duration) -> Result<RequestHold, String> {
        let Some(_one) = self.exclusive().await else {
            return Err("a backend switch is running".into());
        };
        if self.gate.is_closed() {
            return Err("requests are already held".into());
        }
        let held = Instant::now();
        let generation = self.gate.close();
        let reopen = Reopen {
            gate: Arc::clone(&self.gate),
            upstream: self.routes.borrow().upstream,
            armed: true,
        };
        while !self.gate.all_drained(generation) {
            if held.elapsed() >= max_pause {
                reopen.open();
                return Err(format!(
                    "requests sent before the hold were not all answered within {} ms",
                    max_pause.as_millis()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(RequestHold {
            reopen,
            held,
            drain: held.elapsed(),
        })
    }
}

impl Drop for Reopen {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!("a switch was dropped while holding requests; going on with the source");
            self.gate.open(self.upstream);
        }
    }
}

/// What a prepared switch tells its coordinator.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// Names the prepared switch for commit and abort.
    pub id: u64,
    /// Each source master's offset once this proxy's requests were drained: every write it
    /// acknowledged is below it.
    pub sources: Vec<SourceCatchUp>,
    /// How long the drain took, milliseconds.
    pub drain_ms: f64,
    /// How long requests have been held so far, milliseconds.
    pub hold_ms: f64,
    /// When the hold ends by itself (abandoned) unless committed: milliseconds from now.
    pub expires_in_ms: u64,
}

impl Switcher {
    pub(crate) fn new(
        gate: Arc<Gate>,
        upstreams: Arc<Mutex<Vec<Upstream>>>,
        routes: Arc<watch::Sender<Arc<SlotMap>>>,
        router: Arc<KeyRouter>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            gate,
            upstreams,
            routes,
            router,
            connect_timeout,
            running: Mutex::new(()),
            prepared: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    fn empty_report(&self, request: &SwitchRequest) -> SwitchReport {
        let from = self.routes.borrow().clone();
        SwitchReport {
            outcome: Outcome::Refused,
            cluster: request
                .cluster
                .clone()
                .unwrap_or_else(|| from.cluster_name(0).to_owned()),
            reason: None,
            from_masters: Vec::new(),
            to_masters: Vec::new(),
            hold_ms: 0.0,
            drain_ms: 0.0,
            catch_up_ms: 0.0,
            catch_up: match request.catch_up {
                CatchUp::Sync(_) => "sync".into(),
                CatchUp::Unchecked => "unchecked".into(),
            },
            sources: Vec::new(),
            blocked_released: 0,
            subscribers_ended: 0,
            watches_aborted: 0,
            databases_ended: 0,
        }
    }

    /// Runs one switch (see the module docs): hold, catch-up, flip.
    pub(crate) async fn switch(&self, request: SwitchRequest) -> SwitchReport {
        let mut report = self.empty_report(&request);
        let Some(_one) = self.exclusive().await else {
            report.reason = Some("another switch is running".into());
            return log(report);
        };
        let mut held = match self.hold(&request, report).await {
            Ok(held) => held,
            Err(report) => return log(report),
        };
        if let CatchUp::Sync(at) = &request.catch_up
            && let Err(why) = self.catch_up(&mut held, at).await
        {
            return log(self.release(held, why));
        }
        log(self.flip(held))
    }

    /// The first phase of a switch coordinated over several proxies (each proxy of a
    /// deployment must flip together): checks, holds, drains and reads the source offsets,
    /// then keeps holding until [`commit`](Self::commit) or [`abort`](Self::abort), or until
    /// `max_pause` from the hold, when it abandons by itself. The coordinator waits for the
    /// target to reach the highest offset any proxy reported, then commits every proxy.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        request: SwitchRequest,
    ) -> Result<Prepared, SwitchReport> {
        let mut report = self.empty_report(&request);
        let Some(_one) = self.exclusive().await else {
            report.reason = Some("another switch is running".into());
            return Err(log(report));
        };
        let held = self.hold(&request, report).await.map_err(log)?;
        let prepared = Prepared {
            id: held.id,
            sources: held.report.sources.clone(),
            drain_ms: held.report.drain_ms,
            hold_ms: ms(held.held.elapsed()),
            expires_in_ms: u64::try_from(
                held.deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
        };
        let (id, deadline) = (held.id, held.deadline);
        *self.prepared.lock().await = Some(held);
        let switcher = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            let report = switcher
                .abort(id, "not committed within the hold's bound".into())
                .await;
            if report.outcome == Outcome::Abandoned {
                log(report);
            }
        });
        Ok(prepared)
    }

    /// Flips the prepared switch `id`.
    pub(crate) async fn commit(&self, id: u64) -> SwitchReport {
        let held = self.prepared.lock().await.take_if(|h| h.id == id);
        match held {
            Some(held) if Instant::now() < held.deadline => log(self.flip(held)),
            Some(held) => log(self.release(held, "committed after the hold's bound".into())),
            None => self.no_such(id),
        }
    }

    /// Abandons the prepared switch `id`: the proxy goes on with the source.
    pub(crate) async fn abort(&self, id: u64, why: String) -> SwitchReport {
        let held = self.prepared.lock().await.take_if(|h| h.id == id);
        match held {
            Some(held) => self.release(held, why),
            None => self.no_such(id),
        }
    }

    fn no_such(&self, id: u64) -> SwitchReport {
        let mut report = self.empty_report(&SwitchRequest {
            cluster: None,
            seeds: Vec::new(),
            credentials: None,
            catch_up: CatchUp::Unchecked,
            max_pause: DEFAULT_MAX_PAUSE,
        });
        report.reason = Some(format!(
            "no prepared switch {id}: it was committed, aborted, or abandoned when its hold ran \
             out; the proxy serves what it served before unless a commit succeeded"
        ));
        report
    }

    /// The right to run a switch: none is running or prepared.
    async fn exclusive(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.running.try_lock().ok()?;
        self.prepared.lock().await.is_none().then_some(guard)
    }

    /// Pre-flight, hold, drain, source offsets. On failure the report says why (refused, or
    /// abandoned with the gate open again).
    async fn hold(
        &self,
        request: &SwitchRequest,
        mut report: SwitchReport,
    ) -> Result<Held, SwitchReport> {
        let refuse = |mut report: SwitchReport, why: String| {
            report.outcome = Outcome::Refused;
            report.reason = Some(why);
            report
        };
        if request.seeds.is_empty() {
            return Err(refuse(report, "no seed of the target was given".into()));
        }
        // Pre-flight: nothing is held yet.
        let upstreams = Arc::clone(&self.upstreams).lock_owned().await;
        let from = self.routes.borrow().clone();
        let c = match &request.cluster {
            Some(name) => match upstreams.iter().position(|u| u.name == *name) {
                Some(c) => c,
                None => {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    let why = format!(
                        "this endpoint has no cluster named {name:?} (it has {})",
                        known.join(", ")
                    );
                    return Err(refuse(report, why));
                }
            },
            None if upstreams.len() == 1 => 0,
            None => {
                let why = format!(
                    "this endpoint serves {} clusters; name the one to switch",
                    upstreams.len()
                );
                return Err(refuse(report, why));
            }
        };
        // A Sentinel group's keys are all in one slot; from the flip on they route by hash
        // slot (connections in another database than 0 end, see `Session::handle`).
        let from_group = upstreams[c].group.is_some();
        let target = Upstream {
            name: upstreams[c].name.clone(),
            seeds: request.seeds.clone(),
            credentials: request.credentials.clone().map(Arc::new),
            epoch: upstreams[c].epoch + 1,
            group: None,
            group_epoch: Arc::default(),
        };
        report.from_masters = names(from.cluster_masters(c));
        let to = match refresh::fetch(&[], &target, self.connect_timeout, from.version + 1).await {
            Ok(to) => to,
            Err(e) => return Err(refuse(report, format!("the target does not answer: {e}"))),
        };
        if to.covered_slots() < 16384 {
            let why = format!(
                "the target serves {} of 16384 slots; it must serve all of them",
                to.covered_slots()
            );
            return Err(refuse(report, why));
        }
        if to.masters().iter().any(|m| from.masters().contains(m)) {
            let why =
                "the target shares nodes with a cluster served now; it is the same cluster".into();
            return Err(refuse(report, why));
        }
        let sources = from.cluster_masters(c).to_vec();
        if let CatchUp::Sync(at) = &request.catch_up {
            let applied = match sync_offsets(at, self.connect_timeout).await {
                Ok(applied) => applied,
                Err(e) => return Err(refuse(report, e)),
            };
            let missing: Vec<String> = names(&sources)
                .into_iter()
                .filter(|m| !applied.iter().any(|(a, _)| a == m))
                .collect();
            if !missing.is_empty() {
                let follows: Vec<&str> = applied.iter().map(|(a, _)| a.as_str()).collect();
                let why = format!(
                    "the sync at {at} does not follow source master(s) {} (it follows {}); \
                     restart it from the source served now",
                    missing.join(", "),
                    follows.join(", ")
                );
                return Err(refuse(report, why));
            }
        }
        report.to_masters = names(to.masters());

        // Hold.
        let held_at = Instant::now();
        let deadline = held_at + request.max_pause;
        let generation = self.gate.close();
        let watching = self.gate.watching.load(Ordering::SeqCst).max(0);
        let subscribed = self.gate.subscribed.load(Ordering::SeqCst).max(0);
        let other_database = self.gate.other_database.load(Ordering::SeqCst).max(0);
        let mut held = Held {
            from_group,
            other_database,
            reopen: Reopen {
                gate: Arc::clone(&self.gate),
                upstream: from.upstream,
                armed: true,
            },
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            upstreams,
            cluster: c,
            target,
            to,
            from,
            held: held_at,
            deadline,
            max_pause: request.max_pause,
            watching,
            subscribed,
            report,
        };
        while !self.gate.all_drained(generation) {
            if Instant::now() >= deadline {
                let why = format!(
                    "requests sent before the hold were not all answered within {} ms",
                    request.max_pause.as_millis()
                );
                return Err(self.release(held, why));
            }
            tokio::time::sleep(POLL).await;
        }
        held.report.drain_ms = ms(held_at.elapsed());
        held.report.blocked_released = self.gate.released.load(Ordering::SeqCst);

        // Everything acknowledged so far is below each master's offset now.
        let timeouts = Timeouts {
            connect: self.connect_timeout,
            response: self.connect_timeout,
        };
        for master in &sources {
            let offset = async {
                let credentials = held.from.credentials_of(master, held.cluster);
                let mut client = NodeClient::connect_as(master, timeouts, credentials)
                    .await
                    .map_err(|e| e.to_string())?;
                let info = client.replication_info().await.map_err(|e| e.to_string())?;
                info.repl_offset
                    .ok_or_else(|| "INFO replication has no master_repl_offset".to_owned())
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, offset).await {
                Ok(Ok(offset)) => held.report.sources.push(SourceCatchUp {
                    master: master.to_string(),
                    barrier_offset: offset,
                    applied_offset: None,
                }),
                Ok(Err(e)) => {
                    let why = format!(
                        "cannot read the replication offset of source master {master}: {e}"
                    );
                    return Err(self.release(held, why));
                }
                Err(_) => {
                    let why = format!(
                        "source master {master} did not tell its replication offset within the \
                         hold's {} ms",
                        request.max_pause.as_millis()
                    );
                    return Err(self.release(held, why));
                }
            }
        }
        Ok(held)
    }

    /// Waits, within the hold's bound, until the sync at `at` has applied every source
    /// master's barrier offset.
    async fn catch_up(&self, held: &mut Held, at: &str) -> Result<(), String> {
        let started = Instant::now();
        // Whether the sync answered at all during the hold, for the report.
        let mut answered = false;
        let mut last_error = None;
        loop {
            let left = held.deadline.saturating_duration_since(Instant::now());
            let polled = tokio::time::timeout(left, sync_offsets(at, self.connect_timeout))
                .await
                .unwrap_or_else(|_| Err("no answer".into()));
            match polled {
                Ok(applied) => {
                    answered = true;
                    for source in &mut held.report.sources {
                        source.applied_offset = applied
                            .iter()
                            .find(|(a, _)| *a == source.master)
                            .map(|(_, o)| *o);
                    }
                }
                Err(e) => last_error = Some(e),
            }
            held.report.catch_up_ms = ms(started.elapsed());
            let behind: Vec<&SourceCatchUp> = held
                .report
                .sources
                .iter()
                .filter(|s| s.applied_offset.is_none_or(|a| a < s.barrier_offset))
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= held.deadline {
                let detail = behind
                    .iter()
                    .map(|s| match s.applied_offset {
                        Some(a) => format!(
                            "{} applied {a} of {} ({} bytes behind)",
                            s.master,
                            s.barrier_offset,
                            s.barrier_offset - a
                        ),
                        None => format!("{} unknown to the sync", s.master),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(match last_error {
                    Some(e) if !answered => {
                        format!("the sync at {at} did not answer during the hold ({e}); {detail}")
                    }
                    _ => format!(
                        "the target did not catch up within {} ms: {detail}",
                        held.max_pause.as_millis()
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Routes to the target from now on and lets the held requests go.
    fn flip(&self, held: Held) -> SwitchReport {
        let Held {
            reopen,
            mut upstreams,
            cluster,
            target,
            to,
            from,
            held: held_at,
            watching,
            subscribed,
            from_group,
            other_database,
            mut report,
            ..
        } = held;
        // The other clusters' parts stay as they are.
        let parts: Vec<Arc<SlotMap>> = (0..from.clusters())
            .map(|i| {
                if i == cluster {
                    Arc::new(to.clone())
                } else {
                    Arc::new(from.cluster_map(i).unwrap_or_else(SlotMap::empty))
                }
            })
            .collect();
        let version = from.version.max(self.routes.borrow().version) + 1;
        let flipped = SlotMap::combine(&parts, version);
        let epoch = flipped.upstream;
        upstreams[cluster] = target;
        if from_group {
            self.router.route_by_slot();
            report.databases_ended = other_database;
        }
        self.routes.send_replace(Arc::new(flipped));
        self.gate.open(epoch);
        reopen.disarm();
        drop(upstreams);
        report.hold_ms = ms(held_at.elapsed());
        report.outcome = Outcome::Switched;
        report.subscribers_ended = subscribed;
        report.watches_aborted = watching;
        report
    }

    /// Abandons: the gate opens on the source, nothing changed.
    fn release(&self, held: Held, why: String) -> SwitchReport {
        self.gate.open(held.from.upstream);
        held.reopen.disarm();
        let mut report = held.report;
        report.hold_ms = ms(held.held.elapsed());
        report.outcome = Outcome::Abandoned;
        report.reason = Some(why);
        report
    }
}

/// Logs how a switch ended, and passes its report on.
fn log(report: SwitchReport) -> SwitchReport {
    match report.outcome {
        Outcome::Switched => tracing::info!(
            cluster = %report.cluster,
            hold_ms = report.hold_ms,
            to = ?report.to_masters,
            "switched to the new backend"
        ),
        _ => tracing::warn!(
            cluster = %report.cluster,
            outcome = ?report.outcome,
            reason = report.reason.as_deref().unwrap_or(""),
            "backend switch did not happen; serving the same backend as before"
        ),
    }
    report
}

fn names(nodes: &[NodeAddr]) -> Vec<String> {
    nodes.iter().map(ToString::to_string).collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The body of a sync's `GET /offsets`.
#[derive(Debug, Deserialize)]
struct Offsets {
    sources: Vec<AppliedSource>,
}

#[derive(Debug, Deserialize)]
struct AppliedSource {
    address: String,
    offset: u64,
}

/// Asks the sync at `at` (`host:port`, optionally `http://` and a path) for the source offsets
/// it has applied to the target, per source master.
async fn sync_offsets(at: &str, timeout: Duration) -> Result<Vec<(String, u64)>, String> {
    let rest = at.strip_prefix("http://").unwrap_or(at);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/offsets"),
    };
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut response = Vec::with_capacity(1024);
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("the sync at {at} did not answer within {timeout:?}"))?
        .map_err(|e| format!("the sync at {at}: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("the sync at {at} sent no HTTP response"))?;
    let status = String::from_utf8_lossy(&response[..split]);
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        let line = status.lines().next().unwrap_or_default();
        return Err(format!("the sync at {at} answered {line} to GET {path}"));
    }
    let offsets: Offsets = serde_json::from_slice(&response[split + 4..])
        .map_err(|e| format!("the sync at {at} sent offsets that do not parse: {e}"))?;
    Ok(offsets
        .sources
        .into_iter()
        .map(|s| (s.address, s.offset))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_drained_only_when_every_worker_said_so() {
        let gate = Gate::new(2);
        let generation = gate.close();
        assert!(gate.is_closed());
        gate.drained(0, generation, 1);
        assert!(!gate.all_drained(generation));
        gate.drained(1, generation, 2);
        assert!(gate.all_drained(generation));
        assert_eq!(gate.released.load(Ordering::SeqCst), 3);
        gate.open(1);
        assert!(!gate.is_closed());
        assert_eq!(gate.subscribe().borrow().upstream, 1);
        // The next hold needs new acknowledgements.
        let next = gate.close();
        assert!(!gate.all_drained(next));
    }
}
