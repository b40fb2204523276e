//! The listener and the request pipeline: route, session, role, CSRF, body, handler. Every
//! request passes the same checks in the same order, so no handler can forget one.
//!
//! Must never let a POST or DELETE through without the session's CSRF token, nor serve an
//! action to a role below the route's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use cinnabar_audit::{AuditConfig, AuditOutput, AuditRecord, Auditor, Outcome};

use crate::auth::{Session, Sessions, Users, csrf_matches};
use crate::error::{ApiError, ConsoleError};
use crate::http::{Reply, SESSION_COOKIE, cookie, form};
use crate::jobs::Jobs;
use crate::routes::{Handler, Route};
use crate::{ConsoleConfig, api, pages, routes};

/// Largest request body accepted (forms and JSON are small).
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every request handler reads.
pub struct App {
    /// The configuration.
    pub config: ConsoleConfig,
    /// The users file.
    pub users: Users,
    /// Live sessions.
    pub sessions: Sessions,
    /// Background operations.
    pub jobs: Jobs,
    /// The audit trail.
    pub auditor: Auditor,
    /// Kubernetes mode's resources, when on.
    pub kube: Option<crate::kubernetes::KubeClusters>,
    /// Each cluster's last proxy latency histogram, so a metrics reading reports the window
    /// since the one before.
    pub latency:
        std::sync::Mutex<std::collections::HashMap<String, cinnabar_local::load::LatencyHistogram>>,
}

impl App {
    /// Writes one audit line for `action` on `target` by `user` from `client`.
    pub fn audit(
        &self,
        client: SocketAddr,
        user: &str,
        action: &str,
        target: &str,
        outcome: Outcome,
        error: Option<String>,
    ) {
        let mut record = AuditRecord::command(client, user, "CONSOLE")
            .with_subcommand(action.to_ascii_uppercase())
            .with_targets([target])
            .with_outcome(outcome);
        if let Some(error) = error {
            record = record.with_error(error);
        }
        self.auditor.record(record);
    }
}

/// One request, as handlers see it.
pub struct Call {
    /// The client's address.
    pub client: SocketAddr,
    /// The route it matched.
    pub route: &'static Route,
    /// The path's parameters, in order.
    pub params: Vec<String>,
    /// The query string's fields.
    pub query: std::collections::HashMap<String, String>,
    /// The session, for routes that need one (and any route when a valid cookie came).
    pub session: Option<Session>,
    /// The session token from the cookie, when valid.
    pub token: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A running console.
pub struct Console {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    app: Arc<App>,
}

impl Console {
    /// Binds, loads the users file, opens the audit trail and starts serving. Returns the
    /// warnings about the users file (plain-text passwords, …) with the console.
    ///
    /// # Errors
    /// [`ConsoleError`] when the root is missing, the users file invalid, the audit file
    /// unopenable or the address taken.
    pub async fn start(config: ConsoleConfig) -> Result<(Console, Vec<String>), ConsoleError> {
        let kube = match &config.kubernetes {
            Some(k) => Some(crate::kubernetes::KubeClusters::connect(k.namespace.clone()).await?),
            None => None,
        };
        Console::start_with(config, kube).await
    }

    /// [`Console::start`] with the Kubernetes resources given (tests pass a mock API server's).
    ///
    /// # Errors
    /// As [`Console::start`].
    pub async fn start_with(
        config: ConsoleConfig,
        kube: Option<crate::kubernetes::KubeClusters>,
    ) -> Result<(Console, Vec<String>), ConsoleError> {
        if !config.root.is_dir() {
            return Err(ConsoleError::Root(config.root.clone()));
        }
        let (users, warnings) = Users::load(&config.users_file)?;
        let jobs_dir = config.root.join(".console-jobs");
        let jobs = Jobs::open(&jobs_dir).map_err(|source| ConsoleError::Jobs {
            path: jobs_dir.clone(),
            source,
        })?;
        let auditor = Auditor::start(AuditConfig {
            output: AuditOutput::File(config.audit_file.clone()),
            ..AuditConfig::default()
        })?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ConsoleError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
            addr: config.listen,
            source,
        })?;
        let app = Arc::new(App {
            config,
            users,
            sessions: Sessions::default(),
            jobs,
            auditor,
            kube,
            latency: std::sync::Mutex::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, Arc::clone(&app), stopped));
        Ok((
            Console {
                addr,
                stop,
                task,
                app,
            },
            warnings,
        ))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and flushes the audit trail (running operations go on: they are
    /// `cinnabar` processes of their own).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Err(e) = self.app.auditor.flush() {
            tracing::warn!("flushing the audit trail: {e}");
        }
    }
}

