//! The client loop: read a client's bytes, parse and hand each request to `handle`, collect
//! finished replies in request order, write them back, and learn how deep this client may
//! pipeline. Must never block on one client's backlog: back-pressure stops reading instead.

use super::fanout::merge_into;
use super::scan::{end_scan_run, rewrite_scan_reply};
use super::{BUFFER, Pending, RETAINED, RequestArgs, Session};
use crate::pubsub;
use crate::stats::Category;
use crate::ticket::ClientSocket;
use crate::worker::Worker;
use cinnabar_resp::{Parsed, Request};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one client over `rd` and `wr` until it disconnects, sends garbage, or says QUIT.
/// `client`: the plain TCP socket under them, which backends may write replies to (see
/// `Ticket::direct`); `None` over TLS, whose records only the session's stream can write.
///
/// The whole loop is this one function, not a method the serving function awaits: each async
/// function awaited inside another keeps its own state and copies of its arguments in the
/// session's future, and with many clients every such line is a cache miss per request.
pub(super) async fn serve_halves<R, W>(
    worker: Rc<Worker>,
    peer: Option<std::net::SocketAddr>,
    client: Option<Rc<ClientSocket>>,
    mut rd: R,
    mut wr: W,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut session = Session::new(worker, peer, client);
    session.worker.stats.clients_accepted.inc();
    let mut input = Vec::with_capacity(BUFFER);
    // Woken by a drain even while idle; registered once, not per request.
    {
        let (id, worker) = (session.id, Rc::clone(&session.worker));
        poll_fn(|cx| {
            worker.register_sleeper(id, cx.waker().clone());
            Poll::Ready(())
        })
        .await;
    }
    // One timer per client, moved only when it fires: reads just note the time, so
    // requests never touch the timer wheel. Boxed and only when configured: an idle
    // connection costs a few hundred bytes, and a timer inline in every session's future
    // would be a good part of them.
    let mut idle = session.worker.config.idle_timeout.map(|t| {
        Box::new(Idle {
            sleep: Box::pin(tokio::time::sleep(t)),
            timeout: t,
            last_read: Instant::now(),
        })
    });
    let ended: std::io::Result<()> = loop {
        // Draining: answer what was accepted, read nothing more, then close.
        if session.worker.draining() {
            session.closing = true;
        }
        // Woken by a reply, not by input: nothing to parse (and no parser call to make).
        let limited = !input.is_empty() && session.parse_all(&mut input);
        session.collect_ready();
        if !session.out.is_empty() {
            if let Err(e) = wr.write_all(&session.out).await {
                break Err(e);
            }
            session.out.clear();
            if session.out.capacity() > RETAINED {
                session.out = Vec::with_capacity(BUFFER);
            }
        }
        if input.is_empty() && input.capacity() > RETAINED {
            input = Vec::with_capacity(BUFFER);
        }
        if session.closing && session.pending.is_empty() {
            break Ok(());
        }
        // Subscribed mode starts once every earlier reply went out, keeping replies in order.
        if session.subscribe.is_some() && session.pending.is_empty() {
            // Boxed: inline, the relay's state would make every session's future 1.5 KiB
            // larger (see `serve_halves`), for the few connections that subscribe.
            if let Err(e) = Box::pin(session.relay(&mut rd, &mut wr, &mut input)).await {
                break Err(e);
            }
            if session.closing {
                break Ok(());
            }
            continue;
        }
        let max_pending = session.worker.config.max_pending_per_client;
        // Parsing stopped at the limit with requests still buffered, and the replies just
        // collected made room: parse them now. Waiting for the socket could wait forever,
        // since the client may be waiting for exactly those replies.
        if limited && session.may_parse(max_pending) {
            continue;
        }
        // A request waiting for earlier replies (a blocking command) can go now.
        if session.awaiting_turn && session.pending.is_empty() && session.may_parse(max_pending) {
            continue;
        }
        // Counted in tickets, not requests: a request split per key holds one per key. And
        // requests that cannot be handled yet (window, limit, a blocking command) may not
        // pile up in the input beyond `RETAINED` bytes.
        let can_read = !session.closing
            && session.subscribe.is_none()
            && session.ids.len() < max_pending
            && (input.len() < RETAINED || session.may_parse(max_pending))
            && (session.pending.len() < 2
                || session.held_reply_bytes() < session.worker.config.max_reply_bytes_per_client);
        // Requests are held by a switch (see `crate::switch`): nothing is parsed until the
        // gate opens, and the input keeps them.
        let held = session.worker.holding() && !input.is_empty();
        if held && session.held_since.is_none() {
            session.held_since = Some(Instant::now());
        }
        let room = input.capacity() - input.len();
        let armed = if can_read && !held && input.is_empty() && session.topology_wait.is_none() {
            session.arm_direct_reply()
        } else {
            None
        };
        // One poll function for every reason to wake, rather than `select!` over a future
        // per reason: with many clients each line of a session's state costs a cache miss
        // per request, and the select's futures and its bookkeeping were two more lines.
        let woke = {
            // What the poll function needs, by value: a closure capturing by reference would
            // keep a pointer per variable, and bytes of state are cache lines here.
            let (session, rd, input, idle) = (&mut session, &mut rd, &mut input, &mut idle);
            poll_fn(move |cx| session.poll_wake(cx, rd, input, idle.as_deref_mut(), can_read, held))
                .await
        };
        match woke {
            Wake::Reply | Wake::Released => {}
            Wake::TopologyFresh => {
                session.topology_wait = None;
                session.topology_waited = true;
            }
            Wake::Read(read) => {
                let read = match read {
                    Ok(read) => read,
                    Err(e) => break Err(e),
                };
                if read == 0 {
                    break Ok(());
                }
                if let Some(more) = input_growth(input.capacity(), room, read) {
                    input.reserve(more);
                }
                if let Some(idle) = idle.as_mut() {
                    idle.last_read = Instant::now();
                }
            }
            Wake::Drain => session.closing = true,
            Wake::Idle => {
                if let Some(idle) = idle.as_mut() {
                    let quiet = idle.last_read.elapsed();
                    if quiet >= idle.timeout && session.pending.is_empty() {
                        break Ok(());
                    }
                    let rest = idle
                        .timeout
                        .saturating_sub(quiet)
                        .max(std::time::Duration::from_millis(10));
                    idle.sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + rest);
                }
            }
        }
        // Taken back; if it was used, the reply went out (or began to): collect it now, so
        // the requests parsed next do not find it still pending.
        if let Some(id) = armed
            && session
                .worker
                .tickets
                .borrow_mut()
                .get(id)
                .direct
                .take()
                .is_none()
        {
            session.collect_ready();
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended");
    }
    session.abandon();
    session.worker.stats.clients_closed.inc();
}

