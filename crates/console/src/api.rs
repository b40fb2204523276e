//! The JSON API under `/api/v1`: one function per route, each a read through `clusters` or an
//! action started through `jobs` (answered `202` with the job to poll). Documented in
//! `docs/console.md` and `docs/console-openapi.json`.
//!
//! Handlers trust `server` for the session, role and CSRF checks and never repeat or skip them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cinnabar_audit::Outcome;
use serde::{Deserialize, Serialize};

use crate::actions::{
    self, CreateRequest, DrillRequest, FailoverRequest, RestoreRequest, ScaleRequest,
};
use crate::auth::Session;
use crate::clusters::{self, Summary};
use crate::error::ApiError;
use crate::http::{Reply, cleared_cookie, json_body, session_cookie};
use crate::jobs::{Job, Spec};
use crate::routes::Handler;
use crate::server::{App, Call};

/// The OpenAPI description, served as is.
pub const OPENAPI: &str = include_str!("../../../docs/console-openapi.json");

/// How long a failed login waits before it is answered, so guessing is slow.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(300);

/// `POST /api/v1/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's name.
    pub user: String,
    /// The password (compared by digest, never stored).
    pub password: String,
}

/// A cluster in the list, with the console's running job on it.
#[derive(Debug, Serialize)]
pub struct ListItem {
    /// The cluster.
    #[serde(flatten)]
    pub summary: Summary,
    /// The job running on it, if any.
    pub running_job: Option<Job>,
}

/// Answers an API route.
///
/// # Errors
/// Whatever the route's read or action refuses, as [`ApiError`].
pub async fn handle(app: &Arc<App>, call: &Call) -> Result<Reply, ApiError> {
    match (&app.kube, call.route.handler) {
        (
            Some(_),
            Handler::ApiSession
            | Handler::ApiLogin
            | Handler::ApiLogout
            | Handler::ApiJobs
            | Handler::ApiJob
            | Handler::ApiOpenapi,
        )
        | (None, _) => handle_local(app, call).await,
        (Some(kube), _) => handle_kubernetes(app, kube, call).await,
    }
}

/// Kubernetes mode: the list, one resource, and scale; nothing else.
async fn handle_kubernetes(
    app: &Arc<App>,
    kube: &crate::kubernetes::KubeClusters,
    call: &Call,
) -> Result<Reply, ApiError> {
    let name = call.params.first().map_or("", String::as_str);
    match call.route.handler {
        Handler::ApiClusters => Ok(Reply::json(200, &kube.list().await?)),
        Handler::ApiCluster => Ok(Reply::json(200, &kube.get(name).await?)),
        Handler::ApiScale => {
            let request: ScaleRequest = json_body(&call.body)?;
            kube_scale(app, kube, call, name, &request).await?;
            Ok(Reply::json(
                200,
                &serde_json::json!({
                    "patched": name,
                    "message": "spec updated: the operator scales the cluster (watch its Progressing condition)",
                }),
            ))
        }
        _ => Err(ApiError::BadRequest(
            "not in Kubernetes mode: there the console lists RedisClusters and scales them; use \
             kubectl and the operator for the rest"
                .to_owned(),
        )),
    }
}

/// Scales a `RedisCluster` (a spec edit) and audits it.
///
/// # Errors
/// As [`crate::kubernetes::KubeClusters::scale`].
pub async fn kube_scale(
    app: &App,
    kube: &crate::kubernetes::KubeClusters,
    call: &Call,
    name: &str,
    request: &ScaleRequest,
) -> Result<(), ApiError> {
    let session = call.session.as_ref().ok_or(ApiError::Unauthorized)?;
    let outcome = kube.scale(name, request.masters, request.replicas).await;
    let (result, error) = match &outcome {
        Ok(()) => (Outcome::Ok, None),
        Err(e) => (Outcome::Error, Some(e.to_string())),
    };
    app.audit(call.client, &session.user, "scale", name, result, error);
    outcome
}

