//! Multi-host overlay networks over VXLAN (scenario S8) on three node
//! namespaces joined by one underlay: addresses unique across the cluster,
//! MTU, gateway bridge, peer programming on join and leave, catch-up after
//! an agent restart, overlapping overlays kept apart, node removal.
use std::time::Duration;

use berth_tests::cluster::{Cluster, in_ns, in_ns_ok, node_addr};
use berth_tests::{stderr, wait_until};

fn cluster(nodes: usize) -> Cluster {
    Cluster::start(nodes).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

/// The VXLAN device's own static entries (`dst` lines), not what the
/// bridge learned dynamically (those age out by themselves).
fn fdb(c: &Cluster, node: usize, dev: &str) -> String {
    in_ns_ok(&c.node(node), &["bridge", "fdb", "show", "dev", dev])
        .lines()
        .filter(|l| l.contains(" dst "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn ping(c: &Cluster, from: &str, to: &str) -> bool {
    c.cli(&["exec", from, "--", "ping", "-c1", "-W2", to])
        .status
        .success()
}

#[test]
fn s8_overlay_across_nodes() {
    let c = cluster(3);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    let v = c.cli_json(&["network", "inspect", "demo"]);
    assert_eq!(v[0]["Scope"], "global");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "10.0.0.1");
    let ls = c.cli_ok(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("demo") && l.contains("overlay") && l.contains("global")),
        "{ls}"
    );

    c.cli_ok(&[
        "sandbox",
        "create",
        "test1",
        "--node",
        "node1",
        "--network",
        "demo",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "test2",
        "--node",
        "node2",
        "--network",
        "demo",
    ]);
    let t1 = c.sandbox_ns("test1");
    let eth0 = in_ns_ok(&t1, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("10.0.0.2/24"), "{eth0}");
    let link = in_ns_ok(&t1, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    let eth1 = in_ns_ok(&t1, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]);
    let gw = c.cli_json(&["network", "inspect", "berth_gwbridge"]);
    let gw_subnet = gw[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .expect("gwbridge subnet")
        .to_string();
    let gw_gateway = gw[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .expect("gateway")
        .to_string();
    let subnet: ipnet::Ipv4Net = gw_subnet.parse().expect("subnet");
    let eth1_ip: std::net::Ipv4Addr = eth1
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("eth1 address");
    assert!(
        subnet.contains(&eth1_ip),
        "eth1 {eth1_ip} on berth_gwbridge {gw_subnet}"
    );
    let routes = in_ns_ok(&t1, &["ip", "route"]);
    assert!(
        routes.contains(&format!("default via {gw_gateway} dev eth1")),
        "{routes}"
    );
    let t2 = c.sandbox_ns("test2");
    assert!(in_ns_ok(&t2, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).contains("10.0.0.3/24"));

    // Names are unique in the cluster.
    let out = c.cli(&[
        "sandbox",
        "create",
        "test1",
        "--node",
        "node2",
        "--network",
        "demo",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));

    assert!(
        ping(&c, "test1", "10.0.0.3"),
        "test1 -> test2 over vxlan\n{}",
        c.logs()
    );
    assert!(ping(&c, "test2", "10.0.0.2"), "test2 -> test1 over vxlan");
    // Outbound through the gateway bridge (masqueraded) to the control host.
    assert!(
        ping(&c, "test1", "192.168.205.2"),
        "test1 -> underlay via berth_gwbridge"
    );

    // The overlay subnet is not in the node's routing table.
    let node_routes = in_ns_ok(&c.node(1), &["ip", "route"]);
    assert!(!node_routes.contains("10.0.0."), "{node_routes}");
    // node1's VXLAN knows test2's MAC at node2, and floods to node2.
    let f = fdb(&c, 1, "vx-4096");
    assert!(
        f.contains(&format!("02:42:0a:00:00:03 dst {}", node_addr(2))),
        "{f}"
    );
    assert!(
        f.contains(&format!("00:00:00:00:00:00 dst {}", node_addr(2))),
        "{f}"
    );
    let neigh = in_ns_ok(&c.node(1), &["ip", "neigh", "show", "dev", "vx-4096"]);
    assert!(
        neigh.contains("10.0.0.3 lladdr 02:42:0a:00:00:03 PERMANENT"),
        "{neigh}"
    );

    // A third node joining later reaches both.
    c.cli_ok(&[
        "sandbox",
        "create",
        "test3",
        "--node",
        "node3",
        "--network",
        "demo",
    ]);
    assert!(ping(&c, "test3", "10.0.0.2") && ping(&c, "test3", "10.0.0.3"));
    assert!(ping(&c, "test1", "10.0.0.4"));

    // Removing test2 removes its entries everywhere before rm returns.
    c.cli_ok(&["sandbox", "rm", "test2"]);
    for n in [1, 3] {
        let f = fdb(&c, n, "vx-4096");
        assert!(
            !f.contains("02:42:0a:00:00:03"),
            "node{n} still knows test2: {f}\n{}",
            c.logs()
        );
        assert!(
            !f.contains(&format!("dst {}", node_addr(2))),
            "node{n} still floods to node2: {f}"
        );
        let neigh = in_ns_ok(&c.node(n), &["ip", "neigh", "show", "dev", "vx-4096"]);
        assert!(!neigh.contains("10.0.0.3 "), "{neigh}");
    }
    // node2 has no overlay sandbox left: its bridge and VXLAN are gone.
    let l2 = in_ns_ok(&c.node(2), &["ip", "-o", "link"]);
    assert!(!l2.contains("vx-4096") && !l2.contains("ov-"), "{l2}");
}

#[test]
fn restarted_agent_catches_up_and_node_removal_releases() {
    let mut c = cluster(3);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "b", "--node", "node2", "--network", "demo"]);
    c.stop_agent(1);
    // node1 misses this one.
    c.cli_ok(&[
        "sandbox",
        "create",
        "late",
        "--node",
        "node2",
        "--network",
        "demo",
    ]);
    c.start_agent(1).expect("agent");
    c.wait_ready(&[1]).expect("ready");
    c.eventually("node1 to learn about 'late'", || {
        in_ns(&c.node(1), &["bridge", "fdb", "show", "dev", "vx-4096"])
            .stdout
            .windows(17)
            .any(|w| w == b"02:42:0a:00:00:04")
    });
    assert!(ping(&c, "a", "10.0.0.4"), "a -> late after catch-up");

    // node3 hosts one sandbox, then dies; its address stays taken until node rm.
    c.cli_ok(&[
        "sandbox",
        "create",
        "doomed",
        "--node",
        "node3",
        "--network",
        "demo",
    ]);
    assert!(ping(&c, "a", "10.0.0.5"));
    c.crash_agent(3);
    let status = |name: &str| -> String {
        let v = c.cli_json(&["node", "ls"]);
        v.as_array()
            .and_then(|a| a.iter().find(|n| n["Name"] == name))
            .and_then(|n| n["Status"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert!(wait_until(Duration::from_secs(20), || status("node3") == "not ready"));
    // Not ready: not scheduled, its endpoints kept.
    let out = c.cli(&["sandbox", "create", "x", "--node", "node3", "--network", "demo"]);
    assert!(stderr(&out).contains("not ready"), "{}", stderr(&out));
    c.cli_ok(&[
        "sandbox",
        "create",
        "next",
        "--node",
        "node2",
        "--network",
        "demo",
    ]);
    let next = c.cli_json(&["sandbox", "inspect", "next"]);
    assert_eq!(
        next[0]["Networks"]["demo"]["IPAddress"], "10.0.0.6",
        "10.0.0.5 stays reserved for doomed"
    );
    c.cli_ok(&["node", "rm", "node3"]);
    assert!(c.cli(&["sandbox", "inspect", "doomed"]).status.code() == Some(1));
    let f = fdb(&c, 1, "vx-4096");
    assert!(
        !f.contains(&format!("dst {}", node_addr(3))),
        "node1 still points at node3: {f}"
    );
    c.cli_ok(&[
        "sandbox",
        "create",
        "reuse",
        "--node",
        "node1",
        "--network",
        "demo",
    ]);
    let reuse = c.cli_json(&["sandbox", "inspect", "reuse"]);
    assert_eq!(
        reuse[0]["Networks"]["demo"]["IPAddress"], "10.0.0.5",
        "node removal released the address"
    );
}

#[test]
fn overlapping_overlays_stay_isolated() {
    let c = cluster(2);
    c.cli_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.50.0.0/24",
        "ova",
    ]);
    c.cli_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.50.0.0/24",
        "ovb",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "a1",
        "--node",
        "node1",
        "--network",
        "ova",
        "--ip",
        "10.50.0.2",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "a2",
        "--node",
        "node2",
        "--network",
        "ova",
        "--ip",
        "10.50.0.3",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "b1",
        "--node",
        "node1",
        "--network",
        "ovb",
        "--ip",
        "10.50.0.4",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "b2",
        "--node",
        "node2",
        "--network",
        "ovb",
        "--ip",
        "10.50.0.2",
    ]);
    assert!(ping(&c, "a1", "10.50.0.3"), "a1 -> a2 on ova");
    assert!(
        ping(&c, "b1", "10.50.0.2"),
        "b1 -> b2 on ovb (same address as a1 on ova)"
    );
    assert!(
        !ping(&c, "b1", "10.50.0.3"),
        "b1 must not reach a2: different overlay"
    );
    assert!(
        !ping(&c, "a1", "10.50.0.4"),
        "a1 must not reach b1: different overlay"
    );
    let routes = in_ns_ok(&c.node(1), &["ip", "route"]);
    assert!(!routes.contains("10.50.0."), "{routes}");
}

#[test]
fn names_resolve_across_nodes_on_an_overlay() {
    let c = cluster(2);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "test1",
        "--node",
        "node1",
        "--network",
        "demo",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "test2",
        "--node",
        "node2",
        "--network",
        "demo",
        "--alias",
        "db",
    ]);
    let out = c.cli_ok(&["exec", "test2", "--", "ping", "-c3", "-i", "0.2", "test1"]);
    assert!(out.contains("3 received"), "{out}");
    assert!(
        ping(&c, "test1", "test2") && ping(&c, "test1", "db"),
        "test1 resolves test2 and its alias"
    );
    c.cli_ok(&["sandbox", "rm", "test2"]);
    let out = c.cli(&["exec", "test1", "--", "getent", "hosts", "test2"]);
    assert_ne!(out.status.code(), Some(0), "test2's name went with it");
}

