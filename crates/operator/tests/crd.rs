//! The checked-in CRD matches the Rust types, and the examples are valid `RedisCluster`s.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use cinnabar_operator::RedisCluster;
use cinnabar_operator::objects::{BuildOptions, build};

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn the_checked_in_crd_is_what_the_types_generate() {
    let generated = cinnabar_operator::crd::crd_yaml().unwrap();
    for copy in [
        "deploy/crds/redisclusters.cinnabar.io.yaml",
        "deploy/helm/cinnabar/crds/redisclusters.cinnabar.io.yaml",
    ] {
        assert!(
            repo(copy) == generated,
            "{copy} is stale; regenerate it with `cargo run --bin cinnabar -- crd > {copy}`"
        );
    }
}

#[test]
fn the_examples_are_valid_clusters_that_build() {
    for file in [
        "examples/redis-cluster-small.yaml",
        "examples/redis-cluster-production.yaml",
    ] {
        let cluster: RedisCluster =
            serde_saphyr::from_str(&repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let options = BuildOptions {
            proxy_image: "cinnabar:test".into(),
        };
        build(&cluster, &options).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn the_chart_values_parse_and_its_rbac_grants_exactly_what_the_operator_uses() {
    for file in [
        "values.yaml",
        "values-sandbox.yaml",
        "values-stage.yaml",
        "values-production.yaml",
    ] {
        let text = repo(&format!("deploy/helm/cinnabar/{file}"));
        let _: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let rbac = repo("deploy/helm/cinnabar/templates/rbac.yaml");
    let granted: Vec<&str> = rbac
        .lines()
        .filter_map(|l| l.trim().strip_prefix("resources: ["))
        .flat_map(|l| l.trim_end_matches(']').split(", "))
        .map(|r| r.trim_matches('"'))
        .collect();
    assert_eq!(
        granted,
        [
            "redisclusters",
            "redisclusters/status",
            "redisclusters/finalizers",
            "statefulsets",
            "deployments",
            "services",
            "configmaps",
            "secrets",
            "pods",
            "persistentvolumeclaims",
            "poddisruptionbudgets",
            "horizontalpodautoscalers",
            "events",
            "servicemonitors",
            "leases",
        ]
    );
    assert!(!rbac.contains("\"*\""), "no wildcards");
    let chart = repo("deploy/helm/cinnabar/Chart.yaml");
    assert!(chart.contains("apiVersion: v2") && chart.contains("name: cinnabar"));
}
