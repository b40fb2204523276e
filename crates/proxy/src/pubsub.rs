//! Subscribed mode: after SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE a client talks to one node over a
//! private connection, and the proxy relays bytes both ways. Only the commands Redis allows in
//! that mode pass; when the last subscription ends (or on RESET), the client returns to normal
//! routing on the same connection.
//!
//! Classic pub/sub works through any master (Redis Cluster propagates PUBLISH to every node);
//! sharded pub/sub goes to the master owning the channel's slot. Not the hot path: allocation
//! here is fine, blocking the worker is not.

use cinnabar_cluster::NodeAddr;
use cinnabar_resp::{Limits, Parsed, ReplyScanner, Request, RequestParser, Value, parse_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Commands Redis accepts from a subscribed RESP2 client.
const ALLOWED: [&str; 9] = [
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

/// Sent after any command that may end subscribed mode. Its reply marks the point where every
/// earlier reply has arrived, so the commands the client pipelined after it are handled in the
/// mode Redis would handle them in.
const BARRIER: &[u8] = b"*2\r\n$4\r\nPING\r\n$16\r\ncinnabar-barrier\r\n";

/// The barrier's reply, in subscribed mode and after leaving it.
fn is_barrier_reply(reply: &[u8]) -> bool {
    reply == b"*2\r\n$4\r\npong\r\n$16\r\ncinnabar-barrier\r\n"
        || reply == b"$16\r\ncinnabar-barrier\r\n"
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// No subscription is left: continue serving the client normally.
    Unsubscribed,
    /// The client sent RESET: as `Unsubscribed`, and the connection's state (protocol, name)
    /// is back to a fresh connection's.
    Reset,
    /// The client left, sent QUIT or garbage, or the node connection broke.
    Closed,
}

/// Relays between the client and `node`, starting with the subscribing `first` request.
///
/// # Errors
/// I/O errors on the client connection.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay(
    client_rd: &mut ReadHalf<'_>,
    client_wr: &mut WriteHalf<'_>,
    input: &mut Vec<u8>,
    request: &mut Request,
    parser: &RequestParser,
    node: &NodeAddr,
    first: &[u8],
    prelude: &(Vec<u8>, usize),
    connect_timeout: std::time::Duration,
) -> std::io::Result<Ended> {
    let mut stream = match crate::backend::connect_private(node, prelude, connect_timeout).await {
        Ok(stream) => stream,
        Err(why) => {
            let msg =
                format!("-ERR cinnabar: cannot open a pub/sub connection to {node}: {why}\r\n");
            client_wr.write_all(msg.as_bytes()).await?;
            return Ok(Ended::Unsubscribed);
        }
    };
    let (mut node_rd, mut node_wr) = stream.split();
    let mut to_node = first.to_vec();
    let mut to_client = Vec::new();
    let mut from_node = Vec::new();
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut awaiting_barrier = false;
    let mut ended = false;
    let mut reset = false;
    loop {
        let mut quit = false;
        if !awaiting_barrier {
            (quit, awaiting_barrier) =
                take_client_commands(input, request, parser, &mut to_node, &mut to_client);
        }
        if !to_node.is_empty() && node_wr.write_all(&to_node).await.is_err() {
            return lost(client_wr, node).await;
        }
        to_node.clear();
        if !to_client.is_empty() {
            client_wr.write_all(&to_client).await?;
            to_client.clear();
        }
        if quit {
            return Ok(Ended::Closed);
        }
        tokio::select! {
            read = client_rd.read_buf(input) => {
                if read? == 0 {
                    return Ok(Ended::Closed);
                }
            }
            read = node_rd.read_buf(&mut from_node) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return lost(client_wr, node).await;
                }
                let mut pos = 0;
                let mut leave = false;
                while let Ok(Some(len)) = scanner.scan(&from_node[pos..]) {
                    let reply = &from_node[pos..pos + len];
                    pos += len;
                    if is_barrier_reply(reply) {
                        awaiting_barrier = false;
                        if ended {
                            leave = true;
                            break;
                        }
                        continue;
                    }
                    reset |= reply == b"+RESET\r\n";
                    ended |= ends_subscribed_mode(reply);
                    to_client.extend_from_slice(reply);
                }
                from_node.drain(..pos);
                client_wr.write_all(&to_client).await?;
                to_client.clear();
                if leave {
                    return Ok(if reset { Ended::Reset } else { Ended::Unsubscribed });
                }
            }
        }
    }
}

