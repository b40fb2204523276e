//! The planner's [`Platform`] on Kubernetes: Redis nodes are the pods of one StatefulSet per
//! shard.
//!
//! Decisions:
//! - Pods come from the spec (the reconciler applies the StatefulSets first), so the planner
//!   never needs `provision` here: it meets the pods that exist. Asking for one is an error that
//!   says so.
//! - A restart deletes the pod (the StatefulSets use `OnDelete`, so nothing else restarts pods)
//!   and waits for its replacement, same name, new uid, ready; the answer is its new address.
//! - Pods beyond the spec (a shard index ≥ `shards`, an ordinal ≥ `1 + replicasPerShard`) are
//!   marked retiring, so a scale-in drops exactly those. Removing one lowers its StatefulSet's
//!   replica count; that only works for the highest ordinal, which is the order the planner
//!   removes them in. A StatefulSet brought to 0 is deleted.

use std::time::{Duration, Instant};

use cinnabar_cluster::{ClusterError, NodeAddr, Platform, PlatformNode};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};

use crate::pods::{RedisPod, platform_nodes, redis_pod};

/// How often waits look at the pods again.
const POLL: Duration = Duration::from_secs(1);

/// The Redis pods of one `RedisCluster`.
#[derive(Clone)]
pub struct KubePlatform {
    pods: Api<Pod>,
    statefulsets: Api<StatefulSet>,
    cluster: String,
    shards: u32,
    per_shard: u32,
    /// The one StatefulSet of a Sentinel group's data pods (`NAME-redis`); `None` for a
    /// cluster's StatefulSet per shard.
    group_set: Option<String>,
    /// Longest wait for a replaced pod or a StatefulSet scale-down.
    pub wait: Duration,
}

impl std::fmt::Debug for KubePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePlatform")
            .field("cluster", &self.cluster)
            .field("shards", &self.shards)
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

/// The label selector of a cluster's Redis pods.
pub fn redis_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component=redis")
}

fn api_error(what: String, e: &kube::Error) -> ClusterError {
    ClusterError::Platform(format!("{what}: {e}"))
}

impl KubePlatform {
    /// The pods of cluster `cluster` in `namespace`, which the spec sizes at `shards` ×
    /// (1 + `replicas_per_shard`).
    pub fn new(
        client: Client,
        namespace: &str,
        cluster: &str,
        shards: u16,
        replicas_per_shard: u16,
    ) -> Self {
        Self {
            pods: Api::namespaced(client.clone(), namespace),
            statefulsets: Api::namespaced(client, namespace),
            cluster: cluster.to_owned(),
            shards: u32::from(shards),
            per_shard: 1 + u32::from(replicas_per_shard),
            group_set: None,
            wait: Duration::from_secs(300),
        }
    }

    /// The data pods of Sentinel group `cluster`: one StatefulSet, `NAME-redis`, of
    /// 1 + `replicas` pods.
    pub fn group(client: Client, namespace: &str, cluster: &str, replicas: u16) -> Self {
        Self {
            group_set: Some(format!("{cluster}-redis")),
            ..Self::new(client, namespace, cluster, 1, replicas)
        }
    }

    /// Every Redis pod of the cluster, read.
    ///
    /// # Errors
    /// The API call failed.
    pub async fn pods(&self) -> Result<Vec<RedisPod>, ClusterError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&redis_selector(&self.cluster)))
            .await
            .map_err(|e| api_error(format!("listing the pods of {}", self.cluster), &e))?;
        Ok(list.items.iter().map(redis_pod).collect())
    }

    async fn pod_at(&self, addr: &NodeAddr) -> Result<RedisPod, ClusterError> {
        self.pods()
            .await?
            .into_iter()
            .find(|p| p.node.as_ref().is_some_and(|n| &n.addr == addr))
            .ok_or_else(|| {
                ClusterError::Platform(format!("no pod of {} has the address {addr}", self.cluster))
            })
    }

    /// The planner's nodes among `pods` (read with [`pods`](Self::pods)), pods beyond the spec
    /// marked retiring.
    pub fn nodes_of(&self, pods: &[RedisPod]) -> Vec<PlatformNode> {
        platform_nodes(pods, |p| self.is_retiring(p))
    }

    fn is_retiring(&self, pod: &RedisPod) -> bool {
        pod.shard.is_some_and(|s| s >= self.shards)
            || pod.ordinal.is_some_and(|o| o >= self.per_shard)
    }

    fn statefulset_of(&self, pod: &RedisPod) -> Option<String> {
        if let Some(set) = &self.group_set {
            return Some(set.clone());
        }
        pod.shard.map(|s| format!("{}-shard-{s}", self.cluster))
    }
}

