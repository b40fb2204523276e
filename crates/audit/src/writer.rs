//! The writer thread: takes messages off the queue, formats records into a batch, and writes
//! the batch whenever the queue is momentarily empty (or the batch is large), rotating files by
//! size. It must never panic and never give up: an I/O error is counted and logged, and the
//! next batch tries again.
//!
//! Counting is exact per record: a record is `written` once all of its line was accepted by
//! the output and flushed, and a `write_error` if its batch failed before that. If a write
//! stops in the middle of a line, the next write starts with a newline so that the torn line
//! does not swallow the next record.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use crate::line::LineFormat;
use crate::output::{Limits, Output};
use crate::record::AuditRecord;

/// Past this many buffered bytes the batch is written even if more records are waiting, so
/// memory stays bounded and lines keep flowing under a sustained burst.
const BATCH_BYTES: usize = 64 * 1024;

/// The writer's sleep after finding the queue empty: short right after activity, doubling
/// while idle up to [`MAX_IDLE`], so a burst is written promptly and an idle writer costs
/// little (see [`Writer::run`]).
const MIN_IDLE: Duration = Duration::from_millis(1);
const MAX_IDLE: Duration = Duration::from_millis(16);

/// After this long with nothing to write, the writer stops polling and blocks until a message
/// comes (see [`Writer::run`]).
const QUIET_BEFORE_BLOCKING: Duration = Duration::from_secs(1);

/// What travels on the queue, in order: settings apply between the records around them.
pub(crate) enum Message {
    /// One record (boxed: the channel reserves a slot per capacity, so slots stay small).
    Record(Box<AuditRecord>),
    /// New settings, after writing everything before them.
    Reconfigure(Box<Settings>),
    /// Write everything before this, then answer.
    Flush(SyncSender<()>),
    /// Write everything queued, then end the thread.
    Shutdown,
}

/// Settings the writer applies on [`Message::Reconfigure`].
pub(crate) struct Settings {
    pub(crate) format: LineFormat,
    pub(crate) limits: Limits,
    /// `Some(new)` replaces the output (`Some(None)` closes it); `None` keeps it.
    pub(crate) output: Option<Option<Output>>,
}

/// The counters shared by every [`crate::Auditor`] handle and the writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) write_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        // Relaxed: each counter is read on its own; no other memory hangs on its value.
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    format: LineFormat,
    /// `None` while auditing is disabled.
    output: Option<Output>,
    counters: Arc<Counters>,
    /// Lines not yet written, and where each one ends in it.
    batch: Vec<u8>,
    line_ends: Vec<usize>,
    /// The line being formatted, reused.
    line: Vec<u8>,
    /// The last write stopped inside a line.
    torn: bool,
    /// The last write failed; a success is then logged once as a recovery.
    failing: bool,
    /// The last rotation or reopening failed: each failure streak is logged once, not once
    /// per line, since the writer retries at every line or batch.
    rotate_failing: bool,
    reopen_failing: bool,
}

impl Writer {
    pub(crate) fn new(format: LineFormat, output: Option<Output>, counters: Arc<Counters>) -> Self {
        Self {
            format,
            output,
            counters,
            batch: Vec::with_capacity(BATCH_BYTES),
            line_ends: Vec::new(),
            line: Vec::new(),
            torn: false,
            failing: false,
            rotate_failing: false,
            reopen_failing: false,
        }
    }

    /// Runs until [`Message::Shutdown`] or until every sender is gone, writing everything
    /// that was queued before either.
    ///
    /// The writer polls rather than blocking in `recv`: a sender that finds the receiver
    /// asleep must wake it with a system call, and that sender is a proxy worker. Polling
    /// keeps `record` to a few atomic operations, at the price of a few dozen wake-ups per
    /// second while idle and at most [`MAX_IDLE`] before an idle writer sees a new record.
    /// While auditing is disabled (no output) nobody sends records, only the rare control
    /// message, so the writer blocks instead: a proxy without an audit trail has no thread
    /// waking 60 times a second. Nor has one whose audit trail is quiet: audited commands
    /// (administration, by default) are rare, so after [`QUIET_BEFORE_BLOCKING`] with nothing
    /// to write the writer blocks too, and the one record that ends the quiet pays the wake-up
    /// system call; records that follow it find the writer polling again.
    pub(crate) fn run(mut self, queue: Receiver<Message>) {
        let mut stop = false;
        let mut idle = MIN_IDLE;
        let mut last_message = Instant::now();
        loop {
            // The clock is read last: while records flow the batch is rarely empty.
            let block = self.batch.is_empty()
                && !stop
                && (self.output.is_none() || last_message.elapsed() >= QUIET_BEFORE_BLOCKING);
            let next = if block {
                queue.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                queue.try_recv()
            };
            match next {
                Ok(message) => {
                    idle = MIN_IDLE;
                    last_message = Instant::now();
                    stop |= self.handle(message);
                }
                Err(TryRecvError::Empty) => {
                    // Momentarily empty: write what is batched before sleeping.
                    self.write_batch();
                    if stop {
                        return;
                    }
                    thread::sleep(idle);
                    idle = (idle * 2).min(MAX_IDLE);
                }
                Err(TryRecvError::Disconnected) => {
                    self.write_batch();
                    return;
                }
            }
        }
    }

