//! Our decisions and wording against real servers: the same user is created as a Redis ACL
//! user and as a Cinnabar role, the same requests are sent to the server and checked by us,
//! and every refusal must be the server's exact error line (every permitted request must not
//! be refused by the server). Glob patterns are cross-checked the same way, key by key.
//!
//! Runs against `redis-server` (Redis 7.0 words refusals differently from later versions) and,
//! when it is on `PATH`, `valkey-server`; a server version the command table does not cover is
//! reported and skipped.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use cinnabar_access::{Access, AccessConfig, AuthError, Principal, Server};
use cinnabar_local::{Flavor, ServerBinary};
use cinnabar_resp::{Limits, Value, parse_value};
use cinnabar_testkit::{ServerOptions, TestServer, server_binary};

/// One RESP2 connection, just enough to send commands and read whole replies.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn open(server: &TestServer) -> Connection {
        let stream = TcpStream::connect(server.addr()).unwrap();
        Connection {
            stream,
            buf: Vec::new(),
        }
    }

    /// A connection logged in as `user`.
    fn login(server: &TestServer, user: &str) -> Connection {
        let mut connection = Connection::open(server);
        let reply = connection.call(&[b"AUTH", user.as_bytes(), b"pw"]);
        assert_eq!(reply, Value::Simple(b"OK".to_vec()), "AUTH {user}");
        connection
    }

    fn call(&mut self, args: &[&[u8]]) -> Value {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&request).unwrap();
        loop {
            if let Some((value, used)) = parse_value(&self.buf, &Limits::default()).unwrap() {
                self.buf.drain(..used);
                return value;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `line` (split on spaces) and expects `OK`.
    fn ok(&mut self, line: &str) {
        let args = words(line);
        let reply = self.call(&args);
        assert_eq!(reply, Value::Simple(b"OK".to_vec()), "{line}");
    }
}

fn words(line: &str) -> Vec<&[u8]> {
    line.split_whitespace().map(str::as_bytes).collect()
}

/// The error line of a reply, if it is an error.
fn error_line(value: &Value) -> Option<String> {
    match value {
        Value::Error(line) => Some(String::from_utf8_lossy(line).into_owned()),
        _ => None,
    }
}

/// Whether the server refused for lack of permission (as opposed to any other error).
fn is_permission_error(line: &str) -> bool {
    line.starts_with("NOPERM") || line.contains("denied due to insufficient ACL permissions")
}

fn compile(toml_text: &str) -> Access {
    let config: AccessConfig = toml::from_str(toml_text).unwrap();
    Access::compile(&config).unwrap().0
}

/// The table's server for `binary`, or `None` (reported) when the table does not cover it.
fn wording_of(binary: &ServerBinary) -> Option<Server> {
    let flavor = match binary.flavor {
        Flavor::Redis => "redis",
        Flavor::Valkey => "valkey",
    };
    let server = Server::from_flavor_version(flavor, &binary.version);
    if server.is_none() {
        eprintln!(
            "SKIP: the command table covers Redis {} and Valkey {}; this server is {flavor} {}",
            Server::Redis7.version(),
            Server::Valkey8.version(),
            binary.version
        );
    }
    server
}

/// The rules of the compared user, as one Redis ACL and as one Cinnabar role.
const ACL_RULES: &str =
    "+@all -flushall -config|set -@scripting -keys ~orders:* &news.* &chat:[0-9]";
const ROLE: &str = r#"
    [[roles]]
    name = "app"
    base = "admin"
    commands = ["+@all", "-flushall", "-config|set", "-@scripting", "-keys"]
    keys = ["orders:*"]
    channels = ["news.*", "chat:[0-9]"]
"#;

/// Requests sent by that user, each on a fresh connection (subscriptions change a RESP2
/// connection's mode). Harmless on a test server whatever the verdict.
const REQUESTS: &[&str] = &[
    "PING",
    "CLIENT SETNAME x",
    "GET orders:1",
    "GET users:1",
    "MGET orders:1 users:1",
    "MSET orders:1 a orders:2 b",
    "MSET orders:1 a users:2 b",
    "DEL orders:9 users:9",
    "RENAME orders:1 users:1",
    "LMOVE orders:a users:b LEFT RIGHT",
    "XREAD STREAMS orders:s users:s 0 0",
    "FLUSHALL",
    "CONFIG SET maxmemory 0",
    "CONFIG GET maxmemory",
    "KEYS *",
    "EVAL return 0",
    "FCALL f 0",
    "SORT orders:l BY nosort",
    "SORT orders:l BY users:*",
    "SORT orders:l GET #",
    "SORT orders:l LIMIT 0 1 GET orders:*",
    "SORT orders:l STORE users:x",
    "SORT orders:l STORE orders:x",
    "SORT_RO orders:l GET orders:*",
    "PUBLISH news.a m",
    "PUBLISH other m",
    "SPUBLISH news.a m",
    "SPUBLISH other m",
    "SUBSCRIBE news.a chat:1",
    "SUBSCRIBE news.a other",
    "SSUBSCRIBE other",
    "PSUBSCRIBE news.*",
    "PSUBSCRIBE news.a*",
    "PSUBSCRIBE chat:[0-9]",
];

/// Patterns and keys for the glob cross-check.
const PATTERNS: &[&str] = &[
    "orders:*",
    "a?c",
    "[a-c]x",
    "[^a]y",
    "\\*lit",
    "x[\\]]z",
    "*:1",
    "a*b*c",
    "[z-a]q",
    "o*s:[0-9]",
    "exact",
];
const KEYS: &[&str] = &[
    "orders:1", "orders:", "orders:x", "abc", "ac", "bx", "dx", "ay", "by", "*lit", "xlit", "x]z",
    "x\\z", "u:1", "aXbYc", "ab", "mq", "os:5", "exact", "exact2", "",
];

fn compare(server: &TestServer, wording: Server) {
    let mut admin = Connection::open(server);
    admin.ok(&format!("ACL SETUSER app on >pw {ACL_RULES}"));
    admin.ok("ACL SETUSER old off >pw +@all ~*");
    let access = compile(&format!(
        "[[users]]\nname = \"app\"\npassword = \"pw\"\nrole = \"app\"\n\
         [[users]]\nname = \"old\"\npassword = \"pw\"\nrole = \"admin\"\nenabled = false\n{ROLE}"
    ));
    let app = access.authenticate(Some(b"app"), b"pw").unwrap();

    let mut mismatches = Vec::new();
    for line in REQUESTS {
        let args = words(line);
        let theirs = Connection::login(server, "app").call(&args);
        let theirs = error_line(&theirs);
        let command = cinnabar_commands::resolve(&args).unwrap();
        match (app.check(command, &args), theirs) {
            (Err(denied), Some(theirs)) if denied.message(wording) == theirs => {}
            (Ok(()), None) => {}
            (Ok(()), Some(theirs)) if !is_permission_error(&theirs) => {}
            (ours, theirs) => mismatches.push(format!(
                "{line}: ours {:?}, server {theirs:?}",
                ours.map_err(|d| d.message(wording))
            )),
        }
    }

    // Failed logins: one answer for an unknown user, a wrong password and a disabled user.
    let mut anyone = Connection::open(server);
    for attempt in ["AUTH nobody pw", "AUTH app wrong", "AUTH old pw"] {
        let theirs = error_line(&anyone.call(&words(attempt)));
        if theirs.as_deref() != Some(&AuthError::WrongPass.to_string()) {
            mismatches.push(format!("{attempt}: server {theirs:?}"));
        }
    }
    // Without users (and without requirepass), `AUTH password` fails the same way.
    let open = compile("");
    let ours = open.authenticate(None, b"x").unwrap_err().to_string();
    let theirs = error_line(&anyone.call(&words("AUTH x")));
    if theirs.as_deref() != Some(ours.as_str()) {
        mismatches.push(format!("AUTH x: ours {ours:?}, server {theirs:?}"));
    }

    mismatches.extend(glob_mismatches(server, &mut admin));
    assert!(
        mismatches.is_empty(),
        "{} differences from the server:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// For every pattern, a user limited to it runs `EXISTS key` for every key, on the server
/// and through our check.
fn glob_mismatches(server: &TestServer, admin: &mut Connection) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (i, pattern) in PATTERNS.iter().enumerate() {
        let user = format!("glob{i}");
        let rule = format!("~{pattern}");
        let setuser: [&[u8]; 6] = [
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
            b"on",
            b">pw",
            rule.as_bytes(),
        ];
        assert_eq!(admin.call(&setuser), Value::Simple(b"OK".to_vec()));
        admin.ok(&format!("ACL SETUSER {user} +exists"));
        let ours = role_for_pattern(pattern);
        let mut connection = Connection::login(server, &user);
        for key in KEYS {
            let args: [&[u8]; 2] = [b"EXISTS", key.as_bytes()];
            let theirs = error_line(&connection.call(&args)).is_none();
            let command = cinnabar_commands::resolve(&args).unwrap();
            let allowed = ours.check(command, &args).is_ok();
            if allowed != theirs {
                mismatches.push(format!(
                    "pattern {pattern:?}, key {key:?}: ours {allowed}, server {theirs}"
                ));
            }
        }
    }
    mismatches
}

fn role_for_pattern(pattern: &str) -> Principal {
    let config = AccessConfig {
        users: vec![cinnabar_access::UserConfig {
            name: "g".into(),
            password_sha256: None,
            password: Some("pw".into()),
            enabled: true,
            role: "g".into(),
        }],
        roles: vec![cinnabar_access::RoleConfig {
            name: "g".into(),
            commands: vec!["+exists".into()],
            keys: Some(vec![(*pattern).to_owned()]),
            ..Default::default()
        }],
        ..AccessConfig::default()
    };
    let (access, _) = Access::compile(&config).unwrap();
    access.authenticate(Some(b"g"), b"pw").unwrap()
}

#[test]
fn refusals_and_patterns_match_a_live_redis() {
    let Some(wording) = wording_of(server_binary()) else {
        return;
    };
    compare(&TestServer::start(), wording);
}

#[test]
fn refusals_and_patterns_match_a_live_valkey_when_installed() {
    let Some(path) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("valkey-server"))
            .find(|p: &PathBuf| p.is_file())
    }) else {
        eprintln!("SKIP: valkey-server is not on PATH; only Redis was compared");
        return;
    };
    let binary = ServerBinary::locate(Some(&path)).unwrap();
    let Some(wording) = wording_of(&binary) else {
        return;
    };
    let server = TestServer::start_with(ServerOptions {
        binary: Some(binary),
        ..ServerOptions::default()
    });
    compare(&server, wording);
}
