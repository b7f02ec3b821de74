//! The shape of a site's recorded traffic (`site_traffic`, `site_visitors`): the gateway counts
//! requests per site, minute and status with their bytes and a histogram of their times to
//! answer, and keeps each day's distinct visitors; analytics add them up. Counting instead of
//! storing a row per request keeps every answered request at any rate (a minute of a site at
//! 50,000 requests a second is a handful of rows), and load-time percentiles come from the
//! histogram, within a bucket's width (19 %).

/// Buckets of the time-to-answer histogram. Bucket 0 counts answers under
/// [`FIRST_BOUND_US`]; bucket `i` ≥ 1 those in `[FIRST·2^((i-1)/4), FIRST·2^(i/4))` µs; the
/// last also everything slower (from about 47 s).
pub const LATENCY_BUCKETS: usize = 80;
/// The upper bound of bucket 0, in microseconds.
const FIRST_BOUND_US: f64 = 64.0;
/// Buckets per doubling.
const PER_DOUBLING: f64 = 4.0;

/// The bucket of an answer that took `us` microseconds (the migration that carried the old
/// per-request rows over computes the same).
pub fn latency_bucket(us: u64) -> usize {
    if (us as f64) < FIRST_BOUND_US {
        return 0;
    }
    let index = (PER_DOUBLING * (us as f64 / FIRST_BOUND_US).log2()).floor() as usize + 1;
    index.min(LATENCY_BUCKETS - 1)
}

/// The bounds of bucket `i`, in microseconds: `[low, high)`.
fn bounds(i: usize) -> (f64, f64) {
    let edge = |n: usize| FIRST_BOUND_US * 2f64.powf(n as f64 / PER_DOUBLING);
    match i {
        0 => (0.0, FIRST_BOUND_US),
        i => (edge(i - 1), edge(i)),
    }
}

/// The `q` quantile (0–1) of the answers `counts` holds, in milliseconds, interpolated within
/// its bucket; `None` without answers.
pub fn quantile_ms(counts: &[i64], q: f64) -> Option<f64> {
    let total: i64 = counts.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0i64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let (low, high) = bounds(i);
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some((low + (high - low) * within) / 1000.0);
        }
        below += count;
    }
    let (low, _) = bounds(counts.len().saturating_sub(1));
    Some(low / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_fall_in_buckets_a_quarter_doubling_wide() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(63), 0);
        assert_eq!(latency_bucket(64), 1);
        assert_eq!(latency_bucket(76), 1);
        assert_eq!(latency_bucket(77), 2);
        assert_eq!(latency_bucket(128), 5);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for us in [1u64, 64, 500, 12_345, 1_000_000, 30_000_000] {
            let (low, high) = bounds(latency_bucket(us));
            assert!(low <= us as f64 && (us as f64) < high, "{us} in [{low}, {high})");
        }
    }

    #[test]
    fn quantiles_come_within_a_bucket_of_the_true_ones() {
        let mut counts = [0i64; LATENCY_BUCKETS];
        // 1,000 answers from 1 ms to 100 ms, evenly.
        let answers: Vec<u64> = (0..1000).map(|n| 1_000 + n * 99).collect();
        for &us in &answers {
            counts[latency_bucket(us)] += 1;
        }
        for q in [0.5, 0.95] {
            let truth = answers[(q * 1000.0) as usize - 1] as f64 / 1000.0;
            let estimate = quantile_ms(&counts, q).expect("answers");
            assert!((estimate - truth).abs() / truth < 0.19, "p{q}: {estimate} against {truth}");
        }
        assert_eq!(quantile_ms(&[0; LATENCY_BUCKETS], 0.5), None);
    }
}
