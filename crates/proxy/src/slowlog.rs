//! The proxy's own slow log: requests that took longer than `slowlog_slower_than` from arrival
//! to reply, across all workers, newest first, as `SLOWLOG GET/LEN/RESET` report them.
//!
//! Shared by the workers behind a mutex, taken only when a request was slow (never on the fast
//! path). An entry names the command, not its arguments: keeping every request's arguments until
//! its reply would cost an allocation per request, and the command plus the client says what
//! was slow.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cinnabar_resp::encode;

/// One slow request.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) took: Duration,
    pub(crate) command: &'static str,
    pub(crate) client: Option<SocketAddr>,
    pub(crate) name: String,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Newest first: (id, unix seconds, entry).
    entries: VecDeque<(u64, u64, Entry)>,
}

/// The slow log, bounded to `max_len` entries.
#[derive(Debug)]
pub(crate) struct SlowLog {
    inner: Mutex<Inner>,
    max_len: usize,
}

impl Default for SlowLog {
    fn default() -> Self {
        Self::new(128)
    }
}

impl SlowLog {
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_len,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves a valid log: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record(&self, entry: Entry) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push_front((id, now, entry));
        let max_len = self.max_len;
        inner.entries.truncate(max_len);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub(crate) fn reset(&self) {
        self.lock().entries.clear();
    }

    /// `SLOWLOG GET count` (`usize::MAX` for all): `[id, time, µs, [command], client, name]`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, count: usize) {
        let inner = self.lock();
        let shown = inner.entries.len().min(count);
        encode::array_header(out, shown);
        for (id, time, entry) in inner.entries.iter().take(shown) {
            encode::array_header(out, 6);
            encode::integer(out, i64::try_from(*id).unwrap_or(i64::MAX));
            encode::integer(out, i64::try_from(*time).unwrap_or(i64::MAX));
            encode::integer(
                out,
                i64::try_from(entry.took.as_micros()).unwrap_or(i64::MAX),
            );
            encode::array_header(out, 1);
            encode::bulk(out, entry.command.replace('|', " ").as_bytes());
            let client = entry.client.map_or_else(String::new, |c| c.to_string());
            encode::bulk(out, client.as_bytes());
            encode::bulk(out, entry.name.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &'static str, ms: u64) -> Entry {
        Entry {
            took: Duration::from_millis(ms),
            command,
            client: Some("127.0.0.1:5000".parse().unwrap()),
            name: "app".into(),
        }
    }

    #[test]
    fn keeps_the_newest_entries_up_to_its_length() {
        let log = SlowLog::new(2);
        log.record(entry("get", 11));
        log.record(entry("keys", 50));
        log.record(entry("client|list", 20));
        assert_eq!(log.len(), 2);
        let mut out = Vec::new();
        log.write(&mut out, usize::MAX);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("*2\r\n*6\r\n:2\r\n"), "{text}");
        assert!(text.contains("$11\r\nclient list\r\n"), "{text}");
        assert!(
            text.contains(":20000\r\n") && text.contains(":50000\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("$3\r\nget\r\n"),
            "the oldest is gone: {text}"
        );
        let mut one = Vec::new();
        log.write(&mut one, 1);
        assert!(one.starts_with(b"*1\r\n"));
        log.reset();
        assert_eq!(log.len(), 0);
    }
}
