//! [`AuditConfig`]: the `[audit]` section of the proxy's TOML file, with its defaults and the
//! checks that make a bad value an error before anything is opened. It never touches the file
//! system or starts a thread; [`crate::Auditor`] does.

use std::fmt;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::AuditError;

/// The largest `queue_capacity` accepted (1 Mi records). The channel reserves its slots up
/// front (about 24 bytes each, 24 MiB at this bound, records aside), so a typo such as an extra
/// three zeros must be refused rather than reserve gigabytes.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// Settings of the audit trail: where lines go, how files rotate, how keys are written.
///
/// Every field is optional in TOML; unknown fields are errors (a typo must not silently keep a
/// default). Example:
///
/// ```toml
/// [audit]
/// enabled = true
/// output = "/var/log/cinnabar/audit.jsonl"   # or "stdout"
/// max_file_bytes = 104857600                  # rotate beyond 100 MiB
/// keep_files = 5                              # audit.jsonl.1 .. audit.jsonl.5
/// queue_capacity = 65536                      # records waiting for the writer
/// hash_keys = false
/// # key_salt = "..."                          # only with hash_keys; random per process if unset
/// max_keys = 16
/// categories = ["dangerous", "admin"]
/// ```
///
/// `Debug` and `Serialize` never show `key_salt` (it is what keeps hashed keys from being
/// guessed), so the effective configuration can be logged or served as is.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether records are written at all. When false, [`crate::Auditor::record`] discards
    /// records without counting them and no output is opened. Default: true.
    pub enabled: bool,
    /// Where lines go. Default: standard output.
    pub output: AuditOutput,
    /// A file output is rotated before a line would take it beyond this size; a single line
    /// larger than this still goes into a file of its own. Ignored for stdout.
    /// Default: 100 MiB.
    pub max_file_bytes: NonZeroU64,
    /// How many rotated files (`<output>.1` newest … `<output>.N` oldest) are kept; the oldest
    /// is deleted at each rotation. 0 means the full file is deleted instead of renamed.
    /// Default: 5.
    pub keep_files: u32,
    /// How many records may wait for the writer. When the queue is full, new records are
    /// dropped and counted. At most [`MAX_QUEUE_CAPACITY`]. Fixed for the life of an
    /// [`crate::Auditor`]: [`crate::Auditor::reconfigure`] ignores a change. Default: 65 536.
    pub queue_capacity: NonZeroUsize,
    /// Write each key as `sha256:` and the first 16 hex digits of SHA-256(salt ‖ key) instead
    /// of the key itself. Default: false.
    pub hash_keys: bool,
    /// The salt for `hash_keys`. If unset, a random salt is drawn once per process, so hashes
    /// are stable within a process (across reconfigurations too) but differ between processes
    /// and restarts; set it to correlate keys across proxies and restarts. Must not be empty.
    #[serde(skip_serializing)]
    pub key_salt: Option<String>,
    /// How many keys a record lists at most; `key_count` is always the exact number.
    /// Default: 16.
    pub max_keys: usize,
    /// The command categories the caller audits (ACL category names without `@`). Carried for
    /// the proxy; this crate writes whatever records it is given. Default: dangerous, admin.
    pub categories: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            output: AuditOutput::Stdout,
            max_file_bytes: NonZeroU64::new(100 << 20).unwrap_or(NonZeroU64::MIN),
            keep_files: 5,
            queue_capacity: NonZeroUsize::new(65_536).unwrap_or(NonZeroUsize::MIN),
            hash_keys: false,
            key_salt: None,
            max_keys: 16,
            categories: vec!["dangerous".to_owned(), "admin".to_owned()],
        }
    }
}

impl AuditConfig {
    /// Checks what the types alone do not: the queue bound, a non-empty path and salt.
    /// [`crate::Auditor::start`] and [`crate::Auditor::reconfigure`] call it; a config reload
    /// can call it to refuse a bad section before anything changes.
    ///
    /// # Errors
    /// [`AuditError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |field, reason: &str| {
            Err(AuditError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.queue_capacity.get() > MAX_QUEUE_CAPACITY {
            return bad("queue_capacity", &format!("at most {MAX_QUEUE_CAPACITY}"));
        }
        if let AuditOutput::File(path) = &self.output
            && path.as_os_str().is_empty()
        {
            return bad("output", "empty path; use \"stdout\" or a file path");
        }
        if self.key_salt.as_deref() == Some("") {
            return bad("key_salt", "empty salt; leave it unset for a random one");
        }
        Ok(())
    }
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("enabled", &self.enabled)
            .field("output", &self.output)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("keep_files", &self.keep_files)
            .field("queue_capacity", &self.queue_capacity)
            .field("hash_keys", &self.hash_keys)
            .field("key_salt", &self.key_salt.as_ref().map(|_| "<redacted>"))
            .field("max_keys", &self.max_keys)
            .field("categories", &self.categories)
            .finish()
    }
}

