//! Named scenarios with measurements, shared by the `simulate` example and the tests.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{NetConfig, Process, Sim, SimError};
use crate::{Config, Event, MAX_DURATION, MemberStatus};

/// A named scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// N nodes boot, each knowing 3 seeds; until every node sees all N live.
    ColdStart,
    /// After convergence one node sets a key; until all N hold it.
    Update,
    /// After convergence (and a warm-up) one node crashes; until every live node marks it
    /// down. False downs are counted.
    Crash,
    /// After convergence the cluster splits in two halves for `split` (default 60 s; each
    /// node writes a key during the split), then heals; until every node sees all N live and
    /// every key. Rounds count from the heal.
    Partition,
    /// After convergence `churn_fraction` of the nodes (default 10 %, at least one) restart,
    /// spread evenly over `churn_over` (default a minute); until every node sees
    /// all N live in their new incarnations and holds no state of an old one. Rounds count
    /// from the last restart; bytes cover the whole churn phase.
    Churn,
    /// After convergence, 60 virtual seconds (`idle_for`) with no writes; bytes are measured
    /// over that window, false downs over the whole run (setup included).
    Idle,
    /// After convergence (and a warm-up), one node pauses for `pause` (default 2 s); until every
    /// other node has seen it down and up again. A pause shorter than detection takes is never
    /// seen down: such a run does not converge.
    Pause,
    /// After convergence (and a warm-up) every node sets `LOAD_KEYS` keys of `LOAD_VALUE_LEN`
    /// bytes at once (the runtime benchmark's state load); until every node holds all of them.
    /// False downs are counted: a write burst must not starve failure detection.
    Load,
}

/// Keys each node sets in the `load` scenario.
pub const LOAD_KEYS: usize = 100;
/// Value size, in bytes, of each key set in the `load` scenario.
pub const LOAD_VALUE_LEN: usize = 100;

impl Scenario {
    /// Every scenario, in documentation order.
    pub const ALL: [Self; 8] = [
        Self::ColdStart,
        Self::Update,
        Self::Crash,
        Self::Partition,
        Self::Churn,
        Self::Idle,
        Self::Pause,
        Self::Load,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ColdStart => "cold-start",
            Self::Update => "update",
            Self::Crash => "crash",
            Self::Partition => "partition",
            Self::Churn => "churn",
            Self::Idle => "idle",
            Self::Pause => "pause",
            Self::Load => "load",
        }
    }
}

impl FromStr for Scenario {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| SimError::UnknownScenario(s.into()))
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// Cluster size; runs use at least 2 (a smaller size runs with 2, and the report says so).
    pub nodes: usize,
    /// Run seed.
    pub seed: u64,
    /// Datagram loss rate.
    pub loss: f64,
    /// Node configuration (gossip interval and everything else).
    pub config: Config,
    /// Network model (its `loss` is overridden by `loss`).
    pub net: NetConfig,
    /// Virtual time allowed for each phase before giving up: the setup (boot to convergence),
    /// then the measured phase. A setup that does not converge ends the run there. Positive.
    /// Default: 600 s.
    pub limit: Duration,
    /// How long the cluster runs after converging before the measured event (gives failure
    /// detectors samples). Default: 20 s.
    pub warmup: Duration,
    /// How long `idle` runs (its measurement window). Positive. Default: 60 s.
    pub idle_for: Duration,
    /// How long the `pause` scenario freezes its node. Default: 2 s.
    pub pause: Duration,
    /// How long the `partition` scenario keeps the halves apart. Default: 60 s.
    pub split: Duration,
    /// Share of the nodes the `churn` scenario restarts, in (0, 1]; at least one node.
    /// Default: 0.1.
    pub churn_fraction: f64,
    /// Time over which the `churn` scenario spreads its restarts, evenly (the last one comes
    /// one gap before its end; zero restarts them all at once). Default: 60 s.
    pub churn_over: Duration,
}

