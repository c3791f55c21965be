//! A simulated disk per node.
//!
//! # Fault model
//!
//! What it injects:
//! - **Crash** ([`Disk::crash`], applied by the node-crash and zone-crash
//!   verbs): every file's unsynced data is lost, sector by sector: each
//!   sector written since the last `sync` of its file was written back
//!   before the crash with probability `crash_writeback` and otherwise
//!   reverts to its synced content, so a multi-sector write can come back
//!   torn at sector granularity. A torn append leaves zeros where an
//!   unwritten sector precedes a written-back one. Creates, renames and
//!   removes not followed by [`Disk::sync_dir`] are undone.
//! - **Read errors** (`read_error_rate`): a read fails with [`DiskError::Io`].
//! - **Write errors** (`write_error_rate`): a write, append or sync fails with
//!   [`DiskError::Io`] and changes nothing.
//! - **Bit flips**: `bitflip_read_rate` flips one bit of the bytes a read
//!   returns (transient); `bitflip_write_rate` flips one bit of the bytes a
//!   write stores (at rest). Both are silent: the call returns `Ok`.
//! - **Misdirected writes** (`misdirect_rate`): a write lands one to four
//!   sectors after the offset asked for, the intended range keeps its old
//!   bytes (zeros if it extended the file), and the call returns `Ok`.
//! - **Disk full** (`full`, or the `capacity` being reached): a write that
//!   grows the used bytes fails with [`DiskError::NoSpace`].
//! - **Fail-slow** (`slow_factor`): every operation's latency is multiplied.
//!
//! What it still promises:
//! - A `sync` that returned `Ok` made the file's data durable: it survives
//!   every later crash unchanged (unless a later write changes it).
//! - A `sync_dir` that returned `Ok` made the namespace durable.
//! - Without injected faults, a read returns exactly the bytes last written.
//! - A failed operation (`Err`) changed nothing, and a failed sync leaves the
//!   data unsynced (it is not silently marked clean; a later sync retries).
//! - Operations complete in issue order on the device queue; reads and syncs
//!   pay `read_latency`/`sync_latency` plus bytes over `bandwidth`, waiting
//!   behind earlier device operations; writes to the page cache pay
//!   `write_latency` and never wait.
//!
//! No real file is touched: the disk is memory held by the [`crate::World`],
//! so it outlives the node's crash and restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::log::{hash_bytes, Event};
use crate::time::{self, SimTime};
use crate::world::World;

#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    pub sector: u64,
    pub capacity: u64,
    pub write_latency: Duration,
    pub read_latency: Duration,
    pub sync_latency: Duration,
    /// Bytes per second moved by reads and syncs.
    pub bandwidth: u64,
    /// Probability that an unsynced sector was written back before a crash.
    pub crash_writeback: f64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            sector: 4096,
            capacity: 64 << 30,
            write_latency: Duration::from_micros(2),
            read_latency: Duration::from_micros(80),
            sync_latency: Duration::from_micros(150),
            bandwidth: 1 << 30,
            crash_writeback: 0.5,
        }
    }
}

/// Injectable faults; all zero/false is a healthy disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskFaults {
    pub read_error_rate: f64,
    pub write_error_rate: f64,
    pub bitflip_read_rate: f64,
    pub bitflip_write_rate: f64,
    pub misdirect_rate: f64,
    pub full: bool,
    /// Latency multiplier; 0 and 1 mean healthy.
    pub slow_factor: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("file not found: {0}")]
    NotFound(String),
    #[error("file already exists: {0}")]
    AlreadyExists(String),
    #[error("i/o error during {op} of {file}")]
    Io { op: &'static str, file: String },
    #[error("no space left on device writing {0}")]
    NoSpace(String),
}

/// Counters a report can print.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskStats {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub injected_errors: u64,
    pub injected_bitflips: u64,
    pub misdirected_writes: u64,
    pub crashes: u64,
    pub sectors_lost_at_crash: u64,
    pub sectors_torn_kept_at_crash: u64,
}

