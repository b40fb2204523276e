//! Reconciler scenarios against an in-memory API server, with real `redis-server` processes
//! standing in for the pods: the glue between Kubernetes objects and the planner.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use cinnabar_cluster::Timeouts;
use cinnabar_operator::RedisCluster;
use cinnabar_operator::reconcile::{Context, FINALIZER, reconcile};
use cinnabar_operator::sync::{MetricsError, SyncMetrics};
use cinnabar_testkit::{ServerOptions, TestServer};
use serde_json::{Value, json};
use support::{FakeApi, redis_pod};

const CLUSTER: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";

/// Sync metrics as a test sets them; every reading asked for is recorded.
#[derive(Default)]
struct FakeMetrics {
    answer: std::sync::Mutex<Option<String>>,
    asked: std::sync::Mutex<Vec<(String, u16)>>,
}

impl FakeMetrics {
    fn serve(&self, text: &str) {
        *self.answer.lock().unwrap() = Some(text.to_owned());
    }

    /// Readings fail from now on (the pod restarting).
    fn refuse(&self) {
        *self.answer.lock().unwrap() = None;
    }

    fn asked(&self) -> Vec<(String, u16)> {
        self.asked.lock().unwrap().clone()
    }
}

impl SyncMetrics for FakeMetrics {
    fn fetch<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, Result<String, MetricsError>> {
        self.asked.lock().unwrap().push((host.to_owned(), port));
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move {
            answer.ok_or_else(|| MetricsError::Status {
                endpoint: format!("{host}:{port}"),
                status_line: "no sync pod in this test".into(),
            })
        })
    }
}

fn context(api: &FakeApi) -> Arc<Context> {
    context_with(api, Arc::new(FakeMetrics::default()))
}

fn context_with(api: &FakeApi, metrics: Arc<FakeMetrics>) -> Arc<Context> {
    support::test_context(api, metrics)
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
    support::resource(api, CLUSTER)
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

/// Options for a pod's real server: cluster mode and the password the operator stored.
fn pod_server_options(api: &FakeApi) -> ServerOptions {
    let password = password(api);
    ServerOptions {
        cluster: true,
        extra: vec![
            ("requirepass".into(), password.clone()),
            ("masterauth".into(), password),
        ],
        ..ServerOptions::default()
    }
}

/// Publishes the Pod object of `shard`/`ordinal`, pointing at a server on `port`.
fn put_pod(api: &FakeApi, shard: u32, ordinal: u32, port: u16, revision: &str) {
    let pod = redis_pod(
        "c",
        shard,
        ordinal,
        "127.0.0.1",
        port,
        &format!("worker-{ordinal}"),
        revision,
    );
    api.put(
        &format!("/api/v1/namespaces/shop/pods/c-shard-{shard}-{ordinal}"),
        pod,
    );
}

/// Plays the kubelet: one real server per pod the StatefulSets ask for, with the password the
/// operator stored, and the Pod objects pointing at them.
fn start_pods(api: &FakeApi, shards: u32, per_shard: u32) -> Vec<TestServer> {
    let servers = TestServer::start_many((shards * per_shard) as usize, &pod_server_options(api));
    for shard in 0..shards {
        for ordinal in 0..per_shard {
            let server = &servers[(shard * per_shard + ordinal) as usize];
            put_pod(api, shard, ordinal, server.port(), "rev-1");
        }
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_is_formed_from_its_pods_and_reported_ready() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(&api, json!({"shards": 2, "replicasPerShard": 1}));

    // First pass: objects, finalizer (beside another controller's), password; no pods yet.
    let mut stored = api.get(CLUSTER).unwrap();
    stored["metadata"]["finalizers"] = json!(["example.com/backup"]);
    api.put(CLUSTER, stored);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let stored = api.get(CLUSTER).unwrap();
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["example.com/backup", FINALIZER])
    );
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

/// Reconciles until the cluster reports Ready with `shards` shards (at most `rounds` times).
async fn reconcile_until_ready(
    api: &FakeApi,
    ctx: &Arc<Context>,
    shards: usize,
    rounds: usize,
) -> Vec<String> {
    let mut steps = Vec::new();
    for _ in 0..rounds {
        reconcile(cluster(api), Arc::clone(ctx)).await.unwrap();
        let status = api.get(CLUSTER).unwrap()["status"].clone();
        if let Some(step) = status["operation"]["step"].as_str()
            && steps.last().map(String::as_str) != Some(step)
        {
            steps.push(step.to_owned());
        }
        let ready = condition(api, "Ready").0 == "True";
        if ready && status["shards"].as_array().map(Vec::len) == Some(shards) {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "not ready after {rounds} reconciles; steps {steps:#?}\nstatus {:#}",
        api.get(CLUSTER).unwrap()["status"]
    );
}

/// A formed, ready cluster of `shards` × 2 pods (real servers), reconciled by `ctx`.
async fn ready_cluster(shards: u32) -> (FakeApi, Arc<Context>, Vec<TestServer>) {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(&api, json!({"shards": shards, "replicasPerShard": 1}));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let servers = start_pods(&api, shards, 2);
    reconcile_until_ready(&api, &ctx, shards as usize, 10).await;
    (api, ctx, servers)
}

/// The servers keyed by the pod they stand in for (`start_pods` order).
fn by_pod_name(servers: Vec<TestServer>) -> std::collections::BTreeMap<String, TestServer> {
    servers
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("c-shard-{}-{}", i / 2, i % 2), s))
        .collect()
}

