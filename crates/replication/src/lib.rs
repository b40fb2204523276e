//! The replication engine: a streaming reader of RDB files and replication transfers, RDB
//! versions 9 to 11 (Redis 5.0–7.2, Valkey 7.2–8), every value type and encoding, with the
//! CRC-64 checked; the replication client that takes a source's RDB and command stream over
//! `PSYNC` ([`client`]); and the per-source checkpoints it resumes from ([`checkpoint`]).
//!
//! It must never hold a whole big value in memory (values arrive as bounded batches), never
//! read past the RDB's last byte (the replication stream follows on the same socket), never
//! panic on malformed input, and never depend on the proxy.
//!
//! # Pieces
//!
//! | type / function | use |
//! |---|---|
//! | [`RdbReader`], [`ReaderOptions`], [`ReadSummary`] | read one RDB from any `BufRead` |
//! | [`Event`], [`EventSink`] | what the reader reports, and who receives it |
//! | [`RawValue::dump_payload`] | a small value's bytes as a `RESTORE` payload |
//! | [`transfer`] | the bulk header of a replication transfer (`$<len>` or `$EOF:<mark>`) |
//! | [`crc64()`] | Redis's CRC-64 |
//! | [`apply::Applier`] | writes an RDB and a command stream to a Redis Cluster, tracking acknowledged offsets |
//! | [`client`] | the replication client: handshake, `PSYNC`, RDB, command stream, ACKs |
//! | [`checkpoint`] | where a source's stream was left, stored atomically per source |
//! | [`sync`] | the whole sync: one stream per source master, checkpoints, status |
//! | [`status`] | what a running sync reports (`cinnabar sync status`) |
//! | [`verify`] | compare a source with a target, key by key, in bounded memory |
//!
//! # Output for both ways of applying a value
//!
//! Every key is `KeyStart`, value pieces in batches, then `KeyEnd`. When a value's RDB bytes
//! fit in [`ReaderOptions::raw_capture_limit`], `KeyEnd` carries them as a [`RawValue`], and
//! [`RawValue::dump_payload`] turns them into the payload of `RESTORE key ttl payload REPLACE
//! ABSTTL`; bigger values are applied from their batches (`RPUSH`, `SADD`, `ZADD`, `HSET`,
//! `XADD`, …). With [`ValuePieces::OnlyUncaptured`] the batches of captured values are not
//! reported at all.

pub mod admin;
pub mod apply;
pub mod checkpoint;
pub mod client;
mod crc64;
mod error;
mod event;
mod lzf;
mod packed;
mod reader;
mod source;
pub mod status;
mod stream;
pub mod sync;
pub mod transfer;
pub mod verify;

pub use crc64::{Crc64, crc64};
pub use error::{RdbError, SinkError};
pub use event::{
    Checksum, Event, EventSink, HashField, KeyStart, PendingEntry, RawValue, StreamConsumer,
    StreamEntry, StreamGroup, StreamId, StreamMeta, ValueKind, ZSetEntry,
};
pub use reader::{
    MAX_RDB_VERSION, MIN_RDB_VERSION, RdbReader, ReadSummary, ReaderOptions, ValuePieces,
};
