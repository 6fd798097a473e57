//! Prometheus metrics: a registry scraped while a 3-node cluster runs and loses a node, and
//! the `node` example serving `/metrics`, `/ready` and `/live` over HTTP.
//!
//! Every wait polls with a timeout; no test sleeps a fixed time.

mod examples_common;
mod runtime_common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use examples_common::example;
use runtime_common::{cluster, config, init_tracing, wait_membership};
use tidings::MemberStatus;
use tidings::metrics::Metrics;
use tidings::metrics::prometheus::{
    Encoder, Error as PrometheusError, Gauge, Opts, Registry, TextEncoder,
};
use tidings::runtime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// One series of a scrape: name, labels, value.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape in the text exposition format, parsed.
#[derive(Debug)]
struct Scrape(Vec<Series>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let labels = body
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            out.push(Series {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            });
        }
        Self(out)
    }

    fn of(registry: &Registry) -> Self {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        Self::parse(&String::from_utf8(buf).unwrap())
    }

    /// The sum of the series called `name` whose labels include `labels` (0 if none).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

/// Polls `scrape` until `pred` holds; panics with the last scrape after `timeout`.
async fn poll_until<F, Fut, T>(
    what: &str,
    timeout: Duration,
    mut scrape: F,
    pred: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    T: std::fmt::Debug,
{
    let mut last = None;
    let found = tokio::time::timeout(timeout, async {
        loop {
            let s = scrape().await;
            if pred(&s) {
                return s;
            }
            last = Some(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: not within {timeout:?}; last scrape: {last:#?}"))
}

const ALIVE: &[(&str, &str)] = &[("status", "alive")];
const DOWN: &[(&str, &str)] = &[("status", "down")];

/// Subscriptions dropped by their owners are forgotten within a stats tick (a second), also
/// on a quiet node where no event they asked for ever comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscriptions_are_forgotten_on_a_quiet_node() {
    init_tracing();
    let nodes = cluster("sub", 1).await;
    // Quiet from here: its first ring (and that event) is behind it.
    wait_membership(&nodes[0], Duration::from_secs(5), |m| {
        m.ring.num_members() == 1
    })
    .await;
    let registry = Registry::new();
    Metrics::register(&nodes[0], &registry).unwrap();
    let kept = nodes[0].subscribe_with(runtime::EventFilter::key_prefix("kept/"));
    for _ in 0..100 {
        drop(nodes[0].subscribe_with(runtime::EventFilter::key_prefix("x/")));
    }
    // A command, so the driver takes them in; a key none of them asked for.
    nodes[0].set("y", "1").await.unwrap();
    let scrape = || {
        let r = &registry;
        async move {
            let mut buf = Vec::new();
            TextEncoder::new().encode(&r.gather(), &mut buf).unwrap();
            Scrape::parse(&String::from_utf8(buf).unwrap())
        }
    };
    poll_until(
        "the dropped subscriptions forgotten",
        Duration::from_secs(10),
        scrape,
        |s| s.get("tidings_subscribers", &[]) == 1.0,
    )
    .await;
    drop(kept);
    nodes[0].kill().await;
}

/// Many nodes' metrics share one registry when their constant labels differ, whatever the
/// label values. Before, all of a node's metrics were one collector, which the registry
/// identifies by the sum of its metrics' hashes; for values one character apart those sums
/// cancelled out (nodes `s-3` and `s-5`: the second was refused as already registered).
/// Here the metrics of one node under 300 labels stand in for 300 nodes. A registration
/// refused part way is taken back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_many_nodes_share_a_registry() {
    init_tracing();
    let nodes = cluster("reg", 1).await;
    let shared = Registry::new();
    let labelled = |i: usize| Metrics::with_const_labels(&nodes[0], [("node", format!("s-{i}"))]);
    for i in 0..300 {
        labelled(i).unwrap().register_in(&shared).unwrap();
    }
    let names = |r: &Registry| {
        r.gather()
            .iter()
            .map(|f| f.get_metric().len())
            .sum::<usize>()
    };
    let series = names(&shared);
    assert!(matches!(
        labelled(7).unwrap().register_in(&shared),
        Err(PrometheusError::AlreadyReg)
    ));
    assert_eq!(names(&shared), series, "nothing of the refused one stays");
    let other = labelled(300).unwrap();
    other.register_in(&shared).unwrap();
    assert_eq!(names(&shared), series / 300 * 301);
    other.unregister(&shared).unwrap();
    assert_eq!(names(&shared), series);
    // Refused at its last metric (a gauge of that name and labels is there already): the
    // metrics registered before it are taken back out.
    let last = "tidings_superseded";
    let help = shared
        .gather()
        .into_iter()
        .find(|f| f.name() == last)
        .map(|f| f.help().to_owned())
        .unwrap();
    let squatter = Gauge::with_opts(Opts::new(last, help).const_label("node", "s-301")).unwrap();
    shared.register(Box::new(squatter)).unwrap();
    assert!(matches!(
        labelled(301).unwrap().register_in(&shared),
        Err(PrometheusError::AlreadyReg)
    ));
    assert_eq!(names(&shared), series + 1, "only the squatter is added");
    nodes[0].kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraped_registry_follows_a_cluster_that_loses_a_node() {
    init_tracing();
    let nodes = cluster("met", 3).await;
    let registries: Vec<Registry> = nodes
        .iter()
        .map(|h| {
            let r = Registry::new();
            Metrics::register(h, &r).unwrap();
            r
        })
        .collect();
    // Several nodes in one registry: distinct constant labels make distinct series.
    let shared = Registry::new();
    for h in &nodes {
        let m = Metrics::with_const_labels(h, [("node", h.id().name.as_str())]).unwrap();
        assert_eq!(m.node_name(), h.id().name);
        m.register_in(&shared).unwrap();
    }
    // The same metrics twice in one registry are refused.
    assert!(matches!(
        Metrics::register(&nodes[0], &registries[0]),
        Err(PrometheusError::AlreadyReg)
    ));

    for (h, r) in nodes.iter().zip(&registries) {
        let s = poll_until(
            &format!("{} counters move", h.id().name),
            Duration::from_secs(10),
            || async { Scrape::of(r) },
            |s| {
                s.get("tidings_udp_datagrams_sent_total", &[]) > 0.0
                    && s.get("tidings_udp_datagrams_received_total", &[]) > 0.0
                    && s.get("tidings_udp_sent_bytes_total", &[]) > 0.0
                    && s.get("tidings_udp_received_bytes_total", &[]) > 0.0
                    && s.get("tidings_gossip_rounds_total", &[]) > 0.0
                    && s.get("tidings_members", ALIVE) == 3.0
            },
        )
        .await;
        assert_eq!(s.get("tidings_members", DOWN), 0.0);
        assert_eq!(s.get("tidings_members", &[("status", "left")]), 0.0);
        assert_eq!(s.get("tidings_members_ready", &[]), 3.0);
        assert_eq!(s.get("tidings_ready", &[]), 1.0);
        assert_eq!(s.get("tidings_running", &[]), 1.0);
        assert_eq!(s.get("tidings_superseded", &[]), 0.0, "{s:#?}");
        assert!(
            s.get("tidings_membership_events_total", &[("event", "joined")]) >= 2.0,
            "{s:#?}"
        );
        assert_eq!(s.get("tidings_packets_dropped_total", &[]), 0.0, "{s:#?}");
        for name in [
            "tidings_tcp_connections_total",
            "tidings_deltas_total",
            "tidings_entries_applied_total",
            "tidings_ownership_changes_total",
            "tidings_ring_rebuilds_total",
            "tidings_late_timers_total",
            "tidings_alone_warnings_total",
            "tidings_tcp_frames_waited_total",
            "tidings_subscriber_lagged_events_total",
            "tidings_peer_phi_max",
            "tidings_ring_members",
            "tidings_tcp_connections_open",
            "tidings_tcp_write_queued_bytes",
        ] {
            assert!(s.has(name), "{name} missing: {s:#?}");
        }
    }
    // Joining goes through a TCP push-pull with the seed.
    let seed = Scrape::of(&registries[0]);
    assert!(
        seed.get("tidings_tcp_connections_total", &[("direction", "inbound")]) > 0.0,
        "{seed:#?}"
    );
    let all = Scrape::of(&shared);
    for h in &nodes {
        assert_eq!(
            all.get(
                "tidings_members",
                &[("node", &h.id().name), ("status", "alive")]
            ),
            3.0
        );
    }

    nodes[2].kill().await;
    let killed = nodes[2].id().name.clone();
    for (h, r) in nodes.iter().zip(&registries).take(2) {
        let s = poll_until(
            &format!("{} sees {killed} down", h.id().name),
            Duration::from_secs(10),
            || async { Scrape::of(r) },
            |s| s.get("tidings_members", DOWN) == 1.0,
        )
        .await;
        assert_eq!(s.get("tidings_members", ALIVE), 2.0, "{s:#?}");
        assert!(s.get("tidings_membership_events_total", &[("event", "down")]) >= 1.0);
        assert_eq!(h.membership().status(&killed), Some(MemberStatus::Down));
    }
    // The killed node's metrics stay readable and say it stopped.
    let s = Scrape::of(&registries[2]);
    assert_eq!(s.get("tidings_running", &[]), 0.0);
    assert_eq!(s.get("tidings_ready", &[]), 0.0);
    assert!(s.get("tidings_udp_datagrams_sent_total", &[]) > 0.0);
}

// ----- the node example over HTTP -----

/// The example's process; killed if the test fails midway.
struct NodeProcess {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    seen: Vec<serde_json::Value>,
}

impl NodeProcess {
    /// Reads JSON lines until one satisfies `pred`; panics after `timeout` or at the end of
    /// output, with every line seen.
    async fn wait_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let found = tokio::time::timeout(timeout, async {
            loop {
                let line = self.stdout.next_line().await.unwrap()?;
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                self.seen.push(v.clone());
                if pred(&v) {
                    return Some(v);
                }
            }
        })
        .await;
        match found {
            Ok(Some(v)) => v,
            Ok(None) => panic!("output ended; lines: {:#?}", self.seen),
            Err(_) => panic!("no such line within {timeout:?}; lines: {:#?}", self.seen),
        }
    }

    /// Waits for the `metrics` line (see `wait_line`) and returns the HTTP address it gives.
    async fn metrics_addr(&mut self, timeout: Duration) -> String {
        let metrics = self.wait_line(timeout, |v| event_is(v, "metrics")).await;
        metrics["addr"].as_str().unwrap().to_owned()
    }

    async fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes()).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }
}

/// The example as node `ex` on loopback, seeded with `peer`, with piped stdin and stdout and
/// `extra` flags; killed when dropped.
fn spawn_example_beside(bin: &Path, peer: &runtime::Handle, extra: &[&str]) -> Child {
    spawn_named_beside(bin, "ex", peer, extra)
}

/// The same under another member name.
fn spawn_named_beside(bin: &Path, name: &str, peer: &runtime::Handle, extra: &[&str]) -> Child {
    spawn_piped(
        tokio::process::Command::new(bin)
            .args(beside_args(name, peer))
            .args(extra),
    )
}

/// The example's arguments to join `peer` as `name`: any port, 100-ms gossip.
fn beside_args(name: &str, peer: &runtime::Handle) -> Vec<String> {
    let seed = peer.id().addr.to_string();
    [
        "--name",
        name,
        "--bind",
        "127.0.0.1:0",
        "--interval-ms",
        "100",
        "--seed",
        &seed,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Spawns `cmd` with stdin and stdout piped, killed when dropped.
fn spawn_piped(cmd: &mut tokio::process::Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The example's stdout as lines, and its first line, which must be `started`.
async fn read_started(child: &mut Child, t: Duration) -> (Lines<BufReader<ChildStdout>>, String) {
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(t, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("\"started\""), "{first}");
    (stdout, first)
}

/// Sends SIGTERM to the example.
fn sigterm(child: &Child) {
    send_signal(child, "TERM");
}

/// Sends the signal named `name` (as `kill -NAME` takes it) to the example.
fn send_signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Scrapes the example's `/metrics` at `addr` until `pred` holds (see `poll_until`).
async fn scrape_until(
    addr: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Scrape) -> bool,
) -> Scrape {
    poll_until(
        what,
        timeout,
        || async { Scrape::parse(&http_get(addr, "/metrics").await.body) },
        pred,
    )
    .await
}

fn event_is(v: &serde_json::Value, event: &str) -> bool {
    v["event"] == event
}

/// A response: status code, headers (lower-case names), body.
struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// `GET path` over HTTP/1.1 with `Connection: close`: the simplest client that reads what the
/// example's server (hyper) writes.
async fn http_get(addr: &str, path: &str) -> HttpResponse {
    http_request(addr, "GET", path).await
}

/// `method path`, as [`http_get`] does.
async fn http_request(addr: &str, method: &str, path: &str) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response within 5 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn the_node_example_refuses_a_bad_set_before_it_starts() {
    let bin = example("node");
    let long = format!("{}=v", "k".repeat(513));
    for (set, says) in [
        ("tidings:weight=2", "reserved"),
        ("=v", "key of 0 bytes"),
        (long.as_str(), "key of 513 bytes"),
    ] {
        let out = run_to_exit(
            &bin,
            &["--name", "bad", "--bind", "127.0.0.1:0", "--set", set],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} accepted");
        assert!(
            out.stdout.is_empty(),
            "--set {set}: printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("--set") && stderr.contains(says),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_serves_metrics_readiness_and_liveness_over_http() {
    init_tracing();
    let bin = example("node");
    // An in-process peer, so that the example has someone to gossip with.
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let mut child = spawn_example_beside(
        &bin,
        &peer,
        &["--metrics-addr", "127.0.0.1:0", "--not-ready"],
    );
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut node = NodeProcess {
        child,
        stdout,
        seen: Vec::new(),
    };
    let t = Duration::from_secs(10);
    let started = node.wait_line(t, |v| event_is(v, "started")).await;
    assert_eq!(started["node"], "ex");
    let addr = node.metrics_addr(t).await;
    // `metrics` comes right after `started`.
    assert_eq!(node.seen.len(), 2, "{:#?}", node.seen);

    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    assert_eq!(http_get(&addr, "/live").await.status, 200);
    let ready = http_get(&addr, "/ready").await;
    assert_eq!(
        ready.status, 503,
        "started with --not-ready: {}",
        ready.body
    );
    assert_eq!(http_get(&addr, "/nowhere").await.status, 404);

    // Commands on stdin.
    node.send("ready true").await;
    node.wait_line(t, |v| {
        event_is(v, "ready_changed") && v["node"] == "ex" && v["ready"] == true
    })
    .await;
    assert_eq!(http_get(&addr, "/ready").await.status, 200);
    node.send("set color=blue").await;
    node.wait_line(t, |v| {
        event_is(v, "key_upserted") && v["node"] == "ex" && v["key"] == "color"
    })
    .await;
    node.send("frobnicate now").await;
    let err = node.wait_line(t, |v| event_is(v, "error")).await;
    assert!(
        err["message"].as_str().unwrap().contains("frobnicate"),
        "{err}"
    );
    // A line that is not UTF-8 is an error like any other; the next command still works.
    node.send_bytes(b"set bad=\xff\xfe\n").await;
    let err = node.wait_line(t, |v| event_is(v, "error")).await;
    assert!(err["message"].as_str().unwrap().contains("UTF-8"), "{err}");
    node.send("delete color").await;
    node.wait_line(t, |v| event_is(v, "key_deleted") && v["key"] == "color")
        .await;

    // /metrics: the text format, with counters that moved and both members alive.
    let scrape = poll_until(
        "the example's /metrics",
        t,
        || async {
            let r = http_get(&addr, "/metrics").await;
            assert_eq!(r.status, 200);
            let ct = r.headers.get("content-type").cloned().unwrap_or_default();
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            Scrape::parse(&r.body)
        },
        |s| {
            s.get("tidings_members", ALIVE) == 2.0
                && s.get("tidings_udp_datagrams_received_total", &[]) > 0.0
                && s.get("tidings_udp_datagrams_sent_total", &[]) > 0.0
        },
    )
    .await;
    assert_eq!(scrape.get("tidings_ready", &[]), 1.0);
    assert_eq!(scrape.get("tidings_members_ready", &[]), 2.0);
    assert!(scrape.get("tidings_subscribers", &[]) >= 1.0);

    // The end of stdin does not stop the node.
    drop(node.child.stdin.take());
    node.wait_line(t, |v| event_is(v, "stdin_closed")).await;
    assert_eq!(http_get(&addr, "/live").await.status, 200);
    assert!(node.child.try_wait().unwrap().is_none(), "exited on EOF");

    // SIGTERM: graceful leave, then exit 0.
    sigterm(&node.child);
    node.wait_line(t, |v| event_is(v, "leave_completed")).await;
    node.wait_line(t, |v| event_is(v, "stopped")).await;
    let status = tokio::time::timeout(t, node.child.wait())
        .await
        .expect("exits after stopped")
        .unwrap();
    assert!(status.success(), "{status}");
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Left)).await;
    peer.shutdown().await;
}

/// The reader of the example's lines goes away (a script that exits, `| head -1`): the example
/// stops printing and leaves gracefully, as on SIGTERM, instead of dying on the broken pipe
/// (found by review: `println!` panicked, and peers saw it down, not left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_leaves_when_its_reader_goes_away() {
    init_tracing();
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let mut child = spawn_example_beside(&bin, &peer, &[]);
    let t = Duration::from_secs(10);
    let (stdout, _) = read_started(&mut child, t).await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    drop(stdout);
    // Something to print: the example's next line finds the pipe closed.
    peer.set("poke", "1").await.unwrap();
    let status = tokio::time::timeout(t, child.wait())
        .await
        .expect("exits once its reader is gone")
        .unwrap();
    assert!(status.success(), "{status}");
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Left)).await;
    peer.shutdown().await;
}

/// SIGTERM while the example's stdout is full and nobody reads it (a stalled pipe): it still
/// leaves gracefully, so peers see it `Left`; once its lines are read it prints the rest,
/// `stopped` last, and exits 0. (Found by an operator's-eye review: the leave waited on the
/// blocked printer, 9 s and more, and a kill at the end of the grace period looked like a
/// crash.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_leaves_on_sigterm_while_its_stdout_is_full() {
    init_tracing();
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    // About 200 KB of `key_upserted` lines to print on joining, for a 64 KiB pipe that is
    // read only up to `started`: the example's loop blocks writing one of them.
    for i in 0..2_000 {
        peer.set(format!("k{i:04}"), "x".repeat(60)).await.unwrap();
    }
    let mut child = spawn_example_beside(&bin, &peer, &["--metrics-addr", "127.0.0.1:0"]);
    let t = Duration::from_secs(10);
    let (mut stdout, _) = read_started(&mut child, t).await;
    let metrics = stdout.next_line().await.unwrap().unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let addr = metrics["addr"].as_str().unwrap().to_owned();
    // Blocked: more events wait for the printer than the pipe could take, and stay waiting.
    scrape_until(&addr, "the example's printer blocked", t, |s| {
        s.get("tidings_subscriber_queued_events", &[]) >= 1_000.0
    })
    .await;
    sigterm(&child);
    // At once (well under a second here); a leave that waited on the blocked printer never
    // came while the lines stayed unread.
    let prompt = Duration::from_secs(3);
    wait_membership(&peer, prompt, |m| {
        m.status("ex") == Some(MemberStatus::Left)
    })
    .await;
    // Reading the lines lets it finish: all of them, `stopped` last, exit 0.
    let (mut keys, mut last) = (0, String::new());
    while let Some(line) = tokio::time::timeout(t, stdout.next_line())
        .await
        .expect("lines until the end")
        .unwrap()
    {
        keys += usize::from(line.contains("\"key_upserted\"") && line.contains("\"peer\""));
        last = line;
    }
    assert_eq!(keys, 2_000);
    assert!(last.contains("\"stopped\""), "{last}");
    let status = tokio::time::timeout(t, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    peer.shutdown().await;
}

/// SIGTERM as soon as `started` is printed is a graceful leave too, with `stopped` the last
/// line and exit 0 (found by review: the handler was installed only later, so a script that
/// waited for `started` and then stopped the node killed it outright). With `--set` flags the
/// window was widest: each set runs between `started` and the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_leaves_on_sigterm_right_after_started() {
    init_tracing();
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let sets: Vec<String> = (0..20).map(|i| format!("k{i}=v")).collect();
    let extra: Vec<&str> = sets.iter().flat_map(|s| ["--set", s.as_str()]).collect();
    let mut child = spawn_example_beside(&bin, &peer, &extra);
    let t = Duration::from_secs(10);
    let (mut stdout, first) = read_started(&mut child, t).await;
    sigterm(&child);
    let mut last = first;
    while let Some(line) = tokio::time::timeout(t, stdout.next_line())
        .await
        .expect("lines until it exits")
        .unwrap()
    {
        last = line;
    }
    let status = tokio::time::timeout(t, child.wait())
        .await
        .expect("exits after stopped")
        .unwrap();
    assert!(status.success(), "{status}");
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(event_is(&last, "stopped"), "last line {last}");
    peer.shutdown().await;
}

