//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/topology`,
//! `/config`, `POST /reload` (the settings file's users, roles and audit settings),
//! `POST /topology/refresh` (the cluster just changed: refresh now, and let no fan-out use an
//! older table; answered once the refresh is done) and `POST /backend/switch` (serve another
//! cluster from now on, online: see `crate::switch`), with its two-phase form for a
//! deployment of several proxies (`/backend/switch/prepare`, then `/commit` or `/abort` with
//! the prepared `id`). A deliberately tiny HTTP/1.1 server (GET
//! and those POSTs, one request per connection, 8 KiB request limit) on a thread and runtime
//! of its own, so a slow scraper can never take time from a worker, and the proxy needs no web
//! framework.
//!
//! Only the switch is authenticated (a bearer token, `admin_token_file`), since it decides
//! where every client's data goes; the rest reveals or refreshes what is already there: bind
//! the listener to loopback (the default) or a private network.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::ProxyConfig;
use crate::refresh::Freshness;
use crate::slotmap::SlotMap;
use crate::stats::Stats;
use crate::{ProxyError, gauges};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that takes longer than this to send its request is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What every endpoint reads.
pub(crate) struct Shared {
    pub(crate) reloader: Arc<crate::Reloader>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) routes: watch::Receiver<Arc<SlotMap>>,
    pub(crate) freshness: Arc<Freshness>,
    pub(crate) drain: watch::Receiver<bool>,
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) switcher: Arc<crate::switch::Switcher>,
}

/// How long `POST /topology/refresh` waits for the refresh it asked for.
const TOPOLOGY_REFRESH_WAIT: Duration = Duration::from_secs(5);

/// Binds `listen` and serves until `stop` turns true.
///
/// # Errors
/// [`ProxyError::Bind`] when the address cannot be bound; [`ProxyError::Runtime`] when the
/// thread or runtime cannot start.
pub(crate) fn start(
    listen: SocketAddr,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), ProxyError> {
    let bind_err = |source| ProxyError::Bind {
        addr: listen,
        source,
    };
    let std_listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    let shared = Arc::new(shared);
    let thread = std::thread::Builder::new()
        .name("cinnabar-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(error = %e, "admin listener failed"),
                };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream, Arc::clone(&shared)));
                            }
                        }
                        _ = stop.wait_for(|stop| *stop) => return,
                    }
                }
            });
        })
        .map_err(ProxyError::Runtime)?;
    Ok((addr, thread))
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                // The body, if the head announces one, is read too (a switch's JSON).
                let body = end + 4 + content_length(&head[..end]);
                if head.len() >= body {
                    return body <= MAX_REQUEST;
                }
            }
            if head.len() > MAX_REQUEST {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let response = match read {
        Ok(true) if request_line(&head).starts_with("POST /topology/refresh ") => {
            topology_refresh(&shared).await
        }
        Ok(true) if request_line(&head).starts_with("POST /backend/switch") => {
            let line = request_line(&head);
            let path = line.split(' ').nth(1).unwrap_or_default();
            match path {
                "/backend/switch" => backend_switch(&head, &shared, SwitchStep::Whole).await,
                "/backend/switch/prepare" => {
                    backend_switch(&head, &shared, SwitchStep::Prepare).await
                }
                "/backend/switch/commit" => {
                    backend_switch(&head, &shared, SwitchStep::Commit).await
                }
                "/backend/switch/abort" => backend_switch(&head, &shared, SwitchStep::Abort).await,
                _ => reply(
                    404,
                    "text/plain",
                    "not found; the switch is /backend/switch, \
                     /backend/switch/prepare, /backend/switch/commit or /backend/switch/abort\n"
                        .into(),
                ),
            }
        }
        Ok(true) => respond(&head, &shared),
        _ => reply(400, "text/plain", "bad request\n".into()),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// The `Content-Length` a request head announces (0 without one).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The value of header `name` in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

/// The body of `POST /backend/switch`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    /// Which cluster of the endpoint to switch (`[[clusters]]` name; not needed with one).
    #[serde(default)]
    cluster: Option<String>,
    /// The target's nodes, `host:port`.
    seeds: Vec<String>,
    /// ACL user and password for the target's nodes (none: no password).
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// The sync's admin listener, whose `/offsets` proves the target caught up.
    #[serde(default)]
    sync: Option<String>,
    /// Switch without a catch-up check (the target is known to hold everything already).
    #[serde(default)]
    unchecked: bool,
    /// The longest requests may be held, in milliseconds (default 2000).
    #[serde(default)]
    max_pause_ms: Option<u64>,
}

/// What `POST /backend/switch…` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwitchStep {
    /// `/backend/switch`: the whole switch.
    Whole,
    /// `/backend/switch/prepare`: hold and report the source offsets (two-phase).
    Prepare,
    /// `/backend/switch/commit`, `/backend/switch/abort` with `{"id": …}`.
    Commit,
    Abort,
}

/// The id of a prepared switch, for commit and abort.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreparedId {
    id: u64,
}

