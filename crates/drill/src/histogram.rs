//! A small fixed-size latency histogram: quantiles within about 6 % of the true value, in
//! constant memory however many samples it sees.
//!
//! Buckets are log-linear over microseconds: exact below 16 µs, then 16 buckets per power of two
//! up to 2^35 µs (about 9.5 hours; larger values land in the last bucket). The exact maximum is
//! kept apart, since the worst request is what a failover drill is most asked about.

use std::time::Duration;

/// Sub-buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 16;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 4;
/// Largest power of two covered; beyond it everything shares the last bucket.
const MAX_EXPONENT: u32 = 35;
/// Number of buckets: the exact ones below 16 µs, then 16 per octave from 2^4 to 2^35.
const BUCKETS: usize = ((MAX_EXPONENT - SUB_BITS + 2) as usize) * SUB_BUCKETS as usize;

/// Counts of latencies, for quantiles and the maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_us: 0,
        }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let slot = &mut self.counts[bucket_of(us)];
        *slot = slot.saturating_add(1);
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly; zero when empty.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The `q` quantile (`0.5` for the median, `0.99` for p99): the upper bound of the bucket
    /// holding the sample of that rank, never more than the maximum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // The rank of the wanted sample, 1-based: the smallest rank with q of samples at or
        // below it.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound(index).min(self.max_us)));
            }
        }
        Some(self.max())
    }
}

/// The bucket of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let exponent = (63 - us.leading_zeros()).min(MAX_EXPONENT);
    if exponent == MAX_EXPONENT && us >> MAX_EXPONENT > 1 {
        return BUCKETS - 1;
    }
    let mantissa = (us >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    ((exponent - SUB_BITS + 1) as usize) * SUB_BUCKETS as usize + mantissa as usize
}

/// The largest value in microseconds that falls into bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let sub = SUB_BUCKETS as usize;
    if index < sub {
        return index as u64;
    }
    let exponent = (index / sub - 1) as u32 + SUB_BITS;
    let mantissa = (index % sub) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    (1u64 << exponent) + (mantissa + 1) * width - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn small_values_are_exact_and_larger_ones_within_a_sixteenth() {
        for value in [
            0,
            1,
            15,
            16,
            17,
            100,
            999,
            4_321,
            1_000_000,
            6_000_000,
            1 << 34,
        ] {
            let bucket = bucket_of(value);
            let upper = upper_bound(bucket);
            assert!(upper >= value, "{value} above its bucket's bound {upper}");
            let error = (upper - value) as f64 / value.max(1) as f64;
            assert!(error <= 1.0 / 16.0, "{value}: bound {upper} is {error} off");
            if bucket > 0 {
                assert!(
                    upper_bound(bucket - 1) < value,
                    "{value} fits an earlier bucket"
                );
            }
        }
    }

    #[test]
    fn buckets_are_ordered_and_huge_values_share_the_last() {
        let mut last = 0;
        for value in (0..40).map(|shift| 1u64 << shift) {
            let bucket = bucket_of(value);
            assert!(bucket >= last && bucket < BUCKETS, "{value} → {bucket}");
            last = bucket;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_and_max_of_a_known_spread() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        // 98 fast requests, one slow, one stalled by a failover.
        for _ in 0..98 {
            h.record(us(400));
        }
        h.record(us(20_000));
        h.record(Duration::from_millis(6_100));
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 >= us(400) && p50 <= us(425), "{p50:?}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 >= us(20_000) && p99 <= us(21_250), "{p99:?}");
        assert_eq!(
            h.max(),
            Duration::from_millis(6_100),
            "the maximum is exact"
        );
        assert_eq!(h.quantile(1.0), Some(h.max()), "never above the maximum");
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_larger_max() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(us(10));
        b.record(us(5_000));
        b.record(us(7));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), us(5_000));
        assert_eq!(a.quantile(0.5), Some(us(10)));
    }
}
