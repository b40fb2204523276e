//! Users, roles and guards through the proxy with real clients against a real cluster: each
//! role does exactly what it should (key namespaces across multi-key commands included), a
//! readwrite user's FLUSHALL is refused and audited, failed logins look alike and slow down, a
//! reload changes permissions for the next command without disconnecting anyone, and the
//! backend password never shows.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use cinnabar_access::AccessConfig;
use cinnabar_audit::AuditConfig;
use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::TestCluster;

mod support;
use support::{ask, connect};

const USERS: &str = r#"
[[users]]
name = "admin"
password = "admin-pw"
role = "admin"

[[users]]
name = "app"
password = "app-pw"
role = "orders"

[[users]]
name = "reader"
password = "reader-pw"
role = "readonly"

[[roles]]
name = "orders"
base = "readwrite"
keys = ["orders:*"]
"#;

fn access(text: &str) -> AccessConfig {
    toml::from_str(text).unwrap()
}

fn audit_to(file: &Path) -> AuditConfig {
    toml::from_str(&format!("output = \"{}\"", file.display())).unwrap()
}

fn start(cluster: &TestCluster, access: AccessConfig, audit: AuditConfig) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.access = access;
    config.audit = audit;
    cinnabar_proxy::start(config).unwrap()
}

fn logged_in(proxy: &ProxyHandle, user: &str, password: &str) -> TcpStream {
    let mut stream = connect(proxy.local_addr());
    assert_eq!(ask(&mut stream, &["AUTH", user, password]), "+OK\r\n");
    stream
}

