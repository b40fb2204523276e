//! One client connection: parse requests from its buffer, decide for each (answer here, send to
//! one master, or split per key), and write replies back strictly in request order.
//!
//! Must never let one client hurt others: a protocol error closes only this connection, and a
//! client that pipelines without reading is stopped from sending more after
//! `max_pending_per_client` requests (back-pressure), so its memory stays bounded.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use cinnabar_commands::{Args, Command, RequestPolicy};
use cinnabar_resp::{Parsed, Request, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::worker::Worker;

/// Initial size of a client's buffers; they grow with the client's traffic and stay grown.
const BUFFER: usize = 16 * 1024;

/// How the replies of a split request become the one reply the client expects.
#[derive(Debug, Clone, Copy)]
enum Merge {
    /// `MGET`: each part answered `*1` + element; the client gets one array in key order.
    Array,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: integers added up.
    Sum,
    /// `MSET`: `+OK` when every part said `+OK`.
    AllOk,
}

/// A request waiting for its reply, in request order.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// One ticket.
    One,
    /// `parts` tickets whose replies merge into one.
    Split { merge: Merge, parts: usize },
}

impl Pending {
    fn parts(self) -> usize {
        match self {
            Self::One => 1,
            Self::Split { parts, .. } => parts,
        }
    }
}

/// A request's arguments, read through the parser's ranges: no copy, no allocation.
struct RequestArgs<'a> {
    request: &'a Request,
    buf: &'a [u8],
}

impl Args for RequestArgs<'_> {
    fn len(&self) -> usize {
        self.request.len()
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.request.arg(index, self.buf)
    }
}

/// The per-connection state.
struct Session {
    worker: Rc<Worker>,
    out: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Ticket ids of all pending requests, in order (a split request owns `parts` of them).
    ids: VecDeque<usize>,
    closing: bool,
}

/// Serves one client until it disconnects, sends garbage, or says QUIT.
pub(crate) async fn serve(worker: Rc<Worker>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        worker,
        out: Vec::with_capacity(BUFFER),
        pending: VecDeque::new(),
        ids: VecDeque::new(),
        closing: false,
    };
    let mut input = Vec::with_capacity(BUFFER);
    let mut request = Request::new();
    if let Err(e) = session.run(&mut stream, &mut input, &mut request).await {
        tracing::debug!(error = %e, "client connection ended");
    }
    session.abandon();
}

