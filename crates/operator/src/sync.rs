//! The progress of a sync (`spec.syncFrom`), as the operator reports it in `status.sync`: read
//! from the sync pod's Prometheus metrics, with the pod's own state for a sync that stopped.
//!
//! Decisions:
//! - **Metrics, not the state directory**: the operator cannot read the sync pod's volume, and
//!   `cinnabar sync --admin-listen` already serves everything a status needs per source stream
//!   (streaming or not, applied offset, lag, keys, commands). The operator does not link the
//!   replication engine (it depends on `cinnabar-cluster` only), so the few series it needs are
//!   parsed here, by name.
//! - **The pod's own IP, not the Service's name**: the operator lists the sync pods anyway (for
//!   `pod_facts`) and reads the metrics of the pod it just looked at, so the numbers and the
//!   pod state describe one pod. A Service name needs cluster DNS and a proxied ClusterIP from
//!   wherever the operator runs (an operator run outside the cluster during development has
//!   neither: on a real API server every reading failed and the sync stayed `Pending` for ever),
//!   and during a `Recreate` rollout it may reach nothing or the old pod.
//! - **One small HTTP GET** over a plain `TcpStream` with a short timeout, behind the
//!   [`SyncMetrics`] trait so the reconciler's tests can hand in a reading: the mock API server
//!   has no pods to connect to.
//! - **Phase**: no stream reported yet, or metrics that cannot be read (the pod restarting), is
//!   `Pending`, with the last numbers kept and `observedAt` saying how old they are; any stream not streaming is `Copying` (the
//!   metrics do not tell connecting from copying, so a sync retrying its connection after having
//!   streamed reads as `Copying` too); all streaming is `Streaming`. `Failed` comes from the pod:
//!   a sync exits on an error it will not retry (a flush without `allowFlush`, a refused
//!   database), and the pod then waits in `CrashLoopBackOff` with the error as its last
//!   termination message.
//! - **Synced** (the condition) is what the next step, the proxy's backend switch, waits for:
//!   every stream streaming and at most `maxLagSeconds` behind. The switch itself compares the
//!   per-stream applied offsets in `status.sync.streams` with the source's offsets at its barrier,
//!   and must not trust a reading older than `observedAt`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crd::{SyncPhase, SyncState, SyncStreamState};

/// Reading a sync pod's metrics failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// No connection, or no complete answer, within the timeout.
    #[error("{endpoint}: no answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        endpoint: String,
        /// The limit.
        timeout: Duration,
    },
    /// The connection failed.
    #[error("{endpoint}: {source}")]
    Io {
        /// `host:port`.
        endpoint: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not `200` with a body.
    #[error("{endpoint}: unexpected answer `{status_line}`")]
    Status {
        /// `host:port`.
        endpoint: String,
        /// The HTTP status line received.
        status_line: String,
    },
}

/// Where the reconciler gets a sync pod's metrics from (a real HTTP GET, or a test's reading).
pub trait SyncMetrics: Send + Sync {
    /// The Prometheus text served at `GET /metrics` on `host:port`.
    fn fetch<'a>(&'a self, host: &'a str, port: u16)
    -> BoxFuture<'a, Result<String, MetricsError>>;
}

/// The real reader: `GET /metrics` over HTTP/1.1, one connection per reading.
#[derive(Debug, Clone, Copy)]
pub struct HttpSyncMetrics {
    /// For the connection and the whole answer together.
    pub timeout: Duration,
}

impl Default for HttpSyncMetrics {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
        }
    }
}

/// The largest answer read; the metrics of a sync from a large cluster are a few kilobytes.
const MAX_ANSWER: u64 = 1 << 20;

