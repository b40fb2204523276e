//! One client connection: parse requests from its buffer, decide for each (answer here, send to
//! one master, or split per key), and write replies back strictly in request order.
//!
//! Must never let one client hurt others: a protocol error closes only this connection, and a
//! client that pipelines without reading is stopped from sending more after
//! `max_pending_per_client` tickets (back-pressure; a request split per key holds one ticket per
//! key), so its memory stays bounded.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use cinnabar_commands::{Args, Command, RequestPolicy};
use cinnabar_resp::{Parsed, Protocol, Request, Value, encode, parse_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{Backend, Flavor};
use crate::local;
use crate::pubsub;
use crate::stats::Category;
use crate::ticket::Tickets;
use crate::worker::Worker;
use cinnabar_cluster::NodeAddr;

/// Client ids, unique across workers (taken once per connection, not per request).
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Bits of a proxy SCAN cursor that say which master it is on (up to 1024 masters).
const SCAN_MASTER_BITS: u32 = 10;
/// What Redis answers to AUTH when no password is configured.
const NO_PASSWORD: &[u8] = b"ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// How often a connection adds its per-user counts to its worker's.
const USER_COUNTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Requests a new client may have in flight before the size of its replies is known.
const FIRST_WINDOW: usize = 16;

/// The new estimate of a client's reply size, and how many requests it may have in flight:
/// the budget of reply bytes divided by that estimate, so a client fetching 1 MiB values
/// cannot have 1 GiB of replies on the way, while one fetching small values keeps a deep
/// pipeline. A new client starts at `FIRST_WINDOW`, like TCP's slow start.
///
/// A reply exists up to three times on its way (the backend's read buffer, its ticket, the
/// client's output buffer), so requests in flight get a quarter of the budget: memory held for
/// one client stays within `max_reply_bytes_per_client` (plus `FIRST_WINDOW` replies).
fn learn_reply_size(estimate: usize, size: usize, budget: usize) -> (usize, usize) {
    // A decaying peak, not an average: one large reply shrinks the window at once, and only
    // a run of small ones opens it again.
    let estimate = size.max(estimate - estimate / 8);
    (estimate, (budget / 4 / estimate.max(1)).max(FIRST_WINDOW))
}

/// Initial size of a client's buffers: small, because most connections of a pool sit idle and
/// each touched page counts; they grow with the client's traffic (a few reallocations while
/// a busy connection warms up) and stay grown up to `RETAINED`, beyond which (after a huge
/// request or reply) they are given back.
const BUFFER: usize = 1024;
const RETAINED: usize = 1024 * 1024;

/// How the replies of a split request become the one reply the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// `MGET`: each part answered `*1` + element; the client gets one array in key order.
    Array,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: integers added up.
    Sum,
    /// `MSET`: `+OK` when every part said `+OK`.
    AllOk,
    /// `KEYS`: the arrays of every master, concatenated.
    Concat,
    /// `SCRIPT LOAD`: every master answers the same; pass the first.
    First,
    /// `RANDOMKEY`: the first master that has a key.
    FirstNonNil,
    /// `INFO [section…]`: the proxy's own sections plus the keyspace summed over masters; the
    /// mask says which sections were asked for (`local::info_sections`).
    Info(u8),
    /// `SCRIPT EXISTS`: a script exists when every master has it.
    AllExist,
    /// `CONFIG GET` from every node (masters, each followed by its replicas): one value per
    /// parameter when the nodes agree, else `addr=value` for each node; secrets left out.
    ConfigGet,
    /// `CONFIG SET`/`RESETSTAT` on every node: `+OK` when all agree, else one error naming
    /// every node that refused and what it said.
    NodeReport,
}

/// A request waiting for its reply, in request order.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// One ticket.
    One,
    /// `parts` tickets whose replies merge into one.
    Split { merge: Merge, parts: usize },
    /// One `SCAN` step on master `master` of `masters`; its cursor is rewritten.
    Scan { master: usize, masters: usize },
}

impl Pending {
    fn parts(self) -> usize {
        match self {
            Self::One | Self::Scan { .. } => 1,
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
    /// The command's name, for the slow log.
    command: &'static str,
    /// Where its calls are counted (`CommandStats::index_of`).
    command_index: u16,
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
    /// `CLIENT SETNAME`.
    name: Vec<u8>,
    /// Who the client is: `None` until it logs in when authentication is required.
    principal: Option<cinnabar_access::Principal>,
    /// The worker's access generation `principal` was resolved against.
    access_generation: u64,
    /// The audit record of the request being handled, until its reply slot is queued.
    audit_next: Option<Box<cinnabar_audit::AuditRecord>>,
    /// Records of audited requests in flight, in request order, waiting for their outcome.
    audits: VecDeque<Box<cinnabar_audit::AuditRecord>>,
    /// The client said `HELLO 3`: replies come from RESP3 backend connections, and the proxy's
    /// own replies use RESP3 types.
    resp3: bool,
    peer: Option<std::net::SocketAddr>,
    out: Vec<u8>,
    pending: VecDeque<Queued>,
    /// Ticket ids of all pending requests, in order (a split request owns `parts` of them).
    ids: VecDeque<usize>,
    closing: bool,
    /// The command being handled, for the metrics of the replies it queues.
    category: Category,
    /// Its name, for the slow log, and where its calls are counted.
    command: &'static str,
    command_index: u16,
    /// When the input being parsed was read (one clock reading per batch, not per request).
    batch_started: Instant,
    /// Between MULTI and EXEC/DISCARD.
    transaction: Option<Transaction>,
    /// After WATCH: this client's own connection to the watched slot's master, where the
    /// WATCH ran and where EXEC must run.
    watch: Option<Watch>,
    /// A SUBSCRIBE-family request waiting for earlier replies to flush: then the connection
    /// enters subscribed mode with this node.
    subscribe: Option<(NodeAddr, Vec<u8>)>,
    /// A blocking command (or WAIT) is in flight: later requests wait for its reply.
    blocked: bool,
    /// `handle` declined the request for now (it must wait for earlier replies); the parser
    /// leaves it in the input.
    deferred: bool,
    /// The first request in the input was declined and waits for the pending replies.
    awaiting_turn: bool,
    /// The user whose connection place this connection holds (`max_connections_per_user`).
    user_place: Option<String>,
    /// Requests and error replies since the last flush to the worker's per-user counts.
    user_counts: [u64; 2],
    user_counts_since: Instant,
    /// Recent peak of this client's reply sizes, decaying (see `learn_reply_size`).
    reply_average: usize,
    /// Tickets this client may have in flight (see `learn_reply_size`).
    window: usize,
    /// Blocking commands running on private connections; cancelled when the client leaves.
    blocking: Vec<(tokio::task::AbortHandle, usize)>,
}

/// WATCHed keys: one slot, one private connection.
#[derive(Debug)]
struct Watch {
    slot: u16,
    backend: Rc<Backend>,
}

/// A transaction being queued by the proxy. At EXEC it goes to the slot's master as one
/// contiguous `MULTI … EXEC` chunk, so it runs atomically there.
#[derive(Debug, Default)]
struct Transaction {
    /// The one slot all keyed commands must share.
    slot: Option<u16>,
    /// `MULTI` followed by the queued commands, as multibulk.
    request: Vec<u8>,
    queued: u16,
    /// A queued command was refused: EXEC answers EXECABORT, as Redis does.
    aborted: bool,
}

/// Answers a client the proxy will not serve with `refusal` (an error reply) and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, refusal: String) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stream.write_all(refusal.as_bytes()),
    )
    .await;
}

