//! The file interface the LSM is written against.
//!
//! [`Files`] is a flat namespace of append-mostly files with explicit
//! durability: data is durable after [`Files::sync`] of its file, and
//! creates, renames and removes are durable after [`Files::sync_dir`]. The
//! simulated local disk ([`sim::Disk`]) implements it here; the replicated
//! stream layer implements it too, so the LSM never knows whether its files
//! live on one disk or in three zones.
//!
//! Invariants callers rely on:
//! - a call that returned `Err` changed nothing durable it had not already
//!   made durable, and a failed `sync` may be retried;
//! - without injected faults, a read returns the bytes last written;
//! - `list` returns names in ascending byte order.

use std::future::Future;

/// A typed file-layer error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("file not found: {0}")]
    NotFound(String),
    #[error("file already exists: {0}")]
    AlreadyExists(String),
    #[error("i/o error during {op} of {file}")]
    Io { op: &'static str, file: String },
    #[error("no space left writing {0}")]
    NoSpace(String),
}

impl From<sim::DiskError> for FsError {
    fn from(e: sim::DiskError) -> FsError {
        match e {
            sim::DiskError::NotFound(f) => FsError::NotFound(f),
            sim::DiskError::AlreadyExists(f) => FsError::AlreadyExists(f),
            sim::DiskError::Io { op, file } => FsError::Io { op, file },
            sim::DiskError::NoSpace(f) => FsError::NoSpace(f),
            other => FsError::Io { op: "unknown", file: other.to_string() },
        }
    }
}

/// Files as the LSM sees them. Futures need not be `Send`: the engine runs
/// its tasks on the simulation's single thread (`spawn_local`).
pub trait Files: Clone + Send + Sync + 'static {
    /// Creates an empty file; fails if the name exists.
    fn create(&self, name: &str) -> impl Future<Output = Result<(), FsError>>;
    /// Appends at the end of the file; returns the offset written at.
    fn append(&self, name: &str, data: &[u8]) -> impl Future<Output = Result<u64, FsError>>;
    /// Writes at an offset, extending the file with zeros if needed.
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> impl Future<Output = Result<(), FsError>>;
    /// Reads up to `len` bytes at `offset`; fewer at the end of the file.
    fn read_at(&self, name: &str, offset: u64, len: u64) -> impl Future<Output = Result<Vec<u8>, FsError>>;
    /// Makes the file's data durable.
    fn sync(&self, name: &str) -> impl Future<Output = Result<(), FsError>>;
    /// Makes creates, renames and removes so far durable.
    fn sync_dir(&self) -> impl Future<Output = Result<(), FsError>>;
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = Result<(), FsError>>;
    fn remove(&self, name: &str) -> impl Future<Output = Result<(), FsError>>;
    /// Names starting with `prefix`, ascending.
    fn list(&self, prefix: &str) -> Vec<String>;
    /// Current length of the file in bytes.
    fn len(&self, name: &str) -> Result<u64, FsError>;
}

impl Files for sim::Disk {
    async fn create(&self, name: &str) -> Result<(), FsError> {
        sim::Disk::create(self, name).await.map_err(FsError::from)
    }
    async fn append(&self, name: &str, data: &[u8]) -> Result<u64, FsError> {
        sim::Disk::append(self, name, data).await.map_err(FsError::from)
    }
    async fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        sim::Disk::write_at(self, name, offset, data).await.map_err(FsError::from)
    }
    async fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
        sim::Disk::read_at(self, name, offset, len).await.map_err(FsError::from)
    }
    async fn sync(&self, name: &str) -> Result<(), FsError> {
        sim::Disk::sync(self, name).await.map_err(FsError::from)
    }
    async fn sync_dir(&self) -> Result<(), FsError> {
        sim::Disk::sync_dir(self).await.map_err(FsError::from)
    }
    async fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        sim::Disk::rename(self, from, to).await.map_err(FsError::from)
    }
    async fn remove(&self, name: &str) -> Result<(), FsError> {
        sim::Disk::remove(self, name).await.map_err(FsError::from)
    }
    fn list(&self, prefix: &str) -> Vec<String> {
        sim::Disk::list(self, prefix)
    }
    fn len(&self, name: &str) -> Result<u64, FsError> {
        sim::Disk::len(self, name).map_err(FsError::from)
    }
}
