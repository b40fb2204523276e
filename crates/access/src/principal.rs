//! [`Principal`]: a logged-in user with their compiled role, and the per-request permission
//! check the proxy runs before routing a command.
//!
//! Must never allocate, lock or look anything up by name when a request is allowed: the
//! command's permission is one bit, keys and channels are matched against precompiled
//! patterns, and only a refusal builds a value ([`Denied`]).

use std::fmt;
use std::sync::Arc;

use cinnabar_commands::{Args, Command, KeyProc, KeySpecFlags};

use crate::denied::{Denied, Reason};
use crate::entries::{Channels, entries};
use crate::glob::Pattern;
use crate::rules::CommandSet;

/// A compiled role: which commands, keys and channels it may use.
#[derive(Debug)]
pub(crate) struct Role {
    pub(crate) name: Box<str>,
    pub(crate) commands: CommandSet,
    pub(crate) keys: Patterns,
    pub(crate) channels: Patterns,
    /// The role's own transactions mode, if it sets one.
    pub(crate) transactions: Option<crate::config::Transactions>,
}

/// Key or channel patterns; `everything` when one of them is `*` (then nothing is matched).
#[derive(Debug, Clone)]
pub(crate) struct Patterns {
    everything: bool,
    list: Box<[Pattern]>,
}

impl Patterns {
    pub(crate) fn new(list: Vec<Pattern>) -> Patterns {
        Patterns {
            everything: list.iter().any(Pattern::matches_everything),
            list: list.into(),
        }
    }

    /// The patterns as configured.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &[u8]> {
        self.list.iter().map(Pattern::source)
    }

    /// `*`: everything.
    pub(crate) fn everything() -> Patterns {
        Patterns {
            everything: true,
            list: Box::new([]),
        }
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.everything
    }

    /// Whether `name` matches one of the patterns.
    #[inline]
    fn allow(&self, name: &[u8]) -> bool {
        self.everything || self.list.iter().any(|p| p.matches(name))
    }

    /// Whether the subscription pattern `pattern` is one of the patterns, character for
    /// character (Redis's rule for `PSUBSCRIBE`: a pattern could match more than it says, so
    /// it is never matched against patterns).
    #[inline]
    fn allow_literally(&self, pattern: &[u8]) -> bool {
        self.everything || self.list.iter().any(|p| p.source() == pattern)
    }
}

/// The identity behind a [`Principal`].
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) user: Arc<str>,
    pub(crate) role: Arc<Role>,
}

/// A role's permissions as ACL rules (`ACL LIST`, `ACL GETUSER`), one rule per string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRules {
    /// `~pattern` rules.
    pub keys: Vec<String>,
    /// `&pattern` rules.
    pub channels: Vec<String>,
    /// `+@all`, or `-@all` and a `+command` rule for each permitted command.
    pub commands: Vec<String>,
}

impl AclRules {
    /// Every rule on one line, keys, channels then commands, as `ACL LIST` prints them.
    pub fn line(&self) -> String {
        let rules: Vec<&str> = self
            .keys
            .iter()
            .chain(&self.channels)
            .chain(&self.commands)
            .map(String::as_str)
            .collect();
        rules.join(" ")
    }
}

/// A logged-in user: their name and compiled role. Cheap to clone (one reference count), so a
/// session keeps its own; it stays valid after a reload (it keeps the old role alive) until the
/// session asks the new [`Access`](crate::Access) for a fresh one.
#[derive(Clone)]
pub struct Principal(pub(crate) Arc<Identity>);

impl Principal {
    pub(crate) fn new(user: &str, role: Arc<Role>) -> Principal {
        Principal(Arc::new(Identity {
            user: user.into(),
            role,
        }))
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.0.user
    }

    /// The name of the user's role.
    pub fn role(&self) -> &str {
        &self.0.role.name
    }

    /// The role's transactions mode when it overrides the proxy-wide one.
    pub fn transactions(&self) -> Option<crate::config::Transactions> {
        self.0.role.transactions
    }

    /// The role's compiled permissions as ACL rules, whichever rules produced them: `~pattern`
    /// for keys, `&pattern` for channels, and `+@all`, or `-@all` followed by every permitted
    /// command (`+get`, `+client|id`).
    pub fn acl_rules(&self) -> AclRules {
        let role = &self.0.role;
        let patterns = |prefix: &str, patterns: &Patterns| -> Vec<String> {
            if patterns.is_everything() {
                vec![format!("{prefix}*")]
            } else {
                patterns
                    .sources()
                    .map(|p| format!("{prefix}{}", String::from_utf8_lossy(p)))
                    .collect()
            }
        };
        let all = entries().iter().all(|(id, _)| role.commands.contains(id));
        let commands = if all {
            vec!["+@all".to_owned()]
        } else {
            std::iter::once("-@all".to_owned())
                .chain(
                    entries()
                        .iter()
                        .filter(|(id, _)| role.commands.contains(*id))
                        .map(|(_, command)| format!("+{}", command.name())),
                )
                .collect()
        };
        AclRules {
            keys: patterns("~", &role.keys),
            channels: patterns("&", &role.channels),
            commands,
        }
    }

