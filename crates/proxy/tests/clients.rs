//! Real client programs and libraries through the proxy, against a real 3-master Redis Cluster:
//! redis-cli (plain and `-c`), redis-benchmark, redis-py 5.x (`redis.Redis` with RESP2, and
//! `redis.cluster.RedisCluster`) and ioredis 5.x (`new Redis(port, host)` and
//! `new Redis.Cluster([{host, port}])`). Cluster-mode clients work because the proxy answers
//! `CLUSTER SLOTS/SHARDS/NODES` with itself owning every slot.
//!
//! The library tests run `tests/clients/redis_py.py` and `tests/clients/ioredis.js`, which do the
//! same steps (SET/GET, MSET/MGET/DEL across slots, INCR, a pipeline of 100 commands, a
//! MULTI/EXEC on hash-tagged keys, SCAN, DBSIZE, INFO, keyspace notifications from every
//! master) and print one line of compact JSON with sorted keys; on failure, the step that failed and the error. Each also records what the
//! library sends while setting up a connection (`CLIENT SETNAME`, `CLIENT SETINFO`, the ready
//! check, `CLUSTER SLOTS`…) with the proxy's reply, since both libraries silently ignore an
//! error to `CLIENT SETINFO`: a test fails naming any such command the proxy rejected.
//!
//! Where the libraries come from: `bash .ci/setup` (which `.ci/test` runs) installs python3 with
//! venv and Node.js with npm when missing, then redis-py into `<libs>/venv` and ioredis into
//! `<libs>/node/node_modules`, where `<libs>` is `$CINNABAR_CLIENT_LIBS`, or else
//! `<cargo target dir>/client-libs` (the same `CARGO_TARGET_DIR` for setup and tests; a
//! relative one is taken from the repository root). These tests look in the same place. When
//! an interpreter or a library is missing the test FAILS with the install command; set
//! `CINNABAR_SKIP_CLIENT_LIBS=1` to skip the redis-py and ioredis tests instead (each prints a
//! skip note and passes). redis-cli and redis-benchmark come with redis-tools, which every test
//! of the workspace needs anyway, and are never skipped.
//!
//! Not covered, by the tools' own design: `redis-benchmark --cluster` refuses a cluster of one
//! node ("Invalid cluster: 1 node(s)"), and `redis-cli --cluster check` wants
//! `cluster_enabled:1` in `INFO`, which the standalone-looking proxy does not claim.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::TestCluster;

/// Upper bound for one client program; each takes well under a second here.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The opt-out for machines without Python or Node.js.
const SKIP_VAR: &str = "CINNABAR_SKIP_CLIENT_LIBS";

async fn cluster_and_proxy() -> (TestCluster, ProxyHandle) {
    cluster_and_proxy_with(cinnabar_proxy::Transactions::Strict).await
}

