//! Which server a table entry describes: Redis 7.0 or Valkey 8.0.
//!
//! Must never guess a version from anything but what the caller says: detecting the backend
//! (`INFO server`) is the proxy's job.

use crate::flags::Servers;
use crate::generated;

/// A server implementation and major version the table was generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// Redis 7.0 (the table was read from the version in [`Server::version`]).
    Redis7,
    /// Valkey 8.0.
    Valkey8,
}

impl Server {
    /// Every server the table covers.
    pub const ALL: [Server; 2] = [Server::Redis7, Server::Valkey8];

    /// `redis` or `valkey`.
    pub const fn flavor(self) -> &'static str {
        match self {
            Server::Redis7 => "redis",
            Server::Valkey8 => "valkey",
        }
    }

    /// The exact version the table was generated from, e.g. `7.0.15`.
    pub const fn version(self) -> &'static str {
        match self {
            Server::Redis7 => generated::REDIS_VERSION,
            Server::Valkey8 => generated::VALKEY_VERSION,
        }
    }

    /// The one-member [`Servers`] set of this server.
    pub const fn as_set(self) -> Servers {
        match self {
            Server::Redis7 => Servers::REDIS_7,
            Server::Valkey8 => Servers::VALKEY_8,
        }
    }

    /// The table's server for a backend that reports `flavor` (`redis`/`valkey`, any case) and
    /// `version` (`7.0.15`): Redis 7.0.x and Valkey 8.0.x.
    ///
    /// Returns `None` for other versions: the table was not read from them, so the caller decides
    /// whether the nearest one is good enough.
    pub fn from_flavor_version(flavor: &str, version: &str) -> Option<Server> {
        let mut parts = version.split('.');
        let major_minor = (parts.next()?, parts.next()?);
        if flavor.eq_ignore_ascii_case("redis") && major_minor == ("7", "0") {
            Some(Server::Redis7)
        } else if flavor.eq_ignore_ascii_case("valkey") && major_minor == ("8", "0") {
            Some(Server::Valkey8)
        } else {
            None
        }
    }
}

impl Servers {
    /// Whether `server` is in the set.
    pub const fn has(self, server: Server) -> bool {
        self.contains(server.as_set())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_servers_only_on_the_generated_minor() {
        assert_eq!(
            Server::from_flavor_version("redis", "7.0.15"),
            Some(Server::Redis7)
        );
        assert_eq!(
            Server::from_flavor_version("Valkey", "8.0.1"),
            Some(Server::Valkey8)
        );
        assert_eq!(Server::from_flavor_version("redis", "7.2.4"), None);
        assert_eq!(Server::from_flavor_version("valkey", "7.2.5"), None);
        assert_eq!(Server::from_flavor_version("redis", "7"), None);
    }

    #[test]
    fn each_server_is_its_own_set() {
        assert!(Servers::REDIS_7.has(Server::Redis7));
        assert!(!Servers::REDIS_7.has(Server::Valkey8));
        assert_eq!(Server::Redis7.version(), generated::REDIS_VERSION);
        assert!(Server::Valkey8.version().starts_with("8.0."));
    }
}
