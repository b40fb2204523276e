//! The server-rendered pages: login, cluster list, one cluster (with its live chart and action
//! buttons), the create form, a drill report, a job. Plain HTML; `assets/console.js` adds the
//! polling and the confirmed actions (through the JSON API).
//!
//! Every value from a cluster, a user or a request goes through `escape` (the drill crate's,
//! which its SVG timeline uses too); no secret is ever rendered (the CSRF token is the one
//! per-session value a page carries, for its scripts).
//! Action buttons are rendered only for roles that may use them.

use std::fmt::Write as _;
use std::sync::Arc;

use cinnabar_drill::svg::escape as e;
use cinnabar_local::spec::human_bytes;

use crate::auth::{Role, Session};
use crate::clusters::{self, Detail, Summary};
use crate::error::ApiError;
use crate::http::{Reply, cleared_cookie, form, session_cookie};
use crate::jobs::Job;
use crate::routes::Handler;
use crate::server::{App, Call};

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

/// Answers a page route.
///
/// # Errors
/// [`ApiError`] for a missing cluster, report or job (shown as an error page).
pub async fn handle(app: &Arc<App>, call: &Call) -> Result<Reply, ApiError> {
    let param = |i: usize| call.params.get(i).map_or("", String::as_str);
    let session = call.session.as_ref();
    if let Some(kube) = &app.kube {
        match call.route.handler {
            Handler::ListPage => {
                let body = kube_list_body(kube.namespace(), &kube.list().await?);
                return Ok(Reply::html(layout("RedisClusters", session, &body)));
            }
            Handler::ClusterPage => {
                let cluster = kube.get(param(0)).await?;
                let body = kube_cluster_body(session, &cluster);
                return Ok(Reply::html(layout(&cluster.name, session, &body)));
            }
            Handler::NewClusterPage | Handler::DrillPage => {
                return Err(ApiError::BadRequest(
                    "in Kubernetes mode the console lists RedisClusters and scales them; create \
                     one with kubectl apply (examples/redis-cluster-small.yaml)"
                        .to_owned(),
                ));
            }
            _ => {}
        }
    }
    match call.route.handler {
        Handler::Css => Ok(Reply::asset("text/css; charset=utf-8", CSS)),
        Handler::Js => Ok(Reply::asset("text/javascript; charset=utf-8", JS)),
        Handler::LoginPage => Ok(Reply::html(login_page(call.query.contains_key("failed")))),
        Handler::LoginForm => {
            let fields = form(&call.body);
            let field = |name: &str| fields.get(name).map_or("", String::as_str);
            match crate::api::login(app, call.client, field("user"), field("password")).await {
                Ok((token, _)) => {
                    Ok(Reply::redirect("/").with_header("set-cookie", session_cookie(&token)))
                }
                Err(_) => Ok(Reply::redirect("/login?failed=1")),
            }
        }
        Handler::LogoutForm => {
            crate::api::logout(app, call);
            Ok(Reply::redirect("/login").with_header("set-cookie", cleared_cookie()))
        }
        Handler::ListPage => {
            let items = crate::api::list(app).await;
            Ok(Reply::html(layout(
                "Clusters",
                session,
                &list_body(session, &items),
            )))
        }
        Handler::NewClusterPage => Ok(Reply::html(layout(
            "New cluster",
            session,
            &new_cluster_body(),
        ))),
        Handler::ClusterPage => {
            let name = param(0);
            let jobs = app.jobs.list(Some(name));
            match clusters::detail(&app.config.root, name).await {
                Ok(detail) => {
                    let dir = app.config.root.join(name);
                    let drills = clusters::drills(&dir);
                    let mut body = cluster_body(session, &detail, &jobs, &drills);
                    // The script's refreshes (`?live`) swap only the live parts: skip the
                    // backup listing, which may ask an object store.
                    if !call.query.contains_key("live") {
                        let backups = crate::api::backups(app, name).await;
                        body.push_str(&backups_section(session, name, &backups));
                        let refusals = clusters::refusals(&dir, crate::api::REFUSALS_SHOWN);
                        body.push_str(&refusals_section(&refusals));
                    }
                    Ok(Reply::html(layout(name, session, &body)))
                }
                // Being created: the state file is not written yet, but its job is running.
                Err(ApiError::NotFound(_)) if !jobs.is_empty() => Ok(Reply::html(layout(
                    name,
                    session,
                    &creating_body(name, &jobs[0]),
                ))),
                Err(err) => Err(err),
            }
        }
        Handler::DrillPage => {
            let (name, id) = (param(0), param(1));
            let dir = clusters::dir_of(&app.config.root, name)?;
            clusters::check_drill_id(id)?;
            let text =
                std::fs::read_to_string(clusters::drills_dir(&dir).join(id).join("report.txt"))
                    .map_err(|_| ApiError::NotFound(format!("no drill report {id} for {name}")))?;
            Ok(Reply::html(layout(
                "Failover drill",
                session,
                &drill_body(name, id, &text),
            )))
        }
        Handler::JobPage => {
            let job = param(0)
                .parse()
                .ok()
                .and_then(|id| app.jobs.get(id))
                .ok_or_else(|| ApiError::NotFound(format!("no job {}", param(0))))?;
            Ok(Reply::html(layout("Operation", session, &job_body(&job))))
        }
        _ => Err(ApiError::NotFound("not a page".to_owned())),
    }
}

