//! The kernel layer on the real kernel (run as root): every test works only inside network
//! namespaces it creates (a "node" namespace holding the bridge, sandbox namespaces behind veths)
//! and a guard deletes them all, also on panic. Nothing is created in the root namespace.
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_agent::kernel::{KernelError, link, netns, sysctl};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// Deletes every namespace it handed out when dropped (deleting a namespace deletes its links,
/// and with them the host ends of veths whose peers lived there).
struct Namespaces {
    names: Mutex<Vec<String>>,
}

impl Namespaces {
    fn new() -> Namespaces {
        assert!(nix::unistd::geteuid().is_root(), "the kernel tests need root");
        Namespaces {
            names: Mutex::new(Vec::new()),
        }
    }

    /// A unique, short name (`bk-<pid>-<n>`), registered for deletion before it exists.
    fn name(&self) -> String {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.names.lock().unwrap().push(name.clone());
        name
    }

    async fn create(&self) -> String {
        let name = self.name();
        assert!(netns::create(&name, "berth:test").await.expect("creating netns"));
        name
    }

    /// A new namespace and a netlink connection inside it.
    async fn with_handle(&self) -> (String, Handle) {
        let name = self.create().await;
        let handle = netns::netlink(Some(&name)).await.expect("netlink in netns");
        (name, handle)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names.iter().rev() {
            if let Err(e) = netns::delete_sync(name) {
                eprintln!("cleanup: deleting netns {name}: {e}");
            }
        }
    }
}

/// A node namespace with bridge `br0` holding 172.17.0.1/16: (node name, node handle, bridge index).
async fn node_with_bridge(ns: &Namespaces) -> (String, Handle, u32) {
    let (name, node) = ns.with_handle().await;
    let bridge = link::ensure_bridge(&node, "br0", 1500, Some((GATEWAY, 16)))
        .await
        .unwrap();
    (name, node, bridge)
}

/// A veth pair with both ends in the handle's namespace and up (this kernel has no dummy driver).
async fn add_local_veth(h: &Handle, name: &str, peer: &str) {
    h.link()
        .add(LinkVeth::new(name, peer).up().build())
        .execute()
        .await
        .unwrap();
    let peer = link::get(h, peer).await.unwrap().unwrap();
    link::set_up(h, peer.index).await.unwrap();
}

fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

fn veth_spec<'a>(
    host: &'a str,
    master: u32,
    sandbox: &'a str,
    peer: &'a str,
    ip: Ipv4Addr,
) -> link::VethSpec<'a> {
    link::VethSpec {
        host_name: host,
        master,
        mtu: 1500,
        netns: sandbox,
        peer_name: peer,
        peer_mac: mac_for(ip),
        addr: ip,
        prefix: 16,
        gateway: Some(GATEWAY),
        foreign_netns: false,
    }
}

/// `ping -c1 -W1 ip` from inside namespace `from` (the shared mount namespace is kept, so
/// /run/netns is visible as it is to us).
fn ping(from: &str, ip: Ipv4Addr) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", netns::path(from).display()))
        // Up to three tries: the first one also waits for ARP, which a loaded
        // machine can delay past a second (reachability is what is tested).
        .args(["ping", "-c3", "-i", "0.2", "-W1", "-q"])
        .arg(ip.to_string())
        .output()
        .expect("running nsenter ping")
        .status
        .success()
}

#[tokio::test]
async fn netns_create_delete_exists_list() {
    let ns = Namespaces::new();
    let name = ns.name();
    assert!(!netns::exists(&name));
    assert!(
        netns::create(&name, "berth:test").await.unwrap(),
        "first create creates"
    );
    assert!(
        !netns::create(&name, "berth:test").await.unwrap(),
        "second create is a no-op"
    );
    assert!(netns::exists(&name));
    assert!(netns::list().unwrap().contains(&name));
    assert_eq!(netns::path(&name), std::path::Path::new("/run/netns").join(&name));
    netns::open(&name).unwrap();

    // A new namespace has only lo, and it is up.
    let h = netns::netlink(Some(&name)).await.unwrap();
    let links = link::list(&h).await.unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].name, "lo");
    assert!(links[0].up, "lo is up");
    assert_eq!(
        link::ipv4_addrs(&h, links[0].index).await.unwrap(),
        vec![(Ipv4Addr::LOCALHOST, 8)]
    );

    // The connection lives in the named namespace, not ours: a link created through it is seen by
    // another connection to that namespace and not by one to ours.
    add_local_veth(&h, "probe0", "probe0p").await;
    assert!(link::get(&h, "probe0").await.unwrap().is_some());
    let again = netns::netlink(Some(&name)).await.unwrap();
    assert!(link::get(&again, "probe0").await.unwrap().is_some());
    let ours = netns::netlink(None).await.unwrap(); // read-only look at the root namespace
    assert!(link::get(&ours, "probe0").await.unwrap().is_none());

    assert!(netns::delete(&name).await.unwrap(), "delete deletes");
    assert!(!netns::exists(&name));
    assert!(!netns::list().unwrap().contains(&name));
    assert!(!netns::delete(&name).await.unwrap(), "second delete is a no-op");
    assert!(netns::open(&name).is_err());
}

