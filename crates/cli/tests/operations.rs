//! `cinnabar failover|restart --rolling|heal|scale` and the operation journal's rules, end to
//! end: a detached local cluster, real redis-server processes, and a workload writing through
//! the endpoint (the proxy) that must see no error and lose no acknowledged write.

// Test helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cinnabar_cluster::{JournalEntry, NodeAddr, Operation};
use cinnabar_testkit::{Target, Workload};
use serde_json::Value;

use support::*;

/// A workload writing through `endpoint`, already acknowledged a little.
fn workload(endpoint: &str) -> Workload {
    let workload = Workload::start(
        Target::Standalone(endpoint.parse().unwrap()),
        Duration::from_millis(1),
    );
    workload.wait_for_acknowledged(100, Duration::from_secs(20));
    workload
}

/// Lets the workload write some more, stops it, and asserts no error and no lost write.
fn assert_no_client_impact(workload: Workload) {
    let more = workload.acknowledged() + 100;
    workload.wait_for_acknowledged(more, Duration::from_secs(20));
    let log = workload.stop();
    assert_eq!(log.failed, 0, "client-visible errors: {:?}", log.errors);
    log.assert_nothing_lost();
}

/// `address → field(node)` for every node of a status document.
fn by_address<T>(status: &Value, field: impl Fn(&Value) -> T) -> BTreeMap<String, T> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["address"].as_str().unwrap().to_owned(), field(n)))
        .collect()
}

/// `address → role` from a status document.
fn roles(status: &Value) -> BTreeMap<String, String> {
    by_address(status, |n| n["role"].as_str().unwrap().to_owned())
}

/// `address → pid` from a status document.
fn pids_by_address(status: &Value) -> BTreeMap<String, u64> {
    by_address(status, |n| n["pid"].as_u64().unwrap())
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

fn journal_path(c: &Cinnabar) -> std::path::PathBuf {
    c.dir().join("operation.json")
}

#[test]
fn failover_of_shard_0_through_the_cli_demotes_the_master_with_no_client_error_or_lost_write() {
    let c = Cinnabar::new(3, 1);
    let endpoint = c.up_detached_with(3, 1, &["--hosts", "3"]);
    c.wait_healthy(Duration::from_secs(20));
    let (_, status) = c.status();
    let hosts: BTreeSet<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, BTreeSet::from(["h0", "h1", "h2"]), "{status:#}");
    let workload = workload(&endpoint);

    // A dry run names the step and changes nothing.
    let dry = c.run(&["failover", "--shard", "0", "--dry-run", "--json"]);
    succeeded(&dry, "failover --dry-run");
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let planned = &report["planned"];
    assert_eq!(planned["step"], "failover", "{report:#}");
    let old_master = planned["master"].as_str().unwrap().to_owned();
    let replica = planned["replica"].as_str().unwrap().to_owned();
    assert_eq!(roles(&c.status().1)[&old_master], "master");

    let out = c.run(&["failover", "--shard", "0"]);
    succeeded(&out, "failover");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failover done: 1 step"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("step 1: fail over"),
        "{}",
        stderr(&out)
    );
    let after = roles(&c.status().1);
    assert_eq!(after[&old_master], "replica");
    assert_eq!(after[&replica], "master");
    assert!(
        !journal_path(&c).exists(),
        "a finished operation is cleared"
    );
    assert_no_client_impact(workload);
    c.wait_healthy(Duration::from_secs(20));
}

#[test]
fn rolling_restart_through_the_cli_restarts_every_node_with_no_client_error_or_lost_write() {
    let c = Cinnabar::new(3, 1);
    let endpoint = c.up_detached_with(3, 1, &["--hosts", "3"]);
    c.wait_healthy(Duration::from_secs(20));
    let before = pids_by_address(&c.status().1);
    let workload = workload(&endpoint);

    let out = c.run(&["restart", "--rolling", "--json"]);
    succeeded(&out, "restart --rolling");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["operation"], "rolling restart", "{report:#}");
    assert!(report["steps"].as_u64().unwrap() >= 6, "{report:#}");

    c.wait_healthy(Duration::from_secs(20));
    let after = pids_by_address(&c.status().1);
    for (address, pid) in &before {
        assert_ne!(after[address], *pid, "{address} was not restarted");
    }
    assert_no_client_impact(workload);
}

#[test]
fn heal_right_after_a_replica_is_killed_leaves_the_cluster_healthy() {
    let c = Cinnabar::new(2, 1);
    c.up_detached(2, 1);
    c.wait_healthy(Duration::from_secs(20));
    let (_, status) = c.status();
    let replica = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "replica")
        .unwrap()
        .clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(replica["pid"].as_u64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = c.run(&["heal"]);
    succeeded(&out, "heal");
    c.wait_healthy(Duration::from_secs(20));
}

