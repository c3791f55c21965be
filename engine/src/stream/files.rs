//! [`StreamFiles`]: the LSM's file interface ([`Files`]) on a namespace.
//!
//! Each file is a stream of the namespace. [`StreamFiles::open`] opens the
//! namespace (bumping its epoch, which fences the previous owner: this is
//! how a partition moving to a new server stops the old one) and keeps the
//! catalog (names and acknowledged lengths) in memory, so `list` and `len`
//! answer synchronously. An append is acknowledged only once three zones
//! hold it on disk, so `sync` has nothing left to do; creates and removes
//! are metadata transactions, durable when acknowledged, so `sync_dir` is a
//! no-op. `write_at` works only at the current end of a file; `rename` is
//! refused (the LSM does not use it).

use crate::fs::{Files, FsError};

use super::client::{Namespace, StreamClient};
use super::StreamError;

/// The LSM's files as streams of one namespace. Cheap to clone.
#[derive(Clone)]
pub struct StreamFiles {
    ns: Namespace,
}

fn fs_err(op: &'static str, name: &str, e: StreamError) -> FsError {
    match e {
        StreamError::NotFound(_) => FsError::NotFound(name.to_string()),
        StreamError::AlreadyExists(_) => FsError::AlreadyExists(name.to_string()),
        StreamError::Fenced => FsError::Io { op, file: format!("{name} (namespace owner fenced)") },
        _ => FsError::Io { op, file: name.to_string() },
    }
}

impl StreamFiles {
    /// Opens (and takes ownership of) namespace `ns`.
    pub async fn open(client: &StreamClient, ns: &str) -> Result<StreamFiles, StreamError> {
        Ok(StreamFiles { ns: client.open_namespace(ns).await? })
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
}

impl Files for StreamFiles {
    async fn create(&self, name: &str) -> Result<(), FsError> {
        self.ns.create(name).await.map_err(|e| fs_err("create", name, e))
    }

    async fn append(&self, name: &str, data: &[u8]) -> Result<u64, FsError> {
        let start = self.ns.len(name).ok_or_else(|| FsError::NotFound(name.to_string()))?;
        if data.is_empty() {
            return Ok(start);
        }
        // Flush and compaction output: the WAL's records are charged per
        // write by the table server.
        if !name.starts_with(crate::lsm::wal::WAL_PREFIX) {
            self.ns.client().charge_table_write(data.len()).await;
        }
        let mut first = None;
        for chunk in data.chunks(super::format::RECORD_DATA_MAX as usize) {
            let at = self.ns.append(name, chunk).await.map_err(|e| fs_err("append", name, e))?;
            first.get_or_insert(at);
        }
        Ok(first.unwrap_or(start))
    }

    async fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let len = self.ns.len(name).ok_or_else(|| FsError::NotFound(name.to_string()))?;
        if offset != len {
            return Err(FsError::Io { op: "write_at (streams are append-only)", file: name.to_string() });
        }
        self.append(name, data).await.map(|_| ())
    }

    async fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
        self.ns.read(name, offset, len).await.map_err(|e| fs_err("read", name, e))
    }

    async fn sync(&self, name: &str) -> Result<(), FsError> {
        if self.ns.is_deposed() {
            return Err(fs_err("sync", name, StreamError::Fenced));
        }
        self.ns.len(name).map(|_| ()).ok_or_else(|| FsError::NotFound(name.to_string()))
    }

    async fn sync_dir(&self) -> Result<(), FsError> {
        if self.ns.is_deposed() {
            return Err(fs_err("sync_dir", "", StreamError::Fenced));
        }
        Ok(())
    }

    async fn rename(&self, from: &str, _to: &str) -> Result<(), FsError> {
        Err(FsError::Io { op: "rename (not supported on streams)", file: from.to_string() })
    }

    async fn remove(&self, name: &str) -> Result<(), FsError> {
        self.ns.remove(name).await.map_err(|e| fs_err("remove", name, e))
    }

    fn list(&self, prefix: &str) -> Vec<String> {
        self.ns.streams().into_iter().map(|(n, _)| n).filter(|n| n.starts_with(prefix)).collect()
    }

    fn len(&self, name: &str) -> Result<u64, FsError> {
        self.ns.len(name).ok_or_else(|| FsError::NotFound(name.to_string()))
    }
}