#[tokio::test]
async fn netns_stale_file_and_bad_names() {
    let ns = Namespaces::new();
    let name = ns.name();
    // A leftover plain file (creation died between open and mount) is not a namespace...
    std::fs::create_dir_all(netns::NETNS_DIR).unwrap();
    std::fs::write(netns::path(&name), b"").unwrap();
    assert!(!netns::exists(&name));
    // ...and create replaces it.
    assert!(netns::create(&name, "berth:test").await.unwrap());
    assert!(netns::exists(&name));

    for bad in ["", ".", "..", "a/b", "../etc"] {
        assert!(
            matches!(
                netns::create(bad, "berth:test").await,
                Err(KernelError::Invalid(_))
            ),
            "{bad:?}"
        );
        assert!(!netns::exists(bad));
    }
}

#[tokio::test]
async fn netns_stale_file_removed_alone() {
    let ns = Namespaces::new();
    // The leftover of a creation that died before its mount goes...
    let stale = ns.name();
    std::fs::create_dir_all(netns::NETNS_DIR).unwrap();
    std::fs::write(netns::path(&stale), b"").unwrap();
    assert!(netns::remove_stale_file(&stale).unwrap());
    assert!(!netns::path(&stale).exists());
    assert!(
        !netns::remove_stale_file(&stale).unwrap(),
        "nothing left to remove"
    );
    // ...a namespace never does, nor a file with something in it.
    let live = ns.create().await;
    assert!(!netns::remove_stale_file(&live).unwrap());
    assert!(netns::exists(&live));
    let full = ns.name();
    std::fs::write(netns::path(&full), b"not berth's").unwrap();
    assert!(!netns::remove_stale_file(&full).unwrap());
    assert!(netns::path(&full).exists());
    std::fs::remove_file(netns::path(&full)).unwrap();
    assert!(matches!(
        netns::remove_stale_file("../etc"),
        Err(KernelError::Invalid(_))
    ));
}

