//! The key-value workload against the table store: [`TableKv`] puts the
//! table client behind [`KvService`], so the same processes, histories and
//! checkers run against minikv and the table store, and [`setup`] creates
//! the instance and the table they use.
//!
//! Rows: a workload's row keys (`k00000042`) and auto-increment partition
//! keys (`u0007`) live in one table, [`TABLE`], split into
//! `service.partitions` range partitions at evenly spaced row keys.

use engine::table::client::{ReadAnswer, TableClient};
use engine::table::part::RowVal;
use engine::table::{TableError, CELL_BYTES_MAX, KEY_BYTES_MAX};
use sim::time;
use std::collections::BTreeMap;
use std::time::Duration;

use super::badreq::{self, BadAnswer, BadKind, BadLog, BadRequest};
use super::kv::{key_name, key_prefix, Answer, KvService};
use crate::scenario::{Quota, QuotaOp, QuotaUnit};
use engine::table::quota::{Limit, OpClass, QuotaEntry, Unit};
use sim::time::SimTime;
use crate::history::Op;

/// The instance, its access key and the table every workload uses.
pub const INSTANCE: &str = "tablesim";
pub const ACCESS_KEY: &str = "tablesim-key";
pub const TABLE: &str = "rows";
/// The error of a conditional write whose condition failed (the report's
/// availability counts it as an answer).
pub const CAS_MISMATCH: &str = "cas mismatch";
/// Rows one scan asks for.
pub const SCAN_LIMIT: u32 = 100;
/// Attempts at creating the instance and the table before giving up.
pub const SETUP_ATTEMPTS_MAX: u32 = 400;
/// How long set-up waits for the roles to come up before its first call.
pub const SETUP_DELAY: Duration = Duration::from_millis(300);
/// Pause between set-up attempts.
pub const SETUP_RETRY: Duration = Duration::from_millis(25);
/// Scenarios with bad requests: a second instance with its own key and
/// table, whose table the workload's bad requests ask for with the first
/// instance's key (and whose key they use on the first instance's table).
pub const OTHER_INSTANCE: &str = "tablesim-other";
pub const OTHER_ACCESS_KEY: &str = "tablesim-other-key";
pub const OTHER_TABLE: &str = "ledger";
/// The access key a wrong-key bad request presents.
pub const WRONG_ACCESS_KEY: &str = "tablesim-key-guessed";
/// Bytes of an oversized bad cell (over [`CELL_BYTES_MAX`]).
pub const OVERSIZED_CELL_BYTES: usize = CELL_BYTES_MAX + 64;

/// Another instance (tenant) of a scenario: its name and its key space
/// (its workloads' keys begin with `{instance}.`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub instance: String,
    pub keys: u64,
}

/// The access key of a tenant instance.
pub fn tenant_access_key(instance: &str) -> String {
    format!("{instance}-key")
}

/// The store's name of a scenario's instance (`None`: the main one).
pub fn store_instance(instance: Option<&str>) -> &str {
    instance.unwrap_or(INSTANCE)
}

/// The store's kind of a quota's operations.
pub fn op_class(op: QuotaOp) -> OpClass {
    match op {
        QuotaOp::Read => OpClass::Read,
        QuotaOp::Write => OpClass::Write,
        QuotaOp::Scan => OpClass::Scan,
    }
}

/// The store's unit of a quota.
pub fn unit_of(u: QuotaUnit) -> Unit {
    match u {
        QuotaUnit::Requests => Unit::Requests,
        QuotaUnit::Bytes => Unit::Bytes,
        QuotaUnit::Rows => Unit::Rows,
    }
}

