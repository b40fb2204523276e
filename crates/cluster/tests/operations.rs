//! The planner's operations against real `redis-server` processes, with a workload writing
//! through the proxy the whole time: no acknowledged write lost, no error a client sees.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use cinnabar_cluster::{
    CheckOptions, ExecuteOptions, MemoryJournal, NodeAddr, Observed, OperateError, OperateEvent,
    OperateOptions, Operation, Platform, Role, Timeouts, check_with, observe, run_operation,
};
use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::{Target, TestCluster, TestPlatform, Workload, WorkloadLog};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    response: Duration::from_millis(1000),
};

async fn platform(masters: usize, replicas: usize, hosts: usize) -> TestPlatform {
    TestPlatform::from_cluster(TestCluster::start(masters, replicas).await, hosts)
}

fn proxy_for(platform: &TestPlatform) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), platform.addrs());
    config.access.default_role = Some("admin".into());
    cinnabar_proxy::start(config).unwrap()
}

fn workload(proxy: &ProxyHandle) -> Workload {
    let addr = proxy.local_addr();
    let workload = Workload::start(
        Target::Standalone(NodeAddr::new(addr.ip().to_string(), addr.port())),
        Duration::from_millis(2),
    );
    workload.wait_for_acknowledged(100, Duration::from_secs(20));
    workload
}

async fn observed(platform: &TestPlatform) -> Observed {
    observe(&platform.nodes().await.unwrap(), TIMEOUTS, None).await
}

async fn run(platform: &mut TestPlatform, op: Operation) -> Vec<String> {
    let options = OperateOptions {
        timeout: Duration::from_secs(180),
        ..OperateOptions::default()
    };
    let mut log = Vec::new();
    let result = run_operation(
        op,
        platform,
        &mut MemoryJournal::default(),
        &options,
        &mut |e| log.push(e.to_string()),
    )
    .await;
    match result {
        Ok(report) => {
            assert!(
                report.unresolved.is_empty(),
                "unresolved: {:?}\n{}",
                report.unresolved,
                log.join("\n")
            );
            log
        }
        Err(e) => panic!("{e}\nlog:\n{}", log.join("\n")),
    }
}

async fn heal(platform: &mut TestPlatform) -> Vec<String> {
    let op = Operation::Heal {
        replicas: Some(1),
        started: BTreeSet::new(),
    };
    run(platform, op).await
}

/// The operation's log mentions `what` (a step it must have taken).
fn assert_logged(log: &[String], what: &str) {
    assert!(
        log.iter().any(|l| l.contains(what)),
        "no `{what}` in\n{}",
        log.join("\n")
    );
}

/// Healthy, every slot covered, each master with `replicas` replicas.
async fn assert_clean(platform: &TestPlatform, replicas: usize) {
    let options = CheckOptions {
        timeouts: TIMEOUTS,
        expected_replicas: Some(replicas),
    };
    let report =
        cinnabar_cluster::wait_healthy(&platform.addrs(), &options, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.slots_covered, 16384);
    let check = check_with(&platform.addrs(), &options).await.unwrap();
    assert!(check.is_healthy(), "{check}");
}

/// Zero errors and zero lost writes.
/// Lets the workload run on after an operation (a fast one may end before it wrote much, and
/// writes right after it are the ones that find a changed topology), then stops it.
fn finish(workload: Workload) -> WorkloadLog {
    workload.wait_for_acknowledged(workload.acknowledged() + 150, Duration::from_secs(30));
    workload.stop()
}

fn assert_no_client_impact(log: &WorkloadLog) {
    assert_eq!(log.failed, 0, "client-visible errors: {:?}", log.errors);
    let lost = log.lost_writes().unwrap();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        log.acknowledged.len() > 200,
        "the workload barely ran: {}",
        log.acknowledged.len()
    );
}

