//! The stream transport: TCP connections carrying length-prefixed frames.
//!
//! A frame is a 4-byte big-endian payload length, then the payload (one core message). Every
//! connection runs in its own task, reading frames into the driver's channel and writing the
//! frames the driver queues for it. Frames larger than `max_frame_size`, a frame that takes
//! longer than `tcp_read_timeout` to arrive, a write longer than `tcp_write_timeout` and
//! `tcp_idle_timeout` without any frame all close the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, tcp};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, warn};

use super::now;
use super::stats::{Counters, bump};
use super::udp::canonical;

/// What connection tasks tell the driver.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// An inbound connection opened; frames for `peer` go to `tx`. `local` is the address it
    /// was made to (canonical; `None` if the system would not say): one that reaches this
    /// node, whatever the node advertises.
    Opened {
        peer: SocketAddr,
        local: Option<SocketAddr>,
        id: u64,
        tx: FrameSender,
    },
    /// A frame arrived from `peer` (the connection's remote address for inbound connections,
    /// the gossip address dialled for outbound ones). `_held` counts its bytes against the
    /// frames waiting for the driver (`TcpShared::inbound`) until the event is dropped.
    Frame {
        peer: SocketAddr,
        payload: Bytes,
        _held: OwnedSemaphorePermit,
    },
    /// The connection `id` to `peer` closed.
    Closed { peer: SocketAddr, id: u64 },
}

/// Timeouts and sizes of the stream transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_frame_size: usize,
    /// Most inbound connections open at once from one IP address.
    pub(crate) max_per_ip: usize,
    /// Whether `max_per_ip` applies to loopback addresses too (tests only: a local cluster
    /// has every peer on one loopback address, and a stranger there is already on the host).
    pub(crate) limit_loopback: bool,
    /// The IP outbound connections come from: the node's bind IP when it names one, so that
    /// peers see this node's connections from the address they trust (on a host with several
    /// addresses the kernel would otherwise pick the source by route, and a peer would read
    /// this node's large frames as a stranger's). `None` (bound to every address): the
    /// kernel picks, as it does for the node's datagrams.
    pub(crate) source: Option<IpAddr>,
}

/// What every connection task shares.
pub(crate) struct TcpShared {
    pub(crate) settings: TcpSettings,
    pub(crate) counters: Arc<Counters>,
    /// One permit per open connection, inbound and outbound together.
    pub(crate) permits: Arc<Semaphore>,
    /// One permit per byte of the frames read and not yet handled by the driver, at most
    /// `inbound_budget`: the event queue is bounded in frames, and frames are up to
    /// `max_frame_size` each.
    inbound: Arc<Semaphore>,
    /// One permit per byte of the large frames being read from addresses not trusted yet, at
    /// most `untrusted_budget`: a frame is authenticated only once whole, so without it anyone
    /// who can reach the port could fill a partly read frame on every slot it gets.
    untrusted: Arc<Semaphore>,
    /// Addresses whose large frames are read without that budget: known members' and seeds'
    /// (see `TcpShared::set_trusted`). A channel, so that frames waiting for the budget see
    /// their address become trusted.
    trusted: watch::Sender<BTreeSet<IpAddr>>,
    pub(crate) events_tx: mpsc::Sender<StreamEvent>,
    next_id: AtomicU64,
    /// Origin of `last_warn_ms`.
    base: Instant,
    /// When a fault was last logged at warn level, in milliseconds since `base` plus one
    /// (0: never).
    last_warn_ms: AtomicU64,
}

impl TcpShared {
    pub(crate) fn new(
        settings: TcpSettings,
        counters: Arc<Counters>,
        max_connections: usize,
        events_tx: mpsc::Sender<StreamEvent>,
    ) -> Self {
        Self {
            settings,
            counters,
            permits: Arc::new(Semaphore::new(max_connections)),
            inbound: Arc::new(Semaphore::new(inbound_budget(settings.max_frame_size))),
            untrusted: Arc::new(Semaphore::new(untrusted_budget(settings.max_frame_size))),
            trusted: watch::Sender::new(BTreeSet::new()),
            events_tx,
            next_id: AtomicU64::new(1),
            base: now(),
            last_warn_ms: AtomicU64::new(0),
        }
    }

    /// Whether a fault should be logged at warn level now: at most one such warning every
    /// `WARN_EVERY` for all connections of the node together (the others go to debug), so a
    /// peer that keeps failing does not flood the log.
    fn should_warn(&self) -> bool {
        let t = now().saturating_duration_since(self.base).as_millis() as u64 + 1;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if last != 0 && t.saturating_sub(last) < WARN_EVERY.as_millis() as u64 {
            return false;
        }
        self.last_warn_ms
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Sets the addresses trusted with large frames: the IPs every known member advertises
    /// (with a keyring, membership is only what members said: a packet captured and replayed
    /// from another address adds nobody) and the seeds' (the operator's). Not the address a
    /// frame came from: a replayed frame is accepted once, from anywhere. A member whose
    /// packets come from another address than it advertises (NAT) goes through the budget.
    /// Frames waiting for the budget from an address now trusted go on without it (a joiner's
    /// full sync, once the snapshot lists it); they are woken only when the set changes, not
    /// at every snapshot.
    pub(crate) fn set_trusted(&self, ips: BTreeSet<IpAddr>) {
        self.trusted.send_if_modified(|trusted| {
            let changed = *trusted != ips;
            *trusted = ips;
            changed
        });
    }

    /// Whether frames from `ip` may be read past `READ_CHUNK` without the untrusted budget.
    /// Loopback is trusted (a stranger there is on the host already), as it is not counted
    /// per address, unless `limit_loopback` (tests).
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() && !self.settings.limit_loopback {
            return true;
        }
        self.trusted.borrow().contains(&ip)
    }

    /// What `max_per_ip` counts a connection from `ip` under: the address itself, or for an
    /// IPv6 address outside every trusted address's /64 (a member's, this node's own among
    /// them, or a seed's) its /64 prefix. A host is usually given a whole /64, so counting
    /// strangers per address let one host take every slot from as many addresses. Members
    /// are counted per address, and so is everyone in a member's /64: that is the cluster's
    /// own network (the pods of one Kubernetes node, an IPv6 LAN or a cloud subnet, each one
    /// /64 for many hosts), where an address not yet a member is a node joining, or a member
    /// sending from another address of its host than it advertises; counted under the /64,
    /// all of those shared one limit.
    pub(crate) fn limit_key(&self, ip: IpAddr) -> IpAddr {
        const HOST_BITS: u128 = (1 << 64) - 1;
        let IpAddr::V6(v6) = ip else {
            return ip;
        };
        if self.is_trusted(ip) {
            return ip;
        }
        let net = v6.to_bits() & !HOST_BITS;
        let within = IpAddr::V6(Ipv6Addr::from(net))..=IpAddr::V6(Ipv6Addr::from(net | HOST_BITS));
        if self.trusted.borrow().range(within).next().is_some() {
            ip
        } else {
            IpAddr::V6(Ipv6Addr::from(net))
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Free connection slots now.
    pub(crate) fn free_slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// A slot for one more connection, or `None` (counted) if `max_connections` are open.
    fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok();
        if permit.is_none() {
            bump(&self.counters.tcp_connections_refused);
        }
        permit
    }
}

/// Bytes of frames read and waiting for the driver, all connections together: four of the
/// largest frames. A reader that would go past it waits (and so stops reading its socket).
fn inbound_budget(max_frame_size: usize) -> usize {
    max_frame_size.saturating_mul(4).min(Semaphore::MAX_PERMITS)
}

/// Bytes of large frames being read from addresses not trusted yet, all connections
/// together: two of the largest frames. Such a frame reserves its whole length once it is
/// known to be longer than `READ_CHUNK` (so frames never wait on one another half read), and
/// waits for room within its read deadline.
fn untrusted_budget(max_frame_size: usize) -> usize {
    max_frame_size.saturating_mul(2).min(Semaphore::MAX_PERMITS)
}

/// Frames queued per connection before the driver drops further ones. Their bytes are
/// bounded too (see `FrameSender`).
const WRITE_QUEUE: usize = 16;

/// A connection's write queue: the driver's end and the connection task's.
pub(crate) fn write_queue(counters: Arc<Counters>) -> (FrameSender, WriteQueue) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let reading = Arc::new(AtomicBool::new(false));
    let sender = FrameSender {
        tx,
        queued: Arc::clone(&queued),
        reading: Arc::clone(&reading),
        counters: Arc::clone(&counters),
    };
    (
        sender,
        WriteQueue {
            rx,
            queued,
            reading,
            counters,
        },
    )
}

