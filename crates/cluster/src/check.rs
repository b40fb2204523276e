//! `check`: reads every node reachable from some seeds and reports what is wrong, in sentences.
//!
//! Read-only: it must never change a node. Every node is queried with bounded timeouts and at
//! the same time (up to 64 at once), so one dead or paused node costs one timeout and becomes a
//! report entry. Discovery queries at most 2000 nodes, however many a corrupt view lists.
//!
//! Whose word counts: a reachable node is the authority on itself (role, master, slots, open
//! slots); a node we cannot reach is described by the first reachable node that knows it.
//! Failure flags (`fail`, `fail?`) are other nodes' opinions and are reported with who holds them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts};
use crate::error::ClusterError;
use crate::info::{ClusterInfo, ReplicationInfo};
use crate::placement::plural;
use crate::slots::{SLOT_COUNT, SlotRange, SlotSet, format_ranges};
use crate::topology::{ClusterNode, Role, SlotMigration, SlotSignature, Topology, short_id};

/// Discovery queries at most this many nodes in all, so a corrupt view cannot make us scan
/// forever or open thousands of connections at once.
const MAX_NODES: usize = 2000;

/// At most this many nodes are queried at the same time.
const MAX_CONCURRENT_QUERIES: usize = 64;

/// How `check` reads the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Per-node connection and reply timeouts.
    pub timeouts: Timeouts,
    /// When set, a master serving slots with fewer replicas is a problem.
    pub expected_replicas: Option<usize>,
}

/// One node as `check` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// Node id (empty for a seed that could not be reached and that no other node knows).
    pub id: String,
    /// Client address.
    pub addr: NodeAddr,
    /// Announced hostname, when set.
    pub hostname: Option<String>,
    /// Master or replica.
    pub role: Role,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    /// The master's address, for replicas whose master is known.
    pub master_addr: Option<NodeAddr>,
    /// Slots served.
    pub slots: Vec<SlotRange>,
    /// Whether we could query the node.
    pub reachable: bool,
    /// Reachable, not flagged `fail`/`fail?` by anyone, and for replicas the master link is up.
    pub healthy: bool,
    /// The node's own flags (without `myself`) plus failure flags other nodes hold about it.
    pub flags: Vec<String>,
    /// `cluster_state` as the node reports it.
    pub cluster_state: Option<String>,
    /// `cluster_known_nodes` as the node reports it.
    pub known_nodes: Option<u64>,
    /// Configuration epoch.
    pub config_epoch: u64,
    /// `used_memory` in bytes.
    pub used_memory: Option<u64>,
    /// For replicas, whether `master_link_status` is `up`.
    pub master_link_up: Option<bool>,
    /// Why the node could not be queried.
    pub error: Option<String>,
}

/// Direction of an open slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum OpenSlotState {
    /// The node is sending the slot.
    Migrating {
        /// Destination id.
        to: String,
        /// Destination address, when known.
        to_addr: Option<NodeAddr>,
    },
    /// The node is receiving the slot.
    Importing {
        /// Source id.
        from: String,
        /// Source address, when known.
        from_addr: Option<NodeAddr>,
    },
}

/// Something wrong with the cluster. `Display` is one precise sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A node could not be queried.
    NodeUnreachable {
        /// The node.
        addr: NodeAddr,
        /// What went wrong.
        error: String,
    },
    /// Other nodes flag a node `fail` (agreed) or `fail?` (suspected).
    NodeFailed {
        /// The node's id.
        id: String,
        /// Its address, when known.
        addr: Option<NodeAddr>,
        /// `fail` or `fail?`.
        flag: String,
        /// The nodes holding that opinion.
        reported_by: Vec<NodeAddr>,
    },
    /// A handshake with an address never completed (often a `MEET` to a wrong address, or a
    /// node that was forgotten while others still gossip about it).
    NodeInHandshake {
        /// The address being greeted.
        addr: Option<NodeAddr>,
        /// The nodes stuck greeting it.
        reported_by: Vec<NodeAddr>,
    },
    /// A node is known only by id (`noaddr`).
    NodeWithoutAddress {
        /// Its id.
        id: String,
        /// The nodes that know it so.
        reported_by: Vec<NodeAddr>,
    },
    /// Some reachable nodes do not know a member at all.
    NodeNotKnownBy {
        /// The member.
        addr: NodeAddr,
        /// Its id.
        id: String,
        /// The nodes that do not list it.
        unaware: Vec<NodeAddr>,
    },
    /// A node reports `cluster_state` other than `ok`.
    ClusterStateFail {
        /// The node.
        node: NodeAddr,
        /// What it reports (`fail`).
        state: String,
    },
    /// Slots no master serves.
    SlotsUncovered {
        /// The slots, as ranges.
        ranges: Vec<SlotRange>,
        /// How many slots.
        count: usize,
    },
    /// A slot is half-way through a migration.
    OpenSlot {
        /// The node with the open slot.
        node: NodeAddr,
        /// The slot.
        slot: u16,
        /// Migrating or importing, and the other side.
        state: OpenSlotState,
    },
    /// Nodes hold different views of who serves which slots.
    Disagreement {
        /// Nodes grouped by identical view, largest group first.
        views: Vec<Vec<NodeAddr>>,
        /// The first slot on which the two largest groups differ, explained.
        example: String,
    },
    /// A replica's replication link to its master is down.
    ReplicaLinkDown {
        /// The replica.
        replica: NodeAddr,
        /// Its master, when known.
        master: Option<NodeAddr>,
    },
    /// A master serving slots has fewer replicas than expected (only with
    /// [`CheckOptions::expected_replicas`]).
    ShardWithoutReplica {
        /// The master.
        master: NodeAddr,
        /// Replicas it has.
        replicas: usize,
        /// Replicas expected.
        expected: usize,
    },
}