impl SyncMetrics for HttpSyncMetrics {
    fn fetch<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<String, MetricsError>> {
        Box::pin(async move {
            let endpoint = format!("{host}:{port}");
            let io = |source| MetricsError::Io {
                endpoint: endpoint.clone(),
                source,
            };
            let get = async {
                let mut stream = tokio::net::TcpStream::connect((host, port))
                    .await
                    .map_err(io)?;
                // An IPv6 literal is bracketed in a Host header.
                let authority = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let request = format!(
                    "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.map_err(io)?;
                let mut answer = Vec::new();
                stream
                    .take(MAX_ANSWER)
                    .read_to_end(&mut answer)
                    .await
                    .map_err(io)?;
                Ok::<_, MetricsError>(answer)
            };
            let answer = tokio::time::timeout(self.timeout, get)
                .await
                .map_err(|_| MetricsError::Timeout {
                    endpoint: endpoint.clone(),
                    timeout: self.timeout,
                })??;
            let text = String::from_utf8_lossy(&answer);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status_line = head.lines().next().unwrap_or_default();
            if status_line.split_whitespace().nth(1) != Some("200") {
                return Err(MetricsError::Status {
                    endpoint,
                    status_line: status_line.to_owned(),
                });
            }
            Ok(body.to_owned())
        })
    }
}

/// One source stream as its metrics describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMetrics {
    /// `cinnabar_sync_streaming == 1`.
    pub streaming: bool,
    /// `cinnabar_sync_offset`.
    pub offset: u64,
    /// `cinnabar_sync_lag_bytes`.
    pub lag_bytes: u64,
    /// `cinnabar_sync_lag_seconds`.
    pub lag_seconds: f64,
    /// `cinnabar_sync_keys_applied_total`.
    pub keys_applied: u64,
    /// `cinnabar_sync_commands_applied_total`.
    pub commands_applied: u64,
}

/// The `cinnabar_sync_*` series of a metrics text, per `source` label. Comments, other series
/// and lines that do not parse are skipped: a newer sync may add series.
pub fn parse_metrics(text: &str) -> BTreeMap<String, StreamMetrics> {
    let mut streams: BTreeMap<String, StreamMetrics> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(source) = label(labels.trim_end_matches('}'), "source") else {
            continue;
        };
        // Counters and offsets are whole numbers printed as floats; negative or NaN is 0.
        let whole = if value.is_finite() && value > 0.0 {
            value as u64
        } else {
            0
        };
        let known = matches!(
            name,
            "cinnabar_sync_streaming"
                | "cinnabar_sync_offset"
                | "cinnabar_sync_lag_bytes"
                | "cinnabar_sync_lag_seconds"
                | "cinnabar_sync_keys_applied_total"
                | "cinnabar_sync_commands_applied_total"
        );
        if !known {
            continue;
        }
        let stream = streams.entry(source).or_default();
        match name {
            "cinnabar_sync_streaming" => stream.streaming = value >= 1.0,
            "cinnabar_sync_offset" => stream.offset = whole,
            "cinnabar_sync_lag_bytes" => stream.lag_bytes = whole,
            "cinnabar_sync_lag_seconds" => {
                stream.lag_seconds = if value.is_finite() {
                    value.max(0.0)
                } else {
                    0.0
                };
            }
            "cinnabar_sync_keys_applied_total" => stream.keys_applied = whole,
            _ => stream.commands_applied = whole,
        }
    }
    streams
}

/// The value of label `key` in `a="x",b="y"` (escaped quotes and backslashes undone).
fn label(labels: &str, key: &str) -> Option<String> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let mut value = String::new();
    let mut chars = labels[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// How the sync pod is, as far as `status.sync` cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The container waits to be restarted after failing (`CrashLoopBackOff`, `Error`).
    pub crash_looping: bool,
    /// The last termination's message (the sync's last log lines) or reason, when it failed.
    pub last_error: Option<String>,
}

