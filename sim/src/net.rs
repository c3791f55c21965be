//! Typed messages between simulated nodes.
//!
//! tablesim schedules its own messages; it does not use madsim's `Endpoint`.
//! That one sleeps a random delay on every send and every receive, resolves
//! the address through a virtual-server table and fires a delivery timer,
//! so a message cost about four timers and four task polls (a third of the
//! reference scenario's CPU time). Here the world decides at send time
//! whether the message vanishes (dead receiver, cut link, loss, the
//! [`crate::world::IN_FLIGHT_MAX`] bound) and when it is due (link latency,
//! jitter, latency spikes); the send then arms one madsim timer at the due
//! time and returns without yielding. When the timer fires, the message lands
//! in the receiving node's transport, found by (node, protocol tag) at that
//! moment, so a receiver that crashed meanwhile drops it and one that
//! restarted receives it, as a real socket would. A message whose link is cut
//! while it is in flight vanishes on arrival.
//!
//! The timer is armed by polling a madsim `Sleep` by hand with a waker that
//! carries the message ([`InFlight`]): its wake-up *is* the arrival. madsim
//! runs timer callbacks while it holds its timer lock and, when it jumps to
//! the next event, before it moves the clock; so arrival code must not arm a
//! timer and takes its time from the message (`due`), not from the clock. It
//! only pushes into channels, which wake the receiving tasks.
//!
//! Request/response: [`Net::call`] sends a request with an id and waits for
//! the response with a timeout; the waiting entry is removed on timeout, so
//! nothing leaks. Ids carry the node's incarnation, so a response to a call
//! made before a crash can never complete a call made after the restart.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::log::Event;
use crate::time::{self, SimTime};
use crate::topology::NodeId;
use crate::world::{NodeCtx, World};

/// A message type of one protocol. Each type gets its own tag.
pub trait Message: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// Distinguishes protocols: a node binds each tag once.
    const TAG: u16;
    /// A short name of the variant, for the event log and traces.
    fn kind(&self) -> &'static str;
}

/// Messages waiting in one node's inbox for one protocol.
pub const INBOX_MAX: usize = 8192;
/// Calls one node may have waiting for responses on one protocol.
pub const PENDING_CALLS_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    OneWay,
    Request(u64),
    Response(u64),
}

struct Envelope<M> {
    from: NodeId,
    rpc: Rpc,
    due: SimTime,
    msg: M,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("no response within the timeout")]
    Timeout,
    #[error("too many calls waiting for responses ({PENDING_CALLS_MAX})")]
    TooManyPending,
}

/// A received message. `request` is set when the sender waits for a reply.
#[derive(Debug)]
pub struct Incoming<M> {
    pub from: NodeId,
    pub msg: M,
    pub request: Option<RequestId>,
}

/// Names the call a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

struct Pending<M> {
    waiters: BTreeMap<u64, oneshot::Sender<M>>,
    /// (deadline, call id), earliest first.
    deadlines: std::collections::BTreeSet<(SimTime, u64)>,
    /// The deadline the sweeper sleeps towards, if it sleeps.
    sweeper_target: Option<SimTime>,
}

struct Shared<M> {
    world: World,
    me: NodeId,
    /// Calls waiting for responses, and their deadlines.
    pending: Mutex<Pending<M>>,
    /// Wakes the timeout sweeper when a call's deadline is earlier than the
    /// one it sleeps towards.
    sweeper: tokio::sync::Notify,
    next_id: AtomicU64,
    inbox: mpsc::UnboundedSender<Incoming<M>>,
    /// Messages in the inbox, bounded by [`INBOX_MAX`] (an unbounded channel
    /// with this counter costs less than tokio's bounded one).
    inbox_len: Arc<AtomicUsize>,
}

/// The sending half of a node's transport for protocol `M`. Cheap to clone.
pub struct Net<M: Message> {
    shared: Arc<Shared<M>>,
}

impl<M: Message> Clone for Net<M> {
    fn clone(&self) -> Self {
        Net { shared: self.shared.clone() }
    }
}

/// The receiving half: requests and one-way messages addressed to the node.
pub struct Inbox<M> {
    rx: mpsc::UnboundedReceiver<Incoming<M>>,
    len: Arc<AtomicUsize>,
    _m: PhantomData<M>,
}

