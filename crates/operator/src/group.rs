//! One reconcile of a `topology: Sentinel` resource, after its objects are applied: observe the
//! data pods and the Sentinels, pick what to do ([`decide_group`], pure), take at most one step
//! of the planner's group path (`cinnabar_cluster::group_plan`), and report per role.
//!
//! Never decides a change to Redis itself: forming the group (which pod is the first master,
//! `REPLICAOF`, `SENTINEL MONITOR`), healing (a pod astray, a replaced Sentinel, Sentinels
//! counting gone addresses), the rolling restart (replicas first, the master after a verified
//! `SENTINEL FAILOVER`) are the planner's steps; this module only executes them on pods.
//!
//! Order of concerns (the first that applies wins):
//! 1. a live data pod's Redis does not answer: look again shortly;
//! 2. an operation journaled in the status continues (an operator restart resumes it);
//! 3. pods missing, data pods not ready, Sentinel pods without an address: wait;
//! 4. no Sentinel monitors the group: form it, with the data node that says master and holds
//!    the most (the highest offset; pod 0 of a new group) as the first master;
//! 5. no confirmed master (the Sentinels fail over): look again shortly;
//! 6. data pods beyond `replicasPerShard` (it was lowered): remove them, highest ordinal
//!    first (a StatefulSet only sheds its last pod), the master failed over first;
//! 7. data pods from an older StatefulSet revision: rolling restart of exactly those;
//! 8. anything the planner's heal would change: heal;
//! 9. otherwise nothing.

use std::time::Duration;

use cinnabar_cluster::group_plan::{
    GroupMember, GroupNext, GroupObservation, GroupOperation, GroupStep, SentinelMember,
    next_group_step,
};
use cinnabar_cluster::sentinel::{
    GroupAccess, MonitorSettings, SentinelView, follow, monitor, node_info, paused_failover,
    quorum_answer, reset, sentinel_view,
};
use cinnabar_cluster::{ClusterError, Credentials, NodeAddr, Platform, Timeouts};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Client};

use crate::crd::{
    GroupReplicaStatus, GroupSentinelStatus, GroupStatus, OperationStatus, RedisClusterSpec,
};
use crate::group_objects::{DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SENTINEL_PORT};
use crate::platform::KubePlatform;
use crate::pods::RedisPod;
use crate::status::StatusInput;

/// The longest a planned failover may hold the master's writes.
pub const FAILOVER_MAX_PAUSE: Duration = Duration::from_secs(10);

/// One Sentinel pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelPod {
    /// Pod name (`NAME-sentinel-I`).
    pub name: String,
    /// Its address (pod IP, port 26379), once it has one.
    pub addr: Option<NodeAddr>,
    /// Being deleted.
    pub terminating: bool,
}

/// Reads one Sentinel pod: its IP and the container port named `sentinel` (26379 when
/// unnamed).
pub fn sentinel_pod(pod: &Pod) -> SentinelPod {
    let port = crate::pods::named_port(pod, "sentinel").unwrap_or(SENTINEL_PORT);
    SentinelPod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        addr: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
            .map(|ip| NodeAddr::new(ip, port)),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// What a reconcile does with a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDecision {
    /// Pods are not all there yet.
    WaitForPods {
        /// What is missing.
        reason: String,
    },
    /// Nothing to change, but something is not settled: look again soon.
    Settle {
        /// What.
        reason: String,
    },
    /// Take the next step of this planner operation.
    Operate(GroupOperation),
    /// Nothing to do.
    Idle,
}