/// The quotas of `instance` in force at `at` (creation: `None`): for each
/// table and kind, the latest entry from at or before then.
pub fn quotas_at(quotas: &[Quota], instance: Option<&str>, at: Option<Duration>) -> Vec<QuotaEntry> {
    let mut latest: BTreeMap<(bool, QuotaOp, QuotaUnit), &Quota> = BTreeMap::new();
    for q in quotas.iter().filter(|q| q.instance.as_deref() == instance && q.at.unwrap_or_default() <= at.unwrap_or_default()) {
        let e = latest.entry((q.table, q.class, q.unit)).or_insert(q);
        if q.at.unwrap_or_default() >= e.at.unwrap_or_default() {
            *e = q;
        }
    }
    latest.values().map(|q| QuotaEntry { table: q.table.then(|| TABLE.to_string()), class: op_class(q.class), unit: unit_of(q.unit), limit: Limit { rate: q.rate, burst: q.burst } }).collect()
}

/// Makes the scenario's quota changes (`[[quota]]` entries with `at`)
/// through the master, each at its time.
pub async fn quota_changes(client: &TableClient, quotas: &[Quota]) {
    let mut times: Vec<Duration> = quotas.iter().filter_map(|q| q.at).collect();
    times.sort();
    times.dedup();
    for at in times {
        time::sleep_until(SimTime::from_duration(at)).await;
        let mut instances: Vec<Option<&str>> = quotas.iter().filter(|q| q.at == Some(at)).map(|q| q.instance.as_deref()).collect();
        instances.dedup();
        for i in instances {
            let _ = client.set_quota(store_instance(i), quotas_at(quotas, i, Some(at))).await;
        }
    }
}

/// The table client as a key-value service.
#[derive(Clone)]
pub struct TableKv {
    client: TableClient,
    /// The tenants' key prefixes and clients (their credentials).
    tenants: Vec<(String, TableClient)>,
    /// Where bad requests and scans that see their rows are recorded.
    bad: Option<BadLog>,
    /// Columns per row beside the value (0: one-value rows).
    columns: u32,
    /// Point reads of hot keys may be served by the client's HotZone (a
    /// workload process's client; never the final reader's).
    hotzone: bool,
}

impl TableKv {
    pub fn new(client: TableClient, bad: Option<BadLog>, columns: u32, tenants: &[Tenant]) -> TableKv {
        let tenants = tenants.iter().map(|t| (key_prefix(Some(&t.instance)), client.with_credentials(&t.instance, &tenant_access_key(&t.instance)))).collect();
        TableKv { client, tenants, bad, columns, hotzone: false }
    }

    /// The client of the instance whose rows `op` touches.
    fn client_for(&self, op: &Op) -> &TableClient {
        let key = match op {
            Op::Append { pkey, .. } => pkey.as_str(),
            Op::Scan { start, .. } => start.as_str(),
            other => other.register_key().unwrap_or(""),
        };
        self.tenants.iter().find(|(p, _)| key.starts_with(p.as_str())).map_or(&self.client, |(_, c)| c)
    }

    /// The client, table and operation of a bad request.
    fn bad_form(&self, req: &BadRequest) -> (TableClient, &'static str, Op) {
        let own = || self.client.clone();
        let mut op = req.op.clone();
        match req.kind {
            BadKind::MissingKey => (self.client.with_credentials(INSTANCE, ""), TABLE, op),
            BadKind::WrongKey => (self.client.with_credentials(INSTANCE, WRONG_ACCESS_KEY), TABLE, op),
            BadKind::ForeignTable if req.variant % 2 == 0 => (own(), OTHER_TABLE, op),
            BadKind::ForeignTable => (self.client.with_credentials(OTHER_INSTANCE, OTHER_ACCESS_KEY), TABLE, op),
            BadKind::BadRowKey => {
                let bad = |k: &str| match req.variant % 3 {
                    0 => String::new(),
                    1 => "k".repeat(KEY_BYTES_MAX + 1),
                    _ => format!("{k} x"),
                };
                match &mut op {
                    Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } | Op::Delete { key } => *key = bad(key),
                    Op::Append { pkey, .. } => *pkey = bad(pkey),
                    // An empty start is the table's beginning: spoil the end.
                    Op::Scan { end, .. } => *end = bad(end),
                    Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => {}
                }
                (own(), TABLE, op)
            }
            BadKind::OversizedCell => {
                let grow = |v: &str| format!("{v}{}", "x".repeat(OVERSIZED_CELL_BYTES.saturating_sub(v.len())));
                let op = match op {
                    Op::Write { key, value } => Op::Write { value: grow(&value), key },
                    Op::Cas { key, expected, value } => Op::Cas { value: grow(&value), key, expected },
                    other => {
                        let key = other.register_key().unwrap_or("k0").to_string();
                        Op::Write { value: grow(&format!("{}{key}", badreq::MARKER)), key }
                    }
                };
                (own(), TABLE, op)
            }
        }
    }
}

