//! The streaming RDB reader: walks an RDB from any `BufRead` and reports it as [`Event`]s, value
//! by value and batch by batch.
//!
//! It must never hold a whole big value (only one batch, one encoded blob of a compact encoding,
//! and at most `raw_capture_limit` raw bytes), and never read past the RDB's last byte, so the
//! replication command stream that follows on a socket stays with the caller.

use std::io::BufRead;

use crate::error::RdbError;
use crate::event::{
    Checksum, Event, EventSink, HashField, KeyStart, RawValue, ValueKind, ZSetEntry,
};
use crate::packed::{Listpack, PackedItem, Ziplist, intset_members};
use crate::source::Source;

/// The oldest RDB version read (Redis 5.0 and 6.x write 9).
pub const MIN_RDB_VERSION: u32 = 9;
/// The newest RDB version read (Redis 7.2 and Valkey 7.2–8 write 11).
pub const MAX_RDB_VERSION: u32 = 11;

/// Opcodes: records that are not keys.
mod opcode {
    pub(super) const SLOT_INFO: u8 = 0xf4;
    pub(super) const FUNCTION2: u8 = 0xf5;
    pub(super) const FUNCTION_PRE_GA: u8 = 0xf6;
    pub(super) const MODULE_AUX: u8 = 0xf7;
    pub(super) const IDLE: u8 = 0xf8;
    pub(super) const FREQ: u8 = 0xf9;
    pub(super) const AUX: u8 = 0xfa;
    pub(super) const RESIZEDB: u8 = 0xfb;
    pub(super) const EXPIRETIME_MS: u8 = 0xfc;
    pub(super) const EXPIRETIME: u8 = 0xfd;
    pub(super) const SELECTDB: u8 = 0xfe;
    pub(super) const EOF: u8 = 0xff;
}

/// Value type bytes.
mod value_type {
    pub(super) const STRING: u8 = 0;
    pub(super) const LIST: u8 = 1;
    pub(super) const SET: u8 = 2;
    pub(super) const ZSET: u8 = 3;
    pub(super) const HASH: u8 = 4;
    pub(super) const ZSET_2: u8 = 5;
    pub(super) const MODULE_PRE_GA: u8 = 6;
    pub(super) const MODULE_2: u8 = 7;
    pub(super) const HASH_ZIPMAP: u8 = 9;
    pub(super) const LIST_ZIPLIST: u8 = 10;
    pub(super) const SET_INTSET: u8 = 11;
    pub(super) const ZSET_ZIPLIST: u8 = 12;
    pub(super) const HASH_ZIPLIST: u8 = 13;
    pub(super) const LIST_QUICKLIST: u8 = 14;
    pub(super) const STREAM_LISTPACKS: u8 = 15;
    pub(super) const HASH_LISTPACK: u8 = 16;
    pub(super) const ZSET_LISTPACK: u8 = 17;
    pub(super) const LIST_QUICKLIST_2: u8 = 18;
    pub(super) const STREAM_LISTPACKS_2: u8 = 19;
    pub(super) const SET_LISTPACK: u8 = 20;
    pub(super) const STREAM_LISTPACKS_3: u8 = 21;
}

/// A quicklist-2 node holding one element as a plain string (a very large element).
const QUICKLIST_NODE_PLAIN: u64 = 1;
/// A quicklist-2 node holding a listpack of elements.
const QUICKLIST_NODE_PACKED: u64 = 2;

/// Whether value pieces are reported for values whose raw bytes were captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValuePieces {
    /// Every value is reported as pieces, captured or not.
    #[default]
    Always,
    /// A value whose raw bytes are captured is reported by [`Event::KeyEnd`] alone (the applier
    /// will `RESTORE` it); pieces are held back until the value outgrows the capture limit, then
    /// released in order. Costs up to about twice `raw_capture_limit` of memory.
    OnlyUncaptured,
}

/// Bounds and choices of a reader.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Most elements per batch event (list items, members, fields, stream entries, PEL ids).
    pub batch_max_items: usize,
    /// Most element bytes per batch event, and the size of string chunks.
    pub batch_max_bytes: usize,
    /// Values whose RDB bytes (type byte included) are at most this long are captured whole in
    /// [`Event::KeyEnd`]; 0 captures nothing.
    pub raw_capture_limit: usize,
    /// Whether captured values are also reported as pieces.
    pub value_pieces: ValuePieces,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            batch_max_items: 1024,
            batch_max_bytes: 1024 * 1024,
            raw_capture_limit: 512 * 1024,
            value_pieces: ValuePieces::Always,
        }
    }
}

