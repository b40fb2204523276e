//! The planner's path for a Sentinel group (one master, its replicas, a Sentinel quorum): a
//! pure function from an operation and what the group looks like to the next step. The
//! platform executes the step; Sentinel itself does the promotion.
//!
//! Rules it never breaks: no node is restarted while another data node is down or a replica
//! is not in sync with the master (its link down); the master is never restarted while it is
//! the master (it is failed over first); a failover is only asked for when a replica that
//! follows the master with its link up is at most [`MAX_FAILOVER_LAG`] behind, and when a
//! majority of the Sentinels answer (else their new configuration could not spread).
//!
//! Forming a group and keeping its quorum are steps here too, so a platform whose addresses
//! change (Kubernetes pods get a new IP when they are replaced) never decides them itself:
//! `Form` makes the chosen node the master of the others and has every Sentinel monitor it;
//! `Heal` also has a Sentinel that forgot the group (a replaced Sentinel pod) monitor the master
//! the others name, and resets a Sentinel that still counts nodes or Sentinels that are gone
//! (their old addresses), one at a time and only while every Sentinel knows at least the real
//! ones: stale Sentinels raise the majority a failover needs, and enough of them make a
//! failover impossible.

use serde::{Deserialize, Serialize};

use crate::addr::NodeAddr;
use crate::plan::MAX_FAILOVER_LAG;

/// One data node as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Where it listens.
    pub addr: NodeAddr,
    /// It answered `INFO replication`.
    pub reachable: bool,
    /// It says `role:master`.
    pub says_master: bool,
    /// On a replica: the master it follows.
    pub follows: Option<NodeAddr>,
    /// On a replica: `master_link_status:up`.
    pub link_up: bool,
    /// Its replication offset.
    pub offset: u64,
}

/// A group as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupObservation {
    /// The master most Sentinels name, when it says `role:master`.
    pub master: Option<NodeAddr>,
    /// Every data node.
    pub members: Vec<GroupMember>,
    /// Sentinels that answered, and in all.
    pub sentinels_answering: usize,
    /// Sentinels in all.
    pub sentinels: usize,
    /// Each Sentinel, when the platform observes them one by one (empty: forming and the
    /// quorum's upkeep are not planned, as on the local platform, whose Sentinels are
    /// configured once at start and keep their addresses).
    #[serde(default)]
    pub sentinel_members: Vec<SentinelMember>,
}

/// One Sentinel as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelMember {
    /// Where it listens.
    pub addr: NodeAddr,
    /// It answered.
    pub reachable: bool,
    /// The master it names for the group; `None` when it does not monitor the group.
    pub names: Option<NodeAddr>,
    /// Replicas it knows (`num-slaves`: gone ones too).
    pub replicas_known: usize,
    /// Other Sentinels it knows (`num-other-sentinels`: gone ones too).
    pub sentinels_known: usize,
}

impl GroupObservation {
    fn member(&self, addr: &NodeAddr) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.addr == *addr)
    }

    /// Replicas that follow `master` with their link up.
    fn in_sync(&self, master: &NodeAddr) -> impl Iterator<Item = &GroupMember> {
        self.members.iter().filter(move |m| {
            m.reachable && !m.says_master && m.link_up && m.follows.as_ref() == Some(master)
        })
    }
}

/// An operation on a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GroupOperation {
    /// Hand the master role to an in-sync replica, losing nothing. `from` is the master when
    /// the operation started (filled in by the runner before the first step, and journaled):
    /// once another node is master the operation is done, so a resumed run never fails over
    /// twice.
    Failover {
        /// The master to move away from; `None` until the runner resolves it.
        from: Option<NodeAddr>,
    },
    /// Restart every data node, replicas first, the master after a failover.
    RollingRestart {
        /// Nodes restarted so far (the runner adds each one it restarted).
        restarted: Vec<NodeAddr>,
    },
    /// Point every node that is not where Sentinel wants it back at the master; have every
    /// Sentinel monitor the group, and forget nodes and Sentinels that are gone.
    Heal,
    /// Take these data nodes out of the group (a lowered replica count), in this order: a node
    /// that is the master is failed over first (to an in-sync replica), then removed. Done once
    /// none of them is a member any more.
    Remove {
        /// The nodes to take out.
        nodes: Vec<NodeAddr>,
    },
    /// Form a new group: `master` becomes the master of every other node, then every Sentinel
    /// monitors it. Done as soon as the Sentinels name a master other than `master` (the group
    /// was formed already and failed over since: Sentinel is never contradicted).
    Form {
        /// The node that starts as master.
        master: NodeAddr,
    },
}