/// A sandbox on a bridge network joins an overlay later (connect) and
/// leaves it (disconnect); the other node learns both.
#[test]
fn connect_and_disconnect_an_overlay() {
    let c = cluster(2);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "far", "--node", "node2", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "near", "--node", "node1"]);
    c.cli_ok(&["network", "connect", "demo", "near"]);
    let near = c.sandbox_ns("near");
    let eth1 = in_ns_ok(&near, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]);
    assert!(eth1.contains("10.0.0.3/24"), "{eth1}");
    assert!(
        in_ns_ok(&near, &["ip", "route"]).contains("default via 172.17.0.1 dev eth0"),
        "the bridge keeps the default route"
    );
    assert!(
        ping(&c, "near", "far") && ping(&c, "far", "near"),
        "across nodes after connect, by name"
    );
    c.cli_ok(&["network", "disconnect", "demo", "near"]);
    let f = fdb(&c, 2, "vx-4096");
    assert!(
        !f.contains("02:42:0a:00:00:03"),
        "node2 forgot near's overlay address: {f}"
    );
    assert!(!ping(&c, "far", "10.0.0.3"));
    // At the answer the interface is out of service (its deletion may
    // still run): no eth1, its address no longer local to the sandbox.
    let links = || in_ns_ok(&near, &["ip", "-o", "link", "show", "type", "veth"]);
    assert!(!links().contains("eth1"), "{}", links());
    let local = in_ns_ok(&near, &["ip", "route", "show", "table", "local"]);
    assert!(!local.contains("10.0.0.3"), "{local}");
    // eth1 is free for a connect right away; then only eth0 stays.
    c.cli_ok(&["network", "connect", "demo", "near"]);
    let eth1 = in_ns_ok(&near, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]);
    assert!(eth1.contains("10.0.0.3/24"), "{eth1}");
    c.cli_ok(&["network", "disconnect", "demo", "near"]);
    c.eventually("the departed interfaces deleted", || {
        let l = links();
        l.lines().count() == 1 && l.contains("eth0")
    });
}

