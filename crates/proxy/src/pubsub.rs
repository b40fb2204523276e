//! Subscribed mode: after SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE a client talks to the cluster
//! over private node connections that the relay owns, until its last subscription ends (or
//! RESET), when it returns to normal routing on the same connection.
//!
//! Where subscriptions live, so that a client through the proxy sees one standalone Redis:
//! - Classic channels and patterns go to one *home* master, the owner of slot
//!   [`HOME_SLOT`], and the session sends PUBLISH there too. Redis Cluster delivers a PUBLISH
//!   to the local subscribers of every node (over the cluster bus), but the count it returns
//!   is the receiving node's own: with every subscriber through the proxy on the node that
//!   runs the PUBLISH, the count is what standalone Redis returns, and each subscription gets
//!   each message exactly once. The home follows slot 0: should slot 0 move, subscribers of
//!   the old home still get every message but are no longer counted by PUBLISH.
//! - Keyspace notifications are produced by the node owning the key and never cross the bus,
//!   so a channel named `__keyspace@…`/`__keyevent@…`, or a pattern that could match such a
//!   name, is also subscribed on every other master. Those extra connections pass on only
//!   keyspace and keyevent messages: anything else they carry is a bus copy of a PUBLISH the
//!   home already delivered. (A message a client PUBLISHes itself to a keyspace channel name
//!   therefore arrives once per master.)
//! - Sharded channels go to the master owning their slot.
//!
//! Confirmations: the relay keeps the client's subscriptions itself and answers SUBSCRIBE &
//! co. with the counts standalone Redis would give, not the per-node counts of the backend
//! confirmations, which it swallows. Each confirmation is held until every node connection
//! has answered a barrier sent after the command, so a client told "unsubscribed" is gone
//! from every node (a PUBLISH right after it counts it no more), and a message never arrives
//! before the confirmation of its subscription nor after the one that ended it.
//!
//! When the client leaves (EOF, QUIT, garbage, or a broken node connection), every node
//! connection is RESET and the relay waits briefly for the answers before closing, so no
//! subscription outlives its client in the counts of PUBSUB or PUBLISH.
//!
//! Only the commands Redis allows a subscribed RESP2 client pass, for RESP3 clients too
//! (Redis 7 lets those run any command). Not the hot path: allocation here is fine, blocking
//! the worker is not.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use cinnabar_cluster::NodeAddr;
use cinnabar_resp::{
    Limits, Parsed, Protocol, ReplyScanner, Request, RequestParser, Value, encode, parse_value,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::slotmap::SlotMap;

/// The slot whose owner is the home of classic pub/sub: every classic subscription through
/// the proxy and every PUBLISH go to it (see the module docs).
pub(crate) const HOME_SLOT: u16 = 0;

/// How long a leaving client's node connections get to confirm their RESET.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(1);

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

/// Sent to every node connection after each client command. Its reply marks the point where
/// the node has run every earlier command, so the proxy's reply to that command may go out.
const BARRIER: &[u8] = b"*2\r\n$4\r\nPING\r\n$16\r\ncinnabar-barrier\r\n";

/// The barrier's reply: RESP2 subscribed mode, or RESP3.
fn is_barrier_reply(reply: &[u8]) -> bool {
    reply == b"*2\r\n$4\r\npong\r\n$16\r\ncinnabar-barrier\r\n"
        || reply == b"$16\r\ncinnabar-barrier\r\n"
}

/// Names of the channels keyspace notifications are published to.
const NOTIFICATION_PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// No subscription is left: continue serving the client normally.
    Unsubscribed,
    /// The client sent RESET: as `Unsubscribed`, and the connection's state (protocol, name)
    /// is back to a fresh connection's.
    Reset,
    /// The client left, sent QUIT or garbage, or a node connection broke.
    Closed,
}

