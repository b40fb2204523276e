//! Carrying out one planned [`Step`] against the nodes and the platform, and waiting (bounded)
//! until Redis shows its effect.
//!
//! Every step is idempotent: repeating one after a crash finds the work done or finishes it.
//! A step returns once its effect is visible to the cluster (a failover seen by every master, a
//! restarted replica back in sync), so the next observation plans from a settled state.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts, resolve_ip};
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::observe::{NodeFacts, Observed, query_facts};
use crate::plan::{FailoverMode, Step};
use crate::platform::{Platform, PlatformNode};
use crate::topology::Role;

/// How often waits re-read the nodes.
const POLL: Duration = Duration::from_millis(100);

/// Settings for executing steps.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Per-node connection and reply timeouts.
    pub timeouts: Timeouts,
    /// Credentials for the nodes, when they require them.
    pub credentials: Option<Credentials>,
    /// Longest wait for a failover to be agreed by every master.
    pub failover_timeout: Duration,
    /// Longest wait for a restarted or started node to be back in the cluster and in sync.
    pub rejoin_timeout: Duration,
    /// Longest wait for gossip (a met node known, a replica attached).
    pub gossip_timeout: Duration,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            credentials: None,
            failover_timeout: Duration::from_secs(30),
            rejoin_timeout: Duration::from_secs(120),
            gossip_timeout: Duration::from_secs(15),
        }
    }
}

/// What a step produced that the runner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// A node the platform started for [`Step::Provision`].
    pub provisioned: Option<PlatformNode>,
    /// The id of the node the step acted on, after it (for journals that track nodes by id).
    pub node_id: Option<String>,
    /// One line about what happened beyond the step's own description.
    pub note: Option<String>,
}

/// Executes `step`, observed as `observed` just before.
///
/// # Errors
/// The node or platform error that stopped it, or [`ClusterError::Timeout`] when its effect did
/// not show in time. Nothing is rolled back: the next observation plans from what happened.
pub async fn execute<P: Platform>(
    step: &Step,
    observed: &Observed,
    platform: &mut P,
    options: &ExecuteOptions,
    on_progress: &mut (dyn FnMut(String) + Send),
) -> Result<Executed, ClusterError> {
    let mut out = Executed::default();
    match step {
        Step::Provision { host, .. } => {
            out.provisioned = Some(platform.provision(host.as_deref()).await?);
        }
        Step::Meet { node, via } => meet(node, via, options).await?,
        Step::Replicate {
            replica, master_id, ..
        } => replicate(replica, master_id, options).await?,
        Step::MoveSlots { targets } => {
            crate::migrate_steps::move_slots(targets, observed, options, on_progress).await?;
        }
        Step::Failover {
            replica,
            master,
            mode,
        } => {
            out.note = Some(failover(replica, master, *mode, observed, options).await?);
        }
        Step::Restart { node } => {
            out.node_id = observed.id_of(node);
            let now_at = platform.restart(node).await?;
            wait_rejoined(&now_at, options).await?;
        }
        Step::Start { node } => {
            let now_at = platform.start(node).await?;
            wait_answers(&now_at, options).await?;
        }
        Step::Remove { node, id } => {
            remove(node, id.as_deref(), observed, platform, options).await?
        }
        Step::Forget { id, on } => forget_everywhere(id, on, observed, options).await,
        Step::Remeet { node, on } => {
            for viewer in on {
                let mut client = connect(viewer, options).await?;
                let (ip, bus) = meet_address(node, options).await?;
                client.meet(ip, node.port, bus).await?;
            }
            wait_known_at(node, on, options).await?;
        }
        Step::CloseSlots { slots } => {
            crate::migrate_steps::close_slots(slots, observed, options, on_progress).await?;
        }
        Step::AssignSlots { master, ranges } => {
            connect(master, options).await?.add_slots(ranges).await?;
        }
    }
    Ok(out)
}

async fn connect(addr: &NodeAddr, options: &ExecuteOptions) -> Result<NodeClient, ClusterError> {
    NodeClient::connect_as(addr, options.timeouts, options.credentials.as_ref()).await
}

async fn facts(addr: &NodeAddr, options: &ExecuteOptions) -> Result<NodeFacts, ClusterError> {
    query_facts(addr, options.timeouts, options.credentials.as_ref()).await
}

