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

use cinnabar_commands::{Args, Command, RequestPolicy};
use cinnabar_resp::{Parsed, Request, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::local;
use crate::pubsub;
use crate::worker::Worker;
use cinnabar_cluster::NodeAddr;

/// Client ids, unique across workers (taken once per connection, not per request).
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Bits of a proxy SCAN cursor that say which master it is on (up to 1024 masters).
const SCAN_MASTER_BITS: u32 = 10;
/// What Redis answers to AUTH when no password is configured.
const NO_PASSWORD: &[u8] = b"ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

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
    /// `KEYS`: the arrays of every master, concatenated.
    Concat,
    /// `SCRIPT LOAD`: every master answers the same; pass the first.
    First,
    /// `RANDOMKEY`: the first master that has a key.
    FirstNonNil,
    /// `INFO`: the proxy's own sections plus the keyspace summed over masters.
    Keyspace,
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
    peer: Option<std::net::SocketAddr>,
    out: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Ticket ids of all pending requests, in order (a split request owns `parts` of them).
    ids: VecDeque<usize>,
    closing: bool,
    /// Between MULTI and EXEC/DISCARD.
    transaction: Option<Transaction>,
    /// A SUBSCRIBE-family request waiting for earlier replies to flush: then the connection
    /// enters subscribed mode with this node.
    subscribe: Option<(NodeAddr, Vec<u8>)>,
    /// Blocking commands running on private connections; cancelled when the client leaves.
    blocking: Vec<tokio::task::AbortHandle>,
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

/// Serves one client until it disconnects, sends garbage, or says QUIT.
pub(crate) async fn serve(worker: Rc<Worker>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        worker,
        id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        name: Vec::new(),
        peer: stream.peer_addr().ok(),
        out: Vec::with_capacity(BUFFER),
        pending: VecDeque::new(),
        ids: VecDeque::new(),
        closing: false,
        transaction: None,
        subscribe: None,
        blocking: Vec::new(),
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
            let limited = self.parse_all(input, request);
            self.collect_ready();
            if !self.out.is_empty() {
                wr.write_all(&self.out).await?;
                self.out.clear();
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
                let ended = pubsub::relay(
                    &mut rd, &mut wr, input, request, parser, &node, &first, timeout,
                )
                .await?;
                if ended == pubsub::Ended::Closed {
                    return Ok(());
                }
                continue;
            }
            // Parsing stopped at the limit with requests still buffered, and the replies just
            // collected made room: parse them now. Waiting for the socket could wait forever,
            // since the client may be waiting for exactly those replies.
            if limited && self.ids.len() < max_pending {
                continue;
            }
            // Counted in tickets, not requests: a request split per key holds one per key.
            let can_read =
                !self.closing && self.subscribe.is_none() && self.ids.len() < max_pending;
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

    /// Parses and handles every complete request in `input` (up to the pending limit), then
    /// drops the consumed bytes. True when the limit stopped it with bytes left in `input`.
    fn parse_all(&mut self, input: &mut Vec<u8>, request: &mut Request) -> bool {
        let max_pending = self.worker.config.max_pending_per_client;
        let mut start = 0;
        while !self.closing && self.subscribe.is_none() && self.ids.len() < max_pending {
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
                    return false;
                }
            }
        }
        input.drain(..start);
        // The loop ends on an incomplete request only while under the limit.
        !self.closing
            && self.subscribe.is_none()
            && self.ids.len() >= max_pending
            && !input.is_empty()
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
                return self.local_error(&line);
            }
        };
        // QUIT acts at once, even inside a transaction (as in Redis): never queued, never sent.
        if command.name() == "quit" {
            self.local(b"+OK\r\n");
            self.closing = true;
            return;
        }
        if self.transaction.is_some()
            && !matches!(command.name(), "exec" | "discard" | "multi" | "watch")
        {
            return self.queue(command, args);
        }
        match command.name() {
            "subscribe" | "psubscribe" | "ssubscribe" => self.enter_pubsub(command, args),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
                // Not subscribed: Redis confirms with a count of 0 for each channel (or none).
                let kind = command.name().as_bytes();
                let channels = args.len().saturating_sub(1);
                for i in 0..channels.max(1) {
                    let channel = args.get(i + 1);
                    self.local_with(|out, _| {
                        encode::array_header(out, 3);
                        encode::bulk(out, kind);
                        match channel {
                            Some(c) => encode::bulk(out, c),
                            None => out.extend_from_slice(b"$-1\r\n"),
                        }
                        encode::integer(out, 0);
                    });
                }
            }
            "multi" => self.multi(),
            "exec" => self.exec(),
            "discard" => match self.transaction.take() {
                Some(_) => self.local(b"+OK\r\n"),
                None => self.local_error(b"ERR DISCARD without MULTI"),
            },
            "watch" => {
                self.local_error(b"ERR cinnabar: WATCH is not supported through the proxy yet")
            }
            "unwatch" => self.local(b"+OK\r\n"),
            _ if command.is_blocking() && !matches!(command.name(), "wait" | "waitaof") => {
                match command.slot(args) {
                    Ok(slot) => self.blocking(slot, args),
                    Err(e) => self.local_error(&e.to_bytes()),
                }
            }
            "ping" => match args.get(1) {
                None => self.local(b"+PONG\r\n"),
                Some(message) => self.local_bulk(message),
            },
            "echo" => self.local_bulk(args.get(1).unwrap_or_default()),
            "select" => match args.get(1) {
                Some(b"0") => self.local(b"+OK\r\n"),
                _ => self.local(b"-ERR DB index is out of range\r\n"),
            },
            // Redirects are the proxy's business; a client's ASKING must never reach a shared
            // connection, where it would apply to someone else's next command.
            "asking" => self.local(b"+OK\r\n"),
            "hello" => self.hello(args),
            "auth" => self.local_error(NO_PASSWORD),
            "readonly" | "readwrite" | "client|setinfo" => self.local(b"+OK\r\n"),
            "client|id" => self.local_integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            "client|setname" => self.set_name(args.get(2).unwrap_or_default()),
            "client|getname" => {
                if self.name.is_empty() {
                    self.local(b"$-1\r\n");
                } else {
                    let name = std::mem::take(&mut self.name);
                    self.local_bulk(&name);
                    self.name = name;
                }
            }
            "client|info" | "client|list" => {
                let line = local::client_line(self.id, self.peer, self.worker.announce, &self.name);
                self.local_bulk(line.as_bytes());
            }
            "cluster|slots" => self.local_with(local::cluster_slots),
            "cluster|shards" => self.local_with(local::cluster_shards),
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
                    Some(slot) => self.forward(Some(slot), args),
                    None => self.local_error(b"ERR Invalid or out of range slot"),
                }
            }
            "dbsize" => self.fan_out(args, None, Merge::Sum),
            "keys" => self.fan_out(args, None, Merge::Concat),
            "flushdb" | "flushall" | "script|flush" => self.fan_out(args, None, Merge::AllOk),
            "script|load" => self.fan_out(args, None, Merge::First),
            "randomkey" => self.fan_out(args, None, Merge::FirstNonNil),
            "info" => self.fan_out(args, Some(&[b"INFO", b"keyspace"]), Merge::Keyspace),
            "scan" => self.scan(args),
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
            write_request(args, &mut ticket.request);
            id
        };
        self.worker.dispatch(id);
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    /// A multi-key command: sent whole when all keys share a slot, else one request per key
    /// (`step` arguments per key: 1 for keys, 2 for key-value pairs) merged back in order.
    fn split(&mut self, command: &Command, args: &RequestArgs<'_>, merge: Merge, step: usize) {
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
        let mut tx = Transaction::default();
        encode::command(&mut tx.request, &[b"MULTI"]);
        self.transaction = Some(tx);
        self.local(b"+OK\r\n");
    }

    /// Queues one command of a transaction, refusing (and dooming the transaction) what cannot
    /// run atomically on one master.
    fn queue(&mut self, command: &Command, args: &RequestArgs<'_>) {
        // EXEC runs on a shared backend connection: nothing that changes connection state may
        // ride along (SELECT 1 would move every other client to db 1).
        let changes_connection = matches!(
            command.command_name(),
            "select"
                | "hello"
                | "auth"
                | "client"
                | "readonly"
                | "readwrite"
                | "reset"
                | "asking"
                | "watch"
                | "unwatch"
                | "subscribe"
                | "psubscribe"
                | "ssubscribe"
                | "unsubscribe"
                | "punsubscribe"
                | "sunsubscribe"
        );
        let slot = if !changes_connection && (supported(command) || command.is_blocking()) {
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
        if tx.aborted {
            return self
                .local_error(b"EXECABORT Transaction discarded because of previous errors.");
        }
        encode::command(&mut tx.request, &[b"EXEC"]);
        let id = {
            let mut tickets = self.worker.tickets.borrow_mut();
            let id = tickets.take();
            let ticket = tickets.get(id);
            ticket.slot = tx.slot;
            ticket.request.extend_from_slice(&tx.request);
            // The replies of MULTI and of every queued command; only EXEC's goes to the client.
            ticket.discard = tx.queued + 1;
            id
        };
        self.worker.dispatch(id);
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
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
        let id = self.worker.tickets.borrow_mut().take();
        let mut request = Vec::new();
        write_request(args, &mut request);
        let worker = Rc::clone(&self.worker);
        let task = tokio::task::spawn_local(async move {
            let reply =
                crate::backend::private_request(&addr, &request, worker.config.connect_timeout)
                    .await;
            let reply = reply.unwrap_or_else(|why| {
                format!("-ERR cinnabar: blocking command on {addr} failed: {why}\r\n").into_bytes()
            });
            worker.tickets.borrow_mut().complete(id, &reply);
        });
        self.blocking.retain(|t| !t.is_finished());
        self.blocking.push(task.abort_handle());
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
    }

    /// Sends the request (or `replacement`) to every master; `merge` combines the replies.
    fn fan_out(&mut self, args: &RequestArgs<'_>, replacement: Option<&[&[u8]]>, merge: Merge) {
        let routes = self.worker.routes();
        let masters = routes.masters().len();
        if masters == 0 {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        for master in 0..masters {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let id = tickets.take();
                let ticket = tickets.get(id);
                ticket.slot = routes.representative_slot(master);
                match replacement {
                    Some(parts) => encode::command(&mut ticket.request, parts),
                    None => write_request(args, &mut ticket.request),
                }
                id
            };
            self.worker.dispatch(id);
            self.ids.push_back(id);
        }
        self.pending.push_back(Pending::Split {
            merge,
            parts: masters,
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
            let id = tickets.take();
            let ticket = tickets.get(id);
            ticket.slot = routes.representative_slot(master);
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
        self.pending.push_back(Pending::Scan { master, masters });
    }

    /// `HELLO [2 [SETNAME name]]`; RESP3 and AUTH are refused the way Redis refuses them.
    fn hello(&mut self, args: &RequestArgs<'_>) {
        match args.get(1) {
            None | Some(b"2") => {}
            Some(b"3") => {
                return self.local_error(b"NOPROTO sorry, this protocol version is not supported");
            }
            Some(_) => {
                return self.local_error(b"ERR Protocol version is not an integer or out of range");
            }
        }
        let mut i = 2;
        while let Some(option) = args.get(i) {
            if option.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                let name = args.get(i + 1).unwrap_or_default();
                if !valid_client_name(name) {
                    return self.local_error(BAD_NAME);
                }
                self.name = name.to_vec();
                i += 2;
            } else if option.eq_ignore_ascii_case(b"AUTH") {
                return self.local_error(NO_PASSWORD);
            } else {
                return self.local_error(b"ERR Syntax error in HELLO option");
            }
        }
        let id = self.id;
        self.local_with(|out, _| local::hello(out, id));
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
        let mut tickets = self.worker.tickets.borrow_mut();
        let id = tickets.take();
        let ticket = tickets.get(id);
        write(&mut ticket.reply, announce);
        ticket.done = true;
        self.ids.push_back(id);
        self.pending.push_back(Pending::One);
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
                    let replies = self
                        .ids
                        .iter()
                        .take(parts)
                        .map(|id| &*tickets.peek(*id).reply);
                    merge_into(&mut self.out, merge, replies, self.worker.announce);
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
        for task in self.blocking.drain(..) {
            task.abort();
        }
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
    // Containers whose other subcommands are handled above, and commands that need connection
    // state the proxy does not keep yet.
    !matches!(
        command.command_name(),
        "client"
            | "cluster"
            | "reset"
            | "wait"
            | "waitaof"
            | "swapdb"
            | "move"
            | "function"
            | "script"
    )
}

/// Writes the one reply a split request owes, from its parts' replies.
fn merge_into<'a>(
    out: &mut Vec<u8>,
    merge: Merge,
    parts: impl Iterator<Item = &'a [u8]> + Clone,
    announce: std::net::SocketAddr,
) {
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
            let found = parts.clone().find(|r| *r != b"$-1\r\n");
            out.extend_from_slice(found.unwrap_or(b"$-1\r\n"));
        }
        Merge::Keyspace => {
            let masters = parts.clone().count();
            let (keys, expires) = local::sum_keyspace(parts.map(|r| &r[header_len(r)..]));
            local::info(out, announce, masters, keys, expires);
        }
    }
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
