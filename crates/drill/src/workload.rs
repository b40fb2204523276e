//! The verifying workload: several client connections through one plain endpoint (the proxy),
//! each writing unique keys and reading back earlier ones, recording every acknowledged write.
//!
//! A write counts only once the server said `OK`; a write that failed or timed out is not
//! acknowledged and is neither expected nor forbidden to exist. Reads pick an earlier
//! acknowledged key of the same connection and expect its value: one that comes back missing or
//! different is a stale read, the live face of a lost write. Each connection paces itself to its
//! share of the target rate, so the drill measures the cluster, not how hard two cores can spin;
//! it never retries a request on its own (a retry would hide exactly what the drill measures).
//!
//! Each connection has one request in flight, as most application clients do: once a connection
//! hits a key of the failed shard it waits there (the proxy holds requests through a failover for
//! its retry window), so within milliseconds every connection waits and throughput drops to zero
//! until the takeover, although the other shards still serve. That is what a sequential client
//! sees; more connections would not change it, only delay it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::error::DrillError;
use crate::timeline::{Outcome, Timeline};

/// How long a connection may take to be set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys read back per round trip when verifying.
const VERIFY_BATCH: usize = 200;
/// Attempts per verification batch: the cluster is healthy by then, so one failure is a hiccup,
/// three are a finding.
const VERIFY_ATTEMPTS: usize = 3;

/// How the workload runs.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// The plain endpoint every connection uses.
    pub endpoint: NodeAddr,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// Target operations per second over all connections (half writes, half reads).
    pub ops_per_second: u32,
    /// How long one request may take before it counts as failed. Longer than the proxy's retry
    /// window (10 s by default), or the client would report its own impatience as an error the
    /// proxy never returned.
    pub request_timeout: Duration,
}

