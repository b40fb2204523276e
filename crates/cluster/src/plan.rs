//! The planner: from an operation and one observation of the cluster, the next step to take.
//!
//! [`next_step`] is pure. The runner ([`mod@crate::operate`]) observes, asks for the next step,
//! executes it, records it, and observes again, until the planner says the operation is done.
//! Because each step is chosen from what the cluster *is*, not from a script of what should have
//! happened, a crash at any point resumes correctly: the next run observes the half-done state
//! and plans from there.
//!
//! Safety rules live here and are checked twice: by construction in the planning functions, and
//! by [`check_step`], which the executor runs on every step before it touches a node:
//! - never remove or forget a node that serves slots;
//! - never take a node down (restart, remove) while another node of its shard is down;
//! - never fail over to a replica whose link is down or that is more than [`MAX_FAILOVER_LAG`]
//!   bytes behind (Redis's own `CLUSTER FAILOVER` then waits for it to catch up exactly);
//! - `FORCE`/`TAKEOVER` failovers only when the master is gone or quorum is lost, and the step
//!   says so.
//!
//! Placement: a new node goes on the host its shard does not use yet, least loaded first; after
//! an operation, a host holding more masters than its share gets one back through a planned
//! failover to a replica on a lighter host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::NodeAddr;
use crate::observe::{Observed, ObservedNode, ObservedShard};
use crate::placement::plural;
use crate::slots::{SLOT_COUNT, SlotRange, SlotSet, format_ranges};
use crate::topology::{Role, short_id};

/// A replica further behind its master than this (in replication bytes) is not a failover
/// target yet; the planner waits for it instead.
pub const MAX_FAILOVER_LAG: u64 = 1024 * 1024;

/// What an operation is for. Saved in the operation journal, so it carries what it learnt at the
/// start (which nodes were old, which were restarted) and a resumed run continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "kebab-case")]
pub enum Operation {
    /// Reach `masters` shards with `replicas` replicas each, slots spread evenly.
    Scale {
        /// Shards wanted.
        masters: usize,
        /// Replicas per shard wanted.
        replicas: usize,
    },
    /// Hand the role of master `master_id` to its healthiest replica.
    Failover {
        /// The master at the start.
        master_id: String,
        /// Its address at the start, for messages.
        master: NodeAddr,
    },
    /// Restart every node, replicas first, each master only after its role moved away.
    RollingRestart {
        /// Ids of nodes still to restart.
        pending: BTreeSet<String>,
    },
    /// Bring the cluster back to clean: start dead nodes, fix addresses, forget ghosts, close
    /// open slots, cover lost slots, attach orphans.
    Heal {
        /// Replicas per shard expected, when known (spare nodes are attached up to this).
        replicas: Option<usize>,
        /// Nodes already asked to start in this run (a second attempt would loop).
        started: BTreeSet<NodeAddr>,
    },
    /// Move every shard onto new nodes: add new replicas, promote them, remove the old nodes.
    ReplaceNodes {
        /// Ids of the nodes to replace.
        old: BTreeSet<String>,
        /// Replicas per shard to end with.
        replicas: usize,
    },
    /// Only move master roles so no host holds more than its share.
    Rebalance,
}

impl Operation {
    /// A short name for messages and the journal (`scale`, `failover`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scale { .. } => "scale",
            Self::Failover { .. } => "failover",
            Self::RollingRestart { .. } => "rolling restart",
            Self::Heal { .. } => "heal",
            Self::ReplaceNodes { .. } => "replace-nodes",
            Self::Rebalance => "rebalance",
        }
    }

    /// Records that `step` was executed, for operations that remember progress.
    pub fn record(&mut self, step: &Step, id_after: Option<&str>) {
        match (self, step) {
            (Self::RollingRestart { pending }, Step::Restart { .. }) => {
                if let Some(id) = id_after {
                    pending.remove(id);
                }
            }
            (Self::Heal { started, .. }, Step::Start { node }) => {
                started.insert(node.clone());
            }
            _ => {}
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scale { masters, replicas } => write!(
                f,
                "scale to {masters} master{} with {replicas} replica{} each",
                plural(*masters),
                plural(*replicas)
            ),
            Self::Failover { master, .. } => write!(f, "failover of master {master}"),
            Self::RollingRestart { pending } => write!(
                f,
                "rolling restart ({} node{} to go)",
                pending.len(),
                plural(pending.len())
            ),
            Self::Heal { .. } => f.write_str("heal"),
            Self::ReplaceNodes { old, .. } => {
                write!(f, "replace {} node{}", old.len(), plural(old.len()))
            }
            Self::Rebalance => f.write_str("rebalance master placement"),
        }
    }
}

/// How `CLUSTER FAILOVER` is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// Coordinated with a live master: no write is lost.
    Planned,
    /// The master is gone; a majority of masters still votes.
    Force,
    /// No quorum: the replica takes over on its own authority (may lose writes, may conflict).
    Takeover,
}

