//! Small bit sets for the table: command flags, ACL categories, key-spec flags, doc flags and
//! argument flags, each with the exact names the server uses in `COMMAND INFO`/`COMMAND DOCS`.
//!
//! Must never allocate or parse on the hot path: every operation is a `const fn` on an integer;
//! the name tables exist for building replies, generating the table and tests.

use std::fmt;

/// Defines a `Copy` bit-set newtype with named constants and the server's names for them.
macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        $name:ident: $repr:ty {
            $( $(#[$fmeta:meta])* $flag:ident = $bit:expr => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name($repr);

        impl $name {
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*

            /// The empty set.
            pub const EMPTY: Self = Self(0);

            /// Every member with the name the server uses for it, in the server's reply order.
            pub const NAMES: &'static [(Self, &'static str)] = &[$((Self::$flag, $text)),*];

            /// The raw bits.
            pub const fn bits(self) -> $repr {
                self.0
            }

            /// Whether every member of `other` is in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether `self` and `other` share a member.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// The members of both.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// The union of all of `members` (usable in `const` and `static` items).
            pub const fn of(members: &[Self]) -> Self {
                let mut bits = 0;
                let mut i = 0;
                while i < members.len() {
                    bits |= members[i].0;
                    i += 1;
                }
                Self(bits)
            }

            /// Whether no member is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The member the server calls `name` (ASCII case-insensitive; a leading `@` is
            /// ignored, so `@write` and `write` both name the ACL category).
            pub fn from_name(name: &str) -> Option<Self> {
                let name = name.strip_prefix('@').unwrap_or(name);
                Self::NAMES
                    .iter()
                    .find(|(_, text)| text.eq_ignore_ascii_case(name))
                    .map(|(member, _)| *member)
            }

            /// The server's names of the members of `self`, in the server's reply order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::NAMES
                    .iter()
                    .filter(move |(member, _)| self.contains(*member))
                    .map(|(_, text)| *text)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                *self = self.union(rhs);
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for (i, text) in self.names().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    f.write_str(text)?;
                }
                f.write_str(")")
            }
        }
    };
}

flag_set! {
    /// Command flags as `COMMAND INFO` reports them (Redis `CMD_*` flags plus `movablekeys`).
    ///
    /// Redis 7.0 and Valkey 8 do not report `may_replicate`, `sentinel`, `only_sentinel`,
    /// `protected` and the module-only flags through `COMMAND INFO`, so the generated table never
    /// sets them; the constants exist so callers can name every flag Redis defines.
    CommandFlags: u32 {
        /// May modify the dataset.
        WRITE = 0 => "write",
        /// Only reads the dataset.
        READONLY = 1 => "readonly",
        /// May grow memory: refused when over `maxmemory`.
        DENYOOM = 2 => "denyoom",
        /// Implemented by a module.
        MODULE = 3 => "module",
        /// Administrative command.
        ADMIN = 4 => "admin",
        /// Pub/Sub related.
        PUBSUB = 5 => "pubsub",
        /// Not allowed in scripts.
        NOSCRIPT = 6 => "noscript",
        /// May block the client.
        BLOCKING = 7 => "blocking",
        /// Allowed while the dataset is loading.
        LOADING = 8 => "loading",
        /// Allowed on a replica with stale data.
        STALE = 9 => "stale",
        /// Not shown in `MONITOR`.
        SKIP_MONITOR = 10 => "skip_monitor",
        /// Not logged to the slow log.
        SKIP_SLOWLOG = 11 => "skip_slowlog",
        /// Cluster: served for an `-ASK`ed slot being imported.
        ASKING = 12 => "asking",
        /// O(1) or O(log N) and never blocks.
        FAST = 13 => "fast",
        /// Allowed before authentication.
        NO_AUTH = 14 => "no_auth",
        /// May replicate even when it does not write (e.g. `PUBLISH`, scripts).
        MAY_REPLICATE = 15 => "may_replicate",
        /// Available in Sentinel mode.
        SENTINEL = 16 => "sentinel",
        /// Available only in Sentinel mode.
        ONLY_SENTINEL = 17 => "only_sentinel",
        /// May be called without any key even though it takes keys.
        NO_MANDATORY_KEYS = 18 => "no_mandatory_keys",
        /// Refused unless enabled by configuration (`enable-debug-command` …).
        PROTECTED = 19 => "protected",
        /// Module command with its own key-extraction callback.
        MODULE_GETKEYS = 20 => "module_getkeys",
        /// Module command that cannot run in cluster mode.
        MODULE_NO_CLUSTER = 21 => "module_no_cluster",
        /// Refused during async loading (`repl-diskless-load swapdb`).
        NO_ASYNC_LOADING = 22 => "no_async_loading",
        /// Not allowed inside `MULTI`.
        NO_MULTI = 23 => "no_multi",
        /// Key positions depend on the arguments (key specs alone do not fix them).
        MOVABLE_KEYS = 24 => "movablekeys",
        /// Allowed while a script or function is busy.
        ALLOW_BUSY = 25 => "allow_busy",
        /// Module command with its own channel-extraction callback.
        MODULE_GETCHANNELS = 26 => "module_getchannels",
        /// May touch keys that are not among its arguments.
        TOUCHES_ARBITRARY_KEYS = 27 => "touches_arbitrary_keys",
    }
}

