//! The target's side of the applier: one pipelined blocking connection per master
//! ([`Link`]), the slot → master map learned with `CLUSTER SLOTS` ([`SlotMap`]), and the few
//! synchronous requests of setup (`AUTH`, `CLUSTER SLOTS`, `INFO`).
//!
//! A link never decides what a reply means for the migration (that is the applier's job); it
//! only moves bytes, finds reply boundaries without decoding, and remembers which sent item
//! each reply belongs to. It must never drop an in-flight item: each is either answered or
//! reported with the connection's failure.

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use cinnabar_commands::SLOT_COUNT;
use cinnabar_resp::{Limits, ReplyScanner, Value, encode, parse_value};

use super::error::{ApplyError, reply_text};

/// How the applier reaches the target.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSettings {
    pub(crate) auth: Option<(Option<String>, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
}

/// One sent item waiting for its replies: the encoded command(s), kept so a redirected item
/// can be sent again, and what an error message needs.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Submission order across all links: retries are resent in this order.
    pub(crate) order: u64,
    /// The progress unit (source offset) the item belongs to.
    pub(crate) unit: u64,
    /// The item's RESP bytes (one command, or `MULTI … EXEC`).
    pub(crate) bytes: Vec<u8>,
    /// Replies the item's own bytes produce.
    pub(crate) replies: usize,
    /// Commands the item carries (for the counters).
    pub(crate) commands: u32,
    /// The slot it routes by, if any.
    pub(crate) slot: Option<u16>,
    /// Whether it is a `MULTI … EXEC` (its last reply is `EXEC`'s array).
    pub(crate) transaction: bool,
    /// The command's name, for errors.
    pub(crate) command: &'static str,
    /// The key, for errors.
    pub(crate) key: Option<Vec<u8>>,
    /// Times sent so far.
    pub(crate) attempts: u32,
    /// Whether this send was preceded by `ASKING` (one more reply).
    pub(crate) asking: bool,
    /// Replies read so far for this send.
    pub(crate) seen: usize,
    /// The first reply that was not a success, if any (kept whole: it decides the outcome).
    pub(crate) first_failure: Option<Vec<u8>>,
}

impl Pending {
    /// Replies expected for the current send.
    pub(crate) fn expected(&self) -> usize {
        self.replies + usize::from(self.asking)
    }
}

/// One pipelined connection to a node.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) addr: String,
    writer: BufWriter<TcpStream>,
    reader: TcpStream,
    input: Vec<u8>,
    /// Start of unconsumed bytes in `input`.
    start: usize,
    scanner: ReplyScanner,
    pub(crate) in_flight: VecDeque<Pending>,
    pub(crate) in_flight_bytes: usize,
}

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes buffered before a write reaches the socket.
const WRITE_BUFFER: usize = 64 * 1024;

