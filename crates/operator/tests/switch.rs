//! The online switch at the end of a sync (`spec.syncFrom.switch`), against the in-memory API
//! server: the old cluster and the new one are real `redis-server` processes, the old
//! cluster's two proxy pods are real proxies (on 127.0.0.2 and 127.0.0.3, their pod IPs), the
//! sync pod is a real sync with its admin listener, and a workload writes through both proxies.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cinnabar_operator::RedisCluster;
use cinnabar_operator::reconcile::{Context, reconcile};
use cinnabar_operator::sync::HttpSyncMetrics;
use cinnabar_replication::sync::{Background, SyncConfig};
use cinnabar_replication::verify::Endpoint;
use cinnabar_testkit::{ServerOptions, TestCluster, TestServer, reserve_port};
use serde_json::{Value, json};
use support::{FakeApi, redis_pod};

const NEW: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";
const OLD: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/old";
const TOKEN: &str = "t0ken-of-the-old-proxies";

fn context(api: &FakeApi) -> Arc<Context> {
    support::test_context(api, Arc::new(HttpSyncMetrics::default()))
}

fn b64(text: &str) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize])
                );
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn secret(api: &FakeApi, name: &str, key: &str, value: &str) {
    api.put(
        &format!("/api/v1/namespaces/shop/secrets/{name}"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "shop"},
               "data": {key: b64(value)}}),
    );
}

fn generation(api: &FakeApi, path: &str) -> i64 {
    api.get(path).unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap_or(1)
}

fn cluster(api: &FakeApi) -> Arc<RedisCluster> {
    support::resource(api, NEW)
}

fn conditions(api: &FakeApi) -> Vec<(String, String, String, String)> {
    api.get(NEW).unwrap()["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("status"), s("reason"), s("lastTransitionTime"))
        })
        .collect()
}

fn condition(api: &FakeApi, type_: &str) -> (String, String) {
    conditions(api)
        .into_iter()
        .find(|c| c.0 == type_)
        .map(|c| (c.1, c.2))
        .unwrap_or_else(|| panic!("no {type_}: {:#}", api.get(NEW).unwrap()["status"]))
}

fn switch_status(api: &FakeApi) -> Value {
    api.get(NEW).unwrap()["status"]["sync"]["switch"].clone()
}

/// A client writing unique keys through `endpoint` until `stop`: acknowledged keys, errors and
/// the slowest write.
fn writer(
    endpoint: String,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>, Duration)> {
    std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://{endpoint}/")).unwrap();
        let mut conn = client.get_connection().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (mut acked, mut errors, mut slowest) = (Vec::new(), Vec::new(), Duration::ZERO);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{tag}:{n}");
            let started = Instant::now();
            match redis::cmd("SET").arg(&key).arg(n).query::<()>(&mut conn) {
                Ok(()) => acked.push(key),
                Err(e) => errors.push(e.to_string()),
            }
            slowest = slowest.max(started.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (acked, errors, slowest)
    })
}

struct Migration {
    api: FakeApi,
    ctx: Arc<Context>,
    _old: TestCluster,
    new: Vec<TestServer>,
    proxies: Vec<cinnabar_proxy::ProxyHandle>,
    sync: Background,
    password: String,
    _state: tempfile::TempDir,
}

