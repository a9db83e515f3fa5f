//! The planner and the pass driver on an in-memory node: every object kind
//! is planned, removals come first, drift of each kind is repaired, foreign
//! objects are refused and left alone, one failure does not stop the rest.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use berth_core::model::Driver;
use berth_core::ports::PortMapping;

use super::*;
use crate::kernel::fdb::{FdbEntry, NeighEntry};
use crate::model::{EndpointSpec, Peer, PeerSet, SandboxMode};
use crate::nft::PortElem;
use crate::reconcile::executor::Executor;
use crate::reconcile::fake::FakeNode;
use crate::reconcile::observed::{Link, sandbox_mark};
use crate::reconcile::report::{ErrorKind, Results};
use crate::reconcile::{PassConfig, PassReport, run_pass};

const NS: &str = "t-";

fn net(id: &str, name: &str, driver: Driver, bridge: &str, subnet: &str, vni: Option<u32>) -> NetworkSpec {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    NetworkSpec {
        id: id.into(),
        name: name.into(),
        driver,
        bridge: bridge.into(),
        gateway: subnet.hosts().next().unwrap(),
        subnet,
        mtu: 0,
        icc: true,
        masquerade: driver == Driver::Bridge,
        internal: false,
        vni,
        v6: None,
    }
}

fn ep(id: &str, network: &NetworkSpec, ifname: &str, ip: [u8; 4], default_route: bool) -> EndpointSpec {
    EndpointSpec {
        id: format!("{id:0<16}"),
        network_id: network.id.clone(),
        ifname: ifname.into(),
        ip: Ipv4Addr::from(ip),
        prefix: network.subnet.prefix_len(),
        ip6: None,
        mac: berth_core::net::mac_from_ip(Ipv4Addr::from(ip)),
        default_route,
        aliases: vec![],
    }
}

fn sandbox(id: &str, endpoints: Vec<EndpointSpec>) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        name: id.into(),
        mode: SandboxMode::Namespace,
        netns: Some(format!("{NS}{id}")),
        endpoints,
        command: vec![],
        ports: vec![],
        links: vec![],
        generation: 1,
        external: None,
    }
}

/// A node with every kind of object: the default bridge with a published
/// port and a command, a user network (DNS), an overlay with a remote peer
/// (VXLAN, FDB, neighbours) and its gateway bridge, a legacy link.
fn everything() -> Desired {
    let bridge = net("nb", "bridge", Driver::Bridge, "berth0", "172.17.0.0/16", None);
    let user = net(
        "nu",
        "my-bridge",
        Driver::Bridge,
        "br-user",
        "172.18.0.0/16",
        None,
    );
    let gw = net(
        "ng",
        "berth_gwbridge",
        Driver::Bridge,
        "berth_gwbridge",
        "172.19.0.0/16",
        None,
    );
    let overlay = net(
        "no",
        "demo",
        Driver::Overlay,
        "br-demo",
        "10.0.0.0/24",
        Some(4096),
    );
    let mut web = sandbox("web", vec![ep("e1", &bridge, "eth0", [172, 17, 0, 2], true)]);
    web.ports = vec![PortMapping::validate("", 8080, 80, "tcp").unwrap()];
    web.command = vec!["sleep".into(), "1000".into()];
    let mut linked = sandbox("linked", vec![ep("e2", &bridge, "eth0", [172, 17, 0, 3], true)]);
    linked.links = vec![("web".into(), "w".into())];
    let named = sandbox("named", vec![ep("e3", &user, "eth0", [172, 18, 0, 2], true)]);
    let ov = sandbox(
        "ov",
        vec![
            ep("e4", &overlay, "eth0", [10, 0, 0, 2], false),
            ep("e5", &gw, "eth1", [172, 19, 0, 2], true),
        ],
    );
    let mut d = Desired::default();
    for n in [bridge, user, gw, overlay] {
        d.networks.insert(n.id.clone(), n);
    }
    for s in [web, linked, named, ov] {
        d.sandboxes.insert(s.id.clone(), s);
    }
    d.peers.insert(
        "no".into(),
        PeerSet {
            revision: 3,
            peers: vec![Peer {
                ip: Ipv4Addr::new(10, 0, 0, 3),
                ip6: None,
                mac: berth_core::net::mac_from_ip(Ipv4Addr::new(10, 0, 0, 3)),
                vtep: Ipv4Addr::new(192, 168, 205, 11),
                sandbox_name: "remote".into(),
                aliases: vec![],
            }],
            vteps: BTreeSet::from([Ipv4Addr::new(192, 168, 205, 11)]),
        },
    );
    d
}

/// A node and berth's record of it, driven pass by pass.
struct Harness {
    node: FakeNode,
    owned: Owned,
    saved: Option<Owned>,
    results: Results,
}