impl Link {
    /// Connects and authenticates.
    pub(crate) fn open(addr: &str, settings: &ConnectSettings) -> Result<Self, ApplyError> {
        let connect_error = |source| ApplyError::Connect {
            node: addr.to_owned(),
            source,
        };
        let socket_addr = addr
            .to_socket_addrs()
            .map_err(connect_error)?
            .next()
            .ok_or_else(|| {
                connect_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the address resolves to nothing",
                ))
            })?;
        let stream = TcpStream::connect_timeout(&socket_addr, settings.connect_timeout)
            .map_err(connect_error)?;
        let io_error = |source| ApplyError::Io {
            node: addr.to_owned(),
            source,
        };
        stream.set_nodelay(true).map_err(io_error)?;
        stream
            .set_read_timeout(Some(settings.io_timeout))
            .map_err(io_error)?;
        stream
            .set_write_timeout(Some(settings.io_timeout))
            .map_err(io_error)?;
        let reader = stream.try_clone().map_err(io_error)?;
        let mut link = Self {
            addr: addr.to_owned(),
            writer: BufWriter::with_capacity(WRITE_BUFFER, stream),
            reader,
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            scanner: ReplyScanner::new(Limits::default()),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        };
        if let Some((user, password)) = &settings.auth {
            let reply = match user {
                Some(user) => link.request(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => link.request(&[b"AUTH", password.as_bytes()])?,
            };
            if let Value::Error(text) = reply {
                return Err(ApplyError::Setup {
                    node: link.addr.clone(),
                    command: "AUTH",
                    reply: String::from_utf8_lossy(&text).into_owned(),
                });
            }
        }
        Ok(link)
    }

    fn io_error(&self, source: std::io::Error) -> ApplyError {
        ApplyError::Io {
            node: self.addr.clone(),
            source,
        }
    }

    /// Sends one command and waits for its reply, decoded. Only for setup: the link must have
    /// nothing in flight.
    pub(crate) fn request(&mut self, args: &[&[u8]]) -> Result<Value, ApplyError> {
        debug_assert!(self.in_flight.is_empty());
        let mut bytes = Vec::new();
        encode::command(&mut bytes, args);
        self.write(&bytes)?;
        self.flush()?;
        let len = self.next_reply()?;
        let reply = &self.input[self.start..self.start + len];
        let parsed =
            parse_value(reply, &Limits::default()).map_err(|source| ApplyError::Protocol {
                node: self.addr.clone(),
                source,
            })?;
        let value = match parsed {
            Some((value, _)) => value,
            // `next_reply` found a whole reply, which `parse_value` accepts alike.
            None => Value::NullBulk,
        };
        self.consume(len);
        Ok(value)
    }

    /// Queues bytes for the socket (sent when the buffer fills or on [`flush`](Self::flush)).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), ApplyError> {
        self.writer.write_all(bytes).map_err(|e| self.io_error(e))
    }

    /// Pushes everything written so far to the socket.
    pub(crate) fn flush(&mut self) -> Result<(), ApplyError> {
        self.writer.flush().map_err(|e| self.io_error(e))
    }

    /// Sends an item (prefixed with `ASKING` when `item.asking`) and keeps it in flight.
    pub(crate) fn send(&mut self, item: Pending) -> Result<(), ApplyError> {
        if item.asking {
            let mut asking = Vec::with_capacity(20);
            encode::command(&mut asking, &[b"ASKING"]);
            self.write(&asking)?;
        }
        self.write(&item.bytes)?;
        self.in_flight_bytes += item.bytes.len();
        self.in_flight.push_back(item);
        Ok(())
    }

    /// Blocks until one whole reply is buffered; returns its length (it starts at the first
    /// unconsumed byte: see [`reply`](Self::reply)).
    pub(crate) fn next_reply(&mut self) -> Result<usize, ApplyError> {
        loop {
            let scanned = self
                .scanner
                .scan(&self.input[self.start..])
                .map_err(|source| ApplyError::Protocol {
                    node: self.addr.clone(),
                    source,
                })?;
            if let Some(len) = scanned {
                return Ok(len);
            }
            self.fill()?;
        }
    }

    /// The reply [`next_reply`](Self::next_reply) found.
    pub(crate) fn reply(&self, len: usize) -> &[u8] {
        &self.input[self.start..self.start + len]
    }

    /// Drops a reply that has been handled.
    pub(crate) fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes, first moving unconsumed bytes to the front so the buffer stays small.
    fn fill(&mut self) -> Result<(), ApplyError> {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
            // The scanner resumes by offset into the unconsumed bytes, which did not change.
        }
        let old = self.input.len();
        self.input.resize(old + READ_CHUNK, 0);
        let read = loop {
            match self.reader.read(&mut self.input[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.input.truncate(old);
                    return Err(self.io_error(e));
                }
            }
        };
        self.input.truncate(old + read);
        if read == 0 {
            return Err(ApplyError::Closed {
                node: self.addr.clone(),
            });
        }
        Ok(())
    }
}

/// Which master serves each slot: an index into the applier's links.
#[derive(Debug, Clone)]
pub(crate) struct SlotMap {
    owners: Vec<Option<usize>>,
}

impl SlotMap {
    pub(crate) fn empty() -> Self {
        Self {
            owners: vec![None; usize::from(SLOT_COUNT)],
        }
    }

    pub(crate) fn owner(&self, slot: u16) -> Option<usize> {
        self.owners.get(usize::from(slot)).copied().flatten()
    }

    pub(crate) fn set(&mut self, slot: u16, link: usize) {
        if let Some(owner) = self.owners.get_mut(usize::from(slot)) {
            *owner = Some(link);
        }
    }

    /// The first range of slots nobody serves.
    pub(crate) fn first_uncovered(&self) -> Option<(u16, u16)> {
        let first = self.owners.iter().position(Option::is_none)?;
        let len = self.owners[first..]
            .iter()
            .take_while(|o| o.is_none())
            .count();
        let first = u16::try_from(first).ok()?;
        let last = first + u16::try_from(len).ok()? - 1;
        Some((first, last))
    }
}

/// A slot range and its master's address, from `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) master: String,
}

