//! Phi-accrual failure detection (Hayashibara et al., 2004), as a pure function of the times
//! it is given, adapted to heartbeats that arrive relayed by gossip.
//!
//! Textbook phi accrual watches the silence since the last heartbeat arrival, and learns the
//! distribution of inter-arrival times. With gossip, a peer's heartbeat counter reaches an
//! observer through relays, a few rounds late and in bursts, so arrival times mix the peer's
//! liveness with the relays' lag. Every node bumps its counter exactly once per gossip interval,
//! though, so an observer can tell *when* a heartbeat value was emitted: `emit(h) = t0 + h * I`,
//! with the peer's phase `t0` estimated as the smallest `arrival - h * I` seen recently (the
//! least-delayed copy). The detector then watches the **age of the freshest heartbeat known**,
//! `now - emit(h_max)`, and learns the distribution of that age just before each arrival (the
//! "peak age"). For heartbeats sent directly (no relay lag) the peak age is exactly the
//! inter-arrival time, so this is textbook phi accrual; with relays it ignores the relays' lag
//! and detection takes the same time from every observer. design.md, "Failure detection", has
//! the measurements behind this choice.
//!
//! Phi only grows with the age, so the threshold is equivalent to an age limit per peer, which
//! the node checks with one comparison per tick instead of evaluating phi.

use std::time::{Duration, Instant};

/// The distribution peak ages are assumed to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Distribution {
    /// Normal with the window's mean and standard deviation (floored), as Akka does. Convicts
    /// after `mean + z * std` of evidence age, `z` about 6.36 at the default phi of 10 (5.6 at
    /// phi 8, 14.9 at the highest threshold accepted, 50).
    #[default]
    Normal,
    /// Exponential with the window's mean, as Cassandra does. Convicts after
    /// `threshold * ln(10) * mean` of evidence age (23.0 means at the default phi of 10, 18.4
    /// at phi 8).
    Exponential,
}

/// Detector parameters, derived from [`Config`](crate::Config) once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DetectorParams {
    /// The sample window's blocks, worked out once from `detector_window`.
    window: WindowShape,
    pub(crate) threshold: f64,
    pub(crate) min_std: f64,
    pub(crate) prior_mean: f64,
    pub(crate) prior_weight: f64,
    pub(crate) distribution: Distribution,
    /// The gossip interval: every node bumps its heartbeat once per interval of its own, this
    /// one unless a peer says otherwise (`PeerDetector::set_interval`).
    pub(crate) interval_ns: i64,
    /// The unit of the window's samples, in nanoseconds: a millisecond, or a 1,024th of the
    /// interval if that is longer, so that the 16-bit samples reach at least 64 intervals
    /// (in milliseconds alone they stopped at 65.5 s, and with an interval near a minute
    /// every sample sat at that cap: the spread vanished and live peers were convicted).
    sample_unit_ns: i64,
    /// The standard-normal quantile where phi reaches the threshold.
    z: f64,
    /// Origin of every peer detector's times (the node's creation): one per node rather than
    /// one per peer, so each of the node's N peer records is 16 bytes smaller.
    epoch: Instant,
}

impl DetectorParams {
    pub(crate) fn new(
        window: usize,
        threshold: f64,
        min_std: Duration,
        interval: Duration,
        prior_weight: u32,
        distribution: Distribution,
        epoch: Instant,
    ) -> Self {
        Self {
            window: WindowShape::of(window),
            threshold,
            min_std: min_std.as_secs_f64(),
            // Until the cluster size is known: one interval between bumps, about one of relay
            // lag. See `set_cluster_size`.
            prior_mean: 2.0 * interval.as_secs_f64(),
            prior_weight: f64::from(prior_weight),
            distribution,
            interval_ns: i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX),
            sample_unit_ns: i64::try_from(interval.as_nanos().div_ceil(1024))
                .unwrap_or(i64::MAX)
                .max(1_000_000),
            z: normal_quantile_for_phi(threshold),
            epoch,
        }
    }
}

impl DetectorParams {
    /// The origin of the node's detector times (its creation).
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Scales the prior to the cluster: a fresh peer's heartbeats are expected to be about
    /// `max(2, ceil(log2 n))` intervals old when the next one arrives (epidemic dissemination takes
    /// O(log n) rounds), so a node that just learned a large cluster does not convict peers
    /// whose heartbeats have not started flowing to it yet.
    pub(crate) fn set_cluster_size(&mut self, n: usize) {
        let rounds = (usize::BITS - n.max(1).saturating_sub(1).leading_zeros()).max(2);
        self.prior_mean = f64::from(rounds) * self.interval_ns as f64 / 1e9;
    }
}

/// Arrivals of a peer's phase estimate kept (see the module docs).
const PHASE_SAMPLES: usize = 16;
/// A phase shift (the peer was frozen, then went on) is accepted once this many consecutive
/// arrivals all place the phase more than `PHASE_SHIFT_INTERVALS` later than the estimate.
const PHASE_SHIFT_RUN: usize = 8;
const PHASE_SHIFT_INTERVALS: i64 = 3;

/// Heartbeat history of one peer.
///
/// `repr(C)` to keep the order below: the fields every learned heartbeat touches come first,
/// together (a process of hundreds of nodes, or the simulator, holds tens of thousands of these
/// and touches each one once per gossip interval, mostly a cache miss per line); the closed
/// blocks of the window, written once per block, come last. Times are nanoseconds since the
/// node's epoch (`DetectorParams::epoch`; never before it), 8 bytes each instead of an
/// `Instant`'s 16, and cheaper to compare.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub(crate) struct PeerDetector {
    last_hb: u64,
    /// Estimated `arrival - hb * I` of the least-delayed copy (ns since the epoch).
    phase: i64,
    /// Estimated emission time of `last_hb` (ns since the epoch, at least 0).
    evidence: i64,
    /// Ages are not counted from before this time (ns since the epoch): we, the observer,
    /// were frozen, or the peer just came back.
    not_before: i64,
    /// The age limit `deadline` last worked out (ns), and the samples learned since
    /// (`u16::MAX`: none worked out yet, or a block of the window closed since; it saturates
    /// there too, past the 64th of the largest window that calls for working it out again).
    limit_ns: i64,
    since_limit: u16,
    /// Values in `phases`, and where the next one goes.
    phases_len: u8,
    phases_next: u8,
    /// The peer's gossip interval in microseconds, as it gossips it (`KEY_INTERVAL`); 0 until
    /// known, or when it is ours: its heartbeats are then dated with ours. 4 bytes, in what
    /// was padding: the field is read by every learned heartbeat. Microseconds are exact
    /// enough: the phase is the least `arrival - hb * I` of the last 16 values only, so an
    /// error of a microsecond a beat moves it by at most 16 of them.
    interval_us: u32,
    /// What `phases` count from (ns since the epoch): the first value after the ring was last
    /// emptied.
    phase_base: i64,
    /// Recent `arrival - hb * I` values, in microseconds after `phase_base` (rounded down): a
    /// ring, inline so that learning a heartbeat touches one allocation less, and 4 bytes a
    /// value so that it is one cache line (in nanoseconds it was two, read whole by every
    /// learned heartbeat).
    phases: [i32; PHASE_SAMPLES],
    /// Peak ages, in `DetectorParams::sample_unit_ns` (a millisecond up to a 1.024-s interval;
    /// saturating at 65,535 units, at least 64 intervals).
    samples: Window,
}

