//! Subnets that don't collide with the world (issue #12 item 7): agents
//! report their node's own routes at registration; automatic pools skip
//! subnets that overlap them (as Docker skips host routes), an explicit one
//! that overlaps is FAILED_PRECONDITION naming the node and the route, and
//! overlay and local bridge networks, which meet on every node, don't
//! overlap each other. A refusal writes nothing.
use berth_tests::cluster::Cluster;
use berth_tests::stderr;
use ipnet::Ipv4Net;

/// The harness's underlay: every node has 192.168.205.0/24 on its eth0.
const UNDERLAY: &str = "192.168.205.0/24";

fn refused(c: &Cluster, args: &[&str]) -> String {
    let before = c.etcd_dump();
    let out = c.cli(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "berth {args:?} must fail: {}",
        stderr(&out)
    );
    let after = c.etcd_dump();
    assert_eq!(before, after, "berth {args:?} was refused but wrote to etcd");
    stderr(&out)
}

fn subnet_of(c: &Cluster, name: &str) -> Ipv4Net {
    let v = c.cli_json(&["network", "inspect", name]);
    v[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or_else(|| panic!("subnet of {name}: {v}"))
        .parse()
        .expect("a CIDR")
}

#[test]
fn subnets_avoid_node_routes_and_each_other() {
    let c = Cluster::start(2).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    let nodes = c.cli_json(&["node", "ls"]);
    for n in nodes.as_array().expect("nodes") {
        let routes: Vec<&str> = n["Routes"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(routes, [format!("{UNDERLAY} dev eth0")], "{n}");
    }

    // An explicit subnet over the underlay, of either driver.
    for (driver, subnet) in [("bridge", UNDERLAY), ("overlay", "192.168.200.0/21")] {
        let msg = refused(
            &c,
            &["network", "create", "-d", driver, "--subnet", subnet, "clash"],
        );
        assert!(
            msg.starts_with(&format!(
                "berth: subnet {subnet} overlaps route {UNDERLAY} (dev eth0) of node node"
            )),
            "{msg}"
        );
    }

    // The local pool runs into 192.168.192.0/20, which holds the underlay,
    // and goes past it.
    let underlay: Ipv4Net = UNDERLAY.parse().unwrap();
    let mut subnets = Vec::new();
    for i in 0..30 {
        let name = format!("n{i}");
        c.cli_ok(&["network", "create", &name]);
        let s = subnet_of(&c, &name);
        assert!(
            !s.contains(&underlay.network()) && !underlay.contains(&s.network()),
            "{name} got {s}, over the underlay"
        );
        subnets.push(s);
        if s == "192.168.208.0/20".parse().unwrap() {
            break;
        }
    }
    assert_eq!(
        subnets.last().map(|s| s.to_string()).as_deref(),
        Some("192.168.208.0/20"),
        "the pool went past the underlay's /20: {subnets:?}"
    );

    // A local network in the global pool's range: overlays skip it, and an
    // explicit overlay subnet inside it is refused, naming it.
    c.cli_ok(&["network", "create", "--subnet", "10.0.0.0/22", "local10"]);
    c.cli_ok(&["network", "create", "-d", "overlay", "ov"]);
    assert_eq!(subnet_of(&c, "ov").to_string(), "10.0.4.0/24");
    let msg = refused(
        &c,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.0.1.0/24",
            "ov2",
        ],
    );
    assert_eq!(
        msg.trim(),
        "berth: subnet 10.0.1.0/24 overlaps 10.0.0.0/22 of local network local10"
    );
    // And the other way round.
    let msg = refused(&c, &["network", "create", "--subnet", "10.0.4.128/25", "local11"]);
    assert_eq!(
        msg.trim(),
        "berth: subnet 10.0.4.128/25 overlaps 10.0.4.0/24 of global network ov"
    );
}
