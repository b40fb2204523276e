//! The replication client: connects to a Redis or Valkey server as a replica would (`AUTH`,
//! `REPLCONF listening-port`, `REPLCONF capa eof capa psync2`, `PSYNC`), streams a full
//! resynchronisation's RDB through [`RdbReader`] into an [`EventSink`], then delivers the
//! command stream to a [`CommandSink`] with exact replication offsets, while a thread of its
//! own acknowledges the offset the caller has applied.
//!
//! Blocking and std-thread based: the caller's thread reads the socket, a `try_clone`d handle
//! writes acknowledgements. It must never acknowledge more than the caller reported applied
//! (except the first ACK after a full RDB, which a diskless source waits for; see
//! [`Connected::psync`]), never deliver a byte twice or skip one, and never write to the source
//! anything but the handshake and `REPLCONF ACK`.
//!
//! ```no_run
//! use cinnabar_replication::client::{Auth, ClientOptions, Flow, ItemKind, ReplicationClient};
//! use cinnabar_replication::Event;
//!
//! let connected = ReplicationClient::connect("127.0.0.1:6379", &Auth::none(), ClientOptions::default())?;
//! let (mut client, start) = connected.psync(None, &mut |_event: Event| Ok(()))?;
//! let applied = client.applied_offset();
//! client.stream(&mut |item: &cinnabar_replication::client::StreamItem<'_>| {
//!     if let ItemKind::Command(args) = item.kind {
//!         println!("db {}: {:?}", item.db, args.to_vec());
//!     }
//!     applied.advance_to(item.offset);
//!     Ok(Flow::Continue)
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ack;
mod commands;
mod copy;
mod error;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use ack::AppliedOffset;
pub use commands::{CommandArgs, CommandSink, Flow, ItemKind, StreamItem};
pub use error::{ReplicationError, Stage};

use crate::checkpoint::Checkpoint;
use crate::error::SinkError;
use crate::event::{Event, EventSink};
use crate::reader::{RdbReader, ReadSummary, ReaderOptions};
use crate::transfer::{TransferLength, read_end_mark, read_transfer_header};
use ack::{AckThread, SharedWriter};
use commands::{CommandStream, Step, StreamError};
use copy::CopyingReader;
use error::shown;

/// Bytes asked of the socket per read in the command stream.
const READ_CHUNK: usize = 64 * 1024;

/// Longest handshake reply line accepted, so a broken source cannot make us buffer forever.
const MAX_HANDSHAKE_LINE: u64 = 64 * 1024;

/// Credentials for the source. With no password nothing is sent; with a password and no user,
/// `AUTH <password>` authenticates the `default` user.
#[derive(Clone, Default)]
pub struct Auth {
    /// The ACL user, if not `default`.
    pub user: Option<String>,
    /// The password.
    pub password: Option<String>,
}

impl Auth {
    /// No credentials.
    pub fn none() -> Self {
        Self::default()
    }

    /// `AUTH <password>` (the `default` user).
    pub fn password(password: impl Into<String>) -> Self {
        Self {
            user: None,
            password: Some(password.into()),
        }
    }

    /// `AUTH <user> <password>`.
    pub fn user(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            password: Some(password.into()),
        }
    }
}

impl std::fmt::Debug for Auth {
    // Never print a password, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a TCP connection attempt may take.
    pub connect_timeout: Duration,
    /// How long the source may stay silent before the session is declared dead. A source sends
    /// a PING every `repl-ping-replica-period` (10 s by default) and keep-alive newlines while
    /// it prepares an RDB, so a minute (Redis's own `repl-timeout`) only fires on a dead link.
    pub read_timeout: Duration,
    /// How long one write (a handshake command, an ACK) may block.
    pub write_timeout: Duration,
    /// How often [`CommandSink::idle`] is called while the source is silent.
    pub poll_interval: Duration,
    /// How often [`CommandSink::idle`] is called while the source keeps sending (a sink that
    /// buffers writes pushes them out then).
    pub tick_interval: Duration,
    /// How often `REPLCONF ACK` is sent (Redis replicas send one every second).
    pub ack_interval: Duration,
    /// The port announced with `REPLCONF listening-port`. The source lists us with it in
    /// `INFO replication`; 0 (the default) says nobody can connect to us, so a Sentinel that
    /// discovers us can never pick us as a master.
    pub listening_port: u16,
    /// How the RDB of a full resynchronisation is read.
    pub reader: ReaderOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
            tick_interval: Duration::from_millis(100),
            ack_interval: Duration::from_secs(1),
            listening_port: 0,
            reader: ReaderOptions::default(),
        }
    }
}

