//! `cinnabar sync`: data moves in. Wires the replication engine (`cinnabar-replication`) to
//! flags, progress output and exit codes: `sync status` reads what a running sync reports,
//! `sync verify` compares a source with a target key by key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cinnabar_replication::apply::DbRoute;
use cinnabar_replication::status::{LastStart, Phase, SyncStatus};
use cinnabar_replication::sync::{LiveOffsets, SyncConfig};
use cinnabar_replication::verify::{Endpoint, VerifyOptions};
use clap::{Args, Subcommand};

/// Flags of `cinnabar sync`: a subcommand, or the flags of a sync to run.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct SyncArgs {
    #[command(subcommand)]
    action: Option<SyncAction>,
    #[command(flatten)]
    run: RunArgs,
}

/// Flags of `cinnabar sync --from … --to … --state …`.
#[derive(Debug, Args)]
struct RunArgs {
    /// The source, HOST:PORT: a standalone server, a replica, or any node of a Redis Cluster
    /// (then one replication stream per master)
    #[arg(long, value_name = "HOST:PORT", required = true)]
    from: Option<String>,
    #[command(flatten)]
    from_auth: SourceAuth,
    /// The target, HOST:PORT: any node of a Redis Cluster, or a Cinnabar endpoint
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "to_dir",
        conflicts_with = "to_dir"
    )]
    to: Option<String>,
    /// The target, as a local cluster's directory (`cinnabar up --dir`): its nodes
    #[arg(long, value_name = "DIR")]
    to_dir: Option<PathBuf>,
    /// File holding the target's password (its first line)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Checkpoints and status live here; a restarted sync continues from them
    #[arg(long, value_name = "DIR", required = true)]
    state: Option<PathBuf>,
    /// Let a source FLUSHALL/FLUSHDB flush the target (refused otherwise, and the sync stops)
    #[arg(long)]
    allow_flush: bool,
    /// Also take source database N (merged into the target's only database); repeatable
    #[arg(long, value_name = "N")]
    merge_db: Vec<u64>,
    /// Drop source database N's keys and commands; repeatable
    #[arg(long, value_name = "N")]
    skip_db: Vec<u64>,
    /// Serve Prometheus metrics (`GET /metrics`: offset, lag, keys, commands per source) here
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum SyncAction {
    /// Show a sync's progress from its state directory: per source stream its address, phase
    /// (connecting, full, streaming), how its replication last started (full or continue),
    /// the offset applied, the lag in bytes and milliseconds, keys and commands applied.
    ///
    /// Exits 0 when every stream is streaming, 1 otherwise (still copying, or failing).
    ///
    /// Examples:
    ///   cinnabar sync status --state sync-state
    ///   cinnabar sync status --state sync-state --json
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),
    /// Compare every key of a source with a target: type, value and TTL (within a tolerance),
    /// and the key counts. Reads only; memory stays bounded whatever the data.
    ///
    /// The source is a standalone server, a replica, or any node of a Redis Cluster (then
    /// every master is read); the target is any node of a Redis Cluster or a Cinnabar
    /// endpoint. Prints each difference (up to --max-reported) and exits 0 only when there is
    /// none.
    ///
    /// Examples:
    ///   cinnabar sync verify --from 10.0.0.5:6379 --to 127.0.0.1:6380
    ///   cinnabar sync verify --from old:6379 --from-password-file pw --to new:6380 --json
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
}

/// Flags of `cinnabar sync status`.
#[derive(Debug, Args)]
struct StatusArgs {
    /// The sync's state directory
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Print the status document as JSON
    #[arg(long)]
    json: bool,
}

/// Credentials of one side.
#[derive(Debug, Args)]
struct SourceAuth {
    /// ACL user on the source
    #[arg(long, value_name = "USER")]
    from_user: Option<String>,
    /// File holding the source's password (its first line)
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
}

/// Flags of `cinnabar sync verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The source, HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    from: String,
    #[command(flatten)]
    from_auth: SourceAuth,
    /// The target, HOST:PORT (a cluster node or a Cinnabar endpoint)
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// File holding the target's password (its first line)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// TTLs closer than this many milliseconds are equal
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    ttl_tolerance_ms: u64,
    /// Differences printed (all are counted)
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_reported: usize,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `cinnabar sync …`.
pub(crate) fn run(args: &SyncArgs) -> Result<ExitCode> {
    match &args.action {
        Some(SyncAction::Status(status)) => show_status(status),
        Some(SyncAction::Verify(verify)) => run_verify(verify),
        None => run_sync(&args.run),
    }
}