/// The driver's end of a connection's write queue. It counts the bytes queued or being
/// written (shared with the connection's `WriteQueue`, which gives them back once a frame is
/// written or dropped) and keeps them within two of the largest frames: a peer that reads
/// slowly (or not at all) otherwise held up to `WRITE_QUEUE` of them per connection, with
/// 8 MiB frames about 136 MiB, and over 64 connections more than 8 GiB.
#[derive(Debug)]
pub(crate) struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// The connection is in the middle of reading a frame (its `Activity::mid_frame`).
    reading: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl FrameSender {
    /// Whether the connection is moving a frame: one is queued or being written (or waits
    /// for the connection to open), or one is partly read. Closing it would cut an exchange
    /// short, however long ago its last whole frame was.
    pub(crate) fn busy(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0 || self.reading.load(Ordering::Acquire)
    }

    /// Queues `payload`, or hands it back: `Full` when the queue holds `WRITE_QUEUE` frames
    /// or the frame would take it past twice `max_frame_size` bytes (one frame always fits
    /// an empty queue), `Closed` when the connection is closing.
    pub(crate) fn try_send(
        &self,
        payload: Bytes,
        max_frame_size: usize,
    ) -> Result<(), TrySendError<Bytes>> {
        let len = payload.len();
        let held = self.queued.load(Ordering::Acquire);
        if held > 0 && held.saturating_add(len) > max_frame_size.saturating_mul(2) {
            return Err(TrySendError::Full(payload));
        }
        hold(&self.queued, &self.counters, len);
        self.tx.try_send(payload).inspect_err(|_| {
            release(&self.queued, &self.counters, len);
        })
    }
}

/// Counts `len` more bytes as queued on a connection (`queued`) and in the node's gauge.
fn hold(queued: &AtomicUsize, counters: &Counters, len: usize) {
    queued.fetch_add(len, Ordering::AcqRel);
    counters
        .tcp_write_queued_bytes
        .fetch_add(len as u64, Ordering::Relaxed);
}

/// Undoes `hold` once the bytes are written, dropped or never queued.
fn release(queued: &AtomicUsize, counters: &Counters, len: usize) {
    queued.fetch_sub(len, Ordering::AcqRel);
    counters
        .tcp_write_queued_bytes
        .fetch_sub(len as u64, Ordering::Relaxed);
}
/// A frame's bytes in its connection's queue count and the gauge, released when dropped.
struct Held<'a> {
    queued: &'a AtomicUsize,
    counters: &'a Counters,
    len: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        release(self.queued, self.counters, self.len);
    }
}

/// Read granularity: the buffer grows by at most this much beyond what the current frame
/// still needs, so a peer announcing a large frame costs memory only as its bytes arrive
/// (within a factor of two, the buffer doubling as it grows; see `grow`).
const READ_CHUNK: usize = 64 * 1024;
/// Wait after a failed `accept` (for example, out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Least time between two warn-level logs of connection faults (connect failures, read or
/// write errors and timeouts, oversized frames, refused connections).
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The tasks of the inbound connections: spawned by the accept loop, ended by the driver
/// when the node stops. Not owned by the accept loop: aborting it dropped the set, which
/// aborts its tasks without waiting for them, so they were dropped later (their sockets
/// still open after `kill` or `shutdown` returned; found by review). Dropped with the last of
/// the driver and the accept loop, it still aborts them.
pub(crate) type Inbound = Arc<std::sync::Mutex<JoinSet<()>>>;