fn list(addrs: &[NodeAddr]) -> String {
    let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    names.join(", ")
}

fn node_label(id: &str, addr: Option<&NodeAddr>) -> String {
    match addr {
        Some(a) => format!("{a} ({})", short_id(id)),
        None => format!("node {}", short_id(id)),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeUnreachable { addr, error } => write!(f, "{addr} is unreachable: {error}"),
            Self::NodeFailed {
                id,
                addr,
                flag,
                reported_by,
            } => {
                let what = if flag == "fail" {
                    "is marked failed (fail)"
                } else {
                    "is suspected down (fail?)"
                };
                write!(
                    f,
                    "{} {what} by {}",
                    node_label(id, addr.as_ref()),
                    list(reported_by)
                )
            }
            Self::NodeInHandshake { addr, reported_by } => write!(
                f,
                "{} never completed its handshake with {}",
                addr.as_ref()
                    .map_or_else(|| "an unknown address".to_owned(), ToString::to_string),
                list(reported_by)
            ),
            Self::NodeWithoutAddress { id, reported_by } => write!(
                f,
                "node {} has no known address (noaddr) on {}",
                short_id(id),
                list(reported_by)
            ),
            Self::NodeNotKnownBy { addr, id, unaware } => write!(
                f,
                "{} is not known to {}",
                node_label(id, Some(addr)),
                list(unaware)
            ),
            Self::ClusterStateFail { node, state } => {
                write!(f, "{node} reports cluster_state:{state}")
            }
            Self::SlotsUncovered { ranges, count } => {
                let shown = format_ranges(&ranges[..ranges.len().min(12)]);
                let more = if ranges.len() > 12 { " …" } else { "" };
                write!(
                    f,
                    "{count} slot{} served by no master: {shown}{more}",
                    if *count == 1 { " is" } else { "s are" }
                )
            }
            Self::OpenSlot { node, slot, state } => match state {
                OpenSlotState::Migrating { to, to_addr } => write!(
                    f,
                    "slot {slot} is open on {node}: migrating to {}",
                    node_label(to, to_addr.as_ref())
                ),
                OpenSlotState::Importing { from, from_addr } => write!(
                    f,
                    "slot {slot} is open on {node}: importing from {}",
                    node_label(from, from_addr.as_ref())
                ),
            },
            Self::Disagreement { views, example } => {
                let groups: Vec<String> = views.iter().map(|g| format!("[{}]", list(g))).collect();
                write!(
                    f,
                    "nodes disagree on slot ownership ({example}); views: {}",
                    groups.join(" vs ")
                )
            }
            Self::ReplicaLinkDown { replica, master } => match master {
                Some(m) => write!(f, "replica {replica} has its replication link to {m} down"),
                None => write!(
                    f,
                    "replica {replica} has its replication link down (master unknown)"
                ),
            },
            Self::ShardWithoutReplica {
                master,
                replicas,
                expected,
            } => write!(
                f,
                "master {master} has {replicas} replica{}, expected {expected}",
                plural(*replicas)
            ),
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Every member found, sorted by address.
    pub nodes: Vec<NodeReport>,
    /// Everything wrong; empty for a healthy cluster.
    pub problems: Vec<Problem>,
    /// Slots served by some master (of 16384).
    pub slots_covered: usize,
}

impl CheckReport {
    /// No problems and every slot served.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty() && self.slots_covered == SLOT_COUNT
    }

    /// Masters in the report.
    pub fn masters(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes.iter().filter(|n| n.role == Role::Master)
    }

    /// Replicas in the report.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes.iter().filter(|n| n.role == Role::Replica)
    }

    /// The report for `addr`.
    pub fn node(&self, addr: &NodeAddr) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| &n.addr == addr)
    }
}

impl fmt::Display for CheckReport {
    /// A one-line summary, then one line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masters = self.masters().count();
        let replicas = self.replicas().count();
        write!(
            f,
            "{} node{} ({masters} master{}, {replicas} replica{}), {}/{SLOT_COUNT} slots covered, {}",
            self.nodes.len(),
            plural(self.nodes.len()),
            plural(masters),
            plural(replicas),
            self.slots_covered,
            if self.is_healthy() {
                "healthy".to_owned()
            } else {
                format!(
                    "{} problem{}",
                    self.problems.len(),
                    plural(self.problems.len())
                )
            }
        )?;
        for problem in &self.problems {
            write!(f, "\n- {problem}")?;
        }
        Ok(())
    }
}

