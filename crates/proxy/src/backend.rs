//! One pipelined connection from a worker to one Redis node, shared by every client session of
//! that worker. Requests are appended to one output buffer (so many clients' requests leave in
//! one write); replies are found with the scanner and handed to their tickets in order, without
//! being decoded or re-encoded.
//!
//! Must never block the worker: reading and writing progress together in one task, so a node
//! that stops reading while it still has replies to send cannot deadlock us.
//!
//! Every new connection starts with a prelude (`HELLO 3` for RESP3 clients, `AUTH` with the
//! backend credentials, `READONLY` on replicas) whose replies must all be positive; otherwise
//! the connection counts as failed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cinnabar_cluster::{Credentials, NodeAddr};
use cinnabar_resp::{Limits, ReplyScanner, encode};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::worker::Worker;

/// `ASKING`, sent before a request that follows an ASK redirect.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Initial buffer sizes; buffers grow with load and keep their capacity.
const BUFFER: usize = 16 * 1024;
/// A buffer that grew beyond this (a huge reply went through) is given back once empty.
const RETAINED: usize = 1024 * 1024;
/// After a connection failure a replica is avoided by reads for this long.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// What kind of connection: the client protocol it speaks, whether it reads from a replica,
/// and its database. Replies are forwarded as they are, so a RESP3 client needs a RESP3
/// backend connection; a client of a Sentinel group that selected database 3 shares the
/// connections that selected it in their prelude, so its requests are never prefixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Flavor {
    pub(crate) resp3: bool,
    pub(crate) replica: bool,
    /// Below [`DATABASES`]; always 0 for a cluster.
    pub(crate) db: u8,
}

/// Databases a client of a group may select (Redis's default `databases 16`).
pub(crate) const DATABASES: u8 = 16;

/// Flavors in all: the size of a per-address array of connections (per lane).
pub(crate) const FLAVORS: usize = 4 * DATABASES as usize;

impl Flavor {
    /// A dense index below [`FLAVORS`], for per-address arrays of connections.
    pub(crate) const fn index(self) -> usize {
        (self.resp3 as usize) | ((self.replica as usize) << 1) | ((self.db as usize) << 2)
    }

    /// The commands that open every connection of this flavor, and how many replies they get.
    /// `cluster`: the node is a cluster node, whose replicas serve reads only after `READONLY`
    /// (a Sentinel group's replicas serve them as they are, and refuse the command).
    pub(crate) fn prelude(
        self,
        credentials: Option<&Credentials>,
        cluster: bool,
    ) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut replies = 0;
        match (self.resp3, credentials) {
            (true, Some(c)) => {
                let user = c.user_or_default().as_bytes();
                encode::command(
                    &mut out,
                    &[b"HELLO", b"3", b"AUTH", user, c.password.as_bytes()],
                );
                replies += 1;
            }
            (true, None) => {
                encode::command(&mut out, &[b"HELLO", b"3"]);
                replies += 1;
            }
            (false, Some(c)) => {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                args.extend(c.auth_args());
                encode::command(&mut out, &args);
                replies += 1;
            }
            (false, None) => {}
        }
        if self.replica && cluster {
            encode::command(&mut out, &[b"READONLY"]);
            replies += 1;
        }
        if self.db != 0 {
            let mut digits = [0u8; 3];
            encode::command(&mut out, &[b"SELECT", db_digits(self.db, &mut digits)]);
            replies += 1;
        }
        (out, replies)
    }
}

/// `db` in decimal, without allocating.
fn db_digits(db: u8, buf: &mut [u8; 3]) -> &[u8] {
    let mut n = db;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + n % 10;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// What the next reply on the connection belongs to.
#[derive(Debug, Clone, Copy)]
enum Inflight {
    /// A client's request.
    Ticket(usize),
    /// A reply nobody waits for (the `+OK` of `ASKING`).
    Discard,
    /// The reply to a prelude command: anything but an error is fine.
    Prelude,
}

#[derive(Debug, Default)]
struct State {
    /// Requests not yet handed to the socket.
    out: Vec<u8>,
    /// One entry per request whose reply has not arrived, in send order.
    inflight: VecDeque<Inflight>,
    /// How many entries at the back of `inflight` are still in `out` (never written); when the
    /// connection has failed, also those of a batch taken for writing none of which left.
    unsent: usize,
}

/// A backend node as seen by one worker.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) addr: NodeAddr,
    pub(crate) flavor: Flavor,
    state: RefCell<State>,
    /// Wakes the connection loop: requests were queued, the connection retired, or the
    /// watchdog found the node silent.
    wake: Signal,
    /// Reads on the current connection, counted for the watchdog (a counter, not a clock
    /// reading, so the hot path never asks the time).
    reads: Cell<u64>,
    /// The watchdog found replies overdue: the connection loop gives the connection up.
    stalled: Cell<bool>,
    /// Set when a connection fails; reads avoid a replica until then.
    down_until: Cell<Option<Instant>>,
    /// One client's own connection (WATCH … EXEC): replies skip redirect handling, nothing is
    /// retried elsewhere, and it never reconnects, because a new connection would silently
    /// have lost the client's WATCH.
    pinned: bool,
    /// A pinned connection that is done: it closes once nothing is in flight.
    retired: Cell<bool>,
    /// A pinned connection that ended; requests given to it now would never be answered.
    closed: Cell<bool>,
    /// The cluster behind the endpoint this node belongs to, when the routing table does not
    /// list it yet (a redirect's target): whose credentials it gets.
    pub(crate) cluster: Cell<usize>,
}

