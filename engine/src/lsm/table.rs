//! The table model of the store on top of the LSM ([`Db`]).
//!
//! - Rows are keyed by 1 to [`PK_COLUMNS_MAX`] typed primary-key columns;
//!   the first is the partition key. Attribute columns are schema-free.
//! - Each cell is multi-versioned by a timestamp (ms, from the engine's
//!   clock unless the writer gives one). Per table, `max_versions` newest
//!   versions are retained and cells older than `ttl_ms` are invisible.
//! - A put replaces the whole row; an update puts cells, deletes all
//!   versions of a column or one version; a delete removes the row.
//! - Conditions (row exists / not exists / column equals) are checked under
//!   the write lock against every write already ordered before this one.
//! - The auto-increment column gets `last + 1` per partition-key value. The
//!   counter is stored in the same atomic batch as the row, so an
//!   acknowledged value survives crashes and the next value after recovery
//!   is exactly the last durable one + 1: values are consecutive.
//! - A batch of row writes within one partition is one atomic WAL batch.
//!
//! Visibility (the retention rule compaction preserves): for each column,
//! versions written after the newest row or column tombstone and not
//! expired compete for `max_versions` slots by timestamp; a deleted version
//! keeps its slot; the visible versions are the puts among the slots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::fs::Files;
use crate::lsm::db::{ClockFn, Db, GcPolicy, Options, Snapshot, Ticket};
use crate::lsm::error::{Error, Result};
use crate::lsm::keys::{self, Comp, Suffix};
use crate::lsm::recovery::{self, RecoveryReport};
use crate::lsm::{Dir, Entry};

pub const PK_COLUMNS_MAX: usize = 4;
/// Most rows in one atomic batch.
pub const BATCH_ROWS_MAX: usize = 64;
/// Most column operations in one row write.
pub const COLUMN_OPS_MAX: usize = 64;
pub const VALUE_BYTES_MAX: usize = 64 << 10;
pub const MAX_VERSIONS_MAX: u32 = 100;
/// Most rows one scan page returns.
pub const SCAN_LIMIT_MAX: usize = 1000;
/// Most entries one scan page examines; a page that reaches it ends early
/// (fewer rows than asked, with a resume token).
pub const SCAN_ENTRIES_EXAMINED_MAX: usize = 100_000;
/// Auto-increment counters cached per table before the cache is cleared.
pub const COUNTER_CACHE_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PkType {
    Int,
    Str,
    Bin,
}

