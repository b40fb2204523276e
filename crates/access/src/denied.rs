//! Refusals: [`Denied`] (a command, key or channel the user may not use) and [`AuthError`] (a
//! failed login), worded exactly as the backend server words them so the proxy can send them
//! unchanged as `-<message>\r\n`.
//!
//! Must never say more than the server would: no hint whether a user exists, no pattern, no
//! configured name beyond the user's own.

use std::fmt;
use std::sync::Arc;

use cinnabar_commands::Server;

/// What kind of permission a request lacked (for audit records and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeniedKind {
    /// The command (or subcommand) itself.
    Command,
    /// One of the keys it names (also `SORT … BY pattern` / `GET pattern`, which reach keys
    /// the request does not name).
    Key,
    /// One of the Pub/Sub channels it names.
    Channel,
}

impl DeniedKind {
    /// `command`, `key` or `channel`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeniedKind::Command => "command",
            DeniedKind::Key => "key",
            DeniedKind::Channel => "channel",
        }
    }
}

/// The precise reason, which decides the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Command,
    Key,
    Channel,
    /// `SORT … BY pattern` without access to every key.
    SortBy,
    /// `SORT … GET pattern` without access to every key.
    SortGet,
}

/// A request the user's role does not permit. Built only on the deny path (it copies the
/// refused argument), so allowing stays allocation-free.
///
/// [`Display`](fmt::Display) gives the wording of Redis 7.2+ and Valkey 8;
/// [`message`](Self::message) the wording of a given backend (Redis 7.0 words these
/// differently).
#[derive(Clone, PartialEq, Eq)]
pub struct Denied {
    pub(crate) user: Arc<str>,
    pub(crate) command: &'static str,
    pub(crate) reason: Reason,
    /// The refused key, pattern or channel, and its argument index.
    pub(crate) refused: Option<(usize, Box<[u8]>)>,
}

impl Denied {
    /// What was missing: the command, a key or a channel permission.
    pub fn kind(&self) -> DeniedKind {
        match self.reason {
            Reason::Command => DeniedKind::Command,
            Reason::Key | Reason::SortBy | Reason::SortGet => DeniedKind::Key,
            Reason::Channel => DeniedKind::Channel,
        }
    }

    /// The user who was refused.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The full command name as the table has it (`get`, `config|set`).
    pub fn command(&self) -> &'static str {
        self.command
    }

    /// The refused key or channel (for `SORT`, the `BY`/`GET` pattern) exactly as the client
    /// sent it; `None` when the command itself was refused.
    pub fn refused(&self) -> Option<&[u8]> {
        self.refused.as_ref().map(|(_, bytes)| &bytes[..])
    }

    /// The argument index of [`refused`](Self::refused) in the request (0 is the command name).
    pub fn position(&self) -> Option<usize> {
        self.refused.as_ref().map(|(index, _)| *index)
    }

    /// The error line `server` sends for this refusal, without the leading `-` and the CRLF.
    pub fn message(&self, server: Server) -> String {
        match server {
            Server::Redis7 => Redis70(self).to_string(),
            Server::Valkey8 => self.to_string(),
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            Reason::Command => write!(
                f,
                "NOPERM User {} has no permissions to run the '{}' command",
                self.user, self.command
            ),
            Reason::Key => f.write_str("NOPERM No permissions to access a key"),
            Reason::Channel => f.write_str("NOPERM No permissions to access a channel"),
            Reason::SortBy | Reason::SortGet => sort_message(self.reason, f),
        }
    }
}

/// The Redis 7.0 wording of a refusal.
struct Redis70<'a>(&'a Denied);

impl fmt::Display for Redis70<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied = self.0;
        match denied.reason {
            Reason::Command => write!(
                f,
                "NOPERM this user has no permissions to run the '{}' command",
                denied.command
            ),
            Reason::Key => f.write_str(
                "NOPERM this user has no permissions to access one of the keys used as arguments",
            ),
            Reason::Channel => f.write_str(
                "NOPERM this user has no permissions to access one of the channels used as \
                 arguments",
            ),
            Reason::SortBy | Reason::SortGet => sort_message(denied.reason, f),
        }
    }
}

/// `SORT`'s own refusal, the same on every server.
fn sort_message(reason: Reason, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let option = if reason == Reason::SortBy {
        "BY"
    } else {
        "GET"
    };
    write!(
        f,
        "ERR {option} option of SORT denied due to insufficient ACL permissions."
    )
}

impl fmt::Debug for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Denied")
            .field("user", &self.user)
            .field("command", &self.command)
            .field("reason", &self.reason)
            .field("position", &self.position())
            .field("refused", &self.refused().map(String::from_utf8_lossy))
            .finish()
    }
}

impl std::error::Error for Denied {}

/// Why a login failed, worded as Redis words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled user: deliberately one answer, so a client
    /// cannot find out which names exist.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    /// `AUTH password` when no users are configured (authentication is off).
    #[error(
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    )]
    NoPasswordConfigured,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(reason: Reason, refused: Option<&[u8]>) -> Denied {
        Denied {
            user: "app".into(),
            command: "config|set",
            reason,
            refused: refused.map(|bytes| (2, bytes.into())),
        }
    }

    #[test]
    fn both_wordings_of_each_refusal() {
        let command = denied(Reason::Command, None);
        assert_eq!(
            command.to_string(),
            "NOPERM User app has no permissions to run the 'config|set' command"
        );
        assert_eq!(
            command.message(Server::Redis7),
            "NOPERM this user has no permissions to run the 'config|set' command"
        );
        assert_eq!(command.kind(), DeniedKind::Command);
        assert_eq!(command.refused(), None);
        let key = denied(Reason::Key, Some(b"users:1"));
        assert_eq!(
            key.message(Server::Valkey8),
            "NOPERM No permissions to access a key"
        );
        assert_eq!(key.refused(), Some(&b"users:1"[..]));
        assert_eq!(key.position(), Some(2));
        let channel = denied(Reason::Channel, Some(b"news"));
        assert_eq!(
            channel.message(Server::Redis7),
            "NOPERM this user has no permissions to access one of the channels used as arguments"
        );
        assert_eq!(channel.kind().as_str(), "channel");
        let by = denied(Reason::SortBy, Some(b"w_*"));
        assert_eq!(by.kind(), DeniedKind::Key);
        assert_eq!(
            by.message(Server::Redis7),
            "ERR BY option of SORT denied due to insufficient ACL permissions."
        );
        assert_eq!(
            denied(Reason::SortGet, Some(b"#")).to_string(),
            "ERR GET option of SORT denied due to insufficient ACL permissions."
        );
    }
}
