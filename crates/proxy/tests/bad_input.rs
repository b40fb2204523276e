//! Bad input through the proxy (issue 3, "bad input gets a clear error"): garbage bytes, a bulk
//! length of 2^40, million-element arrays, a client that never reads its replies, a client that
//! disconnects mid-pipeline, a backend that dies mid-reply. For each, the offender gets the
//! exact protocol error or is closed, a well-behaved control client connected throughout keeps
//! getting correct answers, a fresh connection still gets PONG (a dead worker would not answer),
//! and where memory is at stake the process's RSS is measured around the offence.
//!
//! Memory is measured in-process: the proxy runs on threads of this test binary, so its RSS
//! (`VmRSS` in `/proc/self/status`) is the proxy's plus the test's own buffers, which are
//! allocated before the baseline is taken. Every test takes the `SERIAL` lock, so no other test
//! of this file allocates while one measures (and only one heavy test loads the 2 cores at a
//! time); tests share one cluster and proxy while any of them holds it.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::TestCluster;

mod support;
use support::{IO_TIMEOUT, connect, read_reply_bytes};

/// One cluster and one proxy, shared by the tests of this file that run while it is alive.
struct Shared {
    proxy: ProxyHandle,
    // Declared after the proxy so the proxy stops before its backends do.
    cluster: TestCluster,
}

/// The live fixture, if any test holds it. Weak, so the cluster goes with the last test using
/// it: a static that owned it would never be dropped and would leave redis-servers running.
static SHARED: tokio::sync::Mutex<Weak<Shared>> = tokio::sync::Mutex::const_new(Weak::new());
/// Taken by every test after it holds the fixture: RSS measurements see no other test's
/// allocations, and the next test (already holding the fixture while it waits) keeps the
/// cluster alive between tests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn shared() -> Arc<Shared> {
    let mut slot = SHARED.lock().await;
    if let Some(shared) = slot.upgrade() {
        return shared;
    }
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    // Not about access control: every client may run everything (FLUSHALL, KEYS, CONFIG …).
    config.access.default_role = Some("admin".into());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let shared = Arc::new(Shared { proxy, cluster });
    *slot = Arc::downgrade(&shared);
    shared
}

/// Reads until the peer closes; panics if it does not within the read timeout.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after the error reply is still "closed".
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "the connection was not closed ({e}); got so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Sends `request` on a fresh connection and returns everything received until the proxy
/// closed the connection.
fn answer_then_close(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

/// A fresh connection gets PONG: the worker is alive and accepting.
fn assert_alive(addr: SocketAddr) {
    let mut stream = connect(addr);
    stream.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_reply_bytes(&mut stream, 1), [b"+PONG\r\n".to_vec()]);
}

/// The well-behaved client, connected for the whole test: its counter and its keys of every
/// master must read back exactly what it wrote.
struct Control {
    conn: redis::Connection,
    counter: i64,
    keys: Vec<String>,
}

impl Control {
    fn new(addr: SocketAddr, tag: &str) -> Self {
        let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
        let mut conn = client.get_connection_with_timeout(IO_TIMEOUT).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // Keys of many slots, so both masters' shared connections are exercised.
        let keys: Vec<String> = (0..16).map(|i| format!("control:{tag}:{i}")).collect();
        let mut mset = redis::cmd("MSET");
        for (i, key) in keys.iter().enumerate() {
            mset.arg(key).arg(i);
        }
        mset.exec(&mut conn).unwrap();
        redis::cmd("DEL")
            .arg(format!("control:{tag}:counter"))
            .exec(&mut conn)
            .unwrap();
        let mut control = Self {
            conn,
            counter: 0,
            keys,
        };
        control.check();
        control
    }

    fn check(&mut self) {
        self.counter += 1;
        let tag_key = self.keys[0].rsplit_once(':').unwrap().0.to_owned() + ":counter";
        let n: i64 = redis::cmd("INCR")
            .arg(&tag_key)
            .query(&mut self.conn)
            .unwrap();
        assert_eq!(n, self.counter, "the control client's counter");
        let values: Vec<i64> = redis::cmd("MGET")
            .arg(&self.keys)
            .query(&mut self.conn)
            .unwrap();
        assert_eq!(values, (0..16).collect::<Vec<i64>>());
    }
}

