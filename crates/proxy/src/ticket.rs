//! Tickets: one per request in flight, recycled through a per-worker slab so that, after
//! warm-up, a request allocates nothing. A ticket carries the request bytes (for retries and
//! redirects) and receives the reply bytes; the client session waits on it in request order.
//! An unpipelined client's ticket may instead write its reply straight to the client's socket
//! (`Ticket::direct`, `ClientSocket`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use tokio::net::tcp::OwnedWriteHalf;

/// A ticket buffer that grew beyond this is freed on release rather than kept for reuse.
const RETAINED: usize = 256 * 1024;

/// One request in flight.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    /// The request as RESP multibulk, kept for redirects and retries.
    pub(crate) request: Vec<u8>,
    /// The reply bytes, exactly as the backend sent them.
    pub(crate) reply: Vec<u8>,
    /// The slot the request routes by, if it has keys.
    pub(crate) slot: Option<u16>,
    /// The reply is complete.
    pub(crate) done: bool,
    /// The session waiting for this ticket.
    pub(crate) waker: Option<Waker>,
    /// MOVED/ASK redirects followed so far.
    pub(crate) redirects: u8,
    /// When the first retryable failure happened (start of the retry window).
    pub(crate) failing_since: Option<Instant>,
    /// The client went away: release the ticket as soon as the backend is done with it.
    pub(crate) abandoned: bool,
    /// Replies before the one this ticket wants (a transaction's `+OK` and `+QUEUED`s).
    pub(crate) discard: u16,
    /// The client speaks RESP3: the request needs a RESP3 backend connection.
    pub(crate) resp3: bool,
    /// A read-only command: may go to a replica (per read policy), and may be sent again
    /// after a connection broke with it in flight.
    pub(crate) read_only: bool,
    /// Spreads a client's replica reads: the same client keeps reading from the same replica.
    pub(crate) affinity: u32,
    /// The client's database (a Sentinel group's clients may SELECT; 0 for a cluster).
    pub(crate) db: u8,
    /// Handed out and not yet released.
    live: bool,
    /// Answered by a task of the session's own (a blocking command, WAIT, a delayed refusal),
    /// not by a backend connection: a switch's drain does not wait for it.
    pub(crate) own_task: bool,
    /// The client's socket, while the reply may be written straight to it: set by the session
    /// only while this is its one request in flight and it waits with nothing else to do
    /// (nothing of its own to write, no input to parse), and taken back when it wakes. Saves
    /// an unpipelined request a wake-up of its session and a copy of the reply.
    pub(crate) direct: Option<Rc<ClientSocket>>,
}

