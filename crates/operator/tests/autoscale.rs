//! Shard autoscaling (`spec.autoscaling.shards`) and the conditions across a scale, against the
//! in-memory API server with real `redis-server` processes as the pods; the test plays the
//! kubelet (a pod for every replica a StatefulSet asks for).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cinnabar_operator::RedisCluster;
use cinnabar_operator::reconcile::{Context, reconcile};
use cinnabar_operator::sync::HttpSyncMetrics;
use cinnabar_testkit::{ServerOptions, TestServer};
use serde_json::{Value, json};
use support::{FakeApi, redis_pod};

const CLUSTER: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";

fn context(api: &FakeApi) -> Arc<Context> {
    support::test_context(api, Arc::new(HttpSyncMetrics::default()))
}

fn cluster(api: &FakeApi) -> Arc<RedisCluster> {
    support::resource(api, CLUSTER)
}

fn status(api: &FakeApi) -> Value {
    api.get(CLUSTER).unwrap()["status"].clone()
}

fn shards_in_spec(api: &FakeApi) -> u64 {
    api.get(CLUSTER).unwrap()["spec"]["shards"]
        .as_u64()
        .unwrap()
}

/// `type → (status, lastTransitionTime)` of every condition.
fn conditions(api: &FakeApi) -> BTreeMap<String, (String, String)> {
    status(api)["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), (s("status"), s("lastTransitionTime")))
        })
        .collect()
}

/// The kubelet: a real server and a ready Pod for every replica each StatefulSet asks for.
struct Kubelet {
    api: FakeApi,
    options: ServerOptions,
    servers: BTreeMap<String, TestServer>,
}

impl Kubelet {
    fn new(api: &FakeApi, extra: &[(&str, &str)]) -> Self {
        let password =
            api.get("/api/v1/namespaces/shop/secrets/c-auth").unwrap()["stringData"]["password"]
                .as_str()
                .unwrap()
                .to_owned();
        let mut options = ServerOptions {
            cluster: true,
            extra: vec![
                ("requirepass".into(), password.clone()),
                ("masterauth".into(), password),
            ],
            ..ServerOptions::default()
        };
        options.extra.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Self {
            api: api.clone(),
            options,
            servers: BTreeMap::new(),
        }
    }

    fn run(&mut self) {
        for path in self
            .api
            .paths("/apis/apps/v1/namespaces/shop/statefulsets/c-shard-")
        {
            let set = self.api.get(&path).unwrap();
            let shard: u32 = path.rsplit('-').next().unwrap().parse().unwrap();
            let replicas = set["spec"]["replicas"].as_u64().unwrap_or(0) as u32;
            for ordinal in 0..replicas {
                let name = format!("c-shard-{shard}-{ordinal}");
                if self.servers.contains_key(&name) {
                    continue;
                }
                let server = TestServer::start_with(self.options.clone());
                self.api.put(
                    &format!("/api/v1/namespaces/shop/pods/{name}"),
                    redis_pod(
                        "c",
                        shard,
                        ordinal,
                        "127.0.0.1",
                        server.port(),
                        &format!("worker-{ordinal}"),
                        "rev-1",
                    ),
                );
                self.servers.insert(name, server);
            }
        }
    }

    fn password(&self) -> String {
        self.options.extra[0].1.clone()
    }

    fn urls(&self) -> Vec<String> {
        let password = self.password();
        self.servers
            .values()
            .map(|s| format!("redis://:{password}@127.0.0.1:{}/", s.port()))
            .collect()
    }
}

