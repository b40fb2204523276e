//! One client connection: parse requests from its buffer, decide for each (answer here, send to
//! one master, or split per key), and write replies back strictly in request order.
//!
//! Must never let one client hurt others: a protocol error closes only this connection, and a
//! client that pipelines without reading is stopped from sending more after
//! `max_pending_per_client` tickets (back-pressure; a request split per key holds one ticket per
//! key), so its memory stays bounded.
//!
//! Where each behaviour lives:
//! - `client_loop`: reading, parsing, replies in request order, back-pressure, leaving;
//! - `route`: which way each command goes, and `handle`, which sends it there;
//! - `keyed`: one slot's master, per-key splits, blocking commands and WAIT as tasks;
//! - `fanout`: every master or every node, and merging their replies;
//! - `scan`: SCAN across masters, surviving scale-outs, migrations and failovers;
//! - `transaction`: MULTI/EXEC and WATCH;
//! - `subscribe`: entering subscribed mode (the relay is `crate::pubsub`);
//! - `local_answers`: what the proxy answers itself (PING, HELLO, CLIENT, CLUSTER, …);
//! - `guard`: logins, role checks and audit records;
//! - `fifo`: the queues of pending replies and ticket ids, their oldest entry inline;
//! - this file: the per-connection state and the queue of replies every route feeds.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use cinnabar_commands::{Args, Command};
use cinnabar_resp::{Protocol, Request, encode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::Flavor;
use crate::stats::Category;
use crate::ticket::Tickets;
use crate::worker::Worker;

mod client_loop;
mod fanout;
mod fifo;
mod guard;
mod keyed;
mod local_answers;
mod route;
mod scan;
mod shared_socket;
mod subscribe;
mod transaction;

use client_loop::FIRST_WINDOW;
use fanout::Merge;
use transaction::{Transaction, Watch};

/// Client ids, unique across workers (taken once per connection, not per request).
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Initial size of a client's buffers: small, because most connections of a pool sit idle and
/// each touched page counts; they grow with the client's traffic (a few reallocations while
/// a busy connection warms up) and stay grown up to `RETAINED`, beyond which (after a huge
/// request or reply) they are given back.
const BUFFER: usize = 1024;

const RETAINED: usize = 1024 * 1024;

/// A request waiting for its reply, in request order.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// One ticket.
    One,
    /// `parts` tickets whose replies merge into one.
    Split { merge: Merge, parts: usize },
    /// One `SCAN` step over a run of slots on one master; its cursor is rewritten and keys
    /// outside the run are left for their own run (see `fanout`).
    Scan(scan::ScanRun),
    /// The check that ends a run of slots: the master's own `CLUSTER NODES` (see `fanout`).
    ScanCheck(scan::ScanRun),
}

impl Pending {
    fn parts(self) -> usize {
        match self {
            Self::One | Self::Scan(_) | Self::ScanCheck(_) => 1,
            Self::Split { parts, .. } => parts,
        }
    }
}

/// A pending request with what its metrics need.
#[derive(Debug, Clone, Copy)]
struct Queued {
    reply: Pending,
    category: Category,
    /// When the batch of input holding the request was read.
    started: Instant,
    /// The request is audited: its record waits in `Session::audits` for the outcome.
    audited: bool,
    /// The client turned replies off (`CLIENT REPLY`): the reply is dropped when ready.
    silent: bool,
    /// The command, whose name the slow log records.
    command: Option<&'static Command>,
    /// Where its calls are counted (`CommandStats::index_of`).
    command_index: u16,
}

/// `CLIENT REPLY`, kept by the proxy per client connection: replies are dropped where they
/// are put in request order, so no backend ever sees the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// `SKIP`: the next request's reply is dropped.
    SkipNext,
}

