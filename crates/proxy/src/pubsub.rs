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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
pub(crate) async fn relay<R, W>(
    client_rd: &mut R,
    client_wr: &mut W,
    input: &mut Vec<u8>,
    request: &mut Request,
    parser: &RequestParser,
    node: &NodeAddr,
    first: &[u8],
    prelude: &(Vec<u8>, usize),
    connect_timeout: std::time::Duration,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
    // Set while a barrier is out: what the proxy answers itself once every earlier reply has
    // arrived, and whether the connection closes then.
    let mut awaiting_barrier: Option<Held> = None;
    let mut subscriptions = Subscriptions::default();
    let mut ended = false;
    let mut reset = false;
    loop {
        if awaiting_barrier.is_none() {
            awaiting_barrier = take_client_commands(input, request, parser, &mut to_node);
        }
        if !to_node.is_empty() && node_wr.write_all(&to_node).await.is_err() {
            return lost(client_wr, node).await;
        }
        to_node.clear();
        // After QUIT or garbage nothing more is read from the client.
        let closing = awaiting_barrier.as_ref().is_some_and(|held| held.close);
        tokio::select! {
            read = client_rd.read_buf(input), if !closing => {
                if read? == 0 {
                    return Ok(Ended::Closed);
                }
            }
            read = node_rd.read_buf(&mut from_node) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return lost(client_wr, node).await;
                }
                let mut pos = 0;
                let mut leave = None;
                while let Ok(Some(len)) = scanner.scan(&from_node[pos..]) {
                    let reply = &from_node[pos..pos + len];
                    pos += len;
                    if is_barrier_reply(reply) {
                        let held = awaiting_barrier.take().unwrap_or_default();
                        to_client.extend_from_slice(&held.reply);
                        if held.close {
                            leave = Some(Ended::Closed);
                            break;
                        }
                        if ended {
                            leave = Some(Ended::Unsubscribed);
                            break;
                        }
                        continue;
                    }
                    reset |= reply == b"+RESET\r\n";
                    ended |= subscriptions.ended_by(reply);
                    to_client.extend_from_slice(reply);
                }
                from_node.drain(..pos);
                client_wr.write_all(&to_client).await?;
                to_client.clear();
                if let Some(ended) = leave {
                    return Ok(match ended {
                        Ended::Unsubscribed if reset => Ended::Reset,
                        other => other,
                    });
                }
            }
        }
    }
}

/// A reply the proxy gives itself in subscribed mode (to QUIT, a refused command, or garbage).
/// It is held until a barrier's reply shows that every earlier reply from the node arrived, so
/// the client gets its replies in request order, as from Redis.
#[derive(Debug, Default)]
struct Held {
    reply: Vec<u8>,
    /// QUIT or garbage: the connection closes after the reply.
    close: bool,
}

/// Forwards allowed commands to the node, up to the first command that may end subscribed
/// mode or that the proxy answers itself: then a barrier follows, the rest of the input waits
/// for its reply, and the returned [`Held`] says what to do then.
fn take_client_commands(
    input: &mut Vec<u8>,
    request: &mut Request,
    parser: &RequestParser,
    to_node: &mut Vec<u8>,
) -> Option<Held> {
    let mut start = 0;
    let mut barrier = None;
    while barrier.is_none() {
        let buf = &input[start..];
        match parser.parse(buf, request) {
            Ok(Parsed::Complete { consumed }) => {
                let name = String::from_utf8_lossy(request.arg(0, buf).unwrap_or_default())
                    .to_ascii_lowercase();
                let args = Parts { request, buf };
                if name == "quit" {
                    barrier = Some(Held {
                        reply: b"+OK\r\n".to_vec(),
                        close: true,
                    });
                } else if let Err(e) = cinnabar_commands::resolve(&args) {
                    // Like Redis, an unknown command or a wrong arity is reported before the
                    // subscribed-mode refusal.
                    barrier = Some(Held {
                        reply: refusal(&name, &e.to_bytes()),
                        close: false,
                    });
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
                        barrier = Some(Held::default());
                    }
                } else {
                    let line = format!(
                        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    );
                    barrier = Some(Held {
                        reply: refusal(&name, line.as_bytes()),
                        close: false,
                    });
                }
                start += consumed;
            }
            Ok(Parsed::Skipped { consumed }) => start += consumed,
            Ok(Parsed::Incomplete) => break,
            Err(e) => {
                barrier = Some(Held {
                    reply: format!("-ERR {e}\r\n").into_bytes(),
                    close: true,
                });
                // Nothing after garbage is ever read.
                start = input.len();
            }
        }
    }
    if barrier.is_some() {
        to_node.extend_from_slice(BARRIER);
    }
    input.drain(..start.min(input.len()));
    barrier
}

