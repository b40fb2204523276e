//! A model of a Redis Cluster for the planner's property tests: nodes, roles, slots, hosts,
//! replication lag and dead nodes, evolved by the steps the planner chooses.
//!
//! The model plays Redis and the platform at once. Every step goes through [`check_step`] first,
//! and the model checks the invariants Redis would otherwise break silently: a removed or
//! forgotten node never owns slots, no shard loses two nodes at once, no failover goes to a
//! lagging replica, and every slot has exactly one owner whenever the planner waits or finishes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::observe::{NodeFacts, ObservedNode};
use crate::platform::PlatformNode;
use crate::slots::even_split;
use crate::topology::{ClusterNode, LinkState, NodeFlags};

#[derive(Debug, Clone)]
struct SimNode {
    addr: NodeAddr,
    host: Option<String>,
    id: String,
    up: bool,
    member: bool,
    role: Role,
    master: Option<String>,
    slots: SlotSet,
    link_up: bool,
    lag: u64,
    /// Ids of the members this node has heard of (gossip spreads them when time passes).
    knows: BTreeSet<String>,
    /// Met a moment ago: the owners' slots reach it with their heartbeats, when time passes.
    fresh: bool,
}

#[derive(Debug, Clone)]
struct Sim {
    nodes: Vec<SimNode>,
    /// Table entries of nodes that no longer run: `(id, slots)`.
    ghosts: Vec<(String, SlotSet)>,
    hosts: Vec<String>,
    next_port: u16,
    restarts: BTreeMap<String, usize>,
}

impl Sim {
    /// A formed cluster; with hosts, shard `i`'s members go on consecutive hosts from `i`.
    fn formed(masters: usize, replicas: usize, hosts: usize) -> Self {
        let hosts: Vec<String> = (0..hosts).map(|h| format!("h{h}")).collect();
        let mut sim = Self {
            nodes: Vec::new(),
            ghosts: Vec::new(),
            hosts,
            next_port: 7000,
            restarts: BTreeMap::new(),
        };
        let ranges = even_split(masters).unwrap_or_default();
        for (i, range) in ranges.iter().enumerate() {
            let host = sim.host_at(i);
            let master = sim.add(host);
            let node = sim.node_mut(&master);
            node.member = true;
            node.slots.insert_range(*range);
            let master_id = node.id.clone();
            for j in 0..replicas {
                let host = sim.host_at(i + j + 1);
                let replica = sim.add(host);
                let node = sim.node_mut(&replica);
                node.member = true;
                node.role = Role::Replica;
                node.master = Some(master_id.clone());
            }
        }
        sim.gossip();
        sim
    }

    fn host_at(&self, i: usize) -> Option<String> {
        (!self.hosts.is_empty()).then(|| self.hosts[i % self.hosts.len()].clone())
    }

    fn add(&mut self, host: Option<String>) -> NodeAddr {
        let addr = NodeAddr::new("10.0.0.1", self.next_port);
        self.next_port += 1;
        self.nodes.push(SimNode {
            addr: addr.clone(),
            host,
            id: format!("{:040x}", u128::from(self.next_port) * 7919),
            up: true,
            member: false,
            role: Role::Master,
            master: None,
            slots: SlotSet::new(),
            link_up: true,
            lag: 0,
            knows: BTreeSet::new(),
            fresh: false,
        });
        addr
    }

    fn node(&self, addr: &NodeAddr) -> &SimNode {
        let i = self.nodes.iter().position(|n| &n.addr == addr);
        &self.nodes[i.unwrap_or_else(|| panic!("no node {addr}"))]
    }

    fn node_mut(&mut self, addr: &NodeAddr) -> &mut SimNode {
        let i = self.nodes.iter().position(|n| &n.addr == addr);
        &mut self.nodes[i.unwrap_or_else(|| panic!("no node {addr}"))]
    }

