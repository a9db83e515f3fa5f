//! In-process nftables with more descriptors open than `select(2)` can take
//! (FD_SETSIZE, 1,024): an agent with a DNS responder per sandbox has
//! thousands. libnftables waits for netlink answers with `select`, and glibc
//! aborts the process when the socket's descriptor is past FD_SETSIZE: the
//! context is made at start (`warm_up`) and keeps its low descriptor. A test
//! binary of its own: it fills the descriptor table.
#[path = "common/nft.rs"]
mod common;

use berth_agent::nft;
use common::*;

#[tokio::test]
async fn nftables_work_with_thousands_of_descriptors_open() {
    assert!(nft::run::in_process(), "libnftables is loaded");
    let ns = netns("manyfds").await;
    let rules = nft::render(&bridges(), &ports());
    let r = rules.clone();
    in_netns(
        &ns,
        move || async move { nft::apply(&r).await.expect("applying") },
    )
    .await;
    // Past FD_SETSIZE, as an agent with 2,000 name-resolving sandboxes is.
    let held: Vec<std::fs::File> = (0..4100)
        .map(|_| std::fs::File::open("/dev/null").expect("a descriptor"))
        .collect();
    let r = rules.clone();
    let seen = in_netns(&ns, move || async move {
        nft::apply(&r).await.expect("applying again");
        let one: Vec<_> = r.elements().iter().copied().take(1).collect();
        nft::update_ports(&[], &one).await.expect("withdrawing a port");
        nft::update_ports(&one, &[]).await.expect("publishing it again");
        nft::observe().await.expect("listing")
    })
    .await
    .expect("the table");
    assert_eq!(seen.counts, rules.rule_counts());
    // A namespace the library has no context for yet: made with the table full.
    let other = netns("manyfds2").await;
    let r = rules.clone();
    in_netns(&other, move || async move {
        nft::apply(&r).await.expect("applying in another namespace")
    })
    .await;
    let highest = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(highest > 4100, "{highest} descriptors open");
    drop(held);
}
