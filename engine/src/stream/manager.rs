//! The stream manager: liveness of storage nodes and re-replication of
//! sealed extents.
//!
//! One manager runs per zone ([`serve_manager`]) and acts only while the
//! metadata replica of its own zone leads (asked with `Status`), so at most
//! one manager acts at a time in a stable cluster; two acting at once are
//! harmless because every change is a Txn guarded by the stream's metadata
//! as read. Deviation from the brief: the manager runs on its own node in
//! each zone, not on the meta node, because a node binds the metadata
//! protocol's port once and the replica holds it there.
//!
//! Each round (every `heartbeat`): ping every storage node (a standby
//! manager pings only [`STANDBY_PINGS_PER_DEAD_AFTER`] times per
//! `dead_after`, enough to take over knowing who has been silent); a node silent
//! for `dead_after` is dead; publish the live set at `storage/live` when it
//! changes; scan every stream; record how many extents are under-replicated
//! (a replica on a dead node, or fewer than three zones while three zones
//! have live nodes); then, for at most [`REREPLICATE_PARALLEL_MAX`] sealed
//! extents, at most [`MOVES_PER_STREAM_MAX`] per stream, either replace a replica dead for longer than
//! `rereplicate_after` (the grace period) or move a replica out of a zone
//! holding two while a live zone holds none. A move is: the target copies
//! the sealed extent from a good replica, verifying checksums
//! (`Repair`), then one Txn replaces the replica in the metadata, checked
//! against the metadata as read; when the writer changed the stream in
//! between (a new extent, a seal), the Txn is redone on the metadata found
//! as long as the extent still lists the replaced node. The replaced
//! replica is told to drop its copy (best effort). The moves of one round
//! run concurrently. Open extents are the writer's business: it seals them when a
//! replica fails.
//!
//! **The end-of-run audit.** Once asked ([`super::StreamObserver::request_audit`]),
//! the acting manager waits for a round with nothing under-replicated and
//! nothing to move or repair, then reads every replica of every
//! sealed extent whole, checked, and compares them ([`Audit`]): what
//! "acknowledged only on three disks" promises, whatever repairs,
//! re-replications and seals happened on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::RngExt;
use sim::time::{self, SimTime};
use sim::topology::{NodeId, ZoneId};
use sim::world::NodeCtx;

use super::client::StreamClient;
use super::{ExtentMeta, StreamConfig, StreamMeta, StreamMsg, META_ATTEMPTS_MAX, MANAGED_STREAMS_MAX, REREPLICATE_PARALLEL_MAX};
use crate::meta::state::Outcome;

/// A standby manager pings the storage nodes this many times per
/// `dead_after`.
pub const STANDBY_PINGS_PER_DEAD_AFTER: u32 = 4;

/// The metadata key of the published live set.
pub const LIVE_KEY: &str = "storage/live";

/// Replica moves of one stream a round starts at most. Each rewrites the
/// stream's metadata, and a writer's or new owner's metadata write, which
/// retries on the metadata it found, loses at most once to each: with at
/// most this many a round it keeps `META_ATTEMPTS_MAX - 4` attempts.
pub const MOVES_PER_STREAM_MAX: usize = 4;

/// The audit reads the replicas of this many extents at once.
pub const AUDIT_PARALLEL_MAX: usize = 16;

/// Rounds the audit waits for failing repairs before it runs anyway.
pub const AUDIT_WAIT_ROUNDS_MAX: u32 = 10;

/// Bad replicas an audit round that is not the last has repaired in
/// place, [`AUDIT_PARALLEL_MAX`] at a time (the next round finds the rest).
pub const AUDIT_REPAIRS_MAX: usize = 1024;

/// The audit describes at most this many bad replicas (it counts them all).
pub const AUDIT_PROBLEMS_MAX: usize = 16;

/// Audits a run may take: one that finds bad replicas (rot at rest that no
/// read had met yet, a replica that never received its extent) has them
/// repaired in place, and the audit runs again once the layer settled; the
/// last one is the verdict.
pub const AUDIT_ROUNDS_MAX: u32 = 4;