/// OLD (2 masters, real) with two proxy pods; NEW `c` (3 shards, reconciled until ready) with
/// `syncFrom` OLD and the switch; the sync pod running.
async fn migration(switch: Value, token: &str) -> Migration {
    let api = FakeApi::default();
    let ctx = context(&api);
    let old = TestCluster::start(2, 0).await;
    let old_seed = old.seeds()[0].to_string();
    let admin_port = reserve_port().port();
    let sync_port = reserve_port().port();
    api.put(
        OLD,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "old", "namespace": "shop", "uid": "old-uid", "generation": 1},
               "spec": {"shards": 2, "replicasPerShard": 0, "monitoring": {"metricsPort": admin_port}}}),
    );
    secret(&api, "old-admin", "token", token);
    secret(&api, "old-auth", "password", "unused-old-password");
    let mut proxies = Vec::new();
    for (i, ip) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let mut config =
            cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
        config.admin_listen = Some(format!("{ip}:{admin_port}").parse().unwrap());
        config.admin_token = Some(TOKEN.into());
        proxies.push(cinnabar_proxy::start(config).unwrap());
        api.put(
            &format!("/api/v1/namespaces/shop/pods/old-proxy-{i}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("old-proxy-{i}"), "namespace": "shop",
                                "labels": {"app.kubernetes.io/instance": "old", "app.kubernetes.io/component": "proxy"}},
                   "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }

    api.put(
        NEW,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "c-uid", "generation": 1},
               "spec": {"shards": 3, "replicasPerShard": 0, "monitoring": {"metricsPort": sync_port},
                        "syncFrom": {"address": old_seed, "switch": switch}}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let password =
        api.get("/api/v1/namespaces/shop/secrets/c-auth").unwrap()["stringData"]["password"]
            .as_str()
            .unwrap()
            .to_owned();
    let options = ServerOptions {
        cluster: true,
        extra: vec![
            ("requirepass".into(), password.clone()),
            ("masterauth".into(), password.clone()),
        ],
        ..ServerOptions::default()
    };
    let new = TestServer::start_many(3, &options);
    for (shard, server) in new.iter().enumerate() {
        api.put(
            &format!("/api/v1/namespaces/shop/pods/c-shard-{shard}-0"),
            redis_pod(
                "c",
                shard as u32,
                0,
                "127.0.0.1",
                server.port(),
                "worker-0",
                "rev-1",
            ),
        );
    }
    // The sync pod: a real sync into NEW, its admin listener at the pod's IP and metrics port.
    let state = tempfile::tempdir().unwrap();
    let mut target = Endpoint::new(format!("127.0.0.1:{}", new[0].port()));
    target.password = Some(password.clone());
    let latest = Arc::new(Mutex::new(Default::default()));
    let config = SyncConfig::new(Endpoint::new(old_seed.clone()), target, state.path());
    let sync = {
        let latest = Arc::clone(&latest);
        // The sync is started once NEW serves every slot, as the operator scales its pod up.
        for _ in 0..20 {
            reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
            if condition(&api, "SlotsCovered").0 == "True" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(condition(&api, "SlotsCovered").0, "True");
        Background::start(config, move |status| {
            *latest.lock().unwrap() = status.clone();
        })
    };
    cinnabar_replication::admin::serve(
        format!("127.0.0.1:{sync_port}").parse().unwrap(),
        latest,
        Arc::clone(sync.live()),
    )
    .unwrap();
    api.put(
        "/api/v1/namespaces/shop/pods/c-sync-abc",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "c-sync-abc", "namespace": "shop", "creationTimestamp": "2026-12-05T10:00:00Z",
                            "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "sync"}},
               "status": {"podIP": "127.0.0.1"}}),
    );
    Migration {
        api,
        ctx,
        _old: old,
        new,
        proxies,
        sync,
        password,
        _state: state,
    }
}

/// Reconciles NEW until `done` holds (at most `rounds` times, 200 ms apart).
async fn reconcile_until(m: &Migration, rounds: usize, mut done: impl FnMut(&FakeApi) -> bool) {
    for _ in 0..rounds {
        reconcile(cluster(&m.api), Arc::clone(&m.ctx))
            .await
            .unwrap();
        if done(&m.api) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "not reached after {rounds} reconciles: {:#}",
        m.api.get(NEW).unwrap()["status"]
    );
}

