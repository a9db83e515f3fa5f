//! IPv6 dual stack (issue #17) on the real kernel: dual-stack overlays
//! across nodes (addresses unique in the cluster, IPv6 neighbour entries on
//! the VXLAN device, ping by name over IPv6, AAAA answers), dual-stack
//! bridge networks (the bridge's IPv6 gateway, the sandbox's IPv6 default
//! route, `--ip6`), drift repair of the new kernel objects, published
//! ports on IPv6 host addresses (`[::]`, one address, `[::1]` through the
//! agent's proxy), and the refusals that leave nothing behind.
use berth_tests::cluster::{Cluster, in_ns, in_ns_ok};
use berth_tests::stderr;

fn cluster(nodes: usize) -> Cluster {
    Cluster::start(nodes).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

fn ping6(c: &Cluster, from: &str, to: &str) -> bool {
    c.cli(&["exec", from, "--", "ping", "-6", "-c1", "-W2", to])
        .status
        .success()
}

/// The refusal's one line, with a non-zero exit.
fn refused(c: &Cluster, args: &[&str]) -> String {
    let out = c.cli(args);
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn dual_stack_overlay_across_nodes() {
    let c = cluster(2);
    c.cli_ok(&["network", "create", "-d", "overlay", "--ipv6", "ov6"]);
    let v = c.cli_json(&["network", "inspect", "ov6"]);
    assert_eq!(v[0]["EnableIPv6"], true);
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(
        v[0]["IPAM"]["Config"][1]["Subnet"], "fd42:be47:2::/64",
        "the global IPv6 pool's first /64"
    );
    assert_eq!(v[0]["IPAM"]["Config"][1]["Gateway"], "fd42:be47:2::1");

    c.cli_ok(&["sandbox", "create", "a6", "--node", "node1", "--network", "ov6"]);
    c.cli_ok(&["sandbox", "create", "b6", "--node", "node2", "--network", "ov6"]);
    let a = c.cli_json(&["sandbox", "inspect", "a6"]);
    let b = c.cli_json(&["sandbox", "inspect", "b6"]);
    assert_eq!(a[0]["Networks"]["ov6"]["GlobalIPv6Address"], "fd42:be47:2::2");
    assert_eq!(a[0]["Networks"]["ov6"]["GlobalIPv6PrefixLen"], 64);
    assert_eq!(
        b[0]["Networks"]["ov6"]["GlobalIPv6Address"], "fd42:be47:2::3",
        "unique across the cluster"
    );
    let n = c.cli_json(&["network", "inspect", "ov6"]);
    let containers = n[0]["Containers"].as_object().expect("containers");
    let mut v6: Vec<&str> = containers
        .values()
        .map(|e| e["IPv6Address"].as_str().expect("IPv6Address"))
        .collect();
    v6.sort();
    assert_eq!(v6, ["fd42:be47:2::2/64", "fd42:be47:2::3/64"]);

    let ans = c.sandbox_ns("a6");
    let eth0 = in_ns_ok(
        &ans,
        &["ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "global"],
    );
    assert!(eth0.contains("fd42:be47:2::2/64"), "{eth0}");
    assert!(!eth0.contains("tentative"), "usable at once (no DAD): {eth0}");
    let v4 = in_ns_ok(&ans, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(v4.contains("10.0.0.2/24"), "both families: {v4}");

    // Across nodes over VXLAN, by address and by name (AAAA).
    assert!(
        ping6(&c, "a6", "fd42:be47:2::3"),
        "a6 -> b6 over IPv6\n{}",
        c.logs()
    );
    assert!(ping6(&c, "b6", "a6"), "b6 -> a6 by name over IPv6");
    let hosts = c.cli_ok(&["exec", "a6", "--", "getent", "ahostsv6", "b6"]);
    assert!(hosts.contains("fd42:be47:2::3"), "AAAA answer: {hosts}");
    let hosts4 = c.cli_ok(&["exec", "a6", "--", "getent", "ahostsv4", "b6"]);
    assert!(hosts4.contains("10.0.0.3"), "A answer still there: {hosts4}");

    // The remote endpoint's IPv6 neighbour entry on node1's VXLAN device.
    let vx = "vx-4096".to_string(); // the first overlay of a fresh cluster
    let neigh = || {
        in_ns_ok(
            &c.node(1),
            &["ip", "-6", "neigh", "show", "dev", &vx, "nud", "permanent"],
        )
    };
    let mac_b = b[0]["Networks"]["ov6"]["MacAddress"]
        .as_str()
        .expect("mac")
        .to_string();
    assert!(
        neigh().contains(&format!("fd42:be47:2::3 lladdr {mac_b}")),
        "{}",
        neigh()
    );

    // Drift: the sandbox's IPv6 address and the neighbour entry deleted by
    // hand come back with the next pass.
    in_ns_ok(
        &ans,
        &["ip", "-6", "addr", "del", "fd42:be47:2::2/64", "dev", "eth0"],
    );
    in_ns_ok(
        &c.node(1),
        &["ip", "-6", "neigh", "del", "fd42:be47:2::3", "dev", &vx],
    );
    c.eventually("the IPv6 address is restored", || {
        in_ns(&ans, &["ip", "-o", "-6", "addr", "show", "dev", "eth0"])
            .stdout
            .windows(b"fd42:be47:2::2/64".len())
            .any(|w| w == b"fd42:be47:2::2/64")
    });
    c.eventually("the IPv6 neighbour entry is restored", || {
        neigh().contains("fd42:be47:2::3")
    });
    assert!(ping6(&c, "a6", "b6"), "works again");

    // Leaving: the peer's entry goes, the addresses are freed.
    c.cli_ok(&["sandbox", "rm", "b6"]);
    c.eventually("b6's IPv6 neighbour entry is gone", || {
        !neigh().contains("fd42:be47:2::3")
    });
    let out = c.cli(&["exec", "a6", "--", "getent", "ahostsv6", "b6"]);
    assert!(!out.status.success(), "b6's name went with it");
    c.cli_ok(&["sandbox", "rm", "a6"]);
    let id = n[0]["Id"].as_str().expect("id");
    assert!(
        !c.etcd_keys().iter().any(|k| k.contains(&format!("/ipam/{id}/"))),
        "no address of either family left: {:?}",
        c.etcd_keys()
    );
    c.cli_ok(&["network", "rm", "ov6"]);
    assert!(
        !c.etcd_keys().iter().any(|k| k.contains("/subnets6/")),
        "the IPv6 subnet key went with the network"
    );
}

#[test]
fn dual_stack_bridge_gateway_default_route_and_ip6() {
    let c = cluster(1);
    c.cli_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.66.0.0/24",
        "--subnet",
        "fd66::/64",
        "--gateway",
        "fd66::1",
        "br6",
    ]);
    let n = c.cli_json(&["network", "inspect", "br6"]);
    assert_eq!(n[0]["IPAM"]["Config"][1]["Subnet"], "fd66::/64");
    assert_eq!(n[0]["IPAM"]["Config"][1]["Gateway"], "fd66::1");
    c.cli_ok(&[
        "sandbox",
        "create",
        "x6",
        "--node",
        "node1",
        "--network",
        "br6",
        "--ip6",
        "fd66::10",
    ]);
    c.cli_ok(&["sandbox", "create", "y6", "--node", "node1", "--network", "br6"]);
    let y = c.cli_json(&["sandbox", "inspect", "y6"]);
    assert_eq!(y[0]["Networks"]["br6"]["GlobalIPv6Address"], "fd66::2");
    assert_eq!(y[0]["Networks"]["br6"]["IPv6Gateway"], "fd66::1");
    let xns = c.sandbox_ns("x6");
    let route = in_ns_ok(&xns, &["ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fd66::1 dev eth0"), "{route}");
    assert!(
        in_ns_ok(&xns, &["ip", "-4", "route", "show", "default"]).contains("via 10.66.0.1 dev eth0"),
        "both default routes"
    );
    // The bridge holds the gateway (in the node's namespace, which this test made).
    assert!(ping6(&c, "x6", "fd66::1"), "the bridge's IPv6 gateway answers");
    assert!(ping6(&c, "x6", "y6"), "x6 -> y6 by name on the bridge");
    assert!(ping6(&c, "y6", "fd66::10"), "--ip6 honoured");

    // Drift: the IPv6 default route deleted by hand comes back.
    in_ns_ok(&xns, &["ip", "-6", "route", "del", "default"]);
    c.eventually("the IPv6 default route is restored", || {
        String::from_utf8_lossy(&in_ns(&xns, &["ip", "-6", "route", "show", "default"]).stdout)
            .contains("via fd66::1")
    });

    // connect --ip6 to a second dual-stack network; taken and foreign addresses refused.
    c.cli_ok(&["network", "create", "--ipv6", "--subnet", "fd67::/64", "br7"]);
    let err = refused(&c, &["network", "connect", "--ip6", "fd66::2", "br7", "x6"]);
    assert!(err.contains("outside the subnet"), "{err}");
    c.cli_ok(&["network", "connect", "--ip6", "fd67::7", "br7", "x6"]);
    let eth1 = in_ns_ok(
        &xns,
        &["ip", "-o", "-6", "addr", "show", "dev", "eth1", "scope", "global"],
    );
    assert!(eth1.contains("fd67::7/64"), "{eth1}");
    let err = refused(
        &c,
        &[
            "sandbox",
            "create",
            "z6",
            "--node",
            "node1",
            "--network",
            "br7",
            "--ip6",
            "fd67::7",
        ],
    );
    assert!(err.contains("already in use"), "{err}");
    assert!(
        in_ns_ok(&xns, &["ip", "-6", "route", "show", "default"]).contains("via fd66::1 dev eth0"),
        "the first network keeps the IPv6 default route"
    );
    c.cli_ok(&["network", "disconnect", "br7", "x6"]);
    c.cli_ok(&["sandbox", "rm", "x6", "y6"]);
    c.cli_ok(&["network", "rm", "br7", "br6"]);
    assert!(
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.contains(':')),
        "no IPv6 address key left: {:?}",
        c.etcd_keys()
    );
}

/// Bad IPv6 input: a clear one-line error, a non-zero exit, and nothing
/// written to etcd or the kernel.
#[test]
fn ipv6_refusals_leave_nothing_behind() {
    let c = cluster(1);
    c.cli_ok(&["network", "create", "plain"]);
    c.cli_ok(&["network", "create", "--ipv6", "--subnet", "fd70::/64", "taken6"]);
    let before = c.etcd_keys();
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "fd71::/64", "n1"],
            "needs --ipv6",
        ),
        (
            &["network", "create", "--ipv6", "--subnet", "fd71::5/64", "n1"],
            "host bits",
        ),
        (
            &["network", "create", "--ipv6", "--subnet", "fe80::/64", "n1"],
            "not a usable",
        ),
        (
            &["network", "create", "--ipv6", "--subnet", "fd71::/32", "n1"],
            "prefix length",
        ),
        (
            &["network", "create", "--ipv6", "--gateway", "fd71::1", "n1"],
            "needs an IPv6 --subnet",
        ),
        (
            &[
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "fd71::/64",
                "--gateway",
                "fd72::1",
                "n1",
            ],
            "outside",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.1.0.0/24",
                "--subnet",
                "10.2.0.0/24",
                "n1",
            ],
            "once per address family",
        ),
        (
            &["network", "create", "--ipv6", "--subnet", "fd70::/80", "n1"],
            "overlaps",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "plain",
                "--ip6",
                "fd70::9",
            ],
            "does not enable IPv6",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "taken6",
                "--ip6",
                "nope",
            ],
            "not an IPv6 address",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "taken6",
                "--ip6",
                "fd70::1",
            ],
            "gateway",
        ),
        // An IPv6 host address needs an IPv6 target: not on the IPv4-only
        // default bridge, nor on an IPv4-only user network.
        (
            &["sandbox", "create", "s1", "--node", "node1", "-p", "[::]:8080:80"],
            "gives the sandbox no IPv6 address",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "plain",
                "-p",
                "[::1]:8080:80",
            ],
            "gives the sandbox no IPv6 address",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "plain",
                "-p",
                "[fd99::10]::80",
            ],
            "gives the sandbox no IPv6 address",
        ),
        (
            &[
                "sandbox",
                "create",
                "s1",
                "--node",
                "node1",
                "--network",
                "taken6",
                "-p",
                "[ff02::1]:8080:80",
            ],
            "not a unicast address",
        ),
    ];
    for (args, why) in cases {
        let err = refused(&c, args);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(c.etcd_keys(), before, "nothing written");
    assert!(c.sandbox_namespaces().is_empty(), "no namespace made");
}

