//! A deterministic cluster simulator: many real [`Node`]s in one process, one virtual clock, one
//! event queue, and a lossy, partitionable network.
//!
//! Every message goes through the real codec (the nodes only speak bytes), so what the
//! simulator proves about convergence, detection and sizes holds for the runtime too. The same
//! seed gives the same run, message for message: [`Sim::trace_hash`] fingerprints the whole
//! message trace.
//!
//! Nodes run in parallel without losing that. No message arrives sooner than the latency
//! distribution's minimum (its *lookahead*), so the events of one window of that length, which
//! start at the earliest queued event, cannot cause one another: each node handles its own in
//! time order, on any core, and what they sent is then put on the network in a fixed order
//! (time, node, order of sending), where the loss and latency draws happen.
//!
//! ```
//! use std::time::Duration;
//! use tidings::sim::{NetConfig, Sim};
//!
//! let mut sim = Sim::new(42, tidings::Config::default(), NetConfig::default());
//! let nodes: Vec<usize> = (0..5).map(|_| sim.add_node()).collect();
//! sim.join_all_via(&[nodes[0]]);
//! let took = sim
//!     .run_until(Duration::from_secs(30), |sim| sim.all_see_live(5))
//!     .expect("converges");
//! assert!(took < Duration::from_secs(5));
//! ```

mod scenario;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use xxhash_rust::xxh3::Xxh3;

use rayon::prelude::*;

use crate::{
    Channel, Config, ConfigError, Event, MAX_DURATION, MemberStatus, Node, NodeId, Transmit,
};

pub use scenario::{LOAD_KEYS, LOAD_VALUE_LEN, Report, Scenario, ScenarioOptions, run_scenario};

/// A simulator setting was refused. Nothing was run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The node configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A rate of the network model (or `ScenarioOptions::loss` or `churn_fraction`) is not in
    /// [0, 1].
    #[error("{field} must be a probability in [0, 1], got {value}")]
    Probability {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A virtual span is longer than [`MAX_DURATION`], beyond which the clock overflows.
    #[error("{field} must be at most {} s", MAX_DURATION.as_secs())]
    TooLong {
        /// The setting.
        field: &'static str,
    },
    /// A span or share a scenario needs to be more than zero is zero (a pause of nothing is
    /// never detected, a churn of no node restarts none).
    #[error("{field} must be positive")]
    NotPositive {
        /// The setting.
        field: &'static str,
    },
    /// No scenario has this name.
    #[error("unknown scenario {0:?}")]
    UnknownScenario(String),
}

/// Per-message latency distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Every message takes exactly this long.
    Fixed(Duration),
    /// Uniform between the bounds.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// `min` plus an exponential tail with the given mean (a long-tailed LAN/WAN).
    Exponential {
        /// Floor.
        min: Duration,
        /// Mean of the tail added to the floor.
        mean_extra: Duration,
    },
}

impl Latency {
    /// The least latency a message can have: how far ahead the simulator may run nodes
    /// independently.
    fn min(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => min.min(max),
            Self::Exponential { min, .. } => min,
        }
    }

    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => {
                if max <= min {
                    min
                } else {
                    min + (max - min).mul_f64(rng.random::<f64>())
                }
            }
            Self::Exponential { min, mean_extra } => {
                let u: f64 = rng.random::<f64>().max(1e-12);
                min + mean_extra.mul_f64(-u.ln())
            }
        }
    }
}

/// The network model.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way latency of datagrams and frames. Default: uniform 0.2 to 2 ms.
    pub latency: Latency,
    /// Probability that a datagram is lost. Default: 0.
    pub loss: f64,
    /// Probability that a datagram is delivered twice. Default: 0.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay` extra (so later ones
    /// overtake it). Default: 0.
    pub reorder: f64,
    /// Extra delay of reordered datagrams. Default: 10 ms.
    pub reorder_delay: Duration,
    /// Datagrams a paused node's socket buffers; more are dropped. Default: 256.
    pub paused_buffer: usize,
}

impl NetConfig {
    /// Checks that `loss`, `duplicate` and `reorder` are probabilities and that the latencies
    /// and `reorder_delay` are at most [`MAX_DURATION`]. (Out of range, a rate used to be
    /// clamped or read as 0, NaN included, without a word.)
    pub fn validate(&self) -> Result<(), SimError> {
        for (value, field) in [
            (self.loss, "loss"),
            (self.duplicate, "duplicate"),
            (self.reorder, "reorder"),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimError::Probability { field, value });
            }
        }
        let spans = match self.latency {
            Latency::Fixed(d) => [d, d],
            Latency::Uniform { min, max } => [min, max],
            Latency::Exponential { min, mean_extra } => [min, mean_extra],
        };
        if spans.iter().any(|&d| d > MAX_DURATION) {
            return Err(SimError::TooLong { field: "latency" });
        }
        if self.reorder_delay > MAX_DURATION {
            return Err(SimError::TooLong {
                field: "reorder_delay",
            });
        }
        Ok(())
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Latency::Uniform {
                min: Duration::from_micros(200),
                max: Duration::from_millis(2),
            },
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            paused_buffer: 256,
        }
    }
}

/// Whether a simulated process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// Running.
    Running,
    /// Crashed: receives nothing, sends nothing, until restarted.
    Crashed,
    /// Frozen until the instant: no timers; datagrams are buffered, not handled.
    Paused {
        /// When it resumes.
        until: Instant,
    },
}

/// One simulated node.
pub struct SimNode {
    /// The protocol core.
    pub node: Node,
    /// Its address.
    pub addr: SocketAddr,
    /// Running, crashed or paused.
    pub process: Process,
    /// Seeds used on (re)start.
    pub seeds: Vec<SocketAddr>,
    next_wake: Option<Instant>,
    /// Whether a `Wake` at `next_wake` is in the queue.
    wake_queued: bool,
    /// What reached the node while it was paused, in order: datagrams and frames, and (`None`)
    /// stream connections that closed, which it learns on resuming as a process would.
    buffered: Vec<(SocketAddr, Channel, Option<Bytes>)>,
    /// What the node produced in the current window, for [`Sim::merge`].
    out: Vec<(Instant, Output)>,
    /// Events drained from the node, if recording is on.
    pub events: Vec<(Instant, Event)>,
}

/// Something a node produced while handling events, put on the network (or reported) once its
/// window is over.
enum Output {
    Transmit(Transmit),
    Event(Event),
    /// A message reached this node while it was crashed (a stream is refused to its sender).
    Dropped {
        from: SocketAddr,
        channel: Channel,
    },
    /// A datagram reached this node while it was paused with its socket buffer full.
    Overflowed,
    /// Its next timer, to queue.
    Wake(Instant),
}

