//! `cinnabar drill failover`: wires a running local cluster (`cinnabar-local`) to the failover
//! drill (`cinnabar-drill`), and prints and writes its report.
//!
//! The local platform's side of the drill lives here, as glue: `cinnabar-local` provides the
//! mechanics (signal a node it owns, hold its supervisor back from restarting one) and
//! `cinnabar-drill` the trait; neither crate knows the other, so the drill stays usable by the
//! Kubernetes platform and the local platform stays free of drill logic. Whatever happens, a
//! node this command failed is given back (restart hold released, SIGCONT sent), on Ctrl-C too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use cinnabar_cluster::NodeAddr;
use cinnabar_drill::{DrillOptions, FaultError, FaultKind, NodeFaults, WorkloadOptions};
use clap::{Args, Subcommand};
use nix::sys::signal::Signal;

/// Flags of `cinnabar drill`.
#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    #[command(subcommand)]
    drill: Drill,
}

#[derive(Debug, Subcommand)]
enum Drill {
    /// Fail one master under a verifying workload and report what clients went through.
    ///
    /// Against a cluster started with `cinnabar up --detach`: checks it is healthy, starts a
    /// workload through the endpoint (writes of new keys and reads of acknowledged ones, every
    /// acknowledged write recorded), fails the master of --shard, measures until a replica has
    /// taken over and every slot is served, restores the node (the supervisor restarts a killed
    /// one; a paused one is resumed), waits until it rejoined as a replica and the cluster is
    /// healthy, runs out --duration, then reads every acknowledged write back. Reports time to
    /// detect and to promote, client-visible errors, latency per second and lost writes (with
    /// their keys), and a verdict. Exits 0 when the verdict passes, 1 otherwise.
    ///
    /// Examples:
    ///   cinnabar up --detach
    ///   cinnabar drill failover --kill --duration 30s --report drill-report
    ///   cinnabar drill failover --pause --shard 2 --json
    #[command(verbatim_doc_comment)]
    Failover(FailoverArgs),
}

/// Flags of `cinnabar drill failover`.
#[derive(Debug, Args)]
struct FailoverArgs {
    /// Directory the cluster was started from
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Which shard's master to fail: shards are numbered from 0 by their first slot
    #[arg(long, value_name = "I", default_value_t = 0)]
    shard: usize,
    /// Kill the master with SIGKILL and keep it down until a replica took over (the default)
    #[arg(long, conflicts_with = "pause")]
    kill: bool,
    /// Freeze the master with SIGSTOP until a replica took over, then resume it with SIGCONT
    #[arg(long)]
    pause: bool,
    /// Least time the workload runs (e.g. 30s, 2m, 1500ms); longer when recovery takes longer
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Write report.txt, report.json and timeline.svg into this directory
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    json: bool,
    /// Workload connections through the endpoint
    #[arg(long, value_name = "N", default_value_t = 4)]
    connections: usize,
    /// Workload operations per second, over all connections
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rate: u32,
    /// Fail the drill when clients see more errors than this [default: errors are reported,
    /// not judged]
    #[arg(long, value_name = "N")]
    max_client_errors: Option<u64>,
}

impl FailoverArgs {
    fn fault(&self) -> FaultKind {
        if self.pause {
            FaultKind::Pause
        } else {
            FaultKind::Kill
        }
    }
}

/// Runs `cinnabar drill …`.
pub(crate) fn run(args: &DrillArgs) -> Result<ExitCode> {
    match &args.drill {
        Drill::Failover(failover) => crate::runtime()?.block_on(run_failover(failover)),
    }
}