/// Which source address the underlay host `ext` sees when sandbox `from`
/// opens a TCP connection to `[fd99::100]:9000` (a listener in the test's
/// own namespace, gone after one connection or 20 s).
fn seen_source6(c: &Cluster, ext: &str, from: &str) -> String {
    let server = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ext}"))
        .args(["--", "python3", "-c"])
        .arg(
            "import socket,sys\n\
             s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('fd99::100',9000));s.listen(1);s.settimeout(20)\n\
             c,a=s.accept();print(a[0]);sys.stdout.flush()",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("listener");
    let mut connected = false;
    for _ in 0..50 {
        let out = c.cli(&[
            "exec",
            from,
            "--",
            "python3",
            "-c",
            "import socket;socket.create_connection(('fd99::100',9000),timeout=2).close()",
        ]);
        if out.status.success() {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let seen = server.wait_with_output().expect("listener output");
    assert!(
        connected,
        "{from} could not reach the underlay host over IPv6\n{}",
        c.logs()
    );
    String::from_utf8_lossy(&seen.stdout).trim().to_string()
}

/// Outbound IPv6 from a dual-stack bridge is masqueraded to the node's
/// underlay address (the underlay gets IPv6 only inside this test's
/// namespaces); with `enable_ip_masquerade=false` the sandbox's own address
/// arrives.
#[test]
fn ipv6_outbound_masquerade_to_an_underlay_host() {
    let mut c = cluster(1);
    let ext = c
        .add_underlay_host("ext6", "192.168.205.100")
        .expect("underlay host");
    in_ns_ok(
        &ext,
        &["ip", "-6", "addr", "add", "fd99::100/64", "dev", "eth0", "nodad"],
    );
    in_ns_ok(
        &c.node(1),
        &["ip", "-6", "addr", "add", "fd99::10/64", "dev", "eth0", "nodad"],
    );
    c.cli_ok(&["network", "create", "--ipv6", "--subnet", "fd68::/64", "out6"]);
    c.cli_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd69::/64",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "plain6",
    ]);
    c.cli_ok(&["sandbox", "create", "m6", "--node", "node1", "--network", "out6"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "p6",
        "--node",
        "node1",
        "--network",
        "plain6",
    ]);
    assert_eq!(
        in_ns_ok(&c.node(1), &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).trim(),
        "1"
    );
    assert_eq!(
        seen_source6(&c, &ext, "m6"),
        "fd99::10",
        "masqueraded to node1's address"
    );
    // Without masquerade the host needs a route back to the sandbox's subnet.
    in_ns_ok(
        &ext,
        &["ip", "-6", "route", "add", "fd69::/64", "via", "fd99::10"],
    );
    assert_eq!(
        seen_source6(&c, &ext, "p6"),
        "fd69::2",
        "enable_ip_masquerade=false: not masqueraded"
    );
    // The two dual-stack bridges stay isolated from each other over IPv6.
    assert!(!ping6(&c, "m6", "fd69::2"), "isolated over IPv6");
}

