//! Which node becomes a master, which replicates whom, and which slots each shard serves.
//!
//! A pure function of the nodes, their host labels and the replica count; no I/O. It must never
//! place two members of one shard (a master and its replica) on the same host, and it spreads
//! masters as evenly over hosts as that rule allows.
//!
//! Decisions:
//! - Node count must be a multiple of `replicas + 1`; leftovers are refused, not guessed at
//!   (an extra node is cheap to add later as a replica, a wrong guess is not cheap to undo).
//! - Without host labels (everything on one machine) shards are formed in input order: the first
//!   `masters` nodes are masters, the following ones replicate them in turn.
//! - With labels the problem is: deal nodes into shards so no shard uses a host twice (always
//!   possible when no host holds more nodes than there are shards), then pick one master per
//!   shard minimising the most masters on any host (a capacity-bounded bipartite matching).
//! - Resilience rules that depend on how many machines the platform gave us (a host holding half
//!   the masters, or more than a quarter of the nodes) are reported as warnings, because the
//!   cluster works and only the platform can fix them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::NodeAddr;
use crate::error::ClusterError;
use crate::slots::{SLOT_COUNT, SlotRange, count_slots, even_split, format_ranges};

/// A node offered for a new cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewNode {
    /// Where its client port listens.
    pub addr: NodeAddr,
    /// The machine (or failure domain) it runs on; `None` when unknown.
    pub host_label: Option<String>,
}

impl NewNode {
    /// A node without a host label.
    pub fn new(addr: NodeAddr) -> Self {
        Self {
            addr,
            host_label: None,
        }
    }

    /// A node on host `label`.
    pub fn on_host(addr: NodeAddr, label: impl Into<String>) -> Self {
        Self {
            addr,
            host_label: Some(label.into()),
        }
    }
}

/// One planned shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// The master.
    pub master: NewNode,
    /// Its replicas.
    pub replicas: Vec<NewNode>,
    /// The slots the master will serve.
    pub slots: Vec<SlotRange>,
}

/// The planned cluster: shards in slot order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// One entry per master.
    pub shards: Vec<ShardPlan>,
    /// Resilience concerns the plan could not avoid (see the module docs); empty when none.
    pub warnings: Vec<String>,
}

impl Layout {
    /// Number of masters.
    pub fn masters(&self) -> usize {
        self.shards.len()
    }

    /// Number of replicas in total.
    pub fn replicas(&self) -> usize {
        self.shards.iter().map(|s| s.replicas.len()).sum()
    }

    /// Every node, masters first (shard order), then replicas (shard order).
    pub fn nodes(&self) -> Vec<&NewNode> {
        let masters = self.shards.iter().map(|s| &s.master);
        let replicas = self.shards.iter().flat_map(|s| s.replicas.iter());
        masters.chain(replicas).collect()
    }

    /// The largest number of masters on one host label (0 without labels).
    pub fn max_masters_per_host(&self) -> usize {
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for label in self
            .shards
            .iter()
            .filter_map(|s| s.master.host_label.as_deref())
        {
            *per_host.entry(label).or_default() += 1;
        }
        per_host.values().copied().max().unwrap_or(0)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.shards.first().map_or(0, |s| s.replicas.len());
        write!(
            f,
            "{} master{} with {per} replica{} each:",
            self.masters(),
            plural(self.masters()),
            plural(per)
        )?;
        for (i, shard) in self.shards.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(
                f,
                "{sep}{} [{}]",
                describe(&shard.master),
                format_ranges(&shard.slots)
            )?;
            for replica in &shard.replicas {
                write!(f, " + {}", describe(replica))?;
            }
        }
        Ok(())
    }
}

