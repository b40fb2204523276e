//! Finding the server binary: `redis-server` or `valkey-server`, and which version it is.
//!
//! Must never guess: a binary that does not report a Redis/Valkey version is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{LocalError, Result};

/// Names tried on `PATH`, in order.
const CANDIDATES: [&str; 2] = ["redis-server", "valkey-server"];

/// A located, version-checked server binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinary {
    /// Absolute or PATH-resolved location.
    pub path: PathBuf,
    /// `redis` or `valkey`.
    pub flavor: Flavor,
    /// Version string as printed, e.g. `7.0.15`.
    pub version: String,
}

/// Which server implementation a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Redis (redis.io).
    Redis,
    /// Valkey (the Linux Foundation fork).
    Valkey,
}

impl ServerBinary {
    /// Uses `explicit` when given, else the first of `redis-server`, `valkey-server` on `PATH`.
    ///
    /// # Errors
    /// [`LocalError::ServerNotFound`] when nothing is found, [`LocalError::NotARedisServer`] when
    /// the file is not a Redis/Valkey server.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            if !path.is_file() {
                return Err(LocalError::ServerNotFound {
                    searched: format!(" at {}", path.display()),
                });
            }
            return Self::probe(path);
        }
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        for name in CANDIDATES {
            for dir in std::env::split_paths(&path_var) {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Self::probe(&candidate);
                }
            }
        }
        Err(LocalError::ServerNotFound {
            searched: " on PATH".into(),
        })
    }

    /// Runs `path --version` and parses its answer.
    fn probe(path: &Path) -> Result<Self> {
        let output = Command::new(path)
            .arg("--version")
            .output()
            .map_err(|e| LocalError::io(format!("running {} --version", path.display()), e))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        parse_version_line(&text)
            .map(|(flavor, version)| Self {
                path: path.to_path_buf(),
                flavor,
                version,
            })
            .ok_or_else(|| LocalError::NotARedisServer {
                path: path.to_path_buf(),
                output: text,
            })
    }

    /// Major version number, 0 when unparsable.
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses `Redis server v=7.0.15 sha=...` or `Valkey server v=8.0.1 ...`.
fn parse_version_line(text: &str) -> Option<(Flavor, String)> {
    let flavor = if text.starts_with("Redis server") {
        Flavor::Redis
    } else if text.starts_with("Valkey server") {
        Flavor::Valkey
    } else {
        return None;
    };
    let version = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    Some((flavor, version.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_of_both_flavors_parse() {
        let redis = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d";
        assert_eq!(
            parse_version_line(redis),
            Some((Flavor::Redis, "7.0.15".into()))
        );
        let valkey = "Valkey server v=8.0.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1";
        assert_eq!(
            parse_version_line(valkey),
            Some((Flavor::Valkey, "8.0.1".into()))
        );
        assert_eq!(parse_version_line("cat (GNU coreutils) 9.1"), None);
    }

    #[test]
    fn a_missing_explicit_path_names_the_path() {
        let err = ServerBinary::locate(Some(Path::new("/nonexistent/redis-server"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/redis-server"), "{msg}");
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
    }

    #[test]
    fn a_binary_that_is_not_redis_is_refused() {
        let err = ServerBinary::locate(Some(Path::new("/bin/ls"))).unwrap_err();
        assert!(matches!(err, LocalError::NotARedisServer { .. }), "{err}");
    }
}
