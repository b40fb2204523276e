//! Kubernetes mode (`cinnabar console --kubernetes`): the `RedisCluster` resources of one
//! namespace, read through the API server, and scale as an edit of their spec (the operator
//! then carries it out through the same planner as the local commands).
//!
//! Read-only but for that one spec edit: it never creates, deletes or touches pods, and never
//! reads a Secret, so no password can reach a page.

use cinnabar_operator::RedisCluster;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;

use crate::error::{ApiError, ConsoleError};

/// The resources the console sees.
pub struct KubeClusters {
    api: Api<RedisCluster>,
    namespace: String,
}

/// One condition of a `RedisCluster`'s status.
#[derive(Debug, Clone, Serialize)]
pub struct KubeCondition {
    /// `Ready`, `Progressing`, `Degraded`, `SlotsCovered`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// One `RedisCluster`, as the list and its page show it.
#[derive(Debug, Clone, Serialize)]
pub struct KubeSummary {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `spec.shards`.
    pub shards: u16,
    /// `spec.replicasPerShard`.
    pub replicas_per_shard: u16,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
    /// Every condition.
    pub conditions: Vec<KubeCondition>,
    /// The operation under way (`status.operation`: name and current step).
    pub operation: Option<String>,
    /// Whether the operator has seen the latest spec (`observedGeneration == generation`).
    pub up_to_date: bool,
    /// `status.shards`, as the operator wrote it (master and replica pods, slots, lag).
    pub shard_status: serde_json::Value,
}

impl KubeClusters {
    /// Connects with the in-cluster or kubeconfig credentials; `namespace` defaults to the
    /// client's.
    ///
    /// # Errors
    /// [`ConsoleError::Kubernetes`] when no configuration is found.
    pub async fn connect(namespace: Option<String>) -> Result<KubeClusters, ConsoleError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| ConsoleError::Kubernetes(e.to_string()))?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        Ok(KubeClusters::new(client, namespace))
    }

    /// Over `client`, in `namespace`.
    pub fn new(client: kube::Client, namespace: String) -> KubeClusters {
        KubeClusters {
            api: Api::namespaced(client, &namespace),
            namespace,
        }
    }

    /// The namespace it shows.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every `RedisCluster` of the namespace.
    ///
    /// # Errors
    /// [`ApiError::Internal`] with the API server's answer.
    pub async fn list(&self) -> Result<Vec<KubeSummary>, ApiError> {
        let list = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|e| ApiError::Internal(format!("listing RedisClusters: {e}")))?;
        Ok(list.items.iter().map(summary).collect())
    }

    /// `RedisCluster` `name`.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when it does not exist; [`ApiError::Internal`] otherwise.
    pub async fn get(&self, name: &str) -> Result<KubeSummary, ApiError> {
        match self.api.get_opt(name).await {
            Ok(Some(cluster)) => Ok(summary(&cluster)),
            Ok(None) => Err(ApiError::NotFound(format!(
                "no RedisCluster {name} in namespace {}",
                self.namespace
            ))),
            Err(e) => Err(ApiError::Internal(format!(
                "reading RedisCluster {name}: {e}"
            ))),
        }
    }

    /// Sets `spec.shards` and/or `spec.replicasPerShard` (a merge patch, so nothing else of
    /// the spec changes); the operator reconciles it.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] for no or zero shards; the API server's refusal (its
    /// validation rules) as [`ApiError::BadRequest`]; [`ApiError::NotFound`].
    pub async fn scale(
        &self,
        name: &str,
        shards: Option<u16>,
        replicas: Option<u16>,
    ) -> Result<(), ApiError> {
        if shards.is_none() && replicas.is_none() {
            return Err(ApiError::BadRequest(
                "give masters, replicas or both".to_owned(),
            ));
        }
        if shards == Some(0) {
            return Err(ApiError::BadRequest(
                "a cluster needs at least one shard".to_owned(),
            ));
        }
        let mut spec = serde_json::Map::new();
        if let Some(shards) = shards {
            spec.insert("shards".to_owned(), shards.into());
        }
        if let Some(replicas) = replicas {
            spec.insert("replicasPerShard".to_owned(), replicas.into());
        }
        let patch = serde_json::json!({ "spec": spec });
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 404 => {
                    ApiError::NotFound(format!("no RedisCluster {name}"))
                }
                kube::Error::Api(status) => ApiError::BadRequest(status.message),
                other => ApiError::Internal(format!("patching RedisCluster {name}: {other}")),
            })
    }
}

