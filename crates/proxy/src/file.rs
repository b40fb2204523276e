//! `cinnabar.toml`: the proxy's settings as a file, mapped onto [`ProxyConfig`] in one table.
//! Parsing only: it never opens a socket or starts anything, and every error names the file
//! and the key.
//!
//! Keys are the [`ProxyConfig`] field names. Durations are whole milliseconds with the unit in
//! the key's name (`retry_window_ms = 10000`), so a value never needs a unit parser and a key
//! never hides its unit. Every key is optional: a file sets what it names, and the caller's
//! [`ProxyConfig`] keeps the rest (its defaults, or flags applied afterwards). Unknown keys are
//! refused, so a typo is an error and not a silently ignored setting. `examples/cinnabar.toml`
//! at the repository root shows every key.
//!
//! Adding a key: one line in the `proxy_keys!` table below, and a test.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cinnabar_cluster::{Credentials, NodeAddr};
use serde::{Deserialize, Deserializer};

use crate::cidr::Cidr;
use crate::config::{ProxyConfig, ReadFrom};

/// Why a proxy file could not be used. Every variant names the file; the last two the key.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or not a table of settings.
    #[error("{path} is not a valid proxy configuration: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's report, with line and column.
        reason: String,
    },
    /// A key the proxy does not know (often a typo).
    #[error("{path}, line {line}: unknown key `{key}`; the keys are {}", ProxyFile::KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Where the key is, counted from 1.
        line: usize,
        /// The key as written.
        key: String,
    },
    /// A known key with a value of the wrong type or out of range.
    #[error("{path}, line {line}: bad value for `{key}`: {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Where the value is, counted from 1.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
}

