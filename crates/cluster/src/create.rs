//! Forms a new cluster from empty nodes, the way `redis-cli --cluster create` does, but with
//! every step reported and every wait bounded and explained.
//!
//! Steps: plan the layout (pure, before any node is touched) → connect and refuse any node that
//! is not empty → `ADDSLOTSRANGE` on masters → distinct `SET-CONFIG-EPOCH` per node → `MEET`
//! (every pair in small clusters, else everyone from the first node) → wait until every node
//! knows every other → `REPLICATE` (retried while a replica has not learnt its master) →
//! wait until every node reports `cluster_state:ok`, agrees on every node's role and slots, and
//! every replica's link is up. It must never touch a node that holds data or belongs elsewhere.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts, resolve_ip};
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::placement::{Layout, NewNode, plan_layout, plural};
use crate::slots::{SLOT_COUNT, SlotRange};
use crate::topology::{LinkState, Role, Topology};

/// How often we re-read nodes while waiting for gossip to settle.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// Empty cluster-enabled nodes; their count must be a multiple of `replicas_per_master + 1`.
    pub nodes: Vec<NewNode>,
    /// Replicas per master (0 for none).
    pub replicas_per_master: usize,
    /// Upper bound for the whole creation, waits included.
    pub timeout: Duration,
}

/// A step of cluster creation, for progress output. `Display` gives one human line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CreateProgress {
    /// The layout was planned; no node has been touched yet.
    Planned {
        /// Shards, masters, replicas, slot ranges and any resilience warnings.
        layout: Layout,
    },
    /// Every node answered, is cluster-enabled and empty.
    Validated {
        /// Number of nodes.
        nodes: usize,
    },
    /// Masters were given their slot ranges.
    SlotsAssigned {
        /// Number of masters.
        masters: usize,
    },
    /// Each node got its own configuration epoch.
    EpochsSet {
        /// Number of nodes.
        nodes: usize,
    },
    /// Nodes are learning about each other after `CLUSTER MEET`.
    Met {
        /// Nodes that know every other node (handshakes completed).
        joined: usize,
        /// All nodes.
        total: usize,
    },
    /// A replica now follows its master.
    ReplicaAttached {
        /// The replica.
        replica: NodeAddr,
        /// Its master.
        master: NodeAddr,
        /// Replicas attached so far.
        attached: usize,
        /// Replicas in total.
        total: usize,
    },
    /// Waiting for every node to agree and report `cluster_state:ok`.
    Waiting {
        /// Nodes that are ready (state ok, same view as planned, replica link up).
        ready: usize,
        /// All nodes.
        total: usize,
        /// What the first node that is not ready reports.
        pending: Option<String>,
    },
    /// The cluster is ready.
    Ready {
        /// Number of masters.
        masters: usize,
        /// Number of replicas.
        replicas: usize,
        /// Time since creation started.
        elapsed: Duration,
    },
}

impl fmt::Display for CreateProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Planned { layout } => {
                write!(f, "planned {layout}")?;
                for warning in &layout.warnings {
                    write!(f, "; warning: {warning}")?;
                }
                Ok(())
            }
            Self::Validated { nodes } => write!(
                f,
                "checked {nodes} node{}: all reachable, cluster-enabled and empty",
                plural(*nodes)
            ),
            Self::SlotsAssigned { masters } => write!(
                f,
                "assigned all {SLOT_COUNT} slots to {masters} master{}",
                plural(*masters)
            ),
            Self::EpochsSet { nodes } => write!(
                f,
                "gave each of the {nodes} node{} its own config epoch",
                plural(*nodes)
            ),
            Self::Met { joined, total } => {
                write!(f, "met: {joined}/{total} nodes know every other node")
            }
            Self::ReplicaAttached {
                replica,
                master,
                attached,
                total,
            } => write!(
                f,
                "replica {replica} now follows {master} ({attached}/{total})"
            ),
            Self::Waiting {
                ready,
                total,
                pending,
            } => {
                write!(
                    f,
                    "waiting: {ready}/{total} nodes agree on the layout and report cluster_state:ok"
                )?;
                match pending {
                    Some(p) => write!(f, " ({p})"),
                    None => Ok(()),
                }
            }
            Self::Ready {
                masters,
                replicas,
                elapsed,
            } => write!(
                f,
                "cluster ready: {masters} master{}, {replicas} replica{}, all {SLOT_COUNT} slots \
                 served (took {:.1} s)",
                plural(*masters),
                plural(*replicas),
                elapsed.as_secs_f64()
            ),
        }
    }
}

