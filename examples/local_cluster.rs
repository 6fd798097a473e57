//! A tidings cluster of 8 nodes in one process, on 127.0.0.1: the README demo.
//!
//! ```text
//! cargo run --release --example local_cluster
//! ```
//!
//! It starts the nodes (each joins through the first), sets state on each, shows membership,
//! state and ownership converging, kills one node and shows every other node detect it and
//! its keys move, has another leave gracefully (its keys move too; the other keys shown
//! stay), prints the final view and exits 0, all in a few seconds. The gossip
//! interval is 100 ms so it is quick; `RUST_LOG=tidings=info` shows the runtime's logs.

// Examples measure elapsed time for the reader; the clippy ban is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tidings::runtime::{self, EventFilter, Handle, Membership, RuntimeConfig};
use tidings::{Event, MemberStatus};
use tokio::time::Instant;

const NODES: usize = 8;
const INTERVAL: Duration = Duration::from_millis(100);
const STEP_TIMEOUT: Duration = Duration::from_secs(8);

#[tokio::main]
async fn main() -> Result<()> {
    common::init_tracing();
    match tokio::time::timeout(Duration::from_secs(28), demo()).await {
        Ok(r) => r,
        Err(_) => bail!("the demo did not finish within 28 s"),
    }
}

async fn demo() -> Result<()> {
    let t0 = Instant::now();
    println!("== Starting {NODES} nodes on 127.0.0.1 (gossip every {INTERVAL:?}) ==\n");
    let mut nodes: Vec<Handle> = Vec::new();
    for i in 0..NODES {
        let mut c = RuntimeConfig::lan(format!("node-{i}"));
        c.bind = "127.0.0.1:0".parse()?;
        if let Some(first) = nodes.first() {
            c.seeds = vec![first.id().addr.to_string()];
        }
        c.protocol.gossip_interval = INTERVAL;
        c.protocol.leave_timeout = Duration::from_secs(2);
        // Owners change once membership has been stable this long.
        c.protocol.ring_settle = Duration::from_millis(300);
        let h = runtime::start(c).await.context("starting a node")?;
        println!(
            "  started {:<7} at {:<16} seeds: {}",
            h.id().name,
            h.id().addr,
            if i == 0 {
                "none (first node)".to_string()
            } else {
                nodes[0].id().addr.to_string()
            }
        );
        nodes.push(h);
    }

    // Membership converging (timed from the first start).
    for h in &nodes {
        wait(h, |m| m.num_live() == NODES).await?;
    }
    println!(
        "\n== Membership converged: every node sees {NODES} live, {:?} after the first start ==\n",
        t0.elapsed()
    );
    print_views(&nodes, &[]);

    // State converging.
    let mut subs: Vec<_> = nodes
        .iter()
        .map(|h| h.subscribe_with(EventFilter::key_prefix("demo/")))
        .collect();
    let t = Instant::now();
    for (i, h) in nodes.iter().enumerate() {
        h.set("demo/role", if i % 2 == 0 { "frontend" } else { "worker" })
            .await?;
        h.set("demo/http", format!("127.0.0.1:{}", 8000 + i))
            .await?;
    }
    let want = NODES * 2;
    for sub in &mut subs {
        let mut seen = 0;
        while seen < want {
            match tokio::time::timeout(STEP_TIMEOUT, sub.recv()).await {
                Ok(Some(Ok(Event::KeyUpserted { .. }))) => seen += 1,
                Ok(Some(_)) => {}
                _ => bail!("state did not converge"),
            }
        }
    }
    println!(
        "\n== State converged: every node holds all {want} keys after {:?} ==\n",
        t.elapsed()
    );
    println!("  as seen from node-0:");
    println!("  {:<8} {:<10} {:<16}", "node", "demo/role", "demo/http");
    for other in &nodes {
        let name = &other.id().name;
        let role = nodes[0].get(name, "demo/role").await.unwrap_or_default();
        let http = nodes[0].get(name, "demo/http").await.unwrap_or_default();
        println!(
            "  {:<8} {:<10} {:<16}",
            name,
            String::from_utf8_lossy(&role),
            String::from_utf8_lossy(&http)
        );
    }

    // Ownership converging: every node computes the same ring from the same membership.
    for h in &nodes {
        wait(h, |m| m.ring.num_members() == NODES).await?;
    }
    let keys = demo_keys(&nodes[0].membership());
    let owners = print_ownership(&nodes, &[], &keys, None);

    // A crash.
    let victim = nodes[5].clone();
    let mut watch = nodes[0].subscribe_with(EventFilter::membership());
    println!("\n== Killing node-5 (no goodbye: its sockets just close) ==");
    let t = Instant::now();
    victim.kill().await;
    let mut when: BTreeMap<String, Duration> = BTreeMap::new();
    for h in nodes.iter().filter(|h| h.id().name != "node-5") {
        wait(h, |m| m.status("node-5") == Some(MemberStatus::Down)).await?;
        when.insert(h.id().name.clone(), t.elapsed());
    }
    let first = first_event_about(&mut watch, "node-5").await;
    println!(
        "   every live node marked node-5 down within {:?} (node-0 saw: {first})\n",
        when.values().max().copied().unwrap_or_default()
    );
    print_views(&nodes, &["node-5"]);
    // Ownership follows once membership has held still for `ring_settle`.
    let t = Instant::now();
    for h in nodes.iter().filter(|h| h.id().name != "node-5") {
        wait(h, |m| m.ring.num_members() == NODES - 1).await?;
    }
    println!(
        "\n   every live node rebuilt its ring without node-5 {:?} later",
        t.elapsed()
    );
    let owners = print_ownership(&nodes, &["node-5"], &keys, Some(&owners));

    // A graceful leave.
    println!("\n== node-6 leaves gracefully ==");
    let t = Instant::now();
    let outcome = nodes[6].leave().await?;
    println!(
        "   leave confirmed by {} peers in {:?}",
        outcome.confirmed,
        t.elapsed()
    );
    for h in nodes
        .iter()
        .filter(|h| !["node-5", "node-6"].contains(&h.id().name.as_str()))
    {
        wait(h, |m| m.status("node-6") == Some(MemberStatus::Left)).await?;
    }
    let first = first_event_about(&mut watch, "node-6").await;
    println!(
        "   every live node sees node-6 as left after {:?} (node-0 saw: {first})\n",
        t.elapsed()
    );
    print_views(&nodes, &["node-5", "node-6"]);
    for h in nodes.iter().filter(|h| h.is_running()) {
        wait(h, |m| m.ring.num_members() == NODES - 2).await?;
    }
    print_ownership(&nodes, &["node-5", "node-6"], &keys, Some(&owners));

    println!("\n== Final view from node-0 ==\n");
    println!(
        "  {:<8} {:<8} {:<6} {:<16} generation",
        "node", "status", "ready", "address"
    );
    for m in &nodes[0].membership().members {
        println!(
            "  {:<8} {:<8} {:<6} {:<16} {}",
            m.id.name,
            format!("{:?}", m.status).to_lowercase(),
            // Readiness is a live member's; a down or left one serves nothing.
            if m.status == MemberStatus::Alive {
                m.ready.to_string()
            } else {
                "-".to_string()
            },
            m.id.addr,
            m.id.generation.0
        );
    }
    let s = nodes[0].stats().await;
    println!(
        "\n  node-0 sent {} datagrams ({} bytes, largest {} bytes) and {} TCP frames",
        s.core.tx_datagrams, s.core.tx_datagram_bytes, s.core.max_datagram, s.core.tx_frames
    );

    for h in nodes {
        if h.is_running() {
            h.shutdown().await;
        }
    }
    println!("\nDone in {:?}.", t0.elapsed());
    Ok(())
}