impl Harness {
    fn new() -> Self {
        Self {
            node: FakeNode::default(),
            owned: Owned::default(),
            saved: None,
            results: Results::new(),
        }
    }

    fn config(&self, scan: bool) -> PassConfig {
        PassConfig {
            underlay_mtu: 1500,
            local_vtep: self.node.local_vtep,
            scan_prefix: scan.then(|| NS.to_string()),
            node_resolv: "nameserver 192.0.2.53\n".into(),
            complete: true,
        }
    }

    fn pass(&mut self, d: &Desired, scope: &Scope) -> PassReport {
        self.pass_with(d, scope, false)
    }

    fn pass_with(&mut self, d: &Desired, scope: &Scope, scan: bool) -> PassReport {
        let config = self.config(scan);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let report = rt.block_on(run_pass(
            &mut self.node,
            d,
            &mut self.owned,
            scope,
            &config,
            &mut self.results,
        ));
        crate::reconcile::save_if_changed(|o| self.node.persist(o), &self.owned, &mut self.saved);
        report
    }

    /// The plan a pass would make now (without executing it).
    fn plan(&mut self, d: &Desired, scope: &Scope) -> Plan {
        let config = self.config(false);
        let req = crate::reconcile::observe_request(d, &self.owned, scope, None);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let observed = rt.block_on(self.node.observe(&req)).unwrap();
        plan(&Inputs {
            desired: d,
            observed: &observed,
            owned: &self.owned,
            scope,
            underlay_mtu: config.underlay_mtu,
            local_vtep: config.local_vtep,
            node_resolv: &config.node_resolv,
            applied_rules: self.node.applied.as_ref(),
            complete: config.complete,
        })
    }

    fn converged(&mut self, d: &Desired) -> Harness {
        let r = self.pass(d, &Scope::full());
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let again = self.plan(d, &Scope::full());
        assert!(again.is_empty(), "a second pass has work left: {again:#?}");
        std::mem::replace(self, Harness::new())
    }
}

fn kinds(p: &Plan) -> Vec<ObjectKind> {
    p.actions.iter().map(|a| a.key().kind).collect()
}

#[test]
fn one_pass_builds_every_kind_of_object_and_the_next_has_nothing_to_do() {
    let d = everything();
    let mut h = Harness::new();
    let p = h.plan(&d, &Scope::full());
    let have: BTreeSet<ObjectKind> = kinds(&p).into_iter().collect();
    use ObjectKind as K;
    assert_eq!(
        have,
        BTreeSet::from([
            K::Bridge,
            K::Vxlan,
            K::Peers,
            K::Firewall,
            K::Namespace,
            K::Endpoint,
            K::EtcFiles,
            K::Dns,
            K::Command
        ])
    );
    let mut h = h.converged(&d);
    let node = &mut h.node;
    assert_eq!(node.links["berth0"].addrs, [(Ipv4Addr::new(172, 17, 0, 1), 16)]);
    assert_eq!(
        node.links["br-demo"].addrs,
        [],
        "an overlay's bridge has no address"
    );
    assert_eq!(node.links["vx-4096"].mtu, 1450);
    assert_eq!(node.links["vx-4096"].master, Some(node.links["br-demo"].index));
    let (fdb, neigh) = &node.peers["vx-4096"];
    assert!(fdb.contains(&FdbEntry {
        mac: [0; 6],
        dst: Ipv4Addr::new(192, 168, 205, 11)
    }));
    assert_eq!(neigh.len(), 1);
    assert!(
        node.localnet.contains("berth0"),
        "route_localnet for published ports"
    );
    assert_eq!(
        node.dns.len(),
        2,
        "named and ov resolve names; web and linked do not"
    );
    assert!(
        node.etc["t-linked"]
            .hosts
            .as_ref()
            .unwrap()
            .contains("172.17.0.2\tw web")
    );
    assert_eq!(
        node.etc["t-web"].resolv.as_deref(),
        Some("nameserver 192.0.2.53\n"),
        "the default bridge gets the node's resolver"
    );
    assert_eq!(
        node.namespaces["t-ov"].default_route.unwrap().0,
        Ipv4Addr::new(172, 19, 0, 1)
    );
}

