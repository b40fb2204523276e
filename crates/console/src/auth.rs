//! Who may use the console: logins checked against the proxy's users file format (through
//! `cinnabar-access`, so hashing and constant-time comparison are the proxy's own), the three
//! console roles, and server-side sessions with a CSRF token each.
//!
//! Must never keep or render a password, and never hand a session token to page scripts: the
//! token travels only in an HttpOnly cookie; scripts get the CSRF token, which is useless
//! without the cookie.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cinnabar_access::{Access, AccessConfig, RoleConfig};
use rand::Rng as _;
use serde::Serialize;

use crate::error::ConsoleError;
use crate::lock;

/// What a console user may do. Ordered: each role may do everything the one before may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page and API resource; changes nothing.
    Viewer,
    /// Also creates clusters and runs scale, failover, drill and backup.
    Operator,
    /// Also deletes clusters.
    Admin,
}

impl Role {
    /// The console role of a users-file role: `viewer`/`operator`/`admin`, or the proxy's
    /// built-in `readonly`/`readwrite` (so one users file serves both); other roles may not
    /// use the console.
    pub fn from_user_role(role: &str) -> Option<Role> {
        match role {
            "viewer" | "readonly" => Some(Role::Viewer),
            "operator" | "readwrite" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name, as shown and as in the users file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The users file, compiled by `cinnabar-access`.
pub struct Users {
    path: PathBuf,
    access: Mutex<Access>,
}

impl Users {
    /// Reads and checks `path` (a TOML file of `[[users]]`, as the proxy's `users_file`).
    /// Returns the warnings the access compiler gives (plain-text passwords, …).
    ///
    /// # Errors
    /// [`ConsoleError::Users`] when the file is unreadable, empty or invalid.
    pub fn load(path: &Path) -> Result<(Users, Vec<String>), ConsoleError> {
        let (access, warnings) = compile(path)?;
        Ok((
            Users {
                path: path.to_owned(),
                access: Mutex::new(access),
            },
            warnings,
        ))
    }

    /// The user's name and console role when `password` is right, the user enabled and its
    /// role one the console knows. The file is read again first, so an edited file takes
    /// effect at the next login (a broken edit keeps the previous users and is logged).
    pub fn login(&self, user: &str, password: &str) -> Option<(String, Role)> {
        match compile(&self.path) {
            Ok((fresh, _)) => *lock(&self.access) = fresh,
            Err(e) => tracing::warn!("keeping the previous users: {e}"),
        }
        let principal = lock(&self.access)
            .authenticate(Some(user.as_bytes()), password.as_bytes())
            .ok()?;
        let role = Role::from_user_role(principal.role())?;
        Some((principal.user().to_owned(), role))
    }
}

/// Writes a users file with one `admin` user and a random password, for a first start with no
/// users file: returns the password, to be shown once to the person who started the console.
/// Only its SHA-256 is stored, and the file is readable by its owner only.
///
/// # Errors
/// [`ConsoleError::Users`] when the file cannot be written (or already exists).
pub fn create_first_users_file(path: &Path) -> Result<String, ConsoleError> {
    use sha2::Digest as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // 18 random bytes, hex: 144 bits, typeable.
    let password: String = rand::rng()
        .random::<[u8; 18]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest: String = sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "# Console users, in the proxy's users-file format. Roles: viewer, operator, admin.\n\
         # A password's SHA-256: printf %s 'password' | sha256sum\n\
         [[users]]\nname = \"admin\"\nrole = \"admin\"\npassword_sha256 = \"{digest}\"\n"
    );
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())
    };
    write().map_err(|e| ConsoleError::Users(format!("cannot create {}: {e}", path.display())))?;
    Ok(password)
}

/// The console roles exist as custom roles so `Access::compile` accepts them; their Redis
/// permissions are never used (the console speaks no Redis for a user).
fn compile(path: &Path) -> Result<(Access, Vec<String>), ConsoleError> {
    let role = |name: &str, base: &str| RoleConfig {
        name: name.to_owned(),
        base: Some(base.to_owned()),
        ..RoleConfig::default()
    };
    let config = AccessConfig {
        users_file: Some(path.to_owned()),
        roles: vec![role("viewer", "readonly"), role("operator", "readwrite")],
        ..AccessConfig::default()
    };
    Access::compile(&config).map_err(|e| ConsoleError::Users(e.to_string()))
}

/// One logged-in browser or script.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The user's name.
    pub user: String,
    /// The user's console role.
    pub role: Role,
    /// Must come back with every POST/DELETE (header `X-CSRF-Token` or form field `csrf`).
    pub csrf: String,
    #[serde(skip)]
    expires: Instant,
}

/// How long a session lives without being renewed by a login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Every live session, by token.
#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`; returns its token (for the cookie) and the session.
    pub fn open(&self, user: String, role: Role) -> (String, Session) {
        let token = random_token();
        let session = Session {
            user,
            role,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = lock(&self.by_token);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(token.clone(), session.clone());
        (token, session)
    }

    /// The live session of `token`.
    pub fn get(&self, token: &str) -> Option<Session> {
        let sessions = lock(&self.by_token);
        sessions
            .get(token)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the session of `token`.
    pub fn close(&self, token: &str) {
        lock(&self.by_token).remove(token);
    }
}

/// 32 random bytes in hex, from the thread's cryptographically secure generator.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a CSRF token without an early exit, so timing tells nothing of how much matched.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_proxy_roles_map_onto_them() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::from_user_role("readonly"), Some(Role::Viewer));
        assert_eq!(Role::from_user_role("readwrite"), Some(Role::Operator));
        assert_eq!(Role::from_user_role("orders"), None);
    }

    #[test]
    fn a_users_file_logs_in_with_the_right_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        // printf %s password | sha256sum
        std::fs::write(
            &path,
            "[[users]]\nname = \"ann\"\nrole = \"operator\"\npassword_sha256 = \
             \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"\n",
        )
        .unwrap();
        let (users, _) = Users::load(&path).unwrap();
        assert_eq!(
            users.login("ann", "password"),
            Some(("ann".to_owned(), Role::Operator))
        );
        assert_eq!(users.login("ann", "passwore"), None);
        assert_eq!(users.login("bob", "password"), None);
    }

    #[test]
    fn a_first_users_file_lets_admin_in_with_the_password_shown_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let password = create_first_users_file(&path).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&password));
        let (users, _) = Users::load(&path).unwrap();
        assert_eq!(
            users.login("admin", &password),
            Some(("admin".to_owned(), Role::Admin))
        );
        assert!(create_first_users_file(&path).is_err(), "never overwritten");
    }

    #[test]
    fn sessions_carry_their_own_csrf_token_and_end_on_close() {
        let sessions = Sessions::default();
        let (token, session) = sessions.open("ann".into(), Role::Viewer);
        assert_ne!(token, session.csrf);
        assert_eq!(sessions.get(&token).unwrap().user, "ann");
        assert!(csrf_matches(&session.csrf, &session.csrf));
        assert!(!csrf_matches(&session.csrf, "x"));
        sessions.close(&token);
        assert!(sessions.get(&token).is_none());
    }
}
