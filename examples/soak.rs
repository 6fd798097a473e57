//! Soak test of the tokio runtime under churn, watching for resource leaks: N real nodes in
//! one process, one UDP socket and TCP listener each on 127.0.0.1, for M minutes, while a
//! seeded random schedule does what services do to a cluster again and again.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 30
//! cargo run --release --example soak -- --nodes 30 --interval-ms 100 --minutes 20 --seed 7
//! ```
//!
//! Every 0.5-2 s (at random) one action, chosen by weight: kill a node and start it again
//! under the same name 0.5-5 s later (a new incarnation: a new generation); make a node leave
//! gracefully (`shutdown`) and start it again likewise; set a key (mostly small values, one in
//! ten of 2-6 KB, which go over TCP), set one with a TTL of 1-20 s, delete one (each node writes
//! at most 32 plain and 16 TTL keys); subscribe (every event, membership only, a key prefix, or
//! with the current state replayed; one in five is never read, so it lags) or drop a
//! subscription (at most 4 per node); mark a node ready or not; set its weight; join through
//! other nodes at run time; read (`get`, `values`, `node_state`, `phi`, owners, `stats`). At
//! most a tenth of the nodes are down at once. Each incarnation also registers its Prometheus
//! metrics in a shared registry (and unregisters them when it stops), and the registry is
//! scraped at every sample.
//!
//! Every 10 s one line: the process's resident memory (`VmRSS` of `/proc/self/status`), open
//! file descriptors (`/proc/self/fd`), threads, live tokio tasks, and summed over the live
//! nodes: TCP connections open, bytes queued on them, members known (and the most any node
//! knows, and how many of those are down or left), subscriptions open and events queued for
//! them (from the metrics), events dropped for lagging subscribers, and the keys one node
//! holds of every member's state.
//!
//! At the end the churn stops, every node down is started again, and the cluster is given up
//! to `--settle-secs` (60) to converge: every node must see every node's current incarnation
//! alive. Then the verdict compares the samples of the second third of the run with those of
//! the last third, for memory, descriptors, tasks, connections, queued bytes and members
//! known: growth beyond a small tolerance (printed) is reported as a suspected leak. Exit
//! status 1 on a suspected leak or if the cluster does not converge.
//!
//! The comparison is of medians: connections come in bursts that move a mean by a fifth from
//! one third to the next. Resident memory also grows when the allocator keeps the pages of a
//! larger burst than before, with nothing live piling up; to tell the two apart, run the soak
//! under heaptrack (`heaptrack target/release/examples/soak --minutes 12`, then
//! `heaptrack_print -f FILE -M massif.out`): the live heap's low point, minute by minute,
//! stays flat unless something leaks. Down and left members are forgotten after
//! `forget_after` and tombstones purged after `tombstone_grace` (both 10 min at the LAN
//! defaults), so memory grows for the first 10 minutes of churn by design: runs of 30
//! minutes or more compare steady states.
//!
//! Options: `--nodes N` (30), `--interval-ms N` (gossip interval, 100), `--minutes M` (20),
//! `--seed N` (1), `--sample-secs N` (10), `--settle-secs N` (60), `--first-port N` (the
//! nodes take the first free ports from 21000 up: give a soak run at the same time another
//! range); `--keyring` seals every packet and rotates the cluster's key every 2 minutes (the
//! new key added on every node, made primary 10 s later, the old one removed 10 s after
//! that; a node started meanwhile takes the keyring of the step reached), so that the replay
//! windows of every incarnation pile up; `--fresh-ports` starts each restarted node on a new
//! port (as a rescheduled pod gets a new address), so that what is kept per address piles up
//! too.

// The harness reads the clock to schedule and measure; the clippy ban is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod common;

use common::free_ports;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tidings::metrics::Metrics;
use tidings::metrics::prometheus::Registry;
use tidings::runtime::{self, EventFilter, Handle, RuntimeConfig, Subscription};
use tidings::{Keyring, MemberStatus};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const USAGE: &str = "usage: soak [--nodes N] [--interval-ms N] [--minutes M] [--seed N] \
                     [--sample-secs N] [--settle-secs N] [--first-port N] [--keyring] \
                     [--fresh-ports]";