impl<M> Inbox<M> {
    /// The next message; `None` only when the transport has shut down.
    pub async fn recv(&mut self) -> Option<Incoming<M>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (for loops that wait on more than the
    /// inbox); `Ready(None)` only when the transport has shut down.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> std::task::Poll<Option<Incoming<M>>> {
        self.rx.poll_recv(cx).map(|m| self.taken(m))
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Incoming<M>> {
        let m = self.rx.try_recv().ok();
        self.taken(m)
    }

    /// Counts a message taken out of the inbox.
    fn taken(&self, m: Option<Incoming<M>>) -> Option<Incoming<M>> {
        if m.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        m
    }
}

impl<M: Message> Net<M> {
    /// Binds protocol `M` on this node and starts its timeout sweeper.
    pub async fn bind(ctx: &NodeCtx) -> (Net<M>, Inbox<M>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox_len = Arc::new(AtomicUsize::new(0));
        let incarnation = ctx.world.incarnation(ctx.id);
        let shared = Arc::new(Shared {
            world: ctx.world.clone(),
            me: ctx.id,
            pending: Mutex::new(Pending { waiters: BTreeMap::new(), deadlines: Default::default(), sweeper_target: None }),
            sweeper: tokio::sync::Notify::new(),
            next_id: AtomicU64::new(incarnation << 40),
            inbox: tx,
            inbox_len: inbox_len.clone(),
        });
        let erased: Arc<dyn std::any::Any + Send + Sync> = shared.clone();
        if !ctx.world.bind_mailbox(ctx.id, M::TAG, Arc::downgrade(&erased)) {
            panic!("protocol tag {} bound twice on {} (two protocols share a tag?)", M::TAG, ctx.name());
        }
        // The sweeper lives as long as the node's incarnation (a crash drops
        // it with every other task of the node); so does the transport, and
        // the world's entry for it then no longer upgrades.
        madsim::task::spawn(timeout_sweeper(shared.clone()));
        (Net { shared }, Inbox { rx, len: inbox_len, _m: PhantomData })
    }

    pub fn node(&self) -> NodeId {
        self.shared.me
    }

    async fn send_env(&self, to: NodeId, rpc: Rpc, msg: M) {
        let s = &self.shared;
        let kind = msg.kind();
        match s.world.route(s.me, to) {
            Err(reason) => {
                tracing::debug!(target: "sim::net", at = %time::now(), to = to.0, kind, reason, "drop at send");
                s.world.record(Event::Drop { at: time::now(), from: s.me.0, to: to.0, kind, reason })
            }
            Ok(due) => {
                let flight = Arc::new(InFlight { world: s.world.clone(), to, env: Mutex::new(Some(Envelope { from: s.me, rpc, due, msg })) });
                let waker = Waker::from(flight.clone());
                let timer = std::pin::pin!(time::madsim_sleep_until(due));
                // Pending: the timer holds the waker and fires at `due`.
                // Ready cannot happen (madsim sleeps at least 1 µs of model
                // time, links are slower); should it, the message lands now.
                if timer.poll(&mut Context::from_waker(&waker)).is_ready() {
                    flight.wake_by_ref();
                }
            }
        }
    }

    /// Sends a one-way message.
    pub async fn send(&self, to: NodeId, msg: M) {
        self.send_env(to, Rpc::OneWay, msg).await
    }

    /// Answers a request received in an [`Incoming`].
    pub async fn reply(&self, to: NodeId, request: RequestId, msg: M) {
        self.send_env(to, Rpc::Response(request.0), msg).await
    }

    /// Sends a request and waits up to `timeout` (model time) for its response.
    pub async fn call(&self, to: NodeId, msg: M, timeout: Duration) -> Result<M, NetError> {
        let s = &self.shared;
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let deadline = time::now() + timeout;
        {
            let mut p = s.pending.lock().expect("pending lock");
            if p.waiters.len() >= PENDING_CALLS_MAX {
                return Err(NetError::TooManyPending);
            }
            p.waiters.insert(id, tx);
            p.deadlines.insert((deadline, id));
            if p.sweeper_target.is_none_or(|t| deadline < t) {
                s.sweeper.notify_one();
            }
        }
        self.send_env(to, Rpc::Request(id), msg).await;
        // The sweeper drops the sender at the deadline: a closed channel is
        // a timeout. No timer per call.
        let r = rx.await.map_err(|_| NetError::Timeout);
        let mut p = s.pending.lock().expect("pending lock");
        p.waiters.remove(&id);
        p.deadlines.remove(&(deadline, id));
        r
    }

    /// Calls waiting for a response (for tests of the no-leak promise).
    pub fn pending_calls(&self) -> usize {
        self.shared.pending.lock().expect("pending lock").waiters.len()
    }
}

/// Polls `first`, then `second`; `Some` with `first`'s output if it is
/// ready, `None` if only `second` is. `first` is borrowed, so the sweeper's
/// registration for notifications outlives a wake-up by its timer.
struct Race<'a, A: Future + Unpin, B: Future> {
    first: &'a mut A,
    second: Pin<&'a mut B>,
}

