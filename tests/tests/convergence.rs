//! The agent as a level-triggered controller, on the real kernel: drift of
//! every kind of object made by hand is repaired without a restart and
//! traffic resumes; foreign namespaces and bridges are refused and left
//! untouched; nodes heal after an API outage longer than their lease; a lost
//! or corrupt state file orphans nothing and sweeps nothing foreign.
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, in_ns_ok, ip};
use berth_tests::tls::{channel, in_netns};
use berth_tests::{stderr, wait_until};
use tonic::Code;

/// Seconds between the agents' full passes in these tests.
const PERIOD: u64 = 2;

fn cluster(nodes: usize) -> Cluster {
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), PERIOD.to_string()]; nodes],
        ..Default::default()
    };
    Cluster::start_with(nodes, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

fn ping(c: &Cluster, from: &str, to: &str) -> bool {
    c.cli(&["exec", from, "--", "ping", "-c1", "-W1", to])
        .status
        .success()
}

/// Waits (at most two periods, plus slack for the ping itself) until `from`
/// reaches `to` again; returns how long that took.
fn repaired(c: &Cluster, what: &str, from: &str, to: &str) -> Duration {
    let start = Instant::now();
    c.eventually(&format!("{what}: {from} reaches {to} again"), || {
        ping(c, from, to)
    });
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2 * PERIOD + 6),
        "{what}: repair took {took:?}, more than two periods"
    );
    took
}

/// The host end of a sandbox's endpoint on `network`: `bv` + 12 hex of its id.
fn host_veth(c: &Cluster, sandbox: &str, network: &str) -> String {
    let v = c.cli_json(&["sandbox", "inspect", sandbox]);
    let id = v[0]["Networks"][network]["EndpointID"]
        .as_str()
        .unwrap_or_else(|| panic!("no endpoint of {sandbox} on {network}: {v}"))
        .to_string();
    format!("bv{}", &id[..12])
}

fn nft_rules(c: &Cluster, node: usize) -> usize {
    let out = in_ns(&c.node(node), &["nft", "-j", "list", "table", "ip", "berth"]);
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .map(|a| a.iter().filter(|i| i.get("rule").is_some()).count())
        .unwrap_or(0)
}

