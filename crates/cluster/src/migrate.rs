//! Slot migration: moves hash slots and their keys between masters of a live cluster, closes
//! slots left half-moved by a crash, and reports progress with an ETA.
//!
//! It must never lose a key and must end every operation with each slot owned by exactly one
//! master and stable (neither migrating nor importing) on every master; when it cannot, it stops
//! with the slot open, which is safe (clients are redirected with `-ASK`) and which
//! [`SlotMigrator::repair_open_slots`] closes later. Every command is bounded by a timeout.
//!
//! # Moving slots
//! A step moves up to [`MigrateOptions::slots_per_step`] slots between one source and one
//! target, in this order (each stage is one pipeline per node, so a step costs a handful of round
//! trips however many slots it holds):
//! 1. `CLUSTER SETSLOT s IMPORTING <source>` on the target, before the source starts sending
//!    clients there with `-ASK` (a target that is not importing would bounce them back), once
//!    the target's own table names an owner for every slot: Redis never rebinds a slot it is
//!    importing, so a target opened too early would refuse the keys for good (`CLUSTERDOWN Hash
//!    slot not served`). A slot found open in that state is closed on the target, learned, and
//!    opened again;
//! 2. `CLUSTER SETSLOT s MIGRATING <target>` on the source, with `CLUSTER GETKEYSINSLOT`;
//! 3. rounds of `MIGRATE host port "" 0 <timeout> REPLACE KEYS k…` (one per slot and batch:
//!    `MIGRATE` refuses keys of different slots) with the next `GETKEYSINSLOT` of each slot at the
//!    end of the same pipeline, until every slot is empty on the source. `REPLACE` is right because
//!    while a slot is migrating the source's copy is authoritative, and it makes a repeat after a
//!    crash between the target's `RESTORE` and the source's `DEL` safe;
//! 4. `CLUSTER SETSLOT s NODE <target>` on the target first (it then owns the slot and bumps its
//!    epoch), then on the source and every other master at once. A source still holding keys
//!    (it refuses) is drained again.
//!
//! Big keys: a batch whose `MIGRATE` fails with `IOERR` (an error or timeout talking to the
//! target) or whose reply times out is split in halves with twice the timeout, down to one key,
//! whose timeout then grows up to [`MigrateOptions::max_migrate_timeout`]; a key that still
//! cannot move is [`ClusterError::KeyTooBig`], with the slot left open and the key on the source.
//! `-TRYAGAIN`, and `CLUSTERDOWN` from a target that has just joined, are retried after a pause
//! (a bounded number of times). `-ASK` never reaches us:
//! Redis serves `MIGRATE` locally for an open slot; clients get `-ASK` for keys already moved
//! and follow it. A target that answers `MOVED` (it is no longer importing: someone closed the
//! slot) stops the step with [`ClusterError::Command`].
//!
//! # Speed, and why these defaults
//! Measured with `bench/reshard.sh` (3 → 5 masters, 300 000 keys of 100 B, so ~18 keys per slot
//! and 6553 slots to move; 2 shared cores, so single runs vary by ±50%): per-slot round trips
//! and the `nodes.conf` save every `SETSLOT` triggers dominate, not the keys. Opening, draining
//! and closing many slots per pipeline is what pays: 8 slots per step took 2.5 s, 32 took
//! 1.6–3.4 s, 128 took 1.6–2.8 s (within noise of 32); one step at a time instead of one per
//! source/target pair took 3.0 s. Keys per `MIGRATE` barely matter at this size (20: 1.7 s,
//! 100: 1.6–3.4 s); one 500-key `MIGRATE` per slot and round instead of 4 × 100 took 2.6 s.
//! Defaults: 32 slots per step (more gains nothing measurable and keeps more slots open, so
//! more `-ASK` redirects and more to repair after a crash), 100 keys per `MIGRATE`, 4 `MIGRATE`s
//! per slot and round, at most one step per source and per target at a time (each node runs
//! commands on one thread, and `MIGRATE` blocks the source until the target answers, so a
//! second step on one node only queues). In the same runs `redis-cli --cluster rebalance`
//! took 10.8–15.8 s (README, benchmarks).
//!
//! A master that gives away its last slot turns itself into a replica of the node that took it
//! (Redis's `cluster-allow-replica-migration`, on by default): when it then refuses the final
//! `SETSLOT … NODE` with "only with masters", the drain is complete, and that is success.
//!
//! # Closing open slots ([`SlotMigrator::repair_open_slots`])
//! Each open slot is read from the `myself` line of every master's `CLUSTER NODES`; a
//! `[s->-B]` marker on A and a `[s-<-A]` marker on B both describe the move A → B. Then:
//! - both sides open (A migrating to B, B importing from A): finish the move — drain A, then
//!   `SETSLOT NODE B` everywhere, as a step would;
//! - B already owns the slot (a crash after step 4 reached B only): drain anything A still holds
//!   into B and send `SETSLOT NODE B` to A and every other master;
//! - one side open and B holds keys of the slot (clients were sent there with `-ASK`): finish
//!   toward B, opening the missing side first — the keys on B are the newest writes;
//! - one side open and B holds none: A keeps the slot; `SETSLOT s STABLE` on whichever side is
//!   open. Nothing left A, so nothing can be lost;
//! - B is gone (not a reachable master): A keeps the slot (`STABLE` on A);
//! - A is gone: if B holds no keys of the slot, `STABLE` on B (A's replica will take over A's
//!   slots); if B holds keys, [`ClusterError::OpenSlotUnresolvable`] — we cannot tell which copy
//!   is current while the owner is down, so wait for a failover and repair again;
//! - markers that disagree (A migrating to B while C imports from A) are
//!   [`ClusterError::OpenSlotUnresolvable`], for a person to look at.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts};
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::placement::plural;
use crate::rebalance::SlotMove;
use crate::slots::SlotSet;
use crate::topology::{Role, SlotMigration, Topology, short_id};