    fn by_id(&self, id: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn entry(node: &SimNode) -> ClusterNode {
        ClusterNode {
            id: node.id.clone(),
            addr: Some(node.addr.clone()),
            bus_port: Some(node.addr.port + 10000),
            hostname: None,
            flags: NodeFlags {
                master: node.role == Role::Master,
                replica: node.role == Role::Replica,
                fail: !node.up,
                ..NodeFlags::default()
            },
            master_id: node.master.clone(),
            ping_sent_ms: 0,
            pong_recv_ms: 0,
            config_epoch: 1,
            link: LinkState::Connected,
            slots: node.slots.ranges(),
            migrations: Vec::new(),
        }
    }

    fn observe(&self) -> Observed {
        let nodes =
            self.nodes
                .iter()
                .map(|n| {
                    let facts =
                        if n.up {
                            let peers = if n.member {
                                let mut peers: Vec<ClusterNode> = self
                                    .nodes
                                    .iter()
                                    .filter(|o| o.member && o.id != n.id && n.knows.contains(&o.id))
                                    .map(Self::entry)
                                    .collect();
                                for (id, slots) in &self.ghosts {
                                    peers.push(ClusterNode {
                                        id: id.clone(),
                                        addr: None,
                                        bus_port: None,
                                        hostname: None,
                                        flags: NodeFlags {
                                            master: true,
                                            fail: true,
                                            noaddr: true,
                                            ..NodeFlags::default()
                                        },
                                        master_id: None,
                                        ping_sent_ms: 0,
                                        pong_recv_ms: 0,
                                        config_epoch: 0,
                                        link: LinkState::Disconnected,
                                        slots: slots.ranges(),
                                        migrations: Vec::new(),
                                    });
                                }
                                peers
                            } else {
                                Vec::new()
                            };
                            Ok(NodeFacts {
                                id: n.id.clone(),
                                role: n.role,
                                master_id: n.master.clone(),
                                slots: n.slots.ranges(),
                                migrations: Vec::new(),
                                link_up: n.role == Role::Master || n.link_up,
                                offset: 1_000_000_000u64.saturating_sub(
                                    if n.role == Role::Replica { n.lag } else { 0 },
                                ),
                                keys: 0,
                                used_memory: 0,
                                maxmemory: 0,
                                // A member sees every slot served once it has heard
                                // from every other member.
                                cluster_ok: n.member
                                    && !n.fresh
                                    && self.nodes.iter().all(|o| {
                                        !o.member || o.id == n.id || n.knows.contains(&o.id)
                                    }),
                                peers,
                            })
                        } else {
                            Err("connection refused".to_owned())
                        };
                    ObservedNode {
                        node: PlatformNode {
                            addr: n.addr.clone(),
                            host: n.host.clone(),
                            zone: None,
                            group: None,
                            retiring: false,
                        },
                        facts,
                    }
                })
                .collect();
        Observed { nodes }
    }

    /// Time passes: replicas sync, nodes met a moment ago hear the owners' slots. Gossip is
    /// not modelled as ever spreading a new node (under load it was seen not to reach a master
    /// for minutes), so the planner must introduce every pair itself; and replicas of a demoted
    /// master keep following it (Redis 7.0 can leave them so for good).
    fn settle(&mut self) {
        for node in &mut self.nodes {
            node.link_up = true;
            node.lag = 0;
            node.fresh = false;
        }
    }

    /// Every member hears of every other member (a formed cluster).
    fn gossip(&mut self) {
        let members: BTreeSet<String> = self
            .nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id.clone())
            .collect();
        for node in self.nodes.iter_mut().filter(|n| n.member) {
            node.knows.clone_from(&members);
            node.knows.remove(&node.id);
        }
    }

