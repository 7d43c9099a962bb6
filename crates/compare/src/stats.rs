//! The statistic behind every verdict: the ratio of two servers' cost per request, measured in
//! paired rounds, with a 95% confidence interval.
//!
//! Method (stated in every report): in round *i* both servers ran back to back (in shuffled
//! order), giving costs `a_i` and `b_i`. The per-round log ratios `d_i = ln(a_i / b_i)` cancel
//! what the two runs of a round share (the machine's state at that time). The estimate is
//! their mean, exponentiated (the geometric mean of the per-round ratios), and the interval is
//! the Student-t interval on the mean of `d_i` with `n - 1` degrees of freedom, exponentiated.
//! The t interval is used rather than a bootstrap over rounds because it keeps its 95%
//! coverage with the handful of rounds a quick run has (a percentile bootstrap of 3 to 5
//! rounds is far too narrow); the tests below check its coverage on synthetic data.
//!
//! A verdict is only a direction when the interval excludes 1.0; otherwise it is "no
//! difference detectable at this noise".

use serde::{Deserialize, Serialize};

/// A ratio with its 95% confidence interval over `n` paired rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
    /// Paired rounds behind it.
    pub n: usize,
}

/// Which way a comparison came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// `a` costs less than `b` (the whole interval is below 1.0).
    Less,
    /// `a` costs more than `b` (the whole interval is above 1.0).
    More,
    /// The interval spans 1.0.
    NoDifference,
}

/// The 97.5% quantile of Student's t distribution with `df` degrees of freedom.
#[must_use]
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            // Cornish-Fisher expansion around the normal quantile; within 0.001 beyond 30.
            let z: f64 = 1.959_964;
            let d = df as f64;
            z + (z.powi(3) + z) / (4.0 * d) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// The ratio `a / b` over paired rounds (`pairs[i] = (a_i, b_i)`), with its 95% interval.
/// Pairs with a non-positive or non-finite member are left out; `None` with fewer than two.
#[must_use]
pub fn paired_ratio(pairs: &[(f64, f64)]) -> Option<Interval> {
    let d: Vec<f64> = pairs
        .iter()
        .filter(|(a, b)| a.is_finite() && b.is_finite() && *a > 0.0 && *b > 0.0)
        .map(|(a, b)| (a / b).ln())
        .collect();
    let n = d.len();
    if n < 2 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    Some(Interval { ratio: mean.exp(), lo: (mean - half).exp(), hi: (mean + half).exp(), n })
}

impl Interval {
    #[must_use]
    pub fn direction(&self) -> Direction {
        if self.hi < 1.0 {
            Direction::Less
        } else if self.lo > 1.0 {
            Direction::More
        } else {
            Direction::NoDifference
        }
    }

    /// How far the interval reaches from the ratio, relative to it (0.05 = within ±5%).
    #[must_use]
    pub fn half_width(&self) -> f64 {
        if self.ratio <= 0.0 {
            return f64::INFINITY;
        }
        (self.hi / self.ratio - 1.0).max(1.0 - self.lo / self.ratio)
    }

