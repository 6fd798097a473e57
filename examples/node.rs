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
//! - `--dns NAME:PORT`: a DNS name listing the peers, re-resolved every 30 s (60 s with
//!   `--wan`: `RuntimeConfig::dns_refresh`).
//! - `--dns-server IP:PORT`: name server to use instead of the system's (repeatable).
//! - `--cluster-id ID`: cluster name; nodes of other clusters are ignored. Default `tidings`.
//! - `--set KEY=VALUE`: a key to set at start (repeatable).
//! - `--interval-ms N`: gossip interval in milliseconds. Default 200 (`Config::lan`), or 1000
//!   with `--wan`.
//! - `--wan`: the settings for links across regions (`RuntimeConfig::wan`: 1-s gossip,
//!   detection in about 10 s, graces five times longer, a graceful leave of up to 10 s, a 5-s
//!   ring settle, longer TCP timeouts) instead of the LAN ones. Every node of a cluster should
//!   have the same.
//! - `--metrics-addr IP:PORT`: serve HTTP there (port 0: any free port; the `metrics` line tells
//!   which): `GET /metrics` (Prometheus text format; see `tidings::metrics` for the list; needs
//!   the `prometheus` feature, on by default), `GET /ready` (200 while this node is alive and
//!   marked ready, else 503: a Kubernetes readiness probe), `GET /live` (200 while the node
//!   runs: a liveness probe), `GET /members` (JSON: this node's view of the cluster, each
//!   member's `name`, `addr`, `generation`, `status` and `ready`, with the ring's
//!   `fingerprint` and `epoch`), `GET /members/NAME` (one member, with its `phi` and its
//!   `keys`, and with `--http-values` their `values`; 404 for a name not known), `GET
//!   /owners/KEY` (the members owning `KEY`, primary first, up to three, and the ring's
//!   `fingerprint`; `[]` before this node's first ring). At most 64 connections are served
//!   at once; one more closes the oldest.
//! - `--http-values`: `GET /members/NAME` gives values too. Off by default: anyone who
//!   reaches the HTTP port would read every member's state, which a keyring keeps off the
//!   network.
//! - `--not-ready`: start not ready (peers see `ready` false; `/ready` answers 503) until
//!   `ready true` on stdin.
//! - `--ready-after-ms N`: start not ready, and mark this node ready N ms after start.
//! - `--ring-ready-only`: only members marked ready own keys (`Config::ring_ready_only`), so a
//!   node takes keys only once it can serve them. Every node of a cluster should have the same,
//!   or their rings differ.
//! - `--ring-min-members N`: with fewer than N members on the ring, the ring is empty and no
//!   member owns any key (`Config::ring_min_members`), so a node cut off from the others does
//!   not take every key. A majority of the expected cluster size keeps keys on one side of a
//!   split at most. Every node of a cluster should have the same. Default 1 (no minimum).
//! - `--max-frame-size BYTES`: largest TCP frame sent or accepted. Default 8 MiB
//!   (`Config::max_frame_size`). Every node of a cluster should have the same: a larger frame
//!   from a peer is refused. At least one node's whole state at the limits
//!   (`Limits::frame_for_whole_state`: 5,996,148 bytes with the default limits), so a smaller
//!   frame needs smaller `--max-keys` and `--max-state-bytes` too.
//! - `--max-keys N`: most keys (live or deleted) one node's state may hold. Default 100,000
//!   (`Limits::max_keys_per_node`). The same on every node.
//! - `--max-state-bytes BYTES`: most bytes of keys and values in one node's state. Default
//!   4 MiB (`Limits::max_state_bytes_per_node`). The same on every node.
//! - `--max-connections N`: most TCP connections open at once. Default 64
//!   (`RuntimeConfig::max_connections`). With `--max-frame-size` it bounds the memory streams
//!   hold: at most about (3 x N + 4) frames of the largest size.
//! - `--max-connections-per-ip N`: most inbound TCP connections from one IP address (loopback
//!   not counted). Default 16 (`RuntimeConfig::max_connections_per_ip`).
//! - `--udp-send-buffer BYTES`: the UDP socket's send buffer (`SO_SNDBUF`; 0 keeps the system's
//!   default). Default 1 MiB (`RuntimeConfig::udp_send_buffer`), which Linux caps at
//!   `net.core.wmem_max`.
//! - `--keyring-file PATH`: seal every packet with shared keys read from this file (a
//!   Kubernetes Secret mounted as a file, say): one key per line as 64 hexadecimal digits
//!   (`openssl rand -hex 32`), the first encrypts and every key decrypts; blank lines and
//!   `#` comments are ignored. Read again every 10 s (and on the stdin command `reload`): a
//!   changed file changes the keys in use without a restart, so keys rotate by editing the
//!   file on every node in three steps (add the new key second, move it first, remove the
//!   old one), waiting between steps until every node has printed the step's `keyring` line.
//!   A file that became unreadable or invalid, or whose read takes over 1 s (a hung network
//!   filesystem), prints an `error` and the keys in use stay.
//!   Without it the node gossips in the clear (see `Config::keyring`).
//! - `--plaintext off|accept|send`: with `--keyring-file`, also accept plaintext (`accept`),
//!   or also send and accept it (`send`): the steps of turning encryption on in a running
//!   cluster by rolling restarts (every node `send`, then every node `accept`, then `off`).
//!   Default `off`.
//! - `--help`, `-h`: print the usage (every flag with its default, and the stdin commands) on
//!   stdout and exit 0.
//! - `--version`, `-V`: print `node VERSION` (the crate's version) on stdout and exit 0.
//!
//! # Input: commands on stdin, one per line
//!
//! For scripts. Each command's effect shows up as the usual events (`key_upserted`,
//! `key_deleted`, `ready_changed` and `left` about this node). The events of a `set`, `delete`
//! or `ready` are printed before the next command is carried out, so a burst of commands never
//! runs ahead of the printer. Blank lines are ignored. End of input does NOT stop the node (it
//! prints `stdin_closed` and goes on; stop it with SIGTERM).
//!
//! | command | effect |
//! | --- | --- |
//! | `set KEY=VALUE` | sets a key of this node |
//! | `delete KEY` | deletes a key of this node (an `error` if it holds no such key) |
//! | `ready true`, `ready false` | marks this node ready or not ready |
//! | `leave` | leaves gracefully, as on SIGTERM (then prints `leave_completed`, `stopped`, exits 0) |
//! | `reload` | reads `--keyring-file` again now, and prints `keyring` (changed or not) or an `error` |
//!
//! An unknown or malformed line, or a command the node refuses (for example after leaving),
//! prints an `error` line and changes nothing.
//!
//! # Output: one JSON object per line on stdout (a stable interface)
//!
//! Scripts parse these lines; fields are only ever added, never renamed or removed. Logs go to
//! stderr (`RUST_LOG=tidings=info` for more).
//!
//! | `event` | other fields |
//! | --- | --- |
//! | `started` | `node`, `addr` (advertised), `generation` — always the first line |
//! | `metrics` | `addr` (the HTTP address actually bound) — with `--metrics-addr`, right after `started` |
//! | `keyring` | `key_ids` (each key's 8-hex-digit id, the one in use for sealing first; equal on nodes holding the same keys, and revealing nothing of them) — with `--keyring-file`, after `started` and `metrics`, then whenever the file's keys change, when a file that failed to read is good again, and on `reload` |
//! | `joined`, `up`, `down`, `left`, `expired` | `node`, `addr`, `generation` |
//! | `key_upserted` | `node`, `key`, `value` (UTF-8, invalid bytes replaced by U+FFFD) |
//! | `key_deleted` | `node`, `key` |
//! | `ready_changed` | `node`, `ready` (bool) |
//! | `ownership` | `fingerprint` (hex; equal on nodes with equal rings), `members` (how many members are on the ring), `acquired_from`, `relinquished_to` (member names, `[]` when nothing moved that way; `-` names no member: ranges given up when no member is left to take them) |
//! | `leave_completed` | `confirmed` (peers that confirmed our leave) |
//! | `superseded` | `node`, `addr`, `generation` of the newer process now holding this node's name; the node stops (`stopped` follows) and the process exits 1 |
//! | `lagged` | `missed` (events this printer missed because it fell behind) |
//! | `error` | `message` — an unknown stdin line, or a command that failed |
//! | `stdin_closed` | — stdin reached its end; the node keeps running |
//! | `stopped` | `node` — always the last line |
//!
//! The events begin with the state the node holds when its printer subscribes, just after
//! `started` (a `stdin_closed` may come first, when stdin is already at its end): for every
//! member already known, `joined` (not for this node itself), `ready_changed`, `key_upserted`
//! for each key, then `down` or `left` if so, so no member learned during start-up is missing
//! (the printer holds 65,536 events: a larger state ends its replay in a `lagged` line, after
//! which what was printed is incomplete).
//! A member is ready when it joins unless a `ready_changed` with `"ready":false` follows its
//! `joined`. A node's first `ownership` names, for each acquired range, the member that owns it
//! on the ring without this node if that member has been up long enough to have built a ring
//! before this node came (4.5 x `ring_settle` plus two gossip intervals longer than this
//! node): in a running cluster,
//! the member that held it; when nodes start together, none (`-`: nobody held it). After a
//! quick restart under the same name, the peers' rings never dropped the name, so the member
//! named did not hold the range either: this name's previous process did.
//! Later `ownership` lines on two nodes mirror each other: what one relinquishes to the other,
//! the other acquires from it.
//! `node` is a member name; events about this node itself appear too (`key_upserted` for its
//! own `--set` keys, `left` when it starts leaving). On SIGTERM, SIGINT (Ctrl-C) or SIGHUP (its
//! terminal closed; not when started with SIGHUP ignored, as by `nohup`; a service manager's
//! reload sends SIGHUP too) the node leaves gracefully, prints `leave_completed` and `stopped`, and
//! exits 0 (the leave goes ahead even while stdout is blocked; the exit waits until the lines
//! are read). So it does when stdout
//! closes (the reader of the lines went away): it finds out at its next line, stops printing
//! and leaves; a node with nothing to print finds out only at its next event.

