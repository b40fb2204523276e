//! Command rules (`+@all`, `-@dangerous`, `+get`, `-config|set`) turned into sets of command
//! table entries, plus the built-in roles and the default deny list they are made of.
//!
//! Runs only when a configuration is compiled: it may allocate and scan the table freely, and
//! must never be needed to answer a request (the result is a bitset, see [`CommandSet`]).

use cinnabar_commands::{AclCategories, Command};

use crate::entries::entries;

/// Why a command rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule is the empty string.
    #[error("empty rule")]
    Empty,
    /// A `commands` rule without its leading `+` (allow) or `-` (deny).
    #[error("a rule starts with `+` (allow) or `-` (deny)")]
    MissingSign,
    /// A `deny`/`allow` entry with a sign: the list already says which way it goes.
    #[error("`deny` and `allow` entries name commands without `+` or `-`")]
    UnexpectedSign,
    /// `@name` is not an ACL category.
    #[error("unknown ACL category `@{0}`")]
    UnknownCategory(String),
    /// No command has this name.
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// The container has no such subcommand.
    #[error("unknown subcommand `{subcommand}` of `{command}`")]
    UnknownSubcommand {
        /// The container, as written.
        command: String,
        /// The subcommand, as written.
        subcommand: String,
    },
    /// `command|sub` for a command that has no subcommands.
    #[error("`{0}` has no subcommands")]
    NoSubcommands(String),
}

/// A set of command table entries: one bit per entry number (see `entries.rs`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CommandSet(Box<[u64]>);

impl CommandSet {
    /// No entry.
    pub(crate) fn empty() -> CommandSet {
        CommandSet(vec![0; entries().len().div_ceil(64)].into())
    }

    /// The entries for which `wanted` holds.
    pub(crate) fn matching(wanted: impl Fn(&Command) -> bool) -> CommandSet {
        let mut set = CommandSet::empty();
        for (id, command) in entries().iter() {
            if wanted(command) {
                set.insert(id);
            }
        }
        set
    }

    /// Whether entry `id` is in the set (`false` for numbers past the table).
    #[inline]
    pub(crate) fn contains(&self, id: usize) -> bool {
        self.0
            .get(id / 64)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }

    fn insert(&mut self, id: usize) {
        if let Some(word) = self.0.get_mut(id / 64) {
            *word |= 1 << (id % 64);
        }
    }

    /// Adds every member of `other`.
    pub(crate) fn add(&mut self, other: &CommandSet) {
        for (word, more) in self.0.iter_mut().zip(other.0.iter()) {
            *word |= more;
        }
    }

    /// Removes every member of `other`.
    pub(crate) fn remove(&mut self, other: &CommandSet) {
        for (word, less) in self.0.iter_mut().zip(other.0.iter()) {
            *word &= !less;
        }
    }

    /// The members of both.
    pub(crate) fn intersection(&self, other: &CommandSet) -> CommandSet {
        let words = self.0.iter().zip(other.0.iter()).map(|(a, b)| a & b);
        CommandSet(words.collect())
    }

    /// Whether there is no member.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    /// Whether some member of `other` is not in `self`.
    pub(crate) fn lacks_some_of(&self, other: &CommandSet) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .any(|(have, want)| want & !have != 0)
    }

    /// The names of the members, for tests and debugging.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        entries()
            .iter()
            .filter(|(id, _)| self.contains(*id))
            .map(|(_, command)| command.name())
    }
}

impl std::fmt::Debug for CommandSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// One `commands` rule: whether it allows or denies, and what.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `+` (true) or `-` (false).
    pub(crate) allow: bool,
    /// The entries it names.
    pub(crate) set: CommandSet,
    /// Whether it names commands rather than categories (for warnings about rules the deny
    /// list overrides).
    pub(crate) by_name: bool,
}

