//! Fuzzing the proxy's session state machine (issue 3: "fuzz the session state machine, not only
//! the parser"; the parser has its own cargo-fuzz target in `fuzz/`). Random sequences of
//! requests drawn from a grammar that reaches every state of a session: keyed commands single-
//! and multi-key (across slots or in one), MULTI/EXEC/DISCARD/WATCH/UNWATCH in any order,
//! SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE and their UNSUBSCRIBEs with PING and refused commands in
//! subscribed mode, blocking commands with tiny timeouts, SCAN with random cursors, HELLO with
//! random versions, CLIENT subcommands, unknown commands, wrong arity, inline and multibulk
//! encodings, a tail of random garbage, writes split at random byte boundaries, and
//! disconnects at random points.
//!
//! Each sequence goes to the proxy (in front of a real 2-master cluster) and, as the oracle, to
//! a standalone redis-server on its own connection. Checked for every case:
//! - the proxy never panics or wedges: a fresh connection gets PONG afterwards, and a control
//!   client on its own connection reads back its counter correctly;
//! - one reply per request, in order: the proxy sends exactly as many replies as Redis did,
//!   and closes the connection exactly when Redis did (QUIT, protocol error); replies to a
//!   garbage tail are counted with the proxy's own request parser, whose documented
//!   deviations from Redis are all stricter;
//! - identical replies when every key is in one slot and the sequence avoids the documented
//!   differences (`CONTENT_DIVERGENT` below: WATCH, RESP3, proxy-owned CLIENT/HELLO answers,
//!   SCAN cursors, RESET, sharded channels; and inside MULTI, PING, DBSIZE, SELECT and UNWATCH,
//!   which the proxy refuses where Redis queues them). An UNSUBSCRIBE without arguments may
//!   confirm channels in another order (Redis's hash-table order), so those are sorted.
//!
//! Counts are not compared after a sequence makes Redis and the proxy legitimately take
//! different paths (see `Model`): SUBSCRIBE or RESET inside MULTI (the proxy refuses what Redis
//! queues), HELLO 3 (the proxy stays on RESP2).
//!
//! Default: 64 cases, about 15 s on 2 cores (debug build). Long runs:
//! `CINNABAR_FUZZ_CASES=5000 cargo test -p cinnabar-proxy --release --test session_fuzz -- --nocapture`
//! (a failure prints the shrunk sequence; `CINNABAR_FUZZ_SEED=<n>` replays a run's cases).

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cinnabar_proxy::ProxyConfig;
use cinnabar_resp::{Limits, Parsed, ReplyScanner, Request, RequestParser, Value, parse_value};
use cinnabar_testkit::{TestCluster, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

mod support;
use support::connect;

/// Read/write timeout of every test socket: a proxy bug fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Redis must stay silent before its replies are taken as complete. The slowest
/// request of the grammar is a 10 ms blocking timeout.
const QUIET: Duration = Duration::from_millis(150);

/// One request of the grammar, or a way to end the sequence.
#[derive(Debug, Clone)]
enum Op {
    /// A well-formed request; `inline` sends it as an inline line (its arguments are plain).
    Cmd { args: Vec<String>, inline: bool },
    /// Random bytes (last op only: what follows garbage is unknowable).
    Garbage(Vec<u8>),
    /// Close the connection after `cut` bytes of the stream (last op only).
    Disconnect { cut: usize },
}

/// A generated case: requests, how keys are named, where the proxy's writes are split.
#[derive(Debug, Clone)]
struct Case {
    ops: Vec<Op>,
    /// Every key and shard channel shares one hash tag: replies can be compared whole.
    one_slot: bool,
    /// Fractions (per mille) of the stream where the proxy's writes are split.
    splits: Vec<u16>,
}

/// Commands whose replies legitimately differ between the proxy and Redis (documented in the
/// README and lib.rs): replies of such a case are counted, not compared.
const CONTENT_DIVERGENT: [&str; 7] = [
    "watch",
    "hello",
    "client",
    "scan",
    "reset",
    "ssubscribe",
    "sunsubscribe",
];

fn key(one_slot: bool, name: &str) -> String {
    if one_slot {
        format!("{{fz}}{name}")
    } else {
        format!("fz:{name}")
    }
}

/// Strategy for one request. Keys come from a small set so commands interact. `strict` leaves
/// out the commands whose replies legitimately differ, so the case's replies can be compared.
fn command(one_slot: bool, strict: bool) -> impl Strategy<Value = Vec<String>> {
    let k =
        move || prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(move |n| key(one_slot, n));
    let keys = move || prop::collection::vec(k(), 1..4);
    let value = || prop::sample::select(vec!["1", "v", "hello", "42", ""]).prop_map(String::from);
    let channel = || prop::sample::select(vec!["ch1", "ch2", "ch3"]).prop_map(String::from);
    let channels = move || prop::collection::vec(channel(), 0..3);
    let cmd = |name: &'static str| Just(vec![name.to_owned()]);
    let with = |name: &'static str, args: Vec<String>| {
        let mut v = vec![name.to_owned()];
        v.extend(args);
        v
    };
    prop_oneof![
        // Keyed commands, single and multi-key.
        6 => (k(), value()).prop_map(move |(k, v)| with("SET", vec![k, v])),
        6 => k().prop_map(move |k| with("GET", vec![k])),
        3 => k().prop_map(move |k| with("INCR", vec![k])),
        3 => (k(), value()).prop_map(move |(k, v)| with("LPUSH", vec![k, v])),
        2 => k().prop_map(move |k| with("RPOP", vec![k])),
        4 => keys().prop_map(move |ks| with("MGET", ks)),
        3 => keys().prop_map(move |ks| with("DEL", ks)),
        3 => keys().prop_map(move |ks| with("EXISTS", ks)),
        3 => prop::collection::vec((k(), value()), 1..3)
            .prop_map(move |kvs| with("MSET", kvs.into_iter().flat_map(|(k, v)| [k, v]).collect())),
        // Transactions in every order.
        5 => cmd("MULTI"),
        5 => cmd("EXEC"),
        2 => cmd("DISCARD"),
        2 => k().prop_map(move |k| with("WATCH", vec![k])),
        1 => cmd("UNWATCH"),
        // Pub/sub.
        3 => prop::collection::vec(channel(), 1..3).prop_map(move |c| with("SUBSCRIBE", c)),
        2 => channels().prop_map(move |c| with("UNSUBSCRIBE", c)),
        2 => prop::sample::select(vec!["ch*", "c?2"]).prop_map(move |p| with("PSUBSCRIBE", vec![p.to_owned()])),
        1 => prop::collection::vec(Just("ch*".to_owned()), 0..2).prop_map(move |p| with("PUNSUBSCRIBE", p)),
        1 => Just(()).prop_map(move |()| with("SSUBSCRIBE", vec![key(one_slot, "sch")])),
        1 => prop::collection::vec(Just(key(one_slot, "sch")), 0..2).prop_map(move |c| with("SUNSUBSCRIBE", c)),
        1 => (channel(), value()).prop_map(move |(c, v)| with("PUBLISH", vec![c, v])),
        4 => prop::option::of(value()).prop_map(move |m| with("PING", m.into_iter().collect())),
        // Blocking with tiny timeouts, on a list nothing pushes to (see the README: the proxy
        // runs a blocking command on its own connection, so its order relative to writes
        // pipelined around it is not Redis's).
        2 => Just(()).prop_map(move |()| with("BLPOP", vec![key(one_slot, "blk"), "0.01".into()])),
        1 => Just(()).prop_map(move |()| with("BRPOP", vec![key(one_slot, "blk"), key(one_slot, "blk2"), "0.01".into()])),
        // Keyspace and connection commands.
        2 => prop_oneof![Just("0".to_owned()), Just("abc".to_owned()), any::<u64>().prop_map(|c| c.to_string()), (0u64..8).prop_map(|c| c.to_string())]
            .prop_map(move |c| with("SCAN", vec![c, "COUNT".into(), "5".into()])),
        2 => prop::option::of(prop::sample::select(vec!["1", "2", "3", "4", "x", "-1"]))
            .prop_map(move |v| with("HELLO", v.into_iter().map(String::from).collect())),
        3 => prop::sample::select(vec![
            vec!["ID"], vec!["GETNAME"], vec!["SETNAME", "fuzzer"], vec!["SETNAME", "bad name"],
            vec!["INFO"], vec!["LIST"], vec!["NO-EVICT", "on"], vec!["SETINFO", "lib-name", "fz"],
            vec!["NOSUCHSUB"],
        ])
        .prop_map(move |a| with("CLIENT", a.into_iter().map(String::from).collect())),
        1 => value().prop_map(move |v| with("ECHO", vec![v])),
        1 => cmd("SELECT").prop_map(|mut v| { v.push("0".into()); v }),
        1 => cmd("DBSIZE"),
        1 => cmd("RESET"),
        // Mistakes.
        2 => value().prop_map(move |v| with("NOSUCHCMD", vec![v])),
        2 => prop::sample::select(vec![vec!["GET"], vec!["SET", "x"], vec!["MGET"], vec!["SUBSCRIBE"], vec!["MULTI", "x"], vec!["EXEC", "x"]])
            .prop_map(|a| a.into_iter().map(String::from).collect()),
        // Rare, since it ends the case.
        1 => cmd("QUIT"),
    ]
    .prop_filter("a documented difference", move |args| {
        !strict || !CONTENT_DIVERGENT.contains(&args[0].to_ascii_lowercase().as_str())
    })
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(one_slot, strict)| {
        let op = (command(one_slot, one_slot && strict), any::<bool>()).prop_map(|(args, inline)| Op::Cmd {
            // Inline only when every argument survives an inline line unquoted.
            inline: inline && args.iter().all(|a| !a.is_empty() && !a.contains(' ')),
            args,
        });
        let tail = prop_oneof![
            6 => Just(None),
            2 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|g| Some(Op::Garbage(g))),
            // Garbage that looks like RESP, to get past the first byte.
            1 => (1u32..5, prop::collection::vec(any::<u8>(), 0..12))
                .prop_map(|(n, g)| { let mut b = format!("*{n}\r\n$").into_bytes(); b.extend(g); Some(Op::Garbage(b)) }),
            2 => (0usize..1000).prop_map(|cut| Some(Op::Disconnect { cut })),
        ];
        (
            prop::collection::vec(op, 1..25),
            tail,
            prop::collection::vec(0u16..1000, 0..5),
        )
            .prop_map(move |(mut ops, tail, splits)| {
                ops.extend(tail);
                Case {
                    ops,
                    one_slot,
                    splits,
                }
            })
    })
}