/// Blocks the sample window is kept in.
const WINDOW_BLOCKS: usize = 16;

/// The last `window` samples' count, sum and sum of squares, kept as sums over blocks of
/// `ceil(window / 16)` samples: the oldest block leaves the window whole. Learning a sample
/// touches three integers inline in the peer's record; the block sums are written once per
/// block. A ring of every sample (2 KB per peer at the default 1,000) made each learned
/// heartbeat two cache misses, which dominated a node's idle work in a process holding
/// hundreds of nodes, and 2 GB of a thousand-node simulation.
#[derive(Clone, Debug, Default)]
#[repr(C)]
struct Window {
    /// Samples in the block being filled, and in the closed blocks still in the window.
    open_n: u32,
    closed_n: u32,
    /// Sums and sums of squares of the same.
    open_sum: u64,
    open_sq: u64,
    closed_sum: u64,
    closed_sq: u64,
    /// Closed blocks' sums (each holds exactly `block` samples): a ring.
    sums: [u32; WINDOW_BLOCKS],
    sqs: [u64; WINDOW_BLOCKS],
    len: u8,
    next: u8,
}

/// Block size and number of closed blocks kept for a window of `window` samples: the window
/// holds between `window - block` and `window + block` samples (exactly `window` when it is 16
/// or less).
#[derive(Clone, Copy, Debug)]
struct WindowShape {
    block: u32,
    blocks: usize,
}

impl WindowShape {
    fn of(window: usize) -> Self {
        let window = window.max(1);
        let block = window.div_ceil(WINDOW_BLOCKS);
        Self {
            block: u32::try_from(block).unwrap_or(u32::MAX),
            blocks: (window / block).clamp(1, WINDOW_BLOCKS),
        }
    }
}

impl Window {
    /// Adds a sample; true if that closed a block (and the oldest may have left the window).
    fn push(&mut self, units: u16, shape: WindowShape) -> bool {
        let WindowShape { block, blocks } = shape;
        let v = u64::from(units);
        self.open_n += 1;
        self.open_sum += v;
        self.open_sq += v * v;
        if self.open_n < block {
            return false;
        }
        if usize::from(self.len) >= blocks {
            let oldest =
                (usize::from(self.next) + WINDOW_BLOCKS - usize::from(self.len)) % WINDOW_BLOCKS;
            self.closed_n -= block;
            self.closed_sum -= u64::from(self.sums[oldest]);
            self.closed_sq -= self.sqs[oldest];
            self.len -= 1;
        }
        let at = usize::from(self.next);
        // A block's sum is at most 63 * 65,535 at the default window; u32 holds 65,537 of them.
        self.sums[at] = u32::try_from(self.open_sum).unwrap_or(u32::MAX);
        self.sqs[at] = self.open_sq;
        self.closed_n += self.open_n;
        self.closed_sum += u64::from(self.sums[at]);
        self.closed_sq += self.open_sq;
        self.next = ((at + 1) % WINDOW_BLOCKS) as u8;
        self.len += 1;
        self.open_n = 0;
        self.open_sum = 0;
        self.open_sq = 0;
        true
    }

    fn count(&self) -> u32 {
        self.closed_n + self.open_n
    }

    fn sums(&self) -> (u64, u64) {
        (
            self.closed_sum + self.open_sum,
            self.closed_sq + self.open_sq,
        )
    }
}

impl PeerDetector {
    /// A fresh peer whose heartbeat `hb` was just learned.
    pub(crate) fn new(now: Instant, hb: u64, p: &DetectorParams) -> Self {
        Self::dated_at(now, hb, 0, p)
    }

    /// As `new`, for a peer beating every `interval_us` microseconds (0: as often as we do).
    fn dated_at(now: Instant, hb: u64, interval_us: u32, p: &DetectorParams) -> Self {
        let mut d = Self {
            last_hb: 0,
            phase: 0,
            evidence: 0,
            not_before: 0,
            limit_ns: 0,
            since_limit: u16::MAX,
            phases_len: 0,
            phases_next: 0,
            interval_us,
            phase_base: 0,
            phases: [0; PHASE_SAMPLES],
            samples: Window::default(),
        };
        d.heartbeat(now, hb, false, p);
        d
    }

    /// `t` in nanoseconds since the epoch (0 before it, saturating far after it).
    fn offset(t: Instant, p: &DetectorParams) -> i64 {
        nanos(t.saturating_duration_since(p.epoch))
    }

    /// Adds `phase` (ns since the epoch) to the ring of recent phases.
    fn push_phase(&mut self, phase: i64) {
        if self.phases_len == 0 {
            self.phase_base = phase;
        }
        let rel = match i32::try_from(phase.saturating_sub(self.phase_base).div_euclid(1000)) {
            Ok(rel) => rel,
            Err(_) => {
                // More than 35 minutes from the others: they no longer describe the peer.
                self.phases_len = 0;
                self.phases_next = 0;
                self.phase_base = phase;
                0
            }
        };
        self.phases[usize::from(self.phases_next)] = rel;
        self.phases_next = ((usize::from(self.phases_next) + 1) % PHASE_SAMPLES) as u8;
        self.phases_len = (usize::from(self.phases_len) + 1).min(PHASE_SAMPLES) as u8;
    }

    /// A ring value (microseconds after `phase_base`) in nanoseconds since the epoch.
    fn phase_at(&self, rel: i32) -> i64 {
        self.phase_base.saturating_add(i64::from(rel) * 1000)
    }

    /// Records that heartbeat `hb` (newer than any before) was learned at `now`. `sample` is
    /// false when the age before it is not worth learning (the peer was down).
    pub(crate) fn heartbeat(&mut self, now: Instant, hb: u64, sample: bool, p: &DetectorParams) {
        self.learn(now, hb, sample, true, p);
    }

