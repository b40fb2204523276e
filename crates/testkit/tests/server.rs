//! The test kit's own promises, checked against real servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cinnabar_testkit::TestServer;

fn roundtrip(server: &TestServer, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server.addr())?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(request)?;
    let mut buf = vec![0; 256];
    let n = stream.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn started_server_answers_and_keeps_data_across_kill_and_restart() {
    let mut server = TestServer::start();
    assert_eq!(roundtrip(&server, b"SET k v\r\n").unwrap(), b"+OK\r\n");
    server.kill();
    assert!(!server.is_running());
    server.restart();
    assert_eq!(
        roundtrip(&server, b"GET k\r\n").unwrap(),
        b"$1\r\nv\r\n",
        "AOF must survive SIGKILL"
    );
}

#[test]
fn paused_server_answers_nothing_until_resumed() {
    let server = TestServer::start();
    server.pause();
    assert!(
        roundtrip(&server, b"PING\r\n").is_err(),
        "a paused server must not answer"
    );
    server.resume();
    assert_eq!(roundtrip(&server, b"PING\r\n").unwrap(), b"+PONG\r\n");
}

#[test]
fn parallel_servers_get_distinct_ports() {
    let servers: Vec<TestServer> = (0..4).map(|_| TestServer::start_cluster_node()).collect();
    let mut ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}
