//! The I/O shell that runs the Raft core ([`super::raft::Node`]) as a
//! service on simulated nodes, one replica per zone, and its client.
//!
//! Replica ([`serve`]): recovers the persisted term, vote and log from its
//! disk ([`super::storage`]), starts the core with an empty [`MetaState`]
//! (the core hands out the committed entries to apply again as it learns
//! the commit index), then runs one loop over a bounded event queue fed by
//! a ticker (the node's skewed [`sim::Clock`]) and the network inbox. Each
//! event is one [`Node::step`]; its outputs are carried out in order, and a
//! `Persist` is appended and synced before anything after it. A replica
//! whose disk holds a corrupt log, or whose disk fails a write, stops (it
//! stays down until restarted).
//!
//! Client ([`MetaClient`]): sends each request to the replica it believes
//! leads, follows `NotLeader` hints, backs off on `Busy`, and gives up after
//! [`CLIENT_ATTEMPTS_MAX`] attempts or [`ServiceConfig::op_deadline`].
//! Reads are linearizable through the core's `Read` (lease or ReadIndex) and
//! are retried freely. Each write carries a request id (client id drawn
//! from the node's seeded RNG, sequence number per write) in a
//! [`Command::Request`], which the state machine de-duplicates, so a write
//! is retried after a timeout too and still applies at most once. When the
//! budget runs out after some attempt may have reached a replica, the
//! outcome is [`ClientError::Unknown`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sim::net::{Inbox, Incoming, Net, NetError, RequestId};
use sim::time::{self, SimTime};
use sim::topology::NodeId;
use sim::world::NodeCtx;

use super::raft::{self, Input, Node, Output, ReplicaId};
use super::state::{Command, MetaState, Outcome};
use super::storage::Storage;

/// Client requests one replica holds waiting for an answer.
pub const CLIENT_PENDING_MAX: usize = 1024;
/// Attempts one client operation makes before giving up.
pub const CLIENT_ATTEMPTS_MAX: u32 = 64;
/// Most entries one `Scan` returns.
pub const SCAN_LIMIT_MAX: usize = 1024;

/// The message tag of the metadata protocol (1 and 2 are taken, 900 is the
/// bench's).
pub const META_TAG: u16 = 50;

/// Configuration shared by replicas and clients.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The replicas, one per zone; a replica's [`ReplicaId`] is its node id.
    pub replicas: Vec<NodeId>,
    pub raft: raft::Config,
    /// How often the replica ticks the core (at most half a heartbeat).
    pub tick: Duration,
    /// A replica drops a client request it could not answer within this
    /// (local time); the client has given up on it by then.
    pub pending_ttl: Duration,
    /// Client: timeout of one call.
    pub call_timeout: Duration,
    /// Client: pause before retrying after `Busy` or without a leader hint.
    pub retry_backoff: Duration,
    /// Client: an operation gives up after this long (model time).
    pub op_deadline: Duration,
    /// CPU time of one step of the Raft core (the control lane).
    pub step_cost: Duration,
}

impl ServiceConfig {
    pub fn new(replicas: Vec<NodeId>) -> ServiceConfig {
        ServiceConfig {
            replicas,
            raft: raft::Config::default(),
            tick: Duration::from_millis(10),
            pending_ttl: Duration::from_secs(2),
            call_timeout: Duration::from_millis(200),
            retry_backoff: Duration::from_millis(20),
            op_deadline: Duration::from_secs(3),
            step_cost: crate::cost::Costs::default().raft_step,
        }
    }
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Get { key: String },
    /// Up to `limit` (at most [`SCAN_LIMIT_MAX`]) entries whose key starts
    /// with `prefix`, in key order; linearizable like `Get`.
    Scan { prefix: String, limit: usize },
    /// A later page of a `Scan`: entries from key `from` on.
    ScanFrom { prefix: String, from: String, limit: usize },
    Write { command: Command },
    /// Whether the replica leads, and its term (for tests and operators).
    Status,
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Value(Option<Vec<u8>>),
    Entries(Vec<(String, Vec<u8>)>),
    Applied,
    CasFailed { current: Option<Vec<u8>> },
    TxnFailed { key: String, current: Option<Vec<u8>> },
    NotLeader { hint: Option<NodeId> },
    Busy,
    /// The write's log slot went to another term: it never applies.
    Lost,
    Status { leader: bool, term: u64, commit: u64 },
}

/// Everything on the metadata protocol's port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaMsg {
    Raft(raft::Message),
    Req(Request),
    Resp(Response),
}