/// One action on the cluster. `Display` is one human line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Ask the platform for a new empty node.
    Provision {
        /// Where to put it, when the platform has hosts.
        host: Option<String>,
        /// Why, for the log.
        reason: String,
    },
    /// Introduce `node` to the cluster through `via` (`CLUSTER MEET`).
    Meet {
        /// The node to introduce.
        node: NodeAddr,
        /// A member that meets it.
        via: NodeAddr,
    },
    /// Make `replica` follow `master` (`CLUSTER REPLICATE`).
    Replicate {
        /// The node that becomes (or moves as) a replica.
        replica: NodeAddr,
        /// The master's id.
        master_id: String,
        /// The master's address.
        master: NodeAddr,
    },
    /// Move slots so `targets` end up with shares proportional to their weights (weight 0:
    /// drained completely).
    MoveSlots {
        /// `(master address, master id, weight)`.
        targets: Vec<(NodeAddr, String, u32)>,
    },
    /// `CLUSTER FAILOVER` on `replica`, then wait until every master sees it as master.
    Failover {
        /// The replica to promote.
        replica: NodeAddr,
        /// The master it replaces.
        master: NodeAddr,
        /// How.
        mode: FailoverMode,
    },
    /// Restart a node on its data and wait until it is back in sync.
    Restart {
        /// The node.
        node: NodeAddr,
    },
    /// Start a node that is down.
    Start {
        /// The node.
        node: NodeAddr,
    },
    /// Take a node out: forget it on every other member, then remove it from the platform.
    Remove {
        /// The node.
        node: NodeAddr,
        /// Its id, when known.
        id: Option<String>,
    },
    /// `CLUSTER FORGET id` on the members that list a ghost.
    Forget {
        /// The ghost's id.
        id: String,
        /// Members that list it.
        on: Vec<NodeAddr>,
    },
    /// Tell members that list `node` at an old address where it runs now (`CLUSTER MEET` to the
    /// new address; the handshake matches the id and updates the address).
    Remeet {
        /// The node, at its current address.
        node: NodeAddr,
        /// Members with a stale entry.
        on: Vec<NodeAddr>,
    },
    /// Finish or undo half-done slot migrations.
    CloseSlots {
        /// The open slots.
        slots: Vec<u16>,
    },
    /// Give slots nobody serves (their owner vanished without a replica) to a master, empty.
    AssignSlots {
        /// The master.
        master: NodeAddr,
        /// The slots.
        ranges: Vec<SlotRange>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provision { host, reason } => match host {
                Some(h) => write!(f, "start a new node on {h} ({reason})"),
                None => write!(f, "start a new node ({reason})"),
            },
            Self::Meet { node, via } => write!(f, "introduce {node} to the cluster via {via}"),
            Self::Replicate {
                replica, master, ..
            } => write!(f, "make {replica} a replica of {master}"),
            Self::MoveSlots { targets } => {
                let parts: Vec<String> = targets
                    .iter()
                    .map(|(addr, _, w)| {
                        if *w == 0 {
                            format!("drain {addr}")
                        } else {
                            addr.to_string()
                        }
                    })
                    .collect();
                write!(f, "rebalance slots over {}", parts.join(", "))
            }
            Self::Failover {
                replica,
                master,
                mode,
            } => match mode {
                FailoverMode::Planned => write!(f, "fail over {master} to its replica {replica}"),
                FailoverMode::Force => write!(
                    f,
                    "promote {replica} in place of {master}, which is down (FORCE: the master \
                     cannot take part)"
                ),
                FailoverMode::Takeover => write!(
                    f,
                    "promote {replica} in place of {master} by TAKEOVER: quorum is lost, so \
                     writes not yet replicated may be lost"
                ),
            },
            Self::Restart { node } => write!(f, "restart {node}"),
            Self::Start { node } => write!(f, "start {node}, which is down"),
            Self::Remove { node, .. } => write!(f, "remove {node}"),
            Self::Forget { id, on } => write!(
                f,
                "forget node {} on {} node{}",
                short_id(id),
                on.len(),
                plural(on.len())
            ),
            Self::Remeet { node, on } => write!(
                f,
                "tell {} node{} that {} moved to {node}",
                on.len(),
                plural(on.len()),
                short_label(node)
            ),
            Self::CloseSlots { slots } => {
                let ranges = SlotSet::from_ranges(
                    slots
                        .iter()
                        .map(|s| SlotRange::single(*s))
                        .collect::<Vec<_>>()
                        .iter(),
                )
                .ranges();
                write!(f, "close open slots {}", format_ranges(&ranges))
            }
            Self::AssignSlots { master, ranges } => write!(
                f,
                "give unserved slots {} to {master} (their data was lost with their owner)",
                format_ranges(ranges)
            ),
        }
    }
}

fn short_label(node: &NodeAddr) -> String {
    format!("the node now at {node}")
}

/// What the planner wants next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "next", rename_all = "snake_case")]
pub enum Next {
    /// Execute this step.
    Step(Step),
    /// Nothing to do but wait (a replica syncing, gossip spreading); observe again shortly.
    Wait(String),
    /// The operation is complete. For `heal`, anything it could not fix is listed.
    Done {
        /// What remains wrong and why it cannot be fixed automatically.
        unresolved: Vec<String>,
    },
}

/// Why an operation cannot start or continue. Nothing was changed because of it.
///
/// The reason is worded for any platform; what to do about it is [`Remedy`], which each
/// platform words its own way (a local command to run, or what the operator does by itself);
/// the plain text names the remedy in general terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} refused: {reason}{}", remedy.general().map(|r| format!("; {r}")).unwrap_or_default())]
pub struct Refusal {
    /// The operation.
    pub operation: String,
    /// Why.
    pub reason: String,
    /// What makes the operation possible.
    pub remedy: Remedy,
}

/// What makes a refused operation possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Remedy {
    /// Nothing the platform can do: the request itself is impossible.
    #[default]
    None,
    /// Heal the cluster first (a dead node restarted, a ghost forgotten, unserved slots
    /// covered). Often the state is transient (a node restarting) and passes by itself.
    Heal,
    /// Wait for Redis to fail a dead master over by itself, then heal.
    HealAfterFailover,
    /// Give the shard a replica first.
    AddReplica,
    /// Delete the cluster rather than scale it to nothing.
    Delete,
}

impl Remedy {
    /// The remedy in general terms, for any platform.
    pub fn general(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Heal => Some("heal the cluster first"),
            Self::HealAfterFailover => Some("heal the cluster once Redis has failed it over"),
            Self::AddReplica => Some("give the shard a replica first"),
            Self::Delete => Some("delete the cluster instead"),
        }
    }

    /// The remedy as a local command line, for `cinnabar` on the local platform.
    pub fn local_hint(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Heal => Some("run `cinnabar heal` first (it restarts dead nodes)"),
            Self::HealAfterFailover => Some("run `cinnabar heal` once Redis has failed it over"),
            Self::AddReplica => Some("add a replica with `cinnabar scale --replicas 1` first"),
            Self::Delete => Some("to delete the cluster use `cinnabar down --purge`"),
        }
    }
}

impl Refusal {
    /// The refusal with its remedy as a local command (`cinnabar heal`, …), for the local
    /// platform's commands.
    pub fn local_message(&self) -> String {
        match self.remedy.local_hint() {
            Some(hint) => format!("{} refused: {}; {hint}", self.operation, self.reason),
            None => self.to_string(),
        }
    }
}

fn refuse(op: &Operation, reason: impl Into<String>) -> Refusal {
    refuse_with(op, Remedy::None, reason)
}

fn refuse_with(op: &Operation, remedy: Remedy, reason: impl Into<String>) -> Refusal {
    Refusal {
        operation: op.name().to_owned(),
        reason: reason.into(),
        remedy,
    }
}

/// Facts about the platform the planner needs besides the observation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanContext {
    /// Hosts new nodes may go on (empty: no placement rules).
    pub hosts: Vec<String>,
}

