//! The key-value workload against minikv: its client behind [`KvService`],
//! one request per operation to the key's server.

use engine::minikv::{ClientError, KvClient, KvMsg};

use super::kv::{Answer, KvService};
use crate::history::Op;

impl KvService for KvClient {
    async fn call(&self, op: &Op, size: u32) -> Answer {
        let (route_key, msg) = match op {
            Op::StreamOpen { .. } | Op::StreamAppend { .. } | Op::StreamRead { .. } => return Answer::Failed("minikv serves no streams".into()),
            Op::Read { key, .. } => (key.clone(), KvMsg::Get { key: key.clone() }),
            Op::Write { key, value } => (key.clone(), KvMsg::Put { key: key.clone(), value: value.clone(), size }),
            Op::Cas { key, expected, value } => (key.clone(), KvMsg::Cas { key: key.clone(), expected: expected.clone(), value: value.clone(), size }),
            Op::Delete { key } => (key.clone(), KvMsg::Delete { key: key.clone() }),
            Op::Append { pkey, .. } => (pkey.clone(), KvMsg::Append { pkey: pkey.clone() }),
            Op::Scan { start, end, .. } => (start.clone(), KvMsg::Scan { start: start.clone(), end: end.clone(), limit: 100 }),
        };
        match (op.clone(), self.request(&route_key, msg).await) {
            (Op::Read { key, .. }, Ok(KvMsg::Value(v))) => Answer::Ok(Op::Read { key, value: v }),
            (Op::Append { pkey, .. }, Ok(KvMsg::Seq(s))) => Answer::Ok(Op::Append { pkey, seq: Some(s) }),
            (Op::Scan { start, end, .. }, Ok(KvMsg::Rows(n))) => Answer::Ok(Op::Scan { start, end, count: Some(n) }),
            (op @ (Op::Write { .. } | Op::Cas { .. } | Op::Delete { .. }), Ok(KvMsg::Done)) => Answer::Ok(op),
            (_, Ok(other)) => Answer::Unknown(format!("unexpected response {other:?}")),
            (_, Err(ClientError::Failed(e))) => Answer::Failed(e),
            (_, Err(ClientError::Unknown(e))) => Answer::Unknown(e),
        }
    }
}
