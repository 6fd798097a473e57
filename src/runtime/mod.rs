//! The tokio runtime: a [`Node`] on a real UDP socket and TCP listener, joined by seeds or DNS,
//! driven by one task, used through a cheap, cloneable [`Handle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::runtime::{self, RuntimeConfig};
//!
//! let mut config = RuntimeConfig::lan("node-1");
//! config.bind = "10.0.0.1:7946".parse()?;
//! config.seeds = vec!["10.0.0.2:7946".into(), "gossip.example:7946".into()];
//! let handle = runtime::start(config).await?;
//! // Subscribed first, so that no event after the start is missed (or use
//! // `EventFilter::all().with_current_state()` to be told what is already known).
//! let mut events = handle.subscribe();
//! handle.set("http", "10.0.0.1:8080").await?;
//! while let Some(Ok(event)) = events.recv().await {
//!     println!("{event:?}");
//! #   break;
//! }
//! handle.shutdown().await; // graceful leave
//! # Ok(())
//! # }
//! ```
//!
//! # Tasks
//!
//! - The **driver** owns the [`Node`] (never shared behind a lock). It waits on the UDP socket,
//!   on frames from TCP connection tasks, on commands from handles, on new seed sets from DNS,
//!   and on the node's next timeout; after each, it drains the node's transmits (a UDP send,
//!   dropped rather than awaited while the send buffer stays full, or a frame queued on a TCP
//!   connection) and events (membership snapshot, then
//!   subscribers).
//! - The **accept loop** takes inbound TCP connections (up to `max_connections`, inbound and
//!   outbound together) and runs one task per connection.
//! - One task per **outbound connection**, opened when the core sends a frame to an address
//!   with no open connection.
//! - The **seed resolver**, when seeds are names or `dns` is set.
//!
//! All of them belong to the driver, so none outlives the node: when it stops (leave, kill,
//! last handle dropped) they are aborted and the sockets close.
//!
//! # Transports
//!
//! UDP carries the gossip. TCP, on the same port number, carries frames: a 4-byte big-endian
//! length, then the payload. The core sends a frame for join push-pull, anti-entropy and state
//! too large for a datagram; it addresses replies to the address the frame came from, which
//! for an inbound connection is the peer's ephemeral address: the driver keeps a map from
//! remote address to the connection's writer, so such replies go back on the same
//! connection.

mod config;
mod dns;
mod driver;
mod handle;
mod stats;
mod subscribe;
mod tcp;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use config::{DEFAULT_PORT, RuntimeConfig, RuntimeConfigError};
pub use handle::{Handle, LeaveOutcome, Membership};
pub use stats::RuntimeStats;
pub use subscribe::{EventFilter, Lagged, Subscription};

use crate::id::NodeId;
use crate::node::Node;
use dns::{SeedResolver, Seeds};
use driver::Driver;
#[cfg(feature = "prometheus")]
pub(crate) use handle::Observer;
use handle::Shared;
use stats::Counters;
#[cfg(feature = "prometheus")]
pub(crate) use stats::Sample;
use tcp::{TcpSettings, TcpShared};

// The inner error is in the message, not also the `source` (see `crate::Error`'s `From`).
impl From<RuntimeConfigError> for StartError {
    fn from(e: RuntimeConfigError) -> Self {
        Self::Config(e)
    }
}

/// Why [`start`] failed. Nothing keeps running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid runtime config: {0}")]
    Config(RuntimeConfigError),
    /// The UDP socket or the TCP listener could not be bound. The reason is the error's
    /// [`source`](std::error::Error::source) (printed once by error reporters that walk the
    /// chain, such as anyhow's).
    #[error("cannot bind the {} on {addr}", socket_name(*.channel))]
    Bind {
        /// The bind address.
        addr: SocketAddr,
        /// Which socket failed: [`Channel::Datagram`](crate::Channel::Datagram) for the UDP
        /// socket, [`Channel::Stream`](crate::Channel::Stream) for the TCP listener (the port
        /// may be taken for one protocol only).
        channel: crate::Channel,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The core refused the identity or protocol configuration.
    #[error(transparent)]
    Node(#[from] crate::Error),
}

fn socket_name(channel: crate::Channel) -> &'static str {
    match channel {
        crate::Channel::Datagram => "UDP socket",
        crate::Channel::Stream => "TCP listener",
    }
}

/// Binds the sockets, starts the node and joins through the seeds (and DNS). Returns once the
/// sockets are bound; joining goes on in the background (watch
/// [`Handle::watch_membership`] or [`Handle::subscribe`] to see peers arrive).
///
/// MUST be called within a tokio runtime (any flavour); the node's tasks run on it.
pub async fn start(config: RuntimeConfig) -> Result<Handle, StartError> {
    let (driver, handle, span) = build(config)?;
    let shared = Arc::clone(&driver.shared);
    let task = tokio::spawn(driver.run().instrument(span));
    if let Ok(mut d) = shared.driver.lock() {
        *d = Some(task.abort_handle());
    }
    Ok(handle)
}

