//! The `[access]` section of the proxy's TOML file and the users file it may point to, as
//! plain serde data: every unknown key is refused, and secrets are redacted whenever a
//! configuration is printed (`Debug`) or serialized (the proxy's `/config` endpoint).
//!
//! Must never validate beyond types: names, rules, patterns and hashes are checked by
//! [`Access::compile`](crate::Access::compile), whose errors name the user or role and field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::error::AccessError;

/// What a redacted secret serializes and prints as.
const REDACTED: &str = "<redacted>";

/// The `[access]` section: users, roles and guards.
///
/// ```toml
/// [access]
/// users_file = "/etc/cinnabar/users.toml"   # optional, merged with the users below
/// deny_keys_command = true                  # KEYS is on the default deny list
///
/// [[access.users]]
/// name = "orders-api"
/// password_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
/// role = "orders"
///
/// [[access.roles]]
/// name = "orders"
/// base = "readwrite"
/// commands = ["-@scripting"]
/// keys = ["orders:*"]
/// channels = ["orders.*"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// A TOML file of `[[users]]` (same fields as `[[access.users]]`), e.g. a mounted
    /// Kubernetes Secret; its users are added to [`users`](Self::users). A relative path is
    /// relative to the working directory unless [`relative_to`](Self::relative_to) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// Whether `KEYS` is on the default deny list (default `true`).
    #[serde(default = "yes")]
    pub deny_keys_command: bool,
    /// The role of every client while no user is configured (default `readwrite`, so the
    /// guards apply out of the box; `admin` suits a private development cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// `[[access.users]]`.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[[access.roles]]`: custom roles (the built-in `admin`, `readwrite` and `readonly`
    /// always exist).
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
}

impl Default for AccessConfig {
    /// No users, no custom roles, `KEYS` denied: everyone is the `default` user with the
    /// `readwrite` role.
    fn default() -> Self {
        AccessConfig {
            users_file: None,
            deny_keys_command: true,
            default_role: None,
            users: Vec::new(),
            roles: Vec::new(),
        }
    }
}

impl AccessConfig {
    /// The configuration with a relative [`users_file`](Self::users_file) taken as relative to
    /// `dir` (the directory of the file the section was read from).
    #[must_use]
    pub fn relative_to(mut self, dir: &Path) -> Self {
        if let Some(path) = &self.users_file
            && path.is_relative()
        {
            self.users_file = Some(dir.join(path));
        }
        self
    }
}

/// One user: `[[access.users]]`, or `[[users]]` in the users file.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name clients give to `AUTH name password`; `default` is the user `AUTH password`
    /// logs in as.
    pub name: String,
    /// The SHA-256 of the password, 64 hexadecimal digits (`printf %s 'pw' | sha256sum`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub password_sha256: Option<String>,
    /// The password in plain text: accepted, with a warning from the compile step.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub password: Option<String>,
    /// A disabled user cannot log in (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A built-in role (`admin`, `readwrite`, `readonly`) or one of `[[access.roles]]`.
    pub role: String,
}

// By hand: a derived `Debug` would print the password into logs.
impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| REDACTED);
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password_sha256", &redacted(&self.password_sha256))
            .field("password", &redacted(&self.password))
            .field("enabled", &self.enabled)
            .field("role", &self.role)
            .finish()
    }
}

/// One custom role: `[[access.roles]]`.
///
/// Its permissions are built in this order, later steps overriding earlier ones: the `base`
/// role's rules, then `commands`, then the default deny list (unless the base is `admin`),
/// then `deny`, then `allow`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The role's name (not one of the built-in names).
    pub name: String,
    /// A built-in role to start from: its command rules, keys and channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Ordered rules, as in a Redis ACL: `+@all`, `-@dangerous`, `+get`, `-config|set`,
    /// `+client|setname`; a later rule overrides an earlier one.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Key patterns (`orders:*`); a key must match one of them. Absent: the base role's
    /// (`*`), or none at all without a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Pub/Sub channel patterns, like `keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Commands taken away after the rules and the default deny list (`flushdb`,
    /// `config|set`, `@scripting`; no sign).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Commands granted last, even guarded ones (`keys`, `config|get`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// How this role's MULTI/EXEC over several slots is carried, overriding the proxy-wide
    /// setting: `strict` (refused with CROSSSLOT) or `relaxed` (each command on its own slot's
    /// master, in order; not atomic across slots). Absent: the proxy-wide setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<Transactions>,
}