/// `-p 8080:80` (all addresses) on a dual-stack bridge answers on the
/// node's IPv6 addresses too: from another node over the test's IPv6
/// underlay, and from a sandbox on the same bridge (hairpin).
#[test]
fn published_port_over_ipv6_from_another_node() {
    let c = cluster(2);
    in_ns_ok(
        &c.node(1),
        &["ip", "-6", "addr", "add", "fd99::10/64", "dev", "eth0", "nodad"],
    );
    in_ns_ok(
        &c.node(2),
        &["ip", "-6", "addr", "add", "fd99::11/64", "dev", "eth0", "nodad"],
    );
    c.cli_ok(&["network", "create", "--ipv6", "--subnet", "fd6a::/64", "web6"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "w6",
        "--node",
        "node1",
        "--network",
        "web6",
        "-p",
        "8080:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "::",
        "80",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "peer6",
        "--node",
        "node1",
        "--network",
        "web6",
    ]);
    let get = "import socket,sys\n\
               s=socket.create_connection((sys.argv[1],8080),timeout=2)\n\
               s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n');print(s.recv(12).decode())";
    let fetched = |ok: &mut dyn FnMut() -> bool| {
        (0..50).any(|_| {
            ok() || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        })
    };
    let from_node2 = fetched(&mut || {
        let out = in_ns(&c.node(2), &["python3", "-c", get, "fd99::10"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200")
    });
    assert!(from_node2, "[fd99::10]:8080 from node2\n{}", c.logs());
    let hairpin = fetched(&mut || {
        let out = c.cli(&["exec", "peer6", "--", "python3", "-c", get, "fd99::10"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200")
    });
    assert!(hairpin, "[fd99::10]:8080 from a sandbox on the same bridge");
    c.cli_ok(&["sandbox", "rm", "w6"]);
    let out = in_ns(&c.node(2), &["python3", "-c", get, "fd99::10"]);
    assert!(!out.status.success(), "the port went with the sandbox");
}

/// A TCP server answering `HTTP/1.0 200 <name>` on `[::]:80` and a UDP
/// echo on `[::]:5300` (not 53: berth's DNS responder has it), as a sandbox's command.
const SERVE_BOTH: &str = "import socket,threading,sys\n\
    def udp():\n\
    \x20   u=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);u.bind(('::',5300))\n\
    \x20   while True:\n\
    \x20       d,a=u.recvfrom(2048);u.sendto(b'echo '+d,a)\n\
    threading.Thread(target=udp,daemon=True).start()\n\
    t=socket.socket(socket.AF_INET6);t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
    t.bind(('::',80));t.listen(16)\n\
    while True:\n\
    \x20   c,a=t.accept();c.recv(1024);c.sendall(b'HTTP/1.0 200 '+sys.argv[1].encode());c.close()\n";

/// `GET` on `[addr]:port` from namespace `ns`: the status line's rest, or
/// `None` (refused, timed out).
fn fetch6(ns: &str, addr: &str, port: u16) -> Option<String> {
    let get = "import socket,sys\n\
               s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n\
               s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n');print(s.recv(64).decode())";
    let out = in_ns(ns, &["python3", "-c", get, addr, &port.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.starts_with("HTTP/1.0 200")).then(|| text.trim().to_string())
}

/// A UDP datagram to `[addr]:port` from namespace `ns`, and its answer.
fn udp6(ns: &str, addr: &str, port: u16) -> Option<String> {
    let ask = "import socket,sys\n\
               u=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);u.settimeout(2)\n\
               u.sendto(b'ping',(sys.argv[1],int(sys.argv[2])));print(u.recvfrom(64)[0].decode())";
    let out = in_ns(ns, &["python3", "-c", ask, addr, &port.to_string()]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether a TCP connection to `[addr]:port` from `ns` is refused outright.
fn refused6(ns: &str, addr: &str, port: u16) -> bool {
    let try_ = "import socket,sys\n\
                try:\n\
                \x20   socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n\
                except ConnectionRefusedError:\n\
                \x20   sys.exit(3)\n";
    in_ns(ns, &["python3", "-c", try_, addr, &port.to_string()])
        .status
        .code()
        == Some(3)
}

fn retry<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..50 {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// `-p [::]:…` answers on every IPv6 address of the node and not on IPv4;
/// `-p [V6]:…` on that address only; `-p [::1]:…` on the node's IPv6
/// loopback through the agent's proxy, TCP and UDP. Inspect shows the host
/// addresses as given; a clash across the family rules is refused; removal
/// closes each (connection refused after). Reached from another node over
/// the test's IPv6 underlay.
#[test]
fn published_ports_on_ipv6_host_addresses() {
    let c = cluster(2);
    let (n1, n2) = (c.node(1), c.node(2));
    for (ns, addr) in [(&n1, "fd99::10/64"), (&n1, "fd99::20/64"), (&n2, "fd99::11/64")] {
        in_ns_ok(ns, &["ip", "-6", "addr", "add", addr, "dev", "eth0", "nodad"]);
    }
    c.cli_ok(&["network", "create", "--ipv6", "--subnet", "fd6b::/64", "v6"]);
    let serve = |name: &str, ports: &[&str]| {
        let mut args = vec!["sandbox", "create", name, "--node", "node1", "--network", "v6"];
        for p in ports {
            args.extend(["-p", p]);
        }
        args.extend(["--", "python3", "-c", SERVE_BOTH, name]);
        c.cli_ok(&args);
    };
    serve("any6", &["[::]:8080:80"]);
    serve("one6", &["[fd99::10]:8081:80"]);
    serve("lo6", &["[::1]:8082:80", "[::1]:5353:5300/udp"]);

    // [::]: every IPv6 address of node1, from node2; nothing on IPv4.
    assert_eq!(
        retry(|| fetch6(&n2, "fd99::10", 8080)).as_deref(),
        Some("HTTP/1.0 200 any6"),
        "[fd99::10]:8080 from node2\n{}",
        c.logs()
    );
    assert_eq!(
        fetch6(&n2, "fd99::20", 8080).as_deref(),
        Some("HTTP/1.0 200 any6")
    );
    let v4 = in_ns(
        &n2,
        &[
            "python3",
            "-c",
            "import socket;socket.create_connection(('192.168.205.10',8080),timeout=2)",
        ],
    );
    assert!(!v4.status.success(), "[::] publishes nothing on IPv4");
    // [fd99::10]: that address only.
    assert_eq!(
        fetch6(&n2, "fd99::10", 8081).as_deref(),
        Some("HTTP/1.0 200 one6")
    );
    assert!(
        fetch6(&n2, "fd99::20", 8081).is_none(),
        "not on node1's other address"
    );
    // [::1]: from node1's own namespace, TCP and UDP, through the proxy.
    assert_eq!(
        retry(|| fetch6(&n1, "::1", 8082)).as_deref(),
        Some("HTTP/1.0 200 lo6"),
        "[::1]:8082 from node1\n{}",
        c.logs()
    );
    assert_eq!(
        retry(|| udp6(&n1, "::1", 5353)).as_deref(),
        Some("echo ping"),
        "[::1]:5353/udp from node1"
    );
    assert!(fetch6(&n2, "fd99::10", 8082).is_none(), "[::1] only");
    // [::] covers [::1] too (through the proxy), as Docker's [::] binding.
    assert_eq!(
        retry(|| fetch6(&n1, "::1", 8080)).as_deref(),
        Some("HTTP/1.0 200 any6")
    );

    // Inspect: Docker's HostIp as given.
    let v = c.cli_json(&["sandbox", "inspect", "lo6"]);
    let ips: Vec<&str> = v[0]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["HostIp"].as_str())
        .collect();
    assert_eq!(ips, ["::1", "::1"], "{v}");
    assert!(c.cli_ok(&["sandbox", "ls"]).contains("[::]:8080->80/tcp"));

    // Clashes: [::] takes every IPv6 address and all addresses overlaps
    // both families; IPv4 and IPv6 addresses never clash.
    let keys = c.etcd_keys();
    for p in ["[fd99::20]:8080:80", "8080:80", "[::]:8081:80"] {
        let out = c.cli(&[
            "sandbox",
            "create",
            "x",
            "--node",
            "node1",
            "--network",
            "v6",
            "-p",
            p,
        ]);
        assert_eq!(out.status.code(), Some(1), "{p} was accepted");
        assert!(
            stderr(&out).contains("already published"),
            "{p}: {}",
            stderr(&out)
        );
    }
    assert_eq!(c.etcd_keys(), keys, "refusals leave nothing");
    c.cli_ok(&[
        "sandbox",
        "create",
        "v4",
        "--node",
        "node1",
        "--network",
        "v6",
        "-p",
        "192.168.205.10:8080:80",
    ]);

    // Removal closes each: refused right after.
    c.cli_ok(&["sandbox", "rm", "lo6"]);
    assert!(
        refused6(&n1, "::1", 8082),
        "the [::1] proxy closed with its sandbox"
    );
    assert!(udp6(&n1, "::1", 5353).is_none(), "the UDP proxy too");
    c.cli_ok(&["sandbox", "rm", "any6", "one6"]);
    assert!(fetch6(&n2, "fd99::10", 8080).is_none(), "[::] withdrawn");
    assert!(fetch6(&n2, "fd99::10", 8081).is_none(), "[fd99::10] withdrawn");
    assert!(refused6(&n1, "::1", 8080), "[::]'s [::1] proxy closed");
    let left = in_ns_ok(&n1, &["nft", "list", "table", "ip6", "berth"]);
    assert!(!left.contains("8080") && !left.contains("8081"), "{left}");
}

/// The `[::1]` proxy is agent state: gone while the agent is down, back
/// after its restart, with the same target.
#[test]
fn the_ipv6_loopback_proxy_comes_back_after_an_agent_restart() {
    let mut c = cluster(1);
    let n1 = c.node(1);
    c.cli_ok(&["network", "create", "--ipv6", "v6"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "lo6",
        "--node",
        "node1",
        "--network",
        "v6",
        "-p",
        "[::1]:8082:80",
        "--",
        "python3",
        "-c",
        SERVE_BOTH,
        "lo6",
    ]);
    assert!(retry(|| fetch6(&n1, "::1", 8082)).is_some(), "{}", c.logs());
    c.stop_agent(1);
    assert!(refused6(&n1, "::1", 8082), "the proxy is the agent's");
    c.start_agent(1).expect("agent");
    assert_eq!(
        retry(|| fetch6(&n1, "::1", 8082)).as_deref(),
        Some("HTTP/1.0 200 lo6"),
        "back after the restart\n{}",
        c.logs()
    );
}