/// Forwards allowed commands to the node and answers the others. Returns (quit: after QUIT or
/// garbage, barrier: a command that may end subscribed mode was sent, followed by the barrier,
/// and the rest of the input waits for its reply).
fn take_client_commands(
    input: &mut Vec<u8>,
    request: &mut Request,
    parser: &RequestParser,
    to_node: &mut Vec<u8>,
    to_client: &mut Vec<u8>,
) -> (bool, bool) {
    let mut start = 0;
    let mut quit = false;
    let mut barrier = false;
    while !quit && !barrier {
        let buf = &input[start..];
        match parser.parse(buf, request) {
            Ok(Parsed::Complete { consumed }) => {
                let name = String::from_utf8_lossy(request.arg(0, buf).unwrap_or_default())
                    .to_ascii_lowercase();
                if name == "quit" {
                    to_client.extend_from_slice(b"+OK\r\n");
                    quit = true;
                } else if ALLOWED.contains(&name.as_str()) {
                    if request.is_inline() {
                        request.write_multibulk(buf, to_node);
                    } else {
                        to_node.extend_from_slice(&buf[..consumed]);
                    }
                    if matches!(
                        name.as_str(),
                        "unsubscribe" | "punsubscribe" | "sunsubscribe" | "reset"
                    ) {
                        to_node.extend_from_slice(BARRIER);
                        barrier = true;
                    }
                } else {
                    to_client.extend_from_slice(
                        format!(
                            "-ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
                        )
                        .as_bytes(),
                    );
                }
                start += consumed;
            }
            Ok(Parsed::Skipped { consumed }) => start += consumed,
            Ok(Parsed::Incomplete) => break,
            Err(e) => {
                to_client.extend_from_slice(format!("-ERR {e}\r\n").as_bytes());
                quit = true;
            }
        }
    }
    input.drain(..start.min(input.len()));
    (quit, barrier)
}

/// `+RESET`, or an unsubscribe confirmation whose remaining count is 0.
fn ends_subscribed_mode(reply: &[u8]) -> bool {
    if reply == b"+RESET\r\n" {
        return true;
    }
    let items = match parse_value(reply, &Limits::default()) {
        Ok(Some((Value::Array(items) | Value::Push(items), _))) => items,
        _ => return false,
    };
    match items.as_slice() {
        [Value::Bulk(kind), _, Value::Integer(0)] => {
            matches!(
                kind.as_slice(),
                b"unsubscribe" | b"punsubscribe" | b"sunsubscribe"
            )
        }
        _ => false,
    }
}

async fn lost(client_wr: &mut WriteHalf<'_>, node: &NodeAddr) -> std::io::Result<Ended> {
    let msg = format!("-ERR cinnabar: pub/sub connection to {node} lost; subscribe again\r\n");
    client_wr.write_all(msg.as_bytes()).await?;
    Ok(Ended::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_unsubscribe_or_reset_ends_subscribed_mode() {
        assert!(ends_subscribed_mode(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
        ));
        assert!(!ends_subscribed_mode(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:1\r\n"
        ));
        assert!(ends_subscribed_mode(
            b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nc*\r\n:0\r\n"
        ));
        assert!(!ends_subscribed_mode(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\n0\r\n"
        ));
        assert!(ends_subscribed_mode(b"+RESET\r\n"));
    }
}