/// Checks the cluster reachable from `seeds` with default options.
///
/// # Errors
/// [`ClusterError::InvalidTopology`] when `seeds` is empty. Unreachable nodes are problems in
/// the report, not errors.
pub async fn check(seeds: &[NodeAddr]) -> Result<CheckReport, ClusterError> {
    check_with(seeds, &CheckOptions::default()).await
}

/// Checks the cluster reachable from `seeds`: discovers every node through `CLUSTER NODES`,
/// queries them concurrently, up to 64 at once (`CLUSTER NODES`, `CLUSTER INFO`,
/// `INFO replication`, `INFO memory`) and lists the problems found. At most 2000 nodes are
/// queried; addresses found beyond that are left out of the report.
///
/// # Errors
/// [`ClusterError::InvalidTopology`] when `seeds` is empty.
pub async fn check_with(
    seeds: &[NodeAddr],
    options: &CheckOptions,
) -> Result<CheckReport, ClusterError> {
    if seeds.is_empty() {
        return Err(ClusterError::InvalidTopology(
            "check needs at least one seed address".into(),
        ));
    }
    let observations = observe(seeds, options.timeouts).await;
    Ok(analyse(&observations, options))
}

/// How often [`wait_healthy`] checks again.
const HEALTH_POLL: Duration = Duration::from_millis(200);

/// Checks the cluster reachable from `seeds` (as [`check_with`]) every 200 ms until it is
/// healthy ([`CheckReport::is_healthy`]) and returns that report. Checks at least once; a check
/// under way when `timeout` passes is finished, so the wait may exceed `timeout` by up to one
/// check (bounded by `options.timeouts`).
///
/// # Errors
/// - [`ClusterError::InvalidTopology`] when `seeds` is empty;
/// - [`ClusterError::NotHealthy`] when `timeout` passes first, with the last check's problems.
pub async fn wait_healthy(
    seeds: &[NodeAddr],
    options: &CheckOptions,
    timeout: Duration,
) -> Result<CheckReport, ClusterError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = check_with(seeds, options).await?;
        if report.is_healthy() {
            return Ok(report);
        }
        let now = Instant::now();
        if now >= deadline {
            let mut problems: Vec<String> =
                report.problems.iter().map(ToString::to_string).collect();
            if problems.is_empty() {
                problems.push(format!(
                    "only {} of {SLOT_COUNT} slots are served",
                    report.slots_covered
                ));
            }
            return Err(ClusterError::NotHealthy {
                after: timeout,
                problems,
            });
        }
        tokio::time::sleep(HEALTH_POLL.min(deadline - now)).await;
    }
}

/// What one node told us about itself and the cluster.
#[derive(Debug, Clone)]
struct Observation {
    view: Topology,
    info: ClusterInfo,
    replication: ReplicationInfo,
    used_memory: Option<u64>,
}

type Observed = (NodeAddr, Result<Observation, String>);

/// Queries the seeds, then every node they know, until no new node appears.
async fn observe(seeds: &[NodeAddr], timeouts: Timeouts) -> Vec<Observed> {
    let limits = DiscoveryLimits {
        max_nodes: MAX_NODES,
        concurrency: MAX_CONCURRENT_QUERIES,
    };
    discover(seeds, limits, move |addr| async move {
        let result = query_node(&addr, timeouts).await.map_err(|e| match e {
            ClusterError::Unreachable { source, .. } => source.to_string(),
            other => other.to_string(),
        });
        (addr, result)
    })
    .await
}

/// Bounds on one discovery.
#[derive(Debug, Clone, Copy)]
struct DiscoveryLimits {
    /// Nodes queried in total, seeds included.
    max_nodes: usize,
    /// Queries in flight at once.
    concurrency: usize,
}

