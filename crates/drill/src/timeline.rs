//! What the clients saw, second by second: operations, errors, stale reads and latency.
//!
//! Every operation is filed under the second it *started* in (counted from the workload's
//! start), whenever it finishes: a request that hung through a failover shows its latency where
//! the failover began, not where it ended, and throughput dips where clients were held up.
//! Memory is one small histogram per second, never a list of samples.

use std::time::Duration;

use serde::Serialize;

use crate::histogram::LatencyHistogram;

/// Error messages kept per second, so the report can say what clients were told.
const ERROR_SAMPLES_PER_SECOND: usize = 3;

/// How one operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered as expected.
    Ok,
    /// The request failed: an error reply, a timeout, or a connection that failed; the text
    /// is what the client library said.
    Error(String),
    /// A read of an acknowledged write came back missing or different.
    StaleRead(String),
}

/// One second of the run.
#[derive(Debug, Clone, Default)]
pub struct SecondBucket {
    /// Operations that started in this second and finished (either way).
    pub ops: u64,
    /// Of those, how many failed.
    pub errors: u64,
    /// Of those, reads that found an acknowledged write missing or changed.
    pub stale_reads: u64,
    /// Latency of every operation, failed ones included (a failure is an answer too).
    pub latency: LatencyHistogram,
    /// The first few error messages of this second.
    pub error_samples: Vec<String>,
}

/// The per-second record of a run.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    seconds: Vec<SecondBucket>,
    errors: u64,
    stale_reads: u64,
}

/// One second of a [`Timeline`] as reported: counts and latency in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondSummary {
    /// Seconds since the workload started (this row covers `[second, second + 1)`).
    pub second: u64,
    /// Operations started in this second.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Stale reads.
    pub stale_reads: u64,
    /// Median latency, ms (`null` when no operation started in this second).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Slowest operation, ms.
    pub max_ms: Option<f64>,
    /// The first few error messages.
    pub error_samples: Vec<String>,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files one operation that started `started` after the workload began and took `latency`.
    pub fn record(&mut self, started: Duration, latency: Duration, outcome: Outcome) {
        let second = usize::try_from(started.as_secs()).unwrap_or(usize::MAX);
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, SecondBucket::default);
        }
        let Some(bucket) = self.seconds.get_mut(second) else {
            return;
        };
        bucket.ops += 1;
        bucket.latency.record(latency);
        let message = match outcome {
            Outcome::Ok => return,
            Outcome::Error(message) => {
                bucket.errors += 1;
                self.errors += 1;
                message
            }
            Outcome::StaleRead(message) => {
                bucket.stale_reads += 1;
                self.stale_reads += 1;
                message
            }
        };
        if bucket.error_samples.len() < ERROR_SAMPLES_PER_SECOND {
            bucket.error_samples.push(message);
        }
    }

    /// Makes the timeline cover at least `until` (seconds without operations are empty rows,
    /// which is itself a finding: nobody got through).
    pub fn extend_to(&mut self, until: Duration) {
        let seconds = usize::try_from(until.as_secs()).unwrap_or(usize::MAX);
        if self.seconds.len() < seconds {
            self.seconds.resize_with(seconds, SecondBucket::default);
        }
    }

    /// The seconds, in order.
    pub fn seconds(&self) -> &[SecondBucket] {
        &self.seconds
    }

    /// Failed operations in all.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Stale reads in all.
    pub fn stale_reads(&self) -> u64 {
        self.stale_reads
    }

    /// Operations in all.
    pub fn ops(&self) -> u64 {
        self.seconds.iter().map(|s| s.ops).sum()
    }

    /// Every second's latency together.
    pub fn overall_latency(&self) -> LatencyHistogram {
        let mut all = LatencyHistogram::new();
        for second in &self.seconds {
            all.merge(&second.latency);
        }
        all
    }

    /// The report's rows.
    pub fn summaries(&self) -> Vec<SecondSummary> {
        self.seconds
            .iter()
            .zip(0u64..)
            .map(|(bucket, second)| SecondSummary {
                second,
                ops: bucket.ops,
                errors: bucket.errors,
                stale_reads: bucket.stale_reads,
                p50_ms: bucket.latency.quantile(0.5).map(millis),
                p99_ms: bucket.latency.quantile(0.99).map(millis),
                max_ms: (bucket.latency.count() > 0).then(|| millis(bucket.latency.max())),
                error_samples: bucket.error_samples.clone(),
            })
            .collect()
    }
}

/// A duration in milliseconds with microsecond precision, for reports.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn operations_are_filed_under_the_second_they_started() {
        let mut t = Timeline::new();
        t.record(ms(10), ms(1), Outcome::Ok);
        t.record(ms(999), ms(2), Outcome::Ok);
        // Started in second 2, hung for six seconds: it belongs to second 2.
        t.record(ms(2_500), ms(6_000), Outcome::Ok);
        t.record(ms(2_600), ms(3), Outcome::Error("CLUSTERDOWN".into()));
        let rows = t.summaries();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].ops, rows[1].ops, rows[2].ops), (2, 0, 2));
        assert_eq!(rows[1].p50_ms, None, "an empty second has no latency");
        assert_eq!(rows[2].max_ms, Some(6_000.0));
        assert_eq!(rows[2].errors, 1);
        assert_eq!(rows[2].error_samples, vec!["CLUSTERDOWN".to_owned()]);
        assert_eq!((t.ops(), t.errors()), (4, 1));
        assert_eq!(t.overall_latency().max(), ms(6_000));
    }

    #[test]
    fn error_samples_are_capped_per_second_but_every_error_is_counted() {
        let mut t = Timeline::new();
        for i in 0..10 {
            t.record(ms(100), ms(1), Outcome::Error(format!("e{i}")));
        }
        t.record(ms(200), ms(1), Outcome::StaleRead("k missing".into()));
        let row = &t.summaries()[0];
        assert_eq!((row.errors, row.stale_reads), (10, 1));
        assert_eq!(row.error_samples, vec!["e0", "e1", "e2"]);
        assert_eq!((t.errors(), t.stale_reads()), (10, 1));
    }

    #[test]
    fn extending_adds_empty_seconds_only_at_the_end() {
        let mut t = Timeline::new();
        t.record(ms(1_500), ms(1), Outcome::Ok);
        t.extend_to(ms(4_200));
        assert_eq!(t.seconds().len(), 4);
        t.extend_to(ms(1_000));
        assert_eq!(t.seconds().len(), 4, "never shrinks");
        assert_eq!(t.summaries()[3].ops, 0);
    }
}