/// Waits until `h`'s membership satisfies `pred`.
async fn wait(h: &Handle, pred: impl FnMut(&std::sync::Arc<Membership>) -> bool) -> Result<()> {
    let mut rx = h.watch_membership();
    match tokio::time::timeout(STEP_TIMEOUT, rx.wait_for(pred)).await {
        Ok(Ok(_)) => Ok(()),
        _ => bail!(
            "{}: membership did not converge in {STEP_TIMEOUT:?}",
            h.id().name
        ),
    }
}

/// The first membership event about `name` in the subscription, as a word.
async fn first_event_about(sub: &mut runtime::Subscription, name: &str) -> String {
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), sub.recv()).await {
        if let Ok(e) = e
            && e.node().is_some_and(|n| n.name == name)
        {
            return format!("{e:?}")
                .split('(')
                .next()
                .unwrap_or("?")
                .to_lowercase();
        }
    }
    "nothing".into()
}

/// Keys to follow through the demo: two owned by node-5 (it will crash), two by node-6 (it
/// will leave) and two by others, so both changes show keys moving, and only those moving.
fn demo_keys(m: &Membership) -> Vec<String> {
    let mut picked: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in 0..10_000 {
        let key = format!("user/{i}");
        let Some(owner) = m.owner(key.as_bytes()) else {
            continue;
        };
        let group = match owner {
            "node-5" | "node-6" => owner,
            _ => "other",
        };
        let keys = picked.entry(group).or_default();
        if keys.len() < 2 {
            keys.push(key);
        }
    }
    picked.into_values().flatten().collect()
}