/// The next step of `op` given `observed`.
///
/// # Errors
/// A [`Refusal`] when the operation cannot proceed safely (impossible target, a shard without a
/// healthy replica, nodes down that only `heal` may touch); nothing should be changed then.
pub fn next_step(
    op: &Operation,
    observed: &Observed,
    context: &PlanContext,
) -> Result<Next, Refusal> {
    let plan = Planner {
        op,
        observed,
        context,
        shards: observed.shards(),
    };
    // After a failover, the old master's other replicas should follow the new master; Redis 7.0
    // misses that when a replica hears of the demotion before the new master's claim, and the
    // replica then follows the old master for good (chained replication, in no shard). Point
    // it at the master at the top of its chain, with which it shares the replication history.
    if !matches!(op, Operation::Heal { .. })
        && let Some((replica, via)) = observed.chained_replicas().into_iter().next()
    {
        let top = observed
            .role_of(&via)
            .and_then(|(_, master_id, _)| master_id)
            .and_then(|id| plan.shards.iter().find(|s| s.master_id == id));
        return Ok(match top {
            Some(shard) => Next::Step(Step::Replicate {
                replica,
                master_id: shard.master_id.clone(),
                master: shard.master.clone(),
            }),
            None => Next::Wait(format!(
                "{replica} follows {via}, which is a replica now of a master not seen yet"
            )),
        });
    }
    match op {
        Operation::Scale { masters, replicas } => plan.scale(*masters, *replicas),
        Operation::Failover { master_id, master } => plan.failover(master_id, master),
        Operation::RollingRestart { pending } => plan.rolling_restart(pending),
        Operation::Heal { replicas, started } => Ok(plan.heal(*replicas, started)),
        Operation::ReplaceNodes { old, replicas } => plan.replace(old, *replicas),
        Operation::Rebalance => {
            plan.require_clean()?;
            Ok(plan
                .placement_step()
                .map_or(Next::Done { unresolved: vec![] }, Next::Step))
        }
    }
}

struct Planner<'a> {
    op: &'a Operation,
    observed: &'a Observed,
    context: &'a PlanContext,
    shards: Vec<ObservedShard>,
}

