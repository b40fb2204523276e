//! Finding a command by name: a case-insensitive open-addressing hash index over the generated
//! table, built at compile time, and the Redis resolution rules (subcommands, arity, errors).
//!
//! Must never allocate or take a lock: a lookup lowercases the name into a stack buffer, hashes
//! it and compares one or two candidates.

use crate::error::CommandError;
use crate::generated::COMMANDS;
use crate::server::Server;
use crate::table::Command;

/// The longest command or subcommand name the index accepts (checked at compile time).
const MAX_NAME_LEN: usize = 32;

/// Slots of the index: a power of two, at least four times the number of names.
const INDEX_SLOTS: usize = 1024;
const INDEX_MASK: usize = INDEX_SLOTS - 1;

/// Slot → 1 + the row of the first table entry with that name (0 = empty).
static INDEX: [u16; INDEX_SLOTS] = build_index(&COMMANDS);

/// FNV-1a over already-lowercased bytes, folded so the low bits mix in the high ones.
const fn name_hash(name: &[u8]) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        hash ^= name[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    (hash ^ (hash >> 15)) as usize
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Builds the index; fails compilation when a name is too long, not lowercase, or the table
/// does not fit.
const fn build_index(commands: &[Command]) -> [u16; INDEX_SLOTS] {
    assert!(commands.len() * 4 <= INDEX_SLOTS, "command index too small");
    let mut slots = [0u16; INDEX_SLOTS];
    let mut row = 0;
    while row < commands.len() {
        let name = commands[row].name.as_bytes();
        assert!(name.len() <= MAX_NAME_LEN, "command name too long");
        let mut i = 0;
        while i < name.len() {
            assert!(!name[i].is_ascii_uppercase(), "command names are lowercase");
            i += 1;
        }
        let first_of_name = row == 0 || !bytes_eq(commands[row - 1].name.as_bytes(), name);
        if first_of_name {
            let mut slot = name_hash(name) & INDEX_MASK;
            while slots[slot] != 0 {
                slot = (slot + 1) & INDEX_MASK;
            }
            slots[slot] = (row + 1) as u16;
        }
        row += 1;
    }
    slots
}

/// `name` lowercased into `buf`, or `None` when it is empty or longer than any command name.
fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME_LEN]) -> Option<&'b [u8]> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    let lower = &mut buf[..name.len()];
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    Some(lower)
}

/// The row of the first entry named `name` (ASCII case-insensitive).
fn first_row(name: &[u8]) -> Option<usize> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = lowercase(name, &mut buf)?;
    let mut slot = name_hash(lower) & INDEX_MASK;
    loop {
        let row = usize::from(INDEX[slot]).checked_sub(1)?;
        if COMMANDS[row].name.as_bytes() == lower {
            return Some(row);
        }
        slot = (slot + 1) & INDEX_MASK;
    }
}

/// The command named `name` (ASCII case-insensitive), zero-allocation.
///
/// When Redis 7.0 and Valkey 8.0 describe the command differently this returns the Redis 7.0
/// entry; commands only Valkey has return their Valkey entry. Use [`lookup_for`] to get the
/// entry of a known backend.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    first_row(name).map(|row| &COMMANDS[row])
}

/// The command named `name` as `server` has it; `None` when that server lacks it.
pub fn lookup_for(server: Server, name: &[u8]) -> Option<&'static Command> {
    let first = first_row(name)?;
    let name = COMMANDS[first].name;
    COMMANDS[first..]
        .iter()
        .take_while(|command| command.name == name)
        .find(|command| command.is_available_on(server))
}

/// Every top-level entry of the table, sorted by name (entries for different servers adjacent).
pub fn commands() -> &'static [Command] {
    &COMMANDS
}

/// The subcommand `name` among `subcommands` (sorted by name), optionally for one server.
pub(crate) fn find_subcommand(
    subcommands: &'static [Command],
    name: &[u8],
    server: Option<Server>,
) -> Option<&'static Command> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = lowercase(name, &mut buf)?;
    let short = |command: &Command| -> &'static [u8] {
        command
            .subcommand_name()
            .map_or(b"".as_slice(), str::as_bytes)
    };
    let start = subcommands.partition_point(|command| short(command) < lower);
    subcommands[start..]
        .iter()
        .take_while(|command| short(command) == lower)
        .find(|command| server.is_none_or(|server| command.is_available_on(server)))
}

/// The entry that handles the request `args` (`args[0]` is the command name): the command, or
/// for a container with a subcommand argument (`CONFIG GET …`) the subcommand's entry, after
/// checking the argument count. Uses the same default entries as [`lookup`].
///
/// # Errors
/// [`CommandError::Empty`] for no arguments, [`CommandError::UnknownCommand`],
/// [`CommandError::UnknownSubcommand`] and [`CommandError::WrongArity`], worded as Redis words
/// them.
pub fn resolve(args: &[&[u8]]) -> Result<&'static Command, CommandError> {
    resolve_in(None, args)
}

