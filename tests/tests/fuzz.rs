//! Random requests through the public gRPC API of a real two-node cluster,
//! valid and invalid interleaved (issue #12 item 8). For every request:
//! - no process panics or dies;
//! - a refusal carries one of the codes design.md documents for a bad or
//!   impossible request (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
//!   FAILED_PRECONDITION, RESOURCE_EXHAUSTED), never INTERNAL, UNKNOWN or
//!   UNAVAILABLE;
//! - a refused request changed nothing: etcd under berth's prefix and every
//!   node's and sandbox's kernel objects (links, addresses, routes, the
//!   node's nftables ruleset, the cluster's namespaces) are as before.
//!
//! At the end every invariant of a converged cluster holds
//! ([`berth_tests::invariants::consistent`]).
//!
//! Generated with proptest from a seed printed at the start; set
//! `BERTH_FUZZ_SEED` to replay a run and `BERTH_FUZZ_CASES` (default 300)
//! for a longer one. No shrinking: a case depends on what earlier cases
//! created, so the failure message names the seed and the request instead.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_tests::cluster::Cluster;
use berth_tests::invariants::consistent;
use berth_tests::unix::unix_channel;
use berth_tests::wait_until;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tonic::Code;

const NODES: usize = 2;

/// One request of the public API.
#[derive(Debug, Clone)]
enum Req {
    CreateNetwork(pb::CreateNetworkRequest),
    RemoveNetwork(pb::RemoveNetworkRequest),
    InspectNetwork(pb::InspectNetworkRequest),
    ListNetworks(pb::ListNetworksRequest),
    Connect(pb::ConnectNetworkRequest),
    Disconnect(pb::DisconnectNetworkRequest),
    CreateSandbox(pb::CreateSandboxRequest),
    RemoveSandbox(pb::RemoveSandboxRequest),
    InspectSandbox(pb::InspectSandboxRequest),
    ListSandboxes(pb::ListSandboxesRequest),
    RemoveNode(pb::RemoveNodeRequest),
}

/// Names: mostly from a small pool (so requests meet each other's objects),
/// sometimes hostile or oversized.
fn name() -> BoxedStrategy<String> {
    prop_oneof![
        12 => prop::sample::select(vec!["a", "b", "web", "db", "demo", "ov"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => "[a-z][a-z0-9_.-]{0,12}",
        1 => "[\"; #{}*/\\\\$ ]{1,4}[a-z]{0,3}",
        1 => "[a-z]{60,300}",
        1 => "\\PC{1,20}",
    ]
    .boxed()
}

fn network_ref() -> BoxedStrategy<String> {
    prop_oneof![
        4 => name(),
        2 => prop::sample::select(vec!["bridge", "host", "none"]).prop_map(String::from),
    ]
    .boxed()
}

fn subnet() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => prop::sample::select(vec![
            "10.77.0.0/24", "10.77.0.0/16", "10.77.1.0/24", "172.30.5.0/24", "10.99.0.0/30",
        ])
        .prop_map(String::from),
        2 => prop::sample::select(vec![
            "10.0.0.0/33", "300.1.1.1/24", "10.77.0.1/24", "::/0", "0.0.0.0/0",
            "127.0.0.0/8", "224.0.0.0/4", "10.77.0.0", "a/b", "10.77.0.0/-1",
            "192.168.205.0/24",
        ])
        .prop_map(String::from),
        1 => (any::<[u8; 4]>(), 0u8..40).prop_map(|(a, l)| format!("{}.{}.{}.{}/{l}", a[0], a[1], a[2], a[3])),
    ]
    .boxed()
}

fn address() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(String::new()),
        2 => (0u8..=255).prop_map(|x| format!("10.77.0.{x}")),
        1 => prop::sample::select(vec!["10.77.1.1", "172.30.5.9", "255.255.255.255", "0.0.0.0", "x", "::1", "10.77.0.256"]).prop_map(String::from),
    ]
    .boxed()
}

/// IPv6 subnets for `--ipv6` networks: some that fit, some clashing, some bad.
fn subnet6() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => prop::sample::select(vec!["fd77::/64", "fd77::/112", "fd77:1::/64", "fd42:be47:1::/64", "fd77::/124"])
            .prop_map(String::from),
        2 => prop::sample::select(vec![
            "fd77::1/64", "fe80::/64", "ff02::/64", "::/0", "fd77::/32", "fd77::/127", "10.77.0.0/24", "fd77::/x",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// IPv6 addresses for gateways and `--ip6`: inside `fd77::/64` mostly.
fn address6() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(String::new()),
        2 => (0u16..=20).prop_map(|x| format!("fd77::{x:x}")),
        1 => prop::sample::select(vec!["fd77:1::1", "fe80::1", "::", "10.77.0.3", "fd77::ffff:ffff:ffff:ffff", "x"])
            .prop_map(String::from),
    ]
    .boxed()
}