/// Why the source sent a full RDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullSyncReason {
    /// No checkpoint was given: `PSYNC ? -1`.
    NoCheckpoint,
    /// The source could not continue from the checkpoint: its replication id is unknown there,
    /// or the offset fell out of the source's backlog (`repl-backlog-size`). Everything the
    /// target holds from this source must be replaced by the new RDB.
    CheckpointRefused {
        /// The checkpoint we asked to continue from.
        asked: Checkpoint,
    },
}

/// How a session started.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A full resynchronisation: the RDB went to the event sink; the command stream starts at
    /// `offset` in database 0.
    Full {
        /// The source's replication id.
        replid: String,
        /// The offset the RDB corresponds to.
        offset: u64,
        /// Why a full resynchronisation happened.
        reason: FullSyncReason,
        /// What the RDB reader learned.
        rdb: ReadSummary,
    },
    /// A partial resynchronisation: the command stream resumes right after the checkpoint.
    Continue {
        /// The replication id to store in later checkpoints: differs from the checkpoint's
        /// after a failover on the source's side (`+CONTINUE <new replid>`).
        replid: String,
        /// The checkpoint's offset, where the stream resumes.
        offset: u64,
        /// Whether the source's replication id changed since the checkpoint.
        replid_changed: bool,
    },
}

impl Start {
    /// The replication id the stream continues under.
    pub fn replid(&self) -> &str {
        match self {
            Self::Full { replid, .. } | Self::Continue { replid, .. } => replid,
        }
    }

    /// The offset the command stream starts at.
    pub fn offset(&self) -> u64 {
        match self {
            Self::Full { offset, .. } | Self::Continue { offset, .. } => *offset,
        }
    }

    /// Whether the target had to receive a full RDB.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }
}

/// A connection past `AUTH` and `REPLCONF`, ready for `PSYNC`.
#[derive(Debug)]
pub struct Connected {
    addr: String,
    reader: BufReader<TcpStream>,
    options: ClientOptions,
}

/// A replication session delivering the command stream. Dropping it closes the connection.
#[derive(Debug)]
pub struct ReplicationClient {
    addr: String,
    replid: String,
    socket: TcpStream,
    writer: SharedWriter,
    applied: AppliedOffset,
    stream: CommandStream,
    /// Where socket reads land before joining the stream's buffer.
    read_chunk: Vec<u8>,
    options: ClientOptions,
    last_data: Instant,
    /// When [`CommandSink::idle`] was last called: it is also called every `tick_interval`
    /// while the source keeps sending, see [`ReplicationClient::stream`].
    last_tick: Instant,
    /// True after a full resynchronisation until the first byte of the command stream: see
    /// [`ReplicationClient::stream`] for why ACKs are repeated meanwhile.
    awaiting_stream: bool,
    // Declared last so it is dropped after the socket is shut down in `Drop`.
    _acks: AckThread,
}