/// Breadth-first discovery from `seeds` through `query`, in rounds: each round queries the
/// addresses the previous one revealed. No more than `limits.max_nodes` addresses are ever
/// queried (a round's frontier is cut to what is left of that budget, lowest addresses first)
/// and no more than `limits.concurrency` queries run at once.
async fn discover<F, Fut>(seeds: &[NodeAddr], limits: DiscoveryLimits, query: F) -> Vec<Observed>
where
    F: Fn(NodeAddr) -> Fut,
    Fut: Future<Output = Observed> + Send + 'static,
{
    let concurrency = limits.concurrency.max(1);
    let mut queued: BTreeSet<NodeAddr> = seeds.iter().cloned().collect();
    let mut frontier: Vec<NodeAddr> = queued.iter().cloned().collect();
    let mut known_ids: BTreeSet<String> = BTreeSet::new();
    let mut out: Vec<Observed> = Vec::new();
    let mut queried = 0;
    while !frontier.is_empty() && queried < limits.max_nodes {
        let budget = limits.max_nodes - queried;
        if frontier.len() > budget {
            tracing::warn!(
                found = frontier.len(),
                budget,
                max_nodes = limits.max_nodes,
                "discovery found more nodes than it may query; ignoring the rest"
            );
            frontier.sort_unstable();
            frontier.truncate(budget);
        }
        queried += frontier.len();
        let mut addrs = frontier.drain(..);
        let mut set = JoinSet::new();
        let mut round = Vec::new();
        loop {
            while set.len() < concurrency {
                let Some(addr) = addrs.next() else { break };
                set.spawn(query(addr));
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            if let Ok(observed) = joined {
                round.push(observed);
            }
        }
        drop(addrs);
        for (_, result) in &round {
            if let Ok(obs) = result
                && let Some(me) = obs.view.myself()
            {
                known_ids.insert(me.id.clone());
            }
        }
        for (_, result) in &round {
            let Ok(obs) = result else { continue };
            for node in &obs.view.nodes {
                let Some(addr) = member_addr(node) else {
                    continue;
                };
                if !known_ids.contains(&node.id) && queued.insert(addr.clone()) {
                    frontier.push(addr.clone());
                }
            }
        }
        out.extend(round);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The address to query a node at, unless it is not a real member (handshake, no address).
fn member_addr(node: &ClusterNode) -> Option<&NodeAddr> {
    if node.flags.handshake || node.flags.noaddr {
        return None;
    }
    node.addr.as_ref().filter(|a| !a.host.is_empty())
}

async fn query_node(addr: &NodeAddr, timeouts: Timeouts) -> Result<Observation, ClusterError> {
    let mut client = NodeClient::connect(addr, timeouts).await?;
    let view = client.cluster_nodes().await?;
    let info = client.cluster_info().await?;
    let replication = client.replication_info().await?;
    let used_memory = client.info("memory").await?.get_u64("used_memory");
    Ok(Observation {
        view,
        info,
        replication,
        used_memory,
    })
}

/// Everything known about one member, merged from all views.
struct Member<'a> {
    addr: NodeAddr,
    /// The member's own line if reachable, else the first reachable view's line about it.
    line: Option<&'a ClusterNode>,
    observation: Option<&'a Observation>,
    error: Option<&'a str>,
}

fn analyse(observed: &[Observed], options: &CheckOptions) -> CheckReport {
    let views: Vec<(&NodeAddr, &Observation)> = observed
        .iter()
        .filter_map(|(a, r)| r.as_ref().ok().map(|o| (a, o)))
        .collect();
    let members = merge_members(observed, &views);
    let addr_of: BTreeMap<&str, &NodeAddr> = members
        .iter()
        .filter_map(|m| m.line.map(|l| (l.id.as_str(), &m.addr)))
        .collect();

    let mut problems = Vec::new();
    for (addr, result) in observed {
        if let Err(error) = result {
            problems.push(Problem::NodeUnreachable {
                addr: addr.clone(),
                error: error.clone(),
            });
        }
    }
    let failing = failure_opinions(&views);
    problems.extend(failure_problems(&views, &failing, &addr_of));
    problems.extend(membership_problems(&members, &views));
    for (addr, obs) in &views {
        if !obs.info.is_ok() {
            problems.push(Problem::ClusterStateFail {
                node: (*addr).clone(),
                state: obs.info.state.clone(),
            });
        }
    }
    let covered = coverage(&members);
    let uncovered = covered.complement().ranges();
    if !views.is_empty() && !uncovered.is_empty() {
        problems.push(Problem::SlotsUncovered {
            count: SLOT_COUNT - covered.len(),
            ranges: uncovered,
        });
    }
    problems.extend(open_slots(&views, &addr_of));
    problems.extend(disagreement(&views, &addr_of));

    let nodes: Vec<NodeReport> = members
        .iter()
        .map(|m| node_report(m, &failing, &addr_of))
        .collect();
    for node in nodes
        .iter()
        .filter(|n| n.reachable && n.role == Role::Replica)
    {
        if node.master_link_up != Some(true) {
            problems.push(Problem::ReplicaLinkDown {
                replica: node.addr.clone(),
                master: node.master_addr.clone(),
            });
        }
    }
    if let Some(expected) = options.expected_replicas {
        for master in nodes
            .iter()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
        {
            let replicas = nodes
                .iter()
                .filter(|n| n.role == Role::Replica && n.master_id.as_deref() == Some(&master.id))
                .count();
            if replicas < expected {
                problems.push(Problem::ShardWithoutReplica {
                    master: master.addr.clone(),
                    replicas,
                    expected,
                });
            }
        }
    }
    CheckReport {
        nodes,
        problems,
        slots_covered: covered.len(),
    }
}

/// One entry per member address: queried nodes plus real members only others know.
fn merge_members<'a>(
    observed: &'a [Observed],
    views: &[(&'a NodeAddr, &'a Observation)],
) -> Vec<Member<'a>> {
    let mut members: Vec<Member<'a>> = Vec::new();
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for (addr, result) in observed {
        let (line, observation, error) = match result {
            Ok(obs) => (obs.view.myself(), Some(obs), None),
            Err(e) => (None, None, Some(e.as_str())),
        };
        if let Some(l) = line {
            ids.insert(&l.id);
        }
        members.push(Member {
            addr: addr.clone(),
            line,
            observation,
            error,
        });
    }
    // Unreachable members: describe them by the first view that knows them.
    for member in members.iter_mut().filter(|m| m.line.is_none()) {
        member.line = views
            .iter()
            .filter_map(|(_, o)| o.view.node_by_addr(&member.addr))
            .find(|n| member_addr(n).is_some() && !ids.contains(n.id.as_str()));
        if let Some(l) = member.line {
            ids.insert(&l.id);
        }
    }
    members.sort_by(|a, b| a.addr.cmp(&b.addr));
    members
}

