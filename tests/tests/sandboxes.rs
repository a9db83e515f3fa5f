//! Sandboxes on real node namespaces: scenarios S1, S2, S4 (addresses),
//! S6, S7 and S9 of scenarios.md, connect/disconnect, exec, detached
//! commands, rollback when an agent is down, and agent restarts.
use std::time::{Duration, Instant};

use berth_tests::cluster::{Cluster, in_ns, in_ns_ok, node_addr};
use berth_tests::stderr;

fn cluster(nodes: usize) -> Cluster {
    Cluster::start(nodes).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

fn links(ns: &str) -> String {
    in_ns_ok(ns, &["ip", "-o", "link", "show"])
}

fn addrs(ns: &str) -> String {
    in_ns_ok(ns, &["ip", "-o", "-4", "addr", "show"])
}

/// S1 and S7: a sandbox is a network namespace with only `lo`, up.
#[test]
fn none_mode_sandbox_is_a_namespace_with_only_lo() {
    let c = cluster(1);
    let id = c.cli_ok(&["sandbox", "create", "t0", "--node", "node1", "--network", "none"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ns = c.sandbox_ns("t0");
    assert!(c.sandbox_namespaces().contains(&ns));
    let l = links(&ns);
    assert_eq!(l.lines().count(), 1, "only lo: {l}");
    assert!(l.contains("lo:") && l.contains("UP"), "{l}");
    let none = c.cli_json(&["network", "inspect", "none"]);
    let containers = none[0]["Containers"].as_object().expect("Containers");
    let entry = containers
        .values()
        .find(|v| v["Name"] == "t0")
        .expect("t0 listed on none");
    assert_eq!(entry["IPv4Address"], "");
    assert_eq!(entry["MacAddress"], "");
    c.cli_ok(&["sandbox", "rm", "t0"]);
    assert!(!c.sandbox_namespaces().contains(&ns), "namespace left behind");
    assert!(
        c.cli_json(&["network", "inspect", "none"])[0]["Containers"]
            .as_object()
            .expect("map")
            .is_empty()
    );
}

/// S2: default bridge, Docker's addresses and MAC, masquerade to the underlay.
#[test]
fn default_bridge_gets_docker_addresses_and_masquerades() {
    let mut c = cluster(2);
    let ext = c
        .add_underlay_host("ext", "192.168.205.100")
        .expect("underlay host");
    c.cli_ok(&["sandbox", "create", "test1", "--node", "node1"]);
    let ns = c.sandbox_ns("test1");
    let a = addrs(&ns);
    assert!(a.contains("eth0") && a.contains("172.17.0.2/16"), "{a}");
    let routes = in_ns_ok(&ns, &["ip", "route"]);
    assert!(routes.contains("default via 172.17.0.1 dev eth0"), "{routes}");
    let l = in_ns_ok(&ns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(l.contains("link/ether 02:42:ac:11:00:02"), "{l}");

    let node = c.node(1);
    let b = in_ns_ok(&node, &["ip", "-o", "-4", "addr", "show", "dev", "berth0"]);
    assert!(b.contains("172.17.0.1/16"), "{b}");
    let veths = in_ns_ok(&node, &["ip", "-o", "link", "show", "master", "berth0"]);
    assert_eq!(veths.lines().count(), 1, "{veths}");
    assert!(veths.contains(": bv"), "host side is berth's veth: {veths}");

    let inspect = c.cli_json(&["network", "inspect", "bridge"]);
    let eps = inspect[0]["Containers"].as_object().expect("Containers");
    let e = eps
        .values()
        .find(|v| v["Name"] == "test1")
        .expect("test1 in bridge");
    assert_eq!(e["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(e["IPv4Address"], "172.17.0.2/16");
    assert_eq!(e["EndpointID"].as_str().map(str::len), Some(64));

    // The underlay host sees node1's address as the source (masquerade).
    let server = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ext}"))
        .args(["--", "python3", "-c"])
        .arg(
            "import socket,sys\n\
             s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('192.168.205.100',9000));s.listen(1);s.settimeout(20)\n\
             c,a=s.accept();print(a[0]);sys.stdout.flush()",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("listener");
    let mut connected = false;
    for _ in 0..50 {
        let out = c.cli(&[
            "exec",
            "test1",
            "--",
            "python3",
            "-c",
            "import socket;socket.create_connection(('192.168.205.100',9000),timeout=2).close()",
        ]);
        if out.status.success() {
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = server.wait_with_output().expect("listener output");
    assert!(connected, "test1 could not reach the underlay host\n{}", c.logs());
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        node_addr(1),
        "source not masqueraded"
    );
    // And ping works too.
    c.cli_ok(&["exec", "test1", "--", "ping", "-c1", "-W2", "192.168.205.100"]);
}

/// S4 (addresses): user-defined bridge, connect, isolation between bridges.
#[test]
fn user_bridge_connect_disconnect_and_isolation() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "test1", "--node", "node1"]);
    c.cli_ok(&["network", "create", "-d", "bridge", "my-bridge"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "test3",
        "--node",
        "node1",
        "--network",
        "my-bridge",
    ]);
    let t3 = c.sandbox_ns("test3");
    assert!(addrs(&t3).contains("172.18.0.2/16"), "{}", addrs(&t3));
    c.cli_ok(&["network", "connect", "my-bridge", "test1"]);
    let t1 = c.sandbox_ns("test1");
    let a = addrs(&t1);
    assert!(a.contains("eth0") && a.contains("172.17.0.2/16"), "{a}");
    assert!(a.contains("eth1") && a.contains("172.18.0.3/16"), "{a}");
    // The default route stays on the first network.
    assert!(in_ns_ok(&t1, &["ip", "route"]).contains("default via 172.17.0.1 dev eth0"));
    let inspect = c.cli_json(&["network", "inspect", "my-bridge"]);
    let names: Vec<&str> = inspect[0]["Containers"]
        .as_object()
        .expect("map")
        .values()
        .filter_map(|v| v["Name"].as_str())
        .collect();
    assert!(names.contains(&"test1") && names.contains(&"test3"), "{names:?}");

    c.cli_ok(&["exec", "test3", "--", "ping", "-c1", "-W2", "172.18.0.3"]);
    let out = c.cli(&["exec", "test3", "--", "ping", "-c1", "-W1", "172.17.0.2"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "bridges must be isolated from each other"
    );

    // Connecting twice is refused; bad input leaves nothing.
    let out = c.cli(&["network", "connect", "my-bridge", "test1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already connected"), "{}", stderr(&out));
    let out = c.cli(&["network", "connect", "host", "test1"]);
    assert_eq!(out.status.code(), Some(1));

    // The network cannot go while it has endpoints.
    let out = c.cli(&["network", "rm", "my-bridge"]);
    assert!(stderr(&out).contains("active endpoints"), "{}", stderr(&out));

    c.cli_ok(&["network", "disconnect", "my-bridge", "test1"]);
    let a = addrs(&t1);
    assert!(!a.contains("eth1"), "eth1 gone after disconnect: {a}");
    let inspect = c.cli_json(&["network", "inspect", "my-bridge"]);
    assert_eq!(inspect[0]["Containers"].as_object().map(|m| m.len()), Some(1));
    // The address is free again.
    c.cli_ok(&["network", "connect", "--ip", "172.18.0.3", "my-bridge", "test1"]);
    assert!(addrs(&t1).contains("172.18.0.3/16"));
}

/// S6: host mode runs in the node's own namespace.
#[test]
fn host_mode_uses_the_node_namespace() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "h1", "--node", "node1", "--network", "host"]);
    assert!(c.sandbox_namespaces().is_empty(), "no namespace in host mode");
    let out = c.cli_ok(&["exec", "h1", "--", "ip", "-br", "addr"]);
    assert!(out.contains(&node_addr(1)), "{out}");
    let inspect = c.cli_json(&["network", "inspect", "host"]);
    let e = inspect[0]["Containers"]
        .as_object()
        .expect("map")
        .values()
        .find(|v| v["Name"] == "h1")
        .cloned();
    let e = e.expect("h1 on host");
    assert_eq!(
        (e["MacAddress"].as_str(), e["IPv4Address"].as_str()),
        (Some(""), Some(""))
    );
    c.cli_ok(&["sandbox", "rm", "h1"]);
}

/// exec streams output and passes on the exit status; a detached command
/// runs in the sandbox and is stopped with it.
#[test]
fn exec_and_detached_commands() {
    let c = cluster(1);
    c.cli_ok(&[
        "sandbox",
        "create",
        "web",
        "--node",
        "node1",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    let out = c.cli(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(stderr(&out), "err");
    // The sandbox's hosts file is what exec sees as /etc/hosts.
    let hosts = c.cli_ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("172.17.0.2\tweb"), "{hosts}");
    let ns = c.sandbox_ns("web");
    c.eventually("the detached server to listen", || {
        in_ns(
            &ns,
            &[
                "python3",
                "-c",
                "import urllib.request;urllib.request.urlopen('http://127.0.0.1:80/',timeout=1)",
            ],
        )
        .status
        .success()
    });
    // The agent records the detached process; it must be gone after rm.
    let owned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir().join("node1/owned.json")).expect("agent state"))
            .expect("json");
    let pid = owned["commands"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|d| d["pid"].as_u64());
    let pid = pid.expect("detached command recorded");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let out = c.cli(&["exec", "web", "--", "/nonexistent"]);
    assert_ne!(out.status.code(), Some(0));
    c.cli_ok(&["sandbox", "rm", "web"]);
    assert!(!c.sandbox_namespaces().contains(&ns));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "detached command still running: {stat}"
    );
    let out = c.cli(&["exec", "web", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

/// When the owning agent cannot be reached, the request is rolled back.
#[test]
fn rollback_when_the_agent_is_down() {
    let mut c = cluster(1);
    let before = c.etcd_keys();
    c.crash_agent(1);
    let out = c.cli(&["sandbox", "create", "lost", "--node", "node1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("node1 is unavailable"), "{err}");
    assert_eq!(err.lines().count(), 1);
    assert!(c.sandbox_namespaces().is_empty());
    // The agent may have built part of it before it died: the address stays
    // taken (the sandbox is `removing`) until the agent confirms it is gone.
    let v = c.cli_json(&["sandbox", "inspect", "lost"]);
    assert_eq!(v[0]["Phase"], "removing", "{v}");
    let again = c.cli(&["sandbox", "create", "lost", "--node", "node1"]);
    assert!(stderr(&again).contains("is being removed"), "{}", stderr(&again));
    c.start_agent(1).expect("agent");
    c.wait_ready(&[1]).expect("ready");
    // The repair loop finishes the rollback once the agent answers.
    // (`events/repair` is the repair loop's event key: it says what it did.)
    let records = |keys: Vec<String>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| !k.ends_with("/events/repair"))
            .collect()
    };
    let before = records(before);
    c.eventually("the rollback is finished", || records(c.etcd_keys()) == before);
    c.cli_ok(&["sandbox", "create", "lost", "--node", "node1"]);
    assert!(
        addrs(&c.sandbox_ns("lost")).contains("172.17.0.2/16"),
        "the address was released by the rollback"
    );
}

/// An agent restart does not disturb traffic, and a restarted agent
/// converges the node to the recorded state.
#[test]
fn agent_restart_keeps_traffic_and_converges() {
    let mut c = cluster(1);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1"]);
    c.cli_ok(&["sandbox", "create", "b", "--node", "node1"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "gone",
        "--node",
        "node1",
        "--network",
        "none",
    ]);
    let a = c.sandbox_ns("a");
    let b_if = in_ns_ok(&c.sandbox_ns("b"), &["ip", "-o", "link", "show", "eth0"]);
    // 60 pings 50 ms apart (3 s) across two agent restarts.
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{a}"))
        .args(["--", "ping", "-c", "60", "-i", "0.05", "-W", "1", "172.17.0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(400));
    c.stop_agent(1);
    // While it is down, a sandbox is removed (records only) and drift appears.
    c.cli_ok(&["sandbox", "rm", "--force", "gone"]);
    let t = Instant::now();
    c.start_agent(1).expect("agent");
    c.wait_ready(&[1]).expect("ready");
    c.eventually("the stale namespace to be swept", || {
        !c.sandbox_namespaces().contains(&c.sandbox_ns("gone"))
    });
    eprintln!("agent back and converged after {:?}", t.elapsed());
    c.crash_agent(1);
    c.start_agent(1).expect("agent");
    let out = ping.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("60 packets transmitted, 60 received"),
        "pings lost across restarts:\n{text}"
    );
    // Same interface, not recreated.
    assert_eq!(
        in_ns_ok(&c.sandbox_ns("b"), &["ip", "-o", "link", "show", "eth0"]),
        b_if
    );
}

/// S9: removing everything leaves nothing of berth's behind.
#[test]
fn teardown_leaves_nothing_behind() {
    let c = cluster(2);
    c.cli_ok(&[
        "network",
        "create",
        "tmp-net",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    ]);
    for (name, node, net) in [
        ("s1", "node1", "bridge"),
        ("s2", "node1", "tmp-net"),
        ("s3", "node2", "tmp-net"),
        ("s4", "node2", "none"),
        ("s5", "node1", "host"),
    ] {
        c.cli_ok(&["sandbox", "create", name, "--node", node, "--network", net]);
    }
    c.cli_ok(&["network", "connect", "tmp-net", "s1"]);
    c.cli_ok(&["exec", "s1", "--", "ping", "-c1", "-W2", "172.17.0.1"]);
    // icc=false: s1 and s2 share tmp-net on node1 but cannot talk.
    let out = c.cli(&["exec", "s2", "--", "ping", "-c1", "-W1", "172.18.0.3"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "enable_icc=false must isolate sandboxes on one bridge"
    );
    c.cli_ok(&["exec", "s2", "--", "ping", "-c1", "-W2", "172.18.0.1"]);
    let nft = in_ns_ok(&c.node(1), &["nft", "list", "ruleset"]);
    assert!(
        nft.contains("table ip berth") && nft.contains("masquerade"),
        "{nft}"
    );

    for name in ["s1", "s2", "s3", "s4", "s5"] {
        c.cli_ok(&["sandbox", "rm", name]);
    }
    c.cli_ok(&["network", "rm", "tmp-net"]);
    assert!(c.sandbox_namespaces().is_empty(), "{:?}", c.sandbox_namespaces());
    for i in 1..=2 {
        let node = c.node(i);
        // The kernel destroys a deleted namespace's veth pairs asynchronously
        // (and the agent deletes any host end still there after 2 s).
        let clean = berth_tests::wait_until(Duration::from_secs(5), || links(&node).lines().count() == 2);
        assert!(
            clean,
            "node{i} keeps only lo and its underlay eth0: {}",
            links(&node)
        );
        let nft = in_ns_ok(&node, &["nft", "list", "ruleset"]);
        assert!(!nft.contains("berth"), "node{i} rules left: {nft}");
    }
    let keys = c.etcd_keys();
    let leftovers: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !(k.starts_with("/berth/v1/nodes/")
                || k.starts_with("/berth/v1/alive/")
                || k.starts_with("/berth/v1/guards/")
                || k.starts_with("/berth/v1/leader/")
                || k.starts_with("/berth/v1/events/")
                || k.starts_with("/berth/v1/names/networks/")
                || k.starts_with("/berth/v1/names/bridges/berth0")
                || k.starts_with("/berth/v1/subnets/local/172.17.0.0-16")
                || k.starts_with("/berth/v1/networks/"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("/berth/v1/networks/"))
            .count(),
        3,
        "only built-ins"
    );
}

/// The CLI picks the ready node with the fewest sandboxes (counted from the
/// nodes' index keys) when --node is left out, and refuses names already
/// used anywhere in the cluster.
#[test]
fn placement_and_unique_names() {
    let c = cluster(2);
    for h in ["h1", "h2"] {
        c.cli_ok(&["sandbox", "create", h, "--node", "node1", "--network", "host"]);
    }
    let node_of = |names: &[&str]| -> Vec<String> {
        let mut args = vec!["sandbox", "inspect"];
        args.extend_from_slice(names);
        let v = c.cli_json(&args);
        v.as_array()
            .expect("array")
            .iter()
            .filter_map(|s| s["Node"].as_str().map(str::to_string))
            .collect()
    };
    // node1 holds 2, node2 none: both go to node2; then 2 and 2, a tie,
    // goes to the first by name.
    c.cli_ok(&["sandbox", "create", "p1"]);
    c.cli_ok(&["sandbox", "create", "p2"]);
    assert_eq!(
        node_of(&["p1", "p2"]),
        ["node2", "node2"],
        "the least loaded node"
    );
    c.cli_ok(&["sandbox", "create", "p3", "--network", "none"]);
    assert_eq!(
        node_of(&["p3"]),
        ["node1"],
        "a tie goes to the first node by name"
    );
    c.cli_ok(&["sandbox", "rm", "h1", "h2", "p3"]);
    let before = c.etcd_keys();
    let out = c.cli(&["sandbox", "create", "p1", "--node", "node2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    let out = c.cli(&["sandbox", "create", "bad name"]);
    assert_eq!(out.status.code(), Some(1));
    let out = c.cli(&["sandbox", "create", "x", "--network", "nope"]);
    assert!(stderr(&out).contains("not found"));
    let out = c.cli(&["sandbox", "create", "x", "--node", "node9"]);
    assert!(stderr(&out).contains("not found"));
    let out = c.cli(&["sandbox", "create", "x", "--ip", "172.17.0.1"]);
    assert!(stderr(&out).contains("gateway"), "{}", stderr(&out));
    assert_eq!(c.etcd_keys(), before, "refused requests left keys");
    let table = c.cli_ok(&["sandbox", "ls"]);
    assert!(
        table.contains("p1") && table.contains("p2") && table.contains("172.17.0.2"),
        "{table}"
    );
}
