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
    /// Further comparisons (e.g. the same operation on a smaller sprite).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Comparison>,
    /// Why it could not be measured, if it was skipped.
    pub skipped: Option<String>,
}

/// This figure's median / the median of the figure named `vs`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub vs: String,
    pub ratio: f64,
}

/// How an operation's median grows with the data: `big` / `small` (flat is 1).
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub operation: String,
    pub small: String,
    pub big: String,
    pub small_ms: f64,
    pub big_ms: f64,
    pub ratio: f64,
}

impl Scaling {
    pub fn new(operation: &str, small: (&str, &Figure), big: (&str, &Figure)) -> Scaling {
        Scaling {
            operation: operation.to_string(),
            small: small.0.to_string(),
            big: big.0.to_string(),
            small_ms: small.1.median_ms,
            big_ms: big.1.median_ms,
            ratio: big.1.median_ms / small.1.median_ms,
        }
    }
}

/// A measured amount that is not a time (memory per sprite, a count, a total), with how it was
/// obtained.
#[derive(Debug, Clone, Serialize)]
pub struct Quantity {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub note: String,
}

impl Quantity {
    pub fn new(name: &str, value: f64, unit: &str, note: impl Into<String>) -> Quantity {
        Quantity {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            note: note.into(),
        }
    }
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
            also: Vec::new(),
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
            also: Vec::new(),
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

    /// Records one more comparison, after the main one.
    pub fn compare_also(&mut self, other: &Figure) {
        if other.median_ms.is_finite() && other.median_ms > 0.0 && self.median_ms.is_finite() {
            self.also.push(Comparison {
                vs: other.name.clone(),
                ratio: self.median_ms / other.median_ms,
            });
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
        b.compare_also(&Figure::from_samples("c", &[Duration::from_millis(60)]));
        assert_eq!(b.also.len(), 1);
        assert_eq!((b.also[0].vs.as_str(), b.also[0].ratio), ("c", 0.5));
        let s = Scaling::new("op", ("10 MiB", &a), ("2 GiB", &b));
        assert_eq!((s.small_ms, s.big_ms, s.ratio), (10.0, 30.0, 3.0));
    }
}