#[test]
fn removals_come_before_additions_in_dependency_order() {
    let d = everything();
    let mut h = Harness::new();
    h.pass(&d, &Scope::full());
    // Everything goes but one new sandbox on a new network.
    let fresh = net("nf", "fresh", Driver::Bridge, "br-fresh", "172.20.0.0/16", None);
    let mut next = Desired::default();
    next.networks.insert(fresh.id.clone(), fresh.clone());
    let s = sandbox("new", vec![ep("e9", &fresh, "eth0", [172, 20, 0, 2], true)]);
    next.sandboxes.insert(s.id.clone(), s);
    let p = h.plan(&next, &Scope::full());
    let first_add = p.actions.iter().position(|a| !a.is_removal()).unwrap();
    assert!(p.actions[first_add..].iter().all(|a| !a.is_removal()), "{p:#?}");
    assert!(
        p.actions[..first_add]
            .iter()
            .any(|a| matches!(a, Action::RemoveLink { ifname, .. } if ifname == "vx-4096"))
    );
    let pos = |f: &dyn Fn(&Action) -> bool| p.actions.iter().position(f).unwrap();
    assert!(
        pos(&|a| matches!(a, Action::StopCommand { .. }))
            < pos(&|a| matches!(a, Action::RemoveNamespace { .. })),
        "a command stops before its namespace goes"
    );
    assert!(
        pos(&|a| matches!(
            a,
            Action::RemoveLink {
                kind: ObjectKind::Vxlan,
                ..
            }
        )) < pos(&|a| matches!(a, Action::RemoveLink { ifname, .. } if ifname == "br-demo")),
        "the VXLAN port goes before its bridge"
    );
    assert!(
        pos(&|a| matches!(a, Action::CreateBridge(_)))
            < pos(&|a| matches!(a, Action::CreateNamespace { .. }))
            && pos(&|a| matches!(a, Action::CreateNamespace { .. }))
                < pos(&|a| matches!(a, Action::EnsureEndpoint(_))),
        "bridge, then namespace, then endpoint"
    );
    let r = h.pass(&next, &Scope::full());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(h.node.namespaces.keys().collect::<Vec<_>>(), ["t-new"]);
    assert_eq!(
        h.node.links.keys().collect::<Vec<_>>(),
        ["br-fresh", "bve90000000000"]
    );
    assert!(h.owned.commands.is_empty(), "web's command was stopped");
    assert_eq!(
        h.node.dns.keys().collect::<Vec<_>>(),
        ["new"],
        "only the new sandbox resolves names"
    );
    assert_eq!(h.owned.bridges, BTreeSet::from(["br-fresh".to_string()]));
}

/// Each kind of drift, made by hand on a converged node, is planned as a
/// repair of exactly that kind and repaired by one pass.
#[test]
fn every_kind_of_drift_is_repaired_by_one_pass() {
    type Drift = (&'static str, fn(&mut FakeNode), ObjectKind);
    let drifts: [Drift; 14] = [
        (
            "host veth deleted",
            |n| n.delete_link("bve10000000000"),
            ObjectKind::Endpoint,
        ),
        ("bridge deleted", |n| n.delete_link("br-user"), ObjectKind::Bridge),
        (
            "bridge address removed",
            |n| n.links.get_mut("berth0").unwrap().addrs.clear(),
            ObjectKind::Bridge,
        ),
        ("vxlan deleted", |n| n.delete_link("vx-4096"), ObjectKind::Vxlan),
        (
            "fdb entry deleted",
            |n| n.peers.get_mut("vx-4096").unwrap().0.clear(),
            ObjectKind::Peers,
        ),
        (
            "neighbour deleted",
            |n| n.peers.get_mut("vx-4096").unwrap().1 = BTreeSet::<NeighEntry>::new(),
            ObjectKind::Peers,
        ),
        (
            "bridge entry of a departed endpoint left (learned)",
            |n| {
                n.bridged
                    .get_mut("vx-4096")
                    .unwrap()
                    .insert([0x02, 0x42, 10, 0, 0, 99]);
            },
            ObjectKind::Peers,
        ),
        (
            "learning switched back on on the VXLAN port",
            |n| n.links.get_mut("vx-4096").unwrap().port_learning = Some(true),
            ObjectKind::Vxlan,
        ),
        (
            "nft table flushed",
            |n| {
                n.firewall
                    .iter_mut()
                    .flat_map(|c| c.counts.values_mut())
                    .for_each(|v| *v = 0)
            },
            ObjectKind::Firewall,
        ),
        (
            "namespace deleted",
            |n| {
                n.namespaces.remove("t-named");
            },
            ObjectKind::Namespace,
        ),
        (
            "sandbox address removed",
            |n| {
                n.namespaces
                    .get_mut("t-web")
                    .unwrap()
                    .links
                    .get_mut("eth0")
                    .unwrap()
                    .addrs
                    .clear();
            },
            ObjectKind::Endpoint,
        ),
        (
            "a departed endpoint's interface left out of service (its deletion never ran)",
            |n| {
                let ns = n.namespaces.get_mut("t-web").unwrap();
                let mut gone = ns.links["eth0"].clone();
                // Its own pair (the host end went with it in the kernel).
                (gone.index, gone.peer) = (990, None);
                gone.addrs.clear();
                gone.up = false;
                ns.links.insert("bgone99".into(), gone);
            },
            ObjectKind::Endpoint,
        ),
        (
            "hosts file deleted",
            |n| {
                n.etc.remove("t-linked");
            },
            ObjectKind::EtcFiles,
        ),
        (
            "port isolation changed",
            |n| n.links.get_mut("bve20000000000").unwrap().isolated = Some(true),
            ObjectKind::Endpoint,
        ),
    ];
    let d = everything();
    for (what, drift, kind) in drifts {
        let mut h = Harness::new().converged(&d);
        drift(&mut h.node);
        let p = h.plan(&d, &Scope::full());
        assert!(
            kinds(&p).contains(&kind),
            "{what}: expected a {kind:?} action, got {p:#?}"
        );
        h.converged(&d);
    }
}

#[test]
fn a_recreated_namespace_gets_its_dns_socket_and_command_again() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    for ns in ["t-web", "t-named"] {
        h.node.namespaces.remove(ns);
    }
    let p = h.plan(&d, &Scope::full());
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::ServeDns { sandbox_id, .. } if sandbox_id == "named"))
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::StartCommand { sandbox } if sandbox.id == "web"))
    );
    h.converged(&d);
}

