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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

struct Shared<M> {
    world: World,
    me: NodeId,
    ep: madsim::net::Endpoint,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<M>>>,
    next_id: AtomicU64,
    inbox: mpsc::Sender<Incoming<M>>,
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
    rx: mpsc::Receiver<Incoming<M>>,
    _m: PhantomData<M>,
}

impl<M> Inbox<M> {
    /// The next message; `None` only when the transport has shut down.
    pub async fn recv(&mut self) -> Option<Incoming<M>> {
        self.rx.recv().await
    }
}

impl<M: Message> Net<M> {
    /// Binds protocol `M` on this node and starts its receive loop.
    pub async fn bind(ctx: &NodeCtx) -> (Net<M>, Inbox<M>) {
        let port = BASE_PORT + M::TAG;
        let ep = madsim::net::Endpoint::bind(World::addr(ctx.id, port))
            .await
            .unwrap_or_else(|e| panic!("bind of protocol tag {} on {} failed: {e} (two protocols share a tag?)", M::TAG, ctx.name()));
        let (tx, rx) = mpsc::channel(INBOX_MAX);
        let incarnation = ctx.world.incarnation(ctx.id);
        let shared = Arc::new(Shared {
            world: ctx.world.clone(),
            me: ctx.id,
            ep,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(incarnation << 40),
            inbox: tx,
        });
        // The receive loop lives as long as the node's incarnation (a crash
        // drops it with every other task of the node).
        let s = shared.clone();
        madsim::task::spawn(async move {
            loop {
                let Ok((payload, _)) = s.ep.recv_from_raw(u64::from(M::TAG)).await else { return };
                let env = match payload.downcast::<Envelope<M>>() {
                    Ok(env) => *env,
                    Err(_) => {
                        s.world.count_drop("malformed");
                        continue;
                    }
                };
                if env.due > time::now() {
                    let s2 = s.clone();
                    madsim::task::spawn(async move {
                        time::sleep_until(env.due).await;
                        s2.deliver(env);
                    });
                } else {
                    s.deliver(env);
                }
            }
        });
        (Net { shared }, Inbox { rx, _m: PhantomData })
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
        {
            let mut pending = s.pending.lock().expect("pending lock");
            if pending.len() >= PENDING_CALLS_MAX {
                return Err(NetError::TooManyPending);
            }
            pending.insert(id, tx);
        }
        self.send_env(to, Rpc::Request(id), msg).await;
        match time::timeout(timeout, rx).await {
            Ok(Ok(m)) => Ok(m),
            _ => {
                s.pending.lock().expect("pending lock").remove(&id);
                Err(NetError::Timeout)
            }
        }
    }

    /// Calls waiting for a response (for tests of the no-leak promise).
    pub fn pending_calls(&self) -> usize {
        self.shared.pending.lock().expect("pending lock").len()
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
        let rpc = match env.rpc {
            Rpc::OneWay => 0,
            Rpc::Request(id) | Rpc::Response(id) => id,
        };
        match env.rpc {
            Rpc::Response(id) => {
                let waiter = self.pending.lock().expect("pending lock").remove(&id);
                match waiter {
                    Some(tx) => {
                        self.world.count_delivered();
                        self.world.record(Event::Deliver { at, from: env.from.0, to: self.me.0, kind, rpc });
                        let _ = tx.send(env.msg);
                    }
                    None => {
                        self.world.count_drop("late");
                        self.world.record(Event::Drop { at, from: env.from.0, to: self.me.0, kind, reason: "late" })
                    }
                }
            }
            Rpc::OneWay | Rpc::Request(_) => {
                let request = match env.rpc {
                    Rpc::Request(id) => Some(RequestId(id)),
                    _ => None,
                };
                match self.inbox.try_send(Incoming { from: env.from, msg: env.msg, request }) {
                    Ok(()) => {
                        self.world.count_delivered();
                        self.world.record(Event::Deliver { at, from: env.from.0, to: self.me.0, kind, rpc })
                    }
                    Err(_) => {
                        self.world.count_drop("inbox-full");
                        self.world.record(Event::Drop { at, from: env.from.0, to: self.me.0, kind, reason: "inbox-full" });
                    }
                }
            }
        }
    }
}
