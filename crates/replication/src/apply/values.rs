//! Turning one key's RDB events into target commands: `RESTORE … REPLACE ABSTTL` for a value
//! the reader captured whole, or `DEL` and chunked writes (`SET`/`APPEND`, `RPUSH`, `SADD`,
//! `ZADD`, `HSET`, `XADD` …) from the batches of a big one, then `PEXPIREAT`.
//!
//! It decides only *what* to write for a key, never where or when (routing, pipelining and
//! acknowledgement are the applier's), and it never holds a value: each batch becomes commands
//! as it arrives. The one exception is a stream group's pending-entry delivery data, kept until
//! the consumers that own the entries arrive (see [`KeyWriter`]).
//!
//! # What the chunked path cannot reproduce
//!
//! - `IDLETIME`/`FREQ` (LRU/LFU hints) are only restored with `RESTORE`.
//! - A stream consumer's seen/active time becomes the apply time (`XGROUP CREATECONSUMER` and
//!   `XCLAIM` touch it; no command sets it).
//! - A pending entry whose message was deleted from the stream (`XDEL` after delivery) is lost:
//!   `XCLAIM … FORCE` only creates entries for messages that exist.
//! - Deleted entries are gone from the RDB, so the stream's first-entry id follows the
//!   surviving entries; `XSETID … ENTRIESADDED … MAXDELETEDID` restores the counters that
//!   `XINFO` reports.

use std::collections::HashMap;

use crate::event::{Event, KeyStart, RawValue, StreamId, ValueKind};

use super::error::ApplyError;

/// Where a key's commands go: the applier, which routes them by the key's slot.
pub(crate) trait CommandSink {
    /// Sends one command about the current key; `name` is for error messages.
    fn command(&mut self, name: &'static str, args: &[&[u8]]) -> Result<(), ApplyError>;
}

/// Delivery data of one pending entry: time (Unix ms) and count.
type Delivery = (u64, u64);

/// One key being written.
///
/// Memory: nothing of the value is kept, except the pending-entry list of the stream group
/// being written (id → delivery time and count, 24 bytes an entry) until its consumers arrive.
#[derive(Debug)]
pub(crate) struct KeyWriter {
    start: KeyStart,
    /// Whether value pieces arrived: the key is written from them, not restored.
    chunked: bool,
    /// Whether the first string chunk was sent (`SET`); later ones `APPEND`.
    string_started: bool,
    /// Stream entries written with `XADD`.
    stream_entries: u64,
    /// The pending entries of each group, until claimed for their consumers.
    pending: HashMap<Vec<u8>, HashMap<StreamId, Delivery>>,
}

impl KeyWriter {
    pub(crate) fn new(start: KeyStart) -> Self {
        Self {
            start,
            chunked: false,
            string_started: false,
            stream_entries: 0,
            pending: HashMap::new(),
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.start.key
    }

    /// Writes one value piece.
    pub(crate) fn piece(
        &mut self,
        event: Event,
        out: &mut impl CommandSink,
    ) -> Result<(), ApplyError> {
        if !self.chunked {
            self.chunked = true;
            // Strings start with SET, which replaces any old value; other types append to
            // whatever the key holds, so it goes first.
            if self.start.kind != ValueKind::String {
                out.command("DEL", &[b"DEL", &self.start.key])?;
            }
        }
        let key = self.start.key.as_slice();
        match event {
            Event::StringChunk(chunk) => {
                if self.string_started {
                    out.command("APPEND", &[b"APPEND", key, &chunk])?;
                } else {
                    self.string_started = true;
                    out.command("SET", &[b"SET", key, &chunk])?;
                }
            }
            Event::ListItems(items) => variadic(out, "RPUSH", key, &items)?,
            Event::SetMembers(members) => variadic(out, "SADD", key, &members)?,
            Event::ZSetEntries(entries) => {
                let scores: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|e| format_score(e.score).into_bytes())
                    .collect();
                let mut args: Vec<&[u8]> = Vec::with_capacity(2 + entries.len() * 2);
                args.extend([b"ZADD".as_slice(), key]);
                for (entry, score) in entries.iter().zip(&scores) {
                    args.push(score);
                    args.push(&entry.member);
                }
                out.command("ZADD", &args)?;
            }
            Event::HashFields(fields) => {
                let mut args: Vec<&[u8]> = Vec::with_capacity(2 + fields.len() * 2);
                args.extend([b"HSET".as_slice(), key]);
                for field in &fields {
                    args.push(&field.field);
                    args.push(&field.value);
                }
                out.command("HSET", &args)?;
            }
            Event::StreamEntries(entries) => {
                for entry in &entries {
                    let id = entry.id.to_string();
                    let mut args: Vec<&[u8]> = Vec::with_capacity(3 + entry.fields.len() * 2);
                    args.extend([b"XADD".as_slice(), key, id.as_bytes()]);
                    for (field, value) in &entry.fields {
                        args.push(field);
                        args.push(value);
                    }
                    out.command("XADD", &args)?;
                    self.stream_entries += 1;
                }
            }
            Event::StreamMeta(meta) => {
                if self.stream_entries == 0 {
                    // XSETID needs the key: create the stream empty (the entry is trimmed at
                    // once; XSETID then sets the real last id).
                    out.command("XADD", &[b"XADD", key, b"MAXLEN", b"0", b"0-1", b"-", b"-"])?;
                }
                let last_id = meta.last_id.to_string();
                let entries_added = meta.entries_added.map(|n| n.to_string());
                let max_deleted = meta.max_deleted_id.map(|id| id.to_string());
                let mut args: Vec<&[u8]> = vec![b"XSETID", key, last_id.as_bytes()];
                if let Some(n) = &entries_added {
                    args.extend([b"ENTRIESADDED".as_slice(), n.as_bytes()]);
                }
                if let Some(id) = &max_deleted {
                    args.extend([b"MAXDELETEDID".as_slice(), id.as_bytes()]);
                }
                out.command("XSETID", &args)?;
            }
            Event::StreamGroup(group) => {
                let last_id = group.last_id.to_string();
                // Redis saves an unknown read counter as -1 (all bits set): leave it unknown.
                let entries_read = group
                    .entries_read
                    .filter(|&n| n != u64::MAX)
                    .map(|n| n.to_string());
                let mut args: Vec<&[u8]> =
                    vec![b"XGROUP", b"CREATE", key, &group.name, last_id.as_bytes()];
                if let Some(n) = &entries_read {
                    args.extend([b"ENTRIESREAD".as_slice(), n.as_bytes()]);
                }
                out.command("XGROUP CREATE", &args)?;
            }
            Event::StreamPending { group, entries } => {
                let deliveries = self.pending.entry(group).or_default();
                for entry in entries {
                    deliveries.insert(entry.id, (entry.delivery_time_ms, entry.delivery_count));
                }
            }
            Event::StreamConsumer(consumer) => {
                out.command(
                    "XGROUP CREATECONSUMER",
                    &[
                        b"XGROUP",
                        b"CREATECONSUMER",
                        key,
                        &consumer.group,
                        &consumer.name,
                    ],
                )?;
            }
            Event::StreamConsumerPending {
                group,
                consumer,
                ids,
            } => {
                let mut deliveries = self.pending.remove(&group).unwrap_or_default();
                for id in ids {
                    let (time, count) = deliveries.remove(&id).unwrap_or((0, 1));
                    let (id, time, count) = (id.to_string(), time.to_string(), count.to_string());
                    // JUSTID keeps XCLAIM from counting a delivery; TIME and RETRYCOUNT then
                    // set the source's delivery time and count exactly.
                    out.command(
                        "XCLAIM",
                        &[
                            b"XCLAIM",
                            key,
                            &group,
                            &consumer,
                            b"0",
                            id.as_bytes(),
                            b"TIME",
                            time.as_bytes(),
                            b"RETRYCOUNT",
                            count.as_bytes(),
                            b"FORCE",
                            b"JUSTID",
                        ],
                    )?;
                }
                if !deliveries.is_empty() {
                    self.pending.insert(group, deliveries);
                }
            }
            _ => {
                return Err(ApplyError::UnexpectedEvent {
                    what: "a non-value event inside a key",
                });
            }
        }
        Ok(())
    }

