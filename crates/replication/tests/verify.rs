//! `verify` against real servers: a standalone source copied key by key (DUMP/RESTORE) into a
//! real 3-master Redis Cluster compares identical; then each kind of difference made on the
//! target is found and named.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use cinnabar_replication::verify::{Difference, Endpoint, VerifyOptions, verify};
use cinnabar_testkit::{TestCluster, TestServer};

fn connection(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn cluster_connection(cluster: &TestCluster) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = cluster.servers().iter().map(TestServer::url).collect();
    redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Every type, small and big, some with TTLs, and a stream with a group and pending entries.
fn fill(source: &mut redis::Connection) {
    let q = |c: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.exec(c).unwrap();
    };
    q(source, &["SET", "s:plain", "hello"]);
    q(source, &["SET", "s:ttl", "bye", "PX", "600000"]);
    q(source, &["RPUSH", "l:small", "a", "b", "c"]);
    q(source, &["SADD", "set:small", "x", "y", "z"]);
    q(source, &["HSET", "h:small", "f1", "v1", "f2", "v2"]);
    q(source, &["ZADD", "z:small", "1", "one", "2.5", "two"]);
    let mut big = redis::cmd("RPUSH");
    big.arg("l:big");
    let mut set = redis::cmd("SADD");
    set.arg("set:big");
    let mut hash = redis::cmd("HSET");
    hash.arg("h:big");
    for i in 0..3000 {
        big.arg(i);
        set.arg(format!("m{i}"));
        hash.arg(format!("f{i}")).arg(i);
    }
    big.exec(source).unwrap();
    set.exec(source).unwrap();
    hash.exec(source).unwrap();
    for i in 0..20 {
        q(source, &["XADD", "x:stream", "*", "n", &i.to_string()]);
    }
    q(source, &["XGROUP", "CREATE", "x:stream", "g1", "0"]);
    q(
        source,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "c1",
            "COUNT",
            "5",
            "STREAMS",
            "x:stream",
            ">",
        ],
    );
    for i in 0..50 {
        q(source, &["SET", &format!("k:{i}"), &i.to_string()]);
    }
}

/// Copies every key of `source` to the cluster with DUMP/RESTORE (what the applier does for
/// small values), keeping TTLs.
fn copy(source: &mut redis::Connection, target: &mut redis::cluster::ClusterConnection) {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(source).unwrap();
    for key in keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(&key).query(source).unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(source).unwrap();
        redis::cmd("RESTORE")
            .arg(&key)
            .arg(ttl.max(0))
            .arg(payload)
            .arg("REPLACE")
            .exec(target)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_faithful_copy_verifies_clean_and_each_difference_is_named() {
    let source_server = TestServer::start();
    let cluster = TestCluster::start(3, 0).await;
    let mut source = connection(&source_server.url());
    fill(&mut source);
    let mut target = cluster_connection(&cluster);
    copy(&mut source, &mut target);
    let from = Endpoint::new(source_server.addr().to_string());
    let to = Endpoint::new(cluster.servers()[0].addr().to_string());
    let options = VerifyOptions {
        batch: 100,
        ..VerifyOptions::default()
    };
    let source_keys: u64 = redis::cmd("DBSIZE").query(&mut source).unwrap();
    let report = tokio::task::spawn_blocking({
        let (from, to) = (from.clone(), to.clone());
        move || verify(&from, &to, &options, |_| {}).unwrap()
    })
    .await
    .unwrap();
    assert!(report.identical(), "{:?}", report.differences);
    assert_eq!(report.keys_checked, source_keys);

    // One difference of each kind on the target.
    let run = |c: &mut redis::cluster::ClusterConnection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.exec(c).unwrap();
    };
    run(&mut target, &["DEL", "k:1"]);
    run(&mut target, &["SET", "k:2", "changed"]);
    run(&mut target, &["DEL", "k:3"]);
    run(&mut target, &["RPUSH", "k:3", "now a list"]);
    run(&mut target, &["PERSIST", "s:ttl"]);
    run(&mut target, &["SREM", "set:big", "m7"]);
    run(&mut target, &["SADD", "set:big", "intruder"]);
    run(&mut target, &["XACK", "x:stream", "g1", "0-0"]);
    run(&mut target, &["XGROUP", "CREATE", "x:stream", "g2", "$"]);
    run(&mut target, &["SET", "extra:1", "x"]);
    run(&mut target, &["SET", "extra:2", "x"]);
    let report = tokio::task::spawn_blocking(move || verify(&from, &to, &options, |_| {}).unwrap())
        .await
        .unwrap();
    let text: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
    assert_eq!(report.differences_total, 7, "{text:#?}");
    assert!(report.differences.contains(&Difference::Missing {
        key: b"k:1".to_vec()
    }));
    assert!(
        report
            .differences
            .iter()
            .any(|d| matches!(d, Difference::Value { key, .. } if key == b"k:2"))
    );
    assert!(report.differences.iter().any(|d| matches!(d, Difference::Type { key, source, target } if key == b"k:3" && source == "string" && target == "list")));
    assert!(
        report
            .differences
            .iter()
            .any(|d| matches!(d, Difference::Ttl { key, target_ms: -1, .. } if key == b"s:ttl"))
    );
    assert!(report.differences.iter().any(|d| matches!(d, Difference::Value { key, detail } if key == b"set:big" && detail == "elements differ")));
    assert!(report.differences.iter().any(|d| matches!(d, Difference::Value { key, detail } if key == b"x:stream" && detail.contains("groups"))));
    assert!(report.differences.contains(&Difference::ExtraKeys {
        source: source_keys,
        target: source_keys + 1
    }));
}