/// Asks `link` for the slot map. A node with cluster support disabled (a standalone server)
/// serves every slot itself.
pub(crate) fn cluster_slots(link: &mut Link) -> Result<Vec<SlotRange>, ApplyError> {
    let reply = link.request(&[b"CLUSTER", b"SLOTS"])?;
    let bad = |why: &str| ApplyError::Setup {
        node: link.addr.clone(),
        command: "CLUSTER SLOTS",
        reply: why.to_owned(),
    };
    let entries = match reply {
        Value::Array(entries) => entries,
        Value::Error(text) if text.windows(15).any(|w| w == b"cluster support") => {
            return Ok(vec![SlotRange {
                first: 0,
                last: SLOT_COUNT - 1,
                master: link.addr.clone(),
            }]);
        }
        Value::Error(text) => return Err(bad(&String::from_utf8_lossy(&text))),
        _ => return Err(bad("not an array")),
    };
    // An empty host means "the host you reached me at".
    let seed_host = link
        .addr
        .rsplit_once(':')
        .map(|(host, _)| host.to_owned())
        .unwrap_or_default();
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let (Some(Value::Integer(first)), Some(Value::Integer(last)), Some(Value::Array(node))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad("an entry lacks its range or master"));
        };
        let (Some(host), Some(Value::Integer(port))) = (node.first(), node.get(1)) else {
            return Err(bad("a master lacks its host or port"));
        };
        let host = match host {
            Value::Bulk(h) | Value::Simple(h) => String::from_utf8_lossy(h).into_owned(),
            _ => String::new(),
        };
        let host = if host.is_empty() || host == "?" {
            seed_host.clone()
        } else {
            host
        };
        let (Ok(first), Ok(last)) = (u16::try_from(*first), u16::try_from(*last)) else {
            return Err(bad("a slot number out of range"));
        };
        if first > last || last >= SLOT_COUNT {
            return Err(bad("a slot number out of range"));
        }
        ranges.push(SlotRange {
            first,
            last,
            master: join_host_port(&host, *port),
        });
    }
    Ok(ranges)
}

/// `host:port`, bracketing IPv6 hosts so the result parses as a socket address.
pub(crate) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One field of an `INFO` reply (`name:value` lines).
pub(crate) fn info_field(
    link: &mut Link,
    section: &str,
    field: &str,
) -> Result<Option<String>, ApplyError> {
    let reply = link.request(&[b"INFO", section.as_bytes()])?;
    let text = match reply {
        Value::Bulk(text) | Value::Simple(text) => text,
        Value::Error(text) => {
            return Err(ApplyError::Setup {
                node: link.addr.clone(),
                command: "INFO",
                reply: reply_text(&text),
            });
        }
        _ => return Ok(None),
    };
    let text = String::from_utf8_lossy(&text);
    Ok(text.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    }))
}

/// The newest RDB version a server of `redis_version` reads (what its `DUMP` writes).
pub(crate) fn rdb_version_of(redis_version: &str) -> u16 {
    let mut parts = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    match (major, minor) {
        (0..=3, _) => 7,
        (4, _) => 8,
        (5 | 6, _) => 9,
        (7, 0 | 1) => 10,
        (7, _) => 11,
        _ => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_map_to_the_rdb_versions_they_read() {
        assert_eq!(rdb_version_of("5.0.14"), 9);
        assert_eq!(rdb_version_of("6.2.6"), 9);
        assert_eq!(rdb_version_of("7.0.15"), 10);
        assert_eq!(rdb_version_of("7.2.4"), 11);
        assert_eq!(rdb_version_of("8.0.0"), 12);
    }

    #[test]
    fn the_first_uncovered_range_is_reported_whole() {
        let mut map = SlotMap::empty();
        assert_eq!(map.first_uncovered(), Some((0, SLOT_COUNT - 1)));
        for slot in 0..SLOT_COUNT {
            if !(100..=102).contains(&slot) && slot != 9000 {
                map.set(slot, 0);
            }
        }
        assert_eq!(map.first_uncovered(), Some((100, 102)));
        map.set(100, 1);
        map.set(101, 1);
        map.set(102, 1);
        assert_eq!(map.first_uncovered(), Some((9000, 9000)));
        map.set(9000, 2);
        assert_eq!(map.first_uncovered(), None);
        assert_eq!(map.owner(101), Some(1));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("::1", 7000), "[::1]:7000");
        assert_eq!(join_host_port("10.0.0.1", 7000), "10.0.0.1:7000");
    }
}