    /// As `heartbeat`, for one learned while we, the observer, catch up after a pause: it may
    /// have waited in a queue the whole pause, so its arrival says nothing of the peer's
    /// schedule (once a phase is known) and its age is not sampled. Dated by its arrival, the
    /// backlog of a 24-s pause moved the phase 24 s later, and the peer's current heartbeats
    /// were then read as 256 too low.
    pub(crate) fn heartbeat_queued(&mut self, now: Instant, hb: u64, p: &DetectorParams) {
        let date = self.phases_len == 0;
        self.learn(now, hb, false, date, p);
    }

    fn learn(&mut self, now: Instant, hb: u64, sample: bool, date: bool, p: &DetectorParams) {
        if hb <= self.last_hb && self.last_hb != 0 {
            return;
        }
        let since_ref = Self::offset(now, p);
        // Heartbeats are peer input: anything past i64::MAX saturates instead of wrapping.
        let hb_i = i64::try_from(hb).unwrap_or(i64::MAX);
        let interval = self.interval_ns(p);
        let phase = since_ref.saturating_sub(hb_i.saturating_mul(interval));
        if sample && self.last_hb != 0 {
            let peak = since_ref.saturating_sub(self.evidence.max(self.not_before));
            let units = u16::try_from(peak.max(0) / self.sample_unit_ns(p)).unwrap_or(u16::MAX);
            self.since_limit = if self.samples.push(units, p.window) {
                u16::MAX
            } else {
                self.since_limit.saturating_add(1)
            };
        }
        if date {
            self.date_phase(phase, p);
        }
        self.last_hb = hb;
        let emitted = self.phase.saturating_add(hb_i.saturating_mul(interval));
        self.evidence = emitted.clamp(0, since_ref);
    }

    /// Adds `phase` (`arrival - hb * I` of a heartbeat just learned) to the estimate of the
    /// peer's schedule.
    fn date_phase(&mut self, phase: i64, p: &DetectorParams) {
        self.push_phase(phase);
        let len = usize::from(self.phases_len);
        let newest = |k: usize| {
            // The k-th newest value (0 = newest).
            let i = (usize::from(self.phases_next) + PHASE_SAMPLES - 1 - k) % PHASE_SAMPLES;
            self.phases[i]
        };
        // Until the ring is full its values are exactly `phases[..len]` (it fills from 0, and
        // both resets restart it there).
        self.phase = self.phases[..len]
            .iter()
            .copied()
            .min()
            .map_or(phase, |rel| self.phase_at(rel));
        if len >= PHASE_SHIFT_RUN {
            let recent_min = (0..PHASE_SHIFT_RUN)
                .map(newest)
                .min()
                .map_or(phase, |rel| self.phase_at(rel));
            if recent_min
                > self
                    .phase
                    .saturating_add(PHASE_SHIFT_INTERVALS.saturating_mul(self.interval_ns(p)))
            {
                // The peer's schedule moved later (it was frozen, then resumed): the old phase
                // no longer describes it. Keep only the recent run.
                let mut keep = [0i32; PHASE_SHIFT_RUN];
                for (k, v) in keep.iter_mut().rev().enumerate() {
                    *v = newest(k);
                }
                self.phases[..PHASE_SHIFT_RUN].copy_from_slice(&keep);
                self.phases_len = PHASE_SHIFT_RUN as u8;
                self.phases_next = PHASE_SHIFT_RUN as u8;
                self.phase = recent_min;
            }
        }
    }

    /// Forgives `silence` of the current evidence age (never past `now`): we, the observer,
    /// were frozen about that long, so that much of the age is ours, not the peer's. Forgiving
    /// the whole age instead (`rebase`) would also forget how long a crashed peer had already
    /// been silent before the pause, and restart its count.
    pub(crate) fn forgive(&mut self, silence: Duration, now: Instant, p: &DetectorParams) {
        let until = self
            .evidence_offset()
            .saturating_add(nanos(silence))
            .min(Self::offset(now, p));
        self.not_before = self.not_before.max(until);
    }

    /// Forgets the age so far without learning from it: the peer came back up (its phase may
    /// have moved). (Our own pauses are forgiven by `forgive`, which keeps the silence from
    /// before them.)
    pub(crate) fn rebase(&mut self, now: Instant, p: &DetectorParams) {
        self.not_before = self.not_before.max(Self::offset(now, p));
    }

    /// Forgets the peer's phase (it was down; when it comes back its schedule has moved).
    pub(crate) fn restart_phase(&mut self) {
        self.phases_len = 0;
        self.phases_next = 0;
        self.last_hb = 0;
    }

    /// A word from each cache line `heartbeat` and `deadline` read (see `Node::warm_learns`):
    /// the fields up to the window's totals, in this order.
    pub(crate) fn touch(&self) -> u64 {
        self.last_hb
            ^ self.phases[0] as u64
            ^ self.phases[PHASE_SAMPLES - 1] as u64
            ^ self.samples.closed_sq
    }

    /// The heartbeat the peer's schedule puts at `now`: every node bumps its heartbeat once per
    /// interval of its own elapsed time, so `(now - phase) / I` is about the value it sends
    /// now, within a beat or two (`phase`, the least-delayed copy's, may be a little late).
    /// A down peer keeps the phase it had (a pause or a partition does not move its schedule;
    /// `restart_phase` runs when it comes back, right before the heartbeat that brought it).
    /// `None` only with no phase at all, which a record created from a heartbeat always has.
    pub(crate) fn scheduled(&self, now: Instant, p: &DetectorParams) -> Option<u64> {
        if self.phases_len == 0 {
            return None;
        }
        let since = Self::offset(now, p).saturating_sub(self.phase);
        u64::try_from(since.div_euclid(self.interval_ns(p).max(1))).ok()
    }

    /// When the current evidence started ageing, in nanoseconds since the epoch.
    fn evidence_offset(&self) -> i64 {
        self.evidence.max(self.not_before)
    }

    /// When the current evidence started ageing.
    pub(crate) fn evidence_at(&self, p: &DetectorParams) -> Instant {
        // Offsets are never negative.
        p.epoch + Duration::from_nanos(self.evidence_offset().max(0) as u64)
    }

    /// The interval the peer bumps its heartbeat at, in nanoseconds: its own if it said so,
    /// else ours.
    pub(crate) fn interval_ns(&self, p: &DetectorParams) -> i64 {
        if self.interval_us == 0 {
            p.interval_ns
        } else {
            i64::from(self.interval_us) * 1000
        }
    }