/// SIGHUP (the terminal the node runs in closed) and SIGINT (Ctrl-C) are graceful leaves too,
/// as SIGTERM is: the peer sees the node `Left`, never `Down`, and the node prints `stopped`
/// last and exits 0. (SIGHUP killed it outright before, and a closed terminal looked like a
/// crash to the cluster.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_leaves_on_sighup_and_sigint() {
    for signal in ["HUP", "INT"] {
        let (peer, mut node) = example_beside_a_peer(&[]).await;
        let t = Duration::from_secs(15);
        node.wait_line(t, |v| event_is(v, "started")).await;
        wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
        send_signal(&node.child, signal);
        // A killed node would go Down after a few 100 ms intervals and never Left.
        wait_membership(&peer, t, |m| {
            let status = m.status("ex");
            assert_ne!(status, Some(MemberStatus::Down), "SIG{signal}: seen down");
            status == Some(MemberStatus::Left)
        })
        .await;
        let status = node.stopped("ex", t).await;
        assert!(status.success(), "SIG{signal}: {status}");
        peer.shutdown().await;
    }
}

/// Started with SIGHUP ignored (as `nohup` starts it), the node keeps running on SIGHUP
/// instead of leaving (a handler would undo what the operator asked for; found by review),
/// and still leaves on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_started_under_nohup_ignores_sighup() {
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let child = spawn_piped(
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' HUP; exec "$0" "$@""#)
            .arg(&bin)
            .args(beside_args("ex", &peer)),
    );
    let mut node = NodeProcess::new(child);
    let t = Duration::from_secs(15);
    node.wait_line(t, |v| event_is(v, "started")).await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    send_signal(&node.child, "HUP");
    // A leave starts within milliseconds of the signal; a second is far past it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.child.try_wait().unwrap(), None, "exited on SIGHUP");
    assert_eq!(
        peer.membership().status("ex"),
        Some(MemberStatus::Alive),
        "left on SIGHUP"
    );
    send_signal(&node.child, "TERM");
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Left)).await;
    assert!(node.stopped("ex", t).await.success());
    peer.shutdown().await;
}