/// Runs a sync until SIGTERM/Ctrl-C (exit 0 once the last checkpoint is stored) or a failure
/// (exit 1, naming it).
fn run_sync(args: &RunArgs) -> Result<ExitCode> {
    let to = match (&args.to, &args.to_dir) {
        (Some(to), _) => Some(to.clone()),
        (None, Some(dir)) => Some(crate::migrate::writable_node(dir)?),
        (None, None) => None,
    };
    let (Some(from), Some(to), Some(state)) = (&args.from, &to, &args.state) else {
        anyhow::bail!("cinnabar sync needs --from, --to (or --to-dir) and --state");
    };
    let mut db_map = std::collections::BTreeMap::from([(0, DbRoute::Merge)]);
    db_map.extend(args.merge_db.iter().map(|db| (*db, DbRoute::Merge)));
    db_map.extend(args.skip_db.iter().map(|db| (*db, DbRoute::Skip)));
    let config = SyncConfig {
        source: Endpoint {
            addr: from.clone(),
            user: args.from_auth.from_user.clone(),
            password: read_password(&args.from_auth.from_password_file)?,
        },
        target: Endpoint {
            addr: to.clone(),
            user: None,
            password: read_password(&args.to_password_file)?,
        },
        state_dir: state.clone(),
        allow_flush: args.allow_flush,
        db_map,
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(Arc::clone(&stop))?;
    let latest = Arc::new(std::sync::Mutex::new(SyncStatus::default()));
    let live = Arc::new(LiveOffsets::default());
    if let Some(listen) = args.admin_listen {
        serve_admin(listen, Arc::clone(&latest), Arc::clone(&live))?;
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "sync {from} -> {to} (state in {}); Ctrl-C to stop",
        state.display()
    );
    let mut rates = FullSyncRates::default();
    let result = cinnabar_replication::sync::run(&config, &stop, &live, |status| {
        if let Ok(mut latest) = latest.lock() {
            latest.clone_from(status);
        }
        let line = status_line(status, &mut rates);
        if interactive {
            eprint!("\r{line:<100}");
        } else {
            eprintln!("{line}");
        }
    });
    if interactive {
        eprintln!();
    }
    result.context("sync stopped")?;
    eprintln!("sync stopped; checkpoints stored in {}", state.display());
    Ok(ExitCode::SUCCESS)
}

/// The sync's admin listener (`cinnabar_replication::admin`): `/metrics` and `/offsets`.
pub(crate) fn serve_admin(
    listen: std::net::SocketAddr,
    latest: Arc<std::sync::Mutex<SyncStatus>>,
    live: Arc<LiveOffsets>,
) -> Result<std::net::SocketAddr> {
    cinnabar_replication::admin::serve(listen, latest, live)
        .with_context(|| format!("cannot listen on {listen} for metrics"))
}

/// Sets `stop` on SIGINT or SIGTERM (a thread with a small runtime waits for them).
pub(crate) fn stop_on_signal(stop: Arc<AtomicBool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    std::thread::spawn(move || {
        runtime.block_on(crate::shutdown_signal());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(())
}

/// One line for a person: per source, its phase and progress.
pub(crate) fn status_line(status: &SyncStatus, rates: &mut FullSyncRates) -> String {
    status
        .sources
        .iter()
        .map(|s| match s.phase {
            Phase::Connecting => format!(
                "{} connecting{}",
                s.address,
                s.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            Phase::Full => match s.keys_total {
                Some(total) if total > 0 => format!(
                    "{} full sync {}/{} keys ({}%{})",
                    s.address,
                    s.keys_applied,
                    total,
                    s.keys_applied * 100 / total.max(s.keys_applied),
                    rates.describe(&s.address, s.keys_applied, total)
                ),
                _ => format!("{} full sync {} keys", s.address, s.keys_applied),
            },
            Phase::Streaming => format!(
                "{} streaming, lag {} bytes / {} ms, {} commands",
                s.address, s.lag_bytes, s.lag_ms, s.commands_applied
            ),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How fast each source's full sync goes, for a rate and an estimate of the time left in the
/// status line: measured from the first status of the full sync this process saw.
#[derive(Debug, Default)]
pub(crate) struct FullSyncRates(std::collections::HashMap<String, (std::time::Instant, u64)>);

impl FullSyncRates {
    /// `, N keys/s, ~T left` once a second of progress is measured, else nothing.
    fn describe(&mut self, address: &str, applied: u64, total: u64) -> String {
        let (since, at_start) = *self
            .0
            .entry(address.to_owned())
            .or_insert((std::time::Instant::now(), applied));
        let elapsed = since.elapsed().as_secs_f64();
        if elapsed < 1.0 || applied <= at_start {
            return String::new();
        }
        let rate = (applied - at_start) as f64 / elapsed;
        let left = total.saturating_sub(applied) as f64 / rate;
        format!(", {rate:.0} keys/s, ~{left:.0} s left")
    }
}

/// The first line of a password file.
pub(crate) fn read_password(file: &Option<PathBuf>) -> Result<Option<String>> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
}

fn show_status(args: &StatusArgs) -> Result<ExitCode> {
    let status = SyncStatus::load(&args.state).with_context(|| {
        format!(
            "no sync status in {} (is a `cinnabar sync` running with --state {0}?)",
            args.state.display()
        )
    })?;
    let all_streaming = !status.sources.is_empty()
        && status
            .sources
            .iter()
            .all(|s| s.phase == Phase::Streaming && s.error.is_none());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("sync to {} (pid {})", status.target, status.pid);
        println!(
            "{:<22} {:<10} {:<8} {:>14} {:>12} {:>8} {:>12} {:>12}",
            "source", "phase", "start", "offset", "lag bytes", "lag ms", "keys", "commands"
        );
        for s in &status.sources {
            let phase = match s.phase {
                Phase::Connecting => "connecting",
                Phase::Full => "full",
                Phase::Streaming => "streaming",
            };
            let start = match s.last_start {
                Some(LastStart::Full) => "full",
                Some(LastStart::Continue) => "continue",
                None => "-",
            };
            println!(
                "{:<22} {:<10} {:<8} {:>14} {:>12} {:>8} {:>12} {:>12}",
                s.address,
                phase,
                start,
                s.offset,
                s.lag_bytes,
                s.lag_ms,
                s.keys_applied,
                s.commands_applied
            );
            if let Some(error) = &s.error {
                println!("  last error: {error}");
            }
            if let Some(warning) = &s.warning {
                println!("  warning: {warning}");
            }
        }
    }
    Ok(if all_streaming {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let source = Endpoint {
        addr: args.from.clone(),
        user: args.from_auth.from_user.clone(),
        password: read_password(&args.from_auth.from_password_file)?,
    };
    let target = Endpoint {
        addr: args.to.clone(),
        user: None,
        password: read_password(&args.to_password_file)?,
    };
    let options = VerifyOptions {
        ttl_tolerance: Duration::from_millis(args.ttl_tolerance_ms),
        max_reported: args.max_reported,
        ..VerifyOptions::default()
    };
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = cinnabar_replication::verify::verify(&source, &target, &options, |checked| {
        if interactive {
            eprint!("\rverified {checked} keys");
        }
    })
    .context("verify stopped")?;
    if interactive {
        eprintln!();
    }
    if args.json {
        let differences: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
        let document = serde_json::json!({
            "identical": report.identical(),
            "keys_checked": report.keys_checked,
            "differences_total": report.differences_total,
            "differences": differences,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for difference in &report.differences {
            println!("{difference}");
        }
        if report.differences_total > report.differences.len() as u64 {
            println!(
                "… and {} more",
                report.differences_total - report.differences.len() as u64
            );
        }
        println!(
            "{} keys compared, {} difference(s): {}",
            report.keys_checked,
            report.differences_total,
            if report.identical() {
                "identical"
            } else {
                "NOT identical"
            }
        );
    }
    Ok(if report.identical() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn a_full_sync_shows_its_rate_and_time_left_once_measured() {
        let mut rates = FullSyncRates::default();
        assert_eq!(rates.describe("a:1", 10, 100), "", "nothing measured yet");
        rates.0.insert(
            "b:1".into(),
            (std::time::Instant::now() - Duration::from_secs(2), 0),
        );
        assert_eq!(rates.describe("b:1", 1000, 3000), ", 500 keys/s, ~4 s left");
    }
}
