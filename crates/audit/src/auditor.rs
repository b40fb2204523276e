//! [`Auditor`]: the handle the proxy keeps and clones into every worker. `record` puts a record
//! on a bounded queue without ever waiting; one writer thread does the rest. Only `flush`,
//! `reconfigure`, `shutdown` and the drop of the last handle wait, and only for the writer.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::keys::KeyHasher;
use crate::line::LineFormat;
use crate::output::{Limits, Output};
use crate::writer::{Counters, Message, Settings, Writer};
use crate::{AuditConfig, AuditError, AuditOutput, AuditRecord};

/// The counters of an auditor, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Records written and flushed to the output.
    pub written: u64,
    /// Records refused because the queue was full or the auditor was shut down.
    pub dropped: u64,
    /// Records lost to an I/O error of the output (or, never expected, a formatting error).
    pub write_errors: u64,
}

/// A running audit trail: a bounded queue and the thread that writes it. Cheap to clone (an
/// `Arc`); every clone feeds the same queue. See the crate documentation for the whole story.
#[derive(Clone, Debug)]
pub struct Auditor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: SyncSender<Message>,
    counters: Arc<Counters>,
    enabled: AtomicBool,
    max_keys: AtomicUsize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Serializes reconfigurations and remembers what output is open.
    control: Mutex<Control>,
}

#[derive(Debug)]
struct Control {
    /// The configured output while it is open (`None` while disabled).
    open: Option<AuditOutput>,
    /// Started with [`Auditor::start_with_writer`]: the output never changes.
    custom_writer: bool,
}

impl Auditor {
    /// Validates `config`, opens its output (unless disabled) and starts the writer thread.
    ///
    /// # Errors
    /// [`AuditError::Config`] for a bad setting, [`AuditError::Open`] if the file cannot be
    /// opened for appending, [`AuditError::Spawn`] if the thread cannot be created.
    pub fn start(config: AuditConfig) -> Result<Self, AuditError> {
        config.validate()?;
        let output = if config.enabled {
            Some(Output::open(&config)?)
        } else {
            None
        };
        let control = Control {
            open: config.enabled.then(|| config.output.clone()),
            custom_writer: false,
        };
        Self::spawn(&config, output, control)
    }

