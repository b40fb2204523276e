//! The console's errors: what stops it from starting, and what an API request is answered
//! with (each kind maps to one HTTP status).
//!
//! A message here may be shown in a page or a JSON body, so it must never hold a password, a
//! session token or a CSRF token.

use std::path::PathBuf;

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The state root is missing or not a directory.
    #[error("the state root {0} is not a directory (create it, or give another --root)")]
    Root(PathBuf),
    /// The users file is unreadable or invalid.
    #[error("users file: {0}")]
    Users(String),
    /// No Kubernetes configuration (kubeconfig or in-cluster) for `--kubernetes`.
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// The jobs folder cannot be created.
    #[error("jobs folder {path}: {source}")]
    Jobs {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The audit trail cannot be opened.
    #[error("audit trail: {0}")]
    Audit(#[from] cinnabar_audit::AuditError),
}

/// Why a request is refused or failed; each variant is one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a rule the CLI would refuse too.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid session.
    #[error("log in first")]
    Unauthorized,
    /// 403: the session's role may not do this, or the CSRF token is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route, cluster, job or report.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the cluster already has an operation running, or the name is taken.
    #[error("{0}")]
    Conflict(String),
    /// 500: reading the cluster or starting the operation failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict(_) => 409,
            Self::Internal(_) => 500,
        }
    }
}
