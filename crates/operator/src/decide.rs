//! What a reconcile should do with Redis, from the spec, the pods and one observation: wait for
//! pods, form the cluster, continue or start a planner operation, or nothing.
//!
//! Pure, so the ordering rules are tested without an API server. Every change to Redis itself is
//! a planner [`Operation`]; this module only picks which one.
//!
//! Order of concerns (the first that applies wins):
//! 1. the Redis of a live pod does not answer (LOADING, not listening yet, restarting): look
//!    again shortly, even in the middle of an operation (its next step would be refused for a
//!    "down" node), since the kubelet restarts containers on its own;
//! 2. an operation already journaled in the status is continued (an operator restart resumes it);
//! 3. pods the spec asks for that are missing or not ready: wait (Kubernetes is still creating
//!    them, and meeting a pod that is about to be replaced would only add a ghost);
//! 4. every pod stands alone: form the cluster, pod 0 of each StatefulSet as its shard's master;
//! 5. the shape differs from the spec (shards, replicas per shard): scale;
//! 6. pods made from an older StatefulSet revision (image, resources, config changed): rolling
//!    restart of exactly those pods, replicas first, masters after a verified failover;
//! 7. anything unhealthy (ghosts, open or uncovered slots, strangers): heal;
//! 8. a node that reports `cluster_state:fail`, or a replica whose link to its master is down,
//!    while nothing else is wrong: look again shortly. This is what a restarted node shows for
//!    a few seconds while it meets the cluster again; the status reports it as not ready, so
//!    deciding nothing (and looking again only 30 s later) would leave a whole cluster marked
//!    unready long after it healed itself;
//! 9. otherwise nothing.

use std::collections::{BTreeMap, BTreeSet};

use cinnabar_cluster::{JournalEntry, Observed, Operation, PlatformNode, SLOT_COUNT};

use crate::crd::RedisClusterSpec;
use crate::pods::RedisPod;

/// The reconcile's business with Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pods are not all there and ready yet.
    WaitForPods {
        /// What is missing, for the `Progressing` condition's message.
        reason: String,
    },
    /// Form a new cluster from these pods (in shard, then ordinal order).
    Create {
        /// The nodes.
        nodes: Vec<PlatformNode>,
    },
    /// Take the next step of this operation.
    Operate(Operation),
    /// Nothing to change, but some node does not report itself healthy yet: look again soon.
    Settle {
        /// Which nodes, and what they report, for the `Progressing` condition's message.
        reason: String,
    },
    /// Nothing to do.
    Idle,
}

/// The pods in the order cluster creation wants them: every StatefulSet's pod 0 first (they
/// become the masters, in shard order), then every pod 1, … (creation gives replica `k` to
/// master `k mod shards`, so each replica follows the master of its own StatefulSet).
fn creation_order(pods: &[RedisPod]) -> Vec<PlatformNode> {
    let mut sorted: Vec<&RedisPod> = pods.iter().filter(|p| !p.terminating).collect();
    sorted.sort_by_key(|p| (p.ordinal, p.shard, p.name.clone()));
    sorted.into_iter().filter_map(|p| p.node.clone()).collect()
}