impl Planner<'_> {
    /// Everything but `heal` needs every node up, no ghosts, every slot served. Open slots are
    /// closed as the first step rather than refused: that is how an interrupted scale resumes.
    fn require_clean(&self) -> Result<(), Refusal> {
        let unreachable = self.observed.unreachable();
        if let Some((addr, why)) = unreachable.first() {
            return Err(refuse_with(
                self.op,
                Remedy::Heal,
                format!("{addr} is down ({why})"),
            ));
        }
        // Ghosts without slots are forgotten as a first step (see `tidy_step`); one that still
        // serves slots needs heal's judgement.
        let ghosts = self.observed.ghosts();
        if let Some(ghost) = ghosts.iter().find(|g| !g.slots.is_empty()) {
            return Err(refuse_with(
                self.op,
                Remedy::Heal,
                format!(
                    "the cluster lists node {} ({}) that no longer runs but serves slots {}",
                    short_id(&ghost.id),
                    ghost
                        .addr
                        .as_ref()
                        .map_or_else(|| "no address".to_owned(), ToString::to_string),
                    format_ranges(&ghost.slots)
                ),
            ));
        }
        let covered = self.observed.covered_slots().len();
        if covered < SLOT_COUNT {
            return Err(refuse_with(
                self.op,
                Remedy::Heal,
                format!("{} slots are served by no master", SLOT_COUNT - covered),
            ));
        }
        Ok(())
    }

    /// Loose ends any operation ties up first: ghosts without slots (a node removed a moment
    /// ago that one member had not forgotten yet) are forgotten, open slots closed.
    fn tidy_step(&self) -> Option<Step> {
        if let Some(ghost) = self
            .observed
            .ghosts()
            .into_iter()
            .find(|g| g.slots.is_empty())
        {
            return Some(Step::Forget {
                id: ghost.id,
                on: ghost.known_by,
            });
        }
        self.open_slots_step()
    }

    /// A `MEET` for the first pair of members where one has not heard of the other.
    fn introduction(&self) -> Option<Step> {
        let (via, node) = self.observed.unacquainted().into_iter().next()?;
        Some(Step::Meet { node, via })
    }

    fn open_slots_step(&self) -> Option<Step> {
        let open: BTreeSet<u16> = self
            .observed
            .open_slots()
            .iter()
            .map(|(_, m)| m.slot())
            .collect();
        (!open.is_empty()).then(|| Step::CloseSlots {
            slots: open.into_iter().collect(),
        })
    }

    fn host(&self, addr: &NodeAddr) -> Option<&str> {
        self.observed.host_of(addr)
    }

    /// Masters per host among shards that serve slots.
    fn masters_per_host(&self) -> BTreeMap<&str, usize> {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for shard in self.shards.iter().filter(|s| s.slot_count() > 0) {
            if let Some(h) = self.host(&shard.master) {
                *per.entry(h).or_default() += 1;
            }
        }
        per
    }

    /// The host for a new member of a shard whose members run on `avoid`: one the shard does
    /// not use; for a master the host with the fewest masters, else the fewest nodes; `None`
    /// without hosts.
    fn host_for_new(&self, avoid: &[&str], master: bool) -> Option<String> {
        if self.context.hosts.is_empty() {
            return None;
        }
        let mut load: BTreeMap<&str, (usize, usize)> = self
            .context
            .hosts
            .iter()
            .map(|h| (h.as_str(), (0, 0)))
            .collect();
        for node in &self.observed.nodes {
            if let Some(entry) = node.node.host.as_deref().and_then(|h| load.get_mut(h)) {
                entry.0 += 1;
            }
        }
        // Every master counts here, empty ones too: they are about to receive slots.
        for shard in &self.shards {
            if let Some(entry) = self.host(&shard.master).and_then(|h| load.get_mut(h)) {
                entry.1 += 1;
            }
        }
        let pick = |allow_shared: bool| {
            self.context
                .hosts
                .iter()
                .filter(|h| allow_shared || !avoid.contains(&h.as_str()))
                .min_by_key(|h| {
                    let (nodes, masters) = load.get(h.as_str()).copied().unwrap_or_default();
                    if master {
                        (masters, nodes)
                    } else {
                        (nodes, masters)
                    }
                })
                .cloned()
        };
        pick(false).or_else(|| pick(true))
    }

    fn shard_hosts<'s>(&'s self, shard: &'s ObservedShard) -> Vec<&'s str> {
        shard.members().filter_map(|m| self.host(m)).collect()
    }

    /// Replicas of `shard` that could take over: reachable, link up, not far behind.
    fn failover_candidates(&self, shard: &ObservedShard) -> Vec<(NodeAddr, u64)> {
        let master_offset = self
            .observed
            .node(&shard.master)
            .and_then(|n| n.facts())
            .map(|f| f.offset);
        let mut out = Vec::new();
        for replica in &shard.replicas {
            let Some(facts) = self.observed.node(replica).and_then(|n| n.facts()) else {
                continue;
            };
            if !facts.link_up {
                continue;
            }
            let lag = master_offset.map_or(0, |m| m.saturating_sub(facts.offset));
            if lag <= MAX_FAILOVER_LAG {
                out.push((replica.clone(), lag));
            }
        }
        out
    }

    /// The refusal of a failover of `shard` without a target.
    fn no_candidate(&self, shard: &ObservedShard) -> Refusal {
        let remedy = if shard.replicas.is_empty() {
            Remedy::AddReplica
        } else {
            Remedy::None
        };
        refuse_with(self.op, remedy, self.why_no_candidate(shard))
    }

    /// Why each replica of `shard` is not a failover target, for refusals.
    fn why_no_candidate(&self, shard: &ObservedShard) -> String {
        if shard.replicas.is_empty() {
            return format!("shard of {} has no replica", shard.master);
        }
        let reasons: Vec<String> = shard
            .replicas
            .iter()
            .map(|r| match self.observed.node(r).map(|n| &n.facts) {
                Some(Ok(f)) if !f.link_up => format!("{r} has its replication link down"),
                Some(Ok(_)) => format!("{r} is more than {MAX_FAILOVER_LAG} bytes behind"),
                Some(Err(e)) => format!("{r} is down ({e})"),
                None => format!("{r} is unknown to the platform"),
            })
            .collect();
        format!(
            "shard of {} has no healthy replica: {}",
            shard.master,
            reasons.join("; ")
        )
    }

    /// The candidate that best keeps masters spread: lightest host first, then least lag.
    fn best_candidate(&self, candidates: &[(NodeAddr, u64)]) -> Option<NodeAddr> {
        let per = self.masters_per_host();
        candidates
            .iter()
            .min_by_key(|(addr, lag)| {
                let load = self
                    .host(addr)
                    .map_or(0, |h| per.get(h).copied().unwrap_or(0));
                (load, *lag, (*addr).clone())
            })
            .map(|(addr, _)| addr.clone())
    }

    /// Whether a majority of slot-serving masters answers.
    fn has_quorum(&self) -> bool {
        let serving: Vec<&ObservedShard> =
            self.shards.iter().filter(|s| s.slot_count() > 0).collect();
        let up = serving
            .iter()
            .filter(|s| {
                self.observed
                    .node(&s.master)
                    .is_some_and(|n| n.is_reachable())
            })
            .count();
        up * 2 > serving.len()
    }

    /// A planned failover that brings a host holding more than its share of masters back to
    /// its share, if one exists.
    fn placement_step(&self) -> Option<Step> {
        let distinct: BTreeSet<&str> = self
            .observed
            .nodes
            .iter()
            .filter_map(|n| n.node.host.as_deref())
            .collect();
        if distinct.len() < 2 {
            return None;
        }
        let serving: Vec<&ObservedShard> =
            self.shards.iter().filter(|s| s.slot_count() > 0).collect();
        let share = serving.len().div_ceil(distinct.len());
        let per = self.masters_per_host();
        for shard in serving {
            let Some(host) = self.host(&shard.master) else {
                continue;
            };
            if per.get(host).copied().unwrap_or(0) <= share {
                continue;
            }
            let lighter: Vec<(NodeAddr, u64)> = self
                .failover_candidates(shard)
                .into_iter()
                .filter(|(r, _)| {
                    self.host(r)
                        .is_some_and(|h| per.get(h).copied().unwrap_or(0) < share)
                })
                .collect();
            if let Some(replica) = self.best_candidate(&lighter) {
                return Some(Step::Failover {
                    replica,
                    master: shard.master.clone(),
                    mode: FailoverMode::Planned,
                });
            }
        }
        None
    }

    /// Replicas whose link is not up yet: steps that need synced replicas wait for them.
    fn syncing_replica(&self) -> Option<NodeAddr> {
        self.shards
            .iter()
            .flat_map(|s| s.replicas.iter())
            .find(|r| {
                self.observed
                    .node(r)
                    .and_then(|n| n.facts())
                    .is_some_and(|f| !f.link_up)
            })
            .cloned()
    }

    /// Replicas whose master is not a platform node, kept when `keep(master id)` says so.
    fn orphans(&self, keep: impl Fn(Option<&str>) -> bool) -> Vec<NodeAddr> {
        self.observed
            .orphaned_replicas()
            .into_iter()
            .filter(|r| {
                let master = self.observed.role_of(r).and_then(|(_, m, _)| m);
                keep(master.as_deref())
            })
            .collect()
    }

    /// A member to send `MEET` from.
    fn any_member(&self) -> Option<NodeAddr> {
        self.observed
            .members()
            .map(|(n, _)| n.addr().clone())
            .next()
    }

    /// A node that can join the cluster as a new member: a spare master (a member without slots
    /// or replicas, not needed as a shard master), else a loner to meet first. Placement:
    /// prefers a node whose host the shard does not use.
    /// With platform groups, only a node of the shard's own group qualifies.
    fn spare_for(
        &self,
        spares: &[NodeAddr],
        avoid: &[&str],
        shard: &ObservedShard,
    ) -> Option<NodeAddr> {
        spares
            .iter()
            .filter(|s| self.same_group(s, &shard.master))
            .find(|s| self.host(s).is_none_or(|h| !avoid.contains(&h)))
            .cloned()
    }

    /// Whether `node` may serve in the shard of `master`: always without groups, else only
    /// within one group (a platform that groups nodes by shard protects each group as a unit).
    fn same_group(&self, node: &NodeAddr, master: &NodeAddr) -> bool {
        match (self.observed.group_of(node), self.observed.group_of(master)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Groups that already lead a shard.
    fn groups_in_use(&self) -> BTreeSet<&str> {
        self.shards
            .iter()
            .filter_map(|s| self.observed.group_of(&s.master))
            .collect()
    }

    fn scale(&self, masters: usize, replicas: usize) -> Result<Next, Refusal> {
        if masters == 0 {
            return Err(refuse_with(
                self.op,
                Remedy::Delete,
                "a cluster needs at least one master",
            ));
        }
        if masters > SLOT_COUNT {
            return Err(refuse(
                self.op,
                format!("{masters} masters is more than the {SLOT_COUNT} slots allow"),
            ));
        }
        self.require_clean()?;
        if let Some(step) = self.tidy_step() {
            return Ok(Next::Step(step));
        }
        let roles = Roles::of(self, masters);
        self.refuse_impossible_drain(&roles)?;

        // 1. Enough shard masters.
        if roles.keep.len() < masters {
            return Ok(Next::Step(self.new_member(
                &[],
                None,
                format!("master for shard {}", roles.keep.len() + 1),
            )));
        }
        // A kept shard led by a node the platform retires hands its role to a replica that
        // stays, so the retiring node can go as a replica.
        for shard in &roles.keep {
            if self.observed.is_retiring(&shard.master) {
                let staying: Vec<(NodeAddr, u64)> = self
                    .failover_candidates(shard)
                    .into_iter()
                    .filter(|(r, _)| !self.observed.is_retiring(r))
                    .collect();
                if let Some(replica) = self.best_candidate(&staying) {
                    return Ok(Next::Step(Step::Failover {
                        replica,
                        master: shard.master.clone(),
                        mode: FailoverMode::Planned,
                    }));
                }
            }
        }
        // 2. Replicas for every kept shard.
        for shard in &roles.keep {
            if shard.replicas.len() < replicas {
                let hosts = self.shard_hosts(shard);
                if let Some(spare) = self.spare_for(&roles.spares, &hosts, shard) {
                    return Ok(Next::Step(Step::Replicate {
                        replica: spare,
                        master_id: shard.master_id.clone(),
                        master: shard.master.clone(),
                    }));
                }
                return Ok(Next::Step(self.new_member(
                    &hosts,
                    Some(&shard.master),
                    format!("replica for {}", shard.master),
                )));
            }
        }
        if let Some(replica) = self.syncing_replica() {
            return Ok(Next::Wait(format!(
                "replica {replica} is still syncing with its master"
            )));
        }
        // 3. Slots: even over kept shards, none on shards to remove.
        if !roles.is_balanced() {
            // `SETSLOT … IMPORTING/MIGRATING/NODE` name the other master by id, and a node
            // refuses an id it has not heard of. A master met a moment ago learns the others by
            // gossip, which on a loaded machine can take longer than a migration step's
            // retries, so introduce the pair directly rather than fail the step.
            if let Some(step) = self.introduction() {
                return Ok(Next::Step(step));
            }
            // A master that knows every node by now may still lack some owner's slots (they
            // come with that owner's next heartbeat); it would refuse the keys it imports with
            // `CLUSTERDOWN Hash slot not served`, and clients sent to it with the same.
            if let Some(master) = roles.keep.iter().chain(&roles.drop).find(|s| {
                self.observed
                    .node(&s.master)
                    .and_then(ObservedNode::facts)
                    .is_some_and(|f| !f.cluster_ok)
            }) {
                return Ok(Next::Wait(format!(
                    "{} does not see every slot served yet (cluster_state:fail)",
                    master.master
                )));
            }
            let mut targets: Vec<(NodeAddr, String, u32)> = roles
                .keep
                .iter()
                .map(|s| (s.master.clone(), s.master_id.clone(), 1))
                .collect();
            targets.extend(
                roles
                    .drop
                    .iter()
                    .map(|s| (s.master.clone(), s.master_id.clone(), 0)),
            );
            return Ok(Next::Step(Step::MoveSlots { targets }));
        }
        // 4. Surplus: replicas of dropped shards, extra replicas, then empty masters and loners.
        // Last first: platforms list a group's nodes in creation order, and a StatefulSet can
        // only shed its highest ordinal.
        for shard in &roles.drop {
            if let Some(replica) = shard.replicas.last() {
                return Ok(self.remove(replica));
            }
        }
        for shard in &roles.keep {
            if shard.replicas.len() > replicas {
                let surplus = self.surplus_replica(shard);
                return Ok(self.remove(&surplus));
            }
        }
        if let Some(node) = roles
            .drop
            .iter()
            .map(|s| &s.master)
            .chain(&roles.spares)
            .next()
        {
            return Ok(self.remove(node));
        }
        if let Some(loner) = self.observed.loners().first() {
            return Ok(self.remove(loner));
        }
        Ok(self.finish())
    }

    /// Refuses to drain shards whose data would not fit on the masters that stay.
    fn refuse_impossible_drain(&self, roles: &Roles) -> Result<(), Refusal> {
        if roles.drop.iter().all(|s| s.slot_count() == 0) {
            return Ok(());
        }
        let facts = |addr: &NodeAddr| self.observed.node(addr).and_then(|n| n.facts());
        let used: u64 = self
            .shards
            .iter()
            .filter_map(|s| facts(&s.master))
            .map(|f| f.used_memory)
            .sum();
        let kept: Vec<_> = roles.keep.iter().filter_map(|s| facts(&s.master)).collect();
        if kept.iter().any(|f| f.maxmemory == 0) {
            return Ok(());
        }
        let room: u64 = kept.iter().map(|f| f.maxmemory).sum();
        // Leave a tenth for fragmentation and the writes that continue during the move.
        if used > room / 10 * 9 {
            return Err(refuse(
                self.op,
                format!(
                    "the data ({} MiB in use) would not fit on the {} master{} that stay \
                     ({} MiB of maxmemory in all, 90% usable); scale to more masters or raise \
                     maxmemory",
                    used / (1024 * 1024),
                    kept.len(),
                    plural(kept.len()),
                    room / (1024 * 1024)
                ),
            ));
        }
        Ok(())
    }

    /// The step that brings one more node into the cluster: meet a loner, else provision.
    ///
    /// With platform groups, a new master comes from a group that leads no shard yet, and a new
    /// replica of `shard_master` from that master's group.
    fn new_member(&self, avoid: &[&str], shard_master: Option<&NodeAddr>, reason: String) -> Step {
        let master = shard_master.is_none();
        let in_use = self.groups_in_use();
        let loners: Vec<NodeAddr> = self
            .observed
            .loners()
            .into_iter()
            .filter(|l| match (self.observed.group_of(l), shard_master) {
                (Some(group), None) => !in_use.contains(group),
                (_, Some(m)) => self.same_group(l, m),
                (None, None) => true,
            })
            .collect();
        if let Some(loner) = loners
            .iter()
            .find(|l| self.host(l).is_none_or(|h| !avoid.contains(&h)))
            .or(loners.first())
            && let Some(via) = self.any_member()
        {
            return Step::Meet {
                node: loner.clone(),
                via,
            };
        }
        Step::Provision {
            host: self.host_for_new(avoid, master),
            reason,
        }
    }

    /// Removes `node`, once no other node follows it (replicas of a master that was just
    /// failed over switch to the new master within a moment; `CLUSTER FORGET` of one's own
    /// master is refused by Redis).
    fn remove(&self, node: &NodeAddr) -> Next {
        let id = self.observed.id_of(node);
        if let Some(follower) = id.as_deref().and_then(|id| self.observed.follower_of(id)) {
            return Next::Wait(format!("{follower} still replicates {node}"));
        }
        Next::Step(Step::Remove {
            node: node.clone(),
            id,
        })
    }

    /// The replica to drop from a shard with too many: one sharing a host with another member
    /// first, else the most loaded host's, else the last.
    fn surplus_replica(&self, shard: &ObservedShard) -> NodeAddr {
        let hosts = self.shard_hosts(shard);
        shard
            .replicas
            .iter()
            .rev()
            .find(|r| self.observed.is_retiring(r))
            .or_else(|| {
                shard.replicas.iter().find(|r| {
                    self.host(r)
                        .is_some_and(|h| hosts.iter().filter(|x| **x == h).count() > 1)
                })
            })
            .or(shard.replicas.last())
            .cloned()
            .unwrap_or_else(|| shard.master.clone())
    }

    /// After the operation's own work: every member knowing every other, placement, then done.
    /// Gossip usually spreads a node met a moment ago within a second, but under load it was
    /// seen not to reach one master in minutes, so a pair that has not met is introduced.
    fn finish(&self) -> Next {
        if let Some(step) = self.introduction() {
            return Next::Step(step);
        }
        match self.placement_step() {
            Some(step) => Next::Step(step),
            None => Next::Done { unresolved: vec![] },
        }
    }

    fn failover(&self, master_id: &str, master: &NodeAddr) -> Result<Next, Refusal> {
        let Some(shard) = self
            .shards
            .iter()
            .find(|s| s.master_id == master_id)
            .or_else(|| self.shards.iter().find(|s| &s.master == master))
        else {
            // The old master is no longer a master: the failover happened.
            return Ok(Next::Done { unresolved: vec![] });
        };
        if let Some(step) = self.tidy_step() {
            return Ok(Next::Step(step));
        }
        let master_up = self
            .observed
            .node(&shard.master)
            .is_some_and(|n| n.is_reachable());
        let candidates = self.failover_candidates(shard);
        let Some(replica) = self.best_candidate(&candidates) else {
            return Err(self.no_candidate(shard));
        };
        let mode = if !self.has_quorum() {
            FailoverMode::Takeover
        } else if master_up {
            FailoverMode::Planned
        } else {
            return Err(refuse_with(
                self.op,
                Remedy::HealAfterFailover,
                format!(
                    "master {} is down: Redis promotes a replica by itself once the other \
                     masters agree it failed",
                    shard.master
                ),
            ));
        };
        Ok(Next::Step(Step::Failover {
            replica,
            master: shard.master.clone(),
            mode,
        }))
    }

    fn rolling_restart(&self, pending: &BTreeSet<String>) -> Result<Next, Refusal> {
        self.require_clean()?;
        if let Some(step) = self.tidy_step() {
            return Ok(Next::Step(step));
        }
        if let Some(replica) = self.syncing_replica() {
            return Ok(Next::Wait(format!(
                "replica {replica} is still syncing; restarting anything now could leave a \
                 shard without a copy"
            )));
        }
        let is_pending = |addr: &NodeAddr| {
            self.observed
                .id_of(addr)
                .is_some_and(|id| pending.contains(&id))
        };
        // Replicas first, in shard order.
        for shard in &self.shards {
            if let Some(replica) = shard.replicas.iter().find(|r| is_pending(r)) {
                return Ok(Next::Step(Step::Restart {
                    node: replica.clone(),
                }));
            }
        }
        // Then each master: move its role away first, so it restarts as a replica.
        for shard in &self.shards {
            if !is_pending(&shard.master) {
                continue;
            }
            if shard.replicas.is_empty() || shard.slot_count() == 0 {
                return Ok(Next::Step(Step::Restart {
                    node: shard.master.clone(),
                }));
            }
            let candidates = self.failover_candidates(shard);
            let Some(replica) = self.best_candidate(&candidates) else {
                return Err(self.no_candidate(shard));
            };
            return Ok(Next::Step(Step::Failover {
                replica,
                master: shard.master.clone(),
                mode: FailoverMode::Planned,
            }));
        }
        // Pending ids that match no node: removed meanwhile, nothing to restart.
        Ok(self.finish())
    }

    fn replace(&self, old: &BTreeSet<String>, replicas: usize) -> Result<Next, Refusal> {
        self.require_clean()?;
        if let Some(step) = self.tidy_step() {
            return Ok(Next::Step(step));
        }
        let is_old = |addr: &NodeAddr| {
            self.observed
                .id_of(addr)
                .is_some_and(|id| old.contains(&id))
        };
        let spares: Vec<NodeAddr> = self
            .shards
            .iter()
            .filter(|s| s.slot_count() == 0 && s.replicas.is_empty() && !is_old(&s.master))
            .map(|s| s.master.clone())
            .collect();
        let serving: Vec<&ObservedShard> =
            self.shards.iter().filter(|s| s.slot_count() > 0).collect();
        // 1. Each shard gets replicas + 1 new members.
        for shard in &serving {
            let new_members: Vec<&NodeAddr> = shard.members().filter(|m| !is_old(m)).collect();
            if new_members.len() < replicas + 1 {
                let avoid: Vec<&str> = new_members.iter().filter_map(|m| self.host(m)).collect();
                if let Some(spare) = self.spare_for(&spares, &avoid, shard) {
                    return Ok(Next::Step(Step::Replicate {
                        replica: spare,
                        master_id: shard.master_id.clone(),
                        master: shard.master.clone(),
                    }));
                }
                let loners = self.observed.loners();
                if let (Some(loner), Some(via)) = (loners.first(), self.any_member()) {
                    return Ok(Next::Step(Step::Meet {
                        node: loner.clone(),
                        via,
                    }));
                }
                return Ok(Next::Step(Step::Provision {
                    host: self.host_for_new(&avoid, false),
                    reason: format!("new replica for {}", shard.master),
                }));
            }
        }
        if let Some(replica) = self.syncing_replica() {
            return Ok(Next::Wait(format!(
                "new replica {replica} is still syncing"
            )));
        }
        // 2. Promote a new node in every shard an old master leads.
        for shard in &serving {
            if !is_old(&shard.master) {
                continue;
            }
            let candidates: Vec<(NodeAddr, u64)> = self
                .failover_candidates(shard)
                .into_iter()
                .filter(|(r, _)| !is_old(r))
                .collect();
            let Some(replica) = self.best_candidate(&candidates) else {
                return Ok(Next::Wait(format!(
                    "no new replica of {} is caught up yet",
                    shard.master
                )));
            };
            return Ok(Next::Step(Step::Failover {
                replica,
                master: shard.master.clone(),
                mode: FailoverMode::Planned,
            }));
        }
        // 3. Remove the old nodes, now replicas or empty.
        if let Some(node) = self
            .observed
            .nodes
            .iter()
            .map(|n| n.addr())
            .find(|a| is_old(a))
        {
            return Ok(self.remove(node));
        }
        Ok(self.finish())
    }

    fn heal(&self, replicas: Option<usize>, started: &BTreeSet<NodeAddr>) -> Next {
        let mut unresolved = Vec::new();
        // 1. Dead nodes: start them (once per run).
        for (addr, why) in self.observed.unreachable() {
            if started.contains(addr) {
                unresolved.push(format!(
                    "{addr} is still down after being started ({why}); look at its log"
                ));
            } else {
                return Next::Step(Step::Start { node: addr.clone() });
            }
        }
        // 2. Addresses that changed: re-meet before any forget, so no live node is forgotten.
        let mut stale: BTreeMap<NodeAddr, Vec<NodeAddr>> = BTreeMap::new();
        for (viewer, node, _) in self.observed.stale_addresses() {
            stale.entry(node).or_default().push(viewer);
        }
        if let Some((node, on)) = stale.into_iter().next() {
            return Next::Step(Step::Remeet { node, on });
        }
        // 3. Members that do not know each other; then loners join as spares.
        if let Some(step) = self.introduction() {
            return Next::Step(step);
        }
        // 4. Ghosts: forget the ones without slots; the others need their replica promoted.
        for ghost in self.observed.ghosts() {
            if ghost.slots.is_empty() {
                return Next::Step(Step::Forget {
                    id: ghost.id,
                    on: ghost.known_by,
                });
            }
            let orphans = self.orphans(|master| master == Some(ghost.id.as_str()));
            let slots = format_ranges(&ghost.slots);
            if orphans.is_empty() {
                unresolved.push(format!(
                    "slots {slots} belong to node {} which no longer runs and has no replica: \
                     their data is gone unless it comes back",
                    short_id(&ghost.id)
                ));
            } else if self.has_quorum() {
                unresolved.push(format!(
                    "slots {slots} belong to node {} which no longer runs; its replica {} \
                     should be promoted by Redis once the masters agree it failed (run heal \
                     again in a few seconds)",
                    short_id(&ghost.id),
                    orphans[0]
                ));
            } else {
                return Next::Step(Step::Failover {
                    replica: orphans[0].clone(),
                    master: ghost.addr.unwrap_or_else(|| NodeAddr::new("", 0)),
                    mode: FailoverMode::Takeover,
                });
            }
        }
        // 5. Open slots.
        if let Some(step) = self.open_slots_step() {
            return Next::Step(step);
        }
        // 6. Slots nobody claims at all: give them to the master with the fewest, empty.
        let uncovered = self.observed.covered_slots().complement();
        if !uncovered.is_empty()
            && unresolved.is_empty()
            && let Some(shard) = self
                .shards
                .iter()
                .filter(|s| {
                    self.observed
                        .node(&s.master)
                        .is_some_and(|n| n.is_reachable())
                })
                .min_by_key(|s| s.slot_count())
        {
            return Next::Step(Step::AssignSlots {
                master: shard.master.clone(),
                ranges: uncovered.ranges(),
            });
        }
        // 7. Orphaned replicas of vanished masters without slots, loners and spares: attach
        // where replicas are missing.
        let loners = self.observed.loners();
        if let (Some(loner), Some(via)) = (loners.first(), self.any_member()) {
            return Next::Step(Step::Meet {
                node: loner.clone(),
                via,
            });
        }
        // Replicas of vanished masters that served slots wait for Redis to promote them.
        let ghosts_with_slots: Vec<String> = self
            .observed
            .ghosts()
            .into_iter()
            .filter(|g| !g.slots.is_empty())
            .map(|g| g.id)
            .collect();
        let orphans =
            self.orphans(|master| master.is_none_or(|m| !ghosts_with_slots.iter().any(|g| g == m)));
        let spares: Vec<NodeAddr> = self
            .shards
            .iter()
            .filter(|s| s.slot_count() == 0 && s.replicas.is_empty())
            .map(|s| s.master.clone())
            .collect();
        let want = replicas.unwrap_or(usize::MAX);
        for node in orphans
            .iter()
            .chain(spares.iter().filter(|_| replicas.is_some()))
        {
            if let Some(shard) = self
                .shards
                .iter()
                .filter(|s| {
                    s.slot_count() > 0
                        && s.replicas.len() < want
                        && self.same_group(node, &s.master)
                })
                .min_by_key(|s| {
                    let clash = self
                        .host(node)
                        .is_some_and(|h| self.shard_hosts(s).contains(&h));
                    (clash, s.replicas.len())
                })
            {
                return Next::Step(Step::Replicate {
                    replica: node.clone(),
                    master_id: shard.master_id.clone(),
                    master: shard.master.clone(),
                });
            }
        }
        for shard in self.shards.iter().filter(|s| s.slot_count() > 0) {
            if replicas.is_some_and(|r| shard.replicas.len() < r) {
                unresolved.push(format!(
                    "master {} has {} replica{}, expected {}; a scale adds nodes",
                    shard.master,
                    shard.replicas.len(),
                    plural(shard.replicas.len()),
                    replicas.unwrap_or_default()
                ));
            }
        }
        if unresolved.is_empty()
            && let Some(step) = self.placement_step()
        {
            return Next::Step(step);
        }
        Next::Done { unresolved }
    }
}

/// Which shards a scale keeps, which it drops, and which members are spare.
struct Roles {
    keep: Vec<ObservedShard>,
    drop: Vec<ObservedShard>,
    spares: Vec<NodeAddr>,
}

impl Roles {
    /// Chooses the `masters` shards to keep by dropping one at a time: first empty masters
    /// without replicas (spares), then shards already partly drained (so a resumed scale-in
    /// keeps draining the same ones), then the shard whose host holds the most of the remaining
    /// masters (so the survivors stay spread), then the one with fewer replicas.
    fn of(planner: &Planner<'_>, masters: usize) -> Self {
        let mut kept: Vec<ObservedShard> = planner.shards.clone();
        let mut drop = Vec::new();
        let mut spares = Vec::new();
        let most = kept
            .iter()
            .map(ObservedShard::slot_count)
            .max()
            .unwrap_or(0);
        // Coarse buckets: shards within an eighth of the largest count as equally full.
        let fullness = |s: &ObservedShard| {
            (s.slot_count() * 8 + most / 2)
                .checked_div(most)
                .unwrap_or(0)
        };
        while kept.len() > masters {
            let mut per_host: BTreeMap<Option<&str>, usize> = BTreeMap::new();
            for shard in &kept {
                *per_host.entry(planner.host(&shard.master)).or_default() += 1;
            }
            let host_load = |s: &ObservedShard| match planner.host(&s.master) {
                Some(h) => per_host.get(&Some(h)).copied().unwrap_or(0),
                None => 0,
            };
            // With platform groups, a master whose group already leads another kept shard is a
            // node met to become a replica there, not a shard of its own.
            let shares_group = |s: &ObservedShard| {
                planner.observed.group_of(&s.master).is_some_and(|g| {
                    kept.iter().any(|o| {
                        o.master != s.master && planner.observed.group_of(&o.master) == Some(g)
                    })
                })
            };
            let victim = kept
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| {
                    (
                        s.slot_count() > 0 || !s.replicas.is_empty(),
                        !planner.observed.is_retiring(&s.master),
                        !shares_group(s),
                        fullness(s),
                        std::cmp::Reverse(host_load(s)),
                        s.replicas.len(),
                        std::cmp::Reverse(s.master.clone()),
                    )
                })
                .map(|(i, _)| i);
            let Some(victim) = victim else { break };
            let shard = kept.remove(victim);
            if shard.slot_count() == 0 && shard.replicas.is_empty() {
                spares.push(shard.master);
            } else {
                drop.push(shard);
            }
        }
        Self {
            keep: kept,
            drop,
            spares,
        }
    }

    /// Kept shards within one slot of each other and dropped shards empty.
    fn is_balanced(&self) -> bool {
        if self.drop.iter().any(|s| s.slot_count() > 0) {
            return false;
        }
        let counts: Vec<usize> = self.keep.iter().map(ObservedShard::slot_count).collect();
        let (min, max) = (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        );
        max - min <= 1
    }
}

