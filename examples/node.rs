//! One tidings node per process, for forming a cluster across terminals or hosts.
//!
//! ```text
//! cargo run --example node -- --name a --bind 127.0.0.1:7946
//! cargo run --example node -- --name b --bind 127.0.0.1:7947 --seed 127.0.0.1:7946 --set k=v
//! cargo run --example node -- --name c --bind 0.0.0.0:7946 --advertise 10.0.0.3:7946 \
//!     --dns gossip.default.svc.cluster.local:7946
//! ```
//!
//! Options:
//! - `--name NAME` (required): member name.
//! - `--bind ADDR`: UDP and TCP bind address. Default `127.0.0.1:7946`.
//! - `--advertise ADDR`: address peers use, if different from the bind address.
//! - `--seed HOST:PORT`: a seed (repeatable; names are resolved with DNS).
//! - `--dns NAME:PORT`: a DNS name listing the peers, re-resolved every 30 s.
//! - `--dns-server IP:PORT`: name server to use instead of the system's (repeatable).
//! - `--cluster-id ID`: cluster name; nodes of other clusters are ignored. Default `tidings`.
//! - `--set KEY=VALUE`: a key to set at start (repeatable).
//! - `--interval-ms N`: gossip interval in milliseconds. Default 200.
//!
//! # Output: one JSON object per line on stdout (a stable interface)
//!
//! Scripts parse these lines; fields are only ever added, never renamed or removed. Logs go to
//! stderr (`RUST_LOG=tidings=info` for more).
//!
//! | `event` | other fields |
//! | --- | --- |
//! | `started` | `node`, `addr` (advertised), `generation` — always the first line |
//! | `joined`, `up`, `down`, `left`, `expired` | `node`, `addr`, `generation` |
//! | `key_upserted` | `node`, `key`, `value` (UTF-8, invalid bytes replaced by U+FFFD) |
//! | `key_deleted` | `node`, `key` |
//! | `ready_changed` | `node`, `ready` (bool) |
//! | `ownership` | `fingerprint` (hex; equal on nodes with equal rings), `members` (on the ring), `acquired_from`, `relinquished_to` (member names; `-` for none) |
//! | `leave_completed` | `confirmed` (peers that confirmed our leave) |
//! | `lagged` | `missed` (events this printer missed because it fell behind) |
//! | `stopped` | `node` — always the last line |
//!
//! `node` is a member name; events about this node itself appear too (`key_upserted` for its
//! own `--set` keys, `left` when it starts leaving). On SIGTERM or Ctrl-C the node leaves
//! gracefully, prints `leave_completed` and `stopped`, and exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tidings::Event;
use tidings::runtime::{self, RuntimeConfig};

struct Args {
    config: RuntimeConfig,
    sets: Vec<(String, String)>,
}

