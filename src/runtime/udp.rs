//! Binding the gossip port: one UDP socket and one TCP listener on the same port number.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

use crate::node::Channel;

/// Attempts at finding a port free for both UDP and TCP when the configured port is 0.
const PORT_ATTEMPTS: usize = 32;
/// Backlog of the TCP listener.
const LISTEN_BACKLOG: i32 = 128;

/// The bound pair.
pub(crate) struct Bound {
    pub(crate) udp: UdpSocket,
    pub(crate) tcp: TcpListener,
    pub(crate) local_addr: SocketAddr,
}

/// Binds UDP and TCP on `bind`. With port 0, the operating system picks a UDP port and the
/// listener takes the same number, retrying if TCP has it in use.
///
/// Address reuse: the TCP listener sets `SO_REUSEADDR`, so a restarted node rebinds while old
/// connections linger in `TIME_WAIT`. The UDP socket does not: UDP has no `TIME_WAIT`, and on
/// Linux `SO_REUSEADDR` would let a second process bind the same UDP port and silently take
/// part of this node's datagrams (the kernel may even hand the same ephemeral port to two such
/// sockets).
///
/// A failure names the socket it came from (`Channel::Datagram`: the UDP socket; `Stream`: the
/// TCP listener), so that an operator whose port is taken for one protocol only is told which.
pub(crate) fn bind(
    bind: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> Result<Bound, (Channel, io::Error)> {
    let udp_err = |e| (Channel::Datagram, e);
    let tcp_err = |e| (Channel::Stream, e);
    let attempts = if bind.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = udp_socket(bind, recv_buffer, send_buffer).map_err(udp_err)?;
        let local_addr = udp
            .local_addr()
            .map_err(udp_err)?
            .as_socket()
            .ok_or_else(|| {
                udp_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "UDP socket has no IP address",
                ))
            })?;
        match tcp_listener(local_addr) {
            Ok(tcp) => {
                let udp = UdpSocket::from_std(udp.into()).map_err(udp_err)?;
                let tcp = TcpListener::from_std(tcp.into()).map_err(tcp_err)?;
                return Ok(Bound {
                    udp,
                    tcp,
                    local_addr,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && bind.port() == 0 => {
                debug!(%local_addr, "TCP port in use; trying another UDP port");
                last_err = Some(e);
            }
            Err(e) => return Err(tcp_err(e)),
        }
    }
    Err(tcp_err(last_err.unwrap_or_else(|| {
        io::Error::from(io::ErrorKind::AddrInUse)
    })))
}

fn udp_socket(bind: SocketAddr, recv_buffer: usize, send_buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        // `[::]` accepts IPv4 too (as v4-mapped addresses); see `to_socket` / `canonical`.
        socket.set_only_v6(false)?;
    }
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// An address as this node's peers know it (the core's rule, which its seeds follow too).
pub(crate) use crate::node::canonical;

/// The destination to pass to a socket of the given family: an IPv6 socket reaches IPv4 peers
/// through IPv4-mapped addresses.
pub(crate) fn to_socket(addr: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

/// Longest wait for room in a full send buffer before a datagram is dropped.
pub(crate) const SEND_WAIT: Duration = Duration::from_millis(20);

/// What became of a datagram handed to [`send`].
#[derive(Debug)]
pub(crate) enum Sent {
    Yes,
    /// The send buffer stayed full.
    Dropped,
    Failed(io::Error),
}

/// The two socket calls [`send`] makes, so a test can hold a send buffer full (loopback
/// never fills one: the kernel releases a datagram's buffer as it is handed over).
pub(crate) trait Outbound {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Outbound for UdpSocket {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        Self::try_send_to(self, buf, to)
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        Self::writable(self)
    }
}

/// Sends one datagram without letting a full send buffer stall the node's loop: awaiting
/// room there held back its timers and receiving for as long as the buffer stayed full
/// (datagrams queued for on-link neighbours that never answer ARP hold theirs about 3 s).
///
/// It waits for room at most [`SEND_WAIT`], and not at all while `stalled` (the caller's,
/// set when a wait runs out, cleared when a datagram goes): a buffer held full costs one
/// wait, not one per datagram. The wait is there at all because tokio reports a socket
/// writable only once its reactor has seen it so: a first send right after binding would
/// be dropped otherwise.
pub(crate) async fn send<S: Outbound>(
    sock: &S,
    buf: &[u8],
    to: SocketAddr,
    stalled: &mut bool,
) -> Sent {
    let mut res = sock.try_send_to(buf, to);
    if is_full(&res) && !*stalled {
        match tokio::time::timeout(SEND_WAIT, sock.writable()).await {
            Ok(Ok(())) => res = sock.try_send_to(buf, to),
            Ok(Err(e)) => return Sent::Failed(e),
            Err(_) => *stalled = true,
        }
    }
    match res {
        Ok(_) => {
            *stalled = false;
            Sent::Yes
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Dropped,
        Err(e) => Sent::Failed(e),
    }
}

fn is_full(res: &io::Result<usize>) -> bool {
    matches!(res, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Datagrams handled per wake-up before the outputs are flushed, so a burst costs one flush.
pub(crate) const RECV_BATCH: usize = 64;
/// Receive buffer: any UDP payload fits.
pub(crate) const RECV_BUF: usize = 65_536;

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A socket whose send buffer stays full.
    struct Full;

    impl Outbound for Full {
        fn try_send_to(&self, _: &[u8], _: SocketAddr) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
            std::future::pending()
        }
    }

    /// A full buffer costs one wait of `SEND_WAIT`, then datagrams are dropped at once
    /// until one gets through: the loop is never held longer.
    #[tokio::test(start_paused = true)]
    async fn a_full_send_buffer_costs_one_bounded_wait_then_drops() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut stalled = false;
        let t0 = tokio::time::Instant::now();
        assert!(matches!(
            send(&Full, b"x", to, &mut stalled).await,
            Sent::Dropped
        ));
        assert_eq!(t0.elapsed(), SEND_WAIT);
        assert!(stalled);
        for _ in 0..100 {
            assert!(matches!(
                send(&Full, b"x", to, &mut stalled).await,
                Sent::Dropped
            ));
        }
        assert_eq!(t0.elapsed(), SEND_WAIT, "no more waits while stalled");
        // Once the reactor reports room (the socket's readiness), datagrams go again.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.writable().await.unwrap();
        assert!(matches!(
            send(&sock, b"x", to, &mut stalled).await,
            Sent::Yes
        ));
        assert!(!stalled, "a datagram sent ends the stall");
    }

    /// A socket writable once waited for (as tokio's is, until its reactor has seen it).
    struct Fresh(AtomicBool, Cell<u32>);

    impl Outbound for Fresh {
        fn try_send_to(&self, _: &[u8], _: SocketAddr) -> io::Result<usize> {
            self.1.set(self.1.get() + 1);
            if self.0.load(Ordering::Relaxed) {
                Ok(1)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
            self.0.store(true, Ordering::Relaxed);
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_socket_not_yet_seen_writable_is_waited_for() {
        let fresh = Fresh(AtomicBool::new(false), Cell::new(0));
        let mut stalled = false;
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(matches!(
            send(&fresh, b"x", to, &mut stalled).await,
            Sent::Yes
        ));
        assert_eq!(fresh.1.get(), 2, "tried, waited, tried again");
        // The real thing: a socket just bound sends its first datagram.
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        assert!(matches!(
            send(&sock, b"hi", to, &mut stalled).await,
            Sent::Yes
        ));
        let mut buf = [0u8; 4];
        assert_eq!(rx.recv(&mut buf).unwrap(), 2);
    }

    #[tokio::test]
    async fn binds_udp_and_tcp_on_one_port_v4_and_v6() {
        let b = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        assert_ne!(b.local_addr.port(), 0);
        assert_eq!(b.tcp.local_addr().unwrap(), b.local_addr);
        if let Ok(b6) = bind("[::1]:0".parse().unwrap(), 0, 0) {
            assert_eq!(b6.tcp.local_addr().unwrap().port(), b6.local_addr.port());
        }
    }

    /// Without `SO_REUSEADDR` on the UDP socket no second process can bind the port and
    /// take part of the node's datagrams (the TCP listener sets it, which is safe for TCP).
    #[tokio::test]
    async fn a_second_socket_cannot_bind_the_nodes_udp_port() {
        let b = bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap();
        let second = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        second.set_reuse_address(true).unwrap();
        let err = second.bind(&b.local_addr.into()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Only IPv4-mapped addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
    /// IPv4 sender) become IPv4, port kept; every other IPv6 address stays as it is, the
    /// loopback `::1` and the deprecated IPv4-compatible `::a.b.c.d` included (which
    /// `Ipv6Addr::to_ipv4` would turn into 0.0.0.1 and a.b.c.d).
    #[test]
    fn canonical_turns_only_ipv4_mapped_addresses_into_ipv4() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(canonical(a("[::ffff:10.1.2.3]:7946")), a("10.1.2.3:7946"));
        assert_eq!(canonical(a("[::ffff:127.0.0.1]:1")), a("127.0.0.1:1"));
        for kept in [
            "10.1.2.3:7946",
            "[::1]:7946",
            "[::10.1.2.3]:7946",
            "[2001:db8::1]:7946",
            "[::]:7946",
        ] {
            assert_eq!(canonical(a(kept)), a(kept));
        }
    }

    /// Bound to `[::]`, the UDP socket and the TCP listener take IPv4 peers too (dual stack),
    /// and an IPv4 sender, seen as IPv4-mapped, is known by its plain IPv4 address. Skipped
    /// where the host has no IPv6.
    #[tokio::test(start_paused = true)]
    async fn a_socket_bound_to_the_ipv6_wildcard_takes_ipv4_peers_too() {
        let Ok(b) = bind("[::]:0".parse().unwrap(), 0, 0) else {
            return;
        };
        let port = b.local_addr.port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"x", v4).unwrap();
        let mut buf = [0u8; 8];
        // Loopback queues the datagram before `send_to` returns: no wait, and a socket that
        // never gets it fails at once in paused time.
        let (n, from) = tokio::time::timeout(Duration::from_secs(60), b.udp.recv_from(&mut buf))
            .await
            .expect("an IPv4 datagram reaches a socket bound to [::]")
            .unwrap();
        assert_eq!(&buf[..n], b"x");
        assert!(from.is_ipv6(), "{from}");
        assert_eq!(canonical(from), sender.local_addr().unwrap());
        let _conn = std::net::TcpStream::connect(v4).expect("IPv4 connection to [::]");
        let (_, peer) = b.tcp.accept().await.unwrap();
        assert_eq!(canonical(peer).ip(), v4.ip());
    }

    /// The buffer sizes asked for are set, and 0 leaves the system's defaults (larger than
    /// the few kilobytes asked for here).
    #[tokio::test]
    async fn the_buffer_sizes_asked_for_are_set_and_zero_keeps_the_defaults() {
        let sizes = |b: &Bound| {
            let s = socket2::SockRef::from(&b.udp);
            (s.recv_buffer_size().unwrap(), s.send_buffer_size().unwrap())
        };
        let asked = sizes(&bind("127.0.0.1:0".parse().unwrap(), 4096, 8192).unwrap());
        let default = sizes(&bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap());
        assert!(asked.0 < asked.1, "receive and send set apart: {asked:?}");
        assert!(asked.0 < default.0, "{asked:?} {default:?}");
        assert!(asked.1 < default.1, "{asked:?} {default:?}");
    }

    /// `SO_REUSEADDR` on the listener: the port binds again while a connection the node
    /// closed lingers in `TIME_WAIT` (a restart on a fixed port). The node closes first, so the
    /// `TIME_WAIT` is on its side.
    #[tokio::test]
    async fn the_port_binds_again_while_a_closed_connection_lingers() {
        use std::io::Read;
        let b = bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap();
        let addr = b.local_addr;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = b.tcp.accept().await.unwrap();
        drop(accepted);
        // The node's FIN arrives: the client reads the end and closes its side in turn.
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        drop(client);
        drop(b);
        let again = bind(addr, 0, 0).expect("the port binds again");
        assert_eq!(again.local_addr, addr);
    }

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "10.1.2.3:7946".parse().unwrap();
        let mapped = to_socket(v4, true);
        assert!(mapped.is_ipv6());
        assert_eq!(canonical(mapped), v4);
        assert_eq!(to_socket(v4, false), v4);
    }
}
