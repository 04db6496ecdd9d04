//! Percentiles and CDF points from exact samples (the sample count is bounded by the push count).

use serde_json::{json, Value};

/// Quantiles (in percent) written into the `cdf_us` array for the plot: every percent, then the tail.
const CDF_TAIL_PERCENTS: &[f64] = &[99.5, 99.9, 99.99, 100.0];

/// Nearest-rank quantile of sorted samples (`q` in 0..=1).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(n - 1);
    sorted.get(idx).copied().unwrap_or(0)
}

/// Rounds nanoseconds to microseconds with one decimal.
fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Sorts the samples (nanoseconds) and summarises them in microseconds.
pub fn summary_us(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    let n = samples.len();
    let mean = if n == 0 {
        0
    } else {
        (samples.iter().map(|&v| u128::from(v)).sum::<u128>() / n as u128) as u64
    };
    json!({
        "count": n,
        "p50": us(quantile(samples, 0.50)),
        "p90": us(quantile(samples, 0.90)),
        "p99": us(quantile(samples, 0.99)),
        "p999": us(quantile(samples, 0.999)),
        "max": us(samples.last().copied().unwrap_or(0)),
        "mean": us(mean),
    })
}

/// CDF points `[percent, microseconds]` of already sorted samples.
pub fn cdf_us(sorted: &[u64]) -> Value {
    let pts: Vec<Value> = (0..100)
        .map(f64::from)
        .chain(CDF_TAIL_PERCENTS.iter().copied())
        .map(|p| json!([p, us(quantile(sorted, p / 100.0))]))
        .collect();
    Value::Array(pts)
}

/// Events per second, one decimal.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (count as f64 / secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
