//! The shape of one table entry: [`Command`] (name, arity, flags, ACL categories, tips, key
//! specs, subcommands, servers, docs) and its key specifications.
//!
//! Must never hold anything but `'static` data: entries live in the generated table and are
//! handed out as `&'static Command`; nothing here allocates.

use crate::args::Args;
use crate::docs::Docs;
use crate::error::CommandError;
use crate::flags::{AclCategories, CommandFlags, KeySpecFlags, Servers};
use crate::keys::{FlaggedKeyIter, KeyIter};
use crate::lookup;
use crate::server::Server;
use crate::tips::{RequestPolicy, ResponsePolicy, Tips};

/// One command or subcommand of Redis 7.0 and/or Valkey 8.0, as the server describes itself.
///
/// When the two servers describe a command differently (`ZRANK` arity, `BLPOP` flags …) the table
/// holds one entry per server; [`servers`](Self::servers) says which one this is.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub(crate) name: &'static str,
    pub(crate) arity: i16,
    pub(crate) flags: CommandFlags,
    pub(crate) first_key: i16,
    pub(crate) last_key: i16,
    pub(crate) key_step: i16,
    pub(crate) acl_categories: AclCategories,
    pub(crate) tips: Tips,
    pub(crate) key_specs: &'static [KeySpec],
    pub(crate) key_proc: KeyProc,
    pub(crate) subcommands: &'static [Command],
    pub(crate) servers: Servers,
    pub(crate) redis_docs: Option<&'static Docs>,
    pub(crate) valkey_docs: Option<&'static Docs>,
}

