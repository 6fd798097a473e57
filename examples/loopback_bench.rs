//! Loopback benchmark of the tokio runtime: N real nodes in one process, one UDP socket (and TCP
//! listener) each on 127.0.0.1, every node seeded with 3 random others.
//!
//! ```text
//! cargo run --release --example loopback_bench -- --nodes 200
//! cargo run --release --example loopback_bench -- --nodes 10,50,100,200 --interval-ms 100
//! ```
//!
//! Phases, per N:
//! 1. cold start: all nodes start at once; time until every node sees all N live;
//! 2. idle: once every node's ring holds all N members (rings are rebuilt `ring_settle` after
//!    membership stops changing) and 2 s more, bytes and datagrams sent per node per second
//!    (payload bytes as counted by the core: UDP payloads and TCP frame payloads, without
//!    IP/UDP/TCP headers), the largest datagram, and process CPU seconds per wall second (from
//!    `/proc/self/stat`);
//! 3. one update: one node sets a key; time until every node holds it;
//! 4. a killed node: one node stops without leaving; time until every other node marks it down;
//! 5. state load, once every node's ring has dropped the killed node (so that the kill's ring
//!    rebuilds are not counted in it): every node sets 100 keys of 100 bytes; time until every
//!    node holds all N x 100 keys (a node applies a writer's entries in version order, so
//!    holding the writer's last key means holding all 100: one marker event per writer is
//!    counted, and node 0's state is checked key by key at the end), bytes sent meanwhile, and
//!    receive-buffer drops (Linux: the `drops` column of `/proc/net/udp` for this process's
//!    ports).
//!
//! Waits are on membership snapshots and event subscriptions, not on polling. Options:
//! `--nodes LIST` (default 200), `--interval-ms N` (100), `--idle-secs N` (5), `--seed N`,
//! `--ring off` (no ownership ring), `--idle-only` (stop after the idle phase, for profiling).

// Benchmarks read the clock to measure; the clippy ban is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod common;

use common::free_ports;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tidings::MemberStatus;
use tidings::runtime::{self, EventFilter, Handle, Membership, RuntimeConfig};
use tokio::task::JoinSet;
use tokio::time::Instant;

const USAGE: &str = "usage: loopback_bench [--nodes LIST] [--interval-ms N] [--idle-secs N] \
                     [--seed N] [--ring off] [--idle-only]";
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const KEYS_PER_NODE: usize = 100;
const VALUE_LEN: usize = 100;

struct Opts {
    nodes: Vec<usize>,
    interval: Duration,
    idle: Duration,
    seed: u64,
    idle_only: bool,
    ring: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        nodes: vec![200],
        interval: Duration::from_millis(100),
        idle: Duration::from_secs(5),
        seed: 1,
        idle_only: false,
        ring: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--idle-only" {
            o.idle_only = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => {
                o.nodes = v
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--nodes")?;
            }
            "--interval-ms" => o.interval = Duration::from_millis(v.parse()?),
            "--idle-secs" => o.idle = Duration::from_secs(v.parse()?),
            "--seed" => o.seed = v.parse()?,
            "--ring" => o.ring = v != "off",
            other => bail!("unknown option {other}"),
        }
    }
    if o.nodes.iter().any(|&n| n < 5) {
        bail!("--nodes must be at least 5");
    }
    Ok(o)
}

#[derive(Debug, Default)]
struct Row {
    n: usize,
    cold: Option<Duration>,
    idle_bytes_per_node_s: f64,
    idle_dgrams_per_node_s: f64,
    idle_frames_per_node_s: f64,
    idle_cpu: f64,
    max_datagram: u64,
    update: Option<Duration>,
    kill: Option<Duration>,
    load: Option<Duration>,
    load_bytes: u64,
    load_cpu: f64,
    load_drops: u64,
    total_drops: u64,
    udp_send_errors: u64,
    tcp_dropped: u64,
    lagged: u64,
}