/// The page around a body: header with the user, role and logout, the CSRF token for scripts.
fn layout(title: &str, session: Option<&Session>, body: &str) -> String {
    let (csrf, who) = match session {
        Some(s) => (
            e(&s.csrf),
            format!(
                "<span class=\"who\" id=\"who\">{} <span class=\"role\">{}</span></span>\
                 <form method=\"post\" action=\"/logout\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" id=\"logout\">Log out</button></form>",
                e(&s.user),
                s.role.name(),
                e(&s.csrf)
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\">\
         <title>{} · Cinnabar</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/\">Cinnabar</a><nav>{who}</nav></header>\
         <main>{body}</main></body></html>\n",
        e(title)
    )
}

/// An error in page form.
pub fn error_page(error: &ApiError) -> String {
    layout(
        "Error",
        None,
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back to the clusters</a></p>",
            error.status(),
            e(&error.to_string())
        ),
    )
}

fn login_page(failed: bool) -> String {
    let message = if failed {
        "<p class=\"error\" id=\"login-error\">Wrong user or password.</p>"
    } else {
        ""
    };
    layout(
        "Log in",
        None,
        &format!(
            "<h1>Log in</h1>{message}<form method=\"post\" action=\"/login\" class=\"card\" id=\"login\">\
             <label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Log in</button></form>\
             <p class=\"hint\">Users and roles (viewer, operator, admin) come from the console's \
             users file, in the proxy's format.</p>"
        ),
    )
}

fn may(session: Option<&Session>, role: Role) -> bool {
    session.is_some_and(|s| s.role >= role)
}

fn health_badge(summary: &Summary) -> String {
    let (class, text) = if summary.healthy {
        ("ok", "healthy")
    } else if summary.phase == "stopped" {
        ("off", "stopped")
    } else {
        ("bad", "unhealthy")
    };
    format!("<span class=\"badge {class}\" data-health=\"{text}\">{text}</span>")
}

fn memory(summary: &Summary) -> String {
    if summary.maxmemory_bytes > 0 {
        format!(
            "{} / {}",
            human_bytes(summary.used_memory),
            human_bytes(summary.maxmemory_bytes)
        )
    } else {
        human_bytes(summary.used_memory)
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn list_body(session: Option<&Session>, items: &[crate::api::ListItem]) -> String {
    let mut out = String::from("<div class=\"title\"><h1>Clusters</h1>");
    if may(session, Role::Operator) {
        out.push_str(
            "<a class=\"button\" href=\"/clusters/new\" id=\"new-cluster\">New cluster</a>",
        );
    }
    out.push_str("</div><div data-live id=\"cluster-list\">");
    if items.is_empty() {
        out.push_str(if may(session, Role::Operator) {
            "<p class=\"empty\">No clusters yet: create one with <b>New cluster</b>; it is \
             ready in seconds.</p>"
        } else {
            "<p class=\"empty\">No clusters yet.</p>"
        });
    } else {
        out.push_str(
            "<table><thead><tr><th>Name</th><th>Topology</th><th>Shape</th><th>Health</th>\
             <th>Nodes ok</th><th>Memory</th><th>Ops/s</th><th>Keys</th><th>In progress</th>\
             </tr></thead><tbody>",
        );
        for item in items {
            let s = &item.summary;
            let progress = item
                .running_job
                .as_ref()
                .map(|j| format!("{} (job {})", j.action, j.id))
                .or_else(|| s.operation.clone())
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr data-cluster=\"{name}\"><td><a href=\"/clusters/{name}\">{name}</a></td>\
                 <td>{}</td><td>{}×{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                e(&s.topology),
                s.masters,
                s.replicas,
                health_badge(s),
                s.nodes_ok,
                s.nodes,
                memory(s),
                opt(s.ops_per_sec),
                opt(s.keys),
                e(&progress),
                name = e(&s.name),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</div>");
    out
}

fn new_cluster_body() -> String {
    "<h1>New cluster</h1>\
     <form id=\"create\" class=\"card\" data-url=\"/api/v1/clusters\">\
     <label>Name <input name=\"name\" required pattern=\"[a-z0-9][a-z0-9\\-]{0,39}\" \
     title=\"1 to 40 of a-z, 0-9 and -\" placeholder=\"orders\"></label>\
     <label>Topology <select name=\"topology\"><option value=\"cluster\">Redis Cluster \
     (shards × replicas)</option><option value=\"sentinel\">Master/replicas + Sentinel\
     </option></select></label>\
     <label>Shards <input name=\"masters\" type=\"number\" min=\"1\" max=\"64\" value=\"3\"></label>\
     <label>Replicas per shard <input name=\"replicas\" type=\"number\" min=\"0\" max=\"5\" value=\"1\"></label>\
     <label>Memory per node <input name=\"maxmemory\" value=\"256mb\" \
     pattern=\"[0-9]+(b|kb|mb|gb|k|m|g)?\" title=\"e.g. 256mb, 1gb, 0 for none\"></label>\
     <label>Eviction policy <select name=\"maxmemory_policy\">\
     <option>allkeys-lru</option><option>allkeys-lfu</option><option>volatile-lru</option>\
     <option>volatile-lfu</option><option>volatile-ttl</option><option>noeviction</option>\
     </select></label>\
     <p class=\"hint\">Persistence: AOF (everysec) on every node. A Sentinel group has one \
     shard; its replicas default to 2.</p>\
     <button type=\"submit\">Create</button><p class=\"error\" id=\"form-error\" hidden></p></form>"
        .to_owned()
}

fn creating_body(name: &str, job: &Job) -> String {
    if job.state == "running" {
        return format!(
            "<h1>{}</h1><p>Being created…</p>{}",
            e(name),
            job_panel(Some(job), true)
        );
    }
    format!(
        "<h1>{}</h1><p class=\"error\">{} of {} {}: see <a href=\"/jobs/{id}\">job {id}</a>.</p>",
        e(name),
        e(&job.action),
        e(name),
        e(&job.state),
        id = job.id
    )
}

/// The progress panel: filled and polled by the script while `job` runs.
fn job_panel(job: Option<&Job>, reload_when_done: bool) -> String {
    let (id, hidden) = match job.filter(|j| j.state == "running") {
        Some(job) => (job.id.to_string(), ""),
        None => (String::new(), " hidden"),
    };
    format!(
        "<section id=\"job-panel\" class=\"card\" data-job=\"{id}\" data-reload=\"{reload_when_done}\"{hidden}>\
         <h2>Operation <span id=\"job-title\"></span></h2><p id=\"job-state\"></p>\
         <pre id=\"job-log\"></pre><p id=\"job-link\"></p></section>"
    )
}

fn cluster_body(
    session: Option<&Session>,
    detail: &Detail,
    jobs: &[Job],
    drills: &[clusters::DrillEntry],
) -> String {
    let s = &detail.summary;
    let name = e(&s.name);
    let mut out = format!(
        "<div class=\"title\"><h1>{name}</h1></div>\
         <div data-live id=\"cluster-live\">\
         <p>{badge} <span id=\"verdict\">{verdict}</span></p>\
         <dl class=\"facts\"><dt>Endpoint</dt><dd><code>{endpoint}</code> — {how}: \
         <code>redis-cli{c} -h {host} -p {port}</code></dd>\
         <dt>Topology</dt><dd>{topology}</dd><dt>Shape</dt><dd id=\"shape\">{m}×{r}</dd>\
         <dt>Memory</dt><dd>{memory}</dd><dt>Server</dt><dd>{server}</dd>\
         <dt>Slots covered</dt><dd>{slots}</dd><dt>In progress</dt><dd>{operation}</dd></dl>",
        badge = health_badge(s),
        verdict = e(&s.verdict),
        endpoint = e(&s.endpoint),
        // Without a proxy (`up --no-proxy`) the endpoint is a node: cluster-mode clients only.
        how = if detail.status.proxy.is_some() {
            "any Redis client, no cluster mode needed"
        } else {
            "cluster-mode clients"
        },
        c = if detail.status.proxy.is_some() {
            ""
        } else {
            " -c"
        },
        host = e(s.endpoint.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h)),
        port = e(s.endpoint.rsplit_once(':').map_or("", |(_, p)| p)),
        topology = e(&s.topology),
        m = s.masters,
        r = s.replicas,
        memory = memory(s),
        server = e(&detail.status.server),
        slots = detail.status.slots_covered,
        operation = e(s.operation.as_deref().unwrap_or("–")),
    );
    for problem in &detail.status.problems {
        let _ = write!(out, "<p class=\"error\">{}</p>", e(problem));
    }
    out.push_str(
        "<table id=\"nodes\"><thead><tr><th>Node</th><th>Role</th><th>Master</th><th>Slots</th>\
         <th>Health</th><th>Memory</th><th>Host</th><th>Lag</th></tr></thead><tbody>",
    );
    for node in &detail.status.nodes {
        let lag = match (node.lag_bytes, node.lag_seconds) {
            (Some(b), Some(s)) => format!("{b} B, {s} s"),
            (Some(b), None) => format!("{b} B"),
            _ => node
                .offset
                .map_or_else(|| "–".to_owned(), |o| format!("offset {o}")),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"role-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&node.address),
            e(&node.role),
            e(&node.role),
            e(node.master.as_deref().unwrap_or("")),
            e(&node.slots.join(" ")),
            e(&node.health),
            e(node.memory.as_deref().unwrap_or("–")),
            e(node.host.as_deref().unwrap_or("–")),
            e(&lag),
        );
    }
    out.push_str("</tbody></table></div>");
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Load</h2>\
         <p class=\"legend\"><span class=\"ops\">ops/s <b id=\"m-ops\">–</b></span>\
         <span class=\"mem\">memory <b id=\"m-mem\">–</b></span>\
         <span class=\"keys\">keys <b id=\"m-keys\">–</b></span>\
         <span class=\"lat\">p99 latency at the endpoint <b id=\"m-lat\">–</b></span></p>\
         <svg id=\"chart\" viewBox=\"0 0 600 160\" preserveAspectRatio=\"none\" \
         data-url=\"/api/v1/clusters/{name}/metrics\" role=\"img\" \
         aria-label=\"ops per second, memory, keys and p99 latency over the last minutes\"></svg></section>"
    );
    if may(session, Role::Operator) {
        out.push_str(&actions(s, session));
    }
    out.push_str(&job_panel(jobs.first(), false));
    out.push_str("<section class=\"card\" data-live id=\"drill-list\"><h2>Failover drills</h2>");
    if drills.is_empty() {
        out.push_str("<p class=\"empty\">No drill yet.</p>");
    } else {
        out.push_str("<ul id=\"drills\">");
        for drill in drills {
            let _ = write!(
                out,
                "<li><a href=\"/clusters/{name}/drills/{id}\">drill {id}</a> {}</li>",
                e(drill.verdict.as_deref().unwrap_or("running or unfinished")),
                id = e(&drill.id),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    out.push_str(
        "<section class=\"card\" data-live id=\"job-list\"><h2>Operations from this console</h2>\
         <table id=\"jobs\"><thead><tr><th>Job</th><th>Action</th><th>By</th><th>State</th></tr>\
         </thead><tbody>",
    );
    for job in jobs {
        let _ = write!(
            out,
            "<tr><td><a href=\"/jobs/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&job.action),
            e(&job.user),
            e(&job.state),
            id = job.id,
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The action forms, each confirmed and posted by the script to the JSON API.
fn actions(s: &Summary, session: Option<&Session>) -> String {
    let name = e(&s.name);
    let api = format!("/api/v1/clusters/{name}");
    let cluster_only = s.topology == "cluster";
    let mut out = String::from("<section class=\"card\" id=\"actions\"><h2>Actions</h2>");
    if cluster_only {
        let _ = write!(
            out,
            "<form class=\"action\" id=\"scale\" data-url=\"{api}/scale\" \
             data-confirm=\"Scale {name}? Slots move while clients keep working.\">\
             <label>Shards <input name=\"masters\" type=\"number\" min=\"1\" max=\"64\" value=\"{}\"></label>\
             <label>Replicas <input name=\"replicas\" type=\"number\" min=\"0\" max=\"5\" value=\"{}\"></label>\
             <button type=\"submit\">Scale</button></form>",
            s.masters, s.replicas
        );
    }
    let shards = if cluster_only { s.masters } else { 1 };
    let _ = write!(
        out,
        "<form class=\"action\" id=\"failover\" data-url=\"{api}/failover\" \
         data-confirm=\"Hand the master role of this shard of {name} to its best replica?\">\
         <label>Shard <input name=\"shard\" type=\"number\" min=\"0\" max=\"{max}\" value=\"0\"></label>\
         <button type=\"submit\">Fail over</button></form>\
         <form class=\"action\" id=\"restart\" data-url=\"{api}/restart\" \
         data-confirm=\"Restart every node of {name}, one at a time (masters after a failover)?\">\
         <button type=\"submit\">Rolling restart</button></form>\
         <form class=\"action\" id=\"drill\" data-url=\"{api}/drills\" \
         data-confirm=\"Kill a master of {name} under a test workload and measure the failover?\">\
         <label>Shard <input name=\"shard\" type=\"number\" min=\"0\" max=\"{max}\" value=\"0\"></label>\
         <label>Seconds <input name=\"duration_seconds\" type=\"number\" min=\"1\" max=\"600\" value=\"10\"></label>\
         <button type=\"submit\">Run failover drill</button></form>\
         <form class=\"action\" id=\"backup\" data-url=\"{api}/backups\" \
         data-confirm=\"Back up {name} now?\"><button type=\"submit\">Back up now</button></form>",
        max = shards.saturating_sub(1),
    );
    if may(session, Role::Admin) {
        let _ = write!(
            out,
            "<form class=\"action\" id=\"delete\" data-url=\"{api}\" data-method=\"DELETE\" \
             data-confirm=\"Delete {name} and ALL its data? This cannot be undone.\">\
             <button type=\"submit\" class=\"danger\">Delete cluster</button></form>"
        );
    }
    out.push_str("</section>");
    out
}

/// The cluster's backups, and (for operators) a form restoring one into a new cluster.
fn backups_section(
    session: Option<&Session>,
    name: &str,
    backups: &Result<serde_json::Value, ApiError>,
) -> String {
    let mut out = String::from("<section class=\"card\" id=\"backups\"><h2>Backups</h2>");
    let list = match backups {
        Ok(value) => value.as_array().cloned().unwrap_or_default(),
        Err(err) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", e(&err.to_string()));
            Vec::new()
        }
    };
    let text = |b: &serde_json::Value, key: &str| {
        b.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if list.is_empty() {
        out.push_str("<p class=\"empty\">No backup yet.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>Backup</th><th>Finished</th><th>Shards</th></tr></thead><tbody>",
        );
        for backup in list.iter().rev() {
            let shards = backup
                .get("shards")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{shards}</td></tr>",
                e(&text(backup, "name")),
                e(&text(backup, "finished_at")),
            );
        }
        out.push_str("</tbody></table>");
        if may(session, Role::Operator) {
            let mut options = String::new();
            for backup in list.iter().rev() {
                let backup = e(&text(backup, "name"));
                let _ = write!(options, "<option value=\"{backup}\">{backup}</option>");
            }
            let _ = write!(
                out,
                "<form class=\"action\" id=\"restore\" data-url=\"/api/v1/clusters/{n}/restore\" \
                 data-confirm=\"Restore this backup into a new cluster?\" data-goto=\"name\">\
                 <label>Backup <select name=\"backup\">{options}</select></label>\
                 <label>New cluster <input name=\"name\" required \
                 pattern=\"[a-z0-9][a-z0-9\\-]{{0,39}}\" placeholder=\"{n}-restored\"></label>\
                 <label>Shards <input name=\"masters\" type=\"number\" min=\"1\" max=\"64\" value=\"3\"></label>\
                 <label>Replicas <input name=\"replicas\" type=\"number\" min=\"0\" max=\"5\" value=\"1\"></label>\
                 <button type=\"submit\">Restore into a new cluster</button></form>",
                n = e(name),
            );
        }
    }
    out.push_str("</section>");
    out
}

/// What the cluster's proxy refused lately (from its audit trail).
fn refusals_section(refusals: &[clusters::Refusal]) -> String {
    let mut out = String::from(
        "<section class=\"card\" id=\"refusals\"><h2>Recent refusals at the endpoint</h2>",
    );
    if refusals.is_empty() {
        out.push_str("<p class=\"empty\">None.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>Time</th><th>Client</th><th>User</th><th>Command</th>\
             <th>Outcome</th><th>Error</th></tr></thead><tbody>",
        );
        for r in refusals {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&r.time),
                e(&r.client),
                e(&r.user),
                e(&r.command),
                e(&r.outcome),
                e(r.error.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

fn kube_list_body(namespace: &str, clusters: &[crate::kubernetes::KubeSummary]) -> String {
    let mut out = format!(
        "<div class=\"title\"><h1>RedisClusters in {}</h1></div><div data-live id=\"cluster-list\">",
        e(namespace)
    );
    if clusters.is_empty() {
        out.push_str("<p class=\"empty\">No RedisCluster in this namespace.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>Name</th><th>Shape</th><th>Ready</th><th>Spec seen</th>\
             <th>In progress</th><th>Conditions</th></tr></thead><tbody>",
        );
        for c in clusters {
            let conditions: Vec<String> = c
                .conditions
                .iter()
                .map(|c| format!("{}={}", c.kind, c.status))
                .collect();
            let _ = write!(
                out,
                "<tr data-cluster=\"{name}\"><td><a href=\"/clusters/{name}\">{name}</a></td>\
                 <td>{}×{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.shards,
                c.replicas_per_shard,
                kube_badge(c.ready),
                if c.up_to_date { "yes" } else { "not yet" },
                e(c.operation.as_deref().unwrap_or("")),
                e(&conditions.join(" ")),
                name = e(&c.name),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</div>");
    out
}

fn kube_badge(ready: bool) -> &'static str {
    if ready {
        "<span class=\"badge ok\" data-health=\"healthy\">ready</span>"
    } else {
        "<span class=\"badge bad\" data-health=\"unhealthy\">not ready</span>"
    }
}

fn kube_cluster_body(session: Option<&Session>, c: &crate::kubernetes::KubeSummary) -> String {
    let name = e(&c.name);
    let mut out = format!(
        "<div class=\"title\"><h1>{name}</h1></div><div data-live id=\"cluster-live\">\
         <p>{}</p><dl class=\"facts\"><dt>Namespace</dt><dd>{}</dd>\
         <dt>Shape</dt><dd id=\"shape\">{}×{}</dd><dt>Spec seen by the operator</dt><dd>{}</dd>\
         <dt>In progress</dt><dd>{}</dd></dl>\
         <table id=\"conditions\"><thead><tr><th>Condition</th><th>Status</th><th>Reason</th>\
         <th>Message</th></tr></thead><tbody>",
        kube_badge(c.ready),
        e(&c.namespace),
        c.shards,
        c.replicas_per_shard,
        if c.up_to_date { "yes" } else { "not yet" },
        e(c.operation.as_deref().unwrap_or("–")),
    );
    for condition in &c.conditions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&condition.kind),
            e(&condition.status),
            e(&condition.reason),
            e(&condition.message)
        );
    }
    out.push_str(
        "</tbody></table><table id=\"nodes\"><thead><tr><th>Shard</th><th>Master pod</th>\
         <th>Replica pods</th><th>Slots</th><th>Lag (bytes)</th></tr></thead><tbody>",
    );
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    for (i, shard) in c.shard_status.as_array().into_iter().flatten().enumerate() {
        let _ = write!(
            out,
            "<tr><td>{i}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&text(&shard["masterPod"])),
            e(&text(&shard["replicaPods"])),
            e(&text(&shard["slots"])),
            e(&text(&shard["replicationLagBytes"])),
        );
    }
    out.push_str("</tbody></table></div>");
    if may(session, Role::Operator) {
        let _ = write!(
            out,
            "<section class=\"card\" id=\"actions\"><h2>Actions</h2>\
             <form class=\"action\" id=\"scale\" data-url=\"/api/v1/clusters/{name}/scale\" \
             data-confirm=\"Change {name}'s spec? The operator then adds or removes shards, moving slots.\">\
             <label>Shards <input name=\"masters\" type=\"number\" min=\"1\" max=\"1000\" value=\"{}\"></label>\
             <label>Replicas <input name=\"replicas\" type=\"number\" min=\"0\" max=\"5\" value=\"{}\"></label>\
             <button type=\"submit\">Scale</button></form>\
             <p class=\"hint\">On Kubernetes the console edits the RedisCluster's spec; the \
             operator carries the change out. Other operations: kubectl and the operator.</p>\
             </section>{}",
            c.shards,
            c.replicas_per_shard,
            job_panel(None, false),
        );
    }
    out
}

fn drill_body(name: &str, id: &str, text: &str) -> String {
    let (name, id) = (e(name), e(id));
    format!(
        "<p><a href=\"/clusters/{name}\">← {name}</a></p><h1>Failover drill {id}</h1>\
         <img id=\"timeline\" class=\"timeline\" src=\"/api/v1/clusters/{name}/drills/{id}/timeline.svg\" \
         alt=\"timeline of the drill: throughput, errors and latency per second\">\
         <pre class=\"report\">{}</pre>",
        e(text)
    )
}

fn job_body(job: &Job) -> String {
    let mut out = format!(
        "<p><a href=\"/clusters/{c}\">← {c}</a></p><h1>Job {} — {}</h1>\
         <p>By {} · <code>{}</code> · <span id=\"state\">{}</span></p>",
        job.id,
        e(&job.action),
        e(&job.user),
        e(&job.command),
        e(&job.state),
        c = e(&job.cluster),
    );
    out.push_str(&job_panel(Some(job), false));
    let _ = write!(
        out,
        "<pre class=\"report\">{}</pre>",
        e(&job.log.join("\n"))
    );
    if let Some(result) = &job.result {
        let text = serde_json::to_string_pretty(result).unwrap_or_default();
        let _ = write!(
            out,
            "<h2>Result</h2><pre class=\"report\">{}</pre>",
            e(&text)
        );
    }
    out
}
