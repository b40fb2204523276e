//! The objects a `RedisCluster` owns: a snapshot of the whole set for a small and a
//! production-like spec, and the rules each object must keep whatever the spec.
//!
//! Snapshots live in `tests/snapshots/`; after an intended change, regenerate them with
//! `CINNABAR_UPDATE_SNAPSHOTS=1 cargo test -p cinnabar-operator --test objects` and review the diff.

#![allow(clippy::unwrap_used)]

use cinnabar_operator::objects::{BuildOptions, Objects, build, maxmemory_bytes};
use cinnabar_operator::{RedisCluster, RedisClusterSpec};
use kube::Resource;
use serde_json::{Value, json};

fn cluster(name: &str, spec: Value) -> RedisCluster {
    let spec: RedisClusterSpec = serde_json::from_value(spec).unwrap();
    let mut cluster = RedisCluster::new(name, spec);
    cluster.meta_mut().namespace = Some("shop".into());
    cluster.meta_mut().uid = Some("0b1e-uid".into());
    cluster
}

fn small() -> RedisCluster {
    cluster("cache", json!({"shards": 3, "replicasPerShard": 1}))
}

fn production() -> RedisCluster {
    cluster(
        "orders",
        json!({
            "shards": 6, "replicasPerShard": 2, "image": "redis:7.2.5",
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
            "maxmemoryPercent": 75, "maxmemoryPolicy": "volatile-lru",
            "redisConfig": {"lazyfree-lazy-eviction": "yes"},
            "persistence": {"aof": "everysec", "rdbSave": "3600 1", "size": "20Gi", "storageClass": "fast-ssd", "retention": "Retain"},
            "placement": {"hostSpread": "Required", "zoneSpread": "Preferred",
                          "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "redis", "effect": "NoSchedule"}],
                          "nodeSelector": {"pool": "redis"}},
            "proxy": {"replicas": 3, "autoscaling": {"minReplicas": 3, "maxReplicas": 12, "targetCpuPercent": 70},
                      "usersSecret": "orders-users", "extraDeniedCommands": ["FLUSHDB"], "drainSeconds": 30,
                      "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}},
            "monitoring": {"serviceMonitor": true},
            "backup": {"url": "s3://orders-backups/redis", "credentialsSecret": "orders-s3",
                       "endpoint": "https://s3.eu-west-1.amazonaws.com", "region": "eu-west-1",
                       "schedule": "15 */6 * * *", "keep": 14, "keepDays": 30, "continuous": true,
                       "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}
        }),
    )
}

fn options() -> BuildOptions {
    BuildOptions {
        proxy_image: "ghcr.io/example/cinnabar:0.1.0".into(),
    }
}

/// Every object, as JSON, in a stable order.
fn all(objects: &Objects) -> Vec<Value> {
    let mut out = vec![
        serde_json::to_value(&objects.config_map).unwrap(),
        serde_json::to_value(&objects.headless_service).unwrap(),
        serde_json::to_value(&objects.client_service).unwrap(),
    ];
    out.extend(
        objects
            .statefulsets
            .iter()
            .map(|o| serde_json::to_value(o).unwrap()),
    );
    out.extend(
        objects
            .pdbs
            .iter()
            .map(|o| serde_json::to_value(o).unwrap()),
    );
    out.extend(
        objects
            .node_port_services
            .iter()
            .map(|o| serde_json::to_value(o).unwrap()),
    );
    if let Some(proxy) = &objects.proxy {
        out.push(serde_json::to_value(&proxy.config_map).unwrap());
        out.push(serde_json::to_value(&proxy.deployment).unwrap());
        out.push(serde_json::to_value(&proxy.service).unwrap());
        out.push(serde_json::to_value(&proxy.pdb).unwrap());
        out.extend(proxy.hpa.iter().map(|o| serde_json::to_value(o).unwrap()));
    }
    out.extend(objects.service_monitor.clone());
    out.extend(
        objects
            .sentinel_service
            .iter()
            .map(|o| serde_json::to_value(o).unwrap()),
    );
    if let Some(sync) = &objects.sync {
        out.push(serde_json::to_value(&sync.deployment).unwrap());
        out.push(serde_json::to_value(&sync.service).unwrap());
        out.extend(
            sync.state_claim
                .iter()
                .map(|o| serde_json::to_value(o).unwrap()),
        );
    }
    if let Some(backup) = &objects.backup {
        out.push(serde_json::to_value(&backup.cron_job).unwrap());
        out.extend(
            backup
                .continuous
                .iter()
                .map(|o| serde_json::to_value(o).unwrap()),
        );
    }
    out
}

fn migrating() -> RedisCluster {
    cluster(
        "sessions",
        json!({"shards": 2, "persistence": {"size": "5Gi", "storageClass": "fast-ssd"},
               "syncFrom": {"address": "legacy:6379", "passwordSecret": {"name": "legacy"}}}),
    )
}

fn snapshot(name: &str, objects: &Objects) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/snapshots/{name}.json"));
    let text = serde_json::to_string_pretty(&all(objects)).unwrap() + "\n";
    if std::env::var_os("CINNABAR_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == text,
        "{} differs from the objects built now; if the change is intended, regenerate with \
         CINNABAR_UPDATE_SNAPSHOTS=1 cargo test -p cinnabar-operator --test objects",
        path.display()
    );
}

#[test]
fn the_object_sets_match_their_snapshots() {
    snapshot("small", &build(&small(), &options()).unwrap());
    snapshot("production", &build(&production(), &options()).unwrap());
}

fn group() -> RedisCluster {
    cluster(
        "orders",
        json!({"topology": "Sentinel", "shards": 1, "replicasPerShard": 2, "image": "redis:7.2.5",
               "persistence": {"size": "10Gi"}}),
    )
}

#[test]
fn a_sentinel_group_matches_its_snapshot() {
    snapshot("sentinel", &build(&group(), &options()).unwrap());
}

#[test]
fn a_group_has_a_data_and_a_sentinel_statefulset_each_kept_apart_with_a_budget() {
    let objects = build(&group(), &options()).unwrap();
    let sets: Vec<Value> = objects
        .statefulsets
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    assert_eq!(sets.len(), 2);
    let (data, voters) = (&sets[0], &sets[1]);
    assert_eq!(data["metadata"]["name"], "orders-redis");
    assert_eq!(data["spec"]["replicas"], 3);
    assert_eq!(data["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(voters["metadata"]["name"], "orders-sentinel");
    assert_eq!(voters["spec"]["replicas"], 3);
    assert_eq!(
        voters["spec"]["updateStrategy"]["type"], "RollingUpdate",
        "Kubernetes replaces one Sentinel at a time, each ready once it monitors again"
    );
    for set in [data, voters] {
        let anti = &set["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
        let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            required["labelSelector"]["matchLabels"],
            set["spec"]["selector"]["matchLabels"]
        );
    }
    let data_pod = &data["spec"]["template"]["spec"]["containers"][0];
    let start = data_pod["command"][2].as_str().unwrap();
    assert!(
        start.contains("sentinel get-master-addr-by-name orders") && start.contains("--replicaof"),
        "a data pod asks the Sentinels whom to follow: {start}"
    );
    assert!(!start.contains("cluster"), "{start}");
    let prestop = data_pod["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .unwrap();
    assert!(prestop.contains("sentinel failover orders"), "{prestop}");
    assert!(prestop.contains("client pause"), "{prestop}");
    let pdbs: Vec<Value> = objects
        .pdbs
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    assert_eq!(pdbs.len(), 2);
    for (pdb, set) in pdbs.iter().zip(&sets) {
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            set["spec"]["selector"]["matchLabels"]
        );
    }
    let conf = objects.config_map.data.as_ref().unwrap();
    assert!(!conf["redis.conf"].contains("cluster-enabled"));
    assert!(conf["redis.conf"].contains("min-replicas-to-write 1"));
    assert!(conf["sentinel.conf"].contains("port 26379"));
    let sentinels = serde_json::to_value(objects.sentinel_service.as_ref().unwrap()).unwrap();
    assert_eq!(sentinels["metadata"]["name"], "orders-sentinels");
    assert_eq!(sentinels["spec"]["clusterIP"], "None");
    let toml = &objects
        .proxy
        .as_ref()
        .unwrap()
        .config_map
        .data
        .as_ref()
        .unwrap()["cinnabar.toml"];
    assert!(!toml.contains("seeds"), "{toml}");
    assert!(
        toml.contains("[group]\nname = \"orders\"")
            && toml.contains("\"orders-sentinel-2.orders-sentinels.shop.svc:26379\""),
        "{toml}"
    );
}

#[test]
fn every_object_is_owned_by_its_cluster_and_labelled() {
    for cluster in [small(), production(), migrating(), group()] {
        for object in all(&build(&cluster, &options()).unwrap()) {
            let meta = &object["metadata"];
            let owner = &meta["ownerReferences"][0];
            assert_eq!(owner["kind"], "RedisCluster", "{}", meta["name"]);
            assert_eq!(owner["controller"], true, "{}", meta["name"]);
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"],
                "cinnabar-operator"
            );
            assert_eq!(meta["namespace"], "shop");
        }
    }
}

#[test]
fn each_shard_keeps_its_members_apart_and_has_its_own_budget() {
    let objects = build(&production(), &options()).unwrap();
    assert_eq!(objects.statefulsets.len(), 6);
    for (shard, set) in objects.statefulsets.iter().enumerate() {
        let set = serde_json::to_value(set).unwrap();
        assert_eq!(set["metadata"]["name"], format!("orders-shard-{shard}"));
        assert_eq!(set["spec"]["replicas"], 3);
        assert_eq!(
            set["spec"]["updateStrategy"]["type"], "OnDelete",
            "the operator restarts pods"
        );
        let pod = &set["spec"]["template"]["spec"];
        let anti = &pod["affinity"]["podAntiAffinity"];
        let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            required["labelSelector"]["matchLabels"]["cinnabar.io/shard"],
            shard.to_string()
        );
        let preferred =
            &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        assert_eq!(preferred["topologyKey"], "topology.kubernetes.io/zone");
        let container = &pod["containers"][0];
        assert!(container["readinessProbe"]["exec"].is_object());
        assert!(container["livenessProbe"]["tcpSocket"].is_object());
        assert_eq!(container["resources"]["limits"]["memory"], "4Gi");
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast-ssd"
        );
        let pdb = serde_json::to_value(&objects.pdbs[shard]).unwrap();
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["cinnabar.io/shard"],
            shard.to_string()
        );
    }
    let relaxed = cluster(
        "c",
        json!({"shards": 1, "placement": {"hostSpread": "Preferred", "zoneSpread": "Disabled"}}),
    );
    let set = serde_json::to_value(&build(&relaxed, &options()).unwrap().statefulsets[0]).unwrap();
    let anti = &set["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null());
    assert_eq!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_proxy_drains_before_it_stops_and_scales_gently() {
    let objects = build(&production(), &options()).unwrap();
    let proxy = objects.proxy.unwrap();
    let deployment = serde_json::to_value(&proxy.deployment).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 40);
    let container = &pod["containers"][0];
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["image"], "ghcr.io/example/cinnabar:0.1.0");
    let hpa = serde_json::to_value(proxy.hpa.unwrap()).unwrap();
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
        1
    );
    let toml = proxy.config_map.data.unwrap()["cinnabar.toml"].clone();
    assert!(
        toml.contains("seeds = [\"orders-nodes.shop.svc:6379\"]"),
        "{toml}"
    );
    assert!(
        toml.contains("users_file") && toml.contains("deny = [\"FLUSHDB\"]"),
        "{toml}"
    );
    assert!(objects.service_monitor.is_some());
}

