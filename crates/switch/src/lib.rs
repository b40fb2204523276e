//! Coordinates an online backend switch over every proxy serving one endpoint.
//!
//! One proxy switches on its own (`POST /backend/switch`), but a deployment of several must
//! flip together: proxies flipping one by one would, for a moment, send some clients' writes to
//! the old cluster and others' to the new one, and the sync could then apply an older write
//! over a newer one. So the coordinator runs the proxies' two-phase switch:
//!
//! 1. **prepare** every proxy at once (`POST /backend/switch/prepare`): each checks the target,
//!    holds its clients, drains what it had sent, and answers with each source master's
//!    replication offset at that moment;
//! 2. **catch-up**: the highest offset any proxy reported, per source master, is what the target
//!    must have applied; the sync's `GET /offsets` is polled until it has;
//! 3. **commit** every proxy at once (`POST /backend/switch/commit`).
//!
//! If any prepare fails, or the catch-up does not come within the hold, every prepared proxy is
//! aborted and all go on with the source (nothing changed). The one outcome that needs a person
//! is a commit that reached only some proxies (one expired in between, or became unreachable):
//! the report names them, and the sync must keep running until they are switched too.
//!
//! The proxies' admin listeners, the sync's, and the HTTP spoken to them are plain HTTP/1.1 on
//! trusted networks, as the proxy's admin listener itself; the token is sent as a bearer token
//! and never printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often the sync is asked for its offsets while the proxies hold.
const POLL: Duration = Duration::from_millis(2);
/// Margin kept before the earliest proxy's hold runs out, for the commits to arrive.
const COMMIT_MARGIN: Duration = Duration::from_millis(100);

/// Why a coordinated switch did not happen, or happened only in part.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Nothing to switch.
    #[error("no proxy was given")]
    NoProxies,
    /// A proxy refused or failed the prepare; every prepared one was aborted.
    #[error("proxy {proxy} did not prepare: {reason}; every proxy goes on with the source")]
    NotPrepared {
        /// The proxy's admin address.
        proxy: String,
        /// Its answer.
        reason: String,
    },
    /// The target did not reach the proxies' offsets in time; every proxy was aborted.
    #[error(
        "the target did not catch up while the proxies held: {0}; every proxy goes on with the source"
    )]
    NotCaughtUp(String),
    /// Some proxies switched and some did not: keep the sync running and switch the rest.
    #[error(
        "only some proxies switched: {switched:?} serve the target, {failed:?} do not ({reason}); \
         keep the sync running and switch those again"
    )]
    Partial {
        /// Proxies now serving the target.
        switched: Vec<String>,
        /// Proxies still serving the source.
        failed: Vec<String>,
        /// Why.
        reason: String,
    },
}

/// One proxy's admin listener.
#[derive(Clone)]
pub struct ProxyAdmin {
    /// `host:port`.
    pub addr: String,
    /// Its `admin_token_file`'s token.
    pub token: String,
}