fn summary(cluster: &RedisCluster) -> KubeSummary {
    let status = cluster.status.as_ref();
    let conditions: Vec<KubeCondition> = status
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| KubeCondition {
                    kind: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    KubeSummary {
        name: cluster.metadata.name.clone().unwrap_or_default(),
        namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
        shards: cluster.spec.shards,
        replicas_per_shard: cluster.spec.replicas_per_shard,
        ready: conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True"),
        conditions,
        operation: status
            .and_then(|s| s.operation.as_ref())
            .map(|op| format!("{} ({})", op.name, op.step)),
        up_to_date: status.and_then(|s| s.observed_generation) == cluster.metadata.generation,
        shard_status: status
            .and_then(|s| serde_json::to_value(&s.shards).ok())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Answers the next request with `body`; returns the request's method, path and body.
    async fn answer(handle: &mut Handle, status: u16, body: Value) -> (Method, String, Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let sent = http_body_util::BodyExt::collect(request.into_body())
            .await
            .expect("the body")
            .to_bytes();
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("a response"),
        );
        (
            method,
            path,
            serde_json::from_slice(&sent).unwrap_or(Value::Null),
        )
    }

    fn cluster() -> Value {
        json!({
            "apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
            "metadata": {"name": "orders", "namespace": "team", "generation": 3},
            "spec": {"shards": 3, "replicasPerShard": 1},
            "status": {
                "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AllShardsReady",
                    "message": "3 shards ready", "lastTransitionTime": "2026-12-05T10:00:00Z"}],
                "shards": [{"masterPod": "orders-0-0", "replicaPods": ["orders-0-1"], "slots": "0-5460"}]
            }
        })
    }

    fn clusters() -> (KubeClusters, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (
            KubeClusters::new(kube::Client::new(service, "team"), "team".to_owned()),
            handle,
        )
    }

    #[tokio::test]
    async fn the_list_shows_shape_readiness_and_shards_from_the_resources() {
        let (clusters, mut handle) = clusters();
        let server = tokio::spawn(async move {
            let list = json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisClusterList",
                "metadata": {}, "items": [cluster()]});
            let (method, path, _) = answer(&mut handle, 200, list).await;
            assert_eq!(method, Method::GET);
            assert_eq!(
                path,
                "/apis/cinnabar.io/v1alpha1/namespaces/team/redisclusters"
            );
        });
        let list = clusters.list().await.expect("the list");
        server.await.expect("the server");
        let orders = &list[0];
        assert_eq!((orders.shards, orders.replicas_per_shard), (3, 1));
        assert!(orders.ready && orders.up_to_date);
        assert_eq!(orders.shard_status[0]["masterPod"], "orders-0-0");
    }

    #[tokio::test]
    async fn scale_is_a_merge_patch_of_the_spec_only() {
        let (clusters, mut handle) = clusters();
        let server = tokio::spawn(async move {
            let (method, path, sent) = answer(&mut handle, 200, cluster()).await;
            assert_eq!(method, Method::PATCH);
            assert_eq!(
                path,
                "/apis/cinnabar.io/v1alpha1/namespaces/team/redisclusters/orders"
            );
            assert_eq!(sent, json!({"spec": {"shards": 4}}));
        });
        clusters
            .scale("orders", Some(4), None)
            .await
            .expect("patched");
        server.await.expect("the server");
        assert!(clusters.scale("orders", Some(0), None).await.is_err());
    }
}
