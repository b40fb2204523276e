//! Two real clusters behind one endpoint (`[[clusters]]`): keys go to the cluster owning
//! their prefix, MGET/MSET/DEL spanning both are split and merged as for keys in different
//! slots, a transaction spanning both is refused with an error naming the clusters, fan-outs
//! and SCAN cover both, metrics carry the cluster names, and one cluster is switched online on
//! its own. Driven through redis-cli and redis-py (the venv `.ci/setup` installs; see
//! `clients.rs`), and raw RESP.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cinnabar_proxy::config::ClusterConfig;
use cinnabar_proxy::{CatchUp, ProxyConfig, ProxyHandle, SwitchRequest};
use cinnabar_testkit::TestCluster;

mod support;
use support::{ask, connect, node_connection};

/// Whether any node of `cluster` holds `key`.
fn holds(cluster: &TestCluster, key: &str) -> bool {
    cluster.seeds().iter().any(|node| {
        let mut conn = node_connection(node, None);
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut conn)
            .is_ok_and(|n| n == 1)
    })
}

fn two_clusters(main: &TestCluster, orders: &TestCluster) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.clusters = vec![
        ClusterConfig {
            name: "main".into(),
            seeds: main.seeds(),
            credentials: None,
            prefixes: Vec::new(),
        },
        ClusterConfig {
            name: "orders".into(),
            seeds: orders.seeds(),
            credentials: None,
            prefixes: vec!["orders:".into(), "carts:".into()],
        },
    ];
    cinnabar_proxy::start(config).unwrap()
}