impl Backend {
    pub(crate) fn new(addr: NodeAddr, flavor: Flavor) -> Self {
        Self {
            addr,
            flavor,
            state: RefCell::new(State::default()),
            wake: Signal::default(),
            reads: Cell::new(0),
            stalled: Cell::new(false),
            down_until: Cell::new(None),
            pinned: false,
            retired: Cell::new(false),
            closed: Cell::new(false),
            cluster: Cell::new(0),
        }
    }

    /// A connection for one client only (see `pinned`).
    pub(crate) fn new_pinned(addr: NodeAddr, flavor: Flavor) -> Self {
        Self {
            pinned: true,
            ..Self::new(addr, flavor)
        }
    }

    /// Closes a pinned connection once its requests in flight are answered.
    pub(crate) fn retire(&self) {
        self.retired.set(true);
        self.wake.notify();
    }

    /// Whether a pinned connection has ended (its WATCH, if any, is gone).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Nothing queued, nothing awaiting a reply.
    fn idle(&self) -> bool {
        let st = self.state.borrow();
        st.out.is_empty() && st.inflight.is_empty()
    }

    /// Whether the last connection attempt failed recently.
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.down_until.get().is_some_and(|until| now < until)
    }

    /// Queues `request` for ticket `id`, preceded by `ASKING` when following an ASK redirect.
    /// `request` may hold several commands (a transaction: `MULTI … EXEC`); the replies of all
    /// but the last (`discard` of them) are dropped. Appending it in one piece keeps it
    /// contiguous on the shared connection: nothing of another client can land in between.
    pub(crate) fn enqueue(&self, request: &[u8], id: usize, asking: bool, discard: u16) {
        let mut st = self.state.borrow_mut();
        if asking {
            st.out.extend_from_slice(ASKING);
            st.inflight.push_back(Inflight::Discard);
            st.unsent += 1;
        }
        st.out.extend_from_slice(request);
        for _ in 0..discard {
            st.inflight.push_back(Inflight::Discard);
        }
        st.inflight.push_back(Inflight::Ticket(id));
        st.unsent += 1 + usize::from(discard);
        drop(st);
        self.wake.notify();
    }

    /// Hands every request in flight back to the worker after the connection failed: those
    /// never written may be retried; those written may have run, so they fail.
    fn fail_all(&self, worker: &Rc<Worker>, why: &str) {
        self.down_until.set(Some(Instant::now() + DOWN_FOR));
        let (entries, unsent) = {
            let mut st = self.state.borrow_mut();
            st.out.clear();
            let unsent = std::mem::take(&mut st.unsent);
            (st.inflight.drain(..).collect::<Vec<_>>(), unsent)
        };
        let written = entries.len() - unsent;
        for (i, entry) in entries.into_iter().enumerate() {
            if let Inflight::Ticket(id) = entry {
                if self.pinned {
                    let msg = format!(
                        "-ERR cinnabar: the connection to {} ended ({why}); the transaction may or may not have run\r\n",
                        self.addr
                    );
                    worker.tickets.borrow_mut().complete(id, msg.as_bytes());
                } else {
                    worker.on_backend_failure(id, i >= written, &self.addr, why);
                }
            }
        }
    }
}