fn describe(node: &NewNode) -> String {
    match &node.host_label {
        Some(host) => format!("{} on {host}", node.addr),
        None => node.addr.to_string(),
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Plans shards for `nodes` with `replicas_per_master` replicas each.
///
/// See the module documentation for the rules. The result lists masters in slot order, each
/// with an even, contiguous slot range (the split `redis-cli` makes).
///
/// # Errors
/// - [`ClusterError::InvalidTopology`]: no nodes, a node listed twice, fewer nodes than one
///   shard needs ("masters 0"), a node count that is not a multiple of `replicas + 1`, or more
///   than 16384 masters;
/// - [`ClusterError::Placement`]: some nodes have host labels and others not, fewer distinct
///   hosts than members per shard, or a host with more nodes than there are shards.
pub fn plan_layout(nodes: &[NewNode], replicas_per_master: usize) -> Result<Layout, ClusterError> {
    let masters = master_count(nodes, replicas_per_master)?;
    let labelled = nodes.iter().filter(|n| n.host_label.is_some()).count();
    let groups = if labelled == 0 {
        in_order(nodes, masters)
    } else if labelled < nodes.len() {
        let missing = nodes
            .iter()
            .find(|n| n.host_label.is_none())
            .map(|n| n.addr.to_string())
            .unwrap_or_default();
        return Err(ClusterError::Placement(format!(
            "either every node carries a host label or none does; {missing} has none"
        )));
    } else {
        spread_over_hosts(nodes, masters, replicas_per_master)?
    };
    let slots = even_split(masters)?;
    let shards: Vec<ShardPlan> = groups
        .into_iter()
        .zip(slots)
        .map(|((master, replicas), range)| ShardPlan {
            master,
            replicas,
            slots: vec![range],
        })
        .collect();
    debug_assert_eq!(
        shards.iter().map(|s| count_slots(&s.slots)).sum::<usize>(),
        SLOT_COUNT
    );
    let warnings = resilience_warnings(&shards, nodes.len(), replicas_per_master);
    Ok(Layout { shards, warnings })
}

/// Number of masters, after checking the node list and the shard shape.
fn master_count(nodes: &[NewNode], replicas: usize) -> Result<usize, ClusterError> {
    let invalid = |msg: String| Err(ClusterError::InvalidTopology(msg));
    if nodes.is_empty() {
        return invalid("masters 0: no nodes were given".into());
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = nodes.iter().find(|n| !seen.insert(&n.addr)) {
        return invalid(format!("{} is listed twice", dup.addr));
    }
    let per_shard = replicas.saturating_add(1);
    let masters = nodes.len() / per_shard;
    let n = nodes.len();
    if masters == 0 {
        return invalid(format!(
            "masters 0: {n} node{} cannot form one shard of 1 master + {replicas} replica{}; \
             need at least {per_shard} nodes",
            plural(n),
            plural(replicas)
        ));
    }
    let left = n % per_shard;
    if left != 0 {
        return invalid(format!(
            "{n} nodes do not divide into shards of 1 master + {replicas} replica{}: {left} \
             node{} would be left over; give a multiple of {per_shard} nodes ({} or {})",
            plural(replicas),
            plural(left),
            masters * per_shard,
            (masters + 1) * per_shard
        ));
    }
    if masters > SLOT_COUNT {
        return invalid(format!(
            "{masters} masters: a cluster has only {SLOT_COUNT} slots"
        ));
    }
    Ok(masters)
}

type Group = (NewNode, Vec<NewNode>);

/// First `masters` nodes are masters; replicas follow in order, `r` per master.
fn in_order(nodes: &[NewNode], masters: usize) -> Vec<Group> {
    let (heads, rest) = nodes.split_at(masters);
    let per = rest.len() / masters;
    heads
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), rest[i * per..(i + 1) * per].to_vec()))
        .collect()
}