impl sim::net::Message for MetaMsg {
    const TAG: u16 = META_TAG;
    fn kind(&self) -> &'static str {
        match self {
            MetaMsg::Raft(raft::Message::PreVote { .. }) => "meta-prevote",
            MetaMsg::Raft(raft::Message::PreVoteResp { .. }) => "meta-prevote-resp",
            MetaMsg::Raft(raft::Message::Vote { .. }) => "meta-vote",
            MetaMsg::Raft(raft::Message::VoteResp { .. }) => "meta-vote-resp",
            MetaMsg::Raft(raft::Message::Append { .. }) => "meta-append",
            MetaMsg::Raft(raft::Message::AppendResp { .. }) => "meta-append-resp",
            MetaMsg::Req(_) => "meta-req",
            MetaMsg::Resp(_) => "meta-resp",
        }
    }
}

enum ReadOf {
    Key(String),
    Prefix(String, String, usize),
}

enum Event {
    Tick,
    Net(Incoming<MetaMsg>),
}

struct PendingReq {
    from: NodeId,
    request: RequestId,
    /// What a read reads.
    read: Option<ReadOf>,
    arrived: SimTime,
    /// Index and term the write was appended at.
    accepted: Option<(u64, u64)>,
}

/// Why a replica stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("storage: {0}")]
    Storage(#[from] super::storage::StorageError),
    #[error("raft: {0}")]
    Config(#[from] raft::ConfigError),
    #[error("the core asked to apply index {got}, expected {want}")]
    ApplyOrder { got: u64, want: u64 },
}

/// Runs one replica until it crashes or fails; restarts run it again.
pub async fn serve(ctx: NodeCtx, cfg: ServiceConfig) {
    if let Err(e) = run_replica(&ctx, cfg).await {
        ctx.note(format!("meta replica stopped: {e}"));
    }
}

async fn run_replica(ctx: &NodeCtx, cfg: ServiceConfig) -> Result<(), ReplicaError> {
    let clock = ctx.clock();
    let (mut storage, rec) = Storage::recover(ctx.disk()).await?;
    ctx.note(format!(
        "meta recovered term {} log {} records {} torn {}",
        rec.state.term,
        rec.state.log.len(),
        rec.records,
        rec.torn_bytes
    ));
    let me: ReplicaId = ctx.id.0;
    let peers: Vec<ReplicaId> = cfg.replicas.iter().map(|n| n.0).filter(|&r| r != me).collect();
    let mut node = Node::new(me, &peers, cfg.raft.clone(), rec.state, ctx.rng("meta-raft"), clock.now())?;
    let (net, mut inbox): (Net<MetaMsg>, Inbox<MetaMsg>) = Net::bind(ctx).await;
    let cpu = ctx.cpu();

    // Ticks come from their own task through a `Notify` (a tick not yet
    // taken absorbs the next: they coalesce); messages are taken straight
    // from the inbox (bounded by `INBOX_MAX`), ticks first.
    let ticks = Arc::new(tokio::sync::Notify::new());
    let tick_ref = Arc::downgrade(&ticks);
    let tick_clock = clock.clone();
    let tick = cfg.tick;
    madsim::task::spawn(async move {
        loop {
            tick_clock.sleep(tick).await;
            let Some(t) = tick_ref.upgrade() else { return };
            t.notify_one();
        }
    });

    let mut shell = Shell {
        net,
        replicas: cfg.replicas.clone(),
        state: MetaState::new(),
        pending: BTreeMap::new(),
        by_index: BTreeMap::new(),
        next_id: 1,
        pending_ttl: cfg.pending_ttl,
    };
    loop {
        let ev = {
            let ticked = ticks.notified();
            let mut ticked = std::pin::pin!(ticked);
            std::future::poll_fn(|cx| {
                if ticked.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Event::Tick));
                }
                inbox.poll_recv(cx).map(|m| m.map(Event::Net))
            })
            .await
        };
        let Some(ev) = ev else { break };
        let now = clock.now();
        let input = match ev {
            Event::Tick => {
                shell.expire(now);
                Input::Tick
            }
            Event::Net(m) => match shell.admit(&node, now, m).await {
                Some(input) => input,
                None => continue,
            },
        };
        cpu.run_control(cfg.step_cost).await;
        let outs = node.step(now, input);
        shell.carry_out(&mut storage, outs).await?;
    }
    Ok(())
}

