//! The statistic behind every verdict: the ratio of two servers' cost per request, measured in
//! paired rounds, with a 95% confidence interval.
//!
//! Method (stated in every report): in round *i* both servers ran (in shuffled order), giving
//! costs `a_i` and `b_i`; in an anchored round each is a cost against the epoll runs right
//! beside it ([`crate::plan::sequence`]). The per-round log ratios `d_i = ln(a_i / b_i)` cancel
//! what the runs of a round share (the machine's state at that time).
//!
//! From six rounds on, the estimate is the Hodges–Lehmann estimate of the `d_i` (the median of
//! their pairwise means, the Walsh averages) and the interval is the one the Wilcoxon
//! signed-rank test gives: between the Walsh averages ranked `c + 1` and `M - c` of `M`, with
//! `c` the largest count the signed-rank statistic stays at or below with probability at most
//! 2.5% (computed exactly). It needs no normal distribution, only a symmetric one, and it is
//! not thrown about by a few wild rounds. That matters here: this host switches between
//! throughput regimes that differ by up to 50% in cost per request and last from a few
//! seconds to a minute (`bench-scripts/host-regimes.py`; a fixed-work CPU probe on the same
//! core moves by about a tenth as much), so a round whose two runs fall on either side of a
//! switch gives a ratio far off the others. The mean, and with it a Student-t interval, moves
//! with every such round; on the same rounds of one run on this host (31 and 27 rounds of two
//! workloads, ten comparisons) the signed-rank intervals were 0.3 to 0.8 times as wide as the
//! t intervals, about half on average.
//!
//! Below six rounds the signed-rank interval cannot reach 95% (its best with five is 93.75%),
//! so a short run (`--quick`) uses the Student-t interval on the mean of the `d_i` with `n - 1`
//! degrees of freedom. Both are exponentiated back to ratios; the tests below check the
//! coverage of both on synthetic data, with and without rounds split by a regime switch.
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

/// Rounds from which on the interval is the signed-rank one (see the module's method).
pub const SIGNED_RANK_FROM: usize = 6;

/// How the intervals are computed, in words (reports and results.json say it).
pub const METHOD: &str = "Hodges–Lehmann estimate with the Wilcoxon signed-rank 95% interval on the per-round \
                          log ratios from 6 paired rounds on, Student-t below";

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
    let (mid, lo, hi) = if n >= SIGNED_RANK_FROM { signed_rank(&d) } else { student_t(&d) };
    Some(Interval { ratio: mid.exp(), lo: lo.exp(), hi: hi.exp(), n })
}

/// Mean and Student-t 95% interval.
fn student_t(d: &[f64]) -> (f64, f64, f64) {
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    (mean, mean - half, mean + half)
}

/// Hodges–Lehmann estimate and the Wilcoxon signed-rank 95% interval (`d.len() >= 6`).
fn signed_rank(d: &[f64]) -> (f64, f64, f64) {
    let n = d.len();
    let mut walsh = Vec::with_capacity(n * (n + 1) / 2);
    for i in 0..n {
        for j in i..n {
            walsh.push((d[i] + d[j]) / 2.0);
        }
    }
    walsh.sort_by(f64::total_cmp);
    let m = walsh.len();
    let median = if m % 2 == 1 { walsh[m / 2] } else { (walsh[m / 2 - 1] + walsh[m / 2]) / 2.0 };
    let c = signed_rank_critical(n);
    (median, walsh[c], walsh[m - 1 - c])
}

/// The largest `c` with P(T <= c) <= 2.5%, T the signed-rank statistic of `n` untied values
/// under the null (its exact distribution: each rank in or out of the sum with probability ½).
fn signed_rank_critical(n: usize) -> usize {
    let max = n * (n + 1) / 2;
    // ways[s]: subsets of ranks 1..=k summing to s; kept as probabilities (no overflow).
    let mut ways = vec![0.0f64; max + 1];
    ways[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            ways[s] = (ways[s] + ways[s - k]) / 2.0;
        }
        for w in ways.iter_mut().take(k) {
            *w /= 2.0;
        }
    }
    let mut cum = 0.0;
    for (s, p) in ways.iter().enumerate() {
        cum += p;
        if cum > 0.025 {
            return s.saturating_sub(1).min(max);
        }
    }
    0
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
        for n in [3, 5, 6, 10, 20] {
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
    fn signed_rank_critical_values_are_the_tabulated_ones() {
        // Two-sided 5% critical values of the Wilcoxon signed-rank statistic (standard tables).
        for (n, c) in [(6, 0), (7, 2), (8, 3), (10, 8), (15, 25), (20, 52), (30, 137)] {
            assert_eq!(signed_rank_critical(n), c, "n = {n}");
        }
    }

    /// Like [`rounds`], but in one round in `every` the two runs fall on either side of a
    /// regime switch: one of them costs 25–40% more than it would have.
    fn split_rounds(rng: &mut fastrand::Rng, ratio: f64, n: usize, every: usize) -> Vec<(f64, f64)> {
        let mut r = rounds(rng, ratio, 0.02, n);
        for p in r.iter_mut().skip(every / 2).step_by(every) {
            let step = 1.25 + 0.15 * rng.f64();
            if rng.bool() {
                p.0 *= step;
            } else {
                p.1 *= step;
            }
        }
        r
    }

    #[test]
    fn rounds_split_by_a_regime_switch_do_not_decide_the_verdict() {
        // 15 rounds, 3% apart, 2% noise per run, three rounds split by a 25–40% switch: the
        // mean and its t interval are thrown about so far that they miss the difference; the
        // signed-rank interval finds it.
        let mut rng = fastrand::Rng::with_seed(5);
        let r = split_rounds(&mut rng, 0.97, 15, 5);
        let iv = paired_ratio(&r).unwrap();
        assert!(iv.lo < 0.97 && 0.97 < iv.hi, "{iv:?}");
        assert_eq!(iv.direction(), Direction::Less, "{iv:?}");
        let d: Vec<f64> = r.iter().map(|(a, b)| (a / b).ln()).collect();
        let (_, tlo, thi) = student_t(&d);
        assert!(tlo < 0.0 && thi > 0.0, "the t interval ({tlo:.3}, {thi:.3}) excludes 1.0 too: {iv:?}");
    }

    #[test]
    fn coverage_holds_with_rounds_split_by_a_regime_switch() {
        for n in [10, 30] {
            let mut rng = fastrand::Rng::with_seed(100 + n as u64);
            let trials = 2000;
            let covered = (0..trials)
                .filter(|_| {
                    let iv = paired_ratio(&split_rounds(&mut rng, 0.9, n, 6)).unwrap();
                    iv.lo <= 0.9 && 0.9 <= iv.hi
                })
                .count();
            let rate = covered as f64 / trials as f64;
            assert!(rate >= 0.94, "coverage {rate} with {n} rounds, one in 6 split by a switch");
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