impl Command {
    /// The full lowercase name as the server reports it: `get`, or `config|get` for a
    /// subcommand.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// For a subcommand, the part after `|` (`get` in `config|get`); `None` for a command.
    pub fn subcommand_name(&self) -> Option<&'static str> {
        self.bar().map(|at| &self.name[at + 1..])
    }

    /// Where the `|` of a subcommand's name is. A byte loop, not `split_once`: names are a
    /// few bytes long and the proxy asks on every request, where `str`'s general searcher
    /// cost some 70 instructions (`bench/proxy-instructions.sh`).
    fn bar(&self) -> Option<usize> {
        self.name.bytes().position(|b| b == b'|')
    }

    /// The container's name for a subcommand (`config` in `config|get`), else the name itself.
    pub fn command_name(&self) -> &'static str {
        self.bar().map_or(self.name, |at| &self.name[..at])
    }

    /// Redis arity, counting the command name (and the subcommand name): positive means
    /// exactly that many arguments, negative means at least `-arity`.
    pub const fn arity(&self) -> i16 {
        self.arity
    }

    /// The command flags.
    pub const fn flags(&self) -> CommandFlags {
        self.flags
    }

    /// The ACL categories.
    pub const fn acl_categories(&self) -> AclCategories {
        self.acl_categories
    }

    /// The command tips.
    pub const fn tips(&self) -> &Tips {
        &self.tips
    }

    /// Where a cluster client sends the command (from the tips).
    pub const fn request_policy(&self) -> RequestPolicy {
        self.tips.request_policy
    }

    /// How a cluster client merges fanned-out replies (from the tips).
    pub const fn response_policy(&self) -> ResponsePolicy {
        self.tips.response_policy
    }

    /// The legacy `(first key, last key, step)` triple of `COMMAND INFO`.
    pub const fn legacy_key_range(&self) -> (i16, i16, i16) {
        (self.first_key, self.last_key, self.key_step)
    }

    /// The key specifications, in the server's order.
    pub const fn key_specs(&self) -> &'static [KeySpec] {
        self.key_specs
    }

    /// The command-specific key extraction used instead of the key specs, if any.
    pub const fn key_proc(&self) -> KeyProc {
        self.key_proc
    }

    /// The subcommands of a container command (`CONFIG`, `CLUSTER` …), sorted by name; entries
    /// for different servers are adjacent.
    pub const fn subcommands(&self) -> &'static [Command] {
        self.subcommands
    }

    /// Whether this is a container whose first argument names a subcommand.
    pub const fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// The servers this entry describes.
    pub const fn servers(&self) -> Servers {
        self.servers
    }

    /// Whether this entry describes the command on `server`.
    pub const fn is_available_on(&self, server: Server) -> bool {
        self.servers.has(server)
    }

    /// The documentation `server` gives for the command, when this entry covers that server.
    pub const fn docs(&self, server: Server) -> Option<&'static Docs> {
        match server {
            Server::Redis7 => self.redis_docs,
            Server::Valkey8 => self.valkey_docs,
        }
    }

    /// Whether the command may modify data (`write` flag).
    pub const fn is_write(&self) -> bool {
        self.flags.contains(CommandFlags::WRITE)
    }

    /// Whether the command only reads data (`readonly` flag): safe to send to a replica.
    pub const fn is_readonly(&self) -> bool {
        self.flags.contains(CommandFlags::READONLY)
    }

    /// Whether the command may block the connection (`blocking` flag).
    pub const fn is_blocking(&self) -> bool {
        self.flags.contains(CommandFlags::BLOCKING)
    }

    /// Whether the command is administrative (`admin` flag).
    pub const fn is_admin(&self) -> bool {
        self.flags.contains(CommandFlags::ADMIN)
    }

    /// Whether the command is a Pub/Sub command (`pubsub` flag).
    pub const fn is_pubsub(&self) -> bool {
        self.flags.contains(CommandFlags::PUBSUB)
    }

    /// Whether the key positions depend on the arguments (`movablekeys` flag).
    pub const fn has_movable_keys(&self) -> bool {
        self.flags.contains(CommandFlags::MOVABLE_KEYS)
    }

    /// Whether the command takes keys at all (has at least one key spec).
    pub const fn has_keys(&self) -> bool {
        !self.key_specs.is_empty()
    }

    /// Checks `argc` (the number of arguments including the command and subcommand names)
    /// against the arity, as Redis does before running a command.
    ///
    /// # Errors
    /// [`CommandError::WrongArity`] (`ERR wrong number of arguments for 'get' command`).
    pub fn check_arity(&self, argc: usize) -> Result<(), CommandError> {
        let arity = usize::from(self.arity.unsigned_abs());
        let ok = if self.arity >= 0 {
            argc == arity
        } else {
            argc >= arity
        };
        if ok {
            Ok(())
        } else {
            Err(CommandError::WrongArity { command: self.name })
        }
    }

    /// The subcommand `name` (ASCII case-insensitive) of this container: the entry listed first
    /// when servers differ (Redis 7.0's).
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static Command> {
        lookup::find_subcommand(self, name, None)
    }

    /// The subcommand `name` as `server` has it; `None` when that server lacks it.
    pub fn subcommand_for(&self, server: Server, name: &[u8]) -> Option<&'static Command> {
        lookup::find_subcommand(self, name, Some(server))
    }

    /// The argument indices of the keys in `args` (the whole request, `args[0]` being the
    /// command name), in the order the key specs list them; zero-allocation.
    ///
    /// `args` is anything implementing [`Args`]; the iterator borrows it and reads only the
    /// arguments it must inspect (keywords, `numkeys`), not every argument.
    /// Sharded Pub/Sub channels (`SPUBLISH`, `SSUBSCRIBE` …) are yielded too because they route
    /// by slot like keys; [`keys_with_flags`](Self::keys_with_flags) marks them `NOT_KEY`.
    /// Malformed requests yield a subset of plausible positions, never an index out of bounds.
    pub fn keys<'a, A: Args + ?Sized>(&self, args: &'a A) -> KeyIter<'a, A> {
        KeyIter::new(self, args)
    }

    /// Like [`keys`](Self::keys), with the flags of the key spec that found each key.
    pub fn keys_with_flags<'a, A: Args + ?Sized>(&self, args: &'a A) -> FlaggedKeyIter<'a, A> {
        FlaggedKeyIter::new(self, args)
    }

    /// The argument index of the command's one key when its keys are always exactly that one
    /// argument (`GET`, `SET`, `INCR`, `HGET` …: a single key spec at a fixed index that spans
    /// one argument, no key procedure); `None` for every other shape.
    ///
    /// What [`keys`](Self::keys) yields for such a command, without walking the specs: the
    /// index when the request has that argument, else nothing. The proxy hashes the key of
    /// every request, and the general walk cost it some 150 instructions each
    /// (`bench/proxy-instructions.sh`).
    pub fn single_key_index(&self) -> Option<usize> {
        match self.key_specs {
            [
                KeySpec {
                    begin_search: BeginSearch::Index { pos },
                    find_keys:
                        FindKeys::Range {
                            last_key: 0,
                            key_step,
                            ..
                        },
                    ..
                },
            ] if self.key_proc == KeyProc::None && *pos >= 1 && *key_step >= 1 => {
                usize::try_from(*pos).ok()
            }
            _ => None,
        }
    }

    /// The one hash slot all keys (and sharded channels) of the request map to; `Ok(None)` when
    /// it has none.
    ///
    /// # Errors
    /// [`CommandError::CrossSlot`] when the keys map to different slots.
    pub fn slot<A: Args + ?Sized>(&self, args: &A) -> Result<Option<u16>, CommandError> {
        self.slot_by(args, crate::slot::key_slot)
    }

    /// Like [`slot`](Self::slot), with each key's slot given by `slot_of` (a proxy in front of
    /// several clusters numbers their slots apart).
    ///
    /// # Errors
    /// [`CommandError::CrossSlot`] when the keys map to different slots.
    pub fn slot_by<A: Args + ?Sized>(
        &self,
        args: &A,
        slot_of: impl Fn(&[u8]) -> u16,
    ) -> Result<Option<u16>, CommandError> {
        if let Some(index) = self.single_key_index() {
            return Ok(args.get(index).map(slot_of));
        }
        let mut slot = None;
        // `keys` yields only indices below `args.len()`, which a consistent `Args` has.
        for key in self.keys(args).filter_map(|index| args.get(index)) {
            let this = slot_of(key);
            match slot {
                None => slot = Some(this),
                Some(first) if first != this => return Err(CommandError::CrossSlot),
                Some(_) => {}
            }
        }
        Ok(slot)
    }
}