/// Parses a `commands` rule: `+`/`-` then `@category`, `@all`, `command` or `command|sub`
/// (names ASCII case-insensitive), or Redis's `allcommands` / `nocommands`.
pub(crate) fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    if text.eq_ignore_ascii_case("allcommands") {
        return parse_rule("+@all");
    }
    if text.eq_ignore_ascii_case("nocommands") {
        return parse_rule("-@all");
    }
    let allow = match text.as_bytes().first() {
        None => return Err(RuleError::Empty),
        Some(b'+') => true,
        Some(b'-') => false,
        Some(_) => return Err(RuleError::MissingSign),
    };
    let selector = &text[1..];
    Ok(Rule {
        allow,
        set: select(selector)?,
        by_name: !selector.starts_with('@'),
    })
}

/// Parses a `deny` / `allow` entry: like a rule without its sign.
pub(crate) fn parse_entry(text: &str) -> Result<CommandSet, RuleError> {
    if text.starts_with(['+', '-']) {
        return Err(RuleError::UnexpectedSign);
    }
    select(text)
}

/// The entries `selector` names: `@all`, `@category`, `command` (with its subcommands) or
/// `command|sub`.
fn select(selector: &str) -> Result<CommandSet, RuleError> {
    if selector.is_empty() {
        return Err(RuleError::Empty);
    }
    if let Some(category) = selector.strip_prefix('@') {
        if category.eq_ignore_ascii_case("all") {
            return Ok(CommandSet::matching(|_| true));
        }
        let wanted = AclCategories::from_name(category)
            .filter(|_| !category.is_empty() && !category.starts_with('@'))
            .ok_or_else(|| RuleError::UnknownCategory(category.to_owned()))?;
        return Ok(CommandSet::matching(|c| {
            c.acl_categories().contains(wanted)
        }));
    }
    let Some((command, subcommand)) = selector.split_once('|') else {
        let set = CommandSet::matching(|c| c.command_name().eq_ignore_ascii_case(selector));
        return if set.names().next().is_some() {
            Ok(set)
        } else {
            Err(RuleError::UnknownCommand(selector.to_owned()))
        };
    };
    let containers = CommandSet::matching(|c| c.name().eq_ignore_ascii_case(command));
    if containers.names().next().is_none() {
        return Err(RuleError::UnknownCommand(command.to_owned()));
    }
    let is_container = entries()
        .iter()
        .any(|(_, c)| c.name().eq_ignore_ascii_case(command) && c.is_container());
    if !is_container {
        return Err(RuleError::NoSubcommands(command.to_owned()));
    }
    let set = CommandSet::matching(|c| {
        c.command_name().eq_ignore_ascii_case(command)
            && c.subcommand_name()
                .is_some_and(|sub| sub.eq_ignore_ascii_case(subcommand))
    });
    if set.names().next().is_none() {
        return Err(RuleError::UnknownSubcommand {
            command: command.to_owned(),
            subcommand: subcommand.to_owned(),
        });
    }
    Ok(set)
}

/// The entries `selector` names, or none when the table lacks it: for the built-in lists,
/// which must keep working if a future table drops a command (a test checks they all resolve).
fn select_known(selector: &str) -> CommandSet {
    select(selector).unwrap_or_else(|_| CommandSet::empty())
}

/// The built-in role everything may do.
pub(crate) const ADMIN: &str = "admin";
/// The built-in role for applications: everything but the guarded commands.
pub(crate) const READWRITE: &str = "readwrite";
/// The built-in role for readers: reads and connection handling, never a write.
pub(crate) const READONLY: &str = "readonly";
/// The built-in role names, in the order messages list them.
pub(crate) const BUILTIN_ROLES: [&str; 3] = [ADMIN, READWRITE, READONLY];

/// The `commands` rules of a built-in role; `None` for other names.
pub(crate) fn builtin_rules(role: &str) -> Option<&'static [&'static str]> {
    match role {
        ADMIN | READWRITE => Some(&["+@all"]),
        // `@connection` includes CLIENT KILL/PAUSE/LIST (also `@admin`), which are not a
        // reader's business; cluster-aware clients need the topology views to connect at all.
        READONLY => Some(&[
            "+@read",
            "+@connection",
            "-@admin",
            "+cluster|slots",
            "+cluster|shards",
            "+cluster|nodes",
            "+cluster|info",
            "+cluster|myid",
            "+cluster|keyslot",
            "+cluster|countkeysinslot",
            "+cluster|getkeysinslot",
            "+cluster|links",
        ]),
        _ => None,
    }
}

