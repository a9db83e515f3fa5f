//! berth's nftables ruleset on the real kernel (run as root): applied, read back, changed by
//! hand and read back again, all inside a network namespace the test creates and deletes
//! (also on panic). `nft` runs from a thread that entered that namespace, so the root
//! namespace's ruleset is never touched.
use std::collections::BTreeMap;
use std::process::Command;

use berth_agent::kernel::netns;
use berth_agent::nft::{self, BridgeRules, PortRule};
use serde_json::Value;

/// Deletes the namespace when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_sync(&self.0) {
            eprintln!("cleanup: deleting netns {}: {e}", self.0);
        }
    }
}

async fn netns(tag: &str) -> Netns {
    assert!(nix::unistd::geteuid().is_root(), "the nft tests need root");
    let ns = Netns(format!("bn-{}-{tag}", std::process::id()));
    assert!(netns::create(&ns.0, "berth:test").await.expect("creating netns"));
    ns
}

/// Runs `f` on a current-thread runtime on a fresh thread inside namespace `ns`: the `nft`
/// processes it spawns are forked from that thread and so run in `ns`.
async fn in_netns<T, F>(ns: &Netns, f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    netns::run_in(&ns.0, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(f())
    })
    .await
    .expect("running in the netns")
}

/// `nft ARGS` in the calling thread's namespace; panics unless it succeeds.
fn nft_ok(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning nft");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `nft -j list table ip berth` without handles (which differ between two loads of the same rules).
fn listing() -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(&nft_ok(&["-j", "list", "table", "ip", "berth"], None)).unwrap();
    strip(&mut v);
    v
}

fn bridges() -> Vec<BridgeRules> {
    vec![
        BridgeRules {
            bridge: "berth0".into(),
            subnet: "172.17.0.0/16".parse().unwrap(),
            subnet6: None,
            masquerade: true,
            internal: false,
        },
        BridgeRules {
            bridge: "br-1".into(),
            subnet: "172.18.0.0/16".parse().unwrap(),
            subnet6: None,
            masquerade: false,
            internal: false,
        },
        BridgeRules {
            bridge: "br-2".into(),
            subnet: "172.19.0.0/16".parse().unwrap(),
            // Dual stack: the `ip6 berth` table is applied and observed too.
            subnet6: Some("fd19::/64".parse().unwrap()),
            masquerade: true,
            internal: false,
        },
    ]
}

fn ports() -> Vec<PortRule> {
    let m = |ip: &str, hp, cp, proto| berth_core::ports::PortMapping::validate(ip, hp, cp, proto).unwrap();
    vec![
        PortRule {
            mapping: m("", 8080, 80, "tcp"),
            target: "172.17.0.2".parse().unwrap(),
            target6: None,
            bridge: "berth0".into(),
        },
        PortRule {
            mapping: m("192.168.205.10", 5353, 53, "udp"),
            target: "172.17.0.3".parse().unwrap(),
            target6: None,
            bridge: "berth0".into(),
        },
    ]
}

/// What the agent wrote as text (`nft -f -`) for [`bridges`] and [`ports`] before the rules
/// were built as data: the JSON ruleset must load into exactly the same table.
const TEXT_RULESET: &str = r#"
add table ip berth
delete table ip berth
table ip berth {
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    fib daddr type local jump ports
  }
  chain output {
    type nat hook output priority -100; policy accept;
    fib daddr type local jump ports
  }
  chain ports {
    tcp dport 8080 dnat to 172.17.0.2:80
    ip daddr 192.168.205.10 udp dport 5353 dnat to 172.17.0.3:53
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 127.0.0.0/8 oifname "berth0" masquerade
    ct status dnat ip saddr 172.17.0.0/16 oifname "berth0" masquerade
    ip saddr 172.17.0.0/16 oifname != "berth0" masquerade
    ip saddr 172.19.0.0/16 oifname != "br-2" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct status dnat accept
    iifname "berth0" oifname { "br-1", "br-2" } drop
    iifname "br-1" oifname { "berth0", "br-2" } drop
    iifname "br-2" oifname { "berth0", "br-1" } drop
  }
}
"#;

#[tokio::test]
async fn json_ruleset_loads_as_the_text_one_did() {
    let ns = netns("same").await;
    in_netns(&ns, || async {
        nft_ok(&["-f", "-"], Some(TEXT_RULESET));
        let from_text = listing();
        nft::apply(&nft::render(&bridges(), &ports()))
            .await
            .expect("applying");
        assert_eq!(listing(), from_text);
        // Without ports: no DNAT chains, no loopback or hairpin masquerade.
        nft::apply(&nft::render(&bridges(), &[])).await.expect("applying");
        let text = nft_ok(&["list", "table", "ip", "berth"], None);
        assert!(!text.contains("ports") && !text.contains("dnat"), "{text}");
        assert!(
            text.contains("ip saddr 172.19.0.0/16 oifname != \"br-2\" masquerade"),
            "{text}"
        );
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
        nft::apply(&rules).await.expect("applying");
        assert_eq!(nft::observe().await.unwrap(), Some(want.clone()));
        // Re-applying the same ruleset is a no-op for the counts.
        nft::apply(&rules).await.expect("re-applying");
        assert_eq!(nft::observe().await.unwrap(), Some(want.clone()));

        nft_ok(&["flush", "table", "ip", "berth"], None);
        let flushed = nft::observe().await.unwrap().expect("the table is still there");
        assert_ne!(flushed, want);
        assert!(
            flushed
                .iter()
                .filter(|(k, _)| !k.starts_with("ip6 "))
                .all(|(_, n)| *n == 0),
            "{flushed:?}"
        );
        assert_eq!(
            flushed["ip6 postrouting"], 1,
            "the ip6 table is apart: {flushed:?}"
        );
        assert_eq!(
            flushed.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "flush keeps the chains"
        );

        nft::apply(&rules).await.expect("repairing");
        assert_eq!(nft::observe().await.unwrap(), Some(want.clone()));
        // The dual-stack bridge's `ip6 berth` table flushed by hand is drift too.
        nft_ok(&["flush", "table", "ip6", "berth"], None);
        assert_ne!(nft::observe().await.unwrap(), Some(want.clone()));
        nft::apply(&rules).await.expect("repairing ip6");
        assert_eq!(nft::observe().await.unwrap(), Some(want));

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