/// One node being formed into the cluster.
#[derive(Debug, Clone)]
struct Member {
    client: NodeClient,
    id: String,
    bus_port: u16,
    role: Role,
    /// Index of the master member, for replicas.
    master: Option<usize>,
    slots: Vec<SlotRange>,
}

impl Member {
    fn addr(&self) -> &NodeAddr {
        self.client.addr()
    }
}

/// Creates a cluster from `spec.nodes` and returns the first master's view of it.
///
/// Progress is reported through `on_progress` (one event per step, and one per change while
/// waiting). Nothing is sent to any node before the layout is planned and validated.
///
/// # Errors
/// - [`ClusterError::InvalidTopology`] / [`ClusterError::Placement`]: the layout is impossible
///   (see [`plan_layout`]), or two addresses reach the same node;
/// - [`ClusterError::Unreachable`], [`ClusterError::NotClusterEnabled`]: a node cannot be used;
/// - [`ClusterError::NodeNotEmpty`]: a node knows other nodes, serves slots or holds keys;
/// - [`ClusterError::Command`]: a node refused a step;
/// - [`ClusterError::Timeout`]: `spec.timeout` passed; names each node not ready and what it
///   reports. Its `pending_nodes` are the nodes to look at first: every node that could not be
///   read or is not ready for a reason of its own (cluster state, replication link, stray
///   entries in its view), and of the nodes that others do not yet see as planned, those the
///   most nodes complain about — a node that never joins is unknown to all the others, while
///   the others are each unknown only to it.
pub async fn create_cluster(
    spec: &CreateSpec,
    on_progress: &mut (dyn FnMut(&CreateProgress) + Send),
) -> Result<Topology, ClusterError> {
    create_cluster_as(spec, None, on_progress).await
}

/// [`create_cluster`] with nodes that require `credentials` (a password, or an ACL user).
///
/// # Errors
/// As [`create_cluster`].
pub async fn create_cluster_as(
    spec: &CreateSpec,
    credentials: Option<&Credentials>,
    on_progress: &mut (dyn FnMut(&CreateProgress) + Send),
) -> Result<Topology, ClusterError> {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let layout = plan_layout(&spec.nodes, spec.replicas_per_master)?;
    on_progress(&CreateProgress::Planned {
        layout: layout.clone(),
    });
    let timeouts = Timeouts::default();
    let mut members = connect_and_validate(&layout, timeouts, credentials).await?;
    on_progress(&CreateProgress::Validated {
        nodes: members.len(),
    });

    for member in members.iter_mut().filter(|m| m.role == Role::Master) {
        let slots = member.slots.clone();
        member.client.add_slots(&slots).await?;
    }
    on_progress(&CreateProgress::SlotsAssigned {
        masters: layout.masters(),
    });

    assign_epochs(&mut members).await?;
    on_progress(&CreateProgress::EpochsSet {
        nodes: members.len(),
    });

    meet_all(&mut members, timeouts).await?;
    wait_for::<Joined>(&members, deadline, on_progress).await?;
    attach_replicas(&mut members, deadline, on_progress).await?;
    wait_for::<Ready>(&members, deadline, on_progress).await?;

    let topology = members[0].client.cluster_nodes().await?;
    on_progress(&CreateProgress::Ready {
        masters: layout.masters(),
        replicas: layout.replicas(),
        elapsed: started.elapsed(),
    });
    Ok(topology)
}