/// How MULTI/EXEC with keys in several slots is carried through the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transactions {
    /// Every keyed command of a transaction must share one slot (else `CROSSSLOT`, and EXEC
    /// answers EXECABORT): the transaction runs atomically on that slot's master.
    #[default]
    Strict,
    /// A transaction over several slots is accepted: at EXEC each queued command runs on its
    /// slot's master, in order, and EXEC answers the array Redis would. NOT atomic across
    /// slots (another client may see some of its writes before others, and a failure on one
    /// master does not undo the others); for libraries whose default pipeline is a MULTI/EXEC
    /// used for batching. A transaction within one slot, or after WATCH, stays atomic.
    Relaxed,
}

/// The users file: a TOML document of `[[users]]` only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// `[[users]]`, each like `[[access.users]]`.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

impl UsersFile {
    /// Reads and parses the users file at `path`.
    ///
    /// # Errors
    /// [`AccessError::ReadUsersFile`] when it cannot be read, [`AccessError::ParseUsersFile`]
    /// when it is not TOML of the expected shape (the reason has line and column).
    pub fn read(path: &Path) -> Result<UsersFile, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::ReadUsersFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| AccessError::ParseUsersFile {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
    }
}

fn yes() -> bool {
    true
}

fn redact<S: Serializer>(_secret: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_section_parses_with_defaults() {
        let config: AccessConfig = toml::from_str(
            r#"
            users_file = "users.toml"

            [[users]]
            name = "app"
            password_sha256 = "ab"
            role = "orders"

            [[roles]]
            name = "orders"
            base = "readwrite"
            keys = ["orders:*"]
            "#,
        )
        .expect("parses");
        assert!(config.deny_keys_command);
        assert_eq!(config.users.len(), 1);
        assert!(config.users[0].enabled);
        assert_eq!(config.users[0].password, None);
        assert_eq!(config.roles[0].channels, None);
        assert_eq!(config.roles[0].keys, Some(vec!["orders:*".to_owned()]));
        let config = config.relative_to(Path::new("/etc/cinnabar"));
        assert_eq!(
            config.users_file.as_deref(),
            Some(Path::new("/etc/cinnabar/users.toml"))
        );
        assert_eq!(AccessConfig::default(), toml::from_str("").expect("empty"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<AccessConfig>(
            "[[users]]\nname = \"a\"\nrole = \"x\"\npasword = \"p\"\n",
        )
        .expect_err("typo");
        assert!(err.to_string().contains("pasword"), "{err}");
        let err = toml::from_str::<AccessConfig>("deny_key_command = false").expect_err("typo");
        assert!(err.to_string().contains("deny_key_command"), "{err}");
        let err = toml::from_str::<UsersFile>("[[roles]]\nname = \"x\"").expect_err("not here");
        assert!(err.to_string().contains("roles"), "{err}");
    }

    #[test]
    fn secrets_never_print_or_serialize() {
        let user = UserConfig {
            name: "app".into(),
            password_sha256: Some("secret-hash".into()),
            password: Some("secret-password".into()),
            enabled: true,
            role: "readwrite".into(),
        };
        let debug = format!("{user:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let config = AccessConfig {
            users: vec![user],
            ..AccessConfig::default()
        };
        let text = toml::to_string(&config).expect("serializes");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("password = \"<redacted>\""), "{text}");
        assert!(!format!("{config:?}").contains("secret"));
    }
}