/// As `cluster_and_proxy`, with the given way of carrying cross-slot transactions.
async fn cluster_and_proxy_with(
    transactions: cinnabar_proxy::Transactions,
) -> (TestCluster, ProxyHandle) {
    let cluster = TestCluster::start(3, 0).await;
    // For the libraries' keyspace-notification step; set on the nodes, as an operator would.
    for server in cluster.servers() {
        let mut node = redis::Client::open(server.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("K$")
            .exec(&mut node)
            .unwrap();
    }
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.transactions = transactions;
    let proxy = cinnabar_proxy::start(config).unwrap();
    (cluster, proxy)
}

/// What a finished client program said.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with `stdin`, off the async runtime, killing it after [`CLIENT_TIMEOUT`].
async fn run(mut command: Command, stdin: Vec<u8>) -> Ran {
    let what = format!("{command:?}");
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut input = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not finish within {CLIENT_TIMEOUT:?}; stdout so far:\n{}",
                    out.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        writer.join().unwrap();
        Ran {
            code: status.code(),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `$CINNABAR_CLIENT_LIBS`, or `client-libs` in the cargo target dir (where `.ci/setup` puts
/// the libraries).
fn libs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CINNABAR_CLIENT_LIBS") {
        return PathBuf::from(dir);
    }
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp` for integration tests.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("client-libs")
}

/// True (after a note) when the library tests are opted out of.
fn skipped(test: &str) -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("SKIPPED {test}: {SKIP_VAR} is set (client-library tests are opted out)");
    }
    skip
}

fn missing(what: &str, detail: &str) -> ! {
    panic!(
        "{what} is missing: {detail}\n\
         Install it with `bash .ci/setup` (run from the repository with the same \
         CARGO_TARGET_DIR as the tests; it installs python3-venv, nodejs and npm with apt-get \
         when missing, redis-py 5.x into {libs}/venv and ioredis 5.x into {libs}/node), \
         or set {SKIP_VAR}=1 to skip the client-library tests.",
        libs = libs_dir().display()
    )
}

/// The venv's Python with redis-py 5.x, or a failure naming the install command.
async fn redis_py() -> Command {
    let python = libs_dir().join("venv/bin/python");
    if !python.exists() {
        missing("redis-py", &format!("no {}", python.display()));
    }
    let mut probe = Command::new(&python);
    probe.args(["-c", "import redis; print(redis.__version__)"]);
    let ran = run(probe, Vec::new()).await;
    if ran.code != Some(0) || !ran.stdout.starts_with("5.") {
        missing("redis-py 5.x", &ran.describe());
    }
    let mut command = Command::new(python);
    command.arg("-B").arg(tests_dir().join("redis_py.py"));
    command
}

/// Node.js with ioredis 5.x on NODE_PATH, or a failure naming the install command.
fn ioredis() -> Command {
    let modules = libs_dir().join("node/node_modules");
    let probe = Command::new("node")
        .env("NODE_PATH", &modules)
        .args([
            "-e",
            "process.stdout.write(require('ioredis/package.json').version)",
        ])
        .stdin(Stdio::null())
        .output();
    let ran = match probe {
        Ok(out) => Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => missing("Node.js (`node`)", &format!("cannot run node: {e}")),
    };
    if ran.code != Some(0) || !ran.stdout.starts_with("5.") {
        let detail = if ran.stderr.contains("Cannot find module") {
            format!("no ioredis in {}", modules.display())
        } else {
            format!("in {}: {}", modules.display(), ran.describe())
        };
        missing("ioredis 5.x", &detail);
    }
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", modules)
        .arg(tests_dir().join("ioredis.js"));
    command
}

/// The raw JSON value of the top-level `"<name>":` in a script's one-line output (the scripts
/// print keys sorted and nothing nested under the same name, so the first match is the one).
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &json[start..];
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in rest.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_string = false;
                    if depth == 0 {
                        return Some(&rest[..=i]);
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => depth += 1,
            ']' | '}' if depth == 0 => return Some(&rest[..i]),
            ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// Runs a library script in `mode` against the proxy and checks every result.
///
/// In plain mode the script also reads `INFO` at connect as tools do, and runs the library's
/// default transactional pipeline over keys of several slots: refused by a `strict` proxy,
/// answered like Redis by a `relaxed` one.
async fn library_works(
    mut command: Command,
    library: &str,
    mode: &str,
    proxy: &ProxyHandle,
    relaxed: bool,
) {
    let addr = proxy.local_addr();
    command
        .arg(mode)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    let ran = run(command, Vec::new()).await;
    let out = ran.stdout.trim();
    eprintln!("{library} {mode}: {out}");
    let report = ran.describe();
    let line = out.lines().last().unwrap_or("");
    assert!(
        ran.code == Some(0) && line.contains("\"ok\":true"),
        "{library} in {mode} mode failed through the proxy at step {} with {}\nhandshake: {}\n{report}",
        field(line, "step").unwrap_or("?"),
        field(line, "error").unwrap_or("?"),
        field(line, "handshake").unwrap_or("?"),
    );
    assert!(
        line.contains(&format!("\"library\":\"{library}\""))
            && line.contains(&format!("\"mode\":\"{mode}\""))
            && line.contains("\"version\":\"5."),
        "{report}"
    );

    // Nothing the library sent to set up a connection was refused (the libraries ignore it).
    let handshake = field(line, "handshake").unwrap();
    assert!(
        !handshake.contains("\"reply\":\"-") && !handshake.contains("\"reply\":null"),
        "{library} in {mode} mode: the proxy refused (or did not answer) a connection-setup \
         command: {handshake}"
    );
    assert!(
        handshake
            .to_ascii_uppercase()
            .contains("CLIENT SETINFO LIB-NAME"),
        "{library} 5.x announces itself with CLIENT SETINFO: {handshake}"
    );

    let results = field(line, "results").unwrap();
    let mut expected = vec![
        r#""ping":"PONG""#.to_owned(),
        r#""set":"OK""#.to_owned(),
        r#""get":"hello""#.to_owned(),
        r#""mset":"OK""#.to_owned(),
        r#""mget":["1","2",null,"3"]"#.to_owned(),
        r#""del":3"#.to_owned(),
        r#""incr":[1,2,3]"#.to_owned(),
        r#""pipeline_len":100"#.to_owned(),
        r#""pipeline_sets_ok":true"#.to_owned(),
        r#""pipeline_get_sum":1225"#.to_owned(),
        r#""transaction":["OK",11,"11",0]"#.to_owned(),
        r#""scan":50"#.to_owned(),
        // str, counter, pipe:0..49, {tx}a
        r#""dbsize":53"#.to_owned(),
        r#""info_redis_version":true"#.to_owned(),
        // Once each, though each key lives on another master.
        r#""keyspace":["__keyspace@0__:alpha","__keyspace@0__:beta","__keyspace@0__:gamma"]"#
            .to_owned(),
    ];
    if mode == "plain" {
        expected.push(r#""info_at_connect":true"#.to_owned());
        expected.push(if relaxed {
            r#""cross_slot_tx":["OK","OK",2]"#.to_owned()
        } else {
            r#""cross_slot_tx":"refused: "#.to_owned()
        });
    }
    if mode == "cluster" {
        // The cluster client learned one node, the proxy, from CLUSTER SLOTS.
        expected.push(format!(r#""nodes":["{addr}"]"#));
    }
    let wrong: Vec<&String> = expected.iter().filter(|e| !results.contains(*e)).collect();
    assert!(
        wrong.is_empty(),
        "{library} in {mode} mode: expected {wrong:?} in {results}"
    );
}

/// The scripts' MSET/MGET/DEL keys really span every master of a 3-master cluster (slots
/// 0-5460, 5461-10922, 10923-16383), so the proxy had to split them.
fn assert_script_keys_span_all_masters() {
    let shards: HashSet<u16> = ["alpha", "beta", "nothing", "gamma"]
        .iter()
        .map(|k| cinnabar_commands::key_slot(k.as_bytes()) / 5461)
        .collect();
    assert_eq!(shards.len(), 3, "{shards:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_py_in_plain_mode() {
    if skipped("redis_py_in_plain_mode") {
        return;
    }
    let python = redis_py().await;
    assert_script_keys_span_all_masters();
    let (_cluster, proxy) = cluster_and_proxy().await;
    library_works(python, "redis-py", "plain", &proxy, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_py_in_cluster_mode() {
    if skipped("redis_py_in_cluster_mode") {
        return;
    }
    let python = redis_py().await;
    let (_cluster, proxy) = cluster_and_proxy().await;
    library_works(python, "redis-py", "cluster", &proxy, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ioredis_in_plain_mode() {
    if skipped("ioredis_in_plain_mode") {
        return;
    }
    let node = ioredis();
    let (_cluster, proxy) = cluster_and_proxy().await;
    library_works(node, "ioredis", "plain", &proxy, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ioredis_in_cluster_mode() {
    if skipped("ioredis_in_cluster_mode") {
        return;
    }
    let node = ioredis();
    let (_cluster, proxy) = cluster_and_proxy().await;
    library_works(node, "ioredis", "cluster", &proxy, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_py_transactional_pipelines_span_slots_through_a_relaxed_proxy() {
    if skipped("redis_py_transactional_pipelines_span_slots_through_a_relaxed_proxy") {
        return;
    }
    let python = redis_py().await;
    let (_cluster, proxy) = cluster_and_proxy_with(cinnabar_proxy::Transactions::Relaxed).await;
    library_works(python, "redis-py", "plain", &proxy, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ioredis_transactional_pipelines_span_slots_through_a_relaxed_proxy() {
    if skipped("ioredis_transactional_pipelines_span_slots_through_a_relaxed_proxy") {
        return;
    }
    let node = ioredis();
    let (_cluster, proxy) = cluster_and_proxy_with(cinnabar_proxy::Transactions::Relaxed).await;
    library_works(node, "ioredis", "plain", &proxy, true).await;
}

/// `redis-cli [-c] -p <proxy> args…` with `stdin`; its stdout, after asserting exit 0.
async fn cli(proxy: &ProxyHandle, cluster_mode: bool, args: &[&str], stdin: &str) -> String {
    let mut command = Command::new("redis-cli");
    if cluster_mode {
        command.arg("-c");
    }
    command
        .args(["-h", "127.0.0.1", "-p"])
        .arg(proxy.local_addr().port().to_string())
        .args(args);
    let ran = run(command, stdin.as_bytes().to_vec()).await;
    assert_eq!(
        ran.code,
        Some(0),
        "redis-cli {args:?} failed: {}",
        ran.describe()
    );
    ran.stdout
}

/// Redis protocol for `SET pipe:<i> v` for every `i`, as `redis-cli --pipe` reads it.
fn mass_insert(n: usize) -> String {
    (0..n)
        .map(|i| {
            let key = format!("pipe:{i}");
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cli_in_plain_mode() {
    assert_script_keys_span_all_masters();
    let (_cluster, proxy) = cluster_and_proxy().await;
    let p = &proxy;
    assert_eq!(cli(p, false, &["set", "str", "hello"], "").await, "OK\n");
    assert_eq!(cli(p, false, &["get", "str"], "").await, "hello\n");
    let mset = ["mset", "alpha", "1", "beta", "2", "gamma", "3"];
    assert_eq!(cli(p, false, &mset, "").await, "OK\n");
    let mget = ["mget", "alpha", "beta", "nothing", "gamma"];
    assert_eq!(cli(p, false, &mget, "").await, "1\n2\n\n3\n");
    assert_eq!(cli(p, false, &["incr", "counter"], "").await, "1\n");

    // Commands on stdin go one connection, one after another: a transaction.
    let tx = "MULTI\nSET {tx}a 10\nINCR {tx}a\nGET {tx}a\nEXEC\n";
    assert_eq!(
        cli(p, false, &[], tx).await,
        "OK\nQUEUED\nQUEUED\nQUEUED\nOK\n11\n11\n"
    );

    // Mass insertion: the whole stream pipelined, then an ECHO marker to find the last reply.
    let piped = cli(p, false, &["--pipe"], &mass_insert(1000)).await;
    assert!(piped.contains("errors: 0, replies: 1000"), "{piped}");

    let scanned = cli(p, false, &["--scan", "--pattern", "pipe:*"], "").await;
    let keys: HashSet<&str> = scanned.lines().collect();
    assert_eq!(keys.len(), 1000, "SCAN across masters found every key");

    // str, alpha, beta, gamma, counter, {tx}a and 1000 pipe:* keys.
    assert_eq!(cli(p, false, &["dbsize"], "").await, "1006\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cli_in_cluster_mode() {
    let (_cluster, proxy) = cluster_and_proxy().await;
    let p = &proxy;
    // -c follows MOVED/ASK; through the proxy there are none to follow.
    assert_eq!(cli(p, true, &["set", "str", "hello"], "").await, "OK\n");
    assert_eq!(cli(p, true, &["get", "str"], "").await, "hello\n");
    let script = "SET alpha 1\nSET beta 2\nSET gamma 3\nGET alpha\nGET beta\nGET gamma\n\
                  MGET alpha beta nothing gamma\nINCR counter\nDBSIZE\n";
    assert_eq!(
        cli(p, true, &[], script).await,
        "OK\nOK\nOK\n1\n2\n3\n1\n2\n\n3\n1\n5\n"
    );
    let slots = cli(p, true, &["cluster", "slots"], "").await;
    let port = proxy.local_addr().port().to_string();
    assert_eq!(
        slots.lines().take(4).collect::<Vec<_>>(),
        ["0", "16383", "127.0.0.1", port.as_str()],
        "{slots}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_benchmark_runs_through_the_proxy() {
    let (cluster, proxy) = cluster_and_proxy().await;
    let port = proxy.local_addr().port().to_string();
    // -r spreads the keys over the key space, so over every master; -P 16 pipelines.
    for extra in [&[][..], &["-P", "16"][..]] {
        let mut command = Command::new("redis-benchmark");
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "-n",
                "2000",
                "-c",
                "4",
            ])
            .args(["-r", "10000", "-t", "set,get,incr,lpush,lpop,mset"])
            .args(extra);
        let ran = run(command, Vec::new()).await;
        // redis-benchmark exits non-zero at the first error reply.
        assert_eq!(ran.code, Some(0), "{}", ran.describe());
        for name in ["SET", "GET", "INCR", "LPUSH", "LPOP", "MSET (10 keys)"] {
            let done = ran.stdout.split(['\r', '\n']).any(|l| {
                l.trim_start().starts_with(&format!("{name}: "))
                    && l.contains("requests per second")
            });
            assert!(
                done,
                "no result for {name} (with {extra:?}): {}",
                ran.describe()
            );
        }
    }
    // The keys went to the cluster, all of its masters.
    for server in cluster.servers() {
        let mut direct = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query(&mut direct).unwrap();
        assert!(keys > 10, "{} holds {keys} keys", server.addr());
    }
}