fn parse_args() -> Result<Args> {
    let mut name = None;
    let mut bind: SocketAddr = "127.0.0.1:7946".parse()?;
    let mut advertise = None;
    let mut seeds = Vec::new();
    let mut dns = None;
    let mut dns_servers: Vec<SocketAddr> = Vec::new();
    let mut cluster_id = None;
    let mut sets = Vec::new();
    let mut interval_ms: u64 = 200;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            eprintln!(
                "usage: node --name NAME [--bind ADDR] [--advertise ADDR] [--seed HOST:PORT]... \
                 [--dns NAME:PORT] [--dns-server IP:PORT]... [--cluster-id ID] \
                 [--set KEY=VALUE]... [--interval-ms N]"
            );
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--name" => name = Some(value),
            "--bind" => bind = value.parse().context("--bind")?,
            "--advertise" => advertise = Some(value.parse().context("--advertise")?),
            "--seed" => seeds.push(value),
            "--dns" => dns = Some(value),
            "--dns-server" => dns_servers.push(value.parse().context("--dns-server")?),
            "--cluster-id" => cluster_id = Some(value),
            "--set" => {
                let (k, v) = value.split_once('=').context("--set takes KEY=VALUE")?;
                sets.push((k.to_owned(), v.to_owned()));
            }
            "--interval-ms" => interval_ms = value.parse().context("--interval-ms")?,
            other => bail!("unknown option {other}"),
        }
    }
    let Some(name) = name else {
        bail!("--name is required");
    };
    if interval_ms == 0 {
        bail!("--interval-ms must be positive");
    }
    let mut config = RuntimeConfig::lan(name);
    config.bind = bind;
    config.advertise = advertise;
    config.seeds = seeds;
    config.dns = dns;
    if !dns_servers.is_empty() {
        config.dns_servers = Some(dns_servers);
    }
    if let Some(id) = cluster_id {
        config.protocol.cluster_id = id;
    }
    let interval = Duration::from_millis(interval_ms);
    config.protocol.gossip_interval = interval;
    config.protocol.detector_min_std = interval;
    Ok(Args { config, sets })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let handle = runtime::start(args.config).await?;
    let id = handle.id().clone();
    let mut events = handle.subscribe();
    emit(json!({
        "event": "started",
        "node": id.name,
        "addr": id.addr.to_string(),
        "generation": id.generation.0,
    }));
    for (k, v) in args.sets {
        handle.set(k, v).await?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let leaving = handle.clone();
    let mut leave = Box::pin(async move {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(anyhow::Error::from),
            _ = term.recv() => Ok(()),
        }?;
        leaving.leave().await.map_err(anyhow::Error::from)
    });
    let mut left = false;
    loop {
        tokio::select! {
            r = &mut leave, if !left => {
                r?;
                left = true;
            }
            e = events.recv() => match e {
                Some(Ok(e)) => print_event(&e),
                Some(Err(lag)) => emit(json!({"event": "lagged", "missed": lag.0})),
                // The node stopped and every event was printed.
                None => break,
            },
        }
    }
    emit(json!({"event": "stopped", "node": id.name}));
    if !left {
        bail!("the node stopped without leaving");
    }
    Ok(())
}

fn print_event(e: &Event) {
    let member = |kind: &str, n: &tidings::NodeId| {
        json!({
            "event": kind,
            "node": n.name,
            "addr": n.addr.to_string(),
            "generation": n.generation.0,
        })
    };
    let line = match e {
        Event::Joined(n) => member("joined", n),
        Event::Up(n) => member("up", n),
        Event::Down(n) => member("down", n),
        Event::Left(n) => member("left", n),
        Event::Expired(n) => member("expired", n),
        Event::KeyUpserted { node, key, value } => json!({
            "event": "key_upserted",
            "node": node.name,
            "key": key,
            "value": String::from_utf8_lossy(value),
        }),
        Event::KeyDeleted { node, key } => json!({
            "event": "key_deleted",
            "node": node.name,
            "key": key,
        }),
        Event::ReadyChanged { node, ready } => json!({
            "event": "ready_changed",
            "node": node.name,
            "ready": ready,
        }),
        Event::LeaveCompleted { confirmed } => json!({
            "event": "leave_completed",
            "confirmed": confirmed,
        }),
        Event::Ownership(change) => {
            let peers = |ts: &[tidings::ring::Transfer]| -> Vec<String> {
                ts.iter()
                    .map(|t| t.peer.clone().unwrap_or_else(|| "-".into()))
                    .collect()
            };
            json!({
                "event": "ownership",
                "fingerprint": change.fingerprint.to_string(),
                "members": change.members,
                "acquired_from": peers(&change.handoff.acquired),
                "relinquished_to": peers(&change.handoff.relinquished),
            })
        }
        other => json!({"event": "other", "debug": format!("{other:?}")}),
    };
    emit(line);
}

/// Prints one JSON line. stdout is line-buffered, so every line reaches a pipe at once.
fn emit(v: serde_json::Value) {
    println!("{v}");
}