#[test]
fn maxmemory_follows_the_memory_limit_and_no_secret_is_in_a_config_map() {
    let spec = cluster(
        "c",
        json!({"shards": 1, "resources": {"limits": {"memory": "1Gi"}}}),
    )
    .spec;
    assert_eq!(maxmemory_bytes(&spec), Some(858_993_459));
    let objects = build(&production(), &options()).unwrap();
    let conf = objects.config_map.data.clone().unwrap()["redis.conf"].clone();
    assert!(
        conf.contains("maxmemory 3221225472\n"),
        "75% of 4Gi: {conf}"
    );
    assert!(
        conf.contains("appendfsync everysec") && conf.contains("save \"3600 1\""),
        "{conf}"
    );
    assert!(conf.contains("lazyfree-lazy-eviction yes"));
    for text in [
        conf,
        objects.proxy.unwrap().config_map.data.unwrap()["cinnabar.toml"].clone(),
    ] {
        assert!(
            !text.contains("requirepass ") && !text.to_lowercase().contains("password ="),
            "{text}"
        );
    }
}

#[test]
fn an_invalid_spec_builds_nothing_and_says_why() {
    let bad = cluster(
        "c",
        json!({"shards": 1, "redisConfig": {"cluster-enabled": "no"}}),
    );
    let err = build(&bad, &options()).unwrap_err();
    assert_eq!(err.reason, "OwnedDirective");
}

