//! The task that owns the [`Node`]: it feeds it datagrams, frames, commands and timeouts, and
//! carries out what it asks (send, publish) after every input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, debug, info, warn};

use super::handle::{Command, LeaveOutcome, Membership, Shared};
use super::now;
use super::stats::{Published, bump};
use super::subscribe::Subscriber;
use super::tcp::{self, FrameSender, StreamEvent, TcpShared};
use super::udp::{self, RECV_BATCH, RECV_BUF};
use crate::error::Error;
use crate::event::{Event, KeyEvents};
use crate::id::NodeId;
use crate::node::{Channel, MemberStatus, Node, Transmit};
use crate::ring::Ring;
use crate::stats::Stats;

/// Extra time past the core's `leave_timeout` before the driver stops a leave on its own.
const LEAVE_SLACK: Duration = Duration::from_secs(1);
/// Longest wait, when stopping, for outbound connections to write their queued frames.
const FLUSH_ON_STOP: Duration = Duration::from_millis(500);
/// Addresses joined through (`Handle::join`) kept as seeds; the oldest go first.
const MAX_JOINED: usize = 1024;
/// How long the address of a closed inbound connection is remembered, so frames the core
/// addresses to it (a peer's ephemeral port) are dropped rather than dialled.
const CLOSED_INBOUND_MEMORY: Duration = Duration::from_secs(60);
/// Most closed inbound addresses remembered.
const CLOSED_INBOUND_MAX: usize = 4096;
/// A connection idle at least this long may be closed to make room for a new one.
const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);
/// Least time between two warnings about failing UDP sends or receives, and between two
/// warnings about packets or deltas the core dropped.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// How often the driver looks at the core's counters: to warn about dropped packets, and to
/// publish them for exporters (only while an exporter watches).
const STATS_REFRESH: Duration = Duration::from_secs(1);

/// How long a node with seeds may hear from no live peer before it warns that nobody answers
/// it. A seed that drops its packets (another `cluster_id` or keyring) warns only in the
/// seed's log, and the joining node otherwise sits alone in silence. A healthy join takes a
/// round trip and a state exchange, well under a second on a LAN, and the core's first
/// retries come at 1, 2 and 4 s: 10 s is past those and past a seed restarting.
const ALONE_WARN_FIRST: Duration = Duration::from_secs(10);
/// Longest time between two of those warnings: each doubles the wait until this, so a node
/// alone for a day says so every few minutes, not every second.
const ALONE_WARN_MAX: Duration = Duration::from_secs(300);
/// Seed addresses named in that warning; the rest are only counted (a DNS name can list
/// hundreds).
const ALONE_WARN_SEEDS: usize = 8;

/// A timer that fires later than this after its deadline means the task waited to run: input
/// may be queued, and is read before the timer is handled (see `Driver::run`). The timer wheel
/// rounds deadlines up to the next millisecond, so on-time wakes are late by up to about one.
const LATE_WAKE: Duration = Duration::from_millis(2);

/// A timer that fires later than this after its deadline is counted (`late_timers`): the task
/// was starved. Wider than `LATE_WAKE`, whose precaution is cheap: on-time wakes of an idle
/// node came 1.3 ms late at the median, 3.3 ms at the 99th percentile and up to 5 ms (the
/// timer wheel's and the OS's rounding), so at 2 ms the count grew in every healthy node.
const STARVED_WAKE: Duration = Duration::from_millis(10);

/// Stream events read before a late timer (see `Driver::drain_ready`).
const STREAM_DRAIN: usize = 4;

/// An open (or opening) stream connection the driver can queue frames on.
struct Conn {
    id: u64,
    tx: FrameSender,
    inbound: bool,
    /// When a frame was last queued on it or read from it.
    last_used: Instant,
}

/// Everything the owner task holds. Built by [`super::start`].
pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) udp: UdpSocket,
    pub(crate) udp_v6: bool,
    pub(crate) cmd_rx: mpsc::Receiver<Command>,
    pub(crate) subs_rx: mpsc::UnboundedReceiver<Subscriber>,
    pub(crate) stream_rx: mpsc::Receiver<StreamEvent>,
    pub(crate) seeds_rx: Option<mpsc::Receiver<Vec<SocketAddr>>>,
    /// Addresses given to [`Handle::join`](super::Handle::join): seeds for good, whatever DNS
    /// answers later.
    pub(crate) joined: Vec<SocketAddr>,
    /// The seeds other than those: the configured literal ones, then each DNS answer (which
    /// includes them). Kept apart so that an address `joined` lets go of stops being a seed.
    pub(crate) base_seeds: Vec<SocketAddr>,
    /// The resolver has names to look up and sent no seed set yet: the node expects seeds
    /// (`Node::expect_seeds`), whatever else sets them meanwhile (`Handle::join`).
    pub(crate) dns_pending: bool,
    /// The IPs the members of the last membership snapshot advertise (see `refresh_trusted`).
    pub(crate) member_ips: BTreeSet<IpAddr>,
    pub(crate) tcp: Arc<TcpShared>,
    /// Every background task of the node (accept loop, DNS, outbound connections): dropping
    /// the driver aborts them all.
    pub(crate) tasks: JoinSet<()>,
    /// The inbound connections' tasks (see `tcp::Inbound`): ended and waited for when stopping.
    pub(crate) inbound: tcp::Inbound,
    /// The accept loop and the DNS task, aborted first when stopping.
    pub(crate) services: Vec<AbortHandle>,
    pub(crate) membership_tx: watch::Sender<Arc<Membership>>,
    pub(crate) stopped_tx: watch::Sender<bool>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) leave_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// The driver's mutable state besides the node and the channels.
/// Where a write's answer goes.
type WriteReply = oneshot::Sender<Result<(), Error>>;

struct State {
    recv_buf: Box<[u8]>,
    conns: BTreeMap<SocketAddr, Conn>,
    closed_inbound: BTreeMap<SocketAddr, Instant>,
    subscribers: Vec<Subscriber>,
    /// Subscriptions taken from the channel but not yet served (see `take_subscribers`).
    /// Each with the position, in the events of the next flush, of the first event made
    /// after it was taken: it gets no event from before it.
    pending_subs: Vec<(Subscriber, usize)>,
    /// The key events the core was last told to emit.
    key_events: KeyEvents,
    leave_waiters: Vec<oneshot::Sender<LeaveOutcome>>,
    /// Answers to writes, sent at the end of the next flush: once the caller has its answer,
    /// the snapshots (`membership`, the ring) show the write, and a subscription made next
    /// starts after its events.
    replies: Vec<(WriteReply, Result<(), Error>)>,
    /// Set once leaving: stop by then even if the core never reports completion.
    stop_at: Option<Instant>,
    stopping: bool,
    killed: bool,
    cmds_open: bool,
    epoch: u64,
    last_warn: Option<Instant>,
    /// A wait for room in the UDP send buffer ran out and no datagram has gone since
    /// (`udp::send`).
    udp_stalled: bool,
    events: Vec<Event>,
    /// The core's ring as last published: cloned again whenever the core rebuilds it.
    ring: Arc<Ring>,
    /// When to look at the core's counters next.
    next_stats: Instant,
    /// The core's counters as of the last warning about dropped packets.
    warned_stats: Stats,
    last_fault_warn: Option<Instant>,
    /// Set while the node has seeds and no live peer (see `check_alone`).
    alone: Option<Alone>,
}

/// A spell of a node with seeds hearing from no live peer.
struct Alone {
    /// When it began.
    since: Instant,
    /// When to warn next.
    next: Instant,
    /// The wait before the warning after that one.
    wait: Duration,
    /// Since when a peer has been live, if one is now: the spell ends only once one has been
    /// for `ALONE_WARN_FIRST`, so a peer that comes up and is marked down again (UDP blocked,
    /// TCP open: each stream exchange brings it up) does not silence the warning (found by
    /// review).
    live_since: Option<Instant>,
}

impl Alone {
    /// The next step of a spell, at a tick `t`: `live` whether a peer is live, `joining`
    /// whether the node has seeds and is not leaving. Returns whether to warn now.
    fn step(spell: &mut Option<Self>, t: Instant, live: bool, joining: bool) -> bool {
        if !joining {
            *spell = None;
            return false;
        }
        if live {
            if let Some(a) = spell {
                let since = *a.live_since.get_or_insert(t);
                if t.saturating_duration_since(since) >= ALONE_WARN_FIRST {
                    *spell = None;
                }
            }
            return false;
        }
        let a = spell.get_or_insert(Self {
            since: t,
            next: t + ALONE_WARN_FIRST,
            wait: ALONE_WARN_FIRST,
            live_since: None,
        });
        a.live_since = None;
        if t < a.next {
            return false;
        }
        a.wait = (a.wait * 2).min(ALONE_WARN_MAX);
        a.next = t + a.wait;
        true
    }
}