impl std::fmt::Display for GroupOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failover { .. } => "failover",
            Self::RollingRestart { .. } => "rolling restart",
            Self::Heal => "heal",
            Self::Form { .. } => "form",
            Self::Remove { .. } => "remove replicas",
        })
    }
}

/// One step on a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum GroupStep {
    /// `SENTINEL FAILOVER`, after the replicas have caught up with `from` (writes held).
    Failover {
        /// The master now.
        from: NodeAddr,
    },
    /// Stop the node gracefully and start it again on its data.
    Restart {
        /// The node.
        node: NodeAddr,
    },
    /// `REPLICAOF master`: a node that says master (an old master Sentinel has not demoted
    /// yet) or follows another node.
    Follow {
        /// The node.
        node: NodeAddr,
        /// The master.
        master: NodeAddr,
    },
    /// Take a data node that is not the master out of the group (the platform stops it for
    /// good; the Sentinels forget it at the next reset).
    Remove {
        /// The node.
        node: NodeAddr,
    },
    /// `SENTINEL MONITOR` the group at `master` (with the platform's quorum and settings).
    Monitor {
        /// The Sentinel.
        sentinel: NodeAddr,
        /// The master.
        master: NodeAddr,
    },
    /// `SENTINEL RESET` the group: the Sentinel forgets the replicas and Sentinels it knows
    /// and finds the live ones again within seconds.
    ResetSentinel {
        /// The Sentinel.
        sentinel: NodeAddr,
    },
}

impl std::fmt::Display for GroupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failover { from } => {
                write!(f, "fail over from master {from} (SENTINEL FAILOVER)")
            }
            Self::Restart { node } => write!(f, "restart {node}"),
            Self::Follow { node, master } => write!(f, "make {node} a replica of {master}"),
            Self::Remove { node } => write!(f, "remove {node} from the group"),
            Self::Monitor { sentinel, master } => {
                write!(f, "have Sentinel {sentinel} monitor master {master}")
            }
            Self::ResetSentinel { sentinel } => write!(
                f,
                "reset Sentinel {sentinel} (it counts nodes or Sentinels that are gone)"
            ),
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupNext {
    /// This step.
    Step(GroupStep),
    /// Nothing safe to do yet; look again shortly.
    Wait(String),
    /// The operation is complete.
    Done,
    /// The operation cannot be done; nothing was changed by this answer.
    Refused(String),
}

/// The next step of `operation` on the group as `observed`.
pub fn next_group_step(operation: &GroupOperation, observed: &GroupObservation) -> GroupNext {
    if let GroupOperation::Form { master } = operation {
        return form(observed, master);
    }
    let Some(master) = &observed.master else {
        return GroupNext::Wait("no confirmed master: the Sentinels are failing over".into());
    };
    match operation {
        GroupOperation::Failover { from: Some(from) } if from != master => GroupNext::Done,
        GroupOperation::Failover { .. } => failover(observed, master),
        GroupOperation::RollingRestart { restarted } => rolling(observed, master, restarted),
        GroupOperation::Heal => heal(observed, master),
        GroupOperation::Form { master: chosen } => form(observed, chosen),
        GroupOperation::Remove { nodes } => remove(observed, master, nodes),
    }
}

fn failover(observed: &GroupObservation, master: &NodeAddr) -> GroupNext {
    if observed.sentinels_answering <= observed.sentinels / 2 {
        return GroupNext::Refused(format!(
            "only {} of {} Sentinels answer; a failover needs a majority",
            observed.sentinels_answering, observed.sentinels
        ));
    }
    let Some(master_offset) = observed.member(master).map(|m| m.offset) else {
        return GroupNext::Refused(format!(
            "the master {master} is not one of the group's nodes"
        ));
    };
    let ready = observed
        .in_sync(master)
        .any(|r| master_offset.saturating_sub(r.offset) <= MAX_FAILOVER_LAG);
    if ready {
        return GroupNext::Step(GroupStep::Failover {
            from: master.clone(),
        });
    }
    let why: Vec<String> = observed
        .members
        .iter()
        .filter(|m| m.addr != *master)
        .map(|m| {
            let reason = if !m.reachable {
                "down".to_owned()
            } else if m.follows.as_ref() != Some(master) {
                "does not follow the master".to_owned()
            } else if !m.link_up {
                "link down".to_owned()
            } else {
                format!("behind by {} bytes", master_offset.saturating_sub(m.offset))
            };
            format!("{}: {reason}", m.addr)
        })
        .collect();
    GroupNext::Refused(format!(
        "no replica can take over from {master} ({})",
        if why.is_empty() {
            "it has no replica".to_owned()
        } else {
            why.join("; ")
        }
    ))
}