/// The error reply refusing command `name` for `line` (`ERR …`, no CRLF). Redis words a refused
/// EXEC as the end of the transaction it belonged to.
fn refusal(name: &str, line: &[u8]) -> Vec<u8> {
    let mut reply = b"-".to_vec();
    if name == "exec" {
        reply.extend_from_slice(b"EXECABORT Transaction discarded because of: ");
        reply.extend_from_slice(line.strip_prefix(b"ERR ").unwrap_or(line));
    } else {
        reply.extend_from_slice(line);
    }
    reply.extend_from_slice(b"\r\n");
    reply
}

/// A parsed request's arguments, for the command table.
struct Parts<'a> {
    request: &'a Request,
    buf: &'a [u8],
}

impl cinnabar_commands::Args for Parts<'_> {
    fn len(&self) -> usize {
        self.request.len()
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.request.arg(index, self.buf)
    }
}

/// What the node's confirmations say the client is subscribed to. Redis counts classic
/// subscriptions (channels and patterns) and sharded ones apart, each confirmation carrying
/// its own kind's count, and a client stays in subscribed mode while either is above zero.
#[derive(Debug, Default)]
struct Subscriptions {
    classic: i64,
    sharded: i64,
}

impl Subscriptions {
    /// Takes note of one reply from the node; true when it ends subscribed mode: `+RESET`, or
    /// an unsubscribe confirmation that leaves no subscription of either kind.
    fn ended_by(&mut self, reply: &[u8]) -> bool {
        if reply == b"+RESET\r\n" {
            *self = Self::default();
            return true;
        }
        let Ok(Some((Value::Array(items) | Value::Push(items), _))) =
            parse_value(reply, &Limits::default())
        else {
            return false;
        };
        let [Value::Bulk(kind), _, Value::Integer(count)] = items.as_slice() else {
            return false;
        };
        match kind.as_slice() {
            b"subscribe" | b"psubscribe" => self.classic = *count,
            b"ssubscribe" => self.sharded = *count,
            b"unsubscribe" | b"punsubscribe" => {
                self.classic = *count;
                return self.classic == 0 && self.sharded == 0;
            }
            b"sunsubscribe" => {
                self.sharded = *count;
                return self.classic == 0 && self.sharded == 0;
            }
            _ => {}
        }
        false
    }
}

async fn lost<W: AsyncWrite + Unpin>(client_wr: &mut W, node: &NodeAddr) -> std::io::Result<Ended> {
    let msg = format!("-ERR cinnabar: pub/sub connection to {node} lost; subscribe again\r\n");
    client_wr.write_all(msg.as_bytes()).await?;
    Ok(Ended::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_unsubscribe_or_reset_ends_subscribed_mode() {
        let mut subs = Subscriptions::default();
        assert!(!subs.ended_by(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"));
        assert!(!subs.ended_by(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:2\r\n"));
        assert!(!subs.ended_by(b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:1\r\n"));
        assert!(!subs.ended_by(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\n0\r\n"));
        assert!(subs.ended_by(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nc*\r\n:0\r\n"));
        assert!(subs.ended_by(b"+RESET\r\n"));
    }

    #[test]
    fn classic_and_sharded_subscriptions_are_counted_apart() {
        let mut subs = Subscriptions::default();
        assert!(!subs.ended_by(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"));
        assert!(!subs.ended_by(b"*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n"));
        // The sharded count is 0, the classic one is not: still subscribed, as in Redis.
        assert!(!subs.ended_by(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n"));
        assert!(subs.ended_by(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"));
    }
}