/// What the end-of-run audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Sealed extents audited (those removed while being audited are not).
    pub extents: u64,
    /// Their replicas, each read whole.
    pub replicas: u64,
    pub bytes: u64,
    /// Replicas that could not give their extent's sealed bytes, checked,
    /// or whose bytes differ from those most replicas of the extent hold.
    pub bad_replicas: u64,
    /// The first [`AUDIT_PROBLEMS_MAX`] of them, described.
    pub problems: Vec<String>,
    /// Bad replicas earlier audits of the run found (then repaired).
    pub found_earlier: u64,
    /// Audits run, this one included.
    pub rounds: u32,
}

/// One replica's copy as the audit read it: the checksum of its sealed
/// bytes, or why it could not give them.
type ReplicaCopy = (NodeId, Result<u32, String>);

/// Reads every replica of every sealed extent of `streams` (metadata as
/// scanned) and compares them; an extent no longer listed by a rescan at
/// the end (its stream was removed or rewritten meanwhile) is not judged.
/// Also returns the bad replicas (at most [`AUDIT_REPAIRS_MAX`]).
async fn audit(client: &StreamClient, streams: &[(String, Vec<u8>)]) -> Option<(Audit, Vec<(ExtentMeta, NodeId)>)> {
    let metas: BTreeMap<String, ExtentMeta> = streams
        .iter()
        .filter_map(|(_, bytes)| StreamMeta::decode(bytes))
        .flat_map(|m| m.extents.into_iter().filter(|e| e.sealed_len.is_some()).map(|e| (e.id.clone(), e)))
        .collect();
    let sealed: Vec<(String, u64, Vec<NodeId>)> = metas.values().map(|e| (e.id.clone(), e.sealed_len.unwrap_or(0), e.replicas.clone())).collect();
    // Every replica of up to `AUDIT_PARALLEL_MAX` extents at once.
    let mut found: Vec<(String, u64, Vec<ReplicaCopy>)> = Vec::with_capacity(sealed.len());
    for group in sealed.chunks(AUDIT_PARALLEL_MAX) {
        let reads = group.iter().flat_map(|(id, len, replicas)| {
            replicas.iter().map(move |&r| async move { (r, client.read_replica(r, id, *len).await.map(|d| crc32fast::hash(&d)).map_err(|err| err.to_string())) })
        });
        let mut copies = crate::join::join_all(reads.collect()).await.into_iter();
        for (id, len, replicas) in group {
            found.push((id.clone(), *len, copies.by_ref().take(replicas.len()).collect()));
        }
    }
    let now = client.meta_scan_all("st/", MANAGED_STREAMS_MAX).await.ok()?;
    let listed: BTreeSet<(String, u64)> = now
        .iter()
        .filter_map(|(_, b)| StreamMeta::decode(b))
        .flat_map(|m| m.extents.into_iter().filter_map(|e| Some((e.id, e.sealed_len?))))
        .collect();
    let mut a = Audit::default();
    let mut bad = Vec::new();
    for (id, len, copies) in found {
        if !listed.contains(&(id.clone(), len)) {
            continue;
        }
        a.extents += 1;
        a.replicas += copies.len() as u64;
        a.bytes += len * copies.len() as u64;
        // The digest most replicas hold is the extent's (ties: the
        // smallest, so the verdict does not depend on replica order).
        let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, c) in &copies {
            if let Ok(d) = c {
                *votes.entry(*d).or_default() += 1;
            }
        }
        let agreed = votes.iter().max_by_key(|&(d, n)| (*n, std::cmp::Reverse(*d))).map(|(&d, _)| d);
        for (node, c) in copies {
            let why = match c {
                Ok(d) if Some(d) == agreed => continue,
                Ok(d) => format!("its {len} bytes differ from the other replicas' (crc {d:08x})"),
                Err(e) => e,
            };
            a.bad_replicas += 1;
            if let Some(e) = metas.get(&id).filter(|_| bad.len() < AUDIT_REPAIRS_MAX) {
                bad.push((e.clone(), node));
            }
            if a.problems.len() < AUDIT_PROBLEMS_MAX {
                a.problems.push(format!("extent {id} on node {}: {why}", node.0));
            }
        }
    }
    Some((a, bad))
}