async fn accept(listener: TcpListener, app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(respond(&app, client, request).await) }
            });
            // A client that dribbles its request head is cut off instead of holding a task.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection from {client}: {e}");
            }
        });
    }
}

/// Whether the route answers with HTML (pages) rather than JSON (the API).
fn is_page(path: &str) -> bool {
    !path.starts_with("/api/")
}

async fn respond(
    app: &Arc<App>,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let reply = match prepare(app, client, request).await {
        Ok(call) => {
            let result = if is_page(&path) {
                pages::handle(app, &call).await
            } else {
                api::handle(app, &call).await
            };
            result.unwrap_or_else(|e| error_reply(&path, &e))
        }
        Err(e) => error_reply(&path, &e),
    };
    reply.into_response()
}

/// An error as the caller can read it: JSON for the API; for pages, the login page when the
/// session is missing, else a small HTML page.
fn error_reply(path: &str, error: &ApiError) -> Reply {
    if !is_page(path) {
        return Reply::error(error);
    }
    match error {
        ApiError::Unauthorized => Reply::redirect("/login"),
        other => {
            let mut reply = Reply::html(pages::error_page(other));
            reply.status = other.status();
            reply
        }
    }
}

/// Everything but the handler: route, session, role, CSRF and body.
async fn prepare(
    app: &Arc<App>,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Result<Call, ApiError> {
    let method = request.method().as_str().to_owned();
    let (route, params) = routes::find(&method, request.uri().path())?;
    let query = form(request.uri().query().unwrap_or("").as_bytes());
    let token = request
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|header| cookie(header, SESSION_COOKIE))
        .map(str::to_owned);
    let session = token.as_deref().and_then(|t| app.sessions.get(t));
    let token = session.as_ref().and(token);
    let header_csrf = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Defence in depth beside SameSite cookies and CSRF tokens, and the only check the login
    // form has: a browser names the page's origin on every POST, which must be this console.
    if method != "GET" && !same_origin(request.headers()) {
        return Err(ApiError::Forbidden(
            "cross-origin request refused (Origin does not match Host)".to_owned(),
        ));
    }
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?
        .to_bytes();
    if let Some(needed) = route.role {
        let Some(session) = &session else {
            return Err(ApiError::Unauthorized);
        };
        if session.role < needed {
            app.audit(
                client,
                &session.user,
                &format!("{method} {}", route.path),
                params.first().map_or("-", String::as_str),
                Outcome::Denied,
                Some(format!("needs the {} role", needed.name())),
            );
            return Err(ApiError::Forbidden(format!(
                "this needs the {} role; {} is {}",
                needed.name(),
                session.user,
                session.role.name()
            )));
        }
        if method != "GET" {
            let given = header_csrf.or_else(|| {
                (route.handler == Handler::LogoutForm)
                    .then(|| form(&body).remove("csrf"))
                    .flatten()
            });
            if !given.is_some_and(|given| csrf_matches(&session.csrf, &given)) {
                return Err(ApiError::Forbidden(
                    "missing or wrong CSRF token (X-CSRF-Token header)".to_owned(),
                ));
            }
        }
    }
    Ok(Call {
        client,
        route,
        params,
        query,
        session,
        token,
        body,
    })
}

/// Whether the request's `Origin` (when a browser sent one) is this console's own address.
/// Scripts without an `Origin` header (curl) pass; they still need the session and CSRF token.
fn same_origin(headers: &hyper::HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    fn headers(pairs: &[(&'static str, &'static str)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, hyper::header::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_the_consoles_own_origin_may_post_from_a_browser() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null")])));
    }
}
