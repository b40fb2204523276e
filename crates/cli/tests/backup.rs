//! `cinnabar backup` and `cinnabar restore` through the binary: a 3x1 local cluster backed up to
//! a `file://` store, listed, restored into a 5-master cluster, refused when the target is not
//! empty, and pruned. (The S3 path and point-in-time restore are tested in the backup crate,
//! against a real S3 server.)

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::{Cinnabar, cinnabar, plain_connection};

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn backup_list_restore_into_another_shape_and_prune() {
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store_dir.path().display());
    let source = Cinnabar::new(3, 1);
    let endpoint = source.up_detached(3, 1);
    let mut conn = plain_connection(&endpoint);
    for i in 0..2000 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .exec(&mut conn)
            .unwrap();
    }
    redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();

    let manifest = json(&source.run(&["backup", "--to", &url, "--cluster", "orders", "--json"]));
    assert_eq!(manifest["cluster"], "orders");
    assert_eq!(manifest["shards"].as_array().unwrap().len(), 3);
    let keys: u64 = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(keys, 2001);

    let listed = json(
        &cinnabar()
            .args(["backup", "list", "--from", &url, "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], manifest["name"]);

    let target = Cinnabar::new(5, 0);
    let target_endpoint = target.up_detached(5, 0);
    let report = json(&target.run(&["restore", "--from", &url, "--json"]));
    assert_eq!(report["keys"], 2001);
    assert_eq!(report["backup"], manifest["name"]);
    let mut restored = plain_connection(&target_endpoint);
    let size: u64 = redis::cmd("DBSIZE").query(&mut restored).unwrap();
    assert_eq!(size, 2001);
    let value: String = redis::cmd("HGET")
        .arg("h")
        .arg("f")
        .query(&mut restored)
        .unwrap();
    assert_eq!(value, "v");

    let again = target.run(&["restore", "--from", &url]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );

    json(&source.run(&["backup", "--to", &url, "--cluster", "orders", "--json"]));
    let pruned = json(
        &cinnabar()
            .args(["backup", "prune", "--from", &url, "--keep", "1", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(pruned["deleted"], serde_json::json!([manifest["name"]]));
    let listed = json(
        &cinnabar()
            .args(["backup", "list", "--from", &url, "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(listed.as_array().unwrap().len(), 1);
}