impl ScenarioOptions {
    /// Defaults for `nodes` nodes and `seed`.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            loss: 0.0,
            config: Config::default(),
            net: NetConfig::default(),
            limit: Duration::from_secs(600),
            warmup: Duration::from_secs(20),
            idle_for: Duration::from_secs(60),
            pause: Duration::from_secs(2),
            split: Duration::from_secs(60),
            churn_fraction: 0.1,
            churn_over: Duration::from_secs(60),
        }
    }

    /// Checks `config`, `net`, `loss` and `churn_fraction` (probabilities, the latter not
    /// zero), that `limit`, `idle_for`, `pause` and `split` are not zero, and that the spans are at most
    /// [`MAX_DURATION`]; [`run_scenario`] does, before running anything.
    pub fn validate(&self) -> Result<(), SimError> {
        self.config.validate()?;
        // The run's network has `loss` in place of `net.loss` (`run_inner`).
        NetConfig {
            loss: self.loss,
            ..self.net.clone()
        }
        .validate()?;
        for (value, field) in [(self.loss, "loss"), (self.churn_fraction, "churn_fraction")] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimError::Probability { field, value });
            }
        }
        if self.churn_fraction == 0.0 {
            return Err(SimError::NotPositive {
                field: "churn_fraction",
            });
        }
        // A limit of nothing gives up before the first message; an idle window of nothing
        // measures bytes per second over no time.
        for (d, field) in [
            (self.limit, "limit"),
            (self.idle_for, "idle_for"),
            (self.pause, "pause"),
            (self.split, "split"),
        ] {
            if d.is_zero() {
                return Err(SimError::NotPositive { field });
            }
        }
        for (d, field) in [
            (self.limit, "limit"),
            (self.warmup, "warmup"),
            (self.idle_for, "idle_for"),
            (self.pause, "pause"),
            (self.split, "split"),
            (self.churn_over, "churn_over"),
        ] {
            if d > MAX_DURATION {
                return Err(SimError::TooLong { field });
            }
        }
        Ok(())
    }
}

/// What a scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Cluster size.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Whether the goal was reached within the limit.
    pub converged: bool,
    /// Gossip intervals the measured phase took (rounded up).
    pub rounds: u64,
    /// Virtual time the measured phase took, in milliseconds.
    pub virtual_ms: u64,
    /// Bytes sent per node per second (datagrams and frames) over the measured phase.
    pub bytes_per_node_per_s: u64,
    /// Datagram bytes per node per second over the measured phase.
    pub datagram_bytes_per_node_per_s: u64,
    /// Stream bytes per node per second over the measured phase.
    pub stream_bytes_per_node_per_s: u64,
    /// Datagrams per node per second over the measured phase.
    pub datagrams_per_node_per_s: f64,
    /// Stream frames per node per second over the measured phase.
    pub frames_per_node_per_s: f64,
    /// Largest datagram of the whole run.
    pub max_datagram: usize,
    /// Live nodes that some observer marked down.
    pub false_downs: usize,
    /// Staleness percentiles in milliseconds (p50, p99, max): for each write the scenario
    /// makes (`update`, `partition`, `load`: the last key of each writer) and each other
    /// running node, how long the node held an older copy of the key: until the event that
    /// brought it the write, or the end of the run if none did. Zero when no write is made.
    pub staleness_ms: (u64, u64, u64),
    /// For `crash`: the median and the largest time until an observer marked the node down.
    pub detection_ms: Option<(u64, u64)>,
    /// Virtual time the setup (boot to convergence) took.
    pub setup_ms: u64,
    /// Hash of the whole message trace.
    pub trace: u64,
    /// Extra human-readable rows.
    pub notes: Vec<(String, String)>,
}

impl Report {
    /// The one-line summary: `summary scenario=S nodes=N seed=X converged=.. rounds=..
    /// virtual_ms=.. bytes_per_node_per_s=.. max_datagram=.. false_downs=.. trace=HEX`.
    pub fn summary_line(&self) -> String {
        format!(
            "summary scenario={} nodes={} seed={} converged={} rounds={} virtual_ms={} \
             bytes_per_node_per_s={} max_datagram={} false_downs={} trace={:016x}",
            self.scenario,
            self.nodes,
            self.seed,
            self.converged,
            self.rounds,
            self.virtual_ms,
            self.bytes_per_node_per_s,
            self.max_datagram,
            self.false_downs,
            self.trace
        )
    }

