//! Why a replication client stopped: one typed error per cause, each naming the source address
//! and the stage it was in, so an operator reading a log line knows where to look.
//!
//! An error must never carry a password, a key or a value: replies from the source are shown
//! escaped and cut short, and only handshake replies (never data) are quoted.

use std::io;
use std::time::Duration;

use crate::error::{RdbError, SinkError};
use crate::transfer::TransferError;

/// Where in a replication session something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting, `AUTH`, `REPLCONF` or waiting for the `PSYNC` reply.
    Handshake,
    /// Receiving the RDB of a full resynchronisation.
    Rdb,
    /// Between two commands of the command stream.
    BetweenCommands,
    /// Inside a command of the command stream (part of it was received).
    MidCommand,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Handshake => "during the handshake",
            Self::Rdb => "in the middle of the RDB transfer",
            Self::BetweenCommands => "in the command stream",
            Self::MidCommand => "in the middle of a command of the command stream",
        })
    }
}

/// Why a replication session failed. After any of these the session is over; reconnect with
/// the last stored [`Checkpoint`](crate::checkpoint::Checkpoint).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The TCP connection could not be made (refused, unreachable, unresolvable name).
    #[error("cannot connect to the replication source {addr}: {source}")]
    Connect {
        /// The source address.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Nothing answered the connection attempt in time.
    #[error("the replication source {addr} did not accept a connection within {after:?}")]
    ConnectTimeout {
        /// The source address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
    /// The source needs a password and none was given (`-NOAUTH`).
    #[error("the replication source {addr} requires authentication: {reply}")]
    AuthRequired {
        /// The source address.
        addr: String,
        /// The source's reply, escaped.
        reply: String,
    },
    /// The source refused the credentials (`-WRONGPASS`, or a password for a server without
    /// one).
    #[error("the replication source {addr} refused the credentials: {reply}")]
    AuthRefused {
        /// The source address.
        addr: String,
        /// The source's reply, escaped.
        reply: String,
    },
    /// The source refused a replication command: the user lacks the right (`-NOPERM`), the
    /// command is renamed or disabled, or the source cannot serve replicas right now
    /// (`-NOMASTERLINK`, `-LOADING`; see [`ReplicationError::is_transient`]).
    #[error("the replication source {addr} refused {command}: {reply}")]
    Refused {
        /// The source address.
        addr: String,
        /// The refused command (`REPLCONF` or `PSYNC`).
        command: &'static str,
        /// The source's reply, escaped.
        reply: String,
    },
    /// The source closed the connection.
    #[error("the replication source {addr} closed the connection {stage}")]
    Disconnected {
        /// The source address.
        addr: String,
        /// Where the session was.
        stage: Stage,
    },
    /// The source sent nothing for longer than the read timeout.
    #[error("the replication source {addr} sent nothing for {after:?} {stage}")]
    Timeout {
        /// The source address.
        addr: String,
        /// Where the session was.
        stage: Stage,
        /// How long it was silent.
        after: Duration,
    },
    /// Reading from or writing to the socket failed.
    #[error("I/O error with the replication source {addr} {stage}: {source}")]
    Io {
        /// The source address.
        addr: String,
        /// Where the session was.
        stage: Stage,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The source sent something the replication protocol does not allow there.
    #[error("protocol error from the replication source {addr} {stage}: {detail}")]
    Protocol {
        /// The source address.
        addr: String,
        /// Where the session was.
        stage: Stage,
        /// What was wrong (source bytes escaped and cut short).
        detail: String,
    },
    /// The RDB of a full resynchronisation could not be read.
    #[error("the RDB from the replication source {addr} cannot be read: {source}")]
    Rdb {
        /// The source address.
        addr: String,
        /// The reader's error (a sink that asked to stop is [`RdbError::Sink`]).
        #[source]
        source: RdbError,
    },
    /// The command sink asked to stop with an error.
    #[error("the command sink stopped the stream from {addr}: {source}")]
    Sink {
        /// The source address.
        addr: String,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
}

impl ReplicationError {
    /// Whether retrying the same session later may succeed without anyone changing anything:
    /// a lost or refused connection, a timeout, or a source that is itself loading or syncing
    /// (`-LOADING`, `-NOMASTERLINK`, `-MASTERDOWN`). Credentials, permissions, protocol and
    /// RDB errors are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Disconnected { .. }
            | Self::Timeout { .. }
            | Self::Io { .. } => true,
            Self::Refused { reply, .. } => ["LOADING", "NOMASTERLINK", "MASTERDOWN"]
                .iter()
                .any(|code| reply.starts_with(code)),
            Self::Rdb { source, .. } => {
                matches!(source, RdbError::Truncated { .. } | RdbError::Io { .. })
            }
            _ => false,
        }
    }

    /// Maps an I/O error to a timeout, a disconnection or an I/O error.
    pub(crate) fn from_io(addr: &str, stage: Stage, error: io::Error, timeout: Duration) -> Self {
        let addr = addr.to_owned();
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout {
                addr,
                stage,
                after: timeout,
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Disconnected { addr, stage },
            _ => Self::Io {
                addr,
                stage,
                source: error,
            },
        }
    }

    /// Maps a transfer framing error (before or after the RDB).
    pub(crate) fn from_transfer(addr: &str, error: TransferError, timeout: Duration) -> Self {
        match error {
            TransferError::Io(e) => Self::from_io(addr, Stage::Rdb, e, timeout),
            TransferError::Truncated => Self::Disconnected {
                addr: addr.to_owned(),
                stage: Stage::Rdb,
            },
            other => Self::Protocol {
                addr: addr.to_owned(),
                stage: Stage::Rdb,
                detail: other.to_string(),
            },
        }
    }

    /// Maps an RDB reader error: a cut connection is a disconnection, the rest stays an RDB
    /// error.
    pub(crate) fn from_rdb(addr: &str, error: RdbError, timeout: Duration) -> Self {
        match error {
            RdbError::Truncated { .. } => Self::Disconnected {
                addr: addr.to_owned(),
                stage: Stage::Rdb,
            },
            RdbError::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Self::from_io(addr, Stage::Rdb, source, timeout)
            }
            other => Self::Rdb {
                addr: addr.to_owned(),
                source: other,
            },
        }
    }
}

/// Source bytes fit for an error message: escaped, without the line end, cut to 200 bytes.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let body = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    let mut text: String = body
        .iter()
        .take(200)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    if body.len() > 200 {
        text.push('…');
    }
    text
}