/// Shards whose members all sit on distinct hosts, masters spread as evenly as possible.
fn spread_over_hosts(
    nodes: &[NewNode],
    masters: usize,
    replicas: usize,
) -> Result<Vec<Group>, ClusterError> {
    let mut by_host: BTreeMap<&str, Vec<&NewNode>> = BTreeMap::new();
    for node in nodes {
        let label = node.host_label.as_deref().unwrap_or_default();
        by_host.entry(label).or_default().push(node);
    }
    let per_shard = replicas + 1;
    if by_host.len() < per_shard {
        return Err(ClusterError::Placement(format!(
            "{replicas} replica{} per master need at least {per_shard} distinct hosts, got {} \
             ({}): a master and its replicas must never share a host",
            plural(replicas),
            by_host.len(),
            by_host.keys().copied().collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some((host, list)) = by_host.iter().find(|(_, l)| l.len() > masters) {
        return Err(ClusterError::Placement(format!(
            "host {host} has {} nodes but there are only {masters} shard{}: a shard may use each \
             host once, so a host can hold at most {masters} node{} (move {} elsewhere)",
            list.len(),
            plural(masters),
            plural(masters),
            list.len() - masters
        )));
    }
    // Deal nodes round-robin into shards, hosts with most nodes first: a host's nodes are
    // consecutive in the deal and at most `masters` many, so they land in distinct shards.
    let mut hosts: Vec<(&str, Vec<&NewNode>)> = by_host.into_iter().collect();
    hosts.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut members: Vec<Vec<(usize, &NewNode)>> = vec![Vec::new(); masters];
    for (i, (host, node)) in hosts
        .iter()
        .enumerate()
        .flat_map(|(h, (_, list))| list.iter().map(move |n| (h, *n)))
        .enumerate()
    {
        members[i % masters].push((host, node));
    }
    let shard_hosts: Vec<Vec<usize>> = members
        .iter()
        .map(|m| m.iter().map(|(h, _)| *h).collect())
        .collect();
    // Smallest cap c with sum(min(count, c)) >= masters is a lower bound; the matching
    // confirms it (or the next cap) is reachable with this deal.
    let lower = (1..=masters)
        .find(|&cap| hosts.iter().map(|(_, l)| l.len().min(cap)).sum::<usize>() >= masters)
        .unwrap_or(masters);
    let choice = (lower..=masters)
        .find_map(|cap| match_masters(&shard_hosts, hosts.len(), cap))
        .ok_or_else(|| {
            ClusterError::Placement("no master assignment exists (internal error)".into())
        })?;
    Ok(members
        .into_iter()
        .zip(choice)
        .map(|(group, master_host)| {
            let mut master = None;
            let mut rest = Vec::with_capacity(replicas);
            for (h, node) in group {
                if h == master_host && master.is_none() {
                    master = Some(node.clone());
                } else {
                    rest.push(node.clone());
                }
            }
            // `master_host` is one of the group's hosts by construction of the matching.
            let master = master.unwrap_or_else(|| rest.remove(0));
            (master, rest)
        })
        .collect())
}

/// Picks one host per shard among its members' hosts, at most `cap` shards per host.
fn match_masters(shard_hosts: &[Vec<usize>], hosts: usize, cap: usize) -> Option<Vec<usize>> {
    let mut load: Vec<Vec<usize>> = vec![Vec::new(); hosts];
    let mut choice = vec![usize::MAX; shard_hosts.len()];
    for shard in 0..shard_hosts.len() {
        let mut visited = vec![false; hosts];
        if !augment(
            shard,
            shard_hosts,
            cap,
            &mut load,
            &mut choice,
            &mut visited,
        ) {
            return None;
        }
    }
    Some(choice)
}

/// Kuhn's augmenting path, with host capacities.
fn augment(
    shard: usize,
    shard_hosts: &[Vec<usize>],
    cap: usize,
    load: &mut [Vec<usize>],
    choice: &mut [usize],
    visited: &mut [bool],
) -> bool {
    for &host in &shard_hosts[shard] {
        if visited[host] {
            continue;
        }
        visited[host] = true;
        if load[host].len() < cap {
            load[host].push(shard);
            choice[shard] = host;
            return true;
        }
        for slot in 0..load[host].len() {
            let other = load[host][slot];
            if augment(other, shard_hosts, cap, load, choice, visited) {
                load[host][slot] = shard;
                choice[shard] = host;
                return true;
            }
        }
    }
    false
}

fn resilience_warnings(shards: &[ShardPlan], nodes: usize, replicas: usize) -> Vec<String> {
    let masters = shards.len();
    let mut warnings = Vec::new();
    if replicas > 0 && masters < 3 {
        warnings.push(format!(
            "with {masters} master{}, losing one leaves no majority of masters to elect its \
             replica: automatic failover needs at least 3 masters",
            plural(masters)
        ));
    }
    let mut masters_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut nodes_on: BTreeMap<&str, usize> = BTreeMap::new();
    for shard in shards {
        if let Some(h) = shard.master.host_label.as_deref() {
            *masters_on.entry(h).or_default() += 1;
            *nodes_on.entry(h).or_default() += 1;
        }
        for r in shard
            .replicas
            .iter()
            .filter_map(|r| r.host_label.as_deref())
        {
            *nodes_on.entry(r).or_default() += 1;
        }
    }
    if masters >= 3 {
        for (host, &count) in &masters_on {
            if 2 * count >= masters {
                warnings.push(format!(
                    "host {host} holds {count} of {masters} masters: losing it leaves no \
                     majority to fail them over; add hosts"
                ));
            }
        }
    }
    // Any node may become a master after failovers, so a host with many nodes may end up with
    // half the masters even if it holds few today (seed 003's "at most a quarter of the nodes").
    if replicas > 0 && masters >= 3 {
        for (host, &count) in &nodes_on {
            let could = count.min(masters);
            if 2 * could >= masters && masters_on.get(host).is_none_or(|&m| 2 * m < masters) {
                warnings.push(format!(
                    "host {host} holds {count} of {nodes} nodes: after failovers it could hold \
                     {could} of {masters} masters, and losing it would leave no majority to fail \
                     them over"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(port: u16, host: Option<&str>) -> NewNode {
        NewNode {
            addr: NodeAddr::new("10.0.0.1", port),
            host_label: host.map(str::to_owned),
        }
    }

    fn unlabelled(n: usize) -> Vec<NewNode> {
        (0..n)
            .map(|i| node(7000 + u16::try_from(i).unwrap(), None))
            .collect()
    }

    fn labelled(hosts: &[&str]) -> Vec<NewNode> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| node(7000 + u16::try_from(i).unwrap(), Some(h)))
            .collect()
    }

    #[test]
    fn without_labels_shards_form_in_input_order() {
        let layout = plan_layout(&unlabelled(6), 1).unwrap();
        let ports: Vec<(u16, Vec<u16>)> = layout
            .shards
            .iter()
            .map(|s| {
                (
                    s.master.addr.port,
                    s.replicas.iter().map(|r| r.addr.port).collect(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [(7000, vec![7003]), (7001, vec![7004]), (7002, vec![7005])]
        );
        assert_eq!(layout.shards[1].slots, [SlotRange::new(5461, 10922)]);
        assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
        assert_eq!(
            layout.to_string(),
            "3 masters with 1 replica each: 10.0.0.1:7000 [0-5460] + 10.0.0.1:7003; \
             10.0.0.1:7001 [5461-10922] + 10.0.0.1:7004; 10.0.0.1:7002 [10923-16383] + 10.0.0.1:7005"
        );
    }

    #[test]
    fn bad_shapes_are_explained() {
        let cases: [(Vec<NewNode>, usize, &str); 5] = [
            (Vec::new(), 0, "masters 0: no nodes"),
            (
                unlabelled(2),
                2,
                "masters 0: 2 nodes cannot form one shard of 1 master + 2 replicas; need at least 3",
            ),
            (
                unlabelled(7),
                1,
                "1 node would be left over; give a multiple of 2 nodes (6 or 8)",
            ),
            (
                vec![node(7000, None), node(7000, None)],
                1,
                "10.0.0.1:7000 is listed twice",
            ),
            (
                vec![node(7000, Some("a")), node(7001, None)],
                1,
                "10.0.0.1:7001 has none",
            ),
        ];
        for (nodes, replicas, expected) in cases {
            let err = plan_layout(&nodes, replicas).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn impossible_placements_say_why() {
        let err = plan_layout(&labelled(&["a", "b", "a", "b", "a", "b", "a", "b"]), 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 replicas per master need at least 4 distinct hosts, got 2 (a, b)"),
            "{err}"
        );
        let err = plan_layout(&labelled(&["a", "a", "a", "a", "b", "c"]), 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host a has 4 nodes but there are only 3 shards"),
            "{err}"
        );
    }

    #[test]
    fn masters_spread_evenly_and_never_share_a_host_with_their_replicas() {
        let layout = plan_layout(&labelled(&["a", "a", "b", "b", "c", "c"]), 1).unwrap();
        assert_eq!(layout.max_masters_per_host(), 1);
        for shard in &layout.shards {
            assert_ne!(shard.master.host_label, shard.replicas[0].host_label);
        }
        assert!(
            layout.to_string().contains("10.0.0.1:7000 on a"),
            "{layout}"
        );
        // Two nodes per host: both could end up masters after failovers.
        assert!(
            layout.warnings[0].starts_with(
                "host a holds 2 of 6 nodes: after failovers it could hold 2 of 3 masters"
            ),
            "{:?}",
            layout.warnings
        );
        let safe = plan_layout(&labelled(&["a", "b", "c", "d", "e", "f"]), 1).unwrap();
        assert!(safe.warnings.is_empty(), "{:?}", safe.warnings);
        assert!(
            layout.to_string().contains("10.0.0.1:7000 on a"),
            "{layout}"
        );
    }

    #[test]
    fn too_few_hosts_for_a_majority_is_a_warning_not_an_error() {
        let layout = plan_layout(&labelled(&["a", "a", "a", "b", "b", "b"]), 1).unwrap();
        assert_eq!(layout.max_masters_per_host(), 2);
        assert!(
            layout
                .warnings
                .iter()
                .any(|w| w.contains("holds 2 of 3 masters")),
            "{:?}",
            layout.warnings
        );
        let small = plan_layout(&unlabelled(2), 1).unwrap();
        assert!(
            small.warnings[0].contains("at least 3 masters"),
            "{:?}",
            small.warnings
        );
    }

    /// Smallest possible "most masters on one host" over every valid arrangement, or `None`
    /// when no arrangement keeps each shard on distinct hosts. Exhaustive; small inputs only.
    fn oracle(hosts: &[usize], replicas: usize) -> Option<usize> {
        let per_shard = replicas + 1;
        let masters = hosts.len() / per_shard;
        let host_count = hosts.iter().max().map_or(0, |h| h + 1);
        let mut best = None;
        let mut shard_hosts: Vec<Vec<usize>> = vec![Vec::new(); masters];
        let mut master_of: Vec<Option<usize>> = vec![None; masters];
        fn go(
            i: usize,
            hosts: &[usize],
            per_shard: usize,
            host_count: usize,
            shard_hosts: &mut Vec<Vec<usize>>,
            master_of: &mut Vec<Option<usize>>,
            best: &mut Option<usize>,
        ) {
            if i == hosts.len() {
                let mut load = vec![0; host_count];
                for m in master_of.iter().flatten() {
                    load[*m] += 1;
                }
                let worst = load.into_iter().max().unwrap_or(0);
                *best = Some(best.map_or(worst, |b| b.min(worst)));
                return;
            }
            let used = shard_hosts.iter().take_while(|s| !s.is_empty()).count();
            for g in 0..shard_hosts.len().min(used + 1) {
                if shard_hosts[g].len() == per_shard || shard_hosts[g].contains(&hosts[i]) {
                    continue;
                }
                shard_hosts[g].push(hosts[i]);
                for as_master in [false, true] {
                    if as_master && master_of[g].is_some() {
                        continue;
                    }
                    if !as_master && master_of[g].is_none() && shard_hosts[g].len() == per_shard {
                        continue;
                    }
                    if as_master {
                        master_of[g] = Some(hosts[i]);
                    }
                    go(
                        i + 1,
                        hosts,
                        per_shard,
                        host_count,
                        shard_hosts,
                        master_of,
                        best,
                    );
                    if as_master {
                        master_of[g] = None;
                    }
                }
                shard_hosts[g].pop();
            }
        }
        go(
            0,
            hosts,
            per_shard,
            host_count,
            &mut shard_hosts,
            &mut master_of,
            &mut best,
        );
        best
    }

    fn check_invariants(nodes: &[NewNode], replicas: usize, layout: &Layout) {
        assert_eq!(layout.masters() * (replicas + 1), nodes.len());
        let mut seen: Vec<&NodeAddr> = layout.nodes().iter().map(|n| &n.addr).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), nodes.len(), "every node used exactly once");
        let mut covered = crate::slots::SlotSet::new();
        for shard in &layout.shards {
            assert_eq!(shard.replicas.len(), replicas);
            let mut hosts: Vec<&Option<String>> = std::iter::once(&shard.master.host_label)
                .chain(shard.replicas.iter().map(|r| &r.host_label))
                .collect();
            if hosts[0].is_some() {
                hosts.sort();
                hosts.dedup();
                assert_eq!(
                    hosts.len(),
                    replicas + 1,
                    "a shard shares a host: {shard:?}"
                );
            }
            for r in &shard.slots {
                covered.insert_range(*r);
            }
        }
        assert_eq!(covered.len(), SLOT_COUNT);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn plan_succeeds_exactly_when_possible_and_is_optimal(
            (replicas, shards) in (0usize..=3).prop_flat_map(|r| (Just(r), 1..=8 / (r + 1))),
            host_of in proptest::collection::vec(0usize..5, 8),
        ) {
            let n = shards * (replicas + 1);
            // Renumber hosts densely so the oracle's host indexes match the labels.
            let mut ids: Vec<usize> = host_of[..n].to_vec();
            let mut dense: Vec<usize> = ids.clone();
            dense.sort_unstable();
            dense.dedup();
            for h in &mut ids {
                *h = dense.iter().position(|d| d == h).unwrap();
            }
            let labels: Vec<String> = ids.iter().map(|h| format!("h{h}")).collect();
            let nodes: Vec<NewNode> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| node(7000 + u16::try_from(i).unwrap(), Some(l)))
                .collect();
            let best = oracle(&ids, replicas);
            match plan_layout(&nodes, replicas) {
                Ok(layout) => {
                    check_invariants(&nodes, replicas, &layout);
                    prop_assert_eq!(Some(layout.max_masters_per_host()), best, "{}", layout);
                }
                Err(e) => {
                    prop_assert!(best.is_none(), "refused a possible placement: {e}");
                    prop_assert!(matches!(e, ClusterError::Placement(_)), "{e}");
                }
            }
        }

        #[test]
        fn unlabelled_plans_always_succeed_for_whole_shards(
            replicas in 0usize..=4,
            shards in 1usize..=20,
        ) {
            let nodes = unlabelled(shards * (replicas + 1));
            let layout = plan_layout(&nodes, replicas).unwrap();
            check_invariants(&nodes, replicas, &layout);
        }
    }
}
