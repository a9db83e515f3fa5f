//! Published ports, legacy links and name resolution (scenarios S3, S4 with
//! names, S5) on real node namespaces.
use std::time::{Duration, Instant};

use berth_tests::cluster::{Cluster, in_ns, in_ns_ok, ip, node_addr};
use berth_tests::stderr;

fn cluster(nodes: usize) -> Cluster {
    Cluster::start(nodes).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

/// An HTTP GET from namespace `ns`; the body, or None.
fn http_get(ns: &str, url: &str) -> Option<String> {
    let code =
        format!("import urllib.request;print(urllib.request.urlopen('{url}',timeout=2).read().decode())");
    let out = in_ns(ns, &["python3", "-c", &code]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn web(c: &Cluster, name: &str, publish: &[&str]) {
    let mut args = vec!["sandbox", "create", name, "--node", "node1"];
    for p in publish {
        args.extend(["-p", p]);
    }
    args.extend(["--", "python3", "-m", "http.server", "80"]);
    c.cli_ok(&args);
    let ns = c.sandbox_ns(name);
    c.eventually("the web server", || {
        http_get(&ns, "http://127.0.0.1:80/").is_some()
    });
}

/// S5: reachable from another node, from the node via 127.0.0.1, from a
/// sandbox on the node (hairpin); clashes refused; rebuilt after an agent
/// restart; gone with the sandbox.
#[test]
fn published_ports() {
    let mut c = cluster(2);
    web(&c, "web", &["8080:80", "9000-9001:80-81"]);
    let node1 = format!("http://{}:8080/", node_addr(1));
    assert!(
        http_get(&c.node(2), &node1).is_some(),
        "from another node\n{}",
        c.logs()
    );
    assert!(
        http_get(&c.node(1), "http://127.0.0.1:8080/").is_some(),
        "from node1 via 127.0.0.1"
    );
    c.cli_ok(&["sandbox", "create", "client", "--node", "node1"]);
    assert!(
        http_get(&c.sandbox_ns("client"), &node1).is_some(),
        "hairpin from a sandbox on node1"
    );
    let range = format!("http://{}:9000/", node_addr(1));
    assert!(http_get(&c.node(2), &range).is_some(), "first port of the range");

    let v = c.cli_json(&["sandbox", "inspect", "web"]);
    let ports = v[0]["Ports"].as_array().expect("Ports");
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert!(
        ports
            .iter()
            .any(|p| p["HostPort"] == 8080 && p["ContainerPort"] == 80),
        "{ports:?}"
    );
    let ls = c.cli_ok(&["sandbox", "ls"]);
    assert!(ls.contains("0.0.0.0:8080->80/tcp"), "{ls}");

    // A clash is refused before anything changes.
    let keys = c.etcd_keys();
    let rules = in_ns_ok(&c.node(1), &["nft", "list", "table", "ip", "berth"]);
    let out = c.cli(&["sandbox", "create", "web2", "--node", "node1", "-p", "8080:80"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("8080") && err.contains("web"), "{err}");
    let out = c.cli(&[
        "sandbox",
        "create",
        "web3",
        "--node",
        "node1",
        "-p",
        "192.168.205.10:8080:80",
    ]);
    assert_eq!(out.status.code(), Some(1), "all addresses already take 8080");
    assert_eq!(c.etcd_keys(), keys);
    assert_eq!(
        in_ns_ok(&c.node(1), &["nft", "list", "table", "ip", "berth"]),
        rules
    );
    assert!(!c.sandbox_namespaces().contains(&c.sandbox_ns("web2")));
    // The same port on another node or protocol is fine.
    c.cli_ok(&["sandbox", "create", "other", "--node", "node2", "-p", "8080:80"]);
    c.cli_ok(&["sandbox", "create", "udp", "--node", "node1", "-p", "8080:80/udp"]);

    // Rules come back after an agent restart, even if the table was lost.
    c.stop_agent(1);
    ip(&[
        "netns",
        "exec",
        &c.node(1),
        "nft",
        "delete",
        "table",
        "ip",
        "berth",
    ])
    .expect("drop table");
    assert!(http_get(&c.node(2), &node1).is_none());
    c.start_agent(1).expect("agent");
    c.eventually("the port to come back", || http_get(&c.node(2), &node1).is_some());

    c.cli_ok(&["sandbox", "rm", "web"]);
    let rules = in_ns_ok(&c.node(1), &["nft", "list", "table", "ip", "berth"]);
    assert!(
        !rules.contains("tcp . 8080"),
        "rule left for a departed sandbox: {rules}"
    );
    assert!(rules.contains("udp . 8080"), "{rules}");
    assert!(http_get(&c.node(2), &node1).is_none());
    // The port is free again.
    web(&c, "web2", &["8080:80"]);
    assert!(http_get(&c.node(2), &node1).is_some());
}

/// S3: a legacy link on the default bridge.
#[test]
fn legacy_links() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "test1", "--node", "node1"]);
    c.cli_ok(&[
        "sandbox", "create", "test2", "--node", "node1", "--link", "test1", "--link", "test1:t1",
    ]);
    let out = c.cli_ok(&["exec", "test2", "--", "ping", "-c1", "-W2", "test1"]);
    assert!(out.contains("172.17.0.2"), "{out}");
    c.cli_ok(&["exec", "test2", "--", "ping", "-c1", "-W2", "t1"]);
    let v = c.cli_json(&["sandbox", "inspect", "test2"]);
    assert_eq!(v[0]["Links"].as_array().map(Vec::len), Some(2));
    // Links need a target on the same node and the default bridge.
    let out = c.cli(&["sandbox", "create", "x", "--node", "node1", "--link", "nosuch"]);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    c.cli_ok(&["network", "create", "n1"]);
    let out = c.cli(&[
        "sandbox",
        "create",
        "y",
        "--node",
        "node1",
        "--network",
        "n1",
        "--link",
        "test1",
    ]);
    assert!(stderr(&out).contains("default bridge"), "{}", stderr(&out));
    // The default bridge has no name resolution of its own.
    c.cli_ok(&["sandbox", "create", "test4", "--node", "node1"]);
    let out = c.cli(&["exec", "test4", "--", "getent", "hosts", "test1"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "names do not resolve on the default bridge"
    );
    // The target going away removes the entry.
    c.cli_ok(&["sandbox", "rm", "test1"]);
    let hosts = c.cli_ok(&["exec", "test2", "--", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("test1"), "{hosts}");
}

/// S4 with names: names on user-defined networks, only between sandboxes
/// sharing a network, following connect and disconnect at once.
#[test]
fn names_on_user_networks() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "test1", "--node", "node1"]);
    c.cli_ok(&["network", "create", "-d", "bridge", "my-bridge"]);
    c.cli_ok(&["network", "create", "-d", "bridge", "other"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "test3",
        "--node",
        "node1",
        "--network",
        "my-bridge",
        "--alias",
        "cache",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "stranger",
        "--node",
        "node1",
        "--network",
        "other",
    ]);
    let out = c.cli(&["exec", "test3", "--", "getent", "hosts", "test1"]);
    assert_ne!(out.status.code(), Some(0), "test1 is not on my-bridge yet");

    c.cli_ok(&["network", "connect", "--alias", "db", "my-bridge", "test1"]);
    let out = c.cli_ok(&["exec", "test3", "--", "ping", "-c1", "-W2", "test1"]);
    assert!(
        out.contains("172.18.0.3"),
        "resolves to test1's my-bridge address: {out}"
    );
    c.cli_ok(&["exec", "test3", "--", "ping", "-c1", "-W2", "db"]);
    c.cli_ok(&["exec", "test1", "--", "ping", "-c1", "-W2", "cache"]);
    let out = c.cli(&["exec", "test3", "--", "ping", "-c1", "-W1", "172.17.0.2"]);
    assert_ne!(out.status.code(), Some(0), "networks stay isolated");
    // Names from other networks do not resolve.
    for (from, name) in [
        ("test3", "stranger"),
        ("stranger", "test3"),
        ("stranger", "test1"),
    ] {
        let out = c.cli(&["exec", from, "--", "getent", "hosts", name]);
        assert_ne!(out.status.code(), Some(0), "{from} must not resolve {name}");
    }
    // Other names are answered at once (no upstream here), never hang.
    let t = Instant::now();
    let out = c.cli(&["exec", "test3", "--", "getent", "hosts", "example.org"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "unknown name took {:?}",
        t.elapsed()
    );

    c.cli_ok(&["network", "disconnect", "my-bridge", "test1"]);
    let out = c.cli(&["exec", "test3", "--", "getent", "hosts", "test1"]);
    assert_ne!(out.status.code(), Some(0), "gone at once after disconnect");
    let out = c.cli(&["exec", "test3", "--", "getent", "hosts", "db"]);
    assert_ne!(out.status.code(), Some(0));
    c.cli_ok(&["network", "connect", "my-bridge", "test1"]);
    c.cli_ok(&["exec", "test3", "--", "getent", "hosts", "test1"]);
    c.cli_ok(&["sandbox", "rm", "test1"]);
    let out = c.cli(&["exec", "test3", "--", "getent", "hosts", "test1"]);
    assert_ne!(out.status.code(), Some(0), "gone at once after rm");
}