/// No host holds a master and its replica, and none holds more than its share of masters.
fn assert_placement(observed: &Observed) {
    let shards: Vec<_> = observed
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0)
        .collect();
    let hosts: BTreeSet<&str> = observed
        .nodes
        .iter()
        .filter_map(|n| n.node.host.as_deref())
        .collect();
    let share = shards.len().div_ceil(hosts.len());
    let mut per_host = std::collections::BTreeMap::<&str, usize>::new();
    for shard in &shards {
        let members: Vec<&str> = shard
            .members()
            .filter_map(|m| observed.host_of(m))
            .collect();
        let distinct: BTreeSet<&&str> = members.iter().collect();
        assert_eq!(
            distinct.len(),
            members.len(),
            "shard of {} shares a host: {members:?}",
            shard.master
        );
        *per_host
            .entry(observed.host_of(&shard.master).unwrap())
            .or_default() += 1;
    }
    assert!(
        per_host.values().all(|n| *n <= share),
        "masters per host {per_host:?}, share {share}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover_moves_the_master_role_with_no_client_impact() {
    let mut platform = platform(3, 1, 3).await;
    let proxy = proxy_for(&platform);
    let workload = workload(&proxy);
    let before = observed(&platform).await;
    let shard = before.shards()[0].clone();
    run(
        &mut platform,
        Operation::Failover {
            master_id: shard.master_id.clone(),
            master: shard.master.clone(),
        },
    )
    .await;
    let after = observed(&platform).await;
    assert_eq!(after.role_of(&shard.master).unwrap().0, Role::Replica);
    assert_eq!(after.role_of(&shard.replicas[0]).unwrap().0, Role::Master);
    assert_no_client_impact(&finish(workload));
    assert_clean(&platform, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_of_a_shard_without_replica_is_refused_and_changes_nothing() {
    let mut platform = platform(2, 0, 0).await;
    let before = observed(&platform).await;
    let shard = before.shards()[0].clone();
    let err = run_operation(
        Operation::Failover {
            master_id: shard.master_id.clone(),
            master: shard.master.clone(),
        },
        &mut platform,
        &mut MemoryJournal::default(),
        &OperateOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OperateError::Refused(_)), "{err}");
    assert!(err.to_string().contains("has no replica"), "{err}");
    assert_eq!(observed(&platform).await.shards(), before.shards());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_restarts_every_node_with_no_client_impact() {
    let mut platform = platform(3, 1, 3).await;
    let proxy = proxy_for(&platform);
    let workload = workload(&proxy);
    let pids: Vec<u32> = platform.servers_mut().map(|s| s.pid()).collect();
    let ids: BTreeSet<String> = observed(&platform)
        .await
        .nodes
        .iter()
        .filter_map(|n| n.facts().map(|f| f.id.clone()))
        .collect();
    let log = run(&mut platform, Operation::RollingRestart { pending: ids }).await;
    let after: Vec<u32> = platform.servers_mut().map(|s| s.pid()).collect();
    assert!(
        pids.iter().zip(&after).all(|(a, b)| a != b),
        "every node restarted:\n{}",
        log.join("\n")
    );
    assert_no_client_impact(&finish(workload));
    assert_clean(&platform, 1).await;
    assert_placement(&observed(&platform).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_recovers_a_cluster_whose_nodes_all_restarted_on_new_ports() {
    let mut platform = platform(3, 1, 0).await;
    for server in platform.servers_mut() {
        server.stop();
    }
    for server in platform.servers_mut() {
        server.move_to_new_port();
    }
    let log = heal(&mut platform).await;
    assert_logged(&log, "moved to");
    assert_clean(&platform, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_forgets_ghosts_and_stuck_handshakes_and_restarts_dead_nodes() {
    let mut platform = platform(3, 1, 0).await;
    let addrs = platform.addrs();
    // A ghost: a node that joined, then vanished without being forgotten.
    let ghost = cinnabar_testkit::TestServer::start_cluster_node();
    let ghost_addr = cinnabar_testkit::cluster::node_addr(&ghost);
    let mut first = cinnabar_cluster::NodeClient::connect(&addrs[0], TIMEOUTS)
        .await
        .unwrap();
    first
        .meet(
            "127.0.0.1".parse().unwrap(),
            ghost_addr.port,
            ghost_addr.port + 10000,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(ghost);
    // A handshake that can never complete: nothing listens there.
    let nobody = cinnabar_testkit::reserve_node_port();
    first
        .meet(
            "127.0.0.1".parse().unwrap(),
            nobody.port(),
            nobody.port() + 10000,
        )
        .await
        .unwrap();
    // A slot left open by an interrupted migration (importing side only).
    let view = observed(&platform).await;
    let shards = view.shards();
    let slot = shards[0].slots[0].start.to_string();
    let mut importer = cinnabar_cluster::NodeClient::connect(&shards[1].master, TIMEOUTS)
        .await
        .unwrap();
    importer
        .query::<()>(&[
            "CLUSTER",
            "SETSLOT",
            &slot,
            "IMPORTING",
            &shards[0].master_id,
        ])
        .await
        .unwrap();
    // A dead replica.
    platform.server_mut(&addrs[4]).unwrap().kill();
    let log = heal(&mut platform).await;
    assert_logged(&log, "forget");
    assert_logged(&log, "start");
    let after = observed(&platform).await;
    assert!(after.ghosts().is_empty(), "{:?}", after.ghosts());
    assert!(after.open_slots().is_empty(), "{:?}", after.open_slots());
    assert_logged(&log, "close open slots");
    assert_clean(&platform, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_nodes_moves_every_shard_onto_new_nodes_with_no_client_impact() {
    let mut platform = platform(2, 1, 3).await;
    let proxy = proxy_for(&platform);
    let workload = workload(&proxy);
    let old: BTreeSet<String> = observed(&platform)
        .await
        .nodes
        .iter()
        .filter_map(|n| n.facts().map(|f| f.id.clone()))
        .collect();
    let old_addrs = platform.addrs();
    let log = run(
        &mut platform,
        Operation::ReplaceNodes {
            old: old.clone(),
            replicas: 1,
        },
    )
    .await;
    let after = observed(&platform).await;
    assert_eq!(after.nodes.len(), 4, "{}", log.join("\n"));
    for node in &after.nodes {
        assert!(
            !old_addrs.contains(node.addr()),
            "{} is still there",
            node.addr()
        );
        assert!(!old.contains(&node.facts().unwrap().id));
    }
    assert_no_client_impact(&finish(workload));
    assert_clean(&platform, 1).await;
    assert_placement(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_to_five_shards_and_back_to_three_with_no_client_impact() {
    let mut platform = platform(3, 1, 3).await;
    let proxy = proxy_for(&platform);
    let workload = workload(&proxy);
    let log = run(
        &mut platform,
        Operation::Scale {
            masters: 5,
            replicas: 1,
        },
    )
    .await;
    assert_logged(&log, "rebalance slots");
    let grown = observed(&platform).await;
    let serving: Vec<_> = grown
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0)
        .collect();
    assert_eq!(serving.len(), 5, "{}", log.join("\n"));
    assert!(
        serving
            .iter()
            .all(|s| s.slot_count().abs_diff(16384 / 5) <= 1)
    );
    assert_clean(&platform, 1).await;
    assert_placement(&grown);

    // A migration interrupted mid-slot: the next operation closes it first.
    let (from, to) = (&serving[0], &serving[1]);
    let slot = from.slots[0].start.to_string();
    let mut target = cinnabar_cluster::NodeClient::connect(&to.master, TIMEOUTS)
        .await
        .unwrap();
    target
        .query::<()>(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from.master_id])
        .await
        .unwrap();
    let mut source = cinnabar_cluster::NodeClient::connect(&from.master, TIMEOUTS)
        .await
        .unwrap();
    source
        .query::<()>(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to.master_id])
        .await
        .unwrap();

    let log = run(
        &mut platform,
        Operation::Scale {
            masters: 3,
            replicas: 1,
        },
    )
    .await;
    assert!(log[0].contains("close open slots"), "{}", log.join("\n"));
    let shrunk = observed(&platform).await;
    assert_eq!(shrunk.nodes.len(), 6, "{}", log.join("\n"));
    assert!(shrunk.open_slots().is_empty());
    assert_no_client_impact(&finish(workload));
    assert_clean(&platform, 1).await;
    assert_placement(&shrunk);
}

/// A node that stops answering for a few seconds half-way through an operation (a fork, a big
/// `MIGRATE`, a loaded machine) makes the run wait and observe again, not abandon the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stalls_mid_operation_is_waited_for_not_given_up_on() {
    let mut platform = platform(2, 0, 0).await;
    let stalled = platform.addrs()[1].clone();
    let pid = platform.server_mut(&stalled).unwrap().pid().to_string();
    let signal = move |which: &str| {
        let status = std::process::Command::new("kill")
            .args([which, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let mut stalls = 0;
    let mut log = Vec::new();
    let report = run_operation(
        Operation::Scale {
            masters: 2,
            replicas: 1,
        },
        &mut platform,
        &mut MemoryJournal::default(),
        &OperateOptions {
            execute: ExecuteOptions {
                timeouts: TIMEOUTS,
                ..ExecuteOptions::default()
            },
            ..OperateOptions::default()
        },
        &mut |e| {
            // After the first step, freeze a master for longer than an observation and its one
            // retry take (2 × 1.5 s), but well within the refusal patience (10 s).
            if stalls == 0 && matches!(e, OperateEvent::StepDone { .. }) {
                stalls += 1;
                signal("-STOP");
                let resume = signal.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(5));
                    resume("-CONT");
                });
            }
            log.push(e.to_string());
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", log.join("\n")));
    assert!(report.unresolved.is_empty(), "{report:?}");
    assert_logged(&log, &format!("{stalled} is down"));
    assert_logged(&log, "observing again");
    assert_clean(&platform, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_below_one_master_is_refused_and_changes_nothing() {
    let mut platform = platform(1, 0, 0).await;
    let before = observed(&platform).await.shards();
    let err = run_operation(
        Operation::Scale {
            masters: 0,
            replicas: 0,
        },
        &mut platform,
        &mut MemoryJournal::default(),
        &OperateOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("at least one master"), "{err}");
    assert_eq!(observed(&platform).await.shards(), before);
}