/// Connects to every node of the layout (masters first) and refuses any that is not empty.
async fn connect_and_validate(
    layout: &Layout,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<Vec<Member>, ClusterError> {
    let masters = layout.masters();
    let mut members = Vec::new();
    for (i, node) in layout.nodes().into_iter().enumerate() {
        let (role, master, slots) = if i < masters {
            (Role::Master, None, layout.shards[i].slots.clone())
        } else {
            let shard = layout
                .shards
                .iter()
                .position(|s| s.replicas.iter().any(|r| r.addr == node.addr))
                .unwrap_or_default();
            (Role::Replica, Some(shard), Vec::new())
        };
        let mut client = NodeClient::connect_as(&node.addr, timeouts, credentials).await?;
        let (id, bus_port) = validate_empty(&mut client).await?;
        if let Some(twin) = members.iter().find(|m: &&Member| m.id == id) {
            return Err(ClusterError::InvalidTopology(format!(
                "{} and {} are the same node (id {id})",
                twin.addr(),
                node.addr
            )));
        }
        members.push(Member {
            client,
            id,
            bus_port,
            role,
            master,
            slots,
        });
    }
    Ok(members)
}

/// Returns the node's id and bus port if it is a fresh, empty cluster node.
async fn validate_empty(client: &mut NodeClient) -> Result<(String, u16), ClusterError> {
    let addr = client.addr().clone();
    let not_empty = |reason: String| ClusterError::NodeNotEmpty {
        addr: addr.clone(),
        reason,
    };
    let info = client.cluster_info().await?;
    let view = client.cluster_nodes().await?;
    let me = view.myself().ok_or_else(|| {
        ClusterError::parse("CLUSTER NODES", "", "the reply has no `myself` line")
    })?;
    if info.known_nodes > 1 || view.nodes.len() > 1 {
        let others: Vec<String> = view
            .nodes
            .iter()
            .filter(|n| !n.flags.myself)
            .map(|n| n.label())
            .collect();
        return Err(not_empty(format!(
            "it already knows {} other node{} ({}), so it belongs to a cluster",
            others.len(),
            plural(others.len()),
            others.join(", ")
        )));
    }
    if !me.slots.is_empty() || info.slots_assigned > 0 {
        return Err(not_empty(format!(
            "it already serves slots {}",
            crate::slots::format_ranges(&me.slots)
        )));
    }
    let keys = client.db_size().await?;
    if keys > 0 {
        return Err(not_empty(format!(
            "it holds {keys} key{}",
            plural(keys_usize(keys))
        )));
    }
    let bus_port = me
        .bus_port
        .unwrap_or_else(|| addr.port.saturating_add(10_000));
    Ok((me.id.clone(), bus_port))
}

fn keys_usize(keys: u64) -> usize {
    usize::try_from(keys).unwrap_or(usize::MAX)
}

/// Distinct epochs before meeting, as redis-cli does: otherwise every master starts at epoch 0
/// and Redis must resolve the collisions one by one before slot ownership converges.
async fn assign_epochs(members: &mut [Member]) -> Result<(), ClusterError> {
    for (epoch, member) in (1u64..).zip(members.iter_mut()) {
        match member.client.set_config_epoch(epoch).await {
            // A refusal (epoch already set) only costs convergence time; Redis resolves
            // epoch collisions itself.
            Err(ClusterError::Command { message, .. }) => {
                tracing::warn!(node = %member.addr(), %message, "SET-CONFIG-EPOCH refused");
            }
            other => other?,
        }
    }
    Ok(())
}

/// Up to this many nodes, every pair is introduced directly; above it, everyone meets the first
/// node only and gossip does the rest (n² handshakes would cost more than they save).
const FULL_MESH_MEET_LIMIT: usize = 24;

/// `CLUSTER MEET` so everyone learns everyone: all pairs for small clusters (no waiting for
/// gossip to spread introductions), else every node from the first one.
async fn meet_all(members: &mut [Member], timeouts: Timeouts) -> Result<(), ClusterError> {
    let mut ips = Vec::with_capacity(members.len());
    for member in members.iter() {
        ips.push(resolve_ip(member.addr(), timeouts.connect).await?);
    }
    let introducers = if members.len() <= FULL_MESH_MEET_LIMIT {
        members.len()
    } else {
        1
    };
    for i in 0..introducers {
        for j in i + 1..members.len() {
            let (port, bus) = (members[j].addr().port, members[j].bus_port);
            members[i].client.meet(ips[j], port, bus).await?;
        }
    }
    Ok(())
}

/// Runs `f` against every member at once; results in member order.
async fn poll_all<T, F, Fut>(members: &[Member], f: F) -> Vec<Result<T, ClusterError>>
where
    T: Send + 'static,
    F: Fn(Member) -> Fut,
    Fut: Future<Output = Result<T, ClusterError>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        let fut = f(member.clone());
        set.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<Option<Result<T, ClusterError>>> = (0..members.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, result)) = joined {
            out[i] = Some(result);
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ClusterError::InvalidTopology(
                    "a polling task panicked".into(),
                ))
            })
        })
        .collect()
}

