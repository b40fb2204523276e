//! What the RDB reader reports: one [`Event`] per RDB record or per bounded batch of a value's
//! elements, and the [`EventSink`] that receives them.
//!
//! Events own their bytes (the reader reuses nothing a sink may keep); no event may ever hold a
//! whole big value — the reader splits values into batches bounded by
//! [`ReaderOptions`](crate::ReaderOptions).

use crate::crc64::crc64;
use crate::error::SinkError;

/// One step of an RDB, in file order.
///
/// A key is reported as [`Event::KeyStart`], then zero or more value pieces of the one kind the
/// key start announced, then [`Event::KeyEnd`]. Batches (`ListItems`, `SetMembers`, …) never
/// hold more than `batch_max_items` elements, and never more than `batch_max_bytes` bytes unless
/// one element alone is larger.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The header: the RDB format version.
    Header {
        /// `10` for Redis 7.0, `11` for Redis 7.2 and Valkey 7.2–8.
        version: u32,
    },
    /// An auxiliary field (`redis-ver`, `repl-id`, `repl-offset`, `ctime`, …).
    Aux {
        /// The field name.
        key: Vec<u8>,
        /// The field value.
        value: Vec<u8>,
    },
    /// The following keys belong to database `db`.
    SelectDb {
        /// The database number.
        db: u64,
    },
    /// Size hints for the current database.
    ResizeDb {
        /// How many keys it holds.
        keys: u64,
        /// How many of them have a TTL.
        expires: u64,
    },
    /// Size hints for one cluster slot (Valkey 8 in cluster mode).
    SlotInfo {
        /// The slot.
        slot: u64,
        /// How many keys it holds.
        keys: u64,
        /// How many of them have a TTL.
        expires: u64,
    },
    /// A function library (`FUNCTION LOAD` code, with its `#!engine name=…` header).
    Function {
        /// The library source code.
        code: Vec<u8>,
    },
    /// A key begins; its value follows as pieces of [`KeyStart::kind`].
    KeyStart(KeyStart),
    /// A piece of a string value, in order (at least one per string key, maybe empty).
    StringChunk(Vec<u8>),
    /// Elements of a list, head to tail.
    ListItems(Vec<Vec<u8>>),
    /// Members of a set.
    SetMembers(Vec<Vec<u8>>),
    /// Members of a sorted set with their scores.
    ZSetEntries(Vec<ZSetEntry>),
    /// Fields of a hash with their values.
    HashFields(Vec<HashField>),
    /// Entries of a stream, in id order (deleted entries are not reported).
    StreamEntries(Vec<StreamEntry>),
    /// A stream's bookkeeping, after all its entries.
    StreamMeta(StreamMeta),
    /// A consumer group of the current stream; its pending entries and consumers follow.
    StreamGroup(StreamGroup),
    /// Entries of the group's pending entries list (delivered, not acknowledged).
    StreamPending {
        /// The group's name.
        group: Vec<u8>,
        /// The pending entries.
        entries: Vec<PendingEntry>,
    },
    /// A consumer of a group; the ids it holds pending follow as `StreamConsumerPending`.
    StreamConsumer(StreamConsumer),
    /// Ids of pending entries owned by one consumer (their delivery time and count were in the
    /// group's `StreamPending` events).
    StreamConsumerPending {
        /// The group's name.
        group: Vec<u8>,
        /// The consumer's name.
        consumer: Vec<u8>,
        /// The entry ids.
        ids: Vec<StreamId>,
    },
    /// The key ends.
    KeyEnd {
        /// The value's RDB bytes, when it was smaller than
        /// [`ReaderOptions::raw_capture_limit`](crate::ReaderOptions::raw_capture_limit).
        raw: Option<RawValue>,
    },
    /// The RDB ends.
    End {
        /// Whether the CRC-64 was present and checked (a mismatch is an error instead).
        checksum: Checksum,
    },
}

impl Event {
    /// How many elements a batch event holds (1 for a string chunk, 0 for other events): what
    /// [`ReaderOptions::batch_max_items`](crate::ReaderOptions::batch_max_items) bounds.
    pub fn element_count(&self) -> usize {
        match self {
            Self::StringChunk(_) => 1,
            Self::ListItems(v) | Self::SetMembers(v) => v.len(),
            Self::ZSetEntries(v) => v.len(),
            Self::HashFields(v) => v.len(),
            Self::StreamEntries(v) => v.len(),
            Self::StreamPending { entries, .. } => entries.len(),
            Self::StreamConsumerPending { ids, .. } => ids.len(),
            _ => 0,
        }
    }
}