#[test]
fn an_exited_command_is_not_restarted() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    let pid = h.owned.commands["web"].pid;
    h.node.processes.get_mut(&pid).unwrap().1 = false;
    assert!(h.plan(&d, &Scope::full()).is_empty());
}

#[test]
fn foreign_namespaces_and_bridges_are_conflicts_and_untouched() {
    let mut d = Desired::default();
    let br = net("nx", "users", Driver::Bridge, "br0", "172.21.0.0/16", None);
    let bridge = net("nb", "bridge", Driver::Bridge, "berth0", "172.17.0.0/16", None);
    d.networks.insert(br.id.clone(), br.clone());
    d.networks.insert(bridge.id.clone(), bridge.clone());
    let a = sandbox("a", vec![ep("ea", &br, "eth0", [172, 21, 0, 2], true)]);
    let b = sandbox("foreign", vec![ep("eb", &bridge, "eth0", [172, 17, 0, 2], true)]);
    let c = sandbox("ok", vec![ep("ec", &bridge, "eth0", [172, 17, 0, 3], true)]);
    for s in [a, b, c] {
        d.sandboxes.insert(s.id.clone(), s);
    }
    let mut h = Harness::new();
    h.node.add_foreign_link("br0", "bridge");
    h.node.add_foreign_namespace("t-foreign");
    let before_ns = h.node.namespaces["t-foreign"].clone();
    let before_br = h.node.links["br0"].clone();
    let r = h.pass(&d, &Scope::full());
    let conflicts: Vec<_> = r
        .errors
        .iter()
        .filter(|(_, _, e)| e.kind == ErrorKind::Conflict)
        .collect();
    assert_eq!(conflicts.len(), 2, "{:?}", r.errors);
    let e = r.error_for("foreign").unwrap();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.to_string()
            .contains("t-foreign already exists on this node and is not berth's"),
        "{e}"
    );
    assert!(
        r.error_for("a")
            .unwrap()
            .to_string()
            .contains("bridge br0 already exists")
    );
    assert!(r.error_for("ok").is_none(), "the rest is realised");
    assert_eq!(
        h.node.namespaces["t-foreign"], before_ns,
        "the foreign namespace is untouched"
    );
    assert_eq!(h.node.links["br0"], before_br, "the foreign bridge is untouched");
    assert!(!h.node.links.contains_key("bvea0000000000"));
    // Nothing of theirs is touched when they are removed either.
    let mut empty = Desired::default();
    empty.networks.clear();
    h.pass(&empty, &Scope::full());
    assert_eq!(h.node.namespaces["t-foreign"], before_ns);
    assert_eq!(h.node.links["br0"], before_br);
    assert!(!h.node.namespaces.contains_key("t-ok") && !h.node.links.contains_key("berth0"));
}

#[test]
fn a_lost_record_is_rebuilt_from_markers_and_nothing_is_orphaned_or_swept() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    let node = std::mem::take(&mut h.node);
    let before_links = node.links.clone();
    // The state file is gone; the node is as it was, plus a foreign namespace.
    let mut h = Harness::new();
    h.node = node;
    h.node.log.clear();
    h.node.add_foreign_namespace("t-theirs");
    // A process with berth's marker outside berth's namespaces (another agent's).
    h.node.processes.insert(9999, ("elsewhere".into(), true));
    // A sandbox removed while the agent was down: marked, no record, not desired.
    let mut less = d.clone();
    less.sandboxes.remove("named");
    let r = h.pass_with(&less, &Scope::full(), true);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(
        !h.node.namespaces.contains_key("t-named"),
        "berth's undesired namespace is swept"
    );
    assert!(
        h.node.namespaces.contains_key("t-theirs"),
        "the foreign one stays"
    );
    assert!(
        !h.node
            .log
            .iter()
            .any(|a| matches!(a, Action::CreateNamespace { .. } | Action::CreateBridge(_))),
        "nothing berth made is made again: {:?}",
        h.node.log
    );
    assert_eq!(h.node.links["berth0"], before_links["berth0"]);
    assert_eq!(h.owned.netns.len(), 3, "records rebuilt for web, linked, ov");
    assert!(
        h.owned.commands.contains_key("web"),
        "web's command is found by its marker, not started twice"
    );
    assert_eq!(h.node.processes.values().filter(|p| p.1).count(), 2);
    assert!(
        h.node.processes[&9999].1,
        "another agent's command is not adopted nor stopped"
    );
    assert!(!h.owned.commands.contains_key("elsewhere"));
}