/// Decides the next thing to do (see the module docs for the order). `update_revision` is the
/// data StatefulSet's `status.updateRevision`.
pub fn decide_group(
    spec: &RedisClusterSpec,
    pods: &[RedisPod],
    sentinels: &[SentinelPod],
    observed: &GroupObservation,
    journal: Option<&GroupOperation>,
    update_revision: Option<&str>,
) -> GroupDecision {
    let silent: Vec<String> = observed
        .members
        .iter()
        .filter(|m| !m.reachable)
        .map(|m| format!("{} does not answer yet", m.addr))
        .collect();
    if !silent.is_empty() {
        return GroupDecision::Settle {
            reason: silent.join("; "),
        };
    }
    if let Some(operation) = journal {
        return GroupDecision::Operate(operation.clone());
    }
    let data = pods.iter().filter(|p| !p.terminating).count();
    let wanted = 1 + usize::from(spec.replicas_per_shard);
    if data < wanted {
        return GroupDecision::WaitForPods {
            reason: format!("{data} of {wanted} Redis pods exist"),
        };
    }
    let voters = sentinels.iter().filter(|s| !s.terminating).count();
    if voters < usize::from(spec.sentinels) {
        return GroupDecision::WaitForPods {
            reason: format!("{voters} of {} Sentinel pods exist", spec.sentinels),
        };
    }
    let unready: Vec<&str> = pods
        .iter()
        .filter(|p| !p.ready || p.node.is_none())
        .map(|p| p.name.as_str())
        .collect();
    if !unready.is_empty() {
        return GroupDecision::WaitForPods {
            reason: format!("pods not ready: {}", unready.join(", ")),
        };
    }
    let monitored = observed.sentinel_members.iter().any(|s| s.names.is_some());
    // A Sentinel is ready only once it monitors the group, which forming does: only its
    // address is waited for, and only to form (a voter that cannot be scheduled must not
    // keep the others from being healed).
    let pending = pending_sentinels(sentinels);
    if !monitored && observed.master.is_none() && !pending.is_empty() {
        return GroupDecision::WaitForPods {
            reason: format!("pods not ready: {}", pending.join(", ")),
        };
    }
    if !monitored && observed.master.is_none() {
        return match first_master(observed) {
            Some(master) => GroupDecision::Operate(GroupOperation::Form { master }),
            None => GroupDecision::Settle {
                reason: "no data node says it is a master, and no Sentinel names one".into(),
            },
        };
    }
    if observed.master.is_none() {
        return GroupDecision::Settle {
            reason: "no confirmed master: the Sentinels are failing over, or disagree".into(),
        };
    }
    let mut beyond: Vec<&RedisPod> = pods
        .iter()
        .filter(|p| {
            !p.terminating
                && p.ordinal
                    .is_some_and(|o| usize::try_from(o).is_ok_and(|o| o >= wanted))
        })
        .collect();
    if !beyond.is_empty() {
        beyond.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
        let nodes = beyond
            .iter()
            .filter_map(|p| p.node.as_ref().map(|n| n.addr.clone()))
            .collect();
        return GroupDecision::Operate(GroupOperation::Remove { nodes });
    }
    if let Some(revision) = update_revision {
        let outdated = pods
            .iter()
            .any(|p| p.revision.as_deref().is_some_and(|r| r != revision));
        if outdated {
            // Up-to-date pods count as restarted already: exactly the others restart.
            let restarted = pods
                .iter()
                .filter(|p| p.revision.as_deref() == Some(revision))
                .filter_map(|p| p.node.as_ref().map(|n| n.addr.clone()))
                .collect();
            return GroupDecision::Operate(GroupOperation::RollingRestart { restarted });
        }
    }
    match next_group_step(&GroupOperation::Heal, observed) {
        GroupNext::Step(_) => GroupDecision::Operate(GroupOperation::Heal),
        _ => GroupDecision::Idle,
    }
}

/// Sentinel pods without an address yet (pending, or being replaced).
pub fn pending_sentinels(sentinels: &[SentinelPod]) -> Vec<&str> {
    sentinels
        .iter()
        .filter(|s| !s.terminating && s.addr.is_none())
        .map(|s| s.name.as_str())
        .collect()
}

/// The node that starts as master when a group is formed: among those that say master, the
/// one with the highest offset (it holds the most), the first pod on a tie (pod 0 of a new
/// group, whose nodes are all empty masters).
fn first_master(observed: &GroupObservation) -> Option<NodeAddr> {
    let mut best: Option<&GroupMember> = None;
    for m in observed
        .members
        .iter()
        .filter(|m| m.reachable && m.says_master)
    {
        if best.is_none_or(|b| m.offset > b.offset) {
            best = Some(m);
        }
    }
    best.map(|m| m.addr.clone())
}

/// What the reconcile saw of the group: the planner's observation and, per Sentinel, its view
/// (or why there is none), for the status.
#[derive(Debug, Clone, Default)]
pub struct GroupSight {
    /// The planner's observation.
    pub observed: GroupObservation,
    /// Per Sentinel pod (in pod order): its view, or why not.
    pub views: Vec<(SentinelPod, Result<SentinelView, String>)>,
    /// Per replica address: seconds since its last acknowledgement, as the master sees it.
    pub lag_seconds: Vec<(NodeAddr, u64)>,
}