/// What the relay needs from the session: where nodes are and how to connect to them.
pub(crate) struct Backends<'a> {
    pub(crate) routes: &'a SlotMap,
    pub(crate) resp3: bool,
    /// The kind of node connection (its prelude also logs in with the node's cluster's
    /// credentials).
    pub(crate) flavor: crate::backend::Flavor,
    /// Which cluster each shard channel belongs to (as keys do).
    pub(crate) router: &'a crate::keyroute::KeyRouter,
    /// The switch gate: when the proxy switches to another backend, the relay ends (the
    /// client subscribes again, on the new backend).
    pub(crate) gate: &'a crate::switch::Gate,
    pub(crate) connect_timeout: Duration,
}

/// Relays between the client and the nodes; the subscribing request is the first one in
/// `input`.
///
/// # Errors
/// I/O errors on the client connection (the node connections are cleaned up first).
pub(crate) async fn relay<R, W>(
    client_rd: &mut R,
    client_wr: &mut W,
    input: &mut Vec<u8>,
    request: &mut Request,
    parser: &RequestParser,
    backends: &Backends<'_>,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let home = backends.routes.owner(HOME_SLOT).unwrap_or(0);
    let mut relay = Relay {
        backends,
        home,
        links: Vec::new(),
        entries: VecDeque::new(),
        tail: Vec::new(),
        subscriptions: Subscriptions::default(),
        leave: None,
        protocol: if backends.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        },
    };
    let outcome = relay
        .run(client_rd, client_wr, input, request, parser)
        .await;
    if !matches!(outcome, Ok(Ended::Unsubscribed | Ended::Reset)) {
        relay.reset_links().await;
    }
    outcome
}

/// One private connection to a master.
struct Link {
    master: usize,
    addr: NodeAddr,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    from_node: Vec<u8>,
    scanner: ReplyScanner,
    barriers_sent: u64,
    barriers_seen: u64,
}

/// The proxy's reply to one client command, waiting for the barriers sent after it.
#[derive(Debug, Default)]
struct Entry {
    /// Messages that arrived before the command ran on their node: they go out first.
    before: Vec<u8>,
    reply: Vec<u8>,
    /// A node's error reply to the command, given instead of `reply`.
    error: Option<Vec<u8>>,
    /// `(link, barrier number)` for each node connection the reply waits for.
    waits: Vec<(usize, u64)>,
    /// A subscribing command's kind and the names it added, taken back should a node refuse
    /// it (MOVED after a slot moved, an ACL refusal).
    undo: Option<(String, Vec<Vec<u8>>)>,
}

struct Relay<'a> {
    backends: &'a Backends<'a>,
    /// Index of the home master in the routes.
    home: usize,
    links: Vec<Link>,
    /// Replies not yet given, in request order.
    entries: VecDeque<Entry>,
    /// Messages that arrived after every pending reply's command ran on their node: they go
    /// out after the last pending reply.
    tail: Vec<u8>,
    subscriptions: Subscriptions,
    /// Set by the command that ends the relay: no more client input is taken, and the relay
    /// ends once its reply is out.
    leave: Option<Ended>,
    protocol: Protocol,
}