/// The bytes of one op.
fn encode(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Cmd { args, inline: true } => {
            out.extend_from_slice(args.join(" ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Op::Cmd {
            args,
            inline: false,
        } => {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        Op::Garbage(bytes) => out.extend_from_slice(bytes),
        Op::Disconnect { .. } => {}
    }
}

/// What Redis and the proxy may legitimately disagree on for a case.
#[derive(Debug, Default)]
struct Model {
    /// Reply counts may differ from here on.
    counts_diverge: bool,
    /// Reply contents may differ.
    content_diverges: bool,
}

impl Model {
    /// Follows Redis's (RESP2) connection state through `ops` to find where the proxy takes a
    /// documented different path.
    fn of(ops: &[Op]) -> Self {
        let mut model = Model::default();
        let mut in_multi = false;
        let mut channels = std::collections::BTreeSet::new();
        let mut patterns = std::collections::BTreeSet::new();
        let mut shards = std::collections::BTreeSet::new();
        for op in ops {
            let Op::Cmd { args, .. } = op else { continue };
            let name = args[0].to_ascii_lowercase();
            let arity_ok = args.len() > 1
                || !matches!(name.as_str(), "subscribe" | "psubscribe" | "ssubscribe");
            model.content_diverges |= CONTENT_DIVERGENT.contains(&name.as_str());
            // The proxy refuses inside MULTI what it would fan out or answer itself (PING,
            // DBSIZE, SELECT) and connection-state commands (UNWATCH); Redis queues them. Same
            // count, different replies.
            if in_multi && matches!(name.as_str(), "ping" | "dbsize" | "select" | "unwatch") {
                model.content_diverges = true;
            }
            let pubsub = name.contains("subscribe");
            if in_multi && (pubsub || name == "reset") && arity_ok {
                model.counts_diverge = true;
            }
            if name == "hello" && args.get(1).is_some_and(|v| v == "3") {
                model.counts_diverge = true;
            }
            let subscribed = !channels.is_empty() || !patterns.is_empty() || !shards.is_empty();
            match name.as_str() {
                "multi" if !subscribed && args.len() == 1 => in_multi = true,
                // A refused EXEC (`EXEC x`) discards the transaction too.
                "exec" => in_multi = false,
                "discard" if args.len() == 1 => in_multi = false,
                "reset" => {
                    in_multi = false;
                    channels.clear();
                    patterns.clear();
                    shards.clear();
                }
                "ssubscribe" if !in_multi => shards.extend(args[1..].iter().cloned()),
                "sunsubscribe" if !in_multi && args.len() == 1 => shards.clear(),
                "sunsubscribe" if !in_multi => args[1..].iter().for_each(|c| {
                    shards.remove(c);
                }),
                "subscribe" if !in_multi => channels.extend(args[1..].iter().cloned()),
                "psubscribe" if !in_multi => patterns.extend(args[1..].iter().cloned()),
                "unsubscribe" if !in_multi && args.len() == 1 => channels.clear(),
                "unsubscribe" if !in_multi => args[1..].iter().for_each(|c| {
                    channels.remove(c);
                }),
                "punsubscribe" if !in_multi && args.len() == 1 => patterns.clear(),
                "punsubscribe" if !in_multi => args[1..].iter().for_each(|p| {
                    patterns.remove(p);
                }),
                _ => {}
            }
        }
        model
    }
}

/// What one connection got back.
#[derive(Debug)]
struct Outcome {
    replies: Vec<Vec<u8>>,
    closed: bool,
}

/// Splits `bytes` into complete replies; leftover bytes are a failure.
fn split_replies(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut replies = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match scanner.scan(&bytes[pos..]) {
            Ok(Some(len)) => {
                replies.push(bytes[pos..pos + len].to_vec());
                pos += len;
            }
            Ok(None) => {
                return Err(format!(
                    "a partial reply at the end: {:?}",
                    String::from_utf8_lossy(&bytes[pos..])
                ));
            }
            Err(e) => {
                return Err(format!(
                    "not RESP ({e}): {:?}",
                    String::from_utf8_lossy(&bytes[pos..])
                ));
            }
        }
    }
    Ok(replies)
}

/// Replies as text, with one difference Redis itself allows removed: an UNSUBSCRIBE without
/// arguments confirms the channels in hash-table order, which differs between a cluster node
/// and a standalone server. Within each run of such confirmations the channel names are
/// sorted (the counts, which only go down, stay where they are).
fn normalize(replies: &[Vec<u8>]) -> Vec<String> {
    let limits = Limits::default();
    let confirmation = |reply: &[u8]| -> Option<(Vec<u8>, Vec<u8>, i64)> {
        let Ok(Some((Value::Array(items), _))) = parse_value(reply, &limits) else {
            return None;
        };
        match items.as_slice() {
            [Value::Bulk(kind), Value::Bulk(channel), Value::Integer(n)]
                if kind.ends_with(b"unsubscribe") =>
            {
                Some((kind.clone(), channel.clone(), *n))
            }
            _ => None,
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < replies.len() {
        let Some((kind, _, _)) = confirmation(&replies[i]) else {
            out.push(String::from_utf8_lossy(&replies[i]).into_owned());
            i += 1;
            continue;
        };
        let mut run = Vec::new();
        while let Some((k, channel, n)) = replies.get(i).and_then(|r| confirmation(r)) {
            if k != kind {
                break;
            }
            run.push((channel, n));
            i += 1;
        }
        let mut channels: Vec<&Vec<u8>> = run.iter().map(|(c, _)| c).collect();
        channels.sort();
        for (channel, (_, n)) in channels.iter().zip(&run) {
            out.push(format!(
                "{} {} {n}",
                String::from_utf8_lossy(&kind),
                String::from_utf8_lossy(channel)
            ));
        }
    }
    out
}

/// Reads until the peer closes, or stays silent for `quiet`, or `want` replies arrived and
/// then `quiet` passed without more; `deadline` bounds it all.
fn read_outcome(
    stream: &mut TcpStream,
    want: Option<usize>,
    quiet: Duration,
) -> Result<Outcome, String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let mut scanner = ReplyScanner::new(Limits::default());
    let (mut complete, mut count) = (0, 0);
    loop {
        // Until `want` replies are in, wait long; afterwards only `quiet`, to catch extras.
        let waiting = want.is_some_and(|w| count < w);
        let timeout = if waiting {
            deadline.saturating_duration_since(Instant::now())
        } else {
            quiet
        };
        if timeout.is_zero() {
            return Err(format!("timed out after {count} of {want:?} replies"));
        }
        stream.set_read_timeout(Some(timeout)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => {
                return Ok(Outcome {
                    replies: split_replies(&bytes)?,
                    closed: true,
                });
            }
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                while let Ok(Some(len)) = scanner.scan(&bytes[complete..]) {
                    complete += len;
                    count += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Ok(Outcome {
                    replies: split_replies(&bytes)?,
                    closed: true,
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if waiting {
                    return Err(format!("timed out after {count} of {want:?} replies"));
                }
                return Ok(Outcome {
                    replies: split_replies(&bytes)?,
                    closed: false,
                });
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// How many replies the proxy owes for `garbage` after the well-formed requests, by its own
/// parser: one per complete request, plus the protocol error (then it closes).
fn garbage_replies(garbage: &[u8]) -> (usize, bool) {
    let parser = RequestParser::new(Limits::default());
    let mut request = Request::new();
    let (mut pos, mut count) = (0, 0);
    loop {
        match parser.parse(&garbage[pos..], &mut request) {
            Ok(Parsed::Complete { consumed }) => {
                // A random inline QUIT would close; the odds are nil, but be exact.
                let name = request
                    .arg(0, &garbage[pos..])
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                count += 1;
                pos += consumed;
                if name == b"quit" {
                    return (count, true);
                }
            }
            Ok(Parsed::Skipped { consumed }) => pos += consumed,
            Ok(Parsed::Incomplete) => return (count, false),
            Err(_) => return (count + 1, true),
        }
    }
}

/// How many cases reached each level of checking (printed, so a run that checks little shows).
#[derive(Debug, Default)]
struct Stats {
    cases: usize,
    disconnected: usize,
    counted: usize,
    compared: usize,
    replies: usize,
}

/// The shared environment of every case.
struct Env {
    stats: Stats,
    proxy: cinnabar_proxy::ProxyHandle,
    direct: TestServer,
    control: redis::Connection,
    counter: i64,
    // Last: the proxy stops before its backends.
    cluster: TestCluster,
}

fn flush(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(b"FLUSHALL\r\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+OK\r\n");
}

fn run_case(env: &mut Env, case: &Case) -> Result<(), TestCaseError> {
    let proxy_addr = env.proxy.local_addr();
    flush(proxy_addr);
    flush(env.direct.addr());

    let well_formed: Vec<&Op> = case
        .ops
        .iter()
        .filter(|op| matches!(op, Op::Cmd { .. }))
        .collect();
    let mut stream = Vec::new();
    for op in &well_formed {
        encode(op, &mut stream);
    }
    let tail = case.ops.last().filter(|op| !matches!(op, Op::Cmd { .. }));
    let mut full = stream.clone();
    if let Some(op) = tail {
        encode(op, &mut full);
    }

    // The proxy gets the whole stream, in pieces.
    let mut conn = connect(proxy_addr);
    let end = match tail {
        Some(Op::Disconnect { cut }) => full.len() * cut / 1000,
        _ => full.len(),
    };
    let mut cuts: Vec<usize> = case
        .splits
        .iter()
        .map(|s| end * usize::from(*s) / 1000)
        .collect();
    cuts.push(end);
    cuts.sort_unstable();
    let mut from = 0;
    for to in cuts {
        if to > from {
            // The proxy may close early (QUIT, garbage): later writes may fail, that is fine.
            if conn.write_all(&full[from..to]).is_err() {
                break;
            }
            from = to;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    env.stats.cases += 1;
    if matches!(tail, Some(Op::Disconnect { .. })) {
        env.stats.disconnected += 1;
        drop(conn);
        return Ok(());
    }

    // The oracle: Redis, for the well-formed requests.
    let mut direct = connect(env.direct.addr());
    direct.write_all(&stream).unwrap();
    let expected = read_outcome(&mut direct, None, QUIET)
        .map_err(|e| TestCaseError::fail(format!("redis: {e}")))?;
    let model = Model::of(&case.ops);
    let (extra, garbage_closes) = match tail {
        Some(Op::Garbage(g)) if !expected.closed => garbage_replies(g),
        _ => (0, false),
    };
    let want = expected.replies.len() + extra;
    let closes = expected.closed || garbage_closes;

    let got = if model.counts_diverge {
        read_outcome(&mut conn, None, QUIET)
    } else {
        read_outcome(&mut conn, Some(want), Duration::from_millis(50))
    }
    .map_err(|e| TestCaseError::fail(format!("proxy: {e}")))?;

    let show = |replies: &[Vec<u8>]| {
        replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    };
    env.stats.replies += got.replies.len();
    if !model.counts_diverge {
        env.stats.counted += 1;
        prop_assert_eq!(
            got.replies.len(),
            want,
            "reply count; proxy: {:?}\nredis: {:?}",
            show(&got.replies),
            show(&expected.replies)
        );
        prop_assert_eq!(
            got.closed,
            closes,
            "closed; proxy: {:?}",
            show(&got.replies)
        );
        if case.one_slot && !model.content_diverges {
            env.stats.compared += 1;
            let n = expected.replies.len();
            prop_assert_eq!(
                normalize(&got.replies[..n]),
                normalize(&expected.replies),
                "replies differ"
            );
        }
    }
    drop(conn);
    Ok(())
}

/// After every case: the proxy answers a fresh connection and the control client's counter.
fn check_alive(env: &mut Env) -> Result<(), TestCaseError> {
    let mut s = connect(env.proxy.local_addr());
    s.write_all(b"PING\r\n")
        .map_err(|e| TestCaseError::fail(format!("proxy gone: {e}")))?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)
        .map_err(|e| TestCaseError::fail(format!("proxy does not answer PING: {e}")))?;
    prop_assert_eq!(&buf, b"+PONG\r\n");
    env.counter += 1;
    let n: i64 = redis::cmd("INCR")
        .arg("control:counter")
        .query(&mut env.control)
        .map_err(|e| TestCaseError::fail(format!("control client: {e}")))?;
    prop_assert_eq!(n, env.counter, "control counter");
    Ok(())
}

#[test]
fn random_request_sequences_keep_the_session_state_machine_sound() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(TestCluster::start(2, 0));
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    // Not about access control: every client may run everything (FLUSHALL, KEYS, CONFIG …).
    config.access.default_role = Some("admin".into());
    // Nothing here fails over; a short window keeps any unexpected retry visible and short.
    config.retry_window = Duration::from_secs(2);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let direct = TestServer::start();
    let client = redis::Client::open(format!("redis://{}/", proxy.local_addr())).unwrap();
    let control = client.get_connection_with_timeout(IO_TIMEOUT).unwrap();
    control.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let env = std::cell::RefCell::new(Env {
        stats: Stats::default(),
        proxy,
        direct,
        control,
        counter: 0,
        cluster,
    });

    let cases = std::env::var("CINNABAR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let seed: u64 = std::env::var("CINNABAR_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("session fuzz: {cases} cases, CINNABAR_FUZZ_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        // Shrinking replays cases against real servers: bound it.
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    // The control client's counter starts from zero (FLUSHALL runs before every case).
    let result = runner.run(&case(), |case| {
        let mut env = env.borrow_mut();
        env.counter = 0;
        run_case(&mut env, &case)?;
        check_alive(&mut env)
    });
    eprintln!("session fuzz: {:?}", env.borrow().stats);
    if let Err(e) = result {
        panic!("{e}\n(replay with CINNABAR_FUZZ_SEED={seed})");
    }
    assert_no_connection_left_behind(&env.borrow().cluster);
}

/// Every session of the run has ended: no pub/sub relay or blocking command may still hold a
/// connection to a master. Each master keeps the proxy's shared connection, at times a topology
/// refresh, and this check's own.
fn assert_no_connection_left_behind(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Vec<u64> = cluster
            .servers()
            .iter()
            .map(|server| {
                let mut conn = redis::Client::open(server.url())
                    .unwrap()
                    .get_connection_with_timeout(IO_TIMEOUT)
                    .unwrap();
                let info: String = redis::cmd("INFO").arg("clients").query(&mut conn).unwrap();
                info.lines()
                    .find_map(|l| l.strip_prefix("connected_clients:"))
                    .map_or(0, |n| n.trim().parse().unwrap())
            })
            .collect();
        if counts.iter().all(|n| *n <= 3) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections per master after the run: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
