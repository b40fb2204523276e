//! Finding a command by name: a case-insensitive open-addressing hash index over the generated
//! table, built at compile time, and the Redis resolution rules (subcommands, arity, errors).
//!
//! Must never allocate or take a lock: a lookup packs the lowercased name into a few words in
//! registers, hashes them and compares one or two candidates word by word.

use crate::args::Args;
use crate::error::CommandError;
use crate::generated::COMMANDS;
use crate::server::Server;
use crate::table::Command;

/// A name packed into three little-endian words: lowercase, zero-padded, with its length in
/// the last byte (so names up to 23 bytes fit). Equal keys mean equal names, so lookups
/// compare words, never bytes.
type Key = [u64; KEY_WORDS];
const KEY_WORDS: usize = 3;
const MAX_KEY_LEN: usize = 8 * KEY_WORDS - 1;

/// Slots of each index: a power of two, at least four times the number of names.
const INDEX_BITS: u32 = 10;
const INDEX_SLOTS: usize = 1 << INDEX_BITS;

/// The key of every top-level row's name.
static TOP_KEYS: [Key; COMMANDS.len()] = top_keys(&COMMANDS);
/// Slot → 1 + the first top-level row with that name (0 = empty).
static TOP_INDEX: [u16; INDEX_SLOTS] = top_index(&TOP_KEYS);

/// For each top-level row, the row owning its subcommand slice (variants of one container
/// share the slice of its first row).
static SUB_OWNER: [u16; COMMANDS.len()] = sub_owners(&COMMANDS);
/// The number of subcommand rows, each shared slice counted once.
const SUB_COUNT: usize = count_subcommands(&COMMANDS, &SUB_OWNER);
/// Every subcommand row as (owning container row, index in its slice).
static SUB_ROWS: [(u16, u16); SUB_COUNT] = sub_rows(&COMMANDS, &SUB_OWNER);
/// The key of every subcommand row's own name (`get` of `config|get`).
static SUB_KEYS: [Key; SUB_COUNT] = sub_keys(&COMMANDS, &SUB_ROWS);
/// Slot (of name and owner) → 1 + the first position in `SUB_ROWS` with that name and owner.
static SUB_INDEX: [u16; INDEX_SLOTS] = sub_index(&SUB_KEYS, &SUB_ROWS);

/// The key of `name` (already lowercase); fails compilation when it is too long or has
/// uppercase letters.
const fn const_key(name: &[u8]) -> Key {
    assert!(
        name.len() <= MAX_KEY_LEN,
        "command name too long for the index"
    );
    let mut key = [0u64; KEY_WORDS];
    let mut i = 0;
    while i < name.len() {
        assert!(!name[i].is_ascii_uppercase(), "command names are lowercase");
        key[i / 8] |= (name[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    key[KEY_WORDS - 1] |= (name.len() as u64) << 56;
    key
}

/// Whether two keys are equal (`==` is not `const`).
const fn same_key(a: &Key, b: &Key) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2]
}

/// Mixes a key and a salt (0 for top-level names, the owner row for subcommands) into a slot.
const fn slot_of(key: &Key, salt: u16) -> usize {
    let mixed = key[0] ^ key[1].rotate_left(21) ^ key[2].rotate_left(42) ^ ((salt as u64) << 40);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - INDEX_BITS)) as usize
}

/// Puts `value` into the first free slot from `slot_of(key, salt)`.
const fn insert(slots: &mut [u16; INDEX_SLOTS], key: &Key, salt: u16, value: usize) {
    let mut slot = slot_of(key, salt);
    while slots[slot] != 0 {
        slot = (slot + 1) % INDEX_SLOTS;
    }
    slots[slot] = (value + 1) as u16;
}

const fn top_keys<const N: usize>(commands: &[Command; N]) -> [Key; N] {
    let mut keys = [[0u64; KEY_WORDS]; N];
    let mut row = 0;
    while row < N {
        keys[row] = const_key(commands[row].name.as_bytes());
        row += 1;
    }
    keys
}