/// Declares [`ProxyFile`] from one table: each line is a key, the type its value must have, and
/// how it is written into [`ProxyConfig`].
macro_rules! proxy_keys {
    ($( $(#[doc = $doc:literal])+ $key:ident: $ty:ty => |$config:ident, $value:ident| $apply:expr, )+) => {
        /// The settings a proxy file may hold, each optional (see the module docs for the format).
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ProxyFile {
            $( $(#[doc = $doc])+ $key: Option<$ty>, )+
        }

        impl ProxyFile {
            /// Every key a file may hold.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),+];

            /// Writes every setting the file holds into `config`; the others keep their values.
            pub fn apply_to(self, config: &mut ProxyConfig) {
                $( if let Some($value) = self.$key {
                    let $config = &mut *config;
                    $apply;
                } )+
            }
        }
    };
}

proxy_keys! {
    /// Address clients connect to, `"ip:port"`.
    listen: SocketAddr => |c, v| c.listen = v,
    /// Nodes of the backend cluster, `["host:port", …]`; one reachable seed is enough.
    seeds: Seeds => |c, v| c.seeds = v.0,
    /// Worker threads, each with its own listener and backend connections (1 or more).
    workers: NonZeroUsize => |c, v| c.workers = v.get(),
    /// Connect timeout for backend connections, in milliseconds (1 or more).
    connect_timeout_ms: NonZeroU64 => |c, v| c.connect_timeout = Duration::from_millis(v.get()),
    /// MOVED/ASK redirects one request follows in a row before it starts over from a fresh
    /// routing table (within the retry window, then `-TRYAGAIN`).
    max_redirects: u8 => |c, v| c.max_redirects = v,
    /// How long transient cluster errors are retried before a client sees them, in milliseconds
    /// (0 passes them on at once).
    retry_window_ms: u64 => |c, v| c.retry_window = Duration::from_millis(v),
    /// Periodic topology refresh, in milliseconds (1 or more).
    refresh_interval_ms: NonZeroU64 => |c, v| c.refresh_interval = Duration::from_millis(v.get()),
    /// The oldest routing table a fan-out (DBSIZE, KEYS, SCAN, FLUSHALL, INFO …) may use before
    /// it waits for a refresh, in milliseconds.
    fan_out_max_staleness_ms: u64 => |c, v| c.fan_out_max_staleness = Duration::from_millis(v),
    /// Requests one client may have in flight before the proxy stops reading from it (1 or more).
    max_pending_per_client: NonZeroUsize => |c, v| c.max_pending_per_client = v.get(),
    /// Reply bytes held for one client before the proxy stops reading its requests (1 or more).
    max_reply_bytes_per_client: NonZeroUsize => |c, v| c.max_reply_bytes_per_client = v.get(),
    /// How long a backend may leave a request unanswered before its connection is given up,
    /// in milliseconds (1 or more).
    backend_read_timeout_ms: NonZeroU64 => |c, v| c.backend_read_timeout = Duration::from_millis(v.get()),
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`, …), `"ip:port"`; unauthenticated.
    admin_listen: SocketAddr => |c, v| c.admin_listen = Some(v),
    /// File holding the token (its first line) that `POST /backend/switch` on the admin
    /// listener requires as `Authorization: Bearer <token>`; without it, no switch over HTTP.
    admin_token_file: SecretFile => |c, v| c.admin_token = Some(v.0),
    /// Start even when no seed answers yet (a cluster still forming): not ready and
    /// `CLUSTERDOWN` until the topology is learned, instead of exiting.
    wait_for_cluster: bool => |c, v| c.wait_for_cluster = v,
    /// How long a drain (SIGTERM) waits for clients before cutting them off, in milliseconds.
    drain_timeout_ms: u64 => |c, v| c.drain_timeout = Duration::from_millis(v),
    /// Client connections served at once; more are refused as Redis refuses them (1 or more).
    max_clients: NonZeroUsize => |c, v| c.max_clients = v.get(),
    /// Close a client idle this long, in milliseconds (0: never).
    idle_timeout_ms: u64 => |c, v| c.idle_timeout = (v > 0).then(|| Duration::from_millis(v)),
    /// Connections one user may have logged in at once (0: no limit).
    max_connections_per_user: usize => |c, v| c.max_connections_per_user = (v > 0).then_some(v),
    /// `[tls]`: `cert_file` and `key_file` (PEM) turn on TLS for clients; relative to the
    /// working directory.
    tls: TlsSection => |c, v| c.tls = Some(crate::tls::TlsFiles { cert_file: v.cert_file, key_file: v.key_file }),
    /// Client address ranges allowed to connect (`["10.0.0.0/8", "::1"]`); empty: everyone.
    allow_from: AddressRanges => |c, v| c.allow_from = v.0,
    /// Requests at least this slow (arrival to reply) enter the proxy's SLOWLOG, in microseconds.
    slowlog_slower_than_us: u64 => |c, v| c.slowlog_slower_than = Duration::from_micros(v),
    /// Entries the proxy's SLOWLOG keeps.
    slowlog_max_len: usize => |c, v| c.slowlog_max_len = v,
    /// `[access]`: users, roles and guards (see `cinnabar_access`); `users_file` is relative to
    /// this file.
    access: cinnabar_access::AccessConfig => |c, v| c.access = v,
    /// `[audit]`: the audit trail (see `cinnabar_audit`).
    audit: cinnabar_audit::AuditConfig => |c, v| c.audit = v,
    /// Pipelined connections from each worker to each backend node (1 or more).
    backend_connections: NonZeroUsize => |c, v| c.backend_connections = v.get(),
    /// Where read-only commands go: `"master"`, `"prefer-replica"` or `"replica-only"`.
    read_from: ReadPolicy => |c, v| c.read_from = v.0,
    /// MULTI/EXEC across slots: `"strict"` (refused with CROSSSLOT, the default) or `"relaxed"`
    /// (each command on its own master, in order; not atomic across slots).
    transactions: cinnabar_access::Transactions => |c, v| c.transactions = v,
    /// ACL user of the backend connections (needs a password).
    backend_user: String => |c, v| credentials(c).user = Some(v),
    /// File holding the backend password (its first line), e.g. a mounted Kubernetes Secret.
    backend_password_file: SecretFile => |c, v| credentials(c).password = v.0,
    /// `[[clusters]]`: several clusters behind this endpoint, each with `name`, `seeds`,
    /// `prefixes` (the keys it owns; none for the one default cluster) and optionally
    /// `backend_user` and `backend_password_file`; replaces `seeds` (see `ClusterConfig`).
    clusters: Vec<ClusterSection> => |c, v| c.clusters = v.into_iter().map(ClusterSection::into_config).collect(),
    /// `[group]`: a Sentinel-managed master/replicas group instead of a cluster, with `name`
    /// (as the Sentinels monitor it), `sentinels` and optionally `sentinel_user` and
    /// `sentinel_password_file`; the nodes' login is `backend_user`/`backend_password_file`
    /// (see `GroupConfig`).
    group: GroupSection => |c, v| c.group = Some(v.into_config()),
}

/// `[group]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSection {
    name: String,
    sentinels: Seeds,
    sentinel_user: Option<String>,
    sentinel_password_file: Option<SecretFile>,
}

impl GroupSection {
    fn into_config(self) -> crate::config::GroupConfig {
        let sentinel_credentials = match (self.sentinel_user, self.sentinel_password_file) {
            (None, None) => None,
            (user, password) => Some(Credentials {
                user,
                password: password.map(|p| p.0).unwrap_or_default(),
            }),
        };
        crate::config::GroupConfig {
            name: self.name,
            sentinels: self.sentinels.0,
            sentinel_credentials,
        }
    }
}

/// One `[[clusters]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    name: String,
    seeds: Seeds,
    #[serde(default)]
    prefixes: Vec<String>,
    backend_user: Option<String>,
    backend_password_file: Option<SecretFile>,
}

impl ClusterSection {
    fn into_config(self) -> crate::config::ClusterConfig {
        let credentials = match (self.backend_user, self.backend_password_file) {
            (None, None) => None,
            (user, password) => Some(Credentials {
                user,
                password: password.map(|p| p.0).unwrap_or_default(),
            }),
        };
        crate::config::ClusterConfig {
            name: self.name,
            seeds: self.seeds.0,
            credentials,
            prefixes: self.prefixes,
        }
    }
}

/// The credentials being filled in (a user and a password file are separate keys).
fn credentials(config: &mut ProxyConfig) -> &mut Credentials {
    config
        .backend_credentials
        .get_or_insert_with(|| Credentials {
            user: None,
            password: String::new(),
        })
}

/// `[tls]`: the certificate chain and key of the client listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// Client address ranges, each parsed as a [`Cidr`].
#[derive(Debug)]
struct AddressRanges(Vec<Cidr>);

impl<'de> Deserialize<'de> for AddressRanges {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A read policy, written as `ReadFrom` prints it.
#[derive(Debug)]
struct ReadPolicy(ReadFrom);

impl<'de> Deserialize<'de> for ReadPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

/// A secret read from the file a path names, so the secret itself never sits in the config
/// file. Only the first line counts (a trailing newline is not part of a password).
struct SecretFile(String);

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretFile(***)")
    }
}

impl<'de> Deserialize<'de> for SecretFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(deserializer)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            serde::de::Error::custom(format!("cannot read {}: {e}", path.display()))
        })?;
        let secret = text.lines().next().unwrap_or_default().to_owned();
        if secret.is_empty() {
            return Err(serde::de::Error::custom(format!(
                "{} is empty",
                path.display()
            )));
        }
        Ok(Self(secret))
    }
}

