//! berth's nftables ruleset on the real kernel (run as root): applied, read back, changed by
//! hand and read back again, all inside a network namespace the test creates and deletes
//! (also on panic). `nft` runs from a thread that entered that namespace, so the root
//! namespace's ruleset is never touched.
use std::collections::BTreeMap;

use berth_agent::nft::{self, PortRule};

#[path = "common/nft.rs"]
mod common;
use common::*;

fn elems(r: &nft::Ruleset) -> std::collections::BTreeSet<nft::PortElem> {
    r.elements().clone()
}

/// The structure in the kernel, read back as text: maps, chains and the
/// two DNAT lookups; the published ports are map elements.
#[tokio::test]
async fn ports_are_map_elements_in_a_fixed_structure() {
    let ns = netns("maps").await;
    in_netns(&ns, || async {
        assert!(nft::run::in_process(), "libnftables is installed here");
        let rules = nft::render(&bridges(), &ports());
        nft::apply(&rules).await.expect("applying");
        let text = nft_ok(&["list", "table", "ip", "berth"], None);
        for want in [
            "map addr_dnat_ip {\n\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr",
            "map any_dnat_port {\n\t\ttype inet_proto . inet_service : inet_service",
            "elements = { tcp . 8080 : 172.17.0.2 }",
            "elements = { tcp . 8080 : 80 }",
            "elements = { 192.168.205.10 . udp . 5353 : 172.17.0.3 }",
            "elements = { 192.168.205.10 . udp . 5353 : 53 }",
            "dnat to ip daddr . meta l4proto . th dport map @addr_dnat_ip:ip daddr . meta l4proto . th dport map @addr_dnat_port",
            "dnat to meta l4proto . th dport map @any_dnat_ip:meta l4proto . th dport map @any_dnat_port",
            "fib daddr type local jump ports",
            "ct status dnat ip saddr 172.17.0.0/16 oifname \"berth0\" masquerade",
            "ip saddr 172.19.0.0/16 oifname != \"br-2\" masquerade",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let text6 = nft_ok(&["list", "table", "ip6", "berth"], None);
        assert!(
            text6.contains("ip6 daddr != ::1 fib daddr type local jump ports"),
            "[::1] is left to the proxy: {text6}"
        );
        // Without ports the structure is the same: no rewrite when one comes.
        let bare = nft::render(&bridges(), &[]);
        assert!(bare.same_structure(&rules) && bare.rule_counts() == rules.rule_counts());
        assert!(bare.elements().is_empty());

        // Withdrawing and publishing are element changes only.
        let seen = nft::observe().await.unwrap().expect("table");
        assert_eq!(seen.elements, elems(&rules));
        let before = nft_ok(&["-a", "list", "chain", "ip", "berth", "ports"], None);
        let gone: Vec<_> = elems(&rules).into_iter().filter(|e| e.host.is_some()).collect();
        nft::update_ports(&[], &gone).await.expect("withdrawing");
        let seen = nft::observe().await.unwrap().expect("table");
        assert_eq!(seen.elements.len(), 1, "{seen:?}");
        assert_eq!(seen.counts, rules.rule_counts(), "no rule changed");
        assert_eq!(
            nft_ok(&["-a", "list", "chain", "ip", "berth", "ports"], None),
            before,
            "the chain (and its rule handles) untouched"
        );
        nft::update_ports(&gone, &[]).await.expect("publishing");
        assert_eq!(nft::observe().await.unwrap().unwrap().elements, elems(&rules));
        // Deleting what is not there fails as a whole (the agent then applies the table).
        let err = nft::update_ports(&[], &gone).await;
        assert!(err.is_ok(), "first delete works");
        let err = nft::update_ports(&gone, &gone).await;
        assert!(err.is_err(), "deleting an absent element is refused");
        assert_eq!(
            nft::observe().await.unwrap().unwrap().elements.len(),
            1,
            "a refused batch changes nothing"
        );

        // Drift by hand: an element deleted, one added.
        nft::apply(&rules).await.expect("applying");
        nft_ok(&["delete", "element", "ip", "berth", "any_dnat_ip", "{ tcp . 8080 }"], None);
        let seen = nft::observe().await.unwrap().unwrap();
        assert_ne!(seen.elements, elems(&rules), "half an element is drift");
        nft_ok(
            &["add", "element", "ip", "berth", "any_dnat_port", "{ udp . 9999 : 99 }"],
            None,
        );
        let seen = nft::observe().await.unwrap().unwrap();
        assert!(seen.elements.iter().any(|e| e.host_port == 9999), "{seen:?}");

        // IPv6: all addresses, one address; [::1] is a proxy, not an element.
        let m = |ip: &str, hp, cp| berth_core::ports::PortMapping::validate(ip, hp, cp, "tcp").unwrap();
        let six = |mapping| PortRule {
            mapping,
            target: "172.19.0.2".parse().unwrap(),
            target6: Some("fd19::2".parse().unwrap()),
            bridge: "br-2".into(),
        };
        let with6 = nft::render(
            &bridges(),
            &[six(m("", 8081, 81)), six(m("fd99::10", 8082, 82)), six(m("::1", 8083, 83))],
        );
        assert_eq!(with6.proxies().len(), 2, "[::1] for all addresses and for [::1]");
        nft::apply(&with6).await.expect("applying with IPv6 ports");
        let text6 = nft_ok(&["list", "table", "ip6", "berth"], None);
        for want in [
            "elements = { tcp . 8081 : fd19::2 }",
            "elements = { fd99::10 . tcp . 8082 : fd19::2 }",
            "dnat to ip6 daddr . meta l4proto . th dport map @addr_dnat_ip",
        ] {
            assert!(text6.contains(want), "{want:?} in\n{text6}");
        }
        assert!(!text6.contains("8083"), "{text6}");
        assert_eq!(nft::observe().await.unwrap().unwrap().elements, elems(&with6));
    })
    .await;
}

/// One libnftables context serves every namespace: each command acts on
/// the namespace of the thread that asked.
#[tokio::test]
async fn each_command_acts_in_the_callers_namespace() {
    let a = netns("ctx-a").await;
    let b = netns("ctx-b").await;
    let rules = nft::render(&bridges(), &ports());
    let r = rules.clone();
    in_netns(
        &a,
        move || async move { nft::apply(&r).await.expect("applying in a") },
    )
    .await;
    in_netns(&b, || async {
        assert_eq!(nft::observe().await.unwrap(), None, "b has no table")
    })
    .await;
    let want = rules.rule_counts();
    in_netns(&a, move || async move {
        assert_eq!(nft::observe().await.unwrap().map(|s| s.counts), Some(want));
        nft_ok(&["delete", "table", "ip", "berth"], None);
        assert_eq!(
            nft::observe().await.unwrap(),
            None,
            "a change by another process is seen (no stale cache)"
        );
    })
    .await;
}

#[tokio::test]
async fn internal_bridges_drop_first() {
    let ns = netns("internal").await;
    in_netns(&ns, || async {
        // An internal bridge: the kernel takes its two drops, first in `forward`.
        let mut internal = bridges();
        internal[1].internal = true;
        nft::apply(&nft::render(&internal, &ports()))
            .await
            .expect("applying");
        let text = nft_ok(&["list", "chain", "ip", "berth", "forward"], None);
        let rules: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with("drop") || l.ends_with("accept"))
            .collect();
        assert_eq!(
            rules[..3],
            [
                "iifname \"br-1\" oifname != \"br-1\" drop",
                "oifname \"br-1\" iifname != \"br-1\" drop",
                "ct status dnat accept"
            ],
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn observe_sees_the_table_flushed_and_deleted() {
    let ns = netns("observe").await;
    in_netns(&ns, || async {
        assert_eq!(
            nft::observe().await.unwrap(),
            None,
            "a new namespace has no table"
        );
        let rules = nft::render(&bridges(), &ports());
        let want = rules.rule_counts();
        assert_eq!(want["ports"], 2);
        let counts = || async { nft::observe().await.unwrap().map(|s| s.counts) };
        nft::apply(&rules).await.expect("applying");
        assert_eq!(counts().await, Some(want.clone()));
        // Re-applying the same ruleset is a no-op for the counts.
        nft::apply(&rules).await.expect("re-applying");
        assert_eq!(counts().await, Some(want.clone()));

        nft_ok(&["flush", "table", "ip", "berth"], None);
        let flushed = counts().await.expect("the table is still there");
        assert_ne!(flushed, want);
        assert!(
            flushed
                .iter()
                .filter(|(k, _)| !k.starts_with("ip6 "))
                .all(|(_, n)| *n == 0),
            "{flushed:?}"
        );
        assert_eq!(
            flushed["ip6 postrouting"], 2,
            "the ip6 table is apart: {flushed:?}"
        );
        assert_eq!(
            flushed.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "flush keeps the chains"
        );

        nft::apply(&rules).await.expect("repairing");
        assert_eq!(counts().await, Some(want.clone()));
        // The dual-stack bridge's `ip6 berth` table flushed by hand is drift too.
        nft_ok(&["flush", "table", "ip6", "berth"], None);
        assert_ne!(counts().await, Some(want.clone()));
        nft::apply(&rules).await.expect("repairing ip6");
        assert_eq!(counts().await, Some(want));

        nft_ok(&["delete", "table", "ip", "berth"], None);
        assert_eq!(nft::observe().await.unwrap(), None);

        // No bridges: the table goes, whether or not it was there.
        let none = nft::render(&[], &[]);
        assert_eq!(none.rule_counts(), BTreeMap::new());
        nft::apply(&none).await.expect("deleting an absent table");
        nft::apply(&rules).await.expect("applying");
        nft::apply(&none).await.expect("deleting the table");
        assert_eq!(nft::observe().await.unwrap(), None);
        let left = std::process::Command::new("nft")
            .args(["list", "table", "ip6", "berth"])
            .output()
            .unwrap();
        assert!(!left.status.success(), "the ip6 table went with the last bridge");
    })
    .await;
}
