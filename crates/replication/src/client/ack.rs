//! Acknowledgements to the source: `REPLCONF ACK <applied offset>` once a second from a thread
//! of its own, and at once when the source asks (`REPLCONF GETACK *`).
//!
//! What is acknowledged is what the caller says it has applied ([`AppliedOffset`]), never what
//! was merely received: the source's `WAIT`, its replica lag and `min-replicas-to-write` then
//! mean "the target has it". It must never write to the socket outside the shared lock (an ACK
//! cut in two by another write would corrupt the stream the source reads).

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The replication offset the caller has applied to its target, shared with the client's
/// acknowledgement thread. Cloning shares the same counter.
///
/// It only moves forward: [`advance_to`](Self::advance_to) with a smaller value is ignored, so
/// appliers on several threads may report in any order.
#[derive(Debug, Clone, Default)]
pub struct AppliedOffset(Arc<AtomicU64>);

impl AppliedOffset {
    /// A counter starting at `offset`.
    pub fn new(offset: u64) -> Self {
        Self(Arc::new(AtomicU64::new(offset)))
    }

    /// Records that everything up to `offset` has been applied (ignored if not a step forward).
    pub fn advance_to(&self, offset: u64) {
        self.0.fetch_max(offset, Ordering::AcqRel);
    }

    /// The applied offset.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The writing half of the connection, shared by the reading thread (GETACK answers) and the
/// acknowledgement thread.
#[derive(Debug, Clone)]
pub(crate) struct SharedWriter(Arc<Mutex<TcpStream>>);

impl SharedWriter {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self(Arc::new(Mutex::new(stream)))
    }

    /// Sends `REPLCONF ACK <offset>` as one write under the lock.
    pub(crate) fn send_ack(&self, offset: u64) -> io::Result<()> {
        let offset = offset.to_string();
        let mut command = Vec::with_capacity(48);
        cinnabar_resp::encode::command(&mut command, &[b"REPLCONF", b"ACK", offset.as_bytes()]);
        // A poisoned lock only means another thread panicked mid-write; the socket itself is
        // still usable or will report its own error.
        let mut stream = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stream.write_all(&command)
    }

    /// Shuts the socket down both ways, so the reading thread and the source see the end.
    pub(crate) fn shutdown(&self) {
        let stream = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The thread that sends `REPLCONF ACK` every `interval` until dropped.
#[derive(Debug)]
pub(crate) struct AckThread {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl AckThread {
    /// Starts acknowledging `applied` on `writer` every `interval` (the first one after one
    /// interval: the caller sends the first ACK itself, at the moment it matters).
    pub(crate) fn start(
        writer: SharedWriter,
        applied: AppliedOffset,
        interval: Duration,
    ) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("replication-ack".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {
                            // A failed write means the connection is gone; the reading thread
                            // reports that, so this thread just ends.
                            if writer.send_ack(applied.get()).is_err() {
                                return;
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for AckThread {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