    fn shard_members(&self, addr: &NodeAddr) -> Vec<NodeAddr> {
        let Some(node) = self.nodes.iter().find(|n| &n.addr == addr) else {
            return Vec::new();
        };
        let master_id = match node.role {
            Role::Master => node.id.clone(),
            Role::Replica => node.master.clone().unwrap_or_default(),
        };
        self.nodes
            .iter()
            .filter(|n| n.id == master_id || n.master.as_deref() == Some(master_id.as_str()))
            .map(|n| n.addr.clone())
            .collect()
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        check_step(step, &self.observe())?;
        match step {
            Step::Provision { host, .. } => {
                if let Some(h) = host
                    && !self.hosts.contains(h)
                {
                    return Err(format!("provision on unknown host {h}"));
                }
                self.add(host.clone());
            }
            Step::Meet { node, via } => {
                if !self.nodes.iter().any(|n| &n.addr == via && n.member) {
                    return Err(format!("meet via {via}, which is not a member"));
                }
                // Only the pair meets; the others hear of the node when gossip spreads.
                let via_id = self.node(via).id.clone();
                let met = self.node_mut(node);
                met.fresh |= !met.member;
                met.member = true;
                met.knows.insert(via_id);
                let node_id = met.id.clone();
                self.node_mut(via).knows.insert(node_id);
            }
            Step::Replicate {
                replica, master_id, ..
            } => {
                let Some(master) = self.by_id(master_id) else {
                    return Err(format!("replicate to unknown master {master_id}"));
                };
                if master.role != Role::Master {
                    return Err("replicate to a replica".into());
                }
                let node = self.node_mut(replica);
                if !node.slots.is_empty() {
                    return Err(format!(
                        "{replica} serves slots; it cannot become a replica"
                    ));
                }
                node.role = Role::Replica;
                node.master = Some(master_id.clone());
                node.link_up = false;
                node.lag = u64::MAX / 4;
            }
            Step::MoveSlots { targets } => self.move_slots(targets)?,
            Step::Failover { replica, .. } => {
                let node = self.nodes.iter().find(|n| &n.addr == replica).cloned();
                let Some(node) = node else {
                    return Err(format!("no replica {replica}"));
                };
                let Some(old_id) = node.master.clone() else {
                    return Err(format!("{replica} is not a replica"));
                };
                let slots = self
                    .by_id(&old_id)
                    .map(|m| m.slots.clone())
                    .or_else(|| {
                        self.ghosts
                            .iter()
                            .find(|(id, _)| *id == old_id)
                            .map(|(_, s)| s.clone())
                    })
                    .unwrap_or_default();
                self.ghosts.retain(|(id, _)| *id != old_id);
                for n in &mut self.nodes {
                    if n.id == node.id {
                        n.role = Role::Master;
                        n.master = None;
                        n.slots = slots.clone();
                    } else if n.id == old_id {
                        n.role = Role::Replica;
                        n.master = Some(node.id.clone());
                        n.slots = SlotSet::new();
                    }
                    // The old master's other replicas follow it until gossip moves them
                    // (`settle`), as in Redis.
                }
            }
            Step::Restart { node } => {
                let id = self.node_mut(node).id.clone();
                *self.restarts.entry(id).or_default() += 1;
            }
            Step::Start { node } => self.node_mut(node).up = true,
            Step::Remove { node, .. } => {
                let members = self.shard_members(node);
                if members
                    .iter()
                    .any(|m| m != node && self.nodes.iter().any(|n| &n.addr == m && !n.up))
                {
                    return Err(format!("removed {node} while its shard had a node down"));
                }
                let removed = self.node_mut(node).clone();
                if !removed.slots.is_empty() {
                    return Err(format!("removed {node}, which serves slots"));
                }
                self.nodes.retain(|n| &n.addr != node);
                for n in &mut self.nodes {
                    if n.master.as_deref() == Some(removed.id.as_str()) {
                        // A replica of a removed empty master: Redis keeps it as a replica of
                        // a node it can no longer find; the model makes it a lone master.
                        n.role = Role::Master;
                        n.master = None;
                    }
                }
            }
            Step::Forget { id, .. } => {
                if let Some((_, slots)) = self.ghosts.iter().find(|(g, _)| g == id)
                    && !slots.is_empty()
                {
                    return Err(format!("forgot {id}, which serves slots"));
                }
                self.ghosts.retain(|(g, _)| g != id);
            }
            Step::Remeet { .. } => {}
            Step::CloseSlots { .. } => return Err("the model never leaves slots open".into()),
            Step::AssignSlots { master, ranges } => {
                let node = self.node_mut(master);
                for r in ranges {
                    node.slots.insert_range(*r);
                }
            }
        }
        Ok(())
    }

