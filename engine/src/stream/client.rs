//! The stream client: reads from any node ([`StreamClient`]) and the
//! namespace owner's writer ([`Namespace`]).
//!
//! **Appends.** Each stream of an open namespace has one writer task. Appends
//! queue (bounded by [`APPEND_QUEUE_MAX`] permits), are grouped into batches
//! of up to [`BATCH_BYTES_MAX`], and up to [`PIPELINE_MAX`] batches are in
//! flight at once, each sent to all three replicas of the open extent by one
//! task per replica (retried [`APPEND_ATTEMPTS_MAX`] times with the same
//! offset and bytes). A batch is acknowledged, in order, only when every
//! replica said it is durable. When a replica keeps failing or the extent
//! is full, the writer seals the extent at its own acknowledged length and
//! adds a new extent (one metadata Txn), then sends the unacknowledged
//! batches again to the new extent: their stream offsets do not change, and
//! their bytes past the seal in the old extent are never readable.
//!
//! **Placement** pings every storage node and picks, with the client's
//! seeded RNG, one node in each of three zones among those that answered and
//! did not fail a call recently; with fewer zones, distinct nodes spread
//! over the zones left (at most two per zone).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sim::net::{Inbox, Net, NetError};
use sim::time::{self, SimTime};
use sim::topology::{NodeId, ZoneId};
use sim::world::{NodeCtx, World};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::format::RECORD_DATA_MAX;
use super::*;
use crate::meta::service::{ClientError, MetaClient};
use crate::meta::state::Outcome;

/// A client of the stream layer, bound on its node. Cheap to clone.
#[derive(Clone)]
pub struct StreamClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    me: NodeId,
    world: World,
    net: Net<StreamMsg>,
    _inbox: std::sync::Mutex<Inbox<StreamMsg>>,
    /// Sessions of the metadata store: one request out each
    /// ([`META_SESSIONS`]); see [`StreamClient::meta`].
    meta: Vec<tokio::sync::Mutex<MetaClient>>,
    /// Round-robin position for waiting on a busy session.
    meta_next: std::sync::atomic::AtomicUsize,
    /// Opens and reads admitted and not yet done ([`Admission::meta`]).
    admitted_meta: Arc<std::sync::atomic::AtomicUsize>,
    /// Appends admitted and not yet answered ([`Admission::appends`]).
    admitted_appends: Arc<std::sync::atomic::AtomicUsize>,
    cfg: StreamConfig,
    rng: std::sync::Mutex<ChaCha8Rng>,
    /// Nodes to avoid until the given time (they failed a call).
    avoid: std::sync::Mutex<BTreeMap<NodeId, SimTime>>,
    /// The node's CPU, charged for file work ([`StreamClient::charge_table_write`]).
    cpu: sim::cpu::Cpu,
}

/// One admitted operation ([`StreamClient::admit_meta`],
/// [`StreamClient::admit_append`]); dropping it ends the admission.
struct Admitted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn epoch_bytes(e: u64) -> Vec<u8> {
    e.to_le_bytes().to_vec()
}