/// Checks the safety rules for `step` against `observed`, right before it is executed.
///
/// # Errors
/// A sentence naming the rule the step would break.
pub fn check_step(step: &Step, observed: &Observed) -> Result<(), String> {
    let down_in_shard = |node: &NodeAddr| -> Option<NodeAddr> {
        let shard = observed.shard_of(node)?;
        shard
            .members()
            .filter(|m| *m != node)
            .find(|m| observed.node(m).is_none_or(|n| !n.is_reachable()))
            .cloned()
    };
    match step {
        Step::Remove { node, id } => {
            if let Some(follower) = id.as_deref().and_then(|id| observed.follower_of(id)) {
                return Err(format!(
                    "{follower} still replicates {node}; removing it would orphan that replica"
                ));
            }
            if let Some((_, _, slots)) = observed.role_of(node)
                && !slots.is_empty()
            {
                return Err(format!(
                    "{node} serves slots {}; a node is removed only once drained",
                    format_ranges(&slots)
                ));
            }
            if let Some(other) = down_in_shard(node) {
                return Err(format!(
                    "{other}, in the same shard as {node}, is down; removing {node} too could \
                     leave the shard without a copy"
                ));
            }
        }
        Step::Restart { node } => {
            if let Some(other) = down_in_shard(node) {
                return Err(format!(
                    "{other}, in the same shard as {node}, is down; never two nodes of one \
                     shard at once"
                ));
            }
            if let Some((Role::Master, _, slots)) = observed.role_of(node)
                && !slots.is_empty()
                && observed
                    .shard_of(node)
                    .is_some_and(|s| !s.replicas.is_empty())
            {
                return Err(format!(
                    "{node} is a master with replicas; fail it over before restarting it"
                ));
            }
        }
        Step::Forget { id, .. } => {
            if let Some(ghost) = observed.ghosts().into_iter().find(|g| &g.id == id)
                && !ghost.slots.is_empty()
            {
                return Err(format!(
                    "node {} serves slots {}; it is never forgotten while it does",
                    short_id(id),
                    format_ranges(&ghost.slots)
                ));
            }
            if observed.node_by_id(id).is_some() {
                return Err(format!(
                    "node {} still runs; it is not a ghost",
                    short_id(id)
                ));
            }
        }
        Step::Replicate {
            replica, master, ..
        } => {
            if let (Some(a), Some(b)) = (observed.group_of(replica), observed.group_of(master))
                && a != b
            {
                return Err(format!(
                    "{replica} belongs to group {a} and {master} to group {b}; a node only \
                     replicates a master of its own group"
                ));
            }
        }
        Step::Failover { replica, mode, .. } => {
            let Some(facts) = observed.node(replica).and_then(|n| n.facts()) else {
                return Err(format!("replica {replica} is down"));
            };
            if *mode == FailoverMode::Planned {
                if !facts.link_up {
                    return Err(format!("replica {replica} has its replication link down"));
                }
                let master_offset = facts
                    .master_id
                    .as_deref()
                    .and_then(|m| observed.node_by_id(m))
                    .and_then(|n| n.facts())
                    .map_or(0, |f| f.offset);
                let lag = master_offset.saturating_sub(facts.offset);
                if lag > MAX_FAILOVER_LAG {
                    return Err(format!(
                        "replica {replica} is {lag} bytes behind its master (limit \
                         {MAX_FAILOVER_LAG})"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_remedy_generally_and_as_a_local_command_only_when_asked() {
        let refusal = Refusal {
            operation: "scale".into(),
            reason: "10.0.0.7:6379 is down (connection refused)".into(),
            remedy: Remedy::Heal,
        };
        let plain = refusal.to_string();
        assert_eq!(
            plain,
            "scale refused: 10.0.0.7:6379 is down (connection refused); heal the cluster first"
        );
        assert!(!plain.contains("cinnabar "), "{plain}");
        assert!(
            refusal
                .local_message()
                .ends_with("run `cinnabar heal` first (it restarts dead nodes)"),
            "{}",
            refusal.local_message()
        );
        let impossible = Refusal {
            remedy: Remedy::None,
            ..refusal
        };
        assert_eq!(impossible.local_message(), impossible.to_string());
    }
}
