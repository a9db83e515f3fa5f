//! The consistency checker (`berth_tests::invariants`) itself: it passes on
//! a converged cluster and names each kind of drift planted by hand — a
//! missing overlay FDB entry, an address key without an owner, a sandbox
//! without its node index key and an index key without a sandbox, a network
//! without its name key, a stray bridge, a missing or stray DNAT element — so a soak or fault matrix that it
//! calls converged really is.
use std::time::Duration;

use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, in_ns_ok};
use berth_tests::invariants::{consistent, state};
use berth_tests::wait_until;

fn converged(c: &Cluster) -> Result<(), String> {
    let mut last = String::new();
    if wait_until(Duration::from_secs(30), || match consistent(c) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    }) {
        Ok(())
    } else {
        Err(last)
    }
}

fn etcdctl(c: &Cluster, args: &[&str]) {
    let mut all = vec!["etcdctl", "--endpoints", "http://127.0.0.1:2379"];
    all.extend_from_slice(args);
    in_ns_ok(&c.ctl(), &all);
}

#[test]
fn the_checker_sees_each_kind_of_drift() {
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), "2".to_string()]; 2],
        ..Default::default()
    };
    let mut c = Cluster::start_with(2, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    c.cli_ok(&["network", "create", "-d", "overlay", "ov"]);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1", "--network", "ov"]);
    c.cli_ok(&["sandbox", "create", "b", "--node", "node2", "--network", "ov"]);
    c.cli_ok(&["sandbox", "create", "p", "--node", "node1", "-p", "8080:80"]);
    converged(&c).unwrap_or_else(|e| panic!("not converged at the start: {e}"));

    // A remote endpoint's FDB entry gone (the agent stopped, so nothing repairs it).
    let s = state(&c);
    let b = s
        .endpoints
        .iter()
        .find(|e| e["sandbox_name"] == "b" && e["ip"].as_str().is_some_and(|ip| ip.starts_with("10.")))
        .expect("b's overlay endpoint");
    let vni = s.networks.values().find(|n| n["name"] == "ov").expect("ov")["vni"]
        .as_u64()
        .expect("vni");
    let (mac, dev) = (b["mac"].as_str().expect("mac"), format!("vx-{vni}"));
    c.stop_agent(1);
    in_ns_ok(
        &c.node(1),
        &["bridge", "fdb", "del", mac, "dev", &dev, "dst", "192.168.205.11"],
    );
    let e = consistent(&c).expect_err("a missing FDB entry");
    assert!(e.contains("FDB"), "{e}");
    c.start_agent(1).expect("agent");
    converged(&c).unwrap_or_else(|e| panic!("the agent did not restore the FDB entry: {e}"));

    // A learned bridge entry on the VXLAN port for a MAC nobody has (what a
    // departed endpoint left before the port stopped learning).
    c.stop_agent(1);
    in_ns_ok(
        &c.node(1),
        &[
            "bridge",
            "fdb",
            "add",
            "02:42:0a:00:00:63",
            "dev",
            &dev,
            "master",
            "dynamic",
        ],
    );
    let e = consistent(&c).expect_err("a stale bridge entry");
    assert!(e.contains("bridge entries"), "{e}");
    c.start_agent(1).expect("agent");
    converged(&c).unwrap_or_else(|e| panic!("the agent did not remove the stale bridge entry: {e}"));

    // A published port's DNAT element gone, then one nobody publishes.
    c.stop_agent(1);
    in_ns_ok(
        &c.node(1),
        &[
            "nft",
            "delete",
            "element",
            "ip",
            "berth",
            "any_dnat_ip",
            "{ tcp . 8080 }",
        ],
    );
    let e = consistent(&c).expect_err("a missing DNAT element");
    assert!(e.contains("published ports"), "{e}");
    c.start_agent(1).expect("agent");
    converged(&c).unwrap_or_else(|e| panic!("the agent did not restore the element: {e}"));
    c.stop_agent(1);
    in_ns_ok(
        &c.node(1),
        &[
            "nft",
            "add",
            "element",
            "ip",
            "berth",
            "any_dnat_ip",
            "{ udp . 7777 : 172.17.0.99 }",
        ],
    );
    let e = consistent(&c).expect_err("a stray DNAT element");
    assert!(e.contains("published ports"), "{e}");
    c.start_agent(1).expect("agent");
    converged(&c).unwrap_or_else(|e| panic!("the agent did not remove the stray element: {e}"));

    // An address key nobody owns (the repair loop frees it after two passes).
    let net = s.networks.values().find(|n| n["name"] == "ov").expect("ov");
    let key = format!(
        "/berth/v1/ipam/{}/_cluster/10.0.0.200",
        net["id"].as_str().expect("id")
    );
    etcdctl(&c, &["put", &key, "0123456789abcdef"]);
    let e = consistent(&c).expect_err("an orphan address");
    assert!(e.contains("has no owner"), "{e}");
    converged(&c).unwrap_or_else(|e| panic!("the repair loop did not free the orphan: {e}"));

    // A sandbox record without its node index key (its node would no
    // longer be sent it), and an index key without a record: the repair
    // loop writes the one and deletes the other.
    let p = s
        .sandboxes
        .iter()
        .find(|(_, r)| r["name"] == "p")
        .expect("p")
        .0
        .clone();
    let index_key = format!("/berth/v1/node-sandboxes/node1/{p}");
    etcdctl(&c, &["del", &index_key]);
    let e = consistent(&c).expect_err("a missing index key");
    assert!(e.contains("no node index key"), "{e}");
    converged(&c).unwrap_or_else(|e| panic!("the repair loop did not restore the index key: {e}"));
    let stray = format!("/berth/v1/node-sandboxes/node2/{p}");
    etcdctl(&c, &["put", &stray, &p]);
    let e = consistent(&c).expect_err("a stray index key");
    assert!(e.contains("points at no sandbox"), "{e}");
    converged(&c).unwrap_or_else(|e| panic!("the repair loop did not delete the stray index key: {e}"));

    // A network without its name key.
    let name_key = "/berth/v1/names/networks/ov";
    etcdctl(&c, &["del", name_key]);
    let e = consistent(&c).expect_err("a missing name key");
    assert!(e.contains("no name key"), "{e}");
    etcdctl(&c, &["put", name_key, net["id"].as_str().expect("id")]);
    converged(&c).unwrap_or_else(|e| panic!("{e}"));

    // A bridge in berth's name space that no network with an endpoint here has.
    let ns = c.node(2);
    let add = in_ns(&ns, &["ip", "link", "add", "br-0000deadbeef", "type", "bridge"]);
    assert!(add.status.success());
    let e = consistent(&c).expect_err("a stray bridge");
    assert!(e.contains("bridges"), "{e}");
    in_ns_ok(&ns, &["ip", "link", "del", "br-0000deadbeef"]);
    converged(&c).unwrap_or_else(|e| panic!("{e}"));
}
