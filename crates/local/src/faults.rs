//! Deliberate faults for drills: signal one node of a running local cluster, and hold the
//! supervisor back from restarting a node for a while, so a `kill -9` looks like a lost machine
//! instead of a process that is back within a second.
//!
//! It must never signal a process that is not the node it names: every signal goes to a pid only
//! after its working directory and title prove it is that node (as `down` checks).
//!
//! Why a hold: the supervisor restarts a dead node at once, well within `cluster-node-timeout`,
//! so a plain kill never fails over (by design: see `config`). A drill that wants to see the
//! failover a lost machine causes writes a hold file into the node's data directory; while it is
//! there and its deadline has not passed, the supervisor leaves the dead node down. The deadline
//! means a drill that is itself killed cannot leave a node down for good.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{LocalError, Result};
use crate::state::{NodeState, StateDir};

/// Name of the hold file in a node's data directory; its text is the deadline in milliseconds
/// since the Unix epoch.
pub const RESTART_HOLD_FILE: &str = "restart-hold";

/// Asks the supervisor of the cluster in `dir` not to restart the node on `port` until `until`,
/// or until [`release_restarts`], whichever comes first. A running node is not affected.
///
/// # Errors
/// [`LocalError::NotRunning`] when `dir` holds no cluster, [`LocalError::NoSuchNode`] when no node
/// listens on `port`, I/O errors writing the file.
pub fn hold_restarts(dir: &Path, port: u16, until: SystemTime) -> Result<()> {
    let node = node_state(dir, port)?;
    let path = hold_path(&node.dir);
    let deadline_ms = until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    std::fs::write(&path, deadline_ms.to_string())
        .map_err(|e| LocalError::io(format!("writing {}", path.display()), e))
}

/// Lets the supervisor restart the node on `port` again (at its next round, within 100 ms).
/// Releasing a node that is not held is not an error.
///
/// # Errors
/// As [`hold_restarts`].
pub fn release_restarts(dir: &Path, port: u16) -> Result<()> {
    let node = node_state(dir, port)?;
    let path = hold_path(&node.dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LocalError::io(format!("removing {}", path.display()), e)),
    }
}

/// Whether a hold on the node whose data directory is `node_dir` is in force at `now`.
/// An unreadable or malformed hold file counts as no hold: a node must not stay down by mistake.
pub(crate) fn restart_held(node_dir: &Path, now: SystemTime) -> bool {
    let Ok(text) = std::fs::read_to_string(hold_path(node_dir)) else {
        return false;
    };
    let Ok(deadline_ms) = text.trim().parse::<u64>() else {
        return false;
    };
    UNIX_EPOCH + Duration::from_millis(deadline_ms) > now
}

fn hold_path(node_dir: &Path) -> PathBuf {
    node_dir.join(RESTART_HOLD_FILE)
}

/// Sends `signal` to the node on `port` of the cluster in `dir`; returns the pid signalled.
///
/// # Errors
/// [`LocalError::NotRunning`], [`LocalError::NoSuchNode`], [`LocalError::NodeNotRunning`] when
/// the node has no live process of ours (dead, or its pid now belongs to someone else), or the
/// OS error of `kill`.
pub fn signal_node(dir: &Path, port: u16, signal: Signal) -> Result<u32> {
    let node = node_state(dir, port)?;
    let pid = running_pid(&node).ok_or(LocalError::NodeNotRunning { port })?;
    let target = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
        .ok_or(LocalError::NodeNotRunning { port })?;
    kill(target, signal).map_err(|errno| {
        LocalError::io(
            format!("sending {signal} to node {port} (pid {pid})"),
            std::io::Error::from(errno),
        )
    })?;
    Ok(pid)
}

/// The pid of the node on `port` when it runs now (as recorded by the supervisor and checked to
/// be that node), else `None`.
///
/// # Errors
/// [`LocalError::NotRunning`] when `dir` holds no cluster, [`LocalError::NoSuchNode`] when no node
/// listens on `port`.
pub fn node_pid(dir: &Path, port: u16) -> Result<Option<u32>> {
    Ok(running_pid(&node_state(dir, port)?))
}

fn running_pid(node: &NodeState) -> Option<u32> {
    node.pid.filter(|pid| crate::ops::is_our_node(*pid, node))
}

fn node_state(dir: &Path, port: u16) -> Result<NodeState> {
    let state_dir = StateDir::open(dir)?;
    let state = state_dir.load()?.ok_or_else(|| LocalError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    state
        .nodes
        .into_iter()
        .find(|n| n.port == port)
        .ok_or_else(|| LocalError::NoSuchNode {
            dir: dir.to_path_buf(),
            port,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_in_force_until_its_deadline_and_a_bad_file_holds_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        assert!(!restart_held(tmp.path(), now), "no file, no hold");
        let until = now + Duration::from_secs(60);
        let ms = until.duration_since(UNIX_EPOCH).unwrap().as_millis();
        std::fs::write(tmp.path().join(RESTART_HOLD_FILE), ms.to_string()).unwrap();
        assert!(restart_held(tmp.path(), now));
        assert!(!restart_held(tmp.path(), until + Duration::from_secs(1)));
        std::fs::write(tmp.path().join(RESTART_HOLD_FILE), "soon").unwrap();
        assert!(!restart_held(tmp.path(), now));
    }
}