mod common;

use std::convert::Infallible;
use std::io::Read;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
#[cfg(feature = "prometheus")]
use tidings::metrics::{Metrics, prometheus::Registry};
use tidings::runtime::{self, EventFilter, Handle, RuntimeConfig};
use tidings::{Event, Keyring, MemberStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

struct Args {
    config: RuntimeConfig,
    sets: Vec<(String, String)>,
    metrics_addr: Option<SocketAddr>,
    ready_after: Option<Duration>,
    keyring_file: Option<PathBuf>,
    http_values: bool,
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
    let mut interval_ms: Option<u64> = None;
    let mut wan = false;
    let mut metrics_addr = None;
    let mut not_ready = false;
    let mut ring_ready_only = false;
    let mut ring_min_members = None;
    let mut http_values = false;
    let mut ready_after = None;
    let mut max_frame_size = None;
    let mut max_keys = None;
    let mut max_state_bytes = None;
    let mut max_connections = None;
    let mut max_connections_per_ip = None;
    let mut udp_send_buffer = None;
    let mut keyring_file: Option<PathBuf> = None;
    let mut plaintext = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // An unknown flag is named as such, not as one missing its value.
        let Some(spec) = FLAGS
            .iter()
            .find(|f| f.long == flag || f.short == Some(&flag))
        else {
            bail!("unknown option {flag} (see --help)");
        };
        if spec.value.is_none() {
            match spec.long {
                "--help" => print_and_exit(&usage()),
                "--version" => print_and_exit(&format!("node {}\n", env!("CARGO_PKG_VERSION"))),
                "--not-ready" => not_ready = true,
                "--ring-ready-only" => ring_ready_only = true,
                "--wan" => wan = true,
                "--http-values" => http_values = true,
                other => bail!("unknown option {other}"),
            }
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match spec.long {
            "--name" => name = Some(value),
            "--bind" => bind = value.parse().context("--bind takes IP:PORT")?,
            "--advertise" => advertise = Some(value.parse().context("--advertise takes IP:PORT")?),
            "--seed" => seeds.push(value),
            "--dns" => dns = Some(value),
            "--dns-server" => {
                dns_servers.push(value.parse().context("--dns-server takes IP:PORT")?)
            }
            "--cluster-id" => cluster_id = Some(value),
            "--set" => {
                let (k, v) = value.split_once('=').context("--set takes KEY=VALUE")?;
                sets.push((k.to_owned(), v.to_owned()));
            }
            "--interval-ms" => interval_ms = Some(value.parse().context("--interval-ms")?),
            "--metrics-addr" => {
                metrics_addr = Some(value.parse().context("--metrics-addr takes IP:PORT")?);
            }
            "--ready-after-ms" => {
                let ms: u64 = value.parse().context("--ready-after-ms")?;
                ready_after = Some(Duration::from_millis(ms));
            }
            "--max-frame-size" => {
                max_frame_size = Some(value.parse().context("--max-frame-size takes BYTES")?);
            }
            "--ring-min-members" => {
                ring_min_members = Some(value.parse().context("--ring-min-members takes N")?);
            }
            "--max-keys" => max_keys = Some(value.parse().context("--max-keys takes N")?),
            "--max-state-bytes" => {
                max_state_bytes = Some(value.parse().context("--max-state-bytes takes BYTES")?);
            }
            "--max-connections" => {
                max_connections = Some(value.parse().context("--max-connections takes N")?);
            }
            "--max-connections-per-ip" => {
                let n = value.parse().context("--max-connections-per-ip takes N")?;
                max_connections_per_ip = Some(n);
            }
            "--udp-send-buffer" => {
                let n = value.parse().context("--udp-send-buffer takes BYTES")?;
                udp_send_buffer = Some(n);
            }
            "--keyring-file" => keyring_file = Some(value.into()),
            "--plaintext" => {
                plaintext = Some(match value.as_str() {
                    "off" => (false, false),
                    "accept" => (false, true),
                    "send" => (true, true),
                    _ => bail!("--plaintext takes off, accept or send, not {value:?}"),
                });
            }
            other => bail!("unknown option {other}"),
        }
    }
    let Some(name) = name else {
        bail!("--name is required");
    };
    if interval_ms == Some(0) {
        bail!("--interval-ms must be positive");
    }
    let mut config = if wan {
        RuntimeConfig::wan(name)
    } else {
        RuntimeConfig::lan(name)
    };
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
    if let Some(ms) = interval_ms {
        config.protocol.gossip_interval = Duration::from_millis(ms);
    }
    config.protocol.initially_ready = !not_ready && ready_after.is_none();
    config.protocol.ring_ready_only = ring_ready_only;
    if let Some(n) = ring_min_members {
        config.protocol.ring_min_members = n;
    }
    // Out of range values are refused by the runtime's validation, before `started`.
    if let Some(n) = max_frame_size {
        config.protocol.max_frame_size = n;
    }
    if let Some(n) = max_keys {
        config.protocol.limits.max_keys_per_node = n;
    }
    if let Some(n) = max_state_bytes {
        config.protocol.limits.max_state_bytes_per_node = n;
    }
    if let Some(n) = max_connections {
        config.max_connections = n;
    }
    if let Some(n) = max_connections_per_ip {
        config.max_connections_per_ip = n;
    }
    if let Some(n) = udp_send_buffer {
        config.udp_send_buffer = n;
    }
    if let Some(path) = &keyring_file {
        config.protocol.keyring = Some(read_keyring(path)?);
    }
    match plaintext {
        Some((send, accept)) if keyring_file.is_some() => {
            config.protocol.send_plaintext = send;
            config.protocol.accept_plaintext = accept;
        }
        // Without a keyring everything is plaintext: a mode would only hide a missing flag.
        Some(_) => bail!("--plaintext needs --keyring-file"),
        None => {}
    }
    // Refused here, against the limits the node will run with, before `started`.
    for (k, v) in &sets {
        config
            .protocol
            .limits
            .check_write(k, v.len())
            .with_context(|| format!("--set {k:?}={v:?}"))?;
    }
    Ok(Args {
        config,
        sets,
        metrics_addr,
        ready_after,
        keyring_file,
        http_values,
    })
}

/// One command-line flag. The parser takes exactly the flags of [`FLAGS`] and `--help` prints
/// that table, so a flag cannot be accepted without being documented (the metrics test reads
/// the table from this file and checks the help against it).
struct Flag {
    long: &'static str,
    short: Option<&'static str>,
    /// The form of its value, or `None` for a flag that takes none.
    value: Option<&'static str>,
    /// What it does, and its default.
    help: &'static str,
}

const FLAGS: &[Flag] = &[
    Flag {
        long: "--name",
        short: None,
        value: Some("NAME"),
        help: "member name (required)",
    },
    Flag {
        long: "--bind",
        short: None,
        value: Some("ADDR"),
        help: "UDP and TCP bind address, IP:PORT (default: 127.0.0.1:7946)",
    },
    Flag {
        long: "--advertise",
        short: None,
        value: Some("ADDR"),
        help: "address peers use, IP:PORT, if not the bind address (default: the bind address)",
    },
    Flag {
        long: "--seed",
        short: None,
        value: Some("HOST:PORT"),
        help: "a peer to join through; names are resolved with DNS; repeatable (default: none)",
    },
    Flag {
        long: "--dns",
        short: None,
        value: Some("NAME:PORT"),
        help: "a DNS name listing the peers, re-resolved every 30 s, or 60 s with --wan \
               (default: none)",
    },
    Flag {
        long: "--dns-server",
        short: None,
        value: Some("IP:PORT"),
        help: "name server to use for --seed and --dns; repeatable (default: the system's)",
    },
    Flag {
        long: "--cluster-id",
        short: None,
        value: Some("ID"),
        help: "cluster name; nodes of other clusters are ignored (default: tidings)",
    },
    Flag {
        long: "--set",
        short: None,
        value: Some("KEY=VALUE"),
        help: "a key to set at start; repeatable (default: none)",
    },
    Flag {
        long: "--interval-ms",
        short: None,
        value: Some("N"),
        help: "gossip interval in milliseconds, positive (default: 200, or 1000 with --wan)",
    },
    Flag {
        long: "--wan",
        short: None,
        value: None,
        help: "the settings for links across regions (RuntimeConfig::wan: 1-s gossip, \
               detection in about 10 s, leaves of up to 10 s, longer timeouts); the same on \
               every node (default: the LAN settings)",
    },
    Flag {
        long: "--metrics-addr",
        short: None,
        value: Some("IP:PORT"),
        help: "serve GET /metrics, /ready, /live, /members, /members/NAME and /owners/KEY over \
               HTTP there; \
               port 0 takes any free port, which the `metrics` line tells (default: no HTTP \
               server)",
    },
    Flag {
        long: "--http-values",
        short: None,
        value: None,
        help: "GET /members/NAME gives the member's values, not only its keys: whoever reaches \
               --metrics-addr reads them (default: keys only)",
    },
    Flag {
        long: "--not-ready",
        short: None,
        value: None,
        help: "start not ready until `ready true` on stdin (default: ready at start)",
    },
    Flag {
        long: "--ring-ready-only",
        short: None,
        value: None,
        help: "only members marked ready own keys; the same on every node (default: every live \
               member owns keys)",
    },
    Flag {
        long: "--ring-min-members",
        short: None,
        value: Some("N"),
        help: "with fewer than N members on the ring, no member owns any key, so a node cut \
               off from the others does not take them all; the same on every node (default: \
               1, no minimum)",
    },
    Flag {
        long: "--ready-after-ms",
        short: None,
        value: Some("N"),
        help: "start not ready, and mark this node ready N ms after start (default: ready at \
               start)",
    },
    Flag {
        long: "--max-frame-size",
        short: None,
        value: Some("BYTES"),
        help: "largest TCP frame sent or accepted; the same on every node; at least one node's \
               whole state at the limits, 5996148 with the default limits (default: 8388608, \
               8 MiB)",
    },
    Flag {
        long: "--max-keys",
        short: None,
        value: Some("N"),
        help: "most keys (live or deleted) one node's state may hold; the same on every node \
               (default: 100000)",
    },
    Flag {
        long: "--max-state-bytes",
        short: None,
        value: Some("BYTES"),
        help: "most bytes of keys and values in one node's state; the same on every node \
               (default: 4194304, 4 MiB)",
    },
    Flag {
        long: "--max-connections",
        short: None,
        value: Some("N"),
        help: "most TCP connections open at once; streams hold at most about 3N + 4 frames \
               of --max-frame-size (default: 64)",
    },
    Flag {
        long: "--max-connections-per-ip",
        short: None,
        value: Some("N"),
        help: "most inbound TCP connections from one IP address, loopback not counted \
               (default: 16)",
    },
    Flag {
        long: "--udp-send-buffer",
        short: None,
        value: Some("BYTES"),
        help: "the UDP socket's send buffer, capped by net.core.wmem_max; 0 keeps the system's \
               default (default: 1048576, 1 MiB)",
    },
    Flag {
        long: "--keyring-file",
        short: None,
        value: Some("PATH"),
        help: "seal every packet with the keys in this file: one per line, 64 hex digits, the \
               first encrypts, all decrypt; `#` comments ignored; read again every 10 s and on \
               `reload`, so editing it rotates keys (default: none, plaintext)",
    },
    Flag {
        long: "--plaintext",
        short: None,
        value: Some("MODE"),
        help: "with --keyring-file, `accept` plaintext too, or `send` and accept it: the steps \
               of turning encryption on by rolling restarts (default: off)",
    },
    Flag {
        long: "--help",
        short: Some("-h"),
        value: None,
        help: "print this help and exit",
    },
    Flag {
        long: "--version",
        short: Some("-V"),
        value: None,
        help: "print the version and exit",
    },
];

/// The stdin commands (carried out by `command`) and what they do, for `--help`.
const COMMANDS: &[(&str, &str)] = &[
    ("set KEY=VALUE", "set a key of this node"),
    (
        "delete KEY",
        "delete a key of this node (an `error` if it holds no such key)",
    ),
    ("ready true|false", "mark this node ready or not ready"),
    (
        "leave",
        "leave gracefully, as on SIGTERM (then `leave_completed`, `stopped`, exit 0)",
    ),
    (
        "reload",
        "read --keyring-file again now (then `keyring`, or an `error` and the keys stay)",
    ),
];

/// The text `--help` prints: every flag of [`FLAGS`] and every stdin command.
fn usage() -> String {
    let flag_label = |f: &Flag| {
        let names = match f.short {
            Some(short) => format!("{short}, {}", f.long),
            None => f.long.to_owned(),
        };
        match f.value {
            Some(value) => format!("{names} {value}"),
            None => names,
        }
    };
    let labels: Vec<String> = FLAGS.iter().map(flag_label).collect();
    let width = labels
        .iter()
        .map(String::len)
        .chain(COMMANDS.iter().map(|(c, _)| c.len()))
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "usage: node --name NAME [OPTION]...\n\n\
         One tidings node per process. Prints one JSON object per event on stdout (the format \
         is\ndescribed at the top of examples/node.rs), takes commands on stdin, logs on \
         stderr\n(RUST_LOG=tidings=info). SIGTERM, SIGINT and SIGHUP leave gracefully (SIGHUP not \
         when\nstarted ignoring it, as under nohup; a service manager's reload sends it too).\n\n\
         Options:\n",
    );
    for (label, f) in labels.iter().zip(FLAGS) {
        push_entry(&mut text, label, width, f.help);
    }
    text.push_str("\nCommands on stdin, one per line:\n");
    for (c, help) in COMMANDS {
        push_entry(&mut text, c, width, help);
    }
    text
}