impl ReplicationClient {
    /// Connects to `addr` (`host:port`), authenticates and announces itself as a replica able
    /// to read diskless transfers (`capa eof`) and to follow a failover (`capa psync2`).
    ///
    /// # Errors
    /// [`ReplicationError::Connect`] / [`ConnectTimeout`](ReplicationError::ConnectTimeout)
    /// naming the address, [`AuthRefused`](ReplicationError::AuthRefused) /
    /// [`AuthRequired`](ReplicationError::AuthRequired), [`Refused`](ReplicationError::Refused)
    /// when `REPLCONF` is not allowed, and I/O errors.
    pub fn connect(
        addr: &str,
        auth: &Auth,
        options: ClientOptions,
    ) -> Result<Connected, ReplicationError> {
        let socket = open(addr, options.connect_timeout)?;
        let io_error =
            |e| ReplicationError::from_io(addr, Stage::Handshake, e, options.read_timeout);
        socket
            .set_read_timeout(Some(options.read_timeout))
            .map_err(io_error)?;
        socket
            .set_write_timeout(Some(options.write_timeout))
            .map_err(io_error)?;
        // ACKs are tiny and latency matters to the source's WAIT.
        socket.set_nodelay(true).map_err(io_error)?;
        let mut connected = Connected {
            addr: addr.to_owned(),
            reader: BufReader::with_capacity(64 * 1024, socket),
            options,
        };
        connected.authenticate(auth)?;
        let port = connected.options.listening_port.to_string();
        connected.replconf(&[b"REPLCONF", b"listening-port", port.as_bytes()])?;
        connected.replconf(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])?;
        Ok(connected)
    }

    /// The source address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The replication id the stream runs under (store it in checkpoints).
    pub fn replid(&self) -> &str {
        &self.replid
    }

    /// The offset after the last byte consumed (delivered items, PINGs and `REPLCONF` alike).
    pub fn offset(&self) -> u64 {
        self.stream.offset()
    }

    /// The current database.
    pub fn db(&self) -> u64 {
        self.stream.db()
    }

    /// The shared counter whose value is acknowledged to the source: advance it once the
    /// target has applied an item ([`StreamItem::offset`]).
    pub fn applied_offset(&self) -> AppliedOffset {
        self.applied.clone()
    }

    /// The position reached so far as a checkpoint. Store it only once the target has applied
    /// everything up to [`offset`](Self::offset) and the stream is not inside a transaction.
    pub fn position(&self) -> Checkpoint {
        Checkpoint {
            replid: self.replid.clone(),
            offset: self.stream.offset(),
            db: self.stream.db(),
        }
    }

    /// Delivers the command stream to `sink` until it returns [`Flow::Stop`] (from an item or
    /// an idle tick); returns the offset reached. Calling it again resumes where it stopped.
    ///
    /// PINGs and `REPLCONF` from the source advance the offset without reaching the sink;
    /// `REPLCONF GETACK` is answered at once with the applied offset.
    ///
    /// # Errors
    /// [`ReplicationError::Disconnected`] (naming whether a command was cut),
    /// [`Timeout`](ReplicationError::Timeout) after `read_timeout` of silence,
    /// [`Protocol`](ReplicationError::Protocol), [`Sink`](ReplicationError::Sink).
    pub fn stream<S: CommandSink + ?Sized>(
        &mut self,
        sink: &mut S,
    ) -> Result<u64, ReplicationError> {
        loop {
            loop {
                let step = match self.stream.next_step() {
                    Ok(Some(step)) => step,
                    Ok(None) => break,
                    Err(error) => return Err(self.protocol(&error)),
                };
                match step {
                    Step::Nothing => {}
                    Step::AckRequested => {
                        let applied = self.applied.get();
                        self.writer.send_ack(applied).map_err(|e| {
                            ReplicationError::from_io(
                                &self.addr,
                                Stage::BetweenCommands,
                                e,
                                self.options.write_timeout,
                            )
                        })?;
                    }
                    Step::Deliver(item) => match sink.item(&item) {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop) => return Ok(self.stream.offset()),
                        Err(source) => {
                            return Err(ReplicationError::Sink {
                                addr: self.addr.clone(),
                                source,
                            });
                        }
                    },
                }
            }
            // Every whole item read so far is delivered. A source that writes a little but
            // often is never silent for a poll interval, and a sink that buffers (the applier
            // sends when 64 KiB are queued) would then hold its writes for seconds: tick on
            // time as well as on silence.
            if self.last_tick.elapsed() >= self.options.tick_interval {
                self.last_tick = Instant::now();
                match sink.idle(self.stream.offset()) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => return Ok(self.stream.offset()),
                    Err(source) => {
                        return Err(ReplicationError::Sink {
                            addr: self.addr.clone(),
                            source,
                        });
                    }
                }
            }
            match self.socket.read(&mut self.read_chunk) {
                Ok(0) => {
                    return Err(ReplicationError::Disconnected {
                        addr: self.addr.clone(),
                        stage: self.stage(),
                    });
                }
                Ok(n) => {
                    self.awaiting_stream = false;
                    self.last_data = Instant::now();
                    self.stream.extend(&self.read_chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.last_data.elapsed() >= self.options.read_timeout {
                        return Err(ReplicationError::Timeout {
                            addr: self.addr.clone(),
                            stage: self.stage(),
                            after: self.options.read_timeout,
                        });
                    }
                    if self.awaiting_stream {
                        // A diskless source ignores an ACK that arrives before it has reaped
                        // the child that wrote the RDB, and starts the stream only on the next
                        // one: repeating it each poll saves most of an `ack_interval`.
                        self.writer.send_ack(self.applied.get()).map_err(|e| {
                            ReplicationError::from_io(
                                &self.addr,
                                Stage::BetweenCommands,
                                e,
                                self.options.write_timeout,
                            )
                        })?;
                    }
                    self.last_tick = Instant::now();
                    match sink.idle(self.stream.offset()) {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop) => return Ok(self.stream.offset()),
                        Err(source) => {
                            return Err(ReplicationError::Sink {
                                addr: self.addr.clone(),
                                source,
                            });
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ReplicationError::from_io(
                        &self.addr,
                        self.stage(),
                        e,
                        self.options.read_timeout,
                    ));
                }
            }
        }
    }

    fn stage(&self) -> Stage {
        if self.stream.has_partial() {
            Stage::MidCommand
        } else {
            Stage::BetweenCommands
        }
    }

    fn protocol(&self, error: &StreamError) -> ReplicationError {
        ReplicationError::Protocol {
            addr: self.addr.clone(),
            stage: self.stage(),
            detail: error.to_string(),
        }
    }
}