/// One key specification: where to start looking (`begin_search`) and how to find the keys from
/// there (`find_keys`), with how the command uses them (`flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySpec {
    /// Free-text notes from the server.
    pub notes: Option<&'static str>,
    /// Access flags (`RO`, `RW`, `OW`, `RM`, `access`, `update`, …).
    pub flags: KeySpecFlags,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// How keys are found from there.
    pub find_keys: FindKeys,
}

/// Where a key spec starts looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At a fixed argument index.
    Index {
        /// The argument index (the command name is 0).
        pos: i32,
    },
    /// After the first occurrence of `keyword`, searching from `start_from` (backwards from
    /// the end when negative).
    Keyword {
        /// The keyword, uppercase (matched ASCII case-insensitively).
        keyword: &'static str,
        /// Where the search starts; negative counts from the end, and then searches backwards.
        start_from: i32,
    },
    /// The server cannot describe it (e.g. `SORT … STORE`); see [`KeyProc`].
    Unknown,
}

/// How a key spec finds keys from where the search began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// A range of arguments.
    Range {
        /// The last key relative to the first (`>= 0`), or relative to the end (`< 0`).
        last_key: i32,
        /// The distance between keys.
        key_step: i32,
        /// With `last_key == -1`: only `1/limit` of the remaining arguments are keys.
        limit: i32,
    },
    /// The number of keys is an argument (`numkeys`).
    KeyNum {
        /// The index of the `numkeys` argument relative to where the search began.
        key_num_idx: i32,
        /// The index of the first key relative to where the search began.
        first_key: i32,
        /// The distance between keys.
        key_step: i32,
    },
    /// The server cannot describe it; see [`KeyProc`].
    Unknown,
}

/// Command-specific key extraction for commands whose key specs cannot be exact: specs of
/// [`BeginSearch::Unknown`], or flagged `incomplete`, or describing options that can repeat.
///
/// Redis itself has "getkeys procs" for these; this crate's own code reproduces what the command
/// actually reads and writes (see `keys.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyProc {
    /// The key specs are exact.
    #[default]
    None,
    /// `SORT key … [STORE dest]`: the last `STORE` wins; `BY`/`GET` patterns are not keys.
    Sort,
    /// `SORT_RO key …`: only the sorted key.
    SortRo,
    /// `MIGRATE host port key|"" db timeout … [KEYS k1 k2 …]`.
    Migrate,
    /// `GEORADIUS`/`GEORADIUSBYMEMBER … [STORE|STOREDIST dest]`: the last one wins.
    GeoRadius,
}

impl KeyProc {
    /// The procedure for the command `name` (lowercase, as the server reports it). The
    /// generator records this in the table; tests check every command that needs one has one.
    pub fn for_command(name: &str) -> KeyProc {
        match name {
            "sort" => KeyProc::Sort,
            "sort_ro" => KeyProc::SortRo,
            "migrate" => KeyProc::Migrate,
            "georadius" | "georadiusbymember" => KeyProc::GeoRadius,
            _ => KeyProc::None,
        }
    }
}
