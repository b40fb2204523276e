//! Every route the console serves, in one table: method, path pattern, the least role that may
//! call it, and what handles it. The OpenAPI file is checked against this table by a test, so
//! the documentation cannot drift from the server.
//!
//! Matching only: no handler logic and no I/O here.

use crate::auth::Role;
use crate::error::ApiError;

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The login form.
    LoginPage,
    /// The login form's POST.
    LoginForm,
    /// The logout form's POST.
    LogoutForm,
    /// The cluster list.
    ListPage,
    /// The create form.
    NewClusterPage,
    /// One cluster.
    ClusterPage,
    /// One drill report with its timeline.
    DrillPage,
    /// One background operation.
    JobPage,
    /// The stylesheet.
    Css,
    /// The page script.
    Js,
    /// `GET /api/v1/session`.
    ApiSession,
    /// `POST /api/v1/login`.
    ApiLogin,
    /// `POST /api/v1/logout`.
    ApiLogout,
    /// `GET /api/v1/clusters`.
    ApiClusters,
    /// `POST /api/v1/clusters`.
    ApiCreate,
    /// `GET /api/v1/clusters/{name}`.
    ApiCluster,
    /// `DELETE /api/v1/clusters/{name}`.
    ApiDelete,
    /// `GET /api/v1/clusters/{name}/metrics`.
    ApiMetrics,
    /// `POST /api/v1/clusters/{name}/scale`.
    ApiScale,
    /// `POST /api/v1/clusters/{name}/failover`.
    ApiFailover,
    /// `GET /api/v1/clusters/{name}/drills`.
    ApiDrills,
    /// `POST /api/v1/clusters/{name}/drills`.
    ApiDrillStart,
    /// `GET /api/v1/clusters/{name}/drills/{id}`.
    ApiDrill,
    /// `GET /api/v1/clusters/{name}/drills/{id}/timeline.svg`.
    ApiTimeline,
    /// `POST /api/v1/clusters/{name}/backups`.
    ApiBackup,
    /// `POST /api/v1/clusters/{name}/restart`.
    ApiRestart,
    /// `GET /api/v1/clusters/{name}/backups`.
    ApiBackups,
    /// `POST /api/v1/clusters/{name}/restore`.
    ApiRestore,
    /// `GET /api/v1/clusters/{name}/refusals`.
    ApiRefusals,
    /// `GET /api/v1/jobs`.
    ApiJobs,
    /// `GET /api/v1/jobs/{id}`.
    ApiJob,
    /// `GET /api/v1/openapi.json`.
    ApiOpenapi,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path, with `{name}`-style segments for parameters.
    pub path: &'static str,
    /// The least role that may call it; `None`: no login needed.
    pub role: Option<Role>,
    /// What answers it.
    pub handler: Handler,
}

const fn route(
    method: &'static str,
    path: &'static str,
    role: Option<Role>,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        role,
        handler,
    }
}

const V: Option<Role> = Some(Role::Viewer);
const O: Option<Role> = Some(Role::Operator);
const A: Option<Role> = Some(Role::Admin);

/// Every route. Pages and assets first, then the JSON API under `/api/v1`.
pub const ROUTES: &[Route] = &[
    route("GET", "/login", None, Handler::LoginPage),
    route("POST", "/login", None, Handler::LoginForm),
    route("POST", "/logout", V, Handler::LogoutForm),
    route("GET", "/", V, Handler::ListPage),
    route("GET", "/clusters/new", O, Handler::NewClusterPage),
    route("GET", "/clusters/{name}", V, Handler::ClusterPage),
    route("GET", "/clusters/{name}/drills/{id}", V, Handler::DrillPage),
    route("GET", "/jobs/{id}", V, Handler::JobPage),
    route("GET", "/assets/console.css", None, Handler::Css),
    route("GET", "/assets/console.js", None, Handler::Js),
    route("GET", "/api/v1/session", V, Handler::ApiSession),
    route("POST", "/api/v1/login", None, Handler::ApiLogin),
    route("POST", "/api/v1/logout", V, Handler::ApiLogout),
    route("GET", "/api/v1/clusters", V, Handler::ApiClusters),
    route("POST", "/api/v1/clusters", O, Handler::ApiCreate),
    route("GET", "/api/v1/clusters/{name}", V, Handler::ApiCluster),
    route("DELETE", "/api/v1/clusters/{name}", A, Handler::ApiDelete),
    route(
        "GET",
        "/api/v1/clusters/{name}/metrics",
        V,
        Handler::ApiMetrics,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/scale",
        O,
        Handler::ApiScale,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/failover",
        O,
        Handler::ApiFailover,
    ),
    route(
        "GET",
        "/api/v1/clusters/{name}/drills",
        V,
        Handler::ApiDrills,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/drills",
        O,
        Handler::ApiDrillStart,
    ),
    route(
        "GET",
        "/api/v1/clusters/{name}/drills/{id}",
        V,
        Handler::ApiDrill,
    ),
    route(
        "GET",
        "/api/v1/clusters/{name}/drills/{id}/timeline.svg",
        V,
        Handler::ApiTimeline,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/restart",
        O,
        Handler::ApiRestart,
    ),
    route(
        "GET",
        "/api/v1/clusters/{name}/backups",
        V,
        Handler::ApiBackups,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/backups",
        O,
        Handler::ApiBackup,
    ),
    route(
        "POST",
        "/api/v1/clusters/{name}/restore",
        O,
        Handler::ApiRestore,
    ),
    route(
        "GET",
        "/api/v1/clusters/{name}/refusals",
        V,
        Handler::ApiRefusals,
    ),
    route("GET", "/api/v1/jobs", V, Handler::ApiJobs),
    route("GET", "/api/v1/jobs/{id}", V, Handler::ApiJob),
    route("GET", "/api/v1/openapi.json", None, Handler::ApiOpenapi),
];

/// The route for `method` and `path`, with the path's parameters in order.
///
/// # Errors
/// [`ApiError::NotFound`] when no pattern matches the path; [`ApiError::MethodNotAllowed`]
/// when one does, for other methods only.
pub fn find(method: &str, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
    let mut path_known = false;
    for route in ROUTES {
        if let Some(params) = matches(route.path, path) {
            if route.method == method {
                return Ok((route, params));
            }
            path_known = true;
        }
    }
    if path_known {
        Err(ApiError::MethodNotAllowed)
    } else {
        Err(ApiError::NotFound(format!("no page at {path}")))
    }
}

/// The parameters of `path` under `pattern`, or `None` when it does not match. A parameter is
/// one non-empty segment; literal segments must be equal.
fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.push(g.to_owned());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_routes_win_over_parameters_listed_after_them() {
        let (route, params) = find("GET", "/clusters/new").unwrap();
        assert_eq!(route.handler, Handler::NewClusterPage);
        assert!(params.is_empty());
        let (route, params) = find("GET", "/clusters/orders").unwrap();
        assert_eq!(route.handler, Handler::ClusterPage);
        assert_eq!(params, ["orders"]);
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        assert!(matches!(find("GET", "/nope"), Err(ApiError::NotFound(_))));
        assert!(matches!(
            find("PUT", "/api/v1/clusters"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(find("GET", "/api/v1/clusters/").is_err());
    }
}
