//! `WAIT numreplicas timeout` through the proxy. Redis counts replicas that acknowledged the
//! calling connection's own last write, but a client's writes went over shared connections to
//! many masters, so the proxy asks differently and conservatively:
//!
//! 1. `INFO replication` on every master over the shared connections, queued behind every
//!    request this client sent before WAIT, gives each master's replication offset once those
//!    writes ran;
//! 2. on a private connection per master, the proxy polls `INFO replication` until enough
//!    replicas acknowledged that offset or the timeout passes, nudging replicas to report with
//!    a 10 ms `WAIT` (which makes the master ask them for an acknowledgement).
//!
//! The answer is the smallest count over all masters: when it is at least `numreplicas`, every
//! write this client made before WAIT reached that many replicas. Not the hot path.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use tokio::io::AsyncWriteExt;

use crate::backend::{self, Flavor};
use crate::worker::Worker;

/// Between two polls of a master's replicas.
const NUDGE: &[u8] = b"*3\r\n$4\r\nWAIT\r\n$6\r\n100000\r\n$2\r\n10\r\n";
const INFO_REPLICATION: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";

/// Tickets this task waits on; released (or left for the backend to release) however the task
/// ends, aborted included.
struct Held {
    worker: Rc<Worker>,
    ids: Vec<usize>,
}

impl Drop for Held {
    fn drop(&mut self) {
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

/// Runs WAIT over `masters`; `offsets` are tickets already dispatched with `INFO replication`
/// to each master (same order). Returns the reply for the client.
pub(crate) async fn run(
    worker: Rc<Worker>,
    masters: Vec<NodeAddr>,
    offsets: Vec<usize>,
    numreplicas: u64,
    timeout: Option<Duration>,
) -> Vec<u8> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let held = Held {
        worker: Rc::clone(&worker),
        ids: offsets,
    };
    for &id in &held.ids {
        poll_fn(|cx| {
            let mut tickets = worker.tickets.borrow_mut();
            let ticket = tickets.get(id);
            if ticket.done {
                Poll::Ready(())
            } else {
                ticket.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
    let mut targets = Vec::with_capacity(masters.len());
    for &id in &held.ids {
        let reply = worker.tickets.borrow_mut().get(id).reply.clone();
        match field(&reply, "master_repl_offset") {
            Some(offset) => targets.push(offset),
            None => {
                let line = String::from_utf8_lossy(&reply)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                return format!(
                    "-ERR cinnabar: WAIT could not read a master's replication offset ({line})\r\n"
                )
                .into_bytes();
            }
        }
    }
    drop(held);

    let mut connections = Vec::with_capacity(masters.len());
    for addr in &masters {
        let prelude = worker.prelude(addr, Flavor::default());
        match backend::connect_private(addr, &prelude, worker.config.connect_timeout).await {
            Ok(stream) => connections.push(stream),
            Err(why) => {
                return format!("-ERR cinnabar: WAIT cannot reach {addr}: {why}\r\n").into_bytes();
            }
        }
    }
    loop {
        let mut fewest = u64::MAX;
        for (stream, target) in connections.iter_mut().zip(&targets) {
            let info = match ask(stream, INFO_REPLICATION).await {
                Ok(info) => info,
                Err(why) => return format!("-ERR cinnabar: WAIT failed: {why}\r\n").into_bytes(),
            };
            fewest = fewest.min(acknowledged(&info, *target));
        }
        let late = deadline.is_some_and(|d| Instant::now() >= d);
        if fewest >= numreplicas || late {
            let mut out = Vec::with_capacity(16);
            cinnabar_resp::encode::integer(&mut out, i64::try_from(fewest).unwrap_or(0));
            return out;
        }
        for stream in &mut connections {
            if let Err(why) = ask(stream, NUDGE).await {
                return format!("-ERR cinnabar: WAIT failed: {why}\r\n").into_bytes();
            }
        }
    }
}

async fn ask(stream: &mut tokio::net::TcpStream, request: &[u8]) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    backend::read_reply(stream).await
}

/// `name:value` from an INFO reply, as a number.
fn field(info: &[u8], name: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(info);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Replicas online whose acknowledged offset reached `target`
/// (`slaveN:ip=…,port=…,state=online,offset=…,lag=…`).
fn acknowledged(info: &[u8], target: u64) -> u64 {
    let text = String::from_utf8_lossy(info);
    let online = text.lines().filter(|l| l.starts_with("slave")).filter(|l| {
        let fields = l.split_once(':').map_or("", |(_, f)| f);
        let online = fields.split(',').any(|f| f == "state=online");
        let offset = fields
            .split(',')
            .find_map(|f| f.strip_prefix("offset="))
            .and_then(|o| o.parse::<u64>().ok());
        online && offset.is_some_and(|o| o >= target)
    });
    online.count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_online_replicas_that_reached_the_offset() {
        let info = b"$200\r\n# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=120,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=online,offset=99,lag=1\r\n\
            slave2:ip=127.0.0.1,port=7003,state=wait_bgsave,offset=500,lag=0\r\n\
            master_repl_offset:120\r\n";
        assert_eq!(field(info, "master_repl_offset"), Some(120));
        assert_eq!(acknowledged(info, 120), 1);
        assert_eq!(acknowledged(info, 99), 2);
        assert_eq!(acknowledged(info, 0), 2);
    }
}
