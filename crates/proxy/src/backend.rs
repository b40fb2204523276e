//! One pipelined connection from a worker to one Redis node, shared by every client session of
//! that worker. Requests are appended to one output buffer (so many clients' requests leave in
//! one write); replies are found with the scanner and handed to their tickets in order, without
//! being decoded or re-encoded.
//!
//! Must never block the worker: reading and writing progress together in one task, so a node
//! that stops reading while it still has replies to send cannot deadlock us.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use cinnabar_cluster::NodeAddr;
use cinnabar_resp::{Limits, ReplyScanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::worker::Worker;

/// `ASKING`, sent before a request that follows an ASK redirect.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Initial buffer sizes; buffers grow with load and keep their capacity.
const BUFFER: usize = 16 * 1024;

/// What the next reply on the connection belongs to.
#[derive(Debug, Clone, Copy)]
enum Inflight {
    /// A client's request.
    Ticket(usize),
    /// A reply nobody waits for (the `+OK` of `ASKING`).
    Discard,
}

#[derive(Debug, Default)]
struct State {
    /// Requests not yet handed to the socket.
    out: Vec<u8>,
    /// One entry per request whose reply has not arrived, in send order.
    inflight: VecDeque<Inflight>,
    /// How many entries at the back of `inflight` are still in `out` (never written).
    unsent: usize,
}

/// A backend node as seen by one worker.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) addr: NodeAddr,
    state: RefCell<State>,
    wake: Notify,
}

impl Backend {
    pub(crate) fn new(addr: NodeAddr) -> Self {
        Self {
            addr,
            state: RefCell::new(State::default()),
            wake: Notify::new(),
        }
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
        self.wake.notify_one();
    }

    /// Hands every request in flight back to the worker after the connection failed: those
    /// never written may be retried; those written may have run, so they fail.
    fn fail_all(&self, worker: &Rc<Worker>, why: &str) {
        let (entries, unsent) = {
            let mut st = self.state.borrow_mut();
            st.out.clear();
            let unsent = std::mem::take(&mut st.unsent);
            (st.inflight.drain(..).collect::<Vec<_>>(), unsent)
        };
        let written = entries.len() - unsent;
        for (i, entry) in entries.into_iter().enumerate() {
            if let Inflight::Ticket(id) = entry {
                worker.on_backend_failure(id, i >= written, &self.addr, why);
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
            backend.wake.notified().await;
        }
        let addr = (backend.addr.host.as_str(), backend.addr.port);
        let connected =
            tokio::time::timeout(worker.config.connect_timeout, TcpStream::connect(addr)).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                backend.fail_all(&worker, &format!("cannot connect: {e}"));
                continue;
            }
            Err(_) => {
                backend.fail_all(&worker, "connect timed out");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let why = serve(
            &backend,
            &worker,
            stream,
            &mut read_buf,
            &mut write_buf,
            &mut scanner,
        )
        .await;
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
    loop {
        if written == write_buf.len() {
            write_buf.clear();
            written = 0;
            let mut st = backend.state.borrow_mut();
            if !st.out.is_empty() {
                std::mem::swap(&mut st.out, write_buf);
                st.unsent = 0;
            }
        }
        tokio::select! {
            read = rd.read_buf(read_buf) => match read {
                Ok(0) => return "closed by the node".into(),
                Ok(_) => {
                    if let Err(why) = deliver(backend, worker, read_buf, scanner) {
                        return why;
                    }
                }
                Err(e) => return format!("read failed: {e}"),
            },
            w = wr.write(&write_buf[written..]), if written < write_buf.len() => match w {
                Ok(0) => return "closed by the node".into(),
                Ok(n) => written += n,
                Err(e) => return format!("write failed: {e}"),
            },
            () = backend.wake.notified(), if written == write_buf.len() => {}
        }
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
        let entry = backend.state.borrow_mut().inflight.pop_front();
        match entry {
            Some(Inflight::Ticket(id)) => worker.on_reply(id, reply, &backend.addr),
            Some(Inflight::Discard) => {}
            None => return Err("a reply arrived that no request asked for".into()),
        }
    }
    buf.drain(..pos);
    Ok(())
}

/// Runs one request on a connection of its own and returns its reply (for blocking commands,
/// which must not hold up the shared connection). The connection is closed afterwards.
///
/// # Errors
/// A sentence saying what failed: connecting, writing, reading, or a malformed reply.
pub(crate) async fn private_request(
    addr: &NodeAddr,
    request: &[u8],
    connect_timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let connect = TcpStream::connect((addr.host.as_str(), addr.port));
    let mut stream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
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