/// A queued event taken into a window: the node it happens at, when, what.
type WindowEvent = (usize, Instant, Ev);

/// Windows with fewer events than this, or in clusters smaller than `PARALLEL_MIN_NODES`, run
/// on one core: an event of a small cluster costs a few microseconds, about what handing work
/// to another core does (the test suite, running simulations side by side, took 45 % longer
/// with every window of 8 events or more in parallel).
const PARALLEL_MIN_EVENTS: usize = 8;
const PARALLEL_MIN_NODES: usize = 100;

enum Ev {
    Deliver {
        to: usize,
        from: SocketAddr,
        channel: Channel,
        payload: Bytes,
    },
    Wake(usize),
    Resume(usize),
    /// Node `node`'s stream connection to `peer` was refused or reset.
    StreamClosed {
        node: usize,
        peer: SocketAddr,
    },
}

/// A queued event, ordered by time, then by insertion (so ties replay identically).
struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by nodes.
    pub datagrams: u64,
    /// Bytes in those.
    pub datagram_bytes: u64,
    /// Stream frames sent.
    pub frames: u64,
    /// Bytes in those.
    pub frame_bytes: u64,
    /// Datagrams lost to the loss rate.
    pub lost: u64,
    /// Messages dropped by a partition (or to a crashed node).
    pub cut: u64,
    /// Datagrams dropped because a paused node's socket buffer (`paused_buffer`) was full.
    pub overflowed: u64,
    /// Largest datagram seen.
    pub max_datagram: usize,
}

/// Observer callback for every delivered event, used by scenarios to measure.
pub type EventHook = Box<dyn FnMut(Instant, usize, &Event)>;

/// The simulated cluster.
pub struct Sim {
    epoch: Instant,
    now: Instant,
    rng: Xoshiro256PlusPlus,
    config: Config,
    net: NetConfig,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    cuts: BTreeSet<(usize, usize)>,
    /// Pairs whose stream (TCP) traffic alone is blocked.
    stream_cuts: BTreeSet<(usize, usize)>,
    stream_clock: BTreeMap<(usize, usize), Instant>,
    trace: Xxh3,
    stats: NetStats,
    record_events: bool,
    hook: Option<EventHook>,
    generation: u64,
    parallel: bool,
}

impl Sim {
    /// [`Sim::new`], refusing an invalid `config` or `net` with an error rather than a panic.
    pub fn try_new(seed: u64, config: Config, net: NetConfig) -> Result<Self, SimError> {
        config.validate()?;
        net.validate()?;
        Ok(Self::new(seed, config, net))
    }

    /// A cluster with no nodes yet. Every node gets `config`; randomness derives from `seed`.
    ///
    /// Nothing is checked: an invalid `config` panics at the first [`Sim::add_node`], and an
    /// out-of-range rate of `net` is clamped (a NaN one reads as 0). [`Sim::try_new`] returns an error instead.
    pub fn new(seed: u64, config: Config, net: NetConfig) -> Self {
        // The virtual clock starts at an arbitrary real instant; only differences matter. This is
        // the one read of the real clock, outside every node.
        #[allow(clippy::disallowed_methods)]
        let epoch = Instant::now();
        Self {
            epoch,
            now: epoch,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            config,
            net,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            cuts: BTreeSet::new(),
            stream_cuts: BTreeSet::new(),
            stream_clock: BTreeMap::new(),
            trace: Xxh3::new(),
            stats: NetStats::default(),
            record_events: false,
            hook: None,
            generation: 1,
            parallel: true,
        }
    }