flag_set! {
    /// ACL categories (`@read`, `@write`, …). [`from_name`](Self::from_name) accepts the `@`.
    AclCategories: u32 {
        /// `@keyspace`: generic key operations.
        KEYSPACE = 0 => "keyspace",
        /// `@read`: reads data.
        READ = 1 => "read",
        /// `@write`: writes data.
        WRITE = 2 => "write",
        /// `@set`: set data type.
        SET = 3 => "set",
        /// `@sortedset`: sorted-set data type.
        SORTEDSET = 4 => "sortedset",
        /// `@list`: list data type.
        LIST = 5 => "list",
        /// `@hash`: hash data type.
        HASH = 6 => "hash",
        /// `@string`: string data type.
        STRING = 7 => "string",
        /// `@bitmap`: bitmap operations.
        BITMAP = 8 => "bitmap",
        /// `@hyperloglog`: HyperLogLog data type.
        HYPERLOGLOG = 9 => "hyperloglog",
        /// `@geo`: geospatial index.
        GEO = 10 => "geo",
        /// `@stream`: stream data type.
        STREAM = 11 => "stream",
        /// `@pubsub`: Pub/Sub.
        PUBSUB = 12 => "pubsub",
        /// `@admin`: administration.
        ADMIN = 13 => "admin",
        /// `@fast`: O(1)/O(log N) commands.
        FAST = 14 => "fast",
        /// `@slow`: everything not `@fast`.
        SLOW = 15 => "slow",
        /// `@blocking`: may block the connection.
        BLOCKING = 16 => "blocking",
        /// `@dangerous`: potentially dangerous.
        DANGEROUS = 17 => "dangerous",
        /// `@connection`: connection management.
        CONNECTION = 18 => "connection",
        /// `@transaction`: `MULTI`/`EXEC`/`WATCH`.
        TRANSACTION = 19 => "transaction",
        /// `@scripting`: Lua scripts and functions.
        SCRIPTING = 20 => "scripting",
    }
}

flag_set! {
    /// Flags of one key specification (how a command uses the keys it finds).
    KeySpecFlags: u16 {
        /// Read-only access.
        RO = 0 => "RO",
        /// Read-write access.
        RW = 1 => "RW",
        /// Overwrite: the old value is not read.
        OW = 2 => "OW",
        /// Removes the key.
        RM = 3 => "RM",
        /// Returns, copies or uses the user data of the key.
        ACCESS = 4 => "access",
        /// Updates the value.
        UPDATE = 5 => "update",
        /// Adds data to the value without modifying or deleting existing data.
        INSERT = 6 => "insert",
        /// Deletes data from the value.
        DELETE = 7 => "delete",
        /// Not a key but routed like one (sharded Pub/Sub channels).
        NOT_KEY = 8 => "not_key",
        /// The spec may miss some keys; the command needs its own extraction code.
        INCOMPLETE = 9 => "incomplete",
        /// The flags depend on the arguments.
        VARIABLE_FLAGS = 10 => "variable_flags",
    }
}

flag_set! {
    /// Documentation flags of a command (`COMMAND DOCS` `doc_flags`).
    DocFlags: u8 {
        /// Deprecated; see `replaced_by`.
        DEPRECATED = 0 => "deprecated",
        /// A system command, not meant to be called by users.
        SYSCMD = 1 => "syscmd",
    }
}

flag_set! {
    /// Flags of one documented argument.
    ArgFlags: u8 {
        /// May be omitted.
        OPTIONAL = 0 => "optional",
        /// May repeat.
        MULTIPLE = 1 => "multiple",
        /// May repeat, each repetition preceded by its token.
        MULTIPLE_TOKEN = 2 => "multiple_token",
    }
}

flag_set! {
    /// The servers (and versions) a table entry describes.
    Servers: u8 {
        /// Redis 7.0.
        REDIS_7 = 0 => "redis-7.0",
        /// Valkey 8.0.
        VALKEY_8 = 1 => "valkey-8.0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ignore_case_and_the_acl_at_sign() {
        for (flag, name) in CommandFlags::NAMES {
            assert_eq!(CommandFlags::from_name(name), Some(*flag));
        }
        assert_eq!(
            AclCategories::from_name("@SortedSet"),
            Some(AclCategories::SORTEDSET)
        );
        assert_eq!(KeySpecFlags::from_name("ro"), Some(KeySpecFlags::RO));
        assert_eq!(CommandFlags::from_name("nope"), None);
    }

    #[test]
    fn set_operations_behave_like_bits() {
        let flags = CommandFlags::of(&[CommandFlags::WRITE, CommandFlags::FAST]);
        assert!(flags.contains(CommandFlags::WRITE));
        assert!(!flags.contains(CommandFlags::WRITE | CommandFlags::ADMIN));
        assert!(flags.intersects(CommandFlags::WRITE | CommandFlags::ADMIN));
        assert_eq!(flags.names().collect::<Vec<_>>(), ["write", "fast"]);
        assert_eq!(format!("{flags:?}"), "CommandFlags(write | fast)");
        assert!(CommandFlags::EMPTY.is_empty());
    }
}