/// One exported series: its name, its labels and its value.
type ExpectedSeries = (&'static str, Vec<(&'static str, &'static str)>, u64);

/// Every series a node's metrics export, read from `st` as the module documentation says.
fn expected_series(st: &runtime::RuntimeStats) -> Vec<ExpectedSeries> {
    let c = &st.core;
    let one = |n, v| (n, vec![], v);
    let lab = |n, k, l, v| (n, vec![(k, l)], v);
    vec![
        one("tidings_udp_datagrams_sent_total", c.tx_datagrams),
        one("tidings_udp_datagrams_received_total", c.rx_datagrams),
        one("tidings_udp_sent_bytes_total", c.tx_datagram_bytes),
        one("tidings_udp_received_bytes_total", c.rx_datagram_bytes),
        one("tidings_tcp_frames_sent_total", c.tx_frames),
        one("tidings_tcp_frames_received_total", c.rx_frames),
        one("tidings_tcp_sent_bytes_total", c.tx_frame_bytes),
        one("tidings_tcp_received_bytes_total", c.rx_frame_bytes),
        lab(
            "tidings_tcp_connections_total",
            "direction",
            "inbound",
            st.tcp_connections_in,
        ),
        lab(
            "tidings_tcp_connections_total",
            "direction",
            "outbound",
            st.tcp_connections_out,
        ),
        lab(
            "tidings_packets_dropped_total",
            "reason",
            "malformed",
            c.rx_malformed,
        ),
        lab(
            "tidings_packets_dropped_total",
            "reason",
            "oversized",
            c.rx_oversized,
        ),
        lab(
            "tidings_packets_dropped_total",
            "reason",
            "own_tag",
            c.rx_own_tag,
        ),
        one("tidings_gossip_rounds_total", c.gossip_rounds),
        one("tidings_stream_syncs_total", c.stream_syncs),
        one("tidings_data_syncs_deferred_total", c.data_syncs_deferred),
        lab(
            "tidings_deltas_total",
            "result",
            "applied",
            c.deltas_applied,
        ),
        lab(
            "tidings_deltas_total",
            "result",
            "ignored",
            c.deltas_ignored,
        ),
        lab(
            "tidings_deltas_total",
            "result",
            "rejected",
            c.deltas_rejected,
        ),
        one("tidings_entries_applied_total", c.entries_applied),
        one("tidings_heartbeats_learned_total", c.heartbeats_learned),
        lab(
            "tidings_membership_events_total",
            "event",
            "joined",
            st.members_joined,
        ),
        lab(
            "tidings_membership_events_total",
            "event",
            "up",
            st.members_up,
        ),
        lab(
            "tidings_membership_events_total",
            "event",
            "down",
            st.members_down,
        ),
        lab(
            "tidings_membership_events_total",
            "event",
            "left",
            st.members_left,
        ),
        lab(
            "tidings_membership_events_total",
            "event",
            "expired",
            st.members_expired,
        ),
        lab(
            "tidings_membership_events_total",
            "event",
            "ready_changed",
            st.ready_changes,
        ),
        one("tidings_ownership_changes_total", st.ownership_changes),
        one("tidings_ring_rebuilds_total", st.ring_rebuilds),
        one("tidings_late_timers_total", st.late_timers),
        one("tidings_alone_warnings_total", st.alone_warnings),
        one("tidings_tcp_frames_waited_total", st.tcp_frames_waited),
        lab("tidings_udp_errors_total", "op", "send", st.udp_send_errors),
        lab(
            "tidings_udp_errors_total",
            "op",
            "receive",
            st.udp_recv_errors,
        ),
        one("tidings_udp_send_dropped_total", st.udp_send_dropped),
        one("tidings_tcp_errors_total", st.tcp_errors),
        one("tidings_tcp_frames_dropped_total", st.tcp_frames_dropped),
        one(
            "tidings_subscriber_lagged_events_total",
            st.subscriber_lagged,
        ),
        // Gauges.
        one("tidings_tcp_connections_open", st.tcp_connections_open),
        one("tidings_tcp_write_queued_bytes", st.tcp_write_queued_bytes),
        one("tidings_udp_max_datagram_bytes", c.max_datagram),
        one("tidings_local_health", c.local_health),
        one("tidings_superseded", c.superseded),
    ]
}

/// A scripted run whose membership events are known, then a stop: once the node has stopped
/// nothing moves, so every exported series must equal `Handle::stats` exactly: the final
/// counters are published on stop, a counter scraped twice is not counted twice, gauges follow
/// changes, and each membership event kind is counted under its own label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_metrics_equal_its_final_stats_and_its_events() {
    init_tracing();
    let nodes = runtime_common::cluster_with("fin", 4, |c| {
        c.protocol.left_grace = Duration::from_millis(2500);
    })
    .await;
    let (a, c, d) = (&nodes[0], &nodes[2], &nodes[3]);
    let (c_name, d_name) = (c.id().name.clone(), d.id().name.clone());
    let registry = Registry::new();
    Metrics::register(a, &registry).unwrap();
    // The ring settled: no more ring events from the start-up.
    wait_membership(a, Duration::from_secs(10), |m| m.ring.num_members() == 4).await;
    let before = a.stats().await;
    // A subscription nobody reads: its queue shows in `tidings_subscriber_queued_events`.
    let idle = a.subscribe();

    // Three readiness changes of c, each waited for in a's view, so a sees each.
    for ready in [false, true, false] {
        c.mark_ready(ready).await.unwrap();
        wait_membership(a, Duration::from_secs(10), |m| {
            m.member(&c_name).is_some_and(|x| x.ready == ready)
        })
        .await;
    }
    // A scrape while running: the next one must not count these values again.
    let running = poll_until(
        "the core's counters published",
        Duration::from_secs(10),
        || async { Scrape::of(&registry) },
        |s| {
            s.get("tidings_gossip_rounds_total", &[]) > 0.0
                && s.get("tidings_subscriber_queued_events", &[]) >= 2.0
                && s.get("tidings_peer_phi_max", &[]) > 0.0
        },
    )
    .await;
    assert_eq!(running.get("tidings_running", &[]), 1.0);
    assert_eq!(running.get("tidings_members", ALIVE), 4.0);
    // c leaves and is forgotten after `left_grace`; then d leaves, and a stops before d is
    // forgotten: two `Left`, one `Expired` (distinct counts, so swapping them shows).
    c.leave().await.unwrap();
    wait_membership(a, Duration::from_secs(10), |m| m.member(&c_name).is_none()).await;
    d.leave().await.unwrap();
    wait_membership(a, Duration::from_secs(10), |m| {
        m.status(&d_name) == Some(MemberStatus::Left)
    })
    .await;

    a.kill().await;
    let fin = a.stats().await;
    let s = Scrape::of(&registry);
    for (name, labels, value) in expected_series(&fin) {
        assert_eq!(
            s.get(name, &labels),
            value as f64,
            "{name} {labels:?}: {s:#?}"
        );
    }
    assert_eq!(s.get("tidings_running", &[]), 0.0);
    assert_eq!(s.get("tidings_ready", &[]), 0.0);
    assert_eq!(s.get("tidings_members", ALIVE), 2.0, "{s:#?}");
    assert_eq!(
        s.get("tidings_members", &[("status", "left")]),
        1.0,
        "{s:#?}"
    );
    // What a saw of c, each under its own kind (no peer went down meanwhile: nothing else).
    let delta = |f: fn(&runtime::RuntimeStats) -> u64| f(&fin) - f(&before);
    assert_eq!(delta(|s| s.ready_changes), 3, "{fin:?}");
    assert_eq!(delta(|s| s.members_left), 2, "{fin:?}");
    assert_eq!(delta(|s| s.members_expired), 1, "{fin:?}");
    assert_eq!(delta(|s| s.members_joined), 0, "{fin:?}");
    assert_eq!(delta(|s| s.members_down), 0, "{fin:?}");
    assert_eq!(delta(|s| s.members_up), 0, "{fin:?}");
    drop(idle);
    for h in &nodes[1..2] {
        h.kill().await;
    }
}