const PLAIN_KEYS: usize = 32;
const TTL_KEYS: usize = 16;
const MAX_SUBS: usize = 4;
/// With `--keyring`: time between rotations, and between a rotation's steps.
const ROTATE_EVERY: Duration = Duration::from_secs(120);
const ROTATE_STEP: Duration = Duration::from_secs(10);

struct Opts {
    nodes: usize,
    interval: Duration,
    run: Duration,
    seed: u64,
    sample: Duration,
    settle: Duration,
    first_port: u16,
    keyring: bool,
    fresh_ports: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        nodes: 30,
        interval: Duration::from_millis(100),
        run: Duration::from_secs(20 * 60),
        seed: 1,
        sample: Duration::from_secs(10),
        settle: Duration::from_secs(60),
        first_port: 21_000,
        keyring: false,
        fresh_ports: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        match flag.as_str() {
            "--keyring" => {
                o.keyring = true;
                continue;
            }
            "--fresh-ports" => {
                o.fresh_ports = true;
                continue;
            }
            _ => {}
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => o.nodes = v.parse().context("--nodes")?,
            "--interval-ms" => o.interval = Duration::from_millis(v.parse()?),
            "--minutes" => o.run = Duration::from_secs_f64(v.parse::<f64>()? * 60.0),
            "--seed" => o.seed = v.parse()?,
            "--sample-secs" => o.sample = Duration::from_secs(v.parse()?),
            "--settle-secs" => o.settle = Duration::from_secs(v.parse()?),
            "--first-port" => o.first_port = v.parse().context("--first-port")?,
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.nodes < 5 {
        bail!("--nodes must be at least 5");
    }
    if o.sample.is_zero() {
        bail!("--sample-secs must be at least 1");
    }
    Ok(o)
}

/// One subscription held by the harness: read by a task (aborting it drops the
/// subscription), or held unread.
enum Sub {
    Read(JoinHandle<()>),
    Unread(#[allow(dead_code)] Subscription),
}

impl Drop for Sub {
    fn drop(&mut self) {
        if let Self::Read(task) = self {
            task.abort();
        }
    }
}

/// A running incarnation of a node.
struct Live {
    handle: Handle,
    metrics: Metrics,
    subs: Vec<Sub>,
    keys: BTreeSet<String>,
}

/// A node's name and address, and its incarnation if one runs.
struct Slot {
    name: String,
    addr: SocketAddr,
    live: Option<Live>,
    /// Stopped (or being stopped): started again at this time, once the stop has completed.
    restart_at: Option<Instant>,
    stopping: bool,
    incarnations: u64,
}

struct Harness {
    opts: Opts,
    rng: Xoshiro256PlusPlus,
    slots: Vec<Slot>,
    registry: Registry,
    stopped_tx: mpsc::UnboundedSender<usize>,
    stopped_rx: mpsc::UnboundedReceiver<usize>,
    events: Arc<AtomicU64>,
    actions: BTreeMap<&'static str, u64>,
    start_failures: u64,
    /// The cluster's keyring as of the rotation step reached (with `--keyring`).
    keyring: Option<Keyring>,
    /// The key in use and the next one, and the step the rotation to it is at (0: none
    /// under way; 1: added; 2: made primary).
    keys: ([u8; 32], [u8; 32]),
    rotation_step: u8,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
    live: u64,
    conns: u64,
    queued: u64,
    members: u64,
    members_max: u64,
    gone: u64,
    subs: u64,
    sub_queued: u64,
    lagged: u64,
    keys: u64,
    downs: u64,
}

fn main() -> Result<()> {
    let opts = parse()?;
    common::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ok = rt.block_on(soak(opts))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn soak(opts: Opts) -> Result<bool> {
    let n = opts.nodes;
    let ports = free_ports(opts.first_port, n)?;
    let (stopped_tx, stopped_rx) = mpsc::unbounded_channel();
    let mut h = Harness {
        rng: Xoshiro256PlusPlus::seed_from_u64(opts.seed),
        slots: ports
            .iter()
            .enumerate()
            .map(|(i, p)| Slot {
                name: format!("n{i:02}"),
                addr: SocketAddr::from(([127, 0, 0, 1], *p)),
                live: None,
                restart_at: None,
                stopping: false,
                incarnations: 0,
            })
            .collect(),
        opts,
        registry: Registry::new(),
        stopped_tx,
        stopped_rx,
        events: Arc::new(AtomicU64::new(0)),
        actions: BTreeMap::new(),
        start_failures: 0,
        keyring: None,
        keys: ([1; 32], [2; 32]),
        rotation_step: 0,
    };
    if h.opts.keyring {
        h.keyring = Some(Keyring::new(h.keys.0));
    }
    let t0 = Instant::now();
    for i in 0..n {
        h.start(i, true).await?;
    }
    let all = h.wait_converged(Duration::from_secs(30)).await;
    println!(
        "# {n} nodes on 127.0.0.1, gossip every {:?}, seed {}, keyring {}, fresh ports {}; \
         converged after start: {} ({:.1} s)",
        h.opts.interval,
        h.opts.seed,
        h.opts.keyring,
        h.opts.fresh_ports,
        all.is_ok(),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "# t_s rss_kib fds threads tasks | live conns queued_b members members_max gone \
         subs sub_queued lagged keys downs | events actions"
    );

    let t0 = Instant::now();
    let end = t0 + h.opts.run;
    let mut next_action = t0 + Duration::from_secs(1);
    let mut next_sample = t0;
    let mut next_rotation = t0 + ROTATE_EVERY;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = Instant::now();
        h.restarts(now).await;
        if now >= next_sample {
            let s = h.sample(now - t0).await;
            h.print(&s);
            samples.push(s);
            next_sample += h.opts.sample;
        }
        if now >= end {
            break;
        }
        if h.keyring.is_some() && now >= next_rotation {
            next_rotation += if h.rotate().await {
                ROTATE_EVERY
            } else {
                ROTATE_STEP
            };
        }
        if now >= next_action {
            h.act().await;
            next_action = Instant::now() + Duration::from_millis(h.rng.random_range(500..=2000));
        }
    }

    // Settle: no more churn; every node down is started again.
    println!(
        "# churn stopped after {:.0} s; settling",
        t0.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + h.opts.settle;
    while h.slots.iter().any(|s| s.live.is_none()) && Instant::now() < deadline {
        h.restarts(Instant::now() + Duration::from_secs(3600)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let converged = h.wait_converged(left).await;
    let s = h.sample(t0.elapsed()).await;
    h.print(&s);
    match &converged {
        Ok(()) => println!(
            "# converged: every one of the {n} nodes sees every node's current incarnation alive"
        ),
        Err(e) => println!("# NOT CONVERGED within {:?}: {e}", h.opts.settle),
    }
    println!(
        "# actions: {:?}; incarnations started: {}; failed starts: {}; events read: {}",
        h.actions,
        h.slots.iter().map(|s| s.incarnations).sum::<u64>(),
        h.start_failures,
        h.events.load(Ordering::Relaxed)
    );
    let leak = verdict(&samples);

    for slot in &mut h.slots {
        if let Some(live) = slot.live.take() {
            live.handle.kill().await;
        }
    }
    Ok(converged.is_ok() && !leak)
}

impl Harness {
    /// Starts node `i` (seeded with 3 others: random ones at the first start, live ones
    /// later).
    async fn start(&mut self, i: usize, first: bool) -> Result<()> {
        let n = self.slots.len();
        let candidates: Vec<usize> = (0..n)
            .filter(|&j| j != i && (first || self.slots[j].live.is_some()))
            .collect();
        let mut seeds = BTreeSet::new();
        while seeds.len() < 3.min(candidates.len()) {
            seeds.insert(candidates[self.rng.random_range(0..candidates.len())]);
        }
        let slot = &self.slots[i];
        let mut c = RuntimeConfig::lan(slot.name.clone());
        c.bind = if first || !self.opts.fresh_ports {
            slot.addr
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        c.protocol.keyring = self.keyring.clone();
        c.seeds = seeds
            .iter()
            .map(|&j| self.slots[j].addr.to_string())
            .collect();
        c.protocol.gossip_interval = self.opts.interval;
        let handle = runtime::start(c)
            .await
            .with_context(|| format!("starting {}", slot.name))?;
        let metrics = Metrics::with_const_labels(&handle, [("node", slot.name.clone())])?;
        metrics.register_in(&self.registry)?;
        let slot = &mut self.slots[i];
        slot.addr = handle.local_addr();
        slot.live = Some(Live {
            handle,
            metrics,
            subs: Vec::new(),
            keys: BTreeSet::new(),
        });
        slot.incarnations += 1;
        slot.restart_at = None;
        Ok(())
    }

    /// Starts again every node whose stop completed and whose restart time has come.
    async fn restarts(&mut self, now: Instant) {
        while let Ok(i) = self.stopped_rx.try_recv() {
            self.slots[i].stopping = false;
        }
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.live.is_none()
                && !s.stopping
                && s.restart_at.is_some_and(|t| t <= now)
                && let Err(e) = self.start(i, false).await
            {
                // The port can still be held a moment; try again shortly.
                eprintln!("start of {} failed: {e:#}", self.slots[i].name);
                self.start_failures += 1;
                self.slots[i].restart_at = Some(now + Duration::from_secs(1));
            }
        }
    }

    /// Takes node `i` down (killed, or a graceful leave) in the background; it is started
    /// again 0.5-5 s after the stop completes... counted from now, at the earliest.
    fn stop(&mut self, i: usize, kill: bool) {
        let delay = Duration::from_millis(self.rng.random_range(500..=5000));
        let slot = &mut self.slots[i];
        let Some(live) = slot.live.take() else {
            return;
        };
        let _ = live.metrics.unregister(&self.registry);
        slot.stopping = true;
        slot.restart_at = Some(Instant::now() + delay);
        let tx = self.stopped_tx.clone();
        tokio::spawn(async move {
            if kill {
                live.handle.kill().await;
            } else {
                live.handle.clone().shutdown().await;
            }
            drop(live);
            let _ = tx.send(i);
        });
    }

    /// The next step of a key rotation, on every live node; true once a rotation completed.
    async fn rotate(&mut self) -> bool {
        let Some(ring) = self.keyring.clone() else {
            return true;
        };
        let (old, new) = self.keys;
        let (next, done) = match self.rotation_step {
            0 => (Some(ring.with_key(new)), false),
            1 => (Some(ring.with_primary(new)), false),
            _ => (ring.without_key(&old), true),
        };
        let Some(next) = next else {
            return true;
        };
        for slot in &self.slots {
            if let Some(live) = &slot.live {
                let _ = live
                    .handle
                    .set_keyring(Some(next.clone()), false, false)
                    .await;
            }
        }
        self.keyring = Some(next);
        *self.actions.entry("rotate_step").or_default() += 1;
        if done {
            self.rotation_step = 0;
            self.keys = (new, [new[0].wrapping_add(1); 32]);
        } else {
            self.rotation_step += 1;
        }
        done
    }

    fn live_indices(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].live.is_some())
            .collect()
    }

    /// One random action.
    async fn act(&mut self) {
        let live = self.live_indices();
        if live.is_empty() {
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        let max_down = (self.slots.len() / 10).max(1);
        let down = self.slots.len() - live.len();
        const WEIGHTS: [(&str, u32); 12] = [
            ("kill", 3),
            ("leave", 2),
            ("set", 6),
            ("set_ttl", 3),
            ("delete", 3),
            ("subscribe", 3),
            ("unsubscribe", 3),
            ("ready", 1),
            ("weight", 1),
            ("join", 1),
            ("read", 2),
            ("values", 1),
        ];
        let total: u32 = WEIGHTS.iter().map(|w| w.1).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut action = WEIGHTS[0].0;
        for (name, w) in WEIGHTS {
            if pick < w {
                action = name;
                break;
            }
            pick -= w;
        }
        if matches!(action, "kill" | "leave") && down >= max_down {
            action = "set";
        }
        *self.actions.entry(action).or_default() += 1;
        if matches!(action, "kill" | "leave") {
            self.stop(i, action == "kill");
            return;
        }
        let events = Arc::clone(&self.events);
        let others: Vec<SocketAddr> = live
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| self.slots[j].addr)
            .collect();
        let names: Vec<String> = live.iter().map(|&j| self.slots[j].name.clone()).collect();
        let rng = &mut self.rng;
        let Some(node) = self.slots[i].live.as_mut() else {
            return;
        };
        let h = node.handle.clone();
        // Writes fail only once the node stopped (it can be superseded or lose a race with
        // nothing here); such failures are not the harness's concern.
        match action {
            "set" => {
                let key = format!("soak/k{}", rng.random_range(0..PLAIN_KEYS));
                let len = if rng.random_range(0..10) == 0 {
                    rng.random_range(2000..6000)
                } else {
                    rng.random_range(1..200)
                };
                let value = vec![b'a' + rng.random_range(0..26u8); len];
                if h.set(key.clone(), value).await.is_ok() {
                    node.keys.insert(key);
                }
            }
            "set_ttl" => {
                let key = format!("soak/ttl{}", rng.random_range(0..TTL_KEYS));
                let ttl = Duration::from_millis(rng.random_range(1000..20_000));
                let _ = h.set_with_ttl(key, "t", ttl).await;
            }
            "delete" => {
                let keys: Vec<&String> = node.keys.iter().collect();
                if !keys.is_empty() {
                    let key = keys[rng.random_range(0..keys.len())].clone();
                    let _ = h.delete(key.clone()).await;
                    node.keys.remove(&key);
                }
            }
            "subscribe" => {
                if node.subs.len() >= MAX_SUBS {
                    let j = rng.random_range(0..node.subs.len());
                    node.subs.swap_remove(j);
                }
                let filter = match rng.random_range(0..4) {
                    0 => EventFilter::all(),
                    1 => EventFilter::membership(),
                    2 => EventFilter::key_prefix("soak/k1"),
                    _ => EventFilter::all().with_current_state(),
                };
                let mut sub = h.subscribe_with(filter);
                if rng.random_range(0..5) == 0 {
                    node.subs.push(Sub::Unread(sub));
                } else {
                    node.subs.push(Sub::Read(tokio::spawn(async move {
                        while sub.recv().await.is_some() {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                    })));
                }
            }
            "unsubscribe" if !node.subs.is_empty() => {
                let j = rng.random_range(0..node.subs.len());
                node.subs.swap_remove(j);
            }
            "ready" => {
                let _ = h.mark_ready(rng.random_range(0..4) != 0).await;
            }
            "weight" => {
                let _ = h.set_weight(rng.random_range(50..200) as f64 / 100.0).await;
            }
            "join" => {
                let mut addrs = Vec::new();
                for _ in 0..2.min(others.len()) {
                    addrs.push(others[rng.random_range(0..others.len())]);
                }
                let _ = h.join(addrs).await;
            }
            "read" => {
                let name = &names[rng.random_range(0..names.len())];
                let key = format!("soak/k{}", rng.random_range(0..PLAIN_KEYS));
                let _ = h.get(name, &key).await;
                let _ = h.node_state(name).await;
                let _ = h.phi(name).await;
                let _ = h.owners(key.as_bytes(), 3);
                let _ = h.is_local_owner(key.as_bytes());
                let _ = h.stats().await;
            }
            "values" => {
                let key = format!("soak/k{}", rng.random_range(0..PLAIN_KEYS));
                let _ = h.values(&key).await;
            }
            _ => {}
        }
    }

    /// Waits until every running node sees every running node's current incarnation alive.
    async fn wait_converged(&self, within: Duration) -> Result<()> {
        let ids: Vec<_> = self
            .slots
            .iter()
            .filter_map(|s| s.live.as_ref().map(|l| l.handle.id().clone()))
            .collect();
        let deadline = Instant::now() + within;
        loop {
            let mut missing = Vec::new();
            for slot in &self.slots {
                let Some(live) = &slot.live else { continue };
                let m = live.handle.membership();
                for id in &ids {
                    let seen = m.member(&id.name);
                    if !seen.is_some_and(|s| s.id == *id && s.status == MemberStatus::Alive) {
                        missing.push(format!(
                            "{} sees {} as {:?}",
                            slot.name,
                            id.name,
                            seen.map(|s| (s.id.generation, s.status))
                        ));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let shown = missing.len().min(5);
                bail!(
                    "{} views wrong, e.g. {:?} (current generations: {:?})",
                    missing.len(),
                    &missing[..shown],
                    ids.iter()
                        .map(|i| (i.name.as_str(), i.generation))
                        .take(5)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn sample(&self, at: Duration) -> Sample {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut s = Sample {
            secs: at.as_secs_f64(),
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            ..Sample::default()
        };
        let mut first = None;
        for slot in &self.slots {
            let Some(live) = &slot.live else { continue };
            let h = &live.handle;
            first.get_or_insert(h);
            let st = h.stats().await;
            s.live += 1;
            s.conns += st.tcp_connections_open;
            s.queued += st.tcp_write_queued_bytes;
            s.lagged += st.subscriber_lagged;
            s.downs += st.core.downs;
            let m = h.membership();
            let known = m.members.len() as u64;
            s.members += known;
            s.members_max = s.members_max.max(known);
            s.gone += m
                .members
                .iter()
                .filter(|m| m.status != MemberStatus::Alive)
                .count() as u64;
        }
        for family in self.registry.gather() {
            let sum = || -> u64 {
                family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as u64)
                    .sum()
            };
            match family.name() {
                "tidings_subscribers" => s.subs = sum(),
                "tidings_subscriber_queued_events" => s.sub_queued = sum(),
                _ => {}
            }
        }
        if let Some(h) = first {
            for slot in &self.slots {
                if let Some(state) = h.node_state(&slot.name).await {
                    s.keys += state.len() as u64;
                }
            }
        }
        s
    }

    fn print(&self, s: &Sample) {
        println!(
            "t={:>5.0} rss_kib={} fds={} threads={} tasks={} | live={} conns={} queued_b={} \
             members={} members_max={} gone={} subs={} sub_queued={} lagged={} keys={} \
             downs={} | events={} actions={}",
            s.secs,
            s.rss_kib,
            s.fds,
            s.threads,
            s.tasks,
            s.live,
            s.conns,
            s.queued,
            s.members,
            s.members_max,
            s.gone,
            s.subs,
            s.sub_queued,
            s.lagged,
            s.keys,
            s.downs,
            self.events.load(Ordering::Relaxed),
            self.actions.values().sum::<u64>(),
        );
    }
}

/// Compares the second third of the samples with the last third; true on a suspected leak.
fn verdict(samples: &[Sample]) -> bool {
    let third = samples.len() / 3;
    if third < 2 {
        println!("# verdict: too few samples ({}) to compare", samples.len());
        return false;
    }
    let mid = &samples[third..2 * third];
    let last = &samples[samples.len() - third..];
    let mean = |xs: &[Sample], f: fn(&Sample) -> u64| -> f64 {
        xs.iter().map(|s| f(s) as f64).sum::<f64>() / xs.len() as f64
    };
    // Medians: connections (and with them descriptors, tasks and memory) come in bursts of
    // a few seconds (a restart's join exchanges, anti-entropy every 30 s), which move a mean
    // of 60 samples by 20 % from one third to the next without anything piling up; a leak
    // moves the middle of the distribution.
    let median = |xs: &[Sample], f: fn(&Sample) -> u64| -> f64 {
        let mut v: Vec<u64> = xs.iter().map(f).collect();
        v.sort_unstable();
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) as f64 / 2.0
        } else {
            v[m] as f64
        }
    };
    // (what, reader, relative tolerance, absolute slack): growth must pass both to count.
    type Check = (&'static str, fn(&Sample) -> u64, f64, f64);
    let checks: [Check; 6] = [
        ("rss_kib", |s| s.rss_kib, 0.10, 4096.0),
        ("fds", |s| s.fds, 0.10, 8.0),
        ("tasks", |s| s.tasks, 0.10, 16.0),
        ("conns", |s| s.conns, 0.20, 8.0),
        ("queued_b", |s| s.queued, 0.50, 256.0 * 1024.0),
        ("members", |s| s.members, 0.05, 8.0),
    ];
    let mut leak = false;
    println!(
        "# verdict: median of samples {}..{} (second third) against {}..{} (last third); \
         means in brackets",
        third,
        2 * third,
        samples.len() - third,
        samples.len()
    );
    for (what, f, rel, abs) in checks {
        let (a, b) = (median(mid, f), median(last, f));
        let grew = b - a > abs && b > a * (1.0 + rel);
        leak |= grew;
        println!(
            "#   {what:<9} {a:>10.1} -> {b:>10.1} ({:+.1} %; tolerance {:.0} % and {abs}) \
             [{:.1} -> {:.1}]{}",
            if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 },
            rel * 100.0,
            mean(mid, f),
            mean(last, f),
            if grew { "  SUSPECTED LEAK" } else { "" }
        );
    }
    println!(
        "# verdict: {}",
        if leak { "SUSPECTED LEAK" } else { "no growth" }
    );
    leak
}