impl DiskStats {
    /// Operations a fault rate touched: injected errors, bit flips and
    /// misdirected writes.
    pub fn faults(&self) -> u64 {
        self.injected_errors + self.injected_bitflips + self.misdirected_writes
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable_len: u64,
    /// Synced content of every sector written since the last sync,
    /// truncated at `durable_len`.
    shadow: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug)]
pub struct DiskState {
    cfg: DiskConfig,
    faults: DiskFaults,
    rng: ChaCha8Rng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    /// Names created, renamed or removed since the last directory sync: a
    /// sync copies only these into `durable_names`.
    dir_dirty: BTreeSet<String>,
    /// Inodes that lost a name since the last collection (may be garbage).
    unlinked: BTreeSet<u64>,
    busy_until: SimTime,
    /// Device busy nanoseconds per second of model time (at most
    /// [`crate::cpu::CPU_STATS_SECONDS_MAX`] seconds).
    busy_seconds: BTreeMap<u64, u64>,
    stats: DiskStats,
    /// Bytes of every inode's data: kept as writes, crashes and garbage
    /// collection change it, so a write's space check is O(1) (every inode
    /// is live: named now or at the last directory sync).
    used_bytes: u64,
}

impl DiskState {
    pub fn new(cfg: DiskConfig, rng: ChaCha8Rng) -> DiskState {
        assert!(cfg.sector > 0 && cfg.bandwidth > 0, "disk config: sector and bandwidth must be positive");
        DiskState {
            cfg,
            faults: DiskFaults::default(),
            rng,
            inodes: BTreeMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dir_dirty: BTreeSet::new(),
            unlinked: BTreeSet::new(),
            busy_until: SimTime::ZERO,
            busy_seconds: BTreeMap::new(),
            stats: DiskStats::default(),
            used_bytes: 0,
        }
    }

    fn used(&self) -> u64 {
        debug_assert_eq!(self.used_bytes, self.inodes.values().map(|i| i.data.len() as u64).sum::<u64>(), "disk usage counter");
        self.used_bytes
    }

    fn inode_mut(&mut self, name: &str) -> Result<&mut Inode, DiskError> {
        let id = self.inode_id(name)?;
        Ok(self.inode_by_id(id))
    }

    /// The inode a name refers to (one lookup of the name: an operation
    /// that needs its inode more than once looks the name up once).
    fn inode_id(&self, name: &str) -> Result<u64, DiskError> {
        self.names.get(name).copied().ok_or_else(|| DiskError::NotFound(name.to_string()))
    }