const fn top_index<const N: usize>(keys: &[Key; N]) -> [u16; INDEX_SLOTS] {
    assert!(N * 4 <= INDEX_SLOTS, "command index too small");
    let mut slots = [0u16; INDEX_SLOTS];
    let mut row = 0;
    while row < N {
        if row == 0 || !same_key(&keys[row - 1], &keys[row]) {
            insert(&mut slots, &keys[row], 0, row);
        }
        row += 1;
    }
    slots
}

const fn sub_owners<const N: usize>(commands: &[Command; N]) -> [u16; N] {
    let mut owners = [0u16; N];
    let mut row = 0;
    while row < N {
        let previous_same = row > 0
            && same_key(
                &const_key(commands[row - 1].name.as_bytes()),
                &const_key(commands[row].name.as_bytes()),
            );
        owners[row] = if previous_same {
            owners[row - 1]
        } else {
            row as u16
        };
        row += 1;
    }
    owners
}

const fn count_subcommands(commands: &[Command], owners: &[u16]) -> usize {
    let mut count = 0;
    let mut row = 0;
    while row < commands.len() {
        if owners[row] as usize == row {
            count += commands[row].subcommands.len();
        }
        row += 1;
    }
    count
}

const fn sub_rows<const N: usize>(commands: &[Command], owners: &[u16]) -> [(u16, u16); N] {
    let mut rows = [(0u16, 0u16); N];
    let mut next = 0;
    let mut row = 0;
    while row < commands.len() {
        if owners[row] as usize == row {
            let mut sub = 0;
            while sub < commands[row].subcommands.len() {
                rows[next] = (row as u16, sub as u16);
                next += 1;
                sub += 1;
            }
        }
        row += 1;
    }
    rows
}

/// The key of each subcommand's own name: `config|get` → `get`.
const fn sub_keys<const N: usize>(commands: &[Command], rows: &[(u16, u16); N]) -> [Key; N] {
    let mut keys = [[0u64; KEY_WORDS]; N];
    let mut i = 0;
    while i < N {
        let (row, sub) = rows[i];
        let container = commands[row as usize].name.as_bytes();
        let full = commands[row as usize].subcommands[sub as usize]
            .name
            .as_bytes();
        let (_, own) = full.split_at(container.len() + 1);
        keys[i] = const_key(own);
        i += 1;
    }
    keys
}

const fn sub_index<const N: usize>(keys: &[Key; N], rows: &[(u16, u16); N]) -> [u16; INDEX_SLOTS] {
    assert!(N * 4 <= INDEX_SLOTS, "subcommand index too small");
    let mut slots = [0u16; INDEX_SLOTS];
    let mut i = 0;
    while i < N {
        let first_of_run =
            i == 0 || rows[i - 1].0 != rows[i].0 || !same_key(&keys[i - 1], &keys[i]);
        if first_of_run {
            insert(&mut slots, &keys[i], rows[i].0, i);
        }
        i += 1;
    }
    slots
}

/// ASCII-lowercases the eight bytes of `word` at once (non-ASCII bytes are left alone).
const fn lowercase_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Clearing the high bits keeps the additions below from carrying between bytes.
    let low7 = word & (0x7F * ONES);
    let at_least_a = low7 + (0x80 - b'A' as u64) * ONES;
    let above_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = at_least_a & !above_z & !word & (0x80 * ONES);
    word | (upper >> 2)
}