    /// The unit of this peer's samples: `DetectorParams::sample_unit_ns`, or a 1,024th of the
    /// peer's interval if that is longer (the same reason, for a peer slower than us).
    fn sample_unit_ns(&self, p: &DetectorParams) -> i64 {
        if self.interval_us == 0 {
            p.sample_unit_ns
        } else {
            // Positive: `interval_us` is at least 1.
            p.sample_unit_ns.max((self.interval_ns(p) + 1023) / 1024)
        }
    }

    /// Dates the peer's heartbeats with `interval`, the one it gossips (`None`: it gossips
    /// none, an older version; ours is assumed, as before). True if that changed the record:
    /// then it starts over from `now` and the heartbeat held, as a fresh peer, since what it
    /// learned was dated at the wrong pace (a heartbeat a second dated at 100 ms looks older
    /// by 0.9 s at every beat). That happens once per incarnation, when its interval is first
    /// learned, right after its record was made from the same delta.
    pub(crate) fn set_interval(
        &mut self,
        interval: Option<Duration>,
        now: Instant,
        p: &DetectorParams,
    ) -> bool {
        let us = match interval {
            Some(iv) if iv.as_nanos() != p.interval_ns as u128 => {
                // To the nearest microsecond, at least one (past 71 minutes, capped there).
                u32::try_from(iv.as_nanos().saturating_add(500) / 1000)
                    .unwrap_or(u32::MAX)
                    .max(1)
            }
            _ => 0,
        };
        if us == self.interval_us {
            return false;
        }
        *self = Self::dated_at(now, self.last_hb, us, p);
        true
    }

    /// How much slower than us the peer beats (at least 1): its prior and floor are ours
    /// scaled by this, as if we gossiped at its pace. Its peak ages are at least its interval
    /// (relays only add to it), so a prior and floor in our own intervals convicted a slower
    /// peer at its first few beats (100-ms observers of a 1-s joiner, in clusters of 3 to 6).
    fn slowness(&self, p: &DetectorParams) -> f64 {
        if self.interval_us == 0 {
            1.0
        } else {
            (self.interval_ns(p) as f64 / p.interval_ns.max(1) as f64).max(1.0)
        }
    }

    /// Mean and standard deviation (seconds) of the peak age, smoothed towards the prior and
    /// floored.
    pub(crate) fn estimate(&self, p: &DetectorParams) -> (f64, f64) {
        let n = f64::from(self.samples.count());
        let slowness = self.slowness(p);
        let (prior_mean, min_std) = (p.prior_mean * slowness, p.min_std * slowness);
        // The prior bootstraps a fresh peer and fades out linearly over its first
        // `4 * prior_weight` samples, after which the peer is judged on its own record.
        let w = p.prior_weight * (1.0 - n / (4.0 * p.prior_weight).max(1.0)).max(0.0);
        if n + w <= 0.0 {
            return (prior_mean, prior_mean.max(min_std));
        }
        let (sum, sum_sq) = self.samples.sums();
        let unit = self.sample_unit_ns(p) as f64 / 1e9;
        let sum = sum as f64 * unit;
        let sum_sq = sum_sq as f64 * unit * unit;
        // The prior: mean `prior_mean`, standard deviation half of it, worth `w` samples.
        let prior_second = 1.25 * prior_mean * prior_mean;
        let mean = (sum + w * prior_mean) / (n + w);
        let second = (sum_sq + w * prior_second) / (n + w);
        let var = (second - mean * mean).max(0.0);
        (mean, var.sqrt().max(min_std))
    }

    /// Phi at `now`.
    pub(crate) fn phi(&self, now: Instant, p: &DetectorParams) -> f64 {
        let t = now
            .saturating_duration_since(self.evidence_at(p))
            .as_secs_f64();
        let (mean, std) = self.estimate(p);
        phi(t, mean, std, p.distribution)
    }

    /// The evidence age at which phi passes the threshold.
    pub(crate) fn age_limit(&self, p: &DetectorParams) -> Duration {
        let (mean, std) = self.estimate(p);
        let secs = match p.distribution {
            Distribution::Normal => mean + p.z * std,
            Distribution::Exponential => p.threshold * std::f64::consts::LN_10 * mean,
        };
        if secs.is_finite() {
            // Not `from_secs_f64`: its exact rounding cost more than the rest of this
            // function, once per learned heartbeat.
            Duration::from_nanos((secs.clamp(0.0, 1e9) * 1e9) as u64)
        } else {
            Duration::from_secs(1_000_000_000)
        }
    }

    /// [`PeerDetector::deadline_offset`] as an `Instant` (tests).
    #[cfg(test)]
    pub(crate) fn deadline(&mut self, p: &DetectorParams) -> Instant {
        // Offsets are never negative.
        p.epoch + Duration::from_nanos(self.deadline_offset(p).max(0) as u64)
    }

    /// When phi passes the threshold if no newer heartbeat arrives, in nanoseconds since the
    /// epoch: near enough to schedule the next look at this peer (a conviction checks
    /// `age_limit` afresh).
    ///
    /// The limit is worked out again only once the samples learned since the last time are a
    /// 64th of the window, when a block of it closes, and while the prior still counts: a
    /// heartbeat is learned from every peer every interval, and working out the limit (a
    /// square root and a handful of divisions) for each was a tenth of learning it, for a
    /// value that a window of hundreds of samples barely moves.
    pub(crate) fn deadline_offset(&mut self, p: &DetectorParams) -> i64 {
        let n = self.samples.count();
        let prior_counts = f64::from(n) < 4.0 * p.prior_weight;
        if prior_counts || u32::from(self.since_limit) * 64 >= n {
            self.limit_ns = nanos(self.age_limit(p));
            self.since_limit = 0;
        }
        // `nanos` never returns a negative value.
        self.evidence_offset().saturating_add(self.limit_ns)
    }

    /// Samples in the window.
    pub(crate) fn num_samples(&self) -> usize {
        self.samples.count() as usize
    }
}

