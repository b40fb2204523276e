//! The routing table: which master serves each of the 16384 slots, and which replicas follow
//! each master. An immutable snapshot;
//! a refresh builds a new one and swaps it in, so readers never see half an update.

use std::sync::Arc;

use cinnabar_cluster::{Credentials, NodeAddr, Role, SlotRange, Topology};

/// Number of hash slots.
const SLOTS: usize = 16384;
/// Marker for a slot nobody serves.
const UNOWNED: u16 = u16::MAX;

/// Masters and the slots they own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    masters: Vec<NodeAddr>,
    /// Replicas of each master (same index) that are not marked failing, for replica reads.
    replicas: Vec<Vec<NodeAddr>>,
    /// One slot owned by each master (same index), to address a master by routing.
    representative: Vec<u16>,
    owner: Box<[u16]>,
    /// Increases with every refresh that changed something.
    pub version: u64,
    /// Which backend this table routes to: 0 for the one the proxy started with, one more
    /// after each online switch (see the `switch` module). A client's WATCH remembers it, so
    /// an EXEC after a switch never runs on the old backend.
    pub upstream: u64,
    /// How the proxy logs in to this backend's nodes (each backend has its own).
    pub(crate) credentials: Option<Arc<Credentials>>,
}

impl SlotMap {
    /// A map with no owners (before the first refresh).
    pub fn empty() -> Self {
        Self {
            masters: Vec::new(),
            replicas: Vec::new(),
            representative: Vec::new(),
            owner: vec![UNOWNED; SLOTS].into_boxed_slice(),
            version: 0,
            upstream: 0,
            credentials: None,
        }
    }

    /// Builds the map from a `CLUSTER NODES` view (masters that are not failed).
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
        map
    }

    /// The master serving `slot`, as an index into [`masters`](Self::masters).
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner
            .get(usize::from(slot))
            .copied()
            .filter(|o| *o != UNOWNED)
            .map(usize::from)
    }

    /// A slot owned by master `index`: routing a request by it reaches that master.
    pub fn representative_slot(&self, index: usize) -> Option<u16> {
        self.representative.get(index).copied()
    }

    /// All masters that own at least one slot.
    pub fn masters(&self) -> &[NodeAddr] {
        &self.masters
    }

    /// The slot ranges master `index` owns, in order, as inclusive `(first, last)` pairs.
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

    /// How many slots have a master (16384 when the cluster is fully served).
    pub fn covered_slots(&self) -> usize {
        self.owner.iter().filter(|o| **o != UNOWNED).count()
    }

    /// The replicas of master `index` that can serve reads.
    pub fn replicas(&self, index: usize) -> &[NodeAddr] {
        self.replicas.get(index).map_or(&[], Vec::as_slice)
    }

    /// The credentials for this backend's nodes.
    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_deref()
    }

    /// Whether the maps route every slot identically (replica reads included).
    pub fn same_routes(&self, other: &Self) -> bool {
        self.upstream == other.upstream
            && self.masters == other.masters
            && self.replicas == other.replicas
            && self.owner == other.owner
    }
}
