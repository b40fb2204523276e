//! What the planner sees: every node the platform runs, asked directly, plus what the nodes say
//! about each other (ghosts, stale addresses, failure flags).
//!
//! [`observe`] is the only I/O here; everything else is pure derivation over an [`Observed`], so
//! the planner's property tests can build and evolve an `Observed` without any Redis.
//!
//! Decisions:
//! - The platform's node list is the truth about which nodes exist; the cluster's own tables are
//!   the truth about roles and slots. A node the platform runs is identified by the id it reports
//!   itself, or (when it cannot be reached) by the id its peers list at its address.
//! - An unreachable node's role and slots are taken from the reachable members' views, the most
//!   common opinion winning, so a dead master still counts as the owner of its slots.
//! - A table entry (on any reachable member) whose id matches no platform node is a *ghost*.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts};
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::info::InfoFields;
use crate::platform::PlatformNode;
use crate::slots::{SlotRange, SlotSet, count_slots};
use crate::topology::{ClusterNode, Role, SlotMigration};

/// What one reachable node reports about itself and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFacts {
    /// Its node id.
    pub id: String,
    /// Its own role.
    pub role: Role,
    /// The master it follows (replicas).
    pub master_id: Option<String>,
    /// Slots it serves, by its own table.
    pub slots: Vec<SlotRange>,
    /// Its open slots.
    pub migrations: Vec<SlotMigration>,
    /// Replicas: `master_link_status:up`. Masters: always true.
    pub link_up: bool,
    /// Replication offset: `master_repl_offset` on masters, the processed offset on replicas.
    pub offset: u64,
    /// Keys in the database.
    pub keys: u64,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `maxmemory` in bytes (0 when unlimited).
    pub maxmemory: u64,
    /// `cluster_state:ok`.
    pub cluster_ok: bool,
    /// Every other entry of its `CLUSTER NODES`.
    pub peers: Vec<ClusterNode>,
}

impl NodeFacts {
    /// Whether the node belongs to a cluster (knows another node, or serves slots: a cluster of
    /// one) rather than standing alone as a freshly started (or reset) node does.
    pub fn is_member(&self) -> bool {
        !self.peers.is_empty() || !self.slots.is_empty()
    }
}

/// One platform node and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedNode {
    /// The node as the platform runs it.
    pub node: PlatformNode,
    /// What it reported, or why it could not be asked.
    pub facts: Result<NodeFacts, String>,
}

impl ObservedNode {
    /// Its client address.
    pub fn addr(&self) -> &NodeAddr {
        &self.node.addr
    }

    /// Its facts, when it answered.
    pub fn facts(&self) -> Option<&NodeFacts> {
        self.facts.as_ref().ok()
    }

    /// Whether it answered.
    pub fn is_reachable(&self) -> bool {
        self.facts.is_ok()
    }
}

/// A table entry on some member that matches no node the platform runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ghost {
    /// The id in the tables (a random placeholder for `handshake` entries).
    pub id: String,
    /// The address it is listed with, if any.
    pub addr: Option<NodeAddr>,
    /// Slots any member believes it serves.
    pub slots: Vec<SlotRange>,
    /// Listed as `handshake` (a `MEET` that never completed).
    pub handshake: bool,
    /// Listed as `noaddr`.
    pub noaddr: bool,
    /// The members that list it.
    pub known_by: Vec<NodeAddr>,
}

/// A master and the nodes following it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedShard {
    /// The master's id.
    pub master_id: String,
    /// The master's address.
    pub master: NodeAddr,
    /// Slots it serves.
    pub slots: Vec<SlotRange>,
    /// Platform nodes replicating it, by address.
    pub replicas: Vec<NodeAddr>,
}

impl ObservedShard {
    /// Number of slots it serves.
    pub fn slot_count(&self) -> usize {
        count_slots(&self.slots)
    }

    /// Every member, master first.
    pub fn members(&self) -> impl Iterator<Item = &NodeAddr> {
        std::iter::once(&self.master).chain(&self.replicas)
    }
}