/// Decides the next thing to do (see the module docs for the order).
///
/// `update_revisions` maps a shard index to its StatefulSet's `status.updateRevision`.
pub fn decide(
    spec: &RedisClusterSpec,
    pods: &[RedisPod],
    observed: &Observed,
    journal: Option<&JournalEntry>,
    update_revisions: &BTreeMap<u32, String>,
) -> Decision {
    // A live pod whose Redis does not answer: loading its dataset (a restarted pod, a replica
    // loading a full resync: LOADING), or not listening yet, or restarting after a crash. The
    // kubelet's readiness probe notices only after a few periods, and the kubelet restarts a
    // dead container on its own: there is nothing to do but look again. Any step planned now,
    // even of an operation under way, would be refused for a "down" node (a Degraded condition
    // telling a person to run a local command): the operation continues afterwards.
    let silent: Vec<String> = observed
        .unreachable()
        .into_iter()
        .map(|(addr, why)| {
            if why.contains("LOADING") {
                format!("{addr} is loading its dataset")
            } else {
                format!("{addr} does not answer yet ({why})")
            }
        })
        .collect();
    if !silent.is_empty() {
        return Decision::Settle {
            reason: silent.join("; "),
        };
    }
    if let Some(entry) = journal {
        return Decision::Operate(entry.operation.clone());
    }
    let shards = u32::from(spec.shards);
    let per_shard = 1 + u32::from(spec.replicas_per_shard);
    let wanted = |p: &RedisPod| {
        p.shard.is_some_and(|s| s < shards) && p.ordinal.is_some_and(|o| o < per_shard)
    };
    let present = pods.iter().filter(|p| wanted(p) && !p.terminating).count();
    let expected = usize::try_from(shards * per_shard).unwrap_or(usize::MAX);
    if present < expected {
        return Decision::WaitForPods {
            reason: format!("{present} of {expected} Redis pods exist"),
        };
    }
    let unready: Vec<&str> = pods
        .iter()
        .filter(|p| wanted(p) && (!p.ready || p.node.is_none()))
        .map(|p| p.name.as_str())
        .collect();
    if !unready.is_empty() {
        return Decision::WaitForPods {
            reason: format!("pods not ready: {}", unready.join(", ")),
        };
    }
    if observed.members().next().is_none() {
        return Decision::Create {
            nodes: creation_order(pods),
        };
    }
    let serving: Vec<_> = observed
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0)
        .collect();
    let replicas_ok = serving
        .iter()
        .all(|s| s.replicas.len() == usize::from(spec.replicas_per_shard));
    if serving.len() != usize::from(spec.shards) || !replicas_ok || !observed.loners().is_empty() {
        return Decision::Operate(Operation::Scale {
            masters: usize::from(spec.shards),
            replicas: usize::from(spec.replicas_per_shard),
        });
    }
    let outdated: BTreeSet<String> = pods
        .iter()
        .filter(|p| {
            let wanted_revision = p.shard.and_then(|s| update_revisions.get(&s));
            wanted_revision.is_some() && p.revision.as_ref() != wanted_revision
        })
        .filter_map(|p| p.node.as_ref().and_then(|n| observed.id_of(&n.addr)))
        .collect();
    if !outdated.is_empty() {
        return Decision::Operate(Operation::RollingRestart { pending: outdated });
    }
    let unhealthy = !observed.unreachable().is_empty()
        || !observed.ghosts().is_empty()
        || !observed.open_slots().is_empty()
        || !observed.unacquainted().is_empty()
        || !observed.stale_addresses().is_empty()
        || observed.covered_slots().len() < SLOT_COUNT;
    if unhealthy {
        return Decision::Operate(Operation::Heal {
            replicas: Some(usize::from(spec.replicas_per_shard)),
            started: BTreeSet::new(),
        });
    }
    let settling: Vec<String> = observed
        .members()
        .filter_map(|(node, facts)| {
            let addr = node.addr();
            match (facts.cluster_ok, facts.link_up) {
                (false, _) => Some(format!("{addr} reports cluster_state:fail")),
                (true, false) => Some(format!("{addr} has no link to its master")),
                (true, true) => None,
            }
        })
        .collect();
    if !settling.is_empty() {
        return Decision::Settle {
            reason: settling.join("; "),
        };
    }
    Decision::Idle
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::{
        ClusterNode, LinkState, NodeAddr, NodeFacts, NodeFlags, ObservedNode, Role, SlotRange,
    };

    /// Pods `c-shard-I-J` for `shards` × `per_shard`, ready, revision `rev-1`.
    fn pods(shards: u32, per_shard: u32) -> Vec<RedisPod> {
        let mut out = Vec::new();
        for s in 0..shards {
            for o in 0..per_shard {
                out.push(RedisPod {
                    name: format!("c-shard-{s}-{o}"),
                    uid: format!("u{s}{o}"),
                    node: Some(PlatformNode {
                        addr: NodeAddr::new(format!("10.0.{s}.{o}"), 6379),
                        host: Some(format!("worker-{o}")),
                        zone: None,
                        group: Some(s.to_string()),
                        retiring: false,
                    }),
                    shard: Some(s),
                    ordinal: Some(o),
                    ready: true,
                    terminating: false,
                    revision: Some("rev-1".into()),
                });
            }
        }
        out
    }

    fn id(pod: &RedisPod) -> String {
        format!("{:0>40}", pod.uid)
    }

    /// An observation of `pods`: loners, or a formed cluster with shard `s`'s pod 0 as master of
    /// an even slot split and the others its replicas.
    fn observed(pods: &[RedisPod], formed: bool) -> Observed {
        let shards = pods.iter().filter(|p| p.ordinal == Some(0)).count();
        let ranges = cinnabar_cluster::slots::even_split(shards).unwrap_or_default();
        let entry = |p: &RedisPod| -> (ClusterNode, NodeFacts) {
            let s = p.shard.unwrap_or(0) as usize;
            let master = p.ordinal == Some(0);
            let master_id = pods
                .iter()
                .find(|m| m.shard == p.shard && m.ordinal == Some(0))
                .map(id);
            let slots: Vec<SlotRange> = if master && formed {
                vec![ranges[s]]
            } else {
                vec![]
            };
            let role = if master || !formed {
                Role::Master
            } else {
                Role::Replica
            };
            let follows = (!master && formed).then(|| master_id.unwrap_or_default());
            let node = ClusterNode {
                id: id(p),
                addr: p.node.as_ref().map(|n| n.addr.clone()),
                bus_port: Some(16379),
                hostname: None,
                flags: NodeFlags {
                    master: role == Role::Master,
                    replica: role == Role::Replica,
                    ..NodeFlags::default()
                },
                master_id: follows.clone(),
                ping_sent_ms: 0,
                pong_recv_ms: 0,
                config_epoch: 1,
                link: LinkState::Connected,
                slots: slots.clone(),
                migrations: vec![],
            };
            let facts = NodeFacts {
                id: id(p),
                role,
                master_id: follows,
                slots,
                migrations: vec![],
                link_up: true,
                offset: 100,
                keys: 0,
                used_memory: 0,
                maxmemory: 0,
                cluster_ok: formed,
                peers: vec![],
            };
            (node, facts)
        };
        let entries: Vec<(ClusterNode, NodeFacts)> = pods.iter().map(entry).collect();
        Observed {
            nodes: pods
                .iter()
                .zip(&entries)
                .map(|(p, (_, facts))| {
                    let mut facts = facts.clone();
                    if formed {
                        facts.peers = entries
                            .iter()
                            .filter(|(n, _)| n.id != facts.id)
                            .map(|(n, _)| n.clone())
                            .collect();
                    }
                    ObservedNode {
                        node: p
                            .node
                            .clone()
                            .unwrap_or_else(|| PlatformNode::new(NodeAddr::new("", 0))),
                        facts: Ok(facts),
                    }
                })
                .collect(),
        }
    }

    fn spec(shards: u16, replicas: u16) -> RedisClusterSpec {
        serde_json::from_value(serde_json::json!({"shards": shards, "replicasPerShard": replicas}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn revisions(shards: u32, rev: &str) -> BTreeMap<u32, String> {
        (0..shards).map(|s| (s, rev.to_owned())).collect()
    }

    #[test]
    fn fresh_pods_form_the_cluster_with_pod_zero_of_every_shard_first() {
        let pods = pods(3, 2);
        let decision = decide(
            &spec(3, 1),
            &pods,
            &observed(&pods, false),
            None,
            &revisions(3, "rev-1"),
        );
        let Decision::Create { nodes } = decision else {
            panic!("{decision:?}")
        };
        let order: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        assert_eq!(
            order,
            [
                "10.0.0.0:6379",
                "10.0.1.0:6379",
                "10.0.2.0:6379",
                "10.0.0.1:6379",
                "10.0.1.1:6379",
                "10.0.2.1:6379"
            ]
        );
        assert_eq!(nodes.len(), 6);
    }

    #[test]
    fn missing_or_unready_pods_are_waited_for() {
        let mut pods = pods(3, 2);
        pods.pop();
        let d = decide(
            &spec(3, 1),
            &pods,
            &observed(&pods, false),
            None,
            &BTreeMap::new(),
        );
        assert_eq!(
            d,
            Decision::WaitForPods {
                reason: "5 of 6 Redis pods exist".into()
            }
        );
        let mut pods = self::pods(3, 2);
        pods[1].ready = false;
        let d = decide(
            &spec(3, 1),
            &pods,
            &observed(&pods, false),
            None,
            &BTreeMap::new(),
        );
        assert!(matches!(d, Decision::WaitForPods { reason } if reason.contains("c-shard-0-1")));
    }

    #[test]
    fn a_healthy_cluster_matching_the_spec_is_left_alone() {
        let pods = pods(3, 2);
        let d = decide(
            &spec(3, 1),
            &pods,
            &observed(&pods, true),
            None,
            &revisions(3, "rev-1"),
        );
        assert_eq!(d, Decision::Idle);
    }

    #[test]
    fn a_node_loading_its_dataset_is_waited_for_not_operated_around() {
        let pods = pods(3, 2);
        let mut seen = observed(&pods, true);
        // A restarted replica still loading: the shard looks one replica short.
        seen.nodes[1].facts = Err(
            "10.0.0.1:6379 refused `CLUSTER NODES`: LOADING Redis is loading the dataset in memory"
                .into(),
        );
        let d = decide(&spec(3, 1), &pods, &seen, None, &revisions(3, "rev-1"));
        assert_eq!(
            d,
            Decision::Settle {
                reason: "10.0.0.1:6379 is loading its dataset".into()
            }
        );
    }

    #[test]
    fn a_node_that_refuses_connections_is_waited_for_even_within_an_operation() {
        let pods = pods(3, 2);
        let mut seen = observed(&pods, true);
        seen.nodes[2].facts =
            Err("cannot reach 10.0.1.0:6379: Connection refused (os error 111)".into());
        let journal = JournalEntry {
            operation: Operation::Scale {
                masters: 3,
                replicas: 1,
            },
            step: None,
            steps_done: 2,
            started_ms: 0,
        };
        let d = decide(
            &spec(3, 1),
            &pods,
            &seen,
            Some(&journal),
            &revisions(3, "rev-1"),
        );
        assert_eq!(
            d,
            Decision::Settle {
                reason: "10.0.1.0:6379 does not answer yet (cannot reach 10.0.1.0:6379: \
                         Connection refused (os error 111))"
                    .into()
            }
        );
    }

    #[test]
    fn a_node_that_does_not_report_itself_healthy_yet_is_looked_at_again_not_left_idle() {
        let pods = pods(3, 2);
        let mut seen = observed(&pods, true);
        // A restarted replica: it reports cluster_state:fail and its link is not up yet.
        if let Ok(facts) = seen.nodes[1].facts.as_mut() {
            facts.cluster_ok = false;
            facts.link_up = false;
        }
        if let Ok(facts) = seen.nodes[3].facts.as_mut() {
            facts.link_up = false;
        }
        let d = decide(&spec(3, 1), &pods, &seen, None, &revisions(3, "rev-1"));
        assert_eq!(
            d,
            Decision::Settle {
                reason: "10.0.0.1:6379 reports cluster_state:fail; \
                         10.0.1.1:6379 has no link to its master"
                    .into()
            }
        );
    }

    #[test]
    fn more_shards_in_the_spec_scale_once_the_new_pods_are_ready() {
        let old = pods(3, 2);
        let mut all = pods(4, 2);
        let mut seen = observed(&old, true);
        let fresh = observed(&all[6..], false);
        seen.nodes.extend(fresh.nodes);
        let d = decide(&spec(4, 1), &all, &seen, None, &revisions(4, "rev-1"));
        assert_eq!(
            d,
            Decision::Operate(Operation::Scale {
                masters: 4,
                replicas: 1
            })
        );
        all[7].ready = false;
        let d = decide(&spec(4, 1), &all, &seen, None, &revisions(4, "rev-1"));
        assert!(matches!(d, Decision::WaitForPods { .. }), "{d:?}");
    }

    #[test]
    fn pods_of_an_old_revision_get_a_rolling_restart_of_exactly_those() {
        let mut pods = pods(2, 2);
        pods[2].revision = Some("rev-1".into());
        let seen = observed(&pods, true);
        let mut wanted = revisions(2, "rev-1");
        wanted.insert(1, "rev-2".into());
        let d = decide(&spec(2, 1), &pods, &seen, None, &wanted);
        let expected: BTreeSet<String> = [id(&pods[2]), id(&pods[3])].into();
        assert_eq!(
            d,
            Decision::Operate(Operation::RollingRestart { pending: expected })
        );
    }

    #[test]
    fn a_journaled_operation_is_continued_first() {
        let pods = pods(2, 2);
        let entry = JournalEntry {
            operation: Operation::Rebalance,
            step: None,
            steps_done: 3,
            started_ms: 0,
        };
        let d = decide(
            &spec(5, 1),
            &pods,
            &observed(&pods, true),
            Some(&entry),
            &BTreeMap::new(),
        );
        assert_eq!(d, Decision::Operate(Operation::Rebalance));
    }

    #[test]
    fn a_silent_node_of_a_ready_pod_is_waited_for_not_healed() {
        // The pod is Ready (its probe has not failed yet) but Redis does not answer: the
        // kubelet restarts it, heal could only find the same pod again.
        let pods = pods(2, 2);
        let mut seen = observed(&pods, true);
        seen.nodes[1].facts = Err("connection refused".into());
        let d = decide(&spec(2, 1), &pods, &seen, None, &revisions(2, "rev-1"));
        assert!(matches!(d, Decision::Settle { .. }), "{d:?}");
    }
}