/// Every acknowledged key is on NEW, read from its nodes.
fn assert_all_on_new(m: &Migration, keys: &[String]) {
    let urls: Vec<String> = m
        .new
        .iter()
        .map(|s| format!("redis://:{}@127.0.0.1:{}/", m.password, s.port()))
        .collect();
    let mut conn = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !redis::cmd("EXISTS")
                .arg(k)
                .query::<bool>(&mut conn)
                .unwrap()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new cluster: {:?}",
        missing.len(),
        keys.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_the_old_proxies_switch_together_with_no_client_error_and_stay_switched() {
    let mut m = migration(json!({"cluster": "old", "maxPauseMs": 2000}), TOKEN).await;
    // An older cluster moved to OLD before: its proxy serves OLD's nodes and moves with them.
    let older_port = reserve_port().port();
    m.api.put(
        "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/older",
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "older", "namespace": "shop", "uid": "older-uid", "generation": 1,
                            "annotations": {"cinnabar.io/served-by": "old"}},
               "spec": {"shards": 1, "monitoring": {"metricsPort": older_port}}}),
    );
    secret(&m.api, "older-admin", "token", "older-token");
    secret(&m.api, "older-auth", "password", "unused");
    let mut config =
        cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), m._old.seeds());
    config.admin_listen = Some(format!("127.0.0.4:{older_port}").parse().unwrap());
    config.admin_token = Some("older-token".into());
    let older = cinnabar_proxy::start(config).unwrap();
    m.api.put(
        "/api/v1/namespaces/shop/pods/older-proxy-0",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "older-proxy-0", "namespace": "shop",
                            "labels": {"app.kubernetes.io/instance": "older", "app.kubernetes.io/component": "proxy"}},
               "status": {"podIP": "127.0.0.4"}}),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        writer(
            m.proxies[0].local_addr().to_string(),
            "a",
            Arc::clone(&stop),
        ),
        writer(
            m.proxies[1].local_addr().to_string(),
            "b",
            Arc::clone(&stop),
        ),
        writer(older.local_addr().to_string(), "c", Arc::clone(&stop)),
    ];
    // Every reconcile's (InSync, Switched) until switched: the status shows the sync in sync
    // before it shows the switch.
    let mut seen: Vec<(String, String)> = Vec::new();
    reconcile_until(&m, 100, |api| {
        let state = (condition(api, "InSync").0, condition(api, "Switched").0);
        let done = state.1 == "True";
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        done
    })
    .await;
    assert!(
        seen.contains(&("True".into(), "False".into())),
        "InSync=True was never reported before the switch: {seen:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    for w in writers {
        let (keys, errors, slow) = tokio::task::spawn_blocking(move || w.join().unwrap())
            .await
            .unwrap();
        assert!(errors.is_empty(), "client errors: {errors:?}");
        acked.extend(keys);
        slowest = slowest.max(slow);
    }
    // Both proxies serve NEW's three masters, and the older cluster's too.
    for proxy in m.proxies.iter().chain([&older]) {
        assert_eq!(proxy.masters().len(), 3, "{:?}", proxy.masters());
    }
    let older_object = m
        .api
        .get("/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/older")
        .unwrap();
    assert_eq!(
        older_object["metadata"]["annotations"]["cinnabar.io/served-by"],
        "c"
    );
    assert_eq!(
        m.api
            .get("/api/v1/namespaces/shop/secrets/older-auth")
            .unwrap()["data"]["served-password"],
        b64(&m.password)
    );
    assert_all_on_new(&m, &acked);
    let switch = switch_status(&m.api);
    eprintln!(
        "switch: {switch:#}\n{} writes acknowledged, slowest {slowest:?}",
        acked.len()
    );
    assert_eq!(switch["phase"], "Switched");
    assert_eq!(switch["attempts"], 1);
    assert!(switch["pauseMs"].as_f64().unwrap() < 2000.0, "{switch:#}");
    let proxies = switch["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 3);
    assert!(proxies.iter().all(|p| p["switched"] == true), "{switch:#}");
    assert_eq!(switch["alsoMoved"], json!(["older"]));
    // The migration's conditions.
    assert_eq!(
        condition(&m.api, "Syncing"),
        ("False".into(), "SyncStopped".into())
    );
    assert_eq!(
        condition(&m.api, "Failed"),
        ("False".into(), "AsExpected".into())
    );
    assert_eq!(
        m.api.get(NEW).unwrap()["status"]["sync"]["phase"],
        "Stopped"
    );
    // The sync stopped: its objects are gone.
    assert!(
        m.api
            .get("/apis/apps/v1/namespaces/shop/deployments/c-sync")
            .is_none()
    );
    // OLD's proxies start on NEW from now on: annotation, password, configuration.
    let old = m.api.get(OLD).unwrap();
    assert_eq!(old["metadata"]["annotations"]["cinnabar.io/served-by"], "c");
    let auth = m
        .api
        .get("/api/v1/namespaces/shop/secrets/old-auth")
        .unwrap();
    assert_eq!(auth["data"]["served-password"], b64(&m.password));
    assert_eq!(auth["data"]["password"], b64("unused-old-password"));
    let config = m
        .api
        .get("/api/v1/namespaces/shop/configmaps/old-proxy")
        .unwrap();
    let toml = config["data"]["cinnabar.toml"].as_str().unwrap();
    assert!(
        toml.contains("seeds = [\"c-nodes.shop.svc:6379\"]"),
        "{toml}"
    );
    assert!(
        toml.contains("backend_password_file = \"/etc/cinnabar/auth/served-password\""),
        "{toml}"
    );

    // Later reconciles change nothing: no new attempt, no condition transition.
    let before = conditions(&m.api);
    for _ in 0..3 {
        reconcile(cluster(&m.api), Arc::clone(&m.ctx))
            .await
            .unwrap();
    }
    assert_eq!(switch_status(&m.api)["attempts"], 1);
    assert_eq!(conditions(&m.api), before);

    // A proxy container restarts before its pod sees the new configuration and comes back on
    // OLD's nodes: the operator replaces the pod (its Deployment makes one that starts on NEW).
    let admin = m.proxies[0].admin_addr().unwrap();
    m.proxies.remove(0).shutdown();
    let mut config =
        cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), m._old.seeds());
    config.admin_listen = Some(admin);
    config.admin_token = Some(TOKEN.into());
    let restarted = cinnabar_proxy::start(config).unwrap();
    assert_eq!(restarted.masters().len(), 2, "back on OLD");
    reconcile(cluster(&m.api), Arc::clone(&m.ctx))
        .await
        .unwrap();
    assert!(
        m.api
            .get("/api/v1/namespaces/shop/pods/old-proxy-0")
            .is_none(),
        "the stale proxy's pod is replaced"
    );
    assert!(
        m.api
            .get("/api/v1/namespaces/shop/pods/old-proxy-1")
            .is_some(),
        "a proxy on NEW is left alone"
    );
    restarted.shutdown();

    // A later switch moves OLD's and the older cluster's proxies on to another cluster `next`:
    // this cluster neither takes them back nor replaces their pods (they serve `next`, whose
    // masters are not this cluster's; a proxy on OLD's nodes stands in for them here).
    let older_admin = older.admin_addr().unwrap();
    older.shutdown();
    for path in [
        OLD,
        "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/older",
    ] {
        let mut object = m.api.get(path).unwrap();
        object["metadata"]["annotations"]["cinnabar.io/served-by"] = json!("next");
        m.api.put(path, object);
    }
    let mut config =
        cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), m._old.seeds());
    config.admin_listen = Some(older_admin);
    config.admin_token = Some("older-token".into());
    let elsewhere = cinnabar_proxy::start(config).unwrap();
    for _ in 0..2 {
        reconcile(cluster(&m.api), Arc::clone(&m.ctx))
            .await
            .unwrap();
    }
    for path in [
        OLD,
        "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/older",
    ] {
        assert_eq!(
            m.api.get(path).unwrap()["metadata"]["annotations"]["cinnabar.io/served-by"],
            "next",
            "{path}"
        );
    }
    assert!(
        m.api
            .get("/api/v1/namespaces/shop/pods/older-proxy-0")
            .is_some()
    );
    elsewhere.shutdown();
    let Migration { sync, .. } = m;
    let _ = tokio::task::spawn_blocking(move || sync.stop()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_switch_is_retried_then_abandoned_and_reported_and_a_spec_change_tries_again() {
    let m = migration(
        json!({"cluster": "old", "maxPauseMs": 2000, "maxAttempts": 2}),
        "a-wrong-token",
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [writer(
        m.proxies[0].local_addr().to_string(),
        "a",
        Arc::clone(&stop),
    )];
    reconcile_until(&m, 100, |api| switch_status(api)["phase"] == "Retrying").await;
    assert_eq!(
        condition(&m.api, "Switched"),
        ("False".into(), "Retrying".into())
    );
    assert_eq!(condition(&m.api, "Failed").0, "False");
    reconcile_until(&m, 50, |api| switch_status(api)["phase"] == "Abandoned").await;
    assert_eq!(
        condition(&m.api, "Failed"),
        ("True".into(), "SwitchAbandoned".into())
    );
    assert_eq!(switch_status(&m.api)["attempts"], 2);
    // Abandoned: no more attempts, the proxies serve OLD, the sync keeps running.
    for _ in 0..3 {
        reconcile(cluster(&m.api), Arc::clone(&m.ctx))
            .await
            .unwrap();
    }
    assert_eq!(switch_status(&m.api)["attempts"], 2);
    assert_eq!(m.proxies[0].masters().len(), 2);
    assert!(
        m.api
            .get("/apis/apps/v1/namespaces/shop/deployments/c-sync")
            .is_some()
    );
    assert!(
        m.api.get(OLD).unwrap()["metadata"]["annotations"].is_null(),
        "OLD is not marked as served by NEW"
    );
    // A person fixes the token and edits the spec: a new series of attempts switches.
    secret(&m.api, "old-admin", "token", TOKEN);
    let mut stored = m.api.get(NEW).unwrap();
    stored["spec"]["syncFrom"]["switch"]["maxAttempts"] = json!(3);
    stored["metadata"]["generation"] = json!(generation(&m.api, NEW) + 1);
    m.api.put(NEW, stored);
    reconcile_until(&m, 100, |api| condition(api, "Switched").0 == "True").await;
    assert_eq!(
        condition(&m.api, "Failed"),
        ("False".into(), "AsExpected".into())
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (keys, errors, _) = tokio::task::spawn_blocking(move || w.join().unwrap())
            .await
            .unwrap();
        assert!(errors.is_empty(), "client errors: {errors:?}");
        assert_all_on_new(&m, &keys);
    }
    let Migration { sync, .. } = m;
    let _ = tokio::task::spawn_blocking(move || sync.stop()).await;
}
