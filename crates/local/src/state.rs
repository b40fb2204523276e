//! The state directory: what a running (or stopped) local cluster left for other invocations.
//!
//! `cinnabar.json` says what was started (spec, ports, pids, phase); `cinnabar.lock` is held with
//! an exclusive `flock` by the one live supervisor, so "is it running?" never relies on a pid that
//! the OS may have reused. Writes are atomic (temp file + rename): a reader never sees half a file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::binary::Flavor;
use crate::error::{LocalError, Result};
use crate::spec::LocalSpec;

/// File holding [`State`].
pub const STATE_FILE: &str = "cinnabar.json";
/// File the live supervisor holds locked.
pub const LOCK_FILE: &str = "cinnabar.lock";
/// Where a detached supervisor writes its progress and events.
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// The operation in progress (`cinnabar scale`, `failover`, …), kept until it finishes.
pub const OPERATION_JOURNAL: &str = "operation.json";
/// Folder holding one data directory per node, named by port.
pub const NODES_DIR: &str = "nodes";

/// Lifecycle of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "phase", content = "reason")]
pub enum Phase {
    /// Nodes are starting or the cluster is forming.
    Starting,
    /// The cluster formed and is supervised.
    Ready,
    /// Shutting down.
    Stopping,
    /// Stopped cleanly; data kept for the next `up`.
    Stopped,
}

/// One node as recorded by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Client port.
    pub port: u16,
    /// Data directory.
    pub dir: PathBuf,
    /// Current process id, if running.
    pub pid: Option<u32>,
    /// How often the supervisor restarted it since `up`.
    pub restarts: u32,
    /// The simulated host it is placed on (`--hosts`); state files from before hosts lack it.
    #[serde(default)]
    pub host: Option<String>,
    /// A Sentinel of a Sentinel group, not a data node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sentinel: bool,
}

/// Everything `status` and `down` need to know about a cluster started from a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The requested shape and settings.
    pub spec: LocalSpec,
    /// The endpoint we printed.
    pub endpoint: String,
    /// Lifecycle phase.
    #[serde(flatten)]
    pub phase: Phase,
    /// The supervising `cinnabar` process.
    pub supervisor_pid: Option<u32>,
    /// Server binary used.
    pub server_path: PathBuf,
    /// `redis` or `valkey`.
    pub server_flavor: Flavor,
    /// Its version.
    pub server_version: String,
    /// Nodes in port order: the truth about which nodes exist (after scaling it is no longer
    /// the spec's `masters × (replicas + 1)` consecutive ports).
    pub nodes: Vec<NodeState>,
    /// Set once this cluster's endpoint was switched online to another cluster (`cinnabar
    /// migrate`): the proxy serves that one, also after a restart of this supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Serving>,
    /// Last write, in ms since the Unix epoch.
    pub updated_ms: u64,
}