/// `POST /backend/switch[/prepare|/commit|/abort]`: checks the bearer token, runs the step,
/// answers with its report (200 when it did what was asked, 409 when refused or abandoned: the
/// proxy serves what it served before).
async fn backend_switch(request: &[u8], shared: &Shared, step: SwitchStep) -> Vec<u8> {
    let end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..end]);
    let Some(expected) = shared.config.admin_token.as_deref() else {
        return reply(
            403,
            "text/plain",
            "switching over HTTP needs admin_token_file in the proxy's settings\n".into(),
        );
    };
    let given = header(&head, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), expected.as_bytes())) {
        tracing::warn!("refused a backend switch: missing or wrong admin token");
        return reply(
            401,
            "text/plain",
            "a switch needs the header Authorization: Bearer <admin token>\n".into(),
        );
    }
    let body = request.get(end + 4..).unwrap_or_default();
    let bad = |e: String| reply(400, "text/plain", format!("bad switch request: {e}\n"));
    if matches!(step, SwitchStep::Commit | SwitchStep::Abort) {
        let id = match serde_json::from_slice::<PreparedId>(body) {
            Ok(parsed) => parsed.id,
            Err(e) => return bad(e.to_string()),
        };
        let report = if step == SwitchStep::Commit {
            shared.switcher.commit(id).await
        } else {
            shared
                .switcher
                .abort(id, "aborted by its coordinator".into())
                .await
        };
        let done = match step {
            SwitchStep::Commit => report.outcome == crate::switch::Outcome::Switched,
            _ => report.outcome == crate::switch::Outcome::Abandoned,
        };
        return json_reply(if done { 200 } else { 409 }, &report);
    }
    let parsed: SwitchBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return bad(e.to_string()),
    };
    let seeds: Result<Vec<cinnabar_cluster::NodeAddr>, String> = parsed
        .seeds
        .iter()
        .map(|s| s.parse().map_err(|e| format!("seed {s:?}: {e}")))
        .collect();
    let seeds = match seeds {
        Ok(seeds) => seeds,
        Err(e) => return bad(e),
    };
    let catch_up = match (parsed.sync, parsed.unchecked, step) {
        (Some(at), false, SwitchStep::Whole) => crate::switch::CatchUp::Sync(at),
        (None, true, SwitchStep::Whole) | (None, false, SwitchStep::Prepare) => {
            crate::switch::CatchUp::Unchecked
        }
        (_, _, SwitchStep::Prepare) => {
            return bad(
                "a prepare takes no \"sync\" or \"unchecked\": its coordinator checks the \
                 catch-up before it commits"
                    .into(),
            );
        }
        _ => {
            return bad(
                "give exactly one of \"sync\" (the sync's admin address) and \"unchecked\": \
                 true"
                    .into(),
            );
        }
    };
    let credentials = match (parsed.user, parsed.password) {
        (user, Some(password)) => Some(cinnabar_cluster::Credentials { user, password }),
        (None, None) => None,
        (Some(_), None) => return bad("a user needs a password".into()),
    };
    let request = crate::switch::SwitchRequest {
        cluster: parsed.cluster,
        seeds,
        credentials,
        catch_up,
        max_pause: parsed
            .max_pause_ms
            .map_or(crate::switch::DEFAULT_MAX_PAUSE, Duration::from_millis),
    };
    if step == SwitchStep::Prepare {
        return match shared.switcher.prepare(request).await {
            Ok(prepared) => json_reply(200, &prepared),
            Err(report) => json_reply(409, &report),
        };
    }
    let report = shared.switcher.switch(request).await;
    let status = if report.outcome == crate::switch::Outcome::Switched {
        200
    } else {
        409
    };
    json_reply(status, &report)
}

fn json_reply(status: u16, value: &impl serde::Serialize) -> Vec<u8> {
    let json = serde_json::to_string_pretty(value).unwrap_or_default();
    reply(status, "application/json", json + "\n")
}

/// Compares a secret without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first line of a request head.
fn request_line(head: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default())
}

/// `POST /topology/refresh`: announces a change, waits for the refresh, answers with the
/// routing table it produced (503 when no refresh succeeded in time).
async fn topology_refresh(shared: &Shared) -> Vec<u8> {
    let ask = shared.freshness.announce_change();
    let done = tokio::time::timeout(TOPOLOGY_REFRESH_WAIT, shared.freshness.attempted(ask)).await;
    let routes = shared.routes.borrow().clone();
    match done {
        Ok(true) => reply(200, "application/json", topology_json(&routes)),
        Ok(false) => reply(
            503,
            "text/plain",
            "the refresh reached no node; fan-outs keep waiting for a newer table\n".into(),
        ),
        Err(_) => reply(
            503,
            "text/plain",
            format!(
                "no refresh completed within {} s; fan-outs keep waiting for a newer table\n",
                TOPOLOGY_REFRESH_WAIT.as_secs()
            ),
        ),
    }
}