/// The first line seen so far, or read from now on, that satisfies `pred`: lines about
/// different members come in no fixed order.
async fn seen_or_wait(
    node: &mut NodeProcess,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    match node.seen.iter().find(|v| pred(v)) {
        Some(v) => v.clone(),
        None => node.wait_line(timeout, pred).await,
    }
}

/// The `node` example's JSON lines carry the fields its documentation promises, with the
/// values of the events they print: a member line's `addr` and `generation` are the member's,
/// `key_upserted` has its `value`, `ready_changed` its `ready`, `ownership` its `members` and
/// which side ranges moved to, `left` is printed, and `stopped` names the node. (The other
/// tests only look at `event`, `node` and `key`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_examples_json_lines_carry_their_fields() {
    init_tracing();
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let mut child = spawn_example_beside(&bin, &peer, &["--not-ready", "--set", "color=blue"]);
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut node = NodeProcess {
        child,
        stdout,
        seen: Vec::new(),
    };
    let t = Duration::from_secs(15);
    let member_line = |v: &serde_json::Value, event: &str, h: &runtime::Handle| {
        event_is(v, event) && v["node"] == h.id().name.as_str()
    };
    let started = seen_or_wait(&mut node, t, |v| event_is(v, "started")).await;
    assert_eq!(started["node"], "ex");
    let ex_addr: std::net::SocketAddr = started["addr"].as_str().unwrap().parse().unwrap();
    assert!(started["generation"].as_u64().unwrap() > 0, "{started}");
    assert_ne!(ex_addr.port(), 0, "{started}");

    let joined = seen_or_wait(&mut node, t, |v| member_line(v, "joined", &peer)).await;
    assert_eq!(joined["addr"], peer.id().addr.to_string(), "{joined}");
    assert_eq!(joined["generation"], peer.id().generation.0, "{joined}");
    let set = seen_or_wait(&mut node, t, |v| {
        event_is(v, "key_upserted") && v["key"] == "color"
    })
    .await;
    assert_eq!(set["node"], "ex", "{set}");
    assert_eq!(set["value"], "blue", "{set}");

    // Started not ready: its readiness goes from false to true, each printed as it is.
    node.send("ready true").await;
    seen_or_wait(&mut node, t, |v| {
        event_is(v, "ready_changed") && v["node"] == "ex" && v["ready"] == true
    })
    .await;
    let readiness: Vec<bool> = node
        .seen
        .iter()
        .filter(|v| event_is(v, "ready_changed") && v["node"] == "ex")
        .map(|v| v["ready"].as_bool().unwrap())
        .collect();
    assert_eq!(readiness, [false, true], "{:#?}", node.seen);

    // A ring of both, then a third member: it takes ranges from the others, so this node
    // relinquishes to it and acquires nothing.
    seen_or_wait(&mut node, t, |v| {
        event_is(v, "ownership") && v["members"] == 2
    })
    .await;
    let third = runtime::start(config("third", &[peer.id().addr]))
        .await
        .unwrap();
    let moved = seen_or_wait(&mut node, t, |v| {
        event_is(v, "ownership") && v["members"] == 3
    })
    .await;
    assert_eq!(moved["acquired_from"], serde_json::json!([]), "{moved}");
    let to = moved["relinquished_to"].as_array().unwrap();
    assert!(!to.is_empty() && to.iter().all(|n| n == "third"), "{moved}");
    // The fingerprint is the ring's: the peer's ring of the same three comes to equal it.
    let fingerprint = moved["fingerprint"].as_str().unwrap().to_owned();
    wait_membership(&peer, t, |m| {
        m.ring.fingerprint().to_string() == fingerprint
    })
    .await;

    third.leave().await.unwrap();
    let left = seen_or_wait(&mut node, t, |v| member_line(v, "left", &third)).await;
    assert_eq!(left["addr"], third.id().addr.to_string(), "{left}");
    assert_eq!(left["generation"], third.id().generation.0, "{left}");

    sigterm(&node.child);
    let done = seen_or_wait(&mut node, t, |v| event_is(v, "leave_completed")).await;
    assert!(done["confirmed"].as_u64().is_some(), "{done}");
    let stopped = seen_or_wait(&mut node, t, |v| event_is(v, "stopped")).await;
    assert_eq!(stopped["node"], "ex", "{stopped}");
    let status = tokio::time::timeout(t, node.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    third.shutdown().await;
    peer.shutdown().await;
}

/// The `node` example's `down` and `up` lines name the member, with its address and
/// generation: a second example process is frozen (SIGSTOP) until the first one prints it
/// down, then resumed (SIGCONT) until it prints it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_examples_down_and_up_lines_name_the_member() {
    init_tracing();
    let bin = example("node");
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let process = |mut child: Child| {
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        NodeProcess {
            child,
            stdout,
            seen: Vec::new(),
        }
    };
    let mut watcher = process(spawn_named_beside(
        &bin,
        "ex",
        &peer,
        &["--metrics-addr", "127.0.0.1:0"],
    ));
    let mut frozen = process(spawn_named_beside(&bin, "ex2", &peer, &[]));
    let t = Duration::from_secs(15);
    let started = frozen.wait_line(t, |v| event_is(v, "started")).await;
    let about_ex2 = |v: &serde_json::Value, event: &str| event_is(v, event) && v["node"] == "ex2";
    seen_or_wait(&mut watcher, t, |v| about_ex2(v, "joined")).await;
    let signal = |child: &Child, sig: &str| {
        let pid = child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal(&frozen.child, "-STOP");
    let down = watcher.wait_line(t, |v| about_ex2(v, "down")).await;
    signal(&frozen.child, "-CONT");
    let up = watcher.wait_line(t, |v| about_ex2(v, "up")).await;
    for line in [&down, &up] {
        assert_eq!(line["addr"], started["addr"], "{line}");
        assert_eq!(line["generation"], started["generation"], "{line}");
    }
    // The watcher's counters saw the same events (the peer may have flapped too: at least).
    let metrics = seen_or_wait(&mut watcher, t, |v| event_is(v, "metrics")).await;
    let scrape = Scrape::parse(
        &http_get(metrics["addr"].as_str().unwrap(), "/metrics")
            .await
            .body,
    );
    let events = |event| scrape.get("tidings_membership_events_total", &[("event", event)]);
    let printed = |event| watcher.seen.iter().filter(|v| event_is(v, event)).count() as f64;
    for event in ["down", "up"] {
        assert!(events(event) >= 1.0, "{event}: {}", events(event));
        assert!(events(event) >= printed(event), "{event}");
    }
    peer.shutdown().await;
}

// ----- the node example's flags, stdin commands and exit paths -----

impl NodeProcess {
    /// Reads `child`'s stdout as lines.
    fn new(mut child: Child) -> Self {
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Waits for `stopped`, checks that it is the last line and names the node, and returns
    /// the exit status.
    async fn stopped(&mut self, name: &str, t: Duration) -> std::process::ExitStatus {
        let stopped = seen_or_wait(self, t, |v| event_is(v, "stopped")).await;
        assert_eq!(stopped["node"], name, "{stopped}");
        let after = tokio::time::timeout(t, self.stdout.next_line())
            .await
            .expect("output ends after stopped")
            .unwrap();
        assert_eq!(after, None, "a line after stopped");
        tokio::time::timeout(t, self.child.wait())
            .await
            .expect("exits after stopped")
            .unwrap()
    }
}

/// A peer node, and the `node` example started beside it with `extra` flags (see
/// `spawn_example_beside`), its output read as lines.
async fn example_beside_a_peer(extra: &[&str]) -> (runtime::Handle, NodeProcess) {
    init_tracing();
    let peer = runtime::start(config("peer", &[])).await.unwrap();
    let node = NodeProcess::new(spawn_example_beside(&example("node"), &peer, extra));
    (peer, node)
}

/// Runs the example with `args` until it exits; its output. A run still going after 10 s
/// fails the test: the arguments should have been refused at once.
async fn run_to_exit(bin: &Path, args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?}: still running after 10 s (accepted?)"))
        .unwrap()
}

