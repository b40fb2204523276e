//! The admin HTTP listener against a real cluster: metrics count what clients did, readiness
//! follows slot coverage, the topology and config documents are well-formed JSON, and the
//! backend password never appears.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cinnabar_proxy::ProxyConfig;
use cinnabar_testkit::TestCluster;

/// `GET path` → (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// The value of one sample line, `name{labels} value`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_readiness_topology_and_config_are_served() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let admin = proxy.admin_addr().unwrap();

    let client = redis::Client::open(format!("redis://{}/", proxy.local_addr())).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..20 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut conn)
            .unwrap();
        let _: i64 = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut conn)
            .unwrap();
    }
    let _ = redis::cmd("NOSUCHCOMMAND").exec(&mut conn);
    let _ = redis::cmd("INCR").arg("k1").arg("extra").exec(&mut conn);

    // The proxy's INFO: its own counters per command, and the default sections without them.
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    assert!(info.contains("cmdstat_get:calls=20,"), "{info}");
    assert!(info.contains("cmdstat_set:calls=20,"), "{info}");
    assert!(
        !info.contains("# Keyspace"),
        "only the section asked for: {info}"
    );
    let default: String = redis::cmd("INFO").query(&mut conn).unwrap();
    assert!(
        default.contains("# Stats") && !default.contains("cmdstat_"),
        "{default}"
    );

    let (status, metrics) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(sample(&metrics, "cinnabar_requests_total{category=\"write\"}") >= 20.0);
    assert!(sample(&metrics, "cinnabar_requests_total{category=\"read\"}") >= 20.0);
    assert!(
        sample(
            &metrics,
            "cinnabar_request_errors_total{category=\"other\"}"
        ) >= 1.0
    );
    assert!(sample(&metrics, "cinnabar_request_duration_seconds_count") >= 42.0);
    assert_eq!(sample(&metrics, "cinnabar_client_connections"), 1.0);
    assert_eq!(sample(&metrics, "cinnabar_slots_covered"), 16384.0);
    assert_eq!(sample(&metrics, "cinnabar_backend_masters"), 2.0);
    assert!(sample(&metrics, "cinnabar_backend_connections") >= 1.0);

    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(admin, "/nothing-here").0, 404);

    let (status, topology) = get(admin, "/topology");
    assert_eq!(status, 200);
    let topology: serde_json::Value = serde_json::from_str(&topology).unwrap();
    assert_eq!(topology["slots_covered"], 16384);
    let masters = topology["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 2);
    let slots: u64 = masters
        .iter()
        .flat_map(|m| m["slots"].as_array().unwrap().clone())
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(slots, 16384);

    let (status, config) = get(admin, "/config");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["read_from"], "master");
    assert_eq!(config["backend_password"], serde_json::Value::Null);

    // A method other than GET is refused.
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_while_slots_have_no_master() {
    let cluster = TestCluster::start(2, 0).await;
    // Take a slot range away from its owner: the cluster no longer covers every slot.
    let seed = &cluster.seeds()[0];
    let mut node = redis::Client::open(seed.redis_url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    node.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut node).unwrap();
    let topology = cinnabar_cluster::parse_cluster_nodes(&nodes).unwrap();
    let mine = topology.myself().unwrap();
    let range = mine.slots[0];
    redis::cmd("CLUSTER")
        .arg("DELSLOTSRANGE")
        .arg(range.start)
        .arg(range.start + 9)
        .exec(&mut node)
        .unwrap();

    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), vec![seed.clone()]);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let (status, body) = get(proxy.admin_addr().unwrap(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: 10 slots have no master\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_under_load_answers_every_accepted_request_then_closes() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.drain_timeout = Duration::from_secs(20);
    let proxy = cinnabar_proxy::start(config.clone()).unwrap();
    let (addr, admin) = (proxy.local_addr(), proxy.admin_addr().unwrap());

    // Writers pipeline INCRs as fast as the proxy answers, counting acknowledgements, until
    // their connection closes.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let key = format!("drained:{w}");
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let incr = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len());
                let mut acknowledged = 0u64;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                'outer: loop {
                    if stream.write_all(incr.repeat(8).as_bytes()).is_err() {
                        break;
                    }
                    let mut replies = 0;
                    while replies < 8 {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => break 'outer,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                            assert_eq!(buf[0], b':', "{}", String::from_utf8_lossy(&buf));
                            acknowledged = String::from_utf8_lossy(&buf[1..end]).parse().unwrap();
                            buf.drain(..end + 2);
                            replies += 1;
                        }
                    }
                }
                (key, acknowledged)
            })
        })
        .collect();
    // A client waiting on a blocking command keeps the drain open until its reply.
    let blocked = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n2\r\n")
            .unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        String::from_utf8(reply).unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));

    let draining = std::thread::spawn(move || proxy.drain());
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
    assert!(
        TcpStream::connect(addr)
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 16];
                s.read(&mut buf)
            })
            .map_or(true, |n| n == 0),
        "a new client was served during the drain"
    );
    assert_eq!(draining.join().unwrap(), 0, "every client finished in time");
    assert_eq!(
        blocked.join().unwrap(),
        "*-1\r\n",
        "the blocked client got its reply"
    );

    // Every acknowledged INCR is in the cluster, and nothing beyond what was acknowledged.
    let after = cinnabar_proxy::start(ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        cluster.seeds(),
    ))
    .unwrap();
    let client = redis::Client::open(format!("redis://{}/", after.local_addr())).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    for writer in writers {
        let (key, acknowledged) = writer.join().unwrap();
        assert!(acknowledged > 0, "{key} made no progress before the drain");
        let stored: u64 = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
        assert_eq!(stored, acknowledged, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_slow_log_names_slow_commands_and_their_clients() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.access.default_role = Some("admin".into());
    config.slowlog_slower_than = Duration::from_millis(100);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let client = redis::Client::open(format!("redis://{}/", proxy.local_addr())).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("slow-one")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg("fast")
        .arg(1)
        .exec(&mut conn)
        .unwrap();
    let _: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("nothing")
        .arg(0.3)
        .query(&mut conn)
        .unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut conn).unwrap();
    assert_eq!(len, 1, "only the blocked command was slow");
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").query(&mut conn).unwrap();
    let text = format!("{entries:?}");
    assert!(
        text.contains("blpop") && text.contains("slow-one"),
        "{text}"
    );
    redis::cmd("SLOWLOG").arg("RESET").exec(&mut conn).unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut conn).unwrap();
    assert_eq!(len, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_told_to_wait_starts_before_its_cluster_forms_and_is_ready_once_it_has() {
    let options = cinnabar_testkit::ServerOptions {
        cluster: true,
        ..Default::default()
    };
    let servers = cinnabar_testkit::TestServer::start_many(3, &options);
    let seeds: Vec<cinnabar_cluster::NodeAddr> = servers
        .iter()
        .map(cinnabar_testkit::cluster::node_addr)
        .collect();
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), seeds.clone());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.retry_window = Duration::from_millis(200);
    config.refresh_interval = Duration::from_millis(200);
    // Without the setting, a cluster with no slots yet is a start failure, as before.
    assert!(cinnabar_proxy::start(config.clone()).is_err());
    config.wait_for_cluster = true;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let admin = proxy.admin_addr().unwrap();
    let (status, body) = get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    let client = redis::Client::open(format!("redis://{}/", proxy.local_addr())).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .exec(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("not served by any node"), "{err}");

    let spec = cinnabar_cluster::CreateSpec {
        nodes: seeds
            .iter()
            .cloned()
            .map(cinnabar_cluster::NewNode::new)
            .collect(),
        replicas_per_master: 0,
        timeout: Duration::from_secs(30),
    };
    cinnabar_cluster::create_cluster(&spec, &mut |_| {})
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get(admin, "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis::cmd("SET").arg("k").arg("v").exec(&mut conn).unwrap();
}