/// Like [`resolve`], for the commands and subcommands `server` has.
///
/// # Errors
/// As [`resolve`]; a command the server lacks is unknown.
pub fn resolve_for(server: Server, args: &[&[u8]]) -> Result<&'static Command, CommandError> {
    resolve_in(Some(server), args)
}

fn resolve_in(server: Option<Server>, args: &[&[u8]]) -> Result<&'static Command, CommandError> {
    let name = args.first().ok_or(CommandError::Empty)?;
    let command = match server {
        None => lookup(name),
        Some(server) => lookup_for(server, name),
    }
    .ok_or_else(|| CommandError::unknown_command(args))?;
    // Redis: a container called without a subcommand is checked as itself (arity -2 fails).
    let command = match args.get(1) {
        Some(sub) if command.is_container() => find_subcommand(command.subcommands, sub, server)
            .ok_or_else(|| CommandError::unknown_subcommand(name, sub))?,
        _ => command,
    };
    command.check_arity(args.len())?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Servers;

    fn message(result: Result<&'static Command, CommandError>) -> String {
        result.expect_err("an error").to_string()
    }

    #[test]
    fn lookup_ignores_case_and_returns_the_same_entry() {
        let lower = lookup(b"get").expect("get");
        assert!(std::ptr::eq(lower, lookup(b"GET").expect("GET")));
        assert!(std::ptr::eq(lower, lookup(b"gEt").expect("gEt")));
        assert_eq!(lower.name(), "get");
        assert_eq!(lower.arity(), 2);
        assert!(lower.is_readonly() && !lower.is_write());
        assert!(lookup(b"SET").expect("SET").is_write());
    }

    #[test]
    fn unknown_empty_and_overlong_names_are_not_found() {
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(&[b'a'; 200]).is_none());
        assert!(lookup(b"get\0").is_none());
        assert!(
            lookup(b"config|get").is_none(),
            "subcommands are not top level"
        );
    }

    #[test]
    fn every_entry_is_found_by_its_name_for_each_of_its_servers() {
        for command in commands() {
            let found = lookup(command.name().as_bytes()).expect("found by name");
            assert_eq!(found.name(), command.name());
            for server in Server::ALL {
                if command.is_available_on(server) {
                    let found = lookup_for(server, command.name().as_bytes()).expect("found");
                    assert!(std::ptr::eq(found, command), "{}", command.name());
                }
            }
            for sub in command.subcommands() {
                let short = sub.subcommand_name().expect("subcommand name");
                assert_eq!(sub.command_name(), command.name());
                let found = command
                    .subcommand(short.as_bytes())
                    .expect("subcommand found");
                assert_eq!(found.name(), sub.name());
                for server in Server::ALL {
                    if sub.is_available_on(server) {
                        let found = command.subcommand_for(server, short.as_bytes());
                        assert!(
                            found.is_some_and(|f| std::ptr::eq(f, sub)),
                            "{}",
                            sub.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn entries_are_sorted_with_at_most_one_per_server_and_name() {
        let check = |rows: &[Command]| {
            for pair in rows.windows(2) {
                assert!(pair[0].name() <= pair[1].name(), "{} order", pair[1].name());
                if pair[0].name() == pair[1].name() {
                    assert!(
                        !pair[0].servers().intersects(pair[1].servers()),
                        "{} twice for one server",
                        pair[0].name()
                    );
                }
            }
        };
        check(commands());
        for command in commands() {
            check(command.subcommands());
            assert!(!command.servers().is_empty());
        }
    }

    #[test]
    fn the_table_covers_every_command_of_both_servers() {
        let count = |server: Server| {
            let top: Vec<_> = commands()
                .iter()
                .filter(|c| c.is_available_on(server))
                .collect();
            let subs = top
                .iter()
                .flat_map(|c| c.subcommands())
                .filter(|c| c.is_available_on(server))
                .count();
            (top.len(), subs)
        };
        assert_eq!(count(Server::Redis7), (240, 126));
        assert_eq!(count(Server::Valkey8), (241, 132));
    }

    #[test]
    fn servers_that_disagree_get_their_own_entries() {
        let redis = lookup_for(Server::Redis7, b"zrank").expect("redis zrank");
        let valkey = lookup_for(Server::Valkey8, b"ZRANK").expect("valkey zrank");
        assert_eq!((redis.arity(), valkey.arity()), (3, -3));
        assert!(std::ptr::eq(lookup(b"zrank").expect("zrank"), redis));
        assert_eq!(redis.servers(), Servers::REDIS_7);
        let both = lookup(b"get").expect("get");
        assert_eq!(both.servers(), Servers::REDIS_7 | Servers::VALKEY_8);
    }

    #[test]
    fn valkey_only_commands_exist_only_for_valkey() {
        assert!(lookup_for(Server::Redis7, b"waitaof").is_none());
        let waitaof = lookup_for(Server::Valkey8, b"WAITAOF").expect("valkey waitaof");
        assert!(std::ptr::eq(lookup(b"waitaof").expect("default"), waitaof));
        let capa: [&[u8]; 3] = [b"CLIENT", b"CAPA", b"redirect"];
        assert_eq!(
            message(resolve_for(Server::Redis7, &capa)),
            "ERR unknown subcommand 'CAPA'. Try CLIENT HELP."
        );
        assert_eq!(
            resolve_for(Server::Valkey8, &capa).expect("capa").name(),
            "client|capa"
        );
        assert_eq!(
            message(resolve_for(Server::Redis7, &[b"waitaof", b"0", b"0", b"0"])),
            "ERR unknown command 'waitaof', with args beginning with: '0' '0' '0' "
        );
    }

    #[test]
    fn resolve_finds_subcommands_case_insensitively() {
        let args: [&[u8]; 3] = [b"config", b"GET", b"maxmemory"];
        let command = resolve(&args).expect("config get");
        assert_eq!(command.name(), "config|get");
        assert_eq!(command.subcommand_name(), Some("get"));
        assert_eq!(command.command_name(), "config");
        let args: [&[u8]; 3] = [b"Cluster", b"countkeysinslot", b"1"];
        assert_eq!(
            resolve(&args).expect("cluster").name(),
            "cluster|countkeysinslot"
        );
        let args: [&[u8]; 2] = [b"cluster", b"count-failure-reports"];
        assert_eq!(
            message(resolve(&args)),
            "ERR wrong number of arguments for 'cluster|count-failure-reports' command"
        );
    }

    #[test]
    fn arity_errors_name_the_full_command() {
        assert_eq!(
            message(resolve(&[b"get"])),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            message(resolve(&[b"GET", b"a", b"b"])),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            message(resolve(&[b"config"])),
            "ERR wrong number of arguments for 'config' command"
        );
        assert_eq!(
            message(resolve(&[b"config", b"get"])),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert!(resolve(&[b"mset", b"a", b"1", b"b", b"2"]).is_ok());
        assert!(resolve(&[b"mset", b"a"]).is_err());
        let get = lookup(b"get").expect("get");
        assert!(get.check_arity(2).is_ok());
        assert!(get.check_arity(1).is_err() && get.check_arity(3).is_err());
    }

    #[test]
    fn unknown_commands_and_subcommands_are_worded_like_redis() {
        assert_eq!(
            message(resolve(&[b"FOO", b"a", b"b"])),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            message(resolve(&[b"foo"])),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            message(resolve(&[b"config", b"X"])),
            "ERR unknown subcommand 'X'. Try CONFIG HELP."
        );
        assert_eq!(
            message(resolve(&[b"object", b"nope", b"k"])),
            "ERR unknown subcommand 'nope'. Try OBJECT HELP."
        );
        assert_eq!(resolve(&[]), Err(CommandError::Empty));
    }

    #[test]
    fn error_quotes_are_cut_and_kept_on_one_line() {
        let long = [b'x'; 300];
        let err = resolve(&[b"no\r\nsuch", &long, b"next"]).expect_err("unknown");
        let bytes = err.to_bytes();
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(text.starts_with("ERR unknown command 'no  such', with args beginning with: 'x"));
        // Redis quotes at most 128 bytes of arguments, then stops.
        assert_eq!(text.matches('x').count(), 128);
        assert!(!text.contains("next"));
        let err = resolve(&[b"config", &[0xff, b'\n']]).expect_err("unknown");
        assert_eq!(
            err.to_bytes(),
            b"ERR unknown subcommand '\xff '. Try CONFIG HELP."
        );
    }

    #[test]
    fn slot_of_a_request_is_shared_by_its_keys_or_an_error() {
        let same: [&[u8]; 5] = [b"MSET", b"{u}a", b"1", b"{u}b", b"2"];
        let mset = resolve(&same).expect("mset");
        assert_eq!(mset.slot(&same), Ok(Some(crate::key_slot(b"u"))));
        let cross: [&[u8]; 5] = [b"MSET", b"a", b"1", b"b", b"2"];
        assert_eq!(mset.slot(&cross), Err(CommandError::CrossSlot));
        let ping = lookup(b"ping").expect("ping");
        assert_eq!(ping.slot(&[b"ping"]), Ok(None));
    }

    #[test]
    fn tips_and_docs_come_through() {
        use crate::tips::{RequestPolicy, ResponsePolicy};
        let dbsize = lookup(b"dbsize").expect("dbsize");
        assert_eq!(dbsize.request_policy(), RequestPolicy::AllShards);
        assert_eq!(dbsize.response_policy(), ResponsePolicy::AggSum);
        let keys = lookup(b"keys").expect("keys");
        assert!(keys.tips().nondeterministic_output_order);
        let docs = lookup(b"get")
            .and_then(|c| c.docs(Server::Redis7))
            .expect("docs");
        assert_eq!(docs.group, crate::docs::Group::String);
        assert_eq!(docs.since, "1.0.0");
        assert!(
            lookup_for(Server::Redis7, b"zrank")
                .expect("zrank")
                .docs(Server::Valkey8)
                .is_none()
        );
    }
}