    /// Acts on one message; true for [`Message::Shutdown`].
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Record(record) => self.add(&record),
            Message::Reconfigure(settings) => self.apply(*settings),
            Message::Flush(done) => {
                self.write_batch();
                // The asker may have given up waiting; nothing to do then.
                let _ = done.try_send(());
            }
            Message::Shutdown => return true,
        }
        false
    }

    fn add(&mut self, record: &AuditRecord) {
        let Some(output) = &mut self.output else {
            // Queued just before auditing was disabled: the caller no longer wants it.
            return;
        };
        self.line.clear();
        if let Err(e) = self.format.write(record, &mut self.line) {
            Counters::add(&self.counters.write_errors, 1);
            tracing::warn!(error = %e, "audit: a record could not be formatted");
            return;
        }
        if output.must_rotate_before(self.batch.len(), self.line.len()) {
            self.write_batch();
            self.rotate();
        }
        self.batch.extend_from_slice(&self.line);
        self.line_ends.push(self.batch.len());
        if self.batch.len() >= BATCH_BYTES {
            self.write_batch();
        }
    }

    fn apply(&mut self, settings: Settings) {
        self.write_batch();
        self.format = settings.format;
        if let Some(output) = settings.output {
            self.output = output;
        }
        if let Some(output) = &mut self.output {
            output.set_limits(settings.limits);
        }
    }

    fn rotate(&mut self) {
        let Some(output) = &mut self.output else {
            return;
        };
        match output.rotate() {
            Ok(()) => self.rotate_failing = false,
            // Nothing is lost: lines keep going to the current file, and rotation is tried
            // again at the next line that does not fit.
            Err(e) if !self.rotate_failing => {
                self.rotate_failing = true;
                tracing::warn!(error = %e, "audit: cannot rotate the audit file; writing on");
            }
            Err(_) => {}
        }
    }

    /// Writes and flushes the batch, counting each of its records as written or failed.
    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let records = self.line_ends.len();
        let Some(output) = &mut self.output else {
            self.clear_batch();
            return;
        };
        match output.follow_path() {
            Ok(()) => self.reopen_failing = false,
            Err(e) if !self.reopen_failing => {
                self.reopen_failing = true;
                tracing::warn!(error = %e, "audit: cannot reopen the audit file; writing on");
            }
            Err(_) => {}
        }
        if self.torn && write_all(output, b"\n").1.is_ok() {
            self.torn = false;
        }
        let (done, result) = write_all(output, &self.batch);
        match result.and_then(|()| output.flush()) {
            Ok(()) => {
                Counters::add(&self.counters.written, records);
                if self.failing {
                    self.failing = false;
                    tracing::info!("audit: writing again");
                }
            }
            Err(e) => {
                // Lines wholly written before the failure are in the output; unless the
                // failure was the flush, which leaves no way to know, so none count.
                let complete = if done == self.batch.len() {
                    0
                } else {
                    self.line_ends.partition_point(|&end| end <= done)
                };
                Counters::add(&self.counters.written, complete);
                Counters::add(&self.counters.write_errors, records - complete);
                self.torn = done > 0 && self.line_ends.binary_search(&done).is_err();
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(error = %e, lost = records - complete,
                        "audit: cannot write audit records; counting them as write errors");
                }
            }
        }
        self.clear_batch();
    }

    fn clear_batch(&mut self) {
        self.batch.clear();
        self.line_ends.clear();
    }
}

/// Like `Write::write_all`, but also says how many bytes went out before an error.
fn write_all(out: &mut Output, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match out.write(&bytes[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}
