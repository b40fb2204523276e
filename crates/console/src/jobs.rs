//! Long operations in the background: each is one `cinnabar` subcommand (the same one a person
//! would type, e.g. `cinnabar scale --masters 4 --dir D --json`), run as a child process whose
//! stderr lines are its progress and whose stdout is its result. At most one runs per cluster,
//! as the operation journal refuses a second anyway.
//!
//! Never interprets Redis: it only runs the CLI and reports what the CLI said.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use crate::clusters::now_ms;
use crate::error::ApiError;

/// Progress lines kept per job; older ones are dropped (the CLI's own log keeps them all).
const MAX_LOG_LINES: usize = 400;

/// What the API shows of one job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Its number, from 1, for `GET /api/v1/jobs/{id}`.
    pub id: u64,
    /// The cluster it acts on.
    pub cluster: String,
    /// `create`, `scale`, `failover`, `drill`, `backup` or `delete`.
    pub action: String,
    /// Who started it.
    pub user: String,
    /// The command line it runs, without the binary's path.
    pub command: String,
    /// `running`, `succeeded`, `refused` (nothing changed) or `failed`.
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

/// Every job since the console started.
#[derive(Default)]
pub struct Jobs {
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
        let mut child = tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ApiError::Internal(format!("cannot start cinnabar: {e}")))?;
        let id = all.keys().next_back().map_or(1, |last| last + 1);
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
        let stderr = child.stderr.take();
        let stdout = child.stdout.take();
        tokio::spawn(async move {
            let follow = {
                let job = Arc::clone(&job);
                async move {
                    let Some(stderr) = stderr else { return };
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let mut job = lock(&job);
                        if job.log.len() == MAX_LOG_LINES {
                            job.log.remove(0);
                        }
                        job.log.push(line);
                    }
                }
            };
            let output = async move {
                let mut text = String::new();
                if let Some(mut stdout) = stdout {
                    let _ = stdout.read_to_string(&mut text).await;
                }
                text
            };
            let ((), text, status) = tokio::join!(follow, output, child.wait());
            let view = {
                let mut job = lock(&job);
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
                let text = text.trim();
                job.result = (!text.is_empty()).then(|| {
                    serde_json::from_str(text)
                        .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
                });
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

/// A poisoned lock only means a panic mid-update of a plain record: go on.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_job_reports_progress_lines_and_its_json_result() {
        let jobs = Jobs::default();
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
    }

    #[tokio::test]
    async fn one_job_per_cluster_and_exit_2_is_a_refusal() {
        let jobs = Jobs::default();
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
}