impl State {
    /// A driver's state before its first input: no connection, no subscriber, `ring` as the
    /// published ring.
    fn new(ring: Arc<Ring>) -> Self {
        Self {
            recv_buf: vec![0u8; RECV_BUF].into_boxed_slice(),
            conns: BTreeMap::new(),
            closed_inbound: BTreeMap::new(),
            subscribers: Vec::new(),
            pending_subs: Vec::new(),
            key_events: KeyEvents::All,
            leave_waiters: Vec::new(),
            replies: Vec::new(),
            stop_at: None,
            stopping: false,
            killed: false,
            cmds_open: true,
            epoch: 0,
            last_warn: None,
            udp_stalled: false,
            events: Vec::new(),
            ring,
            next_stats: now(),
            warned_stats: Stats::default(),
            last_fault_warn: None,
            alone: None,
        }
    }
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut st = State::new(self.node.ring_arc());
        self.take_subscribers(&mut st);
        self.update_key_events(&mut st);
        self.publish_membership(&mut st);
        // The join's transmits, queued by `start`.
        self.flush(&mut st).await;
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        while !st.stopping {
            let deadline = [self.node.poll_timeout(), st.stop_at, Some(st.next_stats)]
                .into_iter()
                .flatten()
                .min();
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(d.into());
                }
                armed = deadline;
            }
            tokio::select! {
                cmd = self.cmd_rx.recv(), if st.cmds_open => self.on_command(&mut st, cmd),
                ev = self.stream_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_stream(&mut st, ev);
                    }
                }
                r = self.udp.recv_from(&mut st.recv_buf) => self.on_datagrams(&mut st, r),
                seeds = recv_opt(&mut self.seeds_rx) => self.on_seeds(seeds),
                () = &mut sleep, if deadline.is_some() => armed = None,
            }
            // Timers are judged by the clock, not by which branch woke us.
            self.take_subscribers(&mut st);
            let t = now();
            if let Some(due) = self.node.poll_timeout().filter(|&d| d <= t) {
                // Evidence first: what arrived while this task waited to run (an overloaded
                // host, a busy runtime) is read before the timers judge peers by their silence.
                // `select!` picks among ready branches at random, and a timer picked first after
                // such a wait convicted peers whose heartbeats sat unread in the socket (200
                // nodes in one process under load; BENCHMARKS.md, section 4). A timer on time
                // skips it: in an idle process the extra reads cost 3 % of its CPU.
                let late = t.saturating_duration_since(due);
                if late > LATE_WAKE {
                    self.drain_ready(&mut st);
                }
                if late > STARVED_WAKE {
                    bump(&self.shared.counters.late_timers);
                }
                self.node.handle_timeout(now());
            }
            let t = now();
            if st.stop_at.is_some_and(|d| d <= t) {
                warn!("leave did not complete in time; stopping");
                st.stopping = true;
            }
            if st.next_stats <= t {
                st.next_stats = t + STATS_REFRESH;
                self.forget_closed_subscribers(&mut st);
                self.check_stats(&mut st, t);
                self.check_alone(&mut st, t);
                // Inbound connections refused for want of a slot never reach this task: make
                // room here too, or connections that opened and went quiet (at least
                // `EVICT_MIN_IDLE`) would keep peers out until they idle out.
                self.make_room(&mut st);
            }
            self.flush(&mut st).await;
        }
        self.finish(st).await;
    }

    /// Takes new subscriptions off the channel and widens the core's key events to cover
    /// them. Called before the node handles any input: a subscription made before a command
    /// (or before a packet arrived) must see the events that input causes, so the core has
    /// to emit them; the subscriber itself is served at the next flush.
    fn take_subscribers(&mut self, st: &mut State) {
        let before = st.pending_subs.len();
        // Events are still queued in the core, or already drained into `st.events` (when
        // called from `flush`): this subscriber starts after all of them.
        let from = st.events.len() + self.node.queued_events();
        while let Ok(sub) = self.subs_rx.try_recv() {
            st.pending_subs.push((sub, from));
        }
        if st.pending_subs.len() > before {
            self.update_key_events(st);
        }
    }

    /// Drops subscriptions their owners dropped. Publishing finds them too, but only when an
    /// event they would take comes, and the key events only they asked for never come: a
    /// quiet node that handed out a subscription per request kept every one.
    fn forget_closed_subscribers(&mut self, st: &mut State) {
        let before = st.subscribers.len() + st.pending_subs.len();
        st.subscribers.retain(|s| !s.is_closed());
        st.pending_subs.retain(|(s, _)| !s.is_closed());
        if st.subscribers.len() + st.pending_subs.len() < before {
            self.update_key_events(st);
        }
    }

    /// Tells the core the union of the key events the subscribers want.
    fn update_key_events(&mut self, st: &mut State) {
        let wanted = st
            .subscribers
            .iter()
            .chain(st.pending_subs.iter().map(|(s, _)| s))
            .fold(KeyEvents::None, |acc, s| acc.union(s.key_events()));
        if wanted != st.key_events {
            debug!(?wanted, "key events");
            self.node.set_key_events(wanted.clone());
            st.key_events = wanted;
        }
    }

    /// A seed set from the resolver, or `None` once it is gone. Either way no first set is
    /// awaited any more: a resolver gone before sending one (its task failed) leaves the
    /// seeds as they are, and the node expecting none.
    fn on_seeds(&mut self, seeds: Option<Vec<SocketAddr>>) {
        let first = std::mem::take(&mut self.dns_pending);
        match seeds {
            Some(seeds) => {
                debug!(?seeds, "new seed set");
                self.set_seeds(seeds);
            }
            None => {
                self.seeds_rx = None;
                if first {
                    self.set_seeds(self.base_seeds.clone());
                }
            }
        }
    }

    /// Gives the node `seeds` and the addresses joined through since it started. Until the
    /// resolver's first set came, the node still expects seeds (`Node::set_seeds` alone
    /// would tell it none are coming).
    fn set_seeds(&mut self, mut seeds: Vec<SocketAddr>) {
        self.base_seeds.clone_from(&seeds);
        seeds.extend(self.joined.iter().copied());
        self.node.set_seeds(seeds);
        if self.dns_pending {
            self.node.expect_seeds();
        }
        self.refresh_trusted();
    }

    /// Tells the stream transport whose large frames need no strangers' budget: the known
    /// members' advertised IPs (as of the last snapshot) and every seed's (see
    /// `tcp::TcpShared::set_trusted`). Called whenever membership or the seeds change.
    fn refresh_trusted(&self) {
        let seeds = self.node.seeds().iter().map(SocketAddr::ip);
        let trusted = self.member_ips.iter().copied().chain(seeds).collect();
        self.tcp.set_trusted(trusted);
    }

    fn on_command(&mut self, st: &mut State, cmd: Option<Command>) {
        self.take_subscribers(st);
        let Some(cmd) = cmd else {
            // Every handle is gone: leave gracefully, then stop.
            st.cmds_open = false;
            info!("all handles dropped; leaving");
            self.start_leave(st, None);
            return;
        };
        let t = now();
        match cmd {
            Command::Set {
                key,
                value,
                ttl,
                reply,
            } => {
                let r = match ttl {
                    Some(ttl) => self.node.set_with_ttl(t, key, value, ttl),
                    None => self.node.set(t, key, value),
                };
                st.replies.push((reply, r));
            }
            Command::Delete { key, reply } => {
                st.replies.push((reply, self.node.delete(t, key)));
            }
            Command::SetReady { ready, reply } => {
                st.replies.push((reply, self.node.set_ready(t, ready)));
            }
            Command::SetKeyring {
                keyring,
                send_plaintext,
                accept_plaintext,
                reply,
            } => {
                let r = self
                    .node
                    .set_keyring(keyring, send_plaintext, accept_plaintext)
                    .map_err(Error::from);
                st.replies.push((reply, r));
            }
            Command::SetWeight { weight, reply } => {
                st.replies.push((reply, self.node.set_weight(t, weight)));
            }
            Command::Get { node, key, reply } => {
                let _ = reply.send(self.node.get(&node, &key).cloned());
            }
            Command::Values { key, reply } => {
                let mut values: Vec<(NodeId, Bytes)> = self
                    .node
                    .values(&key)
                    .map(|(id, v)| (id.clone(), v.clone()))
                    .collect();
                values.sort_by(|a, b| a.0.name.cmp(&b.0.name));
                let _ = reply.send(values);
            }
            Command::NodeState { node, reply } => {
                let _ = reply.send(self.node.node_state(&node).cloned());
            }
            Command::Phi { node, reply } => {
                let _ = reply.send(self.node.phi(&node, t));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.node.stats());
            }
            Command::Leave { reply } => self.start_leave(st, Some(reply)),
            Command::Join { addrs, reply } => {
                if self.node.is_leaving() {
                    let _ = reply.send(Err(Error::Left));
                    return;
                }
                for &addr in &addrs {
                    if !self.joined.contains(&addr) {
                        if self.joined.len() >= MAX_JOINED {
                            self.joined.remove(0);
                        }
                        self.joined.push(addr);
                    }
                }
                info!(?addrs, "joining through more addresses");
                // From the seeds other than joined ones: taken from the node's, an address
                // `joined` let go of stayed a seed for good (found by review).
                self.set_seeds(self.base_seeds.clone());
                // Tried now even if they were seeds already (an earlier exchange failed).
                self.node.exchange_with_seeds(&addrs);
                let _ = reply.send(Ok(()));
            }
            Command::Kill => {
                info!("killed");
                st.killed = true;
                st.stopping = true;
            }
        }
    }

    fn start_leave(&mut self, st: &mut State, reply: Option<oneshot::Sender<LeaveOutcome>>) {
        st.leave_waiters.extend(reply);
        if !self.node.is_leaving() {
            let t = now();
            info!("leaving");
            self.node.leave(t);
            st.stop_at = Some(t + self.leave_timeout + LEAVE_SLACK);
        }
    }

    fn on_datagrams(&mut self, st: &mut State, first: std::io::Result<(usize, SocketAddr)>) {
        self.take_subscribers(st);
        let mut r = first;
        for i in 1..=RECV_BATCH {
            match r {
                Ok((len, from)) => {
                    debug!(%from, len, "datagram");
                    let bytes = st.recv_buf.get(..len).unwrap_or_default();
                    self.node
                        .handle_datagram(now(), udp::canonical(from), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    bump(&self.shared.counters.udp_recv_errors);
                    if should_warn(&mut st.last_warn) {
                        warn!(error = %e, "UDP receive failed");
                    }
                    return;
                }
            }
            // Read only what this batch handles: the read after its last datagram lost that
            // datagram (every 65th of a burst, uncounted, until 2026-12-06; found by review).
            if i == RECV_BATCH {
                return;
            }
            r = self.udp.try_recv_from(&mut st.recv_buf);
        }
    }

    /// Handles the input that is ready without waiting: a batch of datagrams and a few stream
    /// events (bounded, so that a flood cannot hold the timers off). Heartbeats come mostly by
    /// datagram, 1,400 bytes at most; a stream frame can be a whole state of megabytes, and
    /// the node's own round (its heartbeat) waits behind whatever is read here.
    fn drain_ready(&mut self, st: &mut State) {
        let first = self.udp.try_recv_from(&mut st.recv_buf);
        self.on_datagrams(st, first);
        for _ in 0..STREAM_DRAIN {
            match self.stream_rx.try_recv() {
                Ok(ev) => self.on_stream(st, ev),
                Err(_) => break,
            }
        }
    }

    fn on_stream(&mut self, st: &mut State, ev: StreamEvent) {
        self.take_subscribers(st);
        match ev {
            StreamEvent::Opened {
                peer,
                local,
                id,
                tx,
            } => {
                st.conns.insert(
                    peer,
                    Conn {
                        id,
                        tx,
                        inbound: true,
                        last_used: now(),
                    },
                );
                if let Some(local) = local {
                    self.reached_at(st, local);
                }
                self.make_room(st);
            }
            StreamEvent::Frame { peer, payload, .. } => {
                debug!(%peer, len = payload.len(), "frame");
                if self.node.handle_stream_frame(now(), peer, &payload) {
                    if let Some(c) = st.conns.get_mut(&peer) {
                        c.last_used = now();
                    }
                } else if st.conns.contains_key(&peer) {
                    // Garbage, a stranger's frame or a replay (counted by the core): whoever
                    // sends it is broken or hostile, and frames like it arriving every second
                    // must not hold a connection slot (they kept it from ever going idle).
                    bump(&self.shared.counters.tcp_errors);
                    debug!(%peer, "closing a connection that sent an invalid frame");
                    self.forget_conn(st, peer);
                }
            }
            StreamEvent::Closed { peer, id } => {
                if st.conns.get(&peer).is_some_and(|c| c.id == id) {
                    self.forget_conn(st, peer);
                }
            }
        }
    }

    /// A connection to `local` was accepted: `local` reaches this node (the kernel delivered
    /// it to this node's listener), whoever dialled it. If it is a seed (the node's join
    /// exchange dialled itself there, or a peer reached it that way), it stops being one for
    /// good: the core leaves it out of later seed sets too (a DNS name keeps answering it),
    /// and the connection this node opened there, to itself, is closed. Matching the peer
    /// address with an outbound connection's local one would need word from that
    /// connection's task, which may reach the driver before or after the accept (design.md,
    /// "Joining").
    fn reached_at(&mut self, st: &mut State, local: SocketAddr) {
        let local = udp::canonical(local);
        let seed = self
            .node
            .seeds()
            .iter()
            .any(|a| udp::canonical(*a) == local);
        if !seed || !self.node.add_own_addr(now(), local) {
            return;
        }
        info!(addr = %local, "a seed address reaches this node itself; no longer used");
        self.refresh_trusted();
        let dialled: Vec<SocketAddr> = st
            .conns
            .iter()
            .filter(|(a, c)| !c.inbound && udp::canonical(**a) == local)
            .map(|(a, _)| *a)
            .collect();
        for a in dialled {
            self.forget_conn(st, a);
        }
    }

    /// Drops the driver's end of the connection with `peer` (its task then writes what is
    /// queued and closes) and tells the core: whatever it awaited there will not come, and a
    /// later close event will not match a connection any more.
    fn forget_conn(&mut self, st: &mut State, peer: SocketAddr) {
        if let Some(c) = st.conns.remove(&peer) {
            if c.inbound {
                remember_closed(&mut st.closed_inbound, peer);
            }
            self.node.handle_stream_closed(now(), peer);
        }
    }

    /// Drains the node's outputs: transmits, then events (membership snapshot first, so a
    /// subscriber that sees `Up` finds the member live in the snapshot).
    async fn flush(&mut self, st: &mut State) {
        while let Some(t) = self.node.poll_transmit() {
            match t.channel {
                Channel::Datagram => self.send_datagram(st, t).await,
                Channel::Stream => self.send_frame(st, t.to, t.payload),
            }
        }
        let mut membership_changed = false;
        while let Some(ev) = self.node.poll_event() {
            let counters = &self.shared.counters;
            match &ev {
                Event::Joined(n) => {
                    bump(&counters.members_joined);
                    info!(node = %n, addr = %n.addr, "joined");
                }
                Event::Up(n) => {
                    bump(&counters.members_up);
                    info!(node = %n, "up");
                }
                Event::Down(n) => {
                    bump(&counters.members_down);
                    info!(node = %n, "down");
                }
                Event::Left(n) => {
                    bump(&counters.members_left);
                    info!(node = %n, "left");
                }
                Event::Expired(n) => {
                    bump(&counters.members_expired);
                    info!(node = %n, "expired");
                }
                Event::ReadyChanged { node, ready } => {
                    bump(&counters.ready_changes);
                    info!(%node, ready, "ready changed");
                }
                Event::KeyUpserted { node, key, value } => {
                    debug!(%node, key, len = value.len(), "key upserted");
                }
                Event::KeyDeleted { node, key } => debug!(%node, key, "key deleted"),
                Event::LeaveCompleted { confirmed } => {
                    info!(confirmed, "leave completed");
                    let outcome = LeaveOutcome {
                        confirmed: *confirmed,
                    };
                    if let Ok(mut o) = self.shared.leave_outcome.lock() {
                        *o = Some(outcome);
                    }
                    for w in st.leave_waiters.drain(..) {
                        let _ = w.send(outcome);
                    }
                    st.stopping = true;
                }
                Event::Superseded(by) => {
                    // The core is quiet from here: nothing left for this task to do.
                    warn!(%by, "replaced by a newer incarnation of this node's name; stopping");
                    st.stopping = true;
                }
                _ => {}
            }
            if let Event::Ownership(change) = &ev {
                bump(&counters.ownership_changes);
                info!(
                    fingerprint = %change.fingerprint,
                    members = change.members,
                    acquired = change.handoff.acquired.len(),
                    relinquished = change.handoff.relinquished.len(),
                    "ownership changed"
                );
            }
            if ev.is_membership() && !matches!(ev, Event::LeaveCompleted { .. }) {
                membership_changed = true;
            }
            st.events.push(ev);
        }
        // The ring also changes without an `Ownership` event: when this node gains and loses
        // nothing (its hand-off is empty). The snapshot must follow it all the same, or `owner`
        // here would keep answering from the old members while other nodes use the new ones.
        if !std::ptr::eq(Arc::as_ptr(&st.ring), self.node.ring()) {
            bump(&self.shared.counters.ring_rebuilds);
            st.ring = self.node.ring_arc();
            membership_changed = true;
        }
        if membership_changed {
            self.publish_membership(st);
        }
        // New subscriptions join now that the core's events are drained, each from the first
        // event made after it was taken (`take_subscribers` runs before every input, and here
        // once more): a plain one gets those events, one that asked for the current state a
        // replay of the state this batch led to instead, plus the batch's events that are no
        // state (its stream would otherwise end without `LeaveCompleted`, say). So nothing is
        // missed or doubled, and nothing from before a subscription reaches it (a subscription
        // made right after a command's reply got that command's events, before 2026-12-04).
        self.take_subscribers(st);
        let mut joining = Vec::new();
        for (sub, from) in std::mem::take(&mut st.pending_subs) {
            let replays = sub.replays();
            if !replays || self.replay(&sub) {
                joining.push((sub, from, replays));
            }
        }
        let counters = &self.shared.counters;
        let before = st.subscribers.len();
        let joining_len = joining.len();
        for (i, ev) in st.events.drain(..).enumerate() {
            st.subscribers.retain(|s| s.publish(&ev, counters));
            let stateless = matches!(
                ev,
                Event::LeaveCompleted { .. } | Event::Superseded(_) | Event::Ownership(_)
            );
            joining.retain(|(s, from, replays)| {
                i < *from || (*replays && !stateless) || s.publish(&ev, counters)
            });
        }
        st.subscribers
            .extend(joining.into_iter().map(|(s, _, _)| s));
        if st.subscribers.len() < before + joining_len {
            // Some subscriptions are gone: the core may stop emitting what only they wanted.
            self.update_key_events(st);
        }
        // Before 2026-12-05 a write was answered before its snapshot was published: a
        // `membership()` right after `mark_ready` could read the old one, and a subscription
        // made next never got the change either (found by review).
        for (reply, r) in st.replies.drain(..) {
            let _ = reply.send(r);
        }
    }

    /// Queues the node's current state as events for a subscriber that asked for it (see
    /// [`EventFilter::with_current_state`](super::EventFilter::with_current_state)). Returns
    /// false if the subscription is already gone.
    fn replay(&self, sub: &Subscriber) -> bool {
        let counters = &self.shared.counters;
        let me = self.node.id();
        // Offered one by one, each built only if the subscriber takes it: a replay of every
        // key of every member was built whole first, all of it even for a subscriber to
        // membership alone (a thousand members of a thousand keys: a million events built
        // in the driver's task, most to be dropped; found by review).
        let membership = |make: &dyn Fn() -> Event| sub.offer(None, make, counters);
        for m in self.node.members() {
            if m.id != *me && !membership(&|| Event::Joined(m.id.clone())) {
                return false;
            }
            let ready = || Event::ReadyChanged {
                node: m.id.clone(),
                ready: m.ready,
            };
            if !membership(&ready) {
                return false;
            }
            if let Some(state) = self.node.node_state(&m.id.name) {
                for (key, value) in state.iter() {
                    let upserted = || Event::KeyUpserted {
                        node: m.id.clone(),
                        key: key.to_owned(),
                        value: value.clone(),
                    };
                    if !sub.offer(Some(key), upserted, counters) {
                        return false;
                    }
                }
            }
            // Status last: after `Left` only `Expired` comes (before 2026-12-05 the replay
            // put readiness and keys after it, found by review).
            let status = || match m.status {
                MemberStatus::Down => Event::Down(m.id.clone()),
                _ => Event::Left(m.id.clone()),
            };
            if m.status != MemberStatus::Alive && !membership(&status) {
                return false;
            }
        }
        true
    }

    async fn send_datagram(&mut self, st: &mut State, t: Transmit) {
        let to = udp::to_socket(t.to, self.udp_v6);
        match udp::send(&self.udp, &t.payload, to, &mut st.udp_stalled).await {
            udp::Sent::Yes => {}
            udp::Sent::Dropped => {
                bump(&self.shared.counters.udp_send_dropped);
                debug!(%to, "UDP send buffer full; datagram dropped");
            }
            udp::Sent::Failed(e) => {
                bump(&self.shared.counters.udp_send_errors);
                if should_warn(&mut st.last_warn) {
                    warn!(%to, error = %e, "UDP send failed");
                } else {
                    debug!(%to, error = %e, "UDP send failed");
                }
            }
        }
    }

    /// Queues a frame on the open connection to `to`, or opens one.
    fn send_frame(&mut self, st: &mut State, to: SocketAddr, payload: Bytes) {
        let counters = &self.shared.counters;
        if payload.len() > self.tcp.settings.max_frame_size {
            bump(&counters.tcp_frames_oversize);
            debug!(%to, len = payload.len(), "frame over max_frame_size not sent");
            return;
        }
        let max = self.tcp.settings.max_frame_size;
        let payload = match st.conns.get_mut(&to) {
            Some(c) => match c.tx.try_send(payload, max) {
                Ok(()) => {
                    c.last_used = now();
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    bump(&counters.tcp_frames_dropped);
                    debug!(%to, "connection queue full; frame dropped");
                    return;
                }
                // An inbound connection closing: `to` is the peer's ephemeral port, which
                // must never be dialled. Forget it as if its close had been handled (the
                // close event will not match any more): the core is told, and the reply goes.
                Err(mpsc::error::TrySendError::Closed(_)) if c.inbound => {
                    bump(&counters.tcp_frames_dropped);
                    debug!(%to, "reply to a closing inbound connection dropped");
                    self.forget_conn(st, to);
                    return;
                }
                // An outbound one closing: open a new connection below. Its close event will
                // not match the new one, so the core is told here; `payload` may start a new
                // exchange with `to`, which must stay awaited (exchanges started after the
                // old connection's last frame did not use it).
                Err(mpsc::error::TrySendError::Closed(p)) => {
                    let last_sent = c.last_used;
                    st.conns.remove(&to);
                    self.node.stream_closed_after(now(), to, last_sent);
                    p
                }
            },
            None => payload,
        };
        if st
            .closed_inbound
            .get(&to)
            .is_some_and(|at| now().saturating_duration_since(*at) < CLOSED_INBOUND_MEMORY)
        {
            bump(&counters.tcp_frames_dropped);
            debug!(%to, "reply to a closed inbound connection dropped");
            return;
        }
        let id = self.tcp.next_id();
        let (tx, rx) = tcp::write_queue(Arc::clone(counters));
        // A fresh queue has room for one frame.
        let _ = tx.try_send(payload, max);
        st.conns.insert(
            to,
            Conn {
                id,
                tx,
                inbound: false,
                last_used: now(),
            },
        );
        // The task waits for a free slot (bounded by the connect timeout).
        let span = tracing::debug_span!("tcp", peer = %to, id, inbound = false);
        self.tasks
            .spawn(tcp::connect_and_run(to, id, rx, Arc::clone(&self.tcp)).instrument(span));
        while self.tasks.try_join_next().is_some() {}
        self.make_room(st);
    }

    /// Keeps a few connection slots free for new exchanges: when fewer are free, closes the
    /// connections idle longest (at least `EVICT_MIN_IDLE`, and moving no frame: one in the
    /// middle of a large frame, or still opening, is not idle however long ago its last whole
    /// frame was; closing it lost the exchange, found by review). Closing drops the driver's queue
    /// end; the connection writes what is queued, then closes and frees its slot.
    fn make_room(&mut self, st: &mut State) {
        let free = self.tcp.free_slots();
        let headroom = (self.max_connections / 8).max(1);
        if free >= headroom {
            return;
        }
        let t = now();
        let mut idle: Vec<(Instant, SocketAddr)> = st
            .conns
            .iter()
            .filter(|(_, c)| {
                t.saturating_duration_since(c.last_used) >= EVICT_MIN_IDLE && !c.tx.busy()
            })
            .map(|(a, c)| (c.last_used, *a))
            .collect();
        idle.sort();
        for (_, addr) in idle.into_iter().take(headroom - free) {
            debug!(peer = %addr, "closing idle connection to make room");
            self.forget_conn(st, addr);
        }
    }

    /// Publishes a new membership snapshot.
    fn publish_membership(&mut self, st: &mut State) {
        st.epoch += 1;
        let mut snapshot = Membership::new(
            st.epoch,
            self.node.id().clone(),
            self.node.members().collect(),
            Arc::clone(&st.ring),
        );
        snapshot.superseded_by = self.node.superseded_by().cloned();
        self.member_ips = snapshot.members.iter().map(|m| m.id.addr.ip()).collect();
        self.refresh_trusted();
        self.membership_tx.send_replace(Arc::new(snapshot));
    }

    /// Looks at the core's counters: warns (at most every `WARN_EVERY`) when it dropped packets
    /// or deltas since the last warning, and publishes them if an exporter watches.
    fn check_stats(&mut self, st: &mut State, t: Instant) {
        let s = self.node.stats();
        if st
            .last_fault_warn
            .is_none_or(|l| t.saturating_duration_since(l) >= WARN_EVERY)
        {
            let w = &st.warned_stats;
            let malformed = s.rx_malformed.saturating_sub(w.rx_malformed);
            let bad_version = s.rx_bad_version.saturating_sub(w.rx_bad_version);
            let oversized = s.rx_oversized.saturating_sub(w.rx_oversized);
            let foreign_cluster = s.rx_foreign_cluster.saturating_sub(w.rx_foreign_cluster);
            let auth_failed = s.rx_auth_failed.saturating_sub(w.rx_auth_failed);
            let plaintext_refused = s
                .rx_plaintext_refused
                .saturating_sub(w.rx_plaintext_refused);
            let replayed = s.rx_replayed.saturating_sub(w.rx_replayed);
            let deltas_rejected = s.deltas_rejected.saturating_sub(w.deltas_rejected);
            let nodes_refused = s.nodes_refused.saturating_sub(w.nodes_refused);
            if malformed
                + bad_version
                + oversized
                + foreign_cluster
                + auth_failed
                + plaintext_refused
                + replayed
                + deltas_rejected
                + nodes_refused
                > 0
            {
                warn!(
                    malformed,
                    bad_version,
                    oversized,
                    foreign_cluster,
                    auth_failed,
                    plaintext_refused,
                    replayed,
                    deltas_rejected,
                    nodes_refused,
                    "dropped packets or state from peers since the last warning"
                );
                st.last_fault_warn = Some(t);
            }
            if s.pauses_detected > w.pauses_detected {
                warn!(
                    pauses = s.pauses_detected - w.pauses_detected,
                    "this process was paused (timers ran more than three gossip intervals late)"
                );
                st.last_fault_warn = Some(t);
            }
            st.warned_stats = s;
        }
        if self.shared.published.receiver_count() > 0 {
            self.publish_stats(st, s, t);
        }
    }

    /// Warns when the node has seeds to join through and no live peer: first after
    /// `ALONE_WARN_FIRST`, then at doubling intervals up to `ALONE_WARN_MAX`, for as long as it
    /// lasts. A spell ends when a peer is live (or the seeds are gone, or the node leaves);
    /// the next one, say once every peer has gone down, starts the count again. A node with no
    /// seed is alone on purpose (the first of a cluster) and never warns.
    fn check_alone(&mut self, st: &mut State, t: Instant) {
        let seeds = self.node.seeds();
        let joining = !seeds.is_empty() && !self.node.is_leaving();
        if !Alone::step(&mut st.alone, t, self.node.num_live() > 1, joining) {
            return;
        }
        let Some(alone) = st.alone.as_ref() else {
            return;
        };
        bump(&self.shared.counters.alone_warnings);
        // Peers known but all down or gone (a scale-down to one, say) is not a node that
        // nobody ever answered: say which (found by review).
        if self.node.num_members() > 1 {
            warn!(
                alone_secs = t.saturating_duration_since(alone.since).as_secs(),
                seeds = seeds.len(),
                next_warning_secs = alone.wait.as_secs(),
                "every peer this node knew is down or has left; it keeps trying its seeds"
            );
            return;
        }
        let named: Vec<SocketAddr> = seeds.iter().take(ALONE_WARN_SEEDS).copied().collect();
        let counters = &self.shared.counters;
        warn!(
            alone_secs = t.saturating_duration_since(alone.since).as_secs(),
            seeds = ?named,
            more_seeds = seeds.len() - named.len(),
            tcp_connect_failures = counters
                .tcp_connect_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            next_warning_secs = alone.wait.as_secs(),
            "no peer has answered this node, which has seeds to join through: check that \
             the seed addresses are right, that every node has the same cluster_id and \
             keyring (a peer drops packets of another cluster or key, and only its log says \
             so), and that no firewall blocks the gossip port (UDP and TCP)"
        );
    }

    /// Publishes the core's counters, the highest phi and the subscribers' queues for
    /// exporters.
    fn publish_stats(&self, st: &State, core: Stats, t: Instant) {
        let me = &self.node.id().name;
        let phi_max = self
            .node
            .live_members()
            .filter(|id| &id.name != me)
            .filter_map(|id| self.node.phi(&id.name, t))
            .fold(0.0, f64::max);
        let published = Published {
            core,
            phi_max,
            subscribers: st.subscribers.len() as u64,
            subscriber_queued: st.subscribers.iter().map(|s| s.queued() as u64).sum(),
        };
        self.shared.published.send_replace(published);
    }

    /// Stops every task: the accept loop and DNS at once, outbound connections once their
    /// queued frames are written (bounded by `FLUSH_ON_STOP`; a kill does not wait).
    async fn finish(mut self, mut st: State) {
        let core = self.node.stats();
        if let Ok(mut s) = self.shared.final_stats.lock() {
            *s = Some(core);
        }
        self.publish_stats(&st, core, now());
        for s in &self.services {
            s.abort();
        }
        // Inbound connections end at once, as with the accept loop (waited for below).
        tcp::lock_inbound(&self.inbound).abort_all();
        st.conns.clear();
        self.stream_rx.close();
        if !st.killed {
            let drain = async { while self.tasks.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(FLUSH_ON_STOP, drain).await;
        }
        self.tasks.shutdown().await;
        // The accept loop is gone and adds none: wait for the inbound connections to end too
        // (before 2026-12-06 they were only aborted, and a caller told the node stopped could
        // still find their sockets open; found by review).
        let mut inbound = std::mem::take(&mut *tcp::lock_inbound(&self.inbound));
        inbound.shutdown().await;
        // Leave waiters still here: the leave timed out in the runtime, or the node was
        // killed or replaced meanwhile. Later `leave` calls get the same outcome.
        if !st.leave_waiters.is_empty() {
            let outcome = LeaveOutcome { confirmed: 0 };
            if let Ok(mut o) = self.shared.leave_outcome.lock() {
                o.get_or_insert(outcome);
            }
            for w in st.leave_waiters.drain(..) {
                let _ = w.send(outcome);
            }
        }
        info!(node = %self.node.id(), "stopped");
        // The socket and the node's state go before the stop is announced: a caller told the
        // node stopped may bind its address again at once (the UDP socket has no
        // `SO_REUSEADDR`), and a large state takes a while to free.
        let Self {
            node,
            udp,
            stopped_tx,
            ..
        } = self;
        drop(udp);
        drop(node);
        stopped_tx.send_replace(true);
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn remember_closed(closed: &mut BTreeMap<SocketAddr, Instant>, peer: SocketAddr) {
    let t = now();
    if closed.len() >= CLOSED_INBOUND_MAX {
        closed.retain(|_, at| t.saturating_duration_since(*at) < CLOSED_INBOUND_MEMORY);
        // Still full (a stranger opening and closing connections fast): forget the oldest
        // only, so that peers' addresses stay remembered.
        if closed.len() >= CLOSED_INBOUND_MAX
            && let Some(oldest) = closed.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a)
        {
            closed.remove(&oldest);
        }
    }
    closed.insert(peer, t);
}

fn should_warn(last: &mut Option<Instant>) -> bool {
    let t = now();
    if last.is_some_and(|l| t.saturating_duration_since(l) < WARN_EVERY) {
        return false;
    }
    *last = Some(t);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's close can reach the driver after another connection with the same peer
    /// took its place (the old task ends while the driver already queues on a new one): only
    /// the close of the connection held now forgets it.
    #[tokio::test]
    async fn a_late_close_of_an_old_connection_leaves_the_new_one_open() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let peer = peer(9);
        let (old, _old_queue) = tcp::write_queue(Arc::clone(&driver.shared.counters));
        let (new, _new_queue) = tcp::write_queue(Arc::clone(&driver.shared.counters));
        let opened = |id, tx| StreamEvent::Opened {
            peer,
            local: None,
            id,
            tx,
        };
        driver.on_stream(&mut st, opened(1, old));
        driver.on_stream(&mut st, opened(2, new));
        driver.on_stream(&mut st, StreamEvent::Closed { peer, id: 1 });
        assert_eq!(st.conns.get(&peer).map(|c| c.id), Some(2));
        assert!(st.closed_inbound.is_empty(), "nothing forgotten yet");
        driver.on_stream(&mut st, StreamEvent::Closed { peer, id: 2 });
        assert!(st.conns.is_empty());
        assert!(
            st.closed_inbound.contains_key(&peer),
            "an inbound close is remembered"
        );
    }

    /// The addresses trusted with large frames are the known members' advertised IPs and the
    /// seeds': not an address a valid frame merely came from (a replay is accepted once from
    /// anywhere), and a seed's once it is one (joined through, or a DNS answer).
    #[tokio::test]
    async fn members_and_seeds_are_trusted_with_large_frames() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let x_addr = SocketAddr::from(([192, 0, 2, 9], 7946));
        let relay = SocketAddr::from(([192, 0, 2, 7], 40000));
        let mut x = Node::new(
            NodeId::new("x", 1, x_addr),
            super::super::RuntimeConfig::lan("x").protocol,
            1,
            now(),
        )
        .expect("node");
        x.join(now(), [driver.shared.local_addr]);
        let _queue = open_inbound(&mut driver, &mut st, relay);
        assert!(!driver.tcp.is_trusted(x_addr.ip()));
        // x's join arrives from another address (a relay, or a replay from elsewhere); the
        // driver publishes the membership it led to, as after any input.
        pump_from(&mut x, &mut driver, &mut st, relay, relay);
        assert!(driver.node.members().any(|m| m.id.name == "x"));
        assert!(
            !driver.tcp.is_trusted(x_addr.ip()),
            "not before the snapshot"
        );
        driver.publish_membership(&mut st);
        assert!(
            driver.tcp.is_trusted(x_addr.ip()),
            "a member's advertised IP"
        );
        assert!(
            !driver.tcp.is_trusted(relay.ip()),
            "where its frames came from"
        );
        let seed = SocketAddr::from(([192, 0, 2, 5], 7946));
        assert!(!driver.tcp.is_trusted(seed.ip()));
        driver.set_seeds(vec![seed]);
        assert!(driver.tcp.is_trusted(seed.ip()), "a seed");
        assert!(driver.tcp.is_trusted(x_addr.ip()), "members stay trusted");
    }

    /// A driver built but not running, with `max_connections` slots of which `held` are
    /// taken (by the returned permits, as open connections would), and its state.
    fn harness(
        max_connections: usize,
        held: u32,
    ) -> (
        Driver,
        super::super::Handle,
        State,
        tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut config = super::super::RuntimeConfig::lan("a");
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.max_connections = max_connections;
        let (driver, handle, _span) = super::super::build(config).expect("node");
        let st = State::new(driver.node.ring_arc());
        let permits = Arc::clone(&driver.tcp.permits)
            .try_acquire_many_owned(held)
            .expect("free slots");
        (driver, handle, st, permits)
    }

    /// `Handle::join(addr)` as the driver takes it: its answer (`Err` if none came).
    async fn join(
        driver: &mut Driver,
        st: &mut State,
        addr: SocketAddr,
    ) -> Result<Result<(), Error>, oneshot::error::RecvError> {
        let (reply, answer) = oneshot::channel();
        driver.on_command(
            st,
            Some(Command::Join {
                addrs: vec![addr],
                reply,
            }),
        );
        answer.await
    }

    /// An inbound connection from `peer` opens: the connection's end of its queue.
    fn open_inbound(driver: &mut Driver, st: &mut State, peer: SocketAddr) -> tcp::WriteQueue {
        let id = driver.tcp.next_id();
        let (tx, queue) = tcp::write_queue(Arc::clone(&driver.shared.counters));
        let local = Some(driver.shared.local_addr);
        let opened = StreamEvent::Opened {
            peer,
            local,
            id,
            tx,
        };
        driver.on_stream(st, opened);
        queue
    }

    /// Node x (at `peer(9)`), joined through the driver's node; its frames come as if on an
    /// inbound connection from `peer(40000)`, whose queue is returned to keep it open.
    fn joined_by_x(driver: &mut Driver, st: &mut State) -> (Node, tcp::WriteQueue) {
        let id = NodeId::new("x", 1, peer(9));
        let mut x =
            Node::new(id, super::super::RuntimeConfig::lan("x").protocol, 1, now()).expect("node");
        let queue = open_inbound(driver, st, peer(40000));
        x.join(now(), [driver.shared.local_addr]);
        pump_x(&mut x, driver, st);
        (x, queue)
    }

    /// Lets `steps` steps of `step` pass (the paused clock), x and the driver's node each
    /// handling its timers and what the other sent.
    async fn run_x(x: &mut Node, driver: &mut Driver, st: &mut State, steps: u32, step: Duration) {
        for _ in 0..steps {
            tokio::time::advance(step).await;
            x.handle_timeout(now());
            driver.node.handle_timeout(now());
            pump_x(x, driver, st);
        }
    }

    /// Delivers what x and the driver's node send each other, eight times over.
    fn pump_x(x: &mut Node, driver: &mut Driver, st: &mut State) {
        pump_from(x, driver, st, peer(40000), peer(9));
    }

    /// Delivers what `x` and the driver's node send each other, eight times over, x's frames
    /// coming from `frames_from` and its datagrams from `datagrams_from`.
    fn pump_from(
        x: &mut Node,
        driver: &mut Driver,
        st: &mut State,
        frames_from: SocketAddr,
        datagrams_from: SocketAddr,
    ) {
        let local = driver.shared.local_addr;
        for _ in 0..8 {
            while let Some(t) = x.poll_transmit() {
                match t.channel {
                    Channel::Stream => driver.on_stream(st, frame(frames_from, t.payload)),
                    Channel::Datagram => {
                        driver
                            .node
                            .handle_datagram(now(), datagrams_from, &t.payload);
                    }
                }
            }
            while let Some(t) = driver.node.poll_transmit() {
                match t.channel {
                    Channel::Stream => drop(x.handle_stream_frame(now(), local, &t.payload)),
                    Channel::Datagram => x.handle_datagram(now(), local, &t.payload),
                }
            }
        }
    }

    /// Sends `n` datagrams no cluster speaks to the driver's socket, and waits until it can
    /// read them (loopback delivers each as it is sent).
    async fn send_junk(driver: &Driver, n: u64) {
        let sock = std::net::UdpSocket::bind(peer(0)).expect("socket");
        for _ in 0..n {
            sock.send_to(b"junk", driver.shared.local_addr)
                .expect("sent");
        }
        driver.udp.readable().await.expect("readable");
    }

    /// An outbound connection to `peer` as `send_frame` opens one: the connection's end of
    /// its queue.
    fn open_outbound(driver: &Driver, st: &mut State, peer: SocketAddr) -> tcp::WriteQueue {
        let (tx, queue) = tcp::write_queue(Arc::clone(&driver.shared.counters));
        let conn = Conn {
            id: driver.tcp.next_id(),
            tx,
            inbound: false,
            last_used: now(),
        };
        st.conns.insert(peer, conn);
        queue
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn open_peers(st: &State) -> Vec<u16> {
        st.conns.keys().map(SocketAddr::port).collect()
    }

    fn counter(
        driver: &Driver,
        f: impl Fn(&super::super::stats::Counters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        f(&driver.shared.counters).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A stream Syn from a sans-IO node `name` joining through `to`: a frame the core
    /// accepts.
    fn valid_frame(to: SocketAddr, name: &str) -> Bytes {
        let id = NodeId::new(name, 1, peer(9));
        let config = super::super::RuntimeConfig::lan("x").protocol;
        let mut x = Node::new(id, config, 1, now()).expect("node");
        x.join(now(), [to]);
        std::iter::from_fn(|| x.poll_transmit())
            .find(|t| t.channel == Channel::Stream)
            .expect("a join sends a stream Syn")
            .payload
    }

    fn frame(peer: SocketAddr, payload: Bytes) -> StreamEvent {
        let held = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit");
        StreamEvent::Frame {
            peer,
            payload,
            _held: held,
        }
    }

    /// Making room when a connection opens: nothing while an eighth of the slots (here one
    /// of eight) is free, nor while every connection is younger than `EVICT_MIN_IDLE`; then
    /// only as many as the headroom lacks, the one idle longest first, remembered as a closed
    /// inbound address.
    #[tokio::test(start_paused = true)]
    async fn an_opening_connection_closes_only_the_longest_idle_one() {
        let (mut driver, _handle, mut st, mut held) = harness(8, 8);
        let mut queues = vec![open_inbound(&mut driver, &mut st, peer(1))];
        tokio::time::advance(Duration::from_millis(500)).await;
        queues.push(open_inbound(&mut driver, &mut st, peer(2)));
        assert_eq!(
            open_peers(&st),
            [1, 2],
            "no slot free, but none idle long enough"
        );
        // One slot free: the headroom is there.
        drop(held.split(1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        queues.push(open_inbound(&mut driver, &mut st, peer(3)));
        assert_eq!(open_peers(&st), [1, 2, 3], "the headroom is free");
        // No slot free: one connection goes, the one idle longest.
        let _last = Arc::clone(&driver.tcp.permits)
            .try_acquire_owned()
            .expect("a free slot");
        queues.push(open_inbound(&mut driver, &mut st, peer(4)));
        assert_eq!(open_peers(&st), [2, 3, 4]);
        assert!(st.closed_inbound.contains_key(&peer(1)));
    }

    /// A connection's idleness counts from the last frame read from it or queued on it (and
    /// written), not from its opening: making room for a new outbound connection closes the
    /// one nothing moved on longest.
    #[tokio::test(start_paused = true)]
    async fn frames_read_or_queued_keep_a_connection_from_being_closed_to_make_room() {
        let (mut driver, _handle, mut st, _held) = harness(8, 8);
        let local = driver.shared.local_addr;
        let _read = open_inbound(&mut driver, &mut st, peer(1));
        let mut written = open_inbound(&mut driver, &mut st, peer(2));
        tokio::time::advance(Duration::from_millis(100)).await;
        let _quiet = open_inbound(&mut driver, &mut st, peer(3));
        tokio::time::advance(Duration::from_millis(1700)).await;
        driver.on_stream(&mut st, frame(peer(1), valid_frame(local, "x")));
        assert!(
            st.conns.contains_key(&peer(1)),
            "a valid frame keeps it open"
        );
        driver.send_frame(&mut st, peer(2), Bytes::from_static(b"reply"));
        let counters = Arc::clone(&driver.shared.counters);
        assert_eq!(written.write_one(&counters).as_deref(), Some(&b"reply"[..]));
        tokio::time::advance(Duration::from_millis(700)).await;
        // A frame to a new peer opens a connection, with no slot free.
        driver.send_frame(&mut st, peer(4), Bytes::from_static(b"syn"));
        assert_eq!(open_peers(&st), [1, 2, 4]);
    }

    /// A frame that is no message of this cluster closes its connection at once, counted as
    /// a TCP error, its address remembered so that no reply dials the peer's ephemeral port.
    #[tokio::test]
    async fn an_invalid_frame_closes_its_connection_and_is_counted() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let _queue = open_inbound(&mut driver, &mut st, peer(1));
        driver.on_stream(
            &mut st,
            frame(peer(1), Bytes::from_static(&[0xde, 0xad, 0xbe])),
        );
        assert!(st.conns.is_empty());
        assert!(st.closed_inbound.contains_key(&peer(1)));
        assert_eq!(counter(&driver, |c| &c.tcp_errors), 1);
    }

    /// Only inbound addresses are remembered as closed: an outbound connection closed to
    /// make room is dialled again by the next frame to that peer (remembering its address
    /// would drop every frame to that peer for a minute).
    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_outbound_connection_was_closed_is_dialled_again() {
        let (mut driver, _handle, mut st, _held) = harness(8, 8);
        // An outbound connection as `send_frame` opens one, its frame written.
        let _queue = open_outbound(&driver, &mut st, peer(1));
        let first = st.conns.get(&peer(1)).map(|c| c.id);
        tokio::time::advance(Duration::from_secs(2)).await;
        // Quiet since: an inbound connection takes its slot.
        let _inbound = open_inbound(&mut driver, &mut st, peer(2));
        assert_eq!(open_peers(&st), [2]);
        assert!(st.closed_inbound.is_empty());
        driver.send_frame(&mut st, peer(1), Bytes::from_static(b"syn"));
        let second = st.conns.get(&peer(1)).map(|c| c.id);
        assert!(second.is_some() && second != first, "{first:?} {second:?}");
        assert_eq!(counter(&driver, |c| &c.tcp_frames_dropped), 0);
    }

    /// A frame of exactly `max_frame_size` is sent; one byte more is dropped before any
    /// connection is opened for it, counted as oversize.
    #[tokio::test]
    async fn frames_up_to_max_frame_size_are_sent_and_larger_ones_dropped() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let max = driver.tcp.settings.max_frame_size;
        driver.send_frame(&mut st, peer(1), Bytes::from(vec![0u8; max + 1]));
        assert!(st.conns.is_empty());
        assert_eq!(counter(&driver, |c| &c.tcp_frames_oversize), 1);
        driver.send_frame(&mut st, peer(1), Bytes::from(vec![0u8; max]));
        assert_eq!(open_peers(&st), [1]);
        assert_eq!(counter(&driver, |c| &c.tcp_frames_oversize), 1);
    }

    /// A reply to an inbound connection that is closing (its queue end gone, the close event
    /// not handled yet) is dropped and counted, and the connection forgotten as closed: the
    /// address is the peer's ephemeral port, never to be dialled.
    #[tokio::test]
    async fn a_reply_to_a_closing_inbound_connection_is_dropped_not_dialled() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        drop(open_inbound(&mut driver, &mut st, peer(1)));
        driver.send_frame(&mut st, peer(1), Bytes::from_static(b"ack"));
        assert!(st.conns.is_empty(), "dialled the peer's ephemeral port");
        assert!(st.closed_inbound.contains_key(&peer(1)));
        assert_eq!(counter(&driver, |c| &c.tcp_frames_dropped), 1);
        // Later replies too.
        driver.send_frame(&mut st, peer(1), Bytes::from_static(b"ack"));
        assert!(st.conns.is_empty());
        assert_eq!(counter(&driver, |c| &c.tcp_frames_dropped), 2);
    }

    /// A write is answered only once the batch it made is delivered: not by the command
    /// itself, and with the snapshot showing it when the answer comes.
    #[tokio::test]
    async fn writes_are_answered_by_the_flush_after_the_snapshot() {
        let (mut driver, handle, mut st, _held) = harness(8, 0);
        let (set, mut set_rx) = oneshot::channel();
        let (ready, mut ready_rx) = oneshot::channel();
        driver.on_command(
            &mut st,
            Some(Command::Set {
                key: "k".into(),
                value: Bytes::from_static(b"v"),
                ttl: None,
                reply: set,
            }),
        );
        driver.on_command(
            &mut st,
            Some(Command::SetReady {
                ready: true,
                reply: ready,
            }),
        );
        assert!(set_rx.try_recv().is_err(), "answered before the flush");
        assert!(ready_rx.try_recv().is_err(), "answered before the flush");
        driver.flush(&mut st).await;
        assert!(matches!(set_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(ready_rx.try_recv(), Ok(Ok(()))));
        assert_eq!(handle.membership().member("a").map(|m| m.ready), Some(true));
    }

    /// A connection with a frame queued (not yet written) is moving a frame, however long
    /// ago it was queued: making room closes an idle one instead, though it idled less long.
    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_frame_queued_is_not_closed_to_make_room() {
        let (mut driver, _handle, mut st, _held) = harness(8, 8);
        let _stuck = open_inbound(&mut driver, &mut st, peer(1));
        driver.send_frame(&mut st, peer(1), Bytes::from_static(b"state"));
        tokio::time::advance(Duration::from_millis(500)).await;
        let _idle = open_inbound(&mut driver, &mut st, peer(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        let _new = open_inbound(&mut driver, &mut st, peer(3));
        assert_eq!(open_peers(&st), [1, 3]);
    }

    /// What a late timer reads first is bounded: one batch of datagrams (64) and four stream
    /// events, so that a flood cannot hold the timers off, yet heartbeats already delivered
    /// count before the core judges peers by their silence.
    #[tokio::test]
    async fn a_late_timer_reads_one_batch_of_datagrams_and_a_few_stream_events() {
        let (mut driver, _handle, mut st, _held) = harness(64, 0);
        send_junk(&driver, RECV_BATCH as u64 + 6).await;
        let mut queues = Vec::new();
        for port in 1..=STREAM_DRAIN as u16 + 2 {
            let (tx, queue) = tcp::write_queue(Arc::clone(&driver.shared.counters));
            queues.push(queue);
            let id = driver.tcp.next_id();
            let opened = StreamEvent::Opened {
                peer: peer(port),
                local: None,
                id,
                tx,
            };
            driver.tcp.events_tx.try_send(opened).expect("room");
        }
        driver.drain_ready(&mut st);
        assert_eq!(driver.node.stats().rx_datagrams, RECV_BATCH as u64);
        assert_eq!(st.conns.len(), STREAM_DRAIN);
        assert_eq!(driver.stream_rx.len(), 2);
    }

    /// Only the latest `MAX_JOINED` addresses joined through stay seeds, beside the others
    /// (configured or resolved): before, each join rebuilt the seeds from the node's own, so
    /// an address the list let go of stayed a seed for good and the seeds grew without bound
    /// (found by review).
    #[tokio::test(start_paused = true)]
    async fn only_the_latest_addresses_joined_through_stay_seeds() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let base = SocketAddr::from(([10, 0, 0, 2], 7946));
        driver.set_seeds(vec![base]);
        let joined: Vec<SocketAddr> = (0..MAX_JOINED as u16 + 2)
            .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7946)))
            .collect();
        for addr in &joined {
            assert!(join(&mut driver, &mut st, *addr).await.is_ok());
        }
        let seeds = driver.node.seeds();
        assert_eq!(seeds.len(), MAX_JOINED + 1);
        assert!(seeds.contains(&base));
        assert!(!seeds.contains(&joined[0]) && !seeds.contains(&joined[1]));
        assert!(seeds.contains(&joined[2]) && seeds.contains(&joined[MAX_JOINED + 1]));
    }

    /// Addresses joined through at run time (`Handle::join`) become seeds and stay seeds
    /// when DNS later answers a new seed set, so a node that finds itself alone again still
    /// tries them.
    #[tokio::test(start_paused = true)]
    async fn addresses_joined_through_stay_seeds_across_dns_answers() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let (joined, resolved) = (peer(9001), peer(9002));
        assert!(
            join(&mut driver, &mut st, joined).await.is_ok(),
            "the join is answered"
        );
        assert_eq!(driver.node.seeds(), [joined]);
        driver.set_seeds(vec![resolved]);
        assert_eq!(driver.node.seeds(), [joined, resolved]);
    }

    /// A join through an address (`Handle::join`) while the seeds' names are still being
    /// looked up does not end the first ring's wait for them: the join sets the node's seeds,
    /// and before, that alone told the node no more seeds were coming, so an exchange refused
    /// there left it building a ring of itself alone at the settle, every key acquired from
    /// nobody, with the cluster the names lead to still unknown (found by review of the wait).
    /// The resolver's first seed set ends the wait.
    #[tokio::test(start_paused = true)]
    async fn a_join_before_the_first_dns_answer_keeps_the_first_ring_waiting() {
        let mut config = super::super::RuntimeConfig::lan("a");
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.seeds = vec!["seeds.invalid:7946".into()];
        let (mut driver, _handle, _span) = super::super::build(config).expect("node");
        let mut st = State::new(driver.node.ring_arc());
        let (dns_tx, dns_rx) = mpsc::channel(4);
        driver.seeds_rx = Some(dns_rx);
        let refused = peer(9001);
        assert!(join(&mut driver, &mut st, refused).await.is_ok());
        let settle = driver.node.config().ring_settle;
        let start = now();
        // Every exchange there (the join's, then the retries) is refused at once.
        let step = |driver: &mut Driver| {
            driver.node.handle_timeout(now());
            while driver.node.poll_transmit().is_some() {}
            driver.node.handle_stream_closed(now(), refused);
        };
        while now() < start + settle * 3 {
            step(&mut driver);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(
            driver.node.ring().num_members(),
            0,
            "the names are still being looked up"
        );
        dns_tx
            .send(Vec::new())
            .await
            .expect("driver holds the receiver");
        let seeds = recv_opt(&mut driver.seeds_rx).await;
        driver.on_seeds(seeds);
        step(&mut driver);
        driver.node.handle_timeout(now());
        assert_eq!(
            driver.node.ring().num_members(),
            1,
            "alone, once DNS answered"
        );
    }

    /// Waits (up to 2 min of virtual time) for `listener` to be dialled, and closes the
    /// connection; panics saying `what` did not happen.
    async fn dialled(listener: &tokio::net::TcpListener, what: &str) {
        let accept = tokio::time::timeout(Duration::from_secs(120), listener.accept()).await;
        let (conn, _) = accept.unwrap_or_else(|_| panic!("{what}")).expect("accept");
        drop(conn);
    }

    /// The driver's loop hands each seed set the resolver sends to the node, merged with the
    /// addresses joined through: an address DNS answers gets an exchange, and one joined
    /// through before stays a seed, still tried while the node is alone. (The test above calls
    /// `set_seeds` itself; this one goes through the running loop's DNS branch.) Fake seeds:
    /// listeners that accept a connection and close it, so the node stays alone. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_dns_answer_reaches_the_node_through_the_running_driver() {
        let (mut driver, handle, _st, _held) = harness(8, 0);
        let (dns_tx, dns_rx) = mpsc::channel(4);
        driver.seeds_rx = Some(dns_rx);
        let joined = tokio::net::TcpListener::bind(peer(0))
            .await
            .expect("listener");
        let resolved = tokio::net::TcpListener::bind(peer(0))
            .await
            .expect("listener");
        let (joined_addr, resolved_addr) = (
            joined.local_addr().expect("addr"),
            resolved.local_addr().expect("addr"),
        );
        let driver = tokio::spawn(driver.run());
        handle.join([joined_addr]).await.expect("joined");
        dialled(&joined, "the address joined through is tried").await;
        dns_tx.send(vec![resolved_addr]).await.expect("driver runs");
        dialled(&resolved, "the address DNS answered is tried").await;
        dialled(&joined, "the address joined through is still a seed").await;
        handle.kill().await;
        driver.await.expect("driver");
    }

    /// A leave sets one deadline, `leave_timeout` plus a second of slack: asking again (a
    /// second `leave`, the last handle dropped) neither restarts the leave nor moves the
    /// deadline. Once every handle is gone the command channel is no longer read (its
    /// `None` would otherwise wake the driver in a loop until it stops).
    #[tokio::test(start_paused = true)]
    async fn a_leave_has_one_deadline_however_often_it_is_asked_for() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let deadline = now() + driver.leave_timeout + LEAVE_SLACK;
        let (reply, _answer) = oneshot::channel();
        driver.on_command(&mut st, Some(Command::Leave { reply }));
        assert!(driver.node.is_leaving());
        assert_eq!(st.stop_at, Some(deadline));
        tokio::time::advance(Duration::from_millis(500)).await;
        driver.on_command(&mut st, None);
        assert_eq!(st.stop_at, Some(deadline));
        assert!(!st.cmds_open);
        assert_eq!(st.leave_waiters.len(), 1);
    }

    /// A kill stops at once, without the graceful wait for connections to write what they
    /// have queued.
    #[tokio::test]
    async fn a_kill_stops_without_waiting_for_connections() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        driver.on_command(&mut st, Some(Command::Kill));
        assert!(st.stopping && st.killed);
    }

    /// The core is told when a connection ends, so the exchange it awaited there is counted
    /// lost and not waited on: on a close event, and when a frame finds an outbound
    /// connection closing (the exchanges sent on it are released).
    #[tokio::test]
    async fn a_closed_connection_releases_the_exchange_awaited_on_it() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let local = driver.shared.local_addr;
        let counters = Arc::clone(&driver.shared.counters);
        let lost = |d: &Driver| d.node.stats().stream_syncs_lost;
        // An inbound connection: a joining node's Syn, answered with requests on it.
        let mut queue = open_inbound(&mut driver, &mut st, peer(1));
        driver.on_stream(&mut st, frame(peer(1), valid_frame(local, "x")));
        driver.flush(&mut st).await;
        assert!(
            queue.write_one(&counters).is_some(),
            "answered on the connection"
        );
        let id = st.conns.get(&peer(1)).map_or(0, |c| c.id);
        driver.on_stream(&mut st, StreamEvent::Closed { peer: peer(1), id });
        assert_eq!(lost(&driver), 1);
        // An outbound connection, found closing when the next frame is queued.
        let mut queue = open_outbound(&driver, &mut st, peer(2));
        driver.on_stream(&mut st, frame(peer(2), valid_frame(local, "y")));
        driver.flush(&mut st).await;
        assert!(
            queue.write_one(&counters).is_some(),
            "answered on the connection"
        );
        drop(queue);
        driver.on_stream(&mut st, frame(peer(2), valid_frame(local, "z")));
        driver.flush(&mut st).await;
        assert_eq!(lost(&driver), 2);
    }

    /// Stopping gracefully waits (up to `FLUSH_ON_STOP`) for the node's tasks, outbound
    /// connections writing what they queued; a kill does not. Paused clock: a connection
    /// that needs 100 ms.
    #[tokio::test(start_paused = true)]
    async fn stopping_waits_for_connections_to_write_and_a_kill_does_not() {
        for killed in [false, true] {
            let (mut driver, _handle, mut st, _held) = harness(8, 0);
            let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&written);
            driver.tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            st.killed = killed;
            driver.finish(st).await;
            assert_eq!(
                written.load(std::sync::atomic::Ordering::Relaxed),
                !killed,
                "killed: {killed}"
            );
        }
    }

    /// Frames still queued on connections the stop ends (here one waiting for a slot, which
    /// a stop aborts) leave the `tcp_write_queued_bytes` gauge and are counted as dropped,
    /// killed or not: before, a stopped node reported their bytes as queued for good.
    #[tokio::test(start_paused = true)]
    async fn a_stop_releases_the_bytes_of_frames_still_queued() {
        for killed in [false, true] {
            let (mut driver, _handle, mut st, _held) = harness(8, 8);
            driver.send_frame(&mut st, peer(1), Bytes::from_static(b"state"));
            let queued = |d: &Driver| counter(d, |c| &c.tcp_write_queued_bytes);
            assert_eq!(queued(&driver), 5);
            st.killed = killed;
            let counters = Arc::clone(&driver.shared.counters);
            driver.finish(st).await;
            let c = |f: fn(&super::super::stats::Counters) -> &std::sync::atomic::AtomicU64| {
                f(&counters).load(std::sync::atomic::Ordering::Relaxed)
            };
            assert_eq!(c(|c| &c.tcp_write_queued_bytes), 0, "killed: {killed}");
            assert_eq!(c(|c| &c.tcp_frames_dropped), 1, "killed: {killed}");
        }
    }

    /// A caller told the node stopped may bind its UDP address again at once: the socket is
    /// closed before the stop is announced.
    #[tokio::test]
    async fn the_address_is_free_once_the_stop_is_announced() {
        let (driver, handle, st, _held) = harness(8, 0);
        let addr = driver.shared.local_addr;
        let rebind = tokio::spawn(async move {
            handle.stopped().await;
            std::net::UdpSocket::bind(addr).map(drop)
        });
        driver.finish(st).await;
        rebind.await.expect("task").expect("the address is free");
    }

    /// A write whose reply is dropped: its events are what matters.
    fn set(key: &str) -> Command {
        let (reply, _) = oneshot::channel();
        Command::Set {
            key: key.into(),
            value: Bytes::from_static(b"v"),
            ttl: None,
            reply,
        }
    }

    /// A subscription gets the events made after the driver took it in and none from
    /// before, even when those were still queued in the core, to be delivered by the same
    /// flush.
    #[tokio::test]
    async fn a_subscription_gets_no_event_made_before_it_was_taken() {
        let (mut driver, handle, mut st, _held) = harness(8, 0);
        // Someone wants key events all along.
        let _early = handle.subscribe();
        driver.on_command(&mut st, Some(set("before")));
        let mut sub = handle.subscribe();
        driver.on_command(&mut st, Some(set("after")));
        driver.flush(&mut st).await;
        let keys: Vec<String> = std::iter::from_fn(|| sub.try_recv())
            .filter_map(|e| match e {
                Ok(Event::KeyUpserted { key, .. }) => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(keys, ["after"]);
    }

    /// Once the only subscription that wanted key events is gone (found when an event
    /// would go to it), the core is told to build them no more: a large state transfer
    /// otherwise built one event per key that nobody read.
    #[tokio::test]
    async fn key_events_stop_when_their_only_subscriber_is_gone() {
        let (mut driver, handle, mut st, _held) = harness(8, 0);
        let sub = handle.subscribe_with(super::super::EventFilter::key_prefix("k"));
        driver.on_command(&mut st, Some(set("k1")));
        assert_ne!(st.key_events, KeyEvents::None);
        drop(sub);
        driver.flush(&mut st).await;
        assert_eq!(st.key_events, KeyEvents::None);
    }

    /// A subscription with the current state hears, per member, its status last: a member
    /// that left is replayed as `Left`, so a subscriber folding its events does not hold it
    /// live.
    #[tokio::test(start_paused = true)]
    async fn a_replay_ends_a_departed_member_with_its_status() {
        let (mut driver, handle, mut st, _held) = harness(8, 0);
        // Node x joins through this node, then leaves.
        let (mut x, _queue) = joined_by_x(&mut driver, &mut st);
        driver.flush(&mut st).await;
        assert_eq!(handle.membership().status("x"), Some(MemberStatus::Alive));
        x.leave(now());
        run_x(&mut x, &mut driver, &mut st, 5, Duration::from_secs(1)).await;
        driver.flush(&mut st).await;
        assert_eq!(handle.membership().status("x"), Some(MemberStatus::Left));
        let mut sub = handle.subscribe_with(super::super::EventFilter::all().with_current_state());
        driver.flush(&mut st).await;
        let about_x: Vec<Event> = std::iter::from_fn(|| sub.try_recv())
            .filter_map(Result::ok)
            .filter(|e| {
                matches!(e, Event::Joined(n) | Event::Left(n) | Event::Down(n) if n.name == "x")
                    || matches!(e, Event::ReadyChanged { node, .. } if node.name == "x")
            })
            .collect();
        assert!(
            matches!(about_x.first(), Some(Event::Joined(_))),
            "{about_x:?}"
        );
        assert!(
            matches!(about_x.last(), Some(Event::Left(_))),
            "{about_x:?}"
        );
    }

    /// A replay offers each event to the subscriber's filter and buffer before building it:
    /// a membership subscriber gets x's arrival and readiness and none of the 1,500 keys; a
    /// subscriber to every event gets the first 1,024 (its buffer) in order and is told it
    /// missed exactly the rest, as when the replay was built whole first.
    #[tokio::test(start_paused = true)]
    async fn a_replay_offers_only_what_the_filter_and_the_buffer_take() {
        let (mut driver, handle, mut st, _held) = harness(8, 0);
        let (mut x, _queue) = joined_by_x(&mut driver, &mut st);
        for i in 0..1_500 {
            x.set(now(), format!("k{i:04}"), "v").expect("a write");
        }
        run_x(&mut x, &mut driver, &mut st, 40, Duration::from_millis(200)).await;
        driver.flush(&mut st).await;
        let held = driver.node.node_state("x").map_or(0, |s| s.iter().count());
        assert!(held >= 1_500, "x's keys reached the node: {held}");
        let mut members =
            handle.subscribe_with(super::super::EventFilter::membership().with_current_state());
        let mut all = handle.subscribe_with(super::super::EventFilter::all().with_current_state());
        driver.flush(&mut st).await;
        let got: Vec<Event> = std::iter::from_fn(|| members.try_recv())
            .map(|e| e.expect("no gap"))
            .collect();
        assert!(got.iter().all(Event::is_membership), "{got:?}");
        assert!(
            got.iter()
                .any(|e| matches!(e, Event::Joined(n) if n.name == "x"))
        );
        let x_ready = |e: &Event| matches!(e, Event::ReadyChanged { node, .. } if node.name == "x");
        assert!(got.iter().any(x_ready), "{got:?}");
        // Own readiness and keys, then x's arrival, readiness and keys, in that order.
        let own = driver.node.local_state().iter().count();
        let whole = 1 + own + 2 + held;
        let mut taken = 0;
        let mut missed = 0;
        while let Some(e) = all.try_recv() {
            match e {
                Ok(_) => taken += 1,
                Err(lagged) => missed += lagged.0,
            }
        }
        assert_eq!(taken, 1_024, "the buffer's worth");
        assert_eq!(
            taken + missed as usize,
            whole,
            "every other one counted as missed"
        );
    }

    /// A node already in a cluster joins through an address; the exchange fails (the other
    /// cluster was not up yet). Joining through it again tries it again (found by review: the
    /// address was a seed already, so `Node::set_seeds` saw nothing new, and a node with live
    /// peers does not retry its seeds). Once leaving, a join is refused.
    #[tokio::test(start_paused = true)]
    async fn joining_through_an_address_again_exchanges_again() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let (_x, _queue) = joined_by_x(&mut driver, &mut st);
        assert_eq!(driver.node.num_live(), 2, "in a cluster with x");
        let other = peer(9001);
        for attempt in 1..=2 {
            join(&mut driver, &mut st, other)
                .await
                .expect("answered")
                .expect("taken");
            let before = driver.node.stats().stream_syncs;
            driver.node.handle_timeout(now());
            while driver.node.poll_transmit().is_some() {}
            assert!(
                driver.node.stats().stream_syncs > before,
                "join #{attempt} through {other}: no exchange"
            );
        }
        let (reply, _) = oneshot::channel();
        driver.on_command(&mut st, Some(Command::Leave { reply }));
        assert!(matches!(
            join(&mut driver, &mut st, other).await,
            Ok(Err(Error::Left))
        ));
    }
    #[test]
    fn a_full_memory_of_closed_connections_forgets_only_the_oldest() {
        let mut closed = BTreeMap::new();
        let addr = |i: usize| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7946));
        for i in 0..CLOSED_INBOUND_MAX {
            remember_closed(&mut closed, addr(i));
        }
        remember_closed(&mut closed, SocketAddr::from(([10, 1, 0, 0], 1)));
        assert_eq!(closed.len(), CLOSED_INBOUND_MAX);
        assert!(!closed.contains_key(&addr(0)), "the oldest is forgotten");
        assert!((1..CLOSED_INBOUND_MAX).all(|i| closed.contains_key(&addr(i))));
    }

    /// A burst of datagrams larger than one batch (64) loses none: the rest waits in the
    /// socket for the next pass. Before, the batch read one datagram past its end and dropped
    /// it, uncounted: every 65th datagram of a burst (a heartbeat, an ack) was lost.
    #[tokio::test]
    async fn a_burst_larger_than_a_batch_of_datagrams_loses_none() {
        let (mut driver, _handle, mut st, _held) = harness(8, 0);
        let sent = RECV_BATCH as u64 + 6;
        send_junk(&driver, sent).await;
        for _ in 0..2 {
            let first = driver.udp.try_recv_from(&mut st.recv_buf);
            driver.on_datagrams(&mut st, first);
        }
        assert_eq!(driver.node.stats().rx_datagrams, sent);
    }

    /// A spell alone goes on through a peer that is live for less than `ALONE_WARN_FIRST` at a
    /// time (UDP blocked and TCP open: each stream exchange brings the seed up until it is
    /// marked down again), with warnings on the same schedule; a peer live that long ends it,
    /// and so does having no seed. One tick a second, as the driver's.
    #[test]
    fn a_spell_alone_ends_only_once_a_peer_stays_live() {
        let t0 = now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut spell = None;
        let mut warned = Vec::new();
        // Alone, but a peer live for 3 s in every 8.
        for s in 0..=80 {
            let live = s % 8 >= 5;
            if Alone::step(&mut spell, at(s), live, true) {
                warned.push(s);
            }
        }
        // Due at 10, 30 and 70 s; the last two fall while the peer is up, and come at the
        // next tick alone.
        assert_eq!(
            warned,
            [10, 32, 72],
            "warnings go on through the flapping peer"
        );
        // A peer live for 10 s ends the spell; alone again, the count starts over.
        for s in 81..=91 {
            assert!(!Alone::step(&mut spell, at(s), true, true));
        }
        assert!(spell.is_none(), "ended");
        assert!(!Alone::step(&mut spell, at(92), false, true));
        assert_eq!(spell.as_ref().map(|a| a.since), Some(at(92)));
        // No seed (or leaving): no spell.
        assert!(!Alone::step(&mut spell, at(200), false, false));
        assert!(spell.is_none());
    }

    /// A node on 127.0.0.1, seeded with `seeds`, its driver running as `start` runs it.
    async fn running(name: &str, seeds: &[SocketAddr]) -> super::super::Handle {
        running_with(name, seeds, |_| {}).await
    }

    /// As `running`, with `tweak` applied to the configuration.
    async fn running_with(
        name: &str,
        seeds: &[SocketAddr],
        tweak: impl FnOnce(&mut super::super::RuntimeConfig),
    ) -> super::super::Handle {
        let mut config = super::super::RuntimeConfig::lan(name);
        config.bind = peer(0);
        config.seeds = seeds.iter().map(ToString::to_string).collect();
        tweak(&mut config);
        super::super::start(config).await.expect("node")
    }

    /// How many times `h` has warned that nobody answers it, at `at` since `t0`.
    async fn alone_warnings_at(h: &super::super::Handle, t0: Instant, at: Duration) -> u64 {
        tokio::time::sleep_until((t0 + at).into()).await;
        h.stats().await.alone_warnings
    }

    /// A node whose seed never answers (nothing listens there) says so: not before 10 s, then
    /// after 20, 40, 80, 160 s, then every 5 min. A node started with no seed is alone on
    /// purpose (the first of a cluster) and never warns. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_node_whose_seeds_never_answer_warns_after_ten_seconds_then_ever_less_often() {
        let silent = std::net::UdpSocket::bind(peer(0)).expect("socket");
        let t0 = now();
        let a = running("a", &[silent.local_addr().expect("addr")]).await;
        let first = running("first", &[]).await;
        let secs = Duration::from_secs_f64;
        // Warnings at about 10, 30, 70, 150, 310, 610 and 910 s.
        for (at, warned) in [
            (9.5, 0),
            (11.0, 1),
            (29.5, 1),
            (31.0, 2),
            (69.5, 2),
            (71.0, 3),
            (149.5, 3),
            (151.0, 4),
            (309.5, 4),
            (311.0, 5),
            (609.5, 5),
            (611.0, 6),
            (909.5, 6),
            (911.0, 7),
        ] {
            assert_eq!(
                alone_warnings_at(&a, t0, secs(at)).await,
                warned,
                "at {at} s"
            );
        }
        assert_eq!(first.stats().await.alone_warnings, 0, "a node with no seed");
        a.kill().await;
        first.kill().await;
    }

    /// A node that its seed does not answer (the seed drops its packets: another keyring)
    /// warns; once it is fixed and the peer answers, it does not warn while the peer lives;
    /// once the peer is gone (down) it is alone with seeds again, and warns 10 s into that
    /// spell, not at once as if the first spell had gone on.
    #[tokio::test(start_paused = true)]
    async fn a_node_warns_ten_seconds_into_each_spell_alone_with_seeds() {
        let t0 = now();
        let b = running("b", &[]).await;
        let c = running_with("c", &[b.local_addr()], |config| {
            config.protocol.keyring = Some(crate::crypto::Keyring::new([7; 32]));
        })
        .await;
        let live = |h: &super::super::Handle| h.membership().num_live();
        assert_eq!(alone_warnings_at(&c, t0, Duration::from_secs(11)).await, 1);
        assert_eq!(live(&c), 1, "b drops c's sealed packets");
        c.set_keyring(None, false, false).await.expect("plaintext");
        assert_eq!(alone_warnings_at(&c, t0, Duration::from_secs(60)).await, 1);
        assert_eq!((live(&b), live(&c)), (2, 2), "b and c found each other");
        assert_eq!(b.stats().await.alone_warnings, 0, "b has no seed");
        b.kill().await;
        let mut m = c.watch_membership();
        tokio::time::timeout(Duration::from_secs(10), m.wait_for(|m| m.num_live() == 1))
            .await
            .expect("c sees b down")
            .expect("c runs");
        let down = now();
        assert_eq!(alone_warnings_at(&c, down, Duration::from_secs(9)).await, 1);
        assert_eq!(
            alone_warnings_at(&c, down, Duration::from_secs(12)).await,
            2
        );
        c.kill().await;
    }

    /// A node bound to every address, advertising 127.0.0.1: a seed at 127.0.0.2 is the node
    /// itself, through the same listener. Returns the driver, its state and that address.
    fn bound_to_every_address() -> (Driver, State, SocketAddr) {
        let mut config = super::super::RuntimeConfig::lan("a");
        config.bind = SocketAddr::from(([0, 0, 0, 0], 0));
        config.advertise = Some(peer(0));
        let (driver, _handle, _span) = super::super::build(config).expect("node");
        let st = State::new(driver.node.ring_arc());
        let itself = SocketAddr::from(([127, 0, 0, 2], driver.shared.local_addr.port()));
        (driver, st, itself)
    }

    /// The node's join exchange to a seed that is the node itself, through another of its
    /// addresses, is accepted by its own listener at that address: the seed is dropped, the
    /// connection to itself closed, and a later seed set (a DNS name answering it again)
    /// leaves it out. Real sockets on loopback, driven step by step; real clock. Before,
    /// the address stayed a seed for good.
    #[tokio::test]
    async fn a_seed_accepted_as_this_nodes_own_address_stops_being_a_seed() {
        let (mut driver, mut st, itself) = bound_to_every_address();
        driver.set_seeds(vec![itself]);
        assert_eq!(driver.node.seeds(), [itself]);
        driver.node.handle_timeout(now());
        driver.flush(&mut st).await;
        assert!(
            st.conns.get(&itself).is_some_and(|c| !c.inbound),
            "the join exchange dials the seed"
        );
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while !driver.node.seeds().is_empty() {
                let ev = driver.stream_rx.recv().await.expect("the node runs");
                driver.on_stream(&mut st, ev);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "never saw itself: seeds {:?}",
            driver.node.seeds()
        );
        assert!(
            !st.conns.contains_key(&itself),
            "the connection to itself is closed"
        );
        let other = SocketAddr::from(([192, 0, 2, 5], 7946));
        driver.set_seeds(vec![itself, other]);
        assert_eq!(driver.node.seeds(), [other], "left out of later seed sets");
    }

    /// The same node running, joined through that address at run time: it never warns that
    /// nobody answers (the seed it had is gone), and its own packets stop coming back. Before,
    /// it warned after 10 s and got a Syn of its own back every round. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_node_joined_through_its_own_address_does_not_warn_that_it_is_alone() {
        let t0 = now();
        let a = running_with("a", &[], |config| {
            config.bind = SocketAddr::from(([0, 0, 0, 0], 0));
            config.advertise = Some(peer(0));
        })
        .await;
        let itself = SocketAddr::from(([127, 0, 0, 2], a.local_addr().port()));
        a.join([itself]).await.expect("joined");
        assert_eq!(alone_warnings_at(&a, t0, Duration::from_secs(30)).await, 0);
        let own = a.stats().await.core.rx_own_tag;
        assert!(own >= 1, "it reached itself");
        // 150 rounds (30 s) later, still none of either.
        assert_eq!(alone_warnings_at(&a, t0, Duration::from_secs(60)).await, 0);
        assert_eq!(a.stats().await.core.rx_own_tag, own, "and no more since");
        a.kill().await;
    }
}