/// The logical type of a key's value (what `TYPE key` answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// A string.
    String,
    /// A list.
    List,
    /// A set.
    Set,
    /// A sorted set.
    ZSet,
    /// A hash.
    Hash,
    /// A stream.
    Stream,
}

/// A key and what precedes its value in the RDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStart {
    /// The database the key lives in.
    pub db: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The value's logical type.
    pub kind: ValueKind,
    /// The RDB type byte (its encoding: 18 is a quicklist of listpacks, 11 an intset, …).
    pub rdb_type: u8,
    /// Absolute expiry time in Unix milliseconds, if the key has a TTL.
    pub expire_at_ms: Option<i64>,
    /// Seconds since last access (saved under an LRU `maxmemory-policy`).
    pub idle_seconds: Option<u64>,
    /// The LFU access frequency counter (saved under an LFU `maxmemory-policy`).
    pub lfu_freq: Option<u8>,
}

/// A sorted-set member and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct ZSetEntry {
    /// The member.
    pub member: Vec<u8>,
    /// The score.
    pub score: f64,
}

/// A hash field and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashField {
    /// The field.
    pub field: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A stream entry id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its id.
    pub id: StreamId,
    /// Its field-value pairs, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A stream's bookkeeping (what `XINFO STREAM` shows and `XSETID` restores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// Number of entries.
    pub length: u64,
    /// The last id ever generated.
    pub last_id: StreamId,
    /// The first entry's id (RDB type 19 and later).
    pub first_id: Option<StreamId>,
    /// The largest id ever deleted (RDB type 19 and later).
    pub max_deleted_id: Option<StreamId>,
    /// Entries ever added (RDB type 19 and later).
    pub entries_added: Option<u64>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    /// Its name.
    pub name: Vec<u8>,
    /// The last id delivered to it.
    pub last_id: StreamId,
    /// The logical read counter (RDB type 19 and later).
    pub entries_read: Option<u64>,
}

/// An entry delivered to a group and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: StreamId,
    /// When it was last delivered, Unix milliseconds.
    pub delivery_time_ms: u64,
    /// How many times it was delivered.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    /// The group's name.
    pub group: Vec<u8>,
    /// The consumer's name.
    pub name: Vec<u8>,
    /// When it was last seen, Unix milliseconds.
    pub seen_time_ms: u64,
    /// When it last read successfully, Unix milliseconds (RDB type 21 and later).
    pub active_time_ms: Option<u64>,
}

/// A value exactly as the RDB stores it: the type byte and the serialized value. With the RDB
/// version and a CRC-64 appended this is a `DUMP` payload, which `RESTORE` accepts on any server
/// of that RDB version or newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    /// The type byte followed by the value's bytes.
    pub bytes: Vec<u8>,
    /// The RDB version of the file the value came from.
    pub rdb_version: u16,
}

impl RawValue {
    /// The `DUMP` payload: value bytes, 2-byte RDB version and CRC-64 of both, little-endian.
    pub fn dump_payload(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.bytes.len() + 10);
        payload.extend_from_slice(&self.bytes);
        payload.extend_from_slice(&self.rdb_version.to_le_bytes());
        let crc = crc64(&payload);
        payload.extend_from_slice(&crc.to_le_bytes());
        payload
    }
}

/// What became of the RDB's closing checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Present and equal to the CRC-64 of the content.
    Verified(u64),
    /// Written as zero (`rdbchecksum no`): nothing to check.
    Absent,
}

/// Receives the reader's events. Implemented for every `FnMut(Event) -> Result<(), SinkError>`.
pub trait EventSink {
    /// Handles one event; an error stops the reader with [`RdbError::Sink`](crate::RdbError::Sink).
    ///
    /// # Errors
    /// Whatever the sink decides; it is returned to the reader's caller.
    fn event(&mut self, event: Event) -> Result<(), SinkError>;
}

impl<F: FnMut(Event) -> Result<(), SinkError>> EventSink for F {
    fn event(&mut self, event: Event) -> Result<(), SinkError> {
        self(event)
    }
}