fn rolling(observed: &GroupObservation, master: &NodeAddr, restarted: &[NodeAddr]) -> GroupNext {
    if let Some(down) = observed.members.iter().find(|m| !m.reachable) {
        return GroupNext::Wait(format!("{} is down", down.addr));
    }
    let replicas: Vec<&GroupMember> = observed
        .members
        .iter()
        .filter(|m| m.addr != *master)
        .collect();
    if let Some(out) = replicas
        .iter()
        .find(|r| r.follows.as_ref() != Some(master) || !r.link_up)
    {
        return GroupNext::Wait(format!("{} is not in sync with {master} yet", out.addr));
    }
    if let Some(next) = replicas.iter().find(|r| !restarted.contains(&r.addr)) {
        return GroupNext::Step(GroupStep::Restart {
            node: next.addr.clone(),
        });
    }
    if !restarted.contains(master) {
        return failover(observed, master);
    }
    GroupNext::Done
}

fn heal(observed: &GroupObservation, master: &NodeAddr) -> GroupNext {
    let astray = observed.members.iter().find(|m| {
        m.reachable && m.addr != *master && (m.says_master || m.follows.as_ref() != Some(master))
    });
    if let Some(node) = astray {
        return GroupNext::Step(GroupStep::Follow {
            node: node.addr.clone(),
            master: master.clone(),
        });
    }
    let sentinels = &observed.sentinel_members;
    if let Some(forgot) = sentinels.iter().find(|s| s.reachable && s.names.is_none()) {
        return GroupNext::Step(GroupStep::Monitor {
            sentinel: forgot.addr.clone(),
            master: master.clone(),
        });
    }
    let replicas = observed.members.len().saturating_sub(1);
    let others = sentinels.len().saturating_sub(1);
    // Only with every Sentinel answering, naming this master and knowing at least the real
    // nodes and Sentinels: one that knows fewer is still finding them again (after a reset or
    // a restart), and resetting another then could leave too few that know each other.
    let settled = sentinels.iter().all(|s| {
        s.reachable
            && s.names.as_ref() == Some(master)
            && s.replicas_known >= replicas
            && s.sentinels_known >= others
    });
    if settled
        && let Some(stale) = sentinels
            .iter()
            .find(|s| s.replicas_known > replicas || s.sentinels_known > others)
    {
        return GroupNext::Step(GroupStep::ResetSentinel {
            sentinel: stale.addr.clone(),
        });
    }
    GroupNext::Done
}

fn remove(observed: &GroupObservation, master: &NodeAddr, nodes: &[NodeAddr]) -> GroupNext {
    let Some(next) = nodes.iter().find(|n| observed.member(n).is_some()) else {
        return GroupNext::Done;
    };
    // Checked before anything moves: a group must keep a master and a replica.
    let staying = observed
        .members
        .iter()
        .filter(|m| !nodes.contains(&m.addr))
        .count();
    if staying < 2 {
        return GroupNext::Refused(format!(
            "removing {} node(s) would leave {staying}: a group keeps a master and a replica",
            nodes.len()
        ));
    }
    if next == master {
        return failover(observed, master);
    }
    GroupNext::Step(GroupStep::Remove { node: next.clone() })
}