/// Serves one client until it disconnects, sends garbage, or says QUIT.
pub(crate) async fn serve(worker: Rc<Worker>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (mut rd, mut wr) = stream.split();
    serve_halves(worker, peer, &mut rd, &mut wr).await;
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
            let (mut rd, mut wr) = tokio::io::split(tls);
            serve_halves(worker, peer, &mut rd, &mut wr).await;
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

async fn serve_halves<R, W>(
    worker: Rc<Worker>,
    peer: Option<std::net::SocketAddr>,
    rd: &mut R,
    wr: &mut W,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut session = Session {
        worker,
        id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        name: Vec::new(),
        principal: None,
        access_generation: u64::MAX,
        audit_next: None,
        audits: VecDeque::new(),
        resp3: false,
        peer,
        out: Vec::with_capacity(BUFFER),
        pending: VecDeque::new(),
        ids: VecDeque::new(),
        closing: false,
        category: Category::Other,
        command: "",
        command_index: u16::MAX,
        batch_started: Instant::now(),
        transaction: None,
        watch: None,
        subscribe: None,
        blocked: false,
        deferred: false,
        awaiting_turn: false,
        reply_average: 0,
        user_place: None,
        user_counts: [0; 2],
        user_counts_since: Instant::now(),
        window: FIRST_WINDOW,
        blocking: Vec::new(),
    };
    session.worker.stats.clients_accepted.inc();
    let mut input = Vec::with_capacity(BUFFER);
    let mut request = Request::new();
    if let Err(e) = session.run(rd, wr, &mut input, &mut request).await {
        tracing::debug!(error = %e, "client connection ended");
    }
    session.abandon();
    session.worker.stats.clients_closed.inc();
}

impl Session {
    async fn run<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        input: &mut Vec<u8>,
        request: &mut Request,
    ) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        // Woken by a drain even while idle; registered once, not per request.
        let (id, worker) = (self.id, Rc::clone(&self.worker));
        poll_fn(|cx| {
            worker.register_sleeper(id, cx.waker().clone());
            Poll::Ready(())
        })
        .await;
        // One timer per client, moved only when it fires: reads just note the time, so
        // requests never touch the timer wheel.
        let idle_timeout = self.worker.config.idle_timeout;
        // Boxed and only when configured: an idle connection costs a few hundred bytes, and a
        // timer inline in every session's future would be a good part of them.
        let mut idle = idle_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let mut last_read = Instant::now();
        let max_pending = self.worker.config.max_pending_per_client;
        let max_reply_bytes = self.worker.config.max_reply_bytes_per_client;
        loop {
            // Draining: answer what was accepted, read nothing more, then close.
            if self.worker.draining() {
                self.closing = true;
            }
            let limited = self.parse_all(input, request);
            self.collect_ready();
            if !self.out.is_empty() {
                wr.write_all(&self.out).await?;
                self.out.clear();
                if self.out.capacity() > RETAINED {
                    self.out = Vec::with_capacity(BUFFER);
                }
            }
            if input.is_empty() && input.capacity() > RETAINED {
                *input = Vec::with_capacity(BUFFER);
            }
            if self.closing && self.pending.is_empty() {
                return Ok(());
            }
            // Subscribed mode starts once every earlier reply went out, keeping replies in order.
            let subscribe = if self.pending.is_empty() {
                self.subscribe.take()
            } else {
                None
            };
            if let Some((node, first)) = subscribe {
                let timeout = self.worker.config.connect_timeout;
                let parser = &self.worker.parser;
                let prelude = self.worker.prelude(self.flavor());
                let ended = pubsub::relay(
                    rd, wr, input, request, parser, &node, &first, &prelude, timeout,
                )
                .await?;
                match ended {
                    pubsub::Ended::Closed => return Ok(()),
                    pubsub::Ended::Reset => {
                        self.name.clear();
                        self.resp3 = false;
                    }
                    pubsub::Ended::Unsubscribed => {}
                }
                continue;
            }
            // Parsing stopped at the limit with requests still buffered, and the replies just
            // collected made room: parse them now. Waiting for the socket could wait forever,
            // since the client may be waiting for exactly those replies.
            if limited && self.may_parse(max_pending) {
                continue;
            }
            // A request waiting for earlier replies (a blocking command) can go now.
            if self.awaiting_turn && self.pending.is_empty() && self.may_parse(max_pending) {
                continue;
            }
            // Counted in tickets, not requests: a request split per key holds one per key. And
            // requests that cannot be handled yet (window, limit, a blocking command) may not
            // pile up in the input beyond `RETAINED` bytes.
            let can_read = !self.closing
                && self.subscribe.is_none()
                && self.ids.len() < max_pending
                && (input.len() < RETAINED || self.may_parse(max_pending))
                && (self.pending.len() < 2 || self.held_reply_bytes() < max_reply_bytes);
            tokio::select! {
                biased;
                () = self.head_ready(), if !self.pending.is_empty() => {}
                read = rd.read_buf(input), if can_read => {
                    if read? == 0 {
                        return Ok(());
                    }
                    if idle_timeout.is_some() {
                        last_read = Instant::now();
                    }
                }
                // Draining: answer what was accepted, read nothing more, then close. Polling
                // this registers nothing; the worker wakes the task (see `register_sleeper`).
                () = poll_fn(|_| if self.worker.draining() { Poll::Ready(()) } else { Poll::Pending }),
                    if !self.closing => {
                    self.closing = true;
                }
                () = async {
                    if let Some(idle) = idle.as_mut() {
                        idle.as_mut().await;
                    }
                }, if idle.is_some() => {
                    let timeout = idle_timeout.unwrap_or_default();
                    let quiet = last_read.elapsed();
                    if quiet >= timeout && self.pending.is_empty() {
                        return Ok(());
                    }
                    let rest = timeout.saturating_sub(quiet).max(std::time::Duration::from_millis(10));
                    if let Some(idle) = idle.as_mut() {
                        idle.as_mut().reset(tokio::time::Instant::now() + rest);
                    }
                }
            }
        }
    }

    /// Parses and handles every complete request in `input` (up to the pending limit), then
    /// drops the consumed bytes. True when the limit stopped it with bytes left in `input`.
    fn parse_all(&mut self, input: &mut Vec<u8>, request: &mut Request) -> bool {
        let max_pending = self.worker.config.max_pending_per_client;
        let mut start = 0;
        if !input.is_empty() {
            self.batch_started = Instant::now();
        }
        while self.may_parse(max_pending) {
            let buf = &input[start..];
            match self.worker.parser.parse(buf, request) {
                Ok(Parsed::Complete { consumed }) => {
                    self.handle(&RequestArgs {
                        request,
                        buf: &buf[..consumed],
                    });
                    if std::mem::take(&mut self.deferred) {
                        // Left in the input, to be handled once earlier replies are in.
                        self.awaiting_turn = true;
                        break;
                    }
                    self.awaiting_turn = false;
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
                    self.category = Category::Other;
                    self.local(&reply);
                    self.worker.stats.protocol_errors.inc();
                    self.closing = true;
                    input.clear();
                    return false;
                }
            }
        }
        input.drain(..start);
        // Stopped with requests left (the pending limit, or a blocking command in the way),
        // rather than on an incomplete one.
        !self.may_parse(max_pending) && !input.is_empty()
    }

    /// Whether the next request may be handled now: not closing or subscribed, under the
    /// pending limit, and no blocking command (BLPOP, WAIT, …) waiting for its reply. Like a
    /// Redis connection, a client blocked by a command has its later commands wait for it:
    /// sent on at once, they would run before it on another connection.
    fn may_parse(&self, max_pending: usize) -> bool {
        !self.closing
            && self.subscribe.is_none()
            && self.ids.len() < max_pending.min(self.window)
            && (!self.blocked || self.pending.is_empty())
    }

    /// Decides what to do with one complete request.
    fn handle(&mut self, args: &RequestArgs<'_>) {
        let command = match cinnabar_commands::resolve(args) {
            Ok(command) => command,
            Err(e) => {
                let line = e.to_bytes();
                // A refused EXEC (`EXEC x`) ends the transaction, in Redis's words.
                if args.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"exec")) {
                    self.transaction = None;
                    let mut msg = b"EXECABORT Transaction discarded because of: ".to_vec();
                    msg.extend_from_slice(line.strip_prefix(b"ERR ").unwrap_or(&line));
                    return self.local_error(&msg);
                }
                if let Some(tx) = &mut self.transaction {
                    tx.aborted = true;
                }
                self.category = Category::Other;
                self.command = "";
                self.command_index = u16::MAX;
                return self.local_error(&line);
            }
        };
        self.category = Category::of(command);
        self.command = command.name();
        self.command_index = crate::stats::CommandStats::index_of(command);
        // A record left by a request that queued no reply (deferred, or subscribed) must not
        // describe this one.
        self.audit_next = None;
        if !self.permitted(command, args) {
            if let Some(tx) = &mut self.transaction {
                tx.aborted = true;
            }
            return;
        }
        let route = route(command);
        if let Some(record) = self.audit_next.take() {
            let targets = self.targets(command, route, args);
            self.audit_next = Some(Box::new((*record).with_targets(targets)));
        }
        // QUIT acts at once, even inside a transaction (as in Redis): never queued, never sent.
        if route == Route::Quit {
            self.local(b"+OK\r\n");
            self.closing = true;
            return;
        }
        if self.transaction.is_some() && route != Route::Transaction {
            return self.queue(command, route, args);
        }
        match route {
            Route::Quit => {}
            Route::Local => self.answer_locally(command, args),
            Route::Keyed => match command.slot(args) {
                Ok(slot) => self.forward(slot, command.is_readonly(), args),
                Err(e) => self.local_error(&e.to_bytes()),
            },
            Route::Split { merge, step } => self.split(command, args, merge, step),
            Route::FanOut(Merge::Info(_)) => {
                let sections = local::info_sections((1..args.len()).filter_map(|i| args.get(i)));
                self.fan_out(args, Some(&[b"INFO", b"keyspace"]), Merge::Info(sections));
            }
            Route::FanOut(merge) => self.fan_out(args, None, merge),
            Route::Scan => self.scan(args),
            Route::EveryNode(merge) => self.every_node(args, merge),
            // A blocking command runs on a connection of its own, so it must not start before
            // this client's earlier requests have run on theirs.
            Route::Blocking | Route::Wait if !self.pending.is_empty() => self.deferred = true,
            Route::Blocking => match command.slot(args) {
                Ok(slot) => {
                    self.blocked = true;
                    self.blocking(slot, args);
                }
                Err(e) => self.local_error(&e.to_bytes()),
            },
            Route::Transaction => self.transaction_command(command, args),
            Route::Subscribe => self.enter_pubsub(command, args),
            Route::Unsubscribe => self.unsubscribe_unsubscribed(command, args),
            Route::Wait => {
                self.blocked = true;
                self.wait(args);
            }
            Route::Unsupported => {
                let msg = format!(
                    "-ERR cinnabar: '{}' is not supported through the proxy\r\n",
                    command.name().replace('|', " ")
                );
                self.local(msg.as_bytes());
            }
        }
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    fn transaction_command(&mut self, command: &Command, args: &RequestArgs<'_>) {
        match command.name() {
            "multi" => self.multi(),
            "exec" => self.exec(),
            "discard" => match self.transaction.take() {
                Some(_) => {
                    self.unwatch();
                    self.local(b"+OK\r\n");
                }
                None => self.local_error(b"ERR DISCARD without MULTI"),
            },
            "watch" if self.transaction.is_some() => {
                self.local_error(b"ERR WATCH inside MULTI is not allowed");
            }
            "watch" => self.watch(command, args),
            _ => {
                self.unwatch();
                self.local(b"+OK\r\n");
            }
        }
    }

    /// `WATCH key…`: runs on a connection of this client's own to the slot's master, which
    /// the following EXEC uses too. All watched keys (and the transaction's) share one slot.
    fn watch(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let slot = match command.slot(args) {
            Ok(Some(slot)) => slot,
            Ok(None) => {
                return self.local_error(b"ERR wrong number of arguments for 'watch' command");
            }
            Err(e) => return self.local_error(&e.to_bytes()),
        };
        if self.watch.as_ref().is_some_and(|w| w.slot != slot) {
            return self.local_error(
                b"CROSSSLOT Keys in request don't hash to the same slot (cinnabar: all WATCHed keys must share one slot)",
            );
        }
        if self.watch.is_none() {
            let routes = self.worker.routes();
            let Some(addr) = routes.owner(slot).map(|m| routes.masters()[m].clone()) else {
                return self.local_error(b"CLUSTERDOWN Hash slot not served");
            };
            let backend = Rc::new(Backend::new_pinned(addr, self.flavor()));
            tokio::task::spawn_local(crate::backend::run(
                Rc::clone(&backend),
                Rc::clone(&self.worker),
            ));
            self.watch = Some(Watch { slot, backend });
        }
        let Some(watch) = &self.watch else { return };
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, Some(slot), false);
            let ticket = tickets.get(id);
            write_request(args, &mut ticket.request);
            watch.backend.enqueue(&ticket.request, id, false, 0);
            id
        };
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// Forgets WATCHed keys: their connection closes once idle.
    fn unwatch(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.backend.retire();
        }
    }

    /// UNSUBSCRIBE & co. outside subscribed mode: Redis confirms with a count of 0 for each
    /// channel (or once, with a nil channel, when none is named).
    fn unsubscribe_unsubscribed(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let kind = command.name().as_bytes();
        let channels = args.len().saturating_sub(1);
        let protocol = self.protocol();
        for i in 0..channels.max(1) {
            let channel = args.get(i + 1);
            self.local_with(|out, _| {
                encode::push_header(out, 3, protocol);
                encode::bulk(out, kind);
                match channel {
                    Some(c) => encode::bulk(out, c),
                    None => encode::null(out, protocol),
                }
                encode::integer(out, 0);
            });
        }
    }

    /// The commands of [`Route::Local`]: the proxy's own view of the connection and the
    /// cluster.
    fn answer_locally(&mut self, command: &Command, args: &RequestArgs<'_>) {
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
            "hello" => self.hello(args),
            "auth" => match (args.len(), args.get(1), args.get(2)) {
                (2, Some(password), _) => {
                    if self.login(None, password) {
                        self.local(b"+OK\r\n");
                    }
                }
                (3, Some(user), Some(password)) => {
                    if self.login(Some(user), password) {
                        self.local(b"+OK\r\n");
                    }
                }
                _ => self.local_error(b"ERR syntax error"),
            },
            "client|id" => self.local_integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            "client|setname" => self.set_name(args.get(2).unwrap_or_default()),
            "reset" => self.reset(),
            "slowlog|len" => {
                let len = self.worker.all_stats.slowlog.len();
                self.local_integer(i64::try_from(len).unwrap_or(i64::MAX));
            }
            "slowlog|reset" => {
                self.worker.all_stats.slowlog.reset();
                self.local(b"+OK\r\n");
            }
            "slowlog|get" => {
                let count = match args.get(2).map(|c| {
                    std::str::from_utf8(c)
                        .ok()
                        .and_then(|c| c.parse::<i64>().ok())
                }) {
                    None => Some(10),
                    Some(Some(n)) if n >= -1 => Some(n),
                    Some(_) => None,
                };
                match count {
                    None => self.local_error(b"ERR count should be greater than or equal to -1"),
                    Some(n) => {
                        let n = usize::try_from(n).unwrap_or(usize::MAX);
                        let log = &self.worker.all_stats.slowlog;
                        let mut reply = Vec::with_capacity(256);
                        log.write(&mut reply, n);
                        self.local(&reply);
                    }
                }
            }
            "client|getname" => {
                if self.name.is_empty() {
                    let protocol = self.protocol();
                    self.local_with(|out, _| encode::null(out, protocol));
                } else {
                    let name = std::mem::take(&mut self.name);
                    self.local_bulk(&name);
                    self.name = name;
                }
            }
            "client|info" | "client|list" => {
                let line = local::client_line(
                    self.id,
                    self.peer,
                    self.worker.announce,
                    &self.name,
                    self.protocol(),
                );
                self.local_bulk(line.as_bytes());
            }
            "cluster|slots" => self.local_with(local::cluster_slots),
            "cluster|shards" => {
                let protocol = self.protocol();
                self.local_with(|out, announce| local::cluster_shards(out, announce, protocol));
            }
            "cluster|nodes" => self.local_with(local::cluster_nodes),
            "cluster|info" => self.local_with(|out, _| local::cluster_info(out)),
            "cluster|myid" => self.local_bulk(local::node_id(self.worker.announce).as_bytes()),
            "cluster|keyslot" => {
                let slot = cinnabar_commands::key_slot(args.get(2).unwrap_or_default());
                self.local_integer(i64::from(slot));
            }
            "cluster|countkeysinslot" | "cluster|getkeysinslot" => {
                let slot = std::str::from_utf8(args.get(2).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|slot| *slot < 16384);
                match slot {
                    Some(slot) => self.forward(Some(slot), true, args),
                    None => self.local_error(b"ERR Invalid or out of range slot"),
                }
            }
            // ASKING: redirects are the proxy's business; a client's ASKING must never reach a
            // shared connection, where it would apply to someone else's next command.
            // READONLY/READWRITE: where reads go is the proxy's read policy.
            // CLIENT SETINFO: library name and version, nothing to act on.
            _ => self.local(b"+OK\r\n"),
        }
    }

    /// Queues the reply slot of the request being handled.
    fn push_pending(&mut self, reply: Pending) {
        let audited = match self.audit_next.take() {
            Some(record) => {
                self.audits.push_back(record);
                true
            }
            None => false,
        };
        self.pending.push_back(Queued {
            reply,
            category: self.category,
            started: self.batch_started,
            audited,
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
        id
    }

    /// The kind of master connection this client's requests need.
    fn flavor(&self) -> Flavor {
        Flavor {
            resp3: self.resp3,
            replica: false,
        }
    }

    /// Sends the request as it is to the master of `slot`.
    fn forward(&mut self, slot: Option<u16>, read_only: bool, args: &RequestArgs<'_>) {
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, slot, read_only);
            let ticket = tickets.get(id);
            write_request(args, &mut ticket.request);
            id
        };
        self.worker.dispatch(id);
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// A multi-key command: sent whole when all keys share a slot, else one request per key
    /// (`step` arguments per key: 1 for keys, 2 for key-value pairs) merged back in order.
    fn split(&mut self, command: &Command, args: &RequestArgs<'_>, merge: Merge, step: usize) {
        let read_only = command.is_readonly();
        // `MSET a 1 b` passes the arity check; split, it would set `a` and answer +OK where
        // Redis refuses the whole command.
        if !(args.len() - 1).is_multiple_of(step) {
            let msg = format!(
                "ERR wrong number of arguments for '{}' command",
                command.name()
            );
            return self.local_error(msg.as_bytes());
        }
        let slot = command.slot(args);
        if let Ok(slot) = slot {
            return self.forward(slot, read_only, args);
        }
        let name = args.get(0).unwrap_or_default();
        let mut parts = 0;
        let mut index = 1;
        while index + step <= args.len() {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let key = args.get(index).unwrap_or_default();
                let slot = Some(cinnabar_commands::key_slot(key));
                let id = self.new_ticket(&mut tickets, slot, read_only);
                let ticket = tickets.get(id);
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
        self.push_pending(Pending::Split { merge, parts });
    }

    /// Arranges subscribed mode: classic pub/sub on any master, sharded on the channel's owner.
    fn enter_pubsub(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let master = match command.slot(args) {
            Ok(Some(slot)) if command.name() == "ssubscribe" => routes.owner(slot),
            Ok(_) => (!routes.masters().is_empty()).then_some(0),
            Err(e) => return self.local_error(&e.to_bytes()),
        };
        let Some(node) = master.and_then(|m| routes.masters().get(m)).cloned() else {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        };
        let mut first = Vec::new();
        write_request(args, &mut first);
        self.subscribe = Some((node, first));
    }

    fn multi(&mut self) {
        if self.transaction.is_some() {
            return self.local_error(b"ERR MULTI calls can not be nested");
        }
        let mut tx = Transaction {
            slot: self.watch.as_ref().map(|w| w.slot),
            ..Transaction::default()
        };
        encode::command(&mut tx.request, &[b"MULTI"]);
        self.transaction = Some(tx);
        self.local(b"+OK\r\n");
    }

    /// Queues one command of a transaction, refusing (and dooming the transaction) what cannot
    /// run atomically on one master.
    fn queue(&mut self, command: &Command, route: Route, args: &RequestArgs<'_>) {
        // EXEC runs on a shared backend connection: nothing that changes connection state may
        // ride along (SELECT 1 would move every other client to db 1). Inside MULTI a blocking
        // command does not block, so it may ride along too.
        let carried = matches!(route, Route::Keyed | Route::Split { .. } | Route::Blocking)
            || matches!(command.name(), "ping" | "echo");
        let slot = if carried {
            command.slot(args).map_err(|e| e.to_bytes())
        } else {
            Err(format!(
                "ERR cinnabar: '{}' cannot run inside a transaction through the proxy",
                command.name()
            )
            .into_bytes())
        };
        let Some(tx) = self.transaction.as_mut() else {
            return;
        };
        let accepted = match slot {
            Ok(Some(slot)) if tx.slot.is_some_and(|s| s != slot) => {
                Err(b"CROSSSLOT Keys in request don't hash to the same slot".to_vec())
            }
            Ok(slot) => {
                tx.slot = tx.slot.or(slot);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match accepted {
            Ok(()) => {
                write_request(args, &mut tx.request);
                tx.queued += 1;
                self.local(b"+QUEUED\r\n");
            }
            Err(line) => {
                tx.aborted = true;
                self.local_error(&line);
            }
        }
    }

    fn exec(&mut self) {
        let Some(mut tx) = self.transaction.take() else {
            return self.local_error(b"ERR EXEC without MULTI");
        };
        let watch = self.watch.take();
        if tx.aborted {
            if let Some(watch) = watch {
                watch.backend.retire();
            }
            return self
                .local_error(b"EXECABORT Transaction discarded because of previous errors.");
        }
        if let Some(watch) = &watch
            && watch.backend.is_closed()
        {
            // The connection that held the WATCH is gone, so a watched key may have changed
            // unseen: answer as Redis does when one did (the transaction did not run).
            let protocol = self.protocol();
            return self.local_with(|out, _| encode::null_array(out, protocol));
        }
        encode::command(&mut tx.request, &[b"EXEC"]);
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = self.new_ticket(&mut tickets, tx.slot, false);
            let ticket = tickets.get(id);
            ticket.request.extend_from_slice(&tx.request);
            // The replies of MULTI and of every queued command; only EXEC's goes to the client.
            ticket.discard = tx.queued + 1;
            if let Some(watch) = &watch {
                watch
                    .backend
                    .enqueue(&ticket.request, id, false, ticket.discard);
            }
            id
        };
        match watch {
            Some(watch) => watch.backend.retire(),
            None => self.worker.dispatch(id),
        }
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// A blocking command (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, …) on a connection of
    /// its own, so it never stalls the shared one; cancelled if the client goes away.
    fn blocking(&mut self, slot: Option<u16>, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let master = slot
            .and_then(|s| routes.owner(s))
            .or((!routes.masters().is_empty()).then_some(0));
        let Some(addr) = master.and_then(|m| routes.masters().get(m)).cloned() else {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master serves this slot");
        };
        let mut request = Vec::new();
        write_request(args, &mut request);
        let prelude = self.worker.prelude(self.flavor());
        let timeout = self.worker.config.connect_timeout;
        self.reply_from_task(async move {
            let reply = crate::backend::private_request(&addr, &prelude, &request, timeout).await;
            reply.unwrap_or_else(|why| {
                format!("-ERR cinnabar: blocking command on {addr} failed: {why}\r\n").into_bytes()
            })
        });
    }

    /// Queues a reply that `work` produces in a task of its own (blocking commands, WAIT, a
    /// held-back login refusal), in order with the others; the task is cancelled, and its
    /// ticket released, if the client goes away first.
    fn reply_from_task(&mut self, work: impl std::future::Future<Output = Vec<u8>> + 'static) {
        let id = self.worker.tickets.borrow_mut().take();
        let worker = Rc::clone(&self.worker);
        let task = tokio::task::spawn_local(async move {
            let reply = work.await;
            worker.tickets.borrow_mut().complete(id, &reply);
        });
        self.blocking.retain(|(t, _)| !t.is_finished());
        self.blocking.push((task.abort_handle(), id));
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// `WAIT numreplicas timeout`: see the `wait` module. Runs as a task of its own so the
    /// client's later requests keep flowing; cancelled if the client goes away.
    fn wait(&mut self, args: &RequestArgs<'_>) {
        let number = |i: usize| {
            std::str::from_utf8(args.get(i).unwrap_or_default())
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
        };
        let (Some(numreplicas), Some(timeout)) = (number(1), number(2)) else {
            return self.local_error(b"ERR value is not an integer or out of range");
        };
        if timeout < 0 {
            return self.local_error(b"ERR timeout is negative");
        }
        let routes = self.worker.routes();
        let masters = routes.masters().to_vec();
        if masters.is_empty() {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        let mut offsets = Vec::with_capacity(masters.len());
        for master in 0..masters.len() {
            let id = self.master_ticket(&routes, master, |request| {
                encode::command(request, &[b"INFO", b"replication"]);
            });
            self.worker.dispatch(id);
            offsets.push(id);
        }
        let worker = Rc::clone(&self.worker);
        let numreplicas = u64::try_from(numreplicas).unwrap_or(0);
        let timeout = u64::try_from(timeout)
            .ok()
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_millis);
        self.reply_from_task(crate::wait::run(
            worker,
            masters,
            offsets,
            numreplicas,
            timeout,
        ));
    }

    /// Sends the request (or `replacement`) to every master; `merge` combines the replies.
    fn fan_out(&mut self, args: &RequestArgs<'_>, replacement: Option<&[&[u8]]>, merge: Merge) {
        let routes = self.worker.routes();
        let masters = routes.masters().len();
        if masters == 0 {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        for master in 0..masters {
            let id = self.master_ticket(&routes, master, |request| match replacement {
                Some(parts) => encode::command(request, parts),
                None => write_request(args, request),
            });
            self.worker.dispatch(id);
            self.ids.push_back(id);
        }
        self.push_pending(Pending::Split {
            merge,
            parts: masters,
        });
    }

    /// The request to every master and replica, one ticket each, the replies merged by `merge`.
    fn every_node(&mut self, args: &RequestArgs<'_>, merge: Merge) {
        let routes = self.worker.routes();
        let mut nodes = 0;
        for master in 0..routes.masters().len() {
            let replicas = routes.replicas(master).len();
            for replica in 0..=replicas {
                let id =
                    self.master_ticket(&routes, master, |request| write_request(args, request));
                match replica
                    .checked_sub(1)
                    .map(|r| routes.replicas(master)[r].clone())
                {
                    None => self.worker.dispatch(id),
                    Some(addr) => self.worker.send_to(&addr, id, true),
                }
                self.ids.push_back(id);
                nodes += 1;
            }
        }
        if nodes == 0 {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        self.push_pending(Pending::Split {
            merge,
            parts: nodes,
        });
    }

    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` over all masters, one after the other; the
    /// proxy's cursor is `(backend cursor << 10) | master index`.
    fn scan(&mut self, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let masters = routes.masters().len();
        let cursor = std::str::from_utf8(args.get(1).unwrap_or_default())
            .ok()
            .and_then(|c| c.parse::<u64>().ok());
        let master = cursor.map(|c| (c & ((1 << SCAN_MASTER_BITS) - 1)) as usize);
        let (Some(cursor), Some(master)) = (cursor, master.filter(|m| *m < masters)) else {
            return self.local_error(b"ERR invalid cursor");
        };
        let backend_cursor = (cursor >> SCAN_MASTER_BITS).to_string();
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let slot = routes.representative_slot(master);
            let id = self.new_ticket(&mut tickets, slot, false);
            let ticket = tickets.get(id);
            encode::array_header(&mut ticket.request, args.len());
            encode::bulk(&mut ticket.request, b"SCAN");
            encode::bulk(&mut ticket.request, backend_cursor.as_bytes());
            for i in 2..args.len() {
                encode::bulk(&mut ticket.request, args.get(i).unwrap_or_default());
            }
            id
        };
        self.worker.dispatch(id);
        self.ids.push_back(id);
        self.push_pending(Pending::Scan { master, masters });
    }

    /// Checks a login; on success the connection acts as that user from its next command. On
    /// failure the refusal is queued (held back after repeated failures from one address, and
    /// audited) and `false` returned.
    fn login(&mut self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let result = self.worker.access().0.authenticate(user, password);
        let ip = self.peer.map(|p| p.ip());
        match result {
            Ok(principal) => {
                if let Some(limit) = self.worker.config.max_connections_per_user {
                    let stats = &self.worker.all_stats;
                    if !stats.take_user_place(principal.user(), limit, self.user_place.as_deref()) {
                        let msg = format!(
                            "ERR cinnabar: user '{}' already has its maximum of {limit} connections",
                            principal.user()
                        );
                        self.local_error(msg.as_bytes());
                        return false;
                    }
                    self.user_place = Some(principal.user().to_owned());
                }
                if let Some(ip) = ip {
                    self.worker.login_succeeded(ip);
                }
                self.flush_user_counts(Instant::now());
                self.principal = Some(principal);
                true
            }
            Err(cinnabar_access::AuthError::NoPasswordConfigured) => {
                self.local_error(NO_PASSWORD);
                false
            }
            Err(e) => {
                let name = String::from_utf8_lossy(
                    user.unwrap_or(cinnabar_access::DEFAULT_USER.as_bytes()),
                )
                .into_owned();
                if let (Some(peer), true) = (self.peer, self.worker.auditor.is_enabled()) {
                    self.worker
                        .auditor
                        .record(cinnabar_audit::AuditRecord::auth_failure(peer, name));
                }
                let delay = ip.map_or(std::time::Duration::ZERO, |ip| self.worker.login_failed(ip));
                let mut refusal = Vec::with_capacity(96);
                refusal.push(b'-');
                refusal.extend_from_slice(e.to_string().as_bytes());
                refusal.extend_from_slice(b"\r\n");
                if delay.is_zero() {
                    self.local(&refusal);
                } else {
                    self.later(delay, refusal);
                }
                false
            }
        }
    }

    /// Queues `reply`, delivered after `delay` (in order with the others).
    fn later(&mut self, delay: std::time::Duration, reply: Vec<u8>) {
        self.reply_from_task(async move {
            tokio::time::sleep(delay).await;
            reply
        });
    }

    /// Whether this client may run `command` with `args`: logged in (or logging in), and
    /// permitted by its role. A refusal is answered (and audited) here.
    fn permitted(&mut self, command: &Command, args: &RequestArgs<'_>) -> bool {
        let generation = self.worker.access_generation();
        if generation != self.access_generation {
            // Users or roles were reloaded: the same user, with its new permissions (gone or
            // disabled: logged out).
            self.access_generation = generation;
            let user = self.principal.as_ref().map(|p| p.user().to_owned());
            let access = self.worker.access().0;
            self.principal = match user {
                Some(user) if access.auth_required() => access.principal(&user),
                _ => access.default_principal(),
            };
        }
        let Some(principal) = &self.principal else {
            if cinnabar_access::runs_before_login(command) {
                return true;
            }
            self.local_error(b"NOAUTH Authentication required.");
            return false;
        };
        let Err(denied) = principal.check(command, args) else {
            if command.acl_categories().intersects(self.worker.audited())
                && self.worker.auditor.is_enabled()
                && let Some(peer) = self.peer
            {
                let record = audit_record(peer, principal, command, args, &self.worker.auditor);
                self.audit_next = Some(Box::new(record));
            }
            return true;
        };
        self.worker.stats.denied.inc();
        let line = denied.to_string();
        if let (Some(peer), true) = (self.peer, self.worker.auditor.is_enabled()) {
            let record = audit_record(peer, principal, command, args, &self.worker.auditor)
                .with_outcome(cinnabar_audit::Outcome::Denied)
                .with_error(line.clone());
            self.worker.auditor.record(record);
        }
        self.local_error(line.as_bytes());
        false
    }

    /// `HELLO [2|3 [AUTH user password] [SETNAME name]]`. Logging in comes first; the protocol
    /// and name change only when the whole command succeeds.
    fn hello(&mut self, args: &RequestArgs<'_>) {
        let resp3 = match args.get(1) {
            None => self.resp3,
            Some(b"2") => false,
            Some(b"3") => true,
            Some(version)
                if std::str::from_utf8(version).is_ok_and(|v| v.parse::<i64>().is_ok()) =>
            {
                return self.local_error(b"NOPROTO unsupported protocol version");
            }
            Some(_) => {
                return self.local_error(b"ERR Protocol version is not an integer or out of range");
            }
        };
        let mut name = None;
        let mut login = None;
        let mut i = 2;
        while let Some(option) = args.get(i) {
            if option.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                let candidate = args.get(i + 1).unwrap_or_default();
                if !valid_client_name(candidate) {
                    return self.local_error(BAD_NAME);
                }
                name = Some(candidate);
                i += 2;
            } else if option.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                login = Some((
                    args.get(i + 1).unwrap_or_default(),
                    args.get(i + 2).unwrap_or_default(),
                ));
                i += 3;
            } else {
                return self.local_error(b"ERR Syntax error in HELLO option");
            }
        }
        if let Some((user, password)) = login {
            if !self.login(Some(user), password) {
                return;
            }
        } else if self.principal.is_none() {
            return self.local_error(b"NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(name) = name {
            self.name = name.to_vec();
        }
        self.resp3 = resp3;
        let (id, protocol) = (self.id, self.protocol());
        self.local_with(|out, _| local::hello(out, id, protocol));
    }

    /// `RESET`: back to a fresh connection's state (RESP2, no name, no transaction).
    fn reset(&mut self) {
        self.transaction = None;
        self.unwatch();
        // As Redis: back to the default user (logged out when logins are required).
        self.principal = self.worker.access().0.default_principal();
        self.name.clear();
        self.resp3 = false;
        self.local(b"+RESET\r\n");
    }

    /// The protocol the proxy's own replies use.
    fn protocol(&self) -> Protocol {
        if self.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        }
    }

    fn set_name(&mut self, name: &[u8]) {
        if !valid_client_name(name) {
            return self.local_error(BAD_NAME);
        }
        self.name = name.to_vec();
        self.local(b"+OK\r\n");
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

    /// Moves every finished reply at the head of the queue to the output buffer.
    fn collect_ready(&mut self) {
        let mut tickets = self.worker.tickets.borrow_mut();
        let mut now = None;
        let budget = self.worker.config.max_reply_bytes_per_client;
        while let Some(&queued) = self.pending.front() {
            let head = queued.reply;
            let parts = head.parts();
            if !self.ids.iter().take(parts).all(|id| tickets.peek(*id).done) {
                break;
            }
            let written_from = self.out.len();
            match head {
                Pending::One => {
                    if let Some(id) = self.ids.front() {
                        self.out.extend_from_slice(&tickets.peek(*id).reply);
                    }
                }
                Pending::Split { merge, parts } => {
                    let tickets = &*tickets;
                    let replies = self
                        .ids
                        .iter()
                        .take(parts)
                        .map(|id| &*tickets.peek(*id).reply);
                    merge_into(&mut self.out, merge, replies, &self.worker);
                }
                Pending::Scan { master, masters } => {
                    if let Some(id) = self.ids.front() {
                        let reply = &tickets.peek(*id).reply;
                        rewrite_scan_reply(&mut self.out, reply, master, masters);
                    }
                }
            }
            for _ in 0..parts {
                if let Some(id) = self.ids.pop_front() {
                    tickets.release(id);
                }
            }
            self.pending.pop_front();
            let now = *now.get_or_insert_with(Instant::now);
            let error = self.out.get(written_from) == Some(&b'-');
            (self.reply_average, self.window) =
                learn_reply_size(self.reply_average, self.out.len() - written_from, budget);
            let stats = &self.worker.stats;
            stats.request(queued.category, error);
            self.user_counts[0] += 1;
            self.user_counts[1] += u64::from(error);
            let took = now.duration_since(queued.started);
            stats.latency.observe(took);
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            stats.commands.call(queued.command_index, us, error);
            if took >= self.worker.config.slowlog_slower_than && !queued.command.is_empty() {
                self.worker.all_stats.slowlog.record(crate::slowlog::Entry {
                    took,
                    command: queued.command,
                    client: self.peer,
                    name: String::from_utf8_lossy(&self.name).into_owned(),
                });
            }
            if queued.audited
                && let Some(record) = self.audits.pop_front()
            {
                let reply = &self.out[written_from..];
                let record = (*record).with_latency(now.duration_since(queued.started));
                let record = if error {
                    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
                    record
                        .with_outcome(cinnabar_audit::Outcome::Error)
                        .with_error(String::from_utf8_lossy(line.get(1..).unwrap_or_default()))
                } else {
                    record.with_outcome(cinnabar_audit::Outcome::Ok)
                };
                self.worker.auditor.record(record);
            }
        }
        drop(tickets);
        if self.pending.is_empty() {
            self.blocked = false;
        }
        if let Some(now) = now
            && now.duration_since(self.user_counts_since) >= USER_COUNTS_EVERY
        {
            self.flush_user_counts(now);
        }
    }

    /// The nodes a request goes to, for its audit record (only audited requests ask: this
    /// allocates).
    fn targets(
        &self,
        command: &Command,
        route: Route,
        args: &RequestArgs<'_>,
    ) -> Vec<cinnabar_cluster::NodeAddr> {
        let routes = self.worker.routes();
        let masters = routes.masters();
        match route {
            Route::FanOut(_) | Route::Scan | Route::Wait => masters.to_vec(),
            Route::EveryNode(_) => (0..masters.len())
                .flat_map(|m| {
                    std::iter::once(masters[m].clone()).chain(routes.replicas(m).iter().cloned())
                })
                .collect(),
            Route::Keyed | Route::Split { .. } | Route::Blocking => {
                let mut owners: Vec<usize> = command
                    .keys(args)
                    .filter_map(|i| args.get(i))
                    .filter_map(|key| routes.owner(cinnabar_commands::key_slot(key)))
                    .collect();
                if owners.is_empty() && !masters.is_empty() {
                    owners.push(0);
                }
                owners.sort_unstable();
                owners.dedup();
                owners.into_iter().map(|m| masters[m].clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Adds this connection's per-user counts to the worker's.
    fn flush_user_counts(&mut self, now: Instant) {
        let [requests, errors] = std::mem::take(&mut self.user_counts);
        self.user_counts_since = now;
        if requests > 0 {
            let user = self
                .principal
                .as_ref()
                .map_or("(not logged in)", |p| p.user());
            self.worker.stats.add_user(user, requests, errors);
        }
    }

    /// Reply bytes received for this client and not yet written to it.
    fn held_reply_bytes(&self) -> usize {
        let tickets = self.worker.tickets.borrow();
        self.ids
            .iter()
            .map(|id| tickets.peek(*id).reply.len())
            .sum()
    }

    /// Resolves when the oldest pending request has all its replies.
    async fn head_ready(&self) {
        let parts = self.pending.front().map_or(0, |p| p.reply.parts());
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
        // A cancelled task will never complete its ticket: release it here.
        let mut cancelled = Vec::new();
        for (task, id) in self.blocking.drain(..) {
            if !task.is_finished() {
                task.abort();
                cancelled.push(id);
            }
        }
        self.unwatch();
        self.worker.forget_sleeper(self.id);
        self.flush_user_counts(Instant::now());
        if let Some(user) = self.user_place.take() {
            self.worker.all_stats.give_user_place(&user);
        }
        let mut tickets = self.worker.tickets.borrow_mut();
        for id in self.ids.drain(..) {
            if tickets.get(id).done || cancelled.contains(&id) {
                tickets.release(id);
            } else {
                tickets.get(id).abandoned = true;
            }
        }
    }
}

/// How the proxy carries a command. The one place that classifies commands: `handle` acts on
/// it, and `queue` uses it to decide what may run inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// QUIT: answered, then the connection closes.
    Quit,
    /// Answered by the proxy itself (PING, ECHO, SELECT, HELLO, CLIENT …, CLUSTER …).
    Local,
    /// Sent whole to the master of its slot (any master when it has no keys).
    Keyed,
    /// Multi-key: sent whole when the keys share a slot, else one request per key (`step`
    /// arguments per key) with the replies merged.
    Split { merge: Merge, step: usize },
    /// Sent to every master, the replies merged.
    FanOut(Merge),
    /// `SCAN`, one master after the other.
    Scan,
    /// BLPOP & co.: a private connection each, so they never stall the shared one.
    Blocking,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    Transaction,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: the connection enters subscribed mode.
    Subscribe,
    /// UNSUBSCRIBE & co. while not subscribed.
    Unsubscribe,
    /// `WAIT numreplicas timeout`, over every master.
    Wait,
    /// Sent to every master and every replica (`CONFIG`), the replies merged with the node
    /// names at hand (masters, each followed by its replicas).
    EveryNode(Merge),
    /// Not carried: a clear error naming the command, never a wrong answer.
    Unsupported,
}

fn route(command: &Command) -> Route {
    match command.name() {
        "quit" => Route::Quit,
        "ping" | "echo" | "select" | "hello" | "auth" | "asking" | "readonly" | "readwrite"
        | "reset" => Route::Local,
        "client|id" | "client|setname" | "client|getname" | "client|info" | "client|list"
        | "client|setinfo" => Route::Local,
        "slowlog|get" | "slowlog|len" | "slowlog|reset" => Route::Local,
        "cluster|slots"
        | "cluster|shards"
        | "cluster|nodes"
        | "cluster|info"
        | "cluster|myid"
        | "cluster|keyslot"
        | "cluster|countkeysinslot"
        | "cluster|getkeysinslot" => Route::Local,
        "multi" | "exec" | "discard" | "watch" | "unwatch" => Route::Transaction,
        "subscribe" | "psubscribe" | "ssubscribe" => Route::Subscribe,
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => Route::Unsubscribe,
        "mget" => Route::Split {
            merge: Merge::Array,
            step: 1,
        },
        "del" | "unlink" | "exists" | "touch" => Route::Split {
            merge: Merge::Sum,
            step: 1,
        },
        "mset" => Route::Split {
            merge: Merge::AllOk,
            step: 2,
        },
        "dbsize" => Route::FanOut(Merge::Sum),
        "keys" => Route::FanOut(Merge::Concat),
        "flushdb" | "flushall" | "script|flush" => Route::FanOut(Merge::AllOk),
        "script|load" | "function|load" => Route::FanOut(Merge::First),
        "script|exists" => Route::FanOut(Merge::AllExist),
        "function|delete" | "function|flush" | "function|restore" => Route::FanOut(Merge::AllOk),
        "function|list" | "function|dump" => Route::Keyed,
        // Only `admin` may run these (the default deny list); they reach every node.
        "config|get" => Route::EveryNode(Merge::ConfigGet),
        "config|set" | "config|resetstat" => Route::EveryNode(Merge::NodeReport),
        "randomkey" => Route::FanOut(Merge::FirstNonNil),
        "info" => Route::FanOut(Merge::Info(0)),
        "scan" => Route::Scan,
        "wait" => Route::Wait,
        "waitaof" => Route::Unsupported,
        _ if command.is_blocking() => Route::Blocking,
        // Containers whose carried subcommands are listed above, administration, commands that
        // need per-node or per-connection state the proxy does not keep, and the rest of
        // pub/sub (PUBLISH and SPUBLISH are plain keyed commands).
        _ if command.is_admin()
            || (command.is_pubsub() && !matches!(command.name(), "publish" | "spublish"))
            || matches!(
                command.request_policy(),
                RequestPolicy::AllNodes | RequestPolicy::AllShards
            )
            || matches!(
                command.command_name(),
                "client" | "cluster" | "reset" | "swapdb" | "move" | "function" | "script"
            ) =>
        {
            Route::Unsupported
        }
        _ => Route::Keyed,
    }
}

/// The audit record of `command` run by `principal`: its name, subcommand and keys (the
/// outcome is added by the caller).
fn audit_record(
    peer: std::net::SocketAddr,
    principal: &cinnabar_access::Principal,
    command: &Command,
    args: &RequestArgs<'_>,
    auditor: &cinnabar_audit::Auditor,
) -> cinnabar_audit::AuditRecord {
    let record = cinnabar_audit::AuditRecord::command(
        peer,
        principal.user().to_owned(),
        command.command_name(),
    )
    .with_keys(
        command.keys(args).filter_map(|i| args.get(i)),
        auditor.max_keys(),
    );
    match command.subcommand_name() {
        Some(sub) => record.with_subcommand(sub),
        None => record,
    }
}

/// Writes the one reply a split request owes, from its parts' replies.
fn merge_into<'a>(
    out: &mut Vec<u8>,
    merge: Merge,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    match merge {
        Merge::NodeReport => return node_report(out, parts, worker),
        Merge::ConfigGet => return config_get_report(out, parts, worker),
        _ => {}
    }
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
        Merge::Concat => {
            let total: i64 = parts
                .clone()
                .map(|r| parse_integer(&r[..header_len(r)]))
                .sum();
            encode::array_header(out, usize::try_from(total).unwrap_or(0));
            for reply in parts {
                out.extend_from_slice(&reply[header_len(reply)..]);
            }
        }
        Merge::First => out.extend_from_slice(parts.clone().next().unwrap_or(b"$-1\r\n")),
        Merge::FirstNonNil => {
            let found = parts.clone().find(|r| *r != b"$-1\r\n" && *r != b"_\r\n");
            out.extend_from_slice(found.unwrap_or(b"$-1\r\n"));
        }
        Merge::AllExist => {
            let limits = cinnabar_resp::Limits::default();
            let mut all: Option<Vec<bool>> = None;
            for reply in parts {
                let Ok(Some((Value::Array(items), _))) = parse_value(reply, &limits) else {
                    return out.extend_from_slice(reply);
                };
                let here = items.iter().map(|v| matches!(v, Value::Integer(1)));
                all = Some(match all {
                    None => here.collect(),
                    Some(before) => before.iter().zip(here).map(|(a, b)| *a && b).collect(),
                });
            }
            let all = all.unwrap_or_default();
            encode::array_header(out, all.len());
            for exists in all {
                encode::integer(out, i64::from(exists));
            }
        }
        Merge::ConfigGet | Merge::NodeReport => {}
        Merge::Info(sections) => {
            let masters = parts.clone().count();
            let (keys, expires) = local::sum_keyspace(parts.map(|r| &r[header_len(r)..]));
            let commands = worker.all_stats.command_totals();
            let facts = local::InfoFacts {
                announce: worker.announce,
                masters,
                keys,
                expires,
                totals: worker.all_stats.totals(),
                commands: &commands,
                max_clients: worker.config.max_clients,
                workers: worker.config.workers,
            };
            local::info(out, &facts, sections);
        }
    }
}

/// The names of the nodes an every-node request went to, in ticket order (masters, each
/// followed by its replicas), from the current routes. Should the topology have changed in
/// between (the counts differ), nodes are named by position instead.
fn every_node_names(worker: &Worker, count: usize) -> Vec<String> {
    let routes = worker.routes_in_use();
    let mut names = Vec::with_capacity(count);
    for (i, master) in routes.masters().iter().enumerate() {
        names.push(master.to_string());
        names.extend(routes.replicas(i).iter().map(ToString::to_string));
    }
    if names.len() != count {
        names = (1..=count).map(|i| format!("node {i}")).collect();
    }
    names
}

/// A node's one-line reply, prefixed with the node's name: `host:port: ERR …`.
fn named_reply(name: &str, reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    format!("{name}: {}", text.trim_start_matches(['-', '+']).trim_end())
}

/// `CONFIG SET`/`RESETSTAT` over every node: `+OK`, or an error that says on how many nodes it
/// took effect and quotes each refusal with its node.
fn node_report<'a>(
    out: &mut Vec<u8>,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    let count = parts.clone().count();
    let names = every_node_names(worker, count);
    let refusals: Vec<String> = parts
        .zip(&names)
        .filter(|(reply, _)| *reply != b"+OK\r\n")
        .map(|(reply, name)| named_reply(name, reply))
        .collect();
    if refusals.is_empty() {
        return out.extend_from_slice(b"+OK\r\n");
    }
    let message = format!(
        "ERR cinnabar: applied on {} of {count} nodes; refused by {}",
        count - refusals.len(),
        refusals.join("; ")
    );
    encode::error(out, message.as_bytes());
}

/// `CONFIG GET` over every node: each parameter once, with its value when every node agrees,
/// else `addr=value` for each node in one string; secret parameters never appear. A node that
/// refused makes the whole reply its refusal, named.
fn config_get_report<'a>(
    out: &mut Vec<u8>,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    worker: &Worker,
) {
    let count = parts.clone().count();
    let names = every_node_names(worker, count);
    let limits = cinnabar_resp::Limits::default();
    let mut map_reply = false;
    // Parameter → `(node, value)` for each node, in first-seen parameter order.
    type NodeValues = Vec<(usize, Vec<u8>)>;
    let mut params: Vec<(Vec<u8>, NodeValues)> = Vec::new();
    for (node, reply) in parts.enumerate() {
        if reply.first() == Some(&b'-') {
            return encode::error(out, named_reply(&names[node], reply).as_bytes());
        }
        let Ok(Some((value, _))) = parse_value(reply, &limits) else {
            return out.extend_from_slice(reply);
        };
        let pairs: Vec<(&Value, &Value)> = match &value {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|p| Some((p.first()?, p.get(1)?)))
                .collect(),
            Value::Map(pairs) => {
                map_reply = true;
                pairs.iter().map(|(k, v)| (k, v)).collect()
            }
            _ => return out.extend_from_slice(reply),
        };
        for (name, v) in pairs {
            let (Value::Bulk(name), Value::Bulk(v)) = (name, v) else {
                continue;
            };
            if is_secret_parameter(name) {
                continue;
            }
            match params.iter_mut().find(|(n, _)| n.as_slice() == *name) {
                Some((_, values)) => values.push((node, v.to_vec())),
                None => params.push((name.to_vec(), vec![(node, v.to_vec())])),
            }
        }
    }
    if map_reply {
        out.extend_from_slice(format!("%{}\r\n", params.len()).as_bytes());
    } else {
        encode::array_header(out, params.len() * 2);
    }
    for (name, values) in params {
        encode::bulk(out, &name);
        let agreed = values.len() == count && values.windows(2).all(|w| w[0].1 == w[1].1);
        if agreed {
            encode::bulk(out, &values[0].1);
        } else {
            let per_node: Vec<String> = values
                .iter()
                .map(|(node, v)| format!("{}={}", names[*node], String::from_utf8_lossy(v)))
                .collect();
            encode::bulk(out, per_node.join(" ").as_bytes());
        }
    }
}

/// Configuration parameters whose values are secrets of the backend, never shown to clients.
fn is_secret_parameter(name: &[u8]) -> bool {
    const SECRETS: [&[u8]; 5] = [
        b"requirepass",
        b"masterauth",
        b"masteruser",
        b"tls-key-file-pass",
        b"tls-client-key-file-pass",
    ];
    SECRETS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// Length of a reply's first line including its CRLF (`*3\r\n` → 4).
fn header_len(reply: &[u8]) -> usize {
    reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(reply.len(), |p| p + 2)
}

/// Turns one master's `SCAN` reply into the proxy's: the cursor says which master comes next.
fn rewrite_scan_reply(out: &mut Vec<u8>, reply: &[u8], master: usize, masters: usize) {
    // `*2\r\n$<n>\r\n<cursor>\r\n<array>`; anything else (an error) passes through.
    let Some(rest) = reply.strip_prefix(b"*2\r\n") else {
        return out.extend_from_slice(reply);
    };
    let bulk_header = header_len(rest);
    let cursor_end = bulk_header + header_len(&rest[bulk_header..]);
    let digits = rest
        .get(bulk_header..cursor_end.saturating_sub(2))
        .unwrap_or_default();
    let backend = std::str::from_utf8(digits)
        .ok()
        .and_then(|c| c.parse::<u64>().ok());
    let Some(backend) = backend.filter(|c| *c < 1 << (64 - SCAN_MASTER_BITS)) else {
        return out.extend_from_slice(
            b"-ERR cinnabar: a backend returned a SCAN cursor the proxy cannot carry\r\n",
        );
    };
    let next = if backend != 0 {
        (backend << SCAN_MASTER_BITS) | master as u64
    } else if master + 1 < masters {
        (master + 1) as u64
    } else {
        0
    };
    out.extend_from_slice(b"*2\r\n");
    encode::bulk(out, next.to_string().as_bytes());
    out.extend_from_slice(&rest[cursor_end..]);
}

/// Copies a request for a backend as multibulk (inline requests are re-encoded).
fn write_request(args: &RequestArgs<'_>, out: &mut Vec<u8>) {
    if args.request.is_inline() {
        args.request.write_multibulk(args.buf, out);
    } else {
        out.extend_from_slice(args.buf);
    }
}

/// Redis refuses client names with spaces or control characters.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Redis's answer to such a name.
const BAD_NAME: &[u8] = b"ERR Client names cannot contain spaces, newlines or special characters.";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_size_of_replies() {
        let budget = 64 * 1024 * 1024;
        // Small replies: a deep pipeline (the pending limit caps it elsewhere).
        let (estimate, window) = learn_reply_size(0, 10, budget);
        assert_eq!(estimate, 10);
        assert!(window > 100_000);
        // One large reply shrinks the window at once ...
        let (estimate, window) = learn_reply_size(estimate, 1024 * 1024, budget);
        assert_eq!(window, 16, "16 MiB of budget for 1 MiB replies");
        // ... and only a run of small ones opens it again.
        let (mut estimate, mut window) = (estimate, window);
        for _ in 0..10 {
            (estimate, window) = learn_reply_size(estimate, 10, budget);
        }
        assert!(window > 16 && window < 200, "{window}");
        for _ in 0..200 {
            (estimate, window) = learn_reply_size(estimate, 10, budget);
        }
        assert!(window > 100_000, "{window}");
        // Never below the first window.
        assert_eq!(learn_reply_size(0, usize::MAX / 8, budget).1, FIRST_WINDOW);
    }
}