/// This process's resident set size in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn garbage_bytes_get_the_protocol_error_and_only_that_connection_closes() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "garbage");

    // Each pair: garbage, and exactly what the proxy answers before closing (Redis's wording).
    let cases: [(&[u8], &str); 7] = [
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\nxyz\r\n",
            "-ERR Protocol error: expected '$', got 'x'\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$4\r\nPINGxx\r\n",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*1\r\n$4\r\nPING\r\n\xff\xfe*\x00\x01\r\n*9\r\n\x80",
            // An inline line ends at its first NUL: `\xff\xfe*` is an unknown command, then
            // `*9` expects `$` and finds 0x80.
            "+PONG\r\n-ERR unknown command '\u{fffd}\u{fffd}*', with args beginning with: \r\n-ERR Protocol error: expected '$', got '\\x80'\r\n",
        ),
        (
            // Requests pipelined before the garbage are all answered first, in order.
            b"SET garbage:k v\r\nGET garbage:k\r\nMGET garbage:k garbage:other\r\n*2\r\n$3\r\nGET\r\n$x\r\n",
            "+OK\r\n$1\r\nv\r\n*2\r\n$1\r\nv\r\n$-1\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (garbage, expected) in cases {
        assert_eq!(
            answer_then_close(addr, garbage),
            expected,
            "for {:?}",
            String::from_utf8_lossy(garbage)
        );
        control.check();
    }

    // Inside a transaction and in subscribed mode (where the pub/sub relay parses), too.
    assert_eq!(
        answer_then_close(addr, b"MULTI\r\nSET garbage:tx 1\r\n*1\r\n$1\r\n\r\n\r\n"),
        "+OK\r\n+QUEUED\r\n-ERR Protocol error: bulk string not terminated by CRLF\r\n"
    );
    let mut stream = connect(addr);
    stream.write_all(b"SUBSCRIBE garbage:ch\r\n").unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 1),
        [b"*3\r\n$9\r\nsubscribe\r\n$10\r\ngarbage:ch\r\n:1\r\n".to_vec()]
    );
    stream.write_all(b"PING\r\n*1\r\n$z\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut stream)),
        "*2\r\n$4\r\npong\r\n$0\r\n\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    // The aborted transaction never ran.
    let exists: i64 = redis::cmd("EXISTS")
        .arg("garbage:tx")
        .query(&mut control.conn)
        .unwrap();
    assert_eq!(exists, 0);

    control.check();
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_subscribed_mode_refused_commands_quit_and_garbage_are_answered_in_request_order() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "suborder");

    // All pipelined at once: the replies the proxy gives itself (the refusal of GET, QUIT's
    // +OK) must come after the node's replies to the requests sent before them.
    let subscribe = |ch: &str| format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:", ch.len());
    let expected = format!(
        "{}1\r\n{}2\r\n-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n+OK\r\n",
        subscribe("so:a"),
        subscribe("so:b")
    );
    assert_eq!(
        answer_then_close(
            addr,
            b"SUBSCRIBE so:a\r\nSUBSCRIBE so:b\r\nGET k\r\nPING\r\nQUIT\r\nPING\r\n"
        ),
        expected
    );
    assert_eq!(
        answer_then_close(
            addr,
            b"SUBSCRIBE so:a\r\nSUBSCRIBE so:b\r\nPING\r\n*1\r\n$z\r\nPING\r\n"
        ),
        format!(
            "{}1\r\n{}2\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n-ERR Protocol error: invalid bulk length\r\n",
            subscribe("so:a"),
            subscribe("so:b")
        )
    );
    // As in Redis, an unknown command or a wrong arity is reported as such, not as refused.
    let mut stream = connect(addr);
    stream
        .write_all(b"SUBSCRIBE so:a\r\nNOSUCH x\r\nGET\r\n")
        .unwrap();
    let replies = read_reply_bytes(&mut stream, 3);
    assert_eq!(
        replies[1..],
        [
            b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n".to_vec(),
            b"-ERR wrong number of arguments for 'get' command\r\n".to_vec()
        ]
    );
    drop(stream);
    // Leaving subscribed mode with refused commands around it keeps the order too.
    let mut stream = connect(addr);
    stream
        .write_all(b"SUBSCRIBE so:a\r\nGET k\r\nUNSUBSCRIBE\r\nGET k\r\n")
        .unwrap();
    let replies: Vec<String> = read_reply_bytes(&mut stream, 4)
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(replies[0], format!("{}1\r\n", subscribe("so:a")));
    assert!(
        replies[1].starts_with("-ERR Can't execute 'get'"),
        "{replies:?}"
    );
    assert_eq!(
        replies[2],
        "*3\r\n$11\r\nunsubscribe\r\n$4\r\nso:a\r\n:0\r\n"
    );
    assert_eq!(replies[3], "$-1\r\n");
    control.check();
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_and_sharded_subscriptions_both_end_before_subscribed_mode_does() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "mixed");
    let mut stream = connect(addr);
    // Sharded first, so the relay runs on the channel's owner; a classic channel joins it.
    stream
        .write_all(b"SSUBSCRIBE mixed:s\r\nSUBSCRIBE mixed:a\r\nSUNSUBSCRIBE\r\nGET k\r\n")
        .unwrap();
    let replies: Vec<String> = read_reply_bytes(&mut stream, 4)
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(
        replies[2],
        "*3\r\n$12\r\nsunsubscribe\r\n$7\r\nmixed:s\r\n:0\r\n"
    );
    // Redis counts the kinds apart: with mixed:a left, the client is still subscribed.
    assert!(
        replies[3].starts_with("-ERR Can't execute 'get'"),
        "{replies:?}"
    );
    // The count PUBLISH returns is the receiving node's own subscribers; the cluster bus
    // carries the message to the relay's node, whichever it is.
    redis::cmd("PUBLISH")
        .arg("mixed:a")
        .arg("hi")
        .exec(&mut control.conn)
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 1),
        [b"*3\r\n$7\r\nmessage\r\n$7\r\nmixed:a\r\n$2\r\nhi\r\n".to_vec()]
    );
    stream.write_all(b"UNSUBSCRIBE\r\nGET k\r\n").unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 2),
        [
            b"*3\r\n$11\r\nunsubscribe\r\n$7\r\nmixed:a\r\n:0\r\n".to_vec(),
            b"$-1\r\n".to_vec()
        ]
    );
    control.check();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_length_of_2_pow_40_is_refused_at_once_and_a_huge_declared_one_allocates_nothing() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "bulk");

    // Refused on the header: the proxy neither waits for a TiB nor reserves one.
    let mut stream = connect(addr);
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1099511627776\r\n")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut stream)),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // One above Redis's proto-max-bulk-len (512 MiB), too.
    assert_eq!(
        answer_then_close(addr, b"*2\r\n$3\r\nGET\r\n$536870913\r\n"),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    control.check();

    // A client that declares the largest legal bulk (512 MiB) and sends only 4 MiB costs about
    // what it sent, not what it declared: buffers grow only as bytes arrive. The bound, 64 MiB,
    // is 16 times what arrives, and an eighth of what a reservation would take.
    let before = rss();
    let mut stream = connect(addr);
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$10\r\nbulk:large\r\n$536870912\r\n")
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..4 {
        stream.write_all(&chunk).unwrap();
    }
    // Let the proxy read it all.
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "RSS grew by {} MiB for a client that sent 4 MiB of a declared 512 MiB",
        grown / MIB
    );
    control.check();
    // The proxy is still waiting for the rest of the value: nothing was answered.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the proxy answered an incomplete request"
    );
    drop(stream);
    control.check();
    assert_alive(addr);
}

