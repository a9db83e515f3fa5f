//! Typed etcd transactions: guards (conditions on keys) and operations
//! composed into one transaction, with a typed outcome, and consistent
//! multi-key reads. The only place that builds etcd `Txn`s; the domain
//! modules say what must hold and what to write.
//!
//! A write that loses names the guards that failed: its else branch reads
//! every guarded key in the same transaction, so the answer is exact (as of
//! the revision the compares saw) and costs nothing when the write commits.
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::Serialize;

use super::{Store, to_json};
use crate::error::{ApiError, Result};

/// A condition on a key (or a prefix) that a write needs to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key does not exist (`create_revision == 0`): create-if-absent.
    Absent(String),
    /// The key exists (`create_revision != 0`).
    Present(String),
    /// No key starts with this prefix (`create_revision == 0` over the range).
    NoneUnder(String),
    /// The key was last written at this revision (`mod_revision == rev`;
    /// 0 also holds for a key that does not exist).
    Unchanged(String, i64),
}

impl Guard {
    /// The key (or prefix) the guard is about.
    pub fn key(&self) -> &str {
        match self {
            Guard::Absent(k) | Guard::Present(k) | Guard::NoneUnder(k) | Guard::Unchanged(k, _) => k,
        }
    }

    fn compare(&self) -> Compare {
        match self {
            Guard::Absent(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
            Guard::Present(k) => Compare::create_revision(k.as_str(), CompareOp::NotEqual, 0),
            Guard::NoneUnder(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0).with_prefix(),
            Guard::Unchanged(k, rev) => Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev),
        }
    }

    /// The read, in the else branch, that tells whether the guard held.
    fn probe(&self) -> TxnOp {
        match self {
            Guard::NoneUnder(k) => TxnOp::get(
                k.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
            _ => TxnOp::get(self.key(), Some(GetOptions::new().with_keys_only())),
        }
    }

    fn held(&self, got: &GetResponse) -> bool {
        let kv = got.kvs().first();
        match self {
            Guard::Absent(_) => kv.is_none(),
            Guard::Present(_) => kv.is_some(),
            Guard::NoneUnder(_) => got.count() == 0,
            Guard::Unchanged(_, rev) => kv.map_or(0, |kv| kv.mod_revision()) == *rev,
        }
    }
}

/// One operation of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put `value` at `key`, bound to `lease` if given.
    Put {
        key: String,
        value: String,
        lease: Option<i64>,
    },
    /// Delete one key (a missing key is no error).
    Delete(String),
    /// Delete every key under a prefix.
    DeleteUnder(String),
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// Put a record as JSON.
    pub fn put_json<T: Serialize>(key: impl Into<String>, record: &T) -> Result<Self> {
        Ok(Op::put(key, to_json(record)?))
    }

    /// Put a key that lives as long as `lease`.
    pub fn put_leased(key: impl Into<String>, value: impl Into<String>, lease: i64) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete(key.into())
    }

    pub fn delete_under(prefix: impl Into<String>) -> Self {
        Op::DeleteUnder(prefix.into())
    }

    fn into_txn_op(self) -> TxnOp {
        match self {
            Op::Put { key, value, lease } => {
                TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
            }
            Op::Delete(key) => TxnOp::delete(key, None),
            Op::DeleteUnder(prefix) => TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
        }
    }
}

/// Guards and operations that commit together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Write {
    pub guards: Vec<Guard>,
    pub ops: Vec<Op>,
}

impl Write {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a guard.
    pub fn when(mut self, guard: Guard) -> Self {
        self.guards.push(guard);
        self
    }

    /// Adds an operation.
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds another write's guards and operations after this one's.
    pub fn and(mut self, other: Write) -> Self {
        self.guards.extend(other.guards);
        self.ops.extend(other.ops);
        self
    }
}

/// What a write came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every guard held; the operations were applied at this revision.
    Committed { revision: i64 },
    /// These guards did not hold; nothing was written.
    Conflict { failed: Vec<Guard> },
}