impl ProxyFile {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`FileError`] naming the file, and the key when one is at fault.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file = Self::parse(&text, path)?;
        if let Some(dir) = path.parent() {
            file.access = file.access.map(|access| access.relative_to(dir));
        }
        Ok(file)
    }

    /// Checks `text`, the contents of the file at `path` (only used in messages).
    ///
    /// # Errors
    /// As [`read`](Self::read), less the I/O.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        toml::from_str(text).map_err(|e| locate(text, path, &e))
    }
}

/// Seed addresses: a list of `host:port` strings, never empty (a proxy with no seed cannot
/// learn the cluster).
#[derive(Debug)]
struct Seeds(Vec<NodeAddr>);

impl<'de> Deserialize<'de> for Seeds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seeds = Vec::<NodeAddr>::deserialize(deserializer)?;
        if seeds.is_empty() {
            return Err(serde::de::Error::invalid_length(0, &"at least one seed"));
        }
        Ok(Self(seeds))
    }
}

/// Turns the TOML library's error into one naming the key: the top-level entry whose key or
/// value holds the error's position. Serde reports positions, not key names, and a value inside
/// a multi-line array sits on a line of its own, so the line alone would not say which key.
fn locate(text: &str, path: &Path, error: &toml::de::Error) -> FileError {
    let syntax = || FileError::Syntax {
        path: path.to_path_buf(),
        reason: error.to_string().trim_end().to_owned(),
    };
    let (Some(span), Ok(table)) = (error.span(), toml::de::DeTable::parse(text)) else {
        return syntax();
    };
    let within = |range: Range<usize>| {
        range.start <= span.start && span.start < range.end.max(range.start + 1)
    };
    let Some(key) = table
        .get_ref()
        .iter()
        .find(|(key, value)| within(key.span()) || within(value.span()))
        .map(|(key, _)| key.get_ref().to_string())
    else {
        return syntax();
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    if ProxyFile::KEYS.contains(&key.as_str()) {
        FileError::BadValue {
            path: path.to_path_buf(),
            line,
            key,
            reason: error.message().to_owned(),
        }
    } else {
        FileError::UnknownKey {
            path: path.to_path_buf(),
            line,
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_from(text: &str) -> Result<ProxyConfig, FileError> {
        let mut config = ProxyConfig::new(([127, 0, 0, 1], 7000).into(), Vec::new());
        ProxyFile::parse(text, Path::new("cinnabar.toml"))?.apply_to(&mut config);
        Ok(config)
    }

    fn error_from(text: &str) -> String {
        config_from(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_file_parses_and_sets_every_key() {
        let text = include_str!("../../../examples/cinnabar.toml");
        let config = config_from(text).unwrap();
        assert_eq!(config.listen, ([127, 0, 0, 1], 7000).into());
        assert_eq!(
            config.seeds,
            vec![
                NodeAddr::new("127.0.0.1", 6381),
                NodeAddr::new("127.0.0.1", 6382)
            ]
        );
        assert_eq!(config.workers, 1);
        assert_eq!(config.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.max_redirects, 5);
        assert_eq!(config.retry_window, Duration::from_secs(10));
        assert_eq!(config.refresh_interval, Duration::from_secs(5));
        assert_eq!(config.max_pending_per_client, 1024);
        assert_eq!(config.max_reply_bytes_per_client, 64 * 1024 * 1024);
        assert_eq!(config.backend_read_timeout, Duration::from_secs(5));
        assert_eq!(config.read_from, ReadFrom::Master);
        assert_eq!(config.backend_connections, 1);
        assert_eq!(config.slowlog_slower_than, Duration::from_millis(10));
        assert_eq!(config.slowlog_max_len, 128);
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.max_clients, 10_000);
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.allow_from, Vec::new());
        assert_eq!(config.max_connections_per_user, None);
        assert_eq!(config.tls, None);
        assert_eq!(config.admin_listen, Some(([127, 0, 0, 1], 17000).into()));
        for key in ProxyFile::KEYS {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches("# ");
                    l.starts_with(&format!("{key} ="))
                        || l == format!("[{key}]")
                        || l == format!("[[{key}]]")
                }),
                "the example does not show `{key}`"
            );
        }
    }

    #[test]
    fn a_group_is_read_with_its_sentinels() {
        let dir = std::env::temp_dir().join(format!("cinnabar-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(
            &path,
            "[group]\nname = \"orders\"\nsentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\n",
        )
        .unwrap();
        let mut config = ProxyConfig::new(([127, 0, 0, 1], 0).into(), Vec::new());
        ProxyFile::read(&path).unwrap().apply_to(&mut config);
        let group = config.group.unwrap();
        assert_eq!(group.name, "orders");
        assert_eq!(group.sentinels[1], NodeAddr::new("127.0.0.1", 26380));
        assert!(group.sentinel_credentials.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn clusters_are_read_with_their_prefixes_and_logins() {
        let dir = std::env::temp_dir().join(format!("cinnabar-clusters-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("password");
        std::fs::write(&secret, "pw\n").unwrap();
        let text = format!(
            "[[clusters]]\nname = \"main\"\nseeds = [\"127.0.0.1:7001\"]\n\n\
             [[clusters]]\nname = \"orders\"\nseeds = [\"127.0.0.1:8001\"]\n\
             prefixes = [\"orders:\", \"carts:\"]\nbackend_password_file = \"{}\"\n",
            secret.display()
        );
        let config = config_from(&text).unwrap();
        assert_eq!(config.clusters.len(), 2);
        assert_eq!(config.clusters[0].name, "main");
        assert!(config.clusters[0].prefixes.is_empty());
        assert_eq!(config.clusters[1].prefixes, ["orders:", "carts:"]);
        assert_eq!(
            config.clusters[1].credentials.as_ref().unwrap().password,
            "pw"
        );
        let err = error_from("[[clusters]]\nname = \"x\"\nseeds = []\n");
        assert!(err.contains("at least one seed"), "{err}");
    }

    #[test]
    fn backend_login_comes_from_a_user_and_a_password_file() {
        let dir = std::env::temp_dir().join(format!("cinnabar-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("password");
        std::fs::write(&secret, "p4ss\n").unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let text = format!(
            "backend_user = \"svc\"\nbackend_password_file = \"{}\"\nadmin_token_file = \"{}\"\nread_from = \"prefer-replica\"\n",
            secret.display(),
            token.display()
        );
        let config = config_from(&text).unwrap();
        let credentials = config.backend_credentials.unwrap();
        assert_eq!(credentials.user.as_deref(), Some("svc"));
        assert_eq!(credentials.password, "p4ss");
        assert_eq!(config.admin_token.as_deref(), Some("t0ken"));
        assert_eq!(config.read_from, ReadFrom::PreferReplica);

        std::fs::write(&secret, "").unwrap();
        let err = error_from(&text);
        assert!(
            err.contains("bad value for `backend_password_file`"),
            "{err}"
        );
        assert!(err.contains("is empty"), "{err}");
        let err = error_from("allow_from = [\"10.0.0.0/40\"]\n");
        assert!(err.contains("bad value for `allow_from`"), "{err}");
        assert!(err.contains("0 to 32"), "{err}");
        let err = error_from("read_from = \"nearest\"\n");
        assert!(err.contains("unknown read policy 'nearest'"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        let config = config_from("# nothing set\n").unwrap();
        let defaults = ProxyConfig::new(([127, 0, 0, 1], 7000).into(), Vec::new());
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn each_key_lands_in_its_field() {
        let config = config_from(
            "listen = \"127.0.0.1:7100\"\nseeds = [\"[::1]:7001\"]\nworkers = 3\n\
             connect_timeout_ms = 250\nmax_redirects = 2\nretry_window_ms = 0\n\
             refresh_interval_ms = 1500\nmax_pending_per_client = 64\n",
        )
        .unwrap();
        assert_eq!(config.listen, ([127, 0, 0, 1], 7100).into());
        assert_eq!(config.seeds, vec![NodeAddr::new("::1", 7001)]);
        assert_eq!(config.workers, 3);
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.max_redirects, 2);
        assert_eq!(config.retry_window, Duration::ZERO);
        assert_eq!(config.refresh_interval, Duration::from_millis(1500));
        assert_eq!(config.max_pending_per_client, 64);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_the_known_keys() {
        let err = error_from("listen = \"127.0.0.1:7000\"\nretry_window = 10\n");
        assert!(
            err.starts_with("cinnabar.toml, line 2: unknown key `retry_window`"),
            "{err}"
        );
        assert!(err.contains("retry_window_ms"), "lists the keys: {err}");
    }

    #[test]
    fn a_bad_value_names_its_key_and_line() {
        for (text, key, line, says) in [
            ("workers = 0\n", "workers", 1, "nonzero"),
            ("workers = \"two\"\n", "workers", 1, "invalid type"),
            ("\nmax_redirects = 300\n", "max_redirects", 2, "300"),
            ("retry_window_ms = -1\n", "retry_window_ms", 1, "-1"),
            (
                "refresh_interval_ms = 0\n",
                "refresh_interval_ms",
                1,
                "nonzero",
            ),
            ("listen = \"localhost\"\n", "listen", 1, "address"),
            ("seeds = []\n", "seeds", 1, "at least one seed"),
            // A value the parser cannot place more precisely is reported at its key's line.
            (
                "seeds = [\n  \"127.0.0.1:1\",\n  \"nowhere\",\n]\n",
                "seeds",
                1,
                "nowhere",
            ),
        ] {
            let err = error_from(text);
            let head = format!("cinnabar.toml, line {line}: bad value for `{key}`: ");
            assert!(err.starts_with(&head), "{text:?}: {err}");
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn text_that_is_not_toml_is_a_syntax_error_with_its_position() {
        let err = error_from("workers = \n");
        assert!(
            err.starts_with("cinnabar.toml is not a valid proxy configuration"),
            "{err}"
        );
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = ProxyFile::read(Path::new("/nonexistent/cinnabar.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/cinnabar.toml"),
            "{err}"
        );
    }
}