/// Appends `label` padded to `width`, then `help` wrapped at 100 columns under itself, so the
/// help reads in a 100-column terminal.
fn push_entry(text: &mut String, label: &str, width: usize, help: &str) {
    const COLUMNS: usize = 100;
    let indent = width + 4;
    text.push_str(&format!("  {label:width$}  "));
    let mut column = indent;
    for (i, word) in help.split_whitespace().enumerate() {
        if i > 0 && column + 1 + word.len() > COLUMNS {
            text.push('\n');
            text.push_str(&" ".repeat(indent));
            column = indent;
        } else if i > 0 {
            text.push(' ');
            column += 1;
        }
        text.push_str(word);
        column += word.len();
    }
    text.push('\n');
}

/// Prints `text` on stdout and exits 0 (for `--help` and `--version`). A failed write (the
/// reader went away: `node --help | head -1`) is no error worth reporting.
fn print_and_exit(text: &str) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    std::process::exit(0);
}

/// How often `--keyring-file` is read again: a mounted Kubernetes Secret changes in place
/// within about a minute of an edit, so this adds little to a rotation's steps.
const KEYRING_RELOAD: Duration = Duration::from_secs(10);

/// Largest keyring file read: a few hundred keys. A larger file is a wrong path.
const KEYRING_FILE_MAX: u64 = 64 * 1024;