#[test]
fn a_new_operation_is_refused_while_one_is_journaled_and_nothing_changes() {
    let c = Cinnabar::new(1, 1);
    c.up_detached(1, 1);
    c.wait_healthy(Duration::from_secs(20));
    let (_, before) = c.status();
    let entry = JournalEntry {
        operation: Operation::Failover {
            master_id: "f".repeat(40),
            master: NodeAddr::new("127.0.0.1", c.first_node_port()),
        },
        step: None,
        steps_done: 1,
        started_ms: 0,
    };
    let journal = serde_json::to_string_pretty(&entry).unwrap();
    std::fs::write(journal_path(&c), &journal).unwrap();
    let expected =
        format!("this cluster is mid-operation: {entry}; run `cinnabar resume` to finish it");
    for args in [
        &["failover"][..],
        &["restart", "--rolling"],
        &["scale", "--replicas", "2"],
        &["rebalance"],
        &["replace-nodes", "--dry-run"],
    ] {
        let out = c.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let (_, after) = c.status();
    assert_eq!(roles(&after), roles(&before));
    assert_eq!(pids_by_address(&after), pids_by_address(&before));
    // heal may run, and leaves the interrupted operation journaled for `resume`.
    let heal = c.run(&["heal"]);
    succeeded(&heal, "heal next to a journaled operation");
    assert_eq!(std::fs::read_to_string(journal_path(&c)).unwrap(), journal);
}

#[test]
fn failover_of_a_shard_that_does_not_exist_is_refused_with_the_shard_list() {
    let c = Cinnabar::new(1, 1);
    c.up_detached(1, 1);
    c.wait_healthy(Duration::from_secs(20));
    let (_, before) = c.status();
    let out = c.run(&["failover", "--shard", "9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no shard 9; this cluster has 1 shard (0 = master 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(roles(&c.status().1), roles(&before));
    assert!(!journal_path(&c).exists());
}

#[test]
fn scale_to_two_replicas_adds_a_replica_per_shard_and_a_later_up_resumes_every_node() {
    let c = Cinnabar::with_spare_ports(2, 1, true, 4);
    c.up_detached(2, 1);
    c.wait_healthy(Duration::from_secs(20));
    let out = c.run(&["scale", "--replicas", "2"]);
    succeeded(&out, "scale --replicas 2");
    c.wait_healthy(Duration::from_secs(30));
    let (_, status) = c.status();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{status:#}");
    for master in nodes.iter().filter(|n| n["role"] == "master") {
        let followers = nodes
            .iter()
            .filter(|n| n["master"] == master["address"])
            .count();
        assert_eq!(followers, 2, "{status:#}");
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir().join("cinnabar.json")).unwrap())
            .unwrap();
    assert_eq!(state["spec"]["replicas"], 2, "the new shape is recorded");

    // The recorded nodes, not the original shape, come back.
    succeeded(&c.run(&["down"]), "down");
    succeeded(&c.run(&["up", "--detach"]), "up on the scaled directory");
    c.wait_healthy(Duration::from_secs(30));
    assert_eq!(c.status().1["nodes"].as_array().unwrap().len(), 6);
}

#[test]
fn resume_finishes_a_journaled_failover_and_with_nothing_journaled_says_so() {
    let c = Cinnabar::new(1, 1);
    c.up_detached(1, 1);
    c.wait_healthy(Duration::from_secs(20));
    let nothing = c.run(&["resume"]);
    succeeded(&nothing, "resume with nothing journaled");
    assert!(
        String::from_utf8_lossy(&nothing.stdout).contains("nothing to resume"),
        "{}",
        String::from_utf8_lossy(&nothing.stdout)
    );
    // What a failover killed before its first step leaves behind.
    let (_, status) = c.status();
    let master = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "master")
        .unwrap()
        .clone();
    let address = master["address"].as_str().unwrap().to_owned();
    let entry = JournalEntry {
        operation: Operation::Failover {
            master_id: master["id"].as_str().unwrap().to_owned(),
            master: address.parse().unwrap(),
        },
        step: None,
        steps_done: 0,
        started_ms: 0,
    };
    std::fs::write(
        journal_path(&c),
        serde_json::to_string_pretty(&entry).unwrap(),
    )
    .unwrap();
    let out = c.run(&["resume"]);
    succeeded(&out, "resume");
    assert!(
        stderr(&out).contains("resuming failover of master"),
        "{}",
        stderr(&out)
    );
    assert_eq!(roles(&c.status().1)[&address], "replica");
    assert!(
        !journal_path(&c).exists(),
        "a finished operation is cleared"
    );
}

/// The issue this guards against: right after `cinnabar scale` returned, DBSIZE through the
/// endpoint counted only the old masters until the proxy's next refresh. Now each step tells
/// the supervisor, which has its proxy refresh before answering.
#[test]
fn right_after_a_scale_out_the_endpoint_counts_every_master() {
    let c = Cinnabar::with_spare_ports(2, 0, true, 3);
    let endpoint = c.up_detached(2, 0);
    c.wait_healthy(Duration::from_secs(20));
    let mut conn = plain_connection(&endpoint);
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("counted:{i}")).arg(i).ignore();
    }
    pipe.exec(&mut conn).unwrap();

    let out = c.run(&["scale", "--masters", "3"]);
    succeeded(&out, "scale --masters 3");
    assert!(
        !stderr(&out).contains("not told"),
        "every step reached the proxy: {}",
        stderr(&out)
    );
    // The proxy's own table (read before any fan-out, which would refresh first anyway)
    // already has the new master: the supervisor told it before `scale` returned.
    let admin = c.status().1["admin"].as_str().unwrap().to_owned();
    let mut stream = std::net::TcpStream::connect(&admin).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /topology HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let topology: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        topology["masters"].as_array().unwrap().len(),
        3,
        "{topology:#}"
    );
}