/// The group's status by role, and whether it is healthy: a confirmed master, every replica
/// following it with its link up, every Sentinel naming it with nothing flagged, and nothing
/// for the planner's heal to do but the reset of a Sentinel that counts gone addresses.
pub fn group_status(name: &str, pods: &[RedisPod], sight: &GroupSight) -> (bool, GroupStatus) {
    let observed = &sight.observed;
    let master = observed.master.as_ref();
    let pod_of = |addr: &NodeAddr| {
        pods.iter()
            .find(|p| p.node.as_ref().is_some_and(|n| &n.addr == addr))
            .map(|p| p.name.clone())
    };
    let master_offset = master
        .and_then(|m| observed.members.iter().find(|x| &x.addr == m))
        .map(|m| m.offset);
    let mut replicas = Vec::new();
    let mut sorted: Vec<&RedisPod> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.ordinal, p.name.clone()));
    for pod in sorted {
        let addr = pod.node.as_ref().map(|n| n.addr.clone());
        if addr.is_some() && addr.as_ref() == master {
            continue;
        }
        let member = addr
            .as_ref()
            .and_then(|a| observed.members.iter().find(|m| &m.addr == a));
        let role = match member {
            Some(m) if m.reachable && m.says_master => "master",
            Some(m) if m.reachable => "replica",
            _ => "unreachable",
        };
        replicas.push(GroupReplicaStatus {
            pod: pod.name.clone(),
            address: addr.as_ref().map(ToString::to_string),
            role: role.to_owned(),
            follows: member
                .and_then(|m| m.follows.as_ref())
                .map(ToString::to_string),
            link_up: member.is_some_and(|m| m.link_up),
            offset: member.filter(|m| m.reachable).map(|m| m.offset),
            lag_bytes: member
                .filter(|m| m.reachable && !m.says_master)
                .zip(master_offset)
                .map(|(m, o)| o.saturating_sub(m.offset)),
            lag_seconds: addr.as_ref().and_then(|a| {
                sight
                    .lag_seconds
                    .iter()
                    .find(|(r, _)| r == a)
                    .map(|(_, s)| *s)
            }),
        });
    }
    let sentinels: Vec<GroupSentinelStatus> = sight
        .views
        .iter()
        .map(|(pod, view)| match view {
            Ok(v) => GroupSentinelStatus {
                pod: pod.name.clone(),
                address: pod.addr.as_ref().map(ToString::to_string),
                up: true,
                master: Some(v.master.to_string()),
                flags: v.flags.clone(),
                epoch: v.epoch,
                known_replicas: u32::try_from(v.replicas).unwrap_or(u32::MAX),
                known_sentinels: u32::try_from(v.other_sentinels).unwrap_or(u32::MAX),
                error: None,
            },
            Err(e) => GroupSentinelStatus {
                pod: pod.name.clone(),
                address: pod.addr.as_ref().map(ToString::to_string),
                up: false,
                error: Some(e.clone()),
                ..GroupSentinelStatus::default()
            },
        })
        .collect();
    let naming = sentinels
        .iter()
        .filter(|s| s.master.is_some() && s.master == master.map(ToString::to_string))
        .count();
    let quorum_size = sentinels.len() / 2 + 1;
    let quorum = match master {
        Some(m) => format!(
            "{naming}/{} Sentinels name {m} (quorum {quorum_size})",
            sentinels.len()
        ),
        None => format!(
            "no confirmed master ({} of {} Sentinels answer)",
            observed.sentinels_answering,
            sentinels.len()
        ),
    };
    let healthy = master.is_some()
        && replicas.iter().all(|r| {
            r.role == "replica" && r.link_up && r.follows == master.map(ToString::to_string)
        })
        && sentinels.iter().all(|s| {
            s.up && s.master == master.map(ToString::to_string)
                && !s
                    .flags
                    .iter()
                    .any(|f| f.contains("down") || f.contains("failover"))
        })
        // A Sentinel still counting gone addresses is cleaned up in the background: it does
        // not stop the group from serving.
        && matches!(
            next_group_step(&GroupOperation::Heal, observed),
            GroupNext::Done | GroupNext::Step(GroupStep::ResetSentinel { .. })
        );
    (
        healthy,
        GroupStatus {
            name: name.to_owned(),
            master_pod: master.and_then(pod_of),
            master: master.map(ToString::to_string),
            master_offset,
            replicas,
            sentinels,
            quorum,
        },
    )
}