/// The full response to one request head.
fn respond(head: &[u8], shared: &Shared) -> Vec<u8> {
    let line = request_line(head);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method == "POST" && path == "/reload" {
        // Reading one small file and compiling roles: quick enough for this thread.
        return match shared.reloader.reread_file() {
            Ok(warnings) => {
                let mut body = "reloaded\n".to_owned();
                for warning in warnings {
                    body.push_str(&format!("warning: {warning}\n"));
                }
                reply(200, "text/plain", body)
            }
            Err(e) => reply(400, "text/plain", format!("not reloaded: {e}\n")),
        };
    }
    if method != "GET" {
        return reply(
            405,
            "text/plain",
            "only GET (and POST /reload, POST /topology/refresh) is served here\n".into(),
        );
    }
    let routes = shared.routes.borrow().clone();
    match path {
        "/metrics" => reply(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.stats.render(gauges(&routes)),
        ),
        "/healthz" => reply(200, "text/plain", "ok\n".into()),
        "/readyz" => match not_ready(&routes, *shared.drain.borrow()) {
            None => reply(200, "text/plain", "ready\n".into()),
            Some(why) => reply(503, "text/plain", format!("not ready: {why}\n")),
        },
        "/topology" => reply(200, "application/json", topology_json(&routes)),
        "/config" => reply(200, "application/json", config_json(&shared.config)),
        _ => reply(
            404,
            "text/plain",
            "not found; try /metrics, /healthz, /readyz, /topology or /config\n".into(),
        ),
    }
}

/// Why the proxy should not get traffic yet, if it should not.
fn not_ready(routes: &SlotMap, draining: bool) -> Option<String> {
    if draining {
        return Some("draining".into());
    }
    if routes.masters().is_empty() {
        return Some("no master known".into());
    }
    let missing: Vec<String> = (0..routes.clusters())
        .filter_map(|c| routes.cluster_map(c))
        .filter(|one| one.covered_slots() < one.total_slots())
        .map(|one| {
            let gap = one.total_slots() - one.covered_slots();
            if routes.clusters() > 1 {
                format!(
                    "{gap} slots of cluster {} have no master",
                    one.cluster_name(0)
                )
            } else {
                format!("{gap} slots have no master")
            }
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

fn reply(status: u16, content_type: &str, body: String) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// `{"version":…,"slots_covered":…,"masters":[{"address":…,"replicas":[…],"slots":[[a,b],…]}]}`
fn topology_json(routes: &SlotMap) -> String {
    let mut out = format!(
        "{{\"version\":{},\"slots_covered\":{},\"masters\":[",
        routes.version,
        routes.covered_slots()
    );
    for (i, master) in routes.masters().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"address\":{},\"cluster\":{},\"replicas\":[",
            json_string(&master.to_string()),
            json_string(routes.cluster_name(routes.cluster_of_master(i)))
        );
        for (j, replica) in routes.replicas(i).iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&json_string(&replica.to_string()));
        }
        out.push_str("],\"slots\":[");
        for (j, (first, last)) in routes.ranges(i).iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            // The cluster's own hash slots (its name is beside them).
            let _ = write!(
                out,
                "[{},{}]",
                crate::slotmap::hash_slot(*first),
                crate::slotmap::hash_slot(*last)
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

/// The effective settings; the backend password is never included, only whether one is set.
fn config_json(config: &ProxyConfig) -> String {
    let seeds: Vec<String> = config
        .seeds
        .iter()
        .map(|s| json_string(&s.to_string()))
        .collect();
    let user = config
        .backend_credentials
        .as_ref()
        .map_or_else(|| "null".to_owned(), |c| json_string(c.user_or_default()));
    format!(
        "{{\"listen\":{},\"seeds\":[{}],\"workers\":{},\"connect_timeout_ms\":{},\"max_redirects\":{},\
         \"retry_window_ms\":{},\"refresh_interval_ms\":{},\"max_pending_per_client\":{},\
         \"max_reply_bytes_per_client\":{},\"backend_read_timeout_ms\":{},\"read_from\":{},\
         \"backend_connections\":{},\"backend_user\":{user},\"backend_password\":{},\
         \"fan_out_max_staleness_ms\":{},\"transactions\":{}}}\n",
        json_string(&config.listen.to_string()),
        seeds.join(","),
        config.workers,
        config.connect_timeout.as_millis(),
        config.max_redirects,
        config.retry_window.as_millis(),
        config.refresh_interval.as_millis(),
        config.max_pending_per_client,
        config.max_reply_bytes_per_client,
        config.backend_read_timeout.as_millis(),
        json_string(&config.read_from.to_string()),
        config.backend_connections,
        if config.backend_credentials.is_some() {
            "\"(set)\""
        } else {
            "null"
        },
        config.fan_out_max_staleness.as_millis(),
        match config.transactions {
            crate::config::Transactions::Strict => "\"strict\"",
            crate::config::Transactions::Relaxed => "\"relaxed\"",
        },
    )
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