impl Drop for ReplicationClient {
    fn drop(&mut self) {
        // Close the connection now, not when the ACK thread lets go of its handle: the source
        // must see a replica that is gone.
        self.writer.shutdown();
    }
}

impl Connected {
    /// Sends `PSYNC <replid> <offset+1>` for `resume_from`, or `PSYNC ? -1` without one. On a
    /// full resynchronisation the RDB is read into `rdb_sink` before this returns.
    ///
    /// Right after the RDB, `REPLCONF ACK <FULLRESYNC offset>` goes out: a diskless source
    /// starts the command stream only once it gets it, so the RDB counts as applied once the
    /// sink has taken its last event. From then on `REPLCONF ACK` reports
    /// [`ReplicationClient::applied_offset`], which starts at the session's start offset.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] when the source refuses `PSYNC` (`-NOPERM`, renamed or
    /// disabled command, `-NOMASTERLINK` from a replica not yet synced with its master),
    /// [`Rdb`](ReplicationError::Rdb) when the RDB cannot be read or the sink stopped it,
    /// [`Disconnected`](ReplicationError::Disconnected) with [`Stage::Rdb`] for a transfer cut
    /// short, [`Protocol`](ReplicationError::Protocol) for anything unexpected.
    pub fn psync<S: EventSink + ?Sized>(
        self,
        resume_from: Option<&Checkpoint>,
        rdb_sink: &mut S,
    ) -> Result<(ReplicationClient, Start), ReplicationError> {
        self.psync_inner(resume_from, rdb_sink, None)
    }

    /// [`psync`](Self::psync) that also writes a full resynchronisation's RDB, byte for byte
    /// as the source sent it (without the transfer's framing), to `rdb_copy` while the reader
    /// checks it: a backup that is verified as it is taken. A write error of `rdb_copy` ends
    /// the transfer (as an [`Rdb`](ReplicationError::Rdb) error carrying the I/O error); the
    /// caller knows its own writer's failure better and should report that.
    ///
    /// # Errors
    /// As [`psync`](Self::psync).
    pub fn psync_copying<S: EventSink + ?Sized>(
        self,
        resume_from: Option<&Checkpoint>,
        rdb_sink: &mut S,
        rdb_copy: &mut dyn Write,
    ) -> Result<(ReplicationClient, Start), ReplicationError> {
        self.psync_inner(resume_from, rdb_sink, Some(rdb_copy))
    }