    /// Like [`Auditor::start`], but lines go to `writer` (a socket, a pipe, a test buffer)
    /// instead of `config.output`, for the life of this auditor: no rotation, and
    /// [`Auditor::reconfigure`] changes everything but the output. `writer.flush()` is called
    /// after each batch.
    ///
    /// # Errors
    /// [`AuditError::Config`] for a bad setting, [`AuditError::Spawn`] if the thread cannot be
    /// created.
    pub fn start_with_writer<W: Write + Send + 'static>(
        config: AuditConfig,
        writer: W,
    ) -> Result<Self, AuditError> {
        config.validate()?;
        let control = Control {
            open: None,
            custom_writer: true,
        };
        Self::spawn(&config, Some(Output::Writer(Box::new(writer))), control)
    }

    fn spawn(
        config: &AuditConfig,
        output: Option<Output>,
        control: Control,
    ) -> Result<Self, AuditError> {
        let (queue, receiver) = mpsc::sync_channel(config.queue_capacity.get());
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(format_of(config), output, Arc::clone(&counters));
        let handle = thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(AuditError::Spawn)?;
        Ok(Self {
            shared: Arc::new(Shared {
                queue,
                counters,
                enabled: AtomicBool::new(config.enabled),
                max_keys: AtomicUsize::new(config.max_keys),
                writer: Mutex::new(Some(handle)),
                control: Mutex::new(control),
            }),
        })
    }

    /// Queues `record` for writing and returns at once: one allocation and a few atomic
    /// operations, no lock, no system call. Never blocks, never fails: if the
    /// queue is full (the output is slower than the audited traffic, or stuck) or the auditor
    /// was shut down, the record is dropped and counted in [`Auditor::dropped`]. While auditing
    /// is disabled, the record is discarded uncounted.
    pub fn record(&self, record: AuditRecord) {
        if !self.is_enabled() {
            return;
        }
        if self
            .shared
            .queue
            .try_send(Message::Record(Box::new(record)))
            .is_err()
        {
            Counters::add(&self.shared.counters.dropped, 1);
        }
    }

    /// Whether records are being written; when false the caller can skip building them.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// How many keys a record lists at most: pass it to [`AuditRecord::with_keys`].
    pub fn max_keys(&self) -> usize {
        self.shared.max_keys.load(Ordering::Relaxed)
    }

    /// Records written and flushed so far.
    pub fn written(&self) -> u64 {
        self.shared.counters.written.load(Ordering::Relaxed)
    }

    /// Records dropped so far because the queue was full or the auditor was shut down.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Records lost so far to output errors.
    pub fn write_errors(&self) -> u64 {
        self.shared.counters.write_errors.load(Ordering::Relaxed)
    }

    /// The three counters.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            written: self.written(),
            dropped: self.dropped(),
            write_errors: self.write_errors(),
        }
    }

    /// Waits until every record queued before this call is written and flushed (or counted as
    /// a write error). Blocks while the queue is full and while the output is slow: for tests,
    /// an admin endpoint or shutdown paths, never for a client's path.
    ///
    /// # Errors
    /// [`AuditError::Stopped`] if the auditor was shut down.
    pub fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Message::Flush(done))?;
        wait.recv().map_err(|_| AuditError::Stopped)
    }

    /// Applies a new configuration without losing or reordering records: records queued
    /// before this call are written under the old settings, later ones under the new. Opens
    /// a new output only if `output` changed or auditing is turned back on (a failure leaves
    /// the old settings in force); `enabled = false` closes the output. `queue_capacity`
    /// cannot change (start a new auditor for that). Blocks while the queue is full; call it
    /// from a control thread.
    ///
    /// # Errors
    /// [`AuditError::Config`] or [`AuditError::Open`] (nothing changed), or
    /// [`AuditError::Stopped`] if the auditor was shut down.
    pub fn reconfigure(&self, config: &AuditConfig) -> Result<(), AuditError> {
        config.validate()?;
        let mut control = lock(&self.shared.control);
        let output = if control.custom_writer {
            None
        } else if !config.enabled {
            control.open.is_some().then_some(None)
        } else if control.open.as_ref() == Some(&config.output) {
            None
        } else {
            Some(Some(Output::open(config)?))
        };
        // Off before the message, on after it: no record slips in while the writer has no
        // output, and none is queued after an off that the writer would still write.
        if !config.enabled {
            self.shared.enabled.store(false, Ordering::Relaxed);
        }
        self.send(Message::Reconfigure(Box::new(Settings {
            format: format_of(config),
            limits: Limits::of(config),
            output,
        })))?;
        self.shared
            .max_keys
            .store(config.max_keys, Ordering::Relaxed);
        if config.enabled {
            self.shared.enabled.store(true, Ordering::Relaxed);
        }
        if !control.custom_writer {
            control.open = config.enabled.then(|| config.output.clone());
        }
        Ok(())
    }

    /// Stops the writer for every handle: writes everything queued, flushes, ends the thread
    /// and returns the final counters. Later `record` calls on other handles count as dropped.
    /// Waits for the output; if it can be stuck (a pipe nobody reads), call this from a thread
    /// the caller can abandon.
    pub fn shutdown(self) -> AuditStats {
        self.shared.stop();
        self.stats()
    }

    /// A blocking send, for the rare messages that must not be dropped.
    fn send(&self, message: Message) -> Result<(), AuditError> {
        self.shared
            .queue
            .send(message)
            .map_err(|_| AuditError::Stopped)
    }
}

impl Shared {
    fn stop(&self) {
        let Some(handle) = lock(&self.writer).take() else {
            return;
        };
        // An error means the writer is already gone; joining is all that is left.
        let _ = self.queue.send(Message::Shutdown);
        if handle.join().is_err() {
            tracing::error!("audit: the writer thread panicked");
        }
    }
}

/// The last handle going away writes and flushes what is queued, like [`Auditor::shutdown`].
impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

fn format_of(config: &AuditConfig) -> LineFormat {
    LineFormat {
        max_keys: config.max_keys,
        hasher: config
            .hash_keys
            .then(|| KeyHasher::new(config.key_salt.as_deref())),
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a join
/// handle, the output in use) is still meaningful, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