impl WorkloadOptions {
    /// Defaults for `endpoint`: 4 connections, 1000 operations per second, 15 s per request.
    pub fn new(endpoint: NodeAddr) -> Self {
        Self {
            endpoint,
            connections: 4,
            ops_per_second: 1000,
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// A write the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// The key, unique to this run.
    pub key: String,
    /// The value written.
    pub value: String,
    /// When the acknowledgement arrived, since the workload started.
    pub acked_at: Duration,
}

/// A running workload; [`Workload::stop`] ends it and hands over what it saw.
#[derive(Debug)]
pub struct Workload {
    started: Instant,
    stop: Arc<AtomicBool>,
    stop_at_ms: Arc<AtomicU64>,
    acknowledged: Arc<AtomicU64>,
    timeline: Arc<Mutex<Timeline>>,
    tasks: JoinSet<Vec<AckedWrite>>,
}

/// What a stopped workload saw.
#[derive(Debug, Clone)]
pub struct WorkloadLog {
    /// Second by second.
    pub timeline: Timeline,
    /// Every acknowledged write.
    pub writes: Vec<AckedWrite>,
    /// From start to stop: whole seconds, the span the timeline covers.
    pub ran_for: Duration,
}

/// What one connection shares with the others.
#[derive(Debug, Clone)]
struct Shared {
    options: WorkloadOptions,
    run: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    /// No operation starts at or after this many ms since the start (`u64::MAX`: not set).
    stop_at_ms: Arc<AtomicU64>,
    acknowledged: Arc<AtomicU64>,
    timeline: Arc<Mutex<Timeline>>,
}

impl Workload {
    /// Starts the connections on the current tokio runtime. Time zero of every report is now.
    pub fn start(options: &WorkloadOptions) -> Self {
        let started = Instant::now();
        let shared = Shared {
            options: options.clone(),
            run: run_id(),
            started,
            stop: Arc::new(AtomicBool::new(false)),
            stop_at_ms: Arc::new(AtomicU64::new(u64::MAX)),
            acknowledged: Arc::new(AtomicU64::new(0)),
            timeline: Arc::new(Mutex::new(Timeline::new())),
        };
        let mut tasks = JoinSet::new();
        for index in 0..options.connections.max(1) {
            tasks.spawn(connection_loop(index, shared.clone()));
        }
        Self {
            started,
            stop: shared.stop,
            stop_at_ms: shared.stop_at_ms,
            acknowledged: shared.acknowledged,
            timeline: shared.timeline,
            tasks,
        }
    }

    /// When the workload started: time zero of the drill.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .errors()
    }

    /// Stops the connections at the next whole second since the start (so every second of the
    /// timeline is a full one), lets requests in flight finish, and returns the record.
    ///
    /// # Errors
    /// [`DrillError::Workload`] when a connection task panicked (its writes would be unknown).
    pub async fn stop(mut self) -> Result<WorkloadLog, DrillError> {
        let end = Duration::from_secs(self.started.elapsed().as_secs_f64().ceil() as u64);
        self.stop_at_ms.store(
            u64::try_from(end.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut writes = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            let acked = joined.map_err(|e| DrillError::Workload(e.to_string()))?;
            writes.extend(acked);
        }
        writes.sort_by_key(|w| w.acked_at);
        let mut timeline =
            std::mem::take(&mut *self.timeline.lock().unwrap_or_else(PoisonError::into_inner));
        timeline.extend_to(end);
        Ok(WorkloadLog {
            timeline,
            writes,
            ran_for: end,
        })
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A run id that keeps this drill's keys apart from any other's on the same cluster.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

async fn connection_loop(index: usize, shared: Shared) -> Vec<AckedWrite> {
    let options = &shared.options;
    let pace = Duration::from_secs_f64(
        options.connections.max(1) as f64 / f64::from(options.ops_per_second.max(1)),
    );
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut connection: Option<MultiplexedConnection> = None;
    let mut acked: Vec<AckedWrite> = Vec::new();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let begun = Instant::now();
        let stop_at = Duration::from_millis(shared.stop_at_ms.load(Ordering::Relaxed));
        if begun - shared.started >= stop_at {
            break;
        }
        let outcome = match connection.as_mut() {
            Some(conn) => {
                seq += 1;
                let (outcome, broken) = if seq % 2 == 1 || acked.is_empty() {
                    let key = format!("drill:{}:{index}:{seq}", shared.run);
                    write(conn, key, seq, &shared, &mut acked).await
                } else {
                    read_back(conn, seq, &acked).await
                };
                if broken {
                    connection = None;
                }
                outcome
            }
            None => match connect(options).await {
                Ok(conn) => {
                    connection = Some(conn);
                    continue;
                }
                Err(e) => Outcome::Error(format!("connecting to {}: {e}", options.endpoint)),
            },
        };
        shared
            .timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(begun - shared.started, begun.elapsed(), outcome);
    }
    acked
}

/// `SET key seq`; on `OK` the write joins `acked`. Returns the outcome and whether the
/// connection must be replaced.
async fn write(
    conn: &mut MultiplexedConnection,
    key: String,
    seq: u64,
    shared: &Shared,
    acked: &mut Vec<AckedWrite>,
) -> (Outcome, bool) {
    let value = seq.to_string();
    match redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .query_async::<()>(conn)
        .await
    {
        Ok(()) => {
            acked.push(AckedWrite {
                key,
                value,
                acked_at: shared.started.elapsed(),
            });
            shared.acknowledged.fetch_add(1, Ordering::Relaxed);
            (Outcome::Ok, false)
        }
        Err(e) => (Outcome::Error(format!("SET: {e}")), is_broken(&e)),
    }
}

/// `GET` of an earlier acknowledged write of this connection, spread over its history.
async fn read_back(
    conn: &mut MultiplexedConnection,
    seq: u64,
    acked: &[AckedWrite],
) -> (Outcome, bool) {
    // A cheap multiplicative hash spreads reads over old and new keys alike.
    let pick = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % acked.len().max(1);
    let Some(target) = acked.get(pick) else {
        return (Outcome::Ok, false);
    };
    match redis::cmd("GET")
        .arg(&target.key)
        .query_async::<Option<String>>(conn)
        .await
    {
        Ok(Some(value)) if value == target.value => (Outcome::Ok, false),
        Ok(found) => (
            Outcome::StaleRead(format!(
                "GET {} returned {found:?}, but {:?} was acknowledged at {} ms",
                target.key,
                target.value,
                target.acked_at.as_millis()
            )),
            false,
        ),
        Err(e) => (Outcome::Error(format!("GET: {e}")), is_broken(&e)),
    }
}

/// Whether an error means the connection itself is gone (as opposed to an error reply).
fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

async fn connect(options: &WorkloadOptions) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(options.endpoint.redis_url())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(options.request_timeout));
    // The bound also covers the set-up commands sent after the TCP connect.
    let bound = CONNECT_TIMEOUT + options.request_timeout;
    tokio::time::timeout(
        bound,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {} ms", bound.as_millis()),
        ))
    })?
}

/// Reads every acknowledged write back through `options.endpoint`; returns those missing or
/// changed, in acknowledgement order.
///
/// # Errors
/// [`DrillError::Verify`] when a batch cannot be read after three attempts: then nothing can be
/// said about those writes, which is not the same as saying they were lost.
pub async fn lost_writes<'a>(
    options: &WorkloadOptions,
    writes: &'a [AckedWrite],
) -> Result<Vec<&'a AckedWrite>, DrillError> {
    let mut lost = Vec::new();
    let mut connection: Option<MultiplexedConnection> = None;
    for batch in writes.chunks(VERIFY_BATCH) {
        let mut last_error = String::new();
        let mut values: Option<Vec<Option<String>>> = None;
        for _ in 0..VERIFY_ATTEMPTS {
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match connect(options).await {
                    Ok(conn) => connection.insert(conn),
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                },
            };
            let mut pipe = redis::pipe();
            for write in batch {
                pipe.cmd("GET").arg(&write.key);
            }
            match pipe.query_async::<Vec<Option<String>>>(conn).await {
                Ok(found) => {
                    values = Some(found);
                    break;
                }
                Err(e) => {
                    last_error = e.to_string();
                    connection = None;
                }
            }
        }
        let values = values.ok_or_else(|| DrillError::Verify {
            endpoint: options.endpoint.clone(),
            reason: last_error,
        })?;
        lost.extend(
            batch
                .iter()
                .zip(values)
                .filter(|(write, found)| found.as_deref() != Some(write.value.as_str()))
                .map(|(write, _)| write),
        );
    }
    Ok(lost)
}