impl Platform for KubePlatform {
    async fn nodes(&self) -> Result<Vec<PlatformNode>, ClusterError> {
        Ok(self.nodes_of(&self.pods().await?))
    }

    fn hosts(&self) -> Vec<String> {
        // The scheduler places pods (with the anti-affinity the StatefulSets carry).
        Vec::new()
    }

    async fn provision(&mut self, _host: Option<&str>) -> Result<PlatformNode, ClusterError> {
        Err(ClusterError::Platform(format!(
            "{} needs another node, but on Kubernetes pods come from the spec: raise `shards` or \
             `replicasPerShard`",
            self.cluster
        )))
    }

    async fn restart(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        let pod = self.pod_at(addr).await?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.pods
            .delete(&pod.name, &params)
            .await
            .map_err(|e| api_error(format!("deleting pod {}", pod.name), &e))?;
        let deadline = Instant::now() + self.wait;
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(found) = self
                .pods
                .get_opt(&pod.name)
                .await
                .map_err(|e| api_error(format!("reading pod {}", pod.name), &e))?
            {
                let fresh = redis_pod(&found);
                if fresh.uid != pod.uid
                    && fresh.ready
                    && let Some(node) = fresh.node
                {
                    return Ok(node.addr);
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Platform(format!(
                    "pod {} was not replaced and ready within {} s",
                    pod.name,
                    self.wait.as_secs()
                )));
            }
        }
    }

    async fn start(&mut self, addr: &NodeAddr) -> Result<NodeAddr, ClusterError> {
        // The kubelet restarts a crashed container on its own; all we can do is find the pod.
        Ok(self
            .pod_at(addr)
            .await?
            .node
            .map_or_else(|| addr.clone(), |n| n.addr))
    }

    async fn remove(&mut self, addr: &NodeAddr) -> Result<(), ClusterError> {
        let pod = self.pod_at(addr).await?;
        let (Some(name), Some(ordinal)) = (self.statefulset_of(&pod), pod.ordinal) else {
            return Err(ClusterError::Platform(format!(
                "pod {} carries no shard label or ordinal",
                pod.name
            )));
        };
        let set = self
            .statefulsets
            .get(&name)
            .await
            .map_err(|e| api_error(format!("reading StatefulSet {name}"), &e))?;
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if i64::from(ordinal) + 1 != i64::from(replicas) {
            return Err(ClusterError::Platform(format!(
                "pod {} is not the last of StatefulSet {name} ({replicas} pods): a StatefulSet \
                 only sheds its highest ordinal",
                pod.name
            )));
        }
        if replicas <= 1 {
            self.statefulsets
                .delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| api_error(format!("deleting StatefulSet {name}"), &e))?;
        } else {
            let patch = serde_json::json!({"spec": {"replicas": replicas - 1}});
            self.statefulsets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(format!("scaling StatefulSet {name} down"), &e))?;
        }
        let deadline = Instant::now() + self.wait;
        while self
            .pods
            .get_opt(&pod.name)
            .await
            .map_err(|e| api_error(format!("reading pod {}", pod.name), &e))?
            .is_some_and(|p| p.metadata.uid.as_deref() == Some(pod.uid.as_str()))
        {
            if Instant::now() >= deadline {
                return Err(ClusterError::Platform(format!(
                    "pod {} was still there {} s after its StatefulSet shrank",
                    pod.name,
                    self.wait.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}