    /// Takes one RDB and nothing else: `REPLCONF rdb-only 1` (Redis 7.0+, Valkey), so the source
    /// neither keeps this connection as a replica nor buffers a command stream for it, then
    /// `PSYNC ? -1`, the RDB read into `rdb_sink` and copied to `rdb_copy` as in
    /// [`psync_copying`](Self::psync_copying). Returns the replication id and offset the RDB
    /// corresponds to, and what the reader learned; the connection is closed.
    ///
    /// # Errors
    /// [`ReplicationError::Refused`] when the source does not know `rdb-only` (Redis before
    /// 7.0) or refuses `PSYNC`; otherwise as [`psync`](Self::psync).
    pub fn take_rdb<S: EventSink + ?Sized>(
        mut self,
        rdb_sink: &mut S,
        rdb_copy: &mut dyn Write,
    ) -> Result<(String, u64, ReadSummary), ReplicationError> {
        self.replconf(&[b"REPLCONF", b"rdb-only", b"1"])?;
        self.send(&[b"PSYNC", b"?", b"-1"])?;
        let reply = self.reply_line(true)?;
        let Some(rest) = reply.strip_prefix(b"+FULLRESYNC ") else {
            if reply.starts_with(b"-") {
                return Err(self.refusal("PSYNC", &reply));
            }
            return Err(
                self.handshake_protocol(format!("unexpected reply to PSYNC: {}", shown(&reply)))
            );
        };
        let (replid, offset) = self.parse_fullresync(rest)?;
        let (summary, _) = self.read_rdb(rdb_sink, Some(rdb_copy))?;
        Ok((replid, offset, summary))
    }

    fn psync_inner<S: EventSink + ?Sized>(
        mut self,
        resume_from: Option<&Checkpoint>,
        rdb_sink: &mut S,
        rdb_copy: Option<&mut dyn Write>,
    ) -> Result<(ReplicationClient, Start), ReplicationError> {
        let offset_text;
        let command: [&[u8]; 3] = match resume_from {
            Some(checkpoint) => {
                offset_text = checkpoint.offset.saturating_add(1).to_string();
                [
                    b"PSYNC",
                    checkpoint.replid.as_bytes(),
                    offset_text.as_bytes(),
                ]
            }
            None => [b"PSYNC", b"?", b"-1"],
        };
        self.send(&command)?;
        let reply = self.reply_line(true)?;
        let (start, db) = if let Some(rest) = reply.strip_prefix(b"+FULLRESYNC ") {
            let (replid, offset) = self.parse_fullresync(rest)?;
            let (rdb, stream_db) = self.read_rdb(rdb_sink, rdb_copy)?;
            let reason = match resume_from {
                Some(asked) => FullSyncReason::CheckpointRefused {
                    asked: asked.clone(),
                },
                None => FullSyncReason::NoCheckpoint,
            };
            let start = Start::Full {
                replid,
                offset,
                reason,
                rdb,
            };
            (start, stream_db)
        } else if let (Some(rest), Some(checkpoint)) = (
            reply
                .strip_prefix(b"+CONTINUE")
                .filter(|rest| rest.is_empty() || rest.starts_with(b" ")),
            resume_from,
        ) {
            let new_replid = std::str::from_utf8(rest).unwrap_or_default().trim();
            let replid = if new_replid.is_empty() {
                checkpoint.replid.clone()
            } else {
                new_replid.to_owned()
            };
            let start = Start::Continue {
                replid_changed: replid != checkpoint.replid,
                replid,
                offset: checkpoint.offset,
            };
            (start, checkpoint.db)
        } else if reply.starts_with(b"-") {
            return Err(self.refusal("PSYNC", &reply));
        } else {
            return Err(
                self.handshake_protocol(format!("unexpected reply to PSYNC: {}", shown(&reply)))
            );
        };
        let client = self.into_client(&start, db)?;
        Ok((client, start))
    }