    /// Even shares over the weighted targets, moving as few slots as possible.
    fn move_slots(&mut self, targets: &[(NodeAddr, String, u32)]) -> Result<(), String> {
        let receivers: Vec<&String> = targets
            .iter()
            .filter(|(_, _, w)| *w > 0)
            .map(|(_, id, _)| id)
            .collect();
        if receivers.is_empty() {
            return Err("move slots with no receiving master".into());
        }
        // Redis refuses `SETSLOT … IMPORTING/MIGRATING/NODE` naming a node it has not heard of,
        // and a receiver that lacks some owner's slots refuses the keys.
        let observed = self.observe();
        for (addr, _, _) in targets {
            if observed
                .node(addr)
                .and_then(ObservedNode::facts)
                .is_some_and(|f| !f.cluster_ok)
            {
                return Err(format!("{addr}: CLUSTERDOWN Hash slot not served"));
            }
        }
        for (viewer, _, _) in targets {
            let knows = &self.node(viewer).knows;
            if let Some((_, id, _)) = targets
                .iter()
                .find(|(addr, id, _)| addr != viewer && !knows.contains(id))
            {
                return Err(format!(
                    "{viewer} does not know {id}: ERR I don't know about node"
                ));
            }
        }
        let mut pool = Vec::new();
        let mut owned: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for (_, id, _) in targets {
            let node = self
                .by_id(id)
                .ok_or_else(|| format!("move slots to unknown {id}"))?;
            let slots: Vec<u16> = (0..16384u16).filter(|s| node.slots.contains(*s)).collect();
            owned.insert(id.clone(), slots);
        }
        let total: usize = owned.values().map(Vec::len).sum();
        let quota = |i: usize| total / receivers.len() + usize::from(i < total % receivers.len());
        for (id, slots) in &mut owned {
            let keep = receivers.iter().position(|r| *r == id).map_or(0, quota);
            while slots.len() > keep {
                pool.extend(slots.pop());
            }
        }
        for (i, id) in receivers.iter().enumerate() {
            let slots = owned.entry((*id).clone()).or_default();
            while slots.len() < quota(i) {
                match pool.pop() {
                    Some(s) => slots.push(s),
                    None => break,
                }
            }
        }
        // Like Redis (`cluster-allow-replica-migration yes`): a master that loses its last
        // slot, and its replicas, follow the master that took it.
        let mut emptied: Vec<(String, String)> = Vec::new();
        for node in &self.nodes {
            if let Some(slots) = owned.get(&node.id)
                && slots.is_empty()
                && !node.slots.is_empty()
            {
                let last = (0..16384u16).rev().find(|s| node.slots.contains(*s));
                let taker = owned
                    .iter()
                    .find(|(_, held)| last.is_some_and(|l| held.contains(&l)))
                    .map(|(id, _)| id.clone());
                if let Some(taker) = taker {
                    emptied.push((node.id.clone(), taker));
                }
            }
        }
        for node in &mut self.nodes {
            if let Some(slots) = owned.get(&node.id) {
                node.slots = SlotSet::new();
                for s in slots {
                    node.slots.insert(*s);
                }
            }
        }
        for (old, taker) in emptied {
            for node in &mut self.nodes {
                if node.id == old || node.master.as_deref() == Some(old.as_str()) {
                    node.role = Role::Replica;
                    node.master = Some(taker.clone());
                }
            }
        }
        Ok(())
    }