/// What the sync pods' statuses say (the newest pod first is enough: there is one).
pub fn pod_facts(pods: &[Pod]) -> PodFacts {
    let mut facts = PodFacts::default();
    for status in pods
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten())
    {
        let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
        if waiting
            .and_then(|w| w.reason.as_deref())
            .is_some_and(|r| matches!(r, "CrashLoopBackOff" | "Error"))
        {
            facts.crash_looping = true;
        }
        let terminated = status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| {
                status
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
            });
        if let Some(terminated) = terminated.filter(|t| t.exit_code != 0) {
            let text = terminated
                .message
                .clone()
                .or_else(|| terminated.reason.clone())
                .unwrap_or_else(|| format!("exited with code {}", terminated.exit_code));
            // The message is the end of the log: the last non-empty line names the error.
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&text)
                .trim()
                .to_owned();
            facts.last_error = Some(last);
            if status
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some()
            {
                facts.crash_looping = true;
            }
        }
    }
    facts
}

/// The address of the sync pod whose metrics to read: the newest pod that is not being deleted
/// and has an IP. `None` while there is none (the pod is scheduled, or being replaced).
pub fn metrics_address(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p
                .status
                .as_ref()?
                .pod_ip
                .clone()
                .filter(|ip| !ip.is_empty())?;
            Some((p.metadata.creation_timestamp.clone(), ip))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, ip)| ip)
}

/// What one reconcile learnt about the sync.
#[derive(Debug, Clone, Default)]
pub struct SyncReading {
    /// The source, `spec.syncFrom.address`.
    pub source: String,
    /// Whether the sync pod is meant to run yet (the cluster served every slot once).
    pub started: bool,
    /// The metrics text, or why it could not be read (`None` when not asked).
    pub metrics: Option<Result<String, String>>,
    /// The sync pod's state.
    pub pod: PodFacts,
    /// When the metrics were read.
    pub now: Option<Time>,
}

/// `status.sync` from a reading; `previous` keeps the last good numbers while a reading fails.
pub fn sync_state(reading: &SyncReading, previous: Option<&SyncState>) -> SyncState {
    let kept = previous.filter(|p| p.source == reading.source);
    let mut state = SyncState {
        source: reading.source.clone(),
        last_error: reading
            .pod
            .last_error
            .clone()
            .or_else(|| kept.and_then(|p| p.last_error.clone())),
        // The switch's record outlives every reading (the reconciler updates it).
        switch: kept.and_then(|p| p.switch.clone()),
        ..SyncState::default()
    };
    if !reading.started {
        return state;
    }
    match &reading.metrics {
        Some(Ok(text)) => {
            // A reading succeeded: an earlier "metrics not readable" no longer holds (it stayed
            // in the status, next to fresh numbers, on a real control plane). Only the pod's
            // own last failure, which its status keeps, is still worth showing.
            state.last_error = reading.pod.last_error.clone();
            let streams = parse_metrics(text);
            state.streams = streams
                .iter()
                .map(|(source, m)| SyncStreamState {
                    source: source.clone(),
                    streaming: m.streaming,
                    offset: m.offset,
                    lag_bytes: m.lag_bytes,
                    lag_seconds: m.lag_seconds,
                })
                .collect();
            state.lag_bytes = streams.values().map(|m| m.lag_bytes).max();
            state.lag_seconds = streams.values().map(|m| m.lag_seconds).reduce(f64::max);
            state.keys_applied = streams.values().map(|m| m.keys_applied).sum();
            state.commands_applied = streams.values().map(|m| m.commands_applied).sum();
            state.phase = if streams.is_empty() {
                SyncPhase::Pending
            } else if streams.values().all(|m| m.streaming) {
                SyncPhase::Streaming
            } else {
                SyncPhase::Copying
            };
            state.observed_at = reading.now.clone();
        }
        Some(Err(error)) => {
            // Keep the last numbers (with their age in observedAt); say why they are old.
            if let Some(previous) = kept {
                state = SyncState {
                    last_error: state.last_error.clone(),
                    switch: state.switch.clone(),
                    ..previous.clone()
                };
            }
            if !reading.pod.crash_looping {
                state.last_error = Some(format!("metrics not readable: {error}"));
            }
            // Unknown is not synced: a switch must never act on numbers nobody can confirm.
            state.phase = SyncPhase::Pending;
        }
        None => {}
    }
    if reading.pod.crash_looping {
        state.phase = SyncPhase::Failed;
    }
    state
}

