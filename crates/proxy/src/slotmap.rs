//! The routing table: which master serves each slot, and which replicas follow each master.
//! An immutable snapshot; a refresh builds a new one and swaps it in, so readers never see half
//! an update.
//!
//! Several clusters can sit behind one endpoint (`[[clusters]]`, see `crate::config`). Their
//! slots are numbered in one space of *virtual slots*: cluster `c`'s hash slot `s` is
//! `c << 14 | s` (so four clusters fit a `u16`). Everything that routes, checks that a
//! request's keys share a slot, or splits a request per slot works on virtual slots
//! unchanged: keys of two clusters simply never share one. Only what talks to a node about its
//! slots (SCAN's ownership check) takes the hash slot back out.

use std::sync::Arc;

use cinnabar_cluster::{Credentials, NodeAddr, Role, SlotRange, Topology};

/// Hash slots of one cluster.
pub const SLOTS: usize = 16384;
/// Bits of a virtual slot that hold the hash slot; the bits above name the cluster.
pub const SLOT_BITS: u32 = 14;
/// Clusters one endpoint can serve (virtual slots are `u16`).
pub const MAX_CLUSTERS: usize = 4;
/// Marker for a slot nobody serves.
const UNOWNED: u16 = u16::MAX;

/// Cluster `cluster`'s hash slot `slot`, as a virtual slot.
pub const fn virtual_slot(cluster: usize, slot: u16) -> u16 {
    ((cluster as u16) << SLOT_BITS) | slot
}

/// The hash slot of a virtual slot (what its node calls it).
pub const fn hash_slot(virtual_slot: u16) -> u16 {
    virtual_slot & ((1 << SLOT_BITS) - 1)
}

/// The cluster of a virtual slot.
pub const fn cluster_of_slot(virtual_slot: u16) -> usize {
    (virtual_slot >> SLOT_BITS) as usize
}

/// One cluster's place in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// Its name (`[[clusters]]`), `default` for a proxy of one cluster.
    pub(crate) name: String,
    /// Its masters: `masters[first..end]`.
    first: usize,
    end: usize,
    /// How the proxy logs in to its nodes (each cluster has its own).
    credentials: Option<Arc<Credentials>>,
    /// 0 for the cluster it started with, one more after each online switch of this part.
    pub(crate) upstream: u64,
    /// A Sentinel group, not a cluster: one master owning every slot, no `CLUSTER` commands
    /// on its nodes, any database.
    pub(crate) group: bool,
}

/// Masters and the slots they own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    masters: Vec<NodeAddr>,
    /// Replicas of each master (same index) that are not marked failing, for replica reads.
    replicas: Vec<Vec<NodeAddr>>,
    /// One virtual slot owned by each master (same index), to address a master by routing.
    representative: Vec<u16>,
    /// The master of each virtual slot (`SLOTS` per cluster).
    owner: Box<[u16]>,
    parts: Vec<Part>,
    /// Increases with every refresh that changed something.
    pub version: u64,
    /// Online switches so far, over every cluster (see the `switch` module). A client's WATCH
    /// remembers it, so an EXEC after a switch never runs on the old backend.
    pub upstream: u64,
}

impl SlotMap {
    /// A map of one cluster with no owners (before the first refresh).
    pub fn empty() -> Self {
        Self {
            masters: Vec::new(),
            replicas: Vec::new(),
            representative: Vec::new(),
            owner: vec![UNOWNED; SLOTS].into_boxed_slice(),
            parts: vec![Part {
                name: "default".into(),
                first: 0,
                end: 0,
                credentials: None,
                upstream: 0,
                group: false,
            }],
            version: 0,
            upstream: 0,
        }
    }

    /// Builds the map of one cluster from a `CLUSTER NODES` view (masters that are not failed).
    pub fn from_topology(topology: &Topology, version: u64) -> Self {
        let mut map = Self::empty();
        map.version = version;
        for node in &topology.nodes {
            let (Some(addr), Role::Master) = (&node.addr, node.role()) else {
                continue;
            };
            if node.flags.fail || node.slots.is_empty() {
                continue;
            }
            let index = map.masters.len() as u16;
            map.masters.push(addr.clone());
            map.replicas.push(
                topology
                    .nodes
                    .iter()
                    .filter(|r| r.master_id.as_deref() == Some(node.id.as_str()))
                    .filter(|r| !(r.flags.fail || r.flags.pfail || r.flags.handshake))
                    .filter_map(|r| r.addr.clone())
                    .collect(),
            );
            map.representative.push(node.slots[0].start);
            for SlotRange { start, end } in &node.slots {
                for slot in *start..=*end {
                    if let Some(owner) = map.owner.get_mut(usize::from(slot)) {
                        *owner = index;
                    }
                }
            }
        }
        map.parts[0].end = map.masters.len();
        map
    }