/// Longest the loop waits for a re-read of `--keyring-file` (a Secret on tmpfs takes
/// microseconds): a read that blocks (a hung network filesystem, a FIFO nobody writes to) is
/// then reported and left to finish on its own thread.
const KEYRING_READ_WAIT: Duration = Duration::from_secs(1);

/// Reads a keyring file (see `--keyring-file`). Errors name the file and the line, never a
/// line's text: a mistyped key is still a secret.
fn read_keyring(path: &Path) -> Result<Keyring> {
    let context = || format!("--keyring-file {}", path.display());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(KEYRING_FILE_MAX + 1).read_to_string(&mut text))
        .with_context(context)?;
    if text.len() as u64 > KEYRING_FILE_MAX {
        bail!("{}: larger than {KEYRING_FILE_MAX} bytes", context());
    }
    let mut keyring: Option<Keyring> = None;
    for (i, line) in text.lines().enumerate() {
        // A comment may follow a key (no key holds `#`); an editor's byte-order mark may
        // open the file.
        let line = line.split('#').next().unwrap_or("");
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let Some(key) = Keyring::parse_key(line) else {
            bail!(
                "{}: line {} is not a key (64 hexadecimal digits)",
                context(),
                i + 1
            );
        };
        keyring = Some(match keyring {
            None => Keyring::new(key),
            Some(k) => k.with_key(key),
        });
    }
    keyring.with_context(|| {
        format!(
            "{}: no key (one per line, 64 hexadecimal digits)",
            context()
        )
    })
}