fn redis_cli(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_go_to_the_cluster_of_their_prefix_and_cross_cluster_requests_split_or_refuse() {
    let (main, orders) = tokio::join!(TestCluster::start(2, 0), TestCluster::start(2, 0));
    let proxy = two_clusters(&main, &orders);
    let addr = proxy.local_addr();

    assert_eq!(redis_cli(addr, &["SET", "orders:1", "o"]), "OK");
    assert_eq!(redis_cli(addr, &["SET", "user:1", "u"]), "OK");
    assert!(holds(&orders, "orders:1") && !holds(&main, "orders:1"));
    assert!(holds(&main, "user:1") && !holds(&orders, "user:1"));

    // Split across clusters, as across slots.
    assert_eq!(
        redis_cli(
            addr,
            &["MSET", "carts:7", "c", "user:2", "v", "orders:2", "p"]
        ),
        "OK"
    );
    assert!(holds(&orders, "carts:7") && holds(&main, "user:2"));
    assert_eq!(
        redis_cli(addr, &["MGET", "orders:1", "user:1", "carts:7", "nope"]),
        "o\nu\nc"
    );
    assert_eq!(redis_cli(addr, &["DBSIZE"]), "5");
    let keys: BTreeSet<String> = ["orders:1", "user:1", "carts:7", "user:2", "orders:2"]
        .map(str::to_owned)
        .into();
    let scanned: BTreeSet<String> = redis_cli(addr, &["--scan"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(scanned, keys, "SCAN walks both clusters");

    // One key, two prefixes, one hash tag: still two clusters.
    let mut client = connect(addr);
    let reply = ask(&mut client, &["RENAME", "orders:{x}", "user:{x}"]);
    assert!(
        reply.contains("different clusters: main, orders"),
        "{reply}"
    );
    // A transaction spanning both clusters is refused whole.
    assert_eq!(ask(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(ask(&mut client, &["SET", "orders:{t}", "1"]), "+QUEUED\r\n");
    let reply = ask(&mut client, &["SET", "user:{t}", "1"]);
    assert!(
        reply.contains("transaction spans clusters orders and main"),
        "{reply}"
    );
    assert!(ask(&mut client, &["EXEC"]).starts_with("-EXECABORT"));
    assert!(!holds(&orders, "orders:{t}") && !holds(&main, "user:{t}"));
    // Within one cluster a transaction runs as usual.
    assert_eq!(ask(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(ask(&mut client, &["SET", "orders:{t}", "1"]), "+QUEUED\r\n");
    assert_eq!(ask(&mut client, &["INCR", "orders:{t}"]), "+QUEUED\r\n");
    assert_eq!(ask(&mut client, &["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
    // A hash slot exists in each cluster: asking about one counts and lists both.
    assert_eq!(redis_cli(addr, &["SET", "user:{t}", "2"]), "OK");
    let slot = redis_cli(addr, &["CLUSTER", "KEYSLOT", "{t}"]);
    assert_eq!(redis_cli(addr, &["CLUSTER", "COUNTKEYSINSLOT", &slot]), "2");
    let listed: BTreeSet<String> = redis_cli(addr, &["CLUSTER", "GETKEYSINSLOT", &slot, "10"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, ["orders:{t}", "user:{t}"].map(str::to_owned).into());
    assert_eq!(redis_cli(addr, &["DEL", "user:{t}"]), "1");

    // Metrics and /topology name the clusters.
    let metrics = http_get(proxy.admin_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("cinnabar_cluster_masters{cluster=\"orders\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cinnabar_cluster_slots_covered{cluster=\"main\"} 16384"));
    let topology = http_get(proxy.admin_addr().unwrap(), "/topology");
    assert!(topology.contains("\"cluster\":\"orders\""), "{topology}");
    assert!(http_get(proxy.admin_addr().unwrap(), "/readyz").contains("ready"));
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn one_cluster_is_switched_online_and_the_other_is_untouched() {
    let (main, orders, bigger) = tokio::join!(
        TestCluster::start(1, 0),
        TestCluster::start(1, 0),
        TestCluster::start(3, 0)
    );
    let proxy = two_clusters(&main, &orders);
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["SET", "user:1", "u"]), "+OK\r\n");

    let mut request = SwitchRequest {
        cluster: None,
        seeds: bigger.seeds(),
        credentials: None,
        catch_up: CatchUp::Unchecked,
        max_pause: Duration::from_secs(2),
    };
    let report = proxy.switch_backend(request.clone()).await;
    assert!(
        report.reason.unwrap().contains("name the one to switch"),
        "two clusters: the switch must say which"
    );
    request.cluster = Some("orders".into());
    let report = proxy.switch_backend(request).await;
    assert_eq!(
        report.outcome,
        cinnabar_proxy::switch::Outcome::Switched,
        "{report:?}"
    );
    assert_eq!(report.cluster, "orders");
    assert_eq!(report.to_masters.len(), 3);

    assert_eq!(ask(&mut client, &["SET", "orders:9", "o"]), "+OK\r\n");
    assert!(holds(&bigger, "orders:9") && !holds(&orders, "orders:9"));
    assert_eq!(ask(&mut client, &["GET", "user:1"]), "$1\r\nu\r\n");
    assert_eq!(ask(&mut client, &["DBSIZE"]), ":2\r\n");
}

/// `$CINNABAR_CLIENT_LIBS`, or `client-libs` in the cargo target dir (see `clients.rs`).
fn redis_py() -> Option<PathBuf> {
    if std::env::var("CINNABAR_SKIP_CLIENT_LIBS").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED redis-py: CINNABAR_SKIP_CLIENT_LIBS is set");
        return None;
    }
    let libs = std::env::var_os("CINNABAR_CLIENT_LIBS").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("client-libs")
        },
        PathBuf::from,
    );
    let python = libs.join("venv/bin/python");
    assert!(
        python.exists(),
        "redis-py is missing ({}): run `bash .ci/setup`, or set CINNABAR_SKIP_CLIENT_LIBS=1",
        python.display()
    );
    Some(python)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_py_sees_one_redis_over_two_clusters() {
    let Some(python) = redis_py() else { return };
    let (main, orders) = tokio::join!(TestCluster::start(2, 0), TestCluster::start(1, 0));
    let proxy = two_clusters(&main, &orders);
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
r.mset({"orders:1": "a", "user:1": "b", "carts:1": "c"})
assert r.mget("orders:1", "user:1", "carts:1") == ["a", "b", "c"]
assert r.delete("orders:1", "user:1") == 2
p = r.pipeline(transaction=False)
for i in range(50):
    p.set(f"orders:p{i}", i)
    p.set(f"user:p{i}", i)
p.execute()
assert r.dbsize() == 101
assert len(list(r.scan_iter(count=20))) == 101
try:
    with r.pipeline(transaction=True) as t:
        t.set("orders:{t}", 1)
        t.set("user:{t}", 1)
        t.execute()
    raise SystemExit("a transaction over two clusters ran")
except redis.exceptions.ResponseError as e:
    assert "different clusters" in str(e) or "spans clusters" in str(e) or "EXECABORT" in str(e), str(e)
print("ok")
"#;
    let out = tokio::task::spawn_blocking({
        let port = proxy.local_addr().port().to_string();
        move || {
            Command::new(python)
                .args(["-c", script, &port])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(holds(&orders, "orders:p7") && holds(&main, "user:p7"));
}