    /// Keeps every node's events in [`SimNode::events`] (off by default: it costs memory).
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
    }

    /// Whether windows of many events may run on several cores (on by default). The run is
    /// the same either way, message for message; off is for comparing, and for profiles that
    /// read best on one thread.
    pub fn set_parallel(&mut self, on: bool) {
        self.parallel = on;
    }

    /// Calls `hook(now, node_index, event)` for every event any node emits.
    pub fn set_event_hook(&mut self, hook: EventHook) {
        self.hook = Some(hook);
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The configuration nodes start with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the configuration used by nodes added or restarted from now on.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// Network counters.
    pub fn net_stats(&self) -> NetStats {
        self.stats
    }

    /// A fingerprint of every message sent so far (time, endpoints, channel, bytes).
    pub fn trace_hash(&self) -> u64 {
        self.trace.digest()
    }

    /// Datagrams in flight from node `i` (destination node, payload): what an eavesdropper on
    /// the network would capture, for replay tests. In no particular order.
    pub fn datagrams_in_flight_from(&self, i: usize) -> Vec<(usize, Bytes)> {
        let Some(addr) = self.nodes.get(i).map(|n| n.addr) else {
            return Vec::new();
        };
        self.queue
            .iter()
            .filter_map(|Reverse(q)| match &q.ev {
                Ev::Deliver {
                    to,
                    from,
                    channel: Channel::Datagram,
                    payload,
                } if *from == addr => Some((*to, payload.clone())),
                _ => None,
            })
            .collect()
    }

    /// Changes the loss rate, a probability in [0, 1] (`SimError::Probability` otherwise,
    /// and the rate stays as it was).
    pub fn set_loss(&mut self, loss: f64) -> Result<(), SimError> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(SimError::Probability {
                field: "loss",
                value: loss,
            });
        }
        self.net.loss = loss;
        Ok(())
    }

    /// Changes the latency distribution.
    pub fn set_latency(&mut self, latency: Latency) {
        self.net.latency = latency;
    }

    /// Adds a node named `n<index>`; it starts but joins nobody until told to.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.push_node(format!("n{i}"))
    }

    /// Starts a second process under node `i`'s name, with a higher generation, at a new index
    /// and address, and has it join `i`'s seeds: a node restarted elsewhere while its old
    /// process is frozen (see [`Sim::pause`]) or still running. Returns the new node's index.
    pub fn add_replacement(&mut self, i: usize) -> usize {
        let name = self.nodes[i].node.id().name.clone();
        let seeds = self.nodes[i].seeds.clone();
        let j = self.push_node(name);
        self.nodes[j].seeds = seeds.clone();
        let now = self.now;
        self.nodes[j].node.join(now, seeds);
        self.flush(j);
        j
    }

    /// Adds a running node named `name` at the next index, not yet joined.
    fn push_node(&mut self, name: String) -> usize {
        let i = self.nodes.len();
        let addr = SocketAddr::new(
            Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8).into(),
            7946,
        );
        let node = self.make_node(name, addr);
        self.nodes.push(SimNode {
            node,
            addr,
            process: Process::Running,
            seeds: Vec::new(),
            next_wake: None,
            wake_queued: false,
            buffered: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
        });
        self.flush(i);
        i
    }

    fn make_node(&mut self, name: String, addr: SocketAddr) -> Node {
        self.generation += 1;
        let generation = (self.now - self.epoch).as_millis() as u64 * 1000 + self.generation;
        self.node_as(NodeId::new(name, generation, addr))
    }

    /// A fresh process (empty state) under identity `id`.
    fn node_as(&mut self, id: NodeId) -> Node {
        let seed = self.rng.random::<u64>();
        match Node::new(id, self.config.clone(), seed, self.now) {
            Ok(n) => n,
            // The simulator's own configuration is validated by the caller's first add_node;
            // an invalid one is a programming error in the scenario.
            Err(e) => panic!("invalid simulator config: {e}"),
        }
    }

    /// Tells node `i` to join through the given nodes' addresses (and remembers them as its
    /// seeds for restarts).
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        let addrs: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        self.nodes[i].seeds = addrs.clone();
        let now = self.now;
        self.nodes[i].node.join(now, addrs);
        self.flush(i);
    }

    /// Every node joins through `seeds`.
    pub fn join_all_via(&mut self, seeds: &[usize]) {
        for i in 0..self.nodes.len() {
            self.join(i, seeds);
        }
    }

    /// Runs a closure against node `i` at the current time, then flushes its output.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i].node, now);
        self.flush(i);
        r
    }

    /// Sets a key on node `i`.
    pub fn set(&mut self, i: usize, key: &str, value: &str) {
        let v = Bytes::copy_from_slice(value.as_bytes());
        self.with_node(i, |n, now| n.set(now, key, v))
            .unwrap_or_else(|e| panic!("set on node {i}: {e}"));
    }

    /// Drops every message from `a` to `b` and from `b` to `a`.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
    }

    /// Drops messages from `from` to `to` only (an asymmetric partition).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cuts.insert((from, to));
    }

    /// Cuts node `i` off from everyone.
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.cut(i, j);
            }
        }
    }

    /// Splits the cluster into the two given groups.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
            }
        }
    }

    /// Blocks stream (TCP) traffic between `a` and `b` both ways, datagrams still pass (a
    /// firewall that lets only UDP through). Every stream frame either sends to the other
    /// from then on is refused: the sender hears its stream closed one network latency later
    /// ([`Node::handle_stream_closed`](crate::Node::handle_stream_closed)). Frames already
    /// in flight still arrive.
    pub fn cut_streams(&mut self, a: usize, b: usize) {
        self.stream_cuts.insert((a, b));
        self.stream_cuts.insert((b, a));
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.stream_cuts.clear();
    }

    /// Crashes node `i`: it stops at once, with no leave.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].process = Process::Crashed;
        self.nodes[i].next_wake = None;
    }

    /// Restarts node `i` as a new incarnation (higher generation, empty state) that joins its
    /// seeds again.
    pub fn restart(&mut self, i: usize) {
        let addr = self.nodes[i].addr;
        let name = self.nodes[i].node.id().name.clone();
        let node = self.make_node(name, addr);
        self.start_as(i, node);
    }

    /// Restarts node `i` under the identity it had (same name and generation, empty state),
    /// as a process given an explicit generation that did not grow does: peers still hold
    /// the previous run's copy, past this one's (design.md 4.2).
    pub fn restart_reusing_generation(&mut self, i: usize) {
        let id = self.nodes[i].node.id().clone();
        let node = self.node_as(id);
        self.start_as(i, node);
    }

    /// Runs `node` as node `i`'s process from now on, joining its seeds.
    fn start_as(&mut self, i: usize, node: Node) {
        let sn = &mut self.nodes[i];
        sn.node = node;
        sn.process = Process::Running;
        sn.next_wake = None;
        sn.wake_queued = false;
        sn.buffered.clear();
        let seeds = sn.seeds.clone();
        let now = self.now;
        self.nodes[i].node.join(now, seeds);
        self.flush(i);
    }

    /// Freezes node `i` for `d`: no timers run, datagrams wait in its socket buffer. A
    /// crashed node stays crashed (only `restart` brings it back).
    pub fn pause(&mut self, i: usize, d: Duration) {
        if self.nodes[i].process == Process::Crashed {
            return;
        }
        let until = self.now + d;
        self.nodes[i].process = Process::Paused { until };
        self.nodes[i].next_wake = None;
        self.push(until, Ev::Resume(i));
    }

    /// The node at `addr`: addresses are made from the index in `add_node`, so this is
    /// arithmetic, not a lookup.
    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        let std::net::IpAddr::V4(v4) = addr.ip() else {
            return None;
        };
        let [a, b, c, d] = v4.octets();
        if a != 127 || b == 0 {
            return None;
        }
        let i = (usize::from(b - 1) << 16) | (usize::from(c) << 8) | usize::from(d);
        (self.nodes.get(i)?.addr == addr).then_some(i)
    }

    /// Indices of running nodes.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].process != Process::Crashed)
    }

    /// Whether every running node sees exactly `n` live members.
    pub fn all_see_live(&self, n: usize) -> bool {
        self.running().all(|i| self.nodes[i].node.num_live() == n)
    }

    /// Whether every running node other than `i` marks node `i` (by name, so its current
    /// incarnation once a restart has replaced the old one) as `status`. A node that no
    /// longer knows it (expired) does not count as marking it.
    pub fn all_see_status(&self, i: usize, status: MemberStatus) -> bool {
        let name = self.nodes[i].node.id().name.clone();
        self.running()
            .filter(|&j| j != i)
            .all(|j| self.nodes[j].node.status(&name) == Some(status))
    }

    /// Runs the simulation until `pred` holds (checked after every step, see [`Sim::step`]) or
    /// `limit` of virtual time passes. Returns the virtual time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> Result<Duration, Duration> {
        let start = self.now;
        let deadline = self.now + limit;
        if pred(self) {
            return Ok(Duration::ZERO);
        }
        while let Some(t) = self.peek_time() {
            if t > deadline {
                break;
            }
            self.step_window(Some(deadline));
            if pred(self) {
                return Ok(self.now - start);
            }
        }
        self.now = self.now.max(deadline);
        Err(self.now - start)
    }

    /// Like [`Sim::run_until`], but only evaluates `pred` once per `every` of virtual time
    /// (for predicates that are expensive at large N).
    pub fn run_until_sampled(
        &mut self,
        limit: Duration,
        every: Duration,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> Result<Duration, Duration> {
        let start = self.now;
        let deadline = self.now + limit;
        let mut next_check = self.now;
        loop {
            if self.now >= next_check {
                if pred(self) {
                    return Ok(self.now - start);
                }
                next_check = self.now + every;
            }
            match self.peek_time() {
                Some(t) if t <= deadline => {
                    if t > next_check {
                        // Check at the sampling instant, before time passes it.
                        self.now = next_check;
                        continue;
                    }
                    self.step_window(Some(next_check.min(deadline)));
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return if pred(self) {
                        Ok(self.now - start)
                    } else {
                        Err(self.now - start)
                    };
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        while let Some(t) = self.peek_time() {
            if t > deadline {
                break;
            }
            self.step_window(Some(deadline));
        }
        self.now = self.now.max(deadline);
    }

    fn peek_time(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.at)
    }

    /// Processes the next window: every queued event earlier than the earliest one plus the
    /// network's least latency (see the module docs). Returns false if the queue is empty.
    pub fn step(&mut self) -> bool {
        self.step_window(None)
    }

    /// [`Sim::step`], leaving events after `bound` queued.
    fn step_window(&mut self, bound: Option<Instant>) -> bool {
        let Some(first) = self.peek_time() else {
            return false;
        };
        let tick = Duration::from_nanos(1);
        let mut end = first + self.net.latency.min().max(tick);
        if let Some(bound) = bound {
            end = end.min(bound + tick).max(first + tick);
        }
        let mut window: Vec<WindowEvent> = Vec::new();
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at >= end {
                break;
            }
            let Some(Reverse(Queued { at, ev, .. })) = self.queue.pop() else {
                break;
            };
            window.push((ev.node(), at, ev));
        }
        // Stable: each node's events stay in (time, insertion) order.
        window.sort_by_key(|&(i, _, _)| i);
        let mut groups: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (k, &(i, _, _)) in window.iter().enumerate() {
            match groups.last_mut() {
                Some((last, range)) if *last == i => range.end = k + 1,
                _ => groups.push((i, k..k + 1)),
            }
        }
        let touched: Vec<usize> = groups.iter().map(|(i, _)| *i).collect();
        let cap = self.net.paused_buffer;
        let big = self.parallel && self.nodes.len() >= PARALLEL_MIN_NODES;
        let mut work: Vec<(&mut SimNode, &[WindowEvent])> = disjoint_mut(&mut self.nodes, &touched)
            .into_iter()
            .zip(groups.iter().map(|(_, r)| &window[r.clone()]))
            .collect();
        let parallel = window.len() >= PARALLEL_MIN_EVENTS && work.len() > 1 && big;
        let last = if parallel {
            work.par_iter_mut()
                .map(|(sn, evs)| run_node(sn, evs, end, cap))
                .max()
        } else {
            work.iter_mut()
                .map(|(sn, evs)| run_node(sn, evs, end, cap))
                .max()
        };
        if let Some(Some(t)) = last {
            self.now = self.now.max(t);
        }
        self.merge(&touched);
        true
    }

    /// Puts what nodes `touched` produced on the network, in order of time, then node, then
    /// production: every random draw of the network happens here, on one thread.
    fn merge(&mut self, touched: &[usize]) {
        let mut all: Vec<(Instant, usize, usize, Output)> = Vec::new();
        for &i in touched {
            all.extend(
                self.nodes[i]
                    .out
                    .drain(..)
                    .enumerate()
                    .map(|(k, (at, o))| (at, i, k, o)),
            );
            // As the core's event queue: a burst must not keep its buffer in every node.
            self.nodes[i].out.shrink_to(OUT_KEPT);
        }
        all.sort_by_key(|&(at, i, k, _)| (at, i, k));
        for (at, i, _, o) in all {
            match o {
                Output::Transmit(tx) => self.route(at, i, tx),
                Output::Event(ev) => {
                    if let Some(hook) = self.hook.as_mut() {
                        hook(at, i, &ev);
                    }
                    if self.record_events {
                        self.nodes[i].events.push((at, ev));
                    }
                }
                Output::Dropped { from, channel } => {
                    self.stats.cut += 1;
                    // A stream to a dead process is refused.
                    if channel == Channel::Stream
                        && let Some(sender) = self.index_of(from)
                    {
                        self.stream_refused(at, sender, self.nodes[i].addr);
                    }
                }
                Output::Overflowed => self.stats.overflowed += 1,
                Output::Wake(t) => self.push(t, Ev::Wake(i)),
            }
        }
    }

    /// Node `node`'s stream to `peer` fails; it hears so a network latency after `at`.
    fn stream_refused(&mut self, at: Instant, node: usize, peer: SocketAddr) {
        let at = at + self.net.latency.sample(&mut self.rng);
        self.push(at, Ev::StreamClosed { node, peer });
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        let seq = self.seq;
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq, ev }));
    }

    /// Collects node `i`'s transmits, events and next wake after an outside call (start, join,
    /// a write), and puts them on the network.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        settle(&mut self.nodes[i], now);
        queue_wake(&mut self.nodes[i]);
        self.merge(&[i]);
    }

    /// Sends one of node `i`'s transmits at `at`: trace, counters, cuts, loss, latency.
    fn route(&mut self, at: Instant, i: usize, tx: Transmit) {
        let from_addr = self.nodes[i].addr;
        self.trace
            .update(&((at - self.epoch).as_nanos() as u64).to_le_bytes());
        self.trace.update(&(i as u32).to_le_bytes());
        self.trace.update(&tx.to.port().to_le_bytes());
        if let std::net::IpAddr::V4(v4) = tx.to.ip() {
            self.trace.update(&v4.octets());
        }
        self.trace.update(&[tx.channel as u8]);
        self.trace.update(&tx.payload);
        let len = tx.payload.len();
        match tx.channel {
            Channel::Datagram => {
                self.stats.datagrams += 1;
                self.stats.datagram_bytes += len as u64;
                self.stats.max_datagram = self.stats.max_datagram.max(len);
            }
            Channel::Stream => {
                self.stats.frames += 1;
                self.stats.frame_bytes += len as u64;
            }
        }
        let to = self.index_of(tx.to);
        // A connection needs both directions: a one-way cut either way refuses it.
        let stream_cut = tx.channel == Channel::Stream
            && to.is_some_and(|t| {
                [(i, t), (t, i)]
                    .iter()
                    .any(|p| self.stream_cuts.contains(p) || self.cuts.contains(p))
            });
        let Some(to) = to.filter(|&t| !self.cuts.contains(&(i, t)) && !stream_cut) else {
            self.stats.cut += 1;
            if tx.channel == Channel::Stream {
                self.stream_refused(at, i, tx.to);
            }
            return;
        };
        let arrive = match tx.channel {
            Channel::Datagram => {
                if self.net.loss > 0.0 && self.rng.random_bool(self.net.loss.min(1.0)) {
                    self.stats.lost += 1;
                    return;
                }
                let mut arrive = at + self.net.latency.sample(&mut self.rng);
                if self.net.reorder > 0.0 && self.rng.random_bool(self.net.reorder.min(1.0)) {
                    arrive += self.net.reorder_delay;
                }
                if self.net.duplicate > 0.0 && self.rng.random_bool(self.net.duplicate.min(1.0)) {
                    let dup_at = at + self.net.latency.sample(&mut self.rng);
                    self.push(
                        dup_at,
                        Ev::Deliver {
                            to,
                            from: from_addr,
                            channel: tx.channel,
                            payload: tx.payload.clone(),
                        },
                    );
                }
                arrive
            }
            Channel::Stream => {
                // Reliable and in order per pair, like one TCP connection.
                let lat = self.net.latency.sample(&mut self.rng);
                let last = self.stream_clock.get(&(i, to)).copied().unwrap_or(at);
                let arrive = (at + lat).max(last + Duration::from_nanos(1));
                self.stream_clock.insert((i, to), arrive);
                arrive
            }
        };
        self.push(
            arrive,
            Ev::Deliver {
                to,
                from: from_addr,
                channel: tx.channel,
                payload: tx.payload,
            },
        );
    }
}

