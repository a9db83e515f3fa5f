//! Paged reads: one range of a prefix by key, and many keys at one
//! revision (etcd allows 128 operations per transaction by default, so
//! reads are chunked).
use etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use serde::de::DeserializeOwned;

use super::{Store, Versioned};
use crate::error::{ApiError, Result};

/// Operations per read transaction: etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;

/// Keys per range read of a whole prefix. The largest records the limits
/// allow are about 47 KB encoded (docs/limits.md), so a chunk stays under
/// the etcd client's 4 MiB message limit; one get of a whole prefix does
/// not once a cluster has some 10,000 sandboxes.
const RANGE_CHUNK: i64 = 50;

/// Keys per range read of a keys-only read: keys are at most a few hundred
/// bytes, so 5,000 stay far below the message limit (a node's index of
/// 10,000 sandboxes is two reads, not 200).
const KEYS_CHUNK: i64 = 5000;

/// One page of a prefix: records in key order after a key, whether more
/// follow, and the revision they were read at.
pub struct Page<T> {
    pub items: Vec<(String, Versioned<T>)>,
    pub more: bool,
    pub revision: i64,
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// Every key-value under `prefix` at `revision` (`None`: now), read in
    /// chunks of [`RANGE_CHUNK`] at one revision, and that revision.
    pub(super) async fn range_all(
        &self,
        prefix: &str,
        revision: Option<i64>,
        keys_only: bool,
    ) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = revision.unwrap_or(0);
        let mut out = Vec::new();
        loop {
            let chunk = if keys_only { KEYS_CHUNK } else { RANGE_CHUNK };
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(chunk);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            if keys_only {
                opts = opts.with_keys_only();
            }
            let mut resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            out.extend(kvs);
            if !more {
                return Ok((out, revision));
            }
        }
    }

    /// Up to `limit` records under `prefix` whose keys sort after
    /// `prefix + after` (all of them from the start when `after` is empty).
    pub async fn page_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Page<T>> {
        // The smallest key greater than `prefix + after`.
        let mut start = format!("{prefix}{after}").into_bytes();
        if !after.is_empty() {
            start.push(0);
        }
        let opts = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_limit(limit as i64);
        let resp = self.client.clone().get(start, Some(opts)).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                Ok((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Versioned {
                        value: serde_json::from_slice(kv.value())?,
                        mod_revision: kv.mod_revision(),
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            more: resp.more(),
            revision,
        })
    }

    /// The records at `keys` as they were at `revision`, in the same order
    /// (`None` for a key that did not exist).
    pub async fn get_many_json<T: DeserializeOwned>(
        &self,
        keys: &[String],
        revision: i64,
    ) -> Result<Vec<Option<T>>> {
        Ok(self
            .get_many_versioned(keys, revision)
            .await?
            .into_iter()
            .map(|v| v.map(|v| v.value))
            .collect())
    }

    /// Like [`Store::get_many_json`], with each record's mod revision.
    pub async fn get_many_versioned<T: DeserializeOwned>(
        &self,
        keys: &[String],
        revision: i64,
    ) -> Result<Vec<Option<Versioned<T>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::get(k.as_str(), Some(GetOptions::new().with_revision(revision))))
                .collect();
            let resp = self.txn(Txn::new().and_then(ops)).await?;
            for r in resp.op_responses() {
                let TxnOpResponse::Get(g) = r else {
                    return Err(ApiError::Internal("a read transaction answered a write".into()));
                };
                out.push(match g.kvs().first() {
                    Some(kv) => Some(Versioned {
                        value: serde_json::from_slice(kv.value())?,
                        mod_revision: kv.mod_revision(),
                    }),
                    None => None,
                });
            }
        }
        Ok(out)
    }

    /// How many keys start with each of `prefixes`, counted by etcd at one
    /// revision (count-only reads: no key or value is sent).
    pub async fn count_under(&self, prefixes: &[String]) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(prefixes.len());
        for chunk in prefixes.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|p| {
                    TxnOp::get(
                        p.as_str(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                })
                .collect();
            let resp = self.client.clone().txn(Txn::new().and_then(ops)).await?;
            for r in resp.op_responses() {
                let TxnOpResponse::Get(g) = r else {
                    return Err(ApiError::Internal("a read transaction answered a write".into()));
                };
                out.push(g.count());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/berth/v1/sandboxes/"), b"/berth/v1/sandboxes0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
        assert_eq!(prefix_end(""), vec![0]);
    }
}