fn labels() -> BoxedStrategy<HashMap<String, String>> {
    prop_oneof![
        6 => Just(HashMap::new()),
        2 => prop::collection::hash_map("[a-z.]{1,20}", "[ -~]{0,40}", 0..4),
        1 => prop::collection::hash_map("[a-z]{1,8}", "[a-z]{0,20}", 60..80),
        1 => ("[a-z]{1,8}", 70_000usize..80_000).prop_map(|(k, n)| HashMap::from([(k, "x".repeat(n))])),
    ]
    .boxed()
}

fn options() -> BoxedStrategy<HashMap<String, String>> {
    prop_oneof![
        6 => Just(HashMap::new()),
        2 => prop::sample::select(vec![
            ("com.docker.network.driver.mtu", "1400"),
            ("com.docker.network.driver.mtu", "99999"),
            ("com.docker.network.bridge.name", "br-fuzz"),
            ("com.docker.network.bridge.name", "e*"),
            ("com.docker.network.bridge.name", "berth0"),
            ("no.such.option", "1"),
        ])
        .prop_map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())])),
    ]
    .boxed()
}

/// `NetworkDriver` values: unspecified, bridge, overlay, the built-in-only
/// host and null, and numbers no version of the proto defines.
fn driver() -> BoxedStrategy<i32> {
    prop_oneof![
        3 => Just(pb::NetworkDriver::Unspecified as i32),
        2 => Just(pb::NetworkDriver::Bridge as i32),
        2 => Just(pb::NetworkDriver::Overlay as i32),
        1 => prop::sample::select(vec![
            pb::NetworkDriver::Host as i32,
            pb::NetworkDriver::Null as i32,
            5,
            -1,
            i32::MAX,
        ]),
    ]
    .boxed()
}

fn ports() -> BoxedStrategy<Vec<pb::PortMapping>> {
    let port = prop_oneof![
        3 => 8000u32..8010,
        1 => prop::sample::select(vec![0u32, 22, 2379, 2380, 4789, 7420, 7421, 65535, 65536, 99999]),
    ];
    let mapping = (
        prop::sample::select(vec!["", "", "0.0.0.0", "127.0.0.1", "garbage", "::1"]),
        port,
        prop_oneof![3 => Just(80u32), 1 => 0u32..70_000],
        prop::sample::select(vec![
            pb::PortProtocol::Tcp as i32,
            pb::PortProtocol::Tcp as i32,
            pb::PortProtocol::Udp as i32,
            pb::PortProtocol::Unspecified as i32,
            3,
            -7,
        ]),
    )
        .prop_map(|(host_ip, host_port, container_port, protocol)| pb::PortMapping {
            host_ip: host_ip.into(),
            host_port,
            container_port,
            protocol,
        });
    prop_oneof![
        4 => Just(Vec::new()),
        3 => prop::collection::vec(mapping.clone(), 1..3),
        1 => prop::collection::vec(mapping, 51..60),
    ]
    .boxed()
}

fn node() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => (1..=NODES).prop_map(|i| format!("node{i}")),
        1 => prop::sample::select(vec!["node9", "Node1", "node1;"]).prop_map(String::from),
    ]
    .boxed()
}

fn aliases() -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        4 => Just(Vec::new()),
        2 => prop::collection::vec(name(), 1..3),
        1 => prop::collection::vec("[a-z]{1,8}", 40..60),
    ]
    .boxed()
}

fn command() -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        5 => Just(Vec::new()),
        1 => Just(vec!["sleep".to_string(), "600".to_string()]),
        1 => ("[a-z]{1,4}", 40_000usize..50_000).prop_map(|(c, n)| vec![c, "y".repeat(n)]),
    ]
    .boxed()
}

