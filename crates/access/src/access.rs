//! [`Access`]: a configuration compiled once into users and roles ready for the hot path, and
//! the login check ([`Access::authenticate`]).
//!
//! Must never be changed after it is built (a reload compiles a new one and swaps the whole
//! `Arc<Access>`), never keep a plain-text password, and never answer a failed login in a way
//! that tells an unknown user from a wrong password.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::config::{AccessConfig, RoleConfig, UserConfig, UsersFile};
use crate::denied::AuthError;
use crate::error::{AccessError, Origin, Problem};
use crate::glob::Pattern;
use crate::password::Digest;
use crate::principal::{Patterns, Principal, Role};
use crate::rules::{
    self, ADMIN, BUILTIN_ROLES, CommandSet, READWRITE, always_allowed, default_deny, parse_entry,
    parse_rule,
};

/// The user `AUTH password` (no user name) logs in as, and everyone's identity when no users
/// are configured.
pub const DEFAULT_USER: &str = "default";

/// Commands that run code able to touch keys the request does not name.
const SCRIPT_COMMANDS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// Users and roles compiled from an [`AccessConfig`]: immutable, `Send + Sync`, shared as
/// `Arc<Access>` by every worker and replaced whole on reload.
pub struct Access {
    auth_required: bool,
    /// Everyone's principal when authentication is off.
    default_principal: Option<Principal>,
    users: HashMap<String, User>,
}

/// One configured user.
struct User {
    principal: Principal,
    digest: Digest,
    enabled: bool,
}

impl Access {
    /// Compiles `config` (reading its `users_file`, the only I/O of this crate) into users and
    /// roles. Returns warnings for the caller to log: plain-text passwords, `commands` rules the
    /// default deny list overrides, namespace-limited roles that may run scripts.
    ///
    /// # Errors
    /// [`AccessError`] for the first problem found, naming the users file or section, the user
    /// or role, and the field: unknown role or base, bad hash, missing or doubled password,
    /// unreadable rule (`+nosuchcommand`, `+@nosuchcategory`, `-get|x`), empty or malformed
    /// pattern, duplicate or malformed name, unreadable or empty users file.
    pub fn compile(config: &AccessConfig) -> Result<(Access, Vec<String>), AccessError> {
        let mut warnings = Vec::new();
        let deny_list = default_deny(config.deny_keys_command);
        let roles = compile_roles(config, &deny_list, &mut warnings)?;

        let mut declared: Vec<(Origin, &UserConfig)> = config
            .users
            .iter()
            .map(|user| (Origin::Config, user))
            .collect();
        let file = match &config.users_file {
            Some(path) => {
                let file = UsersFile::read(path)?;
                if file.users.is_empty() {
                    return Err(AccessError::EmptyUsersFile { path: path.clone() });
                }
                Some((path.clone(), file))
            }
            None => None,
        };
        if let Some((path, file)) = &file {
            declared.extend(
                file.users
                    .iter()
                    .map(|user| (Origin::UsersFile(path.clone()), user)),
            );
        }

        if declared.is_empty() {
            let name = config.default_role.as_deref().unwrap_or(READWRITE);
            let Some(role) = roles.get(name) else {
                let mut known: Vec<&str> = roles.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(AccessError::DefaultRole(Box::new(Problem::UnknownRole {
                    role: name.to_owned(),
                    known: known.join(", "),
                })));
            };
            return Ok((
                Access {
                    auth_required: false,
                    default_principal: Some(Principal::new(DEFAULT_USER, Arc::clone(role))),
                    users: HashMap::new(),
                },
                warnings,
            ));
        }

        let mut users: HashMap<String, (Origin, User)> = HashMap::new();
        for (origin, user) in declared {
            let compiled = compile_user(&origin, user, &roles, &mut warnings)?;
            if let Some((first, _)) = users.get(&user.name) {
                return Err(AccessError::DuplicateUser {
                    name: user.name.clone(),
                    first: first.clone(),
                    second: origin,
                });
            }
            users.insert(user.name.clone(), (origin, compiled));
        }
        let users = users
            .into_iter()
            .map(|(name, (_, user))| (name, user))
            .collect();
        Ok((
            Access {
                auth_required: true,
                default_principal: None,
                users,
            },
            warnings,
        ))
    }

    /// Whether clients must log in: `true` as soon as one user is configured.
    pub fn auth_required(&self) -> bool {
        self.auth_required
    }

    /// The identity of a client that has not logged in: the built-in `default` user (role
    /// `readwrite`) when authentication is off, `None` when it is required.
    pub fn default_principal(&self) -> Option<Principal> {
        self.default_principal.clone()
    }

