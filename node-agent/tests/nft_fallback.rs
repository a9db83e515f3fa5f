//! The fallback when libnftables cannot be loaded: the same batches through a spawned
//! `nft -j -f -`, on the real kernel inside a namespace the test creates and deletes (also on
//! panic). A test binary of its own: which library is used is chosen once per process.
use std::process::Command;

use berth_agent::kernel::netns;
use berth_agent::nft::{self, BridgeRules, PortRule};

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