/// Runs a workload operation on `table` through `client`: the operation
/// with its outputs, and a scan's rows.
async fn run_op(client: &TableClient, table: &str, op: &Op, columns: u32) -> Result<(Op, Vec<(String, String)>), TableError> {
    let c = client;
    match op.clone() {
        Op::Read { key, .. } if columns > 0 => c.get_row(table, &key).await.map(|row| (Op::Read { key, value: row.map(|r| read_wide(r, columns)) }, Vec::new())),
        Op::Read { key, .. } => c.get(table, &key).await.map(|value| (Op::Read { key, value }, Vec::new())),
        Op::Write { ref key, ref value } if columns > 0 => c.put_row(table, key, value, wide_columns(value, columns)).await.map(|()| (op.clone(), Vec::new())),
        Op::Write { ref key, ref value } => c.put(table, key, value).await.map(|()| (op.clone(), Vec::new())),
        Op::Cas { ref key, ref expected, ref value } => c.cas(table, key, expected.as_deref(), value).await.map(|()| (op.clone(), Vec::new())),
        Op::Delete { ref key } => c.delete(table, key).await.map(|()| (op.clone(), Vec::new())),
        Op::Append { pkey, .. } => c.append(table, &pkey).await.map(|seq| (Op::Append { pkey, seq: Some(seq) }, Vec::new())),
        Op::Scan { start, end, .. } => c.scan(table, &start, &end, SCAN_LIMIT).await.map(|rows| (Op::Scan { start, end, count: Some(rows.len() as u64) }, rows)),
        Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => Err(TableError::Failed("the table service serves no streams".into())),
    }
}

/// What a value read from a wide row is prefixed with when the row's
/// columns do not match it: no write wrote that, so the checkers flag it.
pub const TORN_ROW: &str = "torn-row:";

/// The columns a wide-row write puts beside `value`: `c00`.. each holding
/// the value and the column's number.
pub fn wide_columns(value: &str, columns: u32) -> BTreeMap<String, String> {
    (0..columns).map(|i| (format!("c{i:02}"), format!("{value}#{i}"))).collect()
}

/// The most bytes a wide row of `columns` columns and `value_size`-byte
/// values takes (a write's value carries its process and counter beside
/// the payload).
pub fn wide_row_bytes(value_size: usize, columns: u32) -> usize {
    let value = value_size + 32;
    KEY_BYTES_MAX + value + columns as usize * (3 + value + 3)
}

/// The value of a wide row read back: its value when every column matches
/// it (or it has none: a conditional write puts the value alone), else the
/// value marked [`TORN_ROW`].
fn read_wide(row: RowVal, columns: u32) -> String {
    if row.columns.is_empty() || row.columns == wide_columns(&row.value, columns) {
        row.value
    } else {
        format!("{TORN_ROW}{}", row.value)
    }
}

/// A definite failure is `Failed`; an outcome the client could not learn
/// is `Unknown`.
fn answer_err(e: TableError) -> Answer {
    if e.is_definite() {
        Answer::Failed(e.to_string())
    } else {
        Answer::Unknown(e.to_string())
    }
}

impl KvService for TableKv {
    fn for_process(&self, process: u64) -> TableKv {
        TableKv {
            client: self.client.for_process(process),
            tenants: self.tenants.iter().map(|(p, c)| (p.clone(), c.for_process(process))).collect(),
            bad: self.bad.clone(),
            columns: self.columns,
            hotzone: true,
        }
    }