/// The cluster this directory's endpoint serves instead of its own nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    /// Its state directory, when it is a local cluster too.
    pub dir: Option<PathBuf>,
    /// Its nodes, `host:port`.
    pub seeds: Vec<String>,
}

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates the directory if needed and resolves it to an absolute path.
    ///
    /// # Errors
    /// I/O errors creating or resolving it.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| LocalError::io(format!("creating {}", root.display()), e))?;
        Self::open(root)
    }

    /// Resolves an existing directory.
    ///
    /// # Errors
    /// [`LocalError::NotRunning`] when it does not exist.
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocalError::NotRunning {
                dir: root.to_path_buf(),
            },
            _ => LocalError::io(format!("opening {}", root.display()), e),
        })?;
        Ok(Self { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Data directory of the node on `port`.
    pub fn node_dir(&self, port: u16) -> PathBuf {
        self.root.join(NODES_DIR).join(port.to_string())
    }

    /// The journal of the operation in progress.
    pub fn operation_journal(&self) -> PathBuf {
        self.root.join(OPERATION_JOURNAL)
    }

    /// The supervisor's log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join(SUPERVISOR_LOG)
    }

    fn state_path(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    /// Reads the state file; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`LocalError::BadState`] when it exists but does not parse.
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LocalError::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LocalError::BadState {
                path,
                reason: e.to_string(),
            })
    }

    /// Atomically replaces the state file.
    ///
    /// # Errors
    /// I/O errors writing or renaming.
    pub fn save(&self, state: &mut State) -> Result<()> {
        state.updated_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).map_err(|e| LocalError::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text)
            .map_err(|e| LocalError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LocalError::io(format!("replacing {}", path.display()), e))
    }

    /// Deletes the state file (ignoring a missing one).
    pub fn remove_state(&self) {
        let _ = std::fs::remove_file(self.state_path());
    }

    /// Takes the supervisor lock, or says who holds it.
    ///
    /// # Errors
    /// [`LocalError::AlreadyRunning`] when another supervisor is alive.
    pub fn lock(&self) -> Result<SupervisorLock> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LocalError::io(format!("opening {}", path.display()), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(SupervisorLock { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LocalError::AlreadyRunning {
                dir: self.root.clone(),
                pid: self.supervisor_pid(),
            }),
            Err((_, errno)) => Err(LocalError::io(
                format!("locking {}", path.display()),
                std::io::Error::from(errno),
            )),
        }
    }

    /// The pid of the live supervisor: whoever holds the lock on `cinnabar.lock`, read from
    /// `/proc/locks`. Unlike probing with [`lock`](Self::lock), this never takes the lock
    /// itself (so it cannot make a concurrent `up` fail), and unlike the pid in the state file,
    /// it cannot name a process that merely reused a dead supervisor's pid.
    pub fn supervisor_pid(&self) -> Option<u32> {
        let meta = std::fs::metadata(self.root.join(LOCK_FILE)).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        lock_holder(&locks, meta.dev(), meta.ino())
    }

    /// Whether a live supervisor holds the lock right now.
    pub fn is_supervised(&self) -> bool {
        self.supervisor_pid().is_some()
    }
}

/// Finds the pid holding a `FLOCK` on the file with device `dev` and inode `ino` in the text
/// of `/proc/locks` (lines like `3: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF`; waiters,
/// marked `->`, are skipped).
fn lock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    locks
        .lines()
        .filter(|l| !l.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let mut id = fields.get(5)?.split(':');
            let file_major = u64::from_str_radix(id.next()?, 16).ok()?;
            let file_minor = u64::from_str_radix(id.next()?, 16).ok()?;
            let file_ino: u64 = id.next()?.parse().ok()?;
            (file_major == major && file_minor == minor && file_ino == ino).then_some(pid)
        })
}

/// Proof that this process is the directory's one supervisor; released on drop or exit.
#[derive(Debug)]
pub struct SupervisorLock {
    _lock: Flock<File>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &StateDir) -> State {
        State {
            spec: LocalSpec::default(),
            endpoint: "127.0.0.1:6380".into(),
            phase: Phase::Ready,
            supervisor_pid: Some(std::process::id()),
            server_path: "/usr/bin/redis-server".into(),
            server_flavor: Flavor::Redis,
            server_version: "7.0.15".into(),
            nodes: vec![NodeState {
                sentinel: false,
                port: 6380,
                dir: dir.node_dir(6380),
                pid: Some(1),
                restarts: 0,
                host: Some("h0".into()),
            }],
            serving: None,
            updated_ms: 0,
        }
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(&tmp.path().join("c")).unwrap();
        assert_eq!(dir.load().unwrap(), None);
        let mut state = sample(&dir);
        dir.save(&mut state).unwrap();
        assert_eq!(dir.load().unwrap(), Some(state));
    }

    #[test]
    fn a_state_file_from_before_hosts_reads_nodes_without_a_host() {
        let node: NodeState =
            serde_json::from_str(r#"{"port":7000,"dir":"/d","pid":null,"restarts":0}"#).unwrap();
        assert_eq!(node.host, None);
    }

    #[test]
    fn a_second_lock_names_the_running_supervisor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        dir.save(&mut sample(&dir)).unwrap();
        let _held = dir.lock().unwrap();
        // flock locks belong to the open file description, so a second open in this process
        // conflicts just as another process would.
        let err = dir.lock().unwrap_err().to_string();
        assert!(err.contains("already runs a cluster"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert_eq!(dir.supervisor_pid(), Some(std::process::id()));
        drop(_held);
        assert_eq!(dir.supervisor_pid(), None, "a released lock names nobody");
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::create(tmp.path()).unwrap();
        std::fs::write(tmp.path().join(STATE_FILE), "{not json").unwrap();
        let err = dir.load().unwrap_err().to_string();
        assert!(err.contains("cinnabar.json is unreadable"), "{err}");
    }
}