/// Runs the manager of this node's zone until the node crashes.
pub async fn serve_manager(ctx: NodeCtx, cfg: StreamConfig) {
    let client = StreamClient::bind(&ctx, cfg.clone()).await;
    let topo = ctx.world.topology().clone();
    let my_zone = topo.zone_of(ctx.id);
    let local = cfg.meta.replicas.iter().copied().find(|&r| topo.zone_of(r) == my_zone);
    let mut rng = ctx.rng("stream-manager");
    let start = time::now();
    let mut last_seen: BTreeMap<NodeId, SimTime> = cfg.storage.iter().map(|&n| (n, start)).collect();
    let mut published: Option<Vec<NodeId>> = None;
    let mut standby_pinged = start;
    let mut audit_waited = 0u32;
    loop {
        time::sleep(cfg.heartbeat).await;
        let leads = match local {
            Some(r) => client.meta_status(r).await.is_some_and(|(leader, _, _)| leader),
            None => false,
        };
        // Liveness is tracked even when not leading, so a manager that takes
        // over knows who has been silent; a standby pings a quarter as often
        // as `dead_after` (so what it knows is never staler than that), the
        // acting manager every round.
        let now = time::now();
        let answers = if leads || now.saturating_sub(standby_pinged) >= cfg.dead_after / STANDBY_PINGS_PER_DEAD_AFTER {
            standby_pinged = now;
            client.ping_all().await
        } else {
            BTreeMap::new()
        };
        let now = time::now();
        // Replicas their own nodes reported damaged or short: (extent, node).
        let mut suspect: BTreeSet<(String, NodeId)> = BTreeSet::new();
        for (&n, a) in &answers {
            if let Some(list) = a {
                last_seen.insert(n, now);
                suspect.extend(list.iter().map(|x| (x.clone(), n)));
            }
        }
        if !leads {
            continue;
        }
        cfg.observer.with(|o| o.meta_leader = local);
        let dead_for = |n: NodeId| now.saturating_sub(last_seen.get(&n).copied().unwrap_or(start));
        let live: Vec<NodeId> = cfg.storage.iter().copied().filter(|&n| dead_for(n) < cfg.dead_after).collect();
        if published.as_ref() != Some(&live) {
            let bytes: Vec<u8> = live.iter().flat_map(|n| n.0.to_le_bytes()).collect();
            if client.meta_put(LIVE_KEY, &bytes).await.is_ok() {
                published = Some(live.clone());
            }
        }
        let Ok(streams) = client.meta_scan_all("st/", MANAGED_STREAMS_MAX).await else { continue };
        let live_zones: BTreeSet<ZoneId> = live.iter().map(|&n| topo.zone_of(n)).collect();
        let mut under = 0u64;
        let mut work: Vec<(String, Vec<u8>, usize, NodeId)> = Vec::new();
        let mut repairs: Vec<(ExtentMeta, NodeId)> = Vec::new();
        for (key, bytes) in &streams {
            let Some(meta) = StreamMeta::decode(bytes) else { continue };
            let mut moving = 0;
            for (i, e) in meta.extents.iter().enumerate() {
                let dead: Vec<NodeId> = e.replicas.iter().copied().filter(|&r| dead_for(r) >= cfg.dead_after).collect();
                let zones: BTreeSet<ZoneId> = e.replicas.iter().map(|&r| topo.zone_of(r)).collect();
                if !dead.is_empty() || zones.len() < live_zones.len().min(3) {
                    under += 1;
                }
                if e.sealed_len.is_none() || work.len() + repairs.len() >= REREPLICATE_PARALLEL_MAX {
                    continue;
                }
                // A live replica that reported itself damaged or short
                // copies the sealed extent back from the others in place.
                if let Some(&r) = e.replicas.iter().find(|&&r| dead_for(r) < cfg.dead_after && suspect.contains(&(e.id.clone(), r))) {
                    repairs.push((e.clone(), r));
                    continue;
                }
                if moving >= MOVES_PER_STREAM_MAX {
                    continue;
                }
                if let Some(&d) = dead.iter().find(|&&d| dead_for(d) >= cfg.rereplicate_after) {
                    work.push((key.clone(), bytes.clone(), i, d));
                    moving += 1;
                } else if dead.is_empty() && zones.len() < 3 {
                    // Two replicas share a zone while a live zone holds none:
                    // move the one with the highest id.
                    let mut per: BTreeMap<ZoneId, Vec<NodeId>> = BTreeMap::new();
                    for &r in &e.replicas {
                        per.entry(topo.zone_of(r)).or_default().push(r);
                    }
                    if let Some(v) = per.values().find(|v| v.len() > 1) {
                        let missing = live_zones.iter().any(|z| !zones.contains(z));
                        if missing {
                            work.push((key.clone(), bytes.clone(), i, *v.iter().max().expect("two")));
                            moving += 1;
                        }
                    }
                }
            }
        }
        cfg.observer.with(|o| o.under_replicated.push((now, under)));
        let audit_due = cfg.observer.with(|o| o.audit_requested && o.audit.is_none());
        // Suspect replicas of open extents wait for their seal; the audit
        // reads sealed extents only. Repairs that keep failing hold it back
        // for `AUDIT_WAIT_ROUNDS_MAX` rounds at most: it then judges them.
        if audit_due && !repairs.is_empty() {
            audit_waited += 1;
        }
        if audit_due && under == 0 && work.is_empty() && (repairs.is_empty() || audit_waited > AUDIT_WAIT_ROUNDS_MAX) {
            if let Some((mut a, bad)) = audit(&client, &streams).await {
                ctx.note(format!("manager audited {} sealed extents: {} bad replicas", a.extents, a.bad_replicas));
                for p in &a.problems {
                    ctx.note(format!("audit: {p}"));
                }
                let again = cfg.observer.with(|o| {
                    o.audit_rounds += 1;
                    a.rounds = o.audit_rounds;
                    a.found_earlier = o.audit_found;
                    let again = a.bad_replicas > 0 && o.audit_rounds < AUDIT_ROUNDS_MAX;
                    if again {
                        o.audit_found += a.bad_replicas;
                    } else {
                        o.audit = Some(a);
                    }
                    again
                });
                if again {
                    for group in bad.chunks(AUDIT_PARALLEL_MAX) {
                        let repairs = group.iter().map(|(e, node)| repair_in_place(&client, &cfg, e, *node));
                        crate::join::join_all(repairs.collect()).await;
                    }
                }
            }
            continue;
        }
        // The moves of one round run at once: each copies a sealed extent
        // over the network, which takes longer than the round's metadata.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (key, bytes, i, old) in work {
            let Some(meta) = StreamMeta::decode(&bytes) else { continue };
            let e = meta.extents[i].clone();
            let zones: BTreeSet<ZoneId> = e.replicas.iter().filter(|&&r| r != old).map(|&r| topo.zone_of(r)).collect();
            let candidates: Vec<NodeId> = live.iter().copied().filter(|n| !e.replicas.contains(n)).collect();
            let fresh: Vec<NodeId> = candidates.iter().copied().filter(|&n| !zones.contains(&topo.zone_of(n))).collect();
            let pool = if fresh.is_empty() { candidates } else { fresh };
            if pool.is_empty() {
                continue;
            }
            let target = pool[rng.random_range(0..pool.len())];
            let (client, cfg, tx) = (client.clone(), cfg.clone(), tx.clone());
            madsim::task::spawn(async move {
                let moved = move_replica(&client, &cfg, &key, bytes, &e, old, target).await;
                let _ = tx.send((e.id, old, target, moved));
            });
        }
        for (e, bad) in repairs {
            let (client, cfg, tx) = (client.clone(), cfg.clone(), tx.clone());
            madsim::task::spawn(async move {
                let repaired = repair_in_place(&client, &cfg, &e, bad).await;
                let _ = tx.send((e.id, bad, bad, repaired));
            });
        }
        drop(tx);
        while let Some((id, old, target, moved)) = rx.recv().await {
            if moved && old == target {
                ctx.note(format!("manager had the suspect replica of {id} on node {} repaired", old.0));
            } else if moved {
                ctx.note(format!("manager moved a replica of {id} from node {} to node {}", old.0, target.0));
            }
        }
    }
}