/// The connection loop of one backend: connect when there is work, serve until the
/// connection breaks, hand back what was in flight, repeat.
pub(crate) async fn run(backend: Rc<Backend>, worker: Rc<Worker>) {
    let mut read_buf = Vec::with_capacity(BUFFER);
    let mut write_buf = Vec::with_capacity(BUFFER);
    let mut scanner = ReplyScanner::new(Limits::default());
    loop {
        while backend.state.borrow().out.is_empty() {
            if backend.retired.get() {
                backend.closed.set(true);
                return;
            }
            std::future::poll_fn(|cx| backend.wake.poll(cx, true)).await;
        }
        let addr = (backend.addr.host.as_str(), backend.addr.port);
        let connected =
            tokio::time::timeout(worker.config.connect_timeout, TcpStream::connect(addr)).await;
        let failed = match connected {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err("connect timed out".to_owned()),
        };
        let stream = match failed {
            Ok(stream) => {
                worker.stats.backend_connects.inc();
                stream
            }
            Err(why) => {
                worker.stats.backend_connect_failures.inc();
                backend.fail_all(&worker, &why);
                if backend.pinned {
                    backend.closed.set(true);
                    return;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        {
            // Built per connection: after a switch, the backend served has other credentials.
            let prelude = worker.prelude_in(&backend.addr, backend.flavor, backend.cluster.get());
            // The prelude goes first, ahead of requests queued while we were connecting.
            write_buf.clear();
            write_buf.extend_from_slice(&prelude.0);
            let mut st = backend.state.borrow_mut();
            for _ in 0..prelude.1 {
                st.inflight.push_front(Inflight::Prelude);
            }
        }
        let why = serve(
            &backend,
            &worker,
            stream,
            &mut read_buf,
            &mut write_buf,
            &mut scanner,
        )
        .await;
        worker.stats.backend_disconnects.inc();
        if backend.pinned {
            backend.closed.set(true);
            backend.fail_all(&worker, &why);
            return;
        }
        tracing::warn!(node = %backend.addr, reason = %why, "backend connection lost");
        read_buf.clear();
        write_buf.clear();
        scanner.reset();
        backend.fail_all(&worker, &why);
    }
}

/// Moves bytes both ways until the connection fails; returns why.
async fn serve(
    backend: &Rc<Backend>,
    worker: &Rc<Worker>,
    mut stream: TcpStream,
    read_buf: &mut Vec<u8>,
    write_buf: &mut Vec<u8>,
    scanner: &mut ReplyScanner,
) -> String {
    let (mut rd, mut wr) = stream.split();
    let mut written = 0;
    let read_timeout = worker.config.backend_read_timeout;
    backend.stalled.set(false);
    let _watchdog = Watchdog(tokio::task::spawn_local(watch_replies(
        Rc::clone(backend),
        read_timeout,
    )));
    // Whether the requests now in `out` already waited one turn of the worker's loop.
    let mut waited_a_turn = false;
    // Requests taken from `out` into `write_buf` (after the buffer was last emptied): until a
    // byte of them reaches the socket, none of them was sent.
    let mut batch = 0;
    let why: String = 'serve: loop {
        if backend.retired.get() && written == write_buf.len() && backend.idle() {
            break 'serve "closed after its last request".into();
        }
        if written == write_buf.len() {
            write_buf.clear();
            written = 0;
            batch = 0;
            let queued = !backend.state.borrow().out.is_empty();
            // With one client on this worker there is nobody to wait for: the turn would only
            // add an I/O poll to its every request (measured +12 us p50, single client).
            let others =
                worker.stats.clients_accepted.get() > worker.stats.clients_closed.get() + 1;
            if queued && !waited_a_turn && others {
                // Let every client whose bytes are ready by the worker's next look at its
                // sockets add its requests first, so they leave in this one write. Without
                // it, clients arriving one at a time (as 50 redis-benchmark clients do) cost
                // a node a wake-up, a read, a reply write and an AOF write each: measured 0.94
                // backend writes per 10-key MSET, against about 0.2 with it. `yield_now` runs
                // this task again right after the runtime's next non-blocking poll for I/O,
                // so a lone request waits for nothing but that one poll.
                waited_a_turn = true;
                tokio::task::yield_now().await;
                continue;
            }
            if queued {
                waited_a_turn = false;
                let mut st = backend.state.borrow_mut();
                std::mem::swap(&mut st.out, write_buf);
                batch = std::mem::take(&mut st.unsent);
            }
        }
        // Biased, replies first: no random start per turn (a thread-local generator read on
        // every poll), and replies, which are only ever owed for requests already written,
        // cannot starve the writes for long.
        tokio::select! {
            biased;
            read = rd.read_buf(read_buf) => match read {
                Ok(0) => break 'serve "closed by the node".into(),
                Ok(_) => {
                    backend.reads.set(backend.reads.get().wrapping_add(1));
                    if let Err(why) = deliver(backend, worker, read_buf, scanner) {
                        break 'serve why;
                    }
                }
                Err(e) => break 'serve format!("read failed: {e}"),
            },
            w = wr.write(&write_buf[written..]), if written < write_buf.len() => match w {
                Ok(0) => break 'serve "closed by the node".into(),
                Ok(n) => written += n,
                Err(e) => break 'serve format!("write failed: {e}"),
            },
            // Requests to write (taken only between writes), or the watchdog's verdict.
            () = std::future::poll_fn(|cx| {
                if backend.stalled.get() {
                    return Poll::Ready(());
                }
                backend.wake.poll(cx, written == write_buf.len())
            }) => {
                if backend.stalled.get() {
                    break 'serve format!("no reply within {} ms", read_timeout.as_millis());
                }
            }
        }
    };
    // The connection failed (replies are read first, so a closed connection is often noticed
    // before a batch just taken is written): a batch none of whose bytes left was never sent,
    // and its requests may be retried like those still queued. Once a byte left, all of the
    // batch counts as sent, since some of it may have run.
    if written == 0 {
        backend.state.borrow_mut().unsent += batch;
    }
    why
}

/// Ends a connection's watchdog with the connection.
struct Watchdog(tokio::task::JoinHandle<()>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches one connection: when replies are awaited and no read came for `read_timeout`, marks
/// the backend stalled and wakes its loop. A task of its own, ticking eight times per timeout,
/// so the connection loop polls no timer and reads no clock per request: it only counts its
/// reads. Silence is timed from the first tick that sees it, so a stall is declared after
/// `read_timeout` at the earliest (never early) and a quarter more at the latest.
async fn watch_replies(backend: Rc<Backend>, read_timeout: Duration) {
    let period = (read_timeout / 8).max(Duration::from_millis(25));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = backend.reads.get();
    let mut silent_since: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let awaiting = {
            let st = backend.state.borrow();
            st.inflight.len() > st.unsent
        };
        let reads = backend.reads.get();
        if !awaiting || reads != seen {
            seen = reads;
            silent_since = None;
            continue;
        }
        let since = *silent_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= read_timeout {
            backend.stalled.set(true);
            backend.wake.notify();
            return;
        }
    }
}

/// A wake-up for the one task of this thread that waits on it (a backend's connection loop):
/// `notify` wakes it, or makes its next wait return at once. What `tokio::sync::Notify` does
/// for one waiter, without its lock and waiter list: it never leaves the worker's thread, and
/// `enqueue` notifies once per request.
#[derive(Debug, Default)]
struct Signal {
    notified: Cell<bool>,
    /// The waiting task's waker, kept between waits (cloned again only if the task changes).
    waker: RefCell<Option<Waker>>,
    /// The task is parked on this signal: `notify` must wake it.
    waiting: Cell<bool>,
}

impl Signal {
    fn notify(&self) {
        self.notified.set(true);
        if self.waiting.replace(false)
            && let Some(waker) = self.waker.borrow().as_ref()
        {
            waker.wake_by_ref();
        }
    }

    /// Ready when notified and `take` (the notification is consumed); otherwise registers the
    /// task, which a later `notify` wakes.
    fn poll(&self, cx: &mut Context<'_>, take: bool) -> Poll<()> {
        if take && self.notified.replace(false) {
            self.waiting.set(false);
            return Poll::Ready(());
        }
        let mut waker = self.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        self.waiting.set(true);
        Poll::Pending
    }
}

/// Hands every complete reply in `buf` to its ticket; keeps a partial reply for later.
fn deliver(
    backend: &Rc<Backend>,
    worker: &Rc<Worker>,
    buf: &mut Vec<u8>,
    scanner: &mut ReplyScanner,
) -> Result<(), String> {
    let mut pos = 0;
    while let Some(len) = scanner
        .scan(&buf[pos..])
        .map_err(|e| format!("bad reply: {e}"))?
    {
        let reply = &buf[pos..pos + len];
        pos += len;
        // RESP3 push data (only CLIENT TRACKING or pub/sub produce it, and neither runs on
        // a shared connection) is not the reply to anything.
        if reply.first() == Some(&b'>') {
            continue;
        }
        let entry = backend.state.borrow_mut().inflight.pop_front();
        match entry {
            Some(Inflight::Ticket(id)) if backend.pinned => {
                worker.tickets.borrow_mut().complete(id, reply);
            }
            Some(Inflight::Ticket(id)) => worker.on_reply(id, reply, &backend.addr),
            Some(Inflight::Discard) => {}
            Some(Inflight::Prelude) => {
                if reply.first() == Some(&b'-') {
                    return Err(set_up_refused(reply));
                }
                backend.down_until.set(None);
            }
            None => return Err("a reply arrived that no request asked for".into()),
        }
    }
    buf.drain(..pos);
    if buf.is_empty() && buf.capacity() > RETAINED {
        *buf = Vec::with_capacity(BUFFER);
    }
    Ok(())
}

/// Why a node refused a prelude command: its error line, without `-` and CRLF (an AUTH
/// refusal never repeats the password).
fn set_up_refused(reply: &[u8]) -> String {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    format!(
        "the node refused the connection set-up: {}",
        String::from_utf8_lossy(line.get(1..).unwrap_or_default())
    )
}

/// Opens a connection of its own to `addr` and runs the `prelude` on it (as from
/// [`Flavor::prelude`]); for blocking commands, pub/sub, WATCH and WAIT, which must not share a
/// connection with other clients.
///
/// # Errors
/// A sentence saying what failed: connecting, the prelude (the node's own reason), I/O.
pub(crate) async fn connect_private(
    addr: &NodeAddr,
    prelude: &(Vec<u8>, usize),
    connect_timeout: Duration,
) -> Result<TcpStream, String> {
    let connect = TcpStream::connect((addr.host.as_str(), addr.port));
    let mut stream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    if prelude.1 > 0 {
        stream
            .write_all(&prelude.0)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut scanner = ReplyScanner::new(Limits::default());
        let mut answered = 0;
        let mut pos = 0;
        while answered < prelude.1 {
            let more = tokio::time::timeout(connect_timeout, stream.read_buf(&mut buf))
                .await
                .map_err(|_| "no answer to the connection set-up".to_owned())?
                .map_err(|e| format!("read failed: {e}"))?;
            if more == 0 {
                return Err("closed by the node".into());
            }
            while let Some(len) = scanner
                .scan(&buf[pos..])
                .map_err(|e| format!("bad reply: {e}"))?
            {
                let reply = &buf[pos..pos + len];
                if reply.first() == Some(&b'-') {
                    return Err(set_up_refused(reply));
                }
                pos += len;
                answered += 1;
            }
        }
    }
    Ok(stream)
}

/// Reads exactly one reply from `stream`.
///
/// # Errors
/// A sentence saying what failed: reading, the node closing, a malformed reply.
pub(crate) async fn read_reply(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut reply = Vec::with_capacity(256);
    loop {
        if stream
            .read_buf(&mut reply)
            .await
            .map_err(|e| format!("read failed: {e}"))?
            == 0
        {
            return Err("closed by the node".into());
        }
        if let Some(len) = scanner
            .scan(&reply)
            .map_err(|e| format!("bad reply: {e}"))?
        {
            reply.truncate(len);
            return Ok(reply);
        }
    }
}

/// Runs `count` pipelined requests (`requests`, back to back) on a connection of its own and
/// returns their replies in order. The connection is closed afterwards.
///
/// # Errors
/// A sentence saying what failed: connecting, writing, reading, or a malformed reply.
pub(crate) async fn private_requests(
    addr: &NodeAddr,
    prelude: &(Vec<u8>, usize),
    requests: &[u8],
    count: usize,
    connect_timeout: Duration,
) -> Result<Vec<Vec<u8>>, String> {
    let mut stream = connect_private(addr, prelude, connect_timeout).await?;
    stream
        .write_all(requests)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut scanner = ReplyScanner::new(Limits::default());
    let (mut buf, mut pos, mut replies) = (Vec::with_capacity(256), 0, Vec::with_capacity(count));
    while replies.len() < count {
        while let Some(len) = scanner
            .scan(&buf[pos..])
            .map_err(|e| format!("bad reply: {e}"))?
        {
            replies.push(buf[pos..pos + len].to_vec());
            pos += len;
        }
        if replies.len() == count {
            break;
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?
            == 0
        {
            return Err("closed by the node".into());
        }
    }
    Ok(replies)
}

/// Runs one request on a connection of its own and returns its reply (for blocking commands,
/// which must not hold up the shared connection). The connection is closed afterwards.
///
/// # Errors
/// A sentence saying what failed: connecting, writing, reading, or a malformed reply.
pub(crate) async fn private_request(
    addr: &NodeAddr,
    prelude: &(Vec<u8>, usize),
    request: &[u8],
    connect_timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut stream = connect_private(addr, prelude, connect_timeout).await?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    read_reply(&mut stream).await
}
