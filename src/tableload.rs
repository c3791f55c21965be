//! The key-value workload against the table store: [`TableKv`] puts the
//! table client behind [`KvService`], so the processes, histories and
//! checkers of minikv scenarios run unchanged against the real store, and
//! [`setup`] creates the instance and the table they use.
//!
//! Rows: a workload's row keys (`k00000042`) and auto-increment partition
//! keys (`u0007`) live in one table, [`TABLE`], split into
//! `service.partitions` range partitions at evenly spaced row keys.

use engine::table::client::TableClient;
use engine::table::TableError;
use sim::time;
use std::time::Duration;

use crate::history::Op;
use crate::workload::{key_name, Answer, KvService};

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

/// The table client as a key-value service.
#[derive(Clone)]
pub struct TableKv {
    client: TableClient,
}

impl TableKv {
    pub fn new(client: TableClient) -> TableKv {
        TableKv { client }
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
    async fn call(&self, op: &Op, _value_size: u32) -> Answer {
        let c = &self.client;
        match op.clone() {
            Op::Read { key, .. } => match c.get(TABLE, &key).await {
                Ok(value) => Answer::Ok(Op::Read { key, value }),
                Err(e) => answer_err(e),
            },
            Op::Write { ref key, ref value } => match c.put(TABLE, key, value).await {
                Ok(()) => Answer::Ok(op.clone()),
                Err(e) => answer_err(e),
            },
            Op::Cas { ref key, ref expected, ref value } => match c.cas(TABLE, key, expected.as_deref(), value).await {
                Ok(()) => Answer::Ok(op.clone()),
                // The row was not as expected: a definite answer, worded as
                // minikv words it, so availability counts it as served.
                Err(TableError::ConditionFailed(_)) => Answer::Failed(CAS_MISMATCH.into()),
                Err(e) => answer_err(e),
            },
            Op::Delete { ref key } => match c.delete(TABLE, key).await {
                Ok(()) => Answer::Ok(op.clone()),
                Err(e) => answer_err(e),
            },
            Op::Append { pkey, .. } => match c.append(TABLE, &pkey).await {
                Ok(seq) => Answer::Ok(Op::Append { pkey, seq: Some(seq) }),
                Err(e) => answer_err(e),
            },
            Op::Scan { start, end, .. } => match c.scan(TABLE, &start, &end, SCAN_LIMIT).await {
                Ok(rows) => Answer::Ok(Op::Scan { start, end, count: Some(rows.len() as u64) }),
                Err(e) => answer_err(e),
            },
            Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => Answer::Failed("the table service serves no streams".into()),
        }
    }
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

/// Creates the instance and the table (both idempotent), retrying while the
/// master is not yet elected or moves; `Err` after [`SETUP_ATTEMPTS_MAX`].
pub async fn setup(client: &TableClient, keys: u64, partitions: u32) -> Result<usize, String> {
    let splits = split_points(keys, partitions);
    // A request that reaches a master before its node listens is lost, and
    // the client's admin call waits out its whole timeout: let the roles
    // come up first.
    time::sleep(SETUP_DELAY).await;
    let mut last = String::new();
    for _ in 0..SETUP_ATTEMPTS_MAX {
        let created = match client.create_instance(INSTANCE, ACCESS_KEY).await {
            Ok(()) => client.create_table(INSTANCE, TABLE, splits.len() as u32 + 1, splits.clone()).await,
            Err(e) => Err(e),
        };
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
    fn split_points_are_increasing_and_as_many_as_asked() {
        for (keys, parts) in [(1000, 64), (10, 8), (3, 8), (1, 4), (100, 1), (64, 64)] {
            let s = split_points(keys, parts);
            assert_eq!(s.len() as u32 + 1, parts, "{keys} keys, {parts} partitions: {s:?}");
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        }
        assert_eq!(split_points(1000, 4), vec!["k00000250", "k00000500", "k00000750"]);
    }
}