impl std::fmt::Debug for ProxyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAdmin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The target, as every proxy is told.
#[derive(Clone, Serialize)]
pub struct Target {
    /// The endpoint's cluster to switch (`[[clusters]]` name); `None` with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The target's nodes, `host:port`.
    pub seeds: Vec<String>,
    /// ACL user on the target's nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password on the target's nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The longest the proxies hold their clients, milliseconds.
    pub max_pause_ms: u64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("cluster", &self.cluster)
            .field("seeds", &self.seeds)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a coordinated switch did.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinatedReport {
    /// Per proxy, its switch report (JSON, as its admin listener gave it).
    pub proxies: BTreeMap<String, serde_json::Value>,
    /// Per source master, the highest offset any proxy reported at its barrier.
    pub barrier_offsets: BTreeMap<String, u64>,
    /// From the first prepare to the last commit, milliseconds: the longest any client waited.
    pub hold_ms: f64,
    /// The part spent waiting for the target.
    pub catch_up_ms: f64,
}

#[derive(Debug, Deserialize)]
struct Prepared {
    id: u64,
    sources: Vec<PreparedSource>,
    expires_in_ms: u64,
}

#[derive(Debug, Deserialize)]
struct PreparedSource {
    master: String,
    barrier_offset: u64,
}

#[derive(Debug, Deserialize)]
struct Offsets {
    sources: Vec<Applied>,
}

#[derive(Debug, Deserialize)]
struct Applied {
    address: String,
    offset: u64,
}

/// Switches every proxy in `proxies` to `target` together, once the sync at `sync` (its admin
/// listener, `host:port`) has applied everything they acknowledged.
///
/// # Errors
/// [`SwitchError`]: nothing switched (a prepare failed, or the catch-up was late), or, needing a
/// person, only some proxies switched.
pub async fn switch_all(
    proxies: &[ProxyAdmin],
    target: &Target,
    sync: &str,
) -> Result<CoordinatedReport, SwitchError> {
    if proxies.is_empty() {
        return Err(SwitchError::NoProxies);
    }
    let started = Instant::now();
    let body = serde_json::to_string(target).unwrap_or_default();
    let mut preparing = tokio::task::JoinSet::new();
    for proxy in proxies.iter().cloned() {
        let body = body.clone();
        preparing.spawn(async move {
            let answer = post(&proxy, "/backend/switch/prepare", &body).await;
            (proxy, answer)
        });
    }
    let mut prepared: Vec<(ProxyAdmin, Prepared)> = Vec::new();
    let mut failure = None;
    while let Some(joined) = preparing.join_next().await {
        let Ok((proxy, answer)) = joined else {
            continue;
        };
        match answer.and_then(|(status, text)| match status {
            200 => serde_json::from_str::<Prepared>(&text).map_err(|e| e.to_string()),
            _ => Err(reason_of(&text)),
        }) {
            Ok(ready) => prepared.push((proxy, ready)),
            Err(reason) => {
                failure.get_or_insert((proxy.addr.clone(), reason));
            }
        }
    }
    if let Some((proxy, reason)) = failure {
        abort_all(&prepared).await;
        return Err(SwitchError::NotPrepared { proxy, reason });
    }
    let mut barrier_offsets: BTreeMap<String, u64> = BTreeMap::new();
    for (_, ready) in &prepared {
        for source in &ready.sources {
            let entry = barrier_offsets.entry(source.master.clone()).or_insert(0);
            *entry = (*entry).max(source.barrier_offset);
        }
    }
    let earliest = prepared
        .iter()
        .map(|(_, p)| p.expires_in_ms)
        .min()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_millis(earliest).saturating_sub(COMMIT_MARGIN);
    let caught_up = Instant::now();
    if let Err(why) = wait_for(sync, &barrier_offsets, deadline).await {
        abort_all(&prepared).await;
        return Err(SwitchError::NotCaughtUp(why));
    }
    let catch_up_ms = caught_up.elapsed().as_secs_f64() * 1e3;
    let mut committing = tokio::task::JoinSet::new();
    for (proxy, ready) in prepared {
        committing.spawn(async move {
            let body = format!("{{\"id\":{}}}", ready.id);
            let answer = post(&proxy, "/backend/switch/commit", &body).await;
            (proxy, answer)
        });
    }
    let mut reports = BTreeMap::new();
    let (mut switched, mut failed, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(joined) = committing.join_next().await {
        let Ok((proxy, answer)) = joined else {
            continue;
        };
        match answer {
            Ok((200, text)) => {
                switched.push(proxy.addr.clone());
                reports.insert(
                    proxy.addr,
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                );
            }
            Ok((_, text)) => {
                reasons.push(format!("{}: {}", proxy.addr, reason_of(&text)));
                failed.push(proxy.addr);
            }
            Err(e) => {
                reasons.push(format!("{}: {e}", proxy.addr));
                failed.push(proxy.addr);
            }
        }
    }
    if !failed.is_empty() {
        return Err(SwitchError::Partial {
            switched,
            failed,
            reason: reasons.join("; "),
        });
    }
    Ok(CoordinatedReport {
        proxies: reports,
        barrier_offsets,
        hold_ms: started.elapsed().as_secs_f64() * 1e3,
        catch_up_ms,
    })
}

/// Aborts every prepared proxy (best effort: one that cannot be reached abandons by itself
/// when its hold runs out).
async fn abort_all(prepared: &[(ProxyAdmin, Prepared)]) {
    for (proxy, ready) in prepared {
        let body = format!("{{\"id\":{}}}", ready.id);
        let _ = post(proxy, "/backend/switch/abort", &body).await;
    }
}

/// Polls the sync until it has applied `offsets`, or `deadline`.
async fn wait_for(
    sync: &str,
    offsets: &BTreeMap<String, u64>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let last = match get_offsets(sync).await {
            Ok(applied) => {
                let behind: Vec<String> = offsets
                    .iter()
                    .filter_map(|(master, want)| {
                        let have = applied.iter().find(|a| a.address == *master);
                        match have {
                            Some(a) if a.offset >= *want => None,
                            Some(a) => Some(format!("{master} applied {} of {want}", a.offset)),
                            None => Some(format!("{master} is not followed by the sync")),
                        }
                    })
                    .collect();
                if behind.is_empty() {
                    return Ok(());
                }
                behind.join("; ")
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn get_offsets(sync: &str) -> Result<Vec<Applied>, String> {
    let (status, text) = request(sync, "GET", "/offsets", None, "").await?;
    if status != 200 {
        return Err(format!("the sync at {sync} answered {status}"));
    }
    serde_json::from_str::<Offsets>(&text)
        .map(|o| o.sources)
        .map_err(|e| format!("the sync at {sync} sent offsets that do not parse: {e}"))
}

async fn post(proxy: &ProxyAdmin, path: &str, body: &str) -> Result<(u16, String), String> {
    request(&proxy.addr, "POST", path, Some(&proxy.token), body).await
}

/// One HTTP/1.1 exchange, `Connection: close`, bounded by 10 s.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        stream
            .write_all(body.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{addr} sent no HTTP response"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{addr} sent no HTTP status"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within 10 s"))?
}

/// The `reason` of a proxy's JSON report, or its text.
fn reason_of(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned())
}