/// For every node id: which viewers flag it `fail` and which flag it `fail?`.
type Opinions<'a> = BTreeMap<&'a str, (Vec<NodeAddr>, Vec<NodeAddr>)>;

fn failure_opinions<'a>(views: &[(&NodeAddr, &'a Observation)]) -> Opinions<'a> {
    let mut out: Opinions<'a> = BTreeMap::new();
    for (viewer, obs) in views {
        for node in obs.view.nodes.iter().filter(|n| !n.flags.myself) {
            let entry = out.entry(node.id.as_str()).or_default();
            if node.flags.fail {
                entry.0.push((*viewer).clone());
            } else if node.flags.pfail {
                entry.1.push((*viewer).clone());
            }
        }
    }
    out.retain(|_, (fail, pfail)| !fail.is_empty() || !pfail.is_empty());
    out
}

fn failure_problems(
    views: &[(&NodeAddr, &Observation)],
    failing: &Opinions<'_>,
    addr_of: &BTreeMap<&str, &NodeAddr>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (id, (fail, pfail)) in failing {
        let (flag, reported_by) = if fail.is_empty() {
            ("fail?", pfail.clone())
        } else {
            ("fail", fail.clone())
        };
        let addr = addr_of.get(id).map(|a| (*a).clone()).or_else(|| {
            views
                .iter()
                .find_map(|(_, o)| o.view.node(id).and_then(|n| n.addr.clone()))
        });
        problems.push(Problem::NodeFailed {
            id: (*id).to_owned(),
            addr,
            flag: flag.to_owned(),
            reported_by,
        });
    }
    let mut handshakes: BTreeMap<Option<NodeAddr>, Vec<NodeAddr>> = BTreeMap::new();
    let mut noaddr: BTreeMap<&str, Vec<NodeAddr>> = BTreeMap::new();
    for (viewer, obs) in views {
        for node in &obs.view.nodes {
            if node.flags.handshake {
                handshakes
                    .entry(node.addr.clone())
                    .or_default()
                    .push((*viewer).clone());
            } else if node.flags.noaddr && node.addr.is_none() {
                noaddr.entry(&node.id).or_default().push((*viewer).clone());
            }
        }
    }
    for (addr, reported_by) in handshakes {
        problems.push(Problem::NodeInHandshake { addr, reported_by });
    }
    for (id, reported_by) in noaddr {
        problems.push(Problem::NodeWithoutAddress {
            id: id.to_owned(),
            reported_by,
        });
    }
    problems
}

fn membership_problems(
    members: &[Member<'_>],
    views: &[(&NodeAddr, &Observation)],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for member in members {
        let Some(line) = member.line else { continue };
        let unaware: Vec<NodeAddr> = views
            .iter()
            .filter(|(_, o)| o.view.node(&line.id).is_none())
            .map(|(a, _)| (*a).clone())
            .collect();
        if !unaware.is_empty() {
            problems.push(Problem::NodeNotKnownBy {
                addr: member.addr.clone(),
                id: line.id.clone(),
                unaware,
            });
        }
    }
    problems
}

/// Slots served by some master, each member speaking for itself when reachable.
fn coverage(members: &[Member<'_>]) -> SlotSet {
    let mut covered = SlotSet::new();
    for line in members.iter().filter_map(|m| m.line) {
        if line.role() == Role::Master {
            for range in &line.slots {
                covered.insert_range(*range);
            }
        }
    }
    covered
}

fn open_slots(
    views: &[(&NodeAddr, &Observation)],
    addr_of: &BTreeMap<&str, &NodeAddr>,
) -> Vec<Problem> {
    let find = |id: &str| addr_of.get(id).map(|a| (*a).clone());
    let mut problems = Vec::new();
    for (addr, obs) in views {
        let Some(me) = obs.view.myself() else {
            continue;
        };
        for migration in &me.migrations {
            let state = match migration {
                SlotMigration::Migrating { to, .. } => OpenSlotState::Migrating {
                    to: to.clone(),
                    to_addr: find(to),
                },
                SlotMigration::Importing { from, .. } => OpenSlotState::Importing {
                    from: from.clone(),
                    from_addr: find(from),
                },
            };
            problems.push(Problem::OpenSlot {
                node: (*addr).clone(),
                slot: migration.slot(),
                state,
            });
        }
    }
    problems
}

fn disagreement(
    views: &[(&NodeAddr, &Observation)],
    addr_of: &BTreeMap<&str, &NodeAddr>,
) -> Option<Problem> {
    let mut groups: BTreeMap<SlotSignature, Vec<(&NodeAddr, &Topology)>> = BTreeMap::new();
    for (addr, obs) in views {
        groups
            .entry(obs.view.slot_signature())
            .or_default()
            .push((addr, &obs.view));
    }
    if groups.len() < 2 {
        return None;
    }
    let mut groups: Vec<Vec<(&NodeAddr, &Topology)>> = groups.into_values().collect();
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a[0].0.cmp(b[0].0)));
    let example = first_difference(&groups[0], &groups[1], addr_of);
    Some(Problem::Disagreement {
        views: groups
            .iter()
            .map(|g| g.iter().map(|(a, _)| (*a).clone()).collect())
            .collect(),
        example,
    })
}

