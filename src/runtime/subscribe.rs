//! Event subscriptions: a bounded queue per subscriber, filtered before queueing, that tells a
//! slow subscriber how many events it missed instead of slowing gossip down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, watch};

use super::stats::Counters;
use crate::event::{Event, KeyEvents};

/// Which events a [`Subscription`] receives. Membership events are `Joined`, `Up`, `Down`,
/// `Left`, `Expired`, `ReadyChanged`, `LeaveCompleted`, `Superseded` and `Ownership`: every
/// event that is not about a key; key events are `KeyUpserted` and `KeyDeleted`. So a filter
/// of keys alone never sees `Superseded` or `Ownership`.
///
/// ```
/// use tidings::runtime::EventFilter;
/// // Membership changes plus the keys under "svc/" or "cfg/".
/// let f = EventFilter::membership().with_key_prefix("svc/").with_key_prefix("cfg/");
/// // Only keys under "svc/".
/// let g = EventFilter::key_prefix("svc/");
/// # let _ = (f, g);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilter {
    membership: bool,
    /// The core's own description of which key events are wanted: the runtime tells the core
    /// the union of its subscribers' (see `Driver::update_key_events`).
    keys: KeyEvents,
    current_state: bool,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self {
            membership: true,
            keys: KeyEvents::All,
            current_state: false,
        }
    }

    /// Membership events only.
    pub fn membership() -> Self {
        Self {
            membership: true,
            keys: KeyEvents::None,
            current_state: false,
        }
    }

    /// Key events whose key starts with `prefix`, and nothing else.
    pub fn key_prefix(prefix: impl Into<String>) -> Self {
        Self {
            membership: false,
            keys: KeyEvents::Prefixes(vec![prefix.into()]),
            current_state: false,
        }
    }

    /// Also (or only) key events whose key starts with `prefix`. A filter that took every key
    /// now takes only the prefixes added.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        match &mut self.keys {
            KeyEvents::Prefixes(p) => p.push(prefix.into()),
            k => *k = KeyEvents::Prefixes(vec![prefix.into()]),
        }
        self
    }

    /// Whether membership events pass.
    pub fn with_membership(mut self, membership: bool) -> Self {
        self.membership = membership;
        self
    }

    /// Starts the subscription with the node's current state, as events, before any change:
    /// for every member `Joined` (not for this node itself), then `ReadyChanged` with its
    /// readiness, then `KeyUpserted` for each of its live keys, then `Down` or `Left` if it is
    /// not alive (status last: after `Left` only `Expired` comes); all of it through this
    /// filter. Events already delivered to other subscribers are
    /// not repeated after the replay, and none is missed between the replay and the changes
    /// that follow: a subscriber that folds the events it receives holds the cluster's state,
    /// however late it subscribed. (Ownership has no replay: read it from
    /// [`Handle::membership`](super::Handle::membership).) A replay larger than
    /// `subscriber_buffer` ends in [`Lagged`], like any burst.
    ///
    /// The node's task writes the replay, so it arrives shortly after `subscribe_with`
    /// returns (a `try_recv` at once may find nothing yet; `recv` waits for it). Members come
    /// in the order the node holds them, not sorted by name.
    pub fn with_current_state(mut self) -> Self {
        self.current_state = true;
        self
    }

    /// The key events this filter can pass.
    pub(crate) fn key_events(&self) -> &KeyEvents {
        &self.keys
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.takes(event.key())
    }

    /// Whether an event with this key (`None`: a membership event) passes the filter.
    fn takes(&self, key: Option<&str>) -> bool {
        match key {
            None => self.membership,
            Some(key) => self.keys.wants(key),
        }
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::all()
    }
}

/// Events were dropped because this subscriber did not keep up: its buffer
/// (`subscriber_buffer`) was full. The count is the number of events missed, at this point in
/// the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subscriber lagged: {0} events missed")]
pub struct Lagged(pub u64);

/// A stream of the node's [`Event`]s, from [`Handle::subscribe`](super::Handle::subscribe).
///
/// Events about one node arrive in the order this node learned them. Dropping the
/// subscription unsubscribes.
///
/// It is read with [`recv`](Self::recv), not through the `futures` crate's `Stream` trait
/// (not a dependency here); a service that wants stream combinators can wrap it:
///
/// ```ignore
/// let events = futures::stream::unfold(subscription, |mut s| async move {
///     s.recv().await.map(|event| (event, s))
/// });
/// ```
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Event>,
    lag: Arc<AtomicU64>,
    /// Signalled when a gap opens: the reader may have emptied the queue between the driver
    /// finding it full and raising `lag`, and would otherwise wait on the queue for good (the
    /// driver queues nothing past a gap).
    gap: Arc<Notify>,
    /// The node's stop signal. The queue alone cannot say the node stopped: a subscription
    /// handed over while the driver is being dropped can stay in the hand-over channel, its
    /// sender never dropped, so `recv` also ends once this turns true.
    stopped: watch::Receiver<bool>,
}

