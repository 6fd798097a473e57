//! [`Handle`]: the application's side of a running node, and the [`Membership`] snapshot.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::stats::{Counters, Published, RuntimeStats, Sample};
use super::subscribe::{self, EventFilter, Subscriber, Subscription};
use crate::error::Error;
use crate::id::NodeId;
use crate::node::{Member, MemberStatus};
use crate::ring::Owners;
use crate::ring::Ring;
use crate::state::NodeState;
use crate::stats::Stats;

/// A running node. Cheap to clone; every clone drives the same node.
///
/// Writes ([`set`](Handle::set), [`delete`](Handle::delete), ...) and reads of state
/// ([`get`](Handle::get), [`node_state`](Handle::node_state)) are messages to the task that
/// owns the node, answered at once from its local view: nothing waits on the network.
/// Membership is also published as a snapshot ([`membership`](Handle::membership),
/// [`watch_membership`](Handle::watch_membership)) that is read without asking the task.
///
/// Stopping: [`leave`](Handle::leave) (graceful, peers see `Left`), [`shutdown`](Handle::shutdown)
/// (leave, then wait for every task to end), [`kill`](Handle::kill) (abrupt, peers see `Down`).
/// Dropping the last clone leaves gracefully in the background and then stops. Once stopped,
/// writes fail with [`Error::Left`] and reads return `None`; the membership snapshot keeps the
/// last view.
#[derive(Clone, Debug)]
pub struct Handle {
    cmd_tx: mpsc::Sender<Command>,
    subs_tx: mpsc::UnboundedSender<Subscriber>,
    membership_rx: watch::Receiver<Arc<Membership>>,
    stopped_rx: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

/// The membership as this node sees it: an immutable snapshot, replaced as a whole whenever a
/// member joins, comes up, goes down, leaves, expires or changes readiness, and whenever the
/// ownership ring changes (the core rebuilds it once membership has been stable for
/// `ring_settle`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Membership {
    /// Counts the snapshots published by this node; grows by one or more per change.
    pub epoch: u64,
    /// This node's identity.
    pub local: NodeId,
    /// Every known member, this node included, sorted by name.
    pub members: Vec<Member>,
    /// The ownership ring as of this snapshot (empty when `protocol.ring` is `None`). It lags
    /// membership by `ring_settle`, by design: owners change once membership is stable.
    pub ring: Arc<Ring>,
    /// The newer incarnation of this node's name that replaced it ([`Event::Superseded`]), if
    /// one did: the ring names members, and this node's name is the newer process's now, so
    /// [`Membership::is_local_owner`] answers false.
    ///
    /// [`Event::Superseded`]: crate::Event::Superseded
    pub superseded_by: Option<NodeId>,
}

impl Membership {
    /// Live members (this node included until it starts leaving: its status is then `Left`).
    pub fn live(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .map(|m| &m.id)
    }

    /// Live members that marked themselves ready.
    pub fn ready(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive && m.ready)
            .map(|m| &m.id)
    }

    /// Number of live members (this node included until it starts leaving).
    pub fn num_live(&self) -> usize {
        self.live().count()
    }

    /// The member called `name`, if known.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The status of the member called `name`, if known.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        self.member(name).map(|m| m.status)
    }

    /// The member that owns `key`, if the ring is not empty (a ring lookup; borrows the name).
    pub fn owner(&self, key: impl AsRef<[u8]>) -> Option<&str> {
        self.ring.owner(key.as_ref())
    }

    /// The first `n` distinct members owning `key`, in ring order (primary first), as an
    /// iterator that borrows the names and allocates nothing (`.collect()` for a `Vec`).
    pub fn owners(&self, key: impl AsRef<[u8]>, n: usize) -> Owners<'_> {
        self.ring.owners(key.as_ref(), n)
    }

    /// Whether this node owns `key`. Always false once a newer incarnation of its name
    /// replaced it (see `superseded_by`).
    pub fn is_local_owner(&self, key: impl AsRef<[u8]>) -> bool {
        self.superseded_by.is_none() && self.ring.is_owner(key.as_ref(), &self.local.name)
    }

    pub(crate) fn new(
        epoch: u64,
        local: NodeId,
        mut members: Vec<Member>,
        ring: Arc<Ring>,
    ) -> Self {
        members.sort_by(|a, b| a.id.name.cmp(&b.id.name));
        Self {
            epoch,
            local,
            members,
            ring,
            superseded_by: None,
        }
    }
}