#[test]
fn a_namespace_of_a_removed_sandbox_with_the_same_name_is_replaced() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    let mut again = d.clone();
    let mut web = again.sandboxes.remove("web").unwrap();
    web.id = "web2".into(); // the same name, a new sandbox
    again.sandboxes.insert(web.id.clone(), web);
    let p = h.plan(&again, &Scope::full());
    let ns: Vec<_> = p
        .actions
        .iter()
        .filter(|a| a.key().kind == ObjectKind::Namespace)
        .collect();
    assert!(matches!(ns[0], Action::RemoveNamespace { sandbox_id, .. } if sandbox_id == "web"));
    assert!(matches!(ns[1], Action::CreateNamespace { sandbox_id, .. } if sandbox_id == "web2"));
    let h = h.converged(&again);
    assert_eq!(
        h.node.namespaces["t-web"].marker.as_deref(),
        Some(sandbox_mark("web2").as_str())
    );
}

#[test]
fn one_failure_does_not_stop_the_rest_and_is_reported_with_its_kind() {
    let d = everything();
    let mut h = Harness::new();
    h.node.fail.insert(ObjectKey::new(ObjectKind::Bridge, "br-user"));
    let r = h.pass(&d, &Scope::full());
    let e = r.error_for("named").expect("named's bridge failed");
    assert_eq!(
        e.code(),
        tonic::Code::Internal,
        "EPERM is a kernel failure, not a precondition"
    );
    assert!(e.to_string().contains("bridge br-user"), "{e}");
    for s in ["web", "linked", "ov"] {
        assert!(r.error_for(s).is_none(), "{s} is realised");
    }
    assert!(h.node.namespaces.contains_key("t-ov"));
    assert!(
        !h.node
            .log
            .iter()
            .any(|a| matches!(a, Action::EnsureEndpoint(e) if e.bridge == "br-user")),
        "the endpoint that needs the failed bridge is not attempted"
    );
    assert!(
        h.results[&ObjectKey::new(ObjectKind::Bridge, "br-user")]
            .result
            .is_err()
    );
    // The next pass repairs it.
    h.converged(&d);
}

#[test]
fn a_scoped_pass_touches_only_its_sandbox() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    h.node.delete_link("bve10000000000"); // web's veth: not in scope
    let mut more = d.clone();
    let bridge = d.networks["nb"].clone();
    let s = sandbox("extra", vec![ep("e7", &bridge, "eth0", [172, 17, 0, 9], true)]);
    more.sandboxes.insert(s.id.clone(), s);
    let p = h.plan(&more, &Scope::sandbox("extra", ["nb".to_string()]));
    assert!(
        p.actions.iter().all(|a| a.sandbox().is_none_or(|s| s == "extra")),
        "{p:#?}"
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::EnsureEndpoint(e) if e.sandbox_id == "web"))
    );
}

#[test]
fn stray_host_veths_go_in_full_passes_only() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    h.node.add_foreign_link("bvdeadbeef0000", "veth");
    h.node.add_foreign_link("veth-theirs", "veth");
    let scoped = h.plan(&d, &Scope::sandbox("web", ["nb".to_string()]));
    assert!(scoped.is_empty(), "{scoped:#?}");
    let full = h.plan(&d, &Scope::full());
    assert_eq!(
        full.actions,
        [Action::RemoveLink {
            ifname: "bvdeadbeef0000".into(),
            kind: ObjectKind::Endpoint
        }]
    );
}

#[test]
fn a_peer_set_change_reprograms_only_the_entries() {
    let d = everything();
    let mut h = Harness::new().converged(&d);
    let mut moved = d.clone();
    moved.peers.get_mut("no").unwrap().peers[0].vtep = Ipv4Addr::new(192, 168, 205, 12);
    let p = h.plan(&moved, &Scope::network("no"));
    assert_eq!(kinds(&p), [ObjectKind::Peers]);
}

#[test]
fn marked_links_that_are_not_bridges_are_never_adopted_as_bridges() {
    let mut h = Harness::new();
    let d = everything();
    h.node.links.insert(
        "br-user".into(),
        Link {
            index: 7,
            kind: Some("veth".into()),
            ..Default::default()
        },
    );
    let p = h.plan(&d, &Scope::full());
    assert!(p.conflicts.iter().any(|c| c.key.name == "br-user"));
    assert!(!p.actions.iter().any(|a| a.key().name == "br-user"));
}