/// The whole cluster as seen in one observation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Every platform node, in the platform's order.
    pub nodes: Vec<ObservedNode>,
}

impl Observed {
    /// The node at `addr`.
    pub fn node(&self, addr: &NodeAddr) -> Option<&ObservedNode> {
        self.nodes.iter().find(|n| n.addr() == addr)
    }

    /// Reachable nodes that belong to the cluster.
    pub fn members(&self) -> impl Iterator<Item = (&ObservedNode, &NodeFacts)> {
        self.nodes
            .iter()
            .filter_map(|n| n.facts().filter(|f| f.is_member()).map(|f| (n, f)))
    }

    /// The id of the node at `addr`: its own answer, else what members list at that address.
    pub fn id_of(&self, addr: &NodeAddr) -> Option<String> {
        if let Some(facts) = self.node(addr).and_then(ObservedNode::facts) {
            return Some(facts.id.clone());
        }
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, facts) in self.members() {
            for peer in &facts.peers {
                if peer.addr.as_ref() == Some(addr) && !peer.flags.handshake {
                    *votes.entry(peer.id.as_str()).or_default() += 1;
                }
            }
        }
        most_common(votes).map(str::to_owned)
    }

    /// The platform node whose id is `id`.
    pub fn node_by_id(&self, id: &str) -> Option<&ObservedNode> {
        self.nodes
            .iter()
            .find(|n| self.id_of(n.addr()).as_deref() == Some(id))
    }

    /// Role, master and slots of the node at `addr`: its own answer, else the members' most
    /// common opinion. `None` when nobody knows the node.
    pub fn role_of(&self, addr: &NodeAddr) -> Option<(Role, Option<String>, Vec<SlotRange>)> {
        if let Some(facts) = self.node(addr).and_then(ObservedNode::facts) {
            if !facts.is_member() {
                return None;
            }
            return Some((facts.role, facts.master_id.clone(), facts.slots.clone()));
        }
        let id = self.id_of(addr)?;
        let mut votes: BTreeMap<(Role, Option<String>, Vec<SlotRange>), usize> = BTreeMap::new();
        for (_, facts) in self.members() {
            if let Some(peer) = facts.peers.iter().find(|p| p.id == id) {
                let key = (peer.role(), peer.master_id.clone(), peer.slots.clone());
                *votes.entry(key).or_default() += 1;
            }
        }
        most_common(votes)
    }

    /// Members (reachable or not) that are masters, with their replicas, ordered by first slot
    /// (masters without slots last, by address). Index `i` is "shard `i`" in commands.
    pub fn shards(&self) -> Vec<ObservedShard> {
        let mut masters = Vec::new();
        let mut followers: BTreeMap<String, Vec<NodeAddr>> = BTreeMap::new();
        for node in &self.nodes {
            let Some((role, master_id, slots)) = self.role_of(node.addr()) else {
                continue;
            };
            let Some(id) = self.id_of(node.addr()) else {
                continue;
            };
            match role {
                Role::Master => masters.push(ObservedShard {
                    master_id: id,
                    master: node.addr().clone(),
                    slots,
                    replicas: Vec::new(),
                }),
                Role::Replica => {
                    if let Some(master) = master_id {
                        followers
                            .entry(master)
                            .or_default()
                            .push(node.addr().clone());
                    }
                }
            }
        }
        for shard in &mut masters {
            shard.replicas = followers.remove(&shard.master_id).unwrap_or_default();
        }
        masters.sort_by(|a, b| {
            let first =
                |s: &ObservedShard| s.slots.first().map_or(u32::MAX, |r| u32::from(r.start));
            first(a)
                .cmp(&first(b))
                .then_with(|| a.master.cmp(&b.master))
        });
        masters
    }

    /// The shard `addr` belongs to (as master or replica).
    pub fn shard_of(&self, addr: &NodeAddr) -> Option<ObservedShard> {
        self.shards()
            .into_iter()
            .find(|s| s.members().any(|m| m == addr))
    }

    /// A platform node that replicates the node with id `id`, if any.
    pub fn follower_of(&self, id: &str) -> Option<NodeAddr> {
        self.nodes
            .iter()
            .find(|n| {
                self.role_of(n.addr()).is_some_and(|(role, master, _)| {
                    role == Role::Replica && master.as_deref() == Some(id)
                })
            })
            .map(|n| n.addr().clone())
    }

    /// Replicas (platform nodes) whose master is not a platform node: their master vanished.
    pub fn orphaned_replicas(&self) -> Vec<NodeAddr> {
        let shards = self.shards();
        self.nodes
            .iter()
            .filter(|n| {
                matches!(self.role_of(n.addr()), Some((Role::Replica, _, _)))
                    && !shards.iter().any(|s| s.replicas.contains(n.addr()))
            })
            .map(|n| n.addr().clone())
            .collect()
    }

    /// `(replica, its master)` for replicas that still follow a node that has become a replica
    /// itself (after a failover, the old master's other replicas usually move to the new master
    /// a moment later, but not always: see `plan::next_step`).
    pub fn chained_replicas(&self) -> Vec<(NodeAddr, NodeAddr)> {
        let mut chained = Vec::new();
        for node in &self.nodes {
            let Some((Role::Replica, Some(master_id), _)) = self.role_of(node.addr()) else {
                continue;
            };
            let master = self
                .nodes
                .iter()
                .find(|m| self.id_of(m.addr()).as_deref() == Some(master_id.as_str()));
            if let Some(master) = master
                && matches!(self.role_of(master.addr()), Some((Role::Replica, _, _)))
            {
                chained.push((node.addr().clone(), master.addr().clone()));
            }
        }
        chained
    }

    /// Reachable nodes that stand alone (know no other node): fresh or reset nodes.
    pub fn loners(&self) -> Vec<NodeAddr> {
        self.nodes
            .iter()
            .filter(|n| n.facts().is_some_and(|f| !f.is_member()))
            .map(|n| n.addr().clone())
            .collect()
    }

    /// Table entries that match no platform node.
    ///
    /// A `handshake` entry for the address of a node the platform runs is an introduction under
    /// way (a `MEET`, or gossip about a node just met), not a ghost: forgetting it would undo the
    /// introduction, and Redis itself drops one that does not complete within the node timeout.
    pub fn ghosts(&self) -> Vec<Ghost> {
        let platform_ids: BTreeSet<String> = self
            .nodes
            .iter()
            .filter_map(|n| self.id_of(n.addr()))
            .collect();
        let platform_addrs: BTreeSet<&NodeAddr> = self.nodes.iter().map(|n| n.addr()).collect();
        let mut ghosts: BTreeMap<String, Ghost> = BTreeMap::new();
        for (node, facts) in self.members() {
            for peer in &facts.peers {
                if platform_ids.contains(&peer.id) {
                    continue;
                }
                if peer.flags.handshake
                    && peer
                        .addr
                        .as_ref()
                        .is_some_and(|a| platform_addrs.contains(a))
                {
                    continue;
                }
                let ghost = ghosts.entry(peer.id.clone()).or_insert_with(|| Ghost {
                    id: peer.id.clone(),
                    addr: peer.addr.clone().filter(|a| a.port != 0),
                    slots: Vec::new(),
                    handshake: peer.flags.handshake,
                    noaddr: peer.flags.noaddr,
                    known_by: Vec::new(),
                });
                if ghost.slots.is_empty() {
                    ghost.slots.clone_from(&peer.slots);
                }
                ghost.known_by.push(node.addr().clone());
            }
        }
        ghosts.into_values().collect()
    }

    /// `(viewer, node, the address the viewer lists)` for every member that lists a platform
    /// node under an address other than the one it runs at (after a restart on a new port).
    pub fn stale_addresses(&self) -> Vec<(NodeAddr, NodeAddr, Option<NodeAddr>)> {
        let mut stale = Vec::new();
        for node in &self.nodes {
            let Some(facts) = node.facts() else { continue };
            for (viewer, viewer_facts) in self.members() {
                if let Some(peer) = viewer_facts.peers.iter().find(|p| p.id == facts.id)
                    && peer.addr.as_ref() != Some(node.addr())
                {
                    stale.push((
                        viewer.addr().clone(),
                        node.addr().clone(),
                        peer.addr.clone(),
                    ));
                }
            }
        }
        stale
    }

    /// Members that know nothing of some other member (by id), as `(viewer, missing)`.
    pub fn unacquainted(&self) -> Vec<(NodeAddr, NodeAddr)> {
        let members: Vec<(&ObservedNode, &NodeFacts)> = self.members().collect();
        let mut missing = Vec::new();
        for (viewer, facts) in &members {
            for (other, other_facts) in &members {
                if viewer.addr() != other.addr()
                    && !facts.peers.iter().any(|p| p.id == other_facts.id)
                {
                    missing.push((viewer.addr().clone(), other.addr().clone()));
                }
            }
        }
        missing
    }

    /// Open slots on reachable members, as `(node, migration)`.
    pub fn open_slots(&self) -> Vec<(NodeAddr, SlotMigration)> {
        self.members()
            .flat_map(|(n, f)| f.migrations.iter().map(|m| (n.addr().clone(), m.clone())))
            .collect()
    }

    /// Slots some reachable member or the consensus view assigns to a master.
    pub fn covered_slots(&self) -> SlotSet {
        let mut covered = SlotSet::new();
        for shard in self.shards() {
            for range in &shard.slots {
                covered.insert_range(*range);
            }
        }
        for ghost in self.ghosts() {
            for range in &ghost.slots {
                covered.insert_range(*range);
            }
        }
        covered
    }

    /// Platform nodes that could not be asked, with the reason.
    pub fn unreachable(&self) -> Vec<(&NodeAddr, &str)> {
        self.nodes
            .iter()
            .filter_map(|n| n.facts.as_ref().err().map(|e| (n.addr(), e.as_str())))
            .collect()
    }

    /// The platform group of the node at `addr` (see [`PlatformNode::group`]).
    pub fn group_of(&self, addr: &NodeAddr) -> Option<&str> {
        self.node(addr).and_then(|n| n.node.group.as_deref())
    }

    /// Whether the platform wants the node at `addr` gone (see [`PlatformNode::retiring`]).
    pub fn is_retiring(&self, addr: &NodeAddr) -> bool {
        self.node(addr).is_some_and(|n| n.node.retiring)
    }

    /// The host of the node at `addr`.
    pub fn host_of(&self, addr: &NodeAddr) -> Option<&str> {
        self.node(addr).and_then(|n| n.node.host.as_deref())
    }
}

