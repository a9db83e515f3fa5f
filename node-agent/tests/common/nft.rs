//! What the nftables tests share: a namespace of the test's own (deleted on
//! drop, also on panic), running code inside it, `nft` for reading back, and
//! the bridges and ports the rulesets are rendered from.
#![allow(dead_code)]
use std::process::Command;

use berth_agent::kernel::netns;
use berth_agent::nft::{BridgeRules, PortRule};

/// Deletes the namespace when dropped.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_sync(&self.0) {
            eprintln!("cleanup: deleting netns {}: {e}", self.0);
        }
    }
}

pub async fn netns(tag: &str) -> Netns {
    assert!(nix::unistd::geteuid().is_root(), "the nft tests need root");
    let ns = Netns(format!("bn-{}-{tag}", std::process::id()));
    assert!(netns::create(&ns.0, "berth:test").await.expect("creating netns"));
    ns
}

/// Runs `f` on a current-thread runtime on a fresh thread inside namespace `ns`: the `nft`
/// processes it spawns are forked from that thread and so run in `ns`.
pub async fn in_netns<T, F>(ns: &Netns, f: impl FnOnce() -> F + Send + 'static) -> T
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
pub fn nft_ok(args: &[&str], stdin: Option<&str>) -> String {
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

pub fn bridges() -> Vec<BridgeRules> {
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

pub fn ports() -> Vec<PortRule> {
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