impl Relay<'_> {
    async fn run<R, W>(
        &mut self,
        client_rd: &mut R,
        client_wr: &mut W,
        input: &mut Vec<u8>,
        request: &mut Request,
        parser: &RequestParser,
    ) -> std::io::Result<Ended>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut chunk = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        let mut turn = 0;
        let mut gate = self.backends.gate.subscribe();
        let upstream = self.backends.routes.upstream;
        loop {
            if self.leave.is_none() {
                self.take_client_commands(input, request, parser).await;
            }
            self.flush_ready(&mut out);
            if self.entries.is_empty() && self.leave == Some(Ended::Closed) {
                // Gone from every node before the client hears its last reply (QUIT's +OK),
                // so a PUBLISH it sends next no longer counts it.
                self.reset_links().await;
            }
            if !out.is_empty() {
                client_wr.write_all(&out).await?;
                out.clear();
            }
            if self.entries.is_empty()
                && let Some(ended) = self.leave
            {
                return Ok(ended);
            }
            tokio::select! {
                read = client_rd.read_buf(input), if self.leave.is_none() => {
                    if read? == 0 {
                        return Ok(Ended::Closed);
                    }
                }
                (link, read) = read_any(&mut self.links, turn, &mut chunk) => {
                    turn = link + 1;
                    match read {
                        Ok(n) if n > 0 => {
                            self.links[link].from_node.extend_from_slice(&chunk[..n]);
                            self.take_node_replies(link, &mut out);
                        }
                        _ => {
                            let addr = self.links[link].addr.clone();
                            self.links.remove(link);
                            let msg = format!(
                                "-ERR cinnabar: pub/sub connection to {addr} lost; subscribe again\r\n"
                            );
                            client_wr.write_all(msg.as_bytes()).await?;
                            return Ok(Ended::Closed);
                        }
                    }
                }
                // The proxy serves another backend now: a subscription left on the old one
                // would never see a message again. Closing is what client libraries recover
                // from (they reconnect and subscribe again).
                _ = gate.wait_for(|g| g.upstream != upstream) => return Ok(Ended::Closed),
            }
        }
    }

    /// Handles the client's complete commands, up to one that ends the relay.
    async fn take_client_commands(
        &mut self,
        input: &mut Vec<u8>,
        request: &mut Request,
        parser: &RequestParser,
    ) {
        let mut start = 0;
        while self.leave.is_none() {
            let buf = &input[start..];
            match parser.parse(buf, request) {
                Ok(Parsed::Complete { consumed }) => {
                    let args: Vec<Vec<u8>> = (0..request.len())
                        .map(|i| request.arg(i, buf).unwrap_or_default().to_vec())
                        .collect();
                    start += consumed;
                    self.command(&args).await;
                }
                Ok(Parsed::Skipped { consumed }) => start += consumed,
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    self.push_entry(format!("-ERR {e}\r\n").into_bytes()).await;
                    self.leave = Some(Ended::Closed);
                    // Nothing after garbage is ever read.
                    start = input.len();
                }
            }
        }
        input.drain(..start.min(input.len()));
    }

    /// One client command in subscribed mode.
    async fn command(&mut self, args: &[Vec<u8>]) {
        let name =
            String::from_utf8_lossy(args.first().map_or(&[][..], |a| a)).to_ascii_lowercase();
        if name == "quit" {
            self.push_entry(b"+OK\r\n".to_vec()).await;
            self.leave = Some(Ended::Closed);
            return;
        }
        if let Err(e) = cinnabar_commands::resolve(&Parts(args)) {
            // Like Redis, an unknown command or a wrong arity is reported before the
            // subscribed-mode refusal.
            return self.push_entry(refusal(&name, &e.to_bytes())).await;
        }
        if !ALLOWED.contains(&name.as_str()) {
            let line = format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            );
            return self.push_entry(refusal(&name, line.as_bytes())).await;
        }
        let names = &args[1..];
        let reply = match name.as_str() {
            "ping" => {
                let mut reply = Vec::new();
                match (self.protocol, names.first()) {
                    (Protocol::Resp3, None) => reply.extend_from_slice(b"+PONG\r\n"),
                    (Protocol::Resp3, Some(message)) => encode::bulk(&mut reply, message),
                    (_, message) => {
                        encode::array_header(&mut reply, 2);
                        encode::bulk(&mut reply, b"pong");
                        encode::bulk(&mut reply, message.map_or(&[][..], |m| m));
                    }
                }
                reply
            }
            "reset" => {
                self.send_to_all(&[b"RESET"]).await;
                self.subscriptions = Subscriptions::default();
                self.leave = Some(Ended::Reset);
                b"+RESET\r\n".to_vec()
            }
            "subscribe" | "psubscribe" | "ssubscribe" => {
                let sent = if name == "ssubscribe" {
                    self.subscribe_sharded(names).await
                } else {
                    self.subscribe_classic(&name, names).await
                };
                match sent {
                    Err(error) => error,
                    Ok(()) => {
                        let (reply, added) = self.subscriptions.add(&name, names, self.protocol);
                        self.push_entry(reply).await;
                        if let Some(entry) = self.entries.back_mut() {
                            entry.undo = Some((name, added));
                        }
                        return;
                    }
                }
            }
            _ => {
                let mut parts: Vec<&[u8]> = vec![name.as_bytes()];
                parts.extend(names.iter().map(Vec::as_slice));
                self.send_to_all(&parts).await;
                self.subscriptions.remove(&name, names, self.protocol)
            }
        };
        self.push_entry(reply).await;
        if self.leave.is_none() && self.subscriptions.is_empty() {
            self.leave = Some(Ended::Unsubscribed);
        }
    }

    /// SUBSCRIBE or PSUBSCRIBE: every name on the home master, notification names on every
    /// master too.
    async fn subscribe_classic(&mut self, kind: &str, names: &[Vec<u8>]) -> Result<(), Vec<u8>> {
        let everywhere: Vec<&[u8]> = names
            .iter()
            .map(Vec::as_slice)
            .filter(|n| names_notifications(kind, n))
            .collect();
        let masters = self.backends.routes.masters().len();
        let mut targets = vec![self.home];
        if !everywhere.is_empty() {
            targets.extend((0..masters).filter(|m| *m != self.home));
        }
        for master in &targets {
            self.link(*master).await?;
        }
        for master in targets {
            let mut parts: Vec<&[u8]> = vec![kind.as_bytes()];
            if master == self.home {
                parts.extend(names.iter().map(Vec::as_slice));
            } else {
                parts.extend(&everywhere);
            }
            self.send_to(master, &parts).await;
        }
        Ok(())
    }

    /// SSUBSCRIBE: on the master owning the channels' slot.
    async fn subscribe_sharded(&mut self, names: &[Vec<u8>]) -> Result<(), Vec<u8>> {
        let router = self.backends.router;
        let slot = router.slot(&names[0]);
        if names.iter().any(|n| router.slot(n) != slot) {
            return Err(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n".to_vec());
        }
        let Some(owner) = self.backends.routes.owner(slot) else {
            return Err(b"-CLUSTERDOWN Hash slot not served\r\n".to_vec());
        };
        self.link(owner).await?;
        let mut parts: Vec<&[u8]> = vec![b"SSUBSCRIBE"];
        parts.extend(names.iter().map(Vec::as_slice));
        self.send_to(owner, &parts).await;
        Ok(())
    }

    /// The index of the link to `master`, opened if there is none yet.
    async fn link(&mut self, master: usize) -> Result<usize, Vec<u8>> {
        if let Some(index) = self.links.iter().position(|l| l.master == master) {
            return Ok(index);
        }
        let addr = self
            .backends
            .routes
            .masters()
            .get(master)
            .cloned()
            .ok_or_else(|| b"-CLUSTERDOWN cinnabar: no master is known\r\n".to_vec())?;
        let prelude = self.backends.flavor.prelude(
            self.backends.routes.credentials_of(&addr, 0),
            !self.backends.routes.is_group(),
        );
        let stream =
            crate::backend::connect_private(&addr, &prelude, self.backends.connect_timeout)
                .await
                .map_err(|why| {
                    format!("-ERR cinnabar: cannot open a pub/sub connection to {addr}: {why}\r\n")
                        .into_bytes()
                })?;
        let (rd, wr) = stream.into_split();
        self.links.push(Link {
            master,
            addr,
            rd,
            wr,
            from_node: Vec::new(),
            scanner: ReplyScanner::new(Limits::default()),
            barriers_sent: 0,
            barriers_seen: 0,
        });
        Ok(self.links.len() - 1)
    }

    async fn send_to(&mut self, master: usize, parts: &[&[u8]]) {
        let mut request = Vec::new();
        encode::command(&mut request, parts);
        if let Some(link) = self.links.iter_mut().find(|l| l.master == master) {
            // A broken connection shows up as a failed read, which ends the relay.
            let _ = link.wr.write_all(&request).await;
        }
    }

    async fn send_to_all(&mut self, parts: &[&[u8]]) {
        let mut request = Vec::new();
        encode::command(&mut request, parts);
        for link in &mut self.links {
            let _ = link.wr.write_all(&request).await;
        }
    }

    /// Queues the proxy's reply to the command just handled, behind a barrier on every node
    /// connection.
    async fn push_entry(&mut self, reply: Vec<u8>) {
        let mut entry = Entry {
            before: std::mem::take(&mut self.tail),
            reply,
            ..Entry::default()
        };
        for (index, link) in self.links.iter_mut().enumerate() {
            link.barriers_sent += 1;
            entry.waits.push((index, link.barriers_sent));
            // A broken connection shows up as a failed read, which ends the relay.
            let _ = link.wr.write_all(BARRIER).await;
        }
        self.entries.push_back(entry);
    }

    /// Takes every complete reply link `link` has sent.
    fn take_node_replies(&mut self, link: usize, out: &mut Vec<u8>) {
        let home = self.links[link].master == self.home;
        let mut pos = 0;
        loop {
            let node = &mut self.links[link];
            let Ok(Some(len)) = node.scanner.scan(&node.from_node[pos..]) else {
                break;
            };
            let reply = node.from_node[pos..pos + len].to_vec();
            pos += len;
            if is_barrier_reply(&reply) {
                node.barriers_seen += 1;
                continue;
            }
            match classify(&reply) {
                NodeReply::Confirmation => {}
                NodeReply::Error => {
                    if let Some(entry) = self.first_waiting_on(link)
                        && entry.error.is_none()
                    {
                        entry.error = Some(reply);
                    }
                }
                NodeReply::BusCopy if !home => {}
                NodeReply::Message | NodeReply::BusCopy => {
                    let nothing_pending = self.entries.is_empty();
                    match self.first_waiting_on(link) {
                        Some(entry) => entry.before.extend_from_slice(&reply),
                        None if nothing_pending => out.extend_from_slice(&reply),
                        None => self.tail.extend_from_slice(&reply),
                    }
                }
            }
        }
        self.links[link].from_node.drain(..pos);
        self.flush_ready(out);
    }

    /// The oldest pending reply whose barrier `link` has not answered yet.
    fn first_waiting_on(&mut self, link: usize) -> Option<&mut Entry> {
        let seen = self.links[link].barriers_seen;
        self.entries
            .iter_mut()
            .find(|e| e.waits.iter().any(|(l, n)| *l == link && *n > seen))
    }

    /// Moves every reply whose barriers have all been answered, in order, to `out`.
    fn flush_ready(&mut self, out: &mut Vec<u8>) {
        while let Some(entry) = self.entries.front() {
            let ready = entry
                .waits
                .iter()
                .all(|(link, n)| self.links.get(*link).is_none_or(|l| l.barriers_seen >= *n));
            if !ready {
                break;
            }
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            out.extend_from_slice(&entry.before);
            out.extend_from_slice(entry.error.as_deref().unwrap_or(&entry.reply));
            if let (Some(_), Some((kind, added))) = (&entry.error, &entry.undo) {
                self.subscriptions.set(kind).retain(|n| !added.contains(n));
                if self.subscriptions.is_empty() && self.leave.is_none() {
                    self.leave = Some(Ended::Unsubscribed);
                }
            }
            if self.entries.is_empty() {
                out.append(&mut self.tail);
            }
        }
    }

    /// Ends every subscription on every node connection (RESET), waiting up to
    /// [`CLEANUP_TIMEOUT`] for the nodes to confirm, so none outlives the client.
    async fn reset_links(&mut self) {
        let cleanup = async {
            for link in &mut self.links {
                let _ = link.wr.write_all(b"*1\r\n$5\r\nRESET\r\n").await;
            }
            for link in &mut self.links {
                let mut pos = 0;
                'link: loop {
                    while let Ok(Some(len)) = link.scanner.scan(&link.from_node[pos..]) {
                        let reply = &link.from_node[pos..pos + len];
                        pos += len;
                        if reply == b"+RESET\r\n" {
                            break 'link;
                        }
                    }
                    match link.rd.read_buf(&mut link.from_node).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
        };
        let _ = tokio::time::timeout(CLEANUP_TIMEOUT, cleanup).await;
        self.links.clear();
    }
}

/// Reads from whichever link has data first, trying them from `first` on so that a busy
/// node cannot starve the others: `(link, bytes read into chunk)`. Never resolves while there
/// is no link.
async fn read_any(
    links: &mut [Link],
    first: usize,
    chunk: &mut [u8],
) -> (usize, std::io::Result<usize>) {
    let count = links.len();
    poll_fn(|cx| {
        for index in (0..count).map(|i| (first + i) % count) {
            let mut buf = ReadBuf::new(chunk);
            if let Poll::Ready(result) = Pin::new(&mut links[index].rd).poll_read(cx, &mut buf) {
                return Poll::Ready((index, result.map(|()| buf.filled().len())));
            }
        }
        Poll::Pending
    })
    .await
}

/// What a node sent, as far as the relay cares.
#[derive(Debug, PartialEq, Eq)]
enum NodeReply {
    /// A subscribe or unsubscribe confirmation, or RESET's: the proxy answers with its own.
    Confirmation,
    /// An error reply to the command the node is running.
    Error,
    /// A keyspace or keyevent notification, a sharded message, or anything else for the
    /// client.
    Message,
    /// A classic message on an ordinary channel. Every node gets one for every PUBLISH in
    /// the cluster: only the home master's is passed on.
    BusCopy,
}

fn classify(reply: &[u8]) -> NodeReply {
    if reply.first() == Some(&b'-') {
        return NodeReply::Error;
    }
    if reply == b"+RESET\r\n" {
        return NodeReply::Confirmation;
    }
    let Ok(Some((Value::Array(items) | Value::Push(items), _))) =
        parse_value(reply, &Limits::default())
    else {
        return NodeReply::Message;
    };
    let Some(Value::Bulk(kind)) = items.first() else {
        return NodeReply::Message;
    };
    let channel = match (kind.as_slice(), items.get(1), items.get(2)) {
        (b"message", Some(Value::Bulk(channel)), _) => channel,
        (b"pmessage", _, Some(Value::Bulk(channel))) => channel,
        (
            b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
            | b"sunsubscribe",
            _,
            _,
        ) => return NodeReply::Confirmation,
        _ => return NodeReply::Message,
    };
    if is_notification_channel(channel) {
        NodeReply::Message
    } else {
        NodeReply::BusCopy
    }
}

/// Whether keyspace notifications are published to `channel`.
pub(crate) fn is_notification_channel(channel: &[u8]) -> bool {
    NOTIFICATION_PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// Whether a SUBSCRIBE channel or PSUBSCRIBE pattern may receive keyspace notifications,
/// which only the node owning the key produces.
fn names_notifications(kind: &str, name: &[u8]) -> bool {
    if kind == "psubscribe" {
        NOTIFICATION_PREFIXES
            .iter()
            .any(|p| pattern_may_match_prefix(name, p))
    } else {
        is_notification_channel(name)
    }
}

/// Whether glob `pattern` (Redis's syntax) could match some string starting with `prefix`.
/// Errs on the side of yes: a `[class]` is taken to match any character.
fn pattern_may_match_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let mut p = 0;
    for &wanted in prefix {
        match pattern.get(p) {
            None => return false,
            Some(b'*') => return true,
            Some(b'?') => p += 1,
            Some(b'[') => match pattern[p + 1..].iter().position(|b| *b == b']') {
                Some(close) => p += close + 2,
                None => return true,
            },
            Some(b'\\') if p + 1 < pattern.len() => {
                if pattern[p + 1] != wanted {
                    return false;
                }
                p += 2;
            }
            Some(&literal) => {
                if literal != wanted {
                    return false;
                }
                p += 1;
            }
        }
    }
    true
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

/// A request's arguments, for the command table.
struct Parts<'a>(&'a [Vec<u8>]);

impl cinnabar_commands::Args for Parts<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index).map(Vec::as_slice)
    }
}