fn request() -> BoxedStrategy<Req> {
    // `--internal`, `--ip-range` and `--aux-address`: ranges and addresses
    // from the same generators as subnets and gateways, so some fit.
    let addressing = (
        any::<bool>(),
        prop_oneof![3 => Just(String::new()), 1 => subnet()],
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec((name(), address()), 1..3),
            1 => prop::collection::vec(("[a-z]{1,4}", address()), 17..20),
        ],
    );
    let create_network = (
        name(),
        driver(),
        subnet(),
        address(),
        options(),
        labels(),
        addressing,
        (
            prop_oneof![2 => Just(false), 1 => Just(true)],
            subnet6(),
            address6(),
        ),
    )
        .prop_map(
            |(
                name,
                driver,
                subnet,
                gateway,
                options,
                labels,
                (internal, ip_range, aux),
                (enable_ipv6, subnet6, gateway6),
            )| {
                Req::CreateNetwork(pb::CreateNetworkRequest {
                    name,
                    driver,
                    subnet,
                    gateway,
                    options,
                    labels,
                    internal,
                    ip_range,
                    aux_addresses: aux.into_iter().collect(),
                    enable_ipv6,
                    subnet6,
                    gateway6,
                })
            },
        );
    let create_sandbox = (
        name(),
        node(),
        network_ref(),
        address(),
        aliases(),
        ports(),
        command(),
        address6(),
    )
        .prop_map(|(name, node, network, ip, aliases, ports, command, ip6)| {
            Req::CreateSandbox(pb::CreateSandboxRequest {
                name,
                node,
                network,
                ip,
                aliases,
                links: Vec::new(),
                ports,
                command,
                ip6,
            })
        });
    let connect = (network_ref(), name(), address(), aliases(), address6()).prop_map(
        |(network, sandbox, ip, aliases, ip6)| {
            Req::Connect(pb::ConnectNetworkRequest {
                network,
                sandbox,
                ip,
                aliases,
                ip6,
            })
        },
    );
    let page_token = prop_oneof![
        3 => Just(String::new()),
        1 => prop::sample::select(vec!["../names", "zzzz", "0"]).prop_map(String::from),
    ];
    prop_oneof![
        4 => create_network,
        2 => network_ref().prop_map(|n| Req::RemoveNetwork(pb::RemoveNetworkRequest { name_or_id: n })),
        1 => network_ref().prop_map(|n| Req::InspectNetwork(pb::InspectNetworkRequest { name_or_id: n })),
        1 => (0u32..2000, page_token.clone()).prop_map(|(page_size, page_token)| {
            Req::ListNetworks(pb::ListNetworksRequest { page_size, page_token })
        }),
        3 => connect,
        2 => (network_ref(), name()).prop_map(|(network, sandbox)| {
            Req::Disconnect(pb::DisconnectNetworkRequest { network, sandbox })
        }),
        5 => create_sandbox,
        3 => (name(), any::<bool>()).prop_map(|(name_or_id, force)| {
            Req::RemoveSandbox(pb::RemoveSandboxRequest { name_or_id, force })
        }),
        1 => name().prop_map(|n| Req::InspectSandbox(pb::InspectSandboxRequest { name_or_id: n })),
        1 => (0u32..2000, page_token).prop_map(|(page_size, page_token)| {
            Req::ListSandboxes(pb::ListSandboxesRequest { page_size, page_token })
        }),
        1 => prop::sample::select(vec!["node9", "", "node1;"]).prop_map(|n| {
            Req::RemoveNode(pb::RemoveNodeRequest { name: n.to_string(), force: false })
        }),
    ]
    .boxed()
}

/// Sends `req`; `Ok` or the refusal's status.
async fn send(c: &Cluster, req: Req) -> Result<(), tonic::Status> {
    let ch = unix_channel(c.socket.clone());
    let mut net = NetworkServiceClient::new(ch.clone());
    let mut sb = SandboxServiceClient::new(ch.clone());
    let mut nodes = NodeServiceClient::new(ch);
    match req {
        Req::CreateNetwork(r) => net.create_network(r).await.map(drop),
        Req::RemoveNetwork(r) => net.remove_network(r).await.map(drop),
        Req::InspectNetwork(r) => net.inspect_network(r).await.map(drop),
        Req::ListNetworks(r) => net.list_networks(r).await.map(drop),
        Req::Connect(r) => net.connect_network(r).await.map(drop),
        Req::Disconnect(r) => net.disconnect_network(r).await.map(drop),
        Req::CreateSandbox(r) => sb.create_sandbox(r).await.map(drop),
        Req::RemoveSandbox(r) => sb.remove_sandbox(r).await.map(drop),
        Req::InspectSandbox(r) => sb.inspect_sandbox(r).await.map(drop),
        Req::ListSandboxes(r) => sb.list_sandboxes(r).await.map(drop),
        Req::RemoveNode(r) => nodes.remove_node(r).await.map(drop),
    }
}

/// What a refused request must not have changed.
#[derive(PartialEq, Eq)]
struct Snapshot {
    etcd: BTreeMap<String, String>,
    kernel: String,
}