/// The entries a built-in role's rules allow (before the default deny list).
pub(crate) fn builtin_commands(role: &str) -> Option<CommandSet> {
    let mut set = CommandSet::empty();
    for rule in builtin_rules(role)? {
        if let Ok(rule) = parse_rule(rule) {
            apply(&mut set, &rule);
        }
    }
    Some(set)
}

/// Applies one rule to `set`.
pub(crate) fn apply(set: &mut CommandSet, rule: &Rule) {
    if rule.allow {
        set.add(&rule.set);
    } else {
        set.remove(&rule.set);
    }
}

/// Commands no role but `admin` gets unless its `allow` list names them: whole commands (with
/// every subcommand) and single subcommands. `KEYS` is added by [`default_deny`] on request.
const GUARDED: &[&str] = &[
    "flushall",
    "flushdb",
    "config",
    "debug",
    "shutdown",
    "save",
    "bgsave",
    "bgrewriteaof",
    "replicaof",
    "slaveof",
    "script|flush",
    "function|flush",
    "function|delete",
    "function|restore",
    "monitor",
    "swapdb",
    "migrate",
    "acl",
    "module",
];

/// The ACL subcommands every role keeps (the rest of ACL is guarded).
const UNGUARDED_ACL: &[&str] = &["acl|whoami", "acl|cat"];

/// The CLUSTER subcommands that only show state; every other CLUSTER subcommand is guarded.
pub(crate) const CLUSTER_VIEWS: &[&str] = &[
    "slots",
    "shards",
    "nodes",
    "info",
    "myid",
    "keyslot",
    "countkeysinslot",
    "getkeysinslot",
    "links",
];

/// The default deny list of every role not based on `admin`, with or without `KEYS`.
pub(crate) fn default_deny(deny_keys_command: bool) -> CommandSet {
    let mut set = CommandSet::matching(|c| {
        c.command_name() == "cluster"
            && c.subcommand_name()
                .is_none_or(|sub| !CLUSTER_VIEWS.contains(&sub))
    });
    for name in GUARDED {
        set.add(&select_known(name));
    }
    // Who one is and which categories exist reveal nothing: Redis users run them too.
    for name in UNGUARDED_ACL {
        set.remove(&select_known(name));
    }
    if deny_keys_command {
        set.add(&select_known("keys"));
    }
    set
}

/// The guarded entry names (for documentation and tests).
#[cfg(test)]
pub(crate) fn guarded_names() -> &'static [&'static str] {
    GUARDED
}