/// The keys in use, read from `--keyring-file`, and what reading it again needs.
struct KeyringFile {
    path: PathBuf,
    current: Keyring,
    send_plaintext: bool,
    accept_plaintext: bool,
    /// The last reload's error, printed once however many times it repeats.
    failing: Option<String>,
    /// A read that outlasted `KEYRING_READ_WAIT`: its outcome, taken by the next reload. No
    /// other read starts meanwhile, so a file that blocks for good costs one thread.
    pending: Option<oneshot::Receiver<Result<Keyring>>>,
}

impl KeyringFile {
    /// Reads the file again and gives the node its keys if they changed. `asked`: on the
    /// `reload` command, which always answers (the periodic reload prints only changes).
    async fn reload(&mut self, handle: &Handle, asked: bool) {
        let read = match self.read().await {
            Ok(k) => k,
            Err(e) => {
                let message = format!("{e:#}; the keys in use stay");
                if asked || self.failing.as_ref() != Some(&message) {
                    emit_error(message.clone());
                }
                self.failing = Some(message);
                return;
            }
        };
        // Once a bad file is good again, say so even when the keys did not change.
        let recovered = self.failing.take().is_some();
        if read != self.current {
            let set = handle.set_keyring(
                Some(read.clone()),
                self.send_plaintext,
                self.accept_plaintext,
            );
            if let Err(e) = set.await {
                return emit_error(format!("--keyring-file: {e}"));
            }
            self.current = read;
        } else if !asked && !recovered {
            return;
        }
        emit_keyring(&self.current);
    }

    /// Reads the file on a thread of its own, waiting at most `KEYRING_READ_WAIT`. Read on the
    /// loop, a blocking `open` or `read` held every command, event line and the exit for as
    /// long as it blocked (a FIFO: for good). A thread, not `spawn_blocking`: the runtime
    /// waits for its blocking tasks when it shuts down, as for the stdin reader.
    async fn read(&mut self) -> Result<Keyring> {
        let mut rx = match self.pending.take() {
            Some(mut rx) => {
                return match rx.try_recv() {
                    Ok(read) => read,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.pending = Some(rx);
                        Err(self.blocked())
                    }
                    Err(oneshot::error::TryRecvError::Closed) => Err(self.lost()),
                };
            }
            None => {
                let (tx, rx) = oneshot::channel();
                let path = self.path.clone();
                std::thread::Builder::new()
                    .name("keyring-file".to_owned())
                    .spawn(move || {
                        let _ = tx.send(read_keyring(&path));
                    })
                    .context("--keyring-file: no thread to read it on")?;
                rx
            }
        };
        match tokio::time::timeout(KEYRING_READ_WAIT, &mut rx).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => {
                self.pending = Some(rx);
                Err(self.blocked())
            }
        }
    }

    /// A read still going: reported, and the keys in use stay.
    fn blocked(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "--keyring-file {}: not read within {KEYRING_READ_WAIT:?} (still waiting)",
            self.path.display()
        )
    }

    /// The reading thread ended without an answer (it panicked).
    fn lost(&self) -> anyhow::Error {
        anyhow::anyhow!("--keyring-file {}: the read failed", self.path.display())
    }
}