/// Why a member is not there yet while we wait, and whom that points at.
#[derive(Debug)]
struct NotYet {
    /// What the member reports, for progress and for [`ClusterError::Timeout`]'s `pending`.
    line: String,
    /// Whom the line points at, for [`ClusterError::Timeout`]'s `pending_nodes`.
    blame: Blame,
}

/// Whom a member's "not yet" points at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Blame {
    /// We could not read the member.
    Unreadable,
    /// The member itself: its cluster state, its replication link, stray entries in its view.
    Itself,
    /// Members (by index) it does not yet see as planned.
    Others(Vec<usize>),
}

/// Something to wait for on every member: what to read from each, and how to judge it.
trait Condition {
    /// What one member reports.
    type Report: Send + 'static;
    /// What we wait for, completing "timed out waiting for …".
    const WHAT: &'static str;
    /// Reads one member.
    fn read(
        member: Member,
    ) -> impl Future<Output = Result<Self::Report, ClusterError>> + Send + 'static;
    /// Why `member` is not there yet, or `None`.
    fn judge(
        member: &Member,
        report: &Result<Self::Report, ClusterError>,
        members: &[Member],
    ) -> Option<NotYet>;
    /// The progress event for a poll in which `settled` of `total` members were there.
    fn progress(settled: usize, total: usize, first_pending: Option<&str>) -> CreateProgress;
    /// Lines a timeout lists before the pending members' own lines.
    fn timeout_preamble(
        _members: &[Member],
        _reports: &[Result<Self::Report, ClusterError>],
    ) -> Vec<String> {
        Vec::new()
    }
}

