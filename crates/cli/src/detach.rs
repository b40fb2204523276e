//! `cinnabar up --detach`: start the supervisor as a background process and follow its log
//! until the cluster is ready and its endpoint answers PING (or the supervisor fails), then
//! return.
//!
//! The background process is this same binary running `__supervise` with the same flags, in
//! its own process group so a Ctrl-C in this terminal does not reach it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cinnabar_local::{Phase, StateDir};

use crate::UpArgs;

/// Extra time beyond the formation timeout for starting nodes and writing state.
const START_SLACK: Duration = Duration::from_secs(90);
/// How long a ready supervisor's proxy may take to answer this process.
const PROXY_ANSWER_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn up_detached(args: &UpArgs) -> Result<()> {
    // Refuse bad flags here, with one clear message, before any background process exists.
    cinnabar_local::Supervisor::preflight(&args.options())?;
    let created_dir = !args.dir.exists();
    let dir = StateDir::create(&args.dir)?;
    let log_path = dir.supervisor_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("finding the cinnabar binary")?;
    // The supervisor resolves --dir against the same working directory as we do.
    let forwarded = args.to_args();
    let mut child = Command::new(exe)
        .arg("__supervise")
        .args(forwarded)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the background supervisor")?;

    let deadline = Instant::now() + Duration::from_secs(args.timeout) + START_SLACK;
    loop {
        offset = echo_new_lines(&log_path, offset);
        if let Some(status) = child
            .try_wait()
            .context("watching the background supervisor")?
        {
            echo_new_lines(&log_path, offset);
            if created_dir {
                let _ = std::fs::remove_dir_all(&args.dir);
            }
            bail!("the background supervisor exited ({status}) before the cluster was ready");
        }
        let ready = dir
            .load()
            .ok()
            .flatten()
            .filter(|s| s.phase == Phase::Ready && s.supervisor_pid == Some(child.id()));
        if let Some(state) = ready {
            // The supervisor marks the cluster ready only once its proxy answered; asking again
            // from here proves the printed endpoint serves this process too.
            if let Some(port) = state.spec.proxy_port() {
                let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
                let answer = crate::runtime()?.block_on(cinnabar_local::probe::wait_for_pong(
                    addr,
                    PROXY_ANSWER_WAIT,
                ));
                if let Err(reason) = answer {
                    stop(&child);
                    bail!(
                        "the proxy on {addr} does not answer PING ({reason}); stopped the \
                         background supervisor, see {}",
                        log_path.display()
                    );
                }
            }
            println!("{}", state.endpoint);
            eprintln!(
                "running in the background (supervisor pid {}, log {}); stop with `cinnabar down --dir {}`",
                child.id(),
                log_path.display(),
                args.dir.display()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            stop(&child);
            bail!(
                "the cluster was not ready in time; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks the background supervisor to stop its nodes (and proxy) and exit.
fn stop(child: &std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// Prints what the supervisor logged since `offset`; returns the new offset.
fn echo_new_lines(path: &std::path::Path, offset: u64) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return offset;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut new = Vec::new();
    let read = file.read_to_end(&mut new).unwrap_or(0);
    if read > 0 {
        eprint!("{}", String::from_utf8_lossy(&new));
    }
    offset + read as u64
}
