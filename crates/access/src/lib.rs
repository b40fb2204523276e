//! Access control for the proxy, as a pure policy library: users with SHA-256 passwords, roles
//! with Redis-ACL-style command rules, key patterns and channel patterns, and the guards (a
//! default deny list for every role but `admin`).
//!
//! This crate must never do I/O beyond reading the users file, never be async, and never
//! allocate, lock or look anything up by name on the allow path of [`Principal::check`]
//! (command permissions are a bitset indexed by the command table entry; see
//! `tests/allocations.rs`). It decides; the proxy speaks the protocol, keeps sessions, audits,
//! counts and reloads.
//!
//! # Configuration
//!
//! The `[access]` section of the proxy's TOML file deserializes into [`AccessConfig`] (unknown
//! keys are errors); `users_file` points to a TOML file of `[[users]]` ([`UsersFile`], e.g. a
//! mounted Kubernetes Secret) merged with `[[access.users]]`:
//!
//! ```toml
//! [access]
//! users_file = "users.toml"       # optional; relative to the config file via `relative_to`
//! deny_keys_command = true        # default: KEYS is on the default deny list
//!
//! [[access.users]]
//! name = "orders-api"
//! password_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
//! role = "orders"                 # or admin / readwrite / readonly
//! # enabled = true                # default
//! # password = "plain"            # accepted instead of password_sha256, with a warning
//!
//! [[access.roles]]
//! name = "orders"
//! base = "readwrite"              # optional: a built-in role to start from
//! commands = ["-@scripting", "+client|setname"]   # ordered; later rules win
//! keys = ["orders:*"]             # a key must match one (absent: base's `*`, or none)
//! channels = ["orders.*"]         # Pub/Sub channels, likewise
//! deny = ["flushdb"]              # taken away after the rules and the default deny list
//! allow = ["keys"]                # granted last, even guarded commands
//! ```
//!
//! A role's commands are built in this order, each step overriding the previous ones: the
//! `base` role's rules, `commands`, the **default deny list** (skipped when the base is
//! `admin`), `deny`, `allow`. Rules are `+`/`-` followed by `@all`, `@category` (the table's
//! ACL categories), `command` (with all its subcommands) or `command|subcommand`; Redis's
//! `allcommands`/`nocommands` work too. `deny`/`allow` entries are the same without a sign.
//!
//! Built-in roles (their keys and channels are `*`):
//! - `admin`: `+@all`, no deny list.
//! - `readwrite`: `+@all`, minus the default deny list.
//! - `readonly`: `+@read +@connection -@admin` plus the read-only CLUSTER views, minus the
//!   default deny list. `-@admin` keeps CLIENT KILL/PAUSE/LIST (which `@connection` includes)
//!   away from readers; the CLUSTER views let cluster-aware clients connect.
//!
//! The default deny list: FLUSHALL, FLUSHDB, CONFIG, DEBUG, SHUTDOWN, SAVE, BGSAVE,
//! BGREWRITEAOF, REPLICAOF, SLAVEOF, every CLUSTER subcommand but the read-only views (SLOTS,
//! SHARDS, NODES, INFO, MYID, KEYSLOT, COUNTKEYSINSLOT, GETKEYSINSLOT, LINKS), SCRIPT FLUSH,
//! FUNCTION FLUSH/DELETE/RESTORE, MONITOR, SWAPDB, MIGRATE, KEYS (unless
//! `deny_keys_command = false`), ACL, MODULE. A `+flushdb` in `commands` cannot undo it (a
//! warning says so); `allow = ["flushdb"]` can.
//!
//! With no users configured, every client is the built-in `default` user with the `readwrite`
//! role and no login is required. With users, login is required; a user named `default` (if
//! configured) is the one `AUTH password` logs in as.
//!
//! # Using it from the proxy
//!
//! ```
//! use std::sync::Arc;
//!
//! use cinnabar_access::{Access, AccessConfig, Server};
//!
//! let config: AccessConfig = toml::from_str(r#"
//!     [[users]]
//!     name = "app"
//!     password_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
//!     role = "orders"
//!
//!     [[roles]]
//!     name = "orders"
//!     base = "readwrite"
//!     keys = ["orders:*"]
//!     deny = ["@scripting"]   # scripts could reach keys outside orders:*
//! "#)?;
//! // Once at start-up and on every reload; warnings go to the log. An error leaves the old
//! // `Arc<Access>` in force.
//! let (access, warnings) = Access::compile(&config)?;
//! assert!(warnings.is_empty());
//! let access = Arc::new(access);
//!
//! // A new connection: `None` means it must log in first (see `runs_before_login`).
//! assert!(access.auth_required() && access.default_principal().is_none());
//!
//! // AUTH app password / HELLO 3 AUTH app password:
//! let principal = access.authenticate(Some(b"app"), b"password")?;
//! assert_eq!((principal.user(), principal.role()), ("app", "orders"));
//!
//! // Every command, after resolving it and before routing it:
//! let args: [&[u8]; 3] = [b"MGET", b"orders:1", b"users:1"];
//! let command = cinnabar_commands::resolve(&args)?;
//! let denied = principal.check(command, &args).expect_err("users:1 is outside orders:*");
//! // Sent as `-` + message + CRLF, in the backend's wording; audited with these fields.
//! assert_eq!(denied.message(Server::Valkey8), "NOPERM No permissions to access a key");
//! assert_eq!(denied.refused(), Some(&b"users:1"[..]));
//!
//! // After a reload, a logged-in session moves to its user's new principal (or loses it).
//! assert!(access.principal("app").is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Unauthenticated clients may only run what [`runs_before_login`] allows (AUTH, HELLO, PING,
//! QUIT); the proxy answers anything else with `NOAUTH Authentication required.`.
//!
//! # Decisions
//!
//! - **Checks follow Redis's ACL order and wording**: command, then keys, then channels; the
//!   first refusal wins. Messages are the backend's own: [`Denied::message`] with
//!   [`Server::Redis7`] gives Redis 7.0's wording (`NOPERM this user has no permissions …`),
//!   `Display` and [`Server::Valkey8`] that of Redis 7.2+ and Valkey (`NOPERM User app has no
//!   permissions to run the 'flushall' command`). `tests/real_servers.rs` compares both with
//!   real servers, and checks that glob patterns decide keys as the servers do.
//! - **Keys are every key the command table finds** ([`Command::keys_with_flags`]), including
//!   `MSET`, `EVAL … numkeys`, `SORT … STORE`, `MIGRATE … KEYS`. Sharded channels, which the
//!   table reports as `not_key` keys, are checked as channels. `SORT … BY pattern` (with a `*`)
//!   and `SORT … GET` need access to every key, as in Redis, because they read keys the
//!   request does not name.
//! - **Scripts and key-enumerating commands are governed by command rules only**, as in Redis:
//!   a script may touch keys it does not declare, and the proxy cannot see them. A role with
//!   limited keys that may run scripts gets a compile warning.
//! - **PSUBSCRIBE patterns must equal a permitted pattern** character for character (Redis's
//!   rule: a pattern is not matched against patterns); `*` in `channels` permits everything.
//! - **AUTH, HELLO, QUIT and RESET are always permitted** (the table's `no_auth` flag), as in
//!   Redis: a client must always be able to log in as someone else.
//! - **Custom roles without `base` start from nothing**: no commands, no keys, no channels.
//!   `base` may only name a built-in role (no chains to resolve, no cycles).
//! - **One answer for every failed login** (`WRONGPASS …`), whether the user is unknown,
//!   disabled or the password wrong; unknown users are hashed and compared against a dummy
//!   digest so they take as long. Without users, `AUTH default <anything>` succeeds and `AUTH
//!   password` fails as in Redis with a `nopass` default user.
//! - **An empty users file is an error**, not "no users": reading it as no users would turn
//!   authentication off because a Secret was mounted empty.
//! - **Secrets never print**: `Debug` and `Serialize` of the configuration redact passwords and
//!   hashes; errors and warnings never quote them.
//!
//! [`Command::keys_with_flags`]: cinnabar_commands::Command::keys_with_flags

mod access;
mod config;
mod denied;
mod entries;
mod error;
mod glob;
mod password;
mod principal;
mod rules;

pub use access::{Access, DEFAULT_USER};
pub use cinnabar_commands::Server;
pub use config::{AccessConfig, RoleConfig, Transactions, UserConfig, UsersFile};
pub use denied::{AuthError, Denied, DeniedKind};
pub use error::{AccessError, Origin, Problem};
pub use glob::PatternError;
pub use principal::{AclRules, Principal};
pub use rules::RuleError;

use cinnabar_commands::Command;

/// Whether a client that has not logged in may run `command` when authentication is required:
/// `AUTH`, `HELLO` (to log in with `AUTH`), `PING` and `QUIT`. Anything else gets
/// `NOAUTH Authentication required.`.
pub fn runs_before_login(command: &Command) -> bool {
    matches!(command.command_name(), "auth" | "hello" | "ping" | "quit")
}