    /// A small table for people.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            ("nodes".into(), self.nodes.to_string()),
            ("seed".into(), self.seed.to_string()),
            (
                "setup (boot to convergence)".into(),
                format!("{} ms", self.setup_ms),
            ),
            ("converged".into(), self.converged.to_string()),
            ("rounds".into(), self.rounds.to_string()),
            ("virtual time".into(), format!("{} ms", self.virtual_ms)),
            (
                "sent per node per second".into(),
                format!(
                    "{} B ({} B datagrams, {} B stream; {:.1} datagrams, {:.2} frames)",
                    self.bytes_per_node_per_s,
                    self.datagram_bytes_per_node_per_s,
                    self.stream_bytes_per_node_per_s,
                    self.datagrams_per_node_per_s,
                    self.frames_per_node_per_s
                ),
            ),
            (
                "largest datagram".into(),
                format!("{} B", self.max_datagram),
            ),
            ("false downs".into(), self.false_downs.to_string()),
            (
                "staleness p50/p99/max".into(),
                format!(
                    "{}/{}/{} ms",
                    self.staleness_ms.0, self.staleness_ms.1, self.staleness_ms.2
                ),
            ),
        ];
        if let Some((med, max)) = self.detection_ms {
            rows.push(("detection median/max".into(), format!("{med}/{max} ms")));
        }
        rows.extend(self.notes.iter().cloned());
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("  {k:<w$}  {v}\n"));
        }
        out
    }
}

#[derive(Default)]
struct Observed {
    /// Downs seen: when, by which observer, of which node (name and generation).
    downs: Vec<(Instant, usize, String, u64)>,
    ups: Vec<(Instant, usize, String)>,
    /// Keys whose arrival is timed (the scenario's writes), and when each observer first
    /// heard of each (observer, node name, key).
    timed_keys: BTreeSet<String>,
    arrived: BTreeMap<(usize, String, String), Instant>,
}

/// Downs a scenario caused on purpose, by incarnation (name, generation): from when the fault
/// began and, for a pause, only until the observer saw the node up again. A down of that
/// incarnation outside its window (before the crash, or after the pause was over) is false.
#[derive(Default)]
struct Intended(BTreeMap<(String, u64), Excuse>);

#[derive(Clone, Copy)]
struct Excuse {
    from: Instant,
    until_up: bool,
}

impl Intended {
    fn insert(&mut self, name: String, generation: u64, from: Instant, until_up: bool) {
        self.0.insert((name, generation), Excuse { from, until_up });
    }

    /// Whether the down (when, observer, name, generation) was caused on purpose.
    fn excuses(
        &self,
        obs: &Observed,
        (t, observer, who, g): &(Instant, usize, String, u64),
    ) -> bool {
        let Some(e) = self.0.get(&(who.clone(), *g)) else {
            return false;
        };
        *t >= e.from
            && !(e.until_up
                && obs
                    .ups
                    .iter()
                    .any(|(u, o, name)| o == observer && name == who && *u >= e.from && u < t))
    }
}

/// Runs a scenario and measures it; refuses invalid options ([`ScenarioOptions::validate`])
/// without running.
pub fn run_scenario(scenario: Scenario, opts: &ScenarioOptions) -> Result<Report, SimError> {
    opts.validate()?;
    let observed = Rc::new(RefCell::new(Observed::default()));
    let (mut report, intended, setup_end) = run_inner(scenario, opts, &observed);
    let (setup, later) = false_down_events(&observed.borrow(), &intended, setup_end);
    report.notes.push((
        "false convictions (setup / after)".into(),
        format!("{setup} / {later}"),
    ));
    if later > 0 {
        // When they happened tells a detector still learning from one that drifts.
        let secs: Vec<f64> = observed
            .borrow()
            .downs
            .iter()
            .filter(|d| d.0 > setup_end && !intended.excuses(&observed.borrow(), d))
            .map(|(t, _, _, _)| (*t - setup_end).as_secs_f64())
            .collect();
        let first = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let last = secs.iter().copied().fold(0.0, f64::max);
        report.notes.push((
            "false convictions after setup, s".into(),
            format!("first {first:.1}, last {last:.1}"),
        ));
    }
    Ok(report)
}