    fn inode_by_id(&mut self, id: u64) -> &mut Inode {
        self.inodes.get_mut(&id).expect("named inode exists")
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn create(&mut self, name: &str) -> Result<(), DiskError> {
        if self.names.contains_key(name) {
            return Err(DiskError::AlreadyExists(name.to_string()));
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.names.insert(name.to_string(), id);
        self.dir_dirty.insert(name.to_string());
        Ok(())
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8], op: &'static str) -> Result<(), DiskError> {
        let id = self.inode_id(name)?;
        self.write_at_id(id, name, offset, data, op)
    }

    /// Appends at the end of the file; returns the offset written at.
    fn append(&mut self, name: &str, data: &[u8]) -> Result<u64, DiskError> {
        let id = self.inode_id(name)?;
        let off = self.inode_by_id(id).data.len() as u64;
        self.write_at_id(id, name, off, data, "append").map(|()| off)
    }

    fn write_at_id(&mut self, id: u64, name: &str, offset: u64, data: &[u8], op: &'static str) -> Result<(), DiskError> {
        let cur_len = self.inode_by_id(id).data.len() as u64;
        if self.roll(self.faults.write_error_rate) {
            self.stats.injected_errors += 1;
            return Err(DiskError::Io { op, file: name.to_string() });
        }
        let mut offset = offset;
        if self.roll(self.faults.misdirect_rate) {
            let shift = self.rng.random_range(1..=4u64) * self.cfg.sector;
            offset = (offset / self.cfg.sector) * self.cfg.sector + shift;
            self.stats.misdirected_writes += 1;
        }
        let end = offset + data.len() as u64;
        let growth = end.saturating_sub(cur_len);
        if growth > 0 && (self.faults.full || self.used() + growth > self.cfg.capacity) {
            return Err(DiskError::NoSpace(name.to_string()));
        }
        let mut stored = data.to_vec();
        if !stored.is_empty() && self.roll(self.faults.bitflip_write_rate) {
            let bit = self.rng.random_range(0..stored.len() * 8);
            stored[bit / 8] ^= 1 << (bit % 8);
            self.stats.injected_bitflips += 1;
        }
        let sector = self.cfg.sector;
        let inode = self.inode_by_id(id);
        if !data.is_empty() {
            for s in offset / sector..=(end - 1) / sector {
                if !inode.shadow.contains_key(&s) {
                    let lo = (s * sector).min(inode.durable_len) as usize;
                    let hi = ((s + 1) * sector).min(inode.durable_len) as usize;
                    inode.shadow.insert(s, inode.data[lo..hi].to_vec());
                }
            }
        }
        if (inode.data.len() as u64) < end {
            inode.data.resize(end as usize, 0);
        }
        inode.data[offset as usize..end as usize].copy_from_slice(&stored);
        self.used_bytes += growth;
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        Ok(())
    }

    fn read_at(&mut self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let inode = self.inode_mut(name)?;
        let lo = (offset as usize).min(inode.data.len());
        let hi = (offset.saturating_add(len) as usize).min(inode.data.len());
        let mut out = inode.data[lo..hi].to_vec();
        if self.roll(self.faults.read_error_rate) {
            self.stats.injected_errors += 1;
            return Err(DiskError::Io { op: "read", file: name.to_string() });
        }
        if !out.is_empty() && self.roll(self.faults.bitflip_read_rate) {
            let bit = self.rng.random_range(0..out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            self.stats.injected_bitflips += 1;
        }
        self.stats.reads += 1;
        self.stats.bytes_read += out.len() as u64;
        Ok(out)
    }

    fn dirty_bytes(&mut self, name: &str) -> Result<u64, DiskError> {
        let sector = self.cfg.sector;
        Ok(self.inode_mut(name)?.shadow.len() as u64 * sector)
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        let id = self.inode_id(name)?;
        if self.roll(self.faults.write_error_rate) {
            self.stats.injected_errors += 1;
            return Err(DiskError::Io { op: "sync", file: name.to_string() });
        }
        let inode = self.inode_by_id(id);
        inode.shadow.clear();
        inode.durable_len = inode.data.len() as u64;
        self.stats.syncs += 1;
        Ok(())
    }

    /// Makes the namespace durable: the names changed since the last sync
    /// take their current state (work in proportion to the changes, not to
    /// the files on the disk).
    fn sync_dir(&mut self) {
        for name in std::mem::take(&mut self.dir_dirty) {
            let displaced = match self.names.get(&name) {
                Some(&id) => self.durable_names.insert(name, id),
                None => self.durable_names.remove(&name),
            };
            self.unlinked.extend(displaced);
        }
        self.collect_unlinked();
        debug_assert_eq!(self.durable_names, self.names, "an incremental directory sync makes the whole namespace durable");
    }

    /// Frees the inodes that lost a name and are named neither now nor
    /// durably (one pass over the names, only when some inode lost one).
    fn collect_unlinked(&mut self) {
        if self.unlinked.is_empty() {
            return;
        }
        for id in self.names.values().chain(self.durable_names.values()) {
            self.unlinked.remove(id);
        }
        for id in std::mem::take(&mut self.unlinked) {
            if let Some(i) = self.inodes.remove(&id) {
                self.used_bytes -= i.data.len() as u64;
            }
        }
        debug_assert!(
            self.inodes.keys().all(|id| self.names.values().chain(self.durable_names.values()).any(|n| n == id)),
            "every unnamed inode was collected"
        );
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        let id = self.names.remove(from).ok_or_else(|| DiskError::NotFound(from.to_string()))?;
        let replaced = self.names.insert(to.to_string(), id);
        self.unlinked.extend(replaced);
        self.dir_dirty.insert(from.to_string());
        self.dir_dirty.insert(to.to_string());
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        let id = self.names.remove(name).ok_or_else(|| DiskError::NotFound(name.to_string()))?;
        self.dir_dirty.insert(name.to_string());
        self.unlinked.insert(id);
        self.collect_unlinked();
        Ok(())
    }

    /// Applies a crash: see the module's fault model.
    pub fn crash(&mut self) {
        self.stats.crashes += 1;
        // Every name the crash undoes unlinks its inode (those still named
        // durably stay).
        let lost = std::mem::replace(&mut self.names, self.durable_names.clone());
        self.unlinked.extend(lost.into_values());
        self.dir_dirty.clear();
        self.collect_unlinked();
        let sector = self.cfg.sector;
        let p = self.cfg.crash_writeback;
        let ids: Vec<u64> = self.inodes.keys().copied().collect();
        for id in ids {
            let shadow = std::mem::take(&mut self.inodes.get_mut(&id).expect("listed").shadow);
            if shadow.is_empty() {
                continue;
            }
            let kept: Vec<bool> = shadow.keys().map(|_| p > 0.0 && self.rng.random_bool(p.min(1.0))).collect();
            let inode = self.inodes.get_mut(&id).expect("listed");
            let cur_len = inode.data.len() as u64;
            let mut new_len = inode.durable_len;
            for (&s, &k) in shadow.keys().zip(&kept) {
                if k {
                    new_len = new_len.max(((s + 1) * sector).min(cur_len));
                }
            }
            inode.data.truncate(new_len as usize);
            self.used_bytes -= cur_len - new_len.min(cur_len);
            for ((&s, old), &k) in shadow.iter().zip(&kept) {
                if k {
                    self.stats.sectors_torn_kept_at_crash += 1;
                    continue;
                }
                self.stats.sectors_lost_at_crash += 1;
                let lo = s * sector;
                if lo >= new_len {
                    continue;
                }
                let hi = ((s + 1) * sector).min(new_len);
                let region = &mut inode.data[lo as usize..hi as usize];
                region.fill(0);
                let n = old.len().min(region.len());
                region[..n].copy_from_slice(&old[..n]);
            }
            inode.durable_len = new_len;
        }
    }
}

/// A node's handle on its disk. Cheap to clone.
#[derive(Clone)]
pub struct Disk {
    state: Arc<Mutex<DiskState>>,
    world: World,
    node: u32,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Disk(n{})", self.node)
    }
}

impl Disk {
    pub(crate) fn new(state: Arc<Mutex<DiskState>>, world: World, node: u32) -> Disk {
        Disk { state, world, node }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().expect("disk lock poisoned")
    }