impl Ticket {
    /// [`Tickets::complete`] for a ticket whose reply may go straight to its client.
    #[inline(never)]
    fn complete_direct(&mut self, reply: &[u8]) {
        let written = self
            .direct
            .take()
            .map_or(0, |client| client.write_reply(reply));
        self.reply.clear();
        if written == reply.len() {
            // The session has nothing to do for it until its client sends again.
            self.waker = None;
            return;
        }
        self.reply.extend_from_slice(&reply[written..]);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A plain TCP client's socket, shared by its session (which reads and writes it) and, through
/// [`Ticket::direct`], by whoever completes the one ticket the session allows to. Also where
/// that completion leaves what the session needs to count the request: a session has at most
/// one such ticket at a time, so these live here, not in every ticket.
#[derive(Debug)]
pub(crate) struct ClientSocket {
    /// The client's writing half (the session reads through the other one).
    pub(crate) writer: RefCell<OwnedWriteHalf>,
    /// How much of the reply went straight out (0: none went, or nothing was completed so).
    pub(crate) written: Cell<usize>,
    /// Whether that reply was an error, and when it went out (its latency ends there, not
    /// when the session next wakes).
    pub(crate) error: Cell<bool>,
    pub(crate) finished: Cell<Option<Instant>>,
}

impl ClientSocket {
    pub(crate) fn new(writer: OwnedWriteHalf) -> Self {
        Self {
            writer: RefCell::new(writer),
            written: Cell::new(0),
            error: Cell::new(false),
            finished: Cell::new(None),
        }
    }

    /// Writes what of `reply` the socket takes now (nothing after an error) and records it;
    /// returns how many bytes went.
    fn write_reply(&self, reply: &[u8]) -> usize {
        // The session holds the writer only inside a poll, and we run on its thread between
        // polls: the borrow cannot fail (if it ever did, the session would write it all).
        let written = self
            .writer
            .try_borrow()
            .map_or(0, |writer| writer.try_write(reply).unwrap_or(0));
        self.written.set(written);
        self.error.set(reply.first() == Some(&b'-'));
        self.finished.set(Some(Instant::now()));
        written
    }
}

/// Capacity a released ticket keeps per buffer. Buffers keep what they grew to, so steady
/// traffic allocates nothing; beyond this they shrink back, so one huge value (a 64 MiB SET or
/// GET) does not stay pinned in a ticket for the life of the worker.
const KEEP: usize = 64 * 1024;

/// A slab of tickets with a free list.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    slots: Vec<Ticket>,
    free: Vec<usize>,
}

impl Tickets {
    /// A clean ticket (buffers keep their capacity from earlier use).
    pub(crate) fn take(&mut self) -> usize {
        let id = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Ticket::default());
            self.slots.len() - 1
        });
        self.slots[id].live = true;
        id
    }

    /// Tickets handed to a backend and not yet answered (a switch's drain waits for none to
    /// be left). Walks the slab: for the switch only, never per request.
    pub(crate) fn unfinished(&self) -> usize {
        self.slots
            .iter()
            .filter(|t| t.live && !t.done && !t.own_task)
            .count()
    }

    /// Returns a ticket to the free list, keeping its buffers' capacity.
    pub(crate) fn release(&mut self, id: usize) {
        if let Some(t) = self.slots.get_mut(id) {
            t.request.clear();
            t.reply.clear();
            t.request.shrink_to(KEEP);
            t.reply.shrink_to(KEEP);
            t.slot = None;
            t.done = false;
            t.waker = None;
            t.redirects = 0;
            t.failing_since = None;
            t.abandoned = false;
            t.discard = 0;
            t.resp3 = false;
            t.read_only = false;
            t.affinity = 0;
            t.db = 0;
            t.live = false;
            t.own_task = false;
            t.direct = None;
            // A huge request or reply went through: give its memory back.
            if t.reply.capacity() > RETAINED {
                t.reply = Vec::new();
            }
            if t.request.capacity() > RETAINED {
                t.request = Vec::new();
            }
            self.free.push(id);
        }
    }

    /// The ticket `id`.
    ///
    /// # Panics
    /// Never for ids handed out by [`take`](Self::take); ids are never shrunk away.
    pub(crate) fn get(&mut self, id: usize) -> &mut Ticket {
        &mut self.slots[id]
    }

    /// The ticket `id`, read-only.
    pub(crate) fn peek(&self, id: usize) -> &Ticket {
        &self.slots[id]
    }

    /// Completes `id` with `reply` and wakes its session; releases it if the client is gone.
    /// A reply the session allowed to go straight to its client (see [`Ticket::direct`]) is
    /// written there, and then the session is not woken at all: it collects the ticket when it
    /// next wakes for its client's input. What the socket does not take at once (a full send
    /// buffer, an error) is left to the session, as any reply.
    #[inline]
    pub(crate) fn complete(&mut self, id: usize, reply: &[u8]) {
        let ticket = self.get(id);
        if ticket.abandoned {
            self.release(id);
            return;
        }
        ticket.done = true;
        if ticket.direct.is_some() {
            ticket.complete_direct(reply);
            return;
        }
        ticket.reply.clear();
        ticket.reply.extend_from_slice(reply);
        if let Some(waker) = ticket.waker.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_ticket_keeps_small_buffers_and_gives_back_huge_ones() {
        let mut tickets = Tickets::default();
        let small = tickets.take();
        tickets.get(small).reply.extend_from_slice(&[b'x'; 1000]);
        tickets.release(small);
        assert!(
            tickets.peek(small).reply.capacity() >= 1000,
            "kept for reuse"
        );

        let big = tickets.take();
        tickets
            .get(big)
            .request
            .extend_from_slice(&vec![b'x'; 4 << 20]);
        tickets.complete(big, &vec![b'y'; 4 << 20]);
        tickets.release(big);
        assert!(tickets.peek(big).request.capacity() <= KEEP);
        assert!(tickets.peek(big).reply.capacity() <= KEEP);
    }
}