/// "slot 200: 127.0.0.1:7000 sees no owner, 127.0.0.1:7001 (and 4 more) see 127.0.0.1:7000".
fn first_difference(
    a: &[(&NodeAddr, &Topology)],
    b: &[(&NodeAddr, &Topology)],
    addr_of: &BTreeMap<&str, &NodeAddr>,
) -> String {
    let (owner_a, owner_b) = (slot_owners(a[0].1), slot_owners(b[0].1));
    let Some(slot) = (0..SLOT_COUNT).find(|&s| owner_a[s] != owner_b[s]) else {
        return "same slots, different node ids".into();
    };
    let who = |group: &[(&NodeAddr, &Topology)]| {
        if group.len() == 1 {
            format!("{} sees", group[0].0)
        } else {
            format!("{} (and {} more) see", group[0].0, group.len() - 1)
        }
    };
    let owner = |id: Option<&str>| match id {
        Some(id) => node_label(id, addr_of.get(id).copied()),
        None => "no owner".to_owned(),
    };
    format!(
        "slot {slot}: {} {}, {} {}",
        who(a),
        owner(owner_a[slot]),
        who(b),
        owner(owner_b[slot])
    )
}

/// The id serving each slot in `view`.
fn slot_owners(view: &Topology) -> Vec<Option<&str>> {
    let mut owner: Vec<Option<&str>> = vec![None; SLOT_COUNT];
    for node in &view.nodes {
        for range in &node.slots {
            for slot in range.start..=range.end {
                owner[usize::from(slot)] = Some(node.id.as_str());
            }
        }
    }
    owner
}

