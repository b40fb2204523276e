//! Raw RESP over a plain socket, for the proxy's process-level tests: exact bytes in, exact
//! replies out, where a client library would hide what the proxy really sent.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cinnabar_cluster::NodeAddr;

/// How long a test waits for any one read or write before it fails instead of hanging.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection with read and write timeouts, Nagle off (tests send small pipelines).
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// One command as a RESP array of bulk strings.
pub(crate) fn command(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    cinnabar_resp::encode::command(&mut out, &args);
    out
}

/// The next `count` complete replies, as bytes; fails on anything after them in the last read.
pub(crate) fn read_reply_bytes(stream: &mut TcpStream, count: usize) -> Vec<Vec<u8>> {
    let mut scanner = cinnabar_resp::ReplyScanner::new(cinnabar_resp::Limits::default());
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while replies.len() < count {
        match scanner.scan(&buf).unwrap() {
            Some(len) => {
                replies.push(buf[..len].to_vec());
                buf.drain(..len);
            }
            None => {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed after {} replies", replies.len());
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    assert!(
        buf.is_empty(),
        "more than {count} replies: {:?}",
        String::from_utf8_lossy(&buf)
    );
    replies
}

/// The next `count` complete replies, as text.
pub(crate) fn read_replies(stream: &mut TcpStream, count: usize) -> Vec<String> {
    read_reply_bytes(stream, count)
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Sends `request` and returns the next `count` replies, as text.
pub(crate) fn exchange(stream: &mut TcpStream, request: &[u8], count: usize) -> Vec<String> {
    stream.write_all(request).unwrap();
    read_replies(stream, count)
}

/// Sends one command and returns its one reply, as text.
pub(crate) fn ask(stream: &mut TcpStream, args: &[&str]) -> String {
    exchange(stream, &command(args), 1).remove(0)
}

/// A `redis` connection straight to a node (bypassing the proxy), with a timeout.
pub(crate) fn node_connection(addr: &NodeAddr, password: Option<&str>) -> redis::Connection {
    let url = match password {
        Some(p) => format!("redis://:{p}@{addr}/"),
        None => addr.redis_url(),
    };
    let conn = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}