/// Asks every data pod and Sentinel pod.
pub async fn observe_group(
    name: &str,
    pods: &[RedisPod],
    sentinels: &[SentinelPod],
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> GroupSight {
    let mut members = Vec::new();
    let mut sorted: Vec<&RedisPod> = pods.iter().filter(|p| !p.terminating).collect();
    sorted.sort_by_key(|p| (p.ordinal, p.name.clone()));
    let mut infos = Vec::new();
    for addr in sorted
        .iter()
        .filter_map(|p| p.node.as_ref().map(|n| &n.addr))
    {
        let info = node_info(addr, timeouts, credentials).await.ok();
        members.push(match &info {
            Some(info) => GroupMember {
                addr: addr.clone(),
                reachable: true,
                says_master: info.is_master(),
                follows: info.master.clone(),
                link_up: info.link_up,
                offset: info.offset,
            },
            None => GroupMember {
                addr: addr.clone(),
                reachable: false,
                says_master: false,
                follows: None,
                link_up: false,
                offset: 0,
            },
        });
        infos.push((addr.clone(), info));
    }
    let mut views = Vec::new();
    let mut sentinel_members = Vec::new();
    let live: Vec<&SentinelPod> = sentinels.iter().filter(|s| !s.terminating).collect();
    for pod in &live {
        let Some(addr) = &pod.addr else {
            views.push(((*pod).clone(), Err("no address yet".to_owned())));
            continue;
        };
        let view = sentinel_view(addr, name, timeouts, credentials).await;
        let (reachable, names, replicas_known, sentinels_known) = match &view {
            Ok(v) => (true, Some(v.master.clone()), v.replicas, v.other_sentinels),
            // It answers but does not monitor the group (a new or replaced Sentinel).
            Err(ClusterError::Command { message, .. }) if message.contains("No such master") => {
                (true, None, 0, 0)
            }
            Err(_) => (false, None, 0, 0),
        };
        sentinel_members.push(SentinelMember {
            addr: addr.clone(),
            reachable,
            names,
            replicas_known,
            sentinels_known,
        });
        views.push(((*pod).clone(), view.map_err(|e| e.to_string())));
    }
    let addrs: Vec<NodeAddr> = sentinel_members.iter().map(|s| s.addr.clone()).collect();
    let answer = quorum_answer(&addrs, name, timeouts.response, credentials).await;
    let (master, answering) = match answer {
        Ok(a) => {
            let confirmed = !a.failing_over
                && members
                    .iter()
                    .any(|m| m.addr == a.master && m.reachable && m.says_master);
            (confirmed.then_some(a.master), a.answered)
        }
        Err(_) => (None, 0),
    };
    let lag_seconds = master
        .as_ref()
        .and_then(|m| infos.iter().find(|(a, _)| a == m))
        .and_then(|(_, info)| info.as_ref())
        .map(|info| {
            info.replicas
                .iter()
                .map(|r| (r.addr.clone(), r.lag))
                .collect()
        })
        .unwrap_or_default();
    GroupSight {
        observed: GroupObservation {
            master,
            members,
            sentinels_answering: answering,
            sentinels: live.len(),
            sentinel_members,
        },
        views,
        lag_seconds,
    }
}

/// The Sentinel pods of `cluster`.
///
/// # Errors
/// The API call failed.
pub async fn sentinel_pods(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<SentinelPod>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector =
        format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component=sentinel");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ClusterError::Platform(format!("listing the Sentinels of {cluster}: {e}")))?;
    let mut pods: Vec<SentinelPod> = list.items.iter().map(sentinel_pod).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

/// Everything [`run_step`] needs.
pub struct GroupContext<'a> {
    /// The group's name (the resource's).
    pub name: &'a str,
    /// `spec.sentinels`.
    pub sentinels: u16,
    /// The Sentinels' addresses now (a failover asks them directly).
    pub sentinel_addrs: Vec<NodeAddr>,
    /// The nodes' and Sentinels' password.
    pub credentials: Credentials,
    /// Per-node timeouts.
    pub timeouts: Timeouts,
    /// Events go here.
    pub recorder: &'a Recorder,
    /// About this object.
    pub reference: &'a k8s_openapi::api::core::v1::ObjectReference,
}

/// Takes at most one planner step of `operation` on the group as `sight` saw it; returns when
/// to look again and the operation to journal (`None` once done or dropped).
pub async fn run_step(
    ctx: &GroupContext<'_>,
    mut operation: GroupOperation,
    sight: &GroupSight,
    platform: &mut KubePlatform,
    input: &mut StatusInput<'_>,
) -> (Duration, Option<OperationStatus>) {
    if let GroupOperation::Failover { from: from @ None } = &mut operation {
        from.clone_from(&sight.observed.master);
    }
    // `input.operation` still holds the status of the operation this continues, if any.
    let done_before = input
        .operation
        .as_ref()
        .filter(|o| o.name == operation.to_string())
        .map_or(0, |o| o.steps_done);
    let status = |operation: &GroupOperation, step: String, done: u32| {
        Some(OperationStatus {
            name: operation.to_string(),
            step,
            steps_done: done,
            journal: serde_json::to_string(operation).unwrap_or_default(),
        })
    };
    let step = match next_group_step(&operation, &sight.observed) {
        GroupNext::Done => {
            publish(
                ctx,
                EventType::Normal,
                "OperationDone",
                operation.to_string(),
            )
            .await;
            return (Duration::from_secs(1), None);
        }
        GroupNext::Wait(why) => {
            input.progressing = Some(("Waiting".into(), format!("{operation}: {why}")));
            let journal = status(&operation, format!("waiting: {why}"), done_before);
            return (Duration::from_secs(2), journal);
        }
        GroupNext::Refused(why) => {
            let message = format!("{operation} refused: {why}");
            publish(ctx, EventType::Warning, "OperationRefused", message.clone()).await;
            // A heal or a form refused now may be possible once the group settles; a
            // person is needed when it stays so.
            input.degraded = Some(("OperationRefused".into(), message));
            return (Duration::from_secs(15), None);
        }
        GroupNext::Step(step) => step,
    };
    publish(
        ctx,
        EventType::Normal,
        "OperationStep",
        format!("{operation}: {step}"),
    )
    .await;
    // Resetting a Sentinel that counts gone addresses is upkeep, not a change clients notice:
    // the group stays Ready meanwhile.
    if !matches!(step, GroupStep::ResetSentinel { .. }) {
        input.progressing = Some(("Operating".into(), format!("{operation}: {step}")));
    }
    match execute(ctx, &step, platform).await {
        Ok(restarted_as) => {
            if let (GroupOperation::RollingRestart { restarted }, Some(addr)) =
                (&mut operation, restarted_as)
            {
                // A replaced pod has a new address: the planner knows it as restarted by that.
                restarted.push(addr);
            }
            (
                Duration::from_secs(1),
                status(&operation, step.to_string(), done_before + 1),
            )
        }
        Err(e) => {
            publish(
                ctx,
                EventType::Warning,
                "StepFailed",
                format!("{step}: {e}"),
            )
            .await;
            input.progressing = Some(("StepFailed".into(), format!("{step}: {e}")));
            (
                Duration::from_secs(5),
                status(
                    &operation,
                    format!("failed, will retry: {step}"),
                    done_before,
                ),
            )
        }
    }
}

/// Executes one step; a restart answers the pod's new address.
async fn execute(
    ctx: &GroupContext<'_>,
    step: &GroupStep,
    platform: &mut KubePlatform,
) -> Result<Option<NodeAddr>, String> {
    let credentials = Some(&ctx.credentials);
    let fail = |e: ClusterError| e.to_string();
    match step {
        GroupStep::Follow { node, master } => follow(node, master, ctx.timeouts, credentials)
            .await
            .map(|()| None)
            .map_err(fail),
        GroupStep::Monitor { sentinel, master } => {
            let settings = MonitorSettings {
                name: ctx.name.to_owned(),
                quorum: usize::from(ctx.sentinels) / 2 + 1,
                down_after_ms: DOWN_AFTER_MS,
                failover_timeout_ms: FAILOVER_TIMEOUT_MS,
                auth_pass: Some(ctx.credentials.password.clone()),
            };
            monitor(sentinel, master, &settings, ctx.timeouts, credentials)
                .await
                .map(|()| None)
                .map_err(fail)
        }
        GroupStep::ResetSentinel { sentinel } => {
            reset(sentinel, ctx.name, ctx.timeouts, credentials)
                .await
                .map(|()| None)
                .map_err(fail)
        }
        GroupStep::Failover { .. } => {
            let access = GroupAccess {
                name: ctx.name.to_owned(),
                sentinels: ctx.sentinel_addrs.clone(),
                sentinel_credentials: Some(ctx.credentials.clone()),
                credentials: Some(ctx.credentials.clone()),
            };
            paused_failover(&access, FAILOVER_MAX_PAUSE)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string())
        }
        GroupStep::Restart { node } => platform.restart(node).await.map(Some).map_err(fail),
        // The StatefulSet sheds the pod (its preStop finds a replica and stops at once).
        GroupStep::Remove { node } => platform.remove(node).await.map(|()| None).map_err(fail),
    }
}