    fn into_client(self, start: &Start, db: u64) -> Result<ReplicationClient, ReplicationError> {
        let Connected {
            addr,
            reader,
            options,
        } = self;
        // Whatever the reader buffered past the RDB is the beginning of the command stream.
        let leftover = reader.buffer().to_vec();
        let leftover_empty = leftover.is_empty();
        let socket = reader.into_inner();
        let io_error =
            |e| ReplicationError::from_io(&addr, Stage::BetweenCommands, e, options.write_timeout);
        // Short reads let the stream loop call the sink's idle hook; silence is timed there.
        socket
            .set_read_timeout(Some(options.poll_interval))
            .map_err(io_error)?;
        let writer = SharedWriter::new(socket.try_clone().map_err(io_error)?);
        let applied = AppliedOffset::new(start.offset());
        writer.send_ack(applied.get()).map_err(io_error)?;
        let acks = AckThread::start(writer.clone(), applied.clone(), options.ack_interval)
            .map_err(io_error)?;
        Ok(ReplicationClient {
            replid: start.replid().to_owned(),
            socket,
            writer,
            applied,
            stream: CommandStream::new(start.offset(), db, leftover),
            read_chunk: vec![0; READ_CHUNK],
            options,
            last_data: Instant::now(),
            last_tick: Instant::now(),
            awaiting_stream: start.is_full() && leftover_empty,
            _acks: acks,
            addr,
        })
    }

    fn read_rdb<S: EventSink + ?Sized>(
        &mut self,
        rdb_sink: &mut S,
        rdb_copy: Option<&mut dyn Write>,
    ) -> Result<(ReadSummary, u64), ReplicationError> {
        let timeout = self.options.read_timeout;
        let mut rdb_sink = NoteStreamDb {
            inner: rdb_sink,
            db: 0,
        };
        let length = read_transfer_header(&mut self.reader)
            .map_err(|e| ReplicationError::from_transfer(&self.addr, e, timeout))?;
        let read = match rdb_copy {
            None => RdbReader::new(&mut self.reader, self.options.reader.clone())
                .read_all(&mut rdb_sink),
            Some(copy) => RdbReader::new(
                CopyingReader::new(&mut self.reader, copy),
                self.options.reader.clone(),
            )
            .read_all(&mut rdb_sink),
        };
        let summary = read.map_err(|e| ReplicationError::from_rdb(&self.addr, e, timeout))?;
        match length {
            TransferLength::Sized(announced) if announced != summary.bytes => {
                return Err(ReplicationError::Protocol {
                    addr: self.addr.clone(),
                    stage: Stage::Rdb,
                    detail: format!(
                        "the transfer announced {announced} bytes but the RDB is {} bytes",
                        summary.bytes
                    ),
                });
            }
            TransferLength::Sized(_) => {}
            TransferLength::EndMark(mark) => read_end_mark(&mut self.reader, &mark)
                .map_err(|e| ReplicationError::from_transfer(&self.addr, e, timeout))?,
        }
        Ok((summary, rdb_sink.db))
    }

    fn parse_fullresync(&self, rest: &[u8]) -> Result<(String, u64), ReplicationError> {
        let text = std::str::from_utf8(rest).unwrap_or_default();
        let mut words = text.split(' ');
        match (
            words.next(),
            words.next().map(str::parse::<u64>),
            words.next(),
        ) {
            (Some(replid), Some(Ok(offset)), None) if !replid.is_empty() => {
                Ok((replid.to_owned(), offset))
            }
            _ => {
                Err(self
                    .handshake_protocol(format!("malformed +FULLRESYNC reply: {}", shown(rest))))
            }
        }
    }