/// Polls `check` until it returns `Ok(None)` (done) or `deadline`; `Ok(Some(why))` means not
/// yet, and the last reason goes into the timeout error.
async fn wait_until<F, Fut>(
    what: String,
    node: &NodeAddr,
    limit: Duration,
    mut check: F,
) -> Result<(), ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let pending = check().await;
        let Some(why) = pending else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(ClusterError::Timeout {
                what,
                pending: vec![why],
                pending_nodes: vec![node.clone()],
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The IP and bus port to `MEET` `node` at: the bus port it reports for itself.
async fn meet_address(
    node: &NodeAddr,
    options: &ExecuteOptions,
) -> Result<(IpAddr, u16), ClusterError> {
    let ip = resolve_ip(node, options.timeouts.connect).await?;
    let table = connect(node, options).await?.cluster_nodes().await?;
    let bus = table
        .myself()
        .and_then(|me| me.bus_port)
        .filter(|p| *p != 0)
        .unwrap_or_else(|| node.port.saturating_add(10000));
    Ok((ip, bus))
}

async fn meet(
    node: &NodeAddr,
    via: &NodeAddr,
    options: &ExecuteOptions,
) -> Result<(), ClusterError> {
    let (ip, bus) = meet_address(node, options).await?;
    connect(via, options)
        .await?
        .meet(ip, node.port, bus)
        .await?;
    let via_id = connect(via, options).await?.my_id().await?;
    let node_id = connect(node, options).await?.my_id().await?;
    // Both directions: `node` may already have known `via` (the planner also introduces members
    // that one of them has not heard of yet), and the step is done only when `via` has finished
    // its handshake too.
    wait_until(
        format!("{node} and {via} to know each other"),
        node,
        options.gossip_timeout,
        || async {
            let knows =
                |f: &NodeFacts, id: &str| f.peers.iter().any(|p| p.id == id && !p.flags.handshake);
            match (facts(node, options).await, facts(via, options).await) {
                (Ok(n), Ok(v)) if knows(&n, &via_id) && knows(&v, &node_id) => None,
                (Ok(n), Ok(_)) if !knows(&n, &via_id) => {
                    Some(format!("{node} knows {} other node(s)", n.peers.len()))
                }
                (Ok(_), Ok(_)) => Some(format!("{via} is still shaking hands with {node}")),
                (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
            }
        },
    )
    .await
}

async fn replicate(
    replica: &NodeAddr,
    master_id: &str,
    options: &ExecuteOptions,
) -> Result<(), ClusterError> {
    let mut client = connect(replica, options).await?;
    let deadline = Instant::now() + options.gossip_timeout;
    // A node that met the cluster a moment ago may not know the master yet, and one that has
    // not heard of a failover yet still takes the new master for a replica: retry those.
    loop {
        match client.replicate(master_id).await {
            Ok(()) => break,
            Err(ClusterError::Command { message, .. })
                if (message.contains("Unknown node")
                    || message.contains("only replicate a master"))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
    wait_until(
        format!(
            "{replica} to follow {}",
            crate::topology::short_id(master_id)
        ),
        replica,
        options.gossip_timeout,
        || async {
            match facts(replica, options).await {
                Ok(f) if f.role == Role::Replica && f.master_id.as_deref() == Some(master_id) => {
                    None
                }
                Ok(f) => Some(format!("{replica} is still {}", f.role)),
                Err(e) => Some(e.to_string()),
            }
        },
    )
    .await
}

/// `CLUSTER FAILOVER` and the wait until the replica is master in every master's table. A
/// planned failover that Redis abandons (the master did not pause in time) is tried once more.
async fn failover(
    replica: &NodeAddr,
    master: &NodeAddr,
    mode: FailoverMode,
    observed: &Observed,
    options: &ExecuteOptions,
) -> Result<String, ClusterError> {
    let mut args = vec!["CLUSTER", "FAILOVER"];
    match mode {
        FailoverMode::Planned => {}
        FailoverMode::Force => args.push("FORCE"),
        FailoverMode::Takeover => args.push("TAKEOVER"),
    }
    let replica_id = observed
        .id_of(replica)
        .ok_or_else(|| ClusterError::InvalidTopology(format!("{replica} has no known id")))?;
    let masters: Vec<NodeAddr> = observed
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0 && &s.master != master)
        .map(|s| s.master)
        .collect();
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        connect(replica, options).await?.query::<()>(&args).await?;
        // Redis gives a planned failover 5 s (twice the node timeout at most) before it gives up.
        let attempt = wait_until(
            format!("{replica} to become master"),
            replica,
            options.failover_timeout / 2,
            || async {
                match facts(replica, options).await {
                    Ok(f) if f.role == Role::Master && !f.slots.is_empty() => None,
                    Ok(f) => Some(format!("{replica} is still {}", f.role)),
                    Err(e) => Some(e.to_string()),
                }
            },
        )
        .await;
        match attempt {
            Ok(()) => break,
            Err(e) if attempts >= 2 || mode != FailoverMode::Planned => return Err(e),
            Err(_) => tracing::warn!(%replica, "planned failover did not complete; trying again"),
        }
    }
    let others = masters.clone();
    wait_until(
        format!("every master to see {replica} as master"),
        replica,
        options.failover_timeout,
        || {
            let others = others.clone();
            let replica_id = replica_id.clone();
            async move {
                for m in &others {
                    match facts(m, options).await {
                        Ok(f) => {
                            let sees = f.peers.iter().any(|p| {
                                p.id == replica_id
                                    && p.role() == Role::Master
                                    && !p.slots.is_empty()
                            });
                            if !sees {
                                return Some(format!("{m} does not see {replica} as master yet"));
                            }
                        }
                        Err(e) => return Some(e.to_string()),
                    }
                }
                None
            }
        },
    )
    .await?;
    Ok(format!(
        "{replica} is master, seen by every master, after {} ms",
        started.elapsed().as_millis()
    ))
}

async fn wait_answers(node: &NodeAddr, options: &ExecuteOptions) -> Result<(), ClusterError> {
    wait_until(
        format!("{node} to answer"),
        node,
        options.rejoin_timeout,
        || async { facts(node, options).await.err().map(|e| e.to_string()) },
    )
    .await
}

/// A restarted node is back: it answers, its table says the cluster is ok, and a replica has
/// its link up (its full or partial sync is done).
async fn wait_rejoined(node: &NodeAddr, options: &ExecuteOptions) -> Result<(), ClusterError> {
    wait_until(
        format!("{node} to rejoin and sync"),
        node,
        options.rejoin_timeout,
        || async {
            match facts(node, options).await {
                Ok(f) if !f.cluster_ok => Some(format!("{node} reports cluster_state:fail")),
                Ok(f) if !f.link_up => Some(format!("{node} has its replication link down")),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        },
    )
    .await
}

/// Waits until every viewer lists `node` at its current address.
async fn wait_known_at(
    node: &NodeAddr,
    viewers: &[NodeAddr],
    options: &ExecuteOptions,
) -> Result<(), ClusterError> {
    let id = facts(node, options).await?.id;
    wait_until(
        format!("the cluster to learn {node}'s address"),
        node,
        options.gossip_timeout,
        || async {
            for viewer in viewers {
                match facts(viewer, options).await {
                    Ok(f) => {
                        if !f
                            .peers
                            .iter()
                            .any(|p| p.id == id && p.addr.as_ref() == Some(node))
                        {
                            return Some(format!("{viewer} still lists it elsewhere"));
                        }
                    }
                    Err(e) => return Some(e.to_string()),
                }
            }
            None
        },
    )
    .await
}

/// Stops the node, then makes every other member forget it at once (Redis bans a forgotten id
/// for 60 s, so gossip from a member that has not forgotten it yet cannot bring it back).
async fn remove<P: Platform>(
    node: &NodeAddr,
    id: Option<&str>,
    observed: &Observed,
    platform: &mut P,
    options: &ExecuteOptions,
) -> Result<(), ClusterError> {
    platform.remove(node).await?;
    if let Some(id) = id {
        let members: Vec<NodeAddr> = observed
            .members()
            .map(|(n, _)| n.addr().clone())
            .filter(|a| a != node)
            .collect();
        forget_everywhere(id, &members, observed, options).await;
    }
    Ok(())
}

/// `CLUSTER FORGET id` on every member (and `extra`), concurrently; members that do not know
/// the id any more are fine.
async fn forget_everywhere(
    id: &str,
    extra: &[NodeAddr],
    observed: &Observed,
    options: &ExecuteOptions,
) {
    let mut targets: Vec<NodeAddr> = observed.members().map(|(n, _)| n.addr().clone()).collect();
    for addr in extra {
        if !targets.contains(addr) {
            targets.push(addr.clone());
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for addr in targets {
        let (id, options) = (id.to_owned(), options.clone());
        set.spawn(async move {
            let result = match connect(&addr, &options).await {
                Ok(mut c) => c.query::<()>(&["CLUSTER", "FORGET", &id]).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result
                && !e.to_string().contains("Unknown node")
                && !e.to_string().contains("I tried hard")
            {
                tracing::warn!(%addr, error = %e, "CLUSTER FORGET failed");
            }
        });
    }
    while set.join_next().await.is_some() {}
}
