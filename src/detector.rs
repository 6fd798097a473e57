//! Phi-accrual failure detection (Hayashibara et al., 2004), as a pure function of the arrival
//! times it is given.
//!
//! For each peer we keep a sliding window of heartbeat inter-arrival times. Given the silence
//! `t` since the last arrival, `phi(t) = -log10(P(next arrival later than t))` under a
//! distribution fitted to the window. A peer is convicted when phi passes a threshold. Because
//! phi only grows with silence, the threshold is equivalent to a silence limit per peer, which
//! the node checks with one comparison per tick instead of evaluating phi.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The distribution inter-arrival times are assumed to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Distribution {
    /// Normal with the window's mean and standard deviation (floored), as Akka does. Convicts
    /// after `mean + z * std` of silence, `z` about 5.6 for phi 8.
    #[default]
    Normal,
    /// Exponential with the window's mean, as Cassandra does. Convicts after
    /// `threshold * ln(10) * mean` of silence (18.4 means at phi 8).
    Exponential,
}

/// Detector parameters, derived from [`Config`](crate::Config) once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DetectorParams {
    pub(crate) window: usize,
    pub(crate) threshold: f64,
    pub(crate) min_std: f64,
    pub(crate) prior_mean: f64,
    pub(crate) prior_weight: f64,
    pub(crate) distribution: Distribution,
    /// The standard-normal quantile where phi reaches the threshold.
    z: f64,
}

impl DetectorParams {
    pub(crate) fn new(
        window: usize,
        threshold: f64,
        min_std: Duration,
        prior_mean: Duration,
        prior_weight: u32,
        distribution: Distribution,
    ) -> Self {
        Self {
            window,
            threshold,
            min_std: min_std.as_secs_f64(),
            prior_mean: prior_mean.as_secs_f64(),
            prior_weight: f64::from(prior_weight),
            distribution,
            z: normal_quantile_for_phi(threshold),
        }
    }
}

/// Heartbeat arrival history of one peer.
#[derive(Clone, Debug)]
pub(crate) struct PeerDetector {
    last_arrival: Instant,
    /// Inter-arrival times in milliseconds (saturating at 65.5 s): two bytes a sample keeps a
    /// full 1,000-sample window at 2 KB per peer, which matters when one process simulates a
    /// thousand nodes that each track a thousand peers.
    samples: VecDeque<u16>,
    sum: u64,
    sum_sq: u64,
}

impl PeerDetector {
    /// A fresh peer, as if a heartbeat had just arrived.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            last_arrival: now,
            samples: VecDeque::new(),
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Records a heartbeat arrival. `sample` is false when the gap since the previous arrival is
    /// not an inter-arrival time worth learning (the peer was down, or we were paused).
    pub(crate) fn arrival(&mut self, now: Instant, sample: bool, p: &DetectorParams) {
        if sample {
            let ms = now.saturating_duration_since(self.last_arrival).as_millis();
            let ms = u16::try_from(ms).unwrap_or(u16::MAX);
            if self.samples.len() >= p.window {
                if let Some(old) = self.samples.pop_front() {
                    self.sum -= u64::from(old);
                    self.sum_sq -= u64::from(old) * u64::from(old);
                }
            }
            self.samples.push_back(ms);
            self.sum += u64::from(ms);
            self.sum_sq += u64::from(ms) * u64::from(ms);
        }
        self.last_arrival = self.last_arrival.max(now);
    }

    /// Forgets the silence so far without learning from it (we, the observer, were frozen).
    pub(crate) fn rebase(&mut self, now: Instant) {
        self.last_arrival = self.last_arrival.max(now);
    }

    pub(crate) fn last_arrival(&self) -> Instant {
        self.last_arrival
    }

    pub(crate) fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Mean and standard deviation (seconds), smoothed towards the prior and floored.
    pub(crate) fn estimate(&self, p: &DetectorParams) -> (f64, f64) {
        let n = self.samples.len() as f64;
        let w = p.prior_weight;
        let sum = self.sum as f64 / 1000.0;
        let sum_sq = self.sum_sq as f64 / 1_000_000.0;
        let mean = (sum + w * p.prior_mean) / (n + w);
        let second = (sum_sq + w * p.prior_mean * p.prior_mean) / (n + w);
        let var = (second - mean * mean).max(0.0);
        (mean, var.sqrt().max(p.min_std))
    }

    /// Phi after the silence up to `now`.
    pub(crate) fn phi(&self, now: Instant, p: &DetectorParams) -> f64 {
        let t = now.saturating_duration_since(self.last_arrival).as_secs_f64();
        let (mean, std) = self.estimate(p);
        phi(t, mean, std, p.distribution)
    }

    /// The silence after which phi passes the threshold.
    pub(crate) fn silence_limit(&self, p: &DetectorParams) -> Duration {
        let (mean, std) = self.estimate(p);
        let secs = match p.distribution {
            Distribution::Normal => mean + p.z * std,
            Distribution::Exponential => p.threshold * std::f64::consts::LN_10 * mean,
        };
        Duration::from_secs_f64(secs.clamp(0.0, 1e9))
    }
}