fn run_inner(
    scenario: Scenario,
    opts: &ScenarioOptions,
    observed: &Rc<RefCell<Observed>>,
) -> (Report, Intended, Instant) {
    let n = opts.nodes.max(2);
    let mut net = opts.net.clone();
    net.loss = opts.loss;
    let mut sim = Sim::new(opts.seed, opts.config.clone(), net);
    {
        let observed = Rc::clone(observed);
        sim.set_event_hook(Box::new(move |now, i, ev| match ev {
            Event::Down(id) => {
                let down = (now, i, id.name.clone(), id.generation.0);
                observed.borrow_mut().downs.push(down);
            }
            Event::Up(id) => observed.borrow_mut().ups.push((now, i, id.name.clone())),
            Event::KeyUpserted { node, key, .. } => {
                let mut o = observed.borrow_mut();
                if o.timed_keys.contains(key) {
                    o.arrived
                        .entry((i, node.name.clone(), key.clone()))
                        .or_insert(now);
                }
            }
            _ => {}
        }));
    }
    let interval = opts.config.gossip_interval;
    let sample = (interval / 4).max(Duration::from_millis(5));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ 0x5CE7_A810);
    for _ in 0..n {
        sim.add_node();
    }
    // Each node knows 3 seeds, chosen at random among the others.
    for i in 0..n {
        let mut seeds = BTreeSet::new();
        while seeds.len() < 3.min(n - 1) {
            let s = rng.random_range(0..n);
            if s != i {
                seeds.insert(s);
            }
        }
        let seeds: Vec<usize> = seeds.into_iter().collect();
        sim.join(i, &seeds);
    }
    let mut report = Report {
        scenario: scenario.name().into(),
        nodes: n,
        seed: opts.seed,
        ..Report::default()
    };
    let converge = sim.run_until_sampled(opts.limit, sample, |s| s.all_see_live(n));
    report.setup_ms = converge.unwrap_or_else(|e| e).as_millis() as u64;
    let setup_end = sim.now();
    if scenario == Scenario::ColdStart || converge.is_err() {
        let t = converge.unwrap_or_else(|e| e);
        report.converged = converge.is_ok();
        finish(&mut report, &sim, Duration::ZERO, t, interval, n, None);
        report.false_downs = false_downs(&observed.borrow(), &Intended::default());
        return (report, Intended::default(), setup_end);
    }
    // Incarnations whose downs are expected (crashed, paused, replaced by a restart), from the
    // fault on: a later incarnation of the same name marked down is a false down.
    let mut intended = Intended::default();
    let mut writes: Vec<(usize, String, Instant)> = Vec::new();
    let bytes0;
    let t0;
    // Churn: when the last restart happened (rounds count from there).
    let mut churn_from: Option<Instant> = None;
    let outcome: Result<Duration, Duration>;
    match scenario {
        Scenario::ColdStart => unreachable!(),
        Scenario::Update => {
            sim.run_for(interval * 10);
            t0 = sim.now();
            bytes0 = sim.net_stats();
            let writer = rng.random_range(0..n);
            observed.borrow_mut().timed_keys.insert("update".into());
            sim.set(writer, "update", "v1");
            writes.push((writer, "update".into(), sim.now()));
            let name = sim.nodes[writer].node.id().name.clone();
            outcome = sim.run_until_sampled(opts.limit, sample, |s| {
                s.running()
                    .all(|j| s.nodes[j].node.get(&name, "update").is_some())
            });
        }
        Scenario::Crash => {
            sim.run_for(opts.warmup);
            let victim = rng.random_range(0..n);
            let name = sim.nodes[victim].node.id().name.clone();
            t0 = sim.now();
            let generation = sim.nodes[victim].node.id().generation.0;
            intended.insert(name.clone(), generation, t0, false);
            bytes0 = sim.net_stats();
            sim.crash(victim);
            outcome = sim.run_until_sampled(opts.limit, sample, |s| {
                s.all_see_status(victim, MemberStatus::Down)
            });
            let obs = observed.borrow();
            let mut times: Vec<u64> = obs
                .downs
                .iter()
                // A false down of the victim before the crash is no detection.
                .filter(|(t, _, who, _)| *who == name && *t >= t0)
                .map(|(t, _, _, _)| (*t - t0).as_millis() as u64)
                .collect();
            times.sort_unstable();
            if !times.is_empty() {
                report.detection_ms = Some((times[times.len() / 2], times[times.len() - 1]));
            }
        }
        Scenario::Partition => {
            sim.run_for(interval * 10);
            let half: Vec<usize> = (0..n / 2).collect();
            let other: Vec<usize> = (n / 2..n).collect();
            sim.partition(&half, &other);
            let t_split = sim.now();
            observed
                .borrow_mut()
                .timed_keys
                .insert("during-split".into());
            for i in 0..n {
                sim.set(i, "during-split", "1");
                writes.push((i, "during-split".into(), sim.now()));
            }
            sim.run_for(opts.split);
            // Downs across the cut are expected; only downs within a side count as false.
            let split_downs: Vec<(Instant, usize, String, u64)> = observed
                .borrow()
                .downs
                .iter()
                .filter(|(t, obs, who, _)| {
                    *t < t_split || {
                        let w: usize = who[1..].parse().unwrap_or(usize::MAX);
                        (*obs < n / 2) == (w < n / 2)
                    }
                })
                .cloned()
                .collect();
            observed.borrow_mut().downs = split_downs;
            sim.heal();
            t0 = sim.now();
            bytes0 = sim.net_stats();
            let names: Vec<String> = (0..n)
                .map(|i| sim.nodes[i].node.id().name.clone())
                .collect();
            outcome = sim.run_until_sampled(opts.limit, sample, |s| {
                s.all_see_live(n)
                    && s.running().all(|j| {
                        names
                            .iter()
                            .all(|nm| s.nodes[j].node.get(nm, "during-split").is_some())
                    })
            });
        }
        Scenario::Churn => {
            sim.run_for(interval * 10);
            t0 = sim.now();
            bytes0 = sim.net_stats();
            // The share of n, rounded down (the margin keeps 0.3 of 10 at 3), at least one.
            let k = ((n as f64 * opts.churn_fraction + 1e-9) as usize).clamp(1, n);
            let mut victims: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = rng.random_range(i..n);
                victims.swap(i, j);
            }
            victims.truncate(k);
            let gap = opts.churn_over / u32::try_from(k).unwrap_or(u32::MAX);
            for (r, &v) in victims.iter().enumerate() {
                let old = sim.nodes[v].node.id();
                intended.insert(old.name.clone(), old.generation.0, sim.now(), false);
                sim.restart(v);
                if r + 1 < k {
                    sim.run_for(gap);
                }
            }
            // Rounds and virtual time count from the last restart; bytes cover the whole
            // churn phase. (Counted from the first restart with a gap after the last, every
            // run that converged within a gap read about 60 s.)
            let restarted = sim.now();
            let generations: Vec<_> = (0..n).map(|i| sim.nodes[i].node.id().clone()).collect();
            outcome = sim.run_until_sampled(opts.limit, sample, |s| {
                s.all_see_live(n)
                    && s.running().all(|j| {
                        generations.iter().all(|id| {
                            s.nodes[j]
                                .node
                                .node_state(&id.name)
                                .is_some_and(|st| st.id().generation == id.generation)
                        })
                    })
            });
            let churn_secs = (sim.now() - t0).as_secs_f64();
            churn_from = Some(restarted);
            report.notes.push(("restarted nodes".into(), k.to_string()));
            report.notes.push((
                "churn phase".into(),
                format!("{churn_secs:.1} s incl. the restarts"),
            ));
        }
        Scenario::Idle => {
            sim.run_for(interval * 20);
            let before = sim.net_stats();
            sim.run_for(opts.idle_for);
            let after = sim.net_stats();
            report.converged = sim.all_see_live(n);
            let secs = opts.idle_for.as_secs_f64().max(1e-3);
            let dg = (after.datagram_bytes - before.datagram_bytes) as f64 / n as f64 / secs;
            let st = (after.frame_bytes - before.frame_bytes) as f64 / n as f64 / secs;
            report.datagram_bytes_per_node_per_s = dg as u64;
            report.stream_bytes_per_node_per_s = st as u64;
            report.bytes_per_node_per_s = (dg + st) as u64;
            report.datagrams_per_node_per_s =
                (after.datagrams - before.datagrams) as f64 / n as f64 / secs;
            report.frames_per_node_per_s = (after.frames - before.frames) as f64 / n as f64 / secs;
            report.virtual_ms = opts.idle_for.as_millis() as u64;
            report.rounds = opts.idle_for.as_nanos().div_ceil(interval.as_nanos()) as u64;
            report.max_datagram = sim.net_stats().max_datagram;
            report.trace = sim.trace_hash();
            report.false_downs = false_downs(&observed.borrow(), &intended);
            return (report, intended, setup_end);
        }
        Scenario::Load => {
            sim.run_for(opts.warmup);
            t0 = sim.now();
            bytes0 = sim.net_stats();
            let value = "v".repeat(LOAD_VALUE_LEN);
            // Each writer's entries are applied in version order: its last key means all.
            let last = format!("load/{:03}", LOAD_KEYS - 1);
            observed.borrow_mut().timed_keys.insert(last.clone());
            for i in 0..n {
                for k in 0..LOAD_KEYS {
                    sim.set(i, &format!("load/{k:03}"), &value);
                }
                writes.push((i, last.clone(), sim.now()));
            }
            let names: Vec<String> = (0..n)
                .map(|i| sim.nodes[i].node.id().name.clone())
                .collect();
            outcome = sim.run_until_sampled(opts.limit, sample, |s| {
                s.running().all(|j| {
                    names
                        .iter()
                        .all(|nm| s.nodes[j].node.get(nm, &last).is_some())
                })
            });
        }
        Scenario::Pause => {
            sim.run_for(opts.warmup);
            let victim = rng.random_range(0..n);
            let name = sim.nodes[victim].node.id().name.clone();
            t0 = sim.now();
            let generation = sim.nodes[victim].node.id().generation.0;
            intended.insert(name.clone(), generation, t0, true);
            bytes0 = sim.net_stats();
            sim.pause(victim, opts.pause);
            let others = n - 1;
            let name2 = name.clone();
            let obs = Rc::clone(observed);
            outcome = sim.run_until_sampled(opts.limit, sample, move |s| {
                let o = obs.borrow();
                // Only what happened since the pause began is its detection and recovery.
                let downs: BTreeSet<usize> = o
                    .downs
                    .iter()
                    .filter(|d| d.2 == name2 && d.0 >= t0)
                    .map(|d| d.1)
                    .collect();
                let ups: BTreeSet<usize> = o
                    .ups
                    .iter()
                    .filter(|d| d.2 == name2 && d.0 >= t0)
                    .map(|d| d.1)
                    .collect();
                s.nodes[victim].process == Process::Running
                    && downs.len() == others
                    && ups.len() == others
                    && s.all_see_live(n)
            });
            let obs = observed.borrow();
            let victim_downs = obs
                .downs
                .iter()
                .filter(|d| d.2 == name && d.0 >= t0)
                .count();
            let victim_ups = obs.ups.iter().filter(|d| d.2 == name && d.0 >= t0).count();
            report.notes.push((
                "paused node: downs/ups seen".into(),
                format!("{victim_downs}/{victim_ups}"),
            ));
        }
    }
    let phase = sim.now() - t0;
    let t = sim.now() - churn_from.unwrap_or(t0);
    report.converged = outcome.is_ok();
    finish(&mut report, &sim, phase, t, interval, n, Some(bytes0));
    report.staleness_ms = percentiles(&mut staleness(&sim, &observed.borrow(), &writes));
    report.false_downs = false_downs(&observed.borrow(), &intended);
    (report, intended, setup_end)
}