impl Subscription {
    /// The next event; `Some(Err(Lagged(n)))` if `n` events were dropped here because the
    /// buffer was full; `None` once the node has stopped and every buffered event was read.
    pub async fn recv(&mut self) -> Option<Result<Event, Lagged>> {
        // Buffered events come before the gap; the driver queues nothing after a gap until it
        // has been reported, so the order is kept.
        loop {
            if let Some(e) = self.try_recv() {
                return Some(e);
            }
            let next = tokio::select! {
                // Events queued before the stop come first.
                biased;
                e = self.rx.recv() => Some(e),
                // A gap opened after the queue was found empty: report it.
                () = self.gap.notified() => None,
                // An error means the driver is gone without saying so (aborted): stopped too.
                _ = self.stopped.wait_for(|stopped| *stopped) => Some(None),
            };
            match next {
                Some(Some(e)) => return Some(Ok(e)),
                // Stopped: what was queued before the stop, then the end.
                Some(None) => return self.try_recv(),
                None => {}
            }
        }
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<Event, Lagged>> {
        // The gap is looked at before the queue: once it has opened the driver queues nothing,
        // so what the queue then holds came before it. Looked at after, a gap opened between
        // the two reads would be reported ahead of the events queued just before it (found by
        // review).
        let gap = self.lag.load(Ordering::Acquire) > 0;
        if let Ok(e) = self.rx.try_recv() {
            return Some(Ok(e));
        }
        if !gap {
            return None;
        }
        let missed = self.lag.swap(0, Ordering::AcqRel);
        (missed > 0).then_some(Err(Lagged(missed)))
    }
}

/// The driver's side of a subscription.
pub(crate) struct Subscriber {
    tx: mpsc::Sender<Event>,
    lag: Arc<AtomicU64>,
    gap: Arc<Notify>,
    filter: EventFilter,
}

/// A new subscription and the driver's end of it; `stopped` is the node's stop signal.
pub(crate) fn channel(
    filter: EventFilter,
    capacity: usize,
    stopped: watch::Receiver<bool>,
) -> (Subscriber, Subscription) {
    let (tx, rx) = mpsc::channel(capacity);
    let lag = Arc::new(AtomicU64::new(0));
    let gap = Arc::new(Notify::new());
    (
        Subscriber {
            tx,
            lag: Arc::clone(&lag),
            gap: Arc::clone(&gap),
            filter,
        },
        Subscription {
            rx,
            lag,
            gap,
            stopped,
        },
    )
}

impl Subscriber {
    /// The key events this subscriber can receive.
    pub(crate) fn key_events(&self) -> &KeyEvents {
        self.filter.key_events()
    }

    /// Whether the subscription starts with a replay of the current state.
    pub(crate) fn replays(&self) -> bool {
        self.filter.current_state
    }

    /// Events queued and not read yet.
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues `event` if it passes the filter. Returns false once the subscription is gone.
    pub(crate) fn publish(&self, event: &Event, counters: &Counters) -> bool {
        self.offer(event.key(), || event.clone(), counters)
    }

    /// Queues the event `make` builds, if an event with this key (`None`: a membership event)
    /// passes the filter; builds it only if it is queued, so that a replay of a large state
    /// costs nothing for the events a subscriber does not take. Returns false once the
    /// subscription is gone.
    pub(crate) fn offer(
        &self,
        key: Option<&str>,
        make: impl FnOnce() -> Event,
        counters: &Counters,
    ) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if !self.filter.takes(key) {
            return true;
        }
        // After a gap, queue nothing until the subscriber has read up to it and been told.
        if self.lag.load(Ordering::Acquire) > 0 {
            self.miss(counters);
            return true;
        }
        match self.tx.try_send(make()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.miss(counters);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts an event this subscriber misses; the first of a gap wakes a reader waiting on
    /// the queue.
    fn miss(&self, counters: &Counters) {
        counters.subscriber_lagged.fetch_add(1, Ordering::Relaxed);
        if self.lag.fetch_add(1, Ordering::AcqRel) == 0 {
            self.gap.notify_one();
        }
    }

    /// Whether the subscription was dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn key_event(key: &str) -> Event {
        Event::KeyDeleted {
            node: NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap()),
            key: key.into(),
        }
    }