    /// Checks a login: `AUTH password` (`user` is `None`: the `default` user), `AUTH user
    /// password` or `HELLO … AUTH user password`. The password's SHA-256 is compared in
    /// constant time; an unknown user is compared against a dummy digest so it takes as long.
    ///
    /// When authentication is off, `AUTH default <anything>` succeeds (as with Redis's
    /// `nopass` default user) and `AUTH password` fails as Redis fails it.
    ///
    /// # Errors
    /// [`AuthError::WrongPass`] for an unknown user, a wrong password and a disabled user
    /// alike; [`AuthError::NoPasswordConfigured`] for `AUTH password` when authentication is
    /// off.
    pub fn authenticate(
        &self,
        user: Option<&[u8]>,
        password: &[u8],
    ) -> Result<Principal, AuthError> {
        if let Some(default) = &self.default_principal {
            return match user {
                None => Err(AuthError::NoPasswordConfigured),
                Some(name) if name == DEFAULT_USER.as_bytes() => Ok(default.clone()),
                Some(_) => Err(AuthError::WrongPass),
            };
        }
        let name = user.unwrap_or(DEFAULT_USER.as_bytes());
        let found = std::str::from_utf8(name)
            .ok()
            .and_then(|name| self.users.get(name));
        let given = Digest::of(password);
        // An unknown user costs the same hash and comparison as a known one.
        let dummy = Digest::of(b"");
        let expected = found.map_or(&dummy, |user| &user.digest);
        let password_ok = given.matches(expected);
        match found {
            Some(user) if password_ok && user.enabled => Ok(user.principal.clone()),
            _ => Err(AuthError::WrongPass),
        }
    }

    /// Every user a client may log in as, sorted by name, each with whether it is enabled and
    /// its principal (for `ACL USERS`, `ACL LIST`, `ACL GETUSER`); only `default` when
    /// authentication is off.
    pub fn users(&self) -> Vec<(Principal, bool)> {
        if let Some(default) = &self.default_principal {
            return vec![(default.clone(), true)];
        }
        let mut users: Vec<(Principal, bool)> = self
            .users
            .values()
            .map(|user| (user.principal.clone(), user.enabled))
            .collect();
        users.sort_by(|a, b| a.0.user().cmp(b.0.user()));
        users
    }

    /// The principal of the enabled user `user`, without a password: for sessions that logged
    /// in under a previous configuration and move to this one on reload. `None` when the user
    /// no longer exists or is disabled (the caller decides: refuse further commands, or
    /// disconnect). When authentication is off, only `default` exists.
    pub fn principal(&self, user: &str) -> Option<Principal> {
        if let Some(default) = &self.default_principal {
            return (user == DEFAULT_USER).then(|| default.clone());
        }
        self.users
            .get(user)
            .filter(|user| user.enabled)
            .map(|user| user.principal.clone())
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<_> = self
            .users
            .iter()
            .map(|(name, user)| (name.as_str(), user.principal.role(), user.enabled))
            .collect();
        users.sort_unstable();
        f.debug_struct("Access")
            .field("auth_required", &self.auth_required)
            .field("default_principal", &self.default_principal)
            .field("users (name, role, enabled)", &users)
            .finish()
    }
}

/// Every role by name: the built-in ones, then the configured ones.
fn compile_roles(
    config: &AccessConfig,
    deny_list: &CommandSet,
    warnings: &mut Vec<String>,
) -> Result<HashMap<String, Arc<Role>>, AccessError> {
    let mut roles = HashMap::new();
    for name in BUILTIN_ROLES {
        let mut commands = rules::builtin_commands(name).unwrap_or_else(CommandSet::empty);
        if name != ADMIN {
            commands.remove(deny_list);
        }
        commands.add(&always_allowed());
        let role = Role {
            name: name.into(),
            commands,
            keys: Patterns::everything(),
            channels: Patterns::everything(),
            transactions: None,
        };
        roles.insert(name.to_owned(), Arc::new(role));
    }
    for role in &config.roles {
        let compiled = compile_role(role, deny_list, warnings)?;
        if roles.contains_key(&role.name) {
            return Err(AccessError::DuplicateRole {
                name: role.name.clone(),
            });
        }
        roles.insert(role.name.clone(), Arc::new(compiled));
    }
    Ok(roles)
}