/// For each of `writes` (writer, key, when) and each other running node, how long (ms) the
/// node held an older copy: until the key's first upsert there, or until now.
fn staleness(sim: &Sim, obs: &Observed, writes: &[(usize, String, Instant)]) -> Vec<u64> {
    let now = sim.now();
    let mut out = Vec::new();
    for (owner, key, written) in writes {
        let name = &sim.nodes[*owner].node.id().name;
        for j in sim.running().filter(|j| j != owner) {
            let until = obs
                .arrived
                .get(&(j, name.clone(), key.clone()))
                .copied()
                .unwrap_or(now);
            out.push(until.saturating_duration_since(*written).as_millis() as u64);
        }
    }
    out
}

fn percentiles(v: &mut [u64]) -> (u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn false_downs(obs: &Observed, intended: &Intended) -> usize {
    obs.downs
        .iter()
        .filter(|d| !intended.excuses(obs, d))
        .map(|(_, _, who, _)| who.clone())
        .collect::<BTreeSet<_>>()
        .len()
}

/// (observer, node) false convictions before and after `split`, for the table.
fn false_down_events(obs: &Observed, intended: &Intended, split: Instant) -> (usize, usize) {
    let false_ones = obs.downs.iter().filter(|d| !intended.excuses(obs, d));
    let before = false_ones
        .clone()
        .filter(|(t, _, _, _)| *t <= split)
        .count();
    (before, false_ones.count() - before)
}

fn finish(
    report: &mut Report,
    sim: &Sim,
    phase: Duration,
    t: Duration,
    interval: Duration,
    n: usize,
    bytes0: Option<super::NetStats>,
) {
    report.virtual_ms = t.as_millis() as u64;
    report.rounds = t.as_nanos().div_ceil(interval.as_nanos()) as u64;
    let after = sim.net_stats();
    let before = bytes0.unwrap_or_default();
    let secs = if bytes0.is_some() {
        phase.as_secs_f64()
    } else {
        sim.elapsed().as_secs_f64()
    }
    .max(1e-3);
    let dg = (after.datagram_bytes - before.datagram_bytes) as f64 / n as f64 / secs;
    let st = (after.frame_bytes - before.frame_bytes) as f64 / n as f64 / secs;
    report.datagram_bytes_per_node_per_s = dg as u64;
    report.stream_bytes_per_node_per_s = st as u64;
    report.bytes_per_node_per_s = (dg + st) as u64;
    report.datagrams_per_node_per_s = (after.datagrams - before.datagrams) as f64 / n as f64 / secs;
    report.frames_per_node_per_s = (after.frames - before.frames) as f64 / n as f64 / secs;
    report.max_datagram = after.max_datagram;
    report.trace = sim.trace_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault excuses downs of its incarnation only from when it began, and a pause only
    /// until each observer saw the node up again; a later incarnation is never excused.
    #[test]
    fn a_fault_excuses_downs_only_from_when_it_began() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut intended = Intended::default();
        intended.insert("crashed".into(), 1, at(10), false);
        intended.insert("paused".into(), 1, at(10), true);
        let obs = Observed {
            downs: vec![
                (at(5), 0, "crashed".into(), 1),
                (at(11), 0, "crashed".into(), 1),
                (at(11), 0, "paused".into(), 1),
                (at(20), 0, "paused".into(), 1),
                (at(20), 1, "paused".into(), 1),
                (at(11), 0, "crashed".into(), 2),
            ],
            ups: vec![(at(15), 0, "paused".into())],
            ..Observed::default()
        };
        let excused: Vec<bool> = obs
            .downs
            .iter()
            .map(|d| intended.excuses(&obs, d))
            .collect();
        assert_eq!(excused, [false, true, true, false, true, false]);
        assert_eq!(false_downs(&obs, &intended), 2);
    }

    /// Invalid settings are refused with a typed error before anything runs: an invalid node
    /// configuration used to panic at the first node, and a NaN or out-of-range rate was read
    /// as 0 or clamped without a word.
    #[test]
    fn invalid_settings_are_refused_with_a_typed_error() {
        let zero = Config {
            gossip_interval: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(
            Sim::try_new(1, zero.clone(), NetConfig::default()),
            Err(SimError::Config(_))
        ));
        let mut o = ScenarioOptions::new(3, 1);
        o.config = zero;
        assert!(matches!(
            run_scenario(Scenario::Update, &o),
            Err(SimError::Config(_))
        ));
        for value in [f64::NAN, -0.1, 1.5] {
            let mut o = ScenarioOptions::new(3, 1);
            o.loss = value;
            let e = run_scenario(Scenario::Update, &o).unwrap_err();
            assert!(
                matches!(e, SimError::Probability { field: "loss", .. }),
                "{e}"
            );
            let net = NetConfig {
                duplicate: value,
                ..NetConfig::default()
            };
            let Err(e) = Sim::try_new(1, Config::default(), net) else {
                panic!("a duplicate rate of {value} was accepted");
            };
            let mut sim = Sim::new(1, Config::default(), NetConfig::default());
            sim.set_loss(0.25).expect("a probability");
            assert!(matches!(
                sim.set_loss(value),
                Err(SimError::Probability { field: "loss", .. })
            ));
            assert_eq!(sim.net.loss, 0.25, "a refused rate leaves the old one");
            assert!(
                matches!(
                    e,
                    SimError::Probability {
                        field: "duplicate",
                        ..
                    }
                ),
                "{e}"
            );
        }
        // `loss` replaces `net.loss` in the run, so only `loss` is checked.
        let mut o = ScenarioOptions::new(3, 1);
        o.net.loss = 2.0;
        assert_eq!(o.validate(), Ok(()));
        o.net.loss = 0.0;
        o.loss = 2.0;
        assert!(o.validate().is_err());
        let mut o = ScenarioOptions::new(3, 1);
        o.warmup = MAX_DURATION + Duration::from_secs(1);
        assert_eq!(
            run_scenario(Scenario::Crash, &o).unwrap_err(),
            SimError::TooLong { field: "warmup" }
        );
        assert_eq!(
            "bogus".parse::<Scenario>(),
            Err(SimError::UnknownScenario("bogus".into()))
        );
        assert!(Sim::try_new(1, Config::default(), NetConfig::default()).is_ok());
    }

    /// The faults' lengths are checked like the other settings: a zero pause, split or churn
    /// share, a share beyond 1 or NaN, and a span beyond `MAX_DURATION` are refused with the
    /// field named; the defaults, and a churn window of zero (all restarts at once), pass.
    #[test]
    fn fault_lengths_are_validated() {
        let with = |f: &dyn Fn(&mut ScenarioOptions)| {
            let mut o = ScenarioOptions::new(3, 1);
            f(&mut o);
            o.validate()
        };
        let long = MAX_DURATION + Duration::from_secs(1);
        assert_eq!(with(&|_| {}), Ok(()));
        assert_eq!(with(&|o| o.churn_over = Duration::ZERO), Ok(()));
        assert_eq!(with(&|o| o.warmup = Duration::ZERO), Ok(()));
        type Zero = fn(&mut ScenarioOptions);
        let zeros: [(&str, Zero); 4] = [
            ("limit", |o| o.limit = Duration::ZERO),
            ("idle_for", |o| o.idle_for = Duration::ZERO),
            ("pause", |o| o.pause = Duration::ZERO),
            ("split", |o| o.split = Duration::ZERO),
        ];
        for (field, zero) in zeros {
            assert_eq!(with(&zero), Err(SimError::NotPositive { field }));
        }
        assert_eq!(
            with(&|o| o.churn_fraction = 0.0),
            Err(SimError::NotPositive {
                field: "churn_fraction"
            })
        );
        for value in [f64::NAN, -0.1, 1.5] {
            let e = with(&|o| o.churn_fraction = value).unwrap_err();
            assert!(
                matches!(
                    e,
                    SimError::Probability {
                        field: "churn_fraction",
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert_eq!(
            with(&|o| o.pause = long),
            Err(SimError::TooLong { field: "pause" })
        );
        assert_eq!(
            with(&|o| o.split = long),
            Err(SimError::TooLong { field: "split" })
        );
        assert_eq!(
            with(&|o| o.churn_over = long),
            Err(SimError::TooLong {
                field: "churn_over"
            })
        );
        let mut o = ScenarioOptions::new(3, 1);
        o.pause = Duration::ZERO;
        assert_eq!(
            run_scenario(Scenario::Pause, &o).unwrap_err(),
            SimError::NotPositive { field: "pause" }
        );
    }

    /// Nearest-rank percentiles: p99 of 1..=200 is the 198th value, not the largest.
    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(percentiles(&mut v), (101, 198, 200));
        assert_eq!(percentiles(&mut []), (0, 0, 0));
    }

    /// Staleness counts each other running node once: until the write arrived there, or until
    /// now if it never did; the writer itself is not counted.
    #[test]
    fn staleness_runs_until_arrival_or_now_for_each_other_node() {
        let mut sim = Sim::new(1, Config::default(), NetConfig::default());
        for _ in 0..3 {
            sim.add_node();
        }
        let written = sim.now();
        sim.run_for(Duration::from_millis(10));
        let mut obs = Observed::default();
        obs.arrived.insert(
            (1, "n0".into(), "k".into()),
            written + Duration::from_millis(4),
        );
        let writes = [(0, "k".to_string(), written)];
        assert_eq!(staleness(&sim, &obs, &writes), [4, 10]);
    }
}
