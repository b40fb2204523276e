//! Drift tests: the checked-in table against real servers. Every command the server reports must
//! be in the table with the same arity, flags, ACL categories, tips, key specs and docs, and every
//! table entry for that server must exist on it; `COMMAND GETKEYS` is the oracle for key
//! positions and `CLUSTER KEYSLOT` for slots.
//!
//! Runs against `redis-server` (what CI installs) and, when it is on `PATH`, `valkey-server`;
//! a server of a version the table was not generated from is reported and skipped.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use cinnabar_commands::{
    Arg, ArgFlags, ArgType, Command, KeySpecFlags, Server, commands, key_slot, lookup_for,
    resolve_for,
};
use cinnabar_local::ServerBinary;
use cinnabar_testkit::{ServerOptions, TestServer};
use support::introspect::Snapshot;
use support::model;

/// A started server, its snapshot, and which table server it is (if the table covers it).
struct Live {
    server: TestServer,
    snapshot: Snapshot,
    table: Option<Server>,
}

impl Live {
    fn start(options: ServerOptions) -> Live {
        let server = TestServer::start_with(options);
        let snapshot = Snapshot::read(&server.url()).expect("introspect the server");
        let table = Server::from_flavor_version(&snapshot.flavor, &snapshot.version);
        if table.is_none() {
            eprintln!(
                "SKIP: the table covers Redis {} and Valkey {}; this server is {} {}",
                Server::Redis7.version(),
                Server::Valkey8.version(),
                snapshot.flavor,
                snapshot.version
            );
        }
        Live {
            server,
            snapshot,
            table,
        }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.server.url())
            .expect("client")
            .get_connection()
            .expect("connect")
    }
}

fn valkey_options() -> Option<ServerOptions> {
    let path = std::env::var_os("PATH")?;
    let Some(binary) = std::env::split_paths(&path)
        .map(|dir| dir.join("valkey-server"))
        .find(|p: &PathBuf| p.is_file())
    else {
        eprintln!("SKIP: valkey-server is not on PATH; only Redis was compared");
        return None;
    };
    Some(ServerOptions {
        binary: Some(ServerBinary::locate(Some(&binary)).expect("valkey-server version")),
        ..ServerOptions::default()
    })
}

/// Every difference between the table and the live server, as readable lines.
fn differences(live: &Snapshot, server: Server) -> Vec<String> {
    let mut out = Vec::new();
    let live_commands = live.flat_commands();
    let live_docs = live.flat_docs();
    for (name, info) in &live_commands {
        let entry = match name.split_once('|') {
            None => lookup_for(server, name.as_bytes()),
            Some((base, sub)) => lookup_for(server, base.as_bytes())
                .and_then(|c| c.subcommand_for(server, sub.as_bytes())),
        };
        let Some(entry) = entry else {
            out.push(format!("{name}: on the server, missing from the table"));
            continue;
        };
        let ours = model::info(entry, server).own();
        if &ours != info {
            out.push(format!(
                "{name}: COMMAND INFO differs\n  table:  {ours:?}\n  server: {info:?}"
            ));
        }
        match (entry.docs(server), live_docs.get(name)) {
            (Some(docs), Some(theirs)) => {
                let ours = model::docs(docs);
                if &ours != theirs {
                    out.push(format!(
                        "{name}: COMMAND DOCS differs\n  table:  {ours:?}\n  server: {theirs:?}"
                    ));
                }
            }
            (ours, theirs) => out.push(format!(
                "{name}: docs in table: {}, on server: {}",
                ours.is_some(),
                theirs.is_some()
            )),
        }
    }
    for command in commands() {
        let rows = std::iter::once(command).chain(command.subcommands());
        for row in rows.filter(|r| r.is_available_on(server)) {
            if !live_commands.contains_key(row.name()) {
                out.push(format!(
                    "{}: in the table, missing on the server",
                    row.name()
                ));
            }
        }
    }
    out
}

fn assert_no_drift(live: &Live) {
    let Some(server) = live.table else { return };
    let diffs = differences(&live.snapshot, server);
    assert!(
        diffs.is_empty(),
        "{} differences between the table and {} {} (regenerate with `cargo run -p \
         cinnabar-commands --example generate_table`):\n{}",
        diffs.len(),
        live.snapshot.flavor,
        live.snapshot.version,
        diffs.join("\n")
    );
}

#[test]
fn table_matches_a_live_redis() {
    assert_no_drift(&Live::start(ServerOptions::default()));
}

#[test]
fn table_matches_a_live_valkey_when_installed() {
    if let Some(options) = valkey_options() {
        assert_no_drift(&Live::start(options));
    }
}

