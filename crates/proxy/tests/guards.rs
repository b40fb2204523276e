//! Connection guards against a real cluster: the client limit, the address allow-list and the
//! idle timeout each refuse or close exactly the clients they should, with Redis's wording.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cinnabar_proxy::ProxyConfig;
use cinnabar_testkit::TestCluster;

mod support;
use support::connect;

/// Sends `request` and reads until the reply's CRLF or the connection closes.
fn ask(stream: &mut TcpStream, request: &[u8]) -> String {
    let _ = stream.write_all(request);
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while !got.ends_with(b"\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the peer closed the connection: end of stream, or a reset (the peer closed with
/// our unread request in its buffer). A read timeout means it is still open.
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_limit_refuses_one_more_with_redis_words() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.max_clients = 2;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut first = connect(proxy.local_addr());
    let mut second = connect(proxy.local_addr());
    assert_eq!(ask(&mut first, b"PING\r\n"), "+PONG\r\n");
    assert_eq!(ask(&mut second, b"PING\r\n"), "+PONG\r\n");
    let mut third = connect(proxy.local_addr());
    assert_eq!(
        ask(&mut third, b"PING\r\n"),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed(&mut third));
    // A place frees up when a client leaves.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect(proxy.local_addr());
        if ask(&mut again, b"PING\r\n") == "+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = proxy.metrics();
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cinnabar_client_connections_rejected_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rejected >= 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_addresses_are_served() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.allow_from = vec!["10.0.0.0/8".parse().unwrap()];
    let refusing = cinnabar_proxy::start(config.clone()).unwrap();
    let mut outsider = connect(refusing.local_addr());
    assert_eq!(
        ask(&mut outsider, b"PING\r\n"),
        "-ERR cinnabar: connections from 127.0.0.1 are not allowed\r\n"
    );
    assert!(closed(&mut outsider));

    config.allow_from.push("127.0.0.0/8".parse().unwrap());
    let allowing = cinnabar_proxy::start(config).unwrap();
    let mut insider = connect(allowing.local_addr());
    assert_eq!(ask(&mut insider, b"PING\r\n"), "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_are_closed_but_busy_ones_are_not() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.idle_timeout = Some(Duration::from_millis(400));
    let proxy = cinnabar_proxy::start(config).unwrap();

    let mut idle = connect(proxy.local_addr());
    assert_eq!(ask(&mut idle, b"PING\r\n"), "+PONG\r\n");
    let mut chatty = connect(proxy.local_addr());
    let mut blocked = connect(proxy.local_addr());
    // Blocked for longer than the idle timeout: waiting on Redis is not idleness.
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nnone\r\n$3\r\n1.2\r\n")
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(ask(&mut chatty, b"PING\r\n"), "+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed(&mut idle), "the idle client was not closed");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(
        ask(&mut blocked, b""),
        "*-1\r\n",
        "the blocked client got its reply"
    );
}