/// `*<n>\r\n` then `name` then the arguments, as multibulk.
fn multibulk(name: &str, args: impl ExactSizeIterator<Item = String>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("*{}\r\n${}\r\n{name}\r\n", args.len() + 1, name.len()).as_bytes(),
    );
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn million_element_arrays_are_answered_or_refused_and_others_keep_being_served() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "array");

    // Above the parser's bound (2^20 arguments): refused on the header, nothing buffered.
    assert_eq!(
        answer_then_close(addr, b"*1048577\r\n"),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(
        answer_then_close(addr, b"*99999999999999999999\r\n"),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    control.check();

    // A million arguments of an unknown command: one error, and the connection stays usable.
    let mut stream = connect(addr);
    let unknown = multibulk("NOSUCHCMD", (0..999_999).map(|i| i.to_string()));
    stream.write_all(&unknown).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let replies = read_reply_bytes(&mut stream, 2);
    assert!(
        replies[0].starts_with(b"-ERR unknown command 'NOSUCHCMD'"),
        "{}",
        String::from_utf8_lossy(&replies[0])
    );
    assert_eq!(replies[1], b"+PONG\r\n");
    control.check();

    // MGET of a million keys in one slot: forwarded whole, a million-element reply relayed.
    let before = rss();
    let started = Instant::now();
    let mget = multibulk("MGET", (0..999_999).map(|i| format!("{{array}}:{i}")));
    stream.write_all(&mget).unwrap();
    let reply = read_reply_bytes(&mut stream, 1).pop().unwrap();
    assert!(reply.starts_with(b"*999999\r\n$-1\r\n"));
    assert_eq!(reply.len(), "*999999\r\n".len() + 999_999 * 5);
    control.check();

    // DEL of a million keys across slots: split per key and summed.
    let del = multibulk("DEL", (0..999_999).map(|i| format!("array:{i}")));
    stream.write_all(&del).unwrap();
    stream
        .write_all(b"SET array:0 x\r\nDEL array:0\r\n")
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 3),
        [b":0\r\n".to_vec(), b"+OK\r\n".to_vec(), b":1\r\n".to_vec()]
    );
    let grown = rss().saturating_sub(before);
    eprintln!(
        "a million-key MGET and DEL took {:?}; RSS grew by {} MiB",
        started.elapsed(),
        grown / MIB
    );
    control.check();
    drop(stream);
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_held_back_and_memory_stays_bounded() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "noread");
    redis::cmd("SET")
        .arg("noread:value")
        .arg(vec![b'v'; 10 * 1024])
        .exec(&mut control.conn)
        .unwrap();

    // 200,000 GETs of a 10 KB value: about 2 GB of replies if the proxy buffered them all.
    let get = b"*2\r\n$3\r\nGET\r\n$12\r\nnoread:value\r\n";
    let pipeline: Vec<u8> = get.repeat(200_000);
    let before = rss();
    let mut offender = connect(addr);
    offender
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        // Writes until everything is in the kernel's buffers or the proxy stops reading.
        let mut written = 0;
        while written < pipeline.len() {
            let end = (written + 64 * 1024).min(pipeline.len());
            match offender.write(&pipeline[written..end]) {
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("writing the pipeline failed: {e}"),
            }
        }
        (offender, written)
    });
    // Meanwhile the control client is served, and the RSS peak is sampled.
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        control.check();
        peak = peak.max(rss());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (offender, written) = writer.join().unwrap();
    peak = peak.max(rss());
    let grown = peak.saturating_sub(before);
    eprintln!(
        "the offender wrote {written} of {} bytes; RSS grew by {} MiB",
        200_000 * get.len(),
        grown / MIB
    );
    // Back-pressure holds 1024 pending requests (10 MiB of replies) plus the reply bytes in
    // flight to the socket; 64 MiB leaves room for allocator slack and is 30 times less than
    // buffering every reply would take.
    assert!(
        grown < 64 * MIB,
        "RSS grew by {} MiB for a client that never reads",
        grown / MIB
    );
    drop(offender);
    control.check();
    assert_alive(addr);
}