impl Ev {
    /// The node the event happens at.
    fn node(&self) -> usize {
        match *self {
            Self::Deliver { to, .. } => to,
            Self::Wake(i) | Self::Resume(i) => i,
            Self::StreamClosed { node, .. } => node,
        }
    }
}

/// Handles one node's events of a window (`evs`, in time order) and the timers they set that
/// fall before `end`. Returns the time of the last thing it handled.
fn run_node(
    sn: &mut SimNode,
    evs: &[WindowEvent],
    end: Instant,
    paused_buffer: usize,
) -> Option<Instant> {
    let mut last = None;
    let mut evs = evs.iter().peekable();
    loop {
        let wake = sn
            .next_wake
            .filter(|&w| w < end && sn.process == Process::Running);
        let next = evs.peek().map(|&&(_, t, _)| t);
        match (next, wake) {
            (next, Some(w)) if next.is_none_or(|t| w < t) => {
                sn.next_wake = None;
                sn.node.handle_timeout(w);
                settle(sn, w);
                last = Some(w);
            }
            (Some(_), _) => {
                let Some((_, t, ev)) = evs.next() else {
                    break;
                };
                handle(sn, *t, ev, paused_buffer);
                last = Some(*t);
            }
            (None, _) => break,
        }
    }
    queue_wake(sn);
    last
}