/// Requests covering every variable key form; `""` is an empty argument.
const REQUESTS: &[&str] = &[
    "GET k1",
    "SET k1 v EX 10 GET",
    "DEL k1 k2 k3",
    "MSET k1 1 k2 2 k3 3",
    "MSETNX k1 1 k2 2",
    "BLPOP k1 k2 0",
    "BRPOPLPUSH k1 k2 0",
    "BLMOVE k1 k2 LEFT RIGHT 0",
    "BZPOPMAX k1 k2 0",
    "EVAL script 2 k1 k2 a1 a2",
    "EVAL script 0 a1",
    "EVALSHA sha 1 k1 a",
    "EVAL_RO script 1 k1",
    "EVALSHA_RO sha 2 k1 k2",
    "FCALL f 2 k1 k2 a",
    "FCALL_RO f 1 k1",
    "XREAD STREAMS k1 0",
    "XREAD COUNT 2 BLOCK 0 STREAMS k1 k2 0 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS k1 k2 > >",
    "XREADGROUP GROUP g STREAMS STREAMS k1 >",
    "ZUNIONSTORE k0 2 k1 k2 WEIGHTS 1 2",
    "ZINTERSTORE k0 1 k1 AGGREGATE MAX",
    "ZDIFFSTORE k0 3 k1 k2 k3",
    "ZUNION 2 k1 k2 WITHSCORES",
    "ZINTER 1 k1",
    "ZDIFF 2 k1 k2",
    "ZINTERCARD 2 k1 k2 LIMIT 1",
    "SINTERCARD 2 k1 k2 LIMIT 1",
    "LMPOP 2 k1 k2 LEFT COUNT 1",
    "ZMPOP 1 k1 MIN",
    "BLMPOP 0.5 2 k1 k2 LEFT",
    "BZMPOP 0 1 k1 MAX COUNT 2",
    "MIGRATE host 6379 k1 0 1000",
    "MIGRATE host 6379 k1 0 1000 COPY REPLACE",
    "MIGRATE host 6379 \"\" 0 1000 COPY REPLACE AUTH pw KEYS k1 k2",
    "MIGRATE host 6379 \"\" 0 1000 AUTH2 user pw KEYS k1",
    "SORT k1",
    "SORT k1 ALPHA DESC STORE k2",
    "SORT k1 BY w_* GET g_* LIMIT 0 10 STORE k2",
    "SORT k1 STORE k2 STORE k3",
    "SORT_RO k1 BY w_* GET g_*",
    "GEORADIUS k1 0 0 10 km",
    "GEORADIUS k1 0 0 10 km STORE k2",
    "GEORADIUS k1 0 0 10 km WITHDIST COUNT 3 STOREDIST k2",
    "GEORADIUSBYMEMBER k1 m 10 km STORE k2",
    "GEORADIUSBYMEMBER k1 m 10 km STOREDIST k2",
    "GEORADIUS_RO k1 0 0 10 km",
    "GEOSEARCHSTORE k1 k2 FROMMEMBER m BYRADIUS 1 km",
    "OBJECT ENCODING k1",
    "OBJECT FREQ k1",
    "MEMORY USAGE k1 SAMPLES 5",
    "XINFO STREAM k1 FULL",
    "XINFO GROUPS k1",
    "XINFO CONSUMERS k1 g",
    "XGROUP CREATE k1 g $",
    "BITFIELD k1 GET u8 0 INCRBY u8 0 1",
    "BITFIELD_RO k1 GET u8 0",
    "BITOP AND k1 k2 k3",
    "LCS k1 k2 LEN",
    "RENAME k1 k2",
    "COPY k1 k2 REPLACE",
    "SMOVE k1 k2 m",
    "PFMERGE k1 k2 k3",
    "SINTERSTORE k1 k2 k3",
    "WATCH k1 k2",
    "EXISTS k1 k2",
    "TOUCH k1",
    "DUMP k1",
    "RESTORE k1 0 payload",
];

/// `line` split like redis-cli input, with `""` as an empty argument.
fn split(line: &str) -> Vec<Vec<u8>> {
    line.split_whitespace()
        .map(|w| if w == "\"\"" { Vec::new() } else { w.into() })
        .collect()
}

