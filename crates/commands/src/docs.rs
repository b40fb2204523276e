//! Command documentation as `COMMAND DOCS` reports it: summary, since, group, complexity,
//! history and the argument tree, per server (Redis and Valkey word their docs differently).
//!
//! Must never be needed for routing: nothing on the hot path reads docs; they exist so the proxy
//! can answer `COMMAND DOCS` (which `redis-cli` sends) without asking a backend.

use crate::flags::{ArgFlags, DocFlags};

/// The documentation of one command or subcommand on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Docs {
    /// One-line summary.
    pub summary: &'static str,
    /// The server version that introduced the command.
    pub since: &'static str,
    /// The command group.
    pub group: Group,
    /// Time complexity, when documented.
    pub complexity: Option<&'static str>,
    /// `deprecated`, `syscmd`.
    pub doc_flags: DocFlags,
    /// The version that deprecated the command.
    pub deprecated_since: Option<&'static str>,
    /// What replaces a deprecated command.
    pub replaced_by: Option<&'static str>,
    /// `(version, change)` pairs.
    pub history: &'static [(&'static str, &'static str)],
    /// The documented arguments (after the command and subcommand names).
    pub arguments: &'static [Arg],
}

/// One documented argument; blocks and `oneof`s nest their members in `arguments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Arg {
    /// Argument name.
    pub name: &'static str,
    /// Argument type.
    pub kind: ArgType,
    /// For keys: the index of the key spec that finds this argument.
    pub key_spec_index: Option<u8>,
    /// The literal token preceding the value, e.g. `STORE`.
    pub token: Option<&'static str>,
    /// Short description.
    pub summary: Option<&'static str>,
    /// The version that added the argument.
    pub since: Option<&'static str>,
    /// `optional`, `multiple`, `multiple_token`.
    pub flags: ArgFlags,
    /// The version that deprecated the argument.
    pub deprecated_since: Option<&'static str>,
    /// How the argument is shown in help (Valkey).
    pub display_text: Option<&'static str>,
    /// Members of a `block` or `oneof`.
    pub arguments: &'static [Arg],
}

impl Arg {
    /// A blank argument: the generated table spells only the fields that differ from it.
    pub(crate) const BLANK: Arg = Arg {
        name: "",
        kind: ArgType::String,
        key_spec_index: None,
        token: None,
        summary: None,
        since: None,
        flags: ArgFlags::EMPTY,
        deprecated_since: None,
        display_text: None,
        arguments: &[],
    };
}

/// The type of a documented argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// `string`.
    String,
    /// `integer`.
    Integer,
    /// `double`.
    Double,
    /// `key`: a key name (see [`Arg::key_spec_index`]).
    Key,
    /// `pattern`: a glob-style pattern.
    Pattern,
    /// `unix-time`: a Unix timestamp.
    UnixTime,
    /// `pure-token`: a literal token with no value.
    PureToken,
    /// `oneof`: exactly one of the nested arguments.
    Oneof,
    /// `block`: the nested arguments in order.
    Block,
}

impl ArgType {
    /// Every type with the name `COMMAND DOCS` uses.
    pub const NAMES: [(ArgType, &'static str); 9] = [
        (ArgType::String, "string"),
        (ArgType::Integer, "integer"),
        (ArgType::Double, "double"),
        (ArgType::Key, "key"),
        (ArgType::Pattern, "pattern"),
        (ArgType::UnixTime, "unix-time"),
        (ArgType::PureToken, "pure-token"),
        (ArgType::Oneof, "oneof"),
        (ArgType::Block, "block"),
    ];

    /// The name `COMMAND DOCS` uses.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("string", |(_, name)| name)
    }

    /// The type `COMMAND DOCS` calls `name`.
    pub fn from_name(name: &str) -> Option<ArgType> {
        Self::NAMES
            .iter()
            .find(|(_, text)| *text == name)
            .map(|(kind, _)| *kind)
    }
}

/// The command group (`COMMAND DOCS` `group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `generic`: keyspace commands.
    Generic,
    /// `string`.
    String,
    /// `list`.
    List,
    /// `set`.
    Set,
    /// `sorted-set`.
    SortedSet,
    /// `hash`.
    Hash,
    /// `pubsub`.
    Pubsub,
    /// `transactions`.
    Transactions,
    /// `connection`.
    Connection,
    /// `server`.
    Server,
    /// `scripting`.
    Scripting,
    /// `hyperloglog`.
    Hyperloglog,
    /// `cluster`.
    Cluster,
    /// `sentinel`.
    Sentinel,
    /// `geo`.
    Geo,
    /// `stream`.
    Stream,
    /// `bitmap`.
    Bitmap,
    /// `module`.
    Module,
}

impl Group {
    /// Every group with the name `COMMAND DOCS` uses.
    pub const NAMES: [(Group, &'static str); 18] = [
        (Group::Generic, "generic"),
        (Group::String, "string"),
        (Group::List, "list"),
        (Group::Set, "set"),
        (Group::SortedSet, "sorted-set"),
        (Group::Hash, "hash"),
        (Group::Pubsub, "pubsub"),
        (Group::Transactions, "transactions"),
        (Group::Connection, "connection"),
        (Group::Server, "server"),
        (Group::Scripting, "scripting"),
        (Group::Hyperloglog, "hyperloglog"),
        (Group::Cluster, "cluster"),
        (Group::Sentinel, "sentinel"),
        (Group::Geo, "geo"),
        (Group::Stream, "stream"),
        (Group::Bitmap, "bitmap"),
        (Group::Module, "module"),
    ];

    /// The name `COMMAND DOCS` uses.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(group, _)| *group == self)
            .map_or("generic", |(_, name)| name)
    }

    /// The group `COMMAND DOCS` calls `name`.
    pub fn from_name(name: &str) -> Option<Group> {
        Self::NAMES
            .iter()
            .find(|(_, text)| *text == name)
            .map(|(group, _)| *group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_type_names_round_trip() {
        for (group, name) in Group::NAMES {
            assert_eq!(Group::from_name(name), Some(group));
            assert_eq!(group.as_str(), name);
        }
        for (kind, name) in ArgType::NAMES {
            assert_eq!(ArgType::from_name(name), Some(kind));
            assert_eq!(kind.as_str(), name);
        }
    }
}
