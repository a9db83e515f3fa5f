//! Docker's network options beyond subnet and gateway (issue #17 item 4):
//! `--internal` (no way out, no published ports, still reachable inside),
//! `--ip-range` (automatic addresses from a sub-range only) and
//! `--aux-address` (reserved addresses), on the real kernel.
use std::collections::BTreeSet;

use berth_tests::cluster::{Cluster, in_ns, in_ns_ok, node_addr};
use berth_tests::stderr;

fn cluster(nodes: usize) -> Cluster {
    Cluster::start(nodes).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

fn ip_of(c: &Cluster, sandbox: &str, network: &str) -> String {
    let v = c.cli_json(&["sandbox", "inspect", sandbox]);
    v[0]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{sandbox} has no address on {network}: {v}"))
        .to_string()
}

/// A refused command: exit 1, one line naming `why`, and no etcd key left.
fn refused(c: &Cluster, args: &[&str], why: &str) {
    let before = c.etcd_keys();
    let out = c.cli(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {err}");
    assert!(err.contains(why), "{args:?}: {err:?} does not say {why:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(c.etcd_keys(), before, "{args:?} left keys behind");
}

/// An internal bridge network: its sandboxes reach each other, have no
/// default route, are not masqueraded, and nothing is forwarded across
/// its bridge even when a sandbox adds a default route itself and the
/// outside host routes back to it. Published ports are refused. A plain
/// bridge network on the same node, the control, does get out.
#[test]
fn internal_network_has_no_way_out() {
    let mut c = cluster(1);
    let ext = c
        .add_underlay_host("ext", "192.168.205.100")
        .expect("underlay host");
    c.cli_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "172.30.0.0/24",
        "inner",
    ]);
    c.cli_ok(&["network", "create", "--subnet", "172.31.0.0/24", "outer"]);
    let v = c.cli_json(&["network", "inspect", "inner"]);
    assert_eq!(v[0]["Internal"], true, "{v}");
    assert_eq!(c.cli_json(&["network", "inspect", "outer"])[0]["Internal"], false);

    for (name, net) in [("a", "inner"), ("b", "inner"), ("ctl", "outer")] {
        c.cli_ok(&["sandbox", "create", name, "--node", "node1", "--network", net]);
    }
    let b_ip = ip_of(&c, "b", "inner");
    c.cli_ok(&["exec", "a", "--", "ping", "-c1", "-W2", &b_ip]);

    let a_ns = c.sandbox_ns("a");
    let routes = in_ns_ok(&a_ns, &["ip", "route"]);
    assert!(
        !routes.contains("default"),
        "an internal sandbox has no default route: {routes}"
    );
    let ctl_routes = in_ns_ok(&c.sandbox_ns("ctl"), &["ip", "route"]);
    assert!(ctl_routes.contains("default via 172.31.0.1"), "{ctl_routes}");

    // The outside host routes both subnets back through node1, so without
    // masquerade only the firewall can stop the internal sandbox.
    for subnet in ["172.30.0.0/24", "172.31.0.0/24"] {
        in_ns_ok(&ext, &["ip", "route", "add", subnet, "via", &node_addr(1)]);
    }
    c.cli_ok(&["exec", "ctl", "--", "ping", "-c1", "-W2", "192.168.205.100"]);
    in_ns_ok(&a_ns, &["ip", "route", "add", "default", "via", "172.30.0.1"]);
    let out = in_ns(&a_ns, &["ping", "-c2", "-W1", "192.168.205.100"]);
    assert!(
        !out.status.success(),
        "an internal sandbox reached the outside: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The forward chain drops the bridge's traffic both ways.
    let bridge = c.cli_json(&["network", "inspect", "inner"])[0]["Options"]
        .get("com.docker.network.bridge.name")
        .and_then(|b| b.as_str())
        .map(str::to_string);
    let forward = in_ns_ok(&c.node(1), &["nft", "list", "chain", "ip", "berth", "forward"]);
    let drops = forward.lines().filter(|l| l.contains("drop")).count();
    assert!(
        drops >= 2,
        "no drop rules for the internal bridge ({bridge:?}): {forward}"
    );

    refused(
        &c,
        &[
            "sandbox",
            "create",
            "web",
            "--node",
            "node1",
            "--network",
            "inner",
            "-p",
            "8080:80",
        ],
        "network inner is internal",
    );
    assert!(!c.sandbox_namespaces().contains(&c.sandbox_ns("web")));

    // An internal overlay: no gateway-bridge interface, no default route.
    c.cli_ok(&["network", "create", "-d", "overlay", "--internal", "ov-in"]);
    c.cli_ok(&["sandbox", "create", "o1", "--node", "node1", "--network", "ov-in"]);
    let o_ns = c.sandbox_ns("o1");
    let links = in_ns_ok(&o_ns, &["ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");
    let routes = in_ns_ok(&o_ns, &["ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let o = c.cli_json(&["sandbox", "inspect", "o1"]);
    let nets: BTreeSet<String> = o[0]["Networks"]
        .as_object()
        .expect("Networks")
        .keys()
        .cloned()
        .collect();
    assert_eq!(nets, BTreeSet::from(["ov-in".to_string()]), "{o}");
}

/// `--ip-range` and `--aux-address`: concurrent creates take distinct
/// addresses from the range only, never the reserved one, and the next
/// create is refused as exhausted although the subnet has room; `--ip`
/// may still name any free address of the subnet but not a reserved one.
#[test]
fn ip_range_and_aux_addresses_bound_automatic_addresses() {
    let c = cluster(1);
    c.cli_ok(&[
        "network",
        "create",
        "--subnet",
        "10.44.0.0/24",
        "--ip-range",
        "10.44.0.8/30",
        "--aux-address",
        "printer=10.44.0.9",
        "--aux-address",
        "router=10.44.0.200",
        "ranged",
    ]);
    let v = c.cli_json(&["network", "inspect", "ranged"]);
    let config = &v[0]["IPAM"]["Config"][0];
    assert_eq!(config["Subnet"], "10.44.0.0/24", "{v}");
    assert_eq!(config["IPRange"], "10.44.0.8/30", "{v}");
    assert_eq!(
        config["AuxiliaryAddresses"],
        serde_json::json!({"printer": "10.44.0.9", "router": "10.44.0.200"})
    );

    // .8, .10 and .11 are the range's free addresses (.9 is reserved).
    let names = ["r1", "r2", "r3", "r4"];
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let c = &c;
                s.spawn(move || c.cli(&["sandbox", "create", n, "--node", "node1", "--network", "ranged"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ok: Vec<&str> = names
        .iter()
        .zip(&outs)
        .filter(|(_, o)| o.status.success())
        .map(|(n, _)| *n)
        .collect();
    let failed: Vec<String> = outs.iter().filter(|o| !o.status.success()).map(stderr).collect();
    assert_eq!(ok.len(), 3, "three fit in the range; failures: {failed:?}");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("no free address left in 10.44.0.8/30 (ip-range) of network ranged"),
        "{failed:?}"
    );
    let got: BTreeSet<String> = ok.iter().map(|n| ip_of(&c, n, "ranged")).collect();
    let want: BTreeSet<String> = ["10.44.0.8", "10.44.0.10", "10.44.0.11"].map(String::from).into();
    assert_eq!(got, want);

    // --ip: a reserved address is refused, an address outside the range is not.
    refused(
        &c,
        &[
            "sandbox",
            "create",
            "r5",
            "--node",
            "node1",
            "--network",
            "ranged",
            "--ip",
            "10.44.0.9",
        ],
        "address 10.44.0.9 is reserved as aux-address printer of network ranged",
    );
    c.cli_ok(&[
        "sandbox",
        "create",
        "r6",
        "--node",
        "node1",
        "--network",
        "ranged",
        "--ip",
        "10.44.0.100",
    ]);
    assert_eq!(ip_of(&c, "r6", "ranged"), "10.44.0.100");
    // A freed range address is handed out again.
    c.cli_ok(&["sandbox", "rm", ok[0]]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "r7",
        "--node",
        "node1",
        "--network",
        "ranged",
    ]);
    let again = ip_of(&c, "r7", "ranged");
    assert!(want.contains(&again), "{again} is not in the range");
}

/// Bad `--ip-range` and `--aux-address` values: one-line errors, nothing left.
#[test]
fn bad_ranges_and_aux_addresses_are_refused() {
    let c = cluster(1);
    fn create<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["network", "create", "bad"];
        args.extend_from_slice(extra);
        args
    }
    for (extra, why) in [
        (vec!["--ip-range", "10.50.0.0/28"], "--ip-range needs --subnet"),
        (
            vec!["--subnet", "10.50.0.0/24", "--ip-range", "10.51.0.0/28"],
            "10.51.0.0/28 is not inside the subnet 10.50.0.0/24",
        ),
        (
            vec!["--subnet", "10.50.0.0/24", "--ip-range", "10.50.0.5/28"],
            "has host bits set",
        ),
        (
            vec!["--subnet", "10.50.0.0/24", "--ip-range", "nonsense"],
            "is not an IPv4 CIDR",
        ),
        (
            vec!["--aux-address", "a=10.50.0.9"],
            "--aux-address needs --subnet",
        ),
        (
            vec!["--subnet", "10.50.0.0/24", "--aux-address", "gw=10.50.0.1"],
            "10.50.0.1 is the gateway of 10.50.0.0/24",
        ),
        (
            vec!["--subnet", "10.50.0.0/24", "--aux-address", "far=10.60.0.1"],
            "10.60.0.1 is outside the subnet",
        ),
        (
            vec![
                "--subnet",
                "10.50.0.0/24",
                "--aux-address",
                "a=10.50.0.9",
                "--aux-address",
                "b=10.50.0.9",
            ],
            "10.50.0.9 is given twice",
        ),
        (
            vec!["--subnet", "10.50.0.0/24", "--aux-address", "b@d=10.50.0.9"],
            "\"b@d\" contains '@'",
        ),
    ] {
        refused(&c, &create(&extra), why);
    }
    let many: Vec<String> = (0..=berth_core::limits::MAX_AUX_ADDRESSES)
        .flat_map(|i| ["--aux-address".to_string(), format!("a{i}=10.50.0.{}", i + 10)])
        .collect();
    let mut args = create(&["--subnet", "10.50.0.0/24"]);
    args.extend(many.iter().map(String::as_str));
    refused(&c, &args, "17 addresses, at most 16");
}
