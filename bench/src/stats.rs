//! Summaries of latency samples: p50 and p99 by nearest rank, mean, min, max.
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub p50: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub p99: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub min: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub max: f64,
}

/// JSON has no NaN (an empty series is written as null); read it back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=100).
fn rank(sorted: &[f64], p: f64) -> f64 {
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary {
            n: 0,
            p50: f64::NAN,
            p99: f64::NAN,
            mean: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Summary {
        n: s.len(),
        p50: rank(&s, 50.0),
        p99: rank(&s, 99.0),
        mean: s.iter().sum::<f64>() / s.len() as f64,
        min: s[0],
        max: s[s.len() - 1],
    }
}

/// One named set of samples (milliseconds unless the row says otherwise).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub summary: Summary,
    pub samples: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, samples: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            summary: summarize(&samples),
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = summarize(&v);
        assert_eq!(s.p50, 100.0);
        assert_eq!(s.p99, 198.0);
        assert_eq!(s.mean, 100.5);
        let one = summarize(&[3.0]);
        assert_eq!((one.p50, one.p99, one.min, one.max), (3.0, 3.0, 3.0, 3.0));
        assert!(summarize(&[]).p50.is_nan());
    }
}
