//! `cinnabar scale|failover|restart|heal|replace-nodes|rebalance|resume`: one planner operation
//! on the local cluster in `--dir`, journaled in `<dir>/operation.json` so a killed run resumes.
//!
//! Wiring only: the planner (`cinnabar-cluster`) decides every step and the local platform
//! (`cinnabar-local`, through the running supervisor) starts and stops nodes. Exit codes: 0 done,
//! 1 failed, 2 refused before anything was changed.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cinnabar_cluster::{
    FileJournal, Journal, MemoryJournal, Observed, OperateError, OperateEvent, OperateOptions,
    OperateReport, Operation, Platform, Timeouts, observe,
};
use cinnabar_local::LocalPlatform;
use clap::{ArgGroup, Args, Subcommand};

/// Exit code of a refusal: nothing was changed.
const REFUSED: u8 = 2;

/// The operation subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum OperationCommand {
    /// Change the number of shards and/or replicas per shard, moving slots evenly.
    ///
    /// New nodes are started on free ports above the highest one in use (on the least loaded
    /// simulated host with `up --hosts`); removed ones are drained of their slots first, then
    /// stopped and deleted. The new shape is recorded, so `status` and a later `up` agree.
    ///
    /// Examples:
    ///   cinnabar scale --masters 4              # add a shard, rebalance slots
    ///   cinnabar scale --replicas 2             # a second replica for every shard
    ///   cinnabar scale --masters 2 --dry-run    # show the first step only
    #[command(verbatim_doc_comment)]
    Scale(ScaleArgs),
    /// Hand one shard's master role to its most up-to-date replica, losing no write.
    ///
    /// Shards are numbered from 0 in the planner's order (an index past the end is refused
    /// with the list); the master is resolved when the command starts, so a resumed run still
    /// means the same shard.
    ///
    /// Examples:
    ///   cinnabar failover                       # shard 0
    ///   cinnabar failover --shard 2
    #[command(verbatim_doc_comment)]
    Failover(FailoverArgs),
    /// Restart every node on its data, one at a time, with no client-visible error.
    ///
    /// Replicas first; each master only after its role moved to an in-sync replica.
    ///
    /// Examples:
    ///   cinnabar restart --rolling
    ///   cinnabar restart --rolling --json       # the report as JSON on stdout
    #[command(verbatim_doc_comment)]
    Restart(RestartArgs),
    /// Bring the cluster back to clean after crashes or interrupted operations.
    ///
    /// Starts dead nodes, fixes stale addresses, forgets ghosts, closes open slots, covers lost
    /// slots and attaches spare nodes as replicas. The one operation allowed while another is journaled (that one stays journaled; finish
    /// it with `cinnabar resume`). Exits 1 when something could not be fixed.
    ///
    /// Examples:
    ///   cinnabar heal
    ///   cinnabar heal --dry-run                 # what it would do first
    #[command(verbatim_doc_comment)]
    Heal(CommonArgs),
    /// Move every shard onto new nodes, then remove the old ones.
    ///
    /// New replicas are added and synced, promoted by planned failovers, and the old nodes
    /// removed (for example to pick up a new redis-server binary).
    ///
    /// Examples:
    ///   cinnabar replace-nodes
    #[command(verbatim_doc_comment)]
    ReplaceNodes(CommonArgs),
    /// Spread master roles over the simulated hosts (planned failovers; slots do not move).
    ///
    /// Afterwards no host holds more than its share of masters.
    ///
    /// Examples:
    ///   cinnabar rebalance
    #[command(verbatim_doc_comment)]
    Rebalance(CommonArgs),
    /// Continue the operation journaled in <dir>/operation.json.
    ///
    /// For a run that was killed or failed: it plans from where the cluster is now.
    ///
    /// Examples:
    ///   cinnabar resume
    #[command(verbatim_doc_comment)]
    Resume(CommonArgs),
}

/// Flags every operation has.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    /// Directory the cluster was started from
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Print the final report as JSON on stdout (progress stays on stderr)
    #[arg(long)]
    json: bool,
    /// Print the first step the planner would take, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Give up after this long (a journaled operation can be resumed)
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    timeout: u64,
    /// No final report on stdout (the autoscaler reports its own way).
    #[arg(skip)]
    quiet: bool,
}

