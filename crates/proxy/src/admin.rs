//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/topology`,
//! `/config`, `POST /reload` (the settings file's users, roles and audit settings) and
//! `POST /topology/refresh` (the cluster just changed: refresh now, and let no fan-out use an
//! older table; answered once the refresh is done). A deliberately tiny HTTP/1.1 server (GET
//! and those two POSTs, one request per connection, 8 KiB request limit) on a thread and
//! runtime of its own, so a slow scraper can never take time from a worker, and the proxy needs
//! no web framework.
//!
//! It is not authenticated: bind it to loopback (the default) or a private network.

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
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_REQUEST {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    let response = match read {
        Ok(true) if request_line(&head).starts_with("POST /topology/refresh ") => {
            topology_refresh(&shared).await
        }
        Ok(true) => respond(&head, &shared),
        _ => reply(400, "text/plain", "bad request\n".into()),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
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
    let covered = routes.covered_slots();
    (covered < usize::from(cinnabar_commands::SLOT_COUNT)).then(|| {
        format!(
            "{} slots have no master",
            usize::from(cinnabar_commands::SLOT_COUNT) - covered
        )
    })
}

fn reply(status: u16, content_type: &str, body: String) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
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
            "{{\"address\":{},\"replicas\":[",
            json_string(&master.to_string())
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
            let _ = write!(out, "[{first},{last}]");
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