#[test]
fn drift_of_every_kind_is_repaired_and_traffic_resumes() {
    let c = cluster(2);
    let n1 = c.node(1);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1"]);
    c.cli_ok(&["sandbox", "create", "b", "--node", "node1"]);
    c.cli_ok(&["sandbox", "create", "o1", "--node", "node1", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "o2", "--node", "node2", "--network", "demo"]);
    assert!(ping(&c, "a", "172.17.0.3") && ping(&c, "o2", "10.0.0.2"));

    // A host veth deleted by hand (the kernel takes its peer along).
    ip(&["-n", &n1, "link", "del", &host_veth(&c, "b", "bridge")]).unwrap();
    repaired(&c, "host veth deleted", "a", "172.17.0.3");

    // The sandbox's own interface deleted inside its namespace.
    ip(&["-n", &c.sandbox_ns("b"), "link", "del", "eth0"]).unwrap();
    repaired(&c, "sandbox eth0 deleted", "a", "172.17.0.3");

    // The sandbox's address removed.
    ip(&["-n", &c.sandbox_ns("b"), "addr", "flush", "dev", "eth0"]).unwrap();
    repaired(&c, "sandbox address removed", "a", "172.17.0.3");

    // The default bridge deleted: every endpoint on it comes back too.
    ip(&["-n", &n1, "link", "del", "berth0"]).unwrap();
    repaired(&c, "bridge deleted", "a", "172.17.0.3");

    // The gateway's address removed from the bridge.
    ip(&["-n", &n1, "addr", "flush", "dev", "berth0"]).unwrap();
    repaired(&c, "bridge address removed", "a", "172.17.0.1");

    // The VXLAN device deleted.
    ip(&["-n", &n1, "link", "del", "vx-4096"]).unwrap();
    repaired(&c, "vxlan deleted", "o2", "10.0.0.2");

    // The FDB entry of the remote endpoint and the flood entries deleted.
    in_ns_ok(&n1, &["bridge", "fdb", "flush", "dev", "vx-4096"]);
    let had = in_ns_ok(&n1, &["bridge", "fdb", "show", "dev", "vx-4096"]);
    assert!(!had.contains("192.168.205.11"), "flushed: {had}");
    c.eventually("the FDB entries are back", || {
        in_ns_ok(&n1, &["bridge", "fdb", "show", "dev", "vx-4096"]).contains("dst 192.168.205.11")
    });
    repaired(&c, "fdb flushed", "o1", "10.0.0.3");

    // The bridge's static entry for the remote endpoint deleted and learning
    // switched back on on the VXLAN port; an entry for a MAC nobody has
    // (as one learned from a departed endpoint) added.
    let o2_mac = c.cli_json(&["sandbox", "inspect", "o2"])[0]["Networks"]["demo"]["MacAddress"]
        .as_str()
        .expect("MacAddress")
        .to_string();
    let bridged = || {
        in_ns_ok(&n1, &["bridge", "fdb", "show", "dev", "vx-4096"])
            .lines()
            .filter(|l| l.contains(" master "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        bridged()
            .iter()
            .any(|l| l.starts_with(&o2_mac) && l.contains("static")),
        "{:?}",
        bridged()
    );
    in_ns_ok(
        &n1,
        &["bridge", "fdb", "del", &o2_mac, "dev", "vx-4096", "master"],
    );
    in_ns_ok(
        &n1,
        &["bridge", "link", "set", "dev", "vx-4096", "learning", "on"],
    );
    in_ns_ok(
        &n1,
        &[
            "bridge",
            "fdb",
            "add",
            "02:42:0a:00:00:63",
            "dev",
            "vx-4096",
            "master",
            "dynamic",
        ],
    );
    c.eventually(
        "the bridge entries are exactly the peers again, learning off",
        || {
            let b = bridged();
            b.iter().any(|l| l.starts_with(&o2_mac) && l.contains("static"))
                && !b.iter().any(|l| l.starts_with("02:42:0a:00:00:63"))
                && in_ns_ok(&n1, &["bridge", "-d", "link", "show", "dev", "vx-4096"]).contains("learning off")
        },
    );
    repaired(&c, "bridge entries drifted", "o1", "10.0.0.3");

    // berth's nftables table flushed, then deleted.
    let rules = nft_rules(&c, 1);
    assert!(rules > 0);
    in_ns_ok(&n1, &["nft", "flush", "table", "ip", "berth"]);
    c.eventually("the flushed rules are back", || nft_rules(&c, 1) == rules);
    in_ns_ok(&n1, &["nft", "delete", "table", "ip", "berth"]);
    c.eventually("the deleted table is back", || nft_rules(&c, 1) == rules);

    // A published port's DNAT element deleted by hand is put back; an
    // element berth does not want, in its own map, is removed; neither
    // rewrites the table (same rules, nothing outside berth's table).
    c.cli_ok(&["sandbox", "create", "p", "--node", "node1", "-p", "8089:80"]);
    let elements = || in_ns_ok(&n1, &["nft", "list", "map", "ip", "berth", "any_dnat_ip"]);
    assert!(elements().contains("tcp . 8089 : 172.17.0."), "{}", elements());
    in_ns_ok(
        &n1,
        &[
            "nft",
            "delete",
            "element",
            "ip",
            "berth",
            "any_dnat_ip",
            "{ tcp . 8089 }",
        ],
    );
    assert!(!elements().contains("8089"));
    c.eventually("the deleted element is back", || {
        elements().contains("tcp . 8089 : 172.17.0.")
    });
    in_ns_ok(
        &n1,
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
    in_ns_ok(
        &n1,
        &[
            "nft",
            "add",
            "element",
            "ip",
            "berth",
            "any_dnat_port",
            "{ udp . 7777 : 77 }",
        ],
    );
    c.eventually("the stray element is removed", || {
        !elements().contains("7777")
            && !in_ns_ok(&n1, &["nft", "list", "map", "ip", "berth", "any_dnat_port"]).contains("7777")
    });
    assert!(elements().contains("tcp . 8089"), "berth's own element kept");
    assert_eq!(nft_rules(&c, 1), rules, "no rule changed");

    // The hosts file deleted.
    let hosts = format!("/etc/netns/{}/hosts", c.sandbox_ns("a"));
    std::fs::remove_file(&hosts).unwrap();
    c.eventually("the hosts file is back", || {
        std::fs::read_to_string(&hosts).is_ok_and(|h| h.contains("\ta\n"))
    });

    // A sandbox namespace deleted by hand comes back (empty, then filled).
    ip(&["netns", "del", &c.sandbox_ns("b")]).unwrap();
    repaired(&c, "namespace deleted", "a", "172.17.0.3");

    // None of this needed a restart: the agent registered once.
    assert_eq!(
        c.agent_log(1).matches("registered with the API server").count(),
        1
    );
}

#[test]
fn foreign_namespaces_and_bridges_are_refused_and_untouched() {
    let c = cluster(1);
    let n1 = c.node(1);
    // A namespace someone else made, with an eth0 of its own.
    let theirs = c.sandbox_ns("foreign1");
    ip(&["netns", "add", &theirs]).unwrap();
    ip(&[
        "-n", &theirs, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ip(&["-n", &theirs, "addr", "add", "10.99.0.1/24", "dev", "eth0"]).unwrap();
    let before = in_ns_ok(&theirs, &["ip", "-d", "addr"]);
    let out = c.cli(&["sandbox", "create", "foreign1", "--node", "node1"]);
    assert!(!out.status.success(), "a foreign namespace must be refused");
    let err = stderr(&out);
    assert!(
        err.contains("node node1") && err.contains(&format!("network namespace {theirs} already exists")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(
        in_ns_ok(&theirs, &["ip", "-d", "addr"]),
        before,
        "their namespace is untouched"
    );
    assert!(
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/names/sandboxes/foreign1")),
        "nothing is recorded"
    );
    // A full pass later it is still theirs.
    std::thread::sleep(Duration::from_secs(PERIOD + 1));
    assert_eq!(in_ns_ok(&theirs, &["ip", "-d", "addr"]), before);
    assert!(
        !in_ns_ok(&n1, &["ip", "-o", "link"]).contains("berth:"),
        "no berth link was made for it"
    );

    // A bridge someone else made, named by a network's option.
    ip(&["-n", &n1, "link", "add", "br-theirs", "type", "bridge"]).unwrap();
    ip(&["-n", &n1, "addr", "add", "10.98.0.1/24", "dev", "br-theirs"]).unwrap();
    let before = in_ns_ok(&n1, &["ip", "-d", "addr", "show", "br-theirs"]);
    c.cli_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=br-theirs",
        "mine",
    ]);
    let out = c.cli(&["sandbox", "create", "s1", "--node", "node1", "--network", "mine"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bridge br-theirs already exists on this node and is not berth's"),
        "{err}"
    );
    assert_eq!(in_ns_ok(&n1, &["ip", "-d", "addr", "show", "br-theirs"]), before);
    assert!(!c.etcd_keys().iter().any(|k| k.contains("/names/sandboxes/s1")));
    // Reserved names cannot even be asked for.
    let out = c.cli(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=berth0",
        "x",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("reserved"),
        "{}",
        stderr(&out)
    );
    ip(&["-n", &n1, "link", "del", "br-theirs"]).unwrap();
    ip(&["netns", "del", &theirs]).unwrap();
}

#[test]
fn nodes_heal_after_an_api_outage_longer_than_their_lease() {
    let mut c = cluster(2);
    c.cli_ok(&["sandbox", "create", "t1", "--node", "node1"]);
    c.stop_api();
    // The lease TTL is 4 s here: five times that.
    std::thread::sleep(Duration::from_secs(20));
    c.start_api().unwrap();
    let start = Instant::now();
    c.wait_ready(&[1, 2]).unwrap();
    let took = start.elapsed();
    // One heartbeat period is a third of the TTL; allow a registration and a pass on top.
    assert!(took < Duration::from_secs(8), "ready again after {took:?}");
    // Sandboxes still work and commands reach the agents again.
    assert!(ping(&c, "t1", "172.17.0.1"));
    c.cli_ok(&["sandbox", "create", "t2", "--node", "node2"]);
    let log = c.agent_log(1);
    assert!(
        log.matches("registered with the API server").count() >= 2,
        "it registered again by itself"
    );
}

#[test]
fn a_lost_or_corrupt_state_file_orphans_nothing_and_sweeps_nothing_foreign() {
    let mut c = cluster(1);
    c.cli_ok(&[
        "sandbox", "create", "keep", "--node", "node1", "--", "sleep", "1000",
    ]);
    c.cli_ok(&["sandbox", "create", "gone", "--node", "node1"]);
    let keep_ns = c.sandbox_ns("keep");
    let inode = |ns: &str| {
        std::fs::metadata(format!("/run/netns/{ns}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let keep_inode = inode(&keep_ns);
    // A namespace with berth's prefix that is not berth's.
    let foreign = c.sandbox_ns("foreign");
    ip(&["netns", "add", &foreign]).unwrap();
    let state = c.dir().join("node1").join("owned.json");
    let command_pid = || -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
        v["commands"].as_object()?.values().next()?["pid"].as_u64()
    };
    // Written just after the answers, by the agent's saver task.
    let mut pid = None;
    c.eventually("keep's command recorded in the state file", || {
        pid = command_pid();
        pid.is_some()
    });
    let pid = pid.expect("keep's command is recorded");
    for (round, damage) in ["deleted", "truncated"].into_iter().enumerate() {
        c.crash_agent(1);
        if round == 0 {
            // Removed while the agent is down: its namespace must still be swept.
            c.cli_ok(&["sandbox", "rm", "-f", "gone"]);
            std::fs::remove_file(&state).unwrap();
        } else {
            let bytes = std::fs::read(&state).unwrap();
            std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
        }
        c.start_agent(1).unwrap();
        c.wait_ready(&[1]).unwrap();
        c.eventually(&format!("state {damage}: gone's namespace is swept"), || {
            !std::path::Path::new(&format!("/run/netns/{}", c.sandbox_ns("gone"))).exists()
        });
        assert_eq!(
            inode(&keep_ns),
            keep_inode,
            "state {damage}: keep's namespace is not rebuilt"
        );
        assert!(
            inode(&foreign).is_some(),
            "state {damage}: the foreign namespace stays"
        );
        assert!(ping(&c, "keep", "172.17.0.1"), "state {damage}: keep works");
        assert!(
            wait_until(Duration::from_secs(10), || command_pid() == Some(pid)),
            "state {damage}: keep's command (pid {pid}) is found by its marker, not started again: {:?}\n{}",
            command_pid(),
            c.agent_log(1)
        );
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "state {damage}: it still runs"
        );
    }
    assert!(
        c.dir().join("node1").join("owned.json.corrupt").exists(),
        "the corrupt file is kept"
    );
    // Adopted, so removing the sandbox stops the command that runs.
    c.cli_ok(&["sandbox", "rm", "keep"]);
    assert!(
        wait_until(Duration::from_secs(5), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the adopted command is stopped with its sandbox"
    );
    ip(&["netns", "del", &foreign]).unwrap();
}

/// A sandbox spec as the API server would send it, in none mode.
fn none_sandbox(id: &str, name: &str, generation: u64) -> pb::Sandbox {
    pb::Sandbox {
        id: id.into(),
        name: name.into(),
        node: "node1".into(),
        mode: pb::SandboxMode::None as i32,
        netns: name.into(),
        generation,
        ..Default::default()
    }
}

#[test]
fn stale_commands_lose_and_status_reports_every_object() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "s", "--node", "node1"]);
    let id = c.cli_json(&["sandbox", "inspect", "s"])[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (url, tls) = (c.agent_url(1), c.api_tls());
    let (older, late, status) = in_netns(&c.node(1), || async {
        let mut agent = AgentServiceClient::new(channel(&url, tls));
        // An EnsureSandbox older than the generation the agent holds: it
        // would take s's endpoint away.
        let older = agent
            .ensure_sandbox(pb::EnsureSandboxRequest {
                sandbox: Some(none_sandbox(&id, "s", 1)),
                ..Default::default()
            })
            .await;
        // A sandbox ensured, removed, then ensured again late.
        let x = "ab".repeat(32);
        agent
            .ensure_sandbox(pb::EnsureSandboxRequest {
                sandbox: Some(none_sandbox(&x, "late1", u64::MAX / 2)),
                ..Default::default()
            })
            .await
            .expect("first ensure");
        agent
            .remove_sandbox(pb::RemoveAgentSandboxRequest {
                sandbox_id: x.clone(),
                netns: "late1".into(),
                generation: u64::MAX / 2,
            })
            .await
            .expect("remove");
        let late = agent
            .ensure_sandbox(pb::EnsureSandboxRequest {
                sandbox: Some(none_sandbox(&x, "late1", u64::MAX / 2)),
                ..Default::default()
            })
            .await;
        let status = agent
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        (older, late, status)
    });
    let older = older.expect_err("an older generation is refused");
    assert_eq!(older.code(), Code::Aborted, "{older:?}");
    assert!(older.message().contains("stale"), "{}", older.message());
    assert!(ping(&c, "s", "172.17.0.1"), "s keeps its endpoint");
    let late = late.expect_err("a removed sandbox does not come back");
    assert_eq!(late.code(), Code::Aborted);
    assert!(!std::path::Path::new(&format!("/run/netns/{}", c.sandbox_ns("late1"))).exists());
    // Status: every object of s, each with its result.
    let kinds: Vec<(&str, bool)> = status
        .objects
        .iter()
        .filter(|o| o.sandbox == id)
        .map(|o| (o.kind.as_str(), o.ok))
        .collect();
    for kind in ["namespace", "endpoint", "etc-files"] {
        assert!(kinds.contains(&(kind, true)), "{kind} of s in {kinds:?}");
    }
    assert!(
        status
            .objects
            .iter()
            .any(|o| o.kind == "bridge" && o.name == "berth0" && o.ok)
    );
    assert!(status.passes >= 2 && status.revision > 0, "{status:?}");
}

/// The agent's pass and command counters (`AgentService.Status`).
fn agent_counters(c: &Cluster) -> (u64, u64) {
    let (url, tls) = (c.agent_url(1), c.api_tls());
    let s = in_netns(&c.node(1), || async {
        AgentServiceClient::new(channel(&url, tls))
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    });
    (s.passes, s.commands)
}

/// Namespaces the test made itself, deleted on failure too.
struct Foreign(Vec<String>);

impl Drop for Foreign {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

#[test]
fn concurrent_creates_share_passes_and_each_gets_its_own_result() {
    let c = cluster(1);
    c.cli_ok(&["sandbox", "create", "warm", "--node", "node1"]);
    // Two of the names are held by namespaces someone else made: those two
    // creates must fail, alone, in whichever batch they land.
    let names: Vec<String> = (0..16)
        .map(|i| {
            if i % 5 == 3 {
                format!("cf{i}")
            } else {
                format!("c{i}")
            }
        })
        .collect();
    let foreign = Foreign(
        names
            .iter()
            .filter(|n| n.starts_with("cf"))
            .map(|n| c.sandbox_ns(n))
            .collect(),
    );
    assert_eq!(foreign.0.len(), 3);
    for ns in &foreign.0 {
        ip(&["netns", "add", ns]).unwrap();
    }
    let (passes0, commands0) = agent_counters(&c);
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let c = &c;
                s.spawn(move || c.cli(&["sandbox", "create", n, "--node", "node1"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (passes1, commands1) = agent_counters(&c);
    for (n, out) in names.iter().zip(&outs) {
        if n.starts_with("cf") {
            assert!(!out.status.success(), "{n} must be refused");
            let err = stderr(out);
            assert!(
                err.contains(&format!("network namespace {} already exists", c.sandbox_ns(n))),
                "{n}: {err}"
            );
            assert!(
                !c.etcd_keys()
                    .iter()
                    .any(|k| k.ends_with(&format!("/names/sandboxes/{n}"))),
                "nothing is recorded for {n}"
            );
        } else {
            assert!(out.status.success(), "{n}: {}", stderr(out));
        }
    }
    // Every good one is realised and reachable from its own namespace.
    for n in names.iter().filter(|n| !n.starts_with("cf")) {
        assert!(ping(&c, n, "172.17.0.1"), "{n} reaches its gateway");
    }
    // 16 creates and 3 rollbacks were served by fewer passes than commands
    // (one pass per command would make passes ≥ commands).
    let (passes, commands) = (passes1 - passes0, commands1 - commands0);
    assert!(commands >= 16, "commands {commands}");
    assert!(
        passes < commands,
        "passes {passes} for {commands} commands: no batching"
    );
    eprintln!("{commands} commands in {passes} passes");
    drop(foreign);
}

#[test]
fn only_berths_own_neighbour_entries_wake_a_pass() {
    // A period far beyond the test: every pass in it was woken by netlink.
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), "600".to_string()]; 2],
        ..Default::default()
    };
    let c = Cluster::start_with(2, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    let n1 = c.node(1);
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    c.cli_ok(&["sandbox", "create", "o1", "--node", "node1", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "o2", "--node", "node2", "--network", "demo"]);
    c.cli_ok(&["sandbox", "create", "a", "--node", "node1"]);
    let o2_ip = c.cli_json(&["sandbox", "inspect", "o2"])[0]["Networks"]["demo"]["IPAddress"]
        .as_str()
        .expect("o2's address")
        .to_string();
    c.eventually("node1 holds o2's neighbour entry", || {
        in_ns_ok(&n1, &["ip", "neigh", "show", "dev", "vx-4096"]).contains(&o2_ip)
    });
    // Passes asked for by the setup are over (debounce 50 ms, then at most one per 0.5 s).
    std::thread::sleep(Duration::from_millis(1500));
    let (before, _) = agent_counters(&c);
    // Entries of the kernel's kind (neighbour cache, NOARP) on berth's
    // bridge and on a host veth, made and deleted by hand: the kernel's
    // garbage collector does this to thousands of them in a bulk create.
    for dev in ["berth0".to_string(), host_veth(&c, "a", "bridge")] {
        ip(&[
            "-n",
            &n1,
            "neigh",
            "add",
            "192.0.2.77",
            "lladdr",
            "02:00:00:00:00:77",
            "nud",
            "noarp",
            "dev",
            &dev,
        ])
        .unwrap();
        ip(&["-n", &n1, "neigh", "del", "192.0.2.77", "dev", &dev]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (after, _) = agent_counters(&c);
    assert_eq!(after, before, "entries that are not berth's woke a pass");
    // berth's own entry on its VXLAN device deleted: repaired at once.
    ip(&["-n", &n1, "neigh", "del", &o2_ip, "dev", "vx-4096"]).unwrap();
    // (`eventually` gives up long before the 600 s period.)
    c.eventually("the neighbour entry is back", || {
        in_ns_ok(&n1, &["ip", "neigh", "show", "dev", "vx-4096"]).contains(&o2_ip)
    });
    assert!(
        agent_counters(&c).0 > after,
        "the repair was a pass woken by netlink"
    );
}
