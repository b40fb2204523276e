//! Watching a failover over the Redis protocol: what the surviving nodes say about the victim,
//! who serves its slots, and whether it has come back as a replica.
//!
//! Read-only, like `check`: it must never change a node. Every query is bounded by short
//! timeouts, since a paused victim accepts connections and answers nothing. The decisions
//! (`suspected`, `promoted`, `serving_without`, `rejoined`) are pure functions of views, so
//! they are tested without servers.

use std::time::Duration;

use cinnabar_cluster::{
    CheckReport, ClusterNode, NodeAddr, NodeClient, Problem, Role, SlotRange, Timeouts, Topology,
};
use tokio::task::JoinSet;

/// Timeouts of the watch: short, so a frozen node costs little of each poll.
pub const WATCH_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    response: Duration::from_millis(500),
};

/// The master a drill fails and what it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// Node id.
    pub id: String,
    /// Client address.
    pub addr: NodeAddr,
    /// Slots it served before the fault.
    pub slots: Vec<SlotRange>,
    /// Ids of its replicas before the fault: the candidates to take over.
    pub replica_ids: Vec<String>,
}

/// A surviving node's opinion of the victim in one view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opinion {
    /// Flagged `fail?`: this node cannot reach the victim.
    pub suspected: bool,
    /// Flagged `fail`: a majority of masters agreed it is down.
    pub failed: bool,
}

/// What `view` says about `victim`.
pub fn opinion(view: &Topology, victim: &Victim) -> Opinion {
    view.node(&victim.id)
        .map_or_else(Opinion::default, |node| Opinion {
            suspected: node.flags.pfail,
            failed: node.flags.fail,
        })
}

/// The replica that now serves every slot of the victim as a master, as every other shard's
/// master sees it (or, in a one-shard cluster, as every surviving view sees it).
pub fn promoted<'a>(views: &'a [(NodeAddr, Topology)], victim: &Victim) -> Option<&'a ClusterNode> {
    let is_candidate = |id: &str| victim.replica_ids.iter().any(|r| r == id);
    let other_masters: Vec<&Topology> = views
        .iter()
        .map(|(_, view)| view)
        .filter(|view| {
            view.myself().is_some_and(|me| {
                me.role() == Role::Master && !me.slots.is_empty() && !is_candidate(&me.id)
            })
        })
        .collect();
    let judges: Vec<&Topology> = if other_masters.is_empty() {
        views.iter().map(|(_, view)| view).collect()
    } else {
        other_masters
    };
    let first = judges.first()?;
    let owner = serving_all(first, &victim.slots)?;
    if !is_candidate(&owner.id) || owner.role() != Role::Master {
        return None;
    }
    judges
        .iter()
        .all(|view| serving_all(view, &victim.slots).is_some_and(|o| o.id == owner.id))
        .then_some(owner)
}

/// The one node that `view` says serves every slot of `slots`, if there is one.
fn serving_all<'a>(view: &'a Topology, slots: &[SlotRange]) -> Option<&'a ClusterNode> {
    let first = slots.first()?;
    let owner = view.owner_of(first.start)?;
    slots
        .iter()
        .all(|range| {
            [range.start, range.end]
                .iter()
                .all(|slot| view.owner_of(*slot).is_some_and(|o| o.id == owner.id))
        })
        .then_some(owner)
}

/// Whether the cluster serves again while the victim is still down: every slot is covered and
/// the only problems the check found are about the victim itself (unreachable, or flagged
/// `fail`/`fail?`). Any other problem (a disagreement on slots, a node reporting
/// `cluster_state:fail`, a second node down) means clients are not fully served yet.
pub fn serving_without(report: &CheckReport, victim: &Victim) -> bool {
    report.slots_covered == cinnabar_cluster::SLOT_COUNT
        && report.problems.iter().all(|problem| match problem {
            Problem::NodeUnreachable { addr, .. } => *addr == victim.addr,
            Problem::NodeFailed { id, .. } => *id == victim.id,
            _ => false,
        })
}

/// Whether the victim's own view and replication say it is back as a replica with its
/// replication link up.
pub fn rejoined(own_view: &Topology, link_up: Option<bool>) -> bool {
    own_view
        .myself()
        .is_some_and(|me| me.role() == Role::Replica && me.master_id.is_some())
        && link_up == Some(true)
}

/// Connections to the nodes that survive the fault, re-made when one breaks.
#[derive(Debug)]
pub struct Survivors {
    nodes: Vec<(NodeAddr, Option<NodeClient>)>,
}

impl Survivors {
    /// Every node of `seeds` except the victim.
    pub fn new(seeds: &[NodeAddr], victim: &NodeAddr) -> Self {
        Self {
            nodes: seeds
                .iter()
                .filter(|addr| *addr != victim)
                .map(|addr| (addr.clone(), None))
                .collect(),
        }
    }

    /// Their addresses.
    pub fn addrs(&self) -> Vec<NodeAddr> {
        self.nodes.iter().map(|(addr, _)| addr.clone()).collect()
    }