    #[test]
    fn filters_select_membership_and_prefixes() {
        let up = Event::Up(NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap()));
        assert!(EventFilter::all().matches(&up));
        assert!(EventFilter::all().matches(&key_event("x")));
        assert!(!EventFilter::membership().matches(&key_event("x")));
        let f = EventFilter::key_prefix("svc/");
        assert!(!f.matches(&up));
        assert!(f.matches(&key_event("svc/a")));
        assert!(!f.matches(&key_event("cfg/a")));
        let g = EventFilter::membership().with_key_prefix("cfg/");
        assert!(g.matches(&up) && g.matches(&key_event("cfg/a")) && !g.matches(&key_event("x")));
    }

    /// Prefixes add up; a prefix narrows a filter that took every key; membership can be
    /// switched off; the default filter takes everything.
    #[test]
    fn key_prefixes_add_up_and_narrow_a_filter_of_every_key() {
        let up = Event::Up(NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap()));
        let f = EventFilter::key_prefix("svc/").with_key_prefix("cfg/");
        assert!(f.matches(&key_event("svc/a")) && f.matches(&key_event("cfg/a")));
        assert!(!f.matches(&up));
        let g = EventFilter::all().with_key_prefix("svc/");
        assert!(g.matches(&up) && g.matches(&key_event("svc/a")));
        assert!(!g.matches(&key_event("x")), "only the prefix added");
        let h = EventFilter::all().with_membership(false);
        assert!(!h.matches(&up) && h.matches(&key_event("x")));
        assert_eq!(EventFilter::default(), EventFilter::all());
    }

    /// The filter runs before queueing; a dropped subscription is reported gone by the next
    /// publish, even of an event its filter would not take (the driver forgets it then).
    #[test]
    fn a_dropped_subscription_is_gone_for_events_it_would_not_take() {
        let counters = Counters::default();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (sub, s) = channel(EventFilter::key_prefix("svc/"), 4, stop_rx);
        assert!(sub.publish(&key_event("svc/a"), &counters));
        assert!(sub.publish(&key_event("cfg/a"), &counters));
        assert_eq!(sub.queued(), 1, "only the event the filter takes is queued");
        assert!(!sub.is_closed());
        drop(s);
        assert!(sub.is_closed());
        assert!(!sub.publish(&key_event("cfg/a"), &counters));
    }

    /// A reader racing a driver thread that keeps overfilling a one-event queue never sees
    /// `Lagged` ahead of an event queued before that gap (found by review: the queue found
    /// empty, then the gap read, let events queued in between come after it; 6 in 5 million).
    #[test]
    fn a_gap_is_reported_after_every_event_queued_before_it_under_a_race() {
        use std::sync::atomic::AtomicBool;
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (sub, mut s) = channel(EventFilter::all(), 1, stop_rx);
        let done = Arc::new(AtomicBool::new(false));
        let total: u64 = 4_000_000;
        let writer = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let counters = Counters::default();
                let node = NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap());
                for i in 0..total {
                    let ev = Event::KeyDeleted {
                        node: node.clone(),
                        key: i.to_string(),
                    };
                    sub.publish(&ev, &counters);
                }
                done.store(true, Ordering::Release);
                sub
            })
        };
        // Every event is read or counted in a gap, in order: `next` is the lowest number
        // still allowed.
        let mut next = 0u64;
        loop {
            let finished = done.load(Ordering::Acquire);
            match s.try_recv() {
                Some(Ok(e)) => {
                    let Event::KeyDeleted { key, .. } = e else {
                        panic!("{e:?}")
                    };
                    let k: u64 = key.parse().unwrap();
                    assert!(k >= next, "event {k} after a gap that reached {next}");
                    next = k + 1;
                }
                Some(Err(Lagged(n))) => next += n,
                None if finished => break,
                None => std::hint::spin_loop(),
            }
        }
        let _sub = writer.join().unwrap();
        assert_eq!(next, total, "every event read or counted");
    }

    #[tokio::test]
    async fn a_full_buffer_reports_the_gap_in_order() {
        let counters = Counters::default();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (sub, mut s) = channel(EventFilter::all(), 2, stop_rx);
        for i in 0..5 {
            assert!(sub.publish(&key_event(&i.to_string()), &counters));
        }
        assert_eq!(s.recv().await.unwrap().unwrap().key(), Some("0"));
        // Room now, but nothing is queued past the gap until it is reported.
        assert!(sub.publish(&key_event("5"), &counters));
        assert_eq!(s.recv().await.unwrap().unwrap().key(), Some("1"));
        assert_eq!(s.recv().await.unwrap(), Err(Lagged(4)));
        assert!(sub.publish(&key_event("6"), &counters));
        assert_eq!(s.recv().await.unwrap().unwrap().key(), Some("6"));
        assert_eq!(counters.subscriber_lagged.load(Ordering::Relaxed), 4);
        drop(s);
        assert!(!sub.publish(&key_event("7"), &counters));
    }

    /// The race: the driver finds the queue full, the reader empties it and waits, and only
    /// then is the gap counted. The reader must wake and report it (it waited for good, and the
    /// driver queued nothing more, before the gap signalled).
    #[tokio::test(start_paused = true)]
    async fn a_reader_waiting_on_an_empty_queue_hears_of_a_gap() {
        let counters = Counters::default();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (sub, mut s) = channel(EventFilter::all(), 1, stop_rx);
        let reader = tokio::spawn(async move {
            let r = s.recv().await;
            (r, s)
        });
        tokio::task::yield_now().await;
        // The full queue's try_send failed before the reader's read; the count comes now.
        sub.miss(&counters);
        let (r, _s) = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
            .await
            .expect("the reader never woke")
            .expect("reader task");
        assert_eq!(r, Some(Err(Lagged(1))));
    }
}
