//! Stream values (RDB types 15, 19 and 21): entries from their listpack nodes, then the stream's
//! bookkeeping, its consumer groups, their pending entries and their consumers.
//!
//! It must never report a deleted entry, and never hold more than one listpack node and one
//! batch at a time (a pending entries list may have millions of ids).

use std::io::BufRead;

use crate::error::RdbError;
use crate::event::{
    Event, EventSink, PendingEntry, StreamConsumer, StreamEntry, StreamGroup, StreamId, StreamMeta,
};
use crate::packed::{Listpack, PackedItem};
use crate::reader::{Batch, Walk};

/// Entry flag: the entry was deleted (XDEL) but is still in its node.
const ENTRY_DELETED: i64 = 1;
/// Entry flag: the entry has exactly the master entry's fields, so only values are stored.
const ENTRY_SAME_FIELDS: i64 = 2;

/// Pulls the next element of a stream listpack as an integer.
fn next_int<'b>(
    items: &mut impl Iterator<Item = Result<PackedItem<'b>, &'static str>>,
) -> Result<i64, &'static str> {
    items
        .next()
        .ok_or("stream node ends inside an entry")??
        .as_int()
        .ok_or("stream node has a string where a number belongs")
}

/// Pulls the next element of a stream listpack as bytes.
fn next_bytes<'b>(
    items: &mut impl Iterator<Item = Result<PackedItem<'b>, &'static str>>,
) -> Result<Vec<u8>, &'static str> {
    Ok(items
        .next()
        .ok_or("stream node ends inside an entry")??
        .to_bytes())
}

/// A count read from a stream node, which must not be negative.
fn count(n: i64) -> Result<usize, &'static str> {
    usize::try_from(n).map_err(|_| "stream node has a negative count")
}

