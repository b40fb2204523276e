//! Port checks: is a TCP port on loopback free, and if not, who holds it.
//!
//! A cluster node needs two ports: its client port and its bus port (client port + 10000). This
//! module only inspects; it never kills or frees anything.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{LocalError, Result};

/// Offset between a node's client port and its cluster bus port (fixed by Redis).
pub const BUS_PORT_OFFSET: u16 = 10_000;

/// The cluster bus port of a node listening on `port`.
///
/// # Errors
/// [`LocalError::PortOutOfRange`] when `port + 10000` does not fit in a port number.
pub fn bus_port(port: u16) -> Result<u16> {
    port.checked_add(BUS_PORT_OFFSET)
        .ok_or(LocalError::PortOutOfRange {
            port: u32::from(port) + 10_000,
        })
}

/// Succeeds when `port` can be bound on 127.0.0.1 right now.
///
/// # Errors
/// [`LocalError::PortInUse`], naming the holding process when `/proc` tells.
pub fn ensure_free(port: u16) -> Result<()> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(_) => Err(LocalError::PortInUse {
            port,
            holder: describe_holder(port),
        }),
    }
}

/// Checks the client and bus ports of `count` nodes starting at `first` (ports first, first+1, …).
///
/// # Errors
/// The first busy or out-of-range port.
pub fn ensure_node_ports_free(first: u16, count: usize) -> Result<()> {
    for i in 0..count {
        let port = u32::from(first) + i as u32;
        let port = u16::try_from(port).map_err(|_| LocalError::PortOutOfRange { port })?;
        ensure_free(port)?;
        ensure_free(bus_port(port)?)?;
    }
    Ok(())
}

/// ` (held by pid 42, redis-server)` when the holder is visible in `/proc`, else empty.
fn describe_holder(port: u16) -> String {
    match holder_of(port) {
        Some((pid, name)) => format!(" (held by pid {pid}, {name})"),
        None => String::new(),
    }
}

/// Finds the process listening on `port` through `/proc/net/tcp{,6}` and `/proc/*/fd`.
pub fn holder_of(port: u16) -> Option<(u32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let needle = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == needle.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_owned()));
        }
    }
    None
}

/// The inode of the socket in LISTEN state (`0A`) on `port` in a `/proc/net/tcp` table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        (local.ends_with(&wanted) && *state == "0A")
            .then(|| inode.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_reported_with_its_holder() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = ensure_free(port).unwrap_err().to_string();
        assert!(
            err.contains(&format!("port {port} is already in use")),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn bus_port_overflow_is_an_error_not_a_wrap() {
        assert_eq!(bus_port(6380).unwrap(), 16380);
        assert!(matches!(
            bus_port(60000),
            Err(LocalError::PortOutOfRange { .. })
        ));
    }

    #[test]
    fn listen_table_lines_parse() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inode(table, 0x18EB), Some(123_456));
        assert_eq!(listening_inode(table, 0x18EC), None);
    }
}
