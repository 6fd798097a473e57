//! A runtime node whose task waited to run reads the heartbeats already queued in its socket
//! before its overdue timer judges peers by their silence.
//!
//! Node A is a real runtime node; peer B is a core driven by this test over a plain UDP socket,
//! on tokio's paused clock, so the test decides exactly when B's heartbeats are sent and when
//! A gets to run. Without the driver's late-timer read, A woke with the timer and B's datagram
//! both ready and `select!` took the timer first about half the time, convicting B.

mod runtime_common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use runtime_common::{INTERVAL, config};
use tidings::runtime::{self, Handle, Subscription};
use tidings::{Channel, Event, Node, NodeId};

/// The clock the test drives the peer by: tokio's, paused (the test plays the peer's driver,
/// which reads the runtime's clock as `tidings::runtime` does).
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The test's peer: a core and its socket.
struct Peer {
    node: Node,
    sock: UdpSocket,
}

impl Peer {
    fn new(seed: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let protocol = config("b", &[]).protocol;
        let now = now();
        let mut node = Node::new(NodeId::new("b", 1, addr), protocol, 7, now).unwrap();
        // While alone it gossips Syns to its seed by datagram; its stream join attempts are
        // dropped below (nothing here speaks TCP), which the protocol survives.
        node.join(now, [seed]);
        Self { node, sock }
    }

    /// Reads what A sent, runs B's timers if `rounds`, and sends B's datagrams.
    fn step(&mut self, rounds: bool) {
        let now = now();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.node.handle_datagram(now, from, &buf[..n]);
        }
        if rounds && self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.send();
    }

    fn send(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if t.channel == Channel::Datagram {
                self.sock.send_to(&t.payload, t.to).unwrap();
            }
        }
    }
}

/// Lets A's task run: the I/O driver is polled and ready tasks run, without moving the clock.
async fn let_run() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Advances the clock by `d` in steps of `step`, A running and B stepping (its rounds only if
/// `rounds`) after each. Returns how long it went before A reported B down, if it did.
async fn run(
    b: &mut Peer,
    sub: &mut Subscription,
    d: Duration,
    step: Duration,
    rounds: bool,
) -> Option<Duration> {
    let mut t = Duration::ZERO;
    while t < d {
        tokio::time::advance(step).await;
        t += step;
        let_run().await;
        b.step(rounds);
        let_run().await;
        if b_down(sub) {
            return Some(t);
        }
    }
    None
}

/// Whether A reported B down since the last call.
fn b_down(sub: &mut Subscription) -> bool {
    let mut down = false;
    while let Some(e) = sub.try_recv() {
        down |= matches!(e, Ok(Event::Down(ref n)) if n.name == "b");
    }
    down
}

/// A with B learned and heartbeating for a while.
async fn pair() -> (Handle, Subscription, Peer) {
    let a = runtime::start(config("a", &[])).await.unwrap();
    let mut sub = a.subscribe();
    let mut b = Peer::new(a.id().addr);
    let step = Duration::from_millis(5);
    assert_eq!(
        run(&mut b, &mut sub, Duration::from_secs(5), step, true).await,
        None
    );
    assert_eq!(
        a.membership().status("b"),
        Some(tidings::MemberStatus::Alive)
    );
    (a, sub, b)
}

#[tokio::test(start_paused = true)]
async fn a_late_timer_reads_queued_heartbeats_before_convicting() {
    let ms = Duration::from_millis(1);
    // How long B may stay silent before A convicts it, everything on time.
    let (a, mut sub, mut b) = pair().await;
    let limit = run(&mut b, &mut sub, Duration::from_secs(10), ms, false)
        .await
        .expect("a silent peer is convicted");
    a.kill().await;
    // Each time: B silent until shortly before that, then one heartbeat sent while A cannot
    // run, and A woken only after its deadline for B passed, less than an interval late (no
    // local health penalty, no pause forgiven). Several rounds: a random pick would convict
    // in about half of them.
    let early = Duration::from_millis(20);
    let frozen = Duration::from_millis(50);
    assert!(limit > early && early + frozen < INTERVAL + early);
    for episode in 0..6 {
        let (a, mut sub, mut b) = pair().await;
        assert_eq!(
            run(&mut b, &mut sub, limit - early, ms, false).await,
            None,
            "episode {episode}: convicted before the limit measured"
        );
        // B's round, its fresh heartbeat now in A's socket.
        let now = now();
        b.node.handle_timeout(now);
        b.send();
        tokio::time::advance(frozen).await;
        let_run().await;
        b.step(true);
        let down = b_down(&mut sub)
            || run(&mut b, &mut sub, Duration::from_secs(1), ms, true)
                .await
                .is_some();
        assert!(
            !down,
            "episode {episode}: B convicted with its heartbeat queued"
        );
        // The wake after the freeze was seen as late (so the queue was read first).
        assert!(a.stats().await.late_timers >= 1, "episode {episode}");
        a.kill().await;
    }
}

#[tokio::test(start_paused = true)]
async fn timers_a_few_milliseconds_late_are_not_counted() {
    // The clock moves 5 ms at a time, so A's timers run up to 5 ms late, as the timer wheel's
    // and the OS's rounding make them on an idle host: not a starved task.
    let (a, _sub, _b) = pair().await;
    assert_eq!(a.stats().await.late_timers, 0);
    a.kill().await;
}
