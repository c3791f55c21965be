//! Typed messages between simulated nodes.
//!
//! Built on madsim's `Endpoint` `send_to_raw`/`recv_from_raw` (not its RPC
//! `call_timeout`, which leaks a mailbox entry per timeout). Every envelope
//! carries the model time at which it is due: the world decides at send time
//! whether the message vanishes (dead receiver, cut link, loss) and how long
//! it takes (link latency, jitter, latency spikes), and the receiver holds it
//! until it is due. madsim's own send and receive delays (about 2 µs of model
//! time, see [`crate::time`]) are thereby absorbed into the modeled latency.
//! A message whose link is cut while it is in flight vanishes on arrival.
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
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::log::Event;
use crate::time::{self, SimTime};
use crate::topology::NodeId;
use crate::world::{NodeCtx, World, BASE_PORT};

/// A message type of one protocol. Each type gets its own port and tag.
pub trait Message: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// Distinguishes protocols; also picks the port (`BASE_PORT + TAG`).
    const TAG: u16;
    /// A short name of the variant, for the event log and traces.
    fn kind(&self) -> &'static str;
}

/// Messages waiting in one node's inbox for one protocol.
pub const INBOX_MAX: usize = 8192;
/// Messages one endpoint may hold in flight, waiting until they are due.
pub const HELD_MAX: usize = 65_536;
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
    ep: madsim::net::Endpoint,
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
        let m = self.rx.recv().await;
        if m.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        m
    }
}

impl<M: Message> Net<M> {
    /// Binds protocol `M` on this node and starts its receive loop.
    pub async fn bind(ctx: &NodeCtx) -> (Net<M>, Inbox<M>) {
        let port = BASE_PORT + M::TAG;
        let ep = madsim::net::Endpoint::bind(World::addr(ctx.id, port))
            .await
            .unwrap_or_else(|e| panic!("bind of protocol tag {} on {} failed: {e} (two protocols share a tag?)", M::TAG, ctx.name()));
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox_len = Arc::new(AtomicUsize::new(0));
        let incarnation = ctx.world.incarnation(ctx.id);
        let shared = Arc::new(Shared {
            world: ctx.world.clone(),
            me: ctx.id,
            ep,
            pending: Mutex::new(Pending { waiters: BTreeMap::new(), deadlines: Default::default(), sweeper_target: None }),
            sweeper: tokio::sync::Notify::new(),
            next_id: AtomicU64::new(incarnation << 40),
            inbox: tx,
            inbox_len: inbox_len.clone(),
        });
        // The receive loop lives as long as the node's incarnation (a crash
        // drops it with every other task of the node). It holds early
        // envelopes in a map ordered by due time and races the next
        // receive against the earliest due time: one task per endpoint, no
        // task per message.
        madsim::task::spawn(receive_loop(shared.clone()));
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
                let env = Envelope { from: s.me, rpc, due, msg };
                // An error here means the receiver's socket is gone: the
                // message vanishes like any other to a dead node.
                let _ = s.ep.send_to_raw(World::addr(to, BASE_PORT + M::TAG), u64::from(M::TAG), Box::new(env)).await;
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

type RecvFuture = Pin<Box<dyn Future<Output = std::io::Result<(madsim::net::Payload, std::net::SocketAddr)>> + Send>>;

fn recv_once<M: Message>(s: Arc<Shared<M>>) -> RecvFuture {
    Box::pin(async move { s.ep.recv_from_raw(u64::from(M::TAG)).await })
}

/// Polls `first`, then `second`; `Some` with `first`'s output if it is
/// ready, `None` if only `second` is. `first` is borrowed, so an unfinished
/// receive is never dropped (madsim's mailbox would lose its message).
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

async fn receive_loop<M: Message>(s: Arc<Shared<M>>) {
    // (due, arrival sequence) -> envelope; the sequence keeps ties in
    // arrival order.
    let mut held: BTreeMap<(SimTime, u64), Envelope<M>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut recv = recv_once(s.clone());
    loop {
        let now = time::now();
        while let Some(entry) = held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            s.deliver(entry.remove());
        }
        let got = match held.keys().next() {
            None => Some((&mut recv).await),
            Some(&(due, _)) => {
                let sleep = time::sleep_until(due);
                let mut sleep = std::pin::pin!(sleep);
                Race { first: &mut recv, second: sleep.as_mut() }.await
            }
        };
        let Some(result) = got else { continue };
        recv = recv_once(s.clone());
        let Ok((payload, _)) = result else { return };
        let env = match payload.downcast::<Envelope<M>>() {
            Ok(env) => *env,
            Err(_) => {
                s.world.count_drop("malformed");
                continue;
            }
        };
        if env.due > time::now() {
            if held.len() >= HELD_MAX {
                s.world.count_drop("held-full");
                continue;
            }
            seq += 1;
            held.insert((env.due, seq), env);
        } else {
            s.deliver(env);
        }
    }
}

impl<M: Message> Shared<M> {
    fn deliver(&self, env: Envelope<M>) {
        let kind = env.msg.kind();
        let at = time::now();
        tracing::trace!(target: "sim::net", %at, from = env.from.0, kind, "deliver");
        if let Err(reason) = self.world.admit(env.from, self.me) {
            tracing::debug!(target: "sim::net", %at, from = env.from.0, kind, reason, "drop on arrival");
            self.world.record(Event::Drop { at, from: env.from.0, to: self.me.0, kind, reason });
            return;
        }
        // Admitted and counted as delivered; a message nobody can take is
        // reclassified as dropped.
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