/// How often `-TRYAGAIN` is retried before giving up on a batch.
const TRYAGAIN_ATTEMPTS: u32 = 50;

/// The pause before retrying after `-TRYAGAIN`.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(100);

/// How long a target may take to learn who owns the slots it is about to import (the owner's
/// next heartbeat tells it; a node met a second ago may not have heard yet).
const TARGET_VIEW_WAIT: Duration = Duration::from_secs(15);

/// How often a source that refuses `SETSLOT NODE` because keys arrived is drained again.
const FINAL_DRAIN_ATTEMPTS: u32 = 3;

/// How slots and keys are moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Keys per `MIGRATE` command.
    pub batch_keys: usize,
    /// `MIGRATE` commands per slot sent in one pipeline round.
    pub pipeline_depth: usize,
    /// Slots one step opens, drains and closes together (same source and target).
    pub slots_per_step: usize,
    /// Steps running at the same time; there is never more than one per source node and one per
    /// target node.
    pub parallel_steps: usize,
    /// `MIGRATE`'s own timeout (the longest silence from the target) for a normal batch.
    pub migrate_timeout: Duration,
    /// The longest `MIGRATE` timeout a retried big key gets before it is reported.
    pub max_migrate_timeout: Duration,
    /// Connection and reply timeouts of control commands (`SETSLOT`, `CLUSTER NODES`).
    pub timeouts: Timeouts,
    /// How to log in to the nodes; also passed to `MIGRATE` for the target.
    pub credentials: Option<Credentials>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            batch_keys: 100,
            pipeline_depth: 4,
            slots_per_step: 32,
            parallel_steps: 4,
            migrate_timeout: Duration::from_secs(5),
            max_migrate_timeout: Duration::from_secs(60),
            timeouts: Timeouts::default(),
            credentials: None,
        }
    }
}

/// What a migration run is doing, for progress output. `Display` gives one human line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MigrateProgress {
    /// The moves were checked and their keys counted; nothing has moved yet.
    Started {
        /// Slots to move.
        slots_total: usize,
        /// Keys in those slots when counted.
        keys_total: u64,
    },
    /// A step finished: its slots are owned by the target on the source and the target.
    Moved {
        /// The source.
        from: NodeAddr,
        /// The target.
        to: NodeAddr,
        /// First and last slot of the step.
        first_slot: u16,
        /// Last slot of the step.
        last_slot: u16,
        /// Keys this step moved.
        keys: u64,
        /// Slots moved so far, in all steps.
        slots_done: usize,
        /// Slots to move in all.
        slots_total: usize,
        /// Keys moved so far.
        keys_moved: u64,
        /// Keys counted at the start (writes during the run may move more).
        keys_total: u64,
        /// Time since the run started.
        elapsed: Duration,
    },
    /// Every move is done.
    Finished {
        /// Slots moved.
        slots: usize,
        /// Keys moved.
        keys: u64,
        /// Time the run took.
        elapsed: Duration,
    },
}

impl MigrateProgress {
    /// Keys moved per second so far (0 before anything moved).
    pub fn keys_per_second(&self) -> f64 {
        match self {
            Self::Moved {
                keys_moved,
                elapsed,
                ..
            }
            | Self::Finished {
                keys: keys_moved,
                elapsed,
                ..
            } => per_second(*keys_moved, *elapsed),
            Self::Started { .. } => 0.0,
        }
    }

    /// Estimated time left: from the key rate when keys were counted, else from the slot rate.
    pub fn eta(&self) -> Option<Duration> {
        let Self::Moved {
            slots_done,
            slots_total,
            keys_moved,
            keys_total,
            elapsed,
            ..
        } = self
        else {
            return None;
        };
        let (done, total) = if *keys_total > 0 && *keys_moved > 0 {
            (*keys_moved as f64, (*keys_total).max(*keys_moved) as f64)
        } else {
            (*slots_done as f64, *slots_total as f64)
        };
        if done <= 0.0 {
            return None;
        }
        Some(elapsed.mul_f64((total - done).max(0.0) / done))
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

impl fmt::Display for MigrateProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started {
                slots_total,
                keys_total,
            } => write!(
                f,
                "moving {slots_total} slot{} holding {keys_total} key{}",
                plural(*slots_total),
                plural(usize::try_from(*keys_total).unwrap_or(usize::MAX))
            ),
            Self::Moved {
                from,
                to,
                first_slot,
                last_slot,
                keys,
                slots_done,
                slots_total,
                keys_moved,
                keys_total,
                ..
            } => {
                let slots = if first_slot == last_slot {
                    format!("slot {first_slot}")
                } else {
                    format!("slots {first_slot}-{last_slot}")
                };
                write!(
                    f,
                    "{slots} {from} → {to} ({keys} keys): {slots_done}/{slots_total} slots, \
                     {keys_moved}/{keys_total} keys, {:.0} keys/s",
                    self.keys_per_second()
                )?;
                match self.eta() {
                    Some(eta) => write!(f, ", ETA {}s", eta.as_secs()),
                    None => Ok(()),
                }
            }
            Self::Finished {
                slots,
                keys,
                elapsed,
            } => write!(
                f,
                "moved {slots} slot{} and {keys} keys in {:.1}s ({:.0} keys/s)",
                plural(*slots),
                elapsed.as_secs_f64(),
                self.keys_per_second()
            ),
        }
    }
}

/// What a run of [`SlotMigrator::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrateSummary {
    /// Slots moved.
    pub slots: usize,
    /// Keys moved (counted when each slot started migrating).
    pub keys: u64,
    /// `MIGRATE` batches retried smaller or slower (big keys, slow targets).
    pub retries: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// What one step moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepOutcome {
    /// Keys moved.
    pub keys: u64,
    /// `MIGRATE` batches retried smaller or slower.
    pub retries: u64,
}

impl std::ops::AddAssign for StepOutcome {
    fn add_assign(&mut self, other: Self) {
        self.keys += other.keys;
        self.retries += other.retries;
    }
}