fn main() -> Result<()> {
    let opts = parse()?;
    common::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    for &n in &opts.nodes {
        let row = rt.block_on(bench(n, &opts))?;
        print_row(&row);
        rows.push(row);
    }
    println!(
        "\n{} cores; gossip interval {:?}; idle window {:?}; every node seeded with 3 others\n",
        cores, opts.interval, opts.idle
    );
    println!(
        "| N | cold start | update everywhere | killed node down everywhere | idle KB/s per node \
         | idle datagrams/s per node | largest datagram | idle CPU cores | load: 100 keys x N \
         everywhere | load MB sent | load CPU cores | rx drops (load / total) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} B | {:.3} | {} | {:.1} | {:.2} | {} / {} |",
            r.n,
            fmt(r.cold),
            fmt(r.update),
            fmt(r.kill),
            r.idle_bytes_per_node_s / 1000.0,
            r.idle_dgrams_per_node_s,
            r.max_datagram,
            r.idle_cpu,
            fmt(r.load),
            r.load_bytes as f64 / 1e6,
            r.load_cpu,
            r.load_drops,
            r.total_drops,
        );
    }
    Ok(())
}

fn fmt(d: Option<Duration>) -> String {
    match d {
        Some(d) if d < Duration::from_secs(10) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
        None => "timeout".into(),
    }
}

fn print_row(r: &Row) {
    eprintln!("{r:#?}");
}