#[test]
fn before_the_first_snapshot_nothing_unknown_is_removed_and_the_firewall_is_kept() {
    let d = everything();
    let h = Harness::new().converged(&d);
    let config_complete = false;
    // A restarted agent that so far knows only one sandbox from a command.
    let mut partial = Desired::default();
    let web = d.sandboxes["web"].clone();
    partial.networks.insert("nb".into(), d.networks["nb"].clone());
    partial.sandboxes.insert(web.id.clone(), web);
    let req = crate::reconcile::observe_request(
        &partial,
        &h.owned,
        &Scope::sandbox("web", ["nb".to_string()]),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut node = h.node;
    let observed = rt.block_on(node.observe(&req)).unwrap();
    let p = plan(&Inputs {
        desired: &partial,
        observed: &observed,
        owned: &h.owned,
        scope: &Scope::sandbox("web", ["nb".to_string()]),
        underlay_mtu: 1500,
        local_vtep: node.local_vtep,
        node_resolv: "nameserver 192.0.2.53\n",
        applied_rules: None,
        complete: config_complete,
    });
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::RemoveLink { .. } | Action::ApplyFirewall { .. })),
        "{p:#?}"
    );
}

/// A CNI attachment: the runtime's namespace (by path) on `network`.
fn cni_sandbox(id: &str, network: &NetworkSpec, path: &str, inode: u64) -> SandboxSpec {
    let mut s = sandbox(id, vec![ep(id, network, "eth0", [172, 18, 0, 9], true)]);
    s.netns = Some(path.into());
    s.external = Some(crate::model::External {
        origin: crate::model::SandboxOrigin::Cni,
        container_id: format!("{id}c0ffee"),
        netns_path: path.into(),
        inode,
        ifname: "eth0".into(),
    });
    s
}

/// The runtime's namespace as the fake node has it: `lo` and the runtime's own `eth1`.
fn runtime_namespace(h: &mut Harness, path: &str) -> u64 {
    h.node.add_foreign_namespace(path);
    let ns = h.node.namespaces.get_mut(path).unwrap();
    ns.links.insert(
        "eth1".into(),
        Link {
            index: 7,
            kind: Some("veth".into()),
            up: true,
            ..Default::default()
        },
    );
    ns.inode
}

#[test]
fn a_runtimes_namespace_is_never_created_marked_or_deleted_and_its_links_are_kept() {
    const P: &str = "/run/netns/netns-6c1f";
    let user = net(
        "nu",
        "my-bridge",
        Driver::Bridge,
        "br-user",
        "172.18.0.0/16",
        None,
    );
    let mut h = Harness::new();
    let inode = runtime_namespace(&mut h, P);
    let mut d = Desired::default();
    d.networks.insert(user.id.clone(), user.clone());
    let s = cni_sandbox("cni1", &user, P, inode);
    d.sandboxes.insert(s.id.clone(), s);
    let p = h.plan(&d, &Scope::sandbox("cni1", ["nu".to_string()]));
    assert!(p.conflicts.is_empty() && p.vanished.is_empty(), "{p:#?}");
    for a in &p.actions {
        assert!(
            !matches!(
                a,
                Action::CreateNamespace { .. }
                    | Action::RemoveNamespace { .. }
                    | Action::WriteEtcFiles { .. }
                    | Action::RemoveSandboxLink { .. }
            ),
            "{a:?}"
        );
    }
    let Some(Action::EnsureEndpoint(e)) = p.actions.iter().find(|a| matches!(a, Action::EnsureEndpoint(_)))
    else {
        panic!("no endpoint planned: {p:#?}")
    };
    assert!(e.external && e.netns == P && e.gateway.is_some());
    assert!(
        p.actions.iter().any(|a| matches!(a, Action::ServeDns { .. })),
        "DNS on a user network"
    );
    let r = h.pass(&d, &Scope::sandbox("cni1", ["nu".to_string()]));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(h.owned.netns.is_empty(), "never recorded as berth's namespace");
    let rec = &h.owned.external["cni1"];
    assert_eq!((rec.netns_path.as_str(), rec.inode), (P, inode));
    assert_eq!(
        rec.links.keys().collect::<Vec<_>>(),
        [&"bvcni1000000000".to_string()[..14]]
    );
    // Converged: nothing more, full pass included; the runtime's eth1 stays.
    let mut h = h.converged(&d);
    assert!(h.node.namespaces[P].links.contains_key("eth1"));
    assert!(h.node.namespaces[P].marker.is_none(), "not marked");
    assert!(!h.node.etc.contains_key(P));

    // Detached: berth's interface goes, by its host end; the namespace and the runtime's link stay.
    h.owned = h.node.persisted.clone().unwrap();
    h.saved = Some(h.owned.clone());
    let mut gone = d.clone();
    gone.sandboxes.clear();
    let p = h.plan(&gone, &Scope::sandbox("cni1", ["nu".to_string()]));
    assert!(
        p.actions.contains(&Action::RemoveLink {
            ifname: "bvcni100000000".into(),
            kind: ObjectKind::Endpoint
        }),
        "{p:#?}"
    );
    let r = h.pass(&gone, &Scope::sandbox("cni1", ["nu".to_string()]));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(h.owned.external.is_empty());
    let ns = &h.node.namespaces[P];
    assert_eq!(
        ns.links.keys().collect::<Vec<_>>(),
        ["eth1", "lo"],
        "only berth's eth0 went"
    );
    assert!(!h.node.links.contains_key("bvcni100000000"));
}