    fn log(&self, op: &'static str, file: &str, offset: u64, len: u64, data: u64, ok: bool) {
        tracing::trace!(target: "sim::disk", at = %time::now(), op, file, offset, len, ok);
        self.world.record(Event::Disk { at: time::now(), node: self.node, op, file: hash_bytes(file.as_bytes()), offset, len, data, ok });
    }

    fn slow(&self, d: Duration) -> Duration {
        d * self.lock().faults.slow_factor.max(1)
    }

    /// A page-cache operation: applied now, then its latency is paid.
    async fn memory_op<T>(&self, f: impl FnOnce(&mut DiskState) -> Result<T, DiskError>) -> Result<T, DiskError> {
        let (r, lat) = {
            let mut s = self.lock();
            let lat = s.cfg.write_latency;
            (f(&mut s), lat)
        };
        time::sleep(self.slow(lat)).await;
        r
    }

    /// Waits for a device slot: FIFO behind earlier device operations.
    async fn device_wait(&self, cost: Duration) {
        let finish = {
            let mut s = self.lock();
            let cost = cost * s.faults.slow_factor.max(1);
            let start = s.busy_until.max(time::now());
            s.busy_until = start + cost;
            let (mut at, end) = (start.as_nanos(), s.busy_until.as_nanos());
            while at < end {
                let sec = at / 1_000_000_000;
                let upto = ((sec + 1) * 1_000_000_000).min(end);
                if sec < crate::cpu::CPU_STATS_SECONDS_MAX {
                    *s.busy_seconds.entry(sec).or_default() += upto - at;
                }
                at = upto;
            }
            s.busy_until
        };
        time::sleep_until(finish).await;
    }

