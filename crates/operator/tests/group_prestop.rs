//! The `preStop` hook of a Sentinel group's data container, run as the kubelet runs it
//! (`sh -c`) against real `redis-server` nodes and Sentinels, with a workload through the
//! Cinnabar proxy's group backend: a master pauses its writes, has a Sentinel fail it over,
//! follows the promoted replica and only then stops, so clients see no error and no
//! acknowledged write is lost.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_operator::group_objects::prestop_script;
use cinnabar_proxy::{GroupConfig, ProxyConfig};
use cinnabar_testkit::group::{GROUP_NAME, role};
use cinnabar_testkit::{Target, TestGroup, Workload};

/// Runs the hook for the node at `node`, as the kubelet would (the pod's IP and password
/// variables; these test nodes have no password).
fn run_hook(group: &TestGroup, node: &NodeAddr) -> (Output, Duration) {
    let sentinels: Vec<String> = group
        .sentinel_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let started = Instant::now();
    let output = Command::new("sh")
        .arg("-c")
        .arg(prestop_script(
            "redis-cli",
            node.port,
            GROUP_NAME,
            &sentinels,
            20,
        ))
        .env("POD_IP", &node.host)
        .env("REDIS_PASSWORD", "")
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_masters_pod_fails_over_first_with_no_client_error_and_no_lost_write() {
    let mut group = TestGroup::start(2, 3);
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.group = Some(GroupConfig {
        name: GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
    });
    config.retry_window = Duration::from_secs(10);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let endpoint = NodeAddr::new("127.0.0.1", proxy.local_addr().port());
    let workload = Workload::start(Target::Standalone(endpoint), Duration::from_millis(1));
    workload.wait_for_acknowledged(300, Duration::from_secs(20));

    let master = group.master();
    let (output, took) = run_hook(&group, &master);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("now its replica") || said.contains("now a replica"),
        "{said}"
    );
    assert_eq!(role(&master).as_deref(), Some("slave"), "{said}");
    // The kubelet's SIGTERM.
    group.node_mut(&master).unwrap().stop();
    let before = workload.acknowledged();
    workload.wait_for_acknowledged(before + 500, Duration::from_secs(30));
    let log = workload.stop();
    let lost = log.lost_writes().unwrap();
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
    assert_ne!(group.master(), master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_just_stops() {
    let group = TestGroup::start(1, 3);
    let master = group.master();
    let replica = group
        .nodes
        .iter()
        .map(|s| NodeAddr::new("127.0.0.1", s.port()))
        .find(|a| *a != master)
        .unwrap();
    let (output, took) = run_hook(&group, &replica);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("a replica"), "{}", text(&output));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(group.master(), master, "nothing changed");
}
