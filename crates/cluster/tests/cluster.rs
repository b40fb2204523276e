//! Cluster creation and checks against real `redis-server` processes from the test kit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cinnabar_cluster::{
    ClusterError, CreateSpec, NewNode, NodeAddr, NodeClient, Problem, Role, SlotRange, Timeouts,
    check, create_cluster, parse_cluster_shards,
};
use cinnabar_testkit::cluster::node_addr;
use cinnabar_testkit::{ServerOptions, TestCluster, TestServer, reserve_node_port};

async fn client(addr: &NodeAddr) -> NodeClient {
    NodeClient::connect(addr, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run(addr: &NodeAddr, args: &[&str]) -> redis::Value {
    client(addr)
        .await
        .query(args)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `n` empty cluster nodes, started in parallel.
fn start_nodes(n: usize) -> Vec<TestServer> {
    let options = ServerOptions {
        cluster: true,
        ..ServerOptions::default()
    };
    TestServer::start_many(n, &options)
}

fn spec(servers: &[&TestServer], replicas_per_master: usize) -> CreateSpec {
    CreateSpec {
        nodes: servers.iter().map(|s| NewNode::new(node_addr(s))).collect(),
        replicas_per_master,
        timeout: Duration::from_secs(20),
    }
}

#[tokio::test]
async fn create_three_masters_three_replicas_reaches_ok() {
    let cluster = TestCluster::start(3, 1).await;
    let log = cluster.creation_log().join("\n");
    assert!(
        log.starts_with("planned 3 masters with 1 replica each"),
        "{log}"
    );
    assert!(
        log.contains("cluster ready: 3 masters, 3 replicas"),
        "{log}"
    );

    let report = cluster.check().await;
    assert!(report.is_healthy(), "{report}");
    assert_eq!(report.slots_covered, 16384);
    let masters: BTreeSet<NodeAddr> = report.masters().map(|m| m.addr.clone()).collect();
    let followed: BTreeSet<NodeAddr> = report
        .replicas()
        .map(|r| r.master_addr.clone().expect("replica knows its master"))
        .collect();
    assert_eq!(masters.len(), 3);
    assert_eq!(followed, masters, "each replica follows a different master");
    assert!(
        report
            .replicas()
            .all(|r| r.master_link_up == Some(true) && r.healthy)
    );
    assert!(report.nodes.iter().all(|n| n.used_memory.is_some()));

    // CLUSTER SHARDS from a real server, in both protocols, agrees with the check.
    let seed = &cluster.seeds()[0];
    let resp2 = parse_cluster_shards(&run(seed, &["CLUSTER", "SHARDS"]).await).unwrap();
    assert_eq!(resp2.len(), 3);
    let mut ranges: Vec<SlotRange> = resp2.iter().flat_map(|s| s.slots.clone()).collect();
    ranges.sort();
    assert_eq!(ranges[0], SlotRange::new(0, 5460));
    assert!(
        resp2
            .iter()
            .all(|s| s.nodes.len() == 2 && s.master().is_some())
    );
    let resp3_client = redis::Client::open(format!("redis://{seed}/?protocol=resp3")).unwrap();
    let mut resp3 = resp3_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: redis::Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(&mut resp3)
        .await
        .unwrap();
    assert_eq!(parse_cluster_shards(&reply).unwrap().len(), 3);

    // Keys of every shard can be written and read through an ordinary cluster client.
    let urls: Vec<String> = cluster.seeds().iter().map(NodeAddr::redis_url).collect();
    tokio::task::spawn_blocking(move || {
        let client = redis::cluster::ClusterClient::new(urls).unwrap();
        let mut conn = client.get_connection().unwrap();
        for i in 0..60 {
            let key = format!("key:{i}");
            let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut conn).unwrap();
            let back: i64 = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
            assert_eq!(back, i);
        }
    })
    .await
    .unwrap();
    for master in &masters {
        let keys: i64 = client(master).await.query(&["DBSIZE"]).await.unwrap();
        assert!(keys > 0, "{master} holds none of the 60 keys");
    }
}

#[tokio::test]
async fn creating_from_a_node_that_is_not_empty_is_refused_and_names_it() {
    let nodes = start_nodes(6);
    let addrs: Vec<NodeAddr> = nodes.iter().map(node_addr).collect();
    // Node 2 has met node 5: it belongs to another cluster.
    run(
        &addrs[2],
        &["CLUSTER", "MEET", "127.0.0.1", &addrs[5].port.to_string()],
    )
    .await;
    // Node 3 serves slots.
    run(&addrs[3], &["CLUSTER", "ADDSLOTSRANGE", "0", "99"]).await;
    // Node 4 holds a key but no slot (given all slots, written to, then stripped of them).
    run(&addrs[4], &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client(&addrs[4])
        .await
        .query::<()>(&["SET", "k", "v"])
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "single-node cluster never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(&addrs[4], &["CLUSTER", "DELSLOTSRANGE", "0", "16383"]).await;

    for (bad, reason) in [
        (2, "it already knows 1 other node"),
        (3, "it already serves slots 0-99"),
        (4, "it holds 1 key"),
    ] {
        let mut events = Vec::new();
        let err = create_cluster(&spec(&[&nodes[0], &nodes[1], &nodes[bad]], 0), &mut |p| {
            events.push(p.to_string())
        })
        .await
        .unwrap_err();
        let ClusterError::NodeNotEmpty { addr, .. } = &err else {
            panic!("expected NodeNotEmpty, got {err}");
        };
        assert_eq!(addr, &addrs[bad]);
        let text = err.to_string();
        assert!(text.contains(reason), "{text}");
        assert!(
            text.starts_with(&format!("{} is not empty", addrs[bad])),
            "{text}"
        );
        assert_eq!(events.len(), 1, "only the plan was reported: {events:?}");
    }
    // The empty nodes checked along the way were left untouched.
    for addr in &addrs[..2] {
        let info = client(addr).await.cluster_info().await.unwrap();
        assert_eq!(
            (info.known_nodes, info.slots_assigned, info.my_epoch),
            (1, 0, 0)
        );
    }
}

#[tokio::test]
async fn zero_masters_is_rejected_before_touching_any_node() {
    // Nothing listens on these ports: touching a node would fail as `Unreachable` instead.
    let ports: Vec<_> = (0..2).map(|_| reserve_node_port()).collect();
    let nodes: Vec<NewNode> = ports
        .iter()
        .map(|p| NewNode::new(NodeAddr::new("127.0.0.1", p.port())))
        .collect();
    for (nodes, replicas, expected) in [
        (
            nodes.clone(),
            2,
            "masters 0: 2 nodes cannot form one shard of 1 master + 2 replicas",
        ),
        (Vec::new(), 0, "masters 0: no nodes were given"),
    ] {
        let mut events = 0;
        let spec = CreateSpec {
            nodes,
            replicas_per_master: replicas,
            timeout: Duration::from_secs(5),
        };
        let err = create_cluster(&spec, &mut |_| events += 1)
            .await
            .unwrap_err();
        assert!(matches!(err, ClusterError::InvalidTopology(_)), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(events, 0);
    }
}

#[tokio::test]
async fn a_node_that_never_joins_is_named_with_what_the_others_report() {
    let mut nodes = start_nodes(2);
    // A node announcing a cluster-bus port on which nothing listens (a loopback port we hold
    // reserved): every MEET towards it is refused, so it can never complete a handshake.
    // Everything stays on loopback.
    let dead_bus_port = cinnabar_testkit::reserve_port();
    nodes.push(TestServer::start_with(ServerOptions {
        cluster: true,
        extra: vec![(
            "cluster-announce-bus-port".into(),
            dead_bus_port.port().to_string(),
        )],
        ..ServerOptions::default()
    }));
    let addrs: Vec<NodeAddr> = nodes.iter().map(node_addr).collect();
    let mut spec = spec(&[&nodes[0], &nodes[1], &nodes[2]], 0);
    spec.timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = create_cluster(&spec, &mut |_| {}).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let ClusterError::Timeout {
        pending,
        pending_nodes,
        ..
    } = &err
    else {
        panic!("expected a timeout, got {err}");
    };
    // It is the one node blamed, although the others cannot complete their view either.
    assert_eq!(pending_nodes, &addrs[2..], "{err}");
    // The others may never learn of it, or learn of it and fail to reach its bus: either way
    // the error names it.
    let bad = addrs[2].to_string();
    assert!(pending.iter().any(|p| p.contains(&bad)), "{err}");
    assert!(
        pending
            .iter()
            .all(|p| !p.starts_with(&addrs[0].to_string()) || p.contains(&bad)),
        "{err}"
    );
    eprintln!("{err}");
}

#[tokio::test]
async fn check_reports_uncovered_slots_and_open_slots() {
    let cluster = TestCluster::start(3, 0).await;
    let seeds = cluster.seeds();
    let ids = node_ids(&seeds).await;
    // Master 0 drops slots 0-99; master 1 starts moving slot 6000 to master 2.
    run(&seeds[0], &["CLUSTER", "DELSLOTSRANGE", "0", "99"]).await;
    run(
        &seeds[1],
        &["CLUSTER", "SETSLOT", "6000", "MIGRATING", &ids[2]],
    )
    .await;
    run(
        &seeds[2],
        &["CLUSTER", "SETSLOT", "6000", "IMPORTING", &ids[1]],
    )
    .await;

    let report = check(&seeds).await.unwrap();
    assert!(!report.is_healthy());
    assert_eq!(report.slots_covered, 16384 - 100);
    let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let has = |text: &str| lines.iter().any(|l| l == text);
    assert!(has("100 slots are served by no master: 0-99"), "{report}");
    assert!(
        has(&format!(
            "slot 6000 is open on {}: migrating to {} ({})",
            seeds[1],
            seeds[2],
            &ids[2][..8]
        )),
        "{report}"
    );
    assert!(
        has(&format!(
            "slot 6000 is open on {}: importing from {} ({})",
            seeds[2],
            seeds[1],
            &ids[1][..8]
        )),
        "{report}"
    );
    assert!(
        has(&format!("{} reports cluster_state:fail", seeds[0])),
        "{report}"
    );
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::Disagreement { views, .. } if views.len() == 2 && views[1] == [seeds[0].clone()]
        )),
        "{report}"
    );
}

async fn node_ids(seeds: &[NodeAddr]) -> Vec<String> {
    let mut ids = Vec::new();
    for seed in seeds {
        ids.push(
            client(seed)
                .await
                .my_id()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    ids
}

#[tokio::test]
async fn check_reports_a_paused_node_as_unreachable_without_hanging() {
    let cluster = TestCluster::start(3, 0).await;
    let seeds = cluster.seeds();
    cluster.servers()[1].pause();
    let started = Instant::now();
    // The library default timeouts, as `cinnabar status` uses them.
    let report = check(&seeds).await.unwrap();
    let took = started.elapsed();
    cluster.servers()[1].resume();

    assert!(took < Duration::from_secs(6), "check took {took:?}");
    assert!(!report.is_healthy());
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::NodeUnreachable { addr, .. } if addr == &seeds[1])),
        "{report}"
    );
    let paused = report.node(&seeds[1]).unwrap();
    assert!(!paused.reachable && !paused.healthy);
    assert_eq!(paused.role, Role::Master);
    assert_eq!(
        paused.slots,
        [SlotRange::new(5461, 10922)],
        "described by the others"
    );
    assert_eq!(report.slots_covered, 16384);
    assert!(report.nodes.iter().filter(|n| n.reachable).count() == 2);
}

#[tokio::test]
async fn a_killed_and_restarted_master_leads_check_back_to_healthy() {
    let options = ServerOptions {
        node_timeout_ms: Some(1000),
        ..ServerOptions::default()
    };
    let mut cluster = TestCluster::start_with(3, 1, options).await;
    let seeds = cluster.seeds();
    let (old_master, its_replica) = (seeds[0].clone(), seeds[3].clone());
    cluster.server_mut(0).kill();

    // Its replica takes over once the others agree it failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = cluster.check().await;
        assert!(
            !report.is_healthy(),
            "healthy while a node is dead: {report}"
        );
        if report
            .node(&its_replica)
            .is_some_and(|n| n.role == Role::Master)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.server_mut(0).restart();
    let report = cluster.wait_healthy(Duration::from_secs(20)).await;
    let back = report.node(&old_master).unwrap();
    assert_eq!(back.role, Role::Replica, "{report}");
    assert_eq!(back.master_addr.as_ref(), Some(&its_replica));
    assert_eq!(report.slots_covered, 16384);
}