fn form(observed: &GroupObservation, master: &NodeAddr) -> GroupNext {
    if observed
        .master
        .as_ref()
        .is_some_and(|named| named != master)
    {
        return GroupNext::Done;
    }
    match observed.member(master) {
        Some(m) if m.reachable && m.says_master => {}
        Some(m) if m.reachable => {
            return GroupNext::Refused(format!(
                "{master} was chosen as the first master but is a replica of {}",
                m.follows
                    .as_ref()
                    .map_or("nobody".to_owned(), ToString::to_string)
            ));
        }
        _ => return GroupNext::Wait(format!("{master} (the first master) does not answer")),
    }
    if let Some(down) = observed.members.iter().find(|m| !m.reachable) {
        return GroupNext::Wait(format!("{} does not answer", down.addr));
    }
    // Replicas first: a Sentinel that starts monitoring finds them in the master's INFO at once.
    if let Some(node) = observed
        .members
        .iter()
        .find(|m| m.addr != *master && (m.says_master || m.follows.as_ref() != Some(master)))
    {
        return GroupNext::Step(GroupStep::Follow {
            node: node.addr.clone(),
            master: master.clone(),
        });
    }
    for sentinel in &observed.sentinel_members {
        if !sentinel.reachable {
            return GroupNext::Wait(format!("Sentinel {} does not answer", sentinel.addr));
        }
        match &sentinel.names {
            None => {
                return GroupNext::Step(GroupStep::Monitor {
                    sentinel: sentinel.addr.clone(),
                    master: master.clone(),
                });
            }
            Some(named) if named != master => {
                return GroupNext::Refused(format!(
                    "Sentinel {} already monitors the group at {named}, not at {master}",
                    sentinel.addr
                ));
            }
            Some(_) => {}
        }
    }
    GroupNext::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    fn group() -> GroupObservation {
        let master = GroupMember {
            addr: addr(1),
            reachable: true,
            says_master: true,
            follows: None,
            link_up: false,
            offset: 1000,
        };
        let replica = |port| GroupMember {
            addr: addr(port),
            says_master: false,
            follows: Some(addr(1)),
            link_up: true,
            ..master.clone()
        };
        GroupObservation {
            master: Some(addr(1)),
            members: vec![master.clone(), replica(2), replica(3)],
            sentinels_answering: 3,
            sentinels: 3,
            sentinel_members: (11..14)
                .map(|port| SentinelMember {
                    addr: addr(port),
                    reachable: true,
                    names: Some(addr(1)),
                    replicas_known: 2,
                    sentinels_known: 2,
                })
                .collect(),
        }
    }

    #[test]
    fn forming_makes_replicas_follow_then_has_each_sentinel_monitor() {
        let mut observed = group();
        observed.master = None;
        for m in &mut observed.members {
            m.says_master = true;
            m.follows = None;
            m.link_up = false;
        }
        for s in &mut observed.sentinel_members {
            s.names = None;
        }
        let op = GroupOperation::Form { master: addr(1) };
        for port in [2, 3] {
            assert_eq!(
                next_group_step(&op, &observed),
                GroupNext::Step(GroupStep::Follow {
                    node: addr(port),
                    master: addr(1)
                })
            );
            let m = &mut observed.members[usize::from(port) - 1];
            m.says_master = false;
            m.follows = Some(addr(1));
        }
        for port in 11..14 {
            assert_eq!(
                next_group_step(&op, &observed),
                GroupNext::Step(GroupStep::Monitor {
                    sentinel: addr(port),
                    master: addr(1)
                })
            );
            observed.sentinel_members[usize::from(port) - 11].names = Some(addr(1));
        }
        assert_eq!(next_group_step(&op, &observed), GroupNext::Done);
        // Formed long ago and failed over since: forming again changes nothing.
        observed.master = Some(addr(2));
        assert_eq!(next_group_step(&op, &observed), GroupNext::Done);
    }

    #[test]
    fn forming_waits_for_every_node_and_refuses_a_sentinel_watching_another_master() {
        let mut observed = group();
        observed.master = None;
        observed.members[2].reachable = false;
        let op = GroupOperation::Form { master: addr(1) };
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Wait(_)
        ));
        let mut observed = group();
        observed.master = None;
        observed.sentinel_members[1].names = Some(addr(9));
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Refused(_)
        ));
    }

    #[test]
    fn removing_replicas_fails_the_master_over_first_when_it_is_one_of_them() {
        let mut observed = group();
        let mut fourth = observed.members[2].clone();
        fourth.addr = addr(4);
        observed.members.push(fourth);
        let op = GroupOperation::Remove {
            nodes: vec![addr(4), addr(1)],
        };
        assert_eq!(
            next_group_step(&op, &observed),
            GroupNext::Step(GroupStep::Remove { node: addr(4) })
        );
        observed.members.pop();
        assert_eq!(
            next_group_step(&op, &observed),
            GroupNext::Step(GroupStep::Failover { from: addr(1) })
        );
        // Sentinel promoted 2; 1 follows it and is removed next.
        observed.master = Some(addr(2));
        observed.members[1].says_master = true;
        observed.members[1].follows = None;
        observed.members[0].says_master = false;
        observed.members[0].follows = Some(addr(2));
        assert_eq!(
            next_group_step(&op, &observed),
            GroupNext::Step(GroupStep::Remove { node: addr(1) })
        );
        observed.members.remove(0);
        assert_eq!(next_group_step(&op, &observed), GroupNext::Done);
        // Never down to a lone master.
        let op = GroupOperation::Remove {
            nodes: vec![addr(3)],
        };
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Refused(_)
        ));
    }

    #[test]
    fn heal_has_a_replaced_sentinel_monitor_and_resets_one_counting_gone_nodes() {
        let mut observed = group();
        observed.sentinel_members[2].names = None;
        observed.sentinel_members[2].replicas_known = 0;
        assert_eq!(
            next_group_step(&GroupOperation::Heal, &observed),
            GroupNext::Step(GroupStep::Monitor {
                sentinel: addr(13),
                master: addr(1)
            })
        );
        // It monitors now, but has not found the others yet: nobody is reset meanwhile.
        observed.sentinel_members[2].names = Some(addr(1));
        observed.sentinel_members[0].sentinels_known = 3;
        assert_eq!(
            next_group_step(&GroupOperation::Heal, &observed),
            GroupNext::Done
        );
        observed.sentinel_members[2].replicas_known = 2;
        assert_eq!(
            next_group_step(&GroupOperation::Heal, &observed),
            GroupNext::Step(GroupStep::ResetSentinel { sentinel: addr(11) })
        );
    }

    #[test]
    fn a_rolling_restart_does_replicas_then_fails_over_then_the_old_master() {
        let mut observed = group();
        let mut restarted = Vec::new();
        for expected in [2, 3] {
            let op = GroupOperation::RollingRestart {
                restarted: restarted.clone(),
            };
            assert_eq!(
                next_group_step(&op, &observed),
                GroupNext::Step(GroupStep::Restart {
                    node: addr(expected)
                })
            );
            restarted.push(addr(expected));
        }
        let op = GroupOperation::RollingRestart {
            restarted: restarted.clone(),
        };
        assert_eq!(
            next_group_step(&op, &observed),
            GroupNext::Step(GroupStep::Failover { from: addr(1) })
        );
        // Sentinel promoted 2; 1 follows it now.
        observed.master = Some(addr(2));
        observed.members[1].says_master = true;
        observed.members[1].follows = None;
        for m in [0, 2] {
            observed.members[m].says_master = false;
            observed.members[m].follows = Some(addr(2));
            observed.members[m].link_up = true;
        }
        assert_eq!(
            next_group_step(&op, &observed),
            GroupNext::Step(GroupStep::Restart { node: addr(1) })
        );
        restarted.push(addr(1));
        let op = GroupOperation::RollingRestart { restarted };
        assert_eq!(next_group_step(&op, &observed), GroupNext::Done);
    }

    #[test]
    fn nothing_is_restarted_while_a_node_is_down_or_out_of_sync() {
        let op = GroupOperation::RollingRestart { restarted: vec![] };
        let mut observed = group();
        observed.members[2].reachable = false;
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Wait(_)
        ));
        let mut observed = group();
        observed.members[1].link_up = false;
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Wait(_)
        ));
        observed.master = None;
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Wait(_)
        ));
    }

    #[test]
    fn a_failover_needs_an_in_sync_replica_and_a_majority_of_sentinels() {
        let mut observed = group();
        for m in &mut observed.members[1..] {
            m.offset = 0;
            m.link_up = m.addr == addr(2);
        }
        observed.members[0].offset = 10 * MAX_FAILOVER_LAG;
        let op = GroupOperation::Failover { from: None };
        let GroupNext::Refused(why) = next_group_step(&op, &observed) else {
            panic!("a failover to a replica far behind must be refused");
        };
        assert!(
            why.contains("behind by") && why.contains("link down"),
            "{why}"
        );
        let mut observed = group();
        observed.sentinels_answering = 1;
        assert!(matches!(
            next_group_step(&op, &observed),
            GroupNext::Refused(_)
        ));
    }

    #[test]
    fn a_failover_is_done_once_another_node_is_master() {
        let op = GroupOperation::Failover {
            from: Some(addr(1)),
        };
        assert_eq!(
            next_group_step(&op, &group()),
            GroupNext::Step(GroupStep::Failover { from: addr(1) })
        );
        let mut moved = group();
        moved.master = Some(addr(2));
        assert_eq!(next_group_step(&op, &moved), GroupNext::Done);
    }

    #[test]
    fn heal_points_a_stale_master_back_at_the_sentinels_master() {
        let mut observed = group();
        observed.members[2].says_master = true;
        observed.members[2].follows = None;
        assert_eq!(
            next_group_step(&GroupOperation::Heal, &observed),
            GroupNext::Step(GroupStep::Follow {
                node: addr(3),
                master: addr(1)
            })
        );
        assert_eq!(
            next_group_step(&GroupOperation::Heal, &group()),
            GroupNext::Done
        );
    }
}
