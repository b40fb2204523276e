//! Why a configuration cannot be compiled: each error names where the problem is (the users
//! file, or `[access.users]` / `[access.roles]`), the user or role, and the field, so a
//! reload can be refused with a message an operator acts on without reading code.
//!
//! Must never include a password or password hash in a message.

use std::fmt;
use std::path::PathBuf;

use crate::glob::PatternError;
use crate::rules::RuleError;

/// Where a user was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `[[access.users]]` in the proxy's configuration.
    Config,
    /// `[[users]]` in the users file.
    UsersFile(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => f.write_str("[access.users]"),
            Origin::UsersFile(path) => write!(f, "users file {}", path.display()),
        }
    }
}

/// Why an [`AccessConfig`](crate::AccessConfig) could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The users file could not be read.
    #[error("cannot read users file {}: {source}", path.display())]
    ReadUsersFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The users file is not TOML holding `[[users]]`.
    #[error("users file {} is not valid: {reason}", path.display())]
    ParseUsersFile {
        /// The file.
        path: PathBuf,
        /// The parser's report, with line and column.
        reason: String,
    },
    /// The users file defines nobody. Refused rather than read as "no users", which would
    /// switch authentication off (an empty or half-mounted Secret must not open the proxy).
    #[error(
        "users file {} defines no users; remove `users_file` to run without authentication",
        path.display()
    )]
    EmptyUsersFile {
        /// The file.
        path: PathBuf,
    },
    /// A user's field is wrong.
    #[error("{origin}: user {user:?}: `{field}`: {problem}")]
    User {
        /// Where the user is defined.
        origin: Origin,
        /// The user's name as written.
        user: String,
        /// The field at fault (`name`, `password_sha256`, `role` …).
        field: &'static str,
        /// What is wrong (boxed: it keeps `Result<_, AccessError>` small).
        problem: Box<Problem>,
    },
    /// Two users have the same name.
    #[error("{second}: user {name:?} is already defined in {first}")]
    DuplicateUser {
        /// The name.
        name: String,
        /// Where it was defined first.
        first: Origin,
        /// Where it was defined again.
        second: Origin,
    },
    /// A role's field is wrong.
    #[error("[access.roles]: role {role:?}: `{field}`: {problem}")]
    Role {
        /// The role's name as written.
        role: String,
        /// The field at fault (`name`, `base`, `commands`, `keys` …).
        field: &'static str,
        /// What is wrong (boxed: it keeps `Result<_, AccessError>` small).
        problem: Box<Problem>,
    },
    /// `default_role` names no role.
    #[error("[access]: `default_role`: {0}")]
    DefaultRole(Box<Problem>),
    /// Two roles have the same name.
    #[error("[access.roles]: role {name:?} is defined twice")]
    DuplicateRole {
        /// The name.
        name: String,
    },
}

/// What is wrong with one field of a user or role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A name that is empty or holds spaces or control characters (it would not survive
    /// `AUTH`, an error line or a log line intact).
    #[error("names must be non-empty, without spaces or control characters")]
    BadName,
    /// A custom role with a built-in role's name.
    #[error("{0:?} is a built-in role; choose another name")]
    BuiltinName(String),
    /// A user's role that is neither built in nor configured.
    #[error("unknown role {role:?} (roles: {known})")]
    UnknownRole {
        /// The role as written.
        role: String,
        /// Every role that exists, comma-separated.
        known: String,
    },
    /// A `base` that is not a built-in role.
    #[error("{0:?} is not a built-in role (admin, readwrite, readonly)")]
    UnknownBase(String),
    /// `password_sha256` is not 64 hexadecimal digits.
    #[error("expected 64 hexadecimal digits (a SHA-256), found {length} characters{non_hex}")]
    BadHash {
        /// How many characters were given.
        length: usize,
        /// `" including non-hex ones"` when some are not hex digits.
        non_hex: &'static str,
    },
    /// Neither `password_sha256` nor `password`.
    #[error("missing: give `password_sha256` (or `password`)")]
    NoPassword,
    /// Both `password_sha256` and `password`.
    #[error("give only one of `password_sha256` and `password`")]
    TwoPasswords,
    /// A command rule that cannot be read.
    #[error("rule {rule:?}: {reason}")]
    Rule {
        /// The rule as written.
        rule: String,
        /// Why it was refused.
        reason: RuleError,
    },
    /// A key or channel pattern that cannot be read.
    #[error("pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: PatternError,
    },
}