/// Bad flags are refused before the node starts, with a message naming the fault and nothing
/// on stdout: a missing `--name`, an unknown option (also last on the line), a flag without
/// its value, an address without its port, a zero
/// `--interval-ms`, TCP bounds the runtime refuses (a frame size that cannot carry the largest
/// entry, zero connections), and a `--metrics-addr` whose port is taken (not served
/// elsewhere).
#[tokio::test]
async fn the_node_example_refuses_bad_flags_before_it_starts() {
    let bin = example("node");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let base = ["--name", "bad", "--bind", "127.0.0.1:0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    for (args, says) in [
        (vec!["--bind", "127.0.0.1:0"], "--name is required"),
        (with(&["--frobnicate", "1"]), "unknown option --frobnicate"),
        // Last on the line, an unknown flag is still unknown, not short of a value.
        (
            with(&["--not-ready-typo"]),
            "unknown option --not-ready-typo",
        ),
        (with(&["--seed"]), "--seed needs a value"),
        (with(&["--bind", "127.0.0.1"]), "--bind takes IP:PORT"),
        (
            with(&["--interval-ms", "0"]),
            "--interval-ms must be positive",
        ),
        // The TCP bounds reach the runtime's validation.
        (
            with(&["--max-frame-size", "8MiB"]),
            "--max-frame-size takes BYTES",
        ),
        (
            with(&["--max-frame-size", "1048576"]),
            "does not fit max_frame_size 1048576",
        ),
        // A frame that holds the largest entry but not a whole state at the limits.
        (
            with(&["--max-frame-size", "2097152"]),
            "a node's whole state at the limits (5996148 bytes with framing) does not fit \
             max_frame_size 2097152",
        ),
        (
            with(&["--max-keys", "10000", "--max-state-bytes", "1MiB"]),
            "--max-state-bytes takes BYTES",
        ),
        (
            with(&["--max-connections", "0"]),
            "max_connections must be positive",
        ),
        (
            with(&["--max-connections-per-ip", "0"]),
            "max_connections_per_ip must be positive",
        ),
        (
            with(&["--udp-send-buffer", "1MiB"]),
            "--udp-send-buffer takes BYTES",
        ),
        (
            with(&["--udp-send-buffer", "4294967296"]),
            "udp_send_buffer is above the maximum of",
        ),
        (
            base.iter()
                .copied()
                .chain(["--metrics-addr", busy.as_str()])
                .collect(),
            "--metrics-addr",
        ),
    ] {
        let out = run_to_exit(&bin, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The example's source, where its flags are declared.
const NODE_SOURCE: &str = include_str!("../examples/node.rs");

/// The flags of the example's parser, read from its own table (`FLAGS` in
/// examples/node.rs): (long name, short name, the form of its value).
fn node_flags() -> Vec<(String, Option<String>, Option<String>)> {
    let start = NODE_SOURCE
        .find("const FLAGS: &[Flag] = &[")
        .expect("the FLAGS table in examples/node.rs");
    let end = start + NODE_SOURCE[start..].find("\n];").expect("the end of FLAGS");
    let quoted = |entry: &str, field: &str| -> Option<String> {
        let at = entry.find(field)? + field.len();
        entry[at..].split('"').next().map(str::to_owned)
    };
    NODE_SOURCE[start..end]
        .split("Flag {")
        .skip(1)
        .map(|entry| {
            (
                quoted(entry, "long: \"").expect("every flag has a long name"),
                quoted(entry, "short: Some(\""),
                quoted(entry, "value: Some(\""),
            )
        })
        .collect()
}

/// Every string literal of the example that is a flag and nothing else (`"--name"`, `"-h"`):
/// whatever its parser matches, in its table or elsewhere.
fn flag_literals() -> BTreeSet<&'static str> {
    let mut found = BTreeSet::new();
    let mut rest = NODE_SOURCE;
    while let Some(at) = rest.find("\"-") {
        rest = &rest[at + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        if rest[len..].starts_with('"') && !word.trim_start_matches('-').is_empty() {
            found.insert(word);
        }
    }
    found
}

/// The entries of a help text: a line indented by two spaces starts one, a line indented
/// further continues it; each with its whitespace runs made single spaces.
fn help_entries(text: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("   ") {
            if let Some(last) = entries.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else if let Some(entry) = line.strip_prefix("  ") {
            entries.push(entry.trim().to_owned());
        }
    }
    entries
        .iter()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `--help` and `-h` print on stdout, and exit 0: every flag of the parser's table with the
/// form of its value and, when it takes one, its default (or that it is required), and every
/// stdin command. The flags are read from the parser's own table, and every flag literal in
/// the example must be in that table, so a flag added without help fails here.
#[tokio::test]
async fn the_node_examples_help_lists_every_flag_and_stdin_command() {
    let bin = example("node");
    let flags = node_flags();
    let names: BTreeSet<&str> = flags
        .iter()
        .flat_map(|(long, short, _)| std::iter::once(long.as_str()).chain(short.as_deref()))
        .collect();
    for must in [
        "--name",
        "--bind",
        "--metrics-addr",
        "--help",
        "-h",
        "--version",
        "-V",
    ] {
        assert!(
            names.contains(must),
            "{must} not read from FLAGS: {flags:?}"
        );
    }
    for literal in flag_literals() {
        assert!(
            names.contains(literal),
            "{literal} appears in examples/node.rs but not in FLAGS, so not in --help"
        );
    }

    let out = run_to_exit(&bin, &["--help"]).await;
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(run_to_exit(&bin, &["-h"]).await.stdout, text.as_bytes());
    let entries = help_entries(&text);
    for (long, short, value) in &flags {
        let head = match short {
            Some(short) => format!("{short}, {long}"),
            None => long.clone(),
        };
        let entry = entries
            .iter()
            .find(|e| e == &&head || e.starts_with(&format!("{head} ")))
            .unwrap_or_else(|| panic!("{long} missing from --help:\n{text}"));
        if let Some(value) = value {
            assert!(
                entry.starts_with(&format!("{head} {value} ")),
                "{long} without its value {value}: {entry}"
            );
            assert!(
                entry.contains("(default: ") || entry.contains("(required)"),
                "{long} without its default: {entry}"
            );
        }
    }
    // The defaults the help states that are the library's: it says the library's own.
    let lib = runtime::RuntimeConfig::lan("x");
    for (flag, default) in [
        ("--cluster-id", lib.protocol.cluster_id.clone()),
        ("--max-frame-size", lib.protocol.max_frame_size.to_string()),
        (
            "--max-keys",
            lib.protocol.limits.max_keys_per_node.to_string(),
        ),
        (
            "--max-state-bytes",
            lib.protocol.limits.max_state_bytes_per_node.to_string(),
        ),
        ("--max-connections", lib.max_connections.to_string()),
        (
            "--max-connections-per-ip",
            lib.max_connections_per_ip.to_string(),
        ),
        ("--udp-send-buffer", lib.udp_send_buffer.to_string()),
    ] {
        let entry = entries
            .iter()
            .find(|e| e.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{text}"));
        assert!(
            entry.contains(&format!("(default: {default})"))
                || entry.contains(&format!("(default: {default},")),
            "{flag}: the library's default is {default}: {entry}"
        );
    }
    for command in [
        "set KEY=VALUE ",
        "delete KEY ",
        "ready true|false ",
        "leave ",
    ] {
        assert!(
            entries.iter().any(|e| e.starts_with(command)),
            "stdin command {command:?} missing from --help:\n{text}"
        );
    }
}

/// `--help` gives how often `--dns` is resolved again as the library does: every 30 s, or
/// 60 s with `--wan` (`RuntimeConfig::dns_refresh`). It said 30 s only, which a `--wan` node
/// does not do (found by review).
#[tokio::test]
async fn the_node_examples_help_gives_the_dns_refresh_with_and_without_wan() {
    let out = run_to_exit(&example("node"), &["--help"]).await;
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let entries = help_entries(&text);
    let entry = entries
        .iter()
        .find(|e| e.starts_with("--dns "))
        .unwrap_or_else(|| panic!("--dns missing from --help:\n{text}"));
    let (lan, wan) = (
        runtime::RuntimeConfig::lan("x").dns_refresh.as_secs(),
        runtime::RuntimeConfig::wan("x").dns_refresh.as_secs(),
    );
    assert!(
        entry.contains(&format!("every {lan} s")) && entry.contains(&format!("{wan} s with --wan")),
        "--dns: the library re-resolves every {lan} s, {wan} s with --wan: {entry}"
    );
}

/// `--version` and `-V` print `node VERSION`, the crate's version, on stdout and exit 0.
#[tokio::test]
async fn the_node_example_prints_its_version() {
    let bin = example("node");
    for flag in ["--version", "-V"] {
        let out = run_to_exit(&bin, &[flag]).await;
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("node {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

/// `--max-frame-size` and `--max-connections` bound what the node takes over TCP (the
/// Kubernetes manifest keeps stream memory within the pod's limit with them): a frame
/// announced one byte over `--max-frame-size` (well under the 8 MiB default) is refused as
/// its length is read, and with `--max-connections 1` a second connection is refused while
/// the first is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_bounds_frames_and_connections_by_its_flags() {
    let child = spawn_piped(
        tokio::process::Command::new(example("node"))
            .args(["--name", "bounded", "--bind", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--max-frame-size", "2097152", "--max-connections", "1"])
            .args(["--max-keys", "10000", "--max-state-bytes", "1572864"]),
    );
    let mut node = NodeProcess::new(child);
    let t = Duration::from_secs(15);
    let started = node.wait_line(t, |v| event_is(v, "started")).await;
    let gossip = started["addr"].as_str().unwrap().to_owned();
    let addr = node.metrics_addr(t).await;

    let mut oversized = tokio::net::TcpStream::connect(&gossip).await.unwrap();
    oversized
        .write_all(&2_097_153u32.to_be_bytes())
        .await
        .unwrap();
    scrape_until(&addr, "the oversized frame refused", t, |s| {
        s.get("tidings_tcp_frames_oversize_total", &[]) >= 1.0
    })
    .await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(t, oversized.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection stays open: {read:?}"
    );
    drop(oversized);
    scrape_until(&addr, "its slot given back", t, |s| {
        s.get("tidings_tcp_connections_open", &[]) == 0.0
    })
    .await;

    // Part of a frame: a connection in the middle of one is not closed as idle to make room
    // (for up to the 5 s read timeout), so the one slot stays taken and a second connection
    // is closed at once. The read timeout is wall-clock time: on a machine so loaded that it
    // passed before the second connection came (the slot then free), try again.
    let mut refused = false;
    for _ in 0..5 {
        let mut held = tokio::net::TcpStream::connect(&gossip).await.unwrap();
        held.write_all(&[0, 0, 0, 100, 0]).await.unwrap();
        scrape_until(&addr, "the held connection open", t, |s| {
            s.get("tidings_tcp_connections_open", &[]) == 1.0
        })
        .await;
        let mut second = tokio::net::TcpStream::connect(&gossip).await.unwrap();
        let mut byte = [0u8; 1];
        // Accepted, it would stay open (idle connections close after 10 s at the soonest).
        let closed = tokio::time::timeout(Duration::from_secs(2), second.read(&mut byte)).await;
        if matches!(closed, Ok(Ok(0) | Err(_))) {
            refused = true;
            break;
        }
        drop((held, second));
        scrape_until(&addr, "both slots given back", t, |s| {
            s.get("tidings_tcp_connections_open", &[]) == 0.0
        })
        .await;
    }
    assert!(refused, "a second connection was never refused");
    scrape_until(&addr, "the refusal counted", t, |s| {
        s.get("tidings_tcp_connections_refused_total", &[]) >= 1.0
    })
    .await;
}

/// `--advertise` is the address the node gives its peers: `started` shows it, not the bound
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_gives_out_its_advertise_address() {
    let bin = example("node");
    let mut child = spawn_piped(
        tokio::process::Command::new(&bin)
            .args(["--name", "adv", "--bind", "127.0.0.1:0"])
            .args(["--advertise", "127.0.0.1:9"]),
    );
    let (_stdout, first) = read_started(&mut child, Duration::from_secs(10)).await;
    let started: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(started["addr"], "127.0.0.1:9", "{started}");
}

/// `--cluster-id` names the node's cluster: beside a peer of cluster `blue` it joins
/// (nodes of other clusters ignore each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_joins_the_cluster_its_cluster_id_names() {
    init_tracing();
    let bin = example("node");
    let mut c = config("peer", &[]);
    c.protocol.cluster_id = "blue".into();
    let peer = runtime::start(c).await.unwrap();
    let mut node = NodeProcess::new(spawn_example_beside(&bin, &peer, &["--cluster-id", "blue"]));
    let t = Duration::from_secs(15);
    node.wait_line(t, |v| event_is(v, "joined") && v["node"] == "peer")
        .await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    peer.shutdown().await;
}

/// `--interval-ms` sets the gossip interval: at 20 ms the node counts 60 gossip rounds within
/// 10 s of starting, which the default 200 ms (50 rounds in 10 s) could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_gossips_at_its_interval_ms() {
    // `spawn_example_beside` passes `--interval-ms 100` before these: the last one counts.
    let (peer, mut node) =
        example_beside_a_peer(&["--interval-ms", "20", "--metrics-addr", "127.0.0.1:0"]).await;
    let t = Duration::from_secs(10);
    let addr = node.metrics_addr(t).await;
    scrape_until(&addr, "60 gossip rounds", t, |s| {
        s.get("tidings_gossip_rounds_total", &[]) >= 60.0
    })
    .await;
    peer.shutdown().await;
}

/// `--wan` takes the WAN settings, 1-s gossip among them: four rounds take at least 2 s of
/// wall time (about 4 s), where the LAN's 200 ms would take 0.8 s. A slower machine only
/// lengthens them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_gossips_once_a_second_with_wan() {
    let mut node = NodeProcess::new(spawn_piped(
        tokio::process::Command::new(example("node")).args([
            "--name",
            "far",
            "--bind",
            "127.0.0.1:0",
            "--wan",
            "--metrics-addr",
            "127.0.0.1:0",
        ]),
    ));
    let t = Duration::from_secs(15);
    let addr = node.metrics_addr(t).await;
    let rounds = |s: &Scrape| s.get("tidings_gossip_rounds_total", &[]);
    let first = rounds(&scrape_until(&addr, "a first round", t, |s| rounds(s) >= 1.0).await);
    // Wall time: the rounds are the example's, on its own clock.
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    scrape_until(&addr, "four more rounds", t, |s| rounds(s) >= first + 4.0).await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "four rounds in {:?}",
        start.elapsed()
    );
}

/// `--ready-after-ms` starts the node not ready and marks it ready once that time has passed:
/// its readiness is printed false, then true, and peers see it ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_turns_ready_after_ready_after_ms() {
    let (peer, mut node) = example_beside_a_peer(&["--ready-after-ms", "500"]).await;
    let t = Duration::from_secs(15);
    let own_readiness = |v: &serde_json::Value| event_is(v, "ready_changed") && v["node"] == "ex";
    node.wait_line(t, |v| own_readiness(v) && v["ready"] == true)
        .await;
    let readiness: Vec<bool> = node
        .seen
        .iter()
        .filter(|v| own_readiness(v))
        .map(|v| v["ready"].as_bool().unwrap())
        .collect();
    assert_eq!(readiness, [false, true], "{:#?}", node.seen);
    wait_membership(&peer, t, |m| m.member("ex").is_some_and(|x| x.ready)).await;
    peer.shutdown().await;
}

/// The stdin commands the other tests leave out, and HTTP methods: `ready false` marks the
/// node not ready (printed; `/ready` answers 503); a `set` the node refuses prints an `error`
/// naming it; `key_deleted` names the node, and deleting a key it no longer holds is an
/// `error`; anything but GET or HEAD gets 405; and `leave`
/// leaves gracefully, as SIGTERM does: `left` about itself, `leave_completed` confirmed by
/// its one peer, `stopped` last, exit 0, and the peer sees it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_obeys_ready_false_and_leave_on_stdin() {
    let (peer, mut node) = example_beside_a_peer(&["--metrics-addr", "127.0.0.1:0"]).await;
    let t = Duration::from_secs(15);
    let addr = node.metrics_addr(t).await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    let refused = http_request(&addr, "POST", "/ready").await;
    assert_eq!(refused.status, 405);
    assert_eq!(
        refused.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
    assert_eq!(http_get(&addr, "/ready").await.status, 200);

    node.send("ready false").await;
    node.wait_line(t, |v| {
        event_is(v, "ready_changed") && v["node"] == "ex" && v["ready"] == false
    })
    .await;
    assert_eq!(http_get(&addr, "/ready").await.status, 503);

    node.send("set tidings:weight=2").await;
    let err = node.wait_line(t, |v| event_is(v, "error")).await;
    assert!(
        err["message"].as_str().unwrap().contains("tidings:weight"),
        "{err}"
    );

    node.send("set color=blue").await;
    node.wait_line(t, |v| event_is(v, "key_upserted") && v["key"] == "color")
        .await;
    node.send("delete color").await;
    let deleted = node
        .wait_line(t, |v| event_is(v, "key_deleted") && v["key"] == "color")
        .await;
    assert_eq!(deleted["node"], "ex", "{deleted}");
    // Deleting it again: an error, not silence a script would wait on for ever.
    node.send("delete color").await;
    let err = node.wait_line(t, |v| event_is(v, "error")).await;
    assert!(
        err["message"].as_str().unwrap().contains("no such key"),
        "{err}"
    );

    node.send("leave").await;
    node.wait_line(t, |v| event_is(v, "left") && v["node"] == "ex")
        .await;
    let done = seen_or_wait(&mut node, t, |v| event_is(v, "leave_completed")).await;
    assert_eq!(done["confirmed"], 1, "{done}");
    let status = node.stopped("ex", t).await;
    assert!(status.success(), "{status}");
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Left)).await;
    peer.shutdown().await;
}

/// A burst of stdin commands does not starve the printer: 5,000 `set`s piped at once, each
/// followed by a malformed line, print every key's `key_upserted`, none lost to `lagged`, and
/// each before the `error` of the line after its `set`. (The loop took stdin ahead of queued
/// events, so the errors, printed as their lines are read, all came before the keys, which
/// waited until stdin ran dry; a burst past the printer's 65,536 events ended in `lagged`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_commands_do_not_starve_the_node_examples_printer() {
    init_tracing();
    let child = spawn_piped(tokio::process::Command::new(example("node")).args([
        "--name",
        "solo",
        "--bind",
        "127.0.0.1:0",
    ]));
    let mut node = NodeProcess::new(child);
    let t = Duration::from_secs(60);
    node.wait_line(t, |v| event_is(v, "started")).await;
    const N: usize = 5_000;
    let burst: String = (0..N)
        .map(|i| format!("set k{i}=v\nset bad{i}\n"))
        .collect();
    // The example reads stdin on a thread of its own whatever it prints, so this returns
    // while its output waits to be read.
    node.send_bytes(burst.as_bytes()).await;
    let last_key = format!("k{}", N - 1);
    let last_error = format!("\"set bad{}\"", N - 1);
    seen_or_wait(&mut node, t, |v| {
        event_is(v, "error") && v["message"].as_str().unwrap().contains(&last_error)
    })
    .await;
    seen_or_wait(&mut node, t, |v| {
        event_is(v, "key_upserted") && v["key"] == last_key.as_str()
    })
    .await;
    assert!(
        !node.seen.iter().any(|v| event_is(v, "lagged")),
        "a lagged line"
    );
    let (mut key_at, mut error_at) = (vec![None; N], vec![None; N]);
    for (at, v) in node.seen.iter().enumerate() {
        if event_is(v, "key_upserted") && v["node"] == "solo" {
            let i: usize = v["key"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(key_at[i].replace(at), None, "k{i} printed twice");
        } else if event_is(v, "error") {
            let message = v["message"].as_str().unwrap();
            let i: usize = message
                .rsplit("bad")
                .next()
                .and_then(|rest| rest.strip_suffix('"'))
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("an unexpected error: {message}"));
            error_at[i] = Some(at);
        }
    }
    for i in 0..N {
        let key = key_at[i].unwrap_or_else(|| panic!("k{i} never printed"));
        let error = error_at[i].unwrap_or_else(|| panic!("bad{i} never reported"));
        assert!(
            key < error,
            "k{i} printed at line {key}, after the error of the next command at line {error}"
        );
    }
}

/// A newer process under this node's name replaces it: the example prints `superseded` with
/// the newer one's address and generation, then `stopped` last, and exits 1 (it stopped
/// without leaving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_reports_being_superseded_and_exits_1() {
    let (peer, mut node) = example_beside_a_peer(&[]).await;
    let t = Duration::from_secs(15);
    let started = node.wait_line(t, |v| event_is(v, "started")).await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    let mut c = config("ex", &[peer.id().addr]);
    c.generation = Some(started["generation"].as_u64().unwrap() + 1);
    let newer = runtime::start(c).await.unwrap();
    let line = node.wait_line(t, |v| event_is(v, "superseded")).await;
    assert_eq!(line["node"], "ex", "{line}");
    assert_eq!(line["addr"], newer.id().addr.to_string(), "{line}");
    assert_eq!(line["generation"], newer.id().generation.0, "{line}");
    let status = node.stopped("ex", t).await;
    assert_eq!(status.code(), Some(1), "{status}");
    newer.shutdown().await;
    peer.shutdown().await;
}