struct Shell {
    net: Net<MetaMsg>,
    replicas: Vec<NodeId>,
    state: MetaState,
    pending: BTreeMap<u64, PendingReq>,
    /// Appended writes by log index.
    by_index: BTreeMap<u64, u64>,
    next_id: u64,
    pending_ttl: Duration,
}

impl Shell {
    /// Turns a message into a core input, or answers it directly.
    async fn admit(&mut self, node: &Node, now: SimTime, m: Incoming<MetaMsg>) -> Option<Input> {
        match (m.msg, m.request) {
            (MetaMsg::Raft(msg), None) if self.replicas.contains(&m.from) => Some(Input::Message { from: m.from.0, msg }),
            (MetaMsg::Req(req), Some(request)) => {
                let (read, command) = match req {
                    Request::Status => {
                        let status = Response::Status { leader: node.is_leader(), term: node.term(), commit: node.commit_index() };
                        self.net.reply(m.from, request, MetaMsg::Resp(status)).await;
                        return None;
                    }
                    Request::Get { key } => (Some(ReadOf::Key(key)), None),
                    Request::Scan { prefix, limit } => (Some(ReadOf::Prefix(prefix, String::new(), limit.min(SCAN_LIMIT_MAX))), None),
                    Request::ScanFrom { prefix, from, limit } => (Some(ReadOf::Prefix(prefix, from, limit.min(SCAN_LIMIT_MAX))), None),
                    Request::Write { command } => (None, Some(command)),
                };
                if self.pending.len() >= CLIENT_PENDING_MAX {
                    self.net.reply(m.from, request, MetaMsg::Resp(Response::Busy)).await;
                    return None;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.pending.insert(id, PendingReq { from: m.from, request, read, arrived: now, accepted: None });
                Some(match command {
                    Some(command) => Input::Propose { id, command },
                    None => Input::Read { id },
                })
            }
            // Anything else (a stray response, raft from a non-replica) is dropped.
            _ => None,
        }
    }

    async fn answer(&mut self, id: u64, resp: Response) {
        if let Some(p) = self.pending.remove(&id) {
            if let Some((index, _)) = p.accepted {
                self.by_index.remove(&index);
            }
            self.net.reply(p.from, p.request, MetaMsg::Resp(resp)).await;
        }
    }

    /// Forgets requests older than the TTL (the client gave up on them).
    fn expire(&mut self, now: SimTime) {
        let ttl = self.pending_ttl;
        let old: Vec<u64> = self.pending.iter().filter(|(_, p)| p.arrived + ttl < now).map(|(&id, _)| id).collect();
        for id in old {
            if let Some(PendingReq { accepted: Some((index, _)), .. }) = self.pending.remove(&id) {
                self.by_index.remove(&index);
            }
        }
    }

    async fn carry_out(&mut self, storage: &mut Storage, outs: Vec<Output>) -> Result<(), ReplicaError> {
        for o in outs {
            match o {
                Output::Persist { term, vote, log } => storage.persist(term, vote, log.as_ref()).await?,
                Output::Send { to, msg } => self.net.send(NodeId(to), MetaMsg::Raft(msg)).await,
                Output::Accepted { id, index, term } => {
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.accepted = Some((index, term));
                        // An older write waiting at this index was overwritten.
                        if let Some(old) = self.by_index.insert(index, id) {
                            if old != id {
                                if let Some(p) = self.pending.remove(&old) {
                                    self.net.reply(p.from, p.request, MetaMsg::Resp(Response::Lost)).await;
                                }
                            }
                        }
                    }
                }
                Output::Apply { index, term, command } => {
                    let want = self.state.applied() + 1;
                    if index != want {
                        return Err(ReplicaError::ApplyOrder { got: index, want });
                    }
                    let outcome = self.state.apply(index, &command);
                    if let Some(id) = self.by_index.get(&index).copied() {
                        let same_term = self.pending.get(&id).and_then(|p| p.accepted).is_some_and(|(_, t)| t == term);
                        let resp = match (same_term, outcome) {
                            (false, _) => Response::Lost,
                            (true, Outcome::Done) => Response::Applied,
                            (true, Outcome::CasFailed { current }) => Response::CasFailed { current },
                            (true, Outcome::TxnFailed { key, current }) => Response::TxnFailed { key, current },
                        };
                        self.answer(id, resp).await;
                    }
                }
                Output::ReadReady { id, .. } => {
                    let resp = match self.pending.get(&id).and_then(|p| p.read.as_ref()) {
                        Some(ReadOf::Key(k)) => Response::Value(self.state.get(k).map(<[u8]>::to_vec)),
                        Some(ReadOf::Prefix(p, from, limit)) => Response::Entries(self.state.scan_from(p, from, *limit)),
                        None => Response::Value(None),
                    };
                    self.answer(id, resp).await;
                }
                Output::NotLeader { id, hint } => self.answer(id, Response::NotLeader { hint: hint.map(NodeId) }).await,
                Output::Busy { id, .. } => self.answer(id, Response::Busy).await,
            }
        }
        Ok(())
    }
}

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The write may or may not have applied: it reached a replica that did
    /// not answer in time.
    #[error("write outcome unknown")]
    Unknown,
    #[error("no leader answered within the retry budget")]
    Unavailable,
    #[error("unexpected response from a replica")]
    Protocol,
}