fn parse_epoch(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Three replicas for a new extent from `sets` of candidates, most
/// preferred first: the first set that spans as many zones as any set does
/// (at most three; at least two, or `None`: three replicas are never placed
/// in one zone). Within that set, one node in each zone in a seeded random
/// order, then second nodes in zones already used.
pub(crate) fn choose_replicas(sets: &[Vec<NodeId>], zone_of: impl Fn(NodeId) -> ZoneId, rng: &mut ChaCha8Rng) -> Option<Vec<NodeId>> {
    let reach = |set: &Vec<NodeId>| {
        let zones: BTreeSet<ZoneId> = set.iter().map(|&n| zone_of(n)).collect();
        if set.len() < 3 { 0 } else { zones.len().min(3) }
    };
    let best = sets.iter().map(reach).max().unwrap_or(0);
    if best < 2 {
        return None;
    }
    let set = sets.iter().find(|s| reach(s) == best)?;
    let mut by_zone: BTreeMap<ZoneId, Vec<NodeId>> = BTreeMap::new();
    for &n in set {
        by_zone.entry(zone_of(n)).or_default().push(n);
    }
    let mut zones: Vec<ZoneId> = by_zone.keys().copied().collect();
    // Fisher-Yates with the seeded RNG.
    for i in (1..zones.len()).rev() {
        let j = rng.random_range(0..=i);
        zones.swap(i, j);
    }
    let mut chosen: Vec<NodeId> = Vec::new();
    for round in 0..2 {
        for z in &zones {
            if chosen.len() == 3 {
                break;
            }
            let nodes = by_zone.get_mut(z).expect("zone listed");
            if nodes.is_empty() || (round == 0 && chosen.iter().any(|&c| zone_of(c) == *z)) {
                continue;
            }
            let k = rng.random_range(0..nodes.len());
            chosen.push(nodes.remove(k));
        }
    }
    (chosen.len() == 3).then_some(chosen)
}

impl StreamClient {
    /// Binds the stream protocol and a metadata client on this node (a node
    /// runs at most one of each).
    pub async fn bind(ctx: &NodeCtx, cfg: StreamConfig) -> StreamClient {
        let (net, inbox) = Net::bind(ctx).await;
        let meta = MetaClient::bind_pool(ctx, cfg.meta.clone(), META_SESSIONS).await;
        StreamClient {
            inner: Arc::new(ClientInner {
                me: ctx.id,
                world: ctx.world.clone(),
                net,
                _inbox: std::sync::Mutex::new(inbox),
                meta: meta.into_iter().map(tokio::sync::Mutex::new).collect(),
                meta_next: Default::default(),
                admitted_meta: Default::default(),
                admitted_appends: Default::default(),
                rng: std::sync::Mutex::new(ctx.rng("stream-client")),
                cfg,
                avoid: std::sync::Mutex::new(BTreeMap::new()),
                cpu: ctx.cpu(),
            }),
        }
    }

    pub fn config(&self) -> &StreamConfig {
        &self.inner.cfg
    }

    /// Charges this node's CPU for `bytes` written to an LSM table (a
    /// table server's flush or compaction; see `Costs::server_table_kib`).
    /// Background work is never refused: the LSM bounds how much of it
    /// runs at once.
    pub async fn charge_table_write(&self, bytes: usize) {
        self.inner.cpu.run_always(crate::cost::Costs::per_kib(self.inner.cfg.costs.server_table_kib, bytes)).await;
    }

    fn observer(&self) -> &StreamObserver {
        &self.inner.cfg.observer
    }

    fn avoid(&self, n: NodeId) {
        let until = time::now() + self.inner.cfg.avoid_for;
        self.inner.avoid.lock().expect("avoid lock").insert(n, until);
    }

    fn avoided(&self, n: NodeId) -> bool {
        self.inner.avoid.lock().expect("avoid lock").get(&n).is_some_and(|&t| t > time::now())
    }

    /// Replicas nearest first: healthy before avoided, own zone first, then
    /// by link latency, then by id.
    fn by_distance(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        let topo = self.inner.world.topology();
        let me = self.inner.me;
        let mine = topo.zone_of(me);
        let mut v = nodes.to_vec();
        v.sort_by_key(|&n| (self.avoided(n), topo.zone_of(n) != mine, topo.link(me, n).latency, n));
        v
    }

    /// Admits one open or read while fewer than [`Admission::meta`] are
    /// under way; refuses it with [`StreamError::Busy`] otherwise. The
    /// admission lasts as long as the returned guard.
    fn admit_meta(&self) -> Result<Option<Admitted>, StreamError> {
        let limit = self.inner.cfg.admission.map(|a| a.meta);
        self.admit(&self.inner.admitted_meta, limit, "opens and reads")
    }

    /// Admits one append while fewer than [`Admission::appends`] are
    /// queued or in flight, as [`StreamClient::admit_meta`] does.
    fn admit_append(&self) -> Result<Option<Admitted>, StreamError> {
        let limit = self.inner.cfg.admission.map(|a| a.appends);
        self.admit(&self.inner.admitted_appends, limit, "appends")
    }

    fn admit(&self, count: &Arc<std::sync::atomic::AtomicUsize>, limit: Option<usize>, what: &str) -> Result<Option<Admitted>, StreamError> {
        use std::sync::atomic::Ordering;
        let Some(limit) = limit else { return Ok(None) };
        let now = count.load(Ordering::Relaxed);
        if now >= limit {
            self.observer().with(|o| o.refused_busy += 1);
            return Err(StreamError::Busy(format!("stream client: {now} {what} under way (limit {limit})")));
        }
        count.store(now + 1, Ordering::Relaxed);
        Ok(Some(Admitted(count.clone())))
    }

    /// A free metadata session (the first, in order), or the next in
    /// round-robin order to wait for when all are busy.
    pub(crate) async fn meta(&self) -> tokio::sync::MutexGuard<'_, MetaClient> {
        for m in &self.inner.meta {
            if let Ok(g) = m.try_lock() {
                return g;
            }
        }
        let i = self.inner.meta_next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.inner.meta.len();
        self.inner.meta[i].lock().await
    }

    pub(crate) async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StreamError> {
        Ok(self.meta().await.get(key).await?)
    }

    async fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StreamError> {
        Ok(self.meta().await.scan(prefix, STREAMS_MAX).await?)
    }

    pub(crate) async fn meta_txn(&self, checks: Vec<(String, Option<Vec<u8>>)>, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<Outcome, ClientError> {
        self.meta().await.txn(checks, writes).await
    }

    pub(crate) async fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        self.meta().await.put(key, value).await
    }

    /// Every entry under `prefix`, up to `limit`, read in pages.
    pub(crate) async fn meta_scan_all(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        self.meta().await.scan_all(prefix, limit).await
    }

    pub(crate) async fn meta_status(&self, replica: NodeId) -> Option<(bool, u64, u64)> {
        self.meta().await.status(replica).await
    }

    /// Pings every storage node at once: the suspect extents each node
    /// that answered listed, `None` for a node that did not answer.
    pub(crate) async fn ping_all(&self) -> BTreeMap<NodeId, Option<Vec<ExtentId>>> {
        let answers = self.call_all(&self.inner.cfg.storage, StreamMsg::Ping, self.inner.cfg.call_timeout).await;
        answers
            .into_iter()
            .map(|(n, r)| {
                let suspect = match r {
                    Some(StreamMsg::Pong { suspect }) => Some(suspect),
                    _ => None,
                };
                (n, suspect)
            })
            .collect()
    }

    pub(crate) async fn call(&self, node: NodeId, msg: StreamMsg, timeout: Duration) -> Option<StreamMsg> {
        self.inner.net.call(node, msg, timeout).await.ok()
    }

    pub(crate) async fn send(&self, node: NodeId, msg: StreamMsg) {
        self.inner.net.send(node, msg).await
    }

    /// The stream's metadata, `None` if it does not exist.
    pub async fn stream_meta(&self, ns: &str, name: &str) -> Result<Option<StreamMeta>, StreamError> {
        let key = stream_key(ns, name);
        match self.meta_get(&key).await? {
            None => Ok(None),
            Some(b) => StreamMeta::decode(&b).map(Some).ok_or(StreamError::BadMeta(key)),
        }
    }

    /// Every stream of a namespace with its metadata, by name.
    pub async fn list_streams(&self, ns: &str) -> Result<Vec<(String, StreamMeta)>, StreamError> {
        let prefix = stream_key(ns, "");
        let mut out = Vec::new();
        for (k, v) in self.meta_scan(&prefix).await? {
            let m = StreamMeta::decode(&v).ok_or_else(|| StreamError::BadMeta(k.clone()))?;
            out.push((k[prefix.len()..].to_string(), m));
        }
        Ok(out)
    }

    /// Reads committed bytes of a stream from any node: up to `len` bytes
    /// at `offset`, fewer at the committed end.
    pub async fn read(&self, ns: &str, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StreamError> {
        let _admitted = self.admit_meta()?;
        let meta = self.stream_meta(ns, name).await?.ok_or_else(|| StreamError::NotFound(name.to_string()))?;
        self.read_meta(&meta, offset, len, None).await
    }

    /// Reads with known metadata; `hint` is the owner's acknowledged length
    /// of the open (last) extent.
    pub(crate) async fn read_meta(&self, meta: &StreamMeta, offset: u64, len: u64, hint: Option<u64>) -> Result<Vec<u8>, StreamError> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        let mut base = 0u64;
        let last = meta.extents.len().saturating_sub(1);
        for (i, e) in meta.extents.iter().enumerate() {
            let pos = offset + out.len() as u64;
            if pos >= end {
                break;
            }
            let (limit, exact) = match e.sealed_len {
                Some(l) => (Some(l), true),
                None if i == last => (hint, hint.is_some()),
                None => return Err(StreamError::BadMeta(format!("extent {} open before the last", e.id))),
            };
            if let Some(l) = limit {
                if pos >= base + l {
                    base += l;
                    continue;
                }
            }
            let mut at = pos - base;
            let stop = limit.map_or(end - base, |l| l.min(end - base));
            let mut chunk = READ_BYTES_MAX;
            while at < stop {
                let want = (stop - at).min(chunk);
                let data = match self.read_chunk(e, at, want, limit, exact).await {
                    // Every replica timed out: ask for less at a time (a
                    // replica busy with a long queue answers a small read
                    // sooner), down to `READ_BYTES_MIN`.
                    Err(StreamError::Unavailable(_)) if chunk > READ_BYTES_MIN => {
                        chunk = (chunk / 4).max(READ_BYTES_MIN);
                        continue;
                    }
                    r => r?,
                };
                let got = data.len() as u64;
                out.extend_from_slice(&data);
                at += got;
                if got < want {
                    // A short read of the open extent: the committed end.
                    return Ok(out);
                }
            }
            match e.sealed_len {
                Some(l) => base += l,
                None => break,
            }
        }
        Ok(out)
    }

    /// One chunk of one extent, from the nearest good replica. With
    /// `exact`, a replica answering fewer than `want` bytes is short.
    /// `Unavailable` when every replica timed out; otherwise `Busy` when
    /// one refused it for lack of capacity, `Unavailable` when one timed
    /// out, and `NoGoodReplica` only when every one answered bad.
    async fn read_chunk(&self, e: &ExtentMeta, offset: u64, want: u64, limit: Option<u64>, exact: bool) -> Result<Vec<u8>, StreamError> {
        let mut bad = Vec::new();
        let mut timeouts = 0;
        let mut busy = 0;
        for node in self.by_distance(&e.replicas) {
            let msg = StreamMsg::Read { extent: e.id.clone(), offset, len: want, limit };
            match self.inner.net.call(node, msg, self.inner.cfg.call_timeout).await {
                Ok(StreamMsg::Data { data, crc }) if crc32fast::hash(&data) == crc && data.len() as u64 <= want => {
                    if exact && (data.len() as u64) < want {
                        bad.push(node);
                        self.observer().read_fell_back(time::now());
                        continue;
                    }
                    if let (Some(len), false) = (e.sealed_len, bad.is_empty()) {
                        for b in bad {
                            self.spawn_repair(b, e.id.clone(), len, node, e.replicas.clone());
                        }
                    }
                    return Ok(data);
                }
                Ok(StreamMsg::Data { .. }) | Ok(StreamMsg::Err(ReplicaError::Corrupt)) => {
                    self.observer().with(|o| o.corrupt_replicas_detected += 1);
                    self.observer().read_fell_back(time::now());
                    bad.push(node);
                }
                // The open extent's replica has not seen an append yet.
                Ok(StreamMsg::Err(ReplicaError::NotFound)) if !exact && limit.is_none() => return Ok(Vec::new()),
                Ok(StreamMsg::Err(ReplicaError::NotFound)) => {
                    self.observer().read_fell_back(time::now());
                    bad.push(node);
                }
                Ok(StreamMsg::Err(ReplicaError::Busy)) => {
                    self.observer().read_fell_back(time::now());
                    busy += 1;
                }
                Ok(_) => self.observer().read_fell_back(time::now()),
                Err(_) => {
                    self.avoid(node);
                    self.observer().read_fell_back(time::now());
                    timeouts += 1;
                }
            }
        }
        // No good replica only when none could have been: a busy or
        // silent replica may hold the bytes.
        if timeouts == e.replicas.len() {
            return Err(StreamError::Unavailable(format!("every replica of extent {} timed out", e.id)));
        }
        if busy > 0 {
            return Err(StreamError::Busy(format!("extent {}: {busy} replicas refused the read, busy, {timeouts} timed out, {} bad", e.id, bad.len())));
        }
        if timeouts > 0 {
            return Err(StreamError::Unavailable(format!("extent {}: {timeouts} replicas timed out, {} bad", e.id, bad.len())));
        }
        Err(StreamError::NoGoodReplica(e.id.clone()))
    }

    /// Reads `[0, len)` of an extent from one replica only, checked (for
    /// invariant checks and tools); a short replica is an error.
    pub async fn read_replica(&self, node: NodeId, extent: &str, len: u64) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while (out.len() as u64) < len {
            let at = out.len() as u64;
            let want = (len - at).min(READ_BYTES_MAX);
            let msg = StreamMsg::Read { extent: extent.to_string(), offset: at, len: want, limit: Some(len) };
            match self.inner.net.call(node, msg, self.inner.cfg.call_timeout).await {
                Ok(StreamMsg::Data { data, crc }) if crc32fast::hash(&data) == crc && data.len() as u64 == want => out.extend_from_slice(&data),
                Ok(StreamMsg::Data { data, .. }) => return Err(StreamError::Unavailable(format!("replica short or corrupt at {} (+{})", at, data.len()))),
                Ok(other) => return Err(StreamError::Unavailable(format!("replica answered {other:?}"))),
                Err(e) => return Err(StreamError::Unavailable(e.to_string())),
            }
        }
        Ok(out)
    }

    /// Asks replica `bad` to copy the sealed extent from `good` (then the
    /// other replicas) and swap it in.
    fn spawn_repair(&self, bad: NodeId, extent: ExtentId, len: u64, good: NodeId, all: Vec<NodeId>) {
        let net = self.inner.net.clone();
        let timeout = self.inner.cfg.call_timeout * 20;
        let mut sources = vec![good];
        sources.extend(all.into_iter().filter(|&n| n != good && n != bad));
        // The node counts the repair (`repairs`) once it swapped the copy in.
        madsim::task::spawn(async move {
            let _ = net.call(bad, StreamMsg::Repair { extent, len, sources }, timeout).await;
        });
    }

    /// Calls `msg` on every node at once; the answers (or `None`) by node.
    async fn call_all(&self, nodes: &[NodeId], msg: StreamMsg, timeout: Duration) -> BTreeMap<NodeId, Option<StreamMsg>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for &n in nodes {
            let (net, msg, tx) = (self.inner.net.clone(), msg.clone(), tx.clone());
            madsim::task::spawn(Box::pin(async move {
                let r = net.call(n, msg, timeout).await.ok();
                let _ = tx.send((n, r));
            }));
        }
        drop(tx);
        let mut out = BTreeMap::new();
        while let Some((n, r)) = rx.recv().await {
            out.insert(n, r);
        }
        out
    }

    /// Three storage nodes for a new extent (see the module doc).
    async fn place(&self, exclude: &BTreeSet<NodeId>) -> Result<Vec<NodeId>, StreamError> {
        // A short timeout: placement waits for the slowest ping, and a dead
        // node never answers.
        let answers = self.call_all(&self.inner.cfg.storage, StreamMsg::Ping, self.inner.cfg.ping_timeout).await;
        let live: Vec<NodeId> = answers.iter().filter(|(_, r)| matches!(r, Some(StreamMsg::Pong { .. }))).map(|(&n, _)| n).collect();
        for (&n, r) in &answers {
            if r.is_none() {
                self.avoid(n);
            }
        }
        // Most preferred first: healthy and not excluded, then not
        // excluded, then anything that answered.
        let sets = [
            live.iter().copied().filter(|n| !exclude.contains(n) && !self.avoided(*n)).collect::<Vec<_>>(),
            live.iter().copied().filter(|n| !exclude.contains(n)).collect(),
            live.clone(),
        ];
        let topo = self.inner.world.topology();
        let mut rng = self.inner.rng.lock().expect("rng lock");
        choose_replicas(&sets, |n| topo.zone_of(n), &mut rng)
            .ok_or_else(|| StreamError::Unavailable(format!("{} storage nodes answered, in too few zones for three replicas", live.len())))
    }

    /// Becomes the owner of namespace `ns`: bumps its epoch, then fences and
    /// seals the open extent of every stream in it.
    pub async fn open_namespace(&self, ns: &str) -> Result<Namespace, StreamError> {
        if ns.is_empty() || ns.contains('/') {
            return Err(StreamError::Invalid(format!("namespace name {ns:?}")));
        }
        let _admitted = self.admit_meta()?;
        let key = ns_key(ns);
        let mut epoch = None;
        for _ in 0..META_ATTEMPTS_MAX {
            let cur = self.meta_get(&key).await?;
            let n = match &cur {
                None => 0,
                Some(b) => parse_epoch(b).ok_or_else(|| StreamError::BadMeta(key.clone()))?,
            };
            match self.meta().await.cas(&key, cur.as_deref(), Some(&epoch_bytes(n + 1))).await {
                Ok(Outcome::Done) => {
                    epoch = Some(n + 1);
                    break;
                }
                Ok(_) | Err(ClientError::Unknown) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let epoch = epoch.ok_or_else(|| StreamError::Unavailable("could not bump the namespace epoch".into()))?;
        let inner = Arc::new(NsInner {
            client: self.clone(),
            ns: ns.to_string(),
            epoch,
            deposed: AtomicBool::new(false),
            next_extent: AtomicU64::new(0),
            streams: std::sync::Mutex::new(BTreeMap::new()),
        });
        // Every stream's open extent is sealed at once: with a replica down,
        // each seal waits out a call timeout.
        let names: Vec<String> = self.list_streams(ns).await?.into_iter().map(|(n, _)| n).collect();
        let fenced = crate::join::join_all(names.iter().map(|name| self.fence_stream(ns, name, epoch)).collect()).await;
        for (name, f) in names.iter().zip(fenced) {
            let (meta, bytes) = f?;
            inner.install(name, meta, bytes);
        }
        Ok(Namespace { inner })
    }

    /// Fences and seals the stream's open extent, if any; returns the
    /// metadata as stored.
    async fn fence_stream(&self, ns: &str, name: &str, epoch: u64) -> Result<(StreamMeta, Vec<u8>), StreamError> {
        let key = stream_key(ns, name);
        // The seal once made: the open extent (id and replicas), its sealed
        // length and the replicas the seal did not hear from. A metadata
        // write that lost to another one (the manager moving a replica of
        // a sealed extent) takes the metadata it found and writes the same
        // seal again at once, without fencing again: while the open extent
        // is the same, the fence stands.
        let mut sealed: Option<(ExtentId, Vec<NodeId>, u64, Vec<NodeId>)> = None;
        let mut found: Option<Vec<u8>> = None;
        for _ in 0..META_ATTEMPTS_MAX {
            let bytes = match found.take() {
                Some(b) => b,
                None => match self.meta_get(&key).await? {
                    Some(b) => b,
                    None => return Err(StreamError::NotFound(name.to_string())),
                },
            };
            let mut meta = StreamMeta::decode(&bytes).ok_or_else(|| StreamError::BadMeta(key.clone()))?;
            let Some(last) = meta.extents.last_mut().filter(|e| e.sealed_len.is_none()) else { return Ok((meta, bytes)) };
            let (len, missed) = match &sealed {
                Some((id, replicas, len, missed)) if *id == last.id && *replicas == last.replicas => (*len, missed.clone()),
                _ => {
                    let (len, answered) = self.fence_extent(last, epoch).await?;
                    // Replicas the seal did not wait for may hold fewer
                    // bytes than the extent now has (appends that reached
                    // only the others).
                    let missed: Vec<NodeId> = last.replicas.iter().copied().filter(|r| answered.get(r).is_none_or(|&(l, _)| l < len)).collect();
                    sealed = Some((last.id.clone(), last.replicas.clone(), len, missed.clone()));
                    (len, missed)
                }
            };
            last.sealed_len = Some(len);
            let extent = last.id.clone();
            let new = meta.encode();
            let checks = vec![(ns_key(ns), Some(epoch_bytes(epoch))), (key.clone(), Some(bytes.clone()))];
            match self.meta_txn(checks, vec![(key.clone(), Some(new.clone()))]).await {
                Ok(Outcome::Done) => {
                    self.observer().with(|o| o.seals.push((time::now(), SealCause::OwnerChange)));
                    if !missed.is_empty() {
                        madsim::task::spawn(self.clone().settle(extent, len, missed));
                    }
                    return Ok((meta, new));
                }
                Ok(Outcome::TxnFailed { key: k, .. }) if k == ns_key(ns) => return Err(StreamError::Fenced),
                Ok(Outcome::TxnFailed { key: k, current }) if k == key => found = current,
                Ok(_) | Err(ClientError::Unknown) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StreamError::Unavailable(format!("could not seal stream {name}")))
    }

    /// Tells the replicas of an extent sealed at `len` that the seal did
    /// not hear from (`StreamMsg::Settled`) what it was sealed at, until
    /// each answers or [`SETTLE_ATTEMPTS_MAX`] rounds passed; one that
    /// holds less lists itself suspect for the manager's repair. Best
    /// effort: a replica out of reach for longer is found short by the next
    /// reader that names the length, or by the end-of-run audit.
    async fn settle(self, extent: ExtentId, len: u64, mut missed: Vec<NodeId>) {
        let timeout = self.inner.cfg.call_timeout;
        for _ in 0..SETTLE_ATTEMPTS_MAX {
            let answers = self.call_all(&missed, StreamMsg::Settled { extent: extent.clone(), len }, timeout).await;
            missed.retain(|n| !matches!(answers.get(n), Some(Some(StreamMsg::Done))));
            if missed.is_empty() {
                return;
            }
            time::sleep(timeout).await;
        }
    }

    /// Sends `Seal` to the extent's replicas until at least one intact
    /// replica answers; the minimum durable length over the intact ones
    /// that answered (see [`seal_length`]), and the answers.
    async fn fence_extent(&self, e: &ExtentMeta, epoch: u64) -> Result<(u64, BTreeMap<NodeId, (u64, bool)>), StreamError> {
        let deadline = time::now() + self.inner.cfg.seal_deadline;
        let mut answered: BTreeMap<NodeId, (u64, bool)> = BTreeMap::new();
        for _ in 0..SEAL_ROUNDS_MAX {
            let answers = self.call_all(&e.replicas, StreamMsg::Seal { extent: e.id.clone(), epoch }, self.inner.cfg.call_timeout).await;
            for (&n, r) in &answers {
                match r {
                    Some(StreamMsg::SealedAt { len, intact }) => {
                        answered.insert(n, (*len, *intact));
                    }
                    Some(StreamMsg::Err(ReplicaError::Fenced { fence })) if *fence > epoch => return Err(StreamError::Fenced),
                    _ => {}
                }
            }
            if let Some(l) = seal_length(&answered, e.replicas.len()) {
                return Ok((l, answered));
            }
            if time::now() >= deadline {
                break;
            }
            time::sleep(self.inner.cfg.call_timeout).await;
        }
        Err(StreamError::Unavailable(format!("no replica of extent {} answered the seal", e.id)))
    }
}

/// The length to seal an extent at from its replicas' answers to `Seal`
/// (durable length, intact) by node, out of `replicas`: the minimum over
/// the intact ones. Every acknowledged byte was synced by every replica, so
/// an intact replica's durable length is at least the acknowledged length,
/// and so is the minimum. A replica that is not intact may have lost
/// acknowledged bytes (a bit flip at rest that its recovery could not tell
/// from a torn tail, a damaged record, an unreadable file), so its length
/// bounds nothing: sealing there would drop acknowledged bytes, and the
/// next owner would hand their offsets out again. Only when every replica
/// answered and none is intact is the minimum over all taken: the best
/// left once every copy lost its tail. `None`: wait for more answers.
pub fn seal_length(answers: &BTreeMap<NodeId, (u64, bool)>, replicas: usize) -> Option<u64> {
    let intact = answers.values().filter(|(_, i)| *i).map(|(l, _)| *l).min();
    if intact.is_some() {
        return intact;
    }
    if answers.len() >= replicas {
        return answers.values().map(|(l, _)| *l).min();
    }
    None
}

/// An open namespace: this client is its owner at `epoch`. Cheap to clone.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<NsInner>,
}

struct NsInner {
    client: StreamClient,
    ns: String,
    epoch: u64,
    deposed: AtomicBool,
    next_extent: AtomicU64,
    streams: std::sync::Mutex<BTreeMap<String, Arc<StreamHandle>>>,
}

/// What the owner knows of one stream.
#[derive(Clone, Debug)]
struct View {
    meta: StreamMeta,
    /// Acknowledged length of the stream.
    len: u64,
    /// Acknowledged length of the open (last) extent, if there is one.
    open_committed: Option<u64>,
}

struct StreamHandle {
    tx: mpsc::UnboundedSender<WEvent>,
    permits: Arc<Semaphore>,
    view: std::sync::Mutex<View>,
}

impl NsInner {
    fn install(self: &Arc<Self>, name: &str, meta: StreamMeta, bytes: Vec<u8>) -> Arc<StreamHandle> {
        let len = meta.base_of(meta.extents.len());
        let (tx, rx) = mpsc::unbounded_channel();
        let h = Arc::new(StreamHandle {
            tx: tx.clone(),
            permits: Arc::new(Semaphore::new(APPEND_QUEUE_MAX)),
            view: std::sync::Mutex::new(View { meta: meta.clone(), len, open_committed: None }),
        });
        let w = Writer {
            ns: self.clone(),
            name: name.to_string(),
            key: stream_key(&self.ns, name),
            handle: Arc::downgrade(&h),
            meta,
            meta_bytes: bytes,
            open: None,
            must_switch: false,
            inflight: VecDeque::new(),
            queued: VecDeque::new(),
            failed: BTreeSet::new(),
            fenced: false,
            gen: 0,
            next_seq: 0,
            tx,
            commit_sent: 0,
            zone_back: false,
        };
        madsim::task::spawn(w.run(rx));
        self.streams.lock().expect("streams lock").insert(name.to_string(), h.clone());
        h
    }

    fn handle(&self, name: &str) -> Result<Arc<StreamHandle>, StreamError> {
        self.streams.lock().expect("streams lock").get(name).cloned().ok_or_else(|| StreamError::NotFound(name.to_string()))
    }

    fn check(&self) -> Result<(), StreamError> {
        if self.deposed.load(Ordering::Relaxed) {
            Err(StreamError::Fenced)
        } else {
            Ok(())
        }
    }

    fn fenced(&self) {
        if !self.deposed.swap(true, Ordering::Relaxed) {
            self.client.inner.world.note(self.client.inner.me, format!("namespace {} owner at epoch {} fenced", self.ns, self.epoch));
        }
    }
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.inner.ns
    }

    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// Whether a newer owner fenced this one.
    pub fn is_deposed(&self) -> bool {
        self.inner.deposed.load(Ordering::Relaxed)
    }

    pub fn client(&self) -> &StreamClient {
        &self.inner.client
    }

    /// The streams and their acknowledged lengths, from memory.
    pub fn streams(&self) -> Vec<(String, u64)> {
        let s = self.inner.streams.lock().expect("streams lock");
        s.iter().map(|(n, h)| (n.clone(), h.view.lock().expect("view lock").len)).collect()
    }

    /// A stream's acknowledged length, from memory.
    pub fn len(&self, name: &str) -> Option<u64> {
        let h = self.inner.handle(name).ok()?;
        let len = h.view.lock().expect("view lock").len;
        Some(len)
    }

    /// Creates an empty stream.
    pub async fn create(&self, name: &str) -> Result<(), StreamError> {
        self.inner.check()?;
        if self.inner.handle(name).is_ok() {
            return Err(StreamError::AlreadyExists(name.to_string()));
        }
        let key = stream_key(&self.inner.ns, name);
        let bytes = StreamMeta::default().encode();
        let checks = vec![(ns_key(&self.inner.ns), Some(epoch_bytes(self.inner.epoch))), (key.clone(), None)];
        for _ in 0..META_ATTEMPTS_MAX {
            match self.inner.client.meta_txn(checks.clone(), vec![(key.clone(), Some(bytes.clone()))]).await {
                Ok(Outcome::Done) => break,
                Ok(Outcome::TxnFailed { key: k, current }) => {
                    if k != key {
                        self.inner.fenced();
                        return Err(StreamError::Fenced);
                    }
                    // An earlier attempt of ours may have applied.
                    if current.as_deref() == Some(&bytes[..]) && self.inner.handle(name).is_err() {
                        break;
                    }
                    return Err(StreamError::AlreadyExists(name.to_string()));
                }
                Ok(Outcome::CasFailed { .. }) => return Err(StreamError::Meta(ClientError::Protocol)),
                Err(ClientError::Unknown) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.inner.install(name, StreamMeta::default(), bytes);
        Ok(())
    }

    /// Removes a stream (its metadata, then its replicas).
    pub async fn remove(&self, name: &str) -> Result<(), StreamError> {
        self.inner.check()?;
        let h = self.inner.handle(name)?;
        let (tx, rx) = oneshot::channel();
        h.tx.send(WEvent::Remove { reply: tx }).map_err(|_| StreamError::WriterGone)?;
        let r = rx.await.map_err(|_| StreamError::WriterGone)?;
        if r.is_ok() {
            self.inner.streams.lock().expect("streams lock").remove(name);
        }
        r
    }

    /// Appends `data` to the stream; returns its stream offset once all
    /// three replicas hold it on disk.
    pub async fn append(&self, name: &str, data: &[u8]) -> Result<u64, StreamError> {
        self.inner.check()?;
        if data.is_empty() || data.len() > RECORD_DATA_MAX as usize {
            return Err(StreamError::Invalid(format!("append of {} bytes", data.len())));
        }
        let h = self.inner.handle(name)?;
        let _admitted = self.inner.client.admit_append()?;
        let permit = h.permits.clone().acquire_owned().await.map_err(|_| StreamError::WriterGone)?;
        let (tx, rx) = oneshot::channel();
        h.tx.send(WEvent::Append { data: data.to_vec(), reply: tx, permit, at: time::now() }).map_err(|_| StreamError::WriterGone)?;
        rx.await.map_err(|_| StreamError::WriterGone)?
    }

    /// Reads acknowledged bytes of the stream.
    pub async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StreamError> {
        let h = self.inner.handle(name)?;
        let v = h.view.lock().expect("view lock").clone();
        let len = len.min(v.len.saturating_sub(offset));
        if len == 0 {
            return Ok(Vec::new());
        }
        self.inner.client.read_meta(&v.meta, offset, len, Some(v.open_committed.unwrap_or(0))).await
    }
}

type Reply = oneshot::Sender<Result<u64, StreamError>>;

enum WEvent {
    Append { data: Vec<u8>, reply: Reply, permit: OwnedSemaphorePermit, at: SimTime },
    Ack { gen: u64, seq: u64, node: NodeId, result: AckResult },
    Remove { reply: oneshot::Sender<Result<(), StreamError>> },
    /// A storage node of a zone the open extent (of generation `gen`)
    /// misses answered.
    ZoneBack { gen: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckResult {
    Durable,
    Fenced,
    Failed,
}

struct Req {
    len: usize,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
    at: SimTime,
}

struct Batch {
    seq: u64,
    /// Offset in the open extent.
    offset: u64,
    data: Arc<Vec<u8>>,
    reqs: Vec<Req>,
    acked: BTreeSet<NodeId>,
    sent: SimTime,
}

struct OpenExt {
    index: usize,
    id: ExtentId,
    replicas: Vec<NodeId>,
    /// Next offset to assign.
    next: u64,
    /// Acknowledged length.
    committed: u64,
    /// Stream offset of the extent's start.
    base: u64,
    /// Cleared when the writer moves on: stops the watch of a missing zone
    /// ([`Writer::watch_zones`]).
    watching: Arc<AtomicBool>,
}

struct Writer {
    ns: Arc<NsInner>,
    name: String,
    key: String,
    handle: std::sync::Weak<StreamHandle>,
    meta: StreamMeta,
    meta_bytes: Vec<u8>,
    open: Option<OpenExt>,
    /// The open extent must be sealed before anything else is sent.
    must_switch: bool,
    inflight: VecDeque<Batch>,
    queued: VecDeque<(Vec<u8>, Req)>,
    /// Replicas that failed since the last switch.
    failed: BTreeSet<NodeId>,
    fenced: bool,
    gen: u64,
    next_seq: u64,
    tx: mpsc::UnboundedSender<WEvent>,
    commit_sent: u64,
    /// A missing zone answers again: move on to a new extent.
    zone_back: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WEvent>) {
        while let Some(ev) = rx.recv().await {
            let mut evs = vec![ev];
            while let Ok(ev) = rx.try_recv() {
                evs.push(ev);
            }
            for ev in evs {
                if let Some(done) = self.on(ev).await {
                    if done {
                        return;
                    }
                }
            }
            self.pump().await;
        }
    }

    fn client(&self) -> &StreamClient {
        &self.ns.client
    }

    /// Handles one event; `Some(true)` when the writer should stop.
    async fn on(&mut self, ev: WEvent) -> Option<bool> {
        match ev {
            WEvent::Append { data, reply, permit, at } => {
                let req = Req { len: data.len(), reply, _permit: permit, at };
                self.queued.push_back((data, req));
            }
            WEvent::Ack { gen, seq, node, result } => {
                if gen != self.gen {
                    return None;
                }
                match result {
                    AckResult::Durable => {
                        if let Some(b) = self.inflight.iter_mut().find(|b| b.seq == seq) {
                            b.acked.insert(node);
                        }
                    }
                    AckResult::Fenced => {
                        self.client().observer().with(|o| o.fenced_appends_rejected += 1);
                        self.fenced = true;
                    }
                    AckResult::Failed => {
                        self.client().avoid(node);
                        self.failed.insert(node);
                    }
                }
            }
            WEvent::ZoneBack { gen } => {
                if gen == self.gen {
                    self.zone_back = true;
                }
            }
            WEvent::Remove { reply } => {
                let r = self.remove().await;
                let stop = r.is_ok();
                let _ = reply.send(r);
                if stop {
                    self.fail_all(StreamError::NotFound(self.name.clone()));
                }
                return Some(stop);
            }
        }
        None
    }

    fn fail_all(&mut self, e: StreamError) {
        for b in self.inflight.drain(..) {
            for r in b.reqs {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
        for (_, r) in self.queued.drain(..) {
            let _ = r.reply.send(Err(e.clone()));
        }
    }

    fn update_view(&self) {
        if let Some(h) = self.handle.upgrade() {
            let mut v = h.view.lock().expect("view lock");
            v.meta = self.meta.clone();
            v.open_committed = self.open.as_ref().map(|o| o.committed);
            v.len = self.open.as_ref().map_or_else(|| self.meta.base_of(self.meta.extents.len()), |o| o.base + o.committed);
        }
    }

    async fn pump(&mut self) {
        if self.fenced || self.ns.deposed.load(Ordering::Relaxed) {
            self.ns.fenced();
            self.fail_all(StreamError::Fenced);
            return;
        }
        // Acknowledge complete batches, in order.
        let mut acked_any = false;
        while let Some(front) = self.inflight.front() {
            let Some(open) = &mut self.open else { break };
            if !open.replicas.iter().all(|r| front.acked.contains(r)) {
                break;
            }
            let b = self.inflight.pop_front().expect("front");
            open.committed = b.offset + b.data.len() as u64;
            let mut at = open.base + b.offset;
            let now = time::now();
            let obs = self.ns.client.observer();
            obs.with(|o| {
                o.batch_latencies.push((now, now.saturating_sub(b.sent)));
                o.batch_bytes.push(b.data.len() as u64);
            });
            for r in b.reqs {
                let _ = r.at;
                let _ = r.reply.send(Ok(at));
                at += r.len as u64;
            }
            acked_any = true;
        }
        if acked_any {
            self.update_view();
        }
        let full = self.open.as_ref().is_some_and(|o| o.next >= self.client().inner.cfg.extent_bytes_max);
        let cause = if !self.failed.is_empty() || self.must_switch {
            Some(SealCause::ReplicaFailed)
        } else if full && self.inflight.is_empty() && !self.queued.is_empty() {
            Some(SealCause::Full)
        } else if self.zone_back && self.inflight.is_empty() && self.open.is_some() {
            // Also when idle: the data already acknowledged then lies in a
            // sealed extent, which the manager spreads over the zones.
            Some(SealCause::ZoneBack)
        } else {
            None
        };
        if let Some(cause) = cause {
            if let Err(e) = self.switch(Some(cause)).await {
                self.must_switch = true;
                if e == StreamError::Fenced {
                    self.ns.fenced();
                }
                self.fail_all(e);
                return;
            }
        }
        // Fill the pipeline.
        while self.inflight.len() < PIPELINE_MAX && !self.queued.is_empty() {
            if self.open.is_none() {
                if let Err(e) = self.switch(None).await {
                    if e == StreamError::Fenced {
                        self.ns.fenced();
                    }
                    self.fail_all(e);
                    return;
                }
            }
            let open = self.open.as_mut().expect("open extent");
            if open.next >= self.ns.client.inner.cfg.extent_bytes_max {
                break;
            }
            let mut data = Vec::new();
            let mut reqs = Vec::new();
            while let Some((d, _)) = self.queued.front() {
                if !data.is_empty() && data.len() + d.len() > BATCH_BYTES_MAX {
                    break;
                }
                let (d, r) = self.queued.pop_front().expect("front");
                data.extend_from_slice(&d);
                reqs.push(r);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let b = Batch { seq, offset: open.next, data: Arc::new(data), reqs, acked: BTreeSet::new(), sent: time::now() };
            open.next += b.data.len() as u64;
            self.send(&b);
            self.inflight.push_back(b);
        }
        // Tell the replicas the committed length when idle.
        if self.inflight.is_empty() && self.ns.client.inner.cfg.commit_when_idle {
            if let Some(open) = &self.open {
                if open.committed > self.commit_sent {
                    self.commit_sent = open.committed;
                    for &r in &open.replicas {
                        let net = self.ns.client.inner.net.clone();
                        let msg = StreamMsg::Commit { extent: open.id.clone(), commit_len: open.committed };
                        let timeout = self.ns.client.inner.cfg.call_timeout;
                        madsim::task::spawn(async move {
                            for _ in 0..APPEND_ATTEMPTS_MAX {
                                if let Ok(StreamMsg::Done) = net.call(r, msg.clone(), timeout).await {
                                    return;
                                }
                            }
                        });
                    }
                }
            }
        }
    }

    /// While the open extent (generation `gen`) misses a zone that has
    /// storage nodes, asks those nodes every [`DEGRADED_RECHECK`] (off the
    /// append path, also when the stream is idle) whether they answer; one
    /// that does makes the writer move on. Stops when the writer moved on
    /// (`watching` cleared) or is gone, or after [`DEGRADED_CHECKS_MAX`].
    fn watch_zones(&self, gen: u64, ask: Vec<NodeId>, watching: Arc<AtomicBool>) {
        let client = self.ns.client.clone();
        let tx = self.tx.clone();
        madsim::task::spawn(async move {
            for _ in 0..DEGRADED_CHECKS_MAX {
                time::sleep(DEGRADED_RECHECK).await;
                if !watching.load(Ordering::Relaxed) || tx.is_closed() {
                    return;
                }
                let answers = client.call_all(&ask, StreamMsg::Ping, client.inner.cfg.call_timeout).await;
                if answers.values().any(|r| matches!(r, Some(StreamMsg::Pong { .. }))) {
                    let _ = tx.send(WEvent::ZoneBack { gen });
                    return;
                }
            }
        });
    }

    /// Sends a batch to every replica of the open extent.
    fn send(&self, b: &Batch) {
        let open = self.open.as_ref().expect("open extent");
        for &node in &open.replicas {
            let net = self.ns.client.inner.net.clone();
            let tx = self.tx.clone();
            let (gen, seq, epoch) = (self.gen, b.seq, self.ns.epoch);
            let (extent, offset, data, commit_len) = (open.id.clone(), b.offset, b.data.clone(), open.committed);
            let timeout = self.ns.client.inner.cfg.call_timeout;
            let jitter: u64 = self.ns.client.inner.rng.lock().expect("rng lock").random();
            madsim::task::spawn(Box::pin(async move {
                let result = send_to_replica(&net, node, Call { extent, epoch, offset, data: &data, commit_len, timeout, jitter }).await;
                let _ = tx.send(WEvent::Ack { gen, seq, node, result });
            }));
        }
    }

    /// Seals the open extent (if any) at its acknowledged length and adds a
    /// new one, in one Txn; re-sends the unacknowledged batches to it.
    async fn switch(&mut self, cause: Option<SealCause>) -> Result<(), StreamError> {
        let client = self.ns.client.clone();
        let exclude: BTreeSet<NodeId> = self.failed.clone();
        let replicas = client.place(&exclude).await?;
        let n = self.ns.next_extent.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}/{}/{}/{}", self.ns.ns, self.name, self.ns.epoch, n);
        let mut result = Err(StreamError::Unavailable("metadata".into()));
        for _ in 0..META_ATTEMPTS_MAX {
            let mut new = self.meta.clone();
            match (&self.open, new.extents.last_mut()) {
                (Some(o), Some(last)) if last.id == o.id && last.sealed_len.is_none() => last.sealed_len = Some(o.committed),
                (None, None) => {}
                (None, Some(last)) if last.sealed_len.is_some() => {}
                _ => return Err(StreamError::BadMeta(self.key.clone())),
            }
            if new.extents.len() >= EXTENTS_MAX {
                return Err(StreamError::Unavailable(format!("stream {} has {EXTENTS_MAX} extents", self.name)));
            }
            new.extents.push(ExtentMeta { id: id.clone(), replicas: replicas.clone(), sealed_len: None });
            let bytes = new.encode();
            let checks = vec![(ns_key(&self.ns.ns), Some(epoch_bytes(self.ns.epoch))), (self.key.clone(), Some(self.meta_bytes.clone()))];
            match client.meta_txn(checks, vec![(self.key.clone(), Some(bytes.clone()))]).await {
                Ok(Outcome::Done) => {
                    result = Ok((new, bytes));
                    break;
                }
                Ok(Outcome::TxnFailed { key, current }) => {
                    if key != self.key {
                        return Err(StreamError::Fenced);
                    }
                    match current {
                        Some(c) if c == bytes => {
                            result = Ok((new, bytes));
                            break;
                        }
                        Some(c) => {
                            // The manager replaced a replica of a sealed
                            // extent: adopt its view and try again.
                            let m = StreamMeta::decode(&c).ok_or_else(|| StreamError::BadMeta(self.key.clone()))?;
                            self.meta = m;
                            self.meta_bytes = c;
                        }
                        None => return Err(StreamError::NotFound(self.name.clone())),
                    }
                }
                Ok(Outcome::CasFailed { .. }) => return Err(StreamError::Meta(ClientError::Protocol)),
                Err(ClientError::Unknown) => continue,
                // The metadata client already retried for its whole deadline.
                Err(e) => return Err(e.into()),
            }
        }
        let (new, bytes) = result?;
        let base = match &self.open {
            Some(o) => {
                // Tell the old replicas to stop (best effort).
                for &r in &o.replicas {
                    let net = client.inner.net.clone();
                    let msg = StreamMsg::Seal { extent: o.id.clone(), epoch: self.ns.epoch };
                    let timeout = client.inner.cfg.call_timeout;
                    madsim::task::spawn(async move {
                        let _ = net.call(r, msg, timeout).await;
                    });
                }
                o.base + o.committed
            }
            None => new.base_of(new.extents.len() - 1),
        };
        if let Some(cause) = cause.filter(|_| self.open.is_some()) {
            client.observer().with(|o| o.seals.push((time::now(), cause)));
        }
        self.meta = new;
        self.meta_bytes = bytes;
        let index = self.meta.extents.len() - 1;
        if let Some(o) = &self.open {
            o.watching.store(false, Ordering::Relaxed);
        }
        let topo = client.inner.world.topology();
        let have: BTreeSet<ZoneId> = replicas.iter().map(|&n| topo.zone_of(n)).collect();
        let ask: Vec<NodeId> = client.inner.cfg.storage.iter().copied().filter(|&n| !have.contains(&topo.zone_of(n))).collect();
        let watching = Arc::new(AtomicBool::new(!ask.is_empty()));
        let mut open = OpenExt { index, id, replicas, next: 0, committed: 0, base, watching: watching.clone() };
        let _ = open.index;
        self.gen += 1;
        self.failed.clear();
        self.must_switch = false;
        self.zone_back = false;
        self.commit_sent = 0;
        for b in &mut self.inflight {
            b.offset = open.next;
            open.next += b.data.len() as u64;
            b.acked.clear();
        }
        self.open = Some(open);
        if !ask.is_empty() {
            self.watch_zones(self.gen, ask, watching);
        }
        let batches: Vec<&Batch> = self.inflight.iter().collect();
        for b in batches {
            self.send(b);
        }
        self.update_view();
        Ok(())
    }

    async fn remove(&mut self) -> Result<(), StreamError> {
        let client = self.ns.client.clone();
        let checks = vec![(ns_key(&self.ns.ns), Some(epoch_bytes(self.ns.epoch))), (self.key.clone(), Some(self.meta_bytes.clone()))];
        for _ in 0..META_ATTEMPTS_MAX {
            match client.meta_txn(checks.clone(), vec![(self.key.clone(), None)]).await {
                Ok(Outcome::Done) => {
                    // The replicas are garbage now.
                    for e in &self.meta.extents {
                        for &r in &e.replicas {
                            let net = client.inner.net.clone();
                            let msg = StreamMsg::Remove { extent: e.id.clone() };
                            madsim::task::spawn(async move { net.send(r, msg).await });
                        }
                    }
                    return Ok(());
                }
                Ok(Outcome::TxnFailed { key, current }) => {
                    if key != self.key {
                        self.ns.fenced();
                        return Err(StreamError::Fenced);
                    }
                    match current {
                        None => return Ok(()), // an earlier attempt applied
                        Some(c) => {
                            let m = StreamMeta::decode(&c).ok_or_else(|| StreamError::BadMeta(self.key.clone()))?;
                            self.meta = m;
                            self.meta_bytes = c;
                            return Box::pin(self.remove()).await;
                        }
                    }
                }
                Ok(Outcome::CasFailed { .. }) => return Err(StreamError::Meta(ClientError::Protocol)),
                Err(ClientError::Unknown) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StreamError::Unavailable("remove".into()))
    }
}

/// One batch for one replica ([`send_to_replica`]).
struct Call<'a> {
    extent: ExtentId,
    epoch: u64,
    offset: u64,
    data: &'a [u8],
    commit_len: u64,
    timeout: Duration,
    /// Seeds the waits after busy answers.
    jitter: u64,
}

/// Sends one batch to one replica, retrying timeouts with the same bytes
/// ([`APPEND_ATTEMPTS_MAX`] of them) and busy answers after a jittered
/// wait ([`APPEND_BUSY_MAX`] of them).
async fn send_to_replica(net: &Net<StreamMsg>, node: NodeId, c: Call<'_>) -> AckResult {
    use rand::SeedableRng;
    let crc = crc32fast::hash(c.data);
    let end = c.offset + c.data.len() as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(c.jitter);
    let (mut attempts, mut busy) = (0, 0);
    while attempts < APPEND_ATTEMPTS_MAX && busy < APPEND_BUSY_MAX {
        let msg = StreamMsg::Append { extent: c.extent.clone(), epoch: c.epoch, offset: c.offset, data: c.data.to_vec(), crc, commit_len: c.commit_len };
        match net.call(node, msg, c.timeout).await {
            Ok(StreamMsg::Appended { len }) if len >= end => return AckResult::Durable,
            Ok(StreamMsg::Err(ReplicaError::Fenced { fence })) if fence > c.epoch => return AckResult::Fenced,
            Ok(StreamMsg::Err(ReplicaError::Busy)) | Err(NetError::TooManyPending) => {
                busy += 1;
                time::sleep((c.timeout / 8).mul_f64(1.0 + rng.random::<f64>())).await;
            }
            Err(NetError::Timeout) => attempts += 1,
            Ok(_) => return AckResult::Failed,
        }
    }
    AckResult::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn zone(n: NodeId) -> ZoneId {
        ZoneId((n.0 / 3) as u16)
    }

    fn zones_of(v: &[NodeId]) -> BTreeSet<ZoneId> {
        v.iter().map(|&n| zone(n)).collect()
    }

    fn nodes(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn a_seal_trusts_only_intact_replicas_until_every_replica_answered() {
        let answers = |v: &[(u32, u64, bool)]| -> BTreeMap<NodeId, (u64, bool)> { v.iter().map(|&(n, l, i)| (NodeId(n), (l, i))).collect() };
        // The minimum over the intact answers, whatever the others say.
        assert_eq!(seal_length(&answers(&[(1, 900, true), (2, 700, true), (3, 100, false)]), 3), Some(700));
        assert_eq!(seal_length(&answers(&[(1, 900, true), (3, 100, false)]), 3), Some(900));
        // A replica that lost its tail alone decides nothing: wait.
        assert_eq!(seal_length(&answers(&[(3, 100, false)]), 3), None);
        assert_eq!(seal_length(&answers(&[(2, 50, false), (3, 100, false)]), 3), None);
        assert_eq!(seal_length(&answers(&[]), 3), None);
        // Every replica answered and none is intact: the best left.
        assert_eq!(seal_length(&answers(&[(1, 80, false), (2, 50, false), (3, 100, false)]), 3), Some(50));
    }

    #[test]
    fn three_zones_get_one_replica_each() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let c = choose_replicas(&[nodes(&[0, 1, 2, 3, 4, 5, 6, 7, 8])], zone, &mut rng).unwrap();
            assert_eq!(zones_of(&c).len(), 3, "{c:?}");
        }
    }

    #[test]
    fn with_one_zone_down_replicas_spread_over_the_two_left() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let c = choose_replicas(&[nodes(&[0, 1, 2, 6, 7, 8])], zone, &mut rng).unwrap();
            assert_eq!(c.len(), 3);
            assert_eq!(zones_of(&c).len(), 2, "{c:?}");
            assert_eq!(c.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn never_three_replicas_in_one_zone() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(choose_replicas(&[nodes(&[6, 7, 8])], zone, &mut rng), None);
        assert_eq!(choose_replicas(&[nodes(&[0, 6])], zone, &mut rng), None);
    }

    /// The bug a sweep found: after a zone healed, the nodes a client had
    /// avoided were all in the two other zones, and the preferred set (one
    /// zone) gave only two replicas. A less preferred set that spans more
    /// zones wins.
    #[test]
    fn a_less_preferred_set_wins_when_it_spans_more_zones() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let preferred = nodes(&[6, 7, 8]);
        let all = nodes(&[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let c = choose_replicas(&[preferred, all], zone, &mut rng).unwrap();
        assert_eq!(zones_of(&c).len(), 3, "{c:?}");
    }

    #[test]
    fn the_preferred_set_wins_when_it_spans_as_many_zones() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let preferred = nodes(&[0, 3, 6]);
            let all = nodes(&[0, 1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(choose_replicas(&[preferred.clone(), all], zone, &mut rng).unwrap().into_iter().collect::<BTreeSet<_>>(), preferred.into_iter().collect());
        }
    }
}