/// Flags of `cinnabar scale`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("shape").required(true).multiple(true).args(["masters", "replicas"])))]
pub(crate) struct ScaleArgs {
    /// Shards wanted [default: the current number]
    #[arg(long, value_name = "N")]
    masters: Option<u16>,
    /// Replicas per shard wanted [default: the current number]
    #[arg(long, value_name = "R")]
    replicas: Option<u16>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Flags of `cinnabar failover`.
#[derive(Debug, Args)]
pub(crate) struct FailoverArgs {
    /// Index of the shard whose master steps down
    #[arg(long, value_name = "I", default_value_t = 0)]
    shard: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Flags of `cinnabar restart`.
#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    /// One node at a time, failing masters over first (the only kind of restart offered: a
    /// cluster-wide stop would drop every client)
    #[arg(long, required = true)]
    rolling: bool,
    #[command(flatten)]
    common: CommonArgs,
}

impl OperationCommand {
    fn common(&self) -> &CommonArgs {
        match self {
            Self::Scale(a) => &a.common,
            Self::Failover(a) => &a.common,
            Self::Restart(a) => &a.common,
            Self::Heal(a) | Self::ReplaceNodes(a) | Self::Rebalance(a) | Self::Resume(a) => a,
        }
    }
}

/// Runs one operation subcommand to its end.
pub(crate) fn run(command: &OperationCommand) -> Result<ExitCode> {
    crate::runtime()?.block_on(run_async(command))
}

/// Why an operation does not start: a refusal (exit 2) or a failure (exit 1).
enum NotStarted {
    Refused(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for NotStarted {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

async fn run_async(command: &OperationCommand) -> Result<ExitCode> {
    let common = command.common();
    let mut platform = LocalPlatform::open(&common.dir)?;
    let root = platform.dir().root().to_path_buf();
    if !platform.dir().is_supervised() {
        bail!(
            "no supervisor runs the cluster in {0}: start it with `cinnabar up --detach --dir {0}`",
            root.display()
        );
    }
    let sentinel = platform
        .dir()
        .load()?
        .is_some_and(|state| state.spec.is_sentinel());
    if sentinel {
        return run_group(command).await;
    }
    let mut file = FileJournal::new(platform.dir().operation_journal());
    let mut memory = MemoryJournal::default();
    let pending = file.load()?;
    let operation = match (command, pending) {
        (OperationCommand::Resume(_), None) => {
            println!(
                "nothing to resume: no operation in progress in {}",
                root.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        (OperationCommand::Resume(_), Some(entry)) => {
            eprintln!("resuming {entry}");
            entry.operation
        }
        (OperationCommand::Heal(_), pending) => {
            if let Some(entry) = &pending {
                eprintln!(
                    "note: {entry} stays journaled; run `cinnabar resume` after this heal to \
                     finish it"
                );
            }
            match new_operation(command, &platform).await {
                Ok(op) => op,
                Err(e) => return not_started(e),
            }
        }
        (_, Some(entry)) => {
            eprintln!("this cluster is mid-operation: {entry}; run `cinnabar resume` to finish it");
            return Ok(ExitCode::from(REFUSED));
        }
        (_, None) => match new_operation(command, &platform).await {
            Ok(op) => op,
            Err(e) => return not_started(e),
        },
    };
    // A heal next to a journaled operation keeps its own progress in memory, so the journal
    // still holds the interrupted operation afterwards.
    let journal: &mut (dyn Journal + Send) = match command {
        OperationCommand::Heal(_) if file.load()?.is_some() => &mut memory,
        _ => &mut file,
    };
    let options = OperateOptions {
        timeout: Duration::from_secs(common.timeout),
        dry_run: common.dry_run,
        ..OperateOptions::default()
    };
    let mut printer = EventPrinter::new();
    let outcome = cinnabar_cluster::run_operation(
        operation.clone(),
        &mut platform,
        journal,
        &options,
        &mut |event| printer.print(&event),
    )
    .await;
    printer.finish();
    match outcome {
        Ok(report) => {
            if let (Operation::Scale { masters, replicas }, false) = (&operation, common.dry_run) {
                record_shape(&platform, *masters, *replicas).await?;
            }
            if !common.quiet {
                print_report(&report, common.json)?;
            }
            Ok(if report.unresolved.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(OperateError::Refused(refusal)) => {
            eprintln!("{}", refusal.local_message());
            hint_resume(&file);
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => {
            eprintln!("error: {e}");
            hint_resume(&file);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn not_started(reason: NotStarted) -> Result<ExitCode> {
    match reason {
        NotStarted::Refused(message) => {
            eprintln!("{message}");
            Ok(ExitCode::from(REFUSED))
        }
        NotStarted::Failed(e) => Err(e),
    }
}

/// After a failed run: say how to continue, when the journal kept the operation.
fn hint_resume(journal: &FileJournal) {
    if let Ok(Some(entry)) = journal.load() {
        eprintln!(
            "{entry} is journaled: `cinnabar resume` continues it (`cinnabar heal` first if \
             nodes are down)"
        );
    }
}

async fn record_shape(platform: &LocalPlatform, masters: usize, replicas: usize) -> Result<()> {
    let masters = u16::try_from(masters).context("--masters is out of range")?;
    let replicas = u16::try_from(replicas).context("--replicas is out of range")?;
    platform
        .set_shape(masters, replicas)
        .await
        .context("recording the new shape in the state file")
}

/// An operation on a Sentinel group: the planner's group path decides each step (see
/// `cinnabar_local::group`). Failovers and rolling restarts are journaled in
/// `<dir>/group-operation.json`; while one is, only `heal` and `resume` run.
async fn run_group(command: &OperationCommand) -> Result<ExitCode> {
    use cinnabar_cluster::group_plan::GroupOperation;
    let common = command.common();
    match command {
        OperationCommand::Failover(args) if args.shard != 0 => {
            eprintln!("failover refused: a Sentinel group has one shard (0)");
            return Ok(ExitCode::from(REFUSED));
        }
        OperationCommand::Scale(_)
        | OperationCommand::ReplaceNodes(_)
        | OperationCommand::Rebalance(_) => {
            eprintln!(
                "refused: a Sentinel group supports failover, restart --rolling, heal and resume \
                 (scale, replace-nodes and rebalance are cluster operations)"
            );
            return Ok(ExitCode::from(REFUSED));
        }
        _ => {}
    }
    let root = cinnabar_local::StateDir::open(&common.dir)?
        .root()
        .to_path_buf();
    let pending = cinnabar_local::group::pending(&root)?;
    let operation = match (command, pending) {
        (OperationCommand::Heal(_), _) => GroupOperation::Heal,
        (OperationCommand::Resume(_), Some(pending)) => {
            eprintln!("resuming {pending}");
            pending
        }
        (OperationCommand::Resume(_), None) => {
            println!(
                "nothing to resume: no operation in progress in {}",
                root.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        (_, Some(pending)) => {
            eprintln!("this group is mid-operation: {pending}; run `cinnabar resume` to finish it");
            return Ok(ExitCode::from(REFUSED));
        }
        (OperationCommand::Failover(_), None) => GroupOperation::Failover { from: None },
        (_, None) => GroupOperation::RollingRestart {
            restarted: Vec::new(),
        },
    };
    if common.dry_run {
        let state = cinnabar_local::StateDir::open(&common.dir)?
            .load()?
            .context("the state file is gone")?;
        let observed = cinnabar_local::group::observe(&state).await;
        println!(
            "{}",
            match cinnabar_cluster::group_plan::next_group_step(&operation, &observed) {
                cinnabar_cluster::group_plan::GroupNext::Step(step) => format!("would {step}"),
                other => format!("{other:?}"),
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = cinnabar_local::group::run_operation(
        &common.dir,
        operation,
        Duration::from_secs(common.timeout),
        &mut |event| eprintln!("  {event}"),
    )
    .await;
    match outcome {
        Ok(report) => {
            if !common.quiet {
                print_report(&report, common.json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(cinnabar_local::group::GroupOperationError::Refused(why)) => {
            eprintln!("{} refused: {why}", command_name(command));
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn command_name(command: &OperationCommand) -> &'static str {
    match command {
        OperationCommand::Scale(_) => "scale",
        OperationCommand::Failover(_) => "failover",
        OperationCommand::Restart(_) => "restart",
        OperationCommand::Heal(_) => "heal",
        OperationCommand::ReplaceNodes(_) => "replace-nodes",
        OperationCommand::Rebalance(_) => "rebalance",
        OperationCommand::Resume(_) => "resume",
    }
}

/// The operation a new command asks for, resolved against the cluster as it is now.
async fn new_operation(
    command: &OperationCommand,
    platform: &LocalPlatform,
) -> Result<Operation, NotStarted> {
    let spec = platform
        .dir()
        .load()
        .context("reading the cluster's state")?
        .context("the cluster's state file is gone")?
        .spec;
    Ok(match command {
        OperationCommand::Scale(args) => Operation::Scale {
            masters: usize::from(args.masters.unwrap_or(spec.masters)),
            replicas: usize::from(args.replicas.unwrap_or(spec.replicas)),
        },
        OperationCommand::Failover(args) => {
            let observed = observation(platform).await?;
            let shards = observed.shards();
            let Some(shard) = shards.get(args.shard) else {
                let list: Vec<String> = shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("{i} = master {}", s.master))
                    .collect();
                return Err(NotStarted::Refused(format!(
                    "failover refused: no shard {}; this cluster has {} shard{} ({})",
                    args.shard,
                    shards.len(),
                    if shards.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )));
            };
            Operation::Failover {
                master_id: shard.master_id.clone(),
                master: shard.master.clone(),
            }
        }
        OperationCommand::Restart(_) => Operation::RollingRestart {
            pending: node_ids(&observation(platform).await?),
        },
        OperationCommand::Heal(_) => Operation::Heal {
            replicas: Some(usize::from(spec.replicas)),
            started: BTreeSet::new(),
        },
        OperationCommand::ReplaceNodes(_) => Operation::ReplaceNodes {
            old: node_ids(&observation(platform).await?),
            replicas: usize::from(spec.replicas),
        },
        OperationCommand::Rebalance(_) => Operation::Rebalance,
        OperationCommand::Resume(_) => {
            return Err(NotStarted::Failed(anyhow::anyhow!(
                "resume continues a journaled operation; it has none of its own"
            )));
        }
    })
}

/// `cinnabar scale --masters N --dir DIR`, as the autoscaler runs it: the same path, journal
/// and report (printed on stderr) as a person's.
pub(crate) async fn scale_masters(dir: &std::path::Path, masters: u16) -> Result<ExitCode> {
    let command = OperationCommand::Scale(ScaleArgs {
        masters: Some(masters),
        replicas: None,
        common: CommonArgs {
            dir: dir.to_path_buf(),
            json: false,
            dry_run: false,
            timeout: 3600,
            quiet: true,
        },
    });
    run_async(&command).await
}

pub(crate) async fn observation(platform: &LocalPlatform) -> Result<Observed> {
    let nodes = platform.nodes().await?;
    Ok(observe(&nodes, Timeouts::default(), None).await)
}

/// The ids of every node the platform runs (asked directly, or as their peers list them).
fn node_ids(observed: &Observed) -> BTreeSet<String> {
    observed
        .nodes
        .iter()
        .filter_map(|n| observed.id_of(n.addr()))
        .collect()
}

/// Prints events on stderr, one line each; on a terminal, progress lines overwrite each other.
struct EventPrinter {
    terminal: bool,
    progress_open: bool,
}

impl EventPrinter {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            progress_open: false,
        }
    }

    fn print(&mut self, event: &OperateEvent) {
        if self.terminal && matches!(event, OperateEvent::Progress { .. }) {
            // `\x1b[K` clears what a longer previous line left behind.
            eprint!("\r  {event}\x1b[K");
            self.progress_open = true;
            return;
        }
        self.finish();
        eprintln!("  {event}");
    }

    /// Ends an open progress line.
    fn finish(&mut self) {
        if std::mem::take(&mut self.progress_open) {
            eprintln!();
        }
    }
}

fn print_report(report: &OperateReport, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("encoding the report")?
        );
        return Ok(());
    }
    match &report.planned {
        Some(step) => println!(
            "{}: the first step would be: {step} (dry run: nothing was changed)",
            report.operation
        ),
        None if report.steps == 0 => println!("{}: nothing to do", report.operation),
        None => println!(
            "{} done: {} step{} in {:.1} s",
            report.operation,
            report.steps,
            if report.steps == 1 { "" } else { "s" },
            report.elapsed_ms as f64 / 1000.0
        ),
    }
    for problem in &report.unresolved {
        println!("unresolved: {problem}");
    }
    Ok(())
}