/// How long a client avoids a replica that did not answer a call (unless
/// every replica is avoided).
pub const SUSPECT_FOR: Duration = Duration::from_secs(1);

/// A client's idea of where the leader is.
#[derive(Debug, Default)]
struct Route {
    leader: Option<NodeId>,
    /// Round-robin position when no leader is known.
    next: usize,
    /// Replicas that timed out, avoided until then.
    suspect: BTreeMap<NodeId, SimTime>,
}

/// A client of the metadata store, bound on its own node.
pub struct MetaClient {
    net: Net<MetaMsg>,
    /// Keeps the binding alive; shared by the sessions of one pool.
    _inbox: std::sync::Arc<std::sync::Mutex<Inbox<MetaMsg>>>,
    cfg: ServiceConfig,
    /// Where requests go; shared by the sessions of one pool.
    route: std::sync::Arc<std::sync::Mutex<Route>>,
    /// This client's id for de-duplication, and its last write's sequence.
    client_id: u64,
    seq: u64,
}

impl MetaClient {
    pub async fn bind(ctx: &NodeCtx, cfg: ServiceConfig) -> MetaClient {
        let mut pool = MetaClient::bind_pool(ctx, cfg, 1).await;
        pool.pop().expect("a pool of one")
    }

    /// `n` (at least one) clients sharing one binding of this node, each
    /// its own de-duplication session, so that they may have a request
    /// out at once (a session has one at a time).
    pub async fn bind_pool(ctx: &NodeCtx, cfg: ServiceConfig, n: usize) -> Vec<MetaClient> {
        let (net, inbox) = Net::bind(ctx).await;
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(inbox));
        let mut rng = ctx.rng("meta-client");
        let route = std::sync::Arc::new(std::sync::Mutex::new(Route::default()));
        (0..n.max(1))
            .map(|_| MetaClient { net: net.clone(), _inbox: inbox.clone(), cfg: cfg.clone(), route: route.clone(), client_id: rng.random_range(1..u64::MAX), seq: 0 })
            .collect()
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        match self.op(Request::Get { key: key.to_string() }, false).await? {
            Response::Value(v) => Ok(v),
            _ => Err(ClientError::Protocol),
        }
    }

    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        self.write(Command::Put { key: key.to_string(), value: value.to_vec() }).await.map(|_| ())
    }

    pub async fn delete(&mut self, key: &str) -> Result<(), ClientError> {
        self.write(Command::Delete { key: key.to_string() }).await.map(|_| ())
    }

    /// Compare-and-set; `Outcome::CasFailed` carries the value found.
    pub async fn cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<Outcome, ClientError> {
        self.write(Command::Cas { key: key.to_string(), expected: expected.map(<[u8]>::to_vec), new: new.map(<[u8]>::to_vec) }).await
    }

    /// A multi-key transaction ([`Command::Txn`]); `Outcome::TxnFailed`
    /// names the first check that failed and the value found.
    pub async fn txn(&mut self, checks: Vec<(String, Option<Vec<u8>>)>, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<Outcome, ClientError> {
        self.write(Command::Txn { checks, writes }).await
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order
    /// (linearizable).
    pub async fn scan(&mut self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        match self.op(Request::Scan { prefix: prefix.to_string(), limit }, false).await? {
            Response::Entries(e) => Ok(e),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Every entry whose key starts with `prefix`, up to `max`, read in
    /// pages of [`SCAN_LIMIT_MAX`] (each page linearizable on its own:
    /// callers that need one snapshot check a version key around it).
    pub async fn scan_all(&mut self, prefix: &str, max: usize) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let from = match out.last() {
                // The smallest key after the last one.
                Some((k, _)) => format!("{k}\0"),
                None => String::new(),
            };
            let want = (max - out.len()).min(SCAN_LIMIT_MAX);
            let page = match self.op(Request::ScanFrom { prefix: prefix.to_string(), from, limit: want }, false).await? {
                Response::Entries(e) => e,
                _ => return Err(ClientError::Protocol),
            };
            let full = page.len() == want;
            out.extend(page);
            if !full || out.len() >= max {
                return Ok(out);
            }
        }
    }

    async fn write(&mut self, command: Command) -> Result<Outcome, ClientError> {
        self.seq += 1;
        let command = Command::Request { client: self.client_id, seq: self.seq, command: Box::new(command) };
        match self.op(Request::Write { command }, true).await? {
            Response::Applied => Ok(Outcome::Done),
            Response::CasFailed { current } => Ok(Outcome::CasFailed { current }),
            Response::TxnFailed { key, current } => Ok(Outcome::TxnFailed { key, current }),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Asks one replica for its status.
    pub async fn status(&self, replica: NodeId) -> Option<(bool, u64, u64)> {
        match self.net.call(replica, MetaMsg::Req(Request::Status), self.cfg.call_timeout).await {
            Ok(MetaMsg::Resp(Response::Status { leader, term, commit })) => Some((leader, term, commit)),
            _ => None,
        }
    }

    /// One write attempt at one replica, without redirects or retries (for
    /// probes that must reach a particular replica).
    pub async fn write_once(&self, replica: NodeId, command: Command) -> Result<Response, ClientError> {
        match self.net.call(replica, MetaMsg::Req(Request::Write { command }), self.cfg.call_timeout).await {
            Ok(MetaMsg::Resp(r)) => Ok(r),
            Ok(_) => Err(ClientError::Protocol),
            Err(_) => Err(ClientError::Unknown),
        }
    }

    /// The leader if known, else the next replica in turn that has not
    /// timed out lately (any, when all have).
    fn target(&mut self) -> NodeId {
        let now = time::now();
        let mut r = self.route.lock().expect("route lock");
        r.suspect.retain(|_, until| *until > now);
        if let Some(l) = r.leader {
            return l;
        }
        let n = self.cfg.replicas.len();
        let start = r.next;
        let pick = (0..n).map(|i| self.cfg.replicas[(start + i) % n]).position(|c| !r.suspect.contains_key(&c)).unwrap_or(0);
        r.next = start + pick + 1;
        self.cfg.replicas[(start + pick) % n]
    }

    fn set_leader(&self, leader: NodeId) {
        self.route.lock().expect("route lock").leader = Some(leader);
    }

    /// `replica` did not lead (`timed_out`: or answer at all).
    fn forget(&mut self, replica: NodeId, timed_out: bool) {
        let mut r = self.route.lock().expect("route lock");
        if r.leader == Some(replica) {
            r.leader = None;
        }
        if timed_out {
            r.suspect.insert(replica, time::now() + SUSPECT_FOR);
        }
    }

    async fn op(&mut self, req: Request, is_write: bool) -> Result<Response, ClientError> {
        let deadline = time::now() + self.cfg.op_deadline;
        let mut maybe_applied = false;
        for _ in 0..CLIENT_ATTEMPTS_MAX {
            if time::now() >= deadline {
                break;
            }
            let to = self.target();
            let r = self.net.call(to, MetaMsg::Req(req.clone()), self.cfg.call_timeout).await;
            match r {
                Ok(MetaMsg::Resp(resp)) => match resp {
                    Response::NotLeader { hint } => {
                        self.forget(to, false);
                        match hint.filter(|h| *h != to && self.cfg.replicas.contains(h)) {
                            Some(h) => self.set_leader(h),
                            None => time::sleep(self.cfg.retry_backoff).await,
                        }
                    }
                    Response::Busy | Response::Lost => time::sleep(self.cfg.retry_backoff).await,
                    Response::Status { .. } => return Err(ClientError::Protocol),
                    done => {
                        self.set_leader(to);
                        return Ok(done);
                    }
                },
                Ok(_) => return Err(ClientError::Protocol),
                Err(NetError::Timeout) => {
                    // Safe to retry: a write's request id makes it apply once.
                    self.forget(to, true);
                    maybe_applied |= is_write;
                }
                Err(NetError::TooManyPending) => time::sleep(self.cfg.retry_backoff).await,
            }
        }
        Err(if maybe_applied { ClientError::Unknown } else { ClientError::Unavailable })
    }
}