/// `(shard, ordinal)` of pod `c-shard-S-O`.
fn position(pod: &str) -> (u32, u32) {
    let (shard, ordinal) = pod.trim_start_matches("c-shard-").split_once('-').unwrap();
    (shard.parse().unwrap(), ordinal.parse().unwrap())
}

fn password(api: &FakeApi) -> String {
    api.get("/api/v1/namespaces/shop/secrets/c-auth").unwrap()["stringData"]["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_shards_in_the_spec_scale_out_one_planner_step_per_reconcile() {
    let (api, ctx, mut servers) = ready_cluster(2).await;

    // The user raises shards; the new StatefulSet's pods come up (the kubelet, here).
    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"]["shards"] = json!(3);
    stored["metadata"]["generation"] = json!(2);
    api.put(CLUSTER, stored);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert!(
        api.get("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-2")
            .is_some()
    );
    let options = pod_server_options(&api);
    for ordinal in 0..2u32 {
        let server = TestServer::start_with(options.clone());
        put_pod(&api, 2, ordinal, server.port(), "rev-1");
        servers.push(server);
    }
    let steps = reconcile_until_ready(&api, &ctx, 3, 60).await;
    assert!(
        steps.iter().any(|s| s.contains("rebalance slots")),
        "{steps:#?}"
    );
    let shards = api.get(CLUSTER).unwrap()["status"]["shards"].clone();
    let third = shards
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["masterPod"].as_str().unwrap().starts_with("c-shard-2-"))
        .unwrap_or_else(|| panic!("no shard led by the new StatefulSet: {shards:#}"));
    assert!(
        third["replicaPods"][0]
            .as_str()
            .unwrap()
            .starts_with("c-shard-2-"),
        "the new shard's replica comes from its own StatefulSet: {shards:#}"
    );
    assert_eq!(
        api.get(CLUSTER).unwrap()["status"]["operation"],
        Value::Null,
        "the operation finished"
    );
}