fn most_common<K: Ord>(votes: BTreeMap<K, usize>) -> Option<K> {
    let best = votes.values().copied().max()?;
    votes.into_iter().find(|(_, n)| *n == best).map(|(k, _)| k)
}

/// Asks every platform node, up to 64 at once, for its table, replication and memory state.
/// A node that does not answer within `timeouts` is recorded as unreachable, not an error.
pub async fn observe(
    nodes: &[PlatformNode],
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Observed {
    const CONCURRENCY: usize = 64;
    let mut pending = nodes.iter().cloned().enumerate();
    let mut set = JoinSet::new();
    let mut found: Vec<Option<ObservedNode>> = vec![None; nodes.len()];
    loop {
        while set.len() < CONCURRENCY {
            let Some((index, node)) = pending.next() else {
                break;
            };
            let credentials = credentials.cloned();
            set.spawn(async move {
                let mut facts = query_facts(&node.addr, timeouts, credentials.as_ref()).await;
                // A node busy with a fork or a big MIGRATE on a loaded machine can miss one
                // deadline; ask once more before calling it down. A refused connection is
                // final at once.
                if matches!(&facts, Err(ClusterError::Unreachable { source, .. }) if source.is_timeout())
                {
                    facts = query_facts(&node.addr, timeouts, credentials.as_ref()).await;
                }
                let facts = facts.map_err(|e| e.to_string());
                (index, ObservedNode { node, facts })
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        if let Ok((index, observed)) = joined {
            found[index] = Some(observed);
        }
    }
    Observed {
        nodes: found
            .into_iter()
            .zip(nodes)
            .map(|(observed, node)| {
                observed.unwrap_or_else(|| ObservedNode {
                    node: node.clone(),
                    facts: Err("the query task failed".into()),
                })
            })
            .collect(),
    }
}

/// One node's facts; the connection is shared by the four queries.
pub async fn query_facts(
    addr: &NodeAddr,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<NodeFacts, ClusterError> {
    let mut client = NodeClient::connect_as(addr, timeouts, credentials).await?;
    let mut table = client.cluster_nodes().await?;
    let info = client.cluster_info().await?;
    let fields: String = client.query(&["INFO", "ALL"]).await?;
    let fields = InfoFields::parse(&fields);
    let keys = client.db_size().await?;
    let Some(index) = table.nodes.iter().position(|n| n.flags.myself) else {
        return Err(ClusterError::parse(
            "CLUSTER NODES",
            "",
            "the reply has no `myself` line",
        ));
    };
    let me = table.nodes.remove(index);
    let role = me.role();
    let offset = match role {
        Role::Master => fields.get_u64("master_repl_offset"),
        Role::Replica => fields
            .get_u64("slave_repl_offset")
            .or_else(|| fields.get_u64("master_repl_offset")),
    }
    .unwrap_or(0);
    Ok(NodeFacts {
        id: me.id,
        role,
        master_id: me.master_id,
        slots: me.slots,
        migrations: me.migrations,
        link_up: role == Role::Master || fields.get("master_link_status") == Some("up"),
        offset,
        keys,
        used_memory: fields.get_u64("used_memory").unwrap_or(0),
        maxmemory: fields.get_u64("maxmemory").unwrap_or(0),
        cluster_ok: info.is_ok(),
        peers: table.nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse_cluster_nodes;

    fn node(port: u16, facts: Option<NodeFacts>) -> ObservedNode {
        ObservedNode {
            node: PlatformNode::new(NodeAddr::new("127.0.0.1", port)),
            facts: facts.ok_or_else(|| "down".to_owned()),
        }
    }

    fn facts(id: &str, peers: &str) -> NodeFacts {
        NodeFacts {
            id: id.into(),
            role: Role::Master,
            master_id: None,
            slots: vec![SlotRange::new(0, 16383)],
            migrations: Vec::new(),
            link_up: true,
            offset: 0,
            keys: 0,
            used_memory: 0,
            maxmemory: 0,
            cluster_ok: true,
            peers: parse_cluster_nodes(peers).unwrap().nodes,
        }
    }

    #[test]
    fn a_handshake_towards_a_platform_node_is_an_introduction_not_a_ghost() {
        let a = "a".repeat(40);
        let peers = format!(
            "{} 127.0.0.1:7001@17001 handshake - 0 0 0 connected\n\
             {} 127.0.0.1:9999@19999 handshake - 0 0 0 connected\n\
             {} 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n",
            "1".repeat(40),
            "2".repeat(40),
            "3".repeat(40),
        );
        let observed = Observed {
            nodes: vec![node(7000, Some(facts(&a, &peers))), node(7001, None)],
        };
        let ghosts: Vec<String> = observed.ghosts().into_iter().map(|g| g.id).collect();
        // The handshake to 7001 (which the platform runs) is left to complete; the one to an
        // address nothing runs at, and the failed node, are ghosts.
        assert_eq!(ghosts, vec!["2".repeat(40), "3".repeat(40)]);
    }
}