    /// Whether the role permits `command` (a table entry: a command or a subcommand), without
    /// looking at keys or channels. For listing what a user may do; requests go through
    /// [`check`](Self::check).
    pub fn may_run(&self, command: &Command) -> bool {
        entries()
            .id_of(command)
            .is_some_and(|id| self.0.role.commands.contains(id))
    }

    /// Checks one request the way a Redis ACL does: the command (or subcommand), then every key
    /// the command table finds in `args` (multi-key commands, `numkeys` commands, `SORT …
    /// STORE` included; `SORT … BY/GET` patterns need access to every key), then the channels
    /// of `PUBLISH`, `SPUBLISH`, `SUBSCRIBE`, `SSUBSCRIBE` and `PSUBSCRIBE`. `command` is what
    /// [`cinnabar_commands::resolve`] returned for `args`.
    ///
    /// Allocates nothing when the request is allowed.
    ///
    /// # Errors
    /// [`Denied`] for the first permission missing, in that order.
    pub fn check<A: Args + ?Sized>(&self, command: &Command, args: &A) -> Result<(), Denied> {
        let role = &self.0.role;
        let table = entries();
        let Some(id) = table.id_of(command) else {
            // Not from the table (impossible through its API): refuse rather than guess.
            return Err(self.denied(command, Reason::Command, None));
        };
        if !role.commands.contains(id) {
            return Err(self.denied(command, Reason::Command, None));
        }
        if !role.keys.is_everything() {
            self.check_keys(command, args)?;
        }
        if !role.channels.is_everything() {
            self.check_channels(command, table.channels(id), args)?;
        }
        Ok(())
    }

    fn check_keys<A: Args + ?Sized>(&self, command: &Command, args: &A) -> Result<(), Denied> {
        let keys = &self.0.role.keys;
        for (index, flags) in command.keys_with_flags(args) {
            // Sharded Pub/Sub channels are routed like keys but are channels (checked below).
            if flags.contains(KeySpecFlags::NOT_KEY) {
                continue;
            }
            let key = args.get(index).unwrap_or_default();
            if !keys.allow(key) {
                return Err(self.denied(command, Reason::Key, Some((index, key))));
            }
        }
        if matches!(command.key_proc(), KeyProc::Sort | KeyProc::SortRo) {
            self.check_sort_patterns(command, args)?;
        }
        Ok(())
    }

    /// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA]
    /// [STORE dest]`: `BY` with a `*` and any `GET` read keys built from the pattern, which no
    /// key pattern can vouch for. Redis refuses them without access to every key; so do we
    /// (the backend user would otherwise read them for anybody).
    fn check_sort_patterns<A: Args + ?Sized>(
        &self,
        command: &Command,
        args: &A,
    ) -> Result<(), Denied> {
        let mut i = 2;
        while i + 1 < args.len() {
            let option = args.get(i).unwrap_or_default();
            let value = args.get(i + 1).unwrap_or_default();
            if option.eq_ignore_ascii_case(b"limit") {
                i += 3;
                continue;
            }
            let reason = if option.eq_ignore_ascii_case(b"by") && value.contains(&b'*') {
                Some(Reason::SortBy)
            } else if option.eq_ignore_ascii_case(b"get") {
                Some(Reason::SortGet)
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(self.denied(command, reason, Some((i + 1, value))));
            }
            // BY without `*` (no sorting) and STORE take one value; the rest take none.
            let takes_value =
                option.eq_ignore_ascii_case(b"by") || option.eq_ignore_ascii_case(b"store");
            i += if takes_value { 2 } else { 1 };
        }
        Ok(())
    }

    fn check_channels<A: Args + ?Sized>(
        &self,
        command: &Command,
        channels: Channels,
        args: &A,
    ) -> Result<(), Denied> {
        let allowed = &self.0.role.channels;
        let (range, literal) = match channels {
            Channels::None => return Ok(()),
            Channels::First => (1..args.len().min(2), false),
            Channels::All => (1..args.len(), false),
            Channels::AllPatterns => (1..args.len(), true),
        };
        for index in range {
            let channel = args.get(index).unwrap_or_default();
            let ok = if literal {
                allowed.allow_literally(channel)
            } else {
                allowed.allow(channel)
            };
            if !ok {
                return Err(self.denied(command, Reason::Channel, Some((index, channel))));
            }
        }
        Ok(())
    }

    fn denied(&self, command: &Command, reason: Reason, refused: Option<(usize, &[u8])>) -> Denied {
        Denied {
            user: Arc::clone(&self.0.user),
            command: command.name(),
            reason,
            refused: refused.map(|(index, bytes)| (index, bytes.into())),
        }
    }
}

// By hand: the role's bitset is noise in a log line.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("user", &self.user())
            .field("role", &self.role())
            .finish()
    }
}
