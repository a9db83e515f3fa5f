//! etcd access: the client, the key layout, JSON records and typed
//! transactions (`txn`): nothing outside this module builds an etcd `Txn`.
pub mod keys;
pub mod page;
pub mod records;
pub mod txn;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::keys::Keys;
pub use self::txn::{Entry, Guard, Op, Outcome, Read, Write};
use crate::error::{ApiError, Result};

/// A connection to etcd plus the key layout under the configured prefix.
/// Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct Store {
    client: Client,
    pub keys: Keys,
    /// Per IPAM pool (`<network-id>/<pool>`), where this process's next
    /// pick starts (see `crate::ipam`): a hint, never trusted for
    /// correctness (every address is still taken with a transaction), so
    /// replicas need not share it.
    pub(crate) cursors: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::IpAddr>>>,
}

/// A value read from etcd with the revision it was last modified at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

impl Store {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`). The connection
    /// is lazy in etcd-client; callers find out about a dead etcd on first use.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts)).await?;
        Ok(Self {
            client,
            keys: Keys::new(prefix),
            cursors: Default::default(),
        })
    }

    /// Like [`Store::connect`], with TLS to etcd (`https://` endpoints):
    /// etcd's CA and, for `--client-cert-auth`, a client certificate.
    pub async fn connect_tls(
        endpoints: &[String],
        prefix: &str,
        tls: etcd_client::TlsOptions,
    ) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_tls(tls);
        let client = Client::connect(endpoints, Some(opts)).await?;
        Ok(Self {
            client,
            keys: Keys::new(prefix),
            cursors: Default::default(),
        })
    }

    /// The raw client, for leases and anything not wrapped here.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A cheap linearizable read (count of one key), to tell whether etcd
    /// answers; fails after `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let mut client = self.client.clone();
        let get = client.get(self.keys.root(), Some(GetOptions::new().with_count_only()));
        match tokio::time::timeout(timeout, get).await {
            Ok(res) => res.map(drop).map_err(ApiError::from),
            Err(_) => Err(ApiError::Unavailable(format!(
                "etcd did not answer within {timeout:?}"
            ))),
        }
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        let resp = self.client.clone().get(key, None).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: serde_json::from_slice(kv.value())?,
                mod_revision: kv.mod_revision(),
            })),
        }
    }

    pub async fn get_string(&self, key: &str) -> Result<Option<String>> {
        let resp = self.client.clone().get(key, None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Every record under `prefix`, in key order.
    pub async fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        Ok(self.list_json_rev(prefix).await?.0)
    }

    /// Keys under `prefix` with their values as strings.
    pub async fn list_strings(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .list_strings_versioned(prefix, None)
            .await?
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect())
    }

    /// Keys under `prefix` with their values and mod revisions, read at
    /// `revision` (`None`: now).
    pub async fn list_strings_versioned(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<Vec<(String, String, i64)>> {
        let (kvs, _) = self.range_all(prefix, revision, false).await?;
        Ok(kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                )
            })
            .collect())
    }

    /// Every record under `prefix` and the store revision they were read at.
    pub async fn list_json_rev<T: DeserializeOwned>(&self, prefix: &str) -> Result<(Vec<T>, i64)> {
        let (items, rev) = self.list_json_versioned(prefix, None).await?;
        Ok((items.into_iter().map(|v| v.value).collect(), rev))
    }

    /// Every record under `prefix` with its mod revision, read at
    /// `revision` (`None`: now), and the revision read at.
    pub async fn list_json_versioned<T: DeserializeOwned>(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<(Vec<Versioned<T>>, i64)> {
        let (kvs, rev) = self.range_all(prefix, revision, false).await?;
        let items = kvs
            .iter()
            .map(|kv| {
                Ok(Versioned {
                    value: serde_json::from_slice(kv.value())?,
                    mod_revision: kv.mod_revision(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((items, rev))
    }

    /// Keys under `prefix`.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_keys_rev(prefix).await?.0)
    }

    /// Keys under `prefix` and the store revision they were read at.
    pub async fn list_keys_rev(&self, prefix: &str) -> Result<(Vec<String>, i64)> {
        let (kvs, rev) = self.range_all(prefix, None, true).await?;
        Ok((
            kvs.iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect(),
            rev,
        ))
    }

    /// One transaction, timed and counted by outcome
    /// (`berth_etcd_txn_duration_seconds`); every write and multi-key read
    /// goes through it.
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let start = std::time::Instant::now();
        let resp = self.client.clone().txn(txn).await;
        let outcome = match &resp {
            Ok(r) if r.succeeded() => "committed",
            Ok(_) => "compare_failed",
            Err(_) => "error",
        };
        crate::metrics::txn(start, outcome);
        Ok(resp?)
    }
}

/// Serialises a record for storage.
pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(format!("encoding a record: {e}")))
}

/// A fresh 64-hex-character object id, as Docker's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