/// Commands that must stay usable whatever the rules say: `AUTH`, `HELLO`, `QUIT`, `RESET`
/// (the table's `no_auth` flag). Redis exempts them the same way; without them a client could
/// not even log in as someone else.
pub(crate) fn always_allowed() -> CommandSet {
    CommandSet::matching(|c| c.flags().contains(cinnabar_commands::CommandFlags::NO_AUTH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: &CommandSet) -> Vec<&'static str> {
        let mut names: Vec<_> = set.names().collect();
        names.dedup();
        names
    }

    #[test]
    fn a_command_rule_covers_its_subcommands_and_a_subcommand_rule_only_itself() {
        let config = parse_rule("+CONFIG").expect("rule");
        assert!(config.allow && config.by_name);
        assert!(names(&config.set).contains(&"config"));
        assert!(names(&config.set).contains(&"config|set"));
        assert!(names(&config.set).contains(&"config|get"));
        let set = parse_rule("-config|SET").expect("rule");
        assert!(!set.allow);
        assert_eq!(names(&set.set), ["config|set"]);
    }

    #[test]
    fn categories_select_by_the_tables_categories() {
        let read = parse_rule("+@read").expect("rule");
        assert!(!read.by_name);
        let read = names(&read.set);
        assert!(read.contains(&"get") && read.contains(&"mget"));
        assert!(!read.contains(&"set"));
        let all = parse_rule("+@all").expect("rule");
        assert_eq!(all.set.names().count(), entries().len());
        let dangerous = names(&parse_rule("-@dangerous").expect("rule").set);
        assert!(dangerous.contains(&"flushall") && dangerous.contains(&"keys"));
        assert!(
            parse_rule("allcommands")
                .expect("alias")
                .set
                .names()
                .count()
                == entries().len()
        );
        assert!(!parse_rule("nocommands").expect("alias").allow);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |rule: &str| parse_rule(rule).expect_err("refused");
        assert_eq!(err(""), RuleError::Empty);
        assert_eq!(err("+"), RuleError::Empty);
        assert_eq!(err("get"), RuleError::MissingSign);
        assert_eq!(
            err("+nosuchcommand"),
            RuleError::UnknownCommand("nosuchcommand".into())
        );
        assert_eq!(
            err("+@nosuchcategory"),
            RuleError::UnknownCategory("nosuchcategory".into())
        );
        assert_eq!(err("+@"), RuleError::UnknownCategory(String::new()));
        assert_eq!(err("+@@read"), RuleError::UnknownCategory("@read".into()));
        assert_eq!(err("+get|x"), RuleError::NoSubcommands("get".into()));
        assert_eq!(
            err("-config|nope"),
            RuleError::UnknownSubcommand {
                command: "config".into(),
                subcommand: "nope".into()
            }
        );
        assert_eq!(err("+nope|x"), RuleError::UnknownCommand("nope".into()));
        assert_eq!(
            parse_entry("+keys").expect_err("signed"),
            RuleError::UnexpectedSign
        );
        assert!(parse_entry("keys").is_ok());
        assert!(parse_entry("@scripting").is_ok());
    }

    #[test]
    fn every_built_in_name_resolves_in_the_table() {
        for name in guarded_names() {
            assert!(select(name).is_ok(), "{name}");
        }
        for view in CLUSTER_VIEWS {
            assert!(select(&format!("cluster|{view}")).is_ok(), "{view}");
        }
        for role in BUILTIN_ROLES {
            for rule in builtin_rules(role).expect("built in") {
                assert!(parse_rule(rule).is_ok(), "{role}: {rule}");
            }
        }
        assert!(builtin_rules("nope").is_none());
    }

    #[test]
    fn the_default_deny_list_is_the_issues_list() {
        let deny = names(&default_deny(true));
        for name in [
            "flushall",
            "flushdb",
            "config|get",
            "config|set",
            "debug",
            "shutdown",
            "save",
            "bgsave",
            "bgrewriteaof",
            "replicaof",
            "slaveof",
            "cluster|addslots",
            "cluster|failover",
            "cluster|reset",
            "cluster|setslot",
            "cluster|forget",
            "cluster|meet",
            "script|flush",
            "function|flush",
            "function|delete",
            "function|restore",
            "monitor",
            "swapdb",
            "migrate",
            "keys",
            "acl|setuser",
            "acl|users",
            "module|load",
        ] {
            assert!(deny.contains(&name), "{name} should be denied");
        }
        for name in [
            "get",
            "set",
            "acl|whoami",
            "acl|cat",
            "cluster|slots",
            "cluster|shards",
            "cluster|nodes",
            "cluster|info",
            "cluster|myid",
            "cluster|keyslot",
            "cluster|countkeysinslot",
            "cluster|getkeysinslot",
            "cluster|links",
            "script|load",
            "function|load",
            "function|list",
            "scan",
        ] {
            assert!(!deny.contains(&name), "{name} should not be denied");
        }
        assert!(!names(&default_deny(false)).contains(&"keys"));
    }

    #[test]
    fn readonly_reads_and_connects_but_never_writes_or_administers() {
        let readonly = names(&builtin_commands(READONLY).expect("built in"));
        for name in [
            "get",
            "mget",
            "scan",
            "ping",
            "hello",
            "select",
            "cluster|slots",
        ] {
            assert!(readonly.contains(&name), "{name}");
        }
        for name in [
            "set",
            "del",
            "client|kill",
            "client|pause",
            "publish",
            "eval",
        ] {
            assert!(!readonly.contains(&name), "{name}");
        }
    }

    #[test]
    fn always_allowed_is_the_login_and_logout_commands() {
        let mut names = names(&always_allowed());
        names.sort_unstable();
        assert_eq!(names, ["auth", "hello", "quit", "reset"]);
    }
}
