//! The command stream after the RDB (or after `+CONTINUE`): RESP commands cut from the socket
//! bytes, each reported with the replication offset just after it, the database it applies to
//! and whether it is inside a `MULTI`/`EXEC` block.
//!
//! It must never lose count of a byte: the offset is the start offset plus every byte consumed,
//! PINGs, `REPLCONF` and skipped empty items included, exactly as the source counts its
//! `master_repl_offset`. It never copies an argument (they are slices of the read buffer).

use cinnabar_resp::{Limits, Parsed, ProtocolError, Request, RequestParser};

use crate::error::SinkError;

/// Whether the stream goes on after an item or an idle tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep streaming.
    Continue,
    /// Return from [`ReplicationClient::stream`](crate::client::ReplicationClient::stream)
    /// now; calling it again resumes with the next command.
    Stop,
}

/// One command's arguments, as slices of the client's read buffer (valid for the call only).
#[derive(Debug, Clone, Copy)]
pub struct CommandArgs<'a> {
    request: &'a Request,
    buf: &'a [u8],
}

impl<'a> CommandArgs<'a> {
    /// The command name as sent (`SET`, `set`, …).
    pub fn name(&self) -> &'a [u8] {
        self.get(0).unwrap_or_default()
    }

    /// Argument `i`; 0 is the command name.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.request.arg(i, self.buf)
    }

    /// Number of arguments, the name included.
    pub fn len(&self) -> usize {
        self.request.len()
    }

    /// Always false for a delivered command (empty items are skipped), kept for the
    /// `len`/`is_empty` pair.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty()
    }

    /// Every argument in order, the name first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        self.request.args(self.buf)
    }

    /// Owned copies of the arguments (for tests and queues).
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

/// What an item of the command stream is.
#[derive(Debug, Clone, Copy)]
pub enum ItemKind<'a> {
    /// A data command to apply to database [`StreamItem::db`].
    Command(CommandArgs<'a>),
    /// `SELECT`: the following commands apply to database `db`.
    SelectDb {
        /// The new current database.
        db: u64,
    },
    /// `MULTI`: the following commands up to [`ItemKind::Exec`] are one atomic unit.
    Multi,
    /// `EXEC`: the atomic unit is complete.
    Exec,
}

/// One item of the command stream, as given to a [`CommandSink`].
#[derive(Debug, Clone, Copy)]
pub struct StreamItem<'a> {
    /// The replication offset just after this item: once the target has applied it (and every
    /// item before it), this is the offset to acknowledge and to checkpoint.
    pub offset: u64,
    /// The database current after this item (the one a [`ItemKind::Command`] applies to).
    pub db: u64,
    /// True from `MULTI` up to, not including, `EXEC`: a checkpoint must not be taken at such
    /// an item, or a resumed stream would start inside a transaction.
    pub in_transaction: bool,
    /// What the item is.
    pub kind: ItemKind<'a>,
}

/// Receives the command stream. Implemented for every
/// `FnMut(&StreamItem<'_>) -> Result<Flow, SinkError>` (whose idle ticks always continue).
pub trait CommandSink {
    /// Handles one item. An error ends the stream with
    /// [`ReplicationError::Sink`](crate::client::ReplicationError::Sink).
    ///
    /// # Errors
    /// Whatever the sink decides.
    fn item(&mut self, item: &StreamItem<'_>) -> Result<Flow, SinkError>;

    /// Called when the source sent nothing for a poll interval, and at least once per poll
    /// interval while it keeps sending, always between items, with the offset reached so far
    /// (it also counts PINGs and `REPLCONF` the sink never sees): the moment to check a
    /// shutdown flag, to push out buffered writes, or to acknowledge an idle stream.
    ///
    /// # Errors
    /// Whatever the sink decides.
    fn idle(&mut self, offset: u64) -> Result<Flow, SinkError> {
        let _ = offset;
        Ok(Flow::Continue)
    }
}

impl<F: FnMut(&StreamItem<'_>) -> Result<Flow, SinkError>> CommandSink for F {
    fn item(&mut self, item: &StreamItem<'_>) -> Result<Flow, SinkError> {
        self(item)
    }
}

/// What the reading loop must do with one parsed command.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// Deliver this item to the sink.
    Deliver(StreamItem<'a>),
    /// The source asked for an acknowledgement (`REPLCONF GETACK`).
    AckRequested,
    /// Nothing to deliver (a PING, another `REPLCONF`, an empty item).
    Nothing,
}

/// Why the bytes of the command stream are not what a source sends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("{0}")]
    Resp(#[from] ProtocolError),
    #[error("SELECT with an invalid database index `{0}`")]
    BadSelect(String),
}

/// The unconsumed bytes of the command stream and the position in it.
#[derive(Debug)]
pub(crate) struct CommandStream {
    parser: RequestParser,
    request: Request,
    buf: Vec<u8>,
    /// Bytes of `buf` before this index are consumed.
    start: usize,
    offset: u64,
    db: u64,
    in_transaction: bool,
}

impl CommandStream {
    /// A stream at `offset` in database `db`, with bytes already read past the RDB.
    pub(crate) fn new(offset: u64, db: u64, leftover: Vec<u8>) -> Self {
        Self {
            parser: RequestParser::new(Limits::default()),
            request: Request::new(),
            buf: leftover,
            start: 0,
            offset,
            db,
            in_transaction: false,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn db(&self) -> u64 {
        self.db
    }

    /// Whether part of a command is waiting for more bytes.
    pub(crate) fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Appends bytes read from the socket.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        // Drop consumed bytes before growing, so the buffer stays about one command long.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
            // Offsets of a partial parse pointed into the old layout.
            self.request.reset();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Parses the next complete command, advancing the offset past it. `None` when more bytes
    /// are needed.
    pub(crate) fn next_step(&mut self) -> Result<Option<Step<'_>>, StreamError> {
        let consumed = match self
            .parser
            .parse(&self.buf[self.start..], &mut self.request)?
        {
            Parsed::Incomplete => return Ok(None),
            Parsed::Skipped { consumed } => {
                self.advance(consumed);
                return Ok(Some(Step::Nothing));
            }
            Parsed::Complete { consumed } => consumed,
        };
        let command_start = self.start;
        self.advance(consumed);
        let args = CommandArgs {
            request: &self.request,
            buf: &self.buf[command_start..],
        };
        let name = args.name();
        let kind = if name.eq_ignore_ascii_case(b"PING") {
            return Ok(Some(Step::Nothing));
        } else if name.eq_ignore_ascii_case(b"REPLCONF") {
            let getack = args
                .get(1)
                .is_some_and(|sub| sub.eq_ignore_ascii_case(b"GETACK"));
            return Ok(Some(if getack {
                Step::AckRequested
            } else {
                Step::Nothing
            }));
        } else if name.eq_ignore_ascii_case(b"SELECT") {
            let index = args.get(1).unwrap_or_default();
            let db = std::str::from_utf8(index)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| StreamError::BadSelect(super::error::shown(index)))?;
            self.db = db;
            ItemKind::SelectDb { db }
        } else if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_transaction = true;
            ItemKind::Multi
        } else if name.eq_ignore_ascii_case(b"EXEC") {
            self.in_transaction = false;
            ItemKind::Exec
        } else {
            ItemKind::Command(args)
        };
        Ok(Some(Step::Deliver(StreamItem {
            offset: self.offset,
            db: self.db,
            in_transaction: self.in_transaction,
            kind,
        })))
    }