async fn publish(ctx: &GroupContext<'_>, type_: EventType, reason: &str, note: String) {
    crate::reconcile::publish_operation_event(ctx.recorder, ctx.reference, type_, reason, note)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::PlatformNode;

    fn addr(i: u8) -> NodeAddr {
        NodeAddr::new(format!("10.0.0.{i}"), 6379)
    }

    fn pod(i: u8, revision: &str) -> RedisPod {
        RedisPod {
            name: format!("g-redis-{i}"),
            uid: format!("uid-{i}"),
            node: Some(PlatformNode {
                addr: addr(i),
                host: None,
                zone: None,
                group: Some("0".into()),
                retiring: false,
            }),
            shard: Some(0),
            ordinal: Some(u32::from(i)),
            ready: true,
            terminating: false,
            revision: Some(revision.into()),
        }
    }

    fn sentinels() -> Vec<SentinelPod> {
        (0..3)
            .map(|i| SentinelPod {
                name: format!("g-sentinel-{i}"),
                addr: Some(NodeAddr::new(format!("10.0.1.{i}"), SENTINEL_PORT)),
                terminating: false,
            })
            .collect()
    }

    fn spec() -> RedisClusterSpec {
        serde_json::from_value(
            serde_json::json!({"topology": "Sentinel", "shards": 1, "replicasPerShard": 2}),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn member(i: u8, master: Option<u8>) -> GroupMember {
        GroupMember {
            addr: addr(i),
            reachable: true,
            says_master: master.is_none(),
            follows: master.map(addr),
            link_up: master.is_some(),
            offset: 100,
        }
    }

    fn fresh() -> GroupObservation {
        GroupObservation {
            master: None,
            members: (0..3)
                .map(|i| GroupMember {
                    offset: 0,
                    ..member(i, None)
                })
                .collect(),
            sentinels_answering: 0,
            sentinels: 3,
            sentinel_members: sentinels()
                .into_iter()
                .filter_map(|s| s.addr)
                .map(|addr| SentinelMember {
                    addr,
                    reachable: true,
                    names: None,
                    replicas_known: 0,
                    sentinels_known: 0,
                })
                .collect(),
        }
    }

    fn formed() -> GroupObservation {
        let mut observed = fresh();
        observed.master = Some(addr(0));
        observed.members = vec![member(0, None), member(1, Some(0)), member(2, Some(0))];
        observed.sentinels_answering = 3;
        for s in &mut observed.sentinel_members {
            s.names = Some(addr(0));
            s.replicas_known = 2;
            s.sentinels_known = 2;
        }
        observed
    }

    #[test]
    fn a_new_group_is_formed_with_pod_0_as_its_first_master() {
        let pods: Vec<RedisPod> = (0..3).map(|i| pod(i, "r1")).collect();
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &fresh(), None, Some("r1")),
            GroupDecision::Operate(GroupOperation::Form { master: addr(0) })
        );
        // Sentinels lost while the data survived: the master that holds the most leads.
        let mut observed = fresh();
        observed.members[2].offset = 900;
        observed.members[1].says_master = false;
        observed.members[1].offset = 1000;
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &observed, None, Some("r1")),
            GroupDecision::Operate(GroupOperation::Form { master: addr(2) })
        );
    }

    #[test]
    fn pods_are_waited_for_before_anything_and_a_silent_node_settles() {
        let pods: Vec<RedisPod> = (0..2).map(|i| pod(i, "r1")).collect();
        assert!(matches!(
            decide_group(&spec(), &pods, &sentinels(), &fresh(), None, Some("r1")),
            GroupDecision::WaitForPods { .. }
        ));
        let pods: Vec<RedisPod> = (0..3).map(|i| pod(i, "r1")).collect();
        let mut no_ip = sentinels();
        no_ip[1].addr = None;
        assert!(matches!(
            decide_group(&spec(), &pods, &no_ip, &fresh(), None, Some("r1")),
            GroupDecision::WaitForPods { .. }
        ));
        let mut observed = formed();
        observed.members[1].reachable = false;
        assert!(matches!(
            decide_group(&spec(), &pods, &sentinels(), &observed, None, Some("r1")),
            GroupDecision::Settle { .. }
        ));
    }

    #[test]
    fn a_sentinel_that_cannot_be_scheduled_keeps_no_other_from_being_healed() {
        let pods: Vec<RedisPod> = (0..3).map(|i| pod(i, "r1")).collect();
        let mut voters = sentinels();
        voters.push(SentinelPod {
            name: "g-sentinel-3".into(),
            addr: None,
            terminating: false,
        });
        let mut observed = formed();
        observed.sentinel_members[2].names = None;
        assert_eq!(
            decide_group(&spec(), &pods, &voters, &observed, None, Some("r1")),
            GroupDecision::Operate(GroupOperation::Heal)
        );
    }

    #[test]
    fn outdated_pods_roll_with_the_up_to_date_ones_counted_as_restarted() {
        let pods = vec![pod(0, "r1"), pod(1, "r2"), pod(2, "r1")];
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &formed(), None, Some("r2")),
            GroupDecision::Operate(GroupOperation::RollingRestart {
                restarted: vec![addr(1)]
            })
        );
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &formed(), None, None),
            GroupDecision::Idle
        );
    }

    #[test]
    fn a_lowered_replica_count_removes_the_last_pods_first() {
        let pods: Vec<RedisPod> = (0..4).map(|i| pod(i, "r1")).collect();
        let mut observed = formed();
        observed.members.push(member(3, Some(0)));
        let mut spec = spec();
        spec.replicas_per_shard = 1;
        assert_eq!(
            decide_group(&spec, &pods, &sentinels(), &observed, None, Some("r1")),
            GroupDecision::Operate(GroupOperation::Remove {
                nodes: vec![addr(3), addr(2)]
            })
        );
    }

    #[test]
    fn a_replaced_sentinel_is_healed_and_a_healthy_group_is_left_alone() {
        let pods: Vec<RedisPod> = (0..3).map(|i| pod(i, "r1")).collect();
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &formed(), None, Some("r1")),
            GroupDecision::Idle
        );
        let mut observed = formed();
        observed.sentinel_members[2].names = None;
        assert_eq!(
            decide_group(&spec(), &pods, &sentinels(), &observed, None, Some("r1")),
            GroupDecision::Operate(GroupOperation::Heal)
        );
        // Mid-failover: nobody is confirmed, nothing is done.
        let mut observed = formed();
        observed.master = None;
        assert!(matches!(
            decide_group(&spec(), &pods, &sentinels(), &observed, None, Some("r1")),
            GroupDecision::Settle { .. }
        ));
    }

    #[test]
    fn the_status_lists_roles_lag_and_the_quorum() {
        let pods: Vec<RedisPod> = (0..3).map(|i| pod(i, "r1")).collect();
        let mut observed = formed();
        observed.members[0].offset = 150;
        let view = |i: u8| SentinelView {
            sentinel: NodeAddr::new(format!("10.0.1.{i}"), SENTINEL_PORT),
            master: addr(0),
            flags: vec!["master".into()],
            replicas: 2,
            other_sentinels: 2,
            quorum: 2,
            epoch: 0,
            failing: None,
        };
        let sight = GroupSight {
            observed,
            views: sentinels()
                .into_iter()
                .zip(0..)
                .map(|(s, i)| (s, Ok(view(i))))
                .collect(),
            lag_seconds: vec![(addr(1), 0), (addr(2), 1)],
        };
        let (healthy, status) = group_status("g", &pods, &sight);
        assert!(healthy);
        assert_eq!(status.master_pod.as_deref(), Some("g-redis-0"));
        assert_eq!(status.replicas.len(), 2);
        assert_eq!(status.replicas[0].lag_bytes, Some(50));
        assert_eq!(status.replicas[1].lag_seconds, Some(1));
        assert_eq!(status.quorum, "3/3 Sentinels name 10.0.0.0:6379 (quorum 2)");
        let mut sight = sight;
        sight.views[1].1 = Err("connection refused".into());
        let (healthy, status) = group_status("g", &pods, &sight);
        assert!(!healthy);
        assert_eq!(status.quorum, "2/3 Sentinels name 10.0.0.0:6379 (quorum 2)");
    }
}