/// The key of `name` from a client: gathered into three words, lowercased eight bytes at a
/// time; `None` when empty or too long to name anything.
#[inline]
fn key_of(name: &[u8]) -> Option<Key> {
    if name.is_empty() || name.len() > MAX_KEY_LEN {
        return None;
    }
    // One copy into a zeroed buffer and three word loads, not a shift per byte.
    let mut bytes = [0u8; 8 * KEY_WORDS];
    bytes[..name.len()].copy_from_slice(name);
    let mut key = [0u64; KEY_WORDS];
    for (word, chunk) in key.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = lowercase_word(u64::from_le_bytes(eight));
    }
    key[KEY_WORDS - 1] |= (name.len() as u64) << 56;
    Some(key)
}

/// The row of the first top-level entry whose key is `key`.
#[inline]
fn first_row(key: &Key) -> Option<usize> {
    let mut slot = slot_of(key, 0);
    loop {
        let row = usize::from(TOP_INDEX[slot]).checked_sub(1)?;
        if TOP_KEYS[row] == *key {
            return Some(row);
        }
        slot = (slot + 1) % INDEX_SLOTS;
    }
}

/// The position in `SUB_ROWS` of the first subcommand of container `owner` whose key is `key`.
fn first_sub(owner: u16, key: &Key) -> Option<usize> {
    let mut slot = slot_of(key, owner);
    loop {
        let position = usize::from(SUB_INDEX[slot]).checked_sub(1)?;
        if SUB_KEYS[position] == *key && SUB_ROWS[position].0 == owner {
            return Some(position);
        }
        slot = (slot + 1) % INDEX_SLOTS;
    }
}

/// The table row of `command` when it is a top-level entry (found by address: every
/// `Command` lives in the generated statics).
fn row_of(command: &Command) -> Option<usize> {
    let offset = (command as *const Command as usize).checked_sub(COMMANDS.as_ptr() as usize)?;
    let row = offset / size_of::<Command>();
    (row < COMMANDS.len() && std::ptr::eq(&COMMANDS[row], command)).then_some(row)
}

/// The command named `name` (ASCII case-insensitive), zero-allocation.
///
/// When Redis 7.0 and Valkey 8.0 describe the command differently this returns the Redis 7.0
/// entry; commands only Valkey has return their Valkey entry. Use [`lookup_for`] to get the
/// entry of a known backend.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    first_row(&key_of(name)?).map(|row| &COMMANDS[row])
}

/// The command named `name` as `server` has it; `None` when that server lacks it.
pub fn lookup_for(server: Server, name: &[u8]) -> Option<&'static Command> {
    let key = key_of(name)?;
    let first = first_row(&key)?;
    (first..COMMANDS.len())
        .take_while(|&row| TOP_KEYS[row] == key)
        .map(|row| &COMMANDS[row])
        .find(|command| command.is_available_on(server))
}

/// Every top-level entry of the table, sorted by name (entries for different servers adjacent).
pub fn commands() -> &'static [Command] {
    &COMMANDS
}

/// The position of `command` in [`commands`] when it is a top-level entry (not a subcommand),
/// found from its address: constant time, no lookup. Lets callers keep per-command data in a
/// plain array indexed like the table.
pub fn top_level_index(command: &Command) -> Option<usize> {
    row_of(command)
}

/// The subcommand `name` of `container`, optionally for one server.
pub(crate) fn find_subcommand(
    container: &Command,
    name: &[u8],
    server: Option<Server>,
) -> Option<&'static Command> {
    let owner = SUB_OWNER[row_of(container)?];
    let key = key_of(name)?;
    let first = first_sub(owner, &key)?;
    let candidates = &COMMANDS[usize::from(owner)].subcommands;
    (first..SUB_COUNT)
        .take_while(|&position| SUB_KEYS[position] == key && SUB_ROWS[position].0 == owner)
        .map(|position| &candidates[usize::from(SUB_ROWS[position].1)])
        .find(|command| server.is_none_or(|server| command.is_available_on(server)))
}