/// What the reader learned besides the events, returned when the RDB ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSummary {
    /// The RDB version.
    pub version: u32,
    /// The `repl-id` auxiliary field: the master's replication id.
    pub repl_id: Option<String>,
    /// The `repl-offset` auxiliary field: the replication offset the RDB corresponds to.
    pub repl_offset: Option<i64>,
    /// The closing checksum's state.
    pub checksum: Checksum,
    /// Total bytes of the RDB.
    pub bytes: u64,
}

/// Reads one RDB from a `BufRead` (a `BufReader` over a file or a socket).
///
/// ```no_run
/// use std::io::BufReader;
/// use cinnabar_replication::{Event, RdbReader, ReaderOptions};
///
/// let file = BufReader::new(std::fs::File::open("dump.rdb")?);
/// let mut reader = RdbReader::new(file, ReaderOptions::default());
/// let mut keys = 0;
/// let summary = reader.read_all(&mut |event: Event| {
///     if let Event::KeyStart(_) = event {
///         keys += 1;
///     }
///     Ok(())
/// })?;
/// println!("{keys} keys, checksum {:?}", summary.checksum);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RdbReader<R> {
    source: Source<R>,
    options: ReaderOptions,
}

impl<R: BufRead> RdbReader<R> {
    /// A reader over `input`, which must start at the RDB's first byte (`REDIS…`).
    pub fn new(input: R, options: ReaderOptions) -> Self {
        Self {
            source: Source::new(input, options.raw_capture_limit),
            options,
        }
    }

    /// Bytes of the RDB consumed so far.
    pub fn offset(&self) -> u64 {
        self.source.offset()
    }

    /// The input, positioned right after the RDB's last byte once [`read_all`](Self::read_all)
    /// succeeded (whatever follows, such as a diskless end mark or the command stream, is still
    /// in it).
    pub fn into_inner(self) -> R {
        self.source.into_inner()
    }

    /// Reads the whole RDB, reporting every record to `sink` in file order.
    ///
    /// # Errors
    /// [`RdbError`] for unreadable input (naming the offset), a bad checksum, an unsupported
    /// version, module data, or a sink that asked to stop.
    pub fn read_all<S: EventSink + ?Sized>(
        &mut self,
        sink: &mut S,
    ) -> Result<ReadSummary, RdbError> {
        let mut walk = Walk {
            src: &mut self.source,
            sink,
            options: &self.options,
            held: Vec::new(),
            version: 0,
        };
        walk.rdb()
    }
}

/// Pending per-key metadata: opcodes that precede a key apply to it only.
#[derive(Debug, Default)]
struct KeyMeta {
    expire_at_ms: Option<i64>,
    idle_seconds: Option<u64>,
    lfu_freq: Option<u8>,
}

/// One pass over an RDB: the source, the sink and the events held back for a captured value.
pub(crate) struct Walk<'a, R, S: ?Sized> {
    pub(crate) src: &'a mut Source<R>,
    sink: &'a mut S,
    pub(crate) options: &'a ReaderOptions,
    /// Value pieces held back while a capture may still make them unnecessary.
    held: Vec<Event>,
    pub(crate) version: u32,
}

/// A batch of elements being filled, bounded in count and bytes.
pub(crate) struct Batch<T> {
    items: Vec<T>,
    bytes: usize,
    wrap: fn(Vec<T>) -> Event,
}

impl<T> Batch<T> {
    pub(crate) fn new(wrap: fn(Vec<T>) -> Event) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            wrap,
        }
    }
}