    /// Every slot has exactly one owner, and only masters own slots.
    fn check_slots(&self) -> Result<(), String> {
        let mut owners = vec![0u8; 16384];
        for node in &self.nodes {
            if node.role == Role::Replica && !node.slots.is_empty() {
                return Err(format!("replica {} owns slots", node.addr));
            }
            for s in 0..16384u16 {
                if node.slots.contains(s) {
                    owners[usize::from(s)] += 1;
                }
            }
        }
        for (_, slots) in &self.ghosts {
            for s in 0..16384u16 {
                if slots.contains(s) {
                    owners[usize::from(s)] += 1;
                }
            }
        }
        match owners.iter().position(|n| *n != 1) {
            Some(slot) => Err(format!("slot {slot} has {} owners", owners[slot])),
            None => Ok(()),
        }
    }

    /// Runs `op` to completion; returns the steps taken and the final answer.
    fn run(&mut self, mut op: Operation) -> Result<(Vec<Step>, Next), String> {
        let context = PlanContext {
            hosts: self.hosts.clone(),
        };
        let mut steps = Vec::new();
        for _ in 0..400 {
            let observed = self.observe();
            match next_step(&op, &observed, &context).map_err(|r| format!("refused: {r}"))? {
                Next::Step(step) => {
                    self.apply(&step)
                        .map_err(|e| format!("step `{step}` broke a rule: {e}"))?;
                    let id = match &step {
                        Step::Restart { node } => self
                            .nodes
                            .iter()
                            .find(|n| &n.addr == node)
                            .map(|n| n.id.clone()),
                        _ => None,
                    };
                    op.record(&step, id.as_deref());
                    steps.push(step);
                }
                Next::Wait(_) => {
                    self.check_slots()?;
                    self.settle();
                }
                done @ Next::Done { .. } => {
                    self.check_slots()?;
                    return Ok((steps, done));
                }
            }
        }
        Err(format!("no end after 400 rounds: {:?}", steps.last()))
    }