    async fn call(&self, op: &Op, _value_size: u32) -> Answer {
        if let (Op::Read { key, .. }, true, 0) = (op, self.hotzone, self.columns) {
            let client = self.client_for(op);
            return match client.read(TABLE, key).await {
                Ok(ReadAnswer { value, hotzone_age: None }) => Answer::Ok(Op::Read { key: key.clone(), value }),
                // Served by the HotZone: at most this stale.
                Ok(ReadAnswer { value, hotzone_age: Some(_) }) => Answer::OkStale { done: Op::Read { key: key.clone(), value }, stale_ns: u64::try_from(client.hot_staleness().as_nanos()).unwrap_or(u64::MAX) },
                Err(e) => answer_err(e),
            };
        }
        match run_op(self.client_for(op), TABLE, op, self.columns).await {
            Ok((done, rows)) => {
                // A scan's rows are not in the history: look for bad
                // requests' rows here.
                if let Some(log) = &self.bad {
                    for (k, v) in rows.iter().filter(|(k, v)| badreq::is_marked(v) || !engine::table::valid_key(k)) {
                        log.seen_by_scan(format!("{} saw row {k:?} = {:?}", done.describe(), v.chars().take(40).collect::<String>()));
                    }
                }
                Answer::Ok(done)
            }
            // The row was not as expected: a definite answer, worded as
            // minikv words it, so availability counts it as served.
            Err(TableError::ConditionFailed(_)) if matches!(op, Op::Cas { .. }) => Answer::Failed(CAS_MISMATCH.into()),
            Err(e) => answer_err(e),
        }
    }

    async fn bad(&self, req: &BadRequest) -> BadAnswer {
        let (client, table, op) = self.bad_form(req);
        let answer = match run_op(&client, table, &op, 0).await {
            Ok((done, _)) => BadAnswer::Accepted(format!("ok: {}", short(&done.describe()))),
            // A condition was evaluated: the request reached the data.
            Err(e @ TableError::ConditionFailed(_)) => BadAnswer::Accepted(short(&e.to_string())),
            Err(e @ (TableError::Auth(_) | TableError::Refused(_))) => BadAnswer::Refused(e.to_string()),
            Err(e) => BadAnswer::Unanswered(e.to_string()),
        };
        if let Some(log) = &self.bad {
            log.record(req.kind, &format!("{table}: {}", short(&op.describe())), &answer);
        }
        answer
    }
}

/// At most 80 characters of a description (oversized cells are long).
fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        return s.to_string();
    }
    format!("{}...", s.chars().take(80).collect::<String>())
}

/// The `partitions - 1` split keys of a table whose rows are
/// `key_name(0..keys)`: evenly spaced row keys.
pub fn split_points(keys: u64, partitions: u32) -> Vec<String> {
    let p = u64::from(partitions.max(1));
    let mut out: Vec<String> = (1..p).map(|i| key_name(keys * i / p)).collect();
    out.dedup();
    // Fewer keys than partitions: pad with keys past the last row key, so
    // the table still has the partitions asked for.
    let mut extra = keys;
    while (out.len() as u64) + 1 < p {
        out.push(key_name(extra.max(1) + out.len() as u64));
        out.sort();
        out.dedup();
        extra += 1;
    }
    out
}