/// How an open slot was closed by [`SlotMigrator::repair_open_slots`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SlotRepair {
    /// The move was finished: the slot and its keys are now on `to`.
    Finished {
        /// The slot.
        slot: u16,
        /// The source id.
        from: String,
        /// The target id, now the owner.
        to: String,
        /// Keys moved while finishing.
        keys: u64,
    },
    /// The move was abandoned: `owner` keeps the slot, which is stable again.
    Kept {
        /// The slot.
        slot: u16,
        /// The owner that keeps it.
        owner: String,
    },
}

impl fmt::Display for SlotRepair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Finished {
                slot,
                from,
                to,
                keys,
            } => write!(
                f,
                "slot {slot}: finished the move from {} to {} ({keys} keys moved)",
                short_id(from),
                short_id(to)
            ),
            Self::Kept { slot, owner } => write!(
                f,
                "slot {slot}: {} keeps it; no key had reached the other side",
                short_id(owner)
            ),
        }
    }
}

/// One reachable master: a connection for short control commands and one whose reply timeout
/// allows the longest `MIGRATE`.
#[derive(Debug, Clone)]
struct Master {
    id: String,
    addr: NodeAddr,
    control: NodeClient,
    data: NodeClient,
}

/// Moves slots between the masters of one cluster. Connect once, then run plans and repairs.
#[derive(Debug, Clone)]
pub struct SlotMigrator {
    masters: Arc<BTreeMap<String, Master>>,
    unreachable: BTreeMap<String, String>,
    view: Topology,
    options: Arc<MigrateOptions>,
}

impl SlotMigrator {
    /// Reads the cluster from the first seed that answers and connects to every master it lists
    /// (masters flagged failing, in handshake or without address are left out; masters that do
    /// not answer are remembered as unreachable).
    ///
    /// # Errors
    /// [`ClusterError::InvalidTopology`] for no seeds, else the last seed's error when none
    /// answers.
    pub async fn connect(
        seeds: &[NodeAddr],
        options: MigrateOptions,
    ) -> Result<Self, ClusterError> {
        let mut last_error = ClusterError::InvalidTopology("no seed address given".into());
        let mut view = None;
        for seed in seeds {
            match connect(seed, &options, options.timeouts).await {
                Ok(mut client) => match client.cluster_nodes().await {
                    Ok(topology) => {
                        view = Some(topology);
                        break;
                    }
                    Err(e) => last_error = e,
                },
                Err(e) => last_error = e,
            }
        }
        let view = view.ok_or(last_error)?;
        let data_timeouts = Timeouts {
            connect: options.timeouts.connect,
            response: options.max_migrate_timeout + options.timeouts.response,
        };
        let mut masters = BTreeMap::new();
        let mut unreachable = BTreeMap::new();
        for node in view.masters() {
            let Some(addr) = node.addr.clone().filter(|_| {
                !node.flags.handshake && !node.flags.noaddr && !node.flags.is_failing()
            }) else {
                unreachable.insert(
                    node.id.clone(),
                    format!("{} is failing or has no address", node.label()),
                );
                continue;
            };
            let links = async {
                let control = connect(&addr, &options, options.timeouts).await?;
                let data = connect(&addr, &options, data_timeouts).await?;
                Ok::<_, ClusterError>((control, data))
            };
            match links.await {
                Ok((control, data)) => {
                    masters.insert(
                        node.id.clone(),
                        Master {
                            id: node.id.clone(),
                            addr,
                            control,
                            data,
                        },
                    );
                }
                Err(e) => {
                    unreachable.insert(node.id.clone(), e.to_string());
                }
            }
        }
        Ok(Self {
            masters: Arc::new(masters),
            unreachable,
            view,
            options: Arc::new(options),
        })
    }

    /// The cluster as the seed saw it when connecting.
    pub fn view(&self) -> &Topology {
        &self.view
    }

    /// The id of the reachable master at `addr`.
    pub fn master_id(&self, addr: &NodeAddr) -> Option<&str> {
        self.masters
            .values()
            .find(|m| &m.addr == addr)
            .map(|m| m.id.as_str())
    }

    /// Slot ownership of every reachable master (empty masters included), as the seed saw it
    /// when connecting: the input [`plan_rebalance`](crate::rebalance::plan_rebalance) expects.
    pub fn owners(&self) -> BTreeMap<String, SlotSet> {
        self.masters
            .keys()
            .map(|id| {
                let slots = self
                    .view
                    .node(id)
                    .map(|n| SlotSet::from_ranges(&n.slots))
                    .unwrap_or_default();
                (id.clone(), slots)
            })
            .collect()
    }

    fn master(&self, id: &str) -> Result<&Master, ClusterError> {
        self.masters.get(id).ok_or_else(|| {
            let reason = match (self.unreachable.get(id), self.view.node(id)) {
                (Some(why), _) => why.clone(),
                (None, Some(node)) if node.role() == Role::Replica => {
                    format!("{} is a replica", node.label())
                }
                _ => "no such node in the cluster".to_owned(),
            };
            ClusterError::MasterUnavailable {
                id: id.to_owned(),
                reason,
            }
        })
    }

    fn step(&self, from: &str, to: &str, slots: Vec<u16>) -> Result<Step, ClusterError> {
        Ok(Step {
            source: self.master(from)?.clone(),
            target: self.master(to)?.clone(),
            others: self
                .masters
                .values()
                .filter(|m| m.id != from && m.id != to)
                .cloned()
                .collect(),
            slots,
            options: Arc::clone(&self.options),
        })
    }

    /// Moves `slots` from master `from` to master `to` as one step (see the module docs).
    /// Safe to repeat: slots the target already owns are only confirmed on the other masters.
    ///
    /// # Errors
    /// [`ClusterError::MasterUnavailable`] for an unknown master; [`ClusterError::KeyTooBig`];
    /// [`ClusterError::Command`] / [`ClusterError::Unreachable`] when a node refuses a step or
    /// stops answering. Slots opened before an error stay open (safe) until repaired.
    pub async fn move_slots(
        &self,
        from: &str,
        to: &str,
        slots: &[u16],
    ) -> Result<StepOutcome, ClusterError> {
        self.step(from, to, slots.to_vec())?.run().await
    }