    fn authenticate(&mut self, auth: &Auth) -> Result<(), ReplicationError> {
        let Some(password) = &auth.password else {
            return Ok(());
        };
        match &auth.user {
            Some(user) => self.send(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
            None => self.send(&[b"AUTH", password.as_bytes()])?,
        }
        let reply = self.reply_line(false)?;
        if reply.starts_with(b"+") {
            return Ok(());
        }
        Err(ReplicationError::AuthRefused {
            addr: self.addr.clone(),
            reply: shown(reply.strip_prefix(b"-").unwrap_or(&reply)),
        })
    }

    /// Sends one `REPLCONF` and waits for its `+OK` (one command at a time: Redis refuses
    /// PSYNC while a reply to an earlier command is still pending).
    fn replconf(&mut self, command: &[&[u8]]) -> Result<(), ReplicationError> {
        self.send(command)?;
        let reply = self.reply_line(false)?;
        if reply.starts_with(b"+") {
            Ok(())
        } else if reply.starts_with(b"-") {
            Err(self.refusal("REPLCONF", &reply))
        } else {
            Err(self.handshake_protocol(format!("unexpected reply to REPLCONF: {}", shown(&reply))))
        }
    }

    fn refusal(&self, command: &'static str, reply: &[u8]) -> ReplicationError {
        let text = shown(reply.strip_prefix(b"-").unwrap_or(reply));
        let addr = self.addr.clone();
        if text.starts_with("NOAUTH") {
            ReplicationError::AuthRequired { addr, reply: text }
        } else {
            ReplicationError::Refused {
                addr,
                command,
                reply: text,
            }
        }
    }

    fn handshake_protocol(&self, detail: String) -> ReplicationError {
        ReplicationError::Protocol {
            addr: self.addr.clone(),
            stage: Stage::Handshake,
            detail,
        }
    }

    fn send(&mut self, args: &[&[u8]]) -> Result<(), ReplicationError> {
        let mut command = Vec::new();
        cinnabar_resp::encode::command(&mut command, args);
        self.reader.get_mut().write_all(&command).map_err(|e| {
            ReplicationError::from_io(&self.addr, Stage::Handshake, e, self.options.write_timeout)
        })
    }

    /// Reads one reply line without its line end. With `skip_empty`, bare newlines (the
    /// keep-alives a source sends while it prepares a `PSYNC` reply) are skipped.
    fn reply_line(&mut self, skip_empty: bool) -> Result<Vec<u8>, ReplicationError> {
        loop {
            let mut line = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_HANDSHAKE_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| {
                    ReplicationError::from_io(
                        &self.addr,
                        Stage::Handshake,
                        e,
                        self.options.read_timeout,
                    )
                })?;
            if read == 0 {
                return Err(ReplicationError::Disconnected {
                    addr: self.addr.clone(),
                    stage: Stage::Handshake,
                });
            }
            if !line.ends_with(b"\n") {
                return Err(self
                    .handshake_protocol(format!("reply line too long or cut: {}", shown(&line))));
            }
            let body = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(&line)
                .to_vec();
            if body.is_empty() && skip_empty {
                continue;
            }
            return Ok(body);
        }
    }
}

/// Forwards the RDB's events and notes its `repl-stream-db` auxiliary field: the database the
/// command stream continues in. A master forces a `SELECT` before the first command after a
/// full resynchronisation, but a replica serving as the source relays its master's stream
/// as it is, and that stream does not repeat the `SELECT` that preceded the RDB.
struct NoteStreamDb<'a, S: ?Sized> {
    inner: &'a mut S,
    db: u64,
}

impl<S: EventSink + ?Sized> EventSink for NoteStreamDb<'_, S> {
    fn event(&mut self, event: Event) -> Result<(), SinkError> {
        if let Event::Aux { key, value } = &event
            && key == b"repl-stream-db"
        {
            // Written with Redis's integer encoding, which the reader returns as decimal text.
            self.db = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or("the RDB's repl-stream-db field is not a database number")?;
        }
        self.inner.event(event)
    }
}

/// Opens a TCP connection to the first address of `addr` that answers.
fn open(addr: &str, timeout: Duration) -> Result<TcpStream, ReplicationError> {
    let candidates: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| ReplicationError::Connect {
            addr: addr.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = None;
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            ReplicationError::ConnectTimeout {
                addr: addr.to_owned(),
                after: timeout,
            }
        }
        Some(source) => ReplicationError::Connect {
            addr: addr.to_owned(),
            source,
        },
        None => ReplicationError::Connect {
            addr: addr.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolves to no address",
            ),
        },
    })
}