async fn bench(n: usize, opts: &Opts) -> Result<Row> {
    let mut row = Row {
        n,
        ..Row::default()
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
    let ports = free_ports(20_000, n)?;
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let drops0 = udp_drops(&ports);

    // 1. Cold start.
    let t0 = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = RuntimeConfig::lan(format!("n{i:03}"));
        c.bind = addrs[i];
        c.rng_seed = Some(opts.seed.wrapping_mul(1000).wrapping_add(i as u64));
        let mut seeds = BTreeSet::new();
        while seeds.len() < 3 {
            let j = rng.random_range(0..n);
            if j != i {
                seeds.insert(j);
            }
        }
        c.seeds = seeds.iter().map(|&j| addrs[j].to_string()).collect();
        c.protocol.gossip_interval = opts.interval;
        if !opts.ring {
            c.protocol.ring = None;
        }
        nodes.push(runtime::start(c).await?);
    }
    eprintln!("N={n}: all started after {:?}", t0.elapsed());
    row.cold = wait_all(&nodes, move |m| m.num_live() == n)
        .await
        .map(|_| t0.elapsed());
    eprintln!("N={n}: cold start {:?}", row.cold);
    // Each phase starts from a settled cluster: rings are rebuilt `ring_settle` (plus a per-node
    // jitter) after membership stops changing, a few milliseconds of CPU per node, which must
    // not land in the next phase's measurement.
    if opts.ring {
        let settled = wait_all(&nodes, move |m| m.ring.num_members() == n).await;
        eprintln!(
            "N={n}: every ring holds all {n} members after {:?}",
            settled.map(|_| t0.elapsed())
        );
    }

    // 2. Idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s0, c0, w0) = (sum_stats(&nodes).await, cpu_seconds()?, Instant::now());
    tokio::time::sleep(opts.idle).await;
    let (s1, c1, w1) = (sum_stats(&nodes).await, cpu_seconds()?, Instant::now());
    let wall = (w1 - w0).as_secs_f64();
    let per = |a: u64, b: u64| (b - a) as f64 / wall / n as f64;
    row.idle_bytes_per_node_s = per(s0.bytes, s1.bytes);
    row.idle_dgrams_per_node_s = per(s0.datagrams, s1.datagrams);
    row.idle_frames_per_node_s = per(s0.frames, s1.frames);
    row.idle_cpu = (c1 - c0) / wall;
    eprintln!(
        "N={n}: idle {:.0} B/s/node, {:.1} dgrams/s/node, {:.2} frames/s/node, {:.3} CPU, \
         {:.1} rounds/s/node, {} pauses, {} late timers, {} downs",
        row.idle_bytes_per_node_s,
        row.idle_dgrams_per_node_s,
        row.idle_frames_per_node_s,
        row.idle_cpu,
        per(s0.rounds, s1.rounds),
        s1.pauses - s0.pauses,
        s1.late_timers - s0.late_timers,
        s1.downs - s0.downs,
    );

    if opts.idle_only {
        return Ok(row);
    }

    // 3. One update.
    let mut subs: Vec<_> = nodes
        .iter()
        .map(|h| h.subscribe_with(EventFilter::key_prefix("bench/update")))
        .collect();
    let t = Instant::now();
    nodes[0].set("bench/update", "1").await?;
    let mut set = JoinSet::new();
    for mut s in subs.drain(..) {
        set.spawn(async move {
            while let Some(e) = s.recv().await {
                if e.is_ok() {
                    return Instant::now();
                }
            }
            Instant::now() + PHASE_TIMEOUT
        });
    }
    row.update = join_max(set, t).await;
    eprintln!("N={n}: one update everywhere {:?}", row.update);

    // 4. A killed node.
    let victim = nodes.pop().context("no nodes")?;
    let name = victim.id().name.clone();
    let k0 = sum_stats(&nodes).await;
    let t = Instant::now();
    victim.kill().await;
    let down = name.clone();
    row.kill = wait_all(&nodes, move |m| m.status(&down) == Some(MemberStatus::Down))
        .await
        .map(|_| t.elapsed());
    let k1 = sum_stats(&nodes).await;
    eprintln!(
        "N={n}: killed node down everywhere {:?} ({:.1} rounds/s/node meanwhile, {} pauses, {} downs; \
         local health raised at {} nodes before, {} after, highest {})",
        row.kill,
        (k1.rounds - k0.rounds) as f64 / t.elapsed().as_secs_f64() / nodes.len() as f64,
        k1.pauses - k0.pauses,
        k1.downs - k0.downs,
        k0.unhealthy,
        k1.unhealthy,
        k1.max_health,
    );

    if opts.ring {
        let down = name.clone();
        let settled = wait_all(&nodes, move |m| !m.ring.contains(&down)).await;
        eprintln!(
            "N={n}: every ring without the killed node after {:?}",
            settled.map(|_| t.elapsed())
        );
    }

    // 5. State load: the surviving n-1 nodes each set 100 keys.
    let writers = nodes.len();
    // A node applies each writer's entries in version order, so once it holds a writer's
    // last key (its highest version) it holds all 100: count one marker event per writer.
    let want = writers;
    let last_key = format!("load/{:03}", KEYS_PER_NODE - 1);
    let mut subs: Vec<_> = nodes
        .iter()
        .map(|h| h.subscribe_with(EventFilter::key_prefix(last_key.clone())))
        .collect();
    let s0 = sum_stats(&nodes).await;
    let c0 = cpu_seconds()?;
    let d0 = udp_drops(&ports);
    let t = Instant::now();
    let value = vec![b'v'; VALUE_LEN];
    let mut writes = JoinSet::new();
    for h in &nodes {
        let (h, value) = (h.clone(), value.clone());
        writes.spawn(async move {
            for k in 0..KEYS_PER_NODE {
                let _ = h.set(format!("load/{k:03}"), value.clone()).await;
            }
        });
    }
    let mut set = JoinSet::new();
    let progress: Arc<Vec<AtomicUsize>> =
        Arc::new((0..writers).map(|_| AtomicUsize::new(0)).collect());
    for (i, mut s) in subs.drain(..).enumerate() {
        let progress = Arc::clone(&progress);
        set.spawn(async move {
            let mut seen = 0;
            while let Some(e) = s.recv().await {
                match e {
                    Ok(_) => seen += 1,
                    Err(lag) => seen += lag.0 as usize,
                }
                progress[i].store(seen, Ordering::Relaxed);
                if seen >= want {
                    return Instant::now();
                }
            }
            Instant::now() + PHASE_TIMEOUT
        });
    }
    row.load = join_max(set, t).await;
    if row.load.is_none() {
        let mut behind: Vec<(usize, usize)> = progress
            .iter()
            .enumerate()
            .map(|(i, p)| (p.load(Ordering::Relaxed), i))
            .filter(|(p, _)| *p < want)
            .map(|(p, i)| (i, p))
            .collect();
        behind.sort_by_key(|x| x.1);
        eprintln!(
            "N={n}: {} nodes behind; the 5 furthest (node, events seen of {want}): {:?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        );
        if let Some(&(worst, _)) = behind.first() {
            let mut counts = Vec::new();
            for h in &nodes {
                let st = nodes[worst].node_state(&h.id().name).await;
                counts.push(st.map_or(0, |s| s.len()));
            }
            let short: Vec<(usize, usize)> = counts
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, c)| *c < KEYS_PER_NODE)
                .collect();
            eprintln!("N={n}: node {worst} holds fewer than 100 keys of (writer, keys): {short:?}");
            eprintln!(
                "N={n}: node {worst} stats: {:?}",
                nodes[worst].stats().await
            );
        }
    }
    while writes.join_next().await.is_some() {}
    let wall = t.elapsed().as_secs_f64();
    let s1 = sum_stats(&nodes).await;
    row.load_bytes = s1.bytes - s0.bytes;
    row.load_cpu = (cpu_seconds()? - c0) / wall;
    row.load_drops = udp_drops(&ports).saturating_sub(d0);
    row.total_drops = udp_drops(&ports).saturating_sub(drops0);
    row.max_datagram = s1.max_datagram;
    row.udp_send_errors = s1.udp_send_errors;
    row.tcp_dropped = s1.tcp_dropped;
    row.lagged = s1.lagged;
    eprintln!(
        "N={n}: load {:?}, {} bytes ({} in datagrams, {} in {} frames over {} stream syncs, \
         {} connections, {} refused, {} errors, {} frames dropped), {:.2} CPU, drops {}, \
         {:.1} rounds/s/node, {} pauses, {} late timers, {} downs",
        row.load,
        row.load_bytes,
        s1.datagram_bytes - s0.datagram_bytes,
        s1.frame_bytes - s0.frame_bytes,
        s1.frames - s0.frames,
        s1.stream_syncs - s0.stream_syncs,
        s1.tcp_out - s0.tcp_out,
        s1.tcp_refused - s0.tcp_refused,
        s1.tcp_errors - s0.tcp_errors,
        s1.tcp_dropped - s0.tcp_dropped,
        row.load_cpu,
        row.load_drops,
        (s1.rounds - s0.rounds) as f64 / wall / writers as f64,
        s1.pauses - s0.pauses,
        s1.late_timers - s0.late_timers,
        s1.downs - s0.downs,
    );
    if row.load.is_none() {
        // Diagnostics: what the first node holds of each writer.
        let mut counts = Vec::new();
        for h in &nodes {
            let st = nodes[0].node_state(&h.id().name).await;
            counts.push(st.map_or(0, |s| s.len()));
        }
        let short = counts.iter().filter(|c| **c < KEYS_PER_NODE).count();
        eprintln!("N={n}: load timed out; n000 holds fewer than 100 keys of {short} writers");
    }
    // Spot check: the first node holds every writer's 100 keys.
    if row.load.is_some() {
        for h in &nodes {
            let st = nodes[0].node_state(&h.id().name).await.context("state")?;
            if st.len() < KEYS_PER_NODE {
                bail!(
                    "{} holds {} keys of {}",
                    h.id().name,
                    st.len(),
                    KEYS_PER_NODE
                );
            }
        }
    }

    let mut stops = JoinSet::new();
    for h in nodes {
        stops.spawn(async move { h.kill().await });
    }
    while stops.join_next().await.is_some() {}
    Ok(row)
}