#[test]
fn a_config_change_changes_the_pod_templates_so_pods_get_replaced() {
    let fingerprint = |spec: Value| {
        let objects = build(&cluster("c", spec), &options()).unwrap();
        let set = serde_json::to_value(&objects.statefulsets[0]).unwrap();
        let proxy = serde_json::to_value(&objects.proxy.unwrap().deployment).unwrap();
        (
            set["spec"]["template"]["metadata"]["annotations"]["cinnabar.io/config-fingerprint"]
                .clone(),
            proxy["spec"]["template"]["metadata"]["annotations"]["cinnabar.io/config-fingerprint"]
                .clone(),
        )
    };
    let base = fingerprint(json!({"shards": 1}));
    assert!(base.0.is_string() && base.1.is_string());
    assert_eq!(fingerprint(json!({"shards": 1})), base, "stable");
    let tuned = fingerprint(json!({"shards": 1, "redisConfig": {"hz": "50"}}));
    assert_ne!(tuned.0, base.0, "redis.conf changed");
    assert_eq!(tuned.1, base.1, "the proxy's settings did not");
    let drained = fingerprint(json!({"shards": 1, "proxy": {"drainSeconds": 60}}));
    assert_ne!(drained.1, base.1);
}

#[test]
fn the_sync_keeps_its_secrets_in_files_and_its_state_on_the_clusters_storage() {
    assert!(build(&small(), &options()).unwrap().sync.is_none());
    let sync = build(&migrating(), &options()).unwrap().sync.unwrap();
    let deployment = serde_json::to_value(&sync.deployment).unwrap();
    assert_eq!(deployment["metadata"]["name"], "sessions-sync");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/example/cinnabar:0.1.0");
    assert_eq!(
        container["terminationMessagePolicy"],
        "FallbackToLogsOnError"
    );
    assert_eq!(pod["securityContext"]["fsGroup"], 10001);
    let text = serde_json::to_string(&deployment).unwrap();
    assert!(
        !text.contains("secretKeyRef"),
        "no password in the environment"
    );
    assert_eq!(
        pod["volumes"][2]["secret"],
        json!({"secretName": "legacy", "items": [{"key": "password", "path": "password"}]}),
        "the Secret key defaults to `password`"
    );
    let claim = serde_json::to_value(sync.state_claim.unwrap()).unwrap();
    assert_eq!(claim["metadata"]["name"], "sessions-sync-state");
    assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(
        claim["metadata"]["labels"]["app.kubernetes.io/component"],
        "sync"
    );
}

#[test]
fn a_cluster_switched_online_configures_new_proxies_for_the_cluster_it_now_serves() {
    let mut switched = small();
    switched.meta_mut().annotations = Some(
        [(
            cinnabar_operator::objects::SERVED_BY_ANNOTATION.to_owned(),
            "cache-v2".to_owned(),
        )]
        .into(),
    );
    let before = build(&small(), &options()).unwrap().proxy.unwrap();
    let objects = build(&switched, &options()).unwrap();
    snapshot("switched", &objects);
    let after = objects.proxy.unwrap();
    let toml = after.config_map.data.as_ref().unwrap()["cinnabar.toml"].clone();
    assert!(
        toml.contains("seeds = [\"cache-v2-nodes.shop.svc:6379\"]"),
        "{toml}"
    );
    assert!(
        toml.contains("backend_password_file = \"/etc/cinnabar/auth/served-password\""),
        "{toml}"
    );
    // The running proxies already serve the other cluster: no rollout (it would cut their
    // clients), only the pods started from now on read the new configuration.
    assert_eq!(
        serde_json::to_value(&before.deployment).unwrap(),
        serde_json::to_value(&after.deployment).unwrap()
    );
}