/// Prints the `keyring` line: the ids of the keys in use, the sealing one first.
fn emit_keyring(keyring: &Keyring) {
    let ids: Vec<String> = keyring.key_ids().map(|id| format!("{id:08x}")).collect();
    emit(json!({"event": "keyring", "key_ids": ids}));
}

/// Most events printed in a row while a stdin command waits: events go first (each command's
/// are printed before the next command is taken), but not for ever.
const STDIN_EVERY: usize = 256;

/// Whether this process was started with SIGHUP ignored (`nohup`, `trap '' HUP`): read from
/// `/proc/self/status` (Linux); elsewhere taken as not ignored.
fn sighup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        // SIGHUP is signal 1: the mask's lowest bit.
        .is_some_and(|mask| mask & 1 != 0)
}

#[tokio::main]
async fn main() -> Result<()> {
    common::init_tracing();
    let args = parse_args()?;
    // Taken before the node starts: a signal that arrives any time after `started` (even
    // before the loop below runs) is a graceful leave, never the default kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // A closed terminal (or an ssh session that drops) sends SIGHUP, whose default kills the
    // process outright: peers then suspected it `down` as if it had crashed, though nothing
    // failed. It is a request to stop, like SIGTERM; unless the node was started with SIGHUP
    // ignored (`nohup`, `trap '' HUP`), which a handler would undo (found by review).
    let mut hangup = if sighup_ignored() {
        None
    } else {
        Some(signal(SignalKind::hangup())?)
    };
    // Bound before the node starts, so that a busy port fails before any output.
    let http_listener = match args.metrics_addr {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("--metrics-addr {addr}"))?;
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        }
        None => None,
    };
    let mut config = args.config;
    let mut keyring = match (args.keyring_file, &config.protocol.keyring) {
        (Some(path), Some(current)) => Some(KeyringFile {
            path,
            current: current.clone(),
            send_plaintext: config.protocol.send_plaintext,
            accept_plaintext: config.protocol.accept_plaintext,
            failing: None,
            pending: None,
        }),
        _ => None,
    };
    // The printer's subscription starts with a replay of the whole state: room for it (and
    // for bursts), or members and keys of a larger cluster would be missed behind a `lagged`
    // line (found by an operator's-eye review at about 3,000 keys with the default 1,024).
    // The channel grows as it fills, so the room costs nothing until used.
    config.subscriber_buffer = PRINTER_BUFFER;
    let handle = runtime::start(config).await?;
    let id = handle.id().clone();
    // With the current state first: members learned while `start` ran (a fast join) would
    // otherwise never be printed.
    let mut events = handle.subscribe_with(EventFilter::all().with_current_state());
    emit(json!({
        "event": "started",
        "node": id.name,
        "addr": id.addr.to_string(),
        "generation": id.generation.0,
    }));
    if let Some(listener) = http_listener {
        let addr = listener.local_addr()?;
        let http = Arc::new(Http::new(&handle, args.http_values)?);
        tokio::spawn(serve_http(listener, http));
        emit(json!({"event": "metrics", "addr": addr.to_string()}));
    }
    if let Some(k) = &keyring {
        emit_keyring(&k.current);
    }
    let mut reload = tokio::time::interval(KEYRING_RELOAD);
    // The first tick a whole period from now, not at once: the file was just read.
    reload.reset();
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (k, v) in args.sets {
        // Reported like a bad `set` on stdin: the node runs on, and `stopped` stays the last
        // line whatever happens.
        if let Err(e) = handle.set(&k, v).await {
            emit_error(format!("--set {k}: {e}"));
        }
    }
    if let Some(after) = args.ready_after {
        let h = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // Once the node has stopped, `stopped` was the last line: print nothing more.
            if let Err(e) = h.mark_ready(true).await
                && h.is_running()
            {
                emit_error(format!("--ready-after-ms: {e}"));
            }
        });
    }
    let mut stdin = read_stdin();

    let (leave_tx, mut leave_rx) = mpsc::channel::<()>(1);
    let leaving = handle.clone();
    // A task of its own, so that a signal starts the leave even while the loop below is held
    // up writing to a stdout nobody reads (a full pipe): peers then see the node leave, not
    // vanish when it is killed later (found by an operator's-eye review: 9 s and counting).
    let mut leave = tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
            _ = async {
                match hangup.as_mut() {
                    Some(h) => drop(h.recv().await),
                    None => std::future::pending().await,
                }
            } => {}
            _ = leave_rx.recv() => {}
        }
        leaving.leave().await.map_err(anyhow::Error::from)
    });
    let mut left = false;
    let mut leave_done = false;
    let mut stdin_open = true;
    // Events printed since stdin was last looked at (see `STDIN_EVERY`).
    let mut streak = 0usize;
    loop {
        tokio::select! {
            // The leave's outcome is answered before the subscription ends: polling it first
            // means the loop never sees the end of events while a finished leave is unread
            // (one whose task has not run yet is asked of the node after the loop).
            biased;
            r = &mut leave, if !leave_done => {
                leave_done = true;
                // A leave that failed (the node had already stopped: replaced, say) is
                // reported, and the loop goes on to print `stopped` last.
                match r {
                    Ok(Ok(_)) => left = true,
                    Ok(Err(e)) => emit_error(format!("leave: {e}")),
                    Err(e) => emit_error(format!("leave: {e}")),
                }
            }
            // Queued events before the next stdin command: a command's events are queued by
            // the time it returns, so each is printed before another command is taken, and a
            // burst of commands cannot run ahead of the printer. With stdin first, a script
            // piping thousands of commands had them all carried out before any of their
            // events was printed (past 65,536, ending in `lagged`). Commands wait only while
            // events are queued, i.e. while the printer is behind anyway.
            e = events.recv() => {
                match e {
                    Some(Ok(e)) => print_event(&e),
                    Some(Err(lag)) => emit(json!({"event": "lagged", "missed": lag.0})),
                    // The node stopped and every event was printed.
                    None => break,
                }
                // Events arriving faster than stdout takes them would otherwise hold every
                // command back for good, a stdin `leave` included (found by review).
                streak += 1;
                if streak >= STDIN_EVERY {
                    streak = 0;
                    if let Ok(line) = stdin.try_recv() {
                        match line {
                            Ok(line) => command(&handle, &leave_tx, &mut keyring, line.trim()).await,
                            Err(message) => emit_error(message),
                        }
                    }
                }
            }
            line = stdin.recv(), if stdin_open => match line {
                Some(Ok(line)) => {
                    streak = 0;
                    command(&handle, &leave_tx, &mut keyring, line.trim()).await;
                }
                Some(Err(message)) => emit_error(message),
                None => {
                    stdin_open = false;
                    emit(json!({"event": "stdin_closed"}));
                }
            },
            // In the loop, not a task of its own, so that its lines come before `stopped`.
            _ = reload.tick(), if keyring.is_some() && handle.is_running() => {
                if let Some(k) = keyring.as_mut() {
                    k.reload(&handle, false).await;
                }
            }
        }
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            // Nobody reads us any more: leave, as on SIGTERM (a second request is ignored).
            let _ = leave_tx.try_send(());
        }
    }
    if !leave_done {
        // The subscription can end before the leave task is seen finished: the driver
        // answers the leave and stops at once, and the task awaiting that answer may not have
        // run yet (seen under load: `leave_completed` printed, then exit 1). The node keeps
        // its leave's outcome, which a stopped node's `leave` returns (or `Left` if it never
        // left).
        left = handle.leave().await.is_ok();
    }
    emit(json!({"event": "stopped", "node": id.name}));
    if !left {
        bail!("the node stopped without leaving");
    }
    Ok(())
}