    /// The map of a Sentinel group: `master` (when confirmed) owns every slot, and `replicas`
    /// serve reads. With no master every request waits for one within the retry window.
    pub fn group(master: Option<NodeAddr>, replicas: Vec<NodeAddr>, version: u64) -> Self {
        let mut map = Self::empty();
        map.version = version;
        map.parts[0].group = true;
        if let Some(master) = master {
            map.masters.push(master);
            map.replicas.push(replicas);
            map.representative.push(0);
            map.owner.fill(0);
        }
        map.parts[0].end = map.masters.len();
        map
    }

    /// Whether a Sentinel group (not a cluster) is behind the endpoint.
    pub fn is_group(&self) -> bool {
        self.parts.first().is_some_and(|p| p.group)
    }

    /// Names this one-cluster map's cluster, with its credentials and switch count.
    pub(crate) fn named(
        mut self,
        name: &str,
        credentials: Option<Arc<Credentials>>,
        upstream: u64,
    ) -> Self {
        if let [part] = self.parts.as_mut_slice() {
            part.name = name.to_owned();
            part.credentials = credentials;
            part.upstream = upstream;
        }
        self.upstream = upstream;
        self
    }

    /// One table over `clusters` (one-cluster maps, in cluster order): cluster `i`'s slots
    /// become virtual slots `i << 14 | slot`.
    pub(crate) fn combine(clusters: &[Arc<SlotMap>], version: u64) -> Self {
        if let [only] = clusters {
            let mut map = (**only).clone();
            map.version = version;
            return map;
        }
        let mut map = Self {
            masters: Vec::new(),
            replicas: Vec::new(),
            representative: Vec::new(),
            owner: vec![UNOWNED; SLOTS * clusters.len()].into_boxed_slice(),
            parts: Vec::with_capacity(clusters.len()),
            version,
            upstream: 0,
        };
        for (c, one) in clusters.iter().enumerate() {
            let first = map.masters.len();
            map.masters.extend_from_slice(&one.masters);
            map.replicas.extend_from_slice(&one.replicas);
            map.representative.extend(
                one.representative
                    .iter()
                    .map(|slot| virtual_slot(c, hash_slot(*slot))),
            );
            for (slot, owner) in one.owner.iter().take(SLOTS).enumerate() {
                if *owner != UNOWNED {
                    map.owner[c * SLOTS + slot] = *owner + first as u16;
                }
            }
            let part = one.parts.first().cloned().unwrap_or_else(|| Part {
                name: format!("cluster{c}"),
                first: 0,
                end: 0,
                credentials: None,
                upstream: 0,
                group: false,
            });
            map.upstream += part.upstream;
            map.parts.push(Part {
                first,
                end: map.masters.len(),
                ..part
            });
        }
        map
    }