/// How a graceful leave ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaveOutcome {
    /// Peers that confirmed they hold the leave before the node went quiet (fewer than
    /// `leave_confirmations` means `leave_timeout` passed first, or there were fewer peers).
    pub confirmed: usize,
}

/// A request to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Set {
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Delete {
        key: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetReady {
        ready: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetKeyring {
        keyring: Option<crate::crypto::Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetWeight {
        weight: f64,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Get {
        node: String,
        key: String,
        reply: oneshot::Sender<Option<Bytes>>,
    },
    Values {
        key: String,
        reply: oneshot::Sender<Vec<(NodeId, Bytes)>>,
    },
    NodeState {
        node: String,
        reply: oneshot::Sender<Option<NodeState>>,
    },
    Phi {
        node: String,
        reply: oneshot::Sender<Option<f64>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Leave {
        reply: oneshot::Sender<LeaveOutcome>,
    },
    Join {
        addrs: Vec<SocketAddr>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Kill,
}

/// What the handles and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) local_addr: SocketAddr,
    pub(crate) counters: Arc<Counters>,
    pub(crate) subscriber_buffer: usize,
    /// The core's counters when the driver stopped.
    pub(crate) final_stats: Mutex<Option<Stats>>,
    /// How the leave ended, once it has.
    pub(crate) leave_outcome: Mutex<Option<LeaveOutcome>>,
    /// Aborts the driver if it does not stop when told to.
    pub(crate) driver: Mutex<Option<AbortHandle>>,
    /// The driver's snapshot for exporters; refreshed only while it has receivers.
    pub(crate) published: watch::Sender<Published>,
}

/// A read-only view of a node for exporters: it does not keep the node running (unlike a
/// [`Handle`]) and never asks the driver anything, so reading it never waits.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
#[derive(Clone, Debug)]
pub(crate) struct Observer {
    shared: Arc<Shared>,
    membership_rx: watch::Receiver<Arc<Membership>>,
    stopped_rx: watch::Receiver<bool>,
    published_rx: watch::Receiver<Published>,
}

#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl Observer {
    /// The node's identity.
    pub(crate) fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// The latest published snapshot, the runtime's counters now, and the membership.
    pub(crate) fn sample(&self) -> Sample {
        let published = *self.published_rx.borrow();
        Sample {
            stats: self.shared.counters.snapshot(published.core),
            phi_max: published.phi_max,
            subscribers: published.subscribers,
            subscriber_queued: published.subscriber_queued,
            membership: Arc::clone(&self.membership_rx.borrow()),
            running: !*self.stopped_rx.borrow() && self.stopped_rx.has_changed().is_ok(),
        }
    }
}

impl Handle {
    pub(crate) fn new(
        cmd_tx: mpsc::Sender<Command>,
        subs_tx: mpsc::UnboundedSender<Subscriber>,
        membership_rx: watch::Receiver<Arc<Membership>>,
        stopped_rx: watch::Receiver<bool>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            cmd_tx,
            subs_tx,
            membership_rx,
            stopped_rx,
            shared,
        }
    }

    // ----- identity -----

    /// This node's identity; its address is the advertised one.
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// The address the UDP socket and TCP listener are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    // ----- own state -----

    /// Sets `key` to `value` in this node's state; peers learn it by gossip.
    pub async fn set(&self, key: impl Into<String>, value: impl Into<Bytes>) -> Result<(), Error> {
        let (key, value) = (key.into(), value.into());
        self.request(|reply| Command::Set {
            key,
            value,
            ttl: None,
            reply,
        })
        .await?
    }

    /// Sets `key` to `value`; it is deleted after `ttl` unless set again (TTLs are checked every
    /// fifth gossip round, so up to five intervals later; not once the node is leaving). A
    /// `ttl` longer than the clock can count (such as `Duration::MAX`) never expires.
    pub async fn set_with_ttl(
        &self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let (key, value) = (key.into(), value.into());
        self.request(|reply| Command::Set {
            key,
            value,
            ttl: Some(ttl),
            reply,
        })
        .await?
    }

    /// Deletes `key` from this node's state (a tombstone that peers learn, purged after
    /// `tombstone_grace`). Deleting a key this node does not hold changes nothing and is not
    /// an error (the `node` example reports it, from its own read of the key).
    pub async fn delete(&self, key: impl Into<String>) -> Result<(), Error> {
        let key = key.into();
        self.request(|reply| Command::Delete { key, reply }).await?
    }

    /// Marks this node ready or not ready; peers see it in [`Member::ready`] and
    /// [`Membership::ready`]. Never refused for the state limits (readiness has room of its
    /// own).
    ///
    /// # Errors
    ///
    /// [`Error::Left`] once the node stopped.
    pub async fn mark_ready(&self, ready: bool) -> Result<(), Error> {
        self.request(|reply| Command::SetReady { ready, reply })
            .await?
    }

    /// Replaces the keyring and the plaintext settings while the node runs, for turning
    /// encryption on or rotating keys without a restart: add the new key on every node, then
    /// make it primary on every node, then remove the old one; or, from plaintext, give every
    /// node the key with `send_plaintext` and `accept_plaintext`, then stop sending
    /// plaintext, then stop accepting it (design.md section 8). The nonce sequence goes on.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `send_plaintext` with a keyring but without `accept_plaintext`
    /// (nodes configured alike would refuse what each other send); nothing changes then.
    /// [`Error::Left`] once the node stopped.
    pub async fn set_keyring(
        &self,
        keyring: Option<crate::crypto::Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
    ) -> Result<(), Error> {
        self.request(|reply| Command::SetKeyring {
            keyring,
            send_plaintext,
            accept_plaintext,
            reply,
        })
        .await?
    }

    /// Sets this node's weight for key ownership (relative to 1.0: weight 2 owns about twice
    /// the keys of weight 1); every ring takes it `ring_settle` after the write spreads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWeight`] unless `0.01 <= weight <= 100`; [`Error::Left`] once the node
    /// stopped. Never refused for the state limits (the weight has room of its own).
    pub async fn set_weight(&self, weight: f64) -> Result<(), Error> {
        self.request(|reply| Command::SetWeight { weight, reply })
            .await?
    }

    /// Joins through more peers while the node runs: each address is added to the node's
    /// seeds (kept across DNS re-resolutions, tried again whenever the node finds itself
    /// alone; the latest 1,024 addresses joined through are kept) and, unless it is a live
    /// member already, gets a full state exchange at the next gossip round, as the configured
    /// seeds did at start; joining through an address again tries it again. For merging
    /// clusters started apart, or peers learned from elsewhere (a service registry, an
    /// operator). Returns once the node has taken the addresses; the exchanges follow (watch
    /// [`membership`](Self::membership) or the `Joined` events to see them answered). The
    /// node's own addresses (advertised and bound) are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::NotAPeer`] for an address no peer can have (unspecified, port 0, multicast,
    /// the IPv4 broadcast address), and [`Error::Unreachable`] for one of a family the socket
    /// cannot reach (IPv6 on an IPv4 bind); nothing is added then. [`Error::Left`] once the
    /// node is leaving or stopped.
    pub async fn join(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<(), Error> {
        let filter = super::config::SeedFilter::new(self.shared.local_addr, self.shared.id.addr);
        let mut list = Vec::new();
        for addr in addrs {
            // Refused as a whole: one address in error, nothing joined.
            if let Some(addr) = filter.check(addr)? {
                list.push(addr);
            }
        }
        self.request(|reply| Command::Join { addrs: list, reply })
            .await?
    }

    // ----- cluster state, read locally -----

    /// The live value of `key` in the state of the node called `node` (this node included),
    /// as known here. `None` also once the node has stopped.
    pub async fn get(&self, node: &str, key: &str) -> Option<Bytes> {
        let (node, key) = (node.to_owned(), key.to_owned());
        self.request(|reply| Command::Get { node, key, reply })
            .await
            .ok()
            .flatten()
    }

    /// Every live member's value of `key` as known here (this node included until it starts
    /// leaving), sorted by member name; members whose state does not hold the key are left
    /// out. Empty once the node has stopped.
    ///
    /// ```no_run
    /// # async fn f(handle: tidings::runtime::Handle) {
    /// for (member, addr) in handle.values("http_addr").await {
    ///     println!("{} serves HTTP on {}", member.name, String::from_utf8_lossy(&addr));
    /// }
    /// # }
    /// ```
    pub async fn values(&self, key: &str) -> Vec<(NodeId, Bytes)> {
        let key = key.to_owned();
        self.request(|reply| Command::Values { key, reply })
            .await
            .unwrap_or_default()
    }

    /// A copy of the whole state of the node called `node`, as known here.
    pub async fn node_state(&self, node: &str) -> Option<NodeState> {
        let node = node.to_owned();
        self.request(|reply| Command::NodeState { node, reply })
            .await
            .ok()
            .flatten()
    }

    /// The failure detector's current suspicion of `node` (0 for this node and for members not
    /// alive).
    pub async fn phi(&self, node: &str) -> Option<f64> {
        let node = node.to_owned();
        self.request(|reply| Command::Phi { node, reply })
            .await
            .ok()
            .flatten()
    }

    /// The current membership snapshot.
    pub fn membership(&self) -> Arc<Membership> {
        Arc::clone(&self.membership_rx.borrow())
    }

    /// A receiver that sees every new membership snapshot. Use
    /// [`watch::Receiver::wait_for`] to wait for a condition, e.g. `|m| m.num_live() == 5`.
    ///
    /// A snapshot is published before the events of the same change reach subscribers: a task
    /// woken by a new ring here can run before the subscriber that handles its
    /// [`Event::Ownership`](crate::Event::Ownership) has seen it. Code that acts on state its
    /// event handler keeps should wait on that handler, not on the snapshot.
    pub fn watch_membership(&self) -> watch::Receiver<Arc<Membership>> {
        self.membership_rx.clone()
    }

    /// Every known member with its status, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.membership().members.clone()
    }

    /// Live members, this node included until it starts leaving.
    pub fn live_members(&self) -> Vec<NodeId> {
        self.membership().live().cloned().collect()
    }

    /// Live members that marked themselves ready.
    pub fn ready_members(&self) -> Vec<NodeId> {
        self.membership().ready().cloned().collect()
    }

    /// The member that owns `key` in the current snapshot's ring.
    ///
    /// The ring follows membership after `ring_settle` (1 s on a LAN, plus a random extra of
    /// up to half; within a gossip interval for a graceful leave): `None` until the node's
    /// first ring (later while the node still awaits its seeds' answer, at most four
    /// settles) and while the ring would hold fewer than `ring_min_members` members (it is
    /// empty then), and until a change has settled, the previous owner, even one just marked
    /// down. [`Event::Ownership`](crate::Event::Ownership) tells when this node's share
    /// changed.
    ///
    /// Each call reads the snapshot and copies the name. On a hot path, hold the snapshot
    /// instead: `let m = handle.membership();` then `m.owner(key)` (a borrowed `&str`: a ring
    /// lookup, no copy), and take a new snapshot when
    /// [`watch_membership`](Self::watch_membership) says it changed.
    pub fn owner(&self, key: impl AsRef<[u8]>) -> Option<String> {
        self.membership().owner(key).map(str::to_owned)
    }

    /// The first `n` distinct owners of `key` (primary first), for replication. Copies
    /// the names; [`Membership::owners`] on a held snapshot borrows them (see
    /// [`owner`](Self::owner)).
    pub fn owners(&self, key: impl AsRef<[u8]>, n: usize) -> Vec<String> {
        let m = self.membership();
        m.owners(key, n).map(str::to_owned).collect()
    }

    /// Whether this node owns `key` in the current snapshot's ring.
    ///
    /// Ownership is not exclusive: each node computes it from the members it sees, so while a
    /// change spreads and settles (a join, a crash, a partition) two nodes can both answer
    /// `true` for a key, or none can, for up to about `ring_settle` past the moment every node
    /// has seen the change (and for as long as a partition lasts, unless
    /// `ring_min_members` is a majority of the cluster: then only one side owns keys). A
    /// service that must never
    /// act twice on a key should fence in its own storage (a lease, or an epoch stored with
    /// each write and older ones refused); two nodes can check that they agree by comparing
    /// their rings' [fingerprints](crate::ring::Ring::fingerprint).
    pub fn is_local_owner(&self, key: impl AsRef<[u8]>) -> bool {
        self.membership().is_local_owner(key)
    }

    /// Subscribes to every event from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with(EventFilter::all())
    }

    /// Subscribes to the events that pass `filter`. The filter runs before queueing, so events
    /// filtered out never fill this subscriber's buffer.
    pub fn subscribe_with(&self, filter: EventFilter) -> Subscription {
        let (sub, subscription) = subscribe::channel(
            filter,
            self.shared.subscriber_buffer,
            self.stopped_rx.clone(),
        );
        // If the driver is gone, the subscription simply ends at once.
        let _ = self.subs_tx.send(sub);
        subscription
    }

    /// The core's counters and the runtime's.
    pub async fn stats(&self) -> RuntimeStats {
        let core = match self.request(|reply| Command::Stats { reply }).await {
            Ok(s) => s,
            Err(_) => lock(&self.shared.final_stats).unwrap_or_default(),
        };
        self.shared.counters.snapshot(core)
    }

    // ----- stopping -----

    /// Leaves the cluster gracefully: announces the leave, keeps gossiping until
    /// `leave_confirmations` peers hold it or `leave_timeout` passes, then stops the node.
    /// Peers see [`Event::Left`](crate::Event::Left). Calling it again returns the same outcome.
    ///
    /// Returns once the leave has completed, when the node starts stopping: writes already
    /// fail with [`Error::Left`], but [`is_running`](Self::is_running) can still be true and
    /// the sockets still open for a moment. To reuse the address, or to wait for every task to
    /// end, await [`stopped`](Self::stopped) after it, or call [`shutdown`](Self::shutdown)
    /// instead.
    ///
    /// Fails with [`Error::Left`] if the node stopped without leaving (it was killed, or a newer
    /// process took its name: [`Event::Superseded`](crate::Event::Superseded)).
    pub async fn leave(&self) -> Result<LeaveOutcome, Error> {
        match self.request(|reply| Command::Leave { reply }).await {
            Ok(outcome) => Ok(outcome),
            Err(_) => lock(&self.shared.leave_outcome).ok_or(Error::Left),
        }
    }

    /// Leaves gracefully (unless already stopped) and waits until every task of the node has
    /// ended and its sockets are closed.
    pub async fn shutdown(self) {
        let _ = self.leave().await;
        self.stopped().await;
    }

    /// Stops the node at once, as if its process crashed: no leave is announced, so peers
    /// mark it down once they stop hearing from it. Returns when every task has ended and the
    /// sockets are closed. Meant for tests and fault injection.
    pub async fn kill(&self) {
        let deadline = tokio::time::Instant::from_std(super::now() + KILL_GRACE);
        // Queueing the command is bounded too: a driver that does not run reads none, and
        // other callers' commands fill the queue (a kill then waited for room for good).
        if let Ok(Err(_)) = tokio::time::timeout_at(deadline, self.cmd_tx.send(Command::Kill)).await
        {
            return self.stopped().await;
        }
        // The driver stops at its next turn; should it not, abort it.
        if tokio::time::timeout_at(deadline, self.stopped())
            .await
            .is_err()
        {
            if let Ok(driver) = self.shared.driver.lock()
                && let Some(abort) = driver.as_ref()
            {
                abort.abort();
            }
            self.stopped().await;
        }
    }

    /// A view for exporters that does not keep the node running. Creating one makes the driver
    /// publish its counters about once a second for as long as the view lives.
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    pub(crate) fn observer(&self) -> Observer {
        Observer {
            shared: Arc::clone(&self.shared),
            membership_rx: self.membership_rx.clone(),
            stopped_rx: self.stopped_rx.clone(),
            published_rx: self.shared.published.subscribe(),
        }
    }

    /// Whether the node still runs.
    pub fn is_running(&self) -> bool {
        !*self.stopped_rx.borrow() && self.stopped_rx.has_changed().is_ok()
    }

    /// Waits until the node has stopped (left, killed or shut down) and its tasks have ended.
    pub async fn stopped(&self) {
        let mut rx = self.stopped_rx.clone();
        // An error means the driver is gone without saying so (aborted): stopped too.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Sends a command and waits for its reply, or for the node to stop. The stop signal is
    /// needed: a command sent while the driver is being dropped can be queued after the
    /// receiver drained its queue, and then neither runs nor is dropped while a handle lives.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd_tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Left)?;
        tokio::select! {
            // The driver answers every command it takes before it signals the stop.
            biased;
            r = rx => r.map_err(|_| Error::Left),
            () = self.stopped() => Err(Error::Left),
        }
    }
}

/// Longest wait for the driver to obey a kill before it is aborted.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Locks a mutex of plain data; a panic elsewhere cannot leave it inconsistent.
pub(crate) fn lock<T: Copy>(m: &Mutex<T>) -> T {
    match m.lock() {
        Ok(g) => *g,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingConfig;

    /// A handle whose driver is in the state a drop can leave it in: its command and
    /// subscription channels still open (a message queued after the receiver drained them
    /// keeps them so) but nobody reading them, and the stop signal raised.
    #[allow(clippy::type_complexity)]
    fn stopped_handle() -> (
        Handle,
        (
            mpsc::Receiver<Command>,
            mpsc::UnboundedReceiver<Subscriber>,
            watch::Sender<bool>,
        ),
    ) {
        let id = NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap());
        let ring = Arc::new(Ring::empty(RingConfig::default()).unwrap());
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (subs_tx, subs_rx) = mpsc::unbounded_channel();
        let (_membership_tx, membership_rx) =
            watch::channel(Arc::new(Membership::new(0, id.clone(), Vec::new(), ring)));
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            id,
            local_addr: "127.0.0.1:1".parse().unwrap(),
            counters: Arc::new(Counters::default()),
            subscriber_buffer: 4,
            final_stats: Mutex::new(None),
            leave_outcome: Mutex::new(Some(LeaveOutcome { confirmed: 2 })),
            driver: Mutex::new(None),
            published: watch::channel(Published::default()).0,
        });
        stopped_tx.send_replace(true);
        let h = Handle::new(cmd_tx, subs_tx, membership_rx, stopped_rx, shared);
        (h, (cmd_rx, subs_rx, stopped_tx))
    }

    // The clock is paused: if a call waited forever, the timeout would fire at once in
    // virtual time and the test would fail, without a real wait.
    #[tokio::test(start_paused = true)]
    async fn calls_on_a_stopped_node_return_even_if_its_channels_stay_open() {
        let (h, _keep) = stopped_handle();
        let wait = Duration::from_secs(60);
        let set = tokio::time::timeout(wait, h.set("k", "v")).await;
        assert!(matches!(set, Ok(Err(Error::Left))), "{set:?}");
        let leave = tokio::time::timeout(wait, h.leave()).await;
        assert!(
            matches!(leave, Ok(Ok(LeaveOutcome { confirmed: 2 }))),
            "{leave:?}"
        );
        let mut sub = h.subscribe();
        let next = tokio::time::timeout(wait, sub.recv()).await;
        assert_eq!(next.ok(), Some(None));
        tokio::time::timeout(wait, h.stopped()).await.unwrap();
    }

    /// The snapshot sorts members by name (`member` searches it), counts only alive members
    /// as live, and only alive ready ones as ready.
    #[test]
    fn a_snapshot_is_sorted_and_counts_only_alive_members_as_live_or_ready() {
        let ring = Arc::new(Ring::empty(RingConfig::default()).unwrap());
        let member = |name: &str, status, ready| Member {
            id: NodeId::new(name, 1, "127.0.0.1:1".parse().unwrap()),
            status,
            ready,
        };
        let m = Membership::new(
            1,
            NodeId::new("c", 1, "127.0.0.1:1".parse().unwrap()),
            vec![
                member("d", MemberStatus::Left, true),
                member("c", MemberStatus::Alive, true),
                member("a", MemberStatus::Down, true),
                member("b", MemberStatus::Alive, false),
            ],
            ring,
        );
        let names = |ids: Vec<&NodeId>| ids.into_iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(m.members.iter().map(|m| &m.id).collect()),
            ["a", "b", "c", "d"]
        );
        assert_eq!(m.status("b"), Some(MemberStatus::Alive));
        assert_eq!(m.status("d"), Some(MemberStatus::Left));
        assert_eq!(m.status("e"), None);
        assert_eq!(names(m.live().collect()), ["b", "c"]);
        assert_eq!(m.num_live(), 2);
        assert_eq!(names(m.ready().collect()), ["c"]);
    }

    /// `join` refuses an address no peer can have (unspecified, port 0, multicast, the IPv4
    /// broadcast address; IPv4-mapped ones alike) with `NotAPeer`, before anything reaches
    /// the driver: nothing is joined, not even the good addresses given with it.
    #[tokio::test(start_paused = true)]
    async fn join_refuses_addresses_no_peer_can_have_and_joins_nothing() {
        let (h, (mut cmd_rx, _subs_rx, stopped_tx)) = stopped_handle();
        stopped_tx.send_replace(false);
        let good: SocketAddr = "127.0.0.2:7946".parse().unwrap();
        for (bad, shown) in [
            ("0.0.0.0:7946", "0.0.0.0:7946"),
            ("[::]:7946", "[::]:7946"),
            ("[::ffff:0.0.0.0]:7946", "0.0.0.0:7946"),
            ("127.0.0.2:0", "127.0.0.2:0"),
            ("224.0.0.1:7946", "224.0.0.1:7946"),
            ("[ff02::1]:7946", "[ff02::1]:7946"),
            ("255.255.255.255:7946", "255.255.255.255:7946"),
        ] {
            let bad: SocketAddr = bad.parse().unwrap();
            // Bounded: a join that reached the driver would wait for an answer for good.
            let r = tokio::time::timeout(Duration::from_secs(60), h.join([good, bad])).await;
            let r = r.unwrap_or_else(|_| panic!("{bad}: the join went to the driver"));
            assert!(
                matches!(&r, Err(Error::NotAPeer { addr, .. }) if addr.to_string() == shown),
                "{bad}: {r:?}"
            );
            assert!(
                cmd_rx.try_recv().is_err(),
                "{bad}: a join reached the driver"
            );
        }
        let r = h.join(["0.0.0.0:7946".parse().unwrap()]).await;
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err(
                "0.0.0.0:7946 cannot be a peer's address: it is unspecified (0.0.0.0 or ::); a peer on this host is 127.0.0.1 or ::1".into()
            )
        );
        // An address a peer can have goes to the driver.
        let h2 = h.clone();
        let joining = tokio::spawn(async move { h2.join([good]).await });
        let Some(Command::Join { addrs, reply }) = cmd_rx.recv().await else {
            panic!("a join");
        };
        assert_eq!(addrs, [good]);
        let _ = reply.send(Ok(()));
        assert!(joining.await.unwrap().is_ok());
    }

    /// A driver gone without raising the stop signal (aborted): the node counts as stopped
    /// (`is_running`, the exporters' view, `stopped`). While the signal is down and its sender
    /// lives, the node runs and `stopped` waits.
    #[tokio::test(start_paused = true)]
    async fn a_node_whose_driver_vanished_counts_as_stopped() {
        let (h, (_cmd_rx, _subs_rx, stopped_tx)) = stopped_handle();
        stopped_tx.send_replace(false);
        let observer = h.observer();
        assert!(h.is_running() && observer.sample().running);
        let wait = Duration::from_secs(60);
        assert!(
            tokio::time::timeout(wait, h.stopped()).await.is_err(),
            "a running node is not stopped"
        );
        drop(stopped_tx);
        assert!(!h.is_running());
        assert!(!observer.sample().running);
        tokio::time::timeout(wait, h.stopped()).await.unwrap();
    }

    /// The driver answers a write and raises the stop signal in the same turn (a write just
    /// before a kill): the caller gets the answer, not `Left`.
    #[tokio::test(start_paused = true)]
    async fn a_write_answered_just_before_the_stop_gets_its_answer() {
        let (h, (mut cmd_rx, _subs_rx, stopped_tx)) = stopped_handle();
        stopped_tx.send_replace(false);
        let driver = tokio::spawn(async move {
            let Some(Command::Set { reply, .. }) = cmd_rx.recv().await else {
                panic!("a set");
            };
            let _ = reply.send(Ok(()));
            stopped_tx.send_replace(true);
            (cmd_rx, stopped_tx)
        });
        assert!(matches!(h.set("k", "v").await, Ok(())));
        let _keep = driver.await.unwrap();
    }

    /// A kill the driver does not obey within `KILL_GRACE` aborts it, and returns once it is
    /// gone.
    #[tokio::test(start_paused = true)]
    async fn a_kill_aborts_a_driver_that_does_not_stop() {
        kill_a_stuck_driver(false).await;
    }

    /// A driver stuck in a turn (it holds the stop signal and never reads its commands),
    /// with its command queue full first if `full`; a kill must still return and abort it.
    async fn kill_a_stuck_driver(full: bool) {
        let (h, (cmd_rx, _subs_rx, stopped_tx)) = stopped_handle();
        stopped_tx.send_replace(false);
        while full && h.cmd_tx.try_send(Command::Kill).is_ok() {}
        let stuck = tokio::spawn(async move {
            let _held = (cmd_rx, stopped_tx);
            std::future::pending::<()>().await;
        });
        *h.shared.driver.lock().unwrap() = Some(stuck.abort_handle());
        tokio::time::timeout(Duration::from_secs(60), h.kill())
            .await
            .expect("the kill returned");
        assert!(!h.is_running());
        assert!(stuck.await.unwrap_err().is_cancelled());
    }

    /// A stuck driver reads no command, so the queue fills up (other callers' writes): a
    /// kill that cannot queue its command still aborts the driver after `KILL_GRACE`, instead
    /// of waiting for room for good.
    #[tokio::test(start_paused = true)]
    async fn a_kill_aborts_a_stuck_driver_whose_command_queue_is_full() {
        kill_a_stuck_driver(true).await;
    }

    /// A kill that finds the command channel closed still waits for the stop: the driver
    /// drops its channels before it has closed the sockets and raised the signal.
    #[tokio::test(start_paused = true)]
    async fn a_kill_after_the_commands_closed_waits_for_the_stop() {
        let (h, (cmd_rx, _subs_rx, stopped_tx)) = stopped_handle();
        stopped_tx.send_replace(false);
        drop(cmd_rx);
        let wait = Duration::from_secs(60);
        assert!(
            tokio::time::timeout(wait, h.kill()).await.is_err(),
            "returned before the stop"
        );
        stopped_tx.send_replace(true);
        tokio::time::timeout(wait, h.kill()).await.unwrap();
        // Killed without a leave: `leave` fails.
        *h.shared.leave_outcome.lock().unwrap() = None;
        assert!(matches!(h.leave().await, Err(Error::Left)));
    }
}
