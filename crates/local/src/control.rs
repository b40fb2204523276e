//! The supervisor's control channel: how other `cinnabar` invocations ask the running supervisor
//! to provision, restart, start or remove a node (it owns the processes, so only it may), and
//! tell it the cluster changed (it runs the proxy, which must refresh).
//!
//! A Unix socket in the state directory ([`CONTROL_SOCKET`]); one JSON request line per
//! connection, one JSON reply line back, then the connection closes, so a silent client holds
//! the supervisor up for [`REQUEST_READ_TIMEOUT`] at most. This module only carries requests;
//! the supervisor decides and acts, and nothing here touches a process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{LocalError, Result};
use crate::state::StateDir;

/// The socket's file name inside the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// How long the supervisor waits for a connected client to send its request.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for a reply: a restart may include a graceful stop (15 s) and an
/// AOF load (up to a minute) before the node answers.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest request or reply line accepted, so a broken peer cannot make us buffer without end.
const MAX_LINE: u64 = 64 * 1024;

/// The socket of the supervisor of the state directory `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(CONTROL_SOCKET)
}

/// Binds the control socket of the state directory `dir`, replacing a stale one (the caller holds
/// the directory's lock, so no live supervisor uses it). `None`, logged, when it cannot be bound:
/// the cluster still runs and is supervised, only operations cannot reach it.
pub(crate) fn listen(dir: &StateDir) -> Option<UnixListener> {
    let path = socket_path(dir.root());
    let _ = std::fs::remove_file(&path);
    match UnixListener::bind(&path) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!(
                socket = %path.display(),
                error = %e,
                "cannot listen for control requests; operations (scale, failover, …) cannot reach \
                 this supervisor"
            );
            None
        }
    }
}

/// The next client of `listener`; never resolves without one.
///
/// # Errors
/// The accept failure.
pub(crate) async fn accept(listener: Option<&UnixListener>) -> std::io::Result<UnixStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// What a client asks the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Start one new, empty node (on `host` when given) and record it.
    Provision {
        /// A simulated host label (`h0`, …) of this cluster.
        host: Option<String>,
    },
    /// Stop the node on `port` gracefully and start it again on its data.
    Restart {
        /// Its client port.
        port: u16,
    },
    /// Start the node on `port` now if it is down; a no-op when it runs.
    Start {
        /// Its client port.
        port: u16,
    },
    /// Stop the node on `port`, forget it and delete its data.
    Remove {
        /// Its client port.
        port: u16,
    },
    /// The cluster just changed (a step of an operation moved slots, failed a master over,
    /// added or removed a node): the proxy refreshes its routing table before the reply, and
    /// none of its fan-outs uses an older one.
    TopologyChanged,
    /// Record the cluster's shape after a scale, so `status` and a later `up` agree with it.
    SetShape {
        /// Shards.
        masters: u16,
        /// Replicas per shard.
        replicas: u16,
    },
    /// A planned failover of the Sentinel group: the proxy holds its clients' requests and
    /// drains, the replicas catch up, a Sentinel promotes one, the proxy learns the new
    /// master, and requests go on (`cinnabar_cluster::sentinel::planned_failover`). Answered
    /// with [`ControlReply::GroupFailover`].
    GroupFailover {
        /// The longest clients' requests may be held, in milliseconds.
        max_pause_ms: u64,
    },
    /// Switch the proxy online to another cluster (`cinnabar_proxy::switch`), and once
    /// switched, record that this endpoint serves it (also after a restart). Answered with
    /// [`ControlReply::Switch`].
    SwitchBackend {
        /// The other cluster's nodes, `host:port`.
        seeds: Vec<String>,
        /// Its state directory, when it is a local cluster.
        dir: Option<PathBuf>,
        /// A running sync's admin listener, whose `/offsets` proves the catch-up; `None`
        /// switches without that check.
        sync: Option<String>,
        /// The longest clients' requests may be held, in milliseconds.
        max_pause_ms: u64,
    },
}

/// Why a request was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// No node of this cluster listens on the port.
    UnknownNode,
    /// The host is not one of this cluster's simulated hosts.
    UnknownHost,
    /// The request was understood but could not be done (no free port, a node that does not
    /// start, a file that cannot be written).
    Failed,
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum ControlReply {
    /// Done. For a provision, the new node's port and host.
    Done {
        /// The node acted on.
        port: Option<u16>,
        /// Its host label, when the cluster has hosts.
        host: Option<String>,
    },
    /// What a switch did: the proxy's report as JSON (`cinnabar_proxy::SwitchReport`), also
    /// when it was refused or abandoned.
    Switch {
        /// The report.
        report: String,
    },
    /// A planned failover of the Sentinel group happened.
    GroupFailover {
        /// The master before.
        from: String,
        /// The master now.
        to: String,
        /// How long clients' requests were held.
        held_ms: u64,
    },
    /// Not done; nothing was changed unless the message says so.
    Failed {
        /// What kind of failure.
        kind: FailureKind,
        /// One sentence for a person.
        message: String,
    },
}

impl ControlReply {
    /// A failure reply.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            message: message.into(),
        }
    }
}

/// Sends `request` to the supervisor of the state directory `root` and returns its reply.
///
/// # Errors
/// [`LocalError::Control`] when no supervisor listens, or it does not answer in time.
pub async fn send(root: &Path, request: &ControlRequest) -> Result<ControlReply> {
    let path = socket_path(root);
    let failed = |reason: String| LocalError::Control {
        dir: root.to_path_buf(),
        reason,
    };
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|e| failed(format!("cannot connect to {}: {e}", path.display())))?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        write_line(&mut write, request).await?;
        read_line(read)
            .await?
            .ok_or_else(|| "it closed the connection without a reply".to_owned())
    };
    match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(reason)) => Err(failed(reason)),
        Err(_) => Err(failed(format!("no reply within {REPLY_TIMEOUT:?}"))),
    }
}

/// Reads one JSON line; `Ok(None)` when the peer closed first.
///
/// # Errors
/// The I/O or parse failure, as a phrase for messages.
pub(crate) async fn read_line<T, R>(read: R) -> std::result::Result<Option<T>, String>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut line = String::new();
    let n = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE))
        .read_line(&mut line)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_str(line.trim_end())
        .map(Some)
        .map_err(|e| format!("not a control message ({e}): {:?}", line.trim_end()))
}

/// Writes `message` as one JSON line.
///
/// # Errors
/// The I/O failure, as a phrase for messages.
pub(crate) async fn write_line<T, W>(write: &mut W, message: &T) -> std::result::Result<(), String>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let mut text = serde_json::to_string(message).map_err(|e| format!("encoding: {e}"))?;
    text.push('\n');
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("writing: {e}"))?;
    write.flush().await.map_err(|e| format!("writing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_object_each() {
        let request = ControlRequest::Restart { port: 7001 };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"request":"restart","port":7001}"#);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"request":"provision","host":null}"#)
                .unwrap(),
            ControlRequest::Provision { host: None }
        );
        let reply = ControlReply::failed(FailureKind::UnknownNode, "no node on 1");
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            text,
            r#"{"reply":"failed","kind":"unknown-node","message":"no node on 1"}"#
        );
    }

    #[tokio::test]
    async fn send_without_a_supervisor_says_none_listens() {
        let tmp = tempfile::tempdir().unwrap();
        let err = send(tmp.path(), &ControlRequest::Start { port: 1 })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("control.sock"), "{err}");
        assert!(err.contains("cinnabar up"), "{err}");
    }
}