/// The client's subscriptions, as standalone Redis keeps them: classic channels and patterns
/// are counted together, sharded channels apart, and the client stays subscribed while any
/// is left.
#[derive(Debug, Default)]
struct Subscriptions {
    channels: Vec<Vec<u8>>,
    patterns: Vec<Vec<u8>>,
    shards: Vec<Vec<u8>>,
}

impl Subscriptions {
    fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty()
    }

    fn set(&mut self, kind: &str) -> &mut Vec<Vec<u8>> {
        match kind {
            "subscribe" | "unsubscribe" => &mut self.channels,
            "psubscribe" | "punsubscribe" => &mut self.patterns,
            _ => &mut self.shards,
        }
    }

    /// The count a confirmation of `kind` carries.
    fn count(&self, kind: &str) -> usize {
        match kind {
            "ssubscribe" | "sunsubscribe" => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Subscribes to `names`; returns the confirmations and the names that were new.
    fn add(
        &mut self,
        kind: &str,
        names: &[Vec<u8>],
        protocol: Protocol,
    ) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut reply = Vec::new();
        let mut added = Vec::new();
        for name in names {
            let set = self.set(kind);
            if !set.contains(name) {
                set.push(name.clone());
                added.push(name.clone());
            }
            confirmation(&mut reply, kind, Some(name), self.count(kind), protocol);
        }
        (reply, added)
    }

    /// Unsubscribes from `names` (every one of the kind when empty); returns the
    /// confirmations.
    fn remove(&mut self, kind: &str, names: &[Vec<u8>], protocol: Protocol) -> Vec<u8> {
        let mut reply = Vec::new();
        let names = if names.is_empty() {
            self.set(kind).clone()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            confirmation(&mut reply, kind, None, self.count(kind), protocol);
        }
        for name in &names {
            self.set(kind).retain(|n| n != name);
            confirmation(&mut reply, kind, Some(name), self.count(kind), protocol);
        }
        reply
    }
}