/// A key as `--keyring-file` takes it: 64 hexadecimal digits.
fn hex_key(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ids a `keyring` line prints for `ring`, the sealing key's first.
fn printed_ids(ring: &tidings::Keyring) -> serde_json::Value {
    ring.key_ids().map(|id| format!("{id:08x}")).collect()
}

/// A file of this test's own in the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tidings-{}-{name}", std::process::id()));
        let file = Self(path);
        file.write(text);
        file
    }

    /// Replaces the contents whole (a rename, as Kubernetes swaps a mounted Secret), so the
    /// node never reads a half-written file.
    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `--keyring-file` seals with the file's keys and follows its changes: the node joins a peer
/// holding the same key and prints the ids in use; the three steps of a rotation (new key
/// added, made primary, old key removed) each change the keys in use, the first two on
/// `reload`, the last by the periodic re-read alone; a node holding only the new key then
/// joins through the example (which must both open and seal with it); a file that turns bad
/// prints an error that names the line but not its text, and the keys in use stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_seals_with_its_keyring_file_and_follows_its_changes() {
    init_tracing();
    let (old, new) = ([0x11u8; 32], [0x22u8; 32]);
    let keyring = |keys: &[[u8; 32]]| {
        let mut ring = tidings::Keyring::new(keys[0]);
        for k in &keys[1..] {
            ring = ring.with_key(*k);
        }
        ring
    };
    // A byte-order mark, comments, a comment after each key: all ignored.
    let file_of = |keys: &[[u8; 32]]| {
        let lines: Vec<String> = keys
            .iter()
            .map(|k| format!("{} # rotated", hex_key(k)))
            .collect();
        format!(
            "\u{feff}# the cluster's keys, sealing key first\n\n{}\n",
            lines.join("\n")
        )
    };
    let file = TempFile::new("keyring-rotation", &file_of(&[old]));
    let mut c = config("peer", &[]);
    c.protocol.keyring = Some(keyring(&[old]));
    let peer = runtime::start(c).await.unwrap();
    let mut node = NodeProcess::new(spawn_example_beside(
        &example("node"),
        &peer,
        &["--keyring-file", file.path()],
    ));
    let t = Duration::from_secs(15);
    let is_keyring = |v: &serde_json::Value| event_is(v, "keyring");
    let started = node.wait_line(t, |v| event_is(v, "started")).await;
    let printed = node.wait_line(t, is_keyring).await;
    assert_eq!(
        printed["key_ids"],
        printed_ids(&keyring(&[old])),
        "{printed}"
    );
    node.wait_line(t, |v| event_is(v, "joined") && v["node"] == "peer")
        .await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;

    // Step 1: the new key added everywhere (it opens, the old one still seals).
    let both = keyring(&[old, new]);
    peer.set_keyring(Some(both.clone()), false, false)
        .await
        .unwrap();
    file.write(&file_of(&[old, new]));
    node.send("reload").await;
    let printed = node.wait_line(t, is_keyring).await;
    assert_eq!(printed["key_ids"], printed_ids(&both), "{printed}");
    // Step 2: the new key made primary everywhere.
    let swapped = keyring(&[new, old]);
    peer.set_keyring(Some(swapped.clone()), false, false)
        .await
        .unwrap();
    file.write(&file_of(&[new, old]));
    node.send("reload").await;
    let printed = node.wait_line(t, is_keyring).await;
    assert_eq!(printed["key_ids"], printed_ids(&swapped), "{printed}");
    // Step 3: the old key removed, picked up by the periodic re-read (every 10 s).
    file.write(&file_of(&[new]));
    let printed = node.wait_line(Duration::from_secs(25), is_keyring).await;
    assert_eq!(
        printed["key_ids"],
        printed_ids(&keyring(&[new])),
        "{printed}"
    );
    peer.set_keyring(Some(keyring(&[new])), false, false)
        .await
        .unwrap();

    // Only the new key: the example must open its packets and seal its answers with it.
    let ex_addr: std::net::SocketAddr = started["addr"].as_str().unwrap().parse().unwrap();
    let mut c = config("third", &[ex_addr]);
    c.protocol.keyring = Some(keyring(&[new]));
    let third = runtime::start(c).await.unwrap();
    wait_membership(&third, t, |m| {
        m.status("ex") == Some(MemberStatus::Alive) && m.status("peer") == Some(MemberStatus::Alive)
    })
    .await;

    // A file turned bad: an error naming the line, never its text; the keys stay.
    let typo = &hex_key(&new)[..63];
    file.write(&format!("# rotated\n{typo}\n"));
    node.send("reload").await;
    let err = node.wait_line(t, |v| event_is(v, "error")).await;
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("line 2 is not a key"), "{err}");
    assert!(message.contains("the keys in use stay"), "{err}");
    assert!(
        !message.contains(&typo[..16]),
        "the key's text printed: {err}"
    );
    // Fixed again: the periodic read says so, though the keys did not change; and `reload`
    // answers with them too.
    file.write(&file_of(&[new]));
    let printed = node
        .wait_line(Duration::from_secs(25), |v| {
            is_keyring(v) || event_is(v, "error")
        })
        .await;
    assert_eq!(
        printed["key_ids"],
        printed_ids(&keyring(&[new])),
        "{printed}"
    );
    node.send("reload").await;
    let printed = node
        .wait_line(t, |v| is_keyring(v) || event_is(v, "error"))
        .await;
    assert_eq!(
        printed["key_ids"],
        printed_ids(&keyring(&[new])),
        "{printed}"
    );
    wait_membership(&third, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    third.shutdown().await;
    peer.shutdown().await;
}