/// Reconciles (playing the kubelet between reconciles) until ready with `shards` shards.
async fn until_ready(api: &FakeApi, ctx: &Arc<Context>, kubelet: &mut Kubelet, shards: usize) {
    for _ in 0..150 {
        reconcile(cluster(api), Arc::clone(ctx)).await.unwrap();
        kubelet.run();
        let ready = conditions(api).get("Ready").map(|c| c.0.as_str()) == Some("True");
        if ready && status(api)["shards"].as_array().map(Vec::len) == Some(shards) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("not ready with {shards} shards: {:#}", status(api));
}

/// Writes 2 KiB values through a cluster client until `stop`: writes acknowledged, errors.
fn filler(urls: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .retries(20)
            .build()
            .unwrap();
        let mut conn = client.get_connection().unwrap();
        let value = "x".repeat(2048);
        let (mut acked, mut errors) = (0, Vec::new());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match redis::cmd("SET")
                .arg(format!("fill:{n}"))
                .arg(&value)
                .query::<()>(&mut conn)
            {
                Ok(()) => acked += 1,
                Err(e) => errors.push(e.to_string()),
            }
            n += 1;
        }
        (acked, errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_the_high_water_mark_scales_out_exactly_as_needed_and_the_cool_down_holds() {
    let api = FakeApi::default();
    let ctx = context(&api);
    let cooldown = 4;
    api.put(
        CLUSTER,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "rc-uid", "generation": 1},
               "spec": {"shards": 3, "replicasPerShard": 0,
                        "autoscaling": {"shards": {"min": 3, "max": 5, "memoryHighPercent": 90,
                                                   "cooldownSeconds": cooldown}}}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    // maxmemory comes from the memory limit on Kubernetes; the test's servers get it directly.
    // Full masters (LRU keeps them at about 8 MB each) need ceil(3 × 8 / (8 × 0.9)) = 4 shards,
    // then 5; the mark at 90 % leaves room for `used_memory` overshooting `maxmemory` on a busy
    // machine (at 80 %, 7 % over made the first decision 5 at once).
    let mut kubelet = Kubelet::new(
        &api,
        &[("maxmemory", "8mb"), ("maxmemory-policy", "allkeys-lru")],
    );
    kubelet.run();
    until_ready(&api, &ctx, &mut kubelet, 3).await;
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(shards_in_spec(&api), 3, "an empty cluster stays");
    let evaluation = status(&api)["autoscaling"]["lastEvaluation"].clone();
    assert!(
        evaluation.as_str().unwrap().contains("within the marks"),
        "{evaluation}"
    );

    // A workload fills memory past the mark and keeps writing through every scale.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = filler(kubelet.urls(), Arc::clone(&stop));
    let mut changes: Vec<(u64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline {
        let before = shards_in_spec(&api);
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
        kubelet.run();
        let after = shards_in_spec(&api);
        if after != before {
            changes.push((after, Instant::now()));
        }
        let at_max = status(&api)["autoscaling"]["lastEvaluation"]
            .as_str()
            .unwrap_or_default()
            .contains("maximum");
        if after == 5 && at_max {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At the maximum: more reconciles past the cool-down change nothing.
    tokio::time::sleep(Duration::from_secs(cooldown + 1)).await;
    for _ in 0..3 {
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let autoscaling = status(&api)["autoscaling"].clone();
    eprintln!("changes {changes:?}\nstatus.autoscaling {autoscaling:#}\n{acked} writes");
    assert!(
        errors.is_empty(),
        "client errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    let sizes: Vec<u64> = changes.iter().map(|c| c.0).collect();
    assert_eq!(
        sizes,
        [4, 5],
        "one shard at a time, up to the maximum and no further"
    );
    assert!(
        changes[1].1 - changes[0].1 >= Duration::from_secs(cooldown),
        "the cool-down held: {changes:?}"
    );
    assert_eq!(autoscaling["lastScale"], "4 -> 5 shards");
    assert!(
        autoscaling["reason"].as_str().unwrap().contains("memory"),
        "{autoscaling:#}"
    );
    assert!(
        autoscaling["lastEvaluation"]
            .as_str()
            .unwrap()
            .contains("maximum"),
        "{autoscaling:#}"
    );
    until_ready(&api, &ctx, &mut kubelet, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_change_only_on_real_transitions_across_a_scale() {
    let api = FakeApi::default();
    let ctx = context(&api);
    api.put(
        CLUSTER,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "rc-uid", "generation": 1},
               "spec": {"shards": 2, "replicasPerShard": 1}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let mut kubelet = Kubelet::new(&api, &[]);
    kubelet.run();
    until_ready(&api, &ctx, &mut kubelet, 2).await;

    let mut stored = api.get(CLUSTER).unwrap();
    stored["spec"]["shards"] = json!(3);
    stored["metadata"]["generation"] = json!(2);
    api.put(CLUSTER, stored);
    // Every reconcile's conditions, from the scale's start until ready again.
    let mut seen = vec![conditions(&api)];
    for _ in 0..150 {
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
        kubelet.run();
        seen.push(conditions(&api));
        let ready = seen.last().unwrap()["Ready"].0 == "True";
        if ready && status(&api)["shards"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        // Transition times have a one-second resolution: let every reconcile be distinct.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        seen.last().unwrap()["Ready"].0,
        "True",
        "{:#}",
        status(&api)
    );
    let mut transitions: BTreeMap<String, usize> = BTreeMap::new();
    for pair in seen.windows(2) {
        for (type_, (now, time)) in &pair[1] {
            let Some((before, before_time)) = pair[0].get(type_) else {
                continue;
            };
            if before != now {
                *transitions.entry(type_.clone()).or_default() += 1;
            } else {
                assert_eq!(
                    before_time, time,
                    "{type_} kept its status ({now}) but its transition time moved"
                );
            }
        }
    }
    eprintln!("{} reconciles, transitions {transitions:?}", seen.len());
    // Ready: True → False (the scale) → True; Progressing: False → True → False; no flapping,
    // and nothing else moves.
    assert_eq!(transitions.get("Ready"), Some(&2), "{transitions:?}");
    assert_eq!(transitions.get("Progressing"), Some(&2), "{transitions:?}");
    for quiet in ["Degraded", "SlotsCovered", "ReconciliationPaused"] {
        assert_eq!(transitions.get(quiet), None, "{quiet}: {transitions:?}");
    }
}