/// One event at node `sn`, at time `t`.
fn handle(sn: &mut SimNode, t: Instant, ev: &Ev, paused_buffer: usize) {
    match ev {
        Ev::Deliver {
            from,
            channel,
            payload,
            ..
        } => match sn.process {
            Process::Running => {
                match channel {
                    Channel::Datagram => sn.node.handle_datagram(t, *from, payload),
                    Channel::Stream => {
                        sn.node.handle_stream_frame(t, *from, payload);
                    }
                }
                settle(sn, t);
            }
            Process::Paused { .. } => {
                // Frames wait in their connection, not in the datagram socket's buffer.
                let datagrams = || {
                    sn.buffered
                        .iter()
                        .filter(|(_, c, _)| *c == Channel::Datagram)
                        .count()
                };
                if *channel == Channel::Stream || datagrams() < paused_buffer {
                    sn.buffered.push((*from, *channel, Some(payload.clone())));
                } else {
                    sn.out.push((t, Output::Overflowed));
                }
            }
            Process::Crashed => sn.out.push((
                t,
                Output::Dropped {
                    from: *from,
                    channel: *channel,
                },
            )),
        },
        Ev::Wake(_) => {
            if sn.process == Process::Running && sn.next_wake == Some(t) {
                sn.next_wake = None;
                sn.node.handle_timeout(t);
                settle(sn, t);
            }
        }
        Ev::StreamClosed { peer, .. } => match sn.process {
            Process::Running => {
                sn.node.handle_stream_closed(t, *peer);
                settle(sn, t);
            }
            // The error waits for the process too (found by review: it was dropped, and an
            // exchange pending there waited for its own timeout after the pause).
            Process::Paused { .. } => sn.buffered.push((*peer, Channel::Stream, None)),
            Process::Crashed => {}
        },
        Ev::Resume(_) => {
            if let Process::Paused { until } = sn.process
                && until <= t
            {
                sn.process = Process::Running;
                for (from, channel, payload) in std::mem::take(&mut sn.buffered) {
                    match (channel, payload) {
                        (Channel::Datagram, Some(p)) => sn.node.handle_datagram(t, from, &p),
                        (Channel::Stream, Some(p)) => {
                            sn.node.handle_stream_frame(t, from, &p);
                        }
                        (_, None) => sn.node.handle_stream_closed(t, from),
                    }
                }
                sn.node.handle_timeout(t);
                settle(sn, t);
            }
        }
    }
}

/// Capacity of a node's window output kept once it is drained.
const OUT_KEPT: usize = 64;

/// Drains the node's transmits and events into its window output, and notes its next timer.
fn settle(sn: &mut SimNode, at: Instant) {
    while let Some(tx) = sn.node.poll_transmit() {
        sn.out.push((at, Output::Transmit(tx)));
    }
    while let Some(ev) = sn.node.poll_event() {
        sn.out.push((at, Output::Event(ev)));
    }
    if sn.process == Process::Running
        && let Some(t) = sn.node.poll_timeout()
    {
        let t = t.max(at);
        if sn.next_wake != Some(t) {
            sn.next_wake = Some(t);
            sn.wake_queued = false;
        }
    }
}

/// Asks for the node's next timer to be queued, if it is not already.
fn queue_wake(sn: &mut SimNode) {
    if sn.process == Process::Running
        && !sn.wake_queued
        && let Some(t) = sn.next_wake
    {
        sn.out.push((t, Output::Wake(t)));
        sn.wake_queued = true;
    }
}

/// Mutable references to `slice[i]` for each `i` in `indices` (ascending, distinct).
fn disjoint_mut<'a, T>(mut slice: &'a mut [T], indices: &[usize]) -> Vec<&'a mut T> {
    let mut out = Vec::with_capacity(indices.len());
    let mut base = 0;
    for &i in indices {
        let rest = std::mem::take(&mut slice);
        let Some((item, tail)) = rest.get_mut(i - base..).and_then(<[T]>::split_first_mut) else {
            break;
        };
        out.push(item);
        slice = tail;
        base = i + 1;
    }
    out
}

