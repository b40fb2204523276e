//! Long operations in the background: each is one `cinnabar` subcommand (the same one a person
//! would type, e.g. `cinnabar scale --masters 4 --dir D --json`), run as a child process whose
//! stderr lines are its progress and whose stdout is its result. At most one runs per cluster,
//! as the operation journal refuses a second anyway.
//!
//! The child writes into files (`<dir>/<id>.err`, `<id>.out`), never into a pipe: an operation
//! must not die of a broken pipe when the console stops or restarts, and its output stays
//! readable. A finished job is kept as `<id>.json`, so the history survives a restart.
//!
//! Never interprets Redis: it only runs the CLI and reports what the CLI said.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clusters::now_ms;
use crate::error::ApiError;
use crate::lock;

/// Progress lines kept per job; older ones are dropped (the `.err` file keeps them all).
const MAX_LOG_LINES: usize = 400;
/// How often a running job's progress file is read.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// What the API shows of one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its number, from 1, for `GET /api/v1/jobs/{id}`.
    pub id: u64,
    /// The cluster it acts on.
    pub cluster: String,
    /// `create`, `scale`, `failover`, `restart`, `drill`, `backup`, `restore` or `delete`.
    pub action: String,
    /// Who started it.
    pub user: String,
    /// The command line it runs, without the binary's path.
    pub command: String,
    /// `running`, `succeeded`, `refused` (nothing changed), `failed`, or `unknown` (the
    /// console stopped while it ran: see the cluster's status).
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// The command's exit code.
    pub exit_code: Option<i32>,
    /// Its progress lines (stderr), oldest first.
    pub log: Vec<String>,
    /// Its result: stdout as JSON when it is JSON, else as text.
    pub result: Option<serde_json::Value>,
    /// For a drill: the id of its report (see the drills resource).
    pub drill: Option<String>,
}

/// Called once a job ended, with its final view (to audit the outcome).
pub type OnDone = Box<dyn FnOnce(&Job) + Send>;

/// Every job, kept in a directory of the console's.
pub struct Jobs {
    dir: PathBuf,
    all: Mutex<BTreeMap<u64, Arc<Mutex<Job>>>>,
}

/// What to run.
pub struct Spec {
    /// The cluster it acts on.
    pub cluster: String,
    /// The action's name.
    pub action: &'static str,
    /// Who asked.
    pub user: String,
    /// The `cinnabar` binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// For a drill, its report id.
    pub drill: Option<String>,
}

impl Jobs {
    /// The jobs kept in `dir` (created if missing). A job that has output files but no
    /// record was running when the console stopped: it is shown as `unknown`, with its output.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: &Path) -> std::io::Result<Jobs> {
        std::fs::create_dir_all(dir)?;
        let mut all = BTreeMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(job) = std::fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Job>(&bytes).ok())
            {
                all.insert(id, Arc::new(Mutex::new(job)));
            }
        }
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".err")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            all.entry(id).or_insert_with(|| {
                let mut lines = Vec::new();
                let mut offset = 0;
                read_new_lines(&entry.path(), &mut offset, &mut lines);
                Arc::new(Mutex::new(Job {
                    id,
                    cluster: String::new(),
                    action: "unknown".to_owned(),
                    user: String::new(),
                    command: String::new(),
                    state: "unknown".to_owned(),
                    started_ms: 0,
                    finished_ms: None,
                    exit_code: None,
                    log: lines,
                    result: None,
                    drill: None,
                }))
            });
        }
        // A record written while its job ran says `running`: the console stopped since.
        for job in all.values() {
            let mut job = lock(job);
            if job.state == "running" {
                job.state = "unknown".to_owned();
            }
        }
        Ok(Jobs {
            dir: dir.to_owned(),
            all: Mutex::new(all),
        })
    }

    /// Starts `spec` in the background and returns its id.
    ///
    /// # Errors
    /// [`ApiError::Conflict`] when a job on the same cluster is still running (naming it);
    /// [`ApiError::Internal`] when the command cannot be started.
    pub fn start(&self, spec: Spec, on_done: OnDone) -> Result<u64, ApiError> {
        let mut all = lock(&self.all);
        if let Some(busy) = all
            .values()
            .map(|j| lock(j).clone())
            .find(|j| j.cluster == spec.cluster && j.state == "running")
        {
            return Err(ApiError::Conflict(format!(
                "{} is busy: job {} ({}) is running; wait for it to end",
                spec.cluster, busy.id, busy.action
            )));
        }
        let id = all.keys().next_back().map_or(1, |last| last + 1);
        let err_path = self.dir.join(format!("{id}.err"));
        let out_path = self.dir.join(format!("{id}.out"));
        let internal =
            |e: std::io::Error| ApiError::Internal(format!("cannot start cinnabar: {e}"));
        let err = std::fs::File::create(&err_path).map_err(internal)?;
        let out = std::fs::File::create(&out_path).map_err(internal)?;
        let mut child = tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(internal)?;
        let job = Arc::new(Mutex::new(Job {
            id,
            cluster: spec.cluster,
            action: spec.action.to_owned(),
            user: spec.user,
            command: format!("cinnabar {}", spec.args.join(" ")),
            state: "running".to_owned(),
            started_ms: now_ms(),
            finished_ms: None,
            exit_code: None,
            log: Vec::new(),
            result: None,
            drill: spec.drill,
        }));
        all.insert(id, Arc::clone(&job));
        let record = self.dir.join(format!("{id}.json"));
        save(&record, &lock(&job));
        tokio::spawn(async move {
            let mut offset = 0;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = tokio::time::sleep(FOLLOW_EVERY) => {
                        read_new_lines(&err_path, &mut offset, &mut lock(&job).log);
                    }
                }
            };
            let view = {
                let mut job = lock(&job);
                read_new_lines(&err_path, &mut offset, &mut job.log);
                let code = status.ok().and_then(|s| s.code());
                job.exit_code = code;
                job.state = match code {
                    Some(0) => "succeeded",
                    // The CLI's exit code 2: refused with nothing changed.
                    Some(2) => "refused",
                    _ => "failed",
                }
                .to_owned();
                job.finished_ms = Some(now_ms());
                let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                let text = text.trim();
                job.result = (!text.is_empty()).then(|| {
                    serde_json::from_str(text)
                        .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
                });
                save(&record, &job);
                job.clone()
            };
            on_done(&view);
        });
        Ok(id)
    }

    /// Job `id`.
    pub fn get(&self, id: u64) -> Option<Job> {
        lock(&self.all).get(&id).map(|j| lock(j).clone())
    }

    /// Every job, newest first; only `cluster`'s when given.
    pub fn list(&self, cluster: Option<&str>) -> Vec<Job> {
        lock(&self.all)
            .values()
            .rev()
            .map(|j| lock(j).clone())
            .filter(|j| cluster.is_none_or(|c| j.cluster == c))
            .collect()
    }

    /// The running job on `cluster`, if any.
    pub fn running(&self, cluster: &str) -> Option<Job> {
        self.list(Some(cluster))
            .into_iter()
            .find(|j| j.state == "running")
    }
}

