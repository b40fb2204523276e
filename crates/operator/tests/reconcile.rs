//! Reconciler scenarios against an in-memory API server, with real `redis-server` processes
//! standing in for the pods: the glue between Kubernetes objects and the planner.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use cinnabar_cluster::{ExecuteOptions, Timeouts};
use cinnabar_operator::RedisCluster;
use cinnabar_operator::objects::BuildOptions;
use cinnabar_operator::reconcile::{Context, FINALIZER, reconcile};
use cinnabar_testkit::{ServerOptions, TestServer};
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use support::{FakeApi, redis_pod};

const CLUSTER: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";

fn context(api: &FakeApi) -> Arc<Context> {
    Arc::new(Context {
        client: api.client("shop"),
        build: BuildOptions {
            proxy_image: "cinnabar:test".into(),
        },
        execute: ExecuteOptions {
            timeouts: Timeouts {
                connect: Duration::from_millis(500),
                response: Duration::from_secs(2),
            },
            ..ExecuteOptions::default()
        },
        reporter: Reporter {
            controller: "cinnabar-operator".into(),
            instance: Some("test".into()),
        },
    })
}

fn store_cluster(api: &FakeApi, spec: Value) {
    api.put(
        CLUSTER,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "rc-uid", "generation": 1},
               "spec": spec}),
    );
}

fn cluster(api: &FakeApi) -> Arc<RedisCluster> {
    Arc::new(serde_json::from_value(api.get(CLUSTER).unwrap()).unwrap())
}

fn condition(api: &FakeApi, type_: &str) -> (String, String) {
    let stored = api.get(CLUSTER).unwrap();
    let found = stored["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
        .clone();
    (
        found["status"].as_str().unwrap().to_owned(),
        found["reason"].as_str().unwrap().to_owned(),
    )
}

/// Plays the kubelet: one real server per pod the StatefulSets ask for, with the password the
/// operator stored, and the Pod objects pointing at them.
fn start_pods(api: &FakeApi, shards: u32, per_shard: u32) -> Vec<TestServer> {
    let secret = api
        .get("/api/v1/namespaces/shop/secrets/c-auth")
        .expect("the operator made the password Secret");
    let password = secret["stringData"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let options = ServerOptions {
        cluster: true,
        extra: vec![
            ("requirepass".into(), password.clone()),
            ("masterauth".into(), password),
        ],
        ..ServerOptions::default()
    };
    let servers = TestServer::start_many((shards * per_shard) as usize, &options);
    for shard in 0..shards {
        for ordinal in 0..per_shard {
            let server = &servers[(shard * per_shard + ordinal) as usize];
            let pod = redis_pod(
                "c",
                shard,
                ordinal,
                "127.0.0.1",
                server.port(),
                &format!("worker-{ordinal}"),
                "rev-1",
            );
            api.put(
                &format!("/api/v1/namespaces/shop/pods/c-shard-{shard}-{ordinal}"),
                pod,
            );
        }
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_is_formed_from_its_pods_and_reported_ready() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(&api, json!({"shards": 2, "replicasPerShard": 1}));

    // First pass: objects, finalizer, password; no pods yet.
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let stored = api.get(CLUSTER).unwrap();
    assert_eq!(stored["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(
        condition(&api, "Progressing"),
        ("True".into(), "PodsStarting".into())
    );
    for path in [
        "/apis/apps/v1/namespaces/shop/statefulsets/c-shard-0",
        "/apis/apps/v1/namespaces/shop/statefulsets/c-shard-1",
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/c-shard-1",
        "/api/v1/namespaces/shop/services/c-nodes",
        "/api/v1/namespaces/shop/services/c",
        "/api/v1/namespaces/shop/configmaps/c-config",
        "/apis/apps/v1/namespaces/shop/deployments/c-proxy",
    ] {
        assert!(api.get(path).is_some(), "{path} was not applied");
    }

    let _servers = start_pods(&api, 2, 2);
    // Second pass forms the cluster; the third finds it healthy.
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        condition(&api, "Ready"),
        ("True".into(), "ClusterHealthy".into()),
        "{:#}",
        api.get(CLUSTER).unwrap()["status"]
    );
    assert_eq!(condition(&api, "SlotsCovered").0, "True");
    let shards = api.get(CLUSTER).unwrap()["status"]["shards"].clone();
    assert_eq!(shards.as_array().unwrap().len(), 2, "{shards:#}");
    assert_eq!(
        shards[0]["masterPod"], "c-shard-0-0",
        "pod 0 of each StatefulSet leads its shard"
    );
    assert_eq!(shards[0]["replicaPods"], json!(["c-shard-0-1"]));
    assert_eq!(shards[1]["slots"], "8192-16383");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cluster_is_left_alone_and_says_so() {
    let api = FakeApi::default();
    store_cluster(&api, json!({"shards": 1, "paused": true}));
    reconcile(cluster(&api), context(&api)).await.unwrap();
    assert_eq!(
        condition(&api, "ReconciliationPaused"),
        ("True".into(), "SpecPaused".into())
    );
    assert!(
        api.paths("/apis/apps").is_empty(),
        "nothing applied: {:?}",
        api.paths("/")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_degraded_and_nothing_is_applied() {
    let api = FakeApi::default();
    store_cluster(&api, json!({"shards": 1, "redisConfig": {"port": "7000"}}));
    reconcile(cluster(&api), context(&api)).await.unwrap();
    assert_eq!(
        condition(&api, "Degraded"),
        ("True".into(), "OwnedDirective".into())
    );
    assert!(api.paths("/apis/apps").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_the_volumes_when_asked_and_then_the_finalizer() {
    let api = FakeApi::default();
    store_cluster(
        &api,
        json!({"shards": 1, "persistence": {"retention": "Delete"}}),
    );
    let mut stored = api.get(CLUSTER).unwrap();
    stored["metadata"]["finalizers"] = json!([FINALIZER]);
    stored["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
    api.put(CLUSTER, stored);
    api.put(
        "/api/v1/namespaces/shop/persistentvolumeclaims/data-c-shard-0-0",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-c-shard-0-0", "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "redis"}}}),
    );
    api.put(
        "/api/v1/namespaces/shop/persistentvolumeclaims/someone-else",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "someone-else", "labels": {"app": "x"}}}),
    );
    reconcile(cluster(&api), context(&api)).await.unwrap();
    assert_eq!(
        api.get(CLUSTER).unwrap()["metadata"]["finalizers"],
        json!([])
    );
    assert_eq!(
        api.paths("/api/v1/namespaces/shop/persistentvolumeclaims/"),
        ["/api/v1/namespaces/shop/persistentvolumeclaims/someone-else"],
        "only this cluster's volumes go"
    );
}