fn node_report(
    member: &Member<'_>,
    failing: &Opinions<'_>,
    addr_of: &BTreeMap<&str, &NodeAddr>,
) -> NodeReport {
    let line = member.line;
    let id = line.map(|l| l.id.clone()).unwrap_or_default();
    let mut flags: Vec<String> = line
        .map(|l| l.flags.names())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != "myself")
        .collect();
    if let Some((fail, pfail)) = failing.get(id.as_str()) {
        for (flag, holders) in [("fail", fail), ("fail?", pfail)] {
            if !holders.is_empty() && !flags.iter().any(|f| f == flag) {
                flags.push(flag.to_owned());
            }
        }
    }
    let role = line.map_or(Role::Master, ClusterNode::role);
    let master_id = line.and_then(|l| l.master_id.clone());
    let master_addr = master_id
        .as_deref()
        .and_then(|m| addr_of.get(m))
        .map(|a| (*a).clone());
    let obs = member.observation;
    let master_link_up = obs
        .and_then(|o| o.replication.master_link_up)
        .filter(|_| role == Role::Replica);
    let reachable = obs.is_some();
    let failed = flags.iter().any(|f| f == "fail" || f == "fail?");
    let link_ok = role == Role::Master || master_link_up == Some(true);
    NodeReport {
        id,
        addr: member.addr.clone(),
        hostname: line.and_then(|l| l.hostname.clone()),
        role,
        master_id,
        master_addr,
        slots: line.map(|l| l.slots.clone()).unwrap_or_default(),
        reachable,
        healthy: reachable && !failed && link_ok,
        flags,
        cluster_state: obs.map(|o| o.info.state.clone()),
        known_nodes: obs.map(|o| o.info.known_nodes),
        config_epoch: line.map_or(0, |l| l.config_epoch),
        used_memory: obs.and_then(|o| o.used_memory),
        master_link_up,
        error: member.error.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse_cluster_nodes;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    /// A view of the three-node cluster A (7000, master 0-8191), B (7001, master 8192-16383),
    /// C (7002, replica of A), as node `me` prints it, with `extra` appended to its own line.
    fn view(me: &str, extra: &str, tweak: impl Fn(&str) -> String) -> String {
        let lines = [
            (A, 7000, "master", "-", "0-8191"),
            (B, 7001, "master", "-", "8192-16383"),
            (C, 7002, "slave", A, ""),
        ];
        lines
            .iter()
            .map(|(id, port, role, master, slots)| {
                let flags = if *id == me {
                    format!("myself,{role}")
                } else {
                    (*role).to_owned()
                };
                let tail = if *id == me { extra } else { "" };
                tweak(&format!(
                    "{id} 127.0.0.1:{port}@{} {flags} {master} 0 0 1 connected {slots} {tail}",
                    port + 10000
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn observation(text: &str, state: &str, link_up: Option<bool>) -> Observation {
        Observation {
            view: parse_cluster_nodes(text).unwrap(),
            info: ClusterInfo::parse(&format!("cluster_state:{state}\ncluster_known_nodes:3\n")),
            replication: ReplicationInfo {
                role: if link_up.is_some() { "slave" } else { "master" }.into(),
                master_link_up: link_up,
                master_host: None,
                master_port: None,
                connected_replicas: None,
                repl_offset: None,
            },
            used_memory: Some(1_000_000),
        }
    }

    fn healthy_cluster() -> Vec<Observed> {
        vec![
            (
                addr(7000),
                Ok(observation(&view(A, "", str::to_owned), "ok", None)),
            ),
            (
                addr(7001),
                Ok(observation(&view(B, "", str::to_owned), "ok", None)),
            ),
            (
                addr(7002),
                Ok(observation(&view(C, "", str::to_owned), "ok", Some(true))),
            ),
        ]
    }

    #[test]
    fn a_consistent_cluster_is_healthy() {
        let report = analyse(&healthy_cluster(), &CheckOptions::default());
        assert!(report.is_healthy(), "{report}");
        assert_eq!(report.slots_covered, 16384);
        let replica = report.node(&addr(7002)).unwrap();
        assert_eq!(replica.role, Role::Replica);
        assert_eq!(replica.master_addr, Some(addr(7000)));
        assert!(replica.healthy);
        assert_eq!(
            report.to_string(),
            "3 nodes (2 masters, 1 replica), 16384/16384 slots covered, healthy"
        );
        let expecting = analyse(
            &healthy_cluster(),
            &CheckOptions {
                expected_replicas: Some(1),
                ..CheckOptions::default()
            },
        );
        assert_eq!(
            expecting
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["master 127.0.0.1:7001 has 0 replicas, expected 1"]
        );
    }

    #[test]
    fn an_unreachable_replica_is_described_by_the_others() {
        let mut observed = healthy_cluster();
        observed[2].1 = Err("timed out".into());
        for (_, r) in observed.iter_mut().take(2) {
            let obs = r.as_mut().unwrap();
            for node in &mut obs.view.nodes {
                if node.id == C {
                    node.flags.pfail = true;
                }
            }
        }
        let report = analyse(&observed, &CheckOptions::default());
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1:7002 is unreachable: timed out",
                "127.0.0.1:7002 (cccccccc) is suspected down (fail?) by 127.0.0.1:7000, 127.0.0.1:7001",
            ]
        );
        let c = report.node(&addr(7002)).unwrap();
        assert_eq!(
            (c.reachable, c.healthy, c.role),
            (false, false, Role::Replica)
        );
        assert_eq!(c.id, C);
        assert_eq!(c.flags, ["slave", "fail?"]);
    }

    #[test]
    fn uncovered_open_and_disputed_slots_are_explained() {
        // A gave up slot 5 and opened slot 6 towards B; the others still think A serves 5.
        let mine = view(A, &format!("[6->-{B}]"), |l| {
            if l.contains("myself") {
                l.replace(" 0-8191", " 0-4 6-8191")
            } else {
                l.to_owned()
            }
        });
        let mut observed = healthy_cluster();
        observed[0].1 = Ok(observation(&mine, "fail", None));
        let report = analyse(&observed, &CheckOptions::default());
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1:7000 reports cluster_state:fail",
                "1 slot is served by no master: 5",
                "slot 6 is open on 127.0.0.1:7000: migrating to 127.0.0.1:7001 (bbbbbbbb)",
                "nodes disagree on slot ownership (slot 5: 127.0.0.1:7001 (and 1 more) see \
                 127.0.0.1:7000 (aaaaaaaa), 127.0.0.1:7000 sees no owner); views: \
                 [127.0.0.1:7001, 127.0.0.1:7002] vs [127.0.0.1:7000]",
            ]
        );
        assert_eq!(report.slots_covered, 16383);
    }

    #[test]
    fn handshakes_unknown_members_and_down_links_are_reported() {
        let stuck = "dddddddddddddddddddddddddddddddddddddddd 127.0.0.1:7999@17999 handshake - 0 0 0 disconnected";
        let without_c = |l: &str| {
            if l.starts_with(C) {
                String::new()
            } else {
                l.to_owned()
            }
        };
        let mut observed = healthy_cluster();
        observed[0].1 = Ok(observation(
            &format!("{}\n{stuck}", view(A, "", str::to_owned)),
            "ok",
            None,
        ));
        observed[1].1 = Ok(observation(&view(B, "", without_c), "ok", None));
        observed[2].1 = Ok(observation(&view(C, "", str::to_owned), "ok", Some(false)));
        let report = analyse(&observed, &CheckOptions::default());
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1:7999 never completed its handshake with 127.0.0.1:7000",
                "127.0.0.1:7002 (cccccccc) is not known to 127.0.0.1:7001",
                "replica 127.0.0.1:7002 has its replication link to 127.0.0.1:7000 down",
            ]
        );
        assert_eq!(
            report.nodes.len(),
            3,
            "the handshake address is not a member"
        );
    }

    #[test]
    fn with_nothing_reachable_only_unreachable_nodes_are_reported() {
        let observed: Vec<Observed> = vec![
            (addr(7000), Err("Connection refused (os error 111)".into())),
            (addr(7001), Err("no answer within 2000 ms".into())),
        ];
        let report = analyse(&observed, &CheckOptions::default());
        assert!(!report.is_healthy());
        assert_eq!(report.slots_covered, 0);
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1:7000 is unreachable: Connection refused (os error 111)",
                "127.0.0.1:7001 is unreachable: no answer within 2000 ms",
            ]
        );
        assert!(report.nodes.iter().all(|n| !n.reachable && n.id.is_empty()));
        assert_eq!(
            report.nodes[1].error.as_deref(),
            Some("no answer within 2000 ms")
        );
    }

    /// A `CLUSTER NODES` text of masters on `ports`, as the node on `me` prints it.
    fn listing(me: u16, ports: impl IntoIterator<Item = u16>) -> String {
        ports
            .into_iter()
            .map(|port| {
                let flags = if port == me {
                    "myself,master"
                } else {
                    "master"
                };
                format!(
                    "{port:040x} 127.0.0.1:{port}@{} {flags} - 0 0 1 connected",
                    u32::from(port) + 10000
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs discovery against fake nodes: those in `views` answer with that listing, every other
    /// address is unreachable. Returns what was observed, every address queried and the most
    /// queries seen in flight at once.
    async fn discover_fakes(
        seed: u16,
        views: Vec<(u16, String)>,
        limits: DiscoveryLimits,
    ) -> (Vec<Observed>, Vec<NodeAddr>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        let views: Arc<BTreeMap<NodeAddr, Observation>> = Arc::new(
            views
                .into_iter()
                .map(|(port, text)| (addr(port), observation(&text, "ok", None)))
                .collect(),
        );
        let queried = Arc::new(Mutex::new(Vec::new()));
        let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let observed = discover(&[addr(seed)], limits, |a| {
            let (views, queried) = (Arc::clone(&views), Arc::clone(&queried));
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                queried.lock().unwrap().push(a.clone());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let result = views.get(&a).cloned().ok_or_else(|| "refused".to_owned());
                (a, result)
            }
        })
        .await;
        let queried = queried.lock().unwrap().clone();
        (observed, queried, peak.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn one_corrupt_view_cannot_start_more_queries_than_the_bounds_allow() {
        // The seed claims 5000 members: only MAX_NODES are queried, 64 at a time.
        let view = listing(10_000, 10_000..=15_000);
        let limits = DiscoveryLimits {
            max_nodes: MAX_NODES,
            concurrency: MAX_CONCURRENT_QUERIES,
        };
        let (observed, queried, peak) = discover_fakes(10_000, vec![(10_000, view)], limits).await;
        assert_eq!(queried.len(), MAX_NODES);
        assert_eq!(observed.len(), MAX_NODES);
        assert_eq!(
            queried.iter().collect::<BTreeSet<_>>().len(),
            MAX_NODES,
            "no address is queried twice"
        );
        assert!(peak <= MAX_CONCURRENT_QUERIES, "{peak} queries at once");
        assert!(peak > 1, "queries run concurrently");
    }

    #[tokio::test]
    async fn the_node_budget_spans_rounds_and_keeps_the_lowest_addresses() {
        // Round 1: the seed. Round 2: the 10 nodes it lists. Round 3: 100 more that 10001
        // lists, cut to the 39 lowest so that 50 nodes are queried in all.
        let views = vec![
            (10_000, listing(10_000, 10_000..=10_010)),
            (10_001, listing(10_001, 10_011..=10_110)),
        ];
        let limits = DiscoveryLimits {
            max_nodes: 50,
            concurrency: 4,
        };
        let (observed, queried, peak) = discover_fakes(10_000, views, limits).await;
        assert_eq!(queried.len(), 50);
        let expected: Vec<NodeAddr> = (10_000..10_050).map(addr).collect();
        assert_eq!(
            observed.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(peak <= 4, "{peak} queries at once");
    }

    #[tokio::test]
    async fn checking_without_seeds_is_an_error() {
        let err = check(&[]).await.unwrap_err();
        assert!(err.to_string().contains("at least one seed"), "{err}");
        let err = wait_healthy(&[], &CheckOptions::default(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at least one seed"), "{err}");
    }

    #[tokio::test]
    async fn waiting_for_health_gives_up_with_the_last_problems() {
        // A port the OS just handed out and that nobody listens on any more: it refuses.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let seed = addr(port);
        let started = Instant::now();
        let err = wait_healthy(
            std::slice::from_ref(&seed),
            &CheckOptions::default(),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let ClusterError::NotHealthy { after, problems } = &err else {
            panic!("expected NotHealthy, got {err}");
        };
        assert_eq!(*after, Duration::from_millis(500));
        assert_eq!(problems.len(), 1, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cluster not healthy after 500ms: {seed} is unreachable: "
            )),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn problems_serialise_with_their_kind() {
        let problem = Problem::SlotsUncovered {
            ranges: vec![SlotRange::new(0, 99)],
            count: 100,
        };
        let text = format!("{problem:?}");
        assert!(text.contains("SlotsUncovered"));
        assert_eq!(
            problem.to_string(),
            "100 slots are served by no master: 0-99"
        );
    }
}