#[tokio::test]
async fn bridge_is_idempotent() {
    let ns = Namespaces::new();
    let (_, node) = ns.with_handle().await;
    let index = link::ensure_bridge(&node, "br0", 1500, Some((GATEWAY, 16)))
        .await
        .unwrap();
    let first = link::get(&node, "br0").await.unwrap().unwrap();
    assert_eq!(first.index, index);
    assert_eq!(first.kind.as_deref(), Some("bridge"));
    assert_eq!(first.mtu, 1500);
    assert!(first.up);
    assert_eq!(
        first.mac.unwrap()[0] & 0x03,
        0x02,
        "locally administered unicast MAC"
    );
    assert_eq!(link::ipv4_addrs(&node, index).await.unwrap(), vec![(GATEWAY, 16)]);

    // Same arguments: same bridge, nothing changed.
    assert_eq!(
        link::ensure_bridge(&node, "br0", 1500, Some((GATEWAY, 16)))
            .await
            .unwrap(),
        index
    );
    let second = link::get(&node, "br0").await.unwrap().unwrap();
    assert_eq!(
        (second.mtu, second.mac, second.up),
        (first.mtu, first.mac, first.up)
    );

    // Drift is repaired: a stray address goes, the link comes back up, the MTU follows.
    link::add_ipv4(&node, index, Ipv4Addr::new(10, 9, 9, 9), 24)
        .await
        .unwrap();
    node.link()
        .change(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .unwrap();
    assert_eq!(
        link::ensure_bridge(&node, "br0", 1450, Some((GATEWAY, 16)))
            .await
            .unwrap(),
        index
    );
    let fixed = link::get(&node, "br0").await.unwrap().unwrap();
    assert_eq!(fixed.mtu, 1450);
    assert!(fixed.up);
    assert_eq!(link::ipv4_addrs(&node, index).await.unwrap(), vec![(GATEWAY, 16)]);

    // Another address replaces the old one; None removes it.
    let other = Ipv4Addr::new(172, 18, 0, 1);
    link::ensure_bridge(&node, "br0", 1450, Some((other, 16)))
        .await
        .unwrap();
    assert_eq!(link::ipv4_addrs(&node, index).await.unwrap(), vec![(other, 16)]);
    link::ensure_bridge(&node, "br0", 1450, None).await.unwrap();
    assert_eq!(link::ipv4_addrs(&node, index).await.unwrap(), vec![]);

    // A link of that name that is not a bridge is not silently taken over.
    add_local_veth(&node, "dummy0", "dummy0p").await;
    let clash = link::ensure_bridge(&node, "dummy0", 1500, None).await;
    assert!(matches!(clash, Err(KernelError::Mismatch(_))), "{clash:?}");
    // Names the kernel would reject are refused before asking it.
    assert!(matches!(
        link::ensure_bridge(&node, "a-name-longer-than-15", 1500, None).await,
        Err(KernelError::Invalid(_))
    ));
}

#[tokio::test]
async fn veth_into_sandbox() {
    let ns = Namespaces::new();
    let (_, node, bridge) = node_with_bridge(&ns).await;
    let bridge_mac = link::get(&node, "br0").await.unwrap().unwrap().mac;
    let (sandbox, sb) = ns.with_handle().await;
    let ip = Ipv4Addr::new(172, 17, 0, 2);
    let spec = veth_spec("vethab01", bridge, &sandbox, "eth0", ip);
    assert_eq!(spec.peer_mac, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

    assert!(link::ensure_veth(&node, &spec).await.unwrap(), "created");
    let eth0 = link::get(&sb, "eth0")
        .await
        .unwrap()
        .expect("eth0 inside the sandbox");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(eth0.mac, Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
    assert_eq!(eth0.mtu, 1500);
    assert!(eth0.up);
    assert_eq!(link::ipv4_addrs(&sb, eth0.index).await.unwrap(), vec![(ip, 16)]);
    assert_eq!(
        link::default_route(&sb).await.unwrap(),
        Some((GATEWAY, Some(eth0.index)))
    );
    assert_eq!(link::default_gateway(&sb).await.unwrap(), Some(GATEWAY));
    let host = link::get(&node, "vethab01")
        .await
        .unwrap()
        .expect("host end in the node namespace");
    assert_eq!(host.master, Some(bridge));
    assert!(host.up);
    assert_eq!(host.link, Some(eth0.index), "host end points at the peer");
    assert_eq!(eth0.link, Some(host.index), "peer points at the host end");
    assert!(
        link::get(&sb, "vethab01").await.unwrap().is_none(),
        "host end is not in the sandbox"
    );
    assert!(
        link::get(&node, "eth0").await.unwrap().is_none(),
        "peer is not in the node namespace"
    );
    // The bridge keeps its MAC when ports join (else sandboxes' ARP entries for the gateway go stale).
    assert_eq!(link::get(&node, "br0").await.unwrap().unwrap().mac, bridge_mac);

    // Again: nothing to do, nothing recreated.
    assert!(
        !link::ensure_veth(&node, &spec).await.unwrap(),
        "second call changes nothing"
    );
    assert_eq!(link::get(&sb, "eth0").await.unwrap().unwrap().index, eth0.index);
    assert_eq!(
        link::get(&node, "vethab01").await.unwrap().unwrap().index,
        host.index
    );

    // Drift on a correctly paired veth is fixed in place (the pair is not recreated).
    node.link()
        .change(
            LinkUnspec::new_with_index(host.index)
                .down()
                .nocontroller()
                .build(),
        )
        .execute()
        .await
        .unwrap();
    link::del_ipv4(&sb, eth0.index, ip, 16).await.unwrap(); // also drops the default route
    link::add_ipv4(&sb, eth0.index, Ipv4Addr::new(10, 9, 9, 9), 24)
        .await
        .unwrap();
    link::set_mtu(&sb, eth0.index, 1400).await.unwrap();
    assert_eq!(link::default_route(&sb).await.unwrap(), None);
    assert!(link::ensure_veth(&node, &spec).await.unwrap(), "drift repaired");
    let eth0_after = link::get(&sb, "eth0").await.unwrap().unwrap();
    assert_eq!(eth0_after.index, eth0.index, "peer kept");
    assert_eq!(eth0_after.mtu, 1500);
    assert_eq!(link::ipv4_addrs(&sb, eth0.index).await.unwrap(), vec![(ip, 16)]);
    assert_eq!(
        link::default_route(&sb).await.unwrap(),
        Some((GATEWAY, Some(eth0.index)))
    );
    let host_after = link::get(&node, "vethab01").await.unwrap().unwrap();
    assert_eq!(host_after.index, host.index, "host end kept");
    assert_eq!(host_after.master, Some(bridge));
    assert!(host_after.up);

    // A default route pointing elsewhere is replaced.
    let other_gw = Ipv4Addr::new(172, 17, 0, 254);
    link::set_default_route(&sb, other_gw).await.unwrap();
    assert_eq!(link::default_gateway(&sb).await.unwrap(), Some(other_gw));
    assert!(link::ensure_veth(&node, &spec).await.unwrap());
    assert_eq!(
        link::default_route(&sb).await.unwrap(),
        Some((GATEWAY, Some(eth0.index)))
    );

    // The peer deleted inside the sandbox (which deletes the host end too): recreated.
    assert!(link::delete(&sb, "eth0").await.unwrap());
    assert!(link::get(&node, "vethab01").await.unwrap().is_none());
    assert!(link::ensure_veth(&node, &spec).await.unwrap(), "recreated");
    let eth0_new = link::get(&sb, "eth0").await.unwrap().expect("eth0 recreated");
    assert_eq!(eth0_new.mac, Some(spec.peer_mac));
    assert_eq!(
        link::ipv4_addrs(&sb, eth0_new.index).await.unwrap(),
        vec![(ip, 16)]
    );
    assert_eq!(
        link::default_route(&sb).await.unwrap(),
        Some((GATEWAY, Some(eth0_new.index)))
    );

    // The peer present but wrong (another MAC): the pair is deleted and recreated.
    sb.link()
        .change(
            LinkUnspec::new_with_index(eth0_new.index)
                .address(vec![2, 0, 0, 0, 0, 1])
                .build(),
        )
        .execute()
        .await
        .unwrap();
    assert!(
        link::ensure_veth(&node, &spec).await.unwrap(),
        "wrong peer recreated"
    );
    let eth0_third = link::get(&sb, "eth0").await.unwrap().unwrap();
    assert_eq!(eth0_third.mac, Some(spec.peer_mac));
    assert_eq!(
        link::ipv4_addrs(&sb, eth0_third.index).await.unwrap(),
        vec![(ip, 16)]
    );
    assert!(!link::ensure_veth(&node, &spec).await.unwrap());

    // A stray link holding the peer's name in the sandbox is replaced by the peer.
    add_local_veth(&sb, "eth1", "eth1x").await;
    let ip2 = Ipv4Addr::new(172, 17, 0, 3);
    let second = link::VethSpec {
        gateway: None,
        ..veth_spec("vethab02", bridge, &sandbox, "eth1", ip2)
    };
    // In a runtime's namespace the link holding the name is the runtime's: refused, kept.
    let foreign = link::VethSpec {
        foreign_netns: true,
        ..second.clone()
    };
    let err = link::ensure_veth(&node, &foreign).await.unwrap_err();
    assert!(err.to_string().contains("already exists in netns"), "{err}");
    assert!(
        link::get(&sb, "eth1").await.unwrap().is_some(),
        "the runtime's eth1 is kept"
    );
    assert!(
        link::get(&node, "vethab02").await.unwrap().is_none(),
        "no host end left behind"
    );
    assert!(link::ensure_veth(&node, &second).await.unwrap());
    let eth1 = link::get(&sb, "eth1").await.unwrap().unwrap();
    assert_eq!(eth1.kind.as_deref(), Some("veth"));
    assert_eq!(link::ipv4_addrs(&sb, eth1.index).await.unwrap(), vec![(ip2, 16)]);
    // gateway: None left the first endpoint's default route alone.
    assert_eq!(
        link::default_route(&sb).await.unwrap(),
        Some((GATEWAY, Some(eth0_third.index)))
    );
    assert!(!link::ensure_veth(&node, &spec).await.unwrap());
    assert!(!link::ensure_veth(&node, &second).await.unwrap());

    // A host-side name clash with something that is not a veth (here a bridge) is an error, not a takeover.
    link::ensure_bridge(&node, "vethab03", 1500, None).await.unwrap();
    let clash = link::ensure_veth(&node, &veth_spec("vethab03", bridge, &sandbox, "eth2", ip2)).await;
    assert!(matches!(clash, Err(KernelError::Mismatch(_))), "{clash:?}");
}

#[tokio::test]
async fn sandboxes_on_a_bridge_reach_each_other_and_the_gateway() {
    let ns = Namespaces::new();
    let (_, node, bridge) = node_with_bridge(&ns).await;
    let a = ns.create().await;
    let b = ns.create().await;
    let ip_a = Ipv4Addr::new(172, 17, 0, 2);
    let ip_b = Ipv4Addr::new(172, 17, 0, 3);
    assert!(
        link::ensure_veth(&node, &veth_spec("vetha", bridge, &a, "eth0", ip_a))
            .await
            .unwrap()
    );
    assert!(
        link::ensure_veth(&node, &veth_spec("vethb", bridge, &b, "eth0", ip_b))
            .await
            .unwrap()
    );

    assert!(ping(&a, ip_b), "a -> b");
    assert!(ping(&b, ip_a), "b -> a");
    assert!(ping(&a, GATEWAY), "a -> gateway");
    assert!(ping(&b, GATEWAY), "b -> gateway");

    // Isolated bridge ports (enable_icc=false) cannot reach each other but still reach the gateway.
    assert_eq!(link::port_isolated(&node, "vetha").await.unwrap(), Some(false));
    assert!(link::set_port_isolated(&node, "vetha", true).await.unwrap());
    assert!(
        !link::set_port_isolated(&node, "vetha", true).await.unwrap(),
        "idempotent"
    );
    assert!(link::set_port_isolated(&node, "vethb", true).await.unwrap());
    assert_eq!(link::port_isolated(&node, "vetha").await.unwrap(), Some(true));
    assert!(!ping(&a, ip_b), "isolated a -/-> b");
    assert!(ping(&a, GATEWAY), "isolated a -> gateway");
    assert!(link::set_port_isolated(&node, "vethb", false).await.unwrap());
    assert!(link::set_port_isolated(&node, "vetha", false).await.unwrap());
    assert!(ping(&a, ip_b), "a -> b again");
    assert_eq!(
        link::port_isolated(&node, "br0").await.unwrap(),
        None,
        "a bridge is not a port"
    );
}

#[tokio::test]
async fn delete_of_a_missing_link_is_false() {
    let ns = Namespaces::new();
    let (_, node) = ns.with_handle().await;
    assert!(!link::delete(&node, "nosuchlink").await.unwrap());
    assert!(link::get(&node, "nosuchlink").await.unwrap().is_none());
    add_local_veth(&node, "gone0", "gone0p").await;
    assert!(link::delete(&node, "gone0").await.unwrap());
    assert!(!link::delete(&node, "gone0").await.unwrap());
    assert!(
        !link::delete(&node, "gone0p").await.unwrap(),
        "deleting one end of a veth deletes both"
    );
}

#[tokio::test]
async fn set_default_route_replaces() {
    let ns = Namespaces::new();
    let (_, h) = ns.with_handle().await;
    add_local_veth(&h, "d0", "d0p").await;
    let d0 = link::get(&h, "d0").await.unwrap().unwrap();
    link::add_ipv4(&h, d0.index, Ipv4Addr::new(192, 168, 100, 2), 24)
        .await
        .unwrap();
    assert_eq!(link::default_gateway(&h).await.unwrap(), None);
    link::set_default_route(&h, Ipv4Addr::new(192, 168, 100, 1))
        .await
        .unwrap();
    assert_eq!(
        link::default_gateway(&h).await.unwrap(),
        Some(Ipv4Addr::new(192, 168, 100, 1))
    );
    link::set_default_route(&h, Ipv4Addr::new(192, 168, 100, 1))
        .await
        .unwrap(); // no-op
    link::set_default_route(&h, Ipv4Addr::new(192, 168, 100, 254))
        .await
        .unwrap();
    assert_eq!(
        link::default_route(&h).await.unwrap(),
        Some((Ipv4Addr::new(192, 168, 100, 254), Some(d0.index)))
    );
    // A gateway on no connected subnet is refused by the kernel.
    assert!(
        link::set_default_route(&h, Ipv4Addr::new(10, 1, 1, 1))
            .await
            .is_err()
    );
}

/// /proc/sys/net reflects the namespace of the thread that opens the file, not the process's.
#[tokio::test]
async fn sysctl_acts_on_the_calling_threads_netns() {
    let ns = Namespaces::new();
    let (node, h) = ns.with_handle().await;
    link::ensure_bridge(&h, "brsys", 1500, None).await.unwrap();
    let bridge_key = "net.ipv4.conf.brsys.forwarding";
    let root_forward = sysctl::get("net.ipv4.ip_forward").unwrap();
    assert!(
        sysctl::get(bridge_key).is_err(),
        "the node's bridge is not visible from the root netns"
    );

    let file = netns::open(&node).unwrap();
    let (before, changed, again, after, bridge_visible) = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let before = sysctl::get("net.ipv4.ip_forward").unwrap();
        let changed = sysctl::set("net.ipv4.ip_forward", "1").unwrap();
        let again = sysctl::set("net.ipv4.ip_forward", "1").unwrap();
        let after = sysctl::get("net.ipv4.ip_forward").unwrap();
        (before, changed, again, after, sysctl::get(bridge_key).is_ok())
    })
    .join()
    .unwrap();
    assert_eq!(changed, before != "1");
    assert!(!again, "same value: no write");
    assert_eq!(after, "1");
    assert!(
        bridge_visible,
        "the thread sees the node namespace's /proc/sys/net"
    );
    // This thread, and so the process's other threads, did not move.
    assert_eq!(sysctl::get("net.ipv4.ip_forward").unwrap(), root_forward);
    assert!(sysctl::get(bridge_key).is_err());

    // run_in is the async way to do the same.
    let seen = netns::run_in(&node, || sysctl::get("net.ipv4.ip_forward"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, "1");
    let bridge_forward = netns::run_in(&node, move || sysctl::get(bridge_key))
        .await
        .unwrap()
        .unwrap();
    assert!(bridge_forward == "0" || bridge_forward == "1");
    // Keys with slashes are paths (interface names may contain dots).
    let by_path = netns::run_in(&node, || sysctl::get("net/ipv4/conf/brsys/forwarding"))
        .await
        .unwrap();
    assert_eq!(by_path.unwrap(), bridge_forward);
    assert!(matches!(sysctl::get("net.ipv4..x"), Err(KernelError::Invalid(_))));
    assert!(matches!(
        sysctl::get("../etc/passwd"),
        Err(KernelError::Invalid(_))
    ));
}

#[tokio::test]
async fn vxlan_is_idempotent_and_enslaved() {
    let ns = Namespaces::new();
    let (_, node) = ns.with_handle().await;
    let bridge = link::ensure_bridge(&node, "br0", 1450, Some((Ipv4Addr::new(10, 0, 0, 1), 24)))
        .await
        .unwrap();
    let local = Ipv4Addr::new(192, 168, 205, 10);
    let index = link::ensure_vxlan(&node, "vx0", 4096, local, 4789, 1450, bridge)
        .await
        .unwrap();
    let vx = link::get(&node, "vx0").await.unwrap().unwrap();
    assert_eq!(vx.index, index);
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    assert_eq!(vx.master, Some(bridge));
    assert_eq!(vx.mtu, 1450);
    assert!(vx.up);
    assert_eq!(
        link::ensure_vxlan(&node, "vx0", 4096, local, 4789, 1450, bridge)
            .await
            .unwrap(),
        index
    );

    // Detached and down: fixed in place.
    node.link()
        .change(LinkUnspec::new_with_index(index).down().nocontroller().build())
        .execute()
        .await
        .unwrap();
    assert_eq!(
        link::ensure_vxlan(&node, "vx0", 4096, local, 4789, 1450, bridge)
            .await
            .unwrap(),
        index
    );
    let vx = link::get(&node, "vx0").await.unwrap().unwrap();
    assert_eq!((vx.master, vx.up), (Some(bridge), true));

    // Another VNI: recreated.
    let recreated = link::ensure_vxlan(&node, "vx0", 4097, local, 4789, 1450, bridge)
        .await
        .unwrap();
    assert_ne!(recreated, index);
    assert_eq!(
        link::ensure_vxlan(&node, "vx0", 4097, local, 4789, 1450, bridge)
            .await
            .unwrap(),
        recreated
    );

    let clash = link::ensure_vxlan(&node, "br0", 4096, local, 4789, 1450, bridge).await;
    assert!(matches!(clash, Err(KernelError::Mismatch(_))), "{clash:?}");
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Not a pass/fail test: prints how long the hot-path operations take (median and p90).
#[tokio::test]
async fn timing_of_sandbox_creation() {
    const N: u8 = 50;
    let ns = Namespaces::new();
    let (_, node, bridge) = node_with_bridge(&ns).await;
    let (mut create, mut veth, mut connect, mut veth_with, mut veth_again, mut delete) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut sandboxes = Vec::new();
    for i in 0..N {
        let name = ns.name();
        let t = Instant::now();
        assert!(netns::create(&name, "berth:test").await.unwrap());
        create.push(t.elapsed());

        let ip = Ipv4Addr::new(172, 17, 1, 10 + i);
        let host = format!("vt{i}");
        let t = Instant::now();
        assert!(
            link::ensure_veth(&node, &veth_spec(&host, bridge, &name, "eth0", ip))
                .await
                .unwrap()
        );
        veth.push(t.elapsed());

        let t = Instant::now();
        let sb = netns::netlink(Some(&name)).await.unwrap();
        connect.push(t.elapsed());
        let ip = Ipv4Addr::new(172, 17, 2, 10 + i);
        let host = format!("vu{i}");
        let s = link::VethSpec {
            gateway: None,
            ..veth_spec(&host, bridge, &name, "eth1", ip)
        };
        let t = Instant::now();
        assert!(link::ensure_veth_with(&node, &sb, &s).await.unwrap());
        veth_with.push(t.elapsed());
        let t = Instant::now();
        assert!(!link::ensure_veth_with(&node, &sb, &s).await.unwrap());
        veth_again.push(t.elapsed());
        sandboxes.push(name);
    }
    assert!(ping(&sandboxes[0], Ipv4Addr::new(172, 17, 1, 10 + N - 1)));
    for name in &sandboxes {
        let t = Instant::now();
        assert!(netns::delete(name).await.unwrap());
        delete.push(t.elapsed());
    }
    for (what, samples) in [
        ("netns::create (incl. lo up)", &mut create),
        ("ensure_veth (new pair, own sandbox connection)", &mut veth),
        ("netns::netlink(Some)", &mut connect),
        ("ensure_veth_with (new pair, reused connection)", &mut veth_with),
        ("ensure_veth_with (no-op)", &mut veth_again),
        ("netns::delete", &mut delete),
    ] {
        eprintln!(
            "timing: {what:<48} n={N} p50={} p90={}",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.9))
        );
    }
}

/// FDB and neighbour entries of a VXLAN device: listed, added (the all-zero
/// flooding MAC with several destinations), deleted, idempotent.
#[tokio::test]
async fn vxlan_fdb_and_neighbour_entries() {
    use berth_agent::kernel::fdb::{self, FdbEntry, NeighEntry};
    let ns = Namespaces::new();
    let (name, node) = ns.with_handle().await;
    let bridge = link::ensure_bridge(&node, "br0", 1450, None).await.unwrap();
    let local = Ipv4Addr::new(192, 168, 205, 10);
    let vx = link::ensure_vxlan(&node, "vx0", 4096, local, 4789, 1450, bridge)
        .await
        .unwrap();
    let (a, b) = (Ipv4Addr::new(192, 168, 205, 11), Ipv4Addr::new(192, 168, 205, 12));
    let peer = FdbEntry {
        mac: [2, 0x42, 10, 0, 0, 3],
        dst: a,
    };
    let entries = [
        peer,
        FdbEntry {
            mac: fdb::ZERO_MAC,
            dst: a,
        },
        FdbEntry {
            mac: fdb::ZERO_MAC,
            dst: b,
        },
    ];
    for e in entries {
        fdb::fdb_add(&node, vx, e).await.unwrap();
        fdb::fdb_add(&node, vx, e).await.unwrap(); // again: no error
    }
    let mut listed = fdb::fdb_list(&node, vx).await.unwrap();
    listed.sort();
    let mut want = entries.to_vec();
    want.sort();
    assert_eq!(listed, want);
    let shown = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{name}"))
        .args(["bridge", "fdb", "show", "dev", "vx0"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("02:42:0a:00:00:03 dst 192.168.205.11 self permanent"),
        "{shown}"
    );
    fdb::fdb_del(&node, vx, entries[2]).await.unwrap();
    fdb::fdb_del(&node, vx, entries[2]).await.unwrap(); // missing: fine
    assert_eq!(fdb::fdb_list(&node, vx).await.unwrap().len(), 2);

    let n = NeighEntry {
        ip: Ipv4Addr::new(10, 0, 0, 3).into(),
        mac: peer.mac,
    };
    // A dual-stack overlay's endpoint has an IPv6 entry with the same MAC.
    let n6 = NeighEntry {
        ip: "fd42:be47:2::3".parse().unwrap(),
        mac: peer.mac,
    };
    fdb::neigh_replace(&node, vx, n).await.unwrap();
    fdb::neigh_replace(&node, vx, n).await.unwrap();
    // This namespace is berth's own (IPv6 off by default): switch it on for
    // the device, as a node namespace has it (EINVAL otherwise).
    berth_agent::kernel::addr6::enable_on(&name, "vx0").await.unwrap();
    fdb::neigh_replace(&node, vx, n6).await.unwrap();
    assert_eq!(fdb::neigh_list(&node, vx).await.unwrap(), vec![n, n6]);
    fdb::neigh_del(&node, vx, n).await.unwrap();
    fdb::neigh_del(&node, vx, n).await.unwrap();
    fdb::neigh_del(&node, vx, n6).await.unwrap();
    fdb::neigh_del(&node, vx, n6).await.unwrap();
    assert!(fdb::neigh_list(&node, vx).await.unwrap().is_empty());
}

#[tokio::test]
async fn vxlan_port_learns_nothing_and_takes_static_bridge_entries() {
    use berth_agent::kernel::fdb;
    let ns = Namespaces::new();
    let (name, node) = ns.with_handle().await;
    let bridge = link::ensure_bridge(&node, "br0", 1450, None).await.unwrap();
    let local = Ipv4Addr::new(192, 168, 205, 10);
    let vx = link::ensure_vxlan(&node, "vx0", 4096, local, 4789, 1450, bridge)
        .await
        .unwrap();
    assert_eq!(
        link::get(&node, "vx0").await.unwrap().unwrap().port_learning,
        Some(true)
    );
    assert!(link::set_port_learning(&node, "vx0", false).await.unwrap());
    assert!(!link::set_port_learning(&node, "vx0", false).await.unwrap());
    assert_eq!(
        link::get(&node, "vx0").await.unwrap().unwrap().port_learning,
        Some(false)
    );
    let shown = |args: &[&str]| {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{name}"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(shown(&["bridge", "-d", "link", "show", "dev", "vx0"]).contains("learning off"));

    // The port's own local entry is not a remote MAC.
    assert!(fdb::fdb_read(&node, vx).await.unwrap().1.is_empty());
    let mac = [2, 0x42, 10, 0, 0, 3];
    fdb::port_mac_add(&node, vx, mac).await.unwrap();
    fdb::port_mac_add(&node, vx, mac).await.unwrap(); // again: replaced, no error
    assert_eq!(fdb::fdb_read(&node, vx).await.unwrap().1, [mac].into());
    assert!(
        shown(&["bridge", "fdb", "show", "dev", "vx0"]).contains("02:42:0a:00:00:03 master br0 static"),
        "{}",
        shown(&["bridge", "fdb", "show", "dev", "vx0"])
    );
    // A learned entry (as a bridge with learning on would have made) is listed too, and deleted.
    let learned = [2, 0x42, 10, 0, 0, 4];
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{name}"))
        .args([
            "bridge",
            "fdb",
            "add",
            "02:42:0a:00:00:04",
            "dev",
            "vx0",
            "master",
            "dynamic",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fdb::fdb_read(&node, vx).await.unwrap().1, [mac, learned].into());
    fdb::port_mac_del(&node, vx, learned).await.unwrap();
    fdb::port_mac_del(&node, vx, mac).await.unwrap();
    fdb::port_mac_del(&node, vx, mac).await.unwrap(); // missing: fine
    assert!(fdb::fdb_read(&node, vx).await.unwrap().1.is_empty());
}

/// Runs `f` on a thread that entered namespace `name` (the `_here` dumps
/// read the calling thread's namespace), on a runtime of its own.
fn in_netns<T, F>(name: &str, f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let path = netns::path(name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn node_wide_dumps_and_host_veths_without_ipv6_addresses() {
    let ns = Namespaces::new();
    let (node_name, node, bridge) = node_with_bridge(&ns).await;
    // berth's namespaces start with IPv6 off; a node has it on.
    netns::run_in(&node_name, || {
        for conf in ["all", "default"] {
            sysctl::set(&format!("net/ipv6/conf/{conf}/disable_ipv6"), "0").unwrap();
        }
    })
    .await
    .unwrap();
    for i in 0..40 {
        add_local_veth(&node, &format!("vl{i}"), &format!("vp{i}")).await;
    }
    let (sandbox, _) = ns.with_handle().await;
    let spec = veth_spec("vethdd01", bridge, &sandbox, "eth0", Ipv4Addr::new(172, 17, 0, 9));
    assert!(link::ensure_veth(&node, &spec).await.unwrap());

    // The dump read one message at a time lists what rtnetlink's does.
    let via_rtnetlink: Vec<(u32, String)> = link::list(&node)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let (here, v4, v6) = in_netns(&node_name, move || async move {
        (
            link::list_here().await.unwrap(),
            link::ipv4_addrs_here(bridge).await.unwrap(),
            berth_agent::kernel::addr6::ipv6_addrs_here(bridge).await.unwrap(),
        )
    });
    let here: Vec<(u32, String)> = here.into_iter().map(|l| (l.index, l.name)).collect();
    assert_eq!(here, via_rtnetlink);
    assert_eq!(
        here.len(),
        1 + 1 + 80 + 1,
        "lo, br0, 40 local pairs, the host end"
    );
    assert_eq!(
        v4,
        vec![(GATEWAY, 16)],
        "the bridge's addresses, filtered by the kernel"
    );
    assert!(v6.is_empty(), "no global IPv6 address on br0");

    // The host end never gets a link-local address, while the node's other
    // links got theirs (so the kernel would have made one by now).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inet6 = |ns_name: &str, dev: &str| {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns::path(ns_name).display()))
            .args(["ip", "-6", "-o", "addr", "show", "dev", dev])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        inet6(&node_name, "vethdd01"),
        "",
        "host end without IPv6 addresses"
    );
    assert!(
        inet6(&node_name, "vl0").contains("fe80::"),
        "links berth did not make are untouched"
    );
}

#[tokio::test]
async fn a_retired_interface_is_down_without_addresses_and_frees_its_name() {
    let ns = Namespaces::new();
    let (node_name, node, bridge) = node_with_bridge(&ns).await;
    let (sandbox_name, sandbox) = ns.with_handle().await;
    let ip = Ipv4Addr::new(172, 17, 0, 21);
    let spec = veth_spec("vethre01", bridge, &sandbox_name, "eth1", ip);
    assert!(link::ensure_veth(&node, &spec).await.unwrap());
    let before = link::get(&sandbox, "eth1").await.unwrap().expect("eth1");

    let retired = link::retire(&sandbox, "eth1").await.unwrap().expect("retired");
    assert_eq!(retired, format!("bgone{}", before.index));
    assert!(
        link::get(&sandbox, "eth1").await.unwrap().is_none(),
        "eth1 is free"
    );
    let gone = link::get(&sandbox, &retired).await.unwrap().expect("still there");
    assert!(!gone.up, "down");
    assert!(
        link::ipv4_addrs(&sandbox, gone.index).await.unwrap().is_empty(),
        "no address left"
    );
    // Its address is no longer local to the namespace (a down interface's would be).
    let local = Command::new("nsenter")
        .arg(format!("--net={}", netns::path(&sandbox_name).display()))
        .args(["ip", "route", "show", "table", "local"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&local.stdout).contains(&ip.to_string()));
    // The pair exists until it is deleted: the host end has lost its carrier.
    let host_state = Command::new("nsenter")
        .arg(format!("--net={}", netns::path(&node_name).display()))
        .args(["ip", "-o", "link", "show", "dev", "vethre01"])
        .output()
        .unwrap();
    let host_state = String::from_utf8_lossy(&host_state.stdout);
    assert!(host_state.contains("NO-CARRIER"), "{host_state}");
    // Retiring again is a no-op; the name can be used by a new endpoint.
    assert_eq!(
        link::retire(&sandbox, &retired).await.unwrap(),
        Some(retired.clone())
    );
    let again = veth_spec("vethre02", bridge, &sandbox_name, "eth1", ip);
    assert!(link::ensure_veth(&node, &again).await.unwrap());
    assert!(link::delete(&sandbox, &retired).await.unwrap());
    assert!(
        link::get(&node, "vethre01").await.unwrap().is_none(),
        "its pair went with it"
    );
    assert!(
        link::get(&sandbox, "eth1").await.unwrap().is_some(),
        "the new endpoint stays"
    );
    assert_eq!(link::retire(&sandbox, "eth9").await.unwrap(), None);
}