/// Sum over the masters of `INFO commandstats` calls of `command` since the last reset.
fn backend_calls(cluster: &TestCluster, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    cluster
        .servers()
        .iter()
        .map(|server| {
            let mut conn = redis::Client::open(server.url())
                .unwrap()
                .get_connection_with_timeout(IO_TIMEOUT)
                .unwrap();
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut conn)
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse::<u64>().unwrap())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_cannot_pile_up_requests_split_per_key() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "piles");
    redis::cmd("SET")
        .arg("piles:value")
        .arg(vec![b'v'; 1024 * 1024])
        .exec(&mut control.conn)
        .unwrap();
    for server in shared.cluster.servers() {
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_connection_with_timeout(IO_TIMEOUT)
            .unwrap();
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(&mut conn)
            .unwrap();
    }

    // 12 MiB of replies (more than the sockets buffer: the proxy's writes block), then 20 DELs
    // of 50,000 keys across slots: a million per-key requests if the proxy kept reading.
    let mut pipeline = b"*2\r\n$3\r\nGET\r\n$11\r\npiles:value\r\n".repeat(12);
    let del = multibulk("DEL", (0..50_000).map(|i| format!("piles:{i}")));
    for _ in 0..20 {
        pipeline.extend_from_slice(&del);
    }
    let mut offender = connect(addr);
    offender
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let mut written = 0;
        while written < pipeline.len() {
            let end = (written + 64 * 1024).min(pipeline.len());
            match offender.write(&pipeline[written..end]) {
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("writing the pipeline failed: {e}"),
            }
        }
        offender
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        control.check();
        std::thread::sleep(Duration::from_millis(100));
    }
    let offender = writer.join().unwrap();
    // Back-pressure counts per-key requests: once 1024 are pending the proxy stops reading,
    // so at most the DEL that crossed the line (50,000 keys) was dispatched, plus a little.
    let dispatched = backend_calls(&shared.cluster, "del");
    assert!(
        dispatched <= 1024 + 50_000,
        "{dispatched} per-key DELs were dispatched for a client that reads nothing"
    );
    drop(offender);
    control.check();
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_requests_than_the_pending_limit_in_one_read_are_all_answered() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    // 2,000 PINGs (12 KB, one read) are more than the 1024 the proxy parses before waiting
    // for replies to go out; the proxy answers them all without any further byte from the
    // client, which is waiting for those replies.
    let mut stream = connect(addr);
    stream.write_all(&b"PING\r\n".repeat(2_000)).unwrap();
    let replies = read_reply_bytes(&mut stream, 2_000);
    assert!(replies.iter().all(|r| r == b"+PONG\r\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_exec_ends_the_transaction_as_in_redis() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    // Redis 7 answers a refused EXEC with EXECABORT and discards the transaction, in normal
    // and in subscribed mode; what follows runs outside any transaction.
    let mut stream = connect(addr);
    stream
        .write_all(b"MULTI\r\nSET exec:k 1\r\nEXEC x\r\nEXEC\r\nGET exec:k\r\nSUBSCRIBE exec:ch\r\nEXEC\r\nEXEC x\r\n")
        .unwrap();
    let replies: Vec<String> = read_reply_bytes(&mut stream, 8)
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(
        replies,
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
            "-ERR EXEC without MULTI\r\n",
            "$-1\r\n",
            "*3\r\n$9\r\nsubscribe\r\n$7\r\nexec:ch\r\n:1\r\n",
            "-EXECABORT Transaction discarded because of: Can't execute 'exec': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
            "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_command_runs_in_request_order_with_pipelined_writes() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    // Redis runs a connection's requests in order: the BLPOP times out before the LPUSH runs.
    let mut stream = connect(addr);
    stream
        .write_all(b"DEL order:l\r\nBLPOP order:l 0.2\r\nLPUSH order:l x\r\n")
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 3),
        [b":0\r\n".to_vec(), b"*-1\r\n".to_vec(), b":1\r\n".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_slot_mset_missing_its_last_value_is_refused_whole() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    // `odd:a` and `odd:b` hash to different slots, so the proxy splits the MSET.
    assert_ne!(
        cinnabar_commands::key_slot(b"odd:a"),
        cinnabar_commands::key_slot(b"odd:b")
    );
    let mut stream = connect(addr);
    stream
        .write_all(b"MSET odd:a 1 odd:b\r\nEXISTS odd:a\r\n")
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 2),
        [
            b"-ERR wrong number of arguments for 'mset' command\r\n".to_vec(),
            b":0\r\n".to_vec()
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_large_replies_costs_bounded_memory() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "noreadbig");
    redis::cmd("SET")
        .arg("noreadbig:value")
        .arg(vec![b'v'; 1024 * 1024])
        .exec(&mut control.conn)
        .unwrap();

    let get = b"*2\r\n$3\r\nGET\r\n$15\r\nnoreadbig:value\r\n";
    let before = rss();
    let mut offender = connect(addr);
    // 2,000 requests fit in the socket buffers: the write never blocks.
    offender.write_all(&get.repeat(2_000)).unwrap();
    let mut grown = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && grown < 128 * MIB {
        grown = rss().saturating_sub(before);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let go of the memory before failing.
    drop(offender);
    control.check();
    assert!(
        grown < 128 * MIB,
        "RSS grew by {} MiB (and was still growing) for a client that never reads 1 MiB replies",
        grown / MIB
    );
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_disconnect_mid_pipeline_leave_nothing_behind() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "midpipe");

    // Every kind of request in flight: single-key, split across slots, fan-out, a transaction,
    // a blocking command; the last request cut in half.
    let mut pipeline = Vec::new();
    for i in 0..2_000 {
        pipeline
            .extend_from_slice(format!("SET midpipe:{i} {i}\r\nGET midpipe:{i}\r\n").as_bytes());
        if i % 100 == 0 {
            pipeline.extend_from_slice(
                format!("MGET midpipe:{i} midpipe:x midpipe:y\r\nDBSIZE\r\nMULTI\r\nINCR {{midpipe}}:n\r\nEXEC\r\nBLPOP midpipe:list 0.01\r\n")
                    .as_bytes(),
            );
        }
    }
    pipeline.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$9\r\nmidpipe:z\r\n$100\r\nhalf");

    let before = rss();
    for round in 0..20 {
        let mut stream = connect(addr);
        // Cut at a different point each round; some rounds read a few replies first, so the
        // proxy is mid-write when the client goes.
        let cut = pipeline.len() * (round + 1) / 20;
        stream.write_all(&pipeline[..cut]).unwrap();
        if round % 2 == 1 {
            let mut some = [0u8; 1000];
            let _ = stream.read(&mut some).unwrap();
        }
        drop(stream);
        control.check();
    }
    // A blocked command whose client left is cancelled, not left holding a backend connection.
    let mut stream = connect(addr);
    stream.write_all(b"BLPOP midpipe:never 0\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(stream);

    // After a pause for in-flight replies to drain, the same work on one connection gets every
    // reply, in order: no ticket of a departed client leaked into it.
    std::thread::sleep(Duration::from_millis(300));
    let mut stream = connect(addr);
    stream
        .write_all(b"SET midpipe:final 1\r\nMGET midpipe:final midpipe:x\r\nBLPOP midpipe:list 0.01\r\nGET midpipe:final\r\n")
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 4),
        [
            b"+OK\r\n".to_vec(),
            b"*2\r\n$1\r\n1\r\n$-1\r\n".to_vec(),
            b"*-1\r\n".to_vec(),
            b"$1\r\n1\r\n".to_vec()
        ]
    );
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "RSS grew by {} MiB over 20 abandoned pipelines",
        grown / MIB
    );
    control.check();
    assert_alive(addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_dies_mid_reply_fails_only_its_requests() {
    // Its own cluster: a master is killed. Replicas would fail over within the retry window and
    // hide the death, so there are none; a short window makes the dead slots fail fast.
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.retry_window = Duration::from_millis(500);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let addr = proxy.local_addr();

    // A key on each master; the doomed one holds a 4 MiB value.
    let report = cluster.check().await;
    let masters: Vec<_> = report.masters().collect();
    let key_on = |master: usize| -> String {
        (0..)
            .map(|i| format!("dies:{i}"))
            .find(|k| {
                let slot = cinnabar_commands::key_slot(k.as_bytes());
                masters[master]
                    .slots
                    .iter()
                    .any(|r| r.start <= slot && slot <= r.end)
            })
            .unwrap()
    };
    let victim = masters[0].addr.clone();
    let doomed = key_on(0);
    let survivor = key_on(1);
    let value = vec![b'd'; 4 * 1024 * 1024];
    let mut control = Control::new(addr, "dies");
    redis::cmd("SET")
        .arg(&doomed)
        .arg(&value)
        .exec(&mut control.conn)
        .unwrap();
    redis::cmd("SET")
        .arg(&survivor)
        .arg("alive")
        .exec(&mut control.conn)
        .unwrap();

    // 40 GETs of the big value (160 MiB of replies) with a split MGET in the middle; the
    // master dies as the first reply reaches the client, with most still to be sent.
    let mut stream = connect(addr);
    let mut pipeline = Vec::new();
    for i in 0..40 {
        pipeline.extend_from_slice(format!("GET {doomed}\r\n").as_bytes());
        if i == 20 {
            pipeline.extend_from_slice(format!("MGET {survivor} {doomed}\r\n").as_bytes());
        }
    }
    stream.write_all(&pipeline).unwrap();
    let mut first = [0u8; 1];
    // Peek, so the byte stays for `read_replies`.
    stream.peek(&mut first).unwrap();
    cluster.server_by_addr_mut(&victim).unwrap().kill();

    let replies = read_reply_bytes(&mut stream, 41);
    let full = {
        let mut full = format!("${}\r\n", value.len()).into_bytes();
        full.extend_from_slice(&value);
        full.extend_from_slice(b"\r\n");
        full
    };
    let mut errors = 0;
    for (i, reply) in replies.iter().enumerate() {
        if reply.first() == Some(&b'-') {
            errors += 1;
            continue;
        }
        if i == 21 {
            let mut expected = b"*2\r\n$5\r\nalive\r\n".to_vec();
            expected.extend_from_slice(&full);
            assert!(*reply == expected, "MGET answered a wrong value");
        } else {
            assert!(
                *reply == full,
                "reply {i} is neither the value nor an error"
            );
        }
    }
    eprintln!("{errors} of 41 requests failed with the master");
    assert!(
        errors > 0,
        "every reply arrived before the kill: the test did not kill mid-reply"
    );
    // Once the error is out, a reply never comes back to life: later ones fail too (the node
    // is dead), which proves the failed ones were not skipped out of order.
    let first_error = replies.iter().position(|r| r[0] == b'-').unwrap();
    assert!(
        replies[first_error..].iter().all(|r| r[0] == b'-'),
        "a reply after the first error succeeded"
    );

    // The same connection keeps working for the surviving master's slots.
    stream
        .write_all(
            format!("GET {survivor}\r\nSET {survivor} again\r\nGET {survivor}\r\n").as_bytes(),
        )
        .unwrap();
    assert_eq!(
        read_reply_bytes(&mut stream, 3),
        [
            b"$5\r\nalive\r\n".to_vec(),
            b"+OK\r\n".to_vec(),
            b"$5\r\nagain\r\n".to_vec()
        ]
    );
    // A fresh client too, for the survivor's slots; the dead master's get an error, not a hang.
    let mut fresh = connect(addr);
    fresh
        .write_all(format!("GET {survivor}\r\nGET {doomed}\r\nPING\r\n").as_bytes())
        .unwrap();
    let replies = read_reply_bytes(&mut fresh, 3);
    assert_eq!(replies[0], b"$5\r\nagain\r\n");
    assert_eq!(
        replies[1][0],
        b'-',
        "{}",
        String::from_utf8_lossy(&replies[1])
    );
    assert_eq!(replies[2], b"+PONG\r\n");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_behind_a_blocking_command_cannot_pile_up_in_the_proxy() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    let mut control = Control::new(addr, "pileup");
    // A blocking command holds the client's later requests; they must stay in the kernel's
    // buffers (and the client's), not in the proxy's memory.
    let mut offender = connect(addr);
    offender
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    offender
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$11\r\npileup:none\r\n$1\r\n3\r\n")
        .unwrap();
    let mib = MIB as usize;
    let pings = b"PING\r\n".repeat(64 * mib / 6);
    let mut written = 0;
    while written < pings.len() {
        let end = (written + 64 * 1024).min(pings.len());
        match offender.write(&pings[written..end]) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("writing failed: {e}"),
        }
    }
    assert!(
        written < 32 * mib,
        "the proxy kept reading while the requests could not run: {} MiB accepted",
        written / mib
    );
    control.check();
    drop(offender);
    assert_alive(addr);
}