/// The audit file's records, once at least `count` are there.
fn audit_records(file: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= count || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_does_exactly_what_it_should() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = start(
        &cluster,
        access(USERS),
        audit_to(&tmp.path().join("audit.jsonl")),
    );

    // Before logging in: only AUTH, HELLO, PING and QUIT.
    let mut anonymous = connect(proxy.local_addr());
    assert_eq!(ask(&mut anonymous, &["PING"]), "+PONG\r\n");
    assert_eq!(
        ask(&mut anonymous, &["GET", "orders:1"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(ask(&mut anonymous, &["HELLO", "3"]).starts_with("-NOAUTH HELLO must be called"));

    // The namespace role: its keys, across multi-key commands, and nothing guarded.
    let mut app = logged_in(&proxy, "app", "app-pw");
    assert_eq!(ask(&mut app, &["SET", "orders:1", "a"]), "+OK\r\n");
    assert_eq!(
        ask(&mut app, &["MSET", "orders:2", "b", "orders:3", "c"]),
        "+OK\r\n"
    );
    assert_eq!(
        ask(&mut app, &["MGET", "orders:1", "orders:3"]),
        "*2\r\n$1\r\na\r\n$1\r\nc\r\n"
    );
    let no_key = "-NOPERM No permissions to access a key\r\n";
    assert_eq!(ask(&mut app, &["SET", "users:1", "x"]), no_key);
    assert_eq!(ask(&mut app, &["MGET", "orders:1", "users:1"]), no_key);
    assert_eq!(
        ask(&mut app, &["MSET", "orders:4", "d", "users:2", "e"]),
        no_key
    );
    assert_eq!(ask(&mut app, &["DEL", "orders:9", "users:9"]), no_key);
    assert_eq!(
        ask(&mut app, &["EVAL", "return 1", "2", "orders:1", "users:1"]),
        no_key
    );
    assert_eq!(
        ask(&mut app, &["FLUSHALL"]),
        "-NOPERM User app has no permissions to run the 'flushall' command\r\n"
    );
    assert!(ask(&mut app, &["KEYS", "*"]).starts_with("-NOPERM"));
    assert!(ask(&mut app, &["CONFIG", "GET", "requirepass"]).starts_with("-NOPERM"));

    // Read-only: reads, never writes; RESP3 login with HELLO.
    let mut reader = connect(proxy.local_addr());
    let hello = ask(&mut reader, &["HELLO", "3", "AUTH", "reader", "reader-pw"]);
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(ask(&mut reader, &["GET", "orders:1"]), "$1\r\na\r\n");
    assert!(ask(&mut reader, &["SET", "orders:1", "z"]).starts_with("-NOPERM"));

    // Admin: everything, guarded commands included.
    let mut admin = logged_in(&proxy, "admin", "admin-pw");
    assert!(ask(&mut admin, &["CONFIG", "GET", "maxmemory-policy"]).contains("maxmemory-policy"));
    assert_eq!(ask(&mut admin, &["SET", "users:1", "x"]), "+OK\r\n");
    assert!(ask(&mut admin, &["KEYS", "users:*"]).contains("users:1"));

    // Wrong password and unknown user: the same answer.
    let wrong = ask(&mut anonymous, &["AUTH", "app", "nope"]);
    let unknown = ask(&mut anonymous, &["AUTH", "nobody", "nope"]);
    assert_eq!(
        wrong,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(wrong, unknown);
    // CLIENT INFO and INFO never show a password.
    for reply in [
        ask(&mut app, &["CLIENT", "INFO"]),
        ask(&mut admin, &["INFO"]),
    ] {
        assert!(
            !reply.contains("app-pw") && !reply.contains("admin-pw"),
            "{reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readwrite_flushall_is_refused_and_audited_and_an_admin_one_is_audited() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let audit_file = tmp.path().join("audit.jsonl");
    let proxy = start(&cluster, access(USERS), audit_to(&audit_file));

    let mut app = logged_in(&proxy, "app", "app-pw");
    assert_eq!(ask(&mut app, &["SET", "orders:kept", "1"]), "+OK\r\n");
    assert!(ask(&mut app, &["FLUSHALL"]).starts_with("-NOPERM"));
    let mut admin = logged_in(&proxy, "admin", "admin-pw");
    assert_eq!(
        ask(&mut admin, &["EXISTS", "orders:kept"]),
        ":1\r\n",
        "nothing was flushed"
    );
    assert_eq!(ask(&mut admin, &["FLUSHDB"]), "+OK\r\n");
    let mut stranger = connect(proxy.local_addr());
    assert!(ask(&mut stranger, &["AUTH", "app", "guess-pw"]).starts_with("-WRONGPASS"));

    let records = audit_records(&audit_file, 3);
    let find = |outcome: &str| {
        records
            .iter()
            .find(|r| r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} record in {records:#?}"))
            .clone()
    };
    let denied = find("denied");
    assert_eq!(denied["user"], "app");
    assert_eq!(denied["command"], "FLUSHALL");
    assert!(denied["error"].as_str().unwrap().starts_with("NOPERM"));
    let ran = find("ok");
    assert_eq!(ran["user"], "admin");
    assert_eq!(ran["command"], "FLUSHDB");
    let targets = ran["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "FLUSHDB reached both masters: {ran}");
    assert!(ran["latency_us"].as_u64().is_some());
    let failed = find("auth_failed");
    assert_eq!(failed["user"], "app");
    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(
        !text.contains("guess-pw") && !text.contains("app-pw"),
        "{text}"
    );
    // Ordinary commands are not audited.
    assert!(!text.contains("\"SET\""), "{text}");
    assert!(proxy.metrics().contains("cinnabar_denied_total 1"));

    // Requests and errors by user, once the connections have reported them (at the latest
    // when they close).
    drop((app, admin, stranger));
    let expected = [
        "cinnabar_user_requests_total{user=\"app\"} 3",
        "cinnabar_user_request_errors_total{user=\"app\"} 1",
        "cinnabar_user_requests_total{user=\"admin\"} 3",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = proxy.metrics();
        let all = expected.iter().all(|e| metrics.lines().any(|l| l == *e));
        if all || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for line in expected {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_users_everyone_is_readwrite_and_the_guards_apply() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.audit.enabled = false;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        ask(&mut client, &["FLUSHALL"]),
        "-NOPERM User default has no permissions to run the 'flushall' command\r\n"
    );
    assert!(ask(&mut client, &["AUTH", "pw"]).contains("without any password configured"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_audited_categories_for_the_next_command() {
    let cluster = TestCluster::start(1, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let audit_file = tmp.path().join("audit.jsonl");
    let audit = audit_to(&audit_file);
    let proxy = start(&cluster, access(USERS), audit.clone());
    let mut app = logged_in(&proxy, "app", "app-pw");
    assert_eq!(ask(&mut app, &["SET", "orders:1", "x"]), "+OK\r\n");

    let mut with_writes = audit.clone();
    with_writes.categories.push("write".into());
    proxy.reload(&access(USERS), &with_writes).unwrap();
    assert_eq!(
        ask(&mut app, &["SET", "orders:2", "y"]),
        "+OK\r\n",
        "same connection"
    );
    let records = audit_records(&audit_file, 1);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["command"], "SET");
    assert_eq!(
        records[0]["keys"],
        serde_json::json!(["orders:2"]),
        "only the write after the reload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_permissions_for_the_next_command_without_disconnecting() {
    let cluster = TestCluster::start(2, 0).await;
    let audit = AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    };
    let proxy = start(&cluster, access(USERS), audit.clone());
    let mut app = logged_in(&proxy, "app", "app-pw");
    assert!(ask(&mut app, &["SET", "users:1", "x"]).starts_with("-NOPERM"));

    let widened = USERS.replace(
        "keys = [\"orders:*\"]",
        "keys = [\"orders:*\", \"users:*\"]",
    );
    proxy.reload(&access(&widened), &audit).unwrap();
    assert_eq!(
        ask(&mut app, &["SET", "users:1", "x"]),
        "+OK\r\n",
        "same connection"
    );

    // An invalid configuration is refused whole and the old one stays.
    let broken = USERS.replace("role = \"readonly\"", "role = \"no-such-role\"");
    let err = proxy
        .reload(&access(&broken), &audit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-role"), "{err}");
    assert_eq!(ask(&mut app, &["SET", "users:2", "y"]), "+OK\r\n");

    // A user that is gone must log in again.
    let without_app = widened.replace("name = \"app\"", "name = \"app2\"");
    proxy.reload(&access(&without_app), &audit).unwrap();
    assert_eq!(
        ask(&mut app, &["GET", "users:1"]),
        "-NOAUTH Authentication required.\r\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_login_failures_from_one_address_slow_down() {
    let cluster = TestCluster::start(2, 0).await;
    let audit = AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    };
    let proxy = start(&cluster, access(USERS), audit);
    let mut guesser = connect(proxy.local_addr());
    let started = Instant::now();
    for _ in 0..6 {
        assert!(ask(&mut guesser, &["AUTH", "admin", "guess"]).starts_with("-WRONGPASS"));
    }
    // Three free failures, then 100 + 200 + 400 ms.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(650), "{waited:?}");
    assert!(proxy.metrics().contains("cinnabar_login_failures_total 6"));
    // Other clients are not held up meanwhile, and a success resets the streak.
    let mut other = connect(proxy.local_addr());
    let quick = Instant::now();
    assert_eq!(ask(&mut other, &["PING"]), "+PONG\r\n");
    assert!(quick.elapsed() < Duration::from_millis(200));
    assert_eq!(ask(&mut guesser, &["AUTH", "admin", "admin-pw"]), "+OK\r\n");
    let after = Instant::now();
    assert!(ask(&mut guesser, &["AUTH", "admin", "wrong"]).starts_with("-WRONGPASS"));
    assert!(
        after.elapsed() < Duration::from_millis(90),
        "the streak was reset"
    );
}

/// `POST path` to the admin listener → (status, body).
fn post(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (
        status,
        response.split_once("\r\n\r\n").unwrap().1.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_reloads_the_settings_file_and_refuses_a_broken_one() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cinnabar.toml");
    let section = |users: &str| {
        let mut text = String::from("[audit]\nenabled = false\n\n");
        for line in users.lines() {
            text.push_str(&match line {
                "[[users]]" => "[[access.users]]".to_owned(),
                "[[roles]]" => "[[access.roles]]".to_owned(),
                other => other.to_owned(),
            });
            text.push('\n');
        }
        text
    };
    std::fs::write(&file, section(USERS)).unwrap();
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    cinnabar_proxy::file::ProxyFile::read(&file)
        .unwrap()
        .apply_to(&mut config);
    config.config_file = Some(file.clone());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let admin = proxy.admin_addr().unwrap();

    let mut app = logged_in(&proxy, "app", "app-pw");
    assert!(ask(&mut app, &["SET", "users:1", "x"]).starts_with("-NOPERM"));
    let widened = USERS.replace("keys = [\"orders:*\"]", "keys = [\"*\"]");
    std::fs::write(&file, section(&widened)).unwrap();
    let (status, body) = post(admin, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("reloaded\n"), "{body}");
    assert!(
        body.contains("`password` is plain text"),
        "warnings are reported: {body}"
    );
    assert_eq!(ask(&mut app, &["SET", "users:1", "x"]), "+OK\r\n");

    std::fs::write(
        &file,
        section(&widened).replace("base = \"readwrite\"", "base = \"root\""),
    )
    .unwrap();
    let (status, body) = post(admin, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("not reloaded") && body.contains("root"),
        "{body}"
    );
    assert_eq!(
        ask(&mut app, &["SET", "users:2", "y"]),
        "+OK\r\n",
        "the old settings stay"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_beyond_its_connection_limit_cannot_log_in() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.access = access(USERS);
    config.audit.enabled = false;
    config.max_connections_per_user = Some(1);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let first = logged_in(&proxy, "app", "app-pw");
    let mut second = connect(proxy.local_addr());
    assert_eq!(
        ask(&mut second, &["AUTH", "app", "app-pw"]),
        "-ERR cinnabar: user 'app' already has its maximum of 1 connections\r\n"
    );
    // Another user is not affected; the place frees when the first connection closes.
    let _admin = logged_in(&proxy, "admin", "admin-pw");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ask(&mut second, &["AUTH", "app", "app-pw"]) != "+OK\r\n" {
        assert!(Instant::now() < deadline, "the place was not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask(&mut second, &["SET", "orders:1", "x"]), "+OK\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_may_relax_transactions_and_each_relaxed_exec_is_audited() {
    let cluster = TestCluster::start(3, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit.jsonl");
    let users = r#"
[[users]]
name = "batcher"
password = "batcher-pw"
role = "batching"

[[users]]
name = "app"
password = "app-pw"
role = "readwrite"

[[roles]]
name = "batching"
base = "readwrite"
transactions = "relaxed"
"#;
    // The proxy-wide mode stays strict: only the role's users get relaxed transactions.
    let proxy = start(&cluster, access(users), audit_to(&trail));
    let request = [
        &["MULTI"][..],
        &["SET", "rtx:a", "1"],
        &["SET", "rtx:b", "2"],
        &["EXEC"],
    ];
    let mut batcher = logged_in(&proxy, "batcher", "batcher-pw");
    let replies: Vec<String> = request.iter().map(|args| ask(&mut batcher, args)).collect();
    assert_eq!(replies[3], "*2\r\n+OK\r\n+OK\r\n");
    let mut app = logged_in(&proxy, "app", "app-pw");
    let replies: Vec<String> = request.iter().map(|args| ask(&mut app, args)).collect();
    assert_eq!(
        replies[2],
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        replies[3],
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    let records = audit_records(&trail, 1);
    let relaxed: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["command"] == "EXEC").collect();
    assert_eq!(relaxed.len(), 1, "{records:?}");
    assert_eq!(relaxed[0]["user"], "batcher");
    assert_eq!(relaxed[0]["subcommand"], "RELAXED", "{records:?}");
    assert_eq!(relaxed[0]["targets"].as_array().unwrap().len(), 2);
}
