//! Test helper: allocates addresses on one network through berth-api's own
//! allocation code (`berth_api::ipam::allocate_ip`), `--count` at once, and
//! prints each address it got on its own line. Two of these running against
//! one etcd must never print the same address.
use berth_api::ipam::{self, Allocated};
use berth_api::networks::Networks;
use berth_api::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, etcd, prefix, network, node, count, tag] = args.as_slice() else {
        anyhow::bail!("usage: ipam-stress ETCD PREFIX NETWORK NODE COUNT TAG");
    };
    let count: usize = count.parse()?;
    let store = Store::connect(std::slice::from_ref(etcd), prefix).await?;
    let net = Networks::new(store.clone()).find(network).await?;
    let pool = ipam::pool_for(&net, node).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, net, pool, owner) = (store.clone(), net.clone(), pool.clone(), format!("{tag}-{i}"));
        tasks.spawn(async move {
            ipam::allocate_ip(&store, &net, &pool, None, None, &owner, |_, _| {
                Ok(berth_api::store::Write::new())
            })
            .await
        });
    }
    let mut failures = 0;
    while let Some(res) = tasks.join_next().await {
        match res? {
            Ok(Allocated::Committed(ip, _, _)) => println!("{ip}"),
            Ok(Allocated::CallerConflict) => {
                eprintln!("caller conflict without caller compares");
                failures += 1;
            }
            Err(e) => {
                eprintln!("allocation failed: {e}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} allocations failed");
    }
    Ok(())
}