    /// `CLUSTER NODES` from every survivor that answers, asked at the same time.
    pub async fn views(&mut self) -> Vec<(NodeAddr, Topology)> {
        let mut queries = JoinSet::new();
        for (index, (addr, client)) in self.nodes.iter().enumerate() {
            let (addr, client) = (addr.clone(), client.clone());
            queries.spawn(async move {
                let mut client = match client {
                    Some(client) => client,
                    None => match NodeClient::connect(&addr, WATCH_TIMEOUTS).await {
                        Ok(client) => client,
                        Err(_) => return (index, None, None),
                    },
                };
                match client.cluster_nodes().await {
                    Ok(view) => (index, Some(client), Some(view)),
                    Err(_) => (index, None, None),
                }
            });
        }
        let mut views = Vec::new();
        while let Some(joined) = queries.join_next().await {
            let Ok((index, client, view)) = joined else {
                continue;
            };
            if let Some(slot) = self.nodes.get_mut(index) {
                slot.1 = client;
                if let Some(view) = view {
                    views.push((slot.0.clone(), view));
                }
            }
        }
        views.sort_by(|a, b| a.0.cmp(&b.0));
        views
    }
}

/// The victim's own view and whether its replication link is up; `None` while it does not
/// answer.
pub async fn victim_state(addr: &NodeAddr) -> Option<(Topology, Option<bool>)> {
    let mut client = NodeClient::connect(addr, WATCH_TIMEOUTS).await.ok()?;
    let view = client.cluster_nodes().await.ok()?;
    let replication = client.replication_info().await.ok()?;
    Some((view, replication.master_link_up))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::parse_cluster_nodes;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const RA: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const RB: &str = "dddddddddddddddddddddddddddddddddddddddd";

    fn victim() -> Victim {
        Victim {
            id: A.into(),
            addr: NodeAddr::new("127.0.0.1", 7001),
            slots: vec![SlotRange::new(0, 8191)],
            replica_ids: vec![RA.into()],
        }
    }

    /// B's view: `a_line` describes the victim, `ra_line` its replica.
    fn b_view(
        a_flags: &str,
        a_slots: &str,
        ra_flags: &str,
        ra_master: &str,
        ra_slots: &str,
    ) -> Topology {
        let text = format!(
            "{A} 127.0.0.1:7001@17001 {a_flags} - 0 1 1 connected {a_slots}\n\
             {B} 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 8192-16383\n\
             {RA} 127.0.0.1:7003@17003 {ra_flags} {ra_master} 0 1 3 connected {ra_slots}\n\
             {RB} 127.0.0.1:7004@17004 slave {B} 0 1 2 connected\n"
        );
        parse_cluster_nodes(&text).unwrap()
    }

    fn views(view: Topology) -> Vec<(NodeAddr, Topology)> {
        vec![(NodeAddr::new("127.0.0.1", 7002), view)]
    }

    #[test]
    fn a_suspected_then_failed_victim_is_seen_as_such() {
        let v = victim();
        let before = b_view("master", "0-8191", "slave", A, "");
        assert_eq!(opinion(&before, &v), Opinion::default());
        let suspected = b_view("master,fail?", "0-8191", "slave", A, "");
        assert!(opinion(&suspected, &v).suspected);
        let failed = b_view("master,fail", "0-8191", "slave", A, "");
        assert!(opinion(&failed, &v).failed);
        assert_eq!(
            promoted(&views(failed), &v),
            None,
            "failed, not yet replaced"
        );
    }

    #[test]
    fn the_replica_is_promoted_once_other_masters_see_it_serving_every_slot() {
        let v = victim();
        let taken_over = b_view("master,fail", "", "master", "-", "0-8191");
        let found = promoted(&views(taken_over), &v).map(|n| n.id.clone());
        assert_eq!(found.as_deref(), Some(RA));
        // Half the slots is not a takeover.
        let partial = b_view("master,fail", "4096-8191", "master", "-", "0-4095");
        assert_eq!(promoted(&views(partial), &v), None);
    }

    #[test]
    fn serving_without_the_victim_tolerates_only_problems_about_the_victim() {
        let v = victim();
        let mut report = CheckReport {
            nodes: Vec::new(),
            problems: vec![
                Problem::NodeUnreachable {
                    addr: v.addr.clone(),
                    error: "connection refused".into(),
                },
                Problem::NodeFailed {
                    id: A.into(),
                    addr: Some(v.addr.clone()),
                    flag: "fail".into(),
                    reported_by: vec![NodeAddr::new("127.0.0.1", 7002)],
                },
            ],
            slots_covered: 16384,
        };
        assert!(serving_without(&report, &v));
        report.slots_covered = 8192;
        assert!(
            !serving_without(&report, &v),
            "uncovered slots are not served"
        );
        report.slots_covered = 16384;
        report.problems.push(Problem::NodeUnreachable {
            addr: NodeAddr::new("127.0.0.1", 7002),
            error: "timeout".into(),
        });
        assert!(!serving_without(&report, &v), "a second node down");
    }

    #[test]
    fn rejoined_means_a_replica_with_its_link_up() {
        let text = format!(
            "{A} 127.0.0.1:7001@17001 myself,slave {RA} 0 0 1 connected\n\
             {RA} 127.0.0.1:7003@17003 master - 0 1 3 connected 0-8191\n"
        );
        let own = parse_cluster_nodes(&text).unwrap();
        assert!(rejoined(&own, Some(true)));
        assert!(!rejoined(&own, Some(false)), "still syncing");
        let still_master = b_view("master", "0-8191", "slave", A, "");
        assert!(!rejoined(&still_master, Some(true)));
    }
}