impl ReplyMode {
    /// Whether the reply of the request about to be handled is dropped; moves past a `SKIP`.
    fn silences_next(&mut self) -> bool {
        match *self {
            Self::On => false,
            Self::Off => true,
            Self::SkipNext => {
                *self = Self::On;
                true
            }
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
    /// `CLIENT ID`.
    id: u64,
    /// What most requests never touch, out of line, so the fields they do read span fewer
    /// cache lines: with many clients, each line costs a miss at every wake-up of the session
    /// (`bench/proxy-instructions.sh` counts them).
    cold: Box<Cold>,
    /// The client's socket when replies may be written to it from outside the session (plain
    /// TCP): see `Session::arm_direct_reply`.
    client: Option<Rc<crate::ticket::ClientSocket>>,
    /// Who the client is: `None` until it logs in when authentication is required.
    principal: Option<cinnabar_access::Principal>,
    /// The worker's access generation `principal` was resolved against.
    access_generation: u64,
    /// The audit record of the request being handled, until its reply slot is queued.
    audit_next: Option<Box<cinnabar_audit::AuditRecord>>,
    /// The client said `HELLO 3`: replies come from RESP3 backend connections, and the proxy's
    /// own replies use RESP3 types.
    resp3: bool,
    /// `SELECT`ed database: always 0 in front of a cluster; any below
    /// [`DATABASES`](crate::backend::DATABASES) in front of a Sentinel group.
    db: u8,
    out: Vec<u8>,
    pending: fifo::Fifo<Queued>,
    /// Ticket ids of all pending requests, in order (a split request owns `parts` of them).
    ids: fifo::Fifo<usize>,
    closing: bool,
    /// `CLIENT REPLY`: whether replies go to the client.
    reply_mode: ReplyMode,
    /// The replies of the request being handled are dropped (`CLIENT REPLY OFF` or `SKIP`).
    silent: bool,
    /// The command being handled, for the metrics of the replies it queues.
    category: Category,
    /// The command itself, for the slow log, and where its calls are counted.
    command: Option<&'static Command>,
    command_index: u16,
    /// The last plain (not container) command resolved, tried first for the next request.
    last_command: Option<&'static Command>,
    /// When the input being parsed was read (one clock reading per batch, not per request).
    batch_started: Instant,
    /// When a switch's hold found this client's requests waiting: their latency counts from
    /// then, so the metrics show the pause clients saw.
    held_since: Option<Instant>,
    /// Between MULTI and EXEC/DISCARD. This and the next two are boxed: every request looks
    /// at whether they are set, few ever set them, and inline they were two of the cache lines
    /// each request of each client brings in (`bench/proxy-instructions.sh`, `-c 500`).
    transaction: Option<Box<Transaction>>,
    /// After WATCH: this client's own connection to the watched slot's master, where the
    /// WATCH ran and where EXEC must run.
    watch: Option<Box<Watch>>,
    /// A SUBSCRIBE-family request waiting for earlier replies to flush: then the connection
    /// enters subscribed mode, the relay starting with this request.
    subscribe: Option<Box<[u8]>>,
    /// A blocking command (or WAIT) is in flight: later requests wait for its reply.
    blocked: bool,
    /// The input ends inside a request whose partial parse waits in `Cold::parked` (the
    /// worker's shared parse, `Worker::request`, serves the next session meanwhile).
    parked_parse: bool,
    /// `handle` declined the request for now (it must wait for earlier replies); the parser
    /// leaves it in the input.
    deferred: bool,
    /// The first request in the input was declined and waits for the pending replies.
    awaiting_turn: bool,
    /// A fan-out found the routing table stale and waits for a refresh before it is handled
    /// again (reading goes on, parsing stops); see `fanout::fresh_routes_or_wait`.
    topology_wait: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
    /// That wait ended: the fan-out goes on with the routes in hand, fresh or not.
    topology_waited: bool,
    /// Requests and error replies since the last flush to the worker's per-user counts.
    user_counts: [u64; 2],
    /// When they are next added: a deadline, so that each reply costs a comparison of two
    /// instants rather than a subtraction.
    user_counts_due: Instant,
    /// Recent peak of this client's reply sizes, decaying (see `learn_reply_size`).
    reply_average: usize,
    /// Tickets this client may have in flight (see `learn_reply_size`).
    window: usize,
}

/// The per-connection state that is not needed on every request (see `Session::cold`).
struct Cold {
    /// `CLIENT SETNAME`.
    name: Vec<u8>,
    /// Records of audited requests in flight, in request order, waiting for their outcome.
    audits: VecDeque<Box<cinnabar_audit::AuditRecord>>,
    /// Held while `db` is not 0.
    other_database: Option<local_answers::OtherDatabase>,
    /// The client's address (audit records, the slow log, `CLIENT LIST`).
    peer: Option<std::net::SocketAddr>,
    /// The buffers of this client's last transaction, emptied, for its next MULTI: a client
    /// library that wraps every pipeline in MULTI/EXEC (redis-py's default) then allocates
    /// nothing per transaction.
    spare_transaction: Option<Box<Transaction>>,
    /// The user whose connection place this connection holds (`max_connections_per_user`).
    user_place: Option<String>,
    /// Blocking commands running on private connections; cancelled when the client leaves.
    blocking: Vec<(tokio::task::AbortHandle, usize)>,
    /// The parse of a request whose bytes have not all arrived (see `Session::parked_parse`),
    /// or, between such requests, buffers to swap for the worker's: swapping never allocates.
    parked: Request,
}

/// Answers a client the proxy will not serve with `refusal` (an error reply) and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, refusal: String) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stream.write_all(refusal.as_bytes()),
    )
    .await;
}