impl Session {
    async fn run(
        &mut self,
        stream: &mut TcpStream,
        input: &mut Vec<u8>,
        request: &mut Request,
    ) -> std::io::Result<()> {
        let (mut rd, mut wr) = stream.split();
        let max_pending = self.worker.config.max_pending_per_client;
        loop {
            self.parse_all(input, request);
            self.collect_ready();
            if !self.out.is_empty() {
                wr.write_all(&self.out).await?;
                self.out.clear();
            }
            if self.closing && self.pending.is_empty() {
                return Ok(());
            }
            let can_read = !self.closing && self.pending.len() < max_pending;
            tokio::select! {
                biased;
                () = self.head_ready(), if !self.pending.is_empty() => {}
                read = rd.read_buf(input), if can_read => {
                    if read? == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Parses and handles every complete request in `input`, then drops the consumed bytes.
    fn parse_all(&mut self, input: &mut Vec<u8>, request: &mut Request) {
        let max_pending = self.worker.config.max_pending_per_client;
        let mut start = 0;
        while !self.closing && self.pending.len() < max_pending {
            let buf = &input[start..];
            match self.worker.parser.parse(buf, request) {
                Ok(Parsed::Complete { consumed }) => {
                    self.handle(&RequestArgs {
                        request,
                        buf: &buf[..consumed],
                    });
                    start += consumed;
                }
                Ok(Parsed::Skipped { consumed }) => start += consumed,
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    // Like Redis: answer the protocol error, then close this connection only.
                    let mut reply = Vec::with_capacity(64);
                    reply.extend_from_slice(b"-ERR ");
                    reply.extend_from_slice(e.to_string().as_bytes());
                    reply.extend_from_slice(b"\r\n");
                    self.local(&reply);
                    self.closing = true;
                    input.clear();
                    return;
                }
            }
        }
        input.drain(..start);
    }

    /// Decides what to do with one complete request.
    fn handle(&mut self, args: &RequestArgs<'_>) {
        let command = match cinnabar_commands::resolve(args) {
            Ok(command) => command,
            Err(e) => return self.local_error(&e.to_bytes()),
        };
        match command.name() {
            "ping" => match args.get(1) {
                None => self.local(b"+PONG\r\n"),
                Some(message) => self.local_bulk(message),
            },
            "echo" => self.local_bulk(args.get(1).unwrap_or_default()),
            "select" => match args.get(1) {
                Some(b"0") => self.local(b"+OK\r\n"),
                _ => self.local(b"-ERR DB index is out of range\r\n"),
            },
            "quit" => {
                self.local(b"+OK\r\n");
                self.closing = true;
            }
            "mget" => self.split(command, args, Merge::Array, 1),
            "del" | "unlink" | "exists" | "touch" => self.split(command, args, Merge::Sum, 1),
            "mset" => self.split(command, args, Merge::AllOk, 2),
            _ if !supported(command) => {
                let msg = format!(
                    "-ERR cinnabar: '{}' is not supported through the proxy yet\r\n",
                    command.name().replace('|', " ")
                );
                self.local(msg.as_bytes());
            }
            _ => match command.slot(args) {
                Ok(slot) => self.forward(slot, args),
                Err(e) => self.local_error(&e.to_bytes()),
            },
        }
    }

    /// Sends the request as it is to the master of `slot`.
    fn forward(&mut self, slot: Option<u16>, args: &RequestArgs<'_>) {
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = tickets.take();
            let ticket = tickets.get(id);
            ticket.slot = slot;
            if args.request.is_inline() {
                args.request.write_multibulk(args.buf, &mut ticket.request);
            } else {
                ticket.request.extend_from_slice(args.buf);
            }
            id
        };
        self.worker.dispatch(id);
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    /// A multi-key command: sent whole when all keys share a slot, else one request per key
    /// (`step` arguments per key: 1 for keys, 2 for key-value pairs) merged back in order.
    fn split(&mut self, command: &Command, args: &RequestArgs<'_>, merge: Merge, step: usize) {
        let slot = command.slot(args);
        if let Ok(slot) = slot {
            return self.forward(slot, args);
        }
        let name = args.get(0).unwrap_or_default();
        let mut parts = 0;
        let mut index = 1;
        while index + step <= args.len() {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let id = tickets.take();
                let ticket = tickets.get(id);
                let key = args.get(index).unwrap_or_default();
                ticket.slot = Some(cinnabar_commands::key_slot(key));
                encode::array_header(&mut ticket.request, 1 + step);
                encode::bulk(&mut ticket.request, name);
                for offset in 0..step {
                    encode::bulk(
                        &mut ticket.request,
                        args.get(index + offset).unwrap_or_default(),
                    );
                }
                id
            };
            self.worker.dispatch(id);
            self.ids.push_back(id);
            parts += 1;
            index += step;
        }
        self.pending.push_back(Pending::Split { merge, parts });
    }

    /// Queues a reply produced by the proxy itself, in order with the others.
    fn local(&mut self, reply: &[u8]) {
        let mut tickets = self.worker.tickets.borrow_mut();
        let id = tickets.take();
        tickets.complete(id, reply);
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    /// Queues an error reply from a bare error line (`ERR ...`, no `-`, no CRLF).
    fn local_error(&mut self, line: &[u8]) {
        let mut tickets = self.worker.tickets.borrow_mut();
        let id = tickets.take();
        let ticket = tickets.get(id);
        ticket.reply.push(b'-');
        ticket.reply.extend_from_slice(line);
        ticket.reply.extend_from_slice(b"\r\n");
        ticket.done = true;
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    fn local_bulk(&mut self, data: &[u8]) {
        let mut tickets = self.worker.tickets.borrow_mut();
        let id = tickets.take();
        let ticket = tickets.get(id);
        encode::bulk(&mut ticket.reply, data);
        ticket.done = true;
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    /// Moves every finished reply at the head of the queue to the output buffer.
    fn collect_ready(&mut self) {
        let mut tickets = self.worker.tickets.borrow_mut();
        while let Some(&head) = self.pending.front() {
            let parts = head.parts();
            if !self.ids.iter().take(parts).all(|id| tickets.peek(*id).done) {
                break;
            }
            match head {
                Pending::One => {
                    if let Some(id) = self.ids.front() {
                        self.out.extend_from_slice(&tickets.peek(*id).reply);
                    }
                }
                Pending::Split { merge, parts } => {
                    let tickets = &*tickets;
                    merge_into(
                        &mut self.out,
                        merge,
                        self.ids
                            .iter()
                            .take(parts)
                            .map(|id| &*tickets.peek(*id).reply),
                    );
                }
            }
            for _ in 0..parts {
                if let Some(id) = self.ids.pop_front() {
                    tickets.release(id);
                }
            }
            self.pending.pop_front();
        }
    }

    /// Resolves when the oldest pending request has all its replies.
    async fn head_ready(&self) {
        let parts = self.pending.front().map_or(0, |p| p.parts());
        poll_fn(|cx| {
            let mut tickets = self.worker.tickets.borrow_mut();
            for id in self.ids.iter().take(parts) {
                let ticket = tickets.get(*id);
                if !ticket.done {
                    ticket.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            Poll::Ready(())
        })
        .await;
    }

    /// The client is gone: finished tickets are released now, the others when their replies
    /// arrive.
    fn abandon(&mut self) {
        let mut tickets = self.worker.tickets.borrow_mut();
        for id in self.ids.drain(..) {
            if tickets.get(id).done {
                tickets.release(id);
            } else {
                tickets.get(id).abandoned = true;
            }
        }
    }
}

/// Commands this proxy version does not carry yet: connection state, transactions, blocking,
/// pub/sub, fan-out to every node, and administration. They get a clear error, never a wrong
/// answer.
fn supported(command: &Command) -> bool {
    if command.is_blocking() || command.is_admin() {
        return false;
    }
    if command.is_pubsub() && !matches!(command.name(), "publish" | "spublish") {
        return false;
    }
    if matches!(
        command.request_policy(),
        RequestPolicy::AllNodes | RequestPolicy::AllShards
    ) {
        return false;
    }
    !matches!(
        command.command_name(),
        "multi"
            | "exec"
            | "discard"
            | "watch"
            | "unwatch"
            | "hello"
            | "auth"
            | "client"
            | "cluster"
            | "readonly"
            | "readwrite"
            | "reset"
            | "scan"
            | "keys"
            | "dbsize"
            | "randomkey"
            | "wait"
            | "waitaof"
            | "swapdb"
            | "move"
            | "function"
            | "script"
            | "info"
            | "flushdb"
            | "flushall"
    )
}

/// Writes the one reply a split request owes, from its parts' replies.
fn merge_into<'a>(out: &mut Vec<u8>, merge: Merge, parts: impl Iterator<Item = &'a [u8]> + Clone) {
    if let Some(error) = parts.clone().find(|r| r.first() == Some(&b'-')) {
        out.extend_from_slice(error);
        return;
    }
    match merge {
        Merge::Array => {
            encode::array_header(out, parts.clone().count());
            for reply in parts {
                // Each part is `*1\r\n<element>`.
                out.extend_from_slice(reply.get(4..).unwrap_or_default());
            }
        }
        Merge::Sum => {
            let sum: i64 = parts.map(parse_integer).sum();
            encode::integer(out, sum);
        }
        Merge::AllOk => match parts.clone().find(|r| *r != b"+OK\r\n") {
            Some(odd) => out.extend_from_slice(odd),
            None => out.extend_from_slice(b"+OK\r\n"),
        },
    }
}

/// `:42\r\n` → 42 (0 for anything else; error replies were handled before).
fn parse_integer(reply: &[u8]) -> i64 {
    let digits = reply
        .get(1..reply.len().saturating_sub(2))
        .unwrap_or_default();
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
