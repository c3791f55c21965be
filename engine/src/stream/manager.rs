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
//! extents, either replace a replica dead for longer than
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
                if let Some(&d) = dead.iter().find(|&&d| dead_for(d) >= cfg.rereplicate_after) {
                    work.push((key.clone(), bytes.clone(), i, d));
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
                        }
                    }
                }
            }
        }
        cfg.observer.with(|o| o.under_replicated.push((now, under)));
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
                _ => break,
            },
            _ => break,
        }
    }
    // Lost to a concurrent change: the copy on `target` is garbage.
    client.send(target, StreamMsg::Remove { extent: e.id.clone() }).await;
    false
}