/// Everything `start` does short of spawning the driver: sockets bound, background tasks
/// (accept loop, DNS) spawned, the join queued; with the node's span. Within a tokio runtime.
fn build(config: RuntimeConfig) -> Result<(Driver, Handle, tracing::Span), StartError> {
    config.validate()?;
    let bound = udp::bind(config.bind, config.udp_recv_buffer, config.udp_send_buffer).map_err(
        |(channel, source)| StartError::Bind {
            addr: config.bind,
            channel,
            source,
        },
    )?;
    let local_addr = bound.local_addr;
    // In plain IPv4 form if IPv4-mapped: peers bound to IPv4 can send only to that.
    let advertise = udp::canonical(match config.advertise {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local_addr.port()),
        Some(a) => a,
        None => local_addr,
    });
    let generation = config.generation.unwrap_or_else(wall_clock_ms);
    let id = NodeId::new(config.name.clone(), generation, advertise);
    let rng_seed = config.rng_seed.unwrap_or_else(|| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(config.name.as_bytes());
        h.update(&generation.to_le_bytes());
        h.update(advertise.to_string().as_bytes());
        h.digest()
    });
    let t = now();
    let mut node = Node::new(id.clone(), config.protocol.clone(), rng_seed, t)?;
    node.set_nonce_salt(nonce_salt(&id));
    let udp_v6 = local_addr.is_ipv6();
    let filter = config::SeedFilter::new(local_addr, advertise);
    let seeds = Seeds::parse(&config.seeds, config.dns.as_deref());
    let literal = filter.seeds(seeds.literal.iter().copied());
    node.join(t, literal.clone());
    if !seeds.names.is_empty() {
        // The names' addresses come from the resolver's first pass (always sent, even empty):
        // the first ring waits for them rather than claim every key alone meanwhile.
        node.expect_seeds();
    }

    let counters = Arc::new(Counters::default());
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (subs_tx, subs_rx) = mpsc::unbounded_channel();
    let (stream_tx, stream_rx) = mpsc::channel(STREAM_QUEUE);
    // What the node knows already (itself, at least): the driver publishes its first snapshot
    // only once it runs, and a caller reading membership right after `start` must find this
    // node in it.
    let placeholder = Membership::new(0, id.clone(), node.members().collect(), node.ring_arc());
    let (membership_tx, membership_rx) = watch::channel(Arc::new(placeholder));
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let settings = TcpSettings {
        connect_timeout: config.tcp_connect_timeout,
        read_timeout: config.tcp_read_timeout,
        write_timeout: config.tcp_write_timeout,
        idle_timeout: config.tcp_idle_timeout,
        max_frame_size: config.protocol.max_frame_size,
        max_per_ip: config.max_connections_per_ip,
        limit_loopback: false,
        source: Some(udp::canonical(local_addr).ip()).filter(|ip| !ip.is_unspecified()),
    };
    let tcp_shared = Arc::new(TcpShared::new(
        settings,
        Arc::clone(&counters),
        config.max_connections,
        stream_tx,
    ));

    // One span per node, carried by every task of the node.
    let span = tracing::info_span!("node", name = %id.name, addr = %advertise);
    let mut tasks = JoinSet::new();
    let inbound = tcp::Inbound::default();
    let accept = tcp::accept_loop(bound.tcp, Arc::clone(&tcp_shared), Arc::clone(&inbound));
    let mut services = vec![tasks.spawn(accept.instrument(span.clone()))];
    let dns_pending = !seeds.names.is_empty();
    let seeds_rx = if seeds.names.is_empty() {
        None
    } else {
        let (tx, rx) = mpsc::channel(4);
        let resolver = SeedResolver {
            seeds,
            filter,
            servers: config.dns_servers.clone(),
            refresh: config.dns_refresh,
            counters: Arc::clone(&counters),
        };
        services.push(tasks.spawn(resolver.run(tx).instrument(span.clone())));
        Some(rx)
    };

    let shared = Arc::new(Shared {
        id: id.clone(),
        local_addr,
        counters,
        subscriber_buffer: config.subscriber_buffer,
        final_stats: Mutex::new(None),
        leave_outcome: Mutex::new(None),
        driver: Mutex::new(None),
        published: watch::channel(stats::Published::default()).0,
    });
    let driver = Driver {
        node,
        udp: bound.udp,
        udp_v6,
        cmd_rx,
        subs_rx,
        stream_rx,
        seeds_rx,
        base_seeds: literal,
        dns_pending,
        member_ips: Default::default(),
        joined: Vec::new(),
        tcp: tcp_shared,
        tasks,
        inbound,
        services,
        membership_tx,
        stopped_tx,
        shared: Arc::clone(&shared),
        leave_timeout: config.protocol.leave_timeout,
        max_connections: config.max_connections,
    };
    tracing::info!(node = %id, addr = %advertise, bind = %local_addr, "starting");
    let handle = Handle::new(cmd_tx, subs_tx, membership_rx, stopped_rx, shared);
    Ok((driver, handle, span))
}

/// Commands queued from handles before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Frames and connection events queued from TCP tasks before they wait (back-pressure on the
/// connections, never on gossip).
const STREAM_QUEUE: usize = 256;

/// The runtime's clock: tokio's, so that a paused test clock drives the whole stack.
#[allow(clippy::disallowed_methods)] // The one place the runtime reads the clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Milliseconds since the Unix epoch: the default generation.
#[allow(clippy::disallowed_methods)] // Generations are wall-clock start times by design.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// A salt for the node's sealed nonces that no earlier process had: from the operating
/// system, or, should that fail, from the wall clock and the process id. Not from `rng_seed`,
/// which a restart under the same name and generation (or a configured seed) repeats.
fn nonce_salt(id: &NodeId) -> u64 {
    getrandom::u64().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no randomness from the operating system; salting nonces with the clock");
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&wall_clock_ms().to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(id.name.as_bytes());
        h.digest()
    })
}