/// `--plaintext send` with a keyring talks to a plaintext peer (the first step of turning
/// encryption on by rolling restarts): the example joins it, and it sees the example. Without
/// the flag the example seals and the plaintext peer drops what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_with_plaintext_send_joins_a_plaintext_peer() {
    let file = TempFile::new("keyring-send", &format!("{}\n", hex_key(&[0x33; 32])));
    let (peer, mut node) =
        example_beside_a_peer(&["--keyring-file", file.path(), "--plaintext", "send"]).await;
    let t = Duration::from_secs(15);
    node.wait_line(t, |v| event_is(v, "joined") && v["node"] == "peer")
        .await;
    wait_membership(&peer, t, |m| m.status("ex") == Some(MemberStatus::Alive)).await;
    peer.shutdown().await;
}

/// A keyring the example cannot use is refused before `started`, naming the file and the fault
/// and never a line's text: a missing file, a file with no key, a line that is not a key, an
/// unknown `--plaintext` mode, and `--plaintext` without `--keyring-file`.
#[tokio::test]
async fn the_node_example_refuses_a_bad_keyring_before_it_starts() {
    let bin = example("node");
    let good = TempFile::new("keyring-good", &format!("{}\n", hex_key(&[0x44; 32])));
    let empty = TempFile::new("keyring-empty", "# no key yet\n\n");
    let secret_typo = format!("{}z", &hex_key(&[0x55; 32])[..63]);
    let bad = TempFile::new(
        "keyring-bad",
        &format!("{}\n{secret_typo}\n", hex_key(&[1; 32])),
    );
    let missing = std::env::temp_dir().join(format!("tidings-{}-none", std::process::id()));
    let missing = missing.to_str().unwrap();
    let base = ["--name", "bad", "--bind", "127.0.0.1:0"];
    for (extra, says) in [
        (
            vec!["--keyring-file", missing],
            format!("--keyring-file {missing}"),
        ),
        (vec!["--keyring-file", empty.path()], "no key".to_owned()),
        (
            vec!["--keyring-file", bad.path()],
            "line 2 is not a key".to_owned(),
        ),
        (
            vec!["--keyring-file", good.path(), "--plaintext", "maybe"],
            "--plaintext takes off, accept or send".to_owned(),
        ),
        (
            vec!["--plaintext", "send"],
            "--plaintext needs --keyring-file".to_owned(),
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let out = run_to_exit(&bin, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stdout.is_empty(), "{args:?}: printed something");
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(&secret_typo[..16]),
            "{args:?}: a key's text: {stderr}"
        );
    }
}