#[test]
fn a_runtimes_namespace_that_vanished_or_was_replaced_is_reported_not_recreated() {
    const P: &str = "/run/netns/netns-77aa";
    let user = net(
        "nu",
        "my-bridge",
        Driver::Bridge,
        "br-user",
        "172.18.0.0/16",
        None,
    );
    let mut h = Harness::new();
    let inode = runtime_namespace(&mut h, P);
    let mut d = Desired::default();
    d.networks.insert(user.id.clone(), user.clone());
    let s = cni_sandbox("cni2", &user, P, inode);
    d.sandboxes.insert(s.id.clone(), s);
    let mut h = h.converged(&d);
    h.owned = h.node.persisted.clone().unwrap();
    h.saved = Some(h.owned.clone());

    // The runtime deleted its namespace without DEL (the kernel took the veth along).
    h.node.namespaces.remove(P);
    h.node.delete_link("bvcni200000000");
    let p = h.plan(&d, &Scope::full());
    assert_eq!(p.vanished, ["cni2"]);
    assert!(p.conflicts[0].message.contains("is gone"), "{:?}", p.conflicts);
    assert!(
        p.actions.iter().all(|a| !matches!(
            a,
            Action::CreateNamespace { .. } | Action::EnsureEndpoint(_) | Action::ServeDns { .. }
        )),
        "{p:#?}"
    );
    assert!(
        p.actions.contains(&Action::StopDns {
            sandbox_id: "cni2".into()
        }),
        "the DNS socket would keep the namespace alive"
    );
    let r = h.pass(&d, &Scope::full());
    assert_eq!(r.vanished, ["cni2"]);
    assert_eq!(
        r.error_for("cni2").unwrap().code(),
        tonic::Code::FailedPrecondition
    );

    // Another namespace at the same path (another inode) is not the one attached.
    runtime_namespace(&mut h, P);
    let p = h.plan(&d, &Scope::full());
    assert_eq!(p.vanished, ["cni2"]);
    assert!(
        p.conflicts[0].message.contains("another namespace"),
        "{:?}",
        p.conflicts
    );

    // Once detached nothing of it is left to do.
    let mut gone = d.clone();
    gone.sandboxes.clear();
    let r = h.pass(&gone, &Scope::full());
    assert!(r.errors.is_empty() && r.vanished.is_empty(), "{r:?}");
    assert!(h.owned.external.is_empty());
    assert!(
        h.node.namespaces.contains_key(P),
        "the runtime's namespace is never deleted"
    );
}