impl Session {
    /// Why the session woke, in the order it looks: its oldest request's replies are all
    /// in, a fan-out's wait for fresh routes ended, its client sent something (or closed, or
    /// failed), a switch released its held requests, the proxy drains, the idle timer fired.
    /// Like the drain, the release registers nothing: the worker wakes every session when the
    /// gate opens (see `register_sleeper`).
    fn poll_wake<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        rd: &mut R,
        input: &mut Vec<u8>,
        idle: Option<&mut Idle>,
        can_read: bool,
        held: bool,
    ) -> Poll<Wake>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        if !self.pending.is_empty() && self.poll_head_ready(cx).is_ready() {
            return Poll::Ready(Wake::Reply);
        }
        if let Some(wait) = self.topology_wait.as_mut()
            && wait.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::TopologyFresh);
        }
        if can_read {
            // A read future holds only its two references: made afresh at each poll, it keeps
            // nothing between them (and a pending read has taken no bytes).
            let read = std::pin::pin!(rd.read_buf(input));
            if let Poll::Ready(read) = read.poll(cx) {
                return Poll::Ready(Wake::Read(read));
            }
        }
        if held && !self.worker.holding() {
            return Poll::Ready(Wake::Released);
        }
        if !self.closing && self.worker.draining() {
            return Poll::Ready(Wake::Drain);
        }
        if let Some(idle) = idle
            && idle.sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Idle);
        }
        Poll::Pending
    }

    /// Enters subscribed mode: the relay takes the subscribing request as the first of the
    /// client's input, and runs until the client leaves subscribed mode (or the connection).
    async fn relay<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        input: &mut Vec<u8>,
    ) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let Some(first) = self.subscribe.take() else {
            return Ok(());
        };
        input.splice(0..0, first.into_vec());
        let routes = self.worker.routes();
        let backends = pubsub::Backends {
            routes: &routes,
            resp3: self.resp3,
            flavor: self.flavor(),
            router: &self.worker.router,
            gate: &self.worker.gate,
            connect_timeout: self.worker.config.connect_timeout,
        };
        let parser = &self.worker.parser;
        // The relay parses with a request of its own: it awaits between requests, and the
        // worker's is shared. The subscribing request was parsed whole, so nothing partial is
        // left behind (`parked_parse` is false).
        let mut request = Request::new();
        let gauge = &self.worker.gate.subscribed;
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ended = pubsub::relay(rd, wr, input, &mut request, parser, &backends).await;
        gauge.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match ended? {
            pubsub::Ended::Closed => self.closing = true,
            pubsub::Ended::Reset => {
                self.cold.name.clear();
                self.resp3 = false;
            }
            pubsub::Ended::Unsubscribed => {}
        }
        Ok(())
    }

    /// Lets the reply of this client's one request in flight be written straight to its socket
    /// by whoever completes the ticket (see `Tickets::complete`), when the session is about to
    /// wait with nothing else to do once that reply is in: no other request pending, no input
    /// left to parse, reading allowed (not closing, subscribing, or over a limit), no blocking
    /// command or request waiting its turn, nothing to drop (`CLIENT REPLY`) or audit. Then an
    /// unpipelined request costs its session one wake-up (its input), not two, and its reply
    /// one copy fewer; the session counts the request when it next wakes. The caller takes the
    /// permission back when the session wakes (or `abandon` does), so a reply never goes
    /// straight out while the session might write, or once the ticket is no longer its head.
    fn arm_direct_reply(&self) -> Option<usize> {
        let client = self.client.as_ref()?;
        if self.pending.len() != 1 || self.awaiting_turn || self.blocked {
            return None;
        }
        let queued = self.pending.front()?;
        if !matches!(queued.reply, Pending::One) || queued.silent || queued.audited {
            return None;
        }
        let id = *self.ids.front()?;
        let mut tickets = self.worker.tickets.borrow_mut();
        let ticket = tickets.get(id);
        if ticket.done {
            return None;
        }
        ticket.direct = Some(Rc::clone(client));
        Some(id)
    }

    /// Parses and handles every complete request in `input` (up to the pending limit), then
    /// drops the consumed bytes. True when the limit stopped it with bytes left in `input`.
    ///
    /// Parses with the worker's shared `Request` (hot in the cache whichever client sends);
    /// a request cut off by the end of the input keeps its partial parse in this session,
    /// swapped with the parked one, and resumes it next time without re-reading its bytes.
    pub(super) fn parse_all(&mut self, input: &mut Vec<u8>) -> bool {
        let mut request = std::mem::take(&mut *self.worker.request.borrow_mut());
        let resumed = std::mem::take(&mut self.parked_parse);
        if resumed {
            std::mem::swap(&mut request, &mut self.cold.parked);
        }
        let (limited, incomplete) = self.parse_with(input, &mut request);
        // Nothing parsed (a switch holds requests, the connection closes, a limit): a partial
        // parse taken out must go back, or the next client's parse would resume it.
        if incomplete.unwrap_or(resumed) {
            std::mem::swap(&mut request, &mut self.cold.parked);
            self.parked_parse = true;
        }
        *self.worker.request.borrow_mut() = request;
        limited
    }

    /// `parse_all` with the request to parse into; also says whether `input` ended inside a
    /// request (its partial parse is then in `request`), or `None` if nothing was parsed.
    fn parse_with(&mut self, input: &mut Vec<u8>, request: &mut Request) -> (bool, Option<bool>) {
        let max_pending = self.worker.config.max_pending_per_client;
        let mut start = 0;
        let mut incomplete = None;
        if !input.is_empty() {
            self.batch_started = match self.held_since {
                Some(since) if !self.worker.holding() => since,
                _ => Instant::now(),
            };
            if !self.worker.holding() {
                self.held_since = None;
            }
        }
        while self.may_parse(max_pending) {
            let buf = &input[start..];
            incomplete = Some(false);
            match self.worker.parser.parse(buf, request) {
                Ok(Parsed::Complete { consumed }) => {
                    let reply_mode = self.reply_mode;
                    self.silent = self.reply_mode.silences_next();
                    self.handle(&RequestArgs {
                        request,
                        buf: &buf[..consumed],
                    });
                    if std::mem::take(&mut self.deferred) {
                        // Handled again later, as the request it is now.
                        self.reply_mode = reply_mode;
                        // Left in the input, to be handled once earlier replies are in.
                        self.awaiting_turn = true;
                        break;
                    }
                    self.awaiting_turn = false;
                    start += consumed;
                }
                Ok(Parsed::Skipped { consumed }) => start += consumed,
                Ok(Parsed::Incomplete) => {
                    // Only a request actually begun needs its parse kept.
                    incomplete = Some(!buf.is_empty());
                    break;
                }
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
                    return (false, Some(false));
                }
            }
        }
        input.drain(..start);
        // Stopped with requests left (the pending limit, or a blocking command in the way),
        // rather than on an incomplete one.
        let limited = !self.may_parse(max_pending) && !input.is_empty();
        (limited, incomplete)
    }

    /// Whether the next request may be handled now: not closing or subscribed, under the
    /// pending limit, and no blocking command (BLPOP, WAIT, …) waiting for its reply. Like a
    /// Redis connection, a client blocked by a command has its later commands wait for it:
    /// sent on at once, they would run before it on another connection.
    pub(super) fn may_parse(&self, max_pending: usize) -> bool {
        !self.closing
            && self.subscribe.is_none()
            && self.ids.len() < max_pending.min(self.window)
            && (!self.blocked || self.pending.is_empty())
            && self.topology_wait.is_none()
            && !self.worker.holding()
    }

    /// Moves every finished reply at the head of the queue to the output buffer.
    pub(super) fn collect_ready(&mut self) {
        let mut tickets = self.worker.tickets.borrow_mut();
        // One clock reading per call, and only if a reply was not stamped when it went out.
        let mut clock = None;
        let mut last = None;
        let mut timed: Option<(Instant, Instant, std::time::Duration, u64)> = None;
        let budget = self.worker.config.max_reply_bytes_per_client;
        while let Some(&queued) = self.pending.front() {
            let head = queued.reply;
            let parts = head.parts();
            if !self.ids.iter().take(parts).all(|id| tickets.peek(*id).done) {
                break;
            }
            let written_from = self.out.len();
            // What of the reply went straight to the client, whether it was an error, and when:
            // only ever the reply of the one ticket armed, collected at once.
            let mut direct = (0, false, None);
            match head {
                Pending::One => {
                    if let Some(id) = self.ids.front() {
                        self.out.extend_from_slice(&tickets.peek(*id).reply);
                    }
                    if let Some(client) = &self.client
                        && client.written.get() > 0
                    {
                        direct = (
                            client.written.replace(0),
                            client.error.get(),
                            client.finished.get(),
                        );
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
                Pending::Scan(run) => {
                    if let Some(id) = self.ids.front() {
                        let reply = &tickets.peek(*id).reply;
                        rewrite_scan_reply(&mut self.out, reply, run, &self.worker.router);
                    }
                }
                Pending::ScanCheck(run) => {
                    if let Some(id) = self.ids.front() {
                        let reply = &tickets.peek(*id).reply;
                        end_scan_run(&mut self.out, reply, run, &self.worker);
                    }
                }
            }
            for _ in 0..parts {
                if let Some(id) = self.ids.pop_front() {
                    tickets.release(id);
                }
            }
            self.pending.pop_front();
            let (written, direct_error, finished) = direct;
            // A reply that went straight out finished then, not now.
            let now = finished.unwrap_or_else(|| *clock.get_or_insert_with(Instant::now));
            last = Some(now);
            let error = if written > 0 {
                self.worker.stats.direct_replies.inc();
                direct_error
            } else {
                self.out.get(written_from) == Some(&b'-')
            };
            let size = written + self.out.len() - written_from;
            // A reply the size of the estimate leaves it and the window as they are: no
            // division for the common run of same-sized replies.
            if size != self.reply_average || size == 0 {
                (self.reply_average, self.window) =
                    learn_reply_size(self.reply_average, size, budget);
            }
            let stats = &self.worker.stats;
            stats.request(queued.category, error);
            self.user_counts[0] += 1;
            self.user_counts[1] += u64::from(error);
            // The requests of one read that are answered by one wake-up share both instants:
            // one subtraction for a whole pipeline.
            let (took, us) = match timed {
                Some((started, end, took, us)) if started == queued.started && end == now => {
                    (took, us)
                }
                _ => {
                    let took = now.duration_since(queued.started);
                    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    timed = Some((queued.started, now, took, us));
                    (took, us)
                }
            };
            stats.latency.observe_us(us);
            stats.commands.call(queued.command_index, us, error);
            if took >= self.worker.config.slowlog_slower_than
                && let Some(command) = queued.command
            {
                self.worker.all_stats.slowlog.record(crate::slowlog::Entry {
                    took,
                    command: command.name(),
                    client: self.cold.peer,
                    name: String::from_utf8_lossy(&self.cold.name).into_owned(),
                });
            }
            if queued.audited
                && let Some(record) = self.cold.audits.pop_front()
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
            if queued.silent {
                self.out.truncate(written_from);
            }
        }
        drop(tickets);
        if self.pending.is_empty() {
            self.set_blocked(false);
        }
        if let Some(now) = last
            && now >= self.user_counts_due
        {
            self.flush_user_counts(now);
        }
    }

    /// Adds this connection's per-user counts to the worker's.
    pub(super) fn flush_user_counts(&mut self, now: Instant) {
        let [requests, errors] = std::mem::take(&mut self.user_counts);
        self.user_counts_due = now + USER_COUNTS_EVERY;
        if requests > 0 {
            let user = self
                .principal
                .as_ref()
                .map_or("(not logged in)", |p| p.user());
            self.worker.stats.add_user(user, requests, errors);
        }
    }

    /// Reply bytes received for this client and not yet written to it.
    pub(super) fn held_reply_bytes(&self) -> usize {
        let tickets = self.worker.tickets.borrow();
        self.ids
            .iter()
            .map(|id| tickets.peek(*id).reply.len())
            .sum()
    }

    /// Ready when the oldest pending request has all its replies; otherwise the first ticket
    /// still waiting wakes this task.
    pub(super) fn poll_head_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let parts = self.pending.front().map_or(0, |p| p.reply.parts());
        let mut tickets = self.worker.tickets.borrow_mut();
        for id in self.ids.iter().take(parts) {
            let ticket = tickets.get(*id);
            if !ticket.done {
                ticket.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// The client is gone: finished tickets are released now, the others when their replies
    /// arrive.
    pub(super) fn abandon(&mut self) {
        // A reply that went straight to the client is counted like any other.
        self.collect_ready();
        self.out.clear();
        // A cancelled task will never complete its ticket: release it here.
        let mut cancelled = Vec::new();
        for (task, id) in self.cold.blocking.drain(..) {
            if !task.is_finished() {
                task.abort();
                cancelled.push(id);
            }
        }
        self.unwatch();
        self.set_blocked(false);
        self.worker.forget_sleeper(self.id);
        self.flush_user_counts(Instant::now());
        if let Some(user) = self.cold.user_place.take() {
            self.worker.all_stats.give_user_place(&user);
        }
        let mut tickets = self.worker.tickets.borrow_mut();
        for id in self.ids.drain() {
            // Nothing goes to the socket once the session is gone.
            tickets.get(id).direct = None;
            if tickets.get(id).done || cancelled.contains(&id) {
                tickets.release(id);
            } else {
                tickets.get(id).abandoned = true;
            }
        }
    }
}

/// The idle timeout of a client connection, when one is configured.
pub(super) struct Idle {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
    last_read: Instant,
}

/// What `poll_wake` found.
enum Wake {
    Reply,
    TopologyFresh,
    /// The result of a read into the input: bytes read, 0 at end of stream.
    Read(std::io::Result<usize>),
    Released,
    Drain,
    Idle,
}

/// A client's input buffer grows, up to this, while its reads keep filling it.
pub(super) const INPUT_GROWS_TO: usize = 16 * 1024;

/// How much to add to an input buffer of `capacity` after a read of `read` bytes into `room`
/// free bytes: double it when the read filled the room (the socket likely held more), up to
/// `INPUT_GROWS_TO`. Without this the buffer stays at its first kilobyte (parsing leaves room
/// after every read, so it is never full when read into), and a pipeline of 16 SETs of 100
/// bytes took three reads, three parse passes and up to three writes per backend. Idle
/// connections never fill it, so they keep the small buffer.
pub(super) fn input_growth(capacity: usize, room: usize, read: usize) -> Option<usize> {
    (read == room && capacity < INPUT_GROWS_TO).then_some(capacity)
}

/// How often a connection adds its per-user counts to its worker's.
pub(super) const USER_COUNTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Requests a new client may have in flight before the size of its replies is known.
pub(super) const FIRST_WINDOW: usize = 16;

/// The new estimate of a client's reply size, and how many requests it may have in flight:
/// the budget of reply bytes divided by that estimate, so a client fetching 1 MiB values
/// cannot have 1 GiB of replies on the way, while one fetching small values keeps a deep
/// pipeline. A new client starts at `FIRST_WINDOW`, like TCP's slow start.
///
/// A reply exists up to three times on its way (the backend's read buffer, its ticket, the
/// client's output buffer), so requests in flight get a quarter of the budget: memory held for
/// one client stays within `max_reply_bytes_per_client` (plus `FIRST_WINDOW` replies).
pub(super) fn learn_reply_size(estimate: usize, size: usize, budget: usize) -> (usize, usize) {
    // A decaying peak, not an average: one large reply shrinks the window at once, and only
    // a run of small ones opens it again.
    let estimate = size.max(estimate - estimate / 8);
    (estimate, (budget / 4 / estimate.max(1)).max(FIRST_WINDOW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_buffer_doubles_while_reads_fill_it_up_to_a_bound() {
        assert_eq!(input_growth(1024, 1000, 1000), Some(1024), "filled: double");
        assert_eq!(
            input_growth(1024, 1000, 999),
            None,
            "room left: the socket was drained"
        );
        assert_eq!(input_growth(INPUT_GROWS_TO, 512, 512), None, "at the bound");
    }

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