/// Asks `bad`, a live replica of sealed extent `e` that reported itself
/// damaged or short, to copy the extent back from the other replicas
/// (checked) and swap it in; a short replica that holds the whole sealed
/// length already only clears its mark. The metadata does not change.
async fn repair_in_place(client: &StreamClient, cfg: &StreamConfig, e: &ExtentMeta, bad: NodeId) -> bool {
    let Some(len) = e.sealed_len else { return false };
    let sources: Vec<NodeId> = e.replicas.iter().copied().filter(|&r| r != bad).collect();
    let repair = StreamMsg::Repair { extent: e.id.clone(), len, sources };
    let timeout = cfg.call_timeout * 20 + Duration::from_millis(len / 1024);
    matches!(client.call(bad, repair, timeout).await, Some(StreamMsg::Done))
}

/// Copies sealed extent `e` to `target` and swaps it for `old` in the
/// stream's metadata (`bytes` as read). A Txn lost to a concurrent change
/// of the stream (its writer added or sealed an extent) is retried on the
/// metadata found, up to [`META_ATTEMPTS_MAX`] times, as long as the extent
/// still lists `old`.
async fn move_replica(client: &StreamClient, cfg: &StreamConfig, key: &str, mut bytes: Vec<u8>, e: &ExtentMeta, old: NodeId, target: NodeId) -> bool {
    let Some(len) = e.sealed_len else { return false };
    let sources: Vec<NodeId> = e.replicas.iter().copied().filter(|&r| r != old).chain(std::iter::once(old)).collect();
    let repair = StreamMsg::Repair { extent: e.id.clone(), len, sources };
    let timeout = cfg.call_timeout * 20 + Duration::from_millis(len / 1024);
    if !matches!(client.call(target, repair, timeout).await, Some(StreamMsg::Done)) {
        return false;
    }
    for _ in 0..META_ATTEMPTS_MAX {
        let Some(mut meta) = StreamMeta::decode(&bytes) else { break };
        let Some(ext) = meta.extents.iter_mut().find(|x| x.id == e.id && x.sealed_len == Some(len)) else { break };
        if ext.replicas.contains(&target) {
            // An earlier attempt whose outcome was unknown did apply (or
            // another manager chose the same target): the copy is in use.
            let moved = !ext.replicas.contains(&old);
            if moved {
                cfg.observer.with(|o| o.bytes_rereplicated += len);
            }
            return moved;
        }
        if !ext.replicas.contains(&old) {
            break;
        }
        for r in &mut ext.replicas {
            if *r == old {
                *r = target;
            }
        }
        let new = meta.encode();
        match client.meta_txn(vec![(key.to_string(), Some(bytes.clone()))], vec![(key.to_string(), Some(new))]).await {
            Ok(Outcome::Done) => {
                cfg.observer.with(|o| o.bytes_rereplicated += len);
                client.send(old, StreamMsg::Remove { extent: e.id.clone() }).await;
                return true;
            }
            Ok(Outcome::TxnFailed { current: Some(current), .. }) => bytes = current,
            // An unknown outcome: read what the store holds and look again.
            Err(_) => match client.meta_get(key).await {
                Ok(Some(current)) => bytes = current,
                // Still unknown: the change may have applied, so the copy
                // on `target` may be listed; it must stay.
                _ => return false,
            },
            _ => break,
        }
    }
    // Lost to a concurrent change (seen in the metadata as read last): the
    // copy on `target` is garbage. After attempts that all ended unknown
    // it may be in use: it stays.
    if StreamMeta::decode(&bytes).is_some_and(|m| m.extents.iter().all(|x| x.id != e.id || !x.replicas.contains(&target))) {
        client.send(target, StreamMsg::Remove { extent: e.id.clone() }).await;
    }
    false
}