async fn run_failover(args: &FailoverArgs) -> Result<ExitCode> {
    let options = drill_options(args).await?;
    let plan = cinnabar_drill::prepare(&options)
        .await
        .context("preparing the drill")?;
    eprintln!(
        "drill: {} of {} (master of shard {}, slots {}), {} replica(s) to take over",
        options.fault,
        plan.victim.addr,
        plan.shard,
        cinnabar_cluster::slots::format_ranges(&plan.victim.slots),
        plan.victim.replica_ids.len()
    );
    let hold_limit = options.duration + options.failover_timeout + options.recovery_timeout;
    let mut faults = LocalFaults::new(&args.dir, hold_limit);
    let mut print_event = |event: cinnabar_drill::DrillEvent| eprintln!("{event}");
    let drill = cinnabar_drill::run(&plan, &options, &mut faults, &mut print_event);
    let report = tokio::select! {
        report = drill => report.context("running the drill")?,
        _ = tokio::signal::ctrl_c() => {
            // The drill's future is dropped mid-way: give the node back ourselves.
            let mut rescue = LocalFaults::new(&args.dir, hold_limit);
            let restored = rescue.restore(&plan.victim.addr);
            bail!(
                "interrupted; {} was {}",
                plan.victim.addr,
                match restored {
                    Ok(()) => "given back to the supervisor".to_owned(),
                    Err(e) => format!("NOT restored ({e}); run `cinnabar status --dir {}`", args.dir.display()),
                }
            );
        }
    };
    if let Some(dir) = &args.report {
        let files = report
            .write_to(dir)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
        eprintln!(
            "report written: {}, {}, {} (open the SVG in a browser)",
            files.text.display(),
            files.json.display(),
            files.svg.display()
        );
    }
    if args.json {
        println!("{}", report.to_json().context("encoding the report")?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Everything the drill needs from the running cluster, refusing a directory that has none.
async fn drill_options(args: &FailoverArgs) -> Result<DrillOptions> {
    let status = cinnabar_local::status(&args.dir).await?;
    if status.phase == "stopped" {
        bail!(
            "the cluster in {} is stopped: start it with `cinnabar up --detach --dir {0}`",
            args.dir.display()
        );
    }
    if status.supervisor_pid.is_none() {
        bail!(
            "no supervisor runs the cluster in {}: a drill needs one to restore the failed node; \
             start it with `cinnabar up --detach --dir {0}`",
            args.dir.display()
        );
    }
    let endpoint: NodeAddr = status
        .endpoint
        .parse()
        .with_context(|| format!("the endpoint {:?} in the state file", status.endpoint))?;
    let seeds = status
        .nodes
        .iter()
        .map(|n| n.address.parse::<NodeAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("a node address in the state file")?;
    let state = cinnabar_local::StateDir::open(&args.dir)?
        .load()?
        .with_context(|| format!("no cluster state in {}", args.dir.display()))?;
    // A Sentinel group: the nodes are the data nodes, and the Sentinels are watched.
    let group = state
        .spec
        .is_sentinel()
        .then(|| cinnabar_local::group::access(&state));
    if group.is_some() && args.shard != 0 {
        bail!("a Sentinel group has one shard (0)");
    }
    let node_timeout = node_timeout(&args.dir)?;
    let mut workload = WorkloadOptions::new(endpoint);
    workload.connections = args.connections.max(1);
    workload.ops_per_second = args.rate.max(1);
    Ok(DrillOptions {
        seeds,
        shard: args.shard,
        fault: args.fault(),
        duration: args.duration,
        workload,
        // Redis needs about two node timeouts to detect and elect; the rest is slack for a
        // loaded machine.
        failover_timeout: (node_timeout * 4).max(Duration::from_secs(30)),
        recovery_timeout: (node_timeout * 6).max(Duration::from_secs(60)),
        max_client_errors: args.max_client_errors,
        group,
    })
}

/// `cluster-node-timeout` of the cluster in `dir`.
fn node_timeout(dir: &Path) -> Result<Duration> {
    let state = cinnabar_local::StateDir::open(dir)?
        .load()?
        .with_context(|| format!("no cluster state in {}", dir.display()))?;
    Ok(Duration::from_millis(state.spec.node_timeout_ms))
}

/// Parses `30s`, `2m`, `1h`, `1500ms` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 1500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 24.0 * 3600.0 {
        return Err(format!("{text:?} must be more than zero and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The local platform's faults: signals to the node processes the supervisor owns, and a
/// restart hold so a killed node stays down until the drill restores it.
#[derive(Debug, Clone)]
struct LocalFaults {
    dir: PathBuf,
    /// The longest a killed node is kept down, even if this process dies before restoring it.
    hold_limit: Duration,
}

impl LocalFaults {
    fn new(dir: &Path, hold_limit: Duration) -> Self {
        Self {
            dir: dir.to_path_buf(),
            hold_limit,
        }
    }
}

impl NodeFaults for LocalFaults {
    fn kill(&mut self, node: &NodeAddr) -> Result<(), FaultError> {
        let failed = |e: cinnabar_local::LocalError| FaultError::new("killing", node, e);
        cinnabar_local::faults::hold_restarts(
            &self.dir,
            node.port,
            SystemTime::now() + self.hold_limit,
        )
        .map_err(failed)?;
        if let Err(e) = cinnabar_local::faults::signal_node(&self.dir, node.port, Signal::SIGKILL) {
            let _ = cinnabar_local::faults::release_restarts(&self.dir, node.port);
            return Err(failed(e));
        }
        Ok(())
    }

    fn pause(&mut self, node: &NodeAddr) -> Result<(), FaultError> {
        cinnabar_local::faults::signal_node(&self.dir, node.port, Signal::SIGSTOP)
            .map(|_| ())
            .map_err(|e| FaultError::new("pausing", node, e))
    }

    fn restore(&mut self, node: &NodeAddr) -> Result<(), FaultError> {
        let failed = |e: cinnabar_local::LocalError| FaultError::new("restoring", node, e);
        cinnabar_local::faults::release_restarts(&self.dir, node.port).map_err(failed)?;
        // Both faults are undone the same way: a killed node has no process to resume (the
        // supervisor starts it once released), a paused one has.
        match cinnabar_local::faults::signal_node(&self.dir, node.port, Signal::SIGCONT) {
            Ok(_) | Err(cinnabar_local::LocalError::NodeNotRunning { .. }) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }

    async fn wait_restored(
        &mut self,
        node: &NodeAddr,
        timeout: Duration,
    ) -> Result<(), FaultError> {
        let deadline = Instant::now() + timeout;
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, node.port));
        loop {
            let running = cinnabar_local::faults::node_pid(&self.dir, node.port)
                .map_err(|e| FaultError::new("waiting for", node, e))?
                .is_some();
            let last = if running {
                match cinnabar_local::probe::ping(addr, Duration::from_millis(500)).await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            } else {
                "no process yet".to_owned()
            };
            if Instant::now() >= deadline {
                return Err(FaultError::new(
                    "waiting for",
                    node,
                    format!("not back within {timeout:?} (last: {last})"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_people_type() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("25h").unwrap_err().contains("at most a day"));
    }
}