impl<A: Future + Unpin, B: Future> Future for Race<'_, A, B> {
    type Output = Option<A::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        if let std::task::Poll::Ready(x) = Pin::new(&mut *self.first).poll(cx) {
            return std::task::Poll::Ready(Some(x));
        }
        match self.second.as_mut().poll(cx) {
            std::task::Poll::Ready(_) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Expires calls whose deadline passed. It sleeps towards the earliest
/// deadline; calls that complete first just leave, so it wakes about once
/// per timeout period rather than once per call.
async fn timeout_sweeper<M: Message>(s: Arc<Shared<M>>) {
    loop {
        let target = {
            let mut p = s.pending.lock().expect("pending lock");
            let now = time::now();
            while let Some(&(deadline, id)) = p.deadlines.first() {
                if deadline > now {
                    break;
                }
                p.deadlines.pop_first();
                // Dropping the sender wakes the caller with a timeout.
                p.waiters.remove(&id);
            }
            p.sweeper_target = p.deadlines.first().map(|&(d, _)| d);
            p.sweeper_target
        };
        let notified = s.sweeper.notified();
        let mut notified = std::pin::pin!(notified);
        match target {
            None => notified.await,
            Some(t) => {
                let sleep = time::sleep_until(t);
                let sleep = std::pin::pin!(sleep);
                Race { first: &mut notified, second: sleep }.await;
            }
        }
    }
}

/// A message on its way: the waker of its arrival timer.
struct InFlight<M> {
    world: World,
    to: NodeId,
    /// Taken on arrival, so a second wake-up cannot deliver it twice.
    env: Mutex<Option<Envelope<M>>>,
}

impl<M: Message> Wake for InFlight<M> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    /// The arrival. Runs inside madsim's timer callback: see the module doc
    /// for what it may not do.
    fn wake_by_ref(self: &Arc<Self>) {
        let Some(env) = self.env.lock().expect("in-flight lock").take() else { return };
        let (at, kind) = (env.due, env.msg.kind());
        if let Err(reason) = self.world.land(env.from, self.to) {
            tracing::debug!(target: "sim::net", %at, from = env.from.0, kind, reason, "drop on arrival");
            self.world.record(Event::Drop { at, from: env.from.0, to: self.to.0, kind, reason });
            return;
        }
        match self.world.mailbox(self.to, M::TAG).map(|b| b.downcast::<Shared<M>>()) {
            Some(Ok(shared)) => shared.deliver(env),
            // Nothing bound there (the node has not bound this protocol
            // yet, or its incarnation is gone), or another protocol with the
            // same tag.
            other => {
                let reason = if matches!(other, Some(Err(_))) { "malformed" } else { "unbound" };
                self.world.reclassify_as_dropped(reason);
                self.world.record(Event::Drop { at, from: env.from.0, to: self.to.0, kind, reason });
            }
        }
    }
}

impl<M: Message> Shared<M> {
    /// Hands a landed message (already counted as delivered) to its taker;
    /// a message nobody can take is reclassified as dropped.
    fn deliver(&self, env: Envelope<M>) {
        let kind = env.msg.kind();
        let at = env.due;
        tracing::trace!(target: "sim::net", %at, from = env.from.0, kind, "deliver");
        let (rpc, dropped) = match env.rpc {
            Rpc::Response(id) => {
                let waiter = self.pending.lock().expect("pending lock").waiters.remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(env.msg);
                        (id, None)
                    }
                    None => (id, Some("late")),
                }
            }
            Rpc::OneWay | Rpc::Request(_) => {
                let (rpc, request) = match env.rpc {
                    Rpc::Request(id) => (id, Some(RequestId(id))),
                    _ => (0, None),
                };
                if self.inbox_len.load(Ordering::Relaxed) >= INBOX_MAX {
                    (rpc, Some("inbox-full"))
                } else if self.inbox.send(Incoming { from: env.from, msg: env.msg, request }).is_ok() {
                    self.inbox_len.fetch_add(1, Ordering::Relaxed);
                    (rpc, None)
                } else {
                    (rpc, Some("no-receiver"))
                }
            }
        };
        match dropped {
            None => self.world.record(Event::Deliver { at, from: env.from.0, to: self.me.0, kind, rpc }),
            Some(reason) => {
                self.world.reclassify_as_dropped(reason);
                self.world.record(Event::Drop { at, from: env.from.0, to: self.me.0, kind, reason });
            }
        }
    }
}