impl Outcome {
    /// The revision of a committed write.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Committed { revision } => Some(*revision),
            Outcome::Conflict { .. } => None,
        }
    }

    pub fn committed(&self) -> bool {
        matches!(self, Outcome::Committed { .. })
    }

    /// Whether the write lost because of a guard on `key`.
    pub fn failed_on(&self, key: &str) -> bool {
        match self {
            Outcome::Committed { .. } => false,
            Outcome::Conflict { failed } => failed.iter().any(|g| g.key() == key),
        }
    }
}

/// A key or a prefix to read in [`Store::read_together`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Key(String),
    Under(String),
}

/// One key read with [`Store::read_together`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

impl Store {
    /// Commits `write` in one etcd transaction if every guard holds.
    pub async fn write(&self, write: Write) -> Result<Outcome> {
        let compares: Vec<Compare> = write.guards.iter().map(Guard::compare).collect();
        let probes: Vec<TxnOp> = write.guards.iter().map(Guard::probe).collect();
        let ops: Vec<TxnOp> = write.ops.into_iter().map(Op::into_txn_op).collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(probes);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Outcome::Committed {
                revision: resp.header().map_or(0, |h| h.revision()),
            });
        }
        let answers = resp.op_responses();
        if answers.len() != write.guards.len() {
            return Err(ApiError::Internal(format!(
                "etcd answered {} reads for {} guards",
                answers.len(),
                write.guards.len()
            )));
        }
        let failed = write
            .guards
            .into_iter()
            .zip(answers)
            .filter(|(guard, answer)| !matches!(answer, TxnOpResponse::Get(got) if guard.held(got)))
            .map(|(guard, _)| guard)
            .collect();
        Ok(Outcome::Conflict { failed })
    }

    /// Reads several keys and prefixes at one revision (one transaction),
    /// each answer in the order asked.
    pub async fn read_together(&self, reads: Vec<Read>) -> Result<Vec<Vec<Entry>>> {
        let n = reads.len();
        let ops: Vec<TxnOp> = reads
            .into_iter()
            .map(|r| match r {
                Read::Key(k) => TxnOp::get(k, None),
                Read::Under(p) => TxnOp::get(p, Some(GetOptions::new().with_prefix())),
            })
            .collect();
        let resp = self.txn(Txn::new().and_then(ops)).await?;
        let out: Vec<Vec<Entry>> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(got) => Ok(got
                    .kvs()
                    .iter()
                    .map(|kv| Entry {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: kv.value().to_vec(),
                        mod_revision: kv.mod_revision(),
                    })
                    .collect()),
                _ => Err(ApiError::Internal("a read transaction answered a write".into())),
            })
            .collect::<Result<_>>()?;
        if out.len() != n {
            return Err(ApiError::Internal(format!(
                "etcd answered {} of {n} reads",
                out.len()
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_compose_in_order() {
        let a = Write::new()
            .when(Guard::Absent("a".into()))
            .then(Op::put("a", "1"));
        let b = Write::new()
            .when(Guard::Unchanged("b".into(), 7))
            .then(Op::delete("b"));
        let w = a.and(b).then(Op::put_leased("c", "x", 42));
        assert_eq!(
            w.guards,
            vec![Guard::Absent("a".into()), Guard::Unchanged("b".into(), 7)]
        );
        assert_eq!(
            w.ops,
            vec![
                Op::put("a", "1"),
                Op::delete("b"),
                Op::Put {
                    key: "c".into(),
                    value: "x".into(),
                    lease: Some(42)
                }
            ]
        );
    }

    #[test]
    fn outcomes_name_the_failed_key() {
        let lost = Outcome::Conflict {
            failed: vec![Guard::NoneUnder("/p/".into())],
        };
        assert!(lost.failed_on("/p/") && !lost.failed_on("/q") && !lost.committed());
        assert_eq!(lost.revision(), None);
        let won = Outcome::Committed { revision: 9 };
        assert!(won.committed() && !won.failed_on("/p/"));
        assert_eq!(won.revision(), Some(9));
    }
}