/// One configured role, in the documented order: base rules, `commands`, default deny list
/// (unless based on `admin`), `deny`, `allow`.
fn compile_role(
    role: &RoleConfig,
    deny_list: &CommandSet,
    warnings: &mut Vec<String>,
) -> Result<Role, AccessError> {
    let error = |field: &'static str, problem: Problem| AccessError::Role {
        role: role.name.clone(),
        field,
        problem: Box::new(problem),
    };
    if !valid_name(&role.name) {
        return Err(error("name", Problem::BadName));
    }
    if BUILTIN_ROLES.contains(&role.name.as_str()) {
        return Err(error("name", Problem::BuiltinName(role.name.clone())));
    }
    let base = match &role.base {
        None => None,
        Some(base) if BUILTIN_ROLES.contains(&base.as_str()) => Some(base.as_str()),
        Some(other) => return Err(error("base", Problem::UnknownBase(other.clone()))),
    };
    let mut commands = base
        .and_then(rules::builtin_commands)
        .unwrap_or_else(CommandSet::empty);
    let mut named_grants = Vec::new();
    for text in &role.commands {
        let rule = parse_rule(text).map_err(|reason| {
            error(
                "commands",
                Problem::Rule {
                    rule: text.clone(),
                    reason,
                },
            )
        })?;
        rules::apply(&mut commands, &rule);
        if rule.allow && rule.by_name {
            named_grants.push((text, rule.set));
        }
    }
    let guarded = base != Some(ADMIN);
    if guarded {
        commands.remove(deny_list);
    }
    let entries = |field: &'static str, list: &[String]| -> Result<CommandSet, AccessError> {
        let mut set = CommandSet::empty();
        for text in list {
            let selected = parse_entry(text).map_err(|reason| {
                error(
                    field,
                    Problem::Rule {
                        rule: text.clone(),
                        reason,
                    },
                )
            })?;
            set.add(&selected);
        }
        Ok(set)
    };
    commands.remove(&entries("deny", &role.deny)?);
    let allowed = entries("allow", &role.allow)?;
    commands.add(&allowed);
    commands.add(&always_allowed());

    if guarded {
        for (text, set) in named_grants {
            let overridden = set.intersection(deny_list);
            if !overridden.is_empty() && allowed.lacks_some_of(&overridden) {
                warnings.push(format!(
                    "[access.roles]: role {:?}: `commands` rule {text:?} is overridden by the \
                     default deny list; name it in `allow` to grant it",
                    role.name
                ));
            }
        }
    }

    let everything_unless_restricted =
        || base.map_or_else(|| Patterns::new(Vec::new()), |_| Patterns::everything());
    let keys = match &role.keys {
        Some(list) => patterns(list).map_err(|problem| error("keys", problem))?,
        None => everything_unless_restricted(),
    };
    let channels = match &role.channels {
        Some(list) => patterns(list).map_err(|problem| error("channels", problem))?,
        None => everything_unless_restricted(),
    };

    let compiled = Role {
        name: role.name.as_str().into(),
        commands,
        keys,
        channels,
        transactions: role.transactions,
    };
    if !compiled.keys.is_everything() {
        let scripts = CommandSet::matching(|c| SCRIPT_COMMANDS.contains(&c.name()));
        let runnable: Vec<_> = scripts.intersection(&compiled.commands).names().collect();
        if !runnable.is_empty() {
            warnings.push(format!(
                "[access.roles]: role {:?}: keys are limited but scripts may run ({}); a \
                 script can reach keys it does not declare; add `deny = [\"@scripting\"]` \
                 unless the scripts are trusted",
                role.name,
                runnable.join(", ")
            ));
        }
    }
    Ok(compiled)
}

/// Compiles key or channel patterns.
fn patterns(list: &[String]) -> Result<Patterns, Problem> {
    let compiled = list
        .iter()
        .map(|text| {
            Pattern::parse(text).map_err(|reason| Problem::Pattern {
                pattern: text.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Patterns::new(compiled))
}

/// One configured user with its role and password digest.
fn compile_user(
    origin: &Origin,
    user: &UserConfig,
    roles: &HashMap<String, Arc<Role>>,
    warnings: &mut Vec<String>,
) -> Result<User, AccessError> {
    let error = |field: &'static str, problem: Problem| AccessError::User {
        origin: origin.clone(),
        user: user.name.clone(),
        field,
        problem: Box::new(problem),
    };
    if !valid_name(&user.name) {
        return Err(error("name", Problem::BadName));
    }
    let digest = match (&user.password_sha256, &user.password) {
        (Some(hex), None) => Digest::from_hex(hex).ok_or_else(|| {
            let non_hex = if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                ""
            } else {
                " including non-hex ones"
            };
            error(
                "password_sha256",
                Problem::BadHash {
                    length: hex.chars().count(),
                    non_hex,
                },
            )
        })?,
        (None, Some(plain)) => {
            warnings.push(format!(
                "{origin}: user {:?}: `password` is plain text; store its SHA-256 in \
                 `password_sha256` instead (printf %s 'the password' | sha256sum)",
                user.name
            ));
            Digest::of(plain.as_bytes())
        }
        (None, None) => return Err(error("password_sha256", Problem::NoPassword)),
        (Some(_), Some(_)) => return Err(error("password", Problem::TwoPasswords)),
    };
    let Some(role) = roles.get(&user.role) else {
        let mut known: Vec<&str> = roles.keys().map(String::as_str).collect();
        // Built-in roles first, in their usual order, then the configured ones sorted.
        known.sort_by_key(|name| {
            (
                BUILTIN_ROLES.iter().position(|b| b == name).unwrap_or(3),
                *name,
            )
        });
        return Err(error(
            "role",
            Problem::UnknownRole {
                role: user.role.clone(),
                known: known.join(", "),
            },
        ));
    };
    Ok(User {
        principal: Principal::new(&user.name, Arc::clone(role)),
        digest,
        enabled: user.enabled,
    })
}

/// Whether `name` can be a user or role name: non-empty, no whitespace or control characters
/// (it travels in `AUTH`, error lines and log lines).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}