impl<R: BufRead, S: EventSink + ?Sized> Walk<'_, R, S> {
    /// Hands `event` to the sink, or holds it back while its value may be restored whole.
    pub(crate) fn emit(&mut self, event: Event) -> Result<(), RdbError> {
        let holding = self.options.value_pieces == ValuePieces::OnlyUncaptured;
        if holding && self.src.capture_alive() {
            self.held.push(event);
            return Ok(());
        }
        self.release_held()?;
        self.send(event)
    }

    fn send(&mut self, event: Event) -> Result<(), RdbError> {
        self.sink.event(event).map_err(RdbError::Sink)
    }

    fn release_held(&mut self) -> Result<(), RdbError> {
        for event in std::mem::take(&mut self.held) {
            self.send(event)?;
        }
        Ok(())
    }

    /// Adds one element of `size` bytes to `batch`, emitting the batch when it is full.
    pub(crate) fn push<T>(
        &mut self,
        batch: &mut Batch<T>,
        item: T,
        size: usize,
    ) -> Result<(), RdbError> {
        self.push_with(batch, item, size, |event| event)
    }

    /// Emits what `batch` holds, if anything.
    pub(crate) fn flush<T>(&mut self, batch: &mut Batch<T>) -> Result<(), RdbError> {
        self.flush_with(batch, |event| event)
    }

    /// [`push`](Self::push), with `finish` applied to each emitted event.
    pub(crate) fn push_with<T>(
        &mut self,
        batch: &mut Batch<T>,
        item: T,
        size: usize,
        finish: impl Fn(Event) -> Event,
    ) -> Result<(), RdbError> {
        if !batch.items.is_empty() && batch.bytes + size > self.options.batch_max_bytes {
            self.flush_with(batch, &finish)?;
        }
        batch.items.push(item);
        batch.bytes += size;
        if batch.items.len() >= self.options.batch_max_items.max(1)
            || batch.bytes >= self.options.batch_max_bytes
        {
            self.flush_with(batch, &finish)?;
        }
        Ok(())
    }

    /// [`flush`](Self::flush), with `finish` applied to the emitted event.
    pub(crate) fn flush_with<T>(
        &mut self,
        batch: &mut Batch<T>,
        finish: impl Fn(Event) -> Event,
    ) -> Result<(), RdbError> {
        if batch.items.is_empty() {
            return Ok(());
        }
        batch.bytes = 0;
        let items = std::mem::take(&mut batch.items);
        self.emit(finish((batch.wrap)(items)))
    }

    /// Maps a compact-encoding error to a corruption at the current offset.
    pub(crate) fn packed_error(&self, what: &'static str) -> RdbError {
        self.src.corrupt(what)
    }

    fn rdb(&mut self) -> Result<ReadSummary, RdbError> {
        self.version = self.header()?;
        self.send(Event::Header {
            version: self.version,
        })?;
        let mut db = 0u64;
        let mut meta = KeyMeta::default();
        let mut repl_id = None;
        let mut repl_offset = None;
        loop {
            let at = self.src.offset();
            let byte = self.src.read_u8()?;
            match byte {
                opcode::EOF => {
                    let checksum = self.checksum()?;
                    self.send(Event::End { checksum })?;
                    return Ok(ReadSummary {
                        version: self.version,
                        repl_id,
                        repl_offset,
                        checksum,
                        bytes: self.src.offset(),
                    });
                }
                opcode::SELECTDB => {
                    db = self.src.read_len()?;
                    self.send(Event::SelectDb { db })?;
                }
                opcode::RESIZEDB => {
                    let keys = self.src.read_len()?;
                    let expires = self.src.read_len()?;
                    self.send(Event::ResizeDb { keys, expires })?;
                }
                opcode::SLOT_INFO => {
                    let slot = self.src.read_len()?;
                    let keys = self.src.read_len()?;
                    let expires = self.src.read_len()?;
                    self.send(Event::SlotInfo {
                        slot,
                        keys,
                        expires,
                    })?;
                }
                opcode::EXPIRETIME => {
                    let seconds = self.src.read_u32_le()?;
                    meta.expire_at_ms = Some(i64::from(seconds) * 1000);
                }
                opcode::EXPIRETIME_MS => {
                    // Stored as a signed 64-bit time; the cast keeps the bits.
                    meta.expire_at_ms = Some(self.src.read_u64_le()? as i64);
                }
                opcode::IDLE => meta.idle_seconds = Some(self.src.read_len()?),
                opcode::FREQ => meta.lfu_freq = Some(self.src.read_u8()?),
                opcode::AUX => {
                    let key = self.src.read_string()?;
                    let value = self.src.read_string()?;
                    let text = String::from_utf8_lossy(&value);
                    match key.as_slice() {
                        b"repl-id" => repl_id = Some(text.into_owned()),
                        b"repl-offset" => repl_offset = text.parse().ok(),
                        _ => {}
                    }
                    self.send(Event::Aux { key, value })?;
                }
                opcode::FUNCTION2 => {
                    let code = self.src.read_string()?;
                    self.send(Event::Function { code })?;
                }
                opcode::FUNCTION_PRE_GA => {
                    return Err(RdbError::Unsupported {
                        what: "function opcode of Redis 7.0 release candidates",
                        byte,
                        offset: at,
                    });
                }
                opcode::MODULE_AUX => return Err(self.module_error(at)?),
                value_type => {
                    self.key(value_type, at, db, std::mem::take(&mut meta))?;
                }
            }
        }
    }

    /// Checks `REDIS` and returns the version.
    fn header(&mut self) -> Result<u32, RdbError> {
        let magic: [u8; 9] = self.src.read_array().map_err(|e| match e {
            RdbError::Truncated { .. } => RdbError::BadMagic,
            other => other,
        })?;
        if &magic[..5] != b"REDIS" || !magic[5..].iter().all(u8::is_ascii_digit) {
            return Err(RdbError::BadMagic);
        }
        let version = magic[5..]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        if !(MIN_RDB_VERSION..=MAX_RDB_VERSION).contains(&version) {
            return Err(RdbError::UnsupportedVersion {
                version,
                min: MIN_RDB_VERSION,
                max: MAX_RDB_VERSION,
            });
        }
        Ok(version)
    }

    /// Reads the closing CRC-64 and compares it with the content's.
    fn checksum(&mut self) -> Result<Checksum, RdbError> {
        let computed = self.src.crc();
        let expected = self.src.read_u64_le()?;
        if expected == 0 {
            Ok(Checksum::Absent)
        } else if expected == computed {
            Ok(Checksum::Verified(computed))
        } else {
            Err(RdbError::BadChecksum { expected, computed })
        }
    }

    /// The module error for module data starting at `at` (its module id comes next).
    fn module_error(&mut self, at: u64) -> Result<RdbError, RdbError> {
        let id = self.src.read_len()?;
        Ok(RdbError::ModuleType {
            name: module_type_name(id),
            encoding_version: (id & 0x3ff) as u16,
            id,
            offset: at,
        })
    }

    /// One key: its name, then its value as events.
    fn key(&mut self, rdb_type: u8, at: u64, db: u64, meta: KeyMeta) -> Result<(), RdbError> {
        let kind = match rdb_type {
            value_type::STRING => ValueKind::String,
            value_type::LIST
            | value_type::LIST_ZIPLIST
            | value_type::LIST_QUICKLIST
            | value_type::LIST_QUICKLIST_2 => ValueKind::List,
            value_type::SET | value_type::SET_INTSET | value_type::SET_LISTPACK => ValueKind::Set,
            value_type::ZSET
            | value_type::ZSET_2
            | value_type::ZSET_ZIPLIST
            | value_type::ZSET_LISTPACK => ValueKind::ZSet,
            value_type::HASH | value_type::HASH_ZIPLIST | value_type::HASH_LISTPACK => {
                ValueKind::Hash
            }
            value_type::STREAM_LISTPACKS
            | value_type::STREAM_LISTPACKS_2
            | value_type::STREAM_LISTPACKS_3 => ValueKind::Stream,
            value_type::MODULE_PRE_GA | value_type::MODULE_2 => {
                let _key = self.src.read_string()?;
                let module_at = self.src.offset();
                return Err(self.module_error(module_at)?);
            }
            value_type::HASH_ZIPMAP => {
                return Err(RdbError::Unsupported {
                    what: "zipmap hash encoding of Redis 2.x",
                    byte: rdb_type,
                    offset: at,
                });
            }
            byte => return Err(RdbError::UnknownType { byte, offset: at }),
        };
        let key = self.src.read_string()?;
        self.src.start_capture(&[rdb_type]);
        self.send(Event::KeyStart(KeyStart {
            db,
            key,
            kind,
            rdb_type,
            expire_at_ms: meta.expire_at_ms,
            idle_seconds: meta.idle_seconds,
            lfu_freq: meta.lfu_freq,
        }))?;
        self.value(rdb_type)?;
        let raw = self.src.finish_capture().map(|bytes| RawValue {
            bytes,
            // The header check bounds the version to two digits.
            rdb_version: self.version as u16,
        });
        if raw.is_some() {
            self.held.clear();
        } else {
            self.release_held()?;
        }
        self.send(Event::KeyEnd { raw })
    }

    /// The value of a key whose type byte is `rdb_type`.
    fn value(&mut self, rdb_type: u8) -> Result<(), RdbError> {
        match rdb_type {
            value_type::STRING => self.string_value(),
            value_type::LIST => self.plain_elements(Batch::new(Event::ListItems)),
            value_type::SET => self.plain_elements(Batch::new(Event::SetMembers)),
            value_type::ZSET | value_type::ZSET_2 => {
                self.plain_zset(rdb_type == value_type::ZSET_2)
            }
            value_type::HASH => self.plain_hash(),
            value_type::LIST_ZIPLIST => {
                let blob = self.src.read_string()?;
                let mut batch = Batch::new(Event::ListItems);
                self.ziplist_elements(&blob, &mut batch)?;
                self.flush(&mut batch)
            }
            value_type::LIST_QUICKLIST => self.quicklist(false),
            value_type::LIST_QUICKLIST_2 => self.quicklist(true),
            value_type::SET_INTSET => self.intset(),
            value_type::SET_LISTPACK => {
                let blob = self.src.read_string()?;
                let mut batch = Batch::new(Event::SetMembers);
                let items = Listpack::new(&blob).map_err(|e| self.packed_error(e))?;
                self.elements(items, &mut batch)?;
                self.flush(&mut batch)
            }
            value_type::ZSET_ZIPLIST | value_type::ZSET_LISTPACK => {
                let blob = self.src.read_string()?;
                if rdb_type == value_type::ZSET_LISTPACK {
                    let items = Listpack::new(&blob).map_err(|e| self.packed_error(e))?;
                    self.zset_pairs(items)
                } else {
                    let items = Ziplist::new(&blob).map_err(|e| self.packed_error(e))?;
                    self.zset_pairs(items)
                }
            }
            value_type::HASH_ZIPLIST | value_type::HASH_LISTPACK => {
                let blob = self.src.read_string()?;
                if rdb_type == value_type::HASH_LISTPACK {
                    let items = Listpack::new(&blob).map_err(|e| self.packed_error(e))?;
                    self.hash_pairs(items)
                } else {
                    let items = Ziplist::new(&blob).map_err(|e| self.packed_error(e))?;
                    self.hash_pairs(items)
                }
            }
            value_type::STREAM_LISTPACKS => self.stream(1),
            value_type::STREAM_LISTPACKS_2 => self.stream(2),
            _ => self.stream(3),
        }
    }

    /// A string value, as chunks of at most `batch_max_bytes`.
    fn string_value(&mut self) -> Result<(), RdbError> {
        let mut pieces = self.src.string_pieces()?;
        // A string that the capture will hold whole is restored from its raw bytes, and its
        // pieces would be held back and dropped: skip them (and LZF decompression, half of a
        // restore's reading time on compressible strings).
        if self.options.value_pieces == ValuePieces::OnlyUncaptured
            && let (Some(room), Some(left)) = (self.src.capture_room(), pieces.encoded_left())
            && left <= room
        {
            return self.src.skip(left);
        }
        while let Some(piece) = pieces.next_piece(self.src, self.options.batch_max_bytes)? {
            self.emit(Event::StringChunk(piece))?;
        }
        Ok(())
    }

    /// `count` plain strings (list or set of the oldest encoding).
    fn plain_elements(&mut self, mut batch: Batch<Vec<u8>>) -> Result<(), RdbError> {
        let count = self.src.read_len()?;
        for _ in 0..count {
            let item = self.src.read_string()?;
            let size = item.len();
            self.push(&mut batch, item, size)?;
        }
        self.flush(&mut batch)
    }

    fn plain_zset(&mut self, binary_scores: bool) -> Result<(), RdbError> {
        let count = self.src.read_len()?;
        let mut batch = Batch::new(Event::ZSetEntries);
        for _ in 0..count {
            let member = self.src.read_string()?;
            let score = if binary_scores {
                self.src.read_binary_double()?
            } else {
                self.src.read_ascii_double()?
            };
            let size = member.len() + 8;
            self.push(&mut batch, ZSetEntry { member, score }, size)?;
        }
        self.flush(&mut batch)
    }

    fn plain_hash(&mut self) -> Result<(), RdbError> {
        let count = self.src.read_len()?;
        let mut batch = Batch::new(Event::HashFields);
        for _ in 0..count {
            let field = self.src.read_string()?;
            let value = self.src.read_string()?;
            let size = field.len() + value.len();
            self.push(&mut batch, HashField { field, value }, size)?;
        }
        self.flush(&mut batch)
    }

    fn quicklist(&mut self, version_2: bool) -> Result<(), RdbError> {
        let nodes = self.src.read_len()?;
        let mut batch = Batch::new(Event::ListItems);
        for _ in 0..nodes {
            let container = if version_2 {
                self.src.read_len()?
            } else {
                QUICKLIST_NODE_PACKED
            };
            let blob = self.src.read_string()?;
            match container {
                QUICKLIST_NODE_PLAIN => {
                    let size = blob.len();
                    self.push(&mut batch, blob, size)?;
                }
                QUICKLIST_NODE_PACKED if version_2 => {
                    let items = Listpack::new(&blob).map_err(|e| self.packed_error(e))?;
                    self.elements(items, &mut batch)?;
                }
                QUICKLIST_NODE_PACKED => self.ziplist_elements(&blob, &mut batch)?,
                _ => return Err(self.src.corrupt("quicklist node of unknown container type")),
            }
        }
        self.flush(&mut batch)
    }

    fn ziplist_elements(
        &mut self,
        blob: &[u8],
        batch: &mut Batch<Vec<u8>>,
    ) -> Result<(), RdbError> {
        let items = Ziplist::new(blob).map_err(|e| self.packed_error(e))?;
        self.elements(items, batch)
    }

    /// Every element of a compact encoding, as list items or set members.
    fn elements<'b>(
        &mut self,
        items: impl Iterator<Item = Result<PackedItem<'b>, &'static str>>,
        batch: &mut Batch<Vec<u8>>,
    ) -> Result<(), RdbError> {
        for item in items {
            let bytes = item.map_err(|e| self.packed_error(e))?.to_bytes();
            let size = bytes.len();
            self.push(batch, bytes, size)?;
        }
        Ok(())
    }

    fn intset(&mut self) -> Result<(), RdbError> {
        let blob = self.src.read_string()?;
        let members = intset_members(&blob).map_err(|e| self.packed_error(e))?;
        let mut batch = Batch::new(Event::SetMembers);
        for member in members {
            let bytes = member.to_string().into_bytes();
            let size = bytes.len();
            self.push(&mut batch, bytes, size)?;
        }
        self.flush(&mut batch)
    }

    fn zset_pairs<'b>(
        &mut self,
        mut items: impl Iterator<Item = Result<PackedItem<'b>, &'static str>>,
    ) -> Result<(), RdbError> {
        let mut batch = Batch::new(Event::ZSetEntries);
        while let Some(member) = items.next() {
            let member = member.map_err(|e| self.packed_error(e))?.to_bytes();
            let score = items
                .next()
                .ok_or("sorted set member without a score")
                .and_then(|s| s)
                .and_then(|s| s.as_score().ok_or("sorted set score is not a number"))
                .map_err(|e| self.packed_error(e))?;
            let size = member.len() + 8;
            self.push(&mut batch, ZSetEntry { member, score }, size)?;
        }
        self.flush(&mut batch)
    }

    fn hash_pairs<'b>(
        &mut self,
        mut items: impl Iterator<Item = Result<PackedItem<'b>, &'static str>>,
    ) -> Result<(), RdbError> {
        let mut batch = Batch::new(Event::HashFields);
        while let Some(field) = items.next() {
            let field = field.map_err(|e| self.packed_error(e))?.to_bytes();
            let value = items
                .next()
                .ok_or("hash field without a value")
                .and_then(|v| v)
                .map_err(|e| self.packed_error(e))?
                .to_bytes();
            let size = field.len() + value.len();
            self.push(&mut batch, HashField { field, value }, size)?;
        }
        self.flush(&mut batch)
    }
}

/// Decodes a module type id: nine 6-bit characters (first character in the highest bits), then
/// a 10-bit encoding version.
pub(crate) fn module_type_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..9)
        .map(|i| {
            let shift = 10 + 6 * (8 - i);
            char::from(CHARSET[((id >> shift) & 63) as usize])
        })
        .collect()
}
