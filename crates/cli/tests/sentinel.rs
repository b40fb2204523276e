//! `cinnabar up --topology sentinel` end to end: a master, its replicas and a Sentinel quorum
//! as supervised real processes behind the proxy; `status`, `failover`, `restart --rolling`
//! and a crash, with a workload writing through the endpoint.

// Test helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cinnabar_testkit::{Target, Workload};
use serde_json::Value;

use support::*;

/// A group of one master, two replicas and three Sentinels (ports for all of them).
fn group() -> Cinnabar {
    let c = Cinnabar::with_spare_ports(1, 2, true, 3);
    let port = c.port().to_string();
    let out = c.run(&[
        "up",
        "--detach",
        "--topology",
        "sentinel",
        "--replicas",
        "2",
        "--sentinels",
        "3",
        "--port",
        &port,
    ]);
    assert!(
        out.status.success(),
        "up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

fn master(status: &Value) -> String {
    // The master the Sentinels name and that says so (right after a failover the old one
    // still says master until Sentinel demotes it, shown as degraded).
    let masters: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "master" && n["health"] == "ok")
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(masters.len(), 1, "{status:#}");
    masters[0].to_owned()
}

fn succeeded(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

#[test]
fn a_group_comes_up_behind_the_proxy_and_status_shows_the_quorums_view() {
    let c = group();
    let (healthy, status) = c.status();
    assert!(healthy, "{status:#}");
    assert_eq!(status["topology"], "sentinel");
    let master = master(&status);
    let sentinels = status["sentinels"].as_array().unwrap();
    assert_eq!(sentinels.len(), 3);
    for s in sentinels {
        assert_eq!(s["master"].as_str(), Some(master.as_str()), "{s}");
        assert_eq!(s["replicas"], 2);
        assert_eq!(s["other_sentinels"], 2);
    }
    for node in status["nodes"].as_array().unwrap() {
        assert!(node["offset"].is_u64(), "{node}");
        if node["role"] == "replica" {
            assert_eq!(node["master"].as_str(), Some(master.as_str()));
            assert!(node["lag_bytes"].is_u64(), "{node}");
        }
    }
    // Any database, transactions across keys.
    let mut conn = plain_connection(&c.endpoint());
    let () = redis::cmd("SELECT").arg(5).query(&mut conn).unwrap();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("a", 1)
        .incr("b", 2)
        .query(&mut conn)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let human = c.run(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("SENTINEL") && text.contains("3/3 Sentinels agree"),
        "{text}"
    );
}

#[test]
fn failover_and_rolling_restart_of_a_group_show_no_error_and_lose_nothing() {
    let c = group();
    let (_, before) = c.status();
    let old = master(&before);
    let workload = Workload::start(
        Target::Standalone(c.endpoint().parse().unwrap()),
        Duration::from_millis(1),
    );
    workload.wait_for_acknowledged(100, Duration::from_secs(20));

    succeeded(&c.run(&["failover"]), "failover");
    let (_, after) = c.status();
    let new = master(&after);
    assert_ne!(new, old, "failover kept the master: {after:#}");
    let more = workload.acknowledged() + 100;
    workload.wait_for_acknowledged(more, Duration::from_secs(20));

    succeeded(&c.run(&["restart", "--rolling"]), "restart --rolling");
    c.wait_healthy(Duration::from_secs(30));
    let more = workload.acknowledged() + 100;
    workload.wait_for_acknowledged(more, Duration::from_secs(20));
    let log = workload.stop();
    assert_eq!(log.failed, 0, "client-visible errors: {:?}", log.errors);
    log.assert_nothing_lost();
}

#[test]
fn a_killed_master_comes_back_under_the_supervisor_with_every_acknowledged_write() {
    let c = group();
    let (_, status) = c.status();
    let old = master(&status);
    let pid = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == old.as_str())
        .and_then(|n| n["pid"].as_u64())
        .unwrap();
    let workload = Workload::start(
        Target::Standalone(c.endpoint().parse().unwrap()),
        Duration::from_millis(1),
    );
    workload.wait_for_acknowledged(100, Duration::from_secs(20));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let more = workload.acknowledged() + 300;
    workload.wait_for_acknowledged(more, Duration::from_secs(30));
    c.wait_healthy(Duration::from_secs(30));
    let log = workload.stop();
    eprintln!("kill -9 of {old}: {} failed ({:?})", log.failed, log.errors);
    // Restarted within the Sentinels' down-after: the same master, on its AOF.
    assert!(log.failed <= 1, "{:?}", log.errors);
    log.assert_nothing_lost();
}

#[test]
fn drill_failover_on_a_group_measures_sentinels_takeover_and_loses_nothing() {
    let c = group();
    let out = c.run(&["drill", "failover", "--kill", "--duration", "12s", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert_eq!(report["lost_writes"], 0, "{report:#}");
    for field in [
        "time_to_detect_ms",
        "time_to_promote_ms",
        "time_to_rejoin_ms",
    ] {
        assert!(report[field].is_u64(), "{field}: {report:#}");
    }
    let promoted = report["promoted"]["address"].as_str().unwrap();
    assert_ne!(promoted, report["victim"]["address"].as_str().unwrap());
    let (healthy, status) = c.status();
    assert!(healthy, "{status:#}");
    assert_eq!(master(&status), promoted);
}

#[test]
fn heal_points_a_stray_master_back_at_the_sentinels_master() {
    let c = group();
    let (_, status) = c.status();
    let master = master(&status);
    let stray = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "replica")
        .and_then(|n| n["address"].as_str())
        .unwrap()
        .to_owned();
    // Out of band, as an operator's mistake would: a replica made a master of its own.
    let mut conn = plain_connection(&stray);
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut conn)
        .unwrap();
    let (healthy, _) = c.status();
    assert!(!healthy, "a second master must make the group degraded");
    succeeded(&c.run(&["heal"]), "heal");
    c.wait_healthy(Duration::from_secs(30));
    let (_, after) = c.status();
    let node = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == stray.as_str())
        .unwrap()
        .clone();
    assert_eq!(node["role"], "replica", "{after:#}");
    assert_eq!(node["master"].as_str(), Some(master.as_str()));
}

