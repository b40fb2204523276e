//! The Redis container's `preStop` hook, run as the kubelet runs it (`sh -c`) against real
//! `redis-server` cluster nodes, with a workload through the Cinnabar proxy: a master hands its
//! role over before it stops, so clients see no error and no acknowledged write is lost.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_operator::objects::prestop_script;
use cinnabar_proxy::ProxyConfig;
use cinnabar_testkit::{ServerOptions, Target, TestCluster, Workload};

/// Runs the hook for the node on `port`, as the kubelet would (with the container's password
/// variable; these test nodes have none).
fn run_hook(port: u16, budget_seconds: u32) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new("sh")
        .arg("-c")
        .arg(prestop_script("redis-cli", port, budget_seconds))
        .env("REDIS_PASSWORD", "")
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    (output, started.elapsed())
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn role(port: u16) -> String {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}"));
    let reply: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("{e}"));
    match reply.first() {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("unexpected ROLE reply {other:?}"),
    }
}

fn options() -> ServerOptions {
    ServerOptions {
        cluster: true,
        // The production setting (the operator's redis.conf): a master that simply stopped would
        // cost clients this long before the cluster reacts.
        node_timeout_ms: Some(5000),
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_master_pod_hands_its_role_over_first_with_no_client_error_and_no_lost_write() {
    let mut cluster = TestCluster::start_with(3, 1, options()).await;
    let mut config = ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        cluster.seeds(),
    );
    config.retry_window = Duration::from_secs(10);
    let proxy = cinnabar_proxy::start(config).unwrap_or_else(|e| panic!("{e}"));
    let proxy_addr = NodeAddr::new("127.0.0.1", proxy.local_addr().port());
    let workload = Workload::start(Target::Standalone(proxy_addr), Duration::from_millis(1));
    workload.wait_for_acknowledged(300, Duration::from_secs(20));

    let report = cluster.check().await;
    let victim = report
        .nodes
        .iter()
        .find(|n| !n.slots.is_empty())
        .map(|n| n.addr.clone())
        .unwrap_or_else(|| panic!("no master: {report:?}"));
    let port = victim.port;

    // The kubelet runs the hook, then sends SIGTERM.
    let (output, took) = run_hook(port, 20);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("now a replica"), "{said}");
    assert_eq!(role(port), "slave", "{said}");
    let before = workload.acknowledged();
    if let Some(server) = cluster.server_by_addr_mut(&victim) {
        server.stop();
    }
    workload.wait_for_acknowledged(before + 500, Duration::from_secs(30));
    let log = workload.stop();
    let lost = log.lost_writes().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "hook took {took:?} ({said:?}); client errors: {} {:?}; acknowledged: {}; lost: {}; \
         longest write: {:?}",
        log.failed,
        log.errors,
        log.acknowledged.len(),
        lost.len(),
        log.longest_write
    );
    assert_eq!(log.failed, 0, "client errors: {:?}", log.errors);
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    assert!(
        log.longest_write < Duration::from_secs(1),
        "a write waited {:?}",
        log.longest_write
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_and_a_lone_master_just_stop() {
    // A replica: nothing to hand over, and nothing changes.
    let cluster = TestCluster::start_with(1, 1, options()).await;
    let report = cluster.check().await;
    let replica = report
        .nodes
        .iter()
        .find(|n| n.slots.is_empty())
        .map(|n| n.addr.port)
        .unwrap_or_else(|| panic!("no replica: {report:?}"));
    let (output, took) = run_hook(replica, 20);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("a replica"), "{}", text(&output));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(role(replica), "slave");

    // A master without replicas: it just stops, at once.
    let lone = TestCluster::start_with(1, 0, options()).await;
    let port = lone.servers()[0].port();
    let (output, took) = run_hook(port, 20);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("no healthy replica"),
        "{}",
        text(&output)
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(role(port), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_replica_is_down_stops_without_waiting() {
    let mut cluster = TestCluster::start_with(1, 1, options()).await;
    let report = cluster.check().await;
    let master = report
        .nodes
        .iter()
        .find(|n| !n.slots.is_empty())
        .map(|n| n.addr.clone())
        .unwrap_or_else(|| panic!("no master: {report:?}"));
    let replica = report
        .nodes
        .iter()
        .find(|n| n.slots.is_empty())
        .map(|n| n.addr.clone())
        .unwrap_or_else(|| panic!("no replica: {report:?}"));
    // The replica's process is gone; the master has not marked it failed yet (5 s): its link
    // to the master is down, so it is not a healthy replica.
    if let Some(server) = cluster.server_by_addr_mut(&replica) {
        server.kill();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (output, took) = run_hook(master.port, 20);
    assert!(output.status.success(), "{}", text(&output));
    assert!(took < Duration::from_secs(3), "{took:?}: {}", text(&output));
    assert_eq!(role(master.port), "master");
}

fn config_set(port: u16, key: &str, value: &str) {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}"));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .exec(&mut conn)
        .unwrap_or_else(|e| panic!("CONFIG SET {key}: {e}"));
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_waits_for_a_first_aof_rewrite_during_which_redis_refuses_sigterm() {
    let mut lone = TestCluster::start_with(1, 0, options()).await;
    let port = lone.servers()[0].port();
    let pid = lone.servers()[0].pid();
    {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut conn = client.get_connection().unwrap_or_else(|e| panic!("{e}"));
        let mut pipe = redis::pipe();
        for i in 0..2000 {
            pipe.cmd("SET").arg(format!("k{{x}}{i}")).arg(i).ignore();
        }
        pipe.exec(&mut conn).unwrap_or_else(|e| panic!("{e}"));
    }
    // What a replica does after a resynchronisation, slowed down (1 ms per key) so the first
    // AOF rewrite is still running when the pod is deleted.
    config_set(port, "rdb-key-save-delay", "1000");
    config_set(port, "appendonly", "no");
    config_set(port, "appendonly", "yes");
    sigterm(pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lone.server_mut(0).is_running(),
        "Redis refuses SIGTERM while it writes its first AOF"
    );

    let (output, took) = run_hook(port, 20);
    let said = text(&output);
    let log = lone.servers()[0].log_tail(30);
    assert!(output.status.success(), "{said}\n{log}");
    assert!(
        said.contains("waiting for the AOF rewrite"),
        "{said}\n{log}"
    );
    assert!(took > Duration::from_millis(500), "{took:?}: {said}");
    // Now the kubelet's SIGTERM is obeyed at once.
    sigterm(pid);
    let asked = Instant::now();
    while lone.server_mut(0).is_running() {
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "Redis did not stop after the hook: {said}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
