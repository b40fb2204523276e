//! Running an operation to the end: observe → plan → check → execute → record, repeated.
//!
//! The journal holds the operation while it runs (the platform decides where: a file for local
//! clusters, the custom resource's status on Kubernetes). It is written before each step and
//! cleared when the planner says done, so a run that was killed leaves the operation behind and
//! any later command can say "this cluster is mid-operation: …" and resume it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::execute::{ExecuteOptions, execute};
use crate::observe::observe;
use crate::plan::{Next, Operation, PlanContext, Refusal, Step, check_step, next_step};
use crate::platform::Platform;

/// How long the runner sleeps when the planner waits.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// A step that fails this many times in a row ends the run.
const MAX_STEP_FAILURES: usize = 4;
/// Once an operation has changed something, a refusal must last this long before the run
/// gives up: a node that missed one probe while busy with a fork or a big `MIGRATE` is not a
/// reason to abandon a half-done scale, but a node that stays down is.
const REFUSAL_PATIENCE: Duration = Duration::from_secs(10);

/// The pause before planning again after the `failures`-th failure in a row: 0.25, 0.5, 1,
/// 2 s, so gossip and replication a step depends on get time to catch up.
fn retry_pause(failures: usize) -> Duration {
    WAIT_POLL * (1u32 << failures.saturating_sub(1).min(3))
}

/// An operation in progress, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The operation, with the progress it records.
    pub operation: Operation,
    /// The step under way when the entry was written, if any.
    pub step: Option<Step>,
    /// Steps completed so far.
    pub steps_done: usize,
    /// When the operation started (ms since the Unix epoch).
    pub started_ms: u64,
}

impl std::fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} step", self.operation, self.steps_done)?;
        f.write_str(if self.steps_done == 1 { "" } else { "s" })?;
        match &self.step {
            Some(step) => write!(f, " done; was doing: {step})"),
            None => f.write_str(" done)"),
        }
    }
}

/// Where an operation in progress is kept.
pub trait Journal {
    /// The operation in progress, if any.
    ///
    /// # Errors
    /// The journal cannot be read.
    fn load(&self) -> Result<Option<JournalEntry>, ClusterError>;
    /// Records `entry`.
    ///
    /// # Errors
    /// The journal cannot be written.
    fn save(&mut self, entry: &JournalEntry) -> Result<(), ClusterError>;
    /// Forgets the operation (it finished).
    ///
    /// # Errors
    /// The journal cannot be written.
    fn clear(&mut self) -> Result<(), ClusterError>;
}

/// A journal in a JSON file, replaced atomically on every write.
#[derive(Debug, Clone)]
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// A journal at `path` (created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

fn journal_io(path: &std::path::Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Journal(format!("{}: {e}", path.display()))
}

impl Journal for FileJournal {
    fn load(&self) -> Result<Option<JournalEntry>, ClusterError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| journal_io(&self.path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(journal_io(&self.path, e)),
        }
    }

    fn save(&mut self, entry: &JournalEntry) -> Result<(), ClusterError> {
        let text = serde_json::to_vec_pretty(entry).map_err(|e| journal_io(&self.path, e))?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| journal_io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| journal_io(&self.path, e))
    }

    fn clear(&mut self) -> Result<(), ClusterError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(journal_io(&self.path, e)),
        }
    }
}

/// A journal that lives only as long as the run (tests, one-shot library use).
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal(Option<JournalEntry>);

impl Journal for MemoryJournal {
    fn load(&self) -> Result<Option<JournalEntry>, ClusterError> {
        Ok(self.0.clone())
    }

    fn save(&mut self, entry: &JournalEntry) -> Result<(), ClusterError> {
        self.0 = Some(entry.clone());
        Ok(())
    }

    fn clear(&mut self) -> Result<(), ClusterError> {
        self.0 = None;
        Ok(())
    }
}

/// What the runner reports while it works. `Display` is one human line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OperateEvent {
    /// A step is starting.
    Step {
        /// Its number, from 1.
        number: usize,
        /// The step.
        step: Step,
    },
    /// A step finished.
    StepDone {
        /// Its number.
        number: usize,
        /// How long it took.
        elapsed_ms: u64,
        /// What it found worth saying.
        note: Option<String>,
    },
    /// Progress inside a long step (slot migration).
    Progress {
        /// One line.
        line: String,
    },
    /// Waiting for the cluster (a replica syncing, …).
    Waiting {
        /// Why.
        reason: String,
    },
    /// A step failed and will be planned again.
    Retrying {
        /// What went wrong.
        error: String,
    },
}

