//! `topology: Sentinel` against an in-memory API server, with real `redis-server` and
//! `redis-server --sentinel` processes standing in for the pods: the group is formed through
//! the planner (pod 0 the first master, `REPLICAOF`, `SENTINEL MONITOR` on each Sentinel),
//! reported per role, and restarted for a template change replicas first, the master only
//! after a verified `SENTINEL FAILOVER`; a topology change is refused.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cinnabar_local::config::SentinelMonitor;
use cinnabar_operator::RedisCluster;
use cinnabar_operator::reconcile::{Context, reconcile};
use cinnabar_testkit::{ServerOptions, TestServer};
use serde_json::{Value, json};
use support::FakeApi;

const CLUSTER: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";

fn context(api: &FakeApi) -> Arc<Context> {
    support::test_context(api, Arc::new(support::NoMetrics))
}

fn store(api: &FakeApi, spec: Value) {
    api.put(
        CLUSTER,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "rc-uid", "generation": 1},
               "spec": spec}),
    );
}

fn cluster(api: &FakeApi) -> Arc<RedisCluster> {
    support::resource(api, CLUSTER)
}

fn condition(api: &FakeApi, type_: &str) -> (String, String) {
    let stored = api.get(CLUSTER).unwrap();
    let found = stored["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_else(|| json!({"status": "absent", "reason": ""}));
    (
        found["status"].as_str().unwrap().to_owned(),
        found["reason"].as_str().unwrap().to_owned(),
    )
}

fn password(api: &FakeApi) -> String {
    api.get("/api/v1/namespaces/shop/secrets/c-auth").unwrap()["stringData"]["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn pod(name: &str, component: &str, port_name: &str, port: u16, revision: &str) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/instance": "c", "app.kubernetes.io/component": component,
        "controller-revision-hash": revision,
    });
    if component == "redis" {
        labels["cinnabar.io/shard"] = json!("0");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"nodeName": format!("worker-{name}"), "containers": [{"name": component, "ports": [{"name": port_name, "containerPort": port}]}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn put_data_pod(api: &FakeApi, ordinal: usize, port: u16, revision: &str) {
    api.put(
        &format!("/api/v1/namespaces/shop/pods/c-redis-{ordinal}"),
        pod(
            &format!("c-redis-{ordinal}"),
            "redis",
            "redis",
            port,
            revision,
        ),
    );
}

/// Plays the kubelet for a new group: data servers with the stored password (each starts as a
/// lone master, as a pod does before any Sentinel monitors the group) and Sentinels that
/// monitor nothing yet.
fn start_pods(
    api: &FakeApi,
    replicas: usize,
    sentinels: usize,
) -> (Vec<TestServer>, Vec<TestServer>) {
    let password = password(api);
    let data = TestServer::start_many(
        1 + replicas,
        &ServerOptions {
            extra: vec![
                ("requirepass".into(), password.clone()),
                ("masterauth".into(), password.clone()),
            ],
            ..ServerOptions::default()
        },
    );
    // The test kit's Sentinels start with a monitor line: it is removed, so they start empty
    // like the operator's (which monitor nothing until the planner says so).
    let voters = TestServer::start_many(
        sentinels,
        &ServerOptions {
            sentinel: Some(SentinelMonitor::new("placeholder", "127.0.0.1", 1, 1)),
            extra: vec![
                ("requirepass".into(), password.clone()),
                ("sentinel".into(), format!("sentinel-pass {password}")),
            ],
            ..ServerOptions::default()
        },
    );
    for (i, sentinel) in voters.iter().enumerate() {
        let mut c = connection(sentinel.port(), &password);
        let _: () = redis::cmd("SENTINEL")
            .arg("REMOVE")
            .arg("placeholder")
            .query(&mut c)
            .unwrap();
        api.put(
            &format!("/api/v1/namespaces/shop/pods/c-sentinel-{i}"),
            pod(
                &format!("c-sentinel-{i}"),
                "sentinel",
                "sentinel",
                sentinel.port(),
                "s-1",
            ),
        );
    }
    for (i, server) in data.iter().enumerate() {
        put_data_pod(api, i, server.port(), "rev-1");
    }
    (data, voters)
}

fn connection(port: u16, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap()
}

fn role(port: u16, password: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut connection(port, password))
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Reconciles until Ready with nothing in progress; returns the steps seen.
async fn reconcile_until_ready(api: &FakeApi, ctx: &Arc<Context>, rounds: usize) -> Vec<String> {
    let mut steps = Vec::new();
    for _ in 0..rounds {
        reconcile(cluster(api), Arc::clone(ctx)).await.unwrap();
        let status = api.get(CLUSTER).unwrap()["status"].clone();
        if let Some(step) = status["operation"]["step"].as_str()
            && steps.last().map(String::as_str) != Some(step)
        {
            steps.push(step.to_owned());
        }
        if condition(api, "Ready").0 == "True" && status["operation"].is_null() {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!(
        "not ready after {rounds} reconciles; steps {steps:#?}; status {:#}",
        api.get(CLUSTER).unwrap()["status"]
    );
}

async fn ready_group() -> (FakeApi, Arc<Context>, Vec<TestServer>, Vec<TestServer>) {
    let api = FakeApi::default();
    let ctx = context(&api);
    store(
        &api,
        json!({"topology": "Sentinel", "shards": 1, "replicasPerShard": 2, "sentinels": 3}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let (data, voters) = start_pods(&api, 2, 3);
    reconcile_until_ready(&api, &ctx, 80).await;
    (api, ctx, data, voters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_formed_with_pod_0_as_master_and_reported_per_role() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store(
        &api,
        json!({"topology": "Sentinel", "shards": 1, "replicasPerShard": 2, "sentinels": 3}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        condition(&api, "Progressing"),
        ("True".into(), "PodsStarting".into())
    );
    for path in [
        "/apis/apps/v1/namespaces/shop/statefulsets/c-redis",
        "/apis/apps/v1/namespaces/shop/statefulsets/c-sentinel",
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/c-redis",
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/c-sentinel",
        "/api/v1/namespaces/shop/services/c-nodes",
        "/api/v1/namespaces/shop/services/c-sentinels",
        "/api/v1/namespaces/shop/services/c",
        "/api/v1/namespaces/shop/configmaps/c-config",
        "/apis/apps/v1/namespaces/shop/deployments/c-proxy",
    ] {
        assert!(api.get(path).is_some(), "{path} was not applied");
    }
    assert!(
        api.get("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-0")
            .is_none()
    );

    let (data, voters) = start_pods(&api, 2, 3);
    let steps = reconcile_until_ready(&api, &ctx, 80).await;
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.starts_with("have Sentinel"))
            .count(),
        3,
        "each Sentinel was told to monitor: {steps:#?}"
    );
    assert_eq!(
        condition(&api, "Ready"),
        ("True".into(), "GroupHealthy".into())
    );
    assert_eq!(
        condition(&api, "SlotsCovered").0,
        "absent",
        "a group has no slots"
    );
    let status = api.get(CLUSTER).unwrap()["status"].clone();
    assert_eq!(status["topology"], "Sentinel");
    let group = &status["group"];
    assert_eq!(group["masterPod"], "c-redis-0", "{group:#}");
    assert_eq!(group["replicas"].as_array().unwrap().len(), 2);
    for replica in group["replicas"].as_array().unwrap() {
        assert_eq!(replica["role"], "replica", "{group:#}");
        assert_eq!(replica["linkUp"], true);
        assert_eq!(replica["follows"], group["master"]);
    }
    assert_eq!(group["sentinels"].as_array().unwrap().len(), 3);
    assert!(
        group["quorum"]
            .as_str()
            .unwrap()
            .starts_with("3/3 Sentinels name"),
        "{group:#}"
    );
    let password = password(&api);
    assert_eq!(role(data[0].port(), &password), "master");
    assert_eq!(role(data[2].port(), &password), "slave");
    let named: Vec<String> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("c")
        .query(&mut connection(voters[1].port(), &password))
        .unwrap();
    assert_eq!(named[1], data[0].port().to_string());
}

/// The kubelet for a rolling update: a deleted data pod's server stops and starts on its data,
/// follows the master the Sentinels name (what the pod's start script does), and its pod comes
/// back from the new revision; the role each node had when its pod was deleted is recorded.
fn kubelet(
    api: FakeApi,
    servers: BTreeMap<usize, TestServer>,
    sentinel_port: u16,
    password: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(usize, String)>> {
    std::thread::spawn(move || {
        let mut servers = servers;
        let mut deleted_as = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (ordinal, server) in &mut servers {
                let path = format!("/api/v1/namespaces/shop/pods/c-redis-{ordinal}");
                if api.get(&path).is_some() {
                    continue;
                }
                deleted_as.push((*ordinal, role(server.port(), &password)));
                server.stop();
                server.restart();
                let named: Vec<String> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg("c")
                    .query(&mut connection(sentinel_port, &password))
                    .unwrap();
                if named[1] != server.port().to_string() {
                    let _: () = redis::cmd("REPLICAOF")
                        .arg(&named[0])
                        .arg(&named[1])
                        .query(&mut connection(server.port(), &password))
                        .unwrap();
                }
                put_data_pod(&api, *ordinal, server.port(), "rev-2");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        deleted_as
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_restarts_replicas_first_and_the_master_after_a_sentinel_failover() {
    let (api, ctx, data, voters) = ready_group().await;
    let path = "/apis/apps/v1/namespaces/shop/statefulsets/c-redis";
    let mut set = api.get(path).unwrap();
    set["status"] = json!({"updateRevision": "rev-2", "replicas": 3});
    api.put(path, set);
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = kubelet(
        api.clone(),
        data.into_iter().enumerate().collect(),
        voters[0].port(),
        password(&api),
        Arc::clone(&stop),
    );
    let steps = reconcile_until_ready(&api, &ctx, 150).await;
    stop.store(true, Ordering::Relaxed);
    let deleted_as = kubelet.join().unwrap();
    assert_eq!(
        deleted_as.len(),
        3,
        "every pod replaced once: {deleted_as:?}\n{steps:#?}"
    );
    for (ordinal, role) in &deleted_as {
        assert_eq!(
            role, "slave",
            "c-redis-{ordinal} was deleted while {role}: {steps:#?}"
        );
    }
    let failover = steps
        .iter()
        .position(|s| s.contains("SENTINEL FAILOVER"))
        .unwrap_or_else(|| panic!("no failover: {steps:#?}"));
    assert_eq!(
        steps[..failover]
            .iter()
            .filter(|s| s.starts_with("restart"))
            .count(),
        2,
        "both replicas before the failover: {steps:#?}"
    );
    let group = api.get(CLUSTER).unwrap()["status"]["group"].clone();
    assert_ne!(group["masterPod"], "c-redis-0", "{group:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_edited_into_a_group_is_refused_and_left_alone() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store(&api, json!({"shards": 1, "replicasPerShard": 1}));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(api.get(CLUSTER).unwrap()["status"]["topology"], "Cluster");
    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"]["topology"] = json!("Sentinel");
    api.put(CLUSTER, stored);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        condition(&api, "Degraded"),
        ("True".into(), "TopologyChange".into())
    );
    assert!(
        api.get("/apis/apps/v1/namespaces/shop/statefulsets/c-sentinel")
            .is_none(),
        "nothing of a group was applied"
    );
    assert_eq!(
        api.get(CLUSTER).unwrap()["status"]["topology"],
        "Cluster",
        "the built topology is remembered"
    );
}

/// The StatefulSet controller for a scale-in: data pods beyond `c-redis`'s replica count are
/// stopped and their Pod objects removed.
fn statefulset_controller(
    api: FakeApi,
    servers: Vec<TestServer>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut servers: BTreeMap<usize, TestServer> = servers.into_iter().enumerate().collect();
        let mut removed = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let wanted = api
                .get("/apis/apps/v1/namespaces/shop/statefulsets/c-redis")
                .and_then(|s| s["spec"]["replicas"].as_u64())
                .unwrap_or(0);
            let beyond: Vec<usize> = servers
                .keys()
                .copied()
                .filter(|o| *o as u64 >= wanted)
                .collect();
            for ordinal in beyond {
                api.remove(&format!("/api/v1/namespaces/shop/pods/c-redis-{ordinal}"));
                drop(servers.remove(&ordinal));
                removed.push(format!("c-redis-{ordinal}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        removed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_replicas_remove_the_last_pod_through_the_planner() {
    let (api, ctx, data, _voters) = ready_group().await;
    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"]["replicasPerShard"] = json!(1);
    api.put(CLUSTER, stored);
    let stop = Arc::new(AtomicBool::new(false));
    let controller = statefulset_controller(api.clone(), data, Arc::clone(&stop));
    let steps = reconcile_until_ready(&api, &ctx, 80).await;
    stop.store(true, Ordering::Relaxed);
    let removed = controller.join().unwrap();
    assert_eq!(removed, ["c-redis-2"], "{steps:#?}");
    assert!(steps.iter().any(|s| s.starts_with("remove")), "{steps:#?}");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/shop/statefulsets/c-redis")
            .unwrap()["spec"]["replicas"],
        2
    );
    let group = api.get(CLUSTER).unwrap()["status"]["group"].clone();
    assert_eq!(group["masterPod"], "c-redis-0", "{group:#}");
    assert_eq!(group["replicas"].as_array().unwrap().len(), 1, "{group:#}");
}