/// The entry that handles the request `args` (`args[0]` is the command name): the command, or
/// for a container with a subcommand argument (`CONFIG GET …`) the subcommand's entry, after
/// checking the argument count. Uses the same default entries as [`lookup`].
///
/// `args` is anything implementing [`Args`]: a `&[&[u8]]`, an array, a `Vec<Vec<u8>>`, or the
/// caller's own view of a parsed request. Reads at most the first two arguments and the count.
///
/// # Errors
/// [`CommandError::Empty`] for no arguments, [`CommandError::UnknownCommand`],
/// [`CommandError::UnknownSubcommand`] and [`CommandError::WrongArity`], worded as Redis words
/// them.
pub fn resolve<A: Args + ?Sized>(args: &A) -> Result<&'static Command, CommandError> {
    resolve_in(None, args)
}

/// Like [`resolve`], for the commands and subcommands `server` has.
///
/// # Errors
/// As [`resolve`]; a command the server lacks is unknown.
pub fn resolve_for<A: Args + ?Sized>(
    server: Server,
    args: &A,
) -> Result<&'static Command, CommandError> {
    resolve_in(Some(server), args)
}

fn resolve_in<A: Args + ?Sized>(
    server: Option<Server>,
    args: &A,
) -> Result<&'static Command, CommandError> {
    let name = args.get(0).ok_or(CommandError::Empty)?;
    let command = match server {
        None => lookup(name),
        Some(server) => lookup_for(server, name),
    }
    .ok_or_else(|| CommandError::unknown_command(args))?;
    // Redis: a container called without a subcommand is checked as itself (arity -2 fails).
    let command = match args.get(1) {
        Some(sub) if command.is_container() => find_subcommand(command, sub, server)
            .ok_or_else(|| CommandError::unknown_subcommand(name, sub))?,
        _ => command,
    };
    command.check_arity(args.len())?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_entries_know_their_index_and_subcommands_have_none() {
        for (i, command) in commands().iter().enumerate() {
            assert_eq!(top_level_index(command), Some(i), "{}", command.name());
        }
        let get = lookup(b"get").unwrap();
        assert_eq!(commands()[top_level_index(get).unwrap()].name(), "get");
        let client_list = resolve(&["client", "list"]).unwrap();
        assert_eq!(top_level_index(client_list), None);
    }
    use crate::flags::Servers;
    use proptest::prelude::*;

    /// The obvious lookup: a linear scan comparing ASCII case-insensitively.
    fn reference_lookup(name: &[u8]) -> Option<&'static Command> {
        COMMANDS
            .iter()
            .find(|command| command.name.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Command names with random case changes and random edits.
    fn name_like() -> impl Strategy<Value = Vec<u8>> {
        let known = prop::sample::select(COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>());
        prop_oneof![
            (known.clone(), any::<u64>()).prop_map(|(name, flips)| {
                name.bytes()
                    .enumerate()
                    .map(|(i, b)| {
                        if flips >> (i % 64) & 1 == 1 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    })
                    .collect()
            }),
            (known, any::<u8>(), any::<prop::sample::Index>()).prop_map(|(name, byte, at)| {
                let mut name = name.as_bytes().to_vec();
                let at = at.index(name.len());
                name[at] = byte;
                name
            }),
            prop::collection::vec(any::<u8>(), 0..30),
        ]
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_a_linear_case_insensitive_scan(name in name_like()) {
            let found = lookup(&name).map(Command::name);
            prop_assert_eq!(found, reference_lookup(&name).map(Command::name));
        }

        #[test]
        fn subcommand_lookup_agrees_with_a_linear_scan(
            container in any::<prop::sample::Index>(),
            name in name_like(),
            sub in any::<prop::sample::Index>(),
            upper in any::<bool>(),
        ) {
            let containers: Vec<&Command> = COMMANDS.iter().filter(|c| c.is_container()).collect();
            let container = *container.get(&containers);
            // Half the time a real subcommand name of this container, else anything.
            let real = sub.get(container.subcommands).subcommand_name().unwrap_or_default();
            let mut wanted = if upper { real.as_bytes().to_ascii_uppercase() } else { name };
            if wanted.is_empty() {
                wanted.push(b'x');
            }
            let expected = container.subcommands.iter().find(|c| {
                c.subcommand_name().is_some_and(|n| n.as_bytes().eq_ignore_ascii_case(&wanted))
            });
            prop_assert_eq!(container.subcommand(&wanted).map(Command::name), expected.map(Command::name));
        }

        #[test]
        fn resolve_never_panics_and_errors_stay_on_one_line(
            args in prop::collection::vec(name_like(), 0..5),
        ) {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            if let Err(e) = resolve(&args) {
                let line = e.to_bytes();
                prop_assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
                prop_assert!(line.starts_with(b"ERR "));
            }
        }
    }

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
    fn word_lowercasing_matches_bytewise_lowercasing() {
        let samples: [&[u8; 8]; 4] = [
            b"GeTzZaA@",
            b"[`{_-|09",
            b"\xff\xc1ABC\x80Z\x00",
            b"ZZZZZZZZ",
        ];
        for bytes in samples
            .into_iter()
            .chain([&[0xDB; 8], &[0x5A; 8], &[0xC1; 8]])
        {
            let word = u64::from_le_bytes(*bytes);
            let expected = u64::from_le_bytes(bytes.map(|b| b.to_ascii_lowercase()));
            assert_eq!(lowercase_word(word), expected, "{bytes:?}");
        }
        for b in 0..=255u8 {
            let word = u64::from_le_bytes([b; 8]);
            let expected = u64::from_le_bytes([b.to_ascii_lowercase(); 8]);
            assert_eq!(lowercase_word(word), expected, "{b:#x}");
        }
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
            message(resolve_for::<[&[u8]]>(
                Server::Redis7,
                &[b"waitaof", b"0", b"0", b"0"]
            )),
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
            message(resolve::<[&[u8]]>(&[b"GET", b"a", b"b"])),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            message(resolve(&[b"config"])),
            "ERR wrong number of arguments for 'config' command"
        );
        assert_eq!(
            message(resolve::<[&[u8]]>(&[b"config", b"get"])),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert!(resolve::<[&[u8]]>(&[b"mset", b"a", b"1", b"b", b"2"]).is_ok());
        assert!(resolve::<[&[u8]]>(&[b"mset", b"a"]).is_err());
        let get = lookup(b"get").expect("get");
        assert!(get.check_arity(2).is_ok());
        assert!(get.check_arity(1).is_err() && get.check_arity(3).is_err());
    }

    #[test]
    fn unknown_commands_and_subcommands_are_worded_like_redis() {
        assert_eq!(
            message(resolve::<[&[u8]]>(&[b"FOO", b"a", b"b"])),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            message(resolve(&[b"foo"])),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            message(resolve::<[&[u8]]>(&[b"config", b"X"])),
            "ERR unknown subcommand 'X'. Try CONFIG HELP."
        );
        assert_eq!(
            message(resolve::<[&[u8]]>(&[b"object", b"nope", b"k"])),
            "ERR unknown subcommand 'nope'. Try OBJECT HELP."
        );
        assert_eq!(resolve::<[&[u8]]>(&[]), Err(CommandError::Empty));
    }

    #[test]
    fn error_quotes_are_cut_and_kept_on_one_line() {
        let long = [b'x'; 300];
        let err = resolve::<[&[u8]]>(&[b"no\r\nsuch", &long, b"next"]).expect_err("unknown");
        let bytes = err.to_bytes();
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(text.starts_with("ERR unknown command 'no  such', with args beginning with: 'x"));
        // Redis quotes at most 128 bytes of arguments, then stops.
        assert_eq!(text.matches('x').count(), 128);
        assert!(!text.contains("next"));
        let err = resolve::<[&[u8]]>(&[b"config", &[0xff, b'\n']]).expect_err("unknown");
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