    /// Runs `moves`, grouping consecutive slots of the same source and target into steps, with
    /// up to [`MigrateOptions::parallel_steps`] steps at once but never two on one source or one
    /// target. Reports one event per step through `on_progress`.
    ///
    /// After the first error no new step starts; steps under way finish, then the error is
    /// returned. Moves are idempotent, so re-planning from a fresh view and running again (after
    /// [`repair_open_slots`](Self::repair_open_slots)) resumes the work.
    ///
    /// # Errors
    /// As [`move_slots`](Self::move_slots).
    pub async fn run(
        &self,
        moves: &[SlotMove],
        on_progress: &mut (dyn FnMut(&MigrateProgress) + Send),
    ) -> Result<MigrateSummary, ClusterError> {
        let started = Instant::now();
        let mut queues: BTreeMap<(&str, &str), VecDeque<Vec<u16>>> = BTreeMap::new();
        for mv in moves {
            self.master(&mv.from)?;
            self.master(&mv.to)?;
            let queue = queues.entry((&mv.from, &mv.to)).or_default();
            match queue.back_mut() {
                Some(group) if group.len() < self.options.slots_per_step.max(1) => {
                    group.push(mv.slot);
                }
                _ => queue.push_back(vec![mv.slot]),
            }
        }
        let keys_total = self.count_keys(moves).await?;
        on_progress(&MigrateProgress::Started {
            slots_total: moves.len(),
            keys_total,
        });

        let mut busy_sources: BTreeSet<String> = BTreeSet::new();
        let mut busy_targets: BTreeSet<String> = BTreeSet::new();
        let mut running: JoinSet<(Step, Result<StepOutcome, ClusterError>)> = JoinSet::new();
        let mut done = StepOutcome::default();
        let mut slots_done = 0;
        let mut first_error = None;
        loop {
            if first_error.is_none() {
                for ((from, to), queue) in &mut queues {
                    if running.len() >= self.options.parallel_steps.max(1) {
                        break;
                    }
                    if busy_sources.contains(*from) || busy_targets.contains(*to) {
                        continue;
                    }
                    let Some(slots) = queue.pop_front() else {
                        continue;
                    };
                    let step = self.step(from, to, slots)?;
                    busy_sources.insert(step.source.id.clone());
                    busy_targets.insert(step.target.id.clone());
                    running.spawn(async move {
                        let result = step.run().await;
                        (step, result)
                    });
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (step, result) = match joined {
                Ok(finished) => finished,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            busy_sources.remove(&step.source.id);
            busy_targets.remove(&step.target.id);
            match result {
                Ok(outcome) => {
                    done += outcome;
                    slots_done += step.slots.len();
                    on_progress(&MigrateProgress::Moved {
                        from: step.source.addr.clone(),
                        to: step.target.addr.clone(),
                        first_slot: step.slots.first().copied().unwrap_or_default(),
                        last_slot: step.slots.last().copied().unwrap_or_default(),
                        keys: outcome.keys,
                        slots_done,
                        slots_total: moves.len(),
                        keys_moved: done.keys,
                        keys_total,
                        elapsed: started.elapsed(),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "slot migration step failed; finishing the steps under way");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let elapsed = started.elapsed();
        on_progress(&MigrateProgress::Finished {
            slots: slots_done,
            keys: done.keys,
            elapsed,
        });
        Ok(MigrateSummary {
            slots: slots_done,
            keys: done.keys,
            retries: done.retries,
            elapsed,
        })
    }

    /// Keys in the slots of `moves`, counted on their sources (one pipeline per source).
    async fn count_keys(&self, moves: &[SlotMove]) -> Result<u64, ClusterError> {
        let mut by_source: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        for mv in moves {
            by_source.entry(&mv.from).or_default().push(mv.slot);
        }
        let mut total = 0;
        for (id, slots) in by_source {
            let mut client = self.master(id)?.control.clone();
            let mut pipe = redis::pipe();
            for slot in &slots {
                pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*slot);
            }
            for reply in client
                .pipeline(&mut pipe, "CLUSTER COUNTKEYSINSLOT")
                .await?
            {
                if let Ok(Value::Int(n)) = reply {
                    total += u64::try_from(n).unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    /// Finds every open slot on the reachable masters and closes it without losing a key (the
    /// cases are in the module docs). Returns what was done, by slot.
    ///
    /// # Errors
    /// [`ClusterError::OpenSlotUnresolvable`] for a slot that cannot be closed safely now (the
    /// other slots are still closed first); errors of the moves it finishes.
    pub async fn repair_open_slots(&self) -> Result<Vec<SlotRepair>, ClusterError> {
        let mut views: BTreeMap<String, Topology> = BTreeMap::new();
        let mut open: BTreeMap<u16, BTreeSet<(String, String)>> = BTreeMap::new();
        let mut markers: BTreeMap<u16, Vec<(String, SlotMigration)>> = BTreeMap::new();
        for master in self.masters.values() {
            let view = master.control.clone().cluster_nodes().await?;
            if let Some(me) = view.myself() {
                for migration in &me.migrations {
                    let pair = match migration {
                        SlotMigration::Migrating { to, .. } => (master.id.clone(), to.clone()),
                        SlotMigration::Importing { from, .. } => (from.clone(), master.id.clone()),
                    };
                    open.entry(migration.slot()).or_default().insert(pair);
                    markers
                        .entry(migration.slot())
                        .or_default()
                        .push((master.id.clone(), migration.clone()));
                }
            }
            views.insert(master.id.clone(), view);
        }
        let mut repairs = Vec::new();
        let mut unresolved = None;
        for (slot, pairs) in open {
            let result = match pairs.iter().next() {
                Some((from, to)) if pairs.len() == 1 => {
                    self.repair_slot(slot, from, to, &markers[&slot], &views)
                        .await
                }
                _ => Err(ClusterError::OpenSlotUnresolvable {
                    slot,
                    reason: format!(
                        "masters disagree on where it is going ({})",
                        pairs
                            .iter()
                            .map(|(a, b)| format!("{} → {}", short_id(a), short_id(b)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            };
            match result {
                Ok(repair) => repairs.push(repair),
                Err(e @ ClusterError::OpenSlotUnresolvable { .. }) => {
                    unresolved.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match unresolved {
            Some(e) => Err(e),
            None => Ok(repairs),
        }
    }

    async fn repair_slot(
        &self,
        slot: u16,
        from: &str,
        to: &str,
        markers: &[(String, SlotMigration)],
        views: &BTreeMap<String, Topology>,
    ) -> Result<SlotRepair, ClusterError> {
        let migrating = markers
            .iter()
            .any(|(holder, m)| holder == from && matches!(m, SlotMigration::Migrating { .. }));
        let importing = markers
            .iter()
            .any(|(holder, m)| holder == to && matches!(m, SlotMigration::Importing { .. }));
        let kept = SlotRepair::Kept {
            slot,
            owner: from.to_owned(),
        };
        let (source, target) = (self.masters.get(from), self.masters.get(to));
        let Some(target) = target else {
            // The destination is gone: whatever it held is out of reach; the source keeps the slot.
            let source = self.master(from)?;
            set_stable(source, slot).await?;
            return Ok(kept);
        };
        let target_keys = count_keys_in_slot(target, slot).await?;
        let Some(_) = source else {
            if target_keys > 0 {
                return Err(ClusterError::OpenSlotUnresolvable {
                    slot,
                    reason: format!(
                        "its source {} is unreachable and {} holds {target_keys} of its keys; \
                         repair again once the source or its replica answers",
                        short_id(from),
                        target.addr
                    ),
                });
            }
            set_stable(target, slot).await?;
            return Ok(kept);
        };
        let target_owns = views
            .get(to)
            .and_then(Topology::myself)
            .is_some_and(|me| me.slots.iter().any(|r| r.contains(slot)));
        if target_owns || (migrating && importing) || target_keys > 0 {
            let outcome = self.step(from, to, vec![slot])?.run().await?;
            return Ok(SlotRepair::Finished {
                slot,
                from: from.to_owned(),
                to: to.to_owned(),
                keys: outcome.keys,
            });
        }
        if let Some(source) = source.filter(|_| migrating) {
            set_stable(source, slot).await?;
        }
        if importing {
            set_stable(target, slot).await?;
        }
        Ok(kept)
    }
}

async fn connect(
    addr: &NodeAddr,
    options: &MigrateOptions,
    timeouts: Timeouts,
) -> Result<NodeClient, ClusterError> {
    NodeClient::connect_as(addr, timeouts, options.credentials.as_ref()).await
}

async fn set_stable(master: &Master, slot: u16) -> Result<(), ClusterError> {
    let slot = slot.to_string();
    master
        .control
        .clone()
        .query::<()>(&["CLUSTER", "SETSLOT", &slot, "STABLE"])
        .await
}

async fn count_keys_in_slot(master: &Master, slot: u16) -> Result<u64, ClusterError> {
    let slot = slot.to_string();
    master
        .control
        .clone()
        .query(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
        .await
}

/// One step: some slots from one source to one target, plus every other master to tell.
#[derive(Debug)]
struct Step {
    source: Master,
    target: Master,
    others: Vec<Master>,
    slots: Vec<u16>,
    options: Arc<MigrateOptions>,
}

/// How one `MIGRATE` ended.
enum MigrateFailure {
    /// `IOERR` or a reply timeout: worth retrying smaller and slower.
    Slow(String),
    /// `-TRYAGAIN`: worth retrying as is after a pause.
    TryAgain(String),
    /// Anything else: stop.
    Fatal(ClusterError),
}

impl Step {
    async fn run(&self) -> Result<StepOutcome, ClusterError> {
        let opened = self.open_on_target().await?;
        let keys = self.open_on_source(&opened).await?;
        let mut outcome = self.drain(&opened).await?;
        outcome.keys = keys;
        outcome += self.close().await?;
        Ok(outcome)
    }

    fn setslot_pipeline(&self, slots: &[u16], state: &str, node: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for slot in slots {
            pipe.cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(*slot)
                .arg(state)
                .arg(node);
        }
        pipe
    }

    /// `IMPORTING` on the target; returns the slots it does not own yet (those it owns were
    /// moved by an earlier run and only need closing).
    async fn open_on_target(&self) -> Result<Vec<u16>, ClusterError> {
        self.wait_target_knows_owners(&self.slots).await?;
        let mut pipe = self.setslot_pipeline(&self.slots, "IMPORTING", &self.source.id);
        let replies = self
            .target
            .control
            .clone()
            .pipeline(&mut pipe, "CLUSTER SETSLOT … IMPORTING")
            .await?;
        let mut opened = Vec::with_capacity(self.slots.len());
        for (slot, reply) in self.slots.iter().zip(replies) {
            match reply {
                Ok(_) => opened.push(*slot),
                Err(e) if e.to_string().contains("already the owner") => {}
                Err(e) => {
                    return Err(self.target.control.refusal(
                        &format!("CLUSTER SETSLOT {slot} IMPORTING {}", self.source.id),
                        e,
                    ));
                }
            }
        }
        Ok(opened)
    }

    /// Waits until the target's own table names an owner for every one of `slots`. A node
    /// learns an owner's slots from the owner's heartbeats, and Redis never rebinds a slot it
    /// is importing: a target opened before it heard (a master met a second ago, on a loaded
    /// machine) answers `CLUSTERDOWN Hash slot not served` to every key sent to it, for as long
    /// as the slot stays open. So such a slot is first closed on the target alone, to let it
    /// learn; the caller opens it again. Meanwhile the source, still migrating, sends clients
    /// of moved keys there with `-ASK` and the target bounces them back: a pause, never a wrong
    /// answer.
    async fn wait_target_knows_owners(&self, slots: &[u16]) -> Result<(), ClusterError> {
        let deadline = Instant::now() + TARGET_VIEW_WAIT;
        let mut closed = false;
        loop {
            let table = self.target.control.clone().cluster_nodes().await?;
            let unbound: Vec<u16> = slots
                .iter()
                .copied()
                .filter(|slot| {
                    !table
                        .nodes
                        .iter()
                        .any(|n| n.flags.master && n.slots.iter().any(|r| r.contains(*slot)))
                })
                .collect();
            let Some(slot) = unbound.first() else {
                return Ok(());
            };
            if !closed {
                closed = true;
                let mut target = self.target.control.clone();
                for slot in &unbound {
                    target
                        .query::<()>(&["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"])
                        .await?;
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{} to learn who owns slot {slot}", self.target.addr),
                    pending: vec![format!(
                        "{} lists no owner for slot {slot} (has it heard from {} yet?)",
                        self.target.addr, self.source.addr
                    )],
                    pending_nodes: vec![self.target.addr.clone()],
                });
            }
            tokio::time::sleep(TRYAGAIN_PAUSE).await;
        }
    }

    /// The target refused keys of `slot` with `Hash slot not served` (see
    /// [`wait_target_knows_owners`](Self::wait_target_knows_owners)): let it learn the owner,
    /// then open the slot there again.
    async fn reopen_on_target(&self, slot: u16) -> Result<(), ClusterError> {
        self.wait_target_knows_owners(&[slot]).await?;
        self.target
            .control
            .clone()
            .query::<()>(&[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "IMPORTING",
                &self.source.id,
            ])
            .await
    }

    /// `MIGRATING` on the source; returns how many keys the slots hold from then on. That is
    /// the number of keys the step moves: once a slot is migrating, new keys go to the target
    /// (`-ASK`), so only deletions and expiries make it differ. Counting here rather than per
    /// `MIGRATE` stays exact when a failed batch had moved some of its keys before failing.
    async fn open_on_source(&self, slots: &[u16]) -> Result<u64, ClusterError> {
        if slots.is_empty() {
            return Ok(0);
        }
        let mut pipe = self.setslot_pipeline(slots, "MIGRATING", &self.target.id);
        add_key_counts(&mut pipe, slots);
        let mut replies = self
            .source
            .control
            .clone()
            .pipeline(&mut pipe, "CLUSTER SETSLOT … MIGRATING")
            .await?
            .into_iter();
        for (slot, reply) in slots.iter().zip(replies.by_ref()) {
            if let Err(e) = reply {
                return Err(self.source.control.refusal(
                    &format!("CLUSTER SETSLOT {slot} MIGRATING {}", self.target.id),
                    e,
                ));
            }
        }
        Ok(sum_counts(replies))
    }

    /// Keys of `slots` the source holds now.
    async fn keys_on_source(&self, slots: &[u16]) -> Result<u64, ClusterError> {
        let mut pipe = redis::pipe();
        add_key_counts(&mut pipe, slots);
        let replies = self
            .source
            .control
            .clone()
            .pipeline(&mut pipe, "CLUSTER COUNTKEYSINSLOT")
            .await?;
        Ok(sum_counts(replies.into_iter()))
    }

    fn keys_per_round(&self) -> usize {
        self.options.batch_keys.max(1) * self.options.pipeline_depth.max(1)
    }

    /// Moves every key of `slots` from the source to the target.
    ///
    /// The loop ends: every round either removes the keys it listed from the source (`MIGRATE`
    /// deletes on success, `NOKEY` means they were gone) or returns an error, and a migrating
    /// slot gains no keys on the source (clients are sent to the target for keys it lacks).
    async fn drain(&self, slots: &[u16]) -> Result<StepOutcome, ClusterError> {
        let mut outcome = StepOutcome::default();
        let mut pending = self.fetch_keys(slots).await?;
        let batch = self.options.batch_keys.max(1);
        while !pending.is_empty() {
            let mut pipe = redis::pipe();
            for (slot, keys) in &pending {
                for chunk in keys.chunks(batch) {
                    pipe.add_command(self.migrate_command(chunk, self.options.migrate_timeout));
                }
                pipe.cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(*slot)
                    .arg(self.keys_per_round());
            }
            let mut replies = self
                .source
                .data
                .clone()
                .pipeline(&mut pipe, "MIGRATE")
                .await?
                .into_iter();
            let mut next = Vec::with_capacity(pending.len());
            for (slot, keys) in &pending {
                let mut retried = false;
                for chunk in keys.chunks(batch) {
                    let reply = replies.next().unwrap_or(Ok(Value::Nil));
                    match self.migrate_result(chunk, reply) {
                        Ok(()) => {}
                        Err(MigrateFailure::Fatal(e)) => return Err(e),
                        Err(_) => {
                            outcome += self.migrate_with_backoff(*slot, chunk).await?;
                            retried = true;
                        }
                    }
                }
                let listed = key_list(*slot, replies.next().unwrap_or(Ok(Value::Nil)))?;
                let left = if retried {
                    self.fetch_keys(&[*slot])
                        .await?
                        .pop()
                        .map(|(_, keys)| keys)
                        .unwrap_or_default()
                } else {
                    listed
                };
                if !left.is_empty() {
                    next.push((*slot, left));
                }
            }
            pending = next;
        }
        Ok(outcome)
    }

    /// The first keys of each slot on the source; slots without keys are left out.
    async fn fetch_keys(&self, slots: &[u16]) -> Result<Vec<(u16, Vec<Vec<u8>>)>, ClusterError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for slot in slots {
            pipe.cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(*slot)
                .arg(self.keys_per_round());
        }
        let replies = self
            .source
            .data
            .clone()
            .pipeline(&mut pipe, "CLUSTER GETKEYSINSLOT")
            .await?;
        let mut found = Vec::new();
        for (slot, reply) in slots.iter().zip(replies) {
            let keys = key_list(*slot, reply)?;
            if !keys.is_empty() {
                found.push((*slot, keys));
            }
        }
        Ok(found)
    }

    fn migrate_command(&self, keys: &[Vec<u8>], timeout: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("MIGRATE");
        let millis = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        cmd.arg(&self.target.addr.host)
            .arg(self.target.addr.port)
            .arg("")
            .arg(0)
            .arg(millis)
            .arg("REPLACE");
        if let Some(credentials) = &self.options.credentials {
            match &credentials.user {
                Some(user) => cmd.arg("AUTH2").arg(user).arg(&credentials.password),
                None => cmd.arg("AUTH").arg(&credentials.password),
            };
        }
        cmd.arg("KEYS");
        for key in keys {
            cmd.arg(key.as_slice());
        }
        cmd
    }

    /// Whether a `MIGRATE` of `keys` that answered `reply` worked (`OK`, or `NOKEY` when the keys
    /// expired or were deleted since `GETKEYSINSLOT` listed them).
    fn migrate_result(
        &self,
        keys: &[Vec<u8>],
        reply: redis::RedisResult<Value>,
    ) -> Result<(), MigrateFailure> {
        match reply {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("IOERR") || e.is_timeout() => {
                Err(MigrateFailure::Slow(e.to_string()))
            }
            Err(e) if is_transient(&e) => Err(MigrateFailure::TryAgain(e.to_string())),
            Err(e) => Err(MigrateFailure::Fatal(self.source.data.refusal(
                &format!(
                    "MIGRATE {} … KEYS ({} key{}, first {:?})",
                    self.target.addr,
                    keys.len(),
                    plural(keys.len()),
                    key_text(keys.first().map_or(&[][..], Vec::as_slice))
                ),
                e,
            ))),
        }
    }

    /// Retries a failed batch alone: halves with twice the timeout down to single keys, whose
    /// timeout then grows to the maximum.
    async fn migrate_with_backoff(
        &self,
        slot: u16,
        keys: &[Vec<u8>],
    ) -> Result<StepOutcome, ClusterError> {
        let max = self.options.max_migrate_timeout;
        let longer = |t: Duration, factor: u32| (t * factor).min(max);
        let mut outcome = StepOutcome {
            keys: 0,
            retries: 1,
        };
        let mut work = vec![(keys.to_vec(), longer(self.options.migrate_timeout, 2))];
        let mut tryagain = 0;
        let mut reopened = false;
        while let Some((keys, timeout)) = work.pop() {
            let mut pipe = redis::pipe();
            pipe.add_command(self.migrate_command(&keys, timeout));
            let reply = match self
                .source
                .data
                .clone()
                .pipeline(&mut pipe, "MIGRATE")
                .await
            {
                Ok(mut replies) => replies.pop().unwrap_or(Ok(Value::Nil)),
                Err(ClusterError::Unreachable { source, .. }) if source.is_timeout() => Err(source),
                Err(e) => return Err(e),
            };
            match self.migrate_result(&keys, reply) {
                Ok(()) => {}
                Err(MigrateFailure::Fatal(e)) => return Err(e),
                Err(MigrateFailure::TryAgain(message))
                    if !reopened && message.contains("Hash slot not served") =>
                {
                    tracing::info!(slot, to = %self.target.addr, "the target does not know the slot's owner; opening it again there");
                    reopened = true;
                    self.reopen_on_target(slot).await?;
                    work.push((keys, timeout));
                }
                Err(MigrateFailure::TryAgain(message)) => {
                    tryagain += 1;
                    if tryagain > TRYAGAIN_ATTEMPTS {
                        return Err(ClusterError::Command {
                            addr: self.source.addr.clone(),
                            command: format!("MIGRATE (slot {slot})"),
                            message,
                        });
                    }
                    tokio::time::sleep(TRYAGAIN_PAUSE).await;
                    work.push((keys, timeout));
                }
                Err(MigrateFailure::Slow(message)) => {
                    outcome.retries += 1;
                    tracing::info!(slot, keys = keys.len(), ?timeout, %message, "MIGRATE too slow; retrying smaller and slower");
                    if keys.len() > 1 {
                        let (left, right) = keys.split_at(keys.len() / 2);
                        let timeout = longer(timeout, 2);
                        work.push((right.to_vec(), timeout));
                        work.push((left.to_vec(), timeout));
                    } else if timeout < max {
                        work.push((keys, longer(timeout, 4)));
                    } else {
                        tracing::warn!(slot, to = %self.target.addr, %message, "a key did not move even alone");
                        return Err(ClusterError::KeyTooBig {
                            slot,
                            key: key_text(&keys[0]),
                            from: self.source.addr.clone(),
                            timeout,
                        });
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// `SETSLOT NODE <target>` on the target, then the source and every other master at once.
    /// A source that still holds keys is drained again.
    async fn close(&self) -> Result<StepOutcome, ClusterError> {
        let mut outcome = StepOutcome::default();
        self.assign_on(&self.target, &self.slots)
            .await
            .map_err(|(_, e)| e)?;
        let mut others = JoinSet::new();
        for other in &self.others {
            let mut client = other.control.clone();
            let mut pipe = self.setslot_pipeline(&self.slots, "NODE", &self.target.id);
            others.spawn(async move {
                let replies = client.pipeline(&mut pipe, "CLUSTER SETSLOT … NODE").await;
                (client.addr().clone(), replies)
            });
        }
        let mut remaining = self.slots.clone();
        for attempt in 1..=FINAL_DRAIN_ATTEMPTS {
            let refused = self.assign_on(&self.source, &remaining).await;
            match refused {
                Ok(()) => break,
                Err((slots, e)) if !slots.is_empty() && attempt < FINAL_DRAIN_ATTEMPTS => {
                    tracing::info!(error = %e, "source still held keys; draining again");
                    let keys = self.keys_on_source(&slots).await?;
                    outcome += self.drain(&slots).await?;
                    outcome.keys += keys;
                    remaining = slots;
                }
                Err((_, e)) => return Err(e),
            }
        }
        while let Some(joined) = others.join_next().await {
            // Other masters hold no open state for these slots; one that missed this hears it by
            // gossip, so a failure here is worth a warning, not a failed move.
            match joined {
                Ok((addr, Ok(replies))) => {
                    if let Some(Err(e)) = replies.into_iter().find(Result::is_err) {
                        tracing::warn!(%addr, error = %e, "a master refused SETSLOT NODE");
                    }
                }
                Ok((addr, Err(e))) => tracing::warn!(%addr, error = %e, "SETSLOT NODE failed"),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        Ok(outcome)
    }

    /// `SETSLOT s NODE <target>` on `master` for `slots`. On refusal, the slots refused because
    /// the node still holds keys (when that is the only reason), and the error.
    async fn assign_on(
        &self,
        master: &Master,
        slots: &[u16],
    ) -> Result<(), (Vec<u16>, ClusterError)> {
        let mut pipe = self.setslot_pipeline(slots, "NODE", &self.target.id);
        let replies = master
            .control
            .clone()
            .pipeline(&mut pipe, "CLUSTER SETSLOT … NODE")
            .await
            .map_err(|e| (Vec::new(), e))?;
        let mut holding_keys = Vec::new();
        let mut keys_error = None;
        for (slot, reply) in slots.iter().zip(replies) {
            let Err(e) = reply else { continue };
            let text = e.to_string();
            if text.contains("only with masters") && master.id == self.source.id {
                // A master that lost its last slot turns itself into a replica of the node that
                // took it (cluster-allow-replica-migration): the drain is complete.
                return Ok(());
            }
            let still_holds_keys = text.contains("still hold keys");
            let error = master.control.refusal(
                &format!("CLUSTER SETSLOT {slot} NODE {}", self.target.id),
                e,
            );
            if !still_holds_keys {
                return Err((Vec::new(), error));
            }
            holding_keys.push(*slot);
            keys_error.get_or_insert(error);
        }
        match keys_error {
            None => Ok(()),
            Some(e) => Err((holding_keys, e)),
        }
    }
}

/// `-TRYAGAIN`, or a target that reports `CLUSTERDOWN` (a node that just joined says so for
/// its first seconds, until it has seen the whole cluster): worth the same batch again later.
fn is_transient(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    error.code() == Some("TRYAGAIN") || text.contains("TRYAGAIN") || text.contains("CLUSTERDOWN")
}

fn add_key_counts(pipe: &mut redis::Pipeline, slots: &[u16]) {
    for slot in slots {
        pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*slot);
    }
}

fn sum_counts(replies: impl Iterator<Item = redis::RedisResult<Value>>) -> u64 {
    replies
        .map(|reply| match reply {
            Ok(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The keys in a `GETKEYSINSLOT` reply.
fn key_list(slot: u16, reply: redis::RedisResult<Value>) -> Result<Vec<Vec<u8>>, ClusterError> {
    let bad =
        |what: String| ClusterError::parse("CLUSTER GETKEYSINSLOT", format!("slot {slot}"), what);
    match reply.map_err(|e| bad(e.to_string()))? {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::BulkString(key) => Ok(key),
                other => Err(bad(format!("a key is not a string: {other:?}"))),
            })
            .collect(),
        other => Err(bad(format!("expected a list of keys, got {other:?}"))),
    }
}

/// A key for messages: UTF-8 where it is, escaped bytes elsewhere.
fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(slots_done: usize, keys_moved: u64, keys_total: u64, secs: u64) -> MigrateProgress {
        MigrateProgress::Moved {
            from: NodeAddr::new("127.0.0.1", 7000),
            to: NodeAddr::new("127.0.0.1", 7003),
            first_slot: 0,
            last_slot: 31,
            keys: 640,
            slots_done,
            slots_total: 4096,
            keys_moved,
            keys_total,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn progress_lines_give_counts_rate_and_eta() {
        let line = moved(1024, 25_000, 100_000, 5).to_string();
        assert_eq!(
            line,
            "slots 0-31 127.0.0.1:7000 → 127.0.0.1:7003 (640 keys): 1024/4096 slots, \
             25000/100000 keys, 5000 keys/s, ETA 15s"
        );
        // Without keys the ETA follows the slots.
        assert_eq!(moved(1024, 0, 0, 5).eta(), Some(Duration::from_secs(15)));
        assert_eq!(moved(0, 0, 0, 5).eta(), None);
        let started = MigrateProgress::Started {
            slots_total: 1,
            keys_total: 1,
        };
        assert_eq!(started.to_string(), "moving 1 slot holding 1 key");
        let finished = MigrateProgress::Finished {
            slots: 4096,
            keys: 100_000,
            elapsed: Duration::from_secs(4),
        };
        assert_eq!(
            finished.to_string(),
            "moved 4096 slots and 100000 keys in 4.0s (25000 keys/s)"
        );
    }

    #[test]
    fn repairs_say_who_keeps_the_slot() {
        let kept = SlotRepair::Kept {
            slot: 7,
            owner: "0123456789abcdef".into(),
        };
        assert_eq!(
            kept.to_string(),
            "slot 7: 01234567 keeps it; no key had reached the other side"
        );
        let finished = SlotRepair::Finished {
            slot: 7,
            from: "aaaaaaaaaaaa".into(),
            to: "bbbbbbbbbbbb".into(),
            keys: 3,
        };
        assert_eq!(
            finished.to_string(),
            "slot 7: finished the move from aaaaaaaa to bbbbbbbb (3 keys moved)"
        );
    }
}
