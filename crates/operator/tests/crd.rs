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
    assert!(
        repo("deploy/crds/redisclusters.cinnabar.io.yaml") == generated,
        "deploy/crds/redisclusters.cinnabar.io.yaml is stale; regenerate it with \
         `cargo run --bin cinnabar -- crd > deploy/crds/redisclusters.cinnabar.io.yaml`"
    );
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