/// Appends the complete lines written to `path` after `offset` to `log` (keeping the last
/// [`MAX_LOG_LINES`]) and moves `offset` past them; a partial last line waits for its end.
fn read_new_lines(path: &Path, offset: &mut u64, log: &mut Vec<String>) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(*offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return;
    }
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    *offset += end as u64 + 1;
    for line in String::from_utf8_lossy(&bytes[..end]).lines() {
        log.push(line.to_owned());
    }
    let extra = log.len().saturating_sub(MAX_LOG_LINES);
    log.drain(..extra);
}

/// Writes the job's record (a failure only costs the history, so it is logged, not fatal).
fn save(path: &Path, job: &Job) {
    let written = serde_json::to_vec(job)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(path, bytes));
    if let Err(e) = written {
        tracing::warn!("keeping job {} in {}: {e}", job.id, path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cluster: &str, script: &str) -> Spec {
        Spec {
            cluster: cluster.into(),
            action: "test",
            user: "ann".into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            drill: None,
        }
    }

    async fn finished(jobs: &Jobs, id: u64) -> Job {
        loop {
            let job = jobs.get(id).unwrap();
            if job.state != "running" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_job_reports_progress_lines_and_its_json_result_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let id = jobs
            .start(
                spec(
                    "a",
                    "echo step 1 >&2; echo step 2 >&2; echo '{\"ok\":true}'",
                ),
                Box::new(|_| {}),
            )
            .unwrap();
        let job = finished(&jobs, id).await;
        assert_eq!(job.state, "succeeded");
        assert_eq!(job.log, ["step 1", "step 2"]);
        assert_eq!(job.result, Some(serde_json::json!({"ok": true})));
        let reopened = Jobs::open(dir.path()).unwrap();
        assert_eq!(reopened.get(id).unwrap().log, ["step 1", "step 2"]);
    }

    #[tokio::test]
    async fn one_job_per_cluster_and_exit_2_is_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let id = jobs
            .start(spec("a", "sleep 0.3; exit 2"), Box::new(|_| {}))
            .unwrap();
        assert!(matches!(
            jobs.start(spec("a", "true"), Box::new(|_| {})),
            Err(ApiError::Conflict(_))
        ));
        let other = jobs.start(spec("b", "exit 1"), Box::new(|_| {})).unwrap();
        assert_eq!(finished(&jobs, id).await.state, "refused");
        assert_eq!(finished(&jobs, other).await.state, "failed");
    }

    #[tokio::test]
    async fn a_job_running_when_the_console_stopped_is_unknown_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let id = jobs
            .start(spec("a", "echo started >&2; sleep 5"), Box::new(|_| {}))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reopened = Jobs::open(dir.path()).unwrap();
        let job = reopened.get(id).unwrap();
        assert_eq!((job.state.as_str(), job.cluster.as_str()), ("unknown", "a"));
        assert!(reopened.start(spec("a", "true"), Box::new(|_| {})).is_ok());
    }
}