/// The seeds a test should run: `SIM_SEED=x` replays one, `SIM_SEEDS=n` runs `n` (default
/// `default_count`), starting from a fixed base so runs are reproducible; `SIM_SEED_SKIP=k`
/// starts `k` seeds past it, to explore schedules earlier runs did not.
pub fn seeds_from_env(default_count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    let skip: u64 = std::env::var("SIM_SEED_SKIP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (skip..skip.saturating_add(n))
        .map(|i| 0x5EED_0000_u64.wrapping_add(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream connection that fails while its node is paused is reported when it resumes, as
    /// the process would read the error then, in order with what else arrived: the exchange it
    /// awaited ends at once, not after its own timeout. (Found by review: the failure was
    /// dropped.)
    #[test]
    fn a_stream_failing_during_a_pause_is_reported_on_resume() {
        let mut sim = Sim::new(5, Config::default(), NetConfig::default());
        sim.add_node();
        sim.add_node();
        sim.crash(1);
        // A join opens with a stream Syn to its seed: here a dead process, which refuses it.
        sim.join(0, &[1]);
        sim.pause(0, Duration::from_secs(1));
        sim.run_for(Duration::from_millis(500));
        assert!(
            sim.nodes[0].buffered.iter().any(|b| b.2.is_none()),
            "the failure waits for the process"
        );
        sim.run_for(Duration::from_millis(600));
        assert!(sim.nodes[0].buffered.is_empty(), "handed over on resuming");
    }

    /// A paused node's socket buffer holds `paused_buffer` datagrams however many stream
    /// frames wait in their connections; datagrams past it are dropped as overflow, and all
    /// that waited is handled on resume.
    #[test]
    fn stream_frames_do_not_take_a_paused_nodes_datagram_buffer() {
        let mut sim = Sim::new(1, Config::default(), NetConfig::default());
        sim.add_node();
        sim.add_node();
        let t = sim.now();
        let from = sim.nodes[0].addr;
        let sn = &mut sim.nodes[1];
        sn.out.clear();
        sn.process = Process::Paused {
            until: t + Duration::from_secs(1),
        };
        let deliver = |channel| Ev::Deliver {
            to: 1,
            from,
            channel,
            payload: Bytes::from_static(b"not a message"),
        };
        // Frames first: they must leave the buffer's room to datagrams.
        for _ in 0..5 {
            handle(sn, t, &deliver(Channel::Stream), 2);
        }
        for _ in 0..3 {
            handle(sn, t, &deliver(Channel::Datagram), 2);
        }
        let count = |c: Channel| sn.buffered.iter().filter(|b| b.1 == c).count();
        assert_eq!((count(Channel::Stream), count(Channel::Datagram)), (5, 2));
        let overflowed = |sn: &SimNode| {
            sn.out
                .iter()
                .filter(|(_, o)| matches!(o, Output::Overflowed))
                .count()
        };
        assert_eq!(overflowed(sn), 1);
        // On resume the node reads all seven (none is a message: all counted malformed).
        let before = sn.node.stats();
        handle(sn, t + Duration::from_secs(1), &Ev::Resume(1), 2);
        let after = sn.node.stats();
        assert_eq!(sn.process, Process::Running);
        assert!(sn.buffered.is_empty());
        assert_eq!(after.rx_datagrams - before.rx_datagrams, 2);
        assert_eq!(after.rx_frames - before.rx_frames, 5);
    }

    // ---- Network-model checks: each fault does what its docs say, no more and no less. ----

    fn three_idle_nodes(net: NetConfig) -> Sim {
        let mut sim = Sim::new(7, Config::default(), net);
        sim.add_node();
        sim.add_node();
        sim.add_node();
        // Start from an empty queue: only what the test routes is in flight.
        sim.queue.clear();
        sim
    }

    fn datagram(to: SocketAddr, payload: &'static [u8]) -> Transmit {
        Transmit {
            to,
            channel: Channel::Datagram,
            payload: Bytes::from_static(payload),
        }
    }

    fn frame(to: SocketAddr, payload: &'static [u8]) -> Transmit {
        Transmit {
            to,
            channel: Channel::Stream,
            payload: Bytes::from_static(payload),
        }
    }

    /// (arrival offset from `at`, destination, channel) of every queued delivery, in time order.
    fn deliveries(sim: &Sim, at: Instant) -> Vec<(Duration, usize, Channel)> {
        let mut v: Vec<_> = sim
            .queue
            .iter()
            .filter_map(|Reverse(q)| match &q.ev {
                Ev::Deliver { to, channel, .. } => Some((q.at - at, *to, *channel)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|d| d.0);
        v
    }

    fn stream_closed(sim: &Sim) -> Vec<(usize, SocketAddr)> {
        sim.queue
            .iter()
            .filter_map(|Reverse(q)| match q.ev {
                Ev::StreamClosed { node, peer } => Some((node, peer)),
                _ => None,
            })
            .collect()
    }

    /// The loss rate is drawn once per datagram: at 0.5 about half are lost (not three
    /// quarters, not none), and every lost one is counted.
    #[test]
    fn loss_drops_the_configured_share_once_and_counts_it() {
        let mut sim = three_idle_nodes(NetConfig {
            loss: 0.5,
            ..NetConfig::default()
        });
        let (t, to) = (sim.now(), sim.nodes[1].addr);
        let n = 4000;
        for _ in 0..n {
            sim.route(t, 0, datagram(to, b"x"));
        }
        let delivered = deliveries(&sim, t).len() as u64;
        let lost = sim.net_stats().lost;
        assert_eq!(
            delivered + lost,
            n,
            "every datagram is delivered or counted lost"
        );
        assert!(
            (1800..=2200).contains(&lost),
            "lost {lost} of {n} at loss 0.5"
        );
        assert_eq!(sim.net_stats().datagrams, n);
    }

    /// Duplication delivers a datagram twice, each copy with its own latency draw; reordering
    /// holds a datagram back by exactly `reorder_delay`.
    #[test]
    fn duplicate_delivers_twice_and_reorder_delays_by_reorder_delay() {
        let fixed = Duration::from_millis(1);
        let mut sim = three_idle_nodes(NetConfig {
            latency: Latency::Fixed(fixed),
            duplicate: 1.0,
            ..NetConfig::default()
        });
        let (t, to) = (sim.now(), sim.nodes[1].addr);
        sim.route(t, 0, datagram(to, b"x"));
        assert_eq!(
            deliveries(&sim, t),
            [(fixed, 1, Channel::Datagram), (fixed, 1, Channel::Datagram)]
        );
        // Frames are never duplicated (TCP).
        sim.queue.clear();
        sim.route(t, 0, frame(to, b"x"));
        assert_eq!(deliveries(&sim, t), [(fixed, 1, Channel::Stream)]);

        let mut sim = three_idle_nodes(NetConfig {
            latency: Latency::Fixed(fixed),
            reorder: 1.0,
            reorder_delay: Duration::from_millis(10),
            ..NetConfig::default()
        });
        let (t, to) = (sim.now(), sim.nodes[1].addr);
        sim.route(t, 0, datagram(to, b"x"));
        assert_eq!(
            deliveries(&sim, t),
            [(Duration::from_millis(11), 1, Channel::Datagram)]
        );
    }

    /// Uniform latency spreads over its bounds; the exponential one has its floor plus a tail
    /// of about the configured mean; the lookahead is the least latency.
    #[test]
    fn latency_distributions_span_their_range() {
        let ms = Duration::from_millis;
        let uniform = Latency::Uniform {
            min: ms(1),
            max: ms(3),
        };
        assert_eq!(uniform.min(), ms(1));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let s: Vec<Duration> = (0..2000).map(|_| uniform.sample(&mut rng)).collect();
        assert!(s.iter().all(|d| (ms(1)..=ms(3)).contains(d)));
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        assert!(
            (ms(1) + ms(9) / 10..ms(2) + ms(1) / 10).contains(&mean),
            "{mean:?}"
        );
        let exp = Latency::Exponential {
            min: ms(1),
            mean_extra: ms(4),
        };
        assert_eq!(exp.min(), ms(1));
        let s: Vec<Duration> = (0..4000).map(|_| exp.sample(&mut rng)).collect();
        assert!(s.iter().all(|d| *d >= ms(1)));
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        assert!(
            (ms(4) + ms(1) / 2..ms(5) + ms(1) / 2).contains(&mean),
            "{mean:?}"
        );
    }

    /// No window takes in an event that another event of it could cause: after every step,
    /// nothing queued is earlier than the clock (the lookahead is the least latency, not more).
    #[test]
    fn no_event_is_queued_before_the_clock_after_a_step() {
        let ms = Duration::from_millis;
        let net = NetConfig {
            latency: Latency::Uniform {
                min: ms(1),
                max: ms(40),
            },
            ..NetConfig::default()
        };
        let mut sim = Sim::new(11, Config::default(), net);
        let nodes: Vec<usize> = (0..6).map(|_| sim.add_node()).collect();
        sim.join_all_via(&[nodes[0]]);
        for _ in 0..3000 {
            if !sim.step() {
                break;
            }
            if let Some(t) = sim.peek_time() {
                assert!(
                    t >= sim.now(),
                    "an event {:?} before the clock",
                    sim.now() - t
                );
            }
        }
    }

    /// A symmetric cut drops both directions, a one-way cut only its own; a stream needs both
    /// directions; streams-only cuts let datagrams through; every refused frame tells its
    /// sender; heal undoes all of it.
    #[test]
    fn cuts_drop_exactly_what_they_say() {
        let mut sim = three_idle_nodes(NetConfig {
            latency: Latency::Fixed(Duration::from_millis(1)),
            ..NetConfig::default()
        });
        let t = sim.now();
        let a: Vec<SocketAddr> = sim.nodes.iter().map(|n| n.addr).collect();
        let send = |sim: &mut Sim, from: usize, to: usize, ch: Channel| {
            sim.queue.clear();
            let tx = match ch {
                Channel::Datagram => datagram(a[to], b"x"),
                Channel::Stream => frame(a[to], b"x"),
            };
            sim.route(t, from, tx);
            (
                deliveries(sim, t).iter().any(|d| d.1 == to),
                stream_closed(sim),
            )
        };
        sim.cut(0, 1);
        assert_eq!(send(&mut sim, 0, 1, Channel::Datagram), (false, vec![]));
        assert_eq!(send(&mut sim, 1, 0, Channel::Datagram), (false, vec![]));
        assert_eq!(send(&mut sim, 0, 2, Channel::Datagram), (true, vec![]));
        assert_eq!(
            send(&mut sim, 1, 0, Channel::Stream),
            (false, vec![(1, a[0])])
        );
        sim.heal();
        sim.cut_one_way(0, 2);
        assert_eq!(send(&mut sim, 0, 2, Channel::Datagram), (false, vec![]));
        assert_eq!(send(&mut sim, 2, 0, Channel::Datagram), (true, vec![]));
        // A connection needs both directions.
        assert_eq!(
            send(&mut sim, 2, 0, Channel::Stream),
            (false, vec![(2, a[0])])
        );
        assert_eq!(
            send(&mut sim, 0, 2, Channel::Stream),
            (false, vec![(0, a[2])])
        );
        sim.heal();
        sim.cut_streams(1, 2);
        assert_eq!(send(&mut sim, 1, 2, Channel::Datagram), (true, vec![]));
        assert_eq!(
            send(&mut sim, 2, 1, Channel::Stream),
            (false, vec![(2, a[1])])
        );
        assert_eq!(
            send(&mut sim, 1, 2, Channel::Stream),
            (false, vec![(1, a[2])])
        );
        sim.heal();
        assert_eq!(send(&mut sim, 1, 2, Channel::Stream), (true, vec![]));
        assert_eq!(send(&mut sim, 0, 2, Channel::Datagram), (true, vec![]));
        assert_eq!(send(&mut sim, 1, 0, Channel::Datagram), (true, vec![]));
    }

    /// Frames of one pair arrive in sending order whatever the latency draws; only datagrams
    /// count toward the largest datagram; frame bytes are counted.
    #[test]
    fn frames_keep_their_order_and_are_counted_as_frames() {
        let mut sim = three_idle_nodes(NetConfig {
            latency: Latency::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(50),
            },
            ..NetConfig::default()
        });
        let (mut t, to) = (sim.now(), sim.nodes[1].addr);
        let mut arrivals = Vec::new();
        for _ in 0..50 {
            sim.queue.clear();
            sim.route(t, 0, frame(to, &[0; 3000]));
            arrivals.push(sim.peek_time().unwrap());
            t += Duration::from_micros(100);
        }
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "{arrivals:?}");
        let s = sim.net_stats();
        assert_eq!((s.frames, s.frame_bytes), (50, 150_000));
        assert_eq!((s.datagrams, s.datagram_bytes, s.max_datagram), (0, 0, 0));
    }

    /// The trace hash covers the send time, the destination, the channel and every byte.
    #[test]
    fn the_trace_hash_covers_time_destination_channel_and_payload() {
        let hash = |dt: u64, to: usize, ch: Channel, payload: &'static [u8]| {
            let mut sim = three_idle_nodes(NetConfig::default());
            let at = sim.now() + Duration::from_micros(dt);
            let to = sim.nodes[to].addr;
            sim.route(
                at,
                0,
                Transmit {
                    to,
                    channel: ch,
                    payload: Bytes::from_static(payload),
                },
            );
            sim.trace_hash()
        };
        let base = hash(5, 1, Channel::Datagram, b"abc");
        assert_eq!(base, hash(5, 1, Channel::Datagram, b"abc"));
        assert_ne!(base, hash(6, 1, Channel::Datagram, b"abc"), "time");
        assert_ne!(base, hash(5, 2, Channel::Datagram, b"abc"), "destination");
        assert_ne!(base, hash(5, 1, Channel::Stream, b"abc"), "channel");
        assert_ne!(base, hash(5, 1, Channel::Datagram, b"abd"), "payload");
    }

    /// A paused node handles and sends nothing for exactly its pause while what reaches it
    /// waits; a crashed node reads and sends nothing and what reaches it is dropped and
    /// counted; a restart is an empty process with a higher generation (the same one when
    /// reusing it) that runs at once and forgets what waited in the old one's buffer.
    #[test]
    fn pause_crash_and_restart_do_what_they_say() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut sim = Sim::new(5, Config::default(), NetConfig::default());
        let n: Vec<usize> = (0..3).map(|_| sim.add_node()).collect();
        sim.join_all_via(&[n[0]]);
        sim.run_until(s(30), |s| s.all_see_live(3))
            .expect("converges");
        sim.set(0, "k", "v");
        sim.run_for(s(3));
        assert!(sim.nodes[1].node.get("n0", "k").is_some());
        let quiet = |sim: &Sim, i: usize| {
            let st = sim.nodes[i].node.stats();
            (
                st.tx_datagrams,
                st.tx_frames,
                st.rx_datagrams,
                st.rx_frames,
                st.gossip_rounds,
            )
        };

        let before = quiet(&sim, 1);
        sim.pause(1, s(3));
        sim.run_for(s(3) - ms(10));
        assert!(matches!(sim.nodes[1].process, Process::Paused { .. }));
        assert_eq!(quiet(&sim, 1), before, "a paused node handles nothing");
        let waiting = sim.nodes[1].buffered.len() as u64;
        assert!(waiting > 0, "peers kept sending to it");
        sim.run_for(ms(20));
        assert_eq!(sim.nodes[1].process, Process::Running);
        assert!(sim.nodes[1].buffered.is_empty());
        let after = sim.nodes[1].node.stats();
        assert!(after.rx_datagrams + after.rx_frames >= before.2 + before.3 + waiting);

        let before = quiet(&sim, 2);
        let cut = sim.net_stats().cut;
        sim.crash(2);
        sim.run_for(s(3));
        assert_eq!(quiet(&sim, 2), before, "a crashed node handles nothing");
        assert!(sim.running().all(|i| i != 2));
        assert!(
            sim.net_stats().cut > cut,
            "what reached it was dropped and counted"
        );

        let old = sim.nodes[2].node.id().clone();
        sim.restart(2);
        let new = sim.nodes[2].node.id().clone();
        assert_eq!(sim.nodes[2].process, Process::Running);
        assert_eq!((&new.name, new.addr), (&old.name, old.addr));
        assert!(new.generation > old.generation, "{old:?} -> {new:?}");
        assert!(
            sim.nodes[2].node.get("n0", "k").is_none(),
            "a restart starts empty"
        );
        assert_eq!(quiet(&sim, 2).2, 0);
        sim.run_until(s(30), |s| s.nodes[2].node.get("n0", "k").is_some())
            .expect("the new process catches up");

        sim.pause(1, s(5));
        sim.run_for(s(2));
        assert!(!sim.nodes[1].buffered.is_empty());
        let id = sim.nodes[1].node.id().clone();
        sim.restart_reusing_generation(1);
        assert_eq!(sim.nodes[1].node.id(), &id);
        assert!(
            sim.nodes[1].buffered.is_empty(),
            "the old process's buffer is gone"
        );
        assert!(
            sim.nodes[1].node.get("n0", "k").is_none(),
            "a restart starts empty"
        );
        assert_eq!(sim.nodes[1].process, Process::Running);
    }

    /// What reaches a crashed node is dropped and counted as cut; a frame's sender hears its
    /// stream refused a network latency later (a datagram's hears nothing).
    #[test]
    fn a_frame_to_a_crashed_node_is_refused_to_its_sender() {
        let mut sim = three_idle_nodes(NetConfig {
            latency: Latency::Fixed(Duration::from_millis(1)),
            ..NetConfig::default()
        });
        sim.crash(1);
        let (t, to) = (sim.now(), sim.nodes[1].addr);
        sim.route(t, 0, datagram(to, b"x"));
        sim.route(t, 0, frame(to, b"x"));
        let cut = sim.net_stats().cut;
        assert!(sim.step());
        assert_eq!(sim.net_stats().cut, cut + 2);
        assert_eq!(stream_closed(&sim), [(0, to)]);
    }

    /// `run_for` stops exactly at its deadline: nothing later is handled, however the
    /// deadline falls within a lookahead window.
    #[test]
    fn run_for_handles_nothing_past_its_deadline() {
        let mut sim = Sim::new(9, Config::default(), NetConfig::default());
        let nodes: Vec<usize> = (0..5).map(|_| sim.add_node()).collect();
        sim.join_all_via(&[nodes[0]]);
        let step = Duration::from_micros(37);
        for _ in 0..20_000 {
            let deadline = sim.now() + step;
            sim.run_for(step);
            assert_eq!(sim.now(), deadline);
            assert!(sim.peek_time().is_none_or(|t| t > deadline));
        }
    }

    /// `run_until_sampled` reports the sampling instant at which the predicate first held:
    /// a whole number of samples, not the time of whatever event came after it.
    #[test]
    fn sampled_runs_report_the_sampling_instant() {
        let every = Duration::from_millis(5);
        for seed in 0..32 {
            let mut sim = Sim::new(seed, Config::default(), NetConfig::default());
            let nodes: Vec<usize> = (0..5).map(|_| sim.add_node()).collect();
            sim.join_all_via(&[nodes[0]]);
            let start = sim.now();
            let took = sim
                .run_until_sampled(Duration::from_secs(30), every, |s| s.all_see_live(5))
                .expect("converges");
            assert_eq!(
                took.as_nanos() % every.as_nanos(),
                0,
                "seed {seed}: {took:?}"
            );
            assert_eq!(sim.now() - start, took);
        }
    }
}