/// Lines read from stdin by a thread of their own (a blocking read that tokio could not cancel
/// would hold up the exit); a line that is not UTF-8 comes as an error, and reading goes on
/// (`lines()` ended at the first such line, and every later command was ignored: found by an
/// operator's-eye review). The channel closes at the end of input or on a read error. It is
/// unbounded on purpose: with a bounded one, a script that writes all its commands before
/// reading any output deadlocks once both pipes fill (tried: the 5,000-set test hung), so a
/// large input is read ahead into memory instead.
fn read_stdin() -> mpsc::UnboundedReceiver<Result<String, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8(std::mem::take(&mut buf))
                .map_err(|_| "a stdin line that is not UTF-8".to_owned());
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Carries out one stdin command; prints an `error` line if it is unknown or fails.
async fn command(
    handle: &Handle,
    leave: &mpsc::Sender<()>,
    keyring: &mut Option<KeyringFile>,
    line: &str,
) {
    if line.is_empty() {
        return;
    }
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let result = match (verb, rest) {
        ("set", kv) => match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => handle.set(k, v.to_owned()).await,
            _ => return emit_error(format!("set takes KEY=VALUE: {line:?}")),
        },
        // A key this node does not hold is an error: a script waiting for its `key_deleted`
        // would wait for ever.
        ("delete", key) if !key.is_empty() => match handle.get(&handle.id().name, key).await {
            Some(_) => handle.delete(key).await,
            None => return emit_error(format!("{line:?}: no such key")),
        },
        ("ready", "true") => handle.mark_ready(true).await,
        ("ready", "false") => handle.mark_ready(false).await,
        ("leave", "") => {
            // The leave runs in the main loop, so events go on printing meanwhile.
            let _ = leave.try_send(());
            Ok(())
        }
        ("reload", "") => match keyring.as_mut() {
            Some(k) => return k.reload(handle, true).await,
            None => return emit_error("reload: no --keyring-file to read".to_owned()),
        },
        _ => return emit_error(format!("unknown command: {line:?}")),
    };
    if let Err(e) = result {
        emit_error(format!("{line:?}: {e}"));
    }
}

/// What the HTTP server answers from.
struct Http {
    handle: Handle,
    /// `--http-values`: `/members/NAME` gives values too.
    values: bool,
    #[cfg(feature = "prometheus")]
    registry: Registry,
}

impl Http {
    fn new(handle: &Handle, values: bool) -> Result<Self> {
        #[cfg(feature = "prometheus")]
        let registry = {
            let registry = Registry::new();
            Metrics::register(handle, &registry)?;
            registry
        };
        Ok(Self {
            handle: handle.clone(),
            values,
            #[cfg(feature = "prometheus")]
            registry,
        })
    }

