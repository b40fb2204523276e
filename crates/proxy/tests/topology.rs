//! Fan-outs after the cluster changed shape: DBSIZE, KEYS and INFO keyspace right after a
//! scale count every master, and a SCAN running across a scale-in, a scale-out, a failover or
//! a slot caught mid-migration still returns every key that existed for the whole scan.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use cinnabar_cluster::{MemoryJournal, OperateOptions, Operation, run_operation};
use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::{TestCluster, TestPlatform};

mod support;
use support::node_connection;

/// A proxy that refreshes on its own only once a minute, so nothing but the mechanisms under
/// test (announced changes, the staleness bound) can make it see a new master.
fn lazy_proxy(platform: &TestPlatform, staleness: Duration) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), platform.addrs());
    config.access.default_role = Some("admin".into());
    config.refresh_interval = Duration::from_secs(60);
    config.fan_out_max_staleness = staleness;
    cinnabar_proxy::start(config).unwrap()
}

fn client(proxy: &ProxyHandle) -> redis::Connection {
    let conn = redis::Client::open(format!("redis://{}/", proxy.local_addr()))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

async fn scale(platform: &mut TestPlatform, masters: usize) {
    let replicas = 0;
    operate(platform, Operation::Scale { masters, replicas }).await;
}

async fn operate(platform: &mut TestPlatform, operation: Operation) {
    let options = OperateOptions {
        timeout: Duration::from_secs(180),
        ..OperateOptions::default()
    };
    let mut log = Vec::new();
    let outcome = run_operation(
        operation,
        platform,
        &mut MemoryJournal::default(),
        &options,
        &mut |e| log.push(e.to_string()),
    )
    .await;
    if let Err(e) = outcome {
        panic!("{e}\n{}", log.join("\n"));
    }
}

fn write_keys(conn: &mut redis::Connection, prefix: &str, count: usize) -> HashSet<String> {
    let keys: HashSet<String> = (0..count).map(|i| format!("{prefix}:{i}")).collect();
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("SET").arg(key).arg(1).ignore();
    }
    pipe.exec(conn).unwrap();
    keys
}

fn dbsize(conn: &mut redis::Connection) -> usize {
    redis::cmd("DBSIZE").query(conn).unwrap()
}

/// One SCAN step: the next cursor and the keys it returned.
fn scan_step(conn: &mut redis::Connection, cursor: u64, count: usize) -> (u64, Vec<String>) {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(conn)
        .unwrap()
}

/// Scans from `cursor` to the end; at most `steps` steps, so a scan that never ends fails.
fn scan_to_end(conn: &mut redis::Connection, mut cursor: u64, seen: &mut Vec<String>) {
    for _ in 0..10_000 {
        let (next, keys) = scan_step(conn, cursor, 50);
        seen.extend(keys);
        if next == 0 {
            return;
        }
        cursor = next;
    }
    panic!("the scan did not end");
}

