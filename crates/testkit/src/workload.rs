//! Workloads that remember every acknowledged write, so a test can prove none was lost.
//!
//! A background thread writes unique keys (`wl:<run>:<n>` → `<n>`) through a cluster-aware client
//! (or a plain one, for an endpoint such as the proxy) and records a write only after the server
//! acknowledged it. `verify` reads every recorded key back. A write that failed is not
//! acknowledged and is not expected to exist (nor forbidden to: the client may have retried).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use redis::ConnectionLike;

/// Where a workload sends its commands.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Redis Cluster, reached through any of these nodes (follows MOVED/ASK).
    Cluster(Vec<NodeAddr>),
    /// One endpoint that looks like a standalone Redis (a single server, or a proxy).
    Standalone(NodeAddr),
}

impl Target {
    fn connect(&self) -> redis::RedisResult<Box<dyn ConnectionLike + Send>> {
        let timeout = Duration::from_secs(2);
        // A proxy holds a request across a failover for up to its retry window (10 s by
        // default): the client must wait longer than that, or it counts its own timeout as
        // a failure the proxy never reported.
        let standalone_timeout = Duration::from_secs(15);
        match self {
            Self::Cluster(seeds) => {
                let urls: Vec<String> = seeds.iter().map(NodeAddr::redis_url).collect();
                let client = redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(8)
                    .build()?;
                Ok(Box::new(client.get_connection()?))
            }
            Self::Standalone(addr) => {
                let client = redis::Client::open(addr.redis_url())?;
                let conn = client.get_connection_with_timeout(standalone_timeout)?;
                conn.set_read_timeout(Some(standalone_timeout))?;
                conn.set_write_timeout(Some(standalone_timeout))?;
                Ok(Box::new(conn))
            }
        }
    }
}

/// A running workload. Call [`Workload::stop`] to get its log.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    thread: Option<JoinHandle<WorkloadLog>>,
}

/// What a workload did.
#[derive(Debug, Clone)]
pub struct WorkloadLog {
    target: Target,
    run: String,
    /// Sequence numbers of acknowledged writes.
    pub acknowledged: Vec<u64>,
    /// Writes that returned an error (or never returned).
    pub failed: u64,
    /// First few error messages, for the failure report.
    pub errors: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
    /// The longest time one write took, from sending it (or reconnecting for it) to its answer:
    /// the stall a client saw.
    pub longest_write: Duration,
}

impl Workload {
    /// Starts writing to `target`, one write every `pause` (zero = as fast as possible).
    pub fn start(target: Target, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let run = format!("{:x}", rand::random::<u32>());
        let (stop_flag, counter) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let thread =
            std::thread::spawn(move || write_loop(target, run, pause, &stop_flag, &counter));
        Self {
            stop,
            acknowledged,
            thread: Some(thread),
        }
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Blocks until at least `n` writes were acknowledged, or panics after `timeout`.
    pub fn wait_for_acknowledged(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < n {
            assert!(
                Instant::now() < deadline,
                "workload reached only {} of {n} acknowledged writes",
                self.acknowledged()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the writer and returns its log.
    ///
    /// # Panics
    /// If the writer thread panicked.
    pub fn stop(mut self) -> WorkloadLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("workload already stopped")
            .join()
            .expect("workload thread panicked")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn write_loop(
    target: Target,
    run: String,
    pause: Duration,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> WorkloadLog {
    let started = Instant::now();
    let mut log = WorkloadLog {
        target: target.clone(),
        run,
        acknowledged: Vec::new(),
        failed: 0,
        errors: Vec::new(),
        elapsed: Duration::ZERO,
        longest_write: Duration::ZERO,
    };
    let mut conn = None;
    let mut seq = 0u64;
    // When the current write was first attempted: reconnecting for it counts as its wait.
    let mut waiting_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let since = *waiting_since.get_or_insert_with(Instant::now);
        if conn.is_none() {
            match target.connect() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    log.note_error(&e);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        seq += 1;
        let key = log.key(seq);
        let result: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(seq).query(c.as_mut());
        log.longest_write = log.longest_write.max(since.elapsed());
        waiting_since = None;
        match result {
            Ok(()) => {
                log.acknowledged.push(seq);
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log.failed += 1;
                log.note_error(&e);
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    conn = None;
                }
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    log.elapsed = started.elapsed();
    log
}

impl WorkloadLog {
    fn key(&self, seq: u64) -> String {
        format!("wl:{}:{seq}", self.run)
    }

    fn note_error(&mut self, e: &redis::RedisError) {
        if self.errors.len() < 10 {
            self.errors.push(e.to_string());
        }
    }

    /// Reads back every acknowledged write; returns the keys that are missing or wrong.
    ///
    /// # Errors
    /// When the target cannot be reached to verify.
    pub fn lost_writes(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.target.connect()?;
        let mut lost = Vec::new();
        for seq in &self.acknowledged {
            let key = self.key(*seq);
            let value: Option<u64> = redis::cmd("GET").arg(&key).query(conn.as_mut())?;
            if value != Some(*seq) {
                lost.push(key);
            }
        }
        Ok(lost)
    }

    /// Panics, with the evidence, if any acknowledged write is missing.
    ///
    /// # Panics
    /// When writes were lost or the target cannot be read.
    pub fn assert_nothing_lost(&self) {
        let lost = self
            .lost_writes()
            .unwrap_or_else(|e| panic!("cannot verify the workload: {e}"));
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes were lost (first: {:?}); {} writes failed, errors: {:?}",
            lost.len(),
            self.acknowledged.len(),
            &lost[..lost.len().min(5)],
            self.failed,
            self.errors
        );
    }
}