/// The local platform: the clusters under the root.
async fn handle_local(app: &Arc<App>, call: &Call) -> Result<Reply, ApiError> {
    let param = |i: usize| call.params.get(i).map_or("", String::as_str);
    match call.route.handler {
        Handler::ApiSession => Ok(Reply::json(200, &call.session)),
        Handler::ApiLogin => {
            let request: LoginRequest = json_body(&call.body)?;
            let (token, session) =
                login(app, call.client, &request.user, &request.password).await?;
            Ok(Reply::json(200, &session).with_header("set-cookie", session_cookie(&token)))
        }
        Handler::ApiLogout => {
            logout(app, call);
            Ok(Reply::json(200, &serde_json::json!({"logged_out": true}))
                .with_header("set-cookie", cleared_cookie()))
        }
        Handler::ApiClusters => Ok(Reply::json(200, &list(app).await)),
        Handler::ApiCluster => {
            let detail = clusters::detail(&app.config.root, param(0)).await?;
            let drills = clusters::drills(&app.config.root.join(param(0)));
            let jobs = app.jobs.list(Some(param(0)));
            let mut value =
                serde_json::to_value(&detail).map_err(|e| ApiError::Internal(e.to_string()))?;
            value["drills"] = serde_json::to_value(drills).unwrap_or_default();
            value["jobs"] = serde_json::to_value(jobs).unwrap_or_default();
            Ok(Reply::json(200, &value))
        }
        Handler::ApiMetrics => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let mut metrics = clusters::metrics(&dir).await?;
            if let Some(now) = &metrics.latency {
                let mut last = app
                    .latency
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(before) = last.insert(param(0).to_owned(), now.clone()) {
                    let window = now.minus(&before);
                    metrics.requests = Some(window.count());
                    metrics.latency_p50_us = window.quantile(0.5);
                    metrics.latency_p99_us = window.quantile(0.99);
                }
            }
            Ok(Reply::json(200, &metrics))
        }
        Handler::ApiCreate => {
            let request: CreateRequest = json_body(&call.body)?;
            create(app, call, &request)
        }
        Handler::ApiScale => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let request: ScaleRequest = json_body(&call.body)?;
            let args = actions::scale_args(&request, &dir)?;
            start(app, call, param(0), "scale", args, None)
        }
        Handler::ApiFailover => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let request: FailoverRequest = json_body(&call.body)?;
            let args = actions::failover_args(&request, &dir);
            start(app, call, param(0), "failover", args, None)
        }
        Handler::ApiDrillStart => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let request: DrillRequest = json_body(&call.body)?;
            // `2026-12-05T19:59:28.639Z` as `20261205T195928639Z`: readable, sortable, and
            // safe as a folder name and a URL segment.
            let id: String = cinnabar_audit::rfc3339_millis(std::time::SystemTime::now())
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let report = clusters::drills_dir(&dir).join(&id);
            let args = actions::drill_args(&request, &dir, &report)?;
            start(app, call, param(0), "drill", args, Some(id))
        }
        Handler::ApiDrills => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            Ok(Reply::json(200, &clusters::drills(&dir)))
        }
        Handler::ApiDrill => {
            let path = drill_file(app, param(0), param(1), "report.json")?;
            let text = read(&path)?;
            let report: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::Internal(format!("the report is not JSON: {e}")))?;
            Ok(Reply::json(200, &report))
        }
        Handler::ApiTimeline => {
            let path = drill_file(app, param(0), param(1), "timeline.svg")?;
            Ok(Reply::svg(read(&path)?))
        }
        Handler::ApiBackup => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let args = actions::backup_args(&dir, &store(app), param(0));
            start(app, call, param(0), "backup", args, None)
        }
        Handler::ApiRestart => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            start(
                app,
                call,
                param(0),
                "restart",
                actions::restart_args(&dir),
                None,
            )
        }
        Handler::ApiBackups => {
            clusters::dir_of(&app.config.root, param(0))?;
            Ok(Reply::json(200, &backups(app, param(0)).await?))
        }
        Handler::ApiRestore => {
            clusters::dir_of(&app.config.root, param(0))?;
            let request: RestoreRequest = json_body(&call.body)?;
            let args = actions::restore_args(
                &request,
                param(0),
                &store(app),
                &app.config.root,
                app.config.ports,
                app.config.redis_server.as_deref(),
            )?;
            // The job belongs to the new cluster: its page follows the restore.
            start(app, call, &request.name, "restore", args, None)
        }
        Handler::ApiRefusals => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            Ok(Reply::json(200, &clusters::refusals(&dir, REFUSALS_SHOWN)))
        }
        Handler::ApiDelete => {
            let dir = clusters::dir_of(&app.config.root, param(0))?;
            let args = actions::delete_args(&dir);
            start(app, call, param(0), "delete", args, None)
        }
        Handler::ApiJobs => Ok(Reply::json(
            200,
            &app.jobs.list(call.query.get("cluster").map(String::as_str)),
        )),
        Handler::ApiJob => {
            let job = param(0)
                .parse()
                .ok()
                .and_then(|id| app.jobs.get(id))
                .ok_or_else(|| ApiError::NotFound(format!("no job {}", param(0))))?;
            Ok(Reply::json(200, &job))
        }
        Handler::ApiOpenapi => Ok(Reply::asset("application/json", OPENAPI)),
        _ => Err(ApiError::NotFound("not an API route".to_owned())),
    }
}

/// Refusals shown per cluster.
pub const REFUSALS_SHOWN: usize = 20;

/// How long listing the backups may take (an object store can be slow to answer).
const BACKUP_LIST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where backups go.
pub fn store(app: &App) -> String {
    app.config
        .backup_to
        .clone()
        .unwrap_or_else(|| actions::default_store(&app.config.root))
}