fn confirmation(
    out: &mut Vec<u8>,
    kind: &str,
    name: Option<&[u8]>,
    count: usize,
    protocol: Protocol,
) {
    encode::push_header(out, 3, protocol);
    encode::bulk(out, kind.as_bytes());
    match name {
        Some(name) => encode::bulk(out, name),
        None => encode::null(out, protocol),
    }
    encode::integer(out, i64::try_from(count).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn confirmations_count_as_standalone_redis_does() {
        let mut subs = Subscriptions::default();
        let r2 = Protocol::Resp2;
        assert_eq!(
            subs.add("subscribe", &names(&["a", "a"]), r2).0,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            subs.add("psubscribe", &names(&["a*"]), r2).0,
            b"*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:2\r\n"
        );
        assert_eq!(
            subs.add("ssubscribe", &names(&["s"]), r2).0,
            b"*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n"
        );
        assert_eq!(
            subs.remove("sunsubscribe", &[], r2),
            b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n"
        );
        assert_eq!(
            subs.remove("unsubscribe", &[], r2),
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
        );
        assert!(!subs.is_empty());
        assert_eq!(
            subs.remove("unsubscribe", &[], r2),
            b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n"
        );
        subs.remove("punsubscribe", &names(&["a*"]), r2);
        assert!(subs.is_empty());
    }

    #[test]
    fn patterns_that_may_match_notifications_are_recognised() {
        for yes in [
            "*",
            "__key*",
            "__keyspace@0__:*",
            "__keyevent@*__:set",
            "__key?pace@0__:k",
            "__key[se]*",
            "?*",
        ] {
            assert!(names_notifications("psubscribe", yes.as_bytes()), "{yes}");
        }
        for no in ["news", "n*", "__keyspace", "_x*", "__keyspace\\#*"] {
            assert!(!names_notifications("psubscribe", no.as_bytes()), "{no}");
        }
        assert!(names_notifications("subscribe", b"__keyevent@0__:del"));
        assert!(!names_notifications("subscribe", b"__key*"));
    }

    #[test]
    fn node_replies_are_told_apart() {
        assert_eq!(
            classify(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
            NodeReply::Confirmation
        );
        assert_eq!(
            classify(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n"),
            NodeReply::BusCopy
        );
        assert_eq!(
            classify(
                b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyspace@0__:key\r\n$3\r\nset\r\n"
            ),
            NodeReply::Message
        );
        assert_eq!(
            classify(b"*3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$1\r\nx\r\n"),
            NodeReply::Message
        );
        assert_eq!(classify(b"-MOVED 1 x:1\r\n"), NodeReply::Error);
    }
}