/// Creates the instance and the table (both idempotent), and with `other`
/// the second instance and its one-partition table, retrying while the
/// master is not yet elected or moves; `Err` after [`SETUP_ATTEMPTS_MAX`].
pub async fn setup(client: &TableClient, keys: u64, partitions: u32, other: bool, tenants: &[Tenant], quotas: &[Quota]) -> Result<usize, String> {
    let splits = split_points(keys, partitions);
    // A request that reaches a master before its node listens is lost, and
    // the client's admin call waits out its whole timeout: let the roles
    // come up first.
    time::sleep(SETUP_DELAY).await;
    let mut last = String::new();
    for _ in 0..SETUP_ATTEMPTS_MAX {
        let mut created = match client.create_instance(INSTANCE, ACCESS_KEY).await {
            Ok(()) => client.create_table(INSTANCE, TABLE, splits.len() as u32 + 1, splits.clone()).await,
            Err(e) => Err(e),
        };
        for t in tenants {
            if created.is_err() {
                break;
            }
            let p = key_prefix(Some(&t.instance));
            let splits: Vec<String> = split_points(t.keys, partitions).into_iter().map(|k| format!("{p}{k}")).collect();
            let n = splits.len() as u32 + 1;
            if let Err(e) = client.create_instance(&t.instance, &tenant_access_key(&t.instance)).await {
                created = Err(e);
            } else if let Err(e) = client.create_table(&t.instance, TABLE, n, splits).await {
                created = Err(e);
            }
        }
        let mut instances: Vec<Option<&str>> = quotas.iter().filter(|q| q.at.is_none()).map(|q| q.instance.as_deref()).collect();
        instances.sort();
        instances.dedup();
        for i in instances {
            if created.is_err() {
                break;
            }
            if let Err(e) = client.set_quota(store_instance(i), quotas_at(quotas, i, None)).await {
                created = Err(e);
            }
        }
        if other && created.is_ok() {
            let second = match client.create_instance(OTHER_INSTANCE, OTHER_ACCESS_KEY).await {
                Ok(()) => client.create_table(OTHER_INSTANCE, OTHER_TABLE, 1, Vec::new()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = second {
                created = Err(e);
            }
        }
        match created {
            Ok(pids) => return Ok(pids.len()),
            Err(e) => last = e.to_string(),
        }
        time::sleep(SETUP_RETRY).await;
    }
    Err(format!("could not create the table after {SETUP_ATTEMPTS_MAX} attempts: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_row_reads_as_its_value_only_when_every_column_matches() {
        let row = |value: &str, columns| RowVal { value: value.into(), columns };
        assert_eq!(read_wide(row("p1.1", wide_columns("p1.1", 4)), 4), "p1.1");
        // A conditional write puts the value alone.
        assert_eq!(read_wide(row("p1.2", BTreeMap::new()), 4), "p1.2");
        // Columns of another write, or some of them missing, or one more.
        assert_eq!(read_wide(row("p1.3", wide_columns("p1.1", 4)), 4), "torn-row:p1.3");
        let mut mixed = wide_columns("p1.3", 4);
        mixed.insert("c02".into(), "p1.1#2".into());
        assert_eq!(read_wide(row("p1.3", mixed), 4), "torn-row:p1.3");
        assert_eq!(read_wide(row("p1.3", wide_columns("p1.3", 3)), 4), "torn-row:p1.3");
        assert_eq!(read_wide(row("p1.3", wide_columns("p1.3", 5)), 4), "torn-row:p1.3");
    }

    #[test]
    fn wide_rows_of_the_largest_shape_fit_the_store_and_pass_its_validation() {
        let value = "v".repeat(1000 + 32);
        let columns = wide_columns(&value, 32);
        let op = engine::table::Op::Put { table: TABLE.into(), key: "k".repeat(KEY_BYTES_MAX), value: value.clone(), columns };
        assert!(wide_row_bytes(1000, 32) <= engine::table::ROW_BYTES_MAX);
        assert_eq!(engine::table::proxy::validate(&op), Ok(()));
    }

    #[test]
    fn split_points_are_increasing_and_as_many_as_asked() {
        for (keys, parts) in [(1000, 64), (10, 8), (3, 8), (1, 4), (100, 1), (64, 64)] {
            let s = split_points(keys, parts);
            assert_eq!(s.len() as u32 + 1, parts, "{keys} keys, {parts} partitions: {s:?}");
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        }
        assert_eq!(split_points(1000, 4), vec!["k00000250", "k00000500", "k00000750"]);
    }
}
