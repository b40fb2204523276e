//! One `redis-server` child process: write its config, start it, wait until it answers, stop it.
//!
//! Children run in their own process group, so a Ctrl-C aimed at `cinnabar` reaches only us and
//! we stop the nodes in order; this module never decides *when* to restart (the supervisor does).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::binary::ServerBinary;
use crate::config::NodeConfig;
use crate::error::{LocalError, Result};

/// A running (or exited) node process we started.
#[derive(Debug)]
pub struct NodeProcess {
    config: NodeConfig,
    child: Child,
    /// Set once the exit was collected: from then on the pid may belong to someone else.
    reaped: bool,
}

impl NodeProcess {
    /// Writes `config` into the node's directory and starts the server on it.
    ///
    /// # Errors
    /// I/O errors creating the directory, writing the config or spawning the process.
    pub fn spawn(binary: &ServerBinary, config: &NodeConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| LocalError::io(format!("creating {}", config.dir.display()), e))?;
        let conf_path = config.config_path();
        // A Sentinel's file holds what it learnt (the current master above all), a group
        // node's its current `replicaof`: a restart must start from them (see `keep_file`).
        if !(config.keep_file && conf_path.exists()) {
            std::fs::write(&conf_path, config.render())
                .map_err(|e| LocalError::io(format!("writing {}", conf_path.display()), e))?;
        }
        let log_path = config.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LocalError::io(format!("opening {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| LocalError::io("duplicating log handle", e))?;
        let mut command = Command::new(&binary.path);
        command.arg(&conf_path);
        if config.sentinel.is_some() {
            command.arg("--sentinel");
        }
        let child = command
            .current_dir(&config.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| LocalError::io(format!("starting {}", binary.path.display()), e))?;
        Ok(Self {
            config: config.clone(),
            child,
            reaped: false,
        })
    }

    /// The configuration this process was started with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Loopback address of the node's client port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.config.port))
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited (reaps it), `None` while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Waits until the node answers `PING` with `PONG` (not `-LOADING`).
    ///
    /// # Errors
    /// [`LocalError::NodeNotReady`] with the log tail when the process exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(self.not_ready(format!("process exited with {status}")));
            }
            let last = match ping(self.addr()) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!("no PONG within {timeout:?} (last: {last})")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn not_ready(&self, reason: String) -> LocalError {
        let log = self.config.log_path();
        LocalError::NodeNotReady {
            addr: self.addr().to_string(),
            reason,
            log_tail: log_tail(&log, 15),
            log,
        }
    }

    /// Sends `signal` to the process (ignoring a process that is already gone).
    ///
    /// A process whose exit was already collected is never signalled: its pid may have been
    /// reused. Until we collect it, it stays a zombie, so the pid cannot be reused under us.
    pub fn signal(&self, signal: Signal) {
        if self.reaped {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Stops the node: SIGTERM (Redis flushes its AOF and exits), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Some(status);
        }
        // A paused process cannot act on SIGTERM.
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // `Child::kill` knows whether the exit was collected, so it cannot hit a reused pid.
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.reaped = true;
        status
    }
}

/// Sends one inline `PING` and expects `+PONG` (or `-NOAUTH` from a node that requires a
/// password: it is up, which is all this asks); the error says what came back instead.
pub fn ping(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&buf[..n]);
    if answer.starts_with("+PONG") || answer.starts_with("-NOAUTH") {
        Ok(())
    } else {
        Err(answer.trim_end().to_owned())
    }
}

/// The last `lines` lines of a log file, or a note saying why there is none.
pub fn log_tail(path: &Path, lines: usize) -> String {
    // Logs only grow; the last lines are always within the last few KiB.
    const WINDOW: u64 = 64 * 1024;
    let read_end = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read_end() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_returns_the_last_lines_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 19998\nline 19999");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(no log at"));
    }
}
