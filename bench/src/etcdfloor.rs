//! The etcd floor: what one read and one create-if-absent transaction cost
//! against the lab's etcd, from a client in the control namespace (where
//! berth-api runs), with the same client library berth-api uses. berth-api's
//! create is a handful of reads and one such transaction.
use std::time::Instant;

use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::util::{in_ns, ms};

/// `n` measured (after `warmup`) gets of an existing key and transactions
/// putting a fresh key if absent; milliseconds.
pub async fn measure(ctl_ns: &str, warmup: usize, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    in_ns(ctl_ns, move || -> Result<(Vec<f64>, Vec<f64>)> {
        // A runtime of its own on this thread, so its sockets are made in the namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut c = Client::connect(["http://127.0.0.1:2379"], None)
                .await
                .context("connecting to the lab's etcd")?;
            let (mut gets, mut txns) = (Vec::new(), Vec::new());
            for i in 0..warmup + n {
                let key = format!("/bench-floor/{i}");
                let t = Instant::now();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), "x", None)]);
                c.txn(txn).await?;
                let d_txn = ms(t.elapsed());
                let t = Instant::now();
                c.get(key, None).await?;
                let d_get = ms(t.elapsed());
                if i >= warmup {
                    txns.push(d_txn);
                    gets.push(d_get);
                }
            }
            c.delete(
                "/bench-floor/",
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await?;
            Ok((gets, txns))
        })
    })
    .await?
}