/// [`everything`] with the user network and the overlay dual stack: the
/// user bridge holds its IPv6 gateway, the named sandbox its IPv6 address
/// and IPv6 default route, the overlay's VXLAN device the remote peer's
/// IPv6 neighbour entry; each deleted by hand is repaired by one pass.
#[test]
fn dual_stack_objects_converge_and_their_drift_is_repaired() {
    use std::net::Ipv6Addr;
    let mut d = everything();
    let gw6: Ipv6Addr = "fd66::1".parse().unwrap();
    d.networks.get_mut("nu").unwrap().v6 = Some(("fd66::/64".parse().unwrap(), gw6));
    d.networks.get_mut("no").unwrap().v6 = Some((
        "fd42:be47:2::/64".parse().unwrap(),
        "fd42:be47:2::1".parse().unwrap(),
    ));
    d.sandboxes.get_mut("named").unwrap().endpoints[0].ip6 = Some(("fd66::2".parse().unwrap(), 64));
    d.peers.get_mut("no").unwrap().peers[0].ip6 = Some("fd42:be47:2::3".parse().unwrap());
    let h = Harness::new().converged(&d);
    let node = &h.node;
    assert_eq!(node.links["br-user"].addrs6, [(gw6, 64)]);
    assert!(
        node.links["br-demo"].addrs6.is_empty(),
        "an overlay's bridge holds no IPv6 either"
    );
    assert!(node.links["berth0"].addrs6.is_empty());
    let ns = &node.namespaces["t-named"];
    assert_eq!(ns.links["eth0"].addrs6, [("fd66::2".parse().unwrap(), 64)]);
    assert_eq!(ns.default_route6, Some((gw6, Some(ns.links["eth0"].index))));
    assert_eq!(
        node.peers["vx-4096"].1.len(),
        2,
        "IPv4 and IPv6 neighbour entries"
    );

    type Drift = (&'static str, fn(&mut FakeNode), ObjectKind);
    let drifts: [Drift; 4] = [
        (
            "bridge IPv6 gateway removed",
            |n| n.links.get_mut("br-user").unwrap().addrs6.clear(),
            ObjectKind::Bridge,
        ),
        (
            "sandbox IPv6 address removed",
            |n| {
                let ns = n.namespaces.get_mut("t-named").unwrap();
                ns.links.get_mut("eth0").unwrap().addrs6.clear();
            },
            ObjectKind::Endpoint,
        ),
        (
            "IPv6 default route removed",
            |n| n.namespaces.get_mut("t-named").unwrap().default_route6 = None,
            ObjectKind::Endpoint,
        ),
        (
            "IPv6 neighbour entry removed",
            |n| {
                n.peers.get_mut("vx-4096").unwrap().1.retain(|e| e.ip.is_ipv4());
            },
            ObjectKind::Peers,
        ),
    ];
    for (what, drift, kind) in drifts {
        let mut h = Harness::new().converged(&d);
        drift(&mut h.node);
        let p = h.plan(&d, &Scope::full());
        assert!(
            kinds(&p).contains(&kind),
            "{what}: expected a {kind:?} action, got {p:#?}"
        );
        h.converged(&d);
    }
}

/// A port that comes or goes is an element change, never a table rewrite;
/// full passes put back a deleted element and remove an unknown one; a
/// change of the bridges rewrites the table.
#[test]
fn published_ports_are_element_changes_and_their_drift_is_repaired() {
    let mut d = everything();
    let mut h = Harness::new().converged(&d);
    let _ = h.pass(&d, &Scope::full());
    let firewall = |p: &Plan| -> Vec<Action> {
        p.actions
            .iter()
            .filter(|a| a.key().kind == ObjectKind::Firewall)
            .cloned()
            .collect()
    };
    // A second published port, by a command's pass.
    let web = d.sandboxes.get_mut("web").unwrap();
    web.ports
        .push(PortMapping::validate("", 9090, 90, "udp").unwrap());
    let scope = Scope::sandbox("web", BTreeSet::from(["nb".to_string()]));
    let p = h.plan(&d, &scope);
    let fw = firewall(&p);
    assert!(
        matches!(&fw[..], [Action::UpdatePorts { add, remove, .. }] if add.len() == 1 && add[0].host_port == 9090 && remove.is_empty()),
        "{fw:#?}"
    );
    let r = h.pass(&d, &scope);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(h.plan(&d, &Scope::full()).is_empty());
    let elements = h.node.firewall.clone().unwrap().elements;
    assert_eq!(elements.len(), 2);

    // Drift: an element deleted by hand is put back; an unknown one removed.
    let gone = *elements.iter().find(|e| e.host_port == 9090).unwrap();
    let fw = h.node.firewall.as_mut().unwrap();
    fw.elements.remove(&gone);
    let stray = PortElem {
        host_port: 7777,
        ..gone
    };
    fw.elements.insert(stray);
    let p = h.plan(&d, &Scope::full());
    assert!(
        matches!(&firewall(&p)[..], [Action::UpdatePorts { add, remove, .. }] if add == &[gone] && remove == &[stray]),
        "{p:#?}"
    );
    let _ = h.pass(&d, &Scope::full());
    assert_eq!(h.node.firewall.clone().unwrap().elements, elements);
    assert!(h.plan(&d, &Scope::full()).is_empty());

    // The port goes with its sandbox: withdrawn, no rewrite.
    d.sandboxes.remove("web");
    let scope = Scope::sandbox("web", BTreeSet::from(["nb".to_string()]));
    let fw = firewall(&h.plan(&d, &scope));
    assert!(
        matches!(&fw[..], [Action::UpdatePorts { add, remove, .. }] if add.is_empty() && remove.len() == 2),
        "{fw:#?}"
    );
    // A new bridge changes the structure: the table is replaced.
    let extra = net("nx", "extra", Driver::Bridge, "br-extra", "172.30.0.0/16", None);
    let s = sandbox("x", vec![ep("e9", &extra, "eth0", [172, 30, 0, 2], true)]);
    d.networks.insert(extra.id.clone(), extra);
    d.sandboxes.insert(s.id.clone(), s);
    let fw = firewall(&h.plan(&d, &Scope::full()));
    assert!(matches!(&fw[..], [Action::ApplyFirewall { .. }]), "{fw:#?}");
}