/// berth's own deletions are not drift: the FDB and neighbour entries a
/// peer's agent deletes when an endpoint leaves, and the host veths an
/// agent deletes itself, wake no full pass (each woke one on every peer),
/// while the same FDB deletion made by hand still wakes one at once.
#[test]
fn own_deletions_wake_no_full_pass_but_a_hand_deletion_does() {
    let c = cluster(2);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "far", "--node", "node2", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "near", "--node", "node1"]);
    let wakes = |c: &Cluster, i: usize| c.agent_log(i).matches("converging now").count();
    let before = (wakes(&c, 1), wakes(&c, 2));
    for _ in 0..3 {
        c.cli_ok(&["network", "connect", "demo", "near"]);
        c.cli_ok(&["network", "disconnect", "demo", "near"]);
    }
    c.cli_ok(&[
        "sandbox",
        "create",
        "gone",
        "--node",
        "node1",
        "--network",
        "demo",
    ]);
    c.cli_ok(&["sandbox", "rm", "gone"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (wakes(&c, 1), wakes(&c, 2)),
        before,
        "an agent took its own deletions for drift:\n{}",
        c.logs()
    );

    // The control: the same kind of entry deleted by hand on node2.
    c.cli_ok(&["network", "connect", "demo", "near"]);
    let entry = fdb(&c, 2, "vx-4096");
    let mac = entry
        .split_whitespace()
        .next()
        .expect("near's entry on node2")
        .to_string();
    in_ns_ok(
        &c.node(2),
        &[
            "bridge",
            "fdb",
            "del",
            &mac,
            "dev",
            "vx-4096",
            "dst",
            &node_addr(1),
        ],
    );
    c.eventually("node2 wakes for the deletion by hand", || wakes(&c, 2) > before.1);
    c.eventually("node2 restores the entry", || {
        fdb(&c, 2, "vx-4096").contains(&mac)
    });
}
