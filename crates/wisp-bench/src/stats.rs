//! Summaries of timing samples.

use std::time::Duration;

use serde::Serialize;

/// One measured figure: its samples in milliseconds, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub n: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    /// Name of the figure this one is compared with, and median / that median.
    pub vs: Option<String>,
    pub ratio: Option<f64>,
    /// Why it could not be measured, if it was skipped.
    pub skipped: Option<String>,
}

/// The q-quantile (0..=1) of sorted samples, nearest-rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Figure {
    pub fn from_samples(name: &str, samples: &[Duration]) -> Figure {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        Figure {
            name: name.to_string(),
            n: ms.len(),
            median_ms: quantile(&ms, 0.5),
            p90_ms: quantile(&ms, 0.9),
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
            vs: None,
            ratio: None,
            skipped: None,
        }
    }

    pub fn skipped(name: &str, why: String) -> Figure {
        Figure {
            name: name.to_string(),
            n: 0,
            median_ms: f64::NAN,
            p90_ms: f64::NAN,
            min_ms: f64::NAN,
            vs: None,
            ratio: None,
            skipped: Some(why),
        }
    }

    /// Records this figure's median as a ratio of `other`'s.
    pub fn compare(&mut self, other: &Figure) {
        if other.median_ms.is_finite() && other.median_ms > 0.0 && self.median_ms.is_finite() {
            self.vs = Some(other.name.clone());
            self.ratio = Some(self.median_ms / other.median_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn ratio() {
        let a = Figure::from_samples("a", &[Duration::from_millis(10)]);
        let mut b = Figure::from_samples("b", &[Duration::from_millis(30)]);
        b.compare(&a);
        assert_eq!(b.ratio, Some(3.0));
    }
}
