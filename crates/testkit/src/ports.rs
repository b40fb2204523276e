//! Free loopback ports for test servers, safe across parallel test processes.
//!
//! nextest runs each test in its own process, so "bind, close, hand out" alone races. A port
//! is handed out only while we hold an exclusive `flock` on `/tmp/cinnabar-testkit-ports/<port>`;
//! the lock dies with the process, so a crashed test never leaks a reservation.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

/// Client ports come from this range; bus ports (+10000) stay below Linux's ephemeral range
/// (32768+), so outgoing connections never steal them.
const PORT_RANGE: std::ops::Range<u16> = 15_000..22_000;

/// A client port (and its bus port) reserved for this process until dropped.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    _lock: Flock<File>,
}

impl PortReservation {
    /// The reserved client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("cinnabar-testkit-ports")
}

/// Reserves a client port whose port and port+10000 are both free now.
///
/// # Panics
/// When no port can be found after many tries (the machine is out of ports).
pub fn reserve_node_port() -> PortReservation {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).expect("create port lock dir");
    let mut rng = rand::rng();
    for _ in 0..10_000 {
        let port = rng.random_range(PORT_RANGE);
        let Some(lock) = try_lock(&dir, port) else {
            continue;
        };
        if cinnabar_local::ports::ensure_node_ports_free(port, 1).is_ok() {
            return PortReservation { port, _lock: lock };
        }
    }
    panic!("no free loopback port pair found in {PORT_RANGE:?}");
}

/// `count` consecutive client ports (each with its bus port), reserved together: what
/// `cinnabar up --port <first>` needs.
#[derive(Debug)]
pub struct PortBlock {
    first: u16,
    _locks: Vec<Flock<File>>,
}

impl PortBlock {
    /// The first port of the block.
    pub fn first(&self) -> u16 {
        self.first
    }
}

/// Reserves `count` consecutive node ports.
///
/// # Panics
/// When no such block can be found after many tries.
pub fn reserve_port_block(count: u16) -> PortBlock {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).expect("create port lock dir");
    let mut rng = rand::rng();
    'attempt: for _ in 0..10_000 {
        let first = rng.random_range(PORT_RANGE.start..PORT_RANGE.end - count);
        let mut locks = Vec::with_capacity(usize::from(count));
        for port in first..first + count {
            let Some(lock) = try_lock(&dir, port) else {
                continue 'attempt;
            };
            locks.push(lock);
        }
        if cinnabar_local::ports::ensure_node_ports_free(first, usize::from(count)).is_ok() {
            return PortBlock {
                first,
                _locks: locks,
            };
        }
    }
    panic!("no block of {count} free loopback port pairs found in {PORT_RANGE:?}");
}

/// An exclusive, non-blocking lock on `port`'s lock file, or `None` if another process holds it
/// (or the file cannot be opened).
fn try_lock(dir: &std::path::Path, port: u16) -> Option<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

/// Reserves a plain port (no bus port) for a non-Redis listener such as a proxy under test.
pub fn reserve_port() -> PortReservation {
    reserve_node_port()
}