impl std::fmt::Display for OperateEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step { number, step } => write!(f, "step {number}: {step}"),
            Self::StepDone {
                number,
                elapsed_ms,
                note,
            } => {
                write!(f, "step {number} done in {elapsed_ms} ms")?;
                if let Some(note) = note {
                    write!(f, ": {note}")?;
                }
                Ok(())
            }
            Self::Progress { line } => f.write_str(line),
            Self::Waiting { reason } => write!(f, "waiting: {reason}"),
            Self::Retrying { error } => write!(f, "step failed, planning again: {error}"),
        }
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct OperateOptions {
    /// How steps are executed.
    pub execute: ExecuteOptions,
    /// Upper bound for the whole operation.
    pub timeout: Duration,
    /// Plan and report the first step, but change nothing.
    pub dry_run: bool,
}

impl Default for OperateOptions {
    fn default() -> Self {
        Self {
            execute: ExecuteOptions::default(),
            timeout: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperateReport {
    /// The operation.
    pub operation: String,
    /// Steps executed.
    pub steps: usize,
    /// Wall time.
    pub elapsed_ms: u64,
    /// What could not be fixed (heal), one sentence each.
    pub unresolved: Vec<String>,
    /// For a dry run: the step that would run first.
    pub planned: Option<Step>,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperateError {
    /// The planner refused; nothing was changed by this refusal.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A step would have broken a safety rule (a planner bug caught before it did harm).
    #[error("step `{step}` was not executed: {rule}")]
    Unsafe {
        /// The step.
        step: Step,
        /// The rule it would break.
        rule: String,
    },
    /// A step kept failing.
    #[error("step `{step}` failed {MAX_STEP_FAILURES} times; last error: {error}")]
    StepFailed {
        /// The step.
        step: Step,
        /// The last error.
        error: String,
    },
    /// The operation did not finish in time.
    #[error("{operation} did not finish within {} s (last: {last})", after.as_secs())]
    Timeout {
        /// The operation.
        operation: String,
        /// The limit.
        after: Duration,
        /// The last thing it was doing or waiting for.
        last: String,
    },
    /// The platform or journal failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one call to [`advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advance {
    /// A step was executed.
    Stepped {
        /// The step.
        step: Step,
    },
    /// Nothing to do but wait; observe again shortly.
    Waiting {
        /// Why.
        reason: String,
    },
    /// The step failed; the next call plans again from what the cluster is now.
    Failed {
        /// The step.
        step: Step,
        /// What went wrong.
        error: String,
    },
    /// The operation is complete.
    Done {
        /// What could not be fixed (heal), one sentence each.
        unresolved: Vec<String>,
    },
    /// A dry run: the step that would run, not executed.
    Planned {
        /// The step.
        step: Step,
    },
}

/// Takes at most one step of `entry.operation`: observe, plan, check, execute, record.
///
/// This is the unit a controller runs per reconcile; [`run_operation`] loops over it. The
/// journal is written before the step (with the step) and after it (with the progress), so a
/// crash between the two resumes from the observation, never from a stale plan.
///
/// # Errors
/// A refusal by the planner, a step that would break a safety rule, or a platform/journal error.
pub async fn advance<P: Platform + Send>(
    entry: &mut JournalEntry,
    platform: &mut P,
    journal: &mut (dyn Journal + Send),
    options: &OperateOptions,
    on_event: &mut (dyn FnMut(OperateEvent) + Send),
) -> Result<Advance, OperateError> {
    let context = PlanContext {
        hosts: platform.hosts(),
    };
    let nodes = platform.nodes().await?;
    let observed = observe(
        &nodes,
        options.execute.timeouts,
        options.execute.credentials.as_ref(),
    )
    .await;
    let step = match next_step(&entry.operation, &observed, &context)? {
        Next::Done { unresolved } => return Ok(Advance::Done { unresolved }),
        Next::Wait(reason) => return Ok(Advance::Waiting { reason }),
        Next::Step(step) => step,
    };
    if let Err(rule) = check_step(&step, &observed) {
        return Err(OperateError::Unsafe { step, rule });
    }
    if options.dry_run {
        return Ok(Advance::Planned { step });
    }
    let number = entry.steps_done + 1;
    entry.step = Some(step.clone());
    journal.save(entry)?;
    on_event(OperateEvent::Step {
        number,
        step: step.clone(),
    });
    let started = Instant::now();
    let mut progress = |line: String| on_event(OperateEvent::Progress { line });
    let executed = execute(&step, &observed, platform, &options.execute, &mut progress).await;
    // Even a failed step may have changed the cluster (half its slots moved, say).
    tell_endpoint(platform, on_event).await;
    match executed {
        Ok(done) => {
            entry.operation.record(&step, done.node_id.as_deref());
            entry.step = None;
            entry.steps_done = number;
            journal.save(entry)?;
            on_event(OperateEvent::StepDone {
                number,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                note: done.note,
            });
            Ok(Advance::Stepped { step })
        }
        Err(error) => Ok(Advance::Failed {
            step,
            error: error.to_string(),
        }),
    }
}

/// Tells the platform's endpoint that the cluster changed; a failure is reported, not fatal.
async fn tell_endpoint<P: Platform + Send>(
    platform: &mut P,
    on_event: &mut (dyn FnMut(OperateEvent) + Send),
) {
    if let Err(e) = platform.topology_changed().await {
        on_event(OperateEvent::Progress {
            line: format!(
                "the endpoint was not told of the change (it catches up on its own): {e}"
            ),
        });
    }
}

/// Reports a wait once, not on every poll while the reason stays the same.
fn report_wait(
    reason: &str,
    last_wait: &mut String,
    on_event: &mut (dyn FnMut(OperateEvent) + Send),
) {
    if reason != last_wait {
        on_event(OperateEvent::Waiting {
            reason: reason.to_owned(),
        });
        reason.clone_into(last_wait);
    }
}

/// Runs `operation` until the planner says it is done.
///
/// A refusal on the very first plan changes nothing. Later, the journal keeps the operation so
/// a new run can resume it (`operation` is then the journaled one). Once a step has run, a
/// refusal (a node that did not answer, say) is observed again for `REFUSAL_PATIENCE` before
/// the run gives up, and a failed step is planned again after a growing pause, at most
/// `MAX_STEP_FAILURES` times in a row.
///
/// # Errors
/// See [`OperateError`].
pub async fn run_operation<P: Platform + Send>(
    operation: Operation,
    platform: &mut P,
    journal: &mut (dyn Journal + Send),
    options: &OperateOptions,
    on_event: &mut (dyn FnMut(OperateEvent) + Send),
) -> Result<OperateReport, OperateError> {
    let started = Instant::now();
    let mut entry = JournalEntry {
        operation,
        step: None,
        steps_done: 0,
        started_ms: now_ms(),
    };
    let mut failures = 0;
    let mut refused_since: Option<Instant> = None;
    let mut last_wait = String::new();
    let mut last = String::from("planning");
    loop {
        if started.elapsed() > options.timeout {
            return Err(OperateError::Timeout {
                operation: entry.operation.to_string(),
                after: options.timeout,
                last,
            });
        }
        let report = |entry: &JournalEntry, unresolved, planned| OperateReport {
            operation: entry.operation.name().to_owned(),
            steps: entry.steps_done,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            unresolved,
            planned,
        };
        let advanced = match advance(&mut entry, platform, journal, options, on_event).await {
            Err(OperateError::Refused(refusal)) if entry.steps_done > 0 && !options.dry_run => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= REFUSAL_PATIENCE {
                    return Err(OperateError::Refused(refusal));
                }
                last = format!("{refusal}; observing again");
                report_wait(&last, &mut last_wait, on_event);
                tokio::time::sleep(WAIT_POLL * 2).await;
                continue;
            }
            other => other?,
        };
        refused_since = None;
        match advanced {
            Advance::Done { unresolved } => {
                if !options.dry_run {
                    journal.clear()?;
                }
                // What settled after the last step (a promotion, a node forgotten) counts too.
                if entry.steps_done > 0 {
                    tell_endpoint(platform, on_event).await;
                }
                return Ok(report(&entry, unresolved, None));
            }
            Advance::Planned { step } => return Ok(report(&entry, Vec::new(), Some(step))),
            Advance::Waiting { reason } => {
                report_wait(&reason, &mut last_wait, on_event);
                last = reason;
                tokio::time::sleep(WAIT_POLL).await;
            }
            Advance::Stepped { step } => {
                failures = 0;
                last_wait.clear();
                last = step.to_string();
            }
            Advance::Failed { step, error } => {
                failures += 1;
                if failures >= MAX_STEP_FAILURES {
                    return Err(OperateError::StepFailed { step, error });
                }
                on_event(OperateEvent::Retrying { error });
                tokio::time::sleep(retry_pause(failures)).await;
            }
        }
    }
}