    /// The verdict in words: "uring uses 0.74× epoll's CPU per request (95% CI 0.70–0.79)",
    /// or "no difference detectable at this noise (CI 0.93–1.08)". `what` names the cost
    /// ("CPU per request").
    #[must_use]
    pub fn sentence(&self, a: &str, b: &str, what: &str) -> String {
        match self.direction() {
            Direction::NoDifference => format!(
                "{a} vs {b}: no difference detectable at this noise ({:.2}×, CI {:.2}–{:.2})",
                self.ratio, self.lo, self.hi
            ),
            Direction::Less | Direction::More => {
                format!("{a} uses {:.2}× {b}'s {what} (95% CI {:.2}–{:.2})", self.ratio, self.lo, self.hi)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard normal samples (Box-Muller) from a seeded generator, so failures reproduce.
    fn normals(rng: &mut fastrand::Rng, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect()
    }

    /// `n` rounds of a server with true cost `ratio × base` against one of cost `base`; each
    /// round shares a machine factor (what pairing cancels) and each run has its own noise.
    fn rounds(rng: &mut fastrand::Rng, ratio: f64, noise: f64, n: usize) -> Vec<(f64, f64)> {
        let shared = normals(rng, n);
        let own = normals(rng, 2 * n);
        (0..n)
            .map(|i| {
                let machine = (0.3 * shared[i]).exp();
                let b = 7.0 * machine * (noise * own[2 * i]).exp();
                let a = ratio * 7.0 * machine * (noise * own[2 * i + 1]).exp();
                (a, b)
            })
            .collect()
    }

    #[test]
    fn t_quantiles() {
        assert!((t_975(1) - 12.706).abs() < 1e-9);
        assert!((t_975(10) - 2.228).abs() < 1e-9);
        assert!((t_975(31) - 2.040).abs() < 0.002);
        assert!((t_975(120) - 1.980).abs() < 0.002);
        assert!((t_975(100_000) - 1.960).abs() < 0.001);
    }

    #[test]
    fn a_known_ratio_is_found_with_a_tight_interval() {
        let mut rng = fastrand::Rng::with_seed(7);
        let iv = paired_ratio(&rounds(&mut rng, 0.74, 0.05, 30)).unwrap();
        assert!(iv.lo < 0.74 && 0.74 < iv.hi, "{iv:?}");
        assert!((iv.ratio - 0.74).abs() < 0.03, "{iv:?}");
        assert!(iv.half_width() < 0.05, "{iv:?}");
        assert_eq!(iv.direction(), Direction::Less);
        let s = iv.sentence("uring", "epoll", "CPU per request");
        assert!(s.starts_with("uring uses 0.7") && s.contains("× epoll's CPU per request (95% CI 0.7"), "{s}");
    }

    #[test]
    fn equal_servers_give_no_difference_detectable() {
        let mut rng = fastrand::Rng::with_seed(11);
        let iv = paired_ratio(&rounds(&mut rng, 1.0, 0.15, 8)).unwrap();
        assert!(iv.lo < 1.0 && iv.hi > 1.0, "{iv:?}");
        assert_eq!(iv.direction(), Direction::NoDifference);
        let s = iv.sentence("poll", "epoll", "CPU per request");
        assert!(s.contains("no difference detectable at this noise") && s.contains("CI "), "{s}");
    }

    #[test]
    fn a_real_difference_hidden_by_noise_is_not_claimed() {
        // 5% apart, 20% noise per run, 4 rounds: the interval must span 1.0.
        let mut rng = fastrand::Rng::with_seed(3);
        let iv = paired_ratio(&rounds(&mut rng, 0.95, 0.2, 4)).unwrap();
        assert_eq!(iv.direction(), Direction::NoDifference, "{iv:?}");
    }

    #[test]
    fn coverage_is_about_95_percent_even_with_few_rounds() {
        for n in [3, 5, 20] {
            let mut rng = fastrand::Rng::with_seed(n as u64);
            let trials = 2000;
            let covered = (0..trials)
                .filter(|_| {
                    let iv = paired_ratio(&rounds(&mut rng, 0.8, 0.1, n)).unwrap();
                    iv.lo <= 0.8 && 0.8 <= iv.hi
                })
                .count();
            let rate = covered as f64 / trials as f64;
            assert!((0.93..=0.97).contains(&rate), "coverage {rate} with {n} rounds");
        }
    }

    #[test]
    fn degenerate_input() {
        assert!(paired_ratio(&[(1.0, 2.0)]).is_none());
        assert!(paired_ratio(&[(1.0, 0.0), (f64::NAN, 1.0), (1.0, 2.0)]).is_none());
        let iv = paired_ratio(&[(1.0, 2.0), (1.0, 2.0)]).unwrap();
        assert_eq!((iv.ratio, iv.lo, iv.hi, iv.n), (0.5, 0.5, 0.5, 2));
        assert_eq!(iv.direction(), Direction::Less);
    }
}