/// How many expected keys the scan did not return, with the first few for the report.
fn missing(expected: &HashSet<String>, seen: &[String]) -> (usize, Vec<String>) {
    let seen: HashSet<&String> = seen.iter().collect();
    let mut missing: Vec<String> = expected
        .iter()
        .filter(|k| !seen.contains(k))
        .cloned()
        .collect();
    missing.sort();
    let count = missing.len();
    missing.truncate(10);
    (count, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_outs_right_after_a_scale_out_count_every_master() {
    let mut platform = TestPlatform::from_cluster(TestCluster::start(2, 0).await, 0);
    // Told about changes, and otherwise content with a table a minute old.
    let told = lazy_proxy(&platform, Duration::from_secs(60));
    // Never told; relies on the bound (the default, one second).
    let bounded = lazy_proxy(&platform, Duration::from_secs(1));
    let mut conn = client(&told);
    let keys = write_keys(&mut conn, "scaled", 3000);
    assert_eq!(dbsize(&mut conn), keys.len());

    scale(&mut platform, 3).await;

    // Nothing told `told`, and its bound is long: it still counts the two old masters only,
    // which is what this test is about.
    assert!(dbsize(&mut conn) < keys.len(), "the new master holds keys");

    // `bounded`'s table is older than its bound: the first fan-out refreshes before it runs.
    let mut other = client(&bounded);
    assert_eq!(dbsize(&mut other), keys.len());

    assert!(told.topology_changed(Duration::from_secs(5)).await);
    assert_eq!(dbsize(&mut conn), keys.len());
    let listed: Vec<String> = redis::cmd("KEYS").arg("scaled:*").query(&mut conn).unwrap();
    assert_eq!(listed.len(), keys.len());
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut conn).unwrap();
    assert!(
        info.contains(&format!("db0:keys={},", keys.len())),
        "{info}"
    );
    assert!(told.metrics().contains("cinnabar_backend_masters 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_a_scale_in_and_a_scale_out_returns_every_key() {
    let mut platform = TestPlatform::from_cluster(TestCluster::start(3, 0).await, 0);
    let proxy = lazy_proxy(&platform, Duration::from_secs(1));
    let mut conn = client(&proxy);
    let keys = write_keys(&mut conn, "scanned", 3000);

    for masters in [2, 3] {
        // About a third of the way in, the cluster changes shape under the scan.
        let mut seen = Vec::new();
        let mut cursor = 0;
        while seen.len() < keys.len() / 3 {
            let (next, batch) = scan_step(&mut conn, cursor, 50);
            seen.extend(batch);
            assert_ne!(next, 0, "the scan ended before the change");
            cursor = next;
        }
        scale(&mut platform, masters).await;
        scan_to_end(&mut conn, cursor, &mut seen);
        assert_eq!(
            missing(&keys, &seen),
            (0, Vec::new()),
            "keys missed by a scan across a scale to {masters} masters"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_a_failover_of_the_master_it_is_on_returns_every_key() {
    let cluster = TestCluster::start(2, 1).await;
    let report = cluster.check().await;
    // The master of slot 0: the scan's first run is on it when the failover comes.
    let first = report
        .nodes
        .iter()
        .find(|n| n.slots.iter().any(|r| r.contains(0)))
        .unwrap()
        .clone();
    let mut platform = TestPlatform::from_cluster(cluster, 0);
    let proxy = lazy_proxy(&platform, Duration::from_secs(1));
    let mut conn = client(&proxy);
    let keys = write_keys(&mut conn, "failed", 3000);

    let mut seen = Vec::new();
    let (cursor, batch) = scan_step(&mut conn, 0, 50);
    seen.extend(batch);
    assert_ne!(cursor, 0);
    operate(
        &mut platform,
        Operation::Failover {
            master_id: first.id.clone(),
            master: first.addr.clone(),
        },
    )
    .await;
    scan_to_end(&mut conn, cursor, &mut seen);
    assert_eq!(missing(&keys, &seen), (0, Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_comes_back_for_a_slot_that_was_mid_migration_when_its_run_ended() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.access.default_role = Some("admin".into());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut conn = client(&proxy);
    let report = cluster.check().await;
    // The master of slot 0 (its run comes first) and the other one.
    let first = report
        .nodes
        .iter()
        .find(|n| n.slots.iter().any(|r| r.contains(0)))
        .unwrap()
        .clone();
    let other = report
        .nodes
        .iter()
        .find(|n| n.id != first.id)
        .unwrap()
        .clone();
    // A hash tag whose slot sits inside the first master's run, not at its start.
    let tag = (0..)
        .map(|i| format!("mover{i}"))
        .find(|t| {
            let slot = cinnabar_commands::key_slot(t.as_bytes());
            slot > 10 && first.slots.iter().any(|r| r.contains(slot))
        })
        .unwrap();
    let slot = cinnabar_commands::key_slot(tag.as_bytes());
    let mut keys = write_keys(&mut conn, "still", 500);
    let movers = write_keys(&mut conn, &format!("{{{tag}}}"), 40);
    keys.extend(movers.iter().cloned());

    // Half of the slot's keys move to the other master before the scan starts; the slot stays
    // with the first master, migrating, while its run is scanned.
    let (mut src, mut dst) = (
        node_connection(&first.addr, None),
        node_connection(&other.addr, None),
    );
    let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .exec(conn)
            .unwrap();
    };
    setslot(&mut dst, "IMPORTING", &first.id);
    setslot(&mut src, "MIGRATING", &other.id);
    let migrate = |src: &mut redis::Connection, keys: &[&String]| {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(&other.addr.host)
            .arg(other.addr.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for key in keys {
            cmd.arg(key.as_str());
        }
        cmd.exec(src).unwrap();
    };
    let mut movers: Vec<&String> = movers.iter().collect();
    movers.sort();
    let (early, late) = movers.split_at(movers.len() / 2);
    migrate(&mut src, early);

    // The first run is scanned and checked while the slot is still migrating.
    let mut seen = Vec::new();
    let mut cursor = 0;
    for _ in 0..4 {
        let (next, batch) = scan_step(&mut conn, cursor, 10_000);
        seen.extend(batch);
        assert_ne!(next, 0);
        cursor = next;
    }
    // The migration ends; the scan goes on.
    migrate(&mut src, late);
    setslot(&mut dst, "NODE", &other.id);
    setslot(&mut src, "NODE", &other.id);
    scan_to_end(&mut conn, cursor, &mut seen);
    assert_eq!(missing(&keys, &seen), (0, Vec::new()));
}

#[tokio::test(flavor = "multi_thread")]
async fn post_topology_refresh_answers_with_the_table_after_the_change() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.refresh_interval = Duration::from_secs(60);
    config.fan_out_max_staleness = Duration::from_secs(60);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let report = cluster.check().await;
    let (from, to) = (&report.nodes[0], &report.nodes[1]);
    let slot = from.slots[0].start;
    // An empty slot changes hands behind the proxy's back.
    for node in [to, from] {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to.id)
            .exec(&mut node_connection(&node.addr, None))
            .unwrap();
    }
    let owner_of = |topology: &serde_json::Value| -> String {
        topology["masters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["slots"].as_array().unwrap().iter().any(|r| {
                    r[0].as_u64().unwrap() <= u64::from(slot)
                        && u64::from(slot) <= r[1].as_u64().unwrap()
                })
            })
            .map(|m| m["address"].as_str().unwrap().to_owned())
            .unwrap()
    };

    let admin = proxy.admin_addr().unwrap();
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut stream, b"POST /topology/refresh HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let topology: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(owner_of(&topology), to.addr.to_string());
}