/// A duration in nanoseconds, saturating at `i64::MAX` (292 years).
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
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
/// Chebyshev fit). The error is relative, so phi (a logarithm of it) stays within 1e-7 of the
/// exact value up to the highest threshold accepted, 50 (about 15 standard deviations), and
/// well past it: `exp` underflows only about 37 standard deviations out.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
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

    const I: Duration = Duration::from_millis(100);

    fn params(dist: Distribution) -> DetectorParams {
        DetectorParams::new(
            100,
            8.0,
            Duration::from_millis(10),
            I,
            0,
            dist,
            Instant::now(),
        )
    }

    /// Peak ages past 65.5 s (an interval of a minute or more) are learned as they are, not
    /// capped there: regular arrivals 70 s apart give a limit past 70 s.
    #[test]
    fn peak_ages_past_a_minute_are_not_capped() {
        let iv = Duration::from_secs(70);
        let p = DetectorParams::new(
            1000,
            10.0,
            Duration::from_millis(200),
            iv,
            10,
            Distribution::Normal,
            Instant::now(),
        );
        let t0 = p.epoch();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..200u32 {
            d.heartbeat(t0 + iv * (hb - 1), u64::from(hb), true, &p);
        }
        let (mean, _) = d.estimate(&p);
        assert!((mean - 70.0).abs() < 0.1, "mean {mean} s");
        assert!(d.age_limit(&p) > iv);
    }
    /// A peer beating every second, seen by an observer at 100 ms: dated at the observer's
    /// pace its evidence looked 0.9 s staler at each beat, so its peak ages grew from 1 s to
    /// several, and its first ones met a prior of 0.2 s give or take 0.1. Dated at its own,
    /// they are its interval, its schedule is its own, and its prior and floor are in its
    /// intervals.
    #[test]
    fn a_slower_peer_is_dated_and_judged_at_its_own_interval() {
        let iv = Duration::from_secs(1);
        let p = DetectorParams::new(1000, 10.0, I, I, 10, Distribution::Normal, Instant::now());
        let t0 = p.epoch();
        let run = |known: bool| {
            let mut d = PeerDetector::new(t0, 1, &p);
            if known {
                assert!(d.set_interval(Some(iv), t0, &p));
                assert!(!d.set_interval(Some(iv), t0, &p), "already at its pace");
            }
            // The prior alone: its mean is 2 of the peer's intervals, not of ours.
            let (mean, std) = d.estimate(&p);
            let scale = if known { 10.0 } else { 1.0 };
            assert!(
                (mean - 0.2 * scale).abs() < 1e-9,
                "{known}: prior mean {mean}"
            );
            assert!((std - 0.1 * scale).abs() < 1e-9, "{known}: prior std {std}");
            let mut limits = Vec::new();
            for hb in 2..60u32 {
                let at = t0 + iv * (hb - 1) + Duration::from_millis(5);
                limits.push(d.deadline_offset(&p) - PeerDetector::offset(at, &p));
                d.heartbeat(at, u64::from(hb), true, &p);
            }
            (d, limits)
        };
        let (d, limits) = run(true);
        let (mean, _) = d.estimate(&p);
        assert!(
            (mean - 1.0).abs() < 0.02,
            "peak ages of its interval: {mean}"
        );
        assert!(
            limits.iter().all(|&l| l > 0),
            "convicted at a beat: {limits:?}"
        );
        let at = t0 + iv * 58 + Duration::from_millis(5);
        assert_eq!(d.scheduled(at, &p), Some(59), "its schedule is its own");
        // Ours assumed (a peer of an older version): the deadline passed before a beat.
        let (_, limits) = run(false);
        assert!(limits.iter().any(|&l| l < 0), "{limits:?}");
        // Our own interval, gossiped, changes nothing.
        let mut d = PeerDetector::new(t0, 1, &p);
        assert!(!d.set_interval(Some(I), t0, &p));
    }

    #[test]
    fn the_window_sums_exactly_the_most_recent_samples() {
        for window in [2, 7, 16, 17, 100, 1000, 1001] {
            let shape = WindowShape::of(window);
            let block = shape.block as usize;
            let mut w = Window::default();
            let mut all: Vec<u64> = Vec::new();
            // Pseudo-random ages, some at the u16 ceiling.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for i in 0..3 * window + 5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ms = if i % 97 == 0 {
                    u16::MAX
                } else {
                    (x % 3000) as u16
                };
                w.push(ms, shape);
                all.push(u64::from(ms));
                let n = w.count() as usize;
                assert!(
                    n <= all.len(),
                    "window {window}: {n} > {} pushed",
                    all.len()
                );
                if all.len() >= window + block {
                    assert!(
                        n + block > window && n < window + block,
                        "window {window} (blocks of {block}) holds {n}"
                    );
                } else if all.len() <= window {
                    assert_eq!(
                        n,
                        all.len(),
                        "window {window}: nothing leaves before it fills"
                    );
                }
                let recent = &all[all.len() - n..];
                let sum: u64 = recent.iter().sum();
                let sq: u64 = recent.iter().map(|v| v * v).sum();
                assert_eq!(
                    w.sums(),
                    (sum, sq),
                    "window {window} after {} samples",
                    i + 1
                );
            }
        }
        // Small windows are exact.
        let mut w = Window::default();
        for ms in 1..=40u16 {
            w.push(ms, WindowShape::of(10));
        }
        assert_eq!(w.count(), 10);
        assert_eq!(w.sums().0, (31..=40).sum::<u64>());
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

    /// The fit's error is relative, so it holds far out in the tail, where the highest
    /// thresholds accepted (up to 50) put the deadline. Exact values from a libm `erfc`.
    #[test]
    fn erfc_keeps_its_relative_accuracy_deep_in_the_tail() {
        for (x, exact) in [
            (5.0, 1.537_459_794_428_035e-12),
            (7.5, 2.776_649_386_030_569e-26),
            (10.0, 2.088_487_583_762_545e-45),
            (10.6, 8.450_446_403_094_595e-51),
        ] {
            let rel = (erfc(x) - exact).abs() / exact;
            assert!(rel < 1.2e-7, "erfc({x}): relative error {rel}");
        }
    }

    /// The deadline's distance from the mean at the default and the highest thresholds,
    /// against quantiles bisected on a libm `erfc`: the default threshold, 10, is 6.361
    /// standard deviations, and 50 is 14.933.
    #[test]
    fn quantiles_for_the_default_and_highest_thresholds_are_exact() {
        for (threshold, exact) in [
            (10.0, 6.361_340_902),
            (15.0, 7.941_345_326),
            (30.0, 11.464_024_688),
            (50.0, 14.933_337_535),
        ] {
            let z = normal_quantile_for_phi(threshold);
            assert!((z - exact).abs() < 1e-6, "threshold {threshold}: z = {z}");
        }
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
    fn direct_heartbeats_give_textbook_inter_arrival_samples() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..150 {
            d.heartbeat(t0 + I * (hb - 1) as u32, hb, true, &p);
        }
        // 148 samples into a window of 100 kept in blocks of 7: 14 whole blocks and one open.
        assert_eq!(d.num_samples(), 99, "window slides");
        let (mean, std) = d.estimate(&p);
        assert!((mean - 0.1).abs() < 1e-9, "mean {mean}");
        assert!((std - 0.01).abs() < 1e-9, "floored at min_std");
    }

    #[test]
    fn the_cached_deadline_follows_the_exact_one() {
        // Window 1000, prior worth 10 samples (the defaults): the limit is exact while the
        // prior counts, and afterwards never more than a few percent from the exact one.
        let p = DetectorParams::new(
            1000,
            8.0,
            Duration::from_millis(10),
            I,
            10,
            Distribution::Normal,
            Instant::now(),
        );
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut t = t0;
        let mut recomputed = 0;
        for hb in 2..3000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Ages from 100 to 400 ms, with a slow drift upwards halfway through.
            let drift = if hb > 1500 { 150 } else { 0 };
            t = t0 + I * (hb - 1) as u32 + Duration::from_millis(x % 300 + drift);
            d.heartbeat(t, hb, true, &p);
            let before = d.limit_ns;
            let cached = d.deadline(&p);
            if d.limit_ns != before || d.since_limit == 0 {
                recomputed += 1;
            }
            let exact = d.evidence_at(&p) + d.age_limit(&p);
            if hb < 41 {
                assert_eq!(cached, exact, "heartbeat {hb}: the prior still counts");
            }
            let limit = d.age_limit(&p).as_secs_f64();
            let off = (cached.max(exact) - cached.min(exact)).as_secs_f64();
            assert!(
                off <= 0.03 * limit,
                "heartbeat {hb}: {off} s off a {limit} s limit"
            );
        }
        // And it is worked out far less often than once per heartbeat.
        assert!(recomputed < 600, "{recomputed} of 3000");
        assert!(t > t0);
    }

    #[test]
    fn relay_lag_does_not_age_the_evidence() {
        // Heartbeat h is emitted at t0 + h*I; one copy in ten comes straight, the others
        // through relays 150 ms late. The estimated emission time follows the straight copies.
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0 + I, 1, &p);
        for hb in 2..60u64 {
            let lag = if hb % 10 == 0 { 0 } else { 150 };
            d.heartbeat(
                t0 + I * hb as u32 + Duration::from_millis(lag),
                hb,
                true,
                &p,
            );
        }
        let expected = t0 + I * 59;
        let got = d.evidence_at(&p);
        assert!(
            got <= expected + Duration::from_millis(1)
                && got + Duration::from_millis(1) >= expected
        );
    }

    #[test]
    fn a_phase_shift_is_accepted_after_a_run_of_late_heartbeats() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u64 {
            d.heartbeat(t0 + I * (hb - 1) as u32, hb, true, &p);
        }
        // The peer freezes for 2 s, then goes on bumping once per interval. The shift is
        // taken at the `PHASE_SHIFT_RUN`th late arrival, long before the ring of 16 has
        // rolled over to late values only (which alone hid a shift never accepted: found by
        // a mutation review).
        let pause = Duration::from_secs(2);
        for hb in 20..40u64 {
            let at = t0 + pause + I * (hb - 1) as u32;
            d.heartbeat(at, hb, true, &p);
            let late = (hb - 19) as usize;
            if late == PHASE_SHIFT_RUN - 1 {
                assert!(d.evidence_at(&p) < at, "shifted after {late} late arrivals");
            }
            if late == PHASE_SHIFT_RUN {
                assert_eq!(d.evidence_at(&p), at, "not shifted after {late}");
            }
        }
        let last = t0 + pause + I * 38;
        assert_eq!(d.evidence_at(&p), last);
    }

    #[test]
    fn a_phase_beyond_the_rings_range_restarts_it() {
        // Phases are kept as 32-bit microseconds from a base: one more than 35 minutes away
        // cannot be stored with the others, and starts the ring afresh instead of wrapping.
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u64 {
            d.heartbeat(t0 + I * (hb - 1) as u32, hb, true, &p);
        }
        let hour = Duration::from_secs(3600);
        d.heartbeat(t0 + hour + I * 19, 20, true, &p);
        assert_eq!(d.phases_len, 1);
        assert_eq!(d.evidence_at(&p), t0 + hour + I * 19);
        // Values within range keep their microseconds.
        d.heartbeat(t0 + hour + I * 20 + Duration::from_micros(7), 21, true, &p);
        assert_eq!(d.phases_len, 2);
        assert_eq!(d.evidence_at(&p), t0 + hour + I * 20);
    }

    #[test]
    fn phi_grows_with_age_and_matches_the_deadline() {
        for dist in [Distribution::Normal, Distribution::Exponential] {
            let p = params(dist);
            let t0 = Instant::now();
            let mut d = PeerDetector::new(t0, 1, &p);
            let mut t = t0;
            for hb in 2..50u64 {
                t = t0 + I * (hb - 1) as u32 + Duration::from_millis(hb % 5 * 20);
                d.heartbeat(t, hb, true, &p);
            }
            let mut last = 0.0;
            for ms in (0..3000).step_by(10) {
                let phi = d.phi(t + Duration::from_millis(ms), &p);
                assert!(phi >= last, "{dist:?}: phi must not decrease");
                last = phi;
            }
            let deadline = d.deadline(&p);
            let before = d.phi(deadline - Duration::from_millis(1), &p);
            let after = d.phi(deadline + Duration::from_millis(1), &p);
            assert!(before < 8.0 && after >= 8.0, "{dist:?}: {before} {after}");
        }
    }

    #[test]
    fn prior_dominates_a_fresh_peer() {
        let mut p = params(Distribution::Normal);
        p.prior_weight = 5.0;
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        d.heartbeat(t0 + Duration::from_millis(1), 2, true, &p);
        let (mean, _) = d.estimate(&p);
        assert!(mean > 0.15, "mean {mean}");
    }

    /// In a large cluster a fresh peer's heartbeats take O(log n) rounds to start flowing:
    /// the prior expects `max(2, ceil(log2 n))` intervals, so a node that just learned 1,000
    /// peers gives each about five times longer than in a pair before convicting it. (A
    /// mutation review found the scaling unpinned.)
    #[test]
    fn the_prior_scales_with_the_cluster() {
        let t0 = Instant::now();
        let silent_for = |n: usize| {
            let mut p = params(Distribution::Normal);
            p.prior_weight = 5.0;
            p.set_cluster_size(n);
            let mut d = PeerDetector::new(t0, 1, &p);
            d.heartbeat(t0 + Duration::from_millis(1), 2, true, &p);
            let mut t = t0;
            while d.phi(t, &p) < 8.0 {
                t += Duration::from_millis(10);
            }
            (p.prior_mean, t - t0)
        };
        let interval = I.as_secs_f64();
        let (small, small_t) = silent_for(2);
        let (large, large_t) = silent_for(1000);
        assert!((small - 2.0 * interval).abs() < 1e-9, "{small}");
        assert!((large - 10.0 * interval).abs() < 1e-9, "{large}");
        assert!(
            large_t > small_t * 3,
            "convicted after {large_t:?} at 1,000 against {small_t:?} at 2"
        );
    }

    #[test]
    fn forgiving_a_pause_keeps_the_silence_from_before_it() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        // Silent for 1 s, then we were frozen for 5 s.
        let resumed = t0 + Duration::from_secs(6);
        d.forgive(Duration::from_secs(5), resumed, &p);
        assert_eq!(d.evidence_at(&p), t0 + Duration::from_secs(5));
        assert_eq!(resumed - d.evidence_at(&p), Duration::from_secs(1));
        // Never more than all of it.
        d.forgive(Duration::from_secs(60), resumed, &p);
        assert_eq!(d.evidence_at(&p), resumed);
    }

    /// The schedule is where the phase puts the peer now, and heartbeats learned from the queue
    /// of our own pause (`heartbeat_queued`) leave it there; dated by their arrival instead,
    /// they move it as late as the pause was long.
    #[test]
    fn a_queued_heartbeat_leaves_the_schedule_where_the_phase_puts_it() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..=20u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        assert_eq!(d.scheduled(t0 + I * 19, &p), Some(20));
        // We were frozen for 300 intervals; the queue hands over heartbeats 21 to 40.
        let resumed = t0 + I * 319;
        let mut dated = d.clone();
        for hb in 21..=40u32 {
            d.heartbeat_queued(resumed, u64::from(hb), &p);
            dated.heartbeat(resumed, u64::from(hb), false, &p);
        }
        assert_eq!(d.scheduled(resumed, &p), Some(320));
        assert_eq!(
            d.evidence_at(&p),
            t0 + I * 39,
            "dated by the phase, not the arrival"
        );
        assert!(
            dated.scheduled(resumed, &p) < Some(50),
            "the arrivals moved the phase"
        );
    }

    #[test]
    fn rebase_forgives_the_observers_own_pause() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        let resumed = t0 + Duration::from_secs(5);
        assert!(d.deadline(&p) < resumed);
        d.rebase(resumed, &p);
        assert!(d.deadline(&p) > resumed);
    }

    /// Two pauses of ours with no heartbeat between them: the second is forgiven on top of
    /// the first, not from the peer's last heartbeat (where it would be swallowed by the
    /// first). (Second mutation review.)
    #[test]
    fn a_second_pause_is_forgiven_on_top_of_the_first() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        d.forgive(Duration::from_secs(5), t0 + Duration::from_secs(6), &p);
        assert_eq!(d.evidence_at(&p), t0 + Duration::from_secs(5));
        d.forgive(Duration::from_secs(3), t0 + Duration::from_secs(10), &p);
        assert_eq!(d.evidence_at(&p), t0 + Duration::from_secs(8));
    }

    /// The age learned at the first heartbeat after a forgiven pause counts from the pause's
    /// end: the forgiven silence is not learned as the peer's.
    #[test]
    fn the_first_age_after_a_forgiven_pause_counts_from_its_end() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..=10u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        // We were frozen for a second after heartbeat 10; heartbeat 11 comes an interval later.
        let resumed = t0 + I * 9 + Duration::from_secs(1);
        d.forgive(Duration::from_secs(1), resumed, &p);
        d.heartbeat(resumed + I, 11, true, &p);
        assert_eq!(d.num_samples(), 10);
        let (mean, _) = d.estimate(&p);
        assert!((mean - 0.1).abs() < 1e-9, "mean {mean}");
    }

    /// A fresh peer is judged by the prior alone: mean `prior_mean`, standard deviation half
    /// of it (not the floor, which would convict a joining peer after about two intervals).
    #[test]
    fn a_fresh_peer_gets_the_priors_spread() {
        let mut p = params(Distribution::Normal);
        p.prior_weight = 10.0;
        let d = PeerDetector::new(Instant::now(), 1, &p);
        let (mean, std) = d.estimate(&p);
        assert!((mean - 0.2).abs() < 1e-9, "mean {mean}");
        assert!((std - 0.1).abs() < 1e-9, "std {std}");
        assert!(d.age_limit(&p) > Duration::from_millis(700));
    }

    /// The prior fades out linearly over `4 * prior_weight` samples: halfway, it still counts
    /// for half its weight; after, not at all.
    #[test]
    fn the_prior_fades_out_over_four_times_its_weight() {
        let mut p = params(Distribution::Normal);
        p.prior_weight = 10.0;
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..=21u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        // 20 samples of 0.1 s, and the prior (0.2 s) worth 5.
        let (mean, _) = d.estimate(&p);
        assert!((mean - 0.12).abs() < 1e-9, "mean {mean}");
        for hb in 22..=41u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        let (mean, _) = d.estimate(&p);
        assert!((mean - 0.1).abs() < 1e-9, "mean {mean}");
    }

    /// A heartbeat from our pause's queue that the schedule puts in the future is dated no
    /// later than its arrival: evidence from the future would stretch its age limit.
    #[test]
    fn a_queued_heartbeat_is_never_dated_after_its_arrival() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..=20u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        let now = t0 + I * 20;
        d.heartbeat_queued(now, 100, &p);
        assert_eq!(d.evidence_at(&p), now);
    }

    /// A queued heartbeat dates a peer with no schedule (its phase was restarted).
    #[test]
    fn a_queued_heartbeat_dates_a_peer_with_no_schedule() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        d.restart_phase();
        let now = t0 + Duration::from_secs(5);
        d.heartbeat_queued(now, 60, &p);
        assert_eq!(d.scheduled(now, &p), Some(60));
        assert_eq!(d.evidence_at(&p), now);
    }

    /// With a prior worth more than 16 samples it counts for more than 64 of them, and the
    /// cached limit must follow it exactly all that while, not only the first 64.
    #[test]
    fn the_cached_deadline_is_exact_while_a_heavy_prior_counts() {
        let mut p = params(Distribution::Normal);
        p.prior_weight = 25.0;
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..=100u32 {
            let jitter = Duration::from_millis(u64::from(hb % 7) * 15);
            d.heartbeat(t0 + I * (hb - 1) + jitter, u64::from(hb), true, &p);
            let cached = d.deadline(&p);
            let exact = d.evidence_at(&p) + d.age_limit(&p);
            assert_eq!(cached, exact, "heartbeat {hb}");
        }
    }

    /// A schedule exactly `PHASE_SHIFT_INTERVALS` later is not a shift: only more is.
    #[test]
    fn a_phase_shift_of_exactly_the_bound_is_not_taken() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        let shift = I * PHASE_SHIFT_INTERVALS as u32;
        // Twelve late arrivals: a shift would have been taken, and the ring still holds
        // punctual values.
        for hb in 20..32u32 {
            d.heartbeat(t0 + shift + I * (hb - 1), u64::from(hb), true, &p);
        }
        assert_eq!(d.evidence_at(&p), t0 + I * 30);
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        for hb in 20..32u32 {
            let at = t0 + shift + Duration::from_micros(1) + I * (hb - 1);
            d.heartbeat(at, u64::from(hb), true, &p);
        }
        assert_eq!(
            d.evidence_at(&p),
            t0 + shift + Duration::from_micros(1) + I * 30
        );
    }

    /// A ring restarted by an out-of-range phase holds only what came after: the values from
    /// before (here late copies) no longer count.
    #[test]
    fn a_restarted_phase_ring_forgets_the_values_before_it() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u32 {
            let lag = if hb >= 17 { 50 } else { 0 };
            d.heartbeat(
                t0 + I * (hb - 1) + Duration::from_millis(lag),
                u64::from(hb),
                true,
                &p,
            );
        }
        let hour = Duration::from_secs(3600);
        d.heartbeat(t0 + hour + I * 19, 20, true, &p);
        d.heartbeat(t0 + hour + I * 20 + Duration::from_micros(7), 21, true, &p);
        assert_eq!(d.phases_len, 2);
        assert_eq!(d.evidence_at(&p), t0 + hour + I * 20);
    }

    /// After a phase shift the ring keeps the run oldest first, so the values that leave it
    /// next are the run's oldest: 17 arrivals after the run began, its least-delayed copy no
    /// longer sets the phase.
    #[test]
    fn after_a_phase_shift_the_runs_oldest_value_leaves_the_ring_first() {
        let p = params(Distribution::Normal);
        let t0 = Instant::now();
        let mut d = PeerDetector::new(t0, 1, &p);
        for hb in 2..20u32 {
            d.heartbeat(t0 + I * (hb - 1), u64::from(hb), true, &p);
        }
        // The peer freezes for 2 s; the first copy after comes straight, the rest 20 ms late.
        let pause = Duration::from_secs(2);
        let lag = Duration::from_millis(20);
        d.heartbeat(t0 + pause + I * 19, 20, true, &p);
        let mut at = t0;
        for hb in 21..=36u32 {
            at = t0 + pause + I * (hb - 1) + lag;
            d.heartbeat(at, u64::from(hb), true, &p);
            if hb == 27 {
                assert_eq!(d.evidence_at(&p), at - lag, "shifted at the straight copy");
            }
        }
        assert_eq!(d.evidence_at(&p), at, "the straight copy left the ring");
    }

    /// The ring's last slot counts like the others: a least-delayed copy written there sets
    /// the phase, and keeps setting it after the ring wraps, until the 16th arrival after it
    /// overwrites it. (Mutation review: a ring read as 15 long survived.)
    #[test]
    fn the_least_delayed_copy_in_the_rings_last_slot_sets_the_phase_until_overwritten() {
        let p = params(Distribution::Normal);
        let t0 = p.epoch();
        let lag = Duration::from_millis(20);
        // Heartbeats 1 to 15 (slots 0 to 14) come 20 ms late; 16 (slot 15) straight.
        let mut d = PeerDetector::new(t0 + lag, 1, &p);
        for hb in 2..=15u32 {
            d.heartbeat(t0 + I * (hb - 1) + lag, u64::from(hb), true, &p);
        }
        assert_eq!(d.evidence_at(&p), t0 + I * 14 + lag);
        d.heartbeat(t0 + I * 15, 16, true, &p);
        assert_eq!(
            d.evidence_at(&p),
            t0 + I * 15,
            "the straight copy in slot 15"
        );
        // The ring wraps: 17 to 31 overwrite slots 0 to 14, late, and are dated by the
        // straight copy's schedule; 32 overwrites slot 15.
        for hb in 17..=31u32 {
            d.heartbeat(t0 + I * (hb - 1) + lag, u64::from(hb), true, &p);
            assert_eq!(d.evidence_at(&p), t0 + I * (hb - 1), "heartbeat {hb}");
        }
        d.heartbeat(t0 + I * 31 + lag, 32, true, &p);
        assert_eq!(
            d.evidence_at(&p),
            t0 + I * 31 + lag,
            "the straight copy left"
        );
    }

    /// Phases are kept in microseconds rounded down, also below the ring's base: a copy less
    /// delayed than the first by a fraction of a microsecond more than a whole one moves the
    /// phase earlier by the next whole microsecond, never dating evidence after the schedule
    /// it shows. (Mutation review: rounding towards zero, `/` for `div_euclid`, survived.)
    #[test]
    fn phases_below_the_rings_base_round_down() {
        let p = params(Distribution::Normal);
        let t0 = p.epoch();
        // Heartbeat 1 puts the phase 1.5 µs after the epoch; heartbeat 2 at 0.
        let mut d = PeerDetector::new(t0 + I + Duration::from_nanos(1500), 1, &p);
        d.heartbeat(t0 + I * 2, 2, true, &p);
        // A late copy of 3 is dated by the phase: 0.5 µs before the schedule, not after.
        d.heartbeat(t0 + I * 3 + Duration::from_millis(50), 3, true, &p);
        assert_eq!(d.evidence_at(&p), t0 + I * 3 - Duration::from_nanos(500));
    }

    /// The prior expects `ceil(log2 n)` intervals: 10 for 1,024 nodes, 11 for 1,025.
    #[test]
    fn the_priors_rounds_are_the_ceiling_of_log2_of_the_cluster() {
        let mut p = params(Distribution::Normal);
        for (n, rounds) in [(1, 2.0), (4, 2.0), (5, 3.0), (1024, 10.0), (1025, 11.0)] {
            p.set_cluster_size(n);
            let want = rounds * I.as_secs_f64();
            assert!((p.prior_mean - want).abs() < 1e-9, "{n}: {}", p.prior_mean);
        }
    }
}
