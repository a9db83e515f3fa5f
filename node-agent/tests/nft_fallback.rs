//! The fallback when libnftables cannot be loaded: the same batches through a spawned
//! `nft -j -f -`, on the real kernel inside a namespace the test creates and deletes (also on
//! panic). A test binary of its own: which library is used is chosen once per process.
#[path = "common/nft.rs"]
mod common;

use berth_agent::nft;
use common::*;

#[tokio::test]
async fn without_libnftables_nft_is_spawned_with_the_same_result() {
    assert!(nft::run::use_library("libnftables-missing.so.0"));
    assert!(!nft::run::in_process(), "the missing library is not loaded");
    let ns = netns("fallback").await;
    in_netns(&ns, || async {
        let rules = nft::render(&bridges(), &ports());
        nft::apply(&rules).await.expect("applying through nft");
        let seen = nft::observe().await.unwrap().expect("the table");
        assert_eq!(seen.counts, rules.rule_counts());
        assert_eq!(&seen.elements, rules.elements());
        let one: Vec<_> = rules.elements().iter().copied().take(1).collect();
        nft::update_ports(&[], &one)
            .await
            .expect("withdrawing through nft");
        assert_eq!(
            nft::observe().await.unwrap().unwrap().elements.len(),
            rules.elements().len() - 1
        );
        let text = nft_ok(&["list", "table", "ip", "berth"], None);
        assert!(text.contains("map any_dnat_ip"), "{text}");
        nft::apply(&nft::render(&[], &[])).await.expect("deleting");
        assert_eq!(nft::observe().await.unwrap(), None);
    })
    .await;
}