/// The kubelet for a rolling update: a deleted pod's server is restarted on its data and the
/// pod comes back from the new revision; the role the node had when its pod was deleted is
/// recorded.
fn kubelet(
    api: FakeApi,
    servers: std::collections::BTreeMap<String, TestServer>,
    password: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    std::thread::spawn(move || {
        let mut servers = servers;
        let mut deleted_as = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (pod, server) in &mut servers {
                let path = format!("/api/v1/namespaces/shop/pods/{pod}");
                if api.get(&path).is_some() {
                    continue;
                }
                let url = format!("redis://:{password}@127.0.0.1:{}/", server.port());
                let role: String = redis::Client::open(url)
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                    })
                    .map(|info| {
                        info.lines()
                            .find_map(|l| l.strip_prefix("role:"))
                            .unwrap_or("?")
                            .trim()
                            .to_owned()
                    })
                    .unwrap_or_else(|e| format!("unreachable: {e}"));
                deleted_as.push((pod.clone(), role));
                server.stop();
                server.restart();
                let (shard, ordinal) = position(pod);
                put_pod(&api, shard, ordinal, server.port(), "rev-2");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        deleted_as
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_restarts_replicas_first_and_masters_only_after_a_failover() {
    let (api, ctx, servers) = ready_cluster(2).await;
    // The proxies' admin token was made, in a Secret of its own (the Redis pods never see it).
    let token = api.get("/api/v1/namespaces/shop/secrets/c-admin").unwrap()["stringData"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 32);
    assert_ne!(token, password(&api));

    // A new image: the StatefulSets' update revision moves on; OnDelete leaves the pods be.
    for shard in 0..2 {
        let path = format!("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-{shard}");
        let mut set = api.get(&path).unwrap();
        set["status"] = json!({"updateRevision": "rev-2", "replicas": 2});
        api.put(&path, set);
    }
    let named = by_pod_name(servers);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubelet = kubelet(api.clone(), named, password(&api), Arc::clone(&stop));
    let steps = reconcile_until_ready(&api, &ctx, 2, 80).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted_as = kubelet.join().unwrap();

    assert_eq!(
        deleted_as.len(),
        4,
        "every pod replaced once: {deleted_as:?}\n{steps:#?}"
    );
    for (pod, role) in &deleted_as {
        assert_eq!(role, "slave", "{pod} was deleted while {role}: {steps:#?}");
    }
    assert!(
        steps.iter().filter(|s| s.starts_with("fail over")).count() >= 2,
        "{steps:#?}"
    );
    for path in api.paths("/api/v1/namespaces/shop/pods/") {
        assert_eq!(
            api.get(&path).unwrap()["metadata"]["labels"]["controller-revision-hash"],
            "rev-2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_handed_a_copy_older_than_its_own_last_status_repeats_no_step() {
    let (api, ctx, servers) = ready_cluster(2).await;
    for shard in 0..2 {
        let path = format!("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-{shard}");
        let mut set = api.get(&path).unwrap();
        set["status"] = json!({"updateRevision": "rev-2", "replicas": 2});
        api.put(&path, set);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubelet = kubelet(
        api.clone(),
        by_pod_name(servers),
        password(&api),
        Arc::clone(&stop),
    );
    // A watch cache one status write behind: every reconcile is handed the object as it was
    // before the previous reconcile wrote its journal.
    let mut behind = cluster(&api);
    let mut ready = false;
    for _ in 0..80 {
        let now = cluster(&api);
        reconcile(behind, Arc::clone(&ctx)).await.unwrap();
        behind = now;
        let status = api.get(CLUSTER).unwrap()["status"].clone();
        if condition(&api, "Ready").0 == "True" && status["operation"].is_null() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted_as = kubelet.join().unwrap();
    assert!(ready, "never ready again: {deleted_as:?}");
    assert_eq!(
        deleted_as.len(),
        4,
        "every pod replaced once: {deleted_as:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_journaled_by_a_previous_operator_is_continued_by_the_next() {
    let api = FakeApi::default();
    store_cluster(&api, json!({"shards": 2, "replicasPerShard": 1}));
    let first = context(&api);
    reconcile(cluster(&api), Arc::clone(&first)).await.unwrap();
    let _servers = start_pods(&api, 2, 2);
    reconcile_until_ready(&api, &first, 2, 10).await;
    drop(first);

    // The previous leader had started a failover of shard 0 and died before its first step.
    let shard0_master = api.get("/api/v1/namespaces/shop/pods/c-shard-0-0").unwrap();
    let port = shard0_master["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    let master = cinnabar_cluster::NodeAddr::new("127.0.0.1", u16::try_from(port).unwrap());
    let credentials = cinnabar_cluster::Credentials {
        user: None,
        password: password(&api),
    };
    let mut client =
        cinnabar_cluster::NodeClient::connect_as(&master, Timeouts::default(), Some(&credentials))
            .await
            .unwrap();
    let master_id = client.my_id().await.unwrap();
    let journal = cinnabar_cluster::JournalEntry {
        operation: cinnabar_cluster::Operation::Failover { master_id, master },
        step: None,
        steps_done: 0,
        started_ms: 0,
    };
    let mut stored = api.get(CLUSTER).unwrap();
    stored["status"]["operation"] = json!({"name": "failover", "step": "", "stepsDone": 0, "journal": serde_json::to_string(&journal).unwrap()});
    api.put(CLUSTER, stored);

    let second = context(&api);
    reconcile(cluster(&api), Arc::clone(&second)).await.unwrap();
    assert!(
        api.get(CLUSTER).unwrap()["status"]["operation"]["step"]
            .as_str()
            .unwrap()
            .starts_with("fail over"),
        "{:#}",
        api.get(CLUSTER).unwrap()["status"]
    );
    reconcile_until_ready(&api, &second, 2, 20).await;
    let shards = api.get(CLUSTER).unwrap()["status"]["shards"].clone();
    assert_eq!(shards[0]["masterPod"], "c-shard-0-1", "{shards:#}");
}

/// The StatefulSet controller for a scale-in: pods beyond a StatefulSet's replica count, or of a
/// deleted StatefulSet, are stopped and their Pod objects removed.
fn statefulset_controller(
    api: FakeApi,
    mut servers: std::collections::BTreeMap<String, TestServer>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut removed = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let names: Vec<String> = servers.keys().cloned().collect();
            for pod in names {
                let (shard, ordinal) = position(&pod);
                let set = api.get(&format!(
                    "/apis/apps/v1/namespaces/shop/statefulsets/c-shard-{shard}"
                ));
                let wanted = set
                    .and_then(|s| s["spec"]["replicas"].as_u64())
                    .unwrap_or(0);
                if u64::from(ordinal) >= wanted {
                    api.remove(&format!("/api/v1/namespaces/shop/pods/{pod}"));
                    drop(servers.remove(&pod));
                    removed.push(pod);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        removed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_shards_drain_and_remove_exactly_the_pods_beyond_the_spec() {
    let (api, ctx, servers) = ready_cluster(3).await;

    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"]["shards"] = json!(2);
    api.put(CLUSTER, stored);
    let named = by_pod_name(servers);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let controller = statefulset_controller(api.clone(), named, Arc::clone(&stop));
    let steps = reconcile_until_ready(&api, &ctx, 2, 80).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut removed = controller.join().unwrap();
    removed.sort();

    assert_eq!(removed, ["c-shard-2-0", "c-shard-2-1"], "{steps:#?}");
    assert!(steps.iter().any(|s| s.contains("drain")), "{steps:#?}");
    assert!(
        api.get("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-2")
            .is_none(),
        "the emptied StatefulSet is deleted"
    );
    let shards = api.get(CLUSTER).unwrap()["status"]["shards"].clone();
    for shard in shards.as_array().unwrap() {
        assert!(
            !shard["masterPod"]
                .as_str()
                .unwrap()
                .starts_with("c-shard-2"),
            "{shards:#}"
        );
    }
}

const SYNC_DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/c-sync";
const SYNC_SERVICE: &str = "/api/v1/namespaces/shop/services/c-sync";
const SYNC_CLAIM: &str = "/api/v1/namespaces/shop/persistentvolumeclaims/c-sync-state";

/// What `cinnabar sync --admin-listen` serves (`SyncStatus::prometheus`) for two source masters.
fn sync_metrics_text(streaming: [bool; 2], lag_seconds: f64) -> String {
    let s = |b: bool| u8::from(b);
    format!(
        "# HELP cinnabar_sync_streaming 1 when the source stream applies the command stream, 0 while connecting or copying.\n\
         # TYPE cinnabar_sync_streaming gauge\n\
         cinnabar_sync_streaming{{source=\"10.0.0.5:6379\"}} {}\n\
         cinnabar_sync_streaming{{source=\"10.0.0.6:6379\"}} {}\n\
         # HELP cinnabar_sync_offset Source replication offset applied and acknowledged by the target.\n\
         # TYPE cinnabar_sync_offset gauge\n\
         cinnabar_sync_offset{{source=\"10.0.0.5:6379\"}} 1048576\n\
         cinnabar_sync_offset{{source=\"10.0.0.6:6379\"}} 2048\n\
         # HELP cinnabar_sync_lag_bytes Bytes received from the source and not yet acknowledged by the target.\n\
         # TYPE cinnabar_sync_lag_bytes gauge\n\
         cinnabar_sync_lag_bytes{{source=\"10.0.0.5:6379\"}} 0\n\
         cinnabar_sync_lag_bytes{{source=\"10.0.0.6:6379\"}} 0\n\
         # HELP cinnabar_sync_lag_seconds Time since the target last had everything received from the source.\n\
         # TYPE cinnabar_sync_lag_seconds gauge\n\
         cinnabar_sync_lag_seconds{{source=\"10.0.0.5:6379\"}} {lag_seconds}\n\
         cinnabar_sync_lag_seconds{{source=\"10.0.0.6:6379\"}} 0\n\
         # HELP cinnabar_sync_keys_applied_total Keys of the full sync applied.\n\
         # TYPE cinnabar_sync_keys_applied_total counter\n\
         cinnabar_sync_keys_applied_total{{source=\"10.0.0.5:6379\"}} 1200\n\
         cinnabar_sync_keys_applied_total{{source=\"10.0.0.6:6379\"}} 34\n\
         # HELP cinnabar_sync_commands_applied_total Commands of the stream applied.\n\
         # TYPE cinnabar_sync_commands_applied_total counter\n\
         cinnabar_sync_commands_applied_total{{source=\"10.0.0.5:6379\"}} 7\n\
         cinnabar_sync_commands_applied_total{{source=\"10.0.0.6:6379\"}} 0\n",
        s(streaming[0]),
        s(streaming[1]),
    )
}

/// A sync pod as the Deployment's ReplicaSet makes it, with the IP it was given.
fn put_sync_pod(api: &FakeApi, name: &str, created: &str, ip: &str, deleting: bool) {
    let mut metadata = json!({"name": name, "namespace": "shop", "creationTimestamp": created,
        "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "sync"}});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
    }
    api.put(
        &format!("/api/v1/namespaces/shop/pods/{name}"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
               "status": {"podIP": ip, "containerStatuses": [{
                   "name": "sync", "image": "cinnabar:test", "imageID": "", "ready": true,
                   "restartCount": 0, "state": {"running": {}}}]}}),
    );
}

fn sync_status(api: &FakeApi) -> Value {
    api.get(CLUSTER).unwrap()["status"]["sync"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_from_runs_in_a_pod_once_the_cluster_serves_and_reports_phase_and_lag() {
    let api = FakeApi::default();
    let metrics = Arc::new(FakeMetrics::default());
    let ctx = context_with(&api, Arc::clone(&metrics));
    store_cluster(
        &api,
        json!({"shards": 1, "replicasPerShard": 1, "syncFrom": {
            "address": "legacy.db.svc:6379", "user": "migrator",
            "passwordSecret": {"name": "legacy-auth", "key": "pw"},
            "mergeDbs": [2], "skipDbs": [3], "maxLagSeconds": 2,
        }}),
    );

    // No pods yet: the sync's objects exist, its pod is not started, nothing is read.
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let deployment = api
        .get(SYNC_DEPLOYMENT)
        .expect("the sync Deployment is applied");
    assert_eq!(
        deployment["spec"]["replicas"], 0,
        "not before every slot is served"
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "rc-uid"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "cinnabar:test", "the proxy's image");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "sync",
            "--from",
            "legacy.db.svc:6379",
            "--to",
            "c-nodes.shop.svc:6379",
            "--to-password-file",
            "/etc/cinnabar/auth/password",
            "--state",
            "/state",
            "--admin-listen",
            "0.0.0.0:9121",
            "--from-user",
            "migrator",
            "--from-password-file",
            "/etc/cinnabar/source/password",
            "--merge-db",
            "2",
            "--skip-db",
            "3",
        ]
    );
    assert!(container["env"].is_null(), "no password in the environment");
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}: {pod:#}"))
            .clone()
    };
    let mount = |name: &str| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mount {name}"))["mountPath"]
            .clone()
    };
    assert_eq!(
        volume("source-auth")["secret"],
        json!({"secretName": "legacy-auth", "items": [{"key": "pw", "path": "password"}]})
    );
    assert_eq!(mount("source-auth"), "/etc/cinnabar/source");
    assert_eq!(volume("auth")["secret"]["secretName"], "c-auth");
    assert_eq!(
        volume("state")["persistentVolumeClaim"]["claimName"],
        "c-sync-state"
    );
    assert_eq!(mount("state"), "/state");
    let claim = api.get(SYNC_CLAIM).expect("the state volume is claimed");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    let service = api.get(SYNC_SERVICE).expect("the metrics Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9121);
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "sync"
    );
    assert_eq!(sync_status(&api)["phase"], "Pending");
    assert_eq!(
        condition(&api, "Synced"),
        ("False".into(), "SyncPending".into())
    );
    assert!(metrics.asked().is_empty(), "no sync pod to ask yet");

    // The cluster forms and serves every slot: the sync pod is started and read, at its own
    // IP (the operator may run where no cluster DNS name resolves).
    let _servers = start_pods(&api, 1, 2);
    metrics.serve(&sync_metrics_text([true, false], 0.0));
    reconcile_until_ready(&api, &ctx, 1, 10).await;
    assert_eq!(api.get(SYNC_DEPLOYMENT).unwrap()["spec"]["replicas"], 1);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(sync_status(&api)["phase"], "Pending", "no sync pod yet");
    let asked = metrics.asked().len();
    put_sync_pod(
        &api,
        "c-sync-7d9-a1",
        "2026-01-01T00:00:00Z",
        "10.9.0.4",
        false,
    );
    // The pod a Recreate rollout is deleting is not read; the newest live one is.
    put_sync_pod(
        &api,
        "c-sync-7d9-a0",
        "2025-12-31T00:00:00Z",
        "10.9.0.3",
        true,
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(metrics.asked().len(), asked + 1);
    assert_eq!(metrics.asked().last(), Some(&("10.9.0.4".to_owned(), 9121)));
    let sync = sync_status(&api);
    assert_eq!(sync["phase"], "Copying", "{sync:#}");
    assert_eq!(sync["source"], "legacy.db.svc:6379");
    assert_eq!(sync["keysApplied"], 1234);
    assert!(sync["observedAt"].is_string(), "{sync:#}");
    assert_eq!(
        condition(&api, "Synced"),
        ("False".into(), "Copying".into())
    );

    // Every stream streams within the bound: Synced, with each stream's applied offset.
    metrics.serve(&sync_metrics_text([true, true], 0.0));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let sync = sync_status(&api);
    assert_eq!(sync["phase"], "Streaming", "{sync:#}");
    assert_eq!(
        (sync["lagBytes"].clone(), sync["lagSeconds"].clone()),
        (json!(0), json!(0.0))
    );
    assert_eq!(
        sync["streams"][0],
        json!({"source": "10.0.0.5:6379", "streaming": true, "offset": 1048576, "lagBytes": 0, "lagSeconds": 0.0})
    );
    assert_eq!(
        condition(&api, "Synced"),
        ("True".into(), "Streaming".into())
    );
    assert_eq!(
        condition(&api, "Ready").0,
        "True",
        "a sync does not make the cluster unready"
    );

    // One reading fails (the pod restarting), the next succeeds: the error goes with it, and
    // the status write removes the field (a merge patch keeps what it does not mention).
    metrics.refuse();
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let sync = sync_status(&api);
    assert_eq!(sync["phase"], "Pending", "{sync:#}");
    assert!(
        sync["lastError"]
            .as_str()
            .is_some_and(|e| e.starts_with("metrics not readable")),
        "{sync:#}"
    );
    metrics.serve(&sync_metrics_text([true, true], 0.0));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let sync = sync_status(&api);
    assert_eq!(sync["phase"], "Streaming", "{sync:#}");
    assert!(sync.get("lastError").is_none(), "{sync:#}");

    // Streaming, but behind the bound.
    metrics.serve(&sync_metrics_text([true, true], 7.5));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        condition(&api, "Synced"),
        ("False".into(), "Lagging".into())
    );

    // The sync stopped on an error it does not retry: the pod crash-loops with it.
    api.put(
        "/api/v1/namespaces/shop/pods/c-sync-7d9-x2",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "c-sync-7d9-x2", "namespace": "shop", "labels": {
                   "app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "sync"}},
               "status": {"containerStatuses": [{
                   "name": "sync", "image": "cinnabar:test", "imageID": "", "ready": false, "restartCount": 4,
                   "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                   "lastState": {"terminated": {"exitCode": 1, "message":
                       "10.0.0.5:6379 streaming, lag 0 bytes / 0 ms, 7 commands\nError: sync stopped: the source sent FLUSHALL; pass --allow-flush to apply it\n"}}}]}}),
    );
    metrics.serve("");
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let sync = sync_status(&api);
    assert_eq!(sync["phase"], "Failed", "{sync:#}");
    assert_eq!(
        sync["lastError"],
        "Error: sync stopped: the source sent FLUSHALL; pass --allow-flush to apply it"
    );
    assert_eq!(
        condition(&api, "Synced"),
        ("False".into(), "SyncFailed".into())
    );

    // syncFrom removed: the sync's objects go, and so do its status and condition.
    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"].as_object_mut().unwrap().remove("syncFrom");
    api.put(CLUSTER, stored);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    for path in [SYNC_DEPLOYMENT, SYNC_SERVICE, SYNC_CLAIM] {
        assert!(api.get(path).is_none(), "{path} is still there");
        assert!(
            api.log().contains(&format!("DELETE {path}")),
            "{path} was not deleted"
        );
    }
    assert!(sync_status(&api).is_null());
    let stored = api.get(CLUSTER).unwrap();
    assert!(
        !stored["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Synced"),
        "{:#}",
        stored["status"]
    );
    // Nothing is deleted again once the status no longer reports a sync.
    let deletes = api.log().iter().filter(|l| l.starts_with("DELETE")).count();
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        api.log().iter().filter(|l| l.starts_with("DELETE")).count(),
        deletes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_source_that_is_not_host_port_is_refused_and_nothing_is_applied() {
    let api = FakeApi::default();
    store_cluster(
        &api,
        json!({"shards": 1, "syncFrom": {"address": "legacy.db.svc"}}),
    );
    reconcile(cluster(&api), context(&api)).await.unwrap();
    assert_eq!(
        condition(&api, "Degraded"),
        ("True".into(), "BadSyncSource".into())
    );
    let stored = api.get(CLUSTER).unwrap();
    let message = stored["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()["message"]
        .clone();
    assert_eq!(
        message,
        "syncFrom.address `legacy.db.svc` is not HOST:PORT (such as redis.legacy.svc:6379 or \
         [fd00::5]:6379)"
    );
    assert!(api.paths("/apis/apps").is_empty());
    assert!(api.get(SYNC_SERVICE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_volumes_the_sync_state_is_an_empty_dir_and_no_claim_is_made() {
    let api = FakeApi::default();
    store_cluster(
        &api,
        json!({"shards": 1, "persistence": {"size": null}, "syncFrom": {"address": "10.1.2.3:7000", "allowFlush": true}}),
    );
    reconcile(cluster(&api), context(&api)).await.unwrap();
    let deployment = api.get(SYNC_DEPLOYMENT).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0], json!({"name": "state", "emptyDir": {}}));
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&json!("--allow-flush")), "{args:?}");
    assert!(!args.contains(&json!("--from-password-file")), "{args:?}");
    assert!(api.get(SYNC_CLAIM).is_none());
}