    /// The master serving virtual slot `slot`, as an index into [`masters`](Self::masters).
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner
            .get(usize::from(slot))
            .copied()
            .filter(|o| *o != UNOWNED)
            .map(usize::from)
    }

    /// A virtual slot owned by master `index`: routing a request by it reaches that master.
    pub fn representative_slot(&self, index: usize) -> Option<u16> {
        self.representative.get(index).copied()
    }

    /// All masters that own at least one slot, of every cluster.
    pub fn masters(&self) -> &[NodeAddr] {
        &self.masters
    }

    /// The virtual slot ranges master `index` owns, in order, as inclusive `(first, last)`.
    pub fn ranges(&self, index: usize) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for (slot, owner) in self.owner.iter().enumerate() {
            if usize::from(*owner) != index || *owner == UNOWNED {
                continue;
            }
            let slot = slot as u16;
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => ranges.push((slot, slot)),
            }
        }
        ranges
    }

    /// How many virtual slots have a master ([`total_slots`](Self::total_slots) when every
    /// cluster is fully served).
    pub fn covered_slots(&self) -> usize {
        self.owner.iter().filter(|o| **o != UNOWNED).count()
    }

    /// Virtual slots in all: 16384 per cluster.
    pub fn total_slots(&self) -> usize {
        self.owner.len()
    }

    /// The last virtual slot.
    pub fn last_slot(&self) -> u16 {
        (self.owner.len() - 1) as u16
    }

    /// The replicas of master `index` that can serve reads.
    pub fn replicas(&self, index: usize) -> &[NodeAddr] {
        self.replicas.get(index).map_or(&[], Vec::as_slice)
    }

    /// How many clusters the table routes to.
    pub fn clusters(&self) -> usize {
        self.parts.len()
    }

    /// Cluster `cluster`'s name.
    pub fn cluster_name(&self, cluster: usize) -> &str {
        self.parts.get(cluster).map_or("", |p| p.name.as_str())
    }

    /// The cluster of master `index`.
    pub fn cluster_of_master(&self, index: usize) -> usize {
        self.parts
            .iter()
            .position(|p| (p.first..p.end).contains(&index))
            .unwrap_or(0)
    }

    /// Online switches of cluster `cluster` so far.
    pub fn cluster_upstream(&self, cluster: usize) -> u64 {
        self.parts.get(cluster).map_or(0, |p| p.upstream)
    }

    /// Cluster `cluster`'s masters.
    pub fn cluster_masters(&self, cluster: usize) -> &[NodeAddr] {
        self.parts
            .get(cluster)
            .map_or(&[], |p| &self.masters[p.first..p.end])
    }

    /// Cluster `cluster`'s part of the table, as a one-cluster map (hash slots).
    pub(crate) fn cluster_map(&self, cluster: usize) -> Option<Self> {
        let part = self.parts.get(cluster)?;
        let mut map = Self::empty();
        map.version = self.version;
        map.masters = self.masters[part.first..part.end].to_vec();
        map.replicas = self.replicas[part.first..part.end].to_vec();
        map.representative = self.representative[part.first..part.end]
            .iter()
            .map(|s| hash_slot(*s))
            .collect();
        for slot in 0..SLOTS {
            if let Some(owner) = self.owner(virtual_slot(cluster, slot as u16)) {
                map.owner[slot] = (owner - part.first) as u16;
            }
        }
        map.parts = vec![Part {
            first: 0,
            end: map.masters.len(),
            ..part.clone()
        }];
        map.upstream = part.upstream;
        Some(map)
    }

    /// The credentials for node `addr`: those of the cluster listing it as a master or
    /// replica, else of cluster `otherwise` (a redirect's target before a refresh knows it).
    pub(crate) fn credentials_of(&self, addr: &NodeAddr, otherwise: usize) -> Option<&Credentials> {
        let index = self
            .masters
            .iter()
            .position(|m| m == addr)
            .or_else(|| self.replicas.iter().position(|r| r.contains(addr)));
        let cluster = index.map_or(otherwise, |i| self.cluster_of_master(i));
        self.parts.get(cluster)?.credentials.as_deref()
    }

    /// Whether the maps route every slot identically (replica reads included).
    pub fn same_routes(&self, other: &Self) -> bool {
        self.parts == other.parts
            && self.masters == other.masters
            && self.replicas == other.replicas
            && self.owner == other.owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::parse_cluster_nodes;

    fn one(port: u16, name: &str) -> Arc<SlotMap> {
        let text =
            format!("a{port} 127.0.0.1:{port}@1{port} myself,master - 0 0 1 connected 0-16383\n");
        Arc::new(
            SlotMap::from_topology(&parse_cluster_nodes(&text).unwrap(), 1).named(name, None, 0),
        )
    }

    #[test]
    fn two_clusters_share_one_space_of_virtual_slots() {
        let map = SlotMap::combine(&[one(7001, "orders"), one(7002, "users")], 3);
        assert_eq!(map.clusters(), 2);
        assert_eq!(map.total_slots(), 2 * SLOTS);
        assert_eq!(map.covered_slots(), 2 * SLOTS);
        assert_eq!(map.owner(virtual_slot(0, 5)), Some(0));
        assert_eq!(map.owner(virtual_slot(1, 5)), Some(1));
        assert_eq!(map.cluster_name(1), "users");
        assert_eq!(map.cluster_of_master(1), 1);
        assert_eq!(map.representative_slot(1), Some(virtual_slot(1, 0)));
        assert_eq!(hash_slot(virtual_slot(1, 5)), 5);
        assert_eq!(cluster_of_slot(virtual_slot(3, 16383)), 3);
        let users = map.cluster_map(1).unwrap();
        assert_eq!(users.masters(), &[NodeAddr::new("127.0.0.1", 7002)]);
        assert_eq!(users.owner(5), Some(0));
        assert_eq!(users.cluster_name(0), "users");
    }
}