    fn advance(&mut self, consumed: usize) {
        self.start += consumed;
        self.offset += consumed as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every step of `wire` fed in one piece, as (offset, db, in_transaction, description).
    fn steps(wire: &[u8], split_at: usize) -> Vec<String> {
        let mut stream = CommandStream::new(100, 0, Vec::new());
        stream.extend(&wire[..split_at]);
        let mut seen = Vec::new();
        let mut fed_rest = false;
        loop {
            let described = match stream.next_step().unwrap() {
                None if fed_rest => break,
                None => {
                    stream.extend(&wire[split_at..]);
                    fed_rest = true;
                    continue;
                }
                Some(Step::Nothing) => "nothing".to_owned(),
                Some(Step::AckRequested) => "getack".to_owned(),
                Some(Step::Deliver(item)) => {
                    let what = match item.kind {
                        ItemKind::Command(args) => args
                            .iter()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect::<Vec<_>>()
                            .join(" "),
                        ItemKind::SelectDb { db } => format!("select {db}"),
                        ItemKind::Multi => "multi".to_owned(),
                        ItemKind::Exec => "exec".to_owned(),
                    };
                    format!(
                        "{}@{} db{} tx={}",
                        what, item.offset, item.db, item.in_transaction
                    )
                }
            };
            seen.push(described);
        }
        assert_eq!(stream.offset(), 100 + wire.len() as u64);
        seen
    }

    #[test]
    fn offsets_count_every_byte_and_control_commands_are_not_data() {
        let wire: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n\
            *1\r\n$4\r\nPING\r\n\
            *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n\
            *3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n\
            *1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$4\r\nEXEC\r\n";
        let expected = [
            "select 3@123 db3 tx=false",
            "nothing",
            "SET k v@164 db3 tx=false",
            "getack",
            "multi@216 db3 tx=true",
            "INCR n@237 db3 tx=true",
            "exec@251 db3 tx=false",
        ];
        for split_at in 0..wire.len() {
            assert_eq!(steps(wire, split_at), expected, "split at {split_at}");
        }
    }

    #[test]
    fn a_command_cut_in_two_is_partial_until_its_last_byte() {
        let wire: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let mut stream = CommandStream::new(0, 0, Vec::new());
        assert!(!stream.has_partial());
        stream.extend(&wire[..10]);
        assert!(stream.next_step().unwrap().is_none());
        assert!(stream.has_partial());
        assert_eq!(stream.offset(), 0);
        stream.extend(&wire[10..]);
        assert!(matches!(
            stream.next_step().unwrap(),
            Some(Step::Deliver(_))
        ));
        assert!(!stream.has_partial());
        assert_eq!(stream.offset(), wire.len() as u64);
    }

    #[test]
    fn a_bad_select_is_a_protocol_error() {
        let mut stream = CommandStream::new(0, 0, b"*2\r\n$6\r\nSELECT\r\n$1\r\nx\r\n".to_vec());
        assert!(matches!(stream.next_step(), Err(StreamError::BadSelect(_))));
    }
}