/// phi for a silence of `t` seconds.
pub(crate) fn phi(t: f64, mean: f64, std: f64, distribution: Distribution) -> f64 {
    match distribution {
        Distribution::Normal => {
            let y = (t - mean) / std;
            let tail = 0.5 * erfc(y / std::f64::consts::SQRT_2);
            if tail <= 0.0 {
                f64::INFINITY
            } else {
                -tail.log10()
            }
        }
        Distribution::Exponential => {
            if mean <= 0.0 {
                f64::INFINITY
            } else {
                t / (mean * std::f64::consts::LN_10)
            }
        }
    }
}

/// Complementary error function, fractional error below 1.2e-7 everywhere (Numerical Recipes'
/// Chebyshev fit), good enough for phi up to about 15.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * (-z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
        .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The `y` where `-log10(0.5 * erfc(y / sqrt 2)) = threshold`, by bisection (phi grows with y).
fn normal_quantile_for_phi(threshold: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if phi(mid, 0.0, 1.0, Distribution::Normal) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(dist: Distribution) -> DetectorParams {
        DetectorParams::new(
            100,
            8.0,
            Duration::from_millis(10),
            Duration::from_millis(100),
            0,
            dist,
        )
    }

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
        assert!((erfc(3.0) - 2.209_049_7e-5).abs() / 2.2e-5 < 1e-6);
    }

    #[test]
    fn normal_phi_is_minus_log10_of_the_tail() {
        // At the mean, half the arrivals are later: phi = log10(2).
        assert!((phi(1.0, 1.0, 0.5, Distribution::Normal) - 2f64.log10()).abs() < 1e-6);
        // One sigma above the mean: tail 0.158655.
        let expected = -(0.158_655_25_f64).log10();
        assert!((phi(1.5, 1.0, 0.5, Distribution::Normal) - expected).abs() < 1e-5);
    }

    #[test]
    fn quantile_for_phi_8_is_about_5_6_sigma() {
        let z = normal_quantile_for_phi(8.0);
        assert!((z - 5.612).abs() < 0.01, "z = {z}");
        assert!((phi(z, 0.0, 1.0, Distribution::Normal) - 8.0).abs() < 1e-6);
    }

    #[test]
    fn exponential_phi_is_linear_in_silence() {
        let mean = 0.1;
        let t = 8.0 * std::f64::consts::LN_10 * mean;
        assert!((phi(t, mean, 0.0, Distribution::Exponential) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn window_slides_and_statistics_follow() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0);
        let mut t = t0;
        for _ in 0..150 {
            t += Duration::from_millis(100);
            d.arrival(t, true, &p);
        }
        assert_eq!(d.num_samples(), 100);
        let (mean, std) = d.estimate(&p);
        assert!((mean - 0.1).abs() < 1e-9);
        assert!((std - 0.01).abs() < 1e-9, "floored at min_std");
        // Now alternate 50 and 150 ms: mean stays 100 ms, std becomes 50 ms.
        for i in 0..100 {
            t += Duration::from_millis(if i % 2 == 0 { 50 } else { 150 });
            d.arrival(t, true, &p);
        }
        let (mean, std) = d.estimate(&p);
        assert!((mean - 0.1).abs() < 1e-9);
        assert!((std - 0.05).abs() < 1e-9);
    }

    #[test]
    fn phi_grows_with_silence_and_matches_the_silence_limit() {
        for dist in [Distribution::Normal, Distribution::Exponential] {
            let p = params(dist);
            let t0 = Instant::now();
            let mut d = PeerDetector::new(t0);
            let mut t = t0;
            for i in 0..50 {
                t += Duration::from_millis(80 + (i % 5) * 10);
                d.arrival(t, true, &p);
            }
            let mut last = 0.0;
            for ms in (0..3000).step_by(10) {
                let now = t + Duration::from_millis(ms);
                let phi = d.phi(now, &p);
                assert!(phi >= last, "{dist:?}: phi must not decrease");
                last = phi;
            }
            let limit = d.silence_limit(&p);
            let before = d.phi(t + limit - Duration::from_millis(1), &p);
            let after = d.phi(t + limit + Duration::from_millis(1), &p);
            assert!(before < 8.0 && after >= 8.0, "{dist:?}: {before} {after}");
        }
    }

    #[test]
    fn prior_dominates_a_fresh_peer() {
        let mut p = params(Distribution::Normal);
        p.prior_weight = 5.0;
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0);
        // One very short first interval does not make the peer look hair-trigger.
        d.arrival(t0 + Duration::from_millis(1), true, &p);
        let (mean, _) = d.estimate(&p);
        assert!(mean > 0.08, "mean {mean}");
    }

    #[test]
    fn unsampled_arrivals_do_not_learn_the_gap() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0);
        d.arrival(t0 + Duration::from_secs(30), false, &p);
        assert_eq!(d.num_samples(), 0);
        assert_eq!(d.last_arrival(), t0 + Duration::from_secs(30));
    }
}
