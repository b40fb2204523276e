//! [`AuditRecord`]: one audited event as owned data, built by the proxy with a few builder
//! calls and handed to [`crate::Auditor::record`]. Building one only copies; everything costly
//! (time formatting, key hashing, JSON) happens later on the writer thread.
//!
//! A record must never hold a password. [`AuditRecord::auth_failure`] has no place for one, and
//! the writer never writes keys or a subcommand for `AUTH` and `HELLO` records, in case a
//! caller passes their arguments anyway.

use std::borrow::Cow;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How an audited command ended; written as the `outcome` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command ran and the client got a non-error reply (`"ok"`).
    Ok,
    /// The command was sent on but ended in an error reply, a timeout or a lost connection
    /// (`"error"`).
    Error,
    /// The proxy refused the command (permissions, key namespace, guard) (`"denied"`).
    Denied,
    /// Authentication failed (`"auth_failed"`).
    AuthFailed,
}

/// One audited event. Build it with [`AuditRecord::command`] or [`AuditRecord::auth_failure`]
/// and the `with_*` methods, then pass it to [`crate::Auditor::record`].
///
/// ```
/// use std::time::Duration;
/// use cinnabar_audit::{AuditRecord, Outcome};
///
/// let client = "10.1.2.3:50123".parse().unwrap();
/// let record = AuditRecord::command(client, "ops", "CONFIG")
///     .with_subcommand("SET")
///     .with_targets(["10.0.0.1:6379", "10.0.0.2:6379"])
///     .with_outcome(Outcome::Ok)
///     .with_latency(Duration::from_micros(850));
/// # drop(record);
/// ```
///
/// Never pass a password, AUTH/HELLO arguments or values: only command names, key names and
/// node addresses.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub(crate) time: SystemTime,
    pub(crate) client: SocketAddr,
    pub(crate) user: Arc<str>,
    pub(crate) command: Cow<'static, str>,
    pub(crate) subcommand: Option<Cow<'static, str>>,
    pub(crate) key_count: usize,
    pub(crate) keys: Vec<Box<[u8]>>,
    pub(crate) targets: Vec<String>,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) latency: Duration,
}

impl AuditRecord {
    /// A record of `command` (any case; written in upper case) run by `user` from `client`,
    /// timed now, with outcome [`Outcome::Ok`], no keys, no targets and zero latency until
    /// the `with_*` methods say otherwise.
    pub fn command(
        client: SocketAddr,
        user: impl Into<Arc<str>>,
        command: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            time: SystemTime::now(),
            client,
            user: user.into(),
            command: command.into(),
            subcommand: None,
            key_count: 0,
            keys: Vec::new(),
            targets: Vec::new(),
            outcome: Outcome::Ok,
            error: None,
            latency: Duration::ZERO,
        }
    }

    /// A failed authentication by `user` from `client`: command `AUTH`, outcome
    /// [`Outcome::AuthFailed`], timed now.
    ///
    /// `user` is the user name the client tried. For the one-argument form `AUTH password`
    /// (and `HELLO … AUTH` without a name), pass the name of the default user, never the
    /// argument: it is the password.
    pub fn auth_failure(client: SocketAddr, user: impl Into<Arc<str>>) -> Self {
        Self::command(client, user, "AUTH").with_outcome(Outcome::AuthFailed)
    }

    /// Sets the subcommand (`CONFIG SET` → `"SET"`); written in upper case.
    #[must_use]
    pub fn with_subcommand(mut self, subcommand: impl Into<Cow<'static, str>>) -> Self {
        self.subcommand = Some(subcommand.into());
        self
    }

    /// Counts every key of `keys` and copies the first `keep` of them; pass
    /// [`crate::Auditor::max_keys`] as `keep` so large commands copy no more than is written.
    /// Keys are bytes, as on the wire.
    #[must_use]
    pub fn with_keys<I, K>(mut self, keys: I, keep: usize) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.key_count = 0;
        self.keys.clear();
        for key in keys {
            if self.keys.len() < keep {
                self.keys.push(key.as_ref().into());
            }
            self.key_count += 1;
        }
        self
    }

    /// Sets the backend nodes the command went to (or would have), e.g. `"10.0.0.1:6379"`.
    #[must_use]
    pub fn with_targets<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Display,
    {
        self.targets = targets.into_iter().map(|t| t.to_string()).collect();
        self
    }

    /// Sets how the command ended.
    #[must_use]
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the `error` field: the error the client was sent (e.g. `NOPERM this user has no
    /// permissions to run the 'flushall' command`). It must not quote command arguments.
    #[must_use]
    pub fn with_error(mut self, message: impl Into<String>) -> Self {
        self.error = Some(message.into());
        self
    }

    /// Sets the time from the request's arrival to its reply (or refusal).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the `time` field, when the default (the moment the record was built) is not the
    /// moment to report, e.g. the request's arrival.
    #[must_use]
    pub fn with_time(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// Whether the writer must leave out keys and subcommand whatever the caller put there:
    /// the arguments of these commands are credentials.
    pub(crate) fn carries_credentials(&self) -> bool {
        ["AUTH", "HELLO"]
            .iter()
            .any(|c| self.command.eq_ignore_ascii_case(c))
    }
}