/// Waits until every node's membership satisfies `pred`; the time the last one did, or `None`
/// after `PHASE_TIMEOUT`.
async fn wait_all(
    nodes: &[Handle],
    pred: impl Fn(&Arc<Membership>) -> bool + Clone + Send + Sync + 'static,
) -> Option<()> {
    let mut set = JoinSet::new();
    for h in nodes {
        let mut rx = h.watch_membership();
        let pred = pred.clone();
        set.spawn(async move { rx.wait_for(|m| pred(m)).await.is_ok() });
    }
    let all = async {
        let mut ok = true;
        while let Some(r) = set.join_next().await {
            ok &= r.unwrap_or(false);
        }
        ok
    };
    match tokio::time::timeout(PHASE_TIMEOUT, all).await {
        Ok(true) => Some(()),
        _ => None,
    }
}

/// The latest instant the tasks report, relative to `t`, or `None` past `PHASE_TIMEOUT`.
async fn join_max(mut set: JoinSet<Instant>, t: Instant) -> Option<Duration> {
    let all = async {
        let mut last = t;
        while let Some(r) = set.join_next().await {
            last = last.max(r.unwrap_or(t + PHASE_TIMEOUT));
        }
        last
    };
    match tokio::time::timeout(PHASE_TIMEOUT, all).await {
        Ok(last) if last - t < PHASE_TIMEOUT => Some(last - t),
        _ => None,
    }
}