/// Where audit lines go. In TOML, the string `"stdout"` or a file path (a file actually named
/// `stdout` is written `"./stdout"`). A relative path is taken from the process's working
/// directory; the directory must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// The process's standard output, never rotated.
    Stdout,
    /// A file, appended to, created with mode 0640, rotated by size.
    File(PathBuf),
}

impl AuditOutput {
    const STDOUT: &'static str = "stdout";
}

impl<'de> Deserialize<'de> for AuditOutput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = PathBuf::deserialize(deserializer)?;
        Ok(if text.as_os_str() == Self::STDOUT {
            Self::Stdout
        } else {
            Self::File(text)
        })
    }
}

impl Serialize for AuditOutput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Stdout => serializer.serialize_str(Self::STDOUT),
            Self::File(path) => path.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuditConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_section_gives_the_documented_defaults() {
        let config = parse("").unwrap();
        assert!(config.enabled);
        assert_eq!(config.output, AuditOutput::Stdout);
        assert_eq!(config.max_file_bytes.get(), 100 * 1024 * 1024);
        assert_eq!(config.keep_files, 5);
        assert_eq!(config.queue_capacity.get(), 65_536);
        assert!(!config.hash_keys);
        assert_eq!(config.key_salt, None);
        assert_eq!(config.max_keys, 16);
        assert_eq!(config.categories, ["dangerous", "admin"]);
        assert_eq!(config, AuditConfig::default());
        config.validate().unwrap();
    }

    #[test]
    fn every_field_can_be_set() {
        let config = parse(
            r#"
            enabled = false
            output = "/var/log/audit.jsonl"
            max_file_bytes = 1000
            keep_files = 0
            queue_capacity = 8
            hash_keys = true
            key_salt = "pepper"
            max_keys = 0
            categories = ["dangerous"]
            "#,
        )
        .unwrap();
        assert!(!config.enabled);
        assert_eq!(
            config.output,
            AuditOutput::File("/var/log/audit.jsonl".into())
        );
        assert_eq!(config.max_file_bytes.get(), 1000);
        assert_eq!(config.keep_files, 0);
        assert_eq!(config.queue_capacity.get(), 8);
        assert!(config.hash_keys);
        assert_eq!(config.key_salt.as_deref(), Some("pepper"));
        assert_eq!(config.max_keys, 0);
        assert_eq!(config.categories, ["dangerous"]);
    }

    #[test]
    fn unknown_fields_and_zero_sizes_are_refused() {
        let typo = parse("queue_capacty = 10").unwrap_err().to_string();
        assert!(typo.contains("queue_capacty"), "{typo}");
        assert!(parse("queue_capacity = 0").is_err());
        assert!(parse("max_file_bytes = 0").is_err());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let field_of = |config: AuditConfig| match config.validate() {
            Err(AuditError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let huge = parse(&format!("queue_capacity = {}", MAX_QUEUE_CAPACITY + 1)).unwrap();
        assert_eq!(field_of(huge), "queue_capacity");
        assert_eq!(field_of(parse("output = \"\"").unwrap()), "output");
        assert_eq!(field_of(parse("key_salt = \"\"").unwrap()), "key_salt");
    }

    #[test]
    fn the_salt_never_appears_in_debug_or_serialized_output() {
        let config = parse("hash_keys = true\nkey_salt = \"s3cret-salt\"").unwrap();
        assert!(!format!("{config:?}").contains("s3cret-salt"));
        assert!(
            !serde_json::to_string(&config)
                .unwrap()
                .contains("s3cret-salt")
        );
        assert!(!toml::to_string(&config).unwrap().contains("s3cret-salt"));
    }

    #[test]
    fn output_round_trips_through_toml() {
        for output in [AuditOutput::Stdout, AuditOutput::File("./stdout".into())] {
            let config = AuditConfig {
                output: output.clone(),
                ..AuditConfig::default()
            };
            let back = parse(&toml::to_string(&config).unwrap()).unwrap();
            assert_eq!(back.output, output);
        }
    }
}