/// Locks the inbound connections' set; nothing panics while holding it.
pub(crate) fn lock_inbound(conns: &Inbound) -> std::sync::MutexGuard<'_, JoinSet<()>> {
    conns
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until the task is aborted (by the driver, when the node stops).
/// Connection tasks live in `conns`, which the driver ends and waits for.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<TcpShared>, conns: Inbound) {
    // Inbound connections open per remote IP address (loopback not counted unless
    // `limit_loopback`), and the address of each counted task, released when it ends,
    // however it ends (a task that panicked or was cancelled too).
    let mut per_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut task_ip: BTreeMap<tokio::task::Id, IpAddr> = BTreeMap::new();
    loop {
        let accepted = listener.accept().await;
        {
            let mut conns = lock_inbound(&conns);
            while let Some(ended) = conns.try_join_next_with_id() {
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                if let Some(ip) = task_ip.remove(&id) {
                    release_ip(&mut per_ip, ip);
                }
            }
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                bump(&shared.counters.tcp_errors);
                // Out of file descriptors, this repeats every `ACCEPT_ERROR_PAUSE`.
                if shared.should_warn() {
                    warn!(error = %e, "accepting a TCP connection failed");
                } else {
                    debug!(error = %e, "accepting a TCP connection failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let peer = canonical(peer);
        let local = stream.local_addr().ok().map(canonical);
        let counted = (shared.settings.limit_loopback || !peer.ip().is_loopback())
            .then(|| shared.limit_key(peer.ip()));
        if let Some(ip) = counted
            && per_ip.get(&ip).copied().unwrap_or(0) >= shared.settings.max_per_ip
        {
            // One address must not take every slot: the others would be refused while it
            // holds them (and connections that send valid frames are never idle).
            bump(&shared.counters.tcp_connections_refused);
            if shared.should_warn() {
                warn!(%peer, "refusing TCP connection: max_connections_per_ip open from it");
            } else {
                debug!(%peer, "refusing TCP connection: max_connections_per_ip open from it");
            }
            continue;
        }
        let Some(permit) = shared.try_permit() else {
            if shared.should_warn() {
                warn!(%peer, "refusing TCP connection: max_connections open");
            } else {
                debug!(%peer, "refusing TCP connection: max_connections open");
            }
            continue;
        };
        // Counted open from here, with its slot: the task below starts later, and a count
        // behind the slots let a caller that saw one free be refused (a flaky test).
        let open = OpenGuard::new(Arc::clone(&shared.counters), permit);
        bump(&shared.counters.tcp_connections_in);
        let id = shared.next_id();
        let (tx, rx) = write_queue(Arc::clone(&shared.counters));
        if shared
            .events_tx
            .send(StreamEvent::Opened {
                peer,
                local,
                id,
                tx,
            })
            .await
            .is_err()
        {
            return;
        }
        let span = tracing::debug_span!("tcp", %peer, id, inbound = true);
        span.in_scope(|| debug!("inbound TCP connection"));
        let task = lock_inbound(&conns)
            .spawn(run(stream, peer, id, rx, Arc::clone(&shared), open).instrument(span));
        if let Some(ip) = counted {
            *per_ip.entry(ip).or_insert(0) += 1;
            task_ip.insert(task.id(), ip);
        }
    }
}

/// Counts one connection from `ip` as ended.
fn release_ip(per_ip: &mut BTreeMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// Connects to `addr` from `source` (see `TcpSettings::source`) if it is of the same family.
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// Waits for a connection slot (up to `tcp_connect_timeout`, while the driver closes idle
/// connections to make room), connects to `addr`, and runs the connection, writing the frames
/// queued in `rx`.
pub(crate) async fn connect_and_run(
    addr: SocketAddr,
    id: u64,
    mut rx: WriteQueue,
    shared: Arc<TcpShared>,
) {
    let timeout = shared.settings.connect_timeout;
    let deadline = tokio::time::Instant::from_std(now() + timeout);
    let permits = Arc::clone(&shared.permits);
    let open = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
        Ok(Ok(p)) => Some(OpenGuard::new(Arc::clone(&shared.counters), p)),
        // Timed out (or the semaphore closed): every slot stayed busy.
        _ => None,
    };
    let error = match open {
        None => {
            bump(&shared.counters.tcp_connections_refused);
            io::Error::other("max_connections open")
        }
        Some(open) => {
            match tokio::time::timeout_at(deadline, connect(addr, shared.settings.source)).await {
                Ok(Ok(stream)) => {
                    bump(&shared.counters.tcp_connections_out);
                    debug!(peer = %addr, id, "outbound TCP connection");
                    return run(stream, addr, id, rx, shared, open).await;
                }
                Ok(Err(e)) => {
                    bump(&shared.counters.tcp_connect_failures);
                    e
                }
                Err(_) => {
                    bump(&shared.counters.tcp_connect_failures);
                    io::Error::from(io::ErrorKind::TimedOut)
                }
            }
        }
    };
    if shared.should_warn() {
        warn!(peer = %addr, error = %error, "TCP connect failed");
    } else {
        debug!(peer = %addr, error = %error, "TCP connect failed");
    }
    rx.close_and_drop();
    let _ = shared
        .events_tx
        .send(StreamEvent::Closed { peer: addr, id })
        .await;
}

/// A connection's end of its write queue: the frames, and the count of their bytes shared
/// with the driver's `FrameSender`.
pub(crate) struct WriteQueue {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    /// Shared with the driver's `FrameSender`, set while a frame is partly read.
    reading: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl WriteQueue {
    /// Closes the queue and drops what is left in it, counted.
    fn close_and_drop(&mut self) {
        self.rx.close();
        while let Ok(p) = self.rx.try_recv() {
            release(&self.queued, &self.counters, p.len());
            bump(&self.counters.tcp_frames_dropped);
        }
    }
}

impl Drop for WriteQueue {
    /// A connection task aborted (the node stopping) drops its queue with frames still in
    /// it: they are dropped and released as when it closes (before, their bytes stayed in
    /// the `tcp_write_queued_bytes` gauge for good).
    fn drop(&mut self) {
        self.close_and_drop();
    }
}

#[cfg(test)]
impl WriteQueue {
    /// Takes the next queued frame as the connection task does once it has written it,
    /// releasing its bytes (for tests that play the connection).
    pub(crate) fn write_one(&mut self, counters: &Counters) -> Option<Bytes> {
        let p = self.rx.try_recv().ok()?;
        release(&self.queued, counters, p.len());
        Some(p)
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("frame of {len} bytes exceeds max_frame_size {max}")]
    TooLarge { len: usize, max: usize },
}

/// Counts the connection as open while it holds its slot (also when the task is aborted).
struct OpenGuard {
    counters: Arc<Counters>,
    permit: Option<OwnedSemaphorePermit>,
}

impl OpenGuard {
    fn new(counters: Arc<Counters>, permit: OwnedSemaphorePermit) -> Self {
        counters
            .tcp_connections_open
            .fetch_add(1, Ordering::Relaxed);
        Self {
            counters,
            permit: Some(permit),
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        // The slot first: once the count shows a connection gone, its slot is free (the
        // other order refused a connection made right after the count dropped, when the
        // closing thread was preempted in between).
        drop(self.permit.take());
        self.counters
            .tcp_connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// When the connection last read or wrote a frame, in milliseconds since it opened.
/// Also coordinates closing, so that neither half is cut in the middle of a frame.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    /// A frame is partly read (shared with the driver's `FrameSender`, see `busy`).
    mid_frame: Arc<AtomicBool>,
    /// The driver closed the queue: stop reading at the next frame boundary.
    closing: AtomicBool,
    /// The peer finished sending: write what is queued, then close.
    draining: AtomicBool,
    drain: Notify,
}

impl Activity {
    #[cfg(test)]
    fn new() -> Self {
        Self::sharing(Arc::new(AtomicBool::new(false)))
    }

    fn sharing(mid_frame: Arc<AtomicBool>) -> Self {
        Self {
            base: now(),
            last_ms: AtomicU64::new(0),
            mid_frame,
            closing: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain: Notify::new(),
        }
    }

    fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain.notify_one();
    }

    fn touch(&self) {
        let ms = now().saturating_duration_since(self.base).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut rx: WriteQueue,
    shared: Arc<TcpShared>,
    // Held until the connection ends: its slot and its place in the open count.
    _open: OpenGuard,
) {
    // Push-pull exchanges are request/response: do not let Nagle hold back a reply.
    let _ = stream.set_nodelay(true);
    let activity = Activity::sharing(Arc::clone(&rx.reading));
    let result = {
        let (reader, writer) = stream.split();
        let read = read_loop(reader, peer, &shared, &activity);
        let write = write_loop(writer, &mut rx, &shared, &activity);
        tokio::pin!(read, write);
        // Whichever half ends first, the other finishes the frame it is in the middle of.
        tokio::select! {
            r = &mut read => match r {
                // The peer closed (or the connection idled out): write what is queued, then close.
                Ok(()) => {
                    activity.start_drain();
                    tokio::time::timeout(shared.settings.write_timeout, &mut write)
                        .await
                        .unwrap_or(Err(ConnError::Timeout("frame write")))
                }
                Err(e) => Err(e),
            },
            w = &mut write => match w {
                // The driver closed the queue: finish reading a frame in progress, if any.
                Ok(()) => {
                    activity.closing.store(true, Ordering::Release);
                    if activity.mid_frame.load(Ordering::Acquire) {
                        tokio::time::timeout(shared.settings.read_timeout, &mut read)
                            .await
                            .unwrap_or(Err(ConnError::Timeout("frame read")))
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            },
        }
    };
    match result {
        Ok(()) => debug!(%peer, id, "TCP connection closed"),
        Err(e) => {
            bump(&shared.counters.tcp_errors);
            if shared.should_warn() {
                warn!(%peer, id, error = %e, "TCP connection failed");
            } else {
                debug!(%peer, id, error = %e, "TCP connection failed");
            }
        }
    }
    rx.close_and_drop();
    let _ = shared
        .events_tx
        .send(StreamEvent::Closed { peer, id })
        .await;
}

/// The read half of a connection, which can tell whether its peer closed without taking any
/// of the bytes it sent.
trait PeerEnd: AsyncRead + Unpin {
    /// Waits until the half is readable: `true` if the peer closed with nothing left to read,
    /// `false` if bytes wait.
    async fn peer_closed(&mut self) -> io::Result<bool>;
}

impl PeerEnd for tcp::ReadHalf<'_> {
    async fn peer_closed(&mut self) -> io::Result<bool> {
        Ok(self.peek(&mut [0u8; 1]).await? == 0)
    }
}

/// How a large frame's wait for the strangers' budget ended.
enum Wait {
    /// Its whole length is reserved.
    Room(OwnedSemaphorePermit),
    /// Its address became trusted meanwhile: it needs no room.
    Trusted,
    /// The budget closed: the node is stopping.
    Stopping,
}

/// Waits until `want` bytes of the strangers' budget are free for a frame from `ip`, or `ip`
/// becomes trusted, until `deadline`. A peer that closes meanwhile ends the wait (as a close
/// mid-frame): its slot would otherwise be held until room freed or the deadline passed.
async fn wait_for_room<R: PeerEnd>(
    reader: &mut R,
    shared: &TcpShared,
    ip: IpAddr,
    want: u32,
    deadline: Instant,
) -> Result<Wait, ConnError> {
    let room = Arc::clone(&shared.untrusted).acquire_many_owned(want);
    let expired = tokio::time::sleep_until(deadline.into());
    tokio::pin!(room, expired);
    let mut trusted = shared.trusted.subscribe();
    // Bytes waiting keep the half readable until read, so it is watched only until they come:
    // watching on would spin, and seeing a close behind them would mean reading them, which
    // the wait is there to avoid.
    let mut watch_close = true;
    loop {
        tokio::select! {
            held = &mut room => return Ok(held.map_or(Wait::Stopping, Wait::Room)),
            Ok(_) = trusted.wait_for(|t| t.contains(&ip)) => return Ok(Wait::Trusted),
            closed = reader.peer_closed(), if watch_close => {
                if closed? {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                watch_close = false;
            }
            () = &mut expired => return Err(ConnError::Timeout("frame read")),
        }
    }
}

/// Reads frames until the peer closes, the connection idles out, or an error.
async fn read_loop<R: PeerEnd>(
    mut reader: R,
    peer: SocketAddr,
    shared: &TcpShared,
    activity: &Activity,
) -> Result<(), ConnError> {
    let s = &shared.settings;
    let mut buf = BytesMut::new();
    // Set when the first byte of a frame arrives: the whole frame must arrive before it.
    let mut frame_deadline: Option<Instant> = None;
    // The untrusted budget held by the large frame being read (see `untrusted_budget`),
    // until the frame's bytes count against the inbound budget instead.
    let mut untrusted: Option<OwnedSemaphorePermit> = None;
    loop {
        // Hand over every complete frame in the buffer.
        let mut need = READ_CHUNK;
        // Where the frame being read ends in `buf`, once its length is known.
        let mut frame_end = None;
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > s.max_frame_size {
                bump(&shared.counters.tcp_frames_oversize);
                return Err(ConnError::TooLarge {
                    len,
                    max: s.max_frame_size,
                });
            }
            if buf.len() < 4 + len {
                need = (4 + len - buf.len()).min(READ_CHUNK);
                frame_end = Some(4 + len);
                if len > READ_CHUNK && untrusted.is_none() && !shared.is_trusted(peer.ip()) {
                    // Not read past what the buffer holds until the whole frame fits the
                    // budget; the wait counts against the frame's read deadline, and the
                    // connection is in the middle of a frame meanwhile (not idle, and a close
                    // waits for the frame).
                    activity.mid_frame.store(true, Ordering::Release);
                    let deadline = *frame_deadline.get_or_insert_with(|| now() + s.read_timeout);
                    // `len` is at most max_frame_size, at most 1 GiB: within u32 and the budget.
                    let want = u32::try_from(len).unwrap_or(u32::MAX);
                    untrusted = match Arc::clone(&shared.untrusted).try_acquire_many_owned(want) {
                        Ok(held) => Some(held),
                        Err(_) => {
                            bump(&shared.counters.tcp_frames_waited);
                            debug!(%peer, len, "a large frame from a stranger waits for room");
                            match wait_for_room(&mut reader, shared, peer.ip(), want, deadline)
                                .await?
                            {
                                Wait::Room(held) => Some(held),
                                Wait::Trusted => None,
                                Wait::Stopping => return Ok(()),
                            }
                        }
                    };
                    // The frame's own deadline starts now: room (or trust) granted just before
                    // the first one passed would cut it however fast its peer sends. A slot is
                    // held for at most two read timeouts.
                    frame_deadline = Some(now() + s.read_timeout);
                }
                break;
            }
            // Held whole from here until the driver takes it: a close must wait for it (`busy`,
            // and the write half's end in `run`), or the peer's frame is lost.
            activity.mid_frame.store(true, Ordering::Release);
            buf.advance(4);
            let payload = buf.split_to(len).freeze();
            activity.touch();
            frame_deadline = None;
            // `len` is at most max_frame_size, at most 1 GiB: within u32 and the budget.
            let Ok(held) = Arc::clone(&shared.inbound)
                .acquire_many_owned(u32::try_from(len).unwrap_or(u32::MAX))
                .await
            else {
                return Ok(());
            };
            // Its bytes are counted by `held` from here.
            untrusted = None;
            if shared
                .events_tx
                .send(StreamEvent::Frame {
                    peer,
                    payload,
                    _held: held,
                })
                .await
                .is_err()
            {
                // The driver is gone: the node is stopping.
                return Ok(());
            }
        }
        activity.mid_frame.store(!buf.is_empty(), Ordering::Release);
        if buf.is_empty() {
            if activity.closing.load(Ordering::Acquire) {
                return Ok(());
            }
            frame_deadline = None;
        } else if frame_deadline.is_none() {
            frame_deadline = Some(now() + s.read_timeout);
        }
        grow(&mut buf, need, frame_end);
        let n = match frame_deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline.into(), reader.read_buf(&mut buf)).await {
                    Ok(r) => r?,
                    Err(_) => return Err(ConnError::Timeout("frame read")),
                }
            }
            None => {
                let idle_until = activity.last() + s.idle_timeout;
                match tokio::time::timeout_at(idle_until.into(), reader.read_buf(&mut buf)).await {
                    Ok(r) => r?,
                    Err(_) if activity.last() + s.idle_timeout <= now() => return Ok(()),
                    // A write kept the connection busy meanwhile: wait again.
                    Err(_) => continue,
                }
            }
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(())
            } else {
                Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            };
        }
    }
}

/// Makes room for `need` more bytes in `buf`, doubling its capacity as `BytesMut::reserve`
/// does but never past `frame_end`, the end of the frame being read: a frame of
/// `max_frame_size` then holds its own size, not up to twice it (the inbound budget counts
/// frames by their length). Bytes past the frame are read into the next buffer.
fn grow(buf: &mut BytesMut, need: usize, frame_end: Option<usize>) {
    let want = buf.len() + need;
    if buf.capacity() >= want {
        return;
    }
    let mut cap = (buf.capacity() * 2).max(want);
    if let Some(end) = frame_end {
        cap = cap.min(end.max(want));
    }
    let mut bigger = BytesMut::with_capacity(cap);
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

/// Writes one frame: its length, then its payload, within `timeout`.
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: Bytes,
    shared: &TcpShared,
    timeout: Duration,
) -> Result<(), ConnError> {
    // The driver checks sizes against max_frame_size, which is far below u32::MAX.
    let header = u32::try_from(payload.len())
        .map_err(|_| ConnError::TooLarge {
            len: payload.len(),
            max: shared.settings.max_frame_size,
        })?
        .to_be_bytes();
    let mut frame = Buf::chain(&header[..], payload);
    match tokio::time::timeout(timeout, writer.write_all_buf(&mut frame)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnError::Timeout("frame write")),
    }
}

/// Writes the frames the driver queues, until it drops the queue or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    queue: &mut WriteQueue,
    shared: &TcpShared,
    activity: &Activity,
) -> Result<(), ConnError> {
    let timeout = shared.settings.write_timeout;
    loop {
        let payload = if activity.draining.load(Ordering::Acquire) {
            match queue.rx.try_recv() {
                Ok(p) => p,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                p = queue.rx.recv() => match p {
                    Some(p) => p,
                    None => break,
                },
                () = activity.drain.notified() => continue,
            }
        };
        // Written, failed, or the write dropped midway (the read half failed first, a drain
        // timed out, the task was aborted): the frame no longer holds its bytes here. Before
        // 2026-12-05 only the first two released them, so the gauge kept the others for good
        // (found by review).
        let held = Held {
            queued: &queue.queued,
            counters: &shared.counters,
            len: payload.len(),
        };
        let written = write_frame(&mut writer, payload, shared, timeout).await;
        drop(held);
        written?;
        activity.touch();
    }
    let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory pipe cannot peek: its peer's close is seen only once read. Tests of that
    /// use sockets.
    impl PeerEnd for tokio::io::DuplexStream {
        async fn peer_closed(&mut self) -> io::Result<bool> {
            std::future::pending().await
        }
    }

    fn shared(max_frame_size: usize) -> (Arc<TcpShared>, mpsc::Receiver<StreamEvent>) {
        let ms = Duration::from_millis;
        shared_with(max_frame_size, ms(200), ms(300), 4, 16)
    }

    /// Shared state for tests: frames up to `max_frame_size`, `read` and `idle` timeouts,
    /// `slots` connections, an event queue `queue` deep.
    fn shared_with(
        max_frame_size: usize,
        read: Duration,
        idle: Duration,
        slots: usize,
        queue: usize,
    ) -> (Arc<TcpShared>, mpsc::Receiver<StreamEvent>) {
        let (tx, rx) = mpsc::channel(queue);
        let settings = TcpSettings {
            connect_timeout: Duration::from_secs(1),
            read_timeout: read,
            write_timeout: Duration::from_secs(1),
            idle_timeout: idle,
            max_frame_size,
            max_per_ip: 4,
            limit_loopback: false,
            source: None,
        };
        (
            Arc::new(TcpShared::new(settings, Arc::default(), slots, tx)),
            rx,
        )
    }

    /// Settings for the accept loop's per-address limit: long timeouts, small frames.
    fn per_ip_settings(max_per_ip: usize, limit_loopback: bool) -> TcpSettings {
        TcpSettings {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_frame_size: 1 << 10,
            max_per_ip,
            limit_loopback,
            source: None,
        }
    }

    /// Strangers' IPv6 addresses are counted by /64 (one host's many addresses share one
    /// limit); members' and IPv4 addresses each on their own.
    #[test]
    fn strangers_ipv6_addresses_are_limited_by_their_64_prefix() {
        let (tx, _events) = mpsc::channel(1);
        let shared = TcpShared::new(per_ip_settings(2, true), Arc::default(), 8, tx);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let member = ip("2001:db8:0:9::7");
        shared.set_trusted(BTreeSet::from([member, ip("10.0.0.9")]));
        let prefix = ip("2001:db8:0:1::");
        for stranger in ["2001:db8:0:1::1", "2001:db8:0:1:ffff:ffff:ffff:ffff"] {
            assert_eq!(shared.limit_key(ip(stranger)), prefix, "{stranger}");
        }
        assert_eq!(
            shared.limit_key(ip("2001:db8:0:2::1")),
            ip("2001:db8:0:2::"),
            "another /64 is counted apart"
        );
        assert_eq!(
            shared.limit_key(member),
            member,
            "a member is counted alone"
        );
        for v4 in ["10.0.0.9", "10.0.0.10"] {
            assert_eq!(shared.limit_key(ip(v4)), ip(v4));
        }
    }

    /// An address in the /64 of a member or a seed (this node's own included: it is a
    /// member) is counted on its own, as members are: that /64 is the cluster's own network
    /// (an IPv6 LAN or a cloud subnet is one /64 for every host on it), and its addresses
    /// that are not members yet are nodes joining, or members sending from another address
    /// of their host than the one they advertise. Counted under the /64, all of them shared
    /// one `max_connections_per_ip` with each other and with any stranger there.
    #[test]
    fn addresses_in_a_members_64_are_counted_alone() {
        let (tx, _events) = mpsc::channel(1);
        let shared = TcpShared::new(per_ip_settings(2, true), Arc::default(), 8, tx);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        shared.set_trusted(BTreeSet::from([ip("2001:db8:0:1::7"), ip("fd00:0:0:5::1")]));
        for joiner in [
            "2001:db8:0:1::8",
            "2001:db8:0:1:ffff:ffff:ffff:ffff",
            "fd00:0:0:5::9",
        ] {
            assert_eq!(shared.limit_key(ip(joiner)), ip(joiner), "{joiner}");
        }
        // Just outside either /64: a stranger's, counted under it.
        for (stranger, prefix) in [
            ("2001:db8:0:0:ffff:ffff:ffff:ffff", "2001:db8::"),
            ("2001:db8:0:2::", "2001:db8:0:2::"),
            ("fd00:0:0:6::9", "fd00:0:0:6::"),
        ] {
            assert_eq!(shared.limit_key(ip(stranger)), ip(prefix), "{stranger}");
        }
    }

    #[tokio::test]
    async fn one_address_gets_at_most_max_per_ip_inbound_connections() {
        let (tx, mut events) = mpsc::channel(16);
        let settings = per_ip_settings(2, true);
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(TcpShared::new(settings, Arc::clone(&counters), 8, tx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(accept_loop(listener, shared, Inbound::default()));
        // The driver's end of each write queue is kept: dropping it closes the connection.
        let mut queues = Vec::new();
        let mut opened = |ev: Option<StreamEvent>| match ev {
            Some(StreamEvent::Opened { id, tx, .. }) => {
                queues.push(tx);
                id
            }
            other => panic!("expected Opened, got {other:?}"),
        };
        let first = TcpStream::connect(addr).await.unwrap();
        let first_id = opened(events.recv().await);
        let _second = TcpStream::connect(addr).await.unwrap();
        opened(events.recv().await);
        // The third from the same address is closed at once, with free slots left.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            third.read(&mut buf).await.unwrap(),
            0,
            "closed by the server"
        );
        assert_eq!(counters.tcp_connections_refused.load(Ordering::Relaxed), 1);
        // Once one closes, the address may open another.
        drop(first);
        match events.recv().await {
            Some(StreamEvent::Closed { id, .. }) => assert_eq!(id, first_id),
            other => panic!("expected Closed, got {other:?}"),
        }
        let _fourth = TcpStream::connect(addr).await.unwrap();
        opened(events.recv().await);
        assert_eq!(counters.tcp_connections_refused.load(Ordering::Relaxed), 1);
        assert_eq!(counters.tcp_connections_in.load(Ordering::Relaxed), 3);
        server.abort();
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let (shared, mut events) = shared(1 << 20);
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let reader = tokio::spawn(async move {
            let activity = activity;
            read_loop(server, peer, &shared, &activity).await.is_ok()
        });
        let big = vec![7u8; 20_000];
        for payload in [&b"hello"[..], &big[..], &b""[..]] {
            client
                .write_all(&(payload.len() as u32).to_be_bytes())
                .await
                .unwrap();
            client.write_all(payload).await.unwrap();
        }
        drop(client);
        for want in [5, 20_000, 0] {
            match events.recv().await.unwrap() {
                StreamEvent::Frame { payload, .. } => assert_eq!(payload.len(), want),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(reader.await.unwrap(), "clean EOF between frames");
    }

    #[tokio::test]
    async fn oversized_frame_closes_without_allocating_it() {
        let (shared, _events) = shared(1000);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let activity = Activity::new();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = read_loop(server, peer, &shared, &activity).await;
        assert!(matches!(r, Err(ConnError::TooLarge { .. })));
        assert_eq!(
            shared.counters.tcp_frames_oversize.load(Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn a_peer_closing_its_side_does_not_cut_a_frame_being_written() {
        let (shared, mut events) = shared(8 << 20);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        let queued = Arc::new(AtomicUsize::new(0));
        let big = Bytes::from(vec![9u8; 4 << 20]);
        for p in [big.clone(), Bytes::from_static(b"tail")] {
            hold(&queued, &shared.counters, p.len());
            tx.try_send(p).unwrap();
        }
        let rx = WriteQueue {
            rx,
            queued: Arc::clone(&queued),
            reading: Arc::new(AtomicBool::new(false)),
            counters: Arc::clone(&shared.counters),
        };
        let permit = Arc::clone(&shared.permits).try_acquire_owned().unwrap();
        let open = OpenGuard::new(Arc::clone(&shared.counters), permit);
        let conn = tokio::spawn(run(server, peer, 1, rx, Arc::clone(&shared), open));
        // The client sends one frame and closes its sending side at once, while the server is
        // still writing megabytes to it.
        client.write_all(&[0, 0, 0, 2, 1, 2]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got.len(),
            4 + big.len() + 4 + 4,
            "both queued frames arrive whole"
        );
        assert!(matches!(
            events.recv().await,
            Some(StreamEvent::Frame { .. })
        ));
        conn.await.unwrap();
        assert!(matches!(
            events.recv().await,
            Some(StreamEvent::Closed { .. })
        ));
        assert_eq!(shared.counters.tcp_errors.load(Ordering::Relaxed), 0);
        // Every queued byte was released once written.
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        assert_eq!(
            shared
                .counters
                .tcp_write_queued_bytes
                .load(Ordering::Relaxed),
            0
        );
    }

    /// Frames read and not yet handled hold at most four of the largest frames' bytes: the
    /// reader waits for the driver beyond that, even with room in the event queue.
    #[tokio::test(start_paused = true)]
    async fn frames_waiting_for_the_driver_are_bounded_in_bytes() {
        let (shared, mut events) = shared(1000);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        for _ in 0..10 {
            client.write_all(&1000u32.to_be_bytes()).await.unwrap();
            client.write_all(&[5u8; 1000]).await.unwrap();
        }
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let _reader = tokio::spawn(async move {
            let activity = Activity::new();
            read_loop(server, peer, &shared, &activity).await.is_ok()
        });
        let drain = |events: &mut mpsc::Receiver<StreamEvent>| {
            std::iter::from_fn(|| events.try_recv().ok()).collect::<Vec<_>>()
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = drain(&mut events);
        assert_eq!(first.len(), 4, "4 x 1,000 bytes fill the budget");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(drain(&mut events).is_empty(), "the reader waits");
        // The driver handled them: their bytes are free again.
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drain(&mut events).len(), 4);
    }

    /// Frames of up to `BIG` bytes, 5-s read deadlines: the untrusted budget holds two.
    const BIG: usize = 100_000;

    fn shared_5s() -> (Arc<TcpShared>, mpsc::Receiver<StreamEvent>) {
        shared_with(BIG, Duration::from_secs(5), Duration::from_secs(30), 8, 64)
    }

    /// A connection's reader and writer tasks (`partial_frame`).
    type Partial = (
        tokio::task::JoinHandle<Result<(), ConnError>>,
        tokio::task::JoinHandle<()>,
    );

    /// Two strangers that have each sent 70,000 bytes of a frame of the largest size and hold:
    /// together they take the whole budget (two of the largest frames) until one ends. Their
    /// connections, as `partial_frame` gives them.
    fn strangers_fill_the_budget(shared: &Arc<TcpShared>) -> [Partial; 2] {
        [1, 2].map(|i| partial_frame(shared, stranger(i), BIG, 70_000))
    }

    /// A connection from `peer` that sends `bytes` of a frame of `len` and then holds: its
    /// reader and its writer (abort the writer to close the peer's end).
    fn partial_frame(
        shared: &Arc<TcpShared>,
        peer: SocketAddr,
        len: usize,
        bytes: usize,
    ) -> Partial {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let shared = Arc::clone(shared);
        let reader = tokio::spawn(async move {
            let activity = Activity::new();
            read_loop(server, peer, &shared, &activity).await
        });
        let writer = tokio::spawn(async move {
            client.write_all(&(len as u32).to_be_bytes()).await.unwrap();
            client.write_all(&vec![1u8; bytes]).await.unwrap();
            std::future::pending::<()>().await;
            drop(client);
        });
        (reader, writer)
    }

    fn stranger(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// The senders of the frames handed over since the last call, in order.
    fn delivered(events: &mut mpsc::Receiver<StreamEvent>) -> Vec<SocketAddr> {
        std::iter::from_fn(|| events.try_recv().ok())
            .filter_map(|e| match e {
                StreamEvent::Frame { peer, .. } => Some(peer),
                _ => None,
            })
            .collect()
    }

    /// Large frames from addresses not trusted share a budget of two of the largest frames,
    /// each reserving its whole length: a third waits (unread) until one of the first two
    /// ends, while a trusted address's large frame is read at once. Frames up to
    /// `READ_CHUNK` never wait, one byte more does. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_strangers_large_frames_wait_for_room_and_a_trusted_addresss_do_not() {
        let (shared, mut events) = shared_5s();
        let member: SocketAddr = "192.0.2.9:1".parse().unwrap();
        shared.set_trusted([member.ip()].into());
        assert!(!shared.is_trusted(stranger(1).ip()));
        let [(_, a), _b] = strangers_fill_the_budget(&shared);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _c = partial_frame(&shared, stranger(3), BIG, BIG);
        let _chunk = partial_frame(&shared, stranger(4), READ_CHUNK, READ_CHUNK);
        let _past = partial_frame(&shared, stranger(5), READ_CHUNK + 1, READ_CHUNK + 1);
        let _m = partial_frame(&shared, member, BIG, BIG);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut first = delivered(&mut events);
        first.sort();
        assert_eq!(
            first,
            [stranger(4), member],
            "the strangers' other large frames wait; one of READ_CHUNK and the trusted one do not"
        );
        // The first stranger goes away mid-frame: its room goes to the frames waiting, in turn.
        a.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(delivered(&mut events), [stranger(3), stranger(5)]);
        assert_eq!(
            shared.counters.tcp_frames_waited.load(Ordering::Relaxed),
            2,
            "the two that waited"
        );
    }

    /// A stranger's frame that completes gives its room back: with one unfinished frame
    /// holding half the budget, complete ones keep flowing one after another.
    #[tokio::test(start_paused = true)]
    async fn a_strangers_frame_gives_its_room_back_once_read() {
        let (shared, mut events) = shared_5s();
        let _a = partial_frame(&shared, stranger(1), BIG, 70_000);
        tokio::time::sleep(Duration::from_millis(10)).await;
        for port in 2..6 {
            let _b = partial_frame(&shared, stranger(port), BIG, BIG);
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(delivered(&mut events), [stranger(port)]);
        }
        assert_eq!(shared.untrusted.available_permits(), BIG);
    }

    /// A frame's read deadline starts again when it gets room: one that waited until just
    /// before its first deadline (the two frames ahead of it cut at theirs) is read whole
    /// if its peer keeps sending (found by review: it was cut, having held its room for
    /// nothing).
    #[tokio::test(start_paused = true)]
    async fn a_frame_given_room_late_gets_a_whole_read_timeout() {
        let (shared, mut events) = shared_5s();
        let _full = strangers_fill_the_budget(&shared);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (mut client, server) = tokio::io::duplex(4096);
        let reader = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let activity = Activity::new();
                read_loop(server, stranger(3), &shared, &activity).await
            })
        };
        let _writer = tokio::spawn(async move {
            client.write_all(&(BIG as u32).to_be_bytes()).await.unwrap();
            for _ in 0..BIG / 1000 {
                client.write_all(&[1u8; 1000]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            std::future::pending::<()>().await;
            drop(client);
        });
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert_eq!(delivered(&mut events), [stranger(3)]);
        assert!(!reader.is_finished(), "the connection goes on");
    }

    /// A large frame waiting for room goes on without any once its address becomes trusted:
    /// a joiner's full sync sent while strangers fill the budget is read as soon as the
    /// membership snapshot lists it, not when room frees or its deadline cuts it (found by
    /// review). Another address becoming trusted does not let it through. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_frame_goes_on_once_its_address_is_trusted() {
        let (shared, mut events) = shared_5s();
        let _full = strangers_fill_the_budget(&shared);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let joiner: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let (reader, _writer) = partial_frame(&shared, joiner, BIG, BIG);
        tokio::time::sleep(Duration::from_millis(10)).await;
        shared.set_trusted([stranger(9).ip(), "192.0.2.8".parse().unwrap()].into());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(delivered(&mut events), [], "the joiner waits");
        shared.set_trusted(["192.0.2.8".parse().unwrap(), joiner.ip()].into());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(delivered(&mut events), [joiner]);
        assert_eq!(shared.counters.tcp_frames_waited.load(Ordering::Relaxed), 1);
        assert_eq!(
            shared.untrusted.available_permits(),
            0,
            "the strangers hold the budget, the joiner none of it"
        );
        assert!(!reader.is_finished(), "the connection goes on");
    }

    /// Runs the other tasks, the paused clock standing still, until `done`; panics after 10 s
    /// of real time. For what real sockets deliver: the kernel does so in real time (its
    /// softirq work can be deferred under load), and a test waiting on the paused clock
    /// meanwhile lets it jump to the next timer, a read deadline, whenever the bytes or the
    /// close have not arrived by the runtime's next poll.
    async fn until_delivered(what: &str, mut done: impl FnMut() -> bool) {
        // The real clock: the paused one does not move here.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            tokio::task::yield_now().await;
        }
    }

    /// A peer that closes while its large frame waits for room is noticed at once (a close
    /// mid-frame, an error), not when room frees or the deadline passes: its slot is given
    /// back at once (a peer that sent more of the frame before closing is still noticed only
    /// then: its waiting bytes hide the close, and reading them is what the wait avoids). A waiting
    /// frame whose bytes keep coming is not given up for them, nor read: it goes on once it
    /// has room. Real loopback sockets, not trusted (`limit_loopback`); paused clock, which
    /// stands still while the sockets deliver (`until_delivered`): a close noticed before
    /// the clock moves at all is noticed at once.
    #[tokio::test(start_paused = true)]
    async fn a_peer_closing_while_its_frame_waits_is_noticed_at_once() {
        let (tx, mut events) = mpsc::channel(64);
        let settings = TcpSettings {
            limit_loopback: true,
            source: None,
            ..shared_5s().0.settings
        };
        let shared = Arc::new(TcpShared::new(settings, Arc::default(), 8, tx));
        let [(_, a), _b] = strangers_fill_the_budget(&shared);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Blocking std calls, done in real time: awaiting tokio's, the clock could jump past
        // the strangers' deadlines while the kernel completes the handshake.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut readers = Vec::new();
        let mut clients = Vec::new();
        for sent in [0, 70_000] {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let (server, peer) = listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let mut server = TcpStream::from_std(server).unwrap();
            let shared = Arc::clone(&shared);
            readers.push(tokio::spawn(async move {
                let (reader, _writer) = server.split();
                read_loop(reader, peer, &shared, &Activity::new()).await
            }));
            // Both within the socket buffers (the reader takes the first 64 KiB).
            io::Write::write_all(&mut client, &(BIG as u32).to_be_bytes()).unwrap();
            io::Write::write_all(&mut client, &vec![1u8; sent]).unwrap();
            clients.push((client, peer));
        }
        let waited = &shared.counters.tcp_frames_waited;
        until_delivered("both frames wait for room", || {
            waited.load(Ordering::Relaxed) >= 2
        })
        .await;
        let start = tokio::time::Instant::now();
        let (sending, sender) = clients.pop().unwrap();
        drop(clients);
        until_delivered("the close is noticed", || readers[0].is_finished()).await;
        let r = readers.remove(0).await.unwrap();
        assert!(
            matches!(&r, Err(ConnError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{r:?}"
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "no timer had to fire");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(delivered(&mut events), []);
        assert!(
            !readers[0].is_finished(),
            "the frame still sending waits on"
        );
        a.abort();
        sending.set_nonblocking(true).unwrap();
        let mut sending = TcpStream::from_std(sending).unwrap();
        sending.write_all(&vec![1u8; BIG - 70_000]).await.unwrap();
        let mut got = Vec::new();
        until_delivered("the waiting frame is read once it has room", || {
            got.extend(delivered(&mut events));
            !got.is_empty()
        })
        .await;
        assert_eq!(got, [sender]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_frame_times_out_and_idle_connection_closes() {
        let (shared, _events) = shared(1000);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 10, 1]).await.unwrap();
        let activity = Activity::new();
        let r = read_loop(server, peer, &shared, &activity).await;
        assert!(matches!(r, Err(ConnError::Timeout(_))));
        let (_client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let r = read_loop(server, peer, &shared, &activity).await;
        assert!(r.is_ok(), "idle connection closes cleanly");
    }

    /// A connection task over loopback with 5-s timeouts and frames up to `max_frame_size`,
    /// its event queue `capacity` deep: the shared state, the peer's end, the driver's end of
    /// the write queue, the events, and the task.
    async fn connection_task(
        max_frame_size: usize,
        capacity: usize,
    ) -> (
        Arc<TcpShared>,
        TcpStream,
        FrameSender,
        mpsc::Receiver<StreamEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, events) = mpsc::channel(capacity);
        let settings = TcpSettings {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_frame_size,
            max_per_ip: 4,
            limit_loopback: false,
            source: None,
        };
        let shared = Arc::new(TcpShared::new(settings, Arc::default(), 4, tx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (sender, rx) = write_queue(Arc::clone(&shared.counters));
        let permit = Arc::clone(&shared.permits).try_acquire_owned().unwrap();
        let open = OpenGuard::new(Arc::clone(&shared.counters), permit);
        let conn = tokio::spawn(run(server, peer, 1, rx, Arc::clone(&shared), open));
        (shared, client, sender, events, conn)
    }

    /// A frame read whole but waiting for room in the driver's queue is the connection's
    /// work in progress: `busy`, and when the driver closes the queue it is still handed
    /// over before the close (found by review: `busy` read false then, and the frame, which
    /// the peer's TCP stack had seen delivered, was dropped).
    #[tokio::test]
    async fn a_frame_waiting_for_the_driver_is_handed_over_before_a_close() {
        let (_, mut client, sender, mut events, conn) = connection_task(1 << 10, 1).await;
        // Two one-byte frames: the first fills the queue, the second waits for room.
        client
            .write_all(&[0, 0, 0, 1, 1, 0, 0, 0, 1, 2])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while events.is_empty() || !sender.busy() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the second frame is held as work in progress");
        // The driver closes the connection (`make_room`, an invalid frame...).
        drop(sender);
        let mut got = Vec::new();
        while let Some(ev) = events.recv().await {
            match ev {
                StreamEvent::Frame { payload, .. } => got.push(payload[0]),
                StreamEvent::Closed { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, [1, 2]);
        conn.await.unwrap();
    }

    /// Reading a frame grows the buffer by doubling but never past the frame: one of
    /// `max_frame_size` holds its own size, not up to twice it (found by review: 16 MiB for
    /// a frame of 8 MiB, past what the inbound budget counts).
    #[test]
    fn a_frames_buffer_grows_to_the_frame_and_no_further() {
        for len in [1usize, 1_000, READ_CHUNK, 3 * READ_CHUNK + 5, 8 << 20] {
            let mut buf = BytesMut::new();
            let end = 4 + len;
            let mut allocations = 0;
            while buf.len() < end {
                let need = (end - buf.len()).min(READ_CHUNK);
                let before = buf.capacity();
                grow(&mut buf, need, Some(end));
                if buf.capacity() != before {
                    allocations += 1;
                }
                assert!(buf.capacity() >= buf.len() + need);
                // What a socket read of up to `need` bytes adds.
                let n = need.min(buf.capacity() - buf.len());
                buf.extend_from_slice(&vec![7u8; n]);
            }
            assert_eq!(buf.capacity(), end, "a frame of {len} bytes");
            // Doubling: a logarithmic number of copies, not one per read.
            assert!(allocations <= 2 + end.ilog2() as usize, "{allocations}");
        }
        // Before a frame's length is known it grows as before.
        let mut buf = BytesMut::new();
        grow(&mut buf, READ_CHUNK, None);
        assert!(buf.capacity() >= READ_CHUNK);
    }

    /// The read half failing while a frame is being written drops the write midway: the
    /// frame's bytes still leave the `tcp_write_queued_bytes` gauge (found by review: they
    /// stayed in it for good).
    #[tokio::test]
    async fn a_write_dropped_midway_releases_its_bytes() {
        let (shared, mut client, sender, _events, conn) = connection_task(8 << 20, 16).await;
        let gauge = || {
            shared
                .counters
                .tcp_write_queued_bytes
                .load(Ordering::Relaxed)
        };
        sender
            .try_send(Bytes::from(vec![7u8; 6 << 20]), 8 << 20)
            .unwrap();
        assert_eq!(gauge(), 6 << 20);
        // The frame's header arrives: its write has begun, and with nobody reading the rest
        // it cannot finish. Then a length over the limit fails the read half.
        let mut header = [0u8; 4];
        client.read_exact(&mut header).await.unwrap();
        assert_eq!(u32::from_be_bytes(header), 6 << 20);
        client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the connection ends")
            .unwrap();
        assert_eq!(gauge(), 0);
        drop(sender);
    }

    /// Loopback connections are not limited per address (a local cluster has every peer on
    /// one), unless `limit_loopback` asks for it.
    #[tokio::test]
    async fn loopback_connections_are_not_limited_per_address() {
        let (tx, mut events) = mpsc::channel(16);
        let settings = per_ip_settings(1, false);
        let shared = Arc::new(TcpShared::new(settings, Arc::default(), 8, tx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            Inbound::default(),
        ));
        // Both ends are kept: dropping the driver's closes the connection.
        let (mut streams, mut queues) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            streams.push(TcpStream::connect(addr).await.unwrap());
            match events.recv().await {
                Some(StreamEvent::Opened { tx, .. }) => queues.push(tx),
                other => panic!("expected Opened, got {other:?}"),
            }
        }
        let c = &shared.counters;
        assert_eq!(c.tcp_connections_in.load(Ordering::Relaxed), 3);
        assert_eq!(c.tcp_connections_refused.load(Ordering::Relaxed), 0);
        server.abort();
    }

    /// A peer that closes in the middle of a frame has failed (counted as a TCP error by
    /// the connection), unlike one that closes between frames.
    #[tokio::test]
    async fn a_close_in_the_middle_of_a_frame_is_an_error() {
        let (shared, _events) = shared(1000);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 5, 1, 2]).await.unwrap();
        drop(client);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = read_loop(server, peer, &shared, &Activity::new()).await;
        assert!(matches!(r, Err(ConnError::Io(_))), "{r:?}");
    }

    /// Outbound connections are counted: one that opens as `tcp_connections_out`, one whose
    /// connect fails (nothing listens) as `tcp_connect_failures`, its frame dropped.
    #[tokio::test]
    async fn outbound_connections_and_failed_connects_are_counted() {
        let (shared, mut events) = shared(1000);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let c = Arc::clone(&shared.counters);
        let (sender, rx) = write_queue(Arc::clone(&c));
        sender.try_send(Bytes::from_static(b"syn"), 1000).unwrap();
        connect_and_run(closed, 1, rx, Arc::clone(&shared)).await;
        assert_eq!(c.tcp_connect_failures.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_connections_out.load(Ordering::Relaxed), 0);
        assert_eq!(c.tcp_frames_dropped.load(Ordering::Relaxed), 1);
        assert!(matches!(
            events.recv().await,
            Some(StreamEvent::Closed { id: 1, .. })
        ));
        let (sender, rx) = write_queue(Arc::clone(&c));
        let task = tokio::spawn(connect_and_run(open, 2, rx, Arc::clone(&shared)));
        let (mut server, _) = listener.accept().await.unwrap();
        drop(sender);
        let mut sink = Vec::new();
        server.read_to_end(&mut sink).await.unwrap();
        drop(server);
        task.await.unwrap();
        assert_eq!(c.tcp_connections_out.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_connect_failures.load(Ordering::Relaxed), 1);
    }

    /// A frame of exactly `max_frame_size` is read and handed over (only a larger one closes
    /// the connection).
    #[tokio::test]
    async fn a_frame_of_exactly_max_frame_size_is_read() {
        let (shared, mut events) = shared(1000);
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&1000u32.to_be_bytes()).await.unwrap();
        client.write_all(&[3u8; 1000]).await.unwrap();
        drop(client);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = read_loop(server, peer, &shared, &Activity::new()).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(matches!(
            events.try_recv(),
            Ok(StreamEvent::Frame { payload, .. }) if payload.len() == 1000
        ));
        assert_eq!(
            shared.counters.tcp_frames_oversize.load(Ordering::Relaxed),
            0
        );
    }

    /// A connection task reading what `client` writes (frames up to `max_frame_size`), and
    /// the events it hands over.
    fn reading(
        max_frame_size: usize,
    ) -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Result<(), ConnError>>,
        mpsc::Receiver<StreamEvent>,
    ) {
        let (shared, events) = shared(max_frame_size);
        let (client, server) = tokio::io::duplex(64);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let reader =
            tokio::spawn(async move { read_loop(server, peer, &shared, &Activity::new()).await });
        (client, reader, events)
    }

    /// The read timeout runs per frame, from its first byte: a frame that starts in the same
    /// read as the end of the one before gets the whole timeout (200 ms here), not what was
    /// left of its predecessor's. Paused clock: frame 1 from 0 to 150 ms, frame 2 from 150 to
    /// 300 ms.
    #[tokio::test(start_paused = true)]
    async fn each_frame_gets_the_whole_read_timeout() {
        let (mut client, reader, mut events) = reading(1000);
        client.write_all(&[0, 0, 0, 3, 1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(&[2, 3, 0, 0, 0, 2, 9]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(&[9]).await.unwrap();
        drop(client);
        let r = reader.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
        let lens: Vec<usize> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|ev| match ev {
                StreamEvent::Frame { payload, .. } => payload.len(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(lens, [3, 2]);
    }

    /// Frames read count as activity: a peer sending a frame every 200 ms is never idle
    /// (idle timeout 300 ms), however long ago its connection opened. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn frames_read_keep_a_connection_from_idling_out() {
        let (mut client, reader, mut events) = reading(1000);
        for i in 0..5u8 {
            client.write_all(&[0, 0, 0, 1, i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!reader.is_finished(), "closed as idle while reading");
        assert_eq!(std::iter::from_fn(|| events.try_recv().ok()).count(), 5);
        drop(client);
        assert!(reader.await.unwrap().is_ok());
    }

    /// A connection's queue holds up to two of the largest frames' bytes, counting the one
    /// being written: two frames of `max_frame_size` fit, one byte more does not.
    #[test]
    fn a_write_queue_holds_two_of_the_largest_frames() {
        let counters = Arc::new(Counters::default());
        let (sender, _queue) = write_queue(Arc::clone(&counters));
        let max = 1000;
        for _ in 0..2 {
            sender.try_send(Bytes::from(vec![0u8; max]), max).unwrap();
        }
        let r = sender.try_send(Bytes::from_static(b"x"), max);
        assert!(matches!(r, Err(TrySendError::Full(_))), "{r:?}");
        assert_eq!(
            counters.tcp_write_queued_bytes.load(Ordering::Relaxed),
            2 * max as u64
        );
    }

    /// A connection that fails (here the peer announces an oversized frame while a write is
    /// stuck) is counted as a TCP error, and the frames still queued on it are dropped,
    /// counted, and their bytes released.
    #[tokio::test]
    async fn a_failed_connection_is_counted_and_drops_what_it_had_queued() {
        let (shared, mut client, sender, _events, conn) = connection_task(8 << 20, 16).await;
        for _ in 0..2 {
            sender
                .try_send(Bytes::from(vec![7u8; 6 << 20]), 8 << 20)
                .unwrap();
        }
        // The first frame's write has begun (nobody reads the rest); the second waits.
        let mut header = [0u8; 4];
        client.read_exact(&mut header).await.unwrap();
        client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        conn.await.unwrap();
        let c = &shared.counters;
        assert_eq!(c.tcp_errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_frames_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_write_queued_bytes.load(Ordering::Relaxed), 0);
        assert!(!sender.busy());
    }

    /// The driver closing a connection in the middle of a peer's frame waits for that frame
    /// only: once it is handed over the connection closes, though the peer keeps its end
    /// open, not when it idles out (30 s here). Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_connection_closed_mid_frame_ends_after_that_frame() {
        let (_shared, mut client, sender, mut events, conn) = connection_task(1 << 10, 16).await;
        client.write_all(&[0, 0, 0, 2, 1]).await.unwrap();
        while !sender.busy() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = tokio::time::Instant::now();
        drop(sender);
        client.write_all(&[2]).await.unwrap();
        assert!(matches!(
            events.recv().await,
            Some(StreamEvent::Frame { payload, .. }) if payload[..] == [1, 2]
        ));
        assert!(matches!(
            events.recv().await,
            Some(StreamEvent::Closed { .. })
        ));
        conn.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    /// A frame the queue refuses (full by count, or the connection closed) is handed back
    /// and holds none of the connection's byte budget nor the node's
    /// `tcp_write_queued_bytes` gauge: otherwise every refusal leaked its bytes for good,
    /// and the connection looked `busy` (never evicted) while it lived.
    #[test]
    fn a_frame_refused_by_the_queue_holds_no_bytes() {
        let counters = Arc::new(Counters::default());
        let (sender, queue) = write_queue(Arc::clone(&counters));
        let gauge = || counters.tcp_write_queued_bytes.load(Ordering::Relaxed);
        for _ in 0..WRITE_QUEUE {
            sender
                .try_send(Bytes::from_static(b"abc"), 1 << 20)
                .unwrap();
        }
        let want = 3 * WRITE_QUEUE;
        assert_eq!(gauge(), want as u64);
        // Full by count, far within the byte bound.
        let r = sender.try_send(Bytes::from_static(b"abc"), 1 << 20);
        assert!(matches!(r, Err(TrySendError::Full(_))), "{r:?}");
        assert_eq!(gauge(), want as u64);
        assert_eq!(sender.queued.load(Ordering::Relaxed), want);
        // The connection's end is gone: closed, the frames it held dropped and released.
        drop(queue);
        assert_eq!(gauge(), 0);
        let r = sender.try_send(Bytes::from_static(b"abc"), 1 << 20);
        assert!(matches!(r, Err(TrySendError::Closed(_))), "{r:?}");
        assert_eq!(sender.queued.load(Ordering::Relaxed), 0);
        assert_eq!(gauge(), 0);
    }

    /// An outbound connection that finds every slot taken waits for one at most
    /// `tcp_connect_timeout`, then gives up: counted as refused, its queued frame dropped and
    /// released, and the driver told (`Closed`), so the core stops awaiting the exchange.
    /// Without the bound it waited as long as the slots stayed busy, its frame held.
    #[tokio::test(start_paused = true)]
    async fn an_outbound_connection_waits_for_a_slot_at_most_the_connect_timeout() {
        let (shared, mut events) = shared(1000);
        // Every slot (4) busy for the whole test.
        let _busy = Arc::clone(&shared.permits)
            .try_acquire_many_owned(4)
            .unwrap();
        let (sender, rx) = write_queue(Arc::clone(&shared.counters));
        sender.try_send(Bytes::from_static(b"syn"), 1000).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let task = tokio::spawn(connect_and_run(addr, 7, rx, Arc::clone(&shared)));
        // connect_timeout is 1 s.
        let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the wait for a slot is bounded by the connect timeout");
        assert!(
            matches!(ev, Some(StreamEvent::Closed { id: 7, peer }) if peer == addr),
            "{ev:?}"
        );
        let c = &shared.counters;
        assert_eq!(c.tcp_connections_refused.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_frames_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(c.tcp_write_queued_bytes.load(Ordering::Relaxed), 0);
        assert!(!sender.busy());
        task.await.unwrap();
    }

    /// A peer that never reads cannot hold a write (and so its connection slot) for good:
    /// the frame's write gives up after `tcp_write_timeout` and its bytes are released. The
    /// read half's idle timeout does not cover this: a peer that keeps sending frames while
    /// never reading is never idle.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_times_out() {
        let (shared, _events) = shared(1 << 20);
        // The peer's end stays open and is never read: 64 bytes fit, then writes block.
        let (_peer, server) = tokio::io::duplex(64);
        let (sender, mut queue) = write_queue(Arc::clone(&shared.counters));
        sender
            .try_send(Bytes::from(vec![1u8; 4096]), 1 << 20)
            .unwrap();
        let activity = Activity::new();
        // write_timeout is 1 s.
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            write_loop(server, &mut queue, &shared, &activity),
        )
        .await
        .expect("the write gave up within its timeout");
        assert!(matches!(r, Err(ConnError::Timeout(_))), "{r:?}");
        assert_eq!(
            shared
                .counters
                .tcp_write_queued_bytes
                .load(Ordering::Relaxed),
            0
        );
        drop(sender);
    }

    /// Frames written count as activity: a connection this side keeps writing on is not
    /// closed as idle, however long ago the peer last sent a frame (`read_loop` waits again
    /// when a write kept the connection busy). Paused clock; 30-s idle timeout, a frame
    /// written every 20 s for 80 s.
    #[tokio::test(start_paused = true)]
    async fn frames_written_keep_a_connection_from_idling_out() {
        let (_shared, mut client, sender, _events, conn) = connection_task(1 << 10, 16).await;
        for i in 0..4u8 {
            sender
                .try_send(Bytes::from(vec![i]), 1 << 10)
                .unwrap_or_else(|e| panic!("frame {i}: the connection closed: {e:?}"));
            let mut frame = [0u8; 5];
            client.read_exact(&mut frame).await.unwrap();
            assert_eq!(frame, [0, 0, 0, 1, i]);
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        assert!(!conn.is_finished(), "closed as idle while writing");
        drop(sender);
        conn.await.unwrap();
    }
}