    /// Finishes the key: `RESTORE` from `raw` when no piece arrived, else the TTL.
    /// `target_rdb_version` is the newest version every target master reads.
    pub(crate) fn end(
        self,
        raw: Option<RawValue>,
        target_rdb_version: u16,
        out: &mut impl CommandSink,
    ) -> Result<(), ApplyError> {
        let key = self.start.key.as_slice();
        let expire = self.start.expire_at_ms.map(|ms| ms.to_string());
        if self.chunked {
            if let Some(ms) = &expire {
                out.command("PEXPIREAT", &[b"PEXPIREAT", key, ms.as_bytes()])?;
            }
            return Ok(());
        }
        let Some(raw) = raw else {
            // Neither pieces nor bytes: nothing to write, but the key must not keep an old
            // value either.
            return out.command("DEL", &[b"DEL", key]);
        };
        if raw.rdb_version > target_rdb_version {
            return Err(ApplyError::RestoreUnsupported {
                source_version: raw.rdb_version,
                target_version: target_rdb_version,
            });
        }
        let payload = raw.dump_payload();
        let ttl = expire.unwrap_or_else(|| "0".to_owned());
        let idle = self.start.idle_seconds.map(|s| s.to_string());
        let freq = self.start.lfu_freq.map(|f| f.to_string());
        let mut args: Vec<&[u8]> = vec![
            b"RESTORE",
            key,
            ttl.as_bytes(),
            &payload,
            b"REPLACE",
            b"ABSTTL",
        ];
        // RESTORE refuses IDLETIME and FREQ together; an RDB key has at most one of them.
        if let Some(idle) = &idle {
            args.extend([b"IDLETIME".as_slice(), idle.as_bytes()]);
        } else if let Some(freq) = &freq {
            args.extend([b"FREQ".as_slice(), freq.as_bytes()]);
        }
        out.command("RESTORE", &args)
    }
}

/// `NAME key item…` in one command (a batch is already bounded by the reader).
fn variadic(
    out: &mut impl CommandSink,
    name: &'static str,
    key: &[u8],
    items: &[Vec<u8>],
) -> Result<(), ApplyError> {
    let mut args: Vec<&[u8]> = Vec::with_capacity(2 + items.len());
    args.extend([name.as_bytes(), key]);
    args.extend(items.iter().map(Vec::as_slice));
    out.command(name, &args)
}

/// A score as `ZADD` reads it back exactly: Rust's shortest round-trip form, `inf`/`-inf`.
fn format_score(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "+inf" } else { "-inf" }.to_owned()
    } else {
        format!("{score:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_score;

    #[test]
    fn scores_round_trip_through_text() {
        for score in [0.0, -2.5, 1e300, 1e-300, 0.1, f64::MAX, f64::MIN_POSITIVE] {
            let text = format_score(score);
            assert_eq!(text.parse::<f64>().ok(), Some(score), "{text}");
        }
        assert_eq!(format_score(f64::INFINITY), "+inf");
        assert_eq!(format_score(f64::NEG_INFINITY), "-inf");
    }
}