/// A primary-key value; `AutoInc` asks the partition to assign one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum PkValue {
    Int(i64),
    Str(String),
    Bin(Vec<u8>),
    AutoInc,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Value {
    Int(i64),
    Str(String),
    Bin(Vec<u8>),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableSchema {
    pub name: String,
    pub pk: Vec<(String, PkType)>,
    /// Index of the auto-increment primary-key column (an integer column,
    /// never the partition key).
    pub auto_increment: Option<usize>,
    pub max_versions: u32,
    pub ttl_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Ignore,
    RowExists,
    RowNotExists,
    ColumnEquals(String, Value),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnOp {
    Put { column: String, value: Value, ts: Option<u64> },
    DeleteColumn(String),
    DeleteVersion(String, u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowChange {
    /// Replaces the row with these cells.
    Put(Vec<(String, Value)>),
    Update(Vec<ColumnOp>),
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowWrite {
    pub pk: Vec<PkValue>,
    pub change: RowChange,
    pub cond: Condition,
}

/// What a submitted write was assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Primary keys with auto-increment values filled in.
    pub pks: Vec<Vec<PkValue>>,
    /// Timestamp given to cells written without one.
    pub ts: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub pk: Vec<PkValue>,
    /// Column to versions, newest first: (timestamp, value).
    pub columns: BTreeMap<String, Vec<(u64, Value)>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    pub max_versions: u32,
    pub as_of: Option<u64>,
    pub columns: Option<Vec<String>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { max_versions: 1, as_of: None, columns: None }
    }
}

/// Where a scan continues: strictly after (forward) or before (backward) `row`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResumeToken {
    pub row: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    /// Inclusive start and exclusive end primary keys (full keys).
    pub start: Option<Vec<PkValue>>,
    pub end: Option<Vec<PkValue>>,
    pub dir: Dir,
    pub limit: usize,
    pub resume: Option<ResumeToken>,
    pub read: ReadOptions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub rows: Vec<Row>,
    pub next: Option<ResumeToken>,
}

/// One partition's table.
pub struct Table<F: Files> {
    db: Db<F>,
    schema: Arc<TableSchema>,
    counters: Arc<Mutex<BTreeMap<Vec<u8>, u64>>>,
}

impl<F: Files> Clone for Table<F> {
    fn clone(&self) -> Self {
        Table { db: self.db.clone(), schema: self.schema.clone(), counters: self.counters.clone() }
    }
}

fn invalid(s: impl Into<String>) -> Error {
    Error::InvalidArgument(s.into())
}

pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Int(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(2);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bin(b) => {
            out.push(3);
            out.extend_from_slice(b);
        }
        Value::Bool(b) => out.extend_from_slice(&[4, u8::from(*b)]),
    }
    out
}

pub fn decode_value(b: &[u8]) -> Result<Value> {
    let bad = || Error::corrupt("cell value", 0, format!("malformed value of {} bytes", b.len()));
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    Ok(match tag {
        1 => Value::Int(i64::from_le_bytes(rest.try_into().map_err(|_| bad())?)),
        2 => Value::Str(String::from_utf8(rest.to_vec()).map_err(|_| bad())?),
        3 => Value::Bin(rest.to_vec()),
        4 if rest.len() == 1 && rest[0] <= 1 => Value::Bool(rest[0] == 1),
        _ => return Err(bad()),
    })
}

impl TableSchema {
    pub fn validate(&self) -> Result<()> {
        if self.pk.is_empty() || self.pk.len() > PK_COLUMNS_MAX {
            return Err(invalid(format!("a primary key has 1..={PK_COLUMNS_MAX} columns")));
        }
        if let Some(i) = self.auto_increment {
            if i == 0 || i >= self.pk.len() || self.pk[i].1 != PkType::Int {
                return Err(invalid("the auto-increment column is an integer column after the partition key"));
            }
        }
        if self.max_versions == 0 || self.max_versions > MAX_VERSIONS_MAX {
            return Err(invalid(format!("max_versions must be 1..={MAX_VERSIONS_MAX}")));
        }
        Ok(())
    }

    /// Encodes a full primary key (no `AutoInc` left).
    pub fn encode_pk(&self, pk: &[PkValue]) -> Result<Vec<u8>> {
        if pk.len() != self.pk.len() {
            return Err(invalid(format!("primary key has {} columns, table has {}", pk.len(), self.pk.len())));
        }
        let mut out = Vec::new();
        for (v, (name, t)) in pk.iter().zip(&self.pk) {
            match (v, t) {
                (PkValue::Int(i), PkType::Int) => keys::put_int(&mut out, *i),
                (PkValue::Str(s), PkType::Str) => keys::put_bytes(&mut out, keys::TAG_STR, s.as_bytes()),
                (PkValue::Bin(b), PkType::Bin) => keys::put_bytes(&mut out, keys::TAG_BIN, b),
                _ => return Err(invalid(format!("primary key column {name} has the wrong type"))),
            }
        }
        Ok(out)
    }

    pub fn decode_pk(&self, row: &[u8]) -> Result<Vec<PkValue>> {
        let bad = || Error::corrupt("row key", 0, "malformed primary key");
        let mut pos = 0;
        let mut out = Vec::new();
        for _ in &self.pk {
            let (c, next) = keys::decode_comp(row, pos).ok_or_else(bad)?;
            out.push(match c {
                Comp::Int(i) => PkValue::Int(i),
                Comp::Str(s) => PkValue::Str(String::from_utf8(s).map_err(|_| bad())?),
                Comp::Bin(b) => PkValue::Bin(b),
            });
            pos = next;
        }
        if pos != row.len() {
            return Err(bad());
        }
        Ok(out)
    }
}

fn counter_key(schema: &TableSchema, pk0: &PkValue) -> Result<Vec<u8>> {
    let mut k = vec![keys::META];
    let head = schema.encode_pk_prefix(pk0)?;
    k.extend_from_slice(&head);
    Ok(k)
}

impl TableSchema {
    fn encode_pk_prefix(&self, pk0: &PkValue) -> Result<Vec<u8>> {
        let one = TableSchema { pk: vec![self.pk[0].clone()], ..self.clone() };
        one.encode_pk(std::slice::from_ref(pk0))
    }
}

/// Applies the visibility rule to one row's entries (ascending key order).
fn assemble(schema: &TableSchema, pk: Vec<PkValue>, entries: &[Entry], opts: &ReadOptions, now_ms: u64) -> Result<Option<Row>> {
    let expired = |ts: u64| schema.ttl_ms.is_some_and(|ttl| ts.saturating_add(ttl) <= now_ms);
    let mut row_del = 0u64;
    let mut columns: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    let mut cur: Option<(String, u64, u32)> = None;
    for e in entries {
        let rl = keys::row_len(&e.key);
        match keys::parse_suffix("row", &e.key, rl)? {
            Suffix::RowTombstone => {
                if e.value.is_some() {
                    row_del = e.seq;
                }
            }
            Suffix::ColumnTombstone(c) => {
                let del = if e.value.is_some() { e.seq } else { 0 };
                cur = Some((c, row_del.max(del), 0));
            }
            Suffix::Version(c, ts) => {
                if cur.as_ref().is_none_or(|(n, _, _)| *n != c) {
                    cur = Some((c.clone(), row_del, 0));
                }
                let (_, hide, used) = cur.as_mut().expect("set above");
                if e.seq < *hide || expired(ts) || *used >= schema.max_versions {
                    continue;
                }
                *used += 1;
                let Some(v) = &e.value else { continue };
                if opts.as_of.is_some_and(|t| ts > t) || opts.columns.as_ref().is_some_and(|cs| !cs.contains(&c)) {
                    continue;
                }
                let vs = columns.entry(c).or_default();
                if (vs.len() as u32) < opts.max_versions {
                    vs.push((ts, decode_value(v)?));
                }
            }
        }
    }
    Ok(if columns.is_empty() { None } else { Some(Row { pk, columns }) })
}

impl<F: Files> Table<F> {
    /// Opens (recovering) the table's partition stored in `fs`.
    pub async fn open(fs: F, schema: TableSchema, opts: Options, clock: ClockFn) -> Result<(Table<F>, RecoveryReport)> {
        schema.validate()?;
        let gc = GcPolicy { ttl_ms: schema.ttl_ms, max_versions: schema.max_versions };
        let (db, report) = recovery::open(fs, opts, gc, clock).await?;
        Ok((Table { db, schema: Arc::new(schema), counters: Arc::default() }, report))
    }

    pub fn db(&self) -> &Db<F> {
        &self.db
    }

    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// Stops the engine's background tasks (see [`Db::kill`]).
    pub fn kill(&self) {
        self.db.kill();
    }

    async fn row_entries(&self, snap: &Snapshot, row: &[u8]) -> Result<Vec<Entry>> {
        let hi = keys::prefix_end(row);
        let mut c = self.db.cursor(snap, row, hi.as_deref(), Dir::Forward, Some(row));
        let mut out = Vec::new();
        while let Some(e) = self.db.next(&mut c).await? {
            out.push(e);
        }
        Ok(out)
    }

    async fn counter(&self, snap: &Snapshot, key: &[u8]) -> Result<u64> {
        if let Some(v) = self.counters.lock().expect("counters lock").get(key) {
            return Ok(*v);
        }
        let entries = self.row_entries(snap, key).await?;
        let v = match entries.iter().find(|e| e.key == key) {
            None => 0,
            Some(Entry { value: Some(b), .. }) if b.len() == 8 => u64::from_le_bytes(b.as_slice().try_into().expect("8 bytes")),
            Some(_) => return Err(Error::corrupt("counter", 0, "malformed auto-increment counter")),
        };
        Ok(v)
    }

    fn check_write(&self, w: &RowWrite) -> Result<()> {
        let n = match &w.change {
            RowChange::Put(cols) => {
                if cols.is_empty() {
                    return Err(invalid("a put writes at least one column"));
                }
                for (c, v) in cols {
                    keys::check_column(c)?;
                    if encode_value(v).len() > VALUE_BYTES_MAX {
                        return Err(Error::LimitExceeded { what: "value bytes", limit: VALUE_BYTES_MAX as u64 });
                    }
                }
                cols.len()
            }
            RowChange::Update(ops) => {
                if ops.is_empty() {
                    return Err(invalid("an update has at least one operation"));
                }
                for op in ops {
                    match op {
                        ColumnOp::Put { column, value, .. } => {
                            keys::check_column(column)?;
                            if encode_value(value).len() > VALUE_BYTES_MAX {
                                return Err(Error::LimitExceeded { what: "value bytes", limit: VALUE_BYTES_MAX as u64 });
                            }
                        }
                        ColumnOp::DeleteColumn(c) | ColumnOp::DeleteVersion(c, _) => keys::check_column(c)?,
                    }
                }
                ops.len()
            }
            RowChange::Delete => 0,
        };
        if n > COLUMN_OPS_MAX {
            return Err(Error::LimitExceeded { what: "column operations", limit: COLUMN_OPS_MAX as u64 });
        }
        if let Condition::ColumnEquals(c, _) = &w.cond {
            keys::check_column(c)?;
        }
        for (i, v) in w.pk.iter().enumerate() {
            if *v == PkValue::AutoInc && (Some(i) != self.schema.auto_increment || !matches!(w.change, RowChange::Put(_))) {
                return Err(invalid("only a put may ask for an auto-increment value, in the auto-increment column"));
            }
        }
        Ok(())
    }

    /// Orders an atomic batch of row writes within one partition: checks
    /// conditions, assigns auto-increment values and sequence numbers. The
    /// write is durable once the returned ticket resolves `Ok`.
    pub async fn submit(&self, rows: Vec<RowWrite>) -> Result<(Assigned, Ticket)> {
        if rows.is_empty() || rows.len() > BATCH_ROWS_MAX {
            return Err(Error::LimitExceeded { what: "batch rows", limit: BATCH_ROWS_MAX as u64 });
        }
        for w in &rows {
            self.check_write(w)?;
            if w.pk.first() != rows[0].pk.first() {
                return Err(invalid("a batch stays within one partition"));
            }
        }
        let guard = self.db.lock_writes().await;
        let snap = self.db.snapshot(true);
        let now = self.db.now_ms();
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut pks = Vec::new();
        let mut counter_updates: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut seen_rows = std::collections::BTreeSet::new();
        for w in &rows {
            let mut pk = w.pk.clone();
            if let Some(ai) = self.schema.auto_increment {
                let ck = counter_key(&self.schema, &pk[0])?;
                let cur = match counter_updates.get(&ck) {
                    Some(v) => *v,
                    None => self.counter(&snap, &ck).await?,
                };
                match pk.get(ai) {
                    Some(PkValue::AutoInc) => {
                        counter_updates.insert(ck, cur + 1);
                        pk[ai] = PkValue::Int(cur as i64 + 1);
                    }
                    Some(PkValue::Int(v)) if *v < 1 || *v as u64 > cur => {
                        return Err(invalid(format!("auto-increment value {v} was never assigned")));
                    }
                    _ => {}
                }
            }
            let row = self.schema.encode_pk(&pk)?;
            if !seen_rows.insert(row.clone()) {
                return Err(invalid("a batch writes each row at most once"));
            }
            if w.cond != Condition::Ignore {
                let cur = assemble(&self.schema, pk.clone(), &self.row_entries(&snap, &row).await?, &ReadOptions::default(), now)?;
                let ok = match &w.cond {
                    Condition::Ignore => true,
                    Condition::RowExists => cur.is_some(),
                    Condition::RowNotExists => cur.is_none(),
                    Condition::ColumnEquals(c, v) => cur.as_ref().and_then(|r| r.columns.get(c)).and_then(|vs| vs.first()).is_some_and(|(_, x)| x == v),
                };
                if !ok {
                    return Err(Error::ConditionFailed(format!("{:?} does not hold for {pk:?}", w.cond)));
                }
            }
            match &w.change {
                RowChange::Put(cols) => {
                    entries.push((keys::row_tombstone_key(&row), Some(Vec::new())));
                    for (c, v) in cols {
                        entries.push((keys::version_key(&row, c, now), Some(encode_value(v))));
                    }
                }
                RowChange::Update(ops) => {
                    for op in ops {
                        entries.push(match op {
                            ColumnOp::Put { column, value, ts } => (keys::version_key(&row, column, ts.unwrap_or(now)), Some(encode_value(value))),
                            ColumnOp::DeleteColumn(c) => (keys::column_tombstone_key(&row, c), Some(Vec::new())),
                            ColumnOp::DeleteVersion(c, ts) => (keys::version_key(&row, c, *ts), None),
                        });
                    }
                }
                RowChange::Delete => entries.push((keys::row_tombstone_key(&row), Some(Vec::new()))),
            }
            pks.push(pk);
        }
        for (k, v) in &counter_updates {
            entries.push((k.clone(), Some(v.to_le_bytes().to_vec())));
        }
        let ticket = self.db.submit(&guard, entries).await?;
        let mut cache = self.counters.lock().expect("counters lock");
        if cache.len() + counter_updates.len() > COUNTER_CACHE_MAX {
            cache.clear();
        }
        cache.extend(counter_updates);
        drop(cache);
        drop(guard);
        Ok((Assigned { pks, ts: now, first_seq: ticket.first_seq, last_seq: ticket.last_seq }, ticket))
    }

    /// Writes an atomic batch and waits until it is durable.
    pub async fn write(&self, rows: Vec<RowWrite>) -> Result<Assigned> {
        let (a, t) = self.submit(rows).await?;
        t.wait().await?;
        Ok(a)
    }

    pub async fn get_row(&self, pk: &[PkValue], opts: &ReadOptions) -> Result<Option<Row>> {
        let row = self.schema.encode_pk(pk)?;
        let snap = self.db.snapshot(false);
        let entries = self.row_entries(&snap, &row).await?;
        assemble(&self.schema, pk.to_vec(), &entries, opts, self.db.now_ms())
    }

    /// One page of a range scan.
    pub async fn scan(&self, req: &ScanRequest) -> Result<ScanPage> {
        if req.limit == 0 || req.limit > SCAN_LIMIT_MAX {
            return Err(Error::LimitExceeded { what: "scan limit", limit: SCAN_LIMIT_MAX as u64 });
        }
        let mut lo = match &req.start {
            Some(pk) => self.schema.encode_pk(pk)?,
            None => vec![keys::TAG_INT],
        };
        let mut hi = match &req.end {
            Some(pk) => Some(self.schema.encode_pk(pk)?),
            None => None,
        };
        if let Some(t) = &req.resume {
            match req.dir {
                Dir::Forward => lo = lo.max(keys::prefix_end(&t.row).ok_or_else(|| invalid("bad resume token"))?),
                Dir::Backward => hi = Some(hi.map_or(t.row.clone(), |h| h.min(t.row.clone()))),
            }
        }
        let snap = self.db.snapshot(false);
        let now = self.db.now_ms();
        let mut c = self.db.cursor(&snap, &lo, hi.as_deref(), req.dir, None);
        let mut rows = Vec::new();
        let mut group: Vec<Entry> = Vec::new();
        let mut examined = 0usize;
        loop {
            let e = self.db.next(&mut c).await?;
            examined += 1;
            let row_of = |e: &Entry| e.key[..keys::row_len(&e.key)].to_vec();
            let boundary = match (&e, group.last()) {
                (Some(e), Some(g)) => row_of(e) != row_of(g),
                (None, Some(_)) => true,
                _ => false,
            };
            if boundary {
                let row = row_of(group.last().expect("non-empty"));
                if req.dir == Dir::Backward {
                    group.reverse();
                }
                let pk = self.schema.decode_pk(&row)?;
                if let Some(r) = assemble(&self.schema, pk, &group, &req.read, now)? {
                    rows.push(r);
                }
                group.clear();
                if rows.len() == req.limit || examined >= SCAN_ENTRIES_EXAMINED_MAX {
                    return Ok(ScanPage { rows, next: Some(ResumeToken { row }) });
                }
            }
            match e {
                Some(e) => group.push(e),
                None => return Ok(ScanPage { rows, next: None }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_corruption() {
        for v in [Value::Int(-3), Value::Str("héllo".into()), Value::Bin(vec![0, 1]), Value::Bool(true)] {
            assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }
        assert!(decode_value(&[9]).unwrap_err().is_corruption());
        assert!(decode_value(&[1, 2]).unwrap_err().is_corruption());
    }

    #[test]
    fn schema_validation_and_pk_round_trip() {
        let s = TableSchema { name: "t".into(), pk: vec![("p".into(), PkType::Str), ("id".into(), PkType::Int)], auto_increment: Some(1), max_versions: 3, ttl_ms: None };
        s.validate().unwrap();
        let pk = vec![PkValue::Str("a\0b".into()), PkValue::Int(-7)];
        assert_eq!(s.decode_pk(&s.encode_pk(&pk).unwrap()).unwrap(), pk);
        assert!(TableSchema { auto_increment: Some(0), ..s.clone() }.validate().is_err());
        assert!(TableSchema { pk: vec![], ..s.clone() }.validate().is_err());
        assert!(s.encode_pk(&[PkValue::Int(1), PkValue::Int(1)]).is_err());
    }
}