/// The `Synced` condition: `(status, reason, message)`.
pub fn synced(state: &SyncState, max_lag_seconds: u32) -> (bool, &'static str, String) {
    let lag = state.lag_seconds.unwrap_or(f64::INFINITY);
    match state.phase {
        SyncPhase::Pending => (
            false,
            "SyncPending",
            state.last_error.clone().unwrap_or_else(|| {
                format!(
                    "the sync from {} has not started (it starts once every slot is served)",
                    state.source
                )
            }),
        ),
        SyncPhase::Copying => (
            false,
            "Copying",
            format!(
                "{} of {} source streams apply the command stream; {} keys copied so far",
                state.streams.iter().filter(|s| s.streaming).count(),
                state.streams.len(),
                state.keys_applied
            ),
        ),
        SyncPhase::Stopped => (
            false,
            "SyncStopped",
            format!(
                "the sync from {} was stopped after the online switch",
                state.source
            ),
        ),
        SyncPhase::Failed => (
            false,
            "SyncFailed",
            state
                .last_error
                .clone()
                .unwrap_or_else(|| "the sync pod keeps failing".to_owned()),
        ),
        SyncPhase::Streaming if lag <= f64::from(max_lag_seconds) => (
            true,
            "Streaming",
            format!(
                "every source stream applies the command stream, {lag} s and {} bytes behind",
                state.lag_bytes.unwrap_or(0)
            ),
        ),
        SyncPhase::Streaming => (
            false,
            "Lagging",
            format!("streaming, but {lag} s behind (at most {max_lag_seconds} s counts as synced)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SyncStatus::prometheus()` of the replication engine for one streaming source and one
    /// copying source (a copy: the operator does not link the engine).
    const FIXTURE: &str = "\
# HELP cinnabar_sync_streaming 1 when the source stream applies the command stream, 0 while connecting or copying.
# TYPE cinnabar_sync_streaming gauge
cinnabar_sync_streaming{source=\"127.0.0.1:6379\"} 1
cinnabar_sync_streaming{source=\"127.0.0.1:6380\"} 0
# HELP cinnabar_sync_offset Source replication offset applied and acknowledged by the target.
# TYPE cinnabar_sync_offset gauge
cinnabar_sync_offset{source=\"127.0.0.1:6379\"} 42
cinnabar_sync_offset{source=\"127.0.0.1:6380\"} 0
# HELP cinnabar_sync_lag_bytes Bytes received from the source and not yet acknowledged by the target.
# TYPE cinnabar_sync_lag_bytes gauge
cinnabar_sync_lag_bytes{source=\"127.0.0.1:6379\"} 3
cinnabar_sync_lag_bytes{source=\"127.0.0.1:6380\"} 0
# HELP cinnabar_sync_lag_seconds Time since the target last had everything received from the source.
# TYPE cinnabar_sync_lag_seconds gauge
cinnabar_sync_lag_seconds{source=\"127.0.0.1:6379\"} 0.25
cinnabar_sync_lag_seconds{source=\"127.0.0.1:6380\"} 0
# HELP cinnabar_sync_keys_applied_total Keys of the full sync applied.
# TYPE cinnabar_sync_keys_applied_total counter
cinnabar_sync_keys_applied_total{source=\"127.0.0.1:6379\"} 10
cinnabar_sync_keys_applied_total{source=\"127.0.0.1:6380\"} 1500000
# HELP cinnabar_sync_commands_applied_total Commands of the stream applied.
# TYPE cinnabar_sync_commands_applied_total counter
cinnabar_sync_commands_applied_total{source=\"127.0.0.1:6379\"} 5
cinnabar_sync_commands_applied_total{source=\"127.0.0.1:6380\"} 0
";

    #[test]
    fn the_engines_metrics_text_parses_per_source() {
        let streams = parse_metrics(FIXTURE);
        assert_eq!(streams.len(), 2);
        assert_eq!(
            streams.get("127.0.0.1:6379"),
            Some(&StreamMetrics {
                streaming: true,
                offset: 42,
                lag_bytes: 3,
                lag_seconds: 0.25,
                keys_applied: 10,
                commands_applied: 5,
            })
        );
        let copying = streams.get("127.0.0.1:6380").cloned().unwrap_or_default();
        assert!(!copying.streaming);
        assert_eq!(copying.keys_applied, 1_500_000);
        // Other series, other labels, escapes and junk are skipped or read as they should be.
        let odd = parse_metrics(
            "process_open_fds 12\ncinnabar_sync_offset{le=\"x\",source=\"a\\\"b:1\"} 7\ngarbage\n\
             cinnabar_sync_offset{source=\"c:1\"} notanumber\ncinnabar_sync_new_series{source=\"d:1\"} 1\n",
        );
        assert_eq!(odd.keys().collect::<Vec<_>>(), ["a\"b:1"]);
        assert!(parse_metrics("").is_empty());
    }

    fn reading(metrics: Option<Result<String, String>>) -> SyncReading {
        SyncReading {
            source: "old:6379".into(),
            started: true,
            metrics,
            ..SyncReading::default()
        }
    }

    #[test]
    fn the_phase_and_the_condition_follow_the_streams() {
        let copying = sync_state(&reading(Some(Ok(FIXTURE.into()))), None);
        assert_eq!(copying.phase, SyncPhase::Copying);
        assert_eq!(copying.keys_applied, 1_500_010);
        assert_eq!(copying.lag_bytes, Some(3));
        assert_eq!(synced(&copying, 5).1, "Copying");
        let streaming_text = FIXTURE.replace(
            "cinnabar_sync_streaming{source=\"127.0.0.1:6380\"} 0",
            "cinnabar_sync_streaming{source=\"127.0.0.1:6380\"} 1",
        );
        let streaming = sync_state(&reading(Some(Ok(streaming_text))), None);
        assert_eq!(streaming.phase, SyncPhase::Streaming);
        assert!(synced(&streaming, 5).0);
        let pending = sync_state(&reading(Some(Ok(String::new()))), None);
        assert_eq!(pending.phase, SyncPhase::Pending);
        assert!(!synced(&pending, 5).0);
        // A failed reading keeps the last numbers and says why they are old.
        let unreadable = sync_state(
            &reading(Some(Err("connection refused".into()))),
            Some(&streaming),
        );
        assert_eq!(unreadable.streams, streaming.streams);
        assert_eq!(
            unreadable.phase,
            SyncPhase::Pending,
            "not synced while unknown"
        );
        assert!(!synced(&unreadable, 5).0);
        assert_eq!(
            unreadable.last_error.as_deref(),
            Some("metrics not readable: connection refused")
        );
        // Readable again: the old reading error goes.
        let again = sync_state(&reading(Some(Ok(FIXTURE.into()))), Some(&unreadable));
        assert_eq!(again.last_error, None, "{again:?}");
        // A sync for another source starts from nothing.
        let other = SyncReading {
            source: "new:6379".into(),
            ..reading(Some(Err("refused".into())))
        };
        assert!(sync_state(&other, Some(&streaming)).streams.is_empty());
    }

    #[tokio::test]
    async fn the_http_reader_gets_the_body_of_a_200_and_refuses_anything_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head).await;
                let body = FIXTURE;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let reader = HttpSyncMetrics::default();
        let body = reader.fetch("127.0.0.1", port).await;
        assert_eq!(body.ok().as_deref(), Some(FIXTURE));
        let refused = reader.fetch("127.0.0.1", port).await;
        assert!(
            matches!(&refused, Err(MetricsError::Status { status_line, .. }) if status_line.contains("404")),
            "{refused:?}"
        );
        let closed = HttpSyncMetrics {
            timeout: Duration::from_millis(300),
        };
        assert!(closed.fetch("127.0.0.1", port).await.is_err());
    }
}