/// Serves one client until it disconnects, sends garbage, or says QUIT. Not an `async fn`
/// itself: the task runs `serve_halves`'s future directly, with no outer future's state around it.
pub(crate) fn serve(
    worker: Rc<Worker>,
    stream: TcpStream,
) -> impl std::future::Future<Output = ()> {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (rd, writer) = stream.into_split();
    let client = Rc::new(crate::ticket::ClientSocket::new(writer));
    let wr = shared_socket::SharedWrite(Rc::clone(&client));
    client_loop::serve_halves(worker, peer, Some(client), rd, wr)
}

/// Serves one client over TLS: the handshake first (bounded), then as [`serve`].
pub(crate) async fn serve_tls(
    worker: Rc<Worker>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    match handshake {
        Ok(Ok(tls)) => {
            let (rd, wr) = tokio::io::split(tls);
            client_loop::serve_halves(worker, peer, None, rd, wr).await;
        }
        Ok(Err(e)) => {
            worker.stats.tls_failures.inc();
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            worker.stats.tls_failures.inc();
            tracing::debug!("TLS handshake timed out");
        }
    }
}

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Session {
    /// A new client's state.
    fn new(
        worker: Rc<Worker>,
        peer: Option<std::net::SocketAddr>,
        client: Option<Rc<crate::ticket::ClientSocket>>,
    ) -> Self {
        Session {
            worker,
            id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cold: Box::new(Cold {
                name: Vec::new(),
                audits: VecDeque::new(),
                other_database: None,
                peer,
                spare_transaction: None,
                user_place: None,
                blocking: Vec::new(),
                parked: Request::new(),
            }),
            client,
            principal: None,
            access_generation: u64::MAX,
            audit_next: None,
            resp3: false,
            db: 0,
            out: Vec::with_capacity(BUFFER),
            pending: fifo::Fifo::default(),
            ids: fifo::Fifo::default(),
            closing: false,
            reply_mode: ReplyMode::On,
            silent: false,
            category: Category::Other,
            command: None,
            command_index: u16::MAX,
            last_command: None,
            batch_started: Instant::now(),
            held_since: None,
            transaction: None,
            watch: None,
            subscribe: None,
            blocked: false,
            parked_parse: false,
            deferred: false,
            awaiting_turn: false,
            topology_wait: None,
            topology_waited: false,
            reply_average: 0,
            user_counts: [0; 2],
            user_counts_due: Instant::now() + client_loop::USER_COUNTS_EVERY,
            window: FIRST_WINDOW,
        }
    }
}

/// Copies a request for a backend as multibulk (inline requests are re-encoded).
fn write_request(args: &RequestArgs<'_>, out: &mut Vec<u8>) {
    if args.request.is_inline() {
        args.request.write_multibulk(args.buf, out);
    } else {
        out.extend_from_slice(args.buf);
    }
}

impl Session {
    /// Queues the reply slot of the request being handled.
    fn push_pending(&mut self, reply: Pending) {
        let audited = match self.audit_next.take() {
            Some(record) => {
                self.cold.audits.push_back(record);
                true
            }
            None => false,
        };
        self.pending.push_back(Queued {
            reply,
            category: self.category,
            started: self.batch_started,
            audited,
            silent: self.silent,
            command: self.command,
            command_index: self.command_index,
        });
    }