    async fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET or HEAD only\n");
            // RFC 9110: a 405 lists the methods the resource takes.
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => self.metrics(),
            "/ready" if self.ready() => response(StatusCode::OK, TEXT, "ready\n"),
            "/ready" => response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
            "/live" if self.handle.is_running() => response(StatusCode::OK, TEXT, "live\n"),
            "/live" => response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "stopped\n"),
            "/members" => self.members().await,
            path => {
                if let Some(name) = path.strip_prefix("/members/").and_then(percent_decode) {
                    self.member(&name).await
                } else if let Some(key) = path.strip_prefix("/owners/").and_then(percent_decode) {
                    self.owners(&key)
                } else {
                    response(StatusCode::NOT_FOUND, TEXT, "not found\n")
                }
            }
        }
    }

    /// `GET /members`: this node's view of the cluster, every member with its liveness, and
    /// the ring's fingerprint (equal on nodes that agree on ownership). Read from the
    /// membership snapshot alone: a request costs the node nothing however large the cluster
    /// (phi, one request to the node per member, is in `/members/NAME` only).
    async fn members(&self) -> Response<Full<Bytes>> {
        let m = self.handle.membership();
        let members: Vec<serde_json::Value> = m.members.iter().map(describe).collect();
        json_response(
            StatusCode::OK,
            &json!({
                "node": m.local.name,
                "epoch": m.epoch,
                "fingerprint": m.ring.fingerprint().to_string(),
                "live": m.num_live(),
                "members": members,
            }),
        )
    }

    /// `GET /owners/KEY`: the members that own `KEY` on this node's ring, primary first (up
    /// to `OWNERS_SHOWN`; none before the first ring), with the ring's fingerprint: where a
    /// key lives, asked from a shell.
    fn owners(&self, key: &str) -> Response<Full<Bytes>> {
        let m = self.handle.membership();
        json_response(
            StatusCode::OK,
            &json!({
                "key": key,
                "owners": m.owners(key, OWNERS_SHOWN).collect::<Vec<_>>(),
                "fingerprint": m.ring.fingerprint().to_string(),
            }),
        )
    }

    /// `GET /members/NAME`: one member as in `/members`, with its phi and its keys, and their
    /// values with `--http-values` (otherwise whoever reaches the HTTP port would read every
    /// member's state, which a keyring keeps from the network).
    async fn member(&self, name: &str) -> Response<Full<Bytes>> {
        let m = self.handle.membership();
        let (Some(member), Some(state)) = (m.member(name), self.handle.node_state(name).await)
        else {
            return response(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "no such member\n",
            );
        };
        let mut v = describe(member);
        // This node's suspicion of it: 0 for this node itself and for members not alive;
        // `null` when infinite (JSON has no infinity) or once the node has stopped.
        v["phi"] = self.handle.phi(name).await.into();
        v["keys"] = state.iter().map(|(k, _)| k).collect::<Vec<_>>().into();
        if self.values {
            let values: serde_json::Map<String, serde_json::Value> = state
                .iter()
                .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into()))
                .collect();
            v["values"] = values.into();
        }
        json_response(StatusCode::OK, &v)
    }

    /// This node runs, is alive in its own view (not leaving) and marked ready.
    fn ready(&self) -> bool {
        let m = self.handle.membership();
        self.handle.is_running()
            && m.member(&m.local.name)
                .is_some_and(|me| me.status == MemberStatus::Alive && me.ready)
    }

    #[cfg(feature = "prometheus")]
    fn metrics(&self) -> Response<Full<Bytes>> {
        use tidings::metrics::prometheus::{Encoder, TEXT_FORMAT, TextEncoder};
        let mut body = Vec::new();
        match TextEncoder::new().encode(&self.registry.gather(), &mut body) {
            Ok(()) => response(StatusCode::OK, TEXT_FORMAT, body),
            Err(e) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        }
    }

    #[cfg(not(feature = "prometheus"))]
    fn metrics(&self) -> Response<Full<Bytes>> {
        response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "built without the prometheus feature\n",
        )
    }
}

/// A member's identity, liveness and readiness, as `/members` lists it.
fn describe(member: &tidings::Member) -> serde_json::Value {
    let status = match member.status {
        MemberStatus::Alive => "alive",
        MemberStatus::Down => "down",
        MemberStatus::Left => "left",
    };
    json!({
        "name": member.id.name,
        "addr": member.id.addr.to_string(),
        "generation": member.id.generation.0,
        "status": status,
        "ready": member.ready,
    })
}

/// Owners `/owners/KEY` lists: a primary and two replicas.
const OWNERS_SHOWN: usize = 3;

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    response(status, "application/json", format!("{v}\n"))
}

/// A path segment with its `%XX` escapes decoded, if they are valid and give UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let mut out = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            // `from_str_radix` alone would take a sign.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Most HTTP connections served at once. A connection accepted beyond it closes the oldest:
/// refusing the newest instead let anyone reaching the port hold every slot (one request per
/// connection every few seconds keeps hyper from timing it out) and starve the kubelet's
/// probes, which open a connection each time (found by review).
const HTTP_MAX_CONNECTIONS: usize = 64;

/// Serves HTTP/1 on `listener` until the process exits, one task per connection, at most
/// `HTTP_MAX_CONNECTIONS` at once.
async fn serve_http(listener: tokio::net::TcpListener, http: Arc<Http>) {
    let mut conns = tokio::task::JoinSet::new();
    // Connections open, oldest first.
    let mut open: std::collections::VecDeque<tokio::task::AbortHandle> =
        std::collections::VecDeque::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(done) = conns.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            open.retain(|h| h.id() != id);
        }
        if open.len() >= HTTP_MAX_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            tracing::debug!("{HTTP_MAX_CONNECTIONS} HTTP connections open; closing the oldest");
            oldest.abort();
        }
        let http = Arc::clone(&http);
        open.push_back(conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let http = Arc::clone(&http);
                async move { Ok::<_, Infallible>(http.respond(&req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection");
            }
        }));
    }
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
        Event::Superseded(n) => member("superseded", n),
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

/// Events the printer's subscription holds before it lags (see `main`).
const PRINTER_BUFFER: usize = 1 << 16;

/// Set once stdout is gone: nothing more is printed, and the node leaves.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints one JSON line. stdout is line-buffered, so every line reaches a pipe at once. A
/// write that fails (the reader went away: `println!` would panic, and the node would vanish
/// without leaving) marks stdout closed.
fn emit(v: serde_json::Value) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if writeln!(std::io::stdout().lock(), "{v}").is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

fn emit_error(message: String) {
    emit(json!({"event": "error", "message": message}));
}