    fn shards(&self) -> Vec<(SimNode, Vec<SimNode>)> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Master && n.member && !n.slots.is_empty())
            .map(|m| {
                let replicas = self
                    .nodes
                    .iter()
                    .filter(|r| r.master.as_deref() == Some(m.id.as_str()))
                    .cloned()
                    .collect();
                (m.clone(), replicas)
            })
            .collect()
    }

    /// No shard with two members on one host (when there are enough hosts), and no host with
    /// more than its share of masters.
    fn check_placement(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        let shards = self.shards();
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for (master, replicas) in &shards {
            let mut seen = BTreeSet::new();
            if replicas.len() < self.hosts.len() {
                for member in std::iter::once(master).chain(replicas) {
                    let host = member.host.as_deref().unwrap_or("?");
                    if !seen.insert(host) {
                        return Err(format!(
                            "shard of {} has two members on {host}",
                            master.addr
                        ));
                    }
                }
            }
            *per_host
                .entry(master.host.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
        let share = shards.len().div_ceil(self.hosts.len());
        if let Some((host, n)) = per_host.iter().find(|(_, n)| **n > share) {
            return Err(format!("{host} holds {n} masters, share is {share}"));
        }
        Ok(())
    }
}

fn assert_shape(sim: &Sim, masters: usize, replicas: usize) -> Result<(), String> {
    let shards = sim.shards();
    if shards.len() != masters {
        return Err(format!("{} shards, wanted {masters}", shards.len()));
    }
    let counts: Vec<usize> = shards.iter().map(|(m, _)| m.slots.len()).collect();
    let (min, max) = (counts.iter().min(), counts.iter().max());
    if let (Some(min), Some(max)) = (min, max)
        && max - min > 1
    {
        return Err(format!("uneven slots {counts:?}"));
    }
    for (master, rs) in &shards {
        if rs.len() != replicas {
            return Err(format!(
                "{} has {} replicas, wanted {replicas}",
                master.addr,
                rs.len()
            ));
        }
    }
    if sim.nodes.len() != masters * (replicas + 1) {
        return Err(format!(
            "{} nodes left, wanted {}",
            sim.nodes.len(),
            masters * (replicas + 1)
        ));
    }
    Ok(())
}

#[test]
fn scale_out_then_in_reaches_the_shape() {
    let mut sim = Sim::formed(3, 1, 3);
    let (steps, _) = sim
        .run(Operation::Scale {
            masters: 5,
            replicas: 1,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_shape(&sim, 5, 1).unwrap_or_else(|e| panic!("{e}"));
    sim.check_placement().unwrap_or_else(|e| panic!("{e}"));
    assert!(steps.iter().any(|s| matches!(s, Step::MoveSlots { .. })));
    sim.run(Operation::Scale {
        masters: 3,
        replicas: 1,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_shape(&sim, 3, 1).unwrap_or_else(|e| panic!("{e}"));
}

/// A platform that groups nodes by shard (Kubernetes: a StatefulSet per shard) gets every
/// replica from the master's own group, and new shards from new groups.
#[test]
fn with_groups_replicas_come_from_their_shards_group() {
    let mut sim = Sim::formed(2, 1, 0);
    let observed = sim.observe();
    let mut groups: BTreeMap<NodeAddr, String> = BTreeMap::new();
    for (i, shard) in observed.shards().iter().enumerate() {
        for member in shard.members() {
            groups.insert(member.clone(), format!("g{i}"));
        }
    }
    // The platform already started one more pod in each group and a third group of three, in
    // an order where the first loner is the wrong choice for a new master.
    for group in ["g0", "g1", "g2", "g2", "g2"] {
        let addr = sim.add(None);
        groups.insert(addr, group.into());
    }
    let context = PlanContext::default();
    let mut op = Operation::Scale {
        masters: 3,
        replicas: 2,
    };
    let mut done: Vec<String> = Vec::new();
    for _ in 0..100 {
        let mut observed = sim.observe();
        for node in &mut observed.nodes {
            node.node.group = groups.get(node.addr()).cloned();
        }
        match next_step(&op, &observed, &context).unwrap_or_else(|e| panic!("{e}")) {
            Next::Step(step) => {
                assert!(
                    !matches!(step, Step::Provision { .. }),
                    "the pods exist: {step} after {done:?}"
                );
                done.push(step.to_string());
                check_step(&step, &observed).unwrap_or_else(|e| panic!("{e}"));
                sim.apply(&step).unwrap_or_else(|e| panic!("{e}"));
                op.record(&step, None);
            }
            Next::Wait(_) => sim.settle(),
            Next::Done { .. } => break,
        }
    }
    assert_shape(&sim, 3, 2).unwrap_or_else(|e| panic!("{e}"));
    for (master, replicas) in sim.shards() {
        for replica in replicas {
            assert_eq!(
                groups.get(&replica.addr),
                groups.get(&master.addr),
                "{}",
                replica.addr
            );
        }
    }
}

/// Kubernetes scale-in: the platform marks the pods beyond the spec as retiring (a whole
/// StatefulSet, and the last ordinal of the others); exactly those go, a retiring master first
/// hands its role to a replica that stays.
#[test]
fn a_scale_in_removes_exactly_the_retiring_nodes() {
    let mut sim = Sim::formed(3, 2, 0);
    let observed = sim.observe();
    let mut retiring: BTreeSet<NodeAddr> = BTreeSet::new();
    for (i, shard) in observed.shards().iter().enumerate() {
        let members: Vec<&NodeAddr> = shard.members().collect();
        if i == 2 {
            retiring.extend(members.iter().map(|m| (*m).clone()));
        } else if i == 0 {
            // After an earlier failover, shard 0's master is the pod that now retires.
            retiring.insert(members[0].clone());
        } else {
            retiring.insert(members[2].clone());
        }
    }
    let context = PlanContext::default();
    let mut op = Operation::Scale {
        masters: 2,
        replicas: 1,
    };
    let mut done = Vec::new();
    for _ in 0..200 {
        let mut observed = sim.observe();
        for node in &mut observed.nodes {
            node.node.retiring = retiring.contains(node.addr());
        }
        match next_step(&op, &observed, &context).unwrap_or_else(|e| panic!("{e}")) {
            Next::Step(step) => {
                if let Step::Remove { node, .. } = &step {
                    assert!(
                        retiring.contains(node),
                        "{node} is not retiring; after {done:?}"
                    );
                }
                check_step(&step, &observed).unwrap_or_else(|e| panic!("{e}"));
                sim.apply(&step).unwrap_or_else(|e| panic!("{e}"));
                op.record(&step, None);
                done.push(step.to_string());
            }
            Next::Wait(_) => sim.settle(),
            Next::Done { .. } => break,
        }
    }
    assert_shape(&sim, 2, 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sim.nodes.iter().all(|n| !retiring.contains(&n.addr)),
        "{done:?}"
    );
}

#[test]
fn scale_to_zero_masters_is_refused() {
    let sim = Sim::formed(3, 1, 0);
    let refusal = next_step(
        &Operation::Scale {
            masters: 0,
            replicas: 1,
        },
        &sim.observe(),
        &PlanContext::default(),
    )
    .unwrap_err();
    assert!(
        refusal.to_string().contains("at least one master"),
        "{refusal}"
    );
}

#[test]
fn a_scale_in_whose_data_would_not_fit_is_refused() {
    let sim = Sim::formed(3, 0, 0);
    let mut observed = sim.observe();
    for node in &mut observed.nodes {
        if let Ok(facts) = &mut node.facts {
            facts.used_memory = 600 << 20;
            facts.maxmemory = 1 << 30;
        }
    }
    let op = Operation::Scale {
        masters: 1,
        replicas: 0,
    };
    let refusal = next_step(&op, &observed, &PlanContext::default()).unwrap_err();
    assert!(refusal.to_string().contains("would not fit"), "{refusal}");
    // Two masters' worth of room is enough for 1.8 GiB.
    let op = Operation::Scale {
        masters: 2,
        replicas: 0,
    };
    assert!(next_step(&op, &observed, &PlanContext::default()).is_ok());
}

#[test]
fn failover_of_a_shard_without_replica_is_refused_with_the_reason() {
    let sim = Sim::formed(3, 0, 0);
    let observed = sim.observe();
    let shard = &observed.shards()[0];
    let op = Operation::Failover {
        master_id: shard.master_id.clone(),
        master: shard.master.clone(),
    };
    let refusal = next_step(&op, &observed, &PlanContext::default()).unwrap_err();
    assert!(refusal.to_string().contains("has no replica"), "{refusal}");
}

#[test]
fn failover_never_picks_a_lagging_replica() {
    let mut sim = Sim::formed(1, 2, 0);
    sim.nodes[1].lag = MAX_FAILOVER_LAG + 1;
    let observed = sim.observe();
    let shard = &observed.shards()[0];
    let op = Operation::Failover {
        master_id: shard.master_id.clone(),
        master: shard.master.clone(),
    };
    match next_step(&op, &observed, &PlanContext::default()) {
        Ok(Next::Step(Step::Failover { replica, .. })) => assert_eq!(replica, sim.nodes[2].addr),
        other => panic!("{other:?}"),
    }
    sim.nodes[2].link_up = false;
    let refusal = next_step(&op, &sim.observe(), &PlanContext::default()).unwrap_err();
    assert!(
        refusal.to_string().contains("no healthy replica"),
        "{refusal}"
    );
}

#[test]
fn check_step_refuses_to_remove_a_slot_owner_or_forget_a_live_node() {
    let sim = Sim::formed(2, 1, 0);
    let observed = sim.observe();
    let master = sim.nodes[0].addr.clone();
    let err = check_step(
        &Step::Remove {
            node: master,
            id: None,
        },
        &observed,
    )
    .unwrap_err();
    assert!(err.contains("serves slots"), "{err}");
    let err = check_step(
        &Step::Forget {
            id: sim.nodes[1].id.clone(),
            on: vec![],
        },
        &observed,
    )
    .unwrap_err();
    assert!(err.contains("still runs"), "{err}");
}

#[test]
fn heal_starts_dead_nodes_forgets_ghosts_and_attaches_spares() {
    let mut sim = Sim::formed(3, 1, 0);
    sim.nodes[4].up = false;
    sim.ghosts.push(("dead".repeat(10), SlotSet::new()));
    let spare = sim.add(None);
    let (steps, next) = sim
        .run(Operation::Heal {
            replicas: Some(1),
            started: BTreeSet::new(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next, Next::Done { unresolved: vec![] }, "{steps:?}");
    assert!(sim.ghosts.is_empty());
    assert!(sim.nodes.iter().all(|n| n.up && n.member));
    // The spare has nowhere to go (every shard has its replica): it joins and waits.
    assert!(sim.nodes.iter().any(|n| n.addr == spare));
}

#[test]
fn heal_reports_slots_of_a_vanished_master_without_replica() {
    let mut sim = Sim::formed(3, 0, 0);
    let gone = sim.nodes.remove(2);
    sim.ghosts.push((gone.id.clone(), gone.slots.clone()));
    let (_, next) = sim
        .run(Operation::Heal {
            replicas: None,
            started: BTreeSet::new(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let Next::Done { unresolved } = next else {
        panic!("{next:?}")
    };
    assert!(unresolved[0].contains("no replica"), "{unresolved:?}");
}

fn op_strategy() -> impl Strategy<Value = u8> {
    0u8..5
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any operation on any small cluster keeps every safety rule and ends in its goal.
    #[test]
    fn operations_keep_the_invariants(
        masters in 1usize..=5,
        replicas in 0usize..=2,
        hosts in prop_oneof![Just(0usize), Just(3usize), Just(4usize)],
        op in op_strategy(),
        target_masters in 1usize..=6,
        target_replicas in 0usize..=2,
        lagging in proptest::collection::vec(any::<bool>(), 0..12),
    ) {
        let mut sim = Sim::formed(masters, replicas, hosts);
        for (node, lag) in sim.nodes.iter_mut().zip(&lagging) {
            if *lag && node.role == Role::Replica {
                node.lag = MAX_FAILOVER_LAG * 2;
            }
        }
        let ids: BTreeSet<String> = sim.nodes.iter().map(|n| n.id.clone()).collect();
        let operation = match op {
            0 => Operation::Scale { masters: target_masters, replicas: target_replicas },
            1 => Operation::RollingRestart { pending: ids.clone() },
            2 => Operation::ReplaceNodes { old: ids.clone(), replicas },
            3 => {
                let observed = sim.observe();
                let shard = observed.shards()[0].clone();
                Operation::Failover { master_id: shard.master_id, master: shard.master }
            }
            _ => Operation::Heal { replicas: Some(replicas), started: BTreeSet::new() },
        };
        match sim.run(operation.clone()) {
            Ok(_) => {}
            // Refusals are allowed only where a shard has no replica to hand over to.
            Err(e) if e.starts_with("refused") => {
                prop_assert!(
                    e.contains("replica") && (replicas == 0 || !lagging.is_empty()),
                    "{e}"
                );
                return Ok(());
            }
            Err(e) => prop_assert!(false, "{operation}: {e}"),
        }
        match operation {
            Operation::Scale { masters, replicas } => {
                prop_assert!(assert_shape(&sim, masters, replicas).is_ok(), "{:?}", assert_shape(&sim, masters, replicas));
                if hosts > replicas {
                    prop_assert!(sim.check_placement().is_ok(), "{:?}", sim.check_placement());
                }
            }
            Operation::RollingRestart { .. } => {
                for id in &ids {
                    prop_assert_eq!(sim.restarts.get(id).copied(), Some(1), "restarts of {}", id);
                }
            }
            Operation::ReplaceNodes { .. } => {
                prop_assert!(sim.nodes.iter().all(|n| !ids.contains(&n.id)));
                prop_assert!(assert_shape(&sim, masters, replicas).is_ok(), "{:?}", assert_shape(&sim, masters, replicas));
            }
            Operation::Failover { master_id, .. } => {
                let old = sim.by_id(&master_id).map(|n| n.role);
                prop_assert_eq!(old, Some(Role::Replica));
            }
            _ => {}
        }
    }
}