#[derive(Default)]
struct Sum {
    bytes: u64,
    datagram_bytes: u64,
    frame_bytes: u64,
    tcp_refused: u64,
    tcp_out: u64,
    tcp_errors: u64,
    stream_syncs: u64,
    rounds: u64,
    pauses: u64,
    /// Timers handled late: a node's task waited to run.
    late_timers: u64,
    downs: u64,
    datagrams: u64,
    frames: u64,
    max_datagram: u64,
    udp_send_errors: u64,
    tcp_dropped: u64,
    lagged: u64,
    /// Nodes whose local health multiplier was raised (they wait longer before convicting).
    unhealthy: u64,
    max_health: u64,
}

async fn sum_stats(nodes: &[Handle]) -> Sum {
    let mut s = Sum::default();
    for h in nodes {
        let st = h.stats().await;
        s.bytes += st.core.tx_datagram_bytes + st.core.tx_frame_bytes;
        s.datagram_bytes += st.core.tx_datagram_bytes;
        s.frame_bytes += st.core.tx_frame_bytes;
        s.tcp_refused += st.tcp_connections_refused;
        s.tcp_out += st.tcp_connections_out;
        s.tcp_errors += st.tcp_errors + st.tcp_connect_failures;
        s.stream_syncs += st.core.stream_syncs;
        s.rounds += st.core.gossip_rounds;
        s.pauses += st.core.pauses_detected;
        s.late_timers += st.late_timers;
        s.downs += st.core.downs;
        s.datagrams += st.core.tx_datagrams;
        s.frames += st.core.tx_frames;
        s.max_datagram = s.max_datagram.max(st.core.max_datagram);
        s.udp_send_errors += st.udp_send_errors;
        s.tcp_dropped += st.tcp_frames_dropped;
        s.lagged += st.subscriber_lagged;
        s.unhealthy += u64::from(st.core.local_health > 0);
        s.max_health = s.max_health.max(st.core.local_health);
    }
    s
}

/// Process CPU time (user + system) in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name in parentheses; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    100.0
}

/// Sum of the `drops` column of `/proc/net/udp` over sockets bound to `ports`: datagrams the
/// kernel dropped because a socket's receive buffer was full.
fn udp_drops(ports: &[u16]) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}