/// The keys `COMMAND GETKEYS` reports, or `None` when it refuses the request.
fn getkeys(conn: &mut redis::Connection, args: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let mut cmd = redis::cmd("COMMAND");
    cmd.arg("GETKEYS");
    for arg in args {
        cmd.arg(arg.as_slice());
    }
    match cmd.query::<Vec<Vec<u8>>>(conn) {
        Ok(keys) => Some(keys),
        Err(e) if e.to_string().contains("no key arguments") => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Our keys of `args` on `server`, as names, without sharded channels (GETKEYS omits them).
fn our_keys(server: Server, args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let command = resolve_for(server, &refs).map_err(|e| e.to_string())?;
    Ok(command
        .keys_with_flags(&refs)
        .filter(|(_, flags)| !flags.contains(KeySpecFlags::NOT_KEY))
        .map(|(i, _)| args[i].clone())
        .collect())
}

fn text(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares our key extraction with `COMMAND GETKEYS` for the hand-written requests and for
/// two requests synthesised from every keyed command's documented arguments.
fn assert_keys_match_getkeys(live: &Live) {
    let Some(server) = live.table else { return };
    let mut conn = live.connection();
    let mut mismatches = Vec::new();
    for line in REQUESTS {
        let args = split(line);
        let theirs = getkeys(&mut conn, &args).unwrap_or_else(|| panic!("GETKEYS refused {line}"));
        let ours = our_keys(server, &args).unwrap_or_else(|e| panic!("{line}: {e}"));
        if ours != theirs {
            mismatches.push(format!(
                "{line}: ours {:?}, server {:?}",
                text(&ours),
                text(&theirs)
            ));
        }
    }
    let mut compared = 0;
    for command in keyed_commands(server) {
        let Some(docs) = command.docs(server) else {
            continue;
        };
        for all_options in [false, true] {
            let args = synthesize(command, docs.arguments, all_options);
            let Some(theirs) = getkeys(&mut conn, &args) else {
                continue;
            };
            compared += 1;
            match our_keys(server, &args) {
                Ok(ours) if ours == theirs => {}
                Ok(ours) if allowed_difference(command, &ours, &theirs) => {}
                ours => mismatches.push(format!(
                    "{}: ours {ours:?}, server {:?}",
                    text(&args),
                    text(&theirs)
                )),
            }
        }
    }
    assert!(
        compared > 150,
        "only {compared} synthesised requests were compared"
    );
    assert!(
        mismatches.is_empty(),
        "key extraction differs from COMMAND GETKEYS on {} {}:\n{}",
        live.snapshot.flavor,
        live.snapshot.version,
        mismatches.join("\n")
    );
}

/// Where we knowingly differ from `COMMAND GETKEYS`: given both `STORE` and `STOREDIST`,
/// GEORADIUS writes only the last, while GETKEYS (walking the key specs) reports both.
fn allowed_difference(command: &Command, ours: &[Vec<u8>], theirs: &[Vec<u8>]) -> bool {
    command.name().starts_with("georadius")
        && theirs.len() == 3
        && ours.len() == 2
        && ours[0] == theirs[0]
        && ours[1] == theirs[2]
}

/// Every command and subcommand of `server` that takes keys.
fn keyed_commands(server: Server) -> Vec<&'static Command> {
    commands()
        .iter()
        .flat_map(|c| std::iter::once(c).chain(c.subcommands()))
        .filter(|c| c.is_available_on(server) && c.has_keys())
        .collect()
}

/// A request built from the documented arguments: required ones only, or every optional one
/// too (the first alternative of each `oneof`). Keys are named `key0`, `key1`, …
fn synthesize(command: &Command, arguments: &[Arg], all_options: bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = command.name().split('|').map(Vec::from).collect();
    let mut keys = 0;
    for arg in arguments {
        push_arg(arg, all_options, &mut out, &mut keys);
    }
    out
}

fn push_arg(arg: &Arg, all_options: bool, out: &mut Vec<Vec<u8>>, keys: &mut usize) {
    if arg.flags.contains(ArgFlags::OPTIONAL) && !all_options {
        return;
    }
    if let Some(token) = arg.token {
        out.push(token.into());
    }
    match arg.kind {
        ArgType::PureToken => {}
        ArgType::Key => {
            out.push(format!("key{keys}").into());
            *keys += 1;
        }
        ArgType::Integer => out.push(b"1".to_vec()),
        ArgType::Double => out.push(b"1.5".to_vec()),
        ArgType::UnixTime => out.push(b"1700000000".to_vec()),
        ArgType::Pattern => out.push(b"p*".to_vec()),
        ArgType::String => out.push(arg.name.into()),
        ArgType::Oneof => {
            if let Some(first) = arg.arguments.first() {
                push_arg(first, all_options, out, keys);
            }
        }
        ArgType::Block => {
            for member in arg.arguments {
                push_arg(member, all_options, out, keys);
            }
        }
    }
}

#[test]
fn key_extraction_matches_command_getkeys_on_redis() {
    assert_keys_match_getkeys(&Live::start(ServerOptions::default()));
}

#[test]
fn key_extraction_matches_command_getkeys_on_valkey_when_installed() {
    if let Some(options) = valkey_options() {
        assert_keys_match_getkeys(&Live::start(options));
    }
}

/// Keys rich in braces, from a fixed-seed xorshift generator.
fn brace_keys(count: usize) -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}{}ab{c}xyz0123456789";
    (0..count)
        .map(|_| {
            let len = (next() % 24) as usize;
            (0..len)
                .map(|_| {
                    let r = next();
                    if r % 5 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn key_slot_matches_cluster_keyslot() {
    let node = TestServer::start_cluster_node();
    let mut conn = redis::Client::open(node.url())
        .expect("client")
        .get_connection()
        .expect("connect");
    let mut keys = brace_keys(3000);
    for oracle in [&b"foo{}{bar}"[..], b"foo{{bar}}zap", b"{a", b"}{b}", b""] {
        keys.push(oracle.to_vec());
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key.as_slice());
    }
    let slots: Vec<u16> = pipe.query(&mut conn).expect("CLUSTER KEYSLOT");
    let wrong: Vec<_> = keys
        .iter()
        .zip(&slots)
        .filter(|(key, slot)| key_slot(key) != **slot)
        .map(|(key, slot)| format!("{key:?}: ours {}, server {slot}", key_slot(key)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let distinct: BTreeSet<u16> = slots.iter().copied().collect();
    assert!(distinct.len() > 1000, "the keys should spread over slots");
}