impl<R: BufRead, S: EventSink + ?Sized> Walk<'_, R, S> {
    /// A stream of format `version` (1: type 15, 2: type 19, 3: type 21).
    pub(crate) fn stream(&mut self, version: u8) -> Result<(), RdbError> {
        let nodes = self.src.read_len()?;
        let mut batch = Batch::new(Event::StreamEntries);
        for _ in 0..nodes {
            let master_key = self.src.read_string()?;
            let master_id = raw_stream_id(&master_key)
                .ok_or_else(|| self.src.corrupt("stream node key is not a 16-byte id"))?;
            let node = self.src.read_string()?;
            self.stream_node(master_id, &node, &mut batch)?;
        }
        self.flush(&mut batch)?;

        let length = self.src.read_len()?;
        let last_id = self.read_id()?;
        let (first_id, max_deleted_id, entries_added) = if version >= 2 {
            let first = self.read_id()?;
            let max_deleted = self.read_id()?;
            (Some(first), Some(max_deleted), Some(self.src.read_len()?))
        } else {
            (None, None, None)
        };
        self.emit(Event::StreamMeta(StreamMeta {
            length,
            last_id,
            first_id,
            max_deleted_id,
            entries_added,
        }))?;

        let groups = self.src.read_len()?;
        for _ in 0..groups {
            self.stream_group(version)?;
        }
        Ok(())
    }

    /// One listpack node: a master entry (the fields most entries share), then the entries.
    fn stream_node(
        &mut self,
        master_id: StreamId,
        node: &[u8],
        batch: &mut Batch<StreamEntry>,
    ) -> Result<(), RdbError> {
        let outcome = (|| -> Result<Vec<StreamEntry>, &'static str> {
            let mut items = Listpack::new(node)?;
            let _live = next_int(&mut items)?;
            let _deleted = next_int(&mut items)?;
            let master_field_count = count(next_int(&mut items)?)?;
            let master_fields = (0..master_field_count)
                .map(|_| next_bytes(&mut items))
                .collect::<Result<Vec<_>, _>>()?;
            if next_int(&mut items)? != 0 {
                return Err("stream master entry not terminated by 0");
            }
            let mut entries = Vec::new();
            while let Some(flags) = items.next() {
                let flags = flags?
                    .as_int()
                    .ok_or("stream entry flags are not a number")?;
                let ms_delta = next_int(&mut items)?;
                let seq_delta = next_int(&mut items)?;
                let fields = if flags & ENTRY_SAME_FIELDS != 0 {
                    master_fields
                        .iter()
                        .map(|field| Ok((field.clone(), next_bytes(&mut items)?)))
                        .collect::<Result<Vec<_>, &'static str>>()?
                } else {
                    let field_count = count(next_int(&mut items)?)?;
                    (0..field_count)
                        .map(|_| Ok((next_bytes(&mut items)?, next_bytes(&mut items)?)))
                        .collect::<Result<Vec<_>, &'static str>>()?
                };
                // The element count of the entry, for walking the node backwards: not needed.
                let _ = next_int(&mut items)?;
                if flags & ENTRY_DELETED != 0 {
                    continue;
                }
                // Deltas are unsigned in Redis; two's complement wrapping gives the same id.
                let id = StreamId {
                    ms: master_id.ms.wrapping_add(ms_delta as u64),
                    seq: master_id.seq.wrapping_add(seq_delta as u64),
                };
                entries.push(StreamEntry { id, fields });
            }
            Ok(entries)
        })();
        let entries = outcome.map_err(|e| self.packed_error(e))?;
        for entry in entries {
            let size = 16
                + entry
                    .fields
                    .iter()
                    .map(|(f, v)| f.len() + v.len())
                    .sum::<usize>();
            self.push(batch, entry, size)?;
        }
        Ok(())
    }

    /// A consumer group: its state, pending entries list, then consumers with their own lists.
    fn stream_group(&mut self, version: u8) -> Result<(), RdbError> {
        let name = self.src.read_string()?;
        let last_id = self.read_id()?;
        let entries_read = if version >= 2 {
            Some(self.src.read_len()?)
        } else {
            None
        };
        self.emit(Event::StreamGroup(StreamGroup {
            name: name.clone(),
            last_id,
            entries_read,
        }))?;

        let pending = self.src.read_len()?;
        let group = name.clone();
        let mut batch = Batch::new(|entries| Event::StreamPending {
            group: Vec::new(),
            entries,
        });
        for _ in 0..pending {
            let id = self.read_raw_id()?;
            let delivery_time_ms = self.src.read_u64_le()?;
            let delivery_count = self.src.read_len()?;
            let entry = PendingEntry {
                id,
                delivery_time_ms,
                delivery_count,
            };
            self.push_named(&mut batch, entry, &group, None)?;
        }
        self.flush_named(&mut batch, &group, None)?;

        let consumers = self.src.read_len()?;
        for _ in 0..consumers {
            let consumer = self.src.read_string()?;
            let seen_time_ms = self.src.read_u64_le()?;
            let active_time_ms = if version >= 3 {
                Some(self.src.read_u64_le()?)
            } else {
                None
            };
            self.emit(Event::StreamConsumer(StreamConsumer {
                group: group.clone(),
                name: consumer.clone(),
                seen_time_ms,
                active_time_ms,
            }))?;
            let owned = self.src.read_len()?;
            let mut ids = Batch::new(|ids| Event::StreamConsumerPending {
                group: Vec::new(),
                consumer: Vec::new(),
                ids,
            });
            for _ in 0..owned {
                let id = self.read_raw_id()?;
                self.push_named(&mut ids, id, &group, Some(&consumer))?;
            }
            self.flush_named(&mut ids, &group, Some(&consumer))?;
        }
        Ok(())
    }

    /// Like [`Walk::push`] for batches whose events carry the group (and consumer) name: a
    /// plain `fn` pointer cannot capture them, so they are filled in at flush time.
    fn push_named<T>(
        &mut self,
        batch: &mut Batch<T>,
        item: T,
        group: &[u8],
        consumer: Option<&[u8]>,
    ) -> Result<(), RdbError> {
        self.push_with(batch, item, 16, |event| name_event(event, group, consumer))
    }

    fn flush_named<T>(
        &mut self,
        batch: &mut Batch<T>,
        group: &[u8],
        consumer: Option<&[u8]>,
    ) -> Result<(), RdbError> {
        self.flush_with(batch, |event| name_event(event, group, consumer))
    }

    /// A stream id as two length-encoded numbers.
    fn read_id(&mut self) -> Result<StreamId, RdbError> {
        Ok(StreamId {
            ms: self.src.read_len()?,
            seq: self.src.read_len()?,
        })
    }

    /// A stream id as 16 raw big-endian bytes.
    fn read_raw_id(&mut self) -> Result<StreamId, RdbError> {
        let raw: [u8; 16] = self.src.read_array()?;
        raw_stream_id(&raw).ok_or_else(|| self.src.corrupt("stream id"))
    }
}

/// Fills the group and consumer names into a pending-list event.
fn name_event(mut event: Event, group: &[u8], consumer: Option<&[u8]>) -> Event {
    match &mut event {
        Event::StreamPending { group: g, .. } => *g = group.to_vec(),
        Event::StreamConsumerPending {
            group: g,
            consumer: c,
            ..
        } => {
            *g = group.to_vec();
            *c = consumer.unwrap_or_default().to_vec();
        }
        _ => {}
    }
    event
}

/// A stream id from 16 big-endian bytes (milliseconds, then sequence).
fn raw_stream_id(raw: &[u8]) -> Option<StreamId> {
    let ms: [u8; 8] = raw.get(..8)?.try_into().ok()?;
    let seq: [u8; 8] = raw.get(8..16)?.try_into().ok()?;
    (raw.len() == 16).then(|| StreamId {
        ms: u64::from_be_bytes(ms),
        seq: u64::from_be_bytes(seq),
    })
}
