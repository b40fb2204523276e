//! The Kubernetes platform against a mock API server: pod addresses, hosts and shards flow into
//! the planner, restarts replace pods, and removals shrink StatefulSets from the top only.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cinnabar_cluster::{NodeAddr, Platform};
use cinnabar_operator::platform::KubePlatform;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn pod(name: &str, uid: &str, shard: u32, ip: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": {
            "app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "redis",
            "cinnabar.io/shard": shard.to_string(), "controller-revision-hash": "r1"}},
        "spec": {"nodeName": node, "containers": [{"name": "redis", "ports": [{"name": "redis", "containerPort": 6379}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn three_by_two() -> Vec<Value> {
    vec![
        pod("c-shard-0-0", "a0", 0, "10.0.0.10", "w1"),
        pod("c-shard-0-1", "a1", 0, "10.0.0.11", "w2"),
        pod("c-shard-1-0", "b0", 1, "10.0.1.10", "w2"),
        pod("c-shard-1-1", "b1", 1, "10.0.1.11", "w3"),
        pod("c-shard-2-0", "c0", 2, "10.0.2.10", "w3"),
        pod("c-shard-2-1", "c1", 2, "10.0.2.11", "w1"),
    ]
}

/// Answers the next request with `body` after checking its method and path.
async fn answer(
    handle: &mut Handle,
    method: Method,
    path_prefix: &str,
    body: Value,
) -> Request<Body> {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is alive");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert!(
        request.uri().path().starts_with(path_prefix),
        "{} does not start with {path_prefix}",
        request.uri()
    );
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    request
}

fn platform(shards: u16, replicas: u16) -> (KubePlatform, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ns");
    let mut platform = KubePlatform::new(client, "ns", "c", shards, replicas);
    platform.wait = Duration::from_secs(10);
    (platform, handle)
}

#[tokio::test]
async fn pods_become_planner_nodes_with_hosts_groups_and_retirement() {
    let (platform, mut handle) = platform(2, 1);
    let server = tokio::spawn(async move {
        let request = answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            list(three_by_two()),
        )
        .await;
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(
            query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dc"),
            "{query}"
        );
    });
    let nodes = platform.nodes().await.unwrap();
    server.await.unwrap();
    let seen: Vec<(String, String, String, bool)> = nodes
        .iter()
        .map(|n| {
            (
                n.addr.to_string(),
                n.host.clone().unwrap(),
                n.group.clone().unwrap(),
                n.retiring,
            )
        })
        .collect();
    assert_eq!(
        seen[0],
        ("10.0.0.10:6379".into(), "w1".into(), "0".into(), false)
    );
    assert_eq!(
        seen[5],
        ("10.0.2.11:6379".into(), "w1".into(), "2".into(), true),
        "shard 2 is beyond a 2-shard spec"
    );
    assert_eq!(
        platform.hosts(),
        Vec::<String>::new(),
        "the scheduler places pods"
    );
}

#[tokio::test]
async fn a_restart_deletes_the_pod_by_uid_and_returns_its_replacements_address() {
    let (mut platform, mut handle) = platform(3, 1);
    let server = tokio::spawn(async move {
        answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            list(three_by_two()),
        )
        .await;
        let delete = answer(
            &mut handle,
            Method::DELETE,
            "/api/v1/namespaces/ns/pods/c-shard-1-1",
            pod("c-shard-1-1", "b1", 1, "10.0.1.11", "w3"),
        )
        .await;
        let body = http_body_util::BodyExt::collect(delete.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["preconditions"]["uid"], "b1",
            "never deletes a pod that was already replaced"
        );
        // Still the old pod, then the replacement on another node with a new IP.
        answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods/c-shard-1-1",
            pod("c-shard-1-1", "b1", 1, "10.0.1.11", "w3"),
        )
        .await;
        answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods/c-shard-1-1",
            pod("c-shard-1-1", "b1-new", 1, "10.0.1.99", "w1"),
        )
        .await;
    });
    let now_at = platform
        .restart(&NodeAddr::new("10.0.1.11", 6379))
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(now_at, NodeAddr::new("10.0.1.99", 6379));
}

#[tokio::test]
async fn only_the_highest_ordinal_is_removed_by_shrinking_its_statefulset() {
    let (mut platform, mut handle) = platform(3, 0);
    let statefulset = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "c-shard-0", "namespace": "ns"},
        "spec": {"replicas": 2, "selector": {}, "serviceName": "c-nodes", "template": {}}});
    let server = tokio::spawn(async move {
        // Pod 0 of a 2-pod StatefulSet: refused.
        answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            list(three_by_two()),
        )
        .await;
        answer(
            &mut handle,
            Method::GET,
            "/apis/apps/v1/namespaces/ns/statefulsets/c-shard-0",
            statefulset.clone(),
        )
        .await;
        // Pod 1: the StatefulSet goes to 1 pod, and the pod is gone.
        answer(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            list(three_by_two()),
        )
        .await;
        answer(
            &mut handle,
            Method::GET,
            "/apis/apps/v1/namespaces/ns/statefulsets/c-shard-0",
            statefulset.clone(),
        )
        .await;
        let patch = answer(
            &mut handle,
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/statefulsets/c-shard-0",
            statefulset,
        )
        .await;
        let body = http_body_util::BodyExt::collect(patch.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"spec": {"replicas": 1}})
        );
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/ns/pods/c-shard-0-1"
        );
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gone"})).unwrap()))
                .unwrap(),
        );
    });
    let err = platform
        .remove(&NodeAddr::new("10.0.0.10", 6379))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("only sheds its highest ordinal"),
        "{err}"
    );
    platform
        .remove(&NodeAddr::new("10.0.0.11", 6379))
        .await
        .unwrap();
    server.await.unwrap();
}