    /// A fresh ticket routed to master `master` (by one of its slots), its request written by
    /// `write`; the caller sends it.
    fn master_ticket(
        &self,
        routes: &crate::slotmap::SlotMap,
        master: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        let mut tickets = self.worker.tickets.borrow_mut();
        let id = self.new_ticket(&mut tickets, routes.representative_slot(master), false);
        write(&mut tickets.get(id).request);
        id
    }

    /// A fresh ticket for one of this client's requests, routed by `slot`.
    fn new_ticket(&self, tickets: &mut Tickets, slot: Option<u16>, read_only: bool) -> usize {
        let id = tickets.take();
        let ticket = tickets.get(id);
        ticket.slot = slot;
        ticket.resp3 = self.resp3;
        ticket.read_only = read_only;
        ticket.affinity = self.id as u32;
        ticket.db = self.db;
        id
    }

    /// Marks the client as waiting in a blocking command or WAIT (or no longer), for
    /// `blocked_clients` in `INFO clients`.
    fn set_blocked(&mut self, blocked: bool) {
        if blocked != self.blocked {
            let stats = &self.worker.stats;
            if blocked {
                stats.blocked_started.inc();
            } else {
                stats.blocked_ended.inc();
            }
            self.blocked = blocked;
        }
    }

    /// The kind of master connection this client's requests need.
    fn flavor(&self) -> Flavor {
        Flavor {
            resp3: self.resp3,
            replica: false,
            db: self.db,
        }
    }

    /// The protocol the proxy's own replies use.
    fn protocol(&self) -> Protocol {
        if self.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        }
    }

    /// Queues a reply the proxy writes itself (`write` gets the proxy's announced address), in
    /// order with the replies coming from backends. Every local reply goes through here.
    fn local_with(&mut self, write: impl FnOnce(&mut Vec<u8>, std::net::SocketAddr)) {
        let announce = self.worker.announce;
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = tickets.take();
            let ticket = tickets.get(id);
            write(&mut ticket.reply, announce);
            ticket.done = true;
            id
        };
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// Queues a complete reply, as bytes.
    fn local(&mut self, reply: &[u8]) {
        self.local_with(|out, _| out.extend_from_slice(reply));
    }

    /// Queues an error reply from a bare error line (`ERR ...`, no `-`, no CRLF).
    /// The one virtual slot of the request's keys (their cluster's number above their hash
    /// slot, see `crate::keyroute`); the error line when they have several.
    /// The slot every key of the request hashes to, if they share one, without the message a
    /// refusal needs: a split command asks this on every request, and building the CROSSSLOT
    /// text only to drop it cost every 10-key MSET three allocations and two reallocations.
    fn shared_slot(&self, command: &Command, args: &RequestArgs<'_>) -> Option<Option<u16>> {
        let router = &self.worker.router;
        command.slot_by(args, |key| router.slot(key)).ok()
    }

    fn slot_of(&self, command: &Command, args: &RequestArgs<'_>) -> Result<Option<u16>, Vec<u8>> {
        let router = &self.worker.router;
        command.slot_by(args, |key| router.slot(key)).map_err(|e| {
            let routes = self.worker.routes_in_use();
            let mut clusters: Vec<&str> = command
                .keys(args)
                .filter_map(|i| args.get(i))
                .map(|key| routes.cluster_name(router.cluster_of(key)))
                .collect();
            clusters.dedup();
            clusters.sort_unstable();
            clusters.dedup();
            if clusters.len() > 1 {
                format!(
                    "CROSSSLOT Keys in request don't hash to the same slot (cinnabar: they \
                         belong to different clusters: {})",
                    clusters.join(", ")
                )
                .into_bytes()
            } else {
                e.to_bytes()
            }
        })
    }

    fn local_error(&mut self, line: &[u8]) {
        self.local_with(|out, _| {
            out.push(b'-');
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        });
    }

    fn local_bulk(&mut self, data: &[u8]) {
        self.local_with(|out, _| encode::bulk(out, data));
    }

    fn local_integer(&mut self, n: i64) {
        self.local_with(|out, _| encode::integer(out, n));
    }
}
