//! `berth doctor` on a real cluster: healthy paths (an overlay across two
//! nodes, the default bridge on one node, out through the node's NAT) are
//! all `ok`, the ping probe between two sandboxes included; then one hop at a time is broken by hand inside the node and
//! sandbox namespaces and doctor must name exactly that hop (and the
//! no-argument form the node's difference), without repairing it.
//!
//! The agents run with `--netlink-watch false --resync-period 3600`, so
//! nothing repairs a break before doctor looks: each break is undone by
//! hand or by restarting the agent (whose first sync repairs), and the
//! next healthy run proves it was undone.
use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, in_ns_ok, must, node_addr};
use berth_tests::stderr;
use serde_json::Value;

fn frozen(nodes: usize) -> Cluster {
    let args: Vec<String> = ["--resync-period", "3600", "--netlink-watch", "false"]
        .map(String::from)
        .to_vec();
    must(
        Cluster::start_with(
            nodes,
            ClusterOptions {
                agent_args: vec![args; nodes],
                ..Default::default()
            },
        ),
        "cluster",
    )
}

/// `berth --output json doctor ARGS`: (exit status, document).
fn doctor(c: &Cluster, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["--output", "json", "doctor"];
    full.extend_from_slice(args);
    let out = c.cli(&full);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// The hops that are BROKEN, as (node, hop).
fn broken(doc: &Value) -> Vec<(String, String)> {
    doc["Hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["State"] == "BROKEN")
        .map(|h| {
            (
                h["Node"].as_str().unwrap().to_string(),
                h["Hop"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_healthy(c: &Cluster, args: &[&str]) -> Value {
    let (code, doc) = doctor(c, args);
    assert_eq!(broken(&doc), Vec::<(String, String)>::new(), "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["Broken"], "");
    doc
}

/// Asserts that the first broken hop is `hop` on `node`; returns its detail.
fn assert_first_broken(c: &Cluster, args: &[&str], node: &str, hop: &str) -> String {
    let (code, doc) = doctor(c, args);
    assert_eq!(code, 1, "{doc:#}");
    let first = doc["Hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["FirstBroken"] == true)
        .unwrap_or_else(|| panic!("no first broken hop: {doc:#}"));
    assert_eq!(
        (first["Node"].as_str().unwrap(), first["Hop"].as_str().unwrap()),
        (node, hop),
        "{doc:#}"
    );
    assert_eq!(first["State"], "BROKEN");
    first["Detail"].as_str().unwrap().to_string()
}

/// The differences `berth doctor` (no argument) lists for `node`.
fn differences(c: &Cluster, node: &str) -> Vec<(String, String)> {
    let (_, doc) = doctor(c, &[]);
    let n = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == node)
        .unwrap_or_else(|| panic!("{node} missing: {doc:#}"));
    n["Differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["Object"].as_str().unwrap().to_string(),
                d["Change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Restarts node `i`'s agent: its first sync repairs what was broken.
fn repair(c: &mut Cluster, i: usize) {
    c.stop_agent(i);
    must(c.start_agent(i), "agent");
    // Ready may still be the old lease's: wait for the new agent's sync.
    let node = format!("node{i}");
    c.eventually("the restarted agent's first sync", || {
        let (_, doc) = doctor(c, &[]);
        doc.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["Node"] == node.as_str() && n["Synced"] == true)
        })
    });
}

/// (mac, ip, host veth) of a sandbox's endpoint on `network`.
fn endpoint(c: &Cluster, sandbox: &str, network: &str) -> (String, String, String) {
    let v = c.cli_json(&["sandbox", "inspect", sandbox]);
    let ep = &v[0]["Networks"][network];
    let id = ep["EndpointID"].as_str().unwrap();
    (
        ep["MacAddress"].as_str().unwrap().to_string(),
        ep["IPAddress"].as_str().unwrap().to_string(),
        format!("bv{}", &id[..12]),
    )
}

#[test]
fn overlay_path_across_nodes_names_each_broken_hop() {
    let mut c = frozen(2);
    let (n1, n2) = (c.node(1), c.node(2));
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "t1", "--node", "node1", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "t2", "--node", "node2", "--network", "demo"]);
    let (mac1, ip1, veth1) = endpoint(&c, "t1", "demo");
    let (mac2, ip2, veth2) = endpoint(&c, "t2", "demo");
    let vx = "vx-4096";

    let start = std::time::Instant::now();
    let doc = assert_healthy(&c, &["t1", "t2"]);
    eprintln!("doctor t1 t2 (healthy): {:?}", start.elapsed());
    assert!(doc["Path"].as_str().unwrap().contains("across nodes"), "{doc:#}");
    let hops: Vec<(String, String)> = doc["Hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["Node"].as_str().unwrap().to_string(),
                h["Hop"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("node1", format!("probe: ping {ip2} from t1")),
        ("node1", format!("namespace {}", c.sandbox_ns("t1"))),
        ("node1", format!("veth {veth1}")),
        ("node1", format!("vxlan {vx}")),
        ("node1", format!("neighbour {ip2} on {vx}")),
        ("node1", format!("fdb {mac2} on {vx}")),
        ("node2", format!("fdb {mac1} on {vx}")),
        ("node2", format!("veth {veth2}")),
        ("node2", format!("namespace {}", c.sandbox_ns("t2"))),
    ] {
        assert!(
            hops.contains(&(want.0.to_string(), want.1.clone())),
            "{want:?} not in {hops:#?}"
        );
    }
    // The table form, as people read it.
    let table = c.cli(&["doctor", "t1", "t2"]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("path: t1 (node1, "), "{text}");
    assert!(text.trim_end().ends_with("no broken hop"), "{text}");
    assert!(differences(&c, "node1").is_empty() && differences(&c, "node2").is_empty());

    // 1. The FDB entry for t2's MAC deleted on node1.
    in_ns_ok(
        &n1,
        &["bridge", "fdb", "del", &mac2, "dev", vx, "dst", &node_addr(2)],
    );
    let why = assert_first_broken(&c, &["t1", "t2"], "node1", &format!("fdb {mac2} on {vx}"));
    assert!(why.contains(&node_addr(2)), "{why}");
    // Frames to t2 still reach node2 through the all-zero (flood) entry:
    // doctor says so, and its probe still gets an answer.
    assert!(why.contains("flooded"), "{why}");
    let (_, doc) = doctor(&c, &["t1", "t2"]);
    assert_eq!(broken(&doc).len(), 1, "{doc:#}");
    // Without the flood entry too, the probe is lost as well.
    in_ns_ok(
        &n1,
        &[
            "bridge",
            "fdb",
            "del",
            "00:00:00:00:00:00",
            "dev",
            vx,
            "dst",
            &node_addr(2),
        ],
    );
    let why = assert_first_broken(&c, &["t1", "t2"], "node1", &format!("fdb {mac2} on {vx}"));
    assert!(why.contains("frames to the peer are lost"), "{why}");
    let (_, doc) = doctor(&c, &["t1", "t2"]);
    assert_eq!(
        broken(&doc),
        [
            ("node1".to_string(), format!("fdb {mac2} on {vx}")),
            ("node1".to_string(), format!("probe: ping {ip2} from t1"))
        ],
        "{doc:#}"
    );
    // Doctor changed nothing: the entry is still missing (the bridge may
    // have learned the MAC from the pings, without a VTEP: not berth's).
    let fdb = in_ns_ok(&n1, &["bridge", "fdb", "show", "dev", vx]);
    assert!(
        !fdb.lines().any(|l| l.contains(&mac2) && l.contains(" dst ")),
        "{fdb}"
    );
    // The agent's own repair (its first sync after a restart) puts it back.
    repair(&mut c, 1);
    assert_healthy(&c, &["t1", "t2"]);

    // 2. The neighbour entry for t2's address deleted on node1.
    in_ns_ok(&n1, &["ip", "neigh", "del", &ip2, "dev", vx]);
    assert_first_broken(&c, &["t1", "t2"], "node1", &format!("neighbour {ip2} on {vx}"));
    in_ns_ok(
        &n1,
        &[
            "ip",
            "neigh",
            "replace",
            &ip2,
            "lladdr",
            &mac2,
            "dev",
            vx,
            "nud",
            "permanent",
        ],
    );
    assert_healthy(&c, &["t1", "t2"]);

    // 3. t2's host veth set down on node2: the far side's hop.
    in_ns_ok(&n2, &["ip", "link", "set", &veth2, "down"]);
    let why = assert_first_broken(&c, &["t1", "t2"], "node2", &format!("veth {veth2}"));
    assert!(why.contains("down"), "{why}");
    in_ns_ok(&n2, &["ip", "link", "set", &veth2, "up"]);
    assert_healthy(&c, &["t1", "t2"]);

    // 4. t1's host veth taken off its bridge on node1.
    let link: Value = serde_json::from_str(&in_ns_ok(&n1, &["ip", "-j", "link", "show", &veth1])).unwrap();
    let bridge = link[0]["master"].as_str().unwrap().to_string();
    in_ns_ok(&n1, &["ip", "link", "set", &veth1, "nomaster"]);
    let why = assert_first_broken(&c, &["t1", "t2"], "node1", &format!("{veth1} on bridge {bridge}"));
    assert!(why.contains("nomaster"), "{why}");
    in_ns_ok(&n1, &["ip", "link", "set", &veth1, "master", &bridge]);
    assert_healthy(&c, &["t1", "t2"]);

    // 5. t1's own address deleted inside its namespace.
    let ns1 = c.sandbox_ns("t1");
    in_ns_ok(&ns1, &["ip", "addr", "del", &format!("{ip1}/24"), "dev", "eth0"]);
    assert_first_broken(&c, &["t1", "t2"], "node1", &format!("address {ip1}/24 on eth0"));
    let diff = differences(&c, "node1");
    assert!(
        diff.iter()
            .any(|(o, ch)| o == &format!("endpoint {veth1}") && ch.contains("eth0 in t1 has")),
        "{diff:?}"
    );
    in_ns_ok(&ns1, &["ip", "addr", "add", &format!("{ip1}/24"), "dev", "eth0"]);
    assert_healthy(&c, &["t1", "t2"]);

    // 6. node2's agent stopped: doctor says so and still checks node1's hops.
    c.stop_agent(2);
    let (code, doc) = doctor(&c, &["t1", "t2"]);
    assert_eq!(code, 1, "{doc:#}");
    let b = broken(&doc);
    assert_eq!(
        b,
        [("node2".to_string(), "agent on node2".to_string())],
        "{doc:#}"
    );
    assert!(
        doc["Hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["Node"] == "node1" && h["State"] == "ok")
    );
    let (code, doc) = doctor(&c, &[]);
    assert_eq!(code, 1);
    let node2 = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "node2")
        .unwrap();
    assert_eq!(node2["Reachable"], false, "{doc:#}");
    assert!(node2["Error"].as_str().unwrap().contains("node2"), "{doc:#}");
    let table = c.cli(&["doctor"]);
    assert_eq!(table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&table.stdout).contains("unreachable"));
}

#[test]
fn bridge_paths_outside_isolation_firewall_and_bad_input() {
    let mut c = frozen(1);
    let n1 = c.node(1);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1"]);
    c.cli_ok(&["sandbox", "create", "b", "--node", "node1"]);
    let (_, ip_b, _) = endpoint(&c, "b", "bridge");

    let doc = assert_healthy(&c, &["a", "b"]);
    assert!(doc["Path"].as_str().unwrap().contains("same node"), "{doc:#}");
    // By address, the same path.
    let by_ip = assert_healthy(&c, &["a", &ip_b]);
    assert_eq!(by_ip["Path"], doc["Path"]);
    // One sandbox alone: its own hops.
    assert_healthy(&c, &["a"]);
    let out = c.cli(&["doctor"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("converged"));

    // Out of berth: forwarding and masquerade are hops (doctor sends nothing).
    let out_doc = assert_healthy(&c, &["a", "192.168.205.2"]);
    let names: Vec<&str> = out_doc["Hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Hop"].as_str().unwrap())
        .collect();
    for want in [
        "ip forwarding",
        "masquerade 172.17.0.0/16",
        "nftables table berth",
        "beyond node1",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }

    // b's interface set down inside its namespace (its default route goes with it).
    let ns_b = c.sandbox_ns("b");
    in_ns_ok(&ns_b, &["ip", "link", "set", "eth0", "down"]);
    // From b's side the first hop to fail is its own interface.
    assert_first_broken(&c, &["b", "a"], "node1", "interface eth0 in b");
    in_ns_ok(&ns_b, &["ip", "link", "set", "eth0", "up"]);
    in_ns_ok(&ns_b, &["ip", "route", "add", "default", "via", "172.17.0.1"]);
    assert_healthy(&c, &["a", "b"]);

    // Different networks are isolated by design: named, not a kernel fault.
    c.cli_ok(&["network", "create", "other"]);
    c.cli_ok(&["sandbox", "create", "o", "--node", "node1", "--network", "other"]);
    let why = assert_first_broken(&c, &["a", "o"], "", "common network");
    assert!(why.contains("share no network"), "{why}");

    // A published port: its DNAT rule is a hop; the rule flushed by hand.
    c.cli_ok(&["sandbox", "create", "web", "--node", "node1", "-p", "8080:80"]);
    let doc = assert_healthy(&c, &["web"]);
    assert!(
        doc["Hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["Hop"] == "published 0.0.0.0:8080->80/tcp"),
        "{doc:#}"
    );
    in_ns_ok(&n1, &["nft", "flush", "chain", "ip", "berth", "ports"]);
    let why = assert_first_broken(&c, &["web"], "node1", "published 0.0.0.0:8080->80/tcp");
    assert!(why.contains("no DNAT 0.0.0.0:8080/tcp -> 172.17.0."), "{why}");

    // berth's nftables table deleted by hand.
    in_ns_ok(&n1, &["nft", "delete", "table", "ip", "berth"]);
    let why = assert_first_broken(&c, &["a", "192.168.205.2"], "node1", "nftables table berth");
    assert!(why.contains("missing"), "{why}");
    assert!(
        differences(&c, "node1")
            .iter()
            .any(|(o, _)| o == "firewall berth")
    );
    assert!(
        !in_ns(&n1, &["nft", "list", "table", "ip", "berth"])
            .status
            .success(),
        "doctor must not repair"
    );
    // A restarted agent's first sync repairs it; doctor sees that.
    repair(&mut c, 1);
    c.eventually("the table back", || {
        in_ns(&n1, &["nft", "list", "table", "ip", "berth"])
            .status
            .success()
    });
    assert_healthy(&c, &["a", "192.168.205.2"]);

    // Operators may run doctor, viewers not (it shows node internals).
    let viewer = c.client_cert("look", "viewer");
    let out = c.cli_as(&viewer, &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs an operator or admin certificate"),
        "{}",
        stderr(&out)
    );
    let operator = c.client_cert("fix", "operator");
    let out = c.cli_as(&operator, &["doctor", "a", "b"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Bad input: one line, non-zero, nothing changed.
    let keys = c.etcd_keys();
    for (args, want) in [
        (vec!["doctor", "nope"], "berth: sandbox \"nope\" not found"),
        (vec!["doctor", "a", "nope"], "berth: sandbox \"nope\" not found"),
        (
            vec!["doctor", "a", "a"],
            "berth: invalid target: is the sandbox itself",
        ),
    ] {
        let out = c.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).trim_end(), want, "{args:?}");
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    assert_eq!(c.etcd_keys(), keys);
}