    fn transfer(&self, bytes: u64) -> Duration {
        let bw = self.lock().cfg.bandwidth;
        Duration::from_nanos(bytes.saturating_mul(1_000_000_000) / bw)
    }

    pub async fn create(&self, name: &str) -> Result<(), DiskError> {
        let r = self.memory_op(|s| s.create(name)).await;
        self.log("create", name, 0, 0, 0, r.is_ok());
        r
    }

    pub async fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let r = self.memory_op(|s| s.write_at(name, offset, data, "write")).await;
        self.log("write", name, offset, data.len() as u64, hash_bytes(data), r.is_ok());
        r
    }

    /// Appends at the end of the file; returns the offset written at.
    pub async fn append(&self, name: &str, data: &[u8]) -> Result<u64, DiskError> {
        let r = self
            .memory_op(|s| s.append(name, data))
            .await;
        self.log("append", name, *r.as_ref().unwrap_or(&0), data.len() as u64, hash_bytes(data), r.is_ok());
        r
    }

    /// Reads up to `len` bytes at `offset`; fewer at the end of the file.
    pub async fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let avail = {
            let mut s = self.lock();
            s.inode_mut(name).map(|i| (i.data.len() as u64).saturating_sub(offset).min(len)).unwrap_or(0)
        };
        let read_latency = self.lock().cfg.read_latency;
        self.device_wait(read_latency + self.transfer(avail)).await;
        let r = self.lock().read_at(name, offset, len);
        let h = r.as_ref().map(|d| hash_bytes(d)).unwrap_or(0);
        self.log("read", name, offset, len, h, r.is_ok());
        r
    }

    /// Makes the file's data durable.
    pub async fn sync(&self, name: &str) -> Result<(), DiskError> {
        let dirty = self.lock().dirty_bytes(name);
        let r = match dirty {
            Err(e) => Err(e),
            Ok(dirty) => {
                let sync_latency = self.lock().cfg.sync_latency;
                self.device_wait(sync_latency + self.transfer(dirty)).await;
                self.lock().sync(name)
            }
        };
        self.log("sync", name, 0, 0, 0, r.is_ok());
        r
    }

    /// Makes creates, renames and removes so far durable.
    pub async fn sync_dir(&self) -> Result<(), DiskError> {
        let sync_latency = self.lock().cfg.sync_latency;
        self.device_wait(sync_latency).await;
        self.lock().sync_dir();
        self.log("sync_dir", "", 0, 0, 0, true);
        Ok(())
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let r = self.memory_op(|s| s.rename(from, to)).await;
        self.log("rename", from, 0, 0, hash_bytes(to.as_bytes()), r.is_ok());
        r
    }

    pub async fn remove(&self, name: &str) -> Result<(), DiskError> {
        let r = self.memory_op(|s| s.remove(name)).await;
        self.log("remove", name, 0, 0, 0, r.is_ok());
        r
    }

    /// Names starting with `prefix`, in order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.lock().names.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect()
    }

    pub fn len(&self, name: &str) -> Result<u64, DiskError> {
        self.lock().inode_mut(name).map(|i| i.data.len() as u64)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lock().names.contains_key(name)
    }

    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> DiskFaults {
        self.lock().faults.clone()
    }

    pub fn stats(&self) -> DiskStats {
        self.lock().stats.clone()
    }

    /// The device's busy nanoseconds in second `s` of model time.
    pub fn busy_in_second(&self, s: u64) -> u64 {
        self.lock().busy_seconds.get(&s).copied().unwrap_or(0)
    }

    /// Loses unsynced state as a crash does; the device queue empties.
    pub fn crash(&self) {
        tracing::debug!(target: "sim::disk", node = self.node, "crash: unsynced state lost");
        let mut s = self.lock();
        s.crash();
        s.busy_until = SimTime::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    fn disk(sector: u64, p: f64) -> DiskState {
        DiskState::new(DiskConfig { sector, crash_writeback: p, ..DiskConfig::default() }, stream(1, "disk"))
    }

    #[test]
    fn synced_data_survives_crash_and_unsynced_does_not() {
        let mut d = disk(4, 0.0);
        d.create("wal").unwrap();
        d.sync_dir();
        d.write_at("wal", 0, b"abcdefgh", "append").unwrap();
        d.sync("wal").unwrap();
        d.write_at("wal", 8, b"ijkl", "append").unwrap();
        d.write_at("wal", 2, b"XY", "write").unwrap();
        d.crash();
        assert_eq!(d.read_at("wal", 0, 100).unwrap(), b"abcdefgh");
    }

    #[test]
    fn torn_writes_keep_some_sectors() {
        // With writeback probability 1/2 over many sectors, a crash keeps
        // some sectors of an unsynced write and loses others.
        let mut d = disk(4, 0.5);
        d.create("f").unwrap();
        d.sync_dir();
        d.write_at("f", 0, &[7u8; 64], "write").unwrap();
        d.sync("f").unwrap();
        d.write_at("f", 0, &[9u8; 64], "write").unwrap();
        d.crash();
        let got = d.read_at("f", 0, 64).unwrap();
        assert_eq!(got.len(), 64);
        let new = got.chunks(4).filter(|c| c == &[9u8; 4]).count();
        let old = got.chunks(4).filter(|c| c == &[7u8; 4]).count();
        assert_eq!(new + old, 16, "every sector is wholly old or wholly new");
        assert!(new > 0 && old > 0, "torn: {new} new, {old} old");
    }

    #[test]
    fn torn_append_leaves_zero_holes() {
        // Over several seeds: every sector comes back whole or as zeros, and
        // some crash keeps a later sector while losing an earlier one.
        let mut holes = 0;
        for seed in 0..8 {
            let mut d = DiskState::new(DiskConfig { sector: 4, crash_writeback: 0.5, ..DiskConfig::default() }, stream(seed, "disk"));
            d.create("f").unwrap();
            d.sync_dir();
            d.write_at("f", 0, &[1u8; 4 * 40], "append").unwrap();
            d.crash();
            let got = d.read_at("f", 0, 1000).unwrap();
            assert!(got.len() % 4 == 0 && got.len() <= 160);
            assert!(got.chunks(4).all(|c| c == [1u8; 4] || c == [0u8; 4]));
            if got.chunks(4).any(|c| c == [0u8; 4]) {
                holes += 1;
            }
        }
        assert!(holes > 0, "a torn append leaves zero holes before kept sectors");
    }

    #[test]
    fn unsynced_namespace_changes_are_undone() {
        let mut d = disk(4, 0.0);
        d.create("a").unwrap();
        d.write_at("a", 0, b"1234", "write").unwrap();
        d.sync("a").unwrap();
        d.sync_dir();
        d.create("b").unwrap();
        d.rename("a", "c").unwrap();
        d.crash();
        let names: Vec<&String> = d.names.keys().collect();
        assert_eq!(names, ["a"]);
        assert_eq!(d.read_at("a", 0, 4).unwrap(), b"1234");
        d.remove("a").unwrap();
        d.crash();
        assert!(d.names.contains_key("a"), "an unsynced remove is undone");
        d.remove("a").unwrap();
        d.sync_dir();
        d.crash();
        assert!(d.names.is_empty());
    }

    #[test]
    fn a_directory_sync_makes_the_namespace_durable_and_frees_unnamed_files() {
        // The sync copies only the names changed since the last one; what it
        // leaves must be what copying the whole namespace would.
        let mut d = disk(4, 0.0);
        for name in ["a", "b", "c"] {
            d.create(name).unwrap();
            d.write_at(name, 0, b"1234", "write").unwrap();
            d.sync(name).unwrap();
        }
        d.sync_dir();
        assert_eq!(d.durable_names, d.names);
        // Rename over a durable file, remove one, create and remove a
        // temporary: until the sync, the replaced and removed files are
        // still durably named, the temporary is gone at once.
        d.create("tmp").unwrap();
        d.write_at("tmp", 0, b"xxxxxxxx", "write").unwrap();
        d.remove("tmp").unwrap();
        assert_eq!((d.inodes.len(), d.used_bytes), (3, 12), "a file never made durable is freed by its remove");
        d.rename("a", "b").unwrap();
        d.remove("c").unwrap();
        assert_eq!(d.inodes.len(), 3, "the old b and c are still durably named");
        d.sync_dir();
        assert_eq!(d.durable_names, d.names);
        assert_eq!(d.names.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!((d.inodes.len(), d.used_bytes), (1, 4), "the sync frees what no name holds");
        d.crash();
        assert_eq!(d.names.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(d.read_at("b", 0, 4).unwrap(), b"1234");
    }

    #[test]
    fn injected_faults_happen_and_are_counted() {
        let mut d = disk(4, 0.0);
        d.create("f").unwrap();
        d.write_at("f", 0, &[0u8; 32], "write").unwrap();
        d.faults = DiskFaults { read_error_rate: 1.0, ..Default::default() };
        assert!(matches!(d.read_at("f", 0, 4), Err(DiskError::Io { op: "read", .. })));
        d.faults = DiskFaults { write_error_rate: 1.0, ..Default::default() };
        assert!(matches!(d.write_at("f", 0, b"zz", "write"), Err(DiskError::Io { .. })));
        assert!(matches!(d.sync("f"), Err(DiskError::Io { op: "sync", .. })));
        d.faults = DiskFaults { bitflip_read_rate: 1.0, ..Default::default() };
        let r = d.read_at("f", 0, 32).unwrap();
        assert_eq!(r.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "one bit flipped in the returned bytes");
        d.faults = DiskFaults::default();
        assert_eq!(d.read_at("f", 0, 32).unwrap(), vec![0u8; 32], "a read flip is transient");
        d.faults = DiskFaults { bitflip_write_rate: 1.0, ..Default::default() };
        d.write_at("f", 0, &[0u8; 8], "write").unwrap();
        d.faults = DiskFaults::default();
        assert_eq!(d.read_at("f", 0, 8).unwrap().iter().map(|b| b.count_ones()).sum::<u32>(), 1, "a write flip is at rest");
        d.faults = DiskFaults { misdirect_rate: 1.0, ..Default::default() };
        d.write_at("f", 0, b"MMMM", "write").unwrap();
        d.faults = DiskFaults::default();
        assert_ne!(d.read_at("f", 0, 4).unwrap(), b"MMMM", "the intended place was not written");
        assert!(d.read_at("f", 0, 64).unwrap().windows(4).any(|w| w == b"MMMM"), "it landed elsewhere");
        d.faults = DiskFaults { full: true, ..Default::default() };
        assert!(matches!(d.write_at("f", 1000, b"x", "write"), Err(DiskError::NoSpace(_))));
        d.write_at("f", 0, b"ok", "write").expect("overwriting in place needs no space");
        assert_eq!(d.stats.injected_errors, 3);
        assert_eq!(d.stats.injected_bitflips, 2);
        assert_eq!(d.stats.misdirected_writes, 1);
    }

    #[test]
    fn failed_sync_keeps_data_unsynced() {
        let mut d = disk(4, 0.0);
        d.create("f").unwrap();
        d.sync_dir();
        d.write_at("f", 0, b"abcd", "write").unwrap();
        d.faults.write_error_rate = 1.0;
        assert!(d.sync("f").is_err());
        d.faults.write_error_rate = 0.0;
        d.crash();
        assert_eq!(d.read_at("f", 0, 4).unwrap(), b"", "a failed sync made nothing durable");
    }

    #[test]
    fn capacity_is_enforced() {
        let mut d = DiskState::new(DiskConfig { sector: 4, capacity: 10, ..DiskConfig::default() }, stream(1, "d"));
        d.create("f").unwrap();
        d.write_at("f", 0, &[1; 8], "w").unwrap();
        assert!(matches!(d.write_at("f", 8, &[1; 8], "w"), Err(DiskError::NoSpace(_))));
    }
}
