//! berth-cni driven as libcni drives a plugin: the spec's environment
//! (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH)
//! and the network configuration on stdin, against a real cluster. The
//! test plays the runtime: it makes the containers' namespaces itself (by
//! path, as podman does), and checks what the plugin says, what the
//! kernel has and what berth records.
use std::io::Write;
use std::process::{Command, Stdio};

use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, in_ns_ok, ip, must, node_addr};
use berth_tests::{bin, unique, wait_until};
use serde_json::{Value, json};

/// A container's network namespace, made and removed as a runtime would
/// (`ip netns add`, `lo` up); deleted on drop unless the test already did.
struct RuntimeNs {
    name: String,
}

impl RuntimeNs {
    fn new(tag: &str) -> Self {
        let name = unique(&format!("rt{tag}"));
        ip(&["netns", "add", &name]).expect("ip netns add");
        ip(&["-n", &name, "link", "set", "lo", "up"]).expect("lo up");
        Self { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -4 -o addr show` inside.
    fn addrs(&self) -> String {
        in_ns_ok(&self.name, &["ip", "-4", "-o", "addr", "show"])
    }

    fn links(&self) -> String {
        in_ns_ok(&self.name, &["ip", "-o", "link", "show"])
    }
}

impl Drop for RuntimeNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// One plugin run: exit status and stdout (JSON when there is any).
struct Run {
    ok: bool,
    out: Value,
    raw: String,
}

/// Runs berth-cni with the spec's environment and `conf` on stdin, talking
/// to node `node`'s agent (`agent_socket` in the configuration, as the lab's
/// conflists could; the other runs use $BERTH_AGENT_SOCKET).
#[allow(clippy::too_many_arguments)]
fn cni(
    c: &Cluster,
    node: usize,
    command: &str,
    container: &str,
    netns: &str,
    ifname: &str,
    args: &str,
    conf: &Value,
) -> Run {
    let mut child = Command::new(bin("berth-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", "/opt/cni/bin")
        .env("BERTH_AGENT_SOCKET", c.local_socket(node))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running berth-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        ok: out.status.success(),
        out: serde_json::from_str(raw.trim()).unwrap_or(Value::Null),
        raw: raw + &String::from_utf8_lossy(&out.stderr),
    }
}

fn conf(version: &str, network: &str) -> Value {
    json!({"cniVersion": version, "name": network, "type": "berth", "network": network})
}

/// The sandboxes berth lists, by name.
fn sandbox(c: &Cluster, name: &str) -> Option<Value> {
    let all = c.cli_json(&["sandbox", "ls"]);
    all.as_array()?.iter().find(|s| s["Name"] == name).cloned()
}

fn ipam_keys(c: &Cluster) -> Vec<String> {
    c.etcd_keys()
        .into_iter()
        .filter(|k| k.contains("/ipam/"))
        .collect()
}

fn host_veths(c: &Cluster, node: usize) -> Vec<String> {
    in_ns_ok(&c.node(node), &["ip", "-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("bv"))
        .collect()
}

#[test]
fn the_plugin_attaches_checks_detaches_and_collects_like_libcni_drives_it() {
    let c = must(
        Cluster::start_with(
            2,
            ClusterOptions {
                agent_args: vec![vec!["--resync-period".into(), "2".into()]; 2],
                ..Default::default()
            },
        ),
        "cluster",
    );
    c.cli_ok(&["network", "create", "-d", "overlay", "ov"]);
    c.cli_ok(&["network", "create", "br"]);

    // VERSION: the versions it speaks, with or without a configuration.
    let v = cni(&c, 1, "VERSION", "", "", "", "", &json!({"cniVersion": "1.0.0"}));
    assert!(v.ok, "{}", v.raw);
    assert_eq!(v.out["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    assert_eq!(v.out["cniVersion"], "1.0.0");

    // STATUS: the agent is ready.
    let s = cni(&c, 1, "STATUS", "", "", "", "", &conf("1.1.0", "ov"));
    assert!(s.ok, "{}", s.raw);

    // ADD on a bridge network: eth0 with berth's address, default route, in the runtime's namespace.
    let rt1 = RuntimeNs::new("a");
    let add = cni(
        &c,
        1,
        "ADD",
        "c1aaaaaaaaaaaaaaaa",
        &rt1.path(),
        "eth0",
        "IgnoreUnknown=1;K8S_POD_NAME=x",
        &conf("1.0.0", "br"),
    );
    assert!(add.ok, "{}\n{}", add.raw, c.logs());
    let r = &add.out;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["sandbox"], rt1.path());
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    let ip1 = addr.split('/').next().unwrap().to_string();
    assert!(
        addr.starts_with("172.") && r["ips"][0]["gateway"].is_string(),
        "{r}"
    );
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(
        r["dns"]["nameservers"],
        json!(["127.0.0.11"]),
        "user network: the embedded DNS"
    );
    assert!(
        rt1.addrs().contains(&format!("eth0    inet {addr}")),
        "{}",
        rt1.addrs()
    );
    let route = in_ns_ok(&rt1.name, &["ip", "route", "show", "default"]);
    assert!(
        route.contains(r["ips"][0]["gateway"].as_str().unwrap()),
        "{route}"
    );
    // berth records it, marked as CNI's, with the container id.
    let sb = sandbox(&c, "cni-c1aaaaaaaaaa").expect("listed");
    assert_eq!(
        (sb["Origin"].as_str(), sb["ContainerID"].as_str()),
        (Some("cni"), Some("c1aaaaaaaaaaaaaaaa"))
    );
    assert_eq!(sb["NetnsPath"], rt1.path());
    assert!(c.cli_ok(&["sandbox", "ls"]).contains("cni:c1aaaaaaaaaa"));
    // An ADD again (same container, interface and namespace) answers the same.
    let again = cni(
        &c,
        1,
        "ADD",
        "c1aaaaaaaaaaaaaaaa",
        &rt1.path(),
        "eth0",
        "",
        &conf("1.0.0", "br"),
    );
    assert!(again.ok, "{}", again.raw);
    assert_eq!(again.out["ips"], r["ips"]);

    // CHECK with the ADD's result: realised as recorded. Then drift the check sees (and does not fix).
    let mut chk = conf("1.0.0", "br");
    chk["prevResult"] = r.clone();
    let ok = cni(
        &c,
        1,
        "CHECK",
        "c1aaaaaaaaaaaaaaaa",
        &rt1.path(),
        "eth0",
        "",
        &chk,
    );
    assert!(ok.ok, "{}", ok.raw);
    in_ns_ok(&rt1.name, &["ip", "link", "set", "eth0", "mtu", "1300"]);
    let bad = cni(
        &c,
        1,
        "CHECK",
        "c1aaaaaaaaaaaaaaaa",
        &rt1.path(),
        "eth0",
        "",
        &chk,
    );
    assert!(!bad.ok && bad.out["code"] == 101, "{}", bad.raw);
    assert!(
        bad.out["msg"].as_str().unwrap().contains("is not as recorded"),
        "{}",
        bad.raw
    );
    let unknown = cni(&c, 1, "CHECK", "nosuchcontainer", &rt1.path(), "eth0", "", &chk);
    assert_eq!(unknown.out["code"], 3, "{}", unknown.raw);
    // Convergence repairs the drift on its period (the check changed nothing).
    c.eventually("the MTU repaired", || {
        in_ns(&rt1.name, &["ip", "link", "show", "eth0"])
            .stdout
            .windows(8)
            .any(|w| w == b"mtu 1500")
    });

    // DEL, twice: the address, the host veth and eth0 go; the runtime's namespace and lo stay.
    let before = host_veths(&c, 1);
    assert_eq!(before.len(), 1, "{before:?}");
    for _ in 0..2 {
        let del = cni(&c, 1, "DEL", "c1aaaaaaaaaaaaaaaa", &rt1.path(), "eth0", "", &chk);
        assert!(del.ok && del.raw.trim().is_empty(), "{}", del.raw);
    }
    assert!(sandbox(&c, "cni-c1aaaaaaaaaa").is_none());
    assert!(
        !ipam_keys(&c).iter().any(|k| k.ends_with(&ip1)),
        "address freed: {:?}",
        ipam_keys(&c)
    );
    assert!(host_veths(&c, 1).is_empty(), "{:?}", host_veths(&c, 1));
    assert!(!rt1.links().contains("eth0"), "{}", rt1.links());
    assert!(
        rt1.links().contains("lo"),
        "the runtime's namespace is left alone"
    );
    // A DEL without a namespace (the runtime lost it) is fine too.
    let del = cni(
        &c,
        1,
        "DEL",
        "c1aaaaaaaaaaaaaaaa",
        "",
        "eth0",
        "",
        &conf("1.0.0", "br"),
    );
    assert!(del.ok, "{}", del.raw);

    // The overlay across two nodes, spec 1.1.0: a published port on node1, IP= on node2.
    let rt2 = RuntimeNs::new("b");
    let rt3 = RuntimeNs::new("c");
    let mut with_port = conf("1.1.0", "ov");
    with_port["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let a2 = cni(
        &c,
        1,
        "ADD",
        "c2bbbbbbbbbbbbbbbb",
        &rt2.path(),
        "eth0",
        "",
        &with_port,
    );
    assert!(a2.ok, "{}\n{}", a2.raw, c.logs());
    let ip2 = a2.out["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(ip2.starts_with("10."), "{}", a2.out);
    assert!(
        a2.out["ips"][0].get("gateway").is_none(),
        "an overlay's gateway answers nothing: {}",
        a2.out
    );
    assert_eq!(
        a2.out["interfaces"][1]["name"], "eth0gw",
        "outbound and ports via the gateway bridge"
    );
    let wanted = "10.0.0.200";
    let a3 = cni(
        &c,
        2,
        "ADD",
        "c3cccccccccccccccc",
        &rt3.path(),
        "eth0",
        &format!("IgnoreUnknown=1;IP={wanted}"),
        &conf("1.1.0", "ov"),
    );
    assert!(a3.ok, "{}\n{}", a3.raw, c.logs());
    assert_eq!(a3.out["ips"][0]["address"], format!("{wanted}/24"));
    // Across nodes on the overlay, both ways.
    assert!(
        wait_until(std::time::Duration::from_secs(10), || in_ns(
            &rt2.name,
            &["ping", "-c1", "-W1", wanted]
        )
        .status
        .success()),
        "rt2 -> rt3\n{}",
        c.logs()
    );
    in_ns_ok(&rt3.name, &["ping", "-c1", "-W2", &ip2]);
    // The published port answers from the other node.
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", rt2.path()))
        .args(["--", "python3", "-c", "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',80))\ns.listen(4)\nwhile True:\n  c,_=s.accept(); c.sendall(b'berth-cni\\n'); c.close()"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = format!(
        "import socket\nc=socket.create_connection(('{}',18080),timeout=2)\nprint(c.recv(64).decode().strip())",
        node_addr(1)
    );
    let answered = wait_until(std::time::Duration::from_secs(10), || {
        String::from_utf8_lossy(&in_ns(&c.node(2), &["python3", "-c", &client]).stdout).contains("berth-cni")
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(answered, "port 18080 on node1 from node2\n{}", c.logs());
    // An address taken is refused with berth's words and a CNI code; nothing is left behind.
    let rt4 = RuntimeNs::new("d");
    let keys = c.etcd_keys();
    let taken = cni(
        &c,
        2,
        "ADD",
        "c4dddddddddddddddd",
        &rt4.path(),
        "eth0",
        &format!("IP={wanted}"),
        &conf("1.1.0", "ov"),
    );
    assert!(!taken.ok && taken.out["code"] == 100, "{}", taken.raw);
    assert!(
        taken.out["msg"].as_str().unwrap().starts_with("berth: "),
        "{}",
        taken.raw
    );
    assert_eq!(c.etcd_keys(), keys, "a refused ADD leaves no key");
    assert!(!rt4.links().contains("eth0"));

    // GC on node2: attachments not among the runtime's valid ones go, the valid stay.
    let a4 = cni(
        &c,
        2,
        "ADD",
        "c4dddddddddddddddd",
        &rt4.path(),
        "eth0",
        "",
        &conf("1.1.0", "ov"),
    );
    assert!(a4.ok, "{}", a4.raw);
    // An attachment to another network on the same node is not the GC's business.
    let rt5 = RuntimeNs::new("f");
    let a5 = cni(
        &c,
        2,
        "ADD",
        "c5eeeeeeeeeeeeeeee",
        &rt5.path(),
        "eth0",
        "",
        &conf("1.1.0", "br"),
    );
    assert!(a5.ok, "{}", a5.raw);
    let mut gc = conf("1.1.0", "ov");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c3cccccccccccccccc", "ifname": "eth0"}]);
    let g = cni(&c, 2, "GC", "", "", "", "", &gc);
    assert!(g.ok, "{}", g.raw);
    assert!(sandbox(&c, "cni-c4dddddddddd").is_none(), "collected");
    assert!(sandbox(&c, "cni-c3cccccccccc").is_some(), "kept");
    assert!(
        sandbox(&c, "cni-c5eeeeeeeeee").is_some(),
        "another network's attachment stays"
    );
    assert!(!rt4.links().contains("eth0"));
    let d5 = cni(
        &c,
        2,
        "DEL",
        "c5eeeeeeeeeeeeeeee",
        &rt5.path(),
        "eth0",
        "",
        &conf("1.1.0", "br"),
    );
    assert!(d5.ok, "{}", d5.raw);

    // A container killed without DEL: its namespace goes; convergence detaches it and frees the address.
    drop(rt3);
    c.eventually("the vanished attachment detached", || {
        sandbox(&c, "cni-c3cccccccccc").is_none()
    });
    assert!(
        !ipam_keys(&c).iter().any(|k| k.ends_with(wanted)),
        "address freed"
    );
    c.eventually("node2's veths gone", || host_veths(&c, 2).is_empty());

    let d2 = cni(
        &c,
        1,
        "DEL",
        "c2bbbbbbbbbbbbbbbb",
        &rt2.path(),
        "eth0",
        "",
        &with_port,
    );
    assert!(d2.ok, "{}", d2.raw);
    // The table goes with its last rule, or keeps no DNAT for the port.
    let nft = String::from_utf8_lossy(&in_ns(&c.node(1), &["nft", "list", "table", "ip", "berth"]).stdout)
        .into_owned();
    assert!(!nft.contains("18080"), "the published port is gone: {nft}");
    assert!(c.cli_json(&["sandbox", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn bad_input_gets_a_cni_error_and_leaves_nothing_behind() {
    let c = must(Cluster::start(1), "cluster");
    let rt = RuntimeNs::new("e");
    let keys = c.etcd_keys();
    let code_of = |r: &Run| r.out["code"].as_u64();
    // No verb: not run by a runtime.
    let mut child = Command::new(bin("berth-cni"))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!child.status.success());
    let v: Value = serde_json::from_slice(&child.stdout).unwrap();
    assert_eq!(v["code"], 4, "{v}");
    child.stdout.clear();
    // Not JSON, an unsupported version, no network, an unknown network, a file that is no namespace.
    let r = cni(&c, 1, "ADD", "x1", &rt.path(), "eth0", "", &json!("{"));
    assert_eq!(code_of(&r), Some(6), "{}", r.raw);
    let r = cni(&c, 1, "ADD", "x1", &rt.path(), "eth0", "", &conf("0.3.1", "br"));
    assert_eq!(code_of(&r), Some(1), "{}", r.raw);
    let r = cni(
        &c,
        1,
        "ADD",
        "x1",
        &rt.path(),
        "eth0",
        "",
        &json!({"cniVersion": "1.0.0", "name": "n", "type": "berth"}),
    );
    assert_eq!(code_of(&r), Some(7), "{}", r.raw);
    let r = cni(
        &c,
        1,
        "ADD",
        "x1",
        &rt.path(),
        "eth0",
        "",
        &conf("1.0.0", "nosuchnet"),
    );
    assert_eq!(code_of(&r), Some(7), "{}", r.raw);
    assert!(r.out["msg"].as_str().unwrap().contains("nosuchnet"), "{}", r.raw);
    let file = c.dir().join("not-a-netns");
    std::fs::write(&file, b"").unwrap();
    let r = cni(
        &c,
        1,
        "ADD",
        "x1",
        file.to_str().unwrap(),
        "eth0",
        "",
        &conf("1.0.0", "bridge"),
    );
    assert_eq!(code_of(&r), Some(7), "{}", r.raw);
    assert!(
        r.out["msg"].as_str().unwrap().contains("not a namespace"),
        "{}",
        r.raw
    );
    let r = cni(
        &c,
        1,
        "ADD",
        "-bad id",
        &rt.path(),
        "eth0",
        "",
        &conf("1.0.0", "bridge"),
    );
    assert_eq!(code_of(&r), Some(7), "{}", r.raw);
    let r = cni(
        &c,
        1,
        "ADD",
        "x1",
        &rt.path(),
        "eth0",
        "FOO=1",
        &conf("1.0.0", "bridge"),
    );
    assert_eq!(code_of(&r), Some(4), "{}", r.raw);
    // The host network has no interfaces to give.
    let r = cni(&c, 1, "ADD", "x1", &rt.path(), "eth0", "", &conf("1.0.0", "host"));
    assert_eq!(code_of(&r), Some(7), "{}", r.raw);
    // The runtime's own eth0 is never replaced.
    in_ns_ok(
        &rt.name,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    );
    let r = cni(
        &c,
        1,
        "ADD",
        "x1",
        &rt.path(),
        "eth0",
        "",
        &conf("1.0.0", "bridge"),
    );
    assert_eq!(code_of(&r), Some(101), "{}", r.raw);
    assert!(
        r.out["msg"].as_str().unwrap().contains("not berth's"),
        "{}",
        r.raw
    );
    assert!(rt.links().contains("eth0p"), "the runtime's link stays");
    c.eventually("the failed attach rolled back", || c.etcd_keys() == keys);
    // The agent not there: try again later.
    let mut gone = conf("1.0.0", "bridge");
    gone["agent_socket"] = json!(c.dir().join("nobody.sock"));
    let r = cni(&c, 1, "ADD", "x1", &rt.path(), "eth0", "", &gone);
    assert_eq!(code_of(&r), Some(11), "{}", r.raw);
    assert!(
        r.out["msg"].as_str().unwrap().contains("is berth-agent running"),
        "{}",
        r.raw
    );
    let r = cni(&c, 1, "STATUS", "", "", "", "", &gone);
    assert_eq!(code_of(&r), Some(50), "{}", r.raw);
    assert_eq!(c.etcd_keys(), keys);
}

#[test]
fn a_dual_stack_network_gives_both_families_in_the_result() {
    let c = must(Cluster::start(1), "cluster");
    c.cli_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.61.0.0/24",
        "--subnet",
        "fd61::/64",
        "br6",
    ]);
    let rt = RuntimeNs::new("d6");
    let add = cni(
        &c,
        1,
        "ADD",
        "d6aaaaaaaaaaaaaaaa",
        &rt.path(),
        "eth0",
        "",
        &conf("0.4.0", "br6"),
    );
    assert!(add.ok, "{}\n{}", add.raw, c.logs());
    let ips = add.out["ips"].as_array().expect("ips").clone();
    assert_eq!(ips.len(), 2, "{}", add.out);
    assert_eq!(
        (ips[0]["version"].as_str(), ips[1]["version"].as_str()),
        (Some("4"), Some("6"))
    );
    assert!(
        ips[1]["address"].as_str().unwrap().starts_with("fd61::"),
        "{}",
        add.out
    );
    assert_eq!(ips[1]["gateway"], "fd61::1");
    assert_eq!(ips[1]["interface"], 0, "the same interface");
    let routes: Vec<&str> = add.out["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(routes, ["0.0.0.0/0", "::/0"]);
    // What the result says is what the runtime's namespace has.
    let v6 = in_ns_ok(
        &rt.name,
        &["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"],
    );
    assert!(v6.contains(ips[1]["address"].as_str().unwrap()), "{v6}");
    let r6 = in_ns_ok(&rt.name, &["ip", "-6", "route", "show", "default"]);
    assert!(r6.contains("via fd61::1"), "{r6}");
    let del = cni(
        &c,
        1,
        "DEL",
        "d6aaaaaaaaaaaaaaaa",
        &rt.path(),
        "eth0",
        "",
        &conf("0.4.0", "br6"),
    );
    assert!(del.ok, "{}", del.raw);
    assert!(sandbox(&c, "cni-d6aaaaaaaaaa").is_none(), "DEL removed it");
}