#[test]
fn an_interrupted_rolling_restart_is_finished_by_resume_and_blocks_other_operations() {
    use cinnabar_cluster::NodeAddr;
    use cinnabar_cluster::group_plan::GroupOperation;

    let c = group();
    let (_, status) = c.status();
    let old = master(&status);
    // As a run killed after restarting every replica would have left it.
    let replicas: Vec<NodeAddr> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "replica")
        .map(|n| n["address"].as_str().unwrap().parse().unwrap())
        .collect();
    let journal = c.dir().join("group-operation.json");
    let pending = GroupOperation::RollingRestart {
        restarted: replicas,
    };
    std::fs::write(&journal, serde_json::to_string(&pending).unwrap()).unwrap();

    let refused = c.run(&["failover"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("cinnabar resume"),
        "{}",
        stderr(&refused)
    );

    succeeded(&c.run(&["resume"]), "resume");
    assert!(!journal.exists(), "the journal outlived its operation");
    c.wait_healthy(Duration::from_secs(30));
    let (_, after) = c.status();
    assert_ne!(
        master(&after),
        old,
        "resume must fail over before restarting the master"
    );
}

/// After a failover the first node of a group is a replica. A backup of the group is still
/// read from a replica (never forking the master), and a restore into another group whose
/// first node is a replica writes through the master its Sentinels name (the first node
/// would refuse with READONLY).
#[test]
fn a_group_backs_up_from_a_replica_and_restores_through_its_master_after_failovers() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let source = group();
    let mut conn = plain_connection(&source.endpoint());
    for i in 0..500 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .exec(&mut conn)
            .unwrap();
    }
    // The failover waits for the replicas to catch up, so every node holds the 500 keys.
    succeeded(&source.run(&["failover"]), "failover of the source");
    source.wait_healthy(Duration::from_secs(30));
    let backup = source.run(&["backup", "--to", &url, "--cluster", "sessions", "--json"]);
    succeeded(&backup, "backup");
    let manifest: Value = serde_json::from_slice(&backup.stdout).unwrap();
    let shards = manifest["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1, "{manifest:#}");
    assert_eq!(shards[0]["read_role"], "replica", "{manifest:#}");
    assert_eq!(shards[0]["keys"], 500, "{manifest:#}");
    let (_, status) = source.status();
    assert_eq!(shards[0]["master"].as_str(), Some(master(&status).as_str()));

    let target = group();
    succeeded(&target.run(&["failover"]), "failover of the target");
    let first = format!("127.0.0.1:{}", target.first_node_port());
    let (_, status) = target.status();
    assert_ne!(master(&status), first, "the first node is still the master");
    let restore = target.run(&["restore", "--from", &url, "--json"]);
    succeeded(&restore, "restore into the group");
    let mut restored = plain_connection(&target.endpoint());
    let size: u64 = redis::cmd("DBSIZE").query(&mut restored).unwrap();
    assert_eq!(size, 500);
    let value: String = redis::cmd("GET")
        .arg("key:499")
        .query(&mut restored)
        .unwrap();
    assert_eq!(value, "499");
}