/// Polls every member until `C` holds for all of them, reporting progress whenever it changes,
/// and fails with [`ClusterError::Timeout`] once `deadline` passes.
async fn wait_for<C: Condition>(
    members: &[Member],
    deadline: Instant,
    on_progress: &mut (dyn FnMut(&CreateProgress) + Send),
) -> Result<(), ClusterError> {
    let total = members.len();
    let mut last: Option<CreateProgress> = None;
    loop {
        let reports = poll_all(members, C::read).await;
        let pending: Vec<(usize, NotYet)> = members
            .iter()
            .zip(&reports)
            .enumerate()
            .filter_map(|(i, (m, report))| C::judge(m, report, members).map(|n| (i, n)))
            .collect();
        let event = C::progress(
            total - pending.len(),
            total,
            pending.first().map(|(_, n)| n.line.as_str()),
        );
        if last.as_ref() != Some(&event) {
            on_progress(&event);
            last = Some(event);
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let pending_nodes = culprits(total, &pending)
                .into_iter()
                .map(|i| members[i].addr().clone())
                .collect();
            let mut lines = C::timeout_preamble(members, &reports);
            lines.extend(pending.into_iter().map(|(_, n)| n.line));
            return Err(ClusterError::Timeout {
                what: C::WHAT.into(),
                pending: lines,
                pending_nodes,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The members a timeout names in `pending_nodes` (indices, in member order):
/// - every member we could not read, and every member pending for a reason of its own;
/// - of the members that others do not yet see as planned, the ones the most members complain
///   about. Complaints point both ways when a node never joins (the others do not know it, and
///   it knows none of them), so naming every member complained about would name every node;
///   the node nobody knows collects the most complaints.
///
/// If that names nobody, every pending member.
fn culprits(total: usize, pending: &[(usize, NotYet)]) -> Vec<usize> {
    let mut named = vec![false; total];
    let mut complaints = vec![0usize; total];
    for (i, not_yet) in pending {
        match &not_yet.blame {
            Blame::Unreadable | Blame::Itself => named[*i] = true,
            Blame::Others(others) => {
                for &j in others {
                    if j == *i {
                        named[j] = true;
                    } else {
                        complaints[j] += 1;
                    }
                }
            }
        }
    }
    let most = complaints.iter().copied().max().unwrap_or(0);
    if most > 0 {
        for (j, &count) in complaints.iter().enumerate() {
            if count == most {
                named[j] = true;
            }
        }
    }
    if !named.contains(&true) {
        for (i, _) in pending {
            named[*i] = true;
        }
    }
    (0..total).filter(|&i| named[i]).collect()
}

/// Why `view` does not yet list every member as a full (non-handshake) node, or `None`; blames
/// the members it lacks, else (only handshakes left) the viewer itself.
fn missing_members(view: &Topology, members: &[Member]) -> Option<NotYet> {
    let missing: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            view.node(&m.id)
                .is_none_or(|n| n.flags.handshake || n.flags.noaddr)
        })
        .map(|(i, _)| i)
        .collect();
    let handshakes = view.nodes.iter().filter(|n| n.flags.handshake).count();
    if missing.is_empty() && handshakes == 0 {
        return None;
    }
    let names: Vec<String> = missing
        .iter()
        .map(|&i| members[i].addr().to_string())
        .collect();
    let line = format!(
        "knows {} of {} nodes{}{}",
        members.len() - missing.len(),
        members.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(", not yet {}", names.join(", "))
        },
        if handshakes > 0 {
            format!(", {handshakes} in handshake")
        } else {
            String::new()
        }
    );
    let blame = if missing.is_empty() {
        Blame::Itself
    } else {
        Blame::Others(missing)
    };
    Some(NotYet { line, blame })
}

/// Every member knows every other member (handshakes done).
struct Joined;

impl Condition for Joined {
    type Report = Topology;
    const WHAT: &'static str = "every node to learn every other node after CLUSTER MEET";

    async fn read(mut member: Member) -> Result<Topology, ClusterError> {
        member.client.cluster_nodes().await
    }

    fn judge(
        member: &Member,
        report: &Result<Topology, ClusterError>,
        members: &[Member],
    ) -> Option<NotYet> {
        match report {
            Ok(view) => missing_members(view, members).map(|n| NotYet {
                line: format!("{} {}", member.addr(), n.line),
                blame: n.blame,
            }),
            Err(e) => Some(NotYet {
                line: format!("{}: {e}", member.addr()),
                blame: Blame::Unreadable,
            }),
        }
    }

    fn progress(settled: usize, total: usize, _first_pending: Option<&str>) -> CreateProgress {
        CreateProgress::Met {
            joined: settled,
            total,
        }
    }

    /// Names the node that never joined first.
    fn timeout_preamble(
        members: &[Member],
        reports: &[Result<Topology, ClusterError>],
    ) -> Vec<String> {
        not_joined(members, reports)
    }
}

/// "127.0.0.1:7002 has not joined: unknown to 127.0.0.1:7001" for each member some reachable
/// member does not fully know yet, so a timeout names the node that never joined first.
fn not_joined(members: &[Member], views: &[Result<Topology, ClusterError>]) -> Vec<String> {
    members
        .iter()
        .filter_map(|m| {
            let unaware: Vec<String> = members
                .iter()
                .zip(views)
                .filter_map(|(viewer, view)| view.as_ref().ok().map(|v| (viewer, v)))
                .filter(|(_, v)| {
                    v.node(&m.id)
                        .is_none_or(|n| n.flags.handshake || n.flags.noaddr)
                })
                .map(|(viewer, _)| viewer.addr().to_string())
                .collect();
            (!unaware.is_empty()).then(|| {
                format!(
                    "{} has not joined: unknown to {}",
                    m.addr(),
                    unaware.join(", ")
                )
            })
        })
        .collect()
}

/// `CLUSTER REPLICATE` for every replica, retrying while it has not learnt its master yet.
async fn attach_replicas(
    members: &mut [Member],
    deadline: Instant,
    on_progress: &mut (dyn FnMut(&CreateProgress) + Send),
) -> Result<(), ClusterError> {
    let total = members.iter().filter(|m| m.role == Role::Replica).count();
    let mut attached = 0;
    for i in 0..members.len() {
        let Some(master) = members[i].master else {
            continue;
        };
        let (master_id, master_addr) = (members[master].id.clone(), members[master].addr().clone());
        let replica = &mut members[i];
        loop {
            match replica.client.replicate(&master_id).await {
                Ok(()) => break,
                Err(ClusterError::Command { message, .. })
                    if message.contains("Unknown node") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(ClusterError::Command { message, .. }) if message.contains("Unknown node") => {
                    return Err(ClusterError::Timeout {
                        what: format!("{} to learn its master {master_addr}", replica.addr()),
                        pending: vec![format!("{}: {message}", replica.addr())],
                        pending_nodes: vec![replica.addr().clone()],
                    });
                }
                Err(e) => return Err(e),
            }
        }
        attached += 1;
        on_progress(&CreateProgress::ReplicaAttached {
            replica: replica.addr().clone(),
            master: master_addr,
            attached,
            total,
        });
    }
    Ok(())
}

/// What one member reports while we wait for readiness.
struct Readiness {
    view: Topology,
    state_ok: bool,
    state: String,
    link_up: Option<bool>,
}

/// Every member is ready (see [`not_ready_reason`]).
struct Ready;

impl Condition for Ready {
    type Report = Readiness;
    const WHAT: &'static str = "every node to agree on the layout and report cluster_state:ok";

    async fn read(mut member: Member) -> Result<Readiness, ClusterError> {
        let info = member.client.cluster_info().await?;
        let view = member.client.cluster_nodes().await?;
        let link_up = if member.role == Role::Replica {
            member.client.replication_info().await?.master_link_up
        } else {
            None
        };
        Ok(Readiness {
            view,
            state_ok: info.is_ok(),
            state: info.state,
            link_up,
        })
    }

    fn judge(
        member: &Member,
        report: &Result<Readiness, ClusterError>,
        members: &[Member],
    ) -> Option<NotYet> {
        match report {
            Ok(r) => not_ready_reason(member, r, members).map(|n| NotYet {
                line: format!("{}: {}", member.addr(), n.line),
                blame: n.blame,
            }),
            Err(e) => Some(NotYet {
                line: e.to_string(),
                blame: Blame::Unreadable,
            }),
        }
    }

    fn progress(settled: usize, total: usize, first_pending: Option<&str>) -> CreateProgress {
        CreateProgress::Waiting {
            ready: settled,
            total,
            pending: first_pending.map(str::to_owned),
        }
    }
}

/// Why `member` is not ready yet, or `None`: state ok, its view lists exactly the planned
/// nodes with connected bus links, the planned roles, masters and slots and no failure flags,
/// and (for replicas) the replication link is up.
fn not_ready_reason(member: &Member, report: &Readiness, members: &[Member]) -> Option<NotYet> {
    let itself = |line: String| {
        Some(NotYet {
            line,
            blame: Blame::Itself,
        })
    };
    let view = &report.view;
    if let Some(missing) = missing_members(view, members) {
        return Some(missing);
    }
    let ids: BTreeSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
    if let Some(stranger) = view.nodes.iter().find(|n| !ids.contains(n.id.as_str())) {
        return itself(format!("knows an unexpected node {}", stranger.label()));
    }
    for (i, expected) in members.iter().enumerate() {
        let Some(seen) = view.node(&expected.id) else {
            continue;
        };
        let about = |line: String| {
            Some(NotYet {
                line,
                blame: Blame::Others(vec![i]),
            })
        };
        let label = expected.addr();
        if !seen.flags.myself && seen.link == LinkState::Disconnected {
            return about(format!(
                "cannot reach {label} over the cluster bus (it is known at {}, link disconnected)",
                seen.label()
            ));
        }
        if seen.flags.is_failing() {
            return about(format!(
                "sees {label} as failing ({})",
                seen.flags.names().join(",")
            ));
        }
        let expected_master = expected.master.map(|i| &members[i]);
        if seen.role() != expected.role
            || seen.master_id.as_deref() != expected_master.map(|m| m.id.as_str())
        {
            return about(match expected_master {
                Some(master) => {
                    format!("does not yet see {label} as a replica of {}", master.addr())
                }
                None => format!("does not yet see {label} as a master"),
            });
        }
        let mut slots = seen.slots.clone();
        slots.sort_unstable();
        if slots != expected.slots {
            return about(format!(
                "sees {label} serving [{}] instead of [{}]",
                crate::slots::format_ranges(&slots),
                crate::slots::format_ranges(&expected.slots)
            ));
        }
    }
    if !report.state_ok {
        return itself(format!("cluster_state:{}", report.state));
    }
    if member.role == Role::Replica && report.link_up != Some(true) {
        return itself("master_link_status is not up yet".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::ShardPlan;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    #[test]
    fn every_progress_event_reads_as_one_line() {
        let layout = Layout {
            shards: vec![ShardPlan {
                master: NewNode::new(addr(7000)),
                replicas: vec![NewNode::new(addr(7001))],
                slots: vec![SlotRange::new(0, 16383)],
            }],
            warnings: vec!["with 1 master, losing one leaves no majority".into()],
        };
        let events = [
            (
                CreateProgress::Planned { layout },
                "planned 1 master with 1 replica each: 127.0.0.1:7000 [0-16383] + 127.0.0.1:7001; \
                 warning: with 1 master, losing one leaves no majority",
            ),
            (
                CreateProgress::Validated { nodes: 2 },
                "checked 2 nodes: all reachable, cluster-enabled and empty",
            ),
            (
                CreateProgress::SlotsAssigned { masters: 1 },
                "assigned all 16384 slots to 1 master",
            ),
            (
                CreateProgress::EpochsSet { nodes: 2 },
                "gave each of the 2 nodes its own config epoch",
            ),
            (
                CreateProgress::Met {
                    joined: 1,
                    total: 2,
                },
                "met: 1/2 nodes know every other node",
            ),
            (
                CreateProgress::ReplicaAttached {
                    replica: addr(7001),
                    master: addr(7000),
                    attached: 1,
                    total: 1,
                },
                "replica 127.0.0.1:7001 now follows 127.0.0.1:7000 (1/1)",
            ),
            (
                CreateProgress::Waiting {
                    ready: 1,
                    total: 2,
                    pending: Some("127.0.0.1:7001: master_link_status is not up yet".into()),
                },
                "waiting: 1/2 nodes agree on the layout and report cluster_state:ok \
                 (127.0.0.1:7001: master_link_status is not up yet)",
            ),
            (
                CreateProgress::Ready {
                    masters: 1,
                    replicas: 1,
                    elapsed: Duration::from_millis(2345),
                },
                "cluster ready: 1 master, 1 replica, all 16384 slots served (took 2.3 s)",
            ),
        ];
        for (event, line) in events {
            assert_eq!(event.to_string(), line);
            assert!(!line.contains('\n'));
        }
    }

    fn not_yet(blame: Blame) -> NotYet {
        NotYet {
            line: String::new(),
            blame,
        }
    }

    #[test]
    fn a_timeout_blames_the_node_the_most_others_complain_about() {
        // Node 2 never joined: 0 and 1 do not know it, and it knows neither of them.
        let pending = [
            (0, not_yet(Blame::Others(vec![2]))),
            (1, not_yet(Blame::Others(vec![2]))),
            (2, not_yet(Blame::Others(vec![0, 1]))),
        ];
        assert_eq!(culprits(3, &pending), [2]);
        // Two nodes never joined: each is unknown to four nodes, the others to two.
        let pending: Vec<(usize, NotYet)> = (0..6)
            .map(|i| {
                let unknown = if i < 4 {
                    vec![4, 5]
                } else {
                    (0..6).filter(|&j| j != i).collect()
                };
                (i, not_yet(Blame::Others(unknown)))
            })
            .collect();
        assert_eq!(culprits(6, &pending), [4, 5]);
    }

    #[test]
    fn a_timeout_blames_unreadable_nodes_and_nodes_with_their_own_problems() {
        let pending = [
            (0, not_yet(Blame::Others(vec![3]))),
            (1, not_yet(Blame::Unreadable)),
            (2, not_yet(Blame::Itself)),
            // A replica that still sees itself as a master is its own problem.
            (4, not_yet(Blame::Others(vec![4]))),
        ];
        assert_eq!(culprits(5, &pending), [1, 2, 3, 4]);
        // A node complained about is named even when it is ready by its own account.
        assert_eq!(culprits(4, &[(0, not_yet(Blame::Others(vec![3])))]), [3]);
        // Nothing points anywhere: every pending node.
        let pending = [(1, not_yet(Blame::Others(Vec::new())))];
        assert_eq!(culprits(3, &pending), [1]);
    }

    #[test]
    fn errors_name_the_node_and_what_it_reports() {
        let timeout = ClusterError::Timeout {
            what: "every node to learn every other node after CLUSTER MEET".into(),
            pending: vec![
                "127.0.0.1:7002 knows 1 of 3 nodes, not yet 127.0.0.1:7000, 127.0.0.1:7001".into(),
            ],
            pending_nodes: vec![addr(7002)],
        };
        assert_eq!(
            timeout.to_string(),
            "timed out waiting for every node to learn every other node after CLUSTER MEET; \
             still pending: 127.0.0.1:7002 knows 1 of 3 nodes, not yet 127.0.0.1:7000, 127.0.0.1:7001"
        );
        let not_empty = ClusterError::NodeNotEmpty {
            addr: addr(7000),
            reason: "it holds 3 keys".into(),
        };
        assert_eq!(
            not_empty.to_string(),
            "127.0.0.1:7000 is not empty: it holds 3 keys; refusing to use it for a new cluster"
        );
        let refused = ClusterError::Command {
            addr: addr(7000),
            command: "CLUSTER REPLICATE abc".into(),
            message: "ERR Unknown node abc".into(),
        };
        assert_eq!(
            refused.to_string(),
            "127.0.0.1:7000 refused `CLUSTER REPLICATE abc`: ERR Unknown node abc"
        );
    }
}
