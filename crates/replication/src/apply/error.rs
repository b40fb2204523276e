//! The one error type of the applier: why writing to the target cluster failed or was refused.
//!
//! Every variant names what an operator needs to act (the node, the command, the key, the
//! numbers compared); none may ever carry a value's bytes — keys are quoted, shortened, and
//! values never appear.

use std::io;

use cinnabar_resp::ProtocolError;

/// Why the applier failed or refused an item. After a failure of the target (anything but the
/// refusals [`FlushRefused`](Self::FlushRefused), [`UnmappedDb`](Self::UnmappedDb),
/// [`CrossSlotUnsplittable`](Self::CrossSlotUnsplittable),
/// [`UnroutableCommand`](Self::UnroutableCommand), [`InsufficientCapacity`](Self::InsufficientCapacity)
/// and [`UncoveredSlots`](Self::UncoveredSlots)) the applier is poisoned: what reached the
/// target is unknown past [`Applier::acknowledged_offset`](crate::apply::Applier::acknowledged_offset),
/// and every later call returns [`Poisoned`](Self::Poisoned).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A TCP connection to a node could not be opened.
    #[error("cannot connect to {node}: {source}")]
    Connect {
        /// `host:port`.
        node: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to a node failed (a timeout included).
    #[error("I/O error with {node}: {source}")]
    Io {
        /// `host:port`.
        node: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A node closed the connection.
    #[error("{node} closed the connection")]
    Closed {
        /// `host:port`.
        node: String,
    },
    /// A node sent bytes that are not RESP.
    #[error("protocol error from {node}: {source}")]
    Protocol {
        /// `host:port`.
        node: String,
        /// The underlying error.
        #[source]
        source: ProtocolError,
    },
    /// A node answered a setup request (`AUTH`, `CLUSTER SLOTS`, `INFO`) with something unusable.
    #[error("{node} answered `{command}` with {reply}")]
    Setup {
        /// `host:port`.
        node: String,
        /// The request.
        command: &'static str,
        /// The reply, or what was wrong with it.
        reply: String,
    },
    /// The target refused a write: any error reply other than a redirect.
    #[error("{node} refused `{command}`{} with: {reply}", key_suffix(.key))]
    Rejected {
        /// `host:port`.
        node: String,
        /// The command's name.
        command: &'static str,
        /// The key, quoted and shortened, when the command has one.
        key: Option<String>,
        /// The error reply.
        reply: String,
    },
    /// A write was redirected (or asked to try again) too many times.
    #[error("`{command}`{} still redirected after {attempts} attempts (last: {reply})", key_suffix(.key))]
    RedirectLoop {
        /// The command's name.
        command: &'static str,
        /// The key, quoted and shortened.
        key: Option<String>,
        /// How many times it was sent.
        attempts: u32,
        /// The last redirect.
        reply: String,
    },
    /// The map has no master for a slot.
    #[error("no master serves slot {slot}")]
    NoOwner {
        /// The slot.
        slot: u16,
    },
    /// Not every slot is served: a full sync would lose keys.
    #[error("the target cluster does not serve slots {first}–{last} (the first uncovered range)")]
    UncoveredSlots {
        /// The first uncovered slot.
        first: u16,
        /// The last slot of that range.
        last: u16,
    },
    /// The source holds more data than the target may.
    #[error(
        "the source uses {source_used_memory} bytes but the target masters' maxmemory adds up to \
         {target_maxmemory} bytes"
    )]
    InsufficientCapacity {
        /// The source's `used_memory`.
        source_used_memory: u64,
        /// The sum of the target masters' `maxmemory`.
        target_maxmemory: u64,
    },
    /// `FLUSHALL`/`FLUSHDB` arrived and [`ApplyOptions::allow_flush`](crate::apply::ApplyOptions::allow_flush)
    /// is off: the source was flushed, and the target is left as it was.
    #[error(
        "`{command}` from the source refused: flushing the target needs allow_flush \
         (the target was left untouched)"
    )]
    FlushRefused {
        /// `FLUSHALL` or `FLUSHDB`.
        command: &'static str,
    },
    /// A key or command of a source database other than 0 with no entry in
    /// [`ApplyOptions::db_map`](crate::apply::ApplyOptions::db_map).
    #[error(
        "source database {db} has no destination: a cluster has only database 0 (add db {db} \
         to db_map to merge or skip it)"
    )]
    UnmappedDb {
        /// The source database.
        db: u64,
    },
    /// A multi-key command whose keys span slots and that cannot be split without changing
    /// its meaning.
    #[error(
        "`{command}` has keys in different slots and cannot be split without changing its meaning"
    )]
    CrossSlotUnsplittable {
        /// The command's name.
        command: &'static str,
    },
    /// A command the applier does not know where to send.
    #[error("`{command}`: {why}")]
    UnroutableCommand {
        /// The command's name as sent.
        command: String,
        /// Why.
        why: &'static str,
    },
    /// A captured value's RDB version is newer than the target reads, and its pieces were not
    /// reported (read with [`ValuePieces::Always`](crate::ValuePieces::Always) instead).
    #[error(
        "a value of RDB version {source_version} cannot be restored on a target reading up to \
         version {target_version}; read the RDB with ValuePieces::Always (see \
         Applier::reader_options)"
    )]
    RestoreUnsupported {
        /// The value's RDB version.
        source_version: u16,
        /// The newest version every target master reads.
        target_version: u16,
    },
    /// An RDB event arrived out of place (a value piece outside a key, a key inside a key).
    #[error("RDB event out of place: {what}")]
    UnexpectedEvent {
        /// What was wrong.
        what: &'static str,
    },
    /// An earlier failure left the target in an unknown state.
    #[error("the applier failed earlier and must be rebuilt: {first}")]
    Poisoned {
        /// The first failure.
        first: String,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" on key {k}"))
        .unwrap_or_default()
}

/// How many bytes of a key an error quotes.
const KEY_QUOTE_LIMIT: usize = 128;

/// A key quoted for an error message: escaped, at most [`KEY_QUOTE_LIMIT`] bytes.
pub(crate) fn quote_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(KEY_QUOTE_LIMIT)];
    let mut text = String::from("'");
    text.extend(shown.escape_ascii().map(char::from));
    text.push('\'');
    if key.len() > KEY_QUOTE_LIMIT {
        text.push('…');
    }
    text
}

/// An error reply's text, for a message (without `-` and CRLF, shortened).
pub(crate) fn reply_text(reply: &[u8]) -> String {
    let body = reply.strip_prefix(b"-").unwrap_or(reply);
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let shown = &body[..body.len().min(256)];
    String::from_utf8_lossy(shown).into_owned()
}
