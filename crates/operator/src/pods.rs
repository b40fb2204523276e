//! Redis pods as the planner sees them: address, host, shard group, readiness.
//!
//! Pure: from `Pod` objects to [`PlatformNode`]s, so the glue between Kubernetes and the planner
//! (pod IPs and node names flowing into placement) is tested without an API server.
//!
//! Decisions:
//! - A node's address is its pod IP and the container port named `redis` (6379 when unnamed):
//!   that is what Redis Cluster gossips, so the planner's view and the cluster's tables agree.
//!   A restarted pod gets a new IP; the planner is told through `Platform::restart`'s answer and
//!   Redis through the restarted node's own gossip.
//! - The host is the pod's `spec.nodeName`; the group is its `cinnabar.io/shard` label (one
//!   StatefulSet per shard), so the planner only pairs pods of one StatefulSet.
//! - Pods without an IP (pending, or being replaced) are not nodes yet.

use cinnabar_cluster::{NodeAddr, PlatformNode};
use k8s_openapi::api::core::v1::Pod;

/// Label carrying a Redis pod's shard (StatefulSet) index.
pub const SHARD_LABEL: &str = "cinnabar.io/shard";
/// Port Redis listens on in our pods unless the container names another.
pub const REDIS_PORT: u16 = 6379;

/// One Redis pod, reduced to what the reconciler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPod {
    /// Pod name (`NAME-shard-I-J`).
    pub name: String,
    /// Pod uid (a replaced pod has a new one).
    pub uid: String,
    /// The planner's view of it; `None` until it has an IP.
    pub node: Option<PlatformNode>,
    /// Shard index from its label.
    pub shard: Option<u32>,
    /// Ordinal within its StatefulSet (the number after the last `-`).
    pub ordinal: Option<u32>,
    /// `Ready` condition true.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `controller-revision-hash` label: which StatefulSet revision made it.
    pub revision: Option<String>,
}

/// Reads one pod.
pub fn redis_pod(pod: &Pod) -> RedisPod {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let labels = meta.labels.as_ref();
    let shard_label = labels.and_then(|l| l.get(SHARD_LABEL)).cloned();
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let port = named_port(pod, "redis").unwrap_or(REDIS_PORT);
    let host = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    RedisPod {
        uid: meta.uid.clone().unwrap_or_default(),
        node: ip.map(|ip| PlatformNode {
            addr: NodeAddr::new(ip, port),
            host,
            zone: None,
            group: shard_label.clone(),
            retiring: false,
        }),
        shard: shard_label.and_then(|s| s.parse().ok()),
        ordinal: name.rsplit('-').next().and_then(|o| o.parse().ok()),
        ready,
        terminating: meta.deletion_timestamp.is_some(),
        revision: labels
            .and_then(|l| l.get("controller-revision-hash"))
            .cloned(),
        name,
    }
}

/// The planner's nodes among `pods`, in shard then ordinal order, each marked retiring when
/// `retiring` says so (see `Platform` in `crate::platform`).
pub fn platform_nodes(
    pods: &[RedisPod],
    retiring: impl Fn(&RedisPod) -> bool,
) -> Vec<PlatformNode> {
    let mut sorted: Vec<&RedisPod> = pods.iter().filter(|p| !p.terminating).collect();
    sorted.sort_by_key(|p| (p.shard, p.ordinal, p.name.clone()));
    sorted
        .into_iter()
        .filter_map(|p| {
            let mut node = p.node.clone()?;
            node.retiring = retiring(p);
            Some(node)
        })
        .collect()
}

/// The container port named `name` in any of the pod's containers.
pub fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec.as_ref()?.containers.iter().find_map(|c| {
        c.ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn pod(name: &str, shard: u32, ip: Option<&str>, node: &str, port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    [
                        (SHARD_LABEL.to_owned(), shard.to_string()),
                        ("controller-revision-hash".to_owned(), "rev-1".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                containers: vec![Container {
                    name: "redis".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("redis".into()),
                        container_port: port,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_ips_node_names_and_shards_flow_into_planner_nodes() {
        let pods = [
            pod("c-shard-1-0", 1, Some("10.0.1.5"), "worker-b", 6379),
            pod("c-shard-0-1", 0, Some("10.0.0.7"), "worker-c", 6379),
            pod("c-shard-0-0", 0, Some("10.0.0.6"), "worker-a", 7000),
            pod("c-shard-1-1", 1, None, "worker-a", 6379),
        ];
        let read: Vec<RedisPod> = pods.iter().map(redis_pod).collect();
        assert_eq!(read[2].ordinal, Some(0));
        assert!(read.iter().all(|p| p.ready));
        assert_eq!(read[0].revision.as_deref(), Some("rev-1"));
        let nodes = platform_nodes(&read, |p| p.shard == Some(1));
        let seen: Vec<(String, Option<&str>, Option<&str>)> = nodes
            .iter()
            .map(|n| (n.addr.to_string(), n.host.as_deref(), n.group.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("10.0.0.6:7000".to_owned(), Some("worker-a"), Some("0")),
                ("10.0.0.7:6379".to_owned(), Some("worker-c"), Some("0")),
                ("10.0.1.5:6379".to_owned(), Some("worker-b"), Some("1")),
            ],
            "the pod without an IP is not a node yet; shard 0's pod 0 comes first"
        );
        let retiring: Vec<bool> = nodes.iter().map(|n| n.retiring).collect();
        assert_eq!(retiring, [false, false, true]);
    }
}