/// Owners of `keys` as each running node computes them, with the owner each had `before`, and
/// the ring fingerprints. Returns the owners.
fn print_ownership(
    nodes: &[Handle],
    gone: &[&str],
    keys: &[String],
    before: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let live: Vec<&Handle> = nodes
        .iter()
        .filter(|h| !gone.contains(&h.id().name.as_str()))
        .collect();
    let fingerprints: BTreeSet<String> = live
        .iter()
        .map(|h| h.membership().ring.fingerprint().to_string())
        .collect();
    let m = live[0].membership();
    println!(
        "\n== Ownership: {} members on the ring; {} distinct fingerprint(s) among {} nodes ==\n",
        m.ring.num_members(),
        fingerprints.len(),
        live.len()
    );
    println!(
        "  {:<10} {:<8} {:<8} {:<15} all nodes agree",
        "key", "owner", "replica", "before"
    );
    let mut now = BTreeMap::new();
    for key in keys {
        let owners: Vec<&str> = m.owners(key, 2).collect();
        let owner = owners.first().copied().unwrap_or("-");
        let agree = live
            .iter()
            .all(|h| h.owner(key).as_deref() == owners.first().copied());
        let was = match before.and_then(|b| b.get(key)) {
            Some(w) if w == owner => "same".to_string(),
            Some(w) => format!("{w} (moved)"),
            None => String::new(),
        };
        println!(
            "  {:<10} {:<8} {:<8} {:<15} {}",
            key,
            owner,
            owners.get(1).unwrap_or(&"-"),
            was,
            if agree { "yes" } else { "NO" }
        );
        now.insert(key.clone(), owner.to_string());
    }
    now
}

/// One row per running node: how many members it sees in each status.
fn print_views(nodes: &[Handle], gone: &[&str]) {
    println!(
        "  {:<8} {:>5} {:>5} {:>5}   view",
        "observer", "alive", "down", "left"
    );
    for h in nodes
        .iter()
        .filter(|h| !gone.contains(&h.id().name.as_str()))
    {
        let m = h.membership();
        let count = |s: MemberStatus| m.members.iter().filter(|x| x.status == s).count();
        let view: String = m
            .members
            .iter()
            .map(|x| match x.status {
                MemberStatus::Alive => '+',
                MemberStatus::Down => 'x',
                MemberStatus::Left => '-',
            })
            .collect();
        println!(
            "  {:<8} {:>5} {:>5} {:>5}   {view}",
            h.id().name,
            count(MemberStatus::Alive),
            count(MemberStatus::Down),
            count(MemberStatus::Left)
        );
    }
    println!("  (view: one mark per member node-0..node-7: + alive, x down, - left)");
}
