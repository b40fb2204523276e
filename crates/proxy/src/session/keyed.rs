//! Keyed forwarding: a request to the master of its slot, a multi-key request split per key,
//! and the commands that run on a connection of their own (blocking commands, WAIT) as tasks.

use super::fanout::Merge;
use super::{Pending, RequestArgs, Session, write_request};
use cinnabar_commands::{Args, Command};
use cinnabar_resp::encode;
use std::rc::Rc;

impl Session {
    /// Sends the request as it is to the master of `slot`.
    pub(super) fn forward(&mut self, slot: Option<u16>, read_only: bool, args: &RequestArgs<'_>) {
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
    pub(super) fn split(
        &mut self,
        command: &Command,
        args: &RequestArgs<'_>,
        merge: Merge,
        step: usize,
    ) {
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
        if let Some(slot) = self.shared_slot(command, args) {
            return self.forward(slot, read_only, args);
        }
        let name = args.get(0).unwrap_or_default();
        let mut parts = 0;
        let mut index = 1;
        while index + step <= args.len() {
            let id = {
                let mut tickets = self.worker.tickets.borrow_mut();
                let key = args.get(index).unwrap_or_default();
                let slot = Some(self.worker.router.slot(key));
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

    /// A blocking command (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, …) on a connection of
    /// its own, so it never stalls the shared one; cancelled if the client goes away.
    pub(super) fn blocking(&mut self, slot: Option<u16>, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let master = slot
            .and_then(|s| routes.owner(s))
            .or((!routes.masters().is_empty()).then_some(0));
        let Some(addr) = master.and_then(|m| routes.masters().get(m)).cloned() else {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master serves this slot");
        };
        // `CLIENT ID` first, on the same connection: a switch releases the client by it.
        let mut request = Vec::new();
        encode::command(&mut request, &[b"CLIENT", b"ID"]);
        write_request(args, &mut request);
        let prelude = self.worker.prelude(&addr, self.flavor());
        let timeout = self.worker.config.connect_timeout;
        // Counted before the task exists: a task cancelled before its first poll (the client
        // left at once) still gives its count back when the guard drops.
        let registration = Registration::new(Rc::clone(&self.worker));
        self.reply_from_task(async move {
            let reply = blocking_request(registration, &addr, &prelude, &request, timeout).await;
            reply.unwrap_or_else(|why| {
                format!("-ERR cinnabar: blocking command on {addr} failed: {why}\r\n").into_bytes()
            })
        });
    }

    /// Queues a reply that `work` produces in a task of its own (blocking commands, WAIT, a
    /// held-back login refusal), in order with the others; the task is cancelled, and its
    /// ticket released, if the client goes away first.
    pub(super) fn reply_from_task(
        &mut self,
        work: impl std::future::Future<Output = Vec<u8>> + 'static,
    ) {
        let id = self.worker.tickets.borrow_mut().take();
        self.worker.tickets.borrow_mut().get(id).own_task = true;
        let worker = Rc::clone(&self.worker);
        let task = tokio::task::spawn_local(async move {
            let reply = work.await;
            worker.tickets.borrow_mut().complete(id, &reply);
        });
        self.cold.blocking.retain(|(t, _)| !t.is_finished());
        self.cold.blocking.push((task.abort_handle(), id));
        self.ids.push_back(id);
        self.push_pending(Pending::One);
    }

    /// `WAIT numreplicas timeout`: see the `wait` module. Runs as a task of its own so the
    /// client's later requests keep flowing; cancelled if the client goes away.
    pub(super) fn wait(&mut self, args: &RequestArgs<'_>) {
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

    /// Queues `reply`, delivered after `delay` (in order with the others).
    pub(super) fn later(&mut self, delay: std::time::Duration, reply: Vec<u8>) {
        self.reply_from_task(async move {
            tokio::time::sleep(delay).await;
            reply
        });
    }
}

/// A blocking command's place in the worker's registry (see `Worker::blocked_on`): counted as
/// starting from creation, registered once its connection's id is known, and forgotten however
/// the command ends (answered, failed, or cancelled because the client left).
struct Registration {
    worker: Rc<crate::worker::Worker>,
    key: Option<u64>,
}

impl Registration {
    fn new(worker: Rc<crate::worker::Worker>) -> Self {
        worker.blocking_started();
        Self { worker, key: None }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match self.key {
            Some(key) => self.worker.unblocked(key),
            None => self.worker.blocking_ended(),
        }
    }
}

/// Runs `CLIENT ID` + a blocking command on a connection of its own, registering the
/// connection's id with the worker while the command waits (so a switch can release it), and
/// returns the command's reply. When the node refuses `CLIENT ID` (a backend user without it),
/// the command's reply is still read and returned; it just stays counted as starting, so a
/// switch waits for it (and abandons if it blocks too long) instead of leaving it behind.
async fn blocking_request(
    mut registration: Registration,
    addr: &cinnabar_cluster::NodeAddr,
    prelude: &(Vec<u8>, usize),
    request: &[u8],
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let mut stream = crate::backend::connect_private(addr, prelude, timeout).await?;
    tokio::io::AsyncWriteExt::write_all(&mut stream, request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    // Both replies may arrive in one read (a list that already has an element).
    let mut buf = Vec::with_capacity(256);
    let mut scanner = cinnabar_resp::ReplyScanner::new(cinnabar_resp::Limits::default());
    let mut replies = 0;
    let mut pos = 0;
    loop {
        while let Some(len) = scanner
            .scan(&buf[pos..])
            .map_err(|e| format!("bad reply: {e}"))?
        {
            let reply = &buf[pos..pos + len];
            if replies == 1 {
                return Ok(reply.to_vec());
            }
            let id = std::str::from_utf8(reply.get(1..).unwrap_or_default())
                .ok()
                .filter(|_| reply.first() == Some(&b':'))
                .and_then(|s| s.trim_end().parse::<i64>().ok());
            match id {
                Some(id) => {
                    let key = registration.worker.blocked_on(addr.clone(), id);
                    registration.key = Some(key);
                }
                None => tracing::warn!(
                    node = %addr,
                    reply = %String::from_utf8_lossy(reply).trim_end(),
                    "CLIENT ID refused on a blocking command's connection; an online switch \
                     cannot release this client and waits for it instead"
                ),
            }
            replies = 1;
            pos += len;
        }
        let read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if read == 0 {
            return Err("closed by the node".into());
        }
    }
}