/// A keyring file whose read blocks (a FIFO nobody writes to, standing for a hung network
/// filesystem) holds up neither the node's commands nor its exit: `reload` answers with an
/// error within about a second, the periodic re-read starts no second read, and `leave` ends
/// in `stopped` and an exit. Before, the file was read on the loop, which then blocked for
/// good: no line, no command, no exit (found by review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_file_that_blocks_holds_up_neither_commands_nor_the_exit() {
    let file = TempFile::new("keyring-fifo", &format!("{}\n", hex_key(&[0x66; 32])));
    let (_peer, mut node) = example_beside_a_peer(&["--keyring-file", file.path()]).await;
    let t = Duration::from_secs(15);
    node.wait_line(t, |v| event_is(v, "keyring")).await;
    // Swapped in whole, as the file's other changes.
    let fifo = file.0.with_extension("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::rename(&fifo, &file.0).unwrap();
    node.send("reload").await;
    let error = node
        .wait_line(Duration::from_secs(5), |v| event_is(v, "error"))
        .await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("not read within")),
        "{error}"
    );
    node.send("leave").await;
    assert!(node.stopped("ex", t).await.success());
}

/// `GET /members` gives the node's view of the cluster as JSON (both members alive, with their
/// addresses and generations, the ring's fingerprint equal to the peer's once both have built
/// it), `GET /owners/KEY` the peer's owners of a key on that ring, and `GET /members/NAME` one
/// member with its keys (the name percent-decoded); an
/// unknown name, or a malformed escape, is 404. A member marked down shows as `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_serves_its_view_of_the_members_as_json() {
    let (peer, mut node) = example_beside_a_peer(&["--metrics-addr", "127.0.0.1:0"]).await;
    let t = Duration::from_secs(15);
    let addr = node.metrics_addr(t).await;
    peer.set("color", "blue").await.unwrap();
    node.wait_line(t, |v| event_is(v, "key_upserted") && v["key"] == "color")
        .await;
    // The fingerprint the peer's ring has once both are on it, which the example must match.
    let ring = wait_membership(&peer, t, |m| m.ring.num_members() == 2)
        .await
        .ring
        .fingerprint();
    let get_json = |path: &'static str| {
        let addr = addr.clone();
        async move {
            let r = http_get(&addr, path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.headers["content-type"], "application/json");
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
        }
    };
    let view = poll_until(
        "the example's ring",
        t,
        || get_json("/members"),
        |v| v["fingerprint"] == ring.to_string(),
    )
    .await;
    assert_eq!(view["node"], "ex", "{view}");
    assert_eq!(view["live"], 2, "{view}");
    let members = view["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ex", "peer"], "{view}");
    let listed = &members[1];
    assert_eq!(listed["addr"], peer.id().addr.to_string(), "{view}");
    assert_eq!(listed["generation"], peer.id().generation.0, "{view}");
    assert_eq!(listed["status"], "alive", "{view}");
    assert_eq!(listed["ready"], true, "{view}");

    // Owners of a key (percent-encoded in the path): the peer's answer, on the same ring.
    for key in ["user/42", "a key", "k"] {
        let path = format!("/owners/{}", key.replace('/', "%2F").replace(' ', "%20"));
        let r = http_get(&addr, &path).await;
        assert_eq!(r.status, 200, "{path}");
        let owners: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(owners["key"], key, "{owners}");
        assert_eq!(
            owners["owners"],
            serde_json::json!(peer.owners(key, 3)),
            "{owners}"
        );
        assert_eq!(owners["owners"].as_array().unwrap().len(), 2, "{owners}");
        assert_eq!(owners["fingerprint"], ring.to_string(), "{owners}");
    }

    let one = get_json("/members/p%65er").await;
    assert_eq!(one["name"], "peer", "{one}");
    assert!(one["phi"].as_f64().is_some(), "{one}");
    assert_eq!(one["keys"], serde_json::json!(["color"]), "{one}");
    assert_eq!(
        one.get("values"),
        None,
        "values without --http-values: {one}"
    );
    for path in [
        "/members/nobody",
        "/members/p%6",
        "/members/p%+5er",
        "/membersx",
    ] {
        assert_eq!(http_get(&addr, path).await.status, 404, "{path}");
    }

    // With --http-values, values too.
    let mut shown = NodeProcess::new(spawn_named_beside(
        &example("node"),
        "ex2",
        &peer,
        &["--metrics-addr", "127.0.0.1:0", "--http-values"],
    ));
    let addr2 = shown.metrics_addr(t).await;
    let one = poll_until(
        "ex2 holding the peer's key",
        t,
        || {
            let addr2 = addr2.clone();
            async move {
                let body = http_get(&addr2, "/members/peer").await.body;
                serde_json::from_str::<serde_json::Value>(&body).ok()
            }
        },
        |v| {
            v.as_ref()
                .is_some_and(|v| v["keys"] == serde_json::json!(["color"]))
        },
    )
    .await
    .unwrap();
    assert_eq!(one["values"], serde_json::json!({"color": "blue"}), "{one}");

    peer.kill().await;
    poll_until(
        "the peer down",
        Duration::from_secs(30),
        || get_json("/members"),
        |v| {
            let members = v["members"].as_array().unwrap();
            members
                .iter()
                .any(|m| m["name"] == "peer" && m["status"] == "down")
        },
    )
    .await;
}

/// `--ring-ready-only` keeps a node that is not ready off the ring: started `--not-ready`
/// beside a peer of the same setting, its ring (read from `/members`) comes to equal the
/// peer's, which holds the peer alone; once `ready true`, it joins the ring and acquires from
/// the peer. (Without the flag its ring holds itself and never equals the peer's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_with_ring_ready_only_owns_nothing_until_ready() {
    init_tracing();
    let mut c = config("peer", &[]);
    c.protocol.ring_ready_only = true;
    let peer = runtime::start(c).await.unwrap();
    let mut node = NodeProcess::new(spawn_example_beside(
        &example("node"),
        &peer,
        &[
            "--not-ready",
            "--ring-ready-only",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    ));
    let t = Duration::from_secs(15);
    let addr = node.metrics_addr(t).await;
    let peers_ring = wait_membership(&peer, t, |m| {
        m.status("ex") == Some(MemberStatus::Alive) && m.ring.num_members() == 1
    })
    .await
    .ring
    .fingerprint()
    .to_string();
    let fingerprint = || {
        let addr = addr.clone();
        async move {
            let body = http_get(&addr, "/members").await.body;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["fingerprint"].as_str().unwrap().to_owned()
        }
    };
    poll_until("the example's ring without itself", t, fingerprint, |f| {
        *f == peers_ring
    })
    .await;
    node.send("ready true").await;
    let owned = node.wait_line(t, |v| event_is(v, "ownership")).await;
    assert_eq!(owned["members"], 2, "{owned}");
    assert_eq!(
        owned["acquired_from"],
        serde_json::json!(["peer"]),
        "{owned}"
    );
    wait_membership(&peer, t, |m| m.ring.contains("ex")).await;
    peer.shutdown().await;
}

/// `--ring-min-members 2`: the example and a peer of the same setting form a ring of two, and
/// once the example is killed the peer, alone, owns nothing (at the default it would own
/// every key: its ring would hold itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_with_ring_min_members_leaves_a_lone_peer_owning_nothing() {
    init_tracing();
    let mut c = config("peer", &[]);
    c.protocol.ring_min_members = 2;
    let peer = runtime::start(c).await.unwrap();
    let mut node = NodeProcess::new(spawn_example_beside(
        &example("node"),
        &peer,
        &["--ring-min-members", "2"],
    ));
    let t = Duration::from_secs(15);
    let owned = node.wait_line(t, |v| event_is(v, "ownership")).await;
    assert_eq!(owned["members"], 2, "{owned}");
    wait_membership(&peer, t, |m| m.ring.num_members() == 2).await;
    assert!(peer.is_local_owner(b"k") || peer.owner(b"k").as_deref() == Some("ex"));
    node.child.kill().await.unwrap();
    let m = wait_membership(&peer, t, |m| {
        m.status("ex") == Some(MemberStatus::Down) && m.ring.num_members() == 0
    })
    .await;
    assert_eq!(m.owner(b"k"), None);
    assert!(!peer.is_local_owner(b"k"));
    peer.shutdown().await;
}

/// The example's HTTP server serves at most 64 connections at once: one more is served and
/// closes the oldest, so a client holding every slot cannot keep a probe out (before, every
/// connection got a task and a socket for as long as its client held it; then, briefly, the
/// newest was refused, which let such a client starve the probes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_examples_http_server_serves_at_most_64_connections_at_once() {
    let (_peer, mut node) = example_beside_a_peer(&["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = node.metrics_addr(Duration::from_secs(15)).await;
    let connect = || tokio::net::TcpStream::connect(addr.as_str());
    // 64 kept-alive connections, each answered once, so each is known to hold a slot.
    let mut held = Vec::new();
    for i in 0..64 {
        let mut s = connect().await.unwrap();
        let head = keep_alive_get(&mut s, "/live").await;
        assert!(head.starts_with("HTTP/1.1 200"), "connection {i}: {head}");
        held.push(s);
    }
    // The 65th is answered.
    let r = http_get(&addr, "/live").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The oldest was closed to make room; the second oldest is still served.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), held[0].read_to_end(&mut raw))
        .await
        .expect("the oldest closed within 5 s")
        .ok();
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    let head = keep_alive_get(&mut held[1], "/live").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Sends `GET path` on a kept-alive connection and reads its answer whole (headers and a
/// `content-length` body), leaving the connection open; the head.
async fn keep_alive_get(s: &mut tokio::net::TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return head.to_owned();
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering: {text}");
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("answered within 5 s")
}