/// etcd under berth's prefix without what changes on its own (the repair
/// leader's lease key, the last repair event), and the kernel objects of every node and sandbox
/// namespace of this cluster, read by one shell.
fn snapshot(c: &Cluster) -> Snapshot {
    let etcd = c
        .etcd_dump()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("/leader/repair") && !k.ends_with("/events/repair"))
        .collect();
    let mut script = format!("ls /run/netns | grep '^{}' | sort; ", c.tag);
    for i in 1..=NODES {
        let n = c.node(i);
        script.push_str(&format!(
            "echo == {n}; ip -n {n} -o link show; ip -n {n} -o -4 addr show; ip -n {n} -o -6 addr show scope global; ip -n {n} route show; \
             ip netns exec {n} nft list ruleset; "
        ));
    }
    for ns in c.sandbox_namespaces() {
        script.push_str(&format!(
            "echo == {ns}; ip -n {ns} -o link show; ip -n {ns} -o -4 addr show; ip -n {ns} -o -6 addr show scope global; ip -n {ns} route show; "
        ));
    }
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let kernel = String::from_utf8_lossy(&out.stdout).into_owned();
    // Something to compare: every node's links were read.
    assert!(
        kernel.matches(": lo: <LOOPBACK").count() >= NODES,
        "the snapshot read every node: {kernel}"
    );
    Snapshot { etcd, kernel }
}

/// The first line that differs between two texts, for a failure message.
fn first_difference(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        if al.get(i) != bl.get(i) {
            return format!("before: {:?}\n after: {:?}", al.get(i), bl.get(i));
        }
    }
    String::new()
}

fn etcd_difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => out.push(format!("changed {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("added {k}"));
    }
    out.join("\n")
}

/// The codes of a request that is bad or impossible in the current state.
const DOCUMENTED: [Code; 5] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

fn seed() -> u64 {
    std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn cases() -> usize {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn random_requests_are_answered_or_refused_cleanly() {
    let seed = seed();
    println!("fuzz seed {seed} (BERTH_FUZZ_SEED={seed} replays it)");
    let c = Cluster::start(NODES).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = request();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut refused, mut answered) = (BTreeMap::<String, usize>::new(), 0usize);
    let mut before = snapshot(&c);
    for case in 0..cases() {
        let req = strategy.new_tree(&mut runner).expect("a request").current();
        let shown = format!("{req:.300?}");
        let result = rt.block_on(send(&c, req));
        let after = snapshot(&c);
        let context = || format!("seed {seed} case {case}: {shown}");
        match result {
            Ok(()) => answered += 1,
            Err(status) => {
                assert!(
                    DOCUMENTED.contains(&status.code()),
                    "{}: undocumented code {:?} {:?}\n{}",
                    context(),
                    status.code(),
                    status.message(),
                    c.logs()
                );
                assert!(
                    !status.message().is_empty() && !status.message().contains('\n'),
                    "{}: the message is one line: {:?}",
                    context(),
                    status.message()
                );
                if after != before {
                    // Convergence of an earlier success may still be
                    // writing; a refusal's leftovers stay.
                    std::thread::sleep(Duration::from_secs(1));
                    let again = snapshot(&c);
                    let b = &before;
                    assert!(
                        etcd_difference(&b.etcd, &again.etcd).is_empty(),
                        "{}: refused with {:?} {:?} but etcd changed:\n{}",
                        context(),
                        status.code(),
                        status.message(),
                        etcd_difference(&b.etcd, &again.etcd)
                    );
                    assert!(
                        b.kernel == again.kernel,
                        "{}: refused with {:?} {:?} but a kernel changed:\n{}",
                        context(),
                        status.code(),
                        status.message(),
                        first_difference(&b.kernel, &again.kernel)
                    );
                }
                *refused.entry(format!("{:?}", status.code())).or_default() += 1;
            }
        }
        assert!(
            !c.logs().contains("panicked"),
            "{}: a process panicked\n{}",
            context(),
            c.logs()
        );
        before = after;
    }
    println!("answered {answered}, refused {refused:?}");
    assert!(answered > 0, "no request succeeded: the generator is too hostile");
    assert!(
        refused.len() >= 3,
        "refusals of at least three kinds: {refused:?}"
    );
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(30), || match consistent(&c) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(ok, "seed {seed}: after the run: {last}\n{}", c.logs());
    // Every node is still ready.
    let nodes = c.cli_json(&["node", "ls"]);
    assert_eq!(
        nodes
            .as_array()
            .map(|a| a.iter().filter(|n| n["Status"] == "ready").count()),
        Some(NODES),
        "{nodes}"
    );
}