/// Cluster `name`'s complete backups, oldest first, as `cinnabar backup list --json` prints
/// them (an empty list when the store has none yet).
///
/// # Errors
/// [`ApiError::Internal`] with the CLI's message when the store cannot be read.
pub async fn backups(app: &App, name: &str) -> Result<serde_json::Value, ApiError> {
    let output = tokio::time::timeout(
        BACKUP_LIST_TIMEOUT,
        tokio::process::Command::new(&app.config.cinnabar)
            .args(actions::backup_list_args(&store(app), name))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| ApiError::Internal("listing the backups took too long".to_owned()))?
    .map_err(|e| ApiError::Internal(format!("cannot run cinnabar: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ApiError::Internal(
            stderr
                .lines()
                .last()
                .unwrap_or("backup list failed")
                .to_owned(),
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| ApiError::Internal(format!("backup list printed no JSON: {e}")))
}

/// Every cluster with its running job.
pub async fn list(app: &App) -> Vec<ListItem> {
    clusters::list(&app.config.root)
        .await
        .into_iter()
        .map(|summary| ListItem {
            running_job: app.jobs.running(&summary.name),
            summary,
        })
        .collect()
}

/// Checks a login and opens a session; a failure is audited and answered slowly.
///
/// # Errors
/// [`ApiError::Unauthorized`]-like 403 for a wrong user, password or role, all alike.
pub async fn login(
    app: &App,
    client: SocketAddr,
    user: &str,
    password: &str,
) -> Result<(String, Session), ApiError> {
    match app.users.login(user, password) {
        Some((user, role)) => {
            let (token, session) = app.sessions.open(user, role);
            app.audit(client, &session.user, "login", "-", Outcome::Ok, None);
            Ok((token, session))
        }
        None => {
            app.auditor
                .record(cinnabar_audit::AuditRecord::auth_failure(client, user));
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            Err(ApiError::Forbidden(
                "wrong user or password, or a role the console does not know".to_owned(),
            ))
        }
    }
}

/// Ends the caller's session.
pub fn logout(app: &App, call: &Call) {
    if let (Some(token), Some(session)) = (&call.token, &call.session) {
        app.sessions.close(token);
        app.audit(call.client, &session.user, "logout", "-", Outcome::Ok, None);
    }
}

/// Starts `cinnabar up --detach` for a new cluster.
///
/// # Errors
/// As [`actions::create_args`], and a job already running under that name.
pub fn create(app: &Arc<App>, call: &Call, request: &CreateRequest) -> Result<Reply, ApiError> {
    let outcome = actions::create_args(
        request,
        &app.config.root,
        app.config.ports,
        app.config.redis_server.as_deref(),
    );
    match outcome {
        Ok(args) => start(app, call, &request.name, "create", args, None),
        Err(e) => {
            if let Some(session) = &call.session {
                app.audit(
                    call.client,
                    &session.user,
                    "create",
                    &request.name,
                    Outcome::Error,
                    Some(e.to_string()),
                );
            }
            Err(e)
        }
    }
}

/// Starts `args` as a job on `cluster`, audits the request now and the outcome at the end, and
/// answers `202 {"job": id, ...}`.
///
/// # Errors
/// [`ApiError::Conflict`] when the cluster is busy; [`ApiError::Internal`] when the command
/// cannot start.
pub fn start(
    app: &Arc<App>,
    call: &Call,
    cluster: &str,
    action: &'static str,
    args: Vec<String>,
    drill: Option<String>,
) -> Result<Reply, ApiError> {
    let session = call.session.as_ref().ok_or(ApiError::Unauthorized)?;
    let done = {
        let app = Arc::clone(app);
        let client = call.client;
        Box::new(move |job: &Job| {
            // `down --purge` removes what the platform made; the console's own files (drill
            // reports) and the directory go with them, so the name can be used again.
            if job.action == "delete" && job.state == "succeeded" {
                let dir = app.config.root.join(&job.cluster);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
            }
            let (outcome, error) = if job.state == "succeeded" {
                (Outcome::Ok, None)
            } else {
                let last = job.log.last().cloned().unwrap_or_default();
                (Outcome::Error, Some(format!("{}: {last}", job.state)))
            };
            app.audit(
                client,
                &job.user,
                &format!("{}-end", job.action),
                &job.cluster,
                outcome,
                error,
            );
        })
    };
    let spec = Spec {
        cluster: cluster.to_owned(),
        action,
        user: session.user.clone(),
        program: app.config.cinnabar.clone(),
        args,
        drill,
    };
    match app.jobs.start(spec, done) {
        Ok(id) => {
            app.audit(
                call.client,
                &session.user,
                action,
                cluster,
                Outcome::Ok,
                None,
            );
            let job = app.jobs.get(id);
            Ok(Reply::json(
                202,
                &serde_json::json!({ "job": id, "url": format!("/api/v1/jobs/{id}"), "detail": job }),
            ))
        }
        Err(e) => {
            app.audit(
                call.client,
                &session.user,
                action,
                cluster,
                Outcome::Error,
                Some(e.to_string()),
            );
            Err(e)
        }
    }
}

fn drill_file(app: &App, name: &str, id: &str, file: &str) -> Result<std::path::PathBuf, ApiError> {
    let dir = clusters::dir_of(&app.config.root, name)?;
    clusters::check_drill_id(id)?;
    Ok(clusters::drills_dir(&dir).join(id).join(file))
}

fn read(path: &std::path::Path) -> Result<String, ApiError> {
    std::fs::read_to_string(path).map_err(|_| {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        ApiError::NotFound(format!("{file} is not there (yet)"))
    })
}
