//! What `berth doctor` asks of a node, answered from a dry run of a full
//! pass ([`crate::reconcile::Reconciler::dry_run`]): the differences the
//! planner found (what a pass would change, and what it saw), and the hops
//! of one endpoint's path on this node. Pure: it reads the desired state,
//! the observation and the plan, and touches nothing.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use berth_core::model::Driver;

use crate::kernel::fdb::{FdbEntry, NeighEntry};
use crate::kernel::link::format_mac;
use crate::model::{Desired, EndpointSpec, NetworkSpec, SandboxSpec};
use crate::reconcile::action::Action;
use crate::reconcile::observed::{Link, Namespace, Observed};
use crate::reconcile::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    Broken,
    Skipped,
}

/// One hop as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub name: String,
    pub state: State,
    pub detail: String,
}

fn hop(name: impl Into<String>, state: State, detail: impl Into<String>) -> Hop {
    Hop {
        name: name.into(),
        state,
        detail: detail.into(),
    }
}

/// One thing a pass would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub object: String,
    pub change: String,
    /// The sandbox's name, if the object is one sandbox's.
    pub sandbox: Option<String>,
}

/// The other end of a path, as this node must know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Question {
    pub sandbox_id: String,
    pub network_id: String,
    pub peer_ip: Option<Ipv4Addr>,
    /// An overlay peer on another node: its MAC and that node's underlay address.
    pub remote: Option<([u8; 6], Ipv4Addr)>,
    /// The other end is outside berth.
    pub outside: bool,
}

/// Facts of the node that are not in [`Observed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub underlay: Ipv4Addr,
    pub underlay_mtu: u32,
    /// `net.ipv4.ip_forward` of the node's namespace.
    pub forwarding: bool,
    /// The agent holds its node's whole desired state.
    pub synced: bool,
    /// The DNAT elements of berth's tables in effect; `None`: no table.
    pub dnat: Option<BTreeSet<crate::nft::PortElem>>,
    /// The `[::1]` proxies running.
    pub proxies: crate::nft::Proxies,
}

fn link_words(l: &Link) -> String {
    let mut w = vec![
        if l.up { "up" } else { "down" }.to_string(),
        format!("mtu {}", l.mtu),
    ];
    if let Some(mac) = &l.mac {
        w.push(format!("mac {}", format_mac(mac)));
    }
    w.join(", ")
}

fn addrs_words(a: &[(Ipv4Addr, u8)]) -> String {
    if a.is_empty() {
        return "no IPv4 address".into();
    }
    a.iter()
        .map(|(ip, p)| format!("{ip}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sandbox_name(d: &Desired, id: &str) -> Option<String> {
    d.sandboxes.get(id).map(|s| s.name.clone())
}

/// What a full pass would change now, one line per object.
pub fn differences(d: &Desired, o: &Observed, plan: &Plan) -> Vec<Difference> {
    let mut out: Vec<Difference> = plan
        .conflicts
        .iter()
        .map(|c| Difference {
            object: c.key.to_string(),
            change: format!("conflict: {}", c.message),
            sandbox: c.sandboxes.first().and_then(|s| sandbox_name(d, s)),
        })
        .collect();
    for a in &plan.actions {
        let sandbox = a.sandbox().and_then(|s| sandbox_name(d, s));
        out.push(Difference {
            object: a.key().to_string(),
            change: describe(d, o, a),
            sandbox,
        });
    }
    out
}

fn describe(d: &Desired, o: &Observed, a: &Action) -> String {
    match a {
        Action::StopCommand { .. } => "stop the detached command: its sandbox no longer wants it".into(),
        Action::StopDns { .. } => "stop answering DNS: the sandbox no longer has a user network".into(),
        Action::RemoveNamespace { .. } => "remove the namespace: no sandbox here wants it".into(),
        Action::ForgetNamespace { .. } => {
            "forget berth's record: the name now holds a namespace that is not berth's".into()
        }
        Action::ForgetExternal { .. } => {
            "forget berth's interfaces in a runtime's namespace (they are gone)".into()
        }
        Action::RemoveSandboxLink { .. } => "remove an interface no endpoint wants".into(),
        Action::RemoveLink { .. } => "remove berth's link: nothing on this node wants it".into(),
        Action::CreateBridge(b) => match o.links.get(&b.network.bridge) {
            None => "create the bridge: it is missing".into(),
            Some(l) => {
                let want_addrs = match b.network.driver {
                    Driver::Bridge => vec![(b.network.gateway, b.network.subnet.prefix_len())],
                    _ => vec![],
                };
                let mut why = Vec::new();
                if !l.up {
                    why.push("it is down".to_string());
                }
                if l.mtu != b.mtu {
                    why.push(format!("mtu {} (want {})", l.mtu, b.mtu));
                }
                if l.addrs != want_addrs {
                    why.push(format!(
                        "addresses {} (want {})",
                        addrs_words(&l.addrs),
                        addrs_words(&want_addrs)
                    ));
                }
                if why.is_empty() {
                    why.push("its marker differs".into());
                }
                format!("fix the bridge: {}", why.join(", "))
            }
        },
        Action::EnsureVxlan { vxlan, network, .. } => match o.links.get(vxlan) {
            None => "create the VXLAN device: it is missing".into(),
            Some(l) => {
                let mut why = Vec::new();
                if !l.up {
                    why.push("it is down".to_string());
                }
                let bridge = o.links.get(&network.bridge).map(|b| b.index);
                if l.master.is_none() || l.master != bridge {
                    why.push(format!("it is not a port of {}", network.bridge));
                }
                if why.is_empty() {
                    why.push("its parameters (VNI, local address, port, learning, mtu) differ".into());
                }
                format!("fix the VXLAN device: {}", why.join(", "))
            }
        },
        Action::SyncPeers {
            vxlan,
            fdb,
            neigh,
            bridged,
            ..
        } => {
            let empty = Default::default();
            let (have_f, have_n) = o.peers.get(vxlan).unwrap_or(&empty);
            let no_macs = Default::default();
            let have_b = o.bridged.get(vxlan).unwrap_or(&no_macs);
            let mut why = Vec::new();
            for mac in bridged.difference(have_b) {
                why.push(format!("missing bridge entry {} to {vxlan}", format_mac(mac)));
            }
            for mac in have_b.difference(bridged) {
                why.push(format!(
                    "extra bridge entry {} to {vxlan} (a departed endpoint)",
                    format_mac(mac)
                ));
            }
            for e in fdb.difference(have_f) {
                why.push(format!("missing fdb {} dst {}", format_mac(&e.mac), e.dst));
            }
            for e in have_f.difference(fdb) {
                why.push(format!("extra fdb {} dst {}", format_mac(&e.mac), e.dst));
            }
            for e in neigh.difference(have_n) {
                why.push(format!(
                    "missing neighbour {} lladdr {}",
                    e.ip,
                    format_mac(&e.mac)
                ));
            }
            for e in have_n.difference(neigh) {
                why.push(format!("extra neighbour {} lladdr {}", e.ip, format_mac(&e.mac)));
            }
            if why.is_empty() {
                why.push("the device is being (re)created".into());
            }
            format!("program the overlay peers: {}", why.join("; "))
        }
        Action::ApplyFirewall { rules, localnet } => firewall_words(o, rules, localnet)
            .map(|w| format!("apply berth's nftables table: {w}"))
            .unwrap_or_else(|| {
                "apply berth's nftables table: the agent has not applied its current rules".into()
            }),
        Action::UpdatePorts {
            add,
            remove,
            localnet,
            ..
        } => {
            let mut why: Vec<String> = add
                .iter()
                .map(|e| format!("publish {}", e.describe()))
                .chain(remove.iter().map(|e| format!("withdraw {}", e.describe())))
                .collect();
            why.extend(
                localnet
                    .difference(&o.localnet)
                    .map(|b| format!("route_localnet is off on {b}")),
            );
            if why.is_empty() {
                why.push("converge the [::1] proxies".into());
            }
            format!("update berth's published ports: {}", why.join(", "))
        }
        Action::CreateNamespace { .. } => "create the namespace: it is missing or was replaced".into(),
        Action::EnsureEndpoint(e) => {
            let s = d.sandboxes.get(&e.sandbox_id);
            let net = d.networks.get(&e.endpoint.network_id);
            let why = match (s, net) {
                (Some(s), Some(n)) => endpoint_faults(o, s, &e.endpoint, n, e.mtu),
                _ => vec![],
            };
            if why.is_empty() {
                "(re)create the endpoint: its veth pair differs".into()
            } else {
                format!("fix the endpoint: {}", why.join(", "))
            }
        }
        Action::WriteEtcFiles { .. } => "rewrite /etc/netns files (hosts, resolv.conf): they differ".into(),
        Action::ServeDns { .. } => {
            "answer DNS at 127.0.0.11 in the sandbox: the responder is not there".into()
        }
        Action::StartCommand { .. } => "start the detached command: it is not running".into(),
    }
}

/// Why the kernel's table differs from `rules`, if it does.
fn firewall_words(
    o: &Observed,
    rules: &crate::nft::Ruleset,
    localnet: &std::collections::BTreeSet<String>,
) -> Option<String> {
    let want = rules.rule_counts();
    let mut why = Vec::new();
    match &o.firewall {
        Some(None) if !want.is_empty() => why.push(format!("table {} is missing", crate::nft::TABLE)),
        Some(have) => {
            let have = have.as_ref().map(|s| s.counts.clone()).unwrap_or_default();
            for (chain, n) in &want {
                let h = have.get(chain).copied();
                if h != Some(*n) {
                    why.push(match h {
                        None => format!("chain {chain} is missing"),
                        Some(h) => format!("chain {chain} has {h} rules, want {n}"),
                    });
                }
            }
            for chain in have.keys().filter(|c| !want.contains_key(*c)) {
                why.push(format!("chain {chain} is not berth's"));
            }
        }
        None => {}
    }
    for b in localnet.difference(&o.localnet) {
        why.push(format!("route_localnet is off on {b}"));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// What differs in one endpoint's veth pair.
fn endpoint_faults(
    o: &Observed,
    s: &SandboxSpec,
    ep: &EndpointSpec,
    net: &NetworkSpec,
    mtu: u32,
) -> Vec<String> {
    let mut why = Vec::new();
    let host_name = ep.host_ifname();
    match o.links.get(&host_name) {
        None => why.push(format!("host veth {host_name} is missing")),
        Some(h) => {
            if !h.up {
                why.push(format!("host veth {host_name} is down"));
            }
            if h.master.is_none() || h.master != o.links.get(&net.bridge).map(|b| b.index) {
                why.push(format!("host veth {host_name} is not a port of {}", net.bridge));
            }
            if h.mtu != mtu {
                why.push(format!("host veth {host_name} has mtu {} (want {mtu})", h.mtu));
            }
            if h.isolated != Some(!net.icc) {
                why.push(format!("host veth {host_name} port isolation differs"));
            }
        }
    }
    let ns = s.netns.as_ref().and_then(|n| o.namespaces.get(n));
    match ns.and_then(|ns| ns.links.get(&ep.ifname)) {
        None => why.push(format!("{} is missing in {}", ep.ifname, s.name)),
        Some(p) => {
            if !p.up {
                why.push(format!("{} in {} is down", ep.ifname, s.name));
            }
            if p.addrs != [(ep.ip, ep.prefix)] {
                why.push(format!(
                    "{} in {} has {} (want {}/{})",
                    ep.ifname,
                    s.name,
                    addrs_words(&p.addrs),
                    ep.ip,
                    ep.prefix
                ));
            }
            if p.mac != Some(ep.mac) {
                why.push(format!("{} in {} has another MAC", ep.ifname, s.name));
            }
            if ep.default_route && ns.and_then(|n| n.default_route).map(|r| r.0) != Some(net.gateway) {
                why.push(format!("{} has no default route via {}", s.name, net.gateway));
            }
        }
    }
    why
}

/// The hops of one endpoint's path on this node, in path order: the
/// sandbox's namespace, its interface, address and route, the host veth
/// and its bridge, then for overlays the VXLAN device and the peer's
/// neighbour and FDB entries, then the firewall, and for an outside
/// address forwarding and masquerade.
pub fn path(d: &Desired, o: &Observed, plan: &Plan, facts: &Facts, q: &Question) -> Vec<Hop> {
    use State::*;
    let mut hops = Vec::new();
    let Some(s) = d.sandboxes.get(&q.sandbox_id) else {
        hops.push(hop(
            format!("sandbox {}", q.sandbox_id),
            Broken,
            if facts.synced {
                "this node's agent does not hold the sandbox (its desired state does not name it)"
            } else {
                "this node's agent does not hold the sandbox: it has not had its desired state since it started"
            },
        ));
        return hops;
    };
    let Some(ep) = s.endpoints.iter().find(|e| e.network_id == q.network_id) else {
        hops.push(hop(
            format!("endpoint of {}", s.name),
            Broken,
            "this node's agent holds no endpoint of the sandbox on that network",
        ));
        return hops;
    };
    let Some(net) = d.networks.get(&ep.network_id) else {
        hops.push(hop(
            format!("network of {}", s.name),
            Broken,
            "this node's agent does not hold the endpoint's network",
        ));
        return hops;
    };

    // Inside the sandbox.
    let ns: Option<&Namespace> = match &s.netns {
        None => {
            hops.push(hop(
                format!("namespace of {}", s.name),
                Skipped,
                "host mode: the node's own namespace",
            ));
            None
        }
        Some(name) => match o.namespaces.get(name) {
            Some(n) if n.inspected => {
                hops.push(hop(format!("namespace {name}"), Ok, format!("inode {}", n.inode)));
                Some(n)
            }
            _ => {
                hops.push(hop(
                    format!("namespace {name}"),
                    Broken,
                    "the sandbox's namespace is missing",
                ));
                None
            }
        },
    };
    let peer = ns.and_then(|n| n.links.get(&ep.ifname));
    let ifname = format!("interface {} in {}", ep.ifname, s.name);
    let addr = format!("address {}/{} on {}", ep.ip, ep.prefix, ep.ifname);
    match (ns, peer) {
        (None, _) => {
            hops.push(hop(ifname, Skipped, "no namespace to look in"));
            hops.push(hop(addr, Skipped, "no namespace to look in"));
        }
        (Some(_), None) => {
            hops.push(hop(ifname, Broken, "missing"));
            hops.push(hop(addr, Skipped, "no interface"));
        }
        (Some(_), Some(p)) => {
            let state = if p.up && p.mac == Some(ep.mac) { Ok } else { Broken };
            let mut detail = link_words(p);
            if !p.up {
                detail = format!("the interface is down ({detail})");
            } else if p.mac != Some(ep.mac) {
                detail = format!("{detail}; want mac {}", format_mac(&ep.mac));
            }
            hops.push(hop(ifname, state, detail));
            if p.addrs.contains(&(ep.ip, ep.prefix)) {
                hops.push(hop(addr, Ok, "present"));
            } else {
                hops.push(hop(
                    addr,
                    Broken,
                    format!(
                        "the address is missing ({} has {})",
                        ep.ifname,
                        addrs_words(&p.addrs)
                    ),
                ));
            }
        }
    }
    // The route towards the other end.
    if let Some(n) = ns {
        let default = s
            .primary()
            .and_then(|p| d.networks.get(&p.network_id).map(|n| (p, n)));
        let on_link = q.peer_ip.is_some_and(|ip| net.subnet.contains(&ip));
        if on_link {
            let ip = q.peer_ip.expect("on_link");
            let has = peer.is_some_and(|p| p.addrs.contains(&(ep.ip, ep.prefix)));
            hops.push(hop(
                format!("route to {ip}"),
                if has { Ok } else { Broken },
                if has {
                    format!("on-link via {} ({})", ep.ifname, net.subnet)
                } else {
                    format!("no connected route: {} lacks its address", ep.ifname)
                },
            ));
        } else if q.peer_ip.is_some() || ep.default_route {
            let what = q
                .peer_ip
                .map_or_else(|| "default route".to_string(), |ip| format!("route to {ip}"));
            match default {
                None => hops.push(hop(what, Broken, "the sandbox has no default route endpoint")),
                Some((dep, dnet)) => {
                    let dev = n.links.get(&dep.ifname).map(|l| l.index);
                    match n.default_route {
                        Some((gw, via)) if gw == dnet.gateway && (via.is_none() || via == dev) => {
                            hops.push(hop(what, Ok, format!("default via {gw} dev {}", dep.ifname)))
                        }
                        Some((gw, _)) => hops.push(hop(
                            what,
                            Broken,
                            format!(
                                "the default route goes via {gw}, want {} dev {}",
                                dnet.gateway, dep.ifname
                            ),
                        )),
                        None => hops.push(hop(
                            what,
                            Broken,
                            format!("no default route (want via {} dev {})", dnet.gateway, dep.ifname),
                        )),
                    }
                }
            }
        }
    }

    // The node's side of the endpoint.
    let host_name = ep.host_ifname();
    let host = o.links.get(&host_name);
    let bridge = o.links.get(&net.bridge);
    match host {
        None => hops.push(hop(
            format!("veth {host_name}"),
            Broken,
            "the host end of the endpoint is missing",
        )),
        Some(h) if !h.up => hops.push(hop(
            format!("veth {host_name}"),
            Broken,
            format!("the host end of the endpoint is down ({})", link_words(h)),
        )),
        Some(h) => hops.push(hop(format!("veth {host_name}"), Ok, link_words(h))),
    }
    let port = format!("{host_name} on bridge {}", net.bridge);
    match (host, bridge) {
        (None, _) => hops.push(hop(port, Skipped, "no host veth")),
        (Some(_), None) => hops.push(hop(port, Skipped, "no bridge")),
        (Some(h), Some(b)) => {
            if h.master == Some(b.index) {
                hops.push(hop(port, Ok, "a port of the bridge"));
            } else {
                let m = match h.master {
                    None => "it has no master (nomaster)".to_string(),
                    Some(i) => {
                        let name = o
                            .links
                            .iter()
                            .find(|(_, l)| l.index == i)
                            .map(|(n, _)| n.as_str());
                        format!("its master is {}", name.unwrap_or("another device"))
                    }
                };
                hops.push(hop(
                    port,
                    Broken,
                    format!("the veth is not a port of {}: {m}", net.bridge),
                ));
            }
        }
    }
    let bname = format!("bridge {}", net.bridge);
    match bridge {
        None => hops.push(hop(bname, Broken, "the network's bridge is missing")),
        Some(b) if !b.up => hops.push(hop(
            bname,
            Broken,
            format!("the bridge is down ({})", link_words(b)),
        )),
        Some(b) => {
            if net.driver == Driver::Bridge && !b.addrs.contains(&(net.gateway, net.subnet.prefix_len())) {
                hops.push(hop(
                    bname,
                    Broken,
                    format!(
                        "the gateway {}/{} is not on the bridge (it has {})",
                        net.gateway,
                        net.subnet.prefix_len(),
                        addrs_words(&b.addrs)
                    ),
                ));
            } else {
                let mut detail = link_words(b);
                if net.driver == Driver::Bridge {
                    detail = format!("{detail}, gateway {}/{}", net.gateway, net.subnet.prefix_len());
                }
                hops.push(hop(bname, Ok, detail));
            }
        }
    }
    if !net.icc && q.peer_ip.is_some() && !q.outside && q.remote.is_none() {
        hops.push(hop(
            format!("icc on {}", net.name),
            Broken,
            "com.docker.network.bridge.enable_icc=false: the bridge drops traffic between its own ports (by design)",
        ));
    }

    // The overlay: the VXLAN device and the peer's entries.
    if let (Driver::Overlay, Some(vx)) = (net.driver, net.vxlan_name()) {
        let dev = o.links.get(&vx);
        let name = format!("vxlan {vx}");
        match dev {
            None => hops.push(hop(name, Broken, "the network's VXLAN device is missing")),
            Some(l) if !l.up => hops.push(hop(
                name,
                Broken,
                format!("the VXLAN device is down ({})", link_words(l)),
            )),
            Some(l) if l.master.is_none() || l.master != bridge.map(|b| b.index) => hops.push(hop(
                name,
                Broken,
                format!("the VXLAN device is not a port of {}", net.bridge),
            )),
            Some(l) => {
                let (vni, local) = l.vxlan.map_or((None, None), |p| (p.vni, p.local));
                if vni != net.vni || local != Some(facts.underlay) {
                    hops.push(hop(
                        name,
                        Broken,
                        format!(
                            "VNI {vni:?} local {local:?}, want VNI {:?} local {}",
                            net.vni, facts.underlay
                        ),
                    ));
                } else {
                    hops.push(hop(
                        name,
                        Ok,
                        format!(
                            "VNI {} local {}, {}",
                            net.vni.unwrap_or(0),
                            facts.underlay,
                            link_words(l)
                        ),
                    ));
                }
            }
        }
        if let (Some(ip), Some((mac, vtep))) = (q.peer_ip, q.remote) {
            let (fdb, neigh) = match o.peers.get(&vx) {
                Some((f, n)) => (Some(f), Some(n)),
                None => (None, None),
            };
            let nname = format!("neighbour {ip} on {vx}");
            match neigh {
                None => hops.push(hop(nname, Skipped, "no VXLAN device")),
                Some(n)
                    if n.contains(&NeighEntry {
                        ip: std::net::IpAddr::V4(ip),
                        mac,
                    }) =>
                {
                    hops.push(hop(nname, Ok, format!("lladdr {}", format_mac(&mac))))
                }
                Some(n) => match n.iter().find(|e| e.ip == ip) {
                    Some(e) => hops.push(hop(
                        nname,
                        Broken,
                        format!("lladdr {}, want {}", format_mac(&e.mac), format_mac(&mac)),
                    )),
                    None => hops.push(hop(
                        nname,
                        Broken,
                        format!(
                            "no neighbour entry for the peer (want lladdr {})",
                            format_mac(&mac)
                        ),
                    )),
                },
            }
            let fname = format!("fdb {} on {vx}", format_mac(&mac));
            match fdb {
                None => hops.push(hop(fname, Skipped, "no VXLAN device")),
                Some(f) if f.contains(&FdbEntry { mac, dst: vtep }) => {
                    hops.push(hop(fname, Ok, format!("dst {vtep}")))
                }
                Some(f) => {
                    let others: Vec<String> = f
                        .iter()
                        .filter(|e| e.mac == mac)
                        .map(|e| e.dst.to_string())
                        .collect();
                    let flood = f.contains(&FdbEntry {
                        mac: crate::kernel::fdb::ZERO_MAC,
                        dst: vtep,
                    });
                    let mut detail = if others.is_empty() {
                        format!("no FDB entry for the peer's MAC (want dst {vtep}, the peer's node)")
                    } else {
                        format!("dst {}, want {vtep} (the peer's node)", others.join(", "))
                    };
                    if others.is_empty() && flood {
                        detail.push_str(
                            "; frames to it are flooded to every node of the network through the all-zero entry, so they may still arrive",
                        );
                    } else if others.is_empty() {
                        detail.push_str(
                            "; no all-zero (flood) entry to that node either: frames to the peer are lost",
                        );
                    }
                    hops.push(hop(fname, Broken, detail))
                }
            }
        }
    }

    // Published ports of the sandbox (they go to its default-route
    // endpoint): the DNAT rule, and route_localnet for 127.0.0.1:PORT.
    let primary = s.primary().is_some_and(|p| p.id == ep.id);
    if primary && (q.peer_ip.is_none() || q.outside) {
        for m in &s.ports {
            let name = format!("published {}", m.describe());
            let rule = crate::nft::PortRule {
                mapping: *m,
                target: ep.ip,
                target6: ep.ip6.map(|(a, _)| a),
                bridge: net.bridge.clone(),
            };
            // The elements and proxies this mapping alone renders to.
            let bridge = crate::nft::BridgeRules {
                bridge: net.bridge.clone(),
                subnet: net.subnet,
                // IPv6 ports are only rendered for dual-stack bridges (an
                // overlay's bridge has no rules).
                subnet6: net.v6.map(|(s, _)| s).filter(|_| net.driver == Driver::Bridge),
                masquerade: false,
                internal: false,
            };
            let want = crate::nft::render(&[bridge], &[rule]);
            let missing: Vec<String> = want
                .elements()
                .iter()
                .filter(|e| !facts.dnat.as_ref().is_some_and(|d| d.contains(e)))
                .map(|e| format!("no DNAT {} in table {}", e.describe(), crate::nft::TABLE))
                .chain(
                    want.proxies()
                        .iter()
                        .filter(|(k, t)| facts.proxies.get(k) != Some(t))
                        .map(|(k, t)| format!("no proxy [::1]:{}/{} -> [{}]:{}", k.1, k.0, t.ip(), t.port())),
                )
                .collect();
            let words: Vec<String> = want
                .elements()
                .iter()
                .map(|e| format!("DNAT {}", e.describe()))
                .chain(
                    want.proxies()
                        .iter()
                        .map(|(k, t)| format!("proxy [::1]:{}/{} -> [{}]:{}", k.1, k.0, t.ip(), t.port())),
                )
                .collect();
            let h = if facts.dnat.is_none() {
                hop(
                    name,
                    Broken,
                    format!("berth's table {} is missing", crate::nft::TABLE),
                )
            } else if !missing.is_empty() {
                hop(name, Broken, missing.join("; "))
            } else if m.on_ipv4() && !o.localnet.contains(&net.bridge) {
                hop(
                    name,
                    Broken,
                    format!(
                        "route_localnet is off on {}: 127.0.0.1:{} from the node does not reach it",
                        net.bridge, m.host_port
                    ),
                )
            } else {
                let localnet = if m.on_ipv4() {
                    format!(", route_localnet on {}", net.bridge)
                } else {
                    String::new()
                };
                hop(name, Ok, format!("{}{localnet}", words.join(", ")))
            };
            hops.push(h);
        }
    }

    // The firewall, as the planner compares it.
    let fw = format!("nftables table {}", crate::nft::TABLE);
    if !facts.synced {
        hops.push(hop(
            fw,
            Skipped,
            "the agent has no full desired state yet, so it does not judge its rules",
        ));
    } else {
        let apply = plan.actions.iter().find_map(|a| match a {
            Action::ApplyFirewall { rules, localnet } => firewall_words(o, rules, localnet),
            Action::UpdatePorts { add, remove, .. } if !add.is_empty() || !remove.is_empty() => {
                Some(format!(
                    "{} published port(s) missing, {} not berth's",
                    add.len(),
                    remove.len()
                ))
            }
            _ => None,
        });
        match apply {
            Some(why) => hops.push(hop(fw, Broken, why)),
            None => hops.push(hop(fw, Ok, "holds the rules the agent wants")),
        }
    }
    if q.outside {
        hops.push(hop(
            "ip forwarding",
            if facts.forwarding { Ok } else { Broken },
            if facts.forwarding {
                "net.ipv4.ip_forward=1"
            } else {
                "net.ipv4.ip_forward=0: the node does not route the sandbox's traffic"
            },
        ));
        let m = format!("masquerade {}", net.subnet);
        if net.driver != Driver::Bridge {
            hops.push(hop(
                m,
                Skipped,
                "not a bridge network (overlay traffic leaves through berth_gwbridge)",
            ));
        } else if !net.masquerade {
            hops.push(hop(
                m,
                Broken,
                "com.docker.network.bridge.enable_ip_masquerade=false: traffic leaves with the sandbox's own address",
            ));
        } else {
            hops.push(hop(
                m,
                Ok,
                "berth's table masquerades the subnet leaving through another interface",
            ));
        }
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observed::Link;
    use std::collections::BTreeMap;

    fn net() -> NetworkSpec {
        NetworkSpec {
            id: "n1".into(),
            name: "demo".into(),
            driver: Driver::Overlay,
            bridge: "br-n1".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            mtu: 0,
            icc: true,
            masquerade: true,
            internal: false,
            v6: None,
            vni: Some(4096),
        }
    }

    fn world() -> (Desired, Observed, Question, Facts) {
        let ep = EndpointSpec {
            id: "e1e1e1e1e1e1e1".into(),
            network_id: "n1".into(),
            ifname: "eth0".into(),
            ip: "10.0.0.2".parse().unwrap(),
            prefix: 24,
            mac: [2, 0x42, 10, 0, 0, 2],
            default_route: false,
            aliases: vec![],
            ip6: None,
        };
        let s = SandboxSpec {
            id: "s1".into(),
            name: "test1".into(),
            mode: crate::model::SandboxMode::Namespace,
            netns: Some("ns1".into()),
            endpoints: vec![ep.clone()],
            command: vec![],
            ports: vec![],
            links: vec![],
            generation: 1,
            external: None,
        };
        let mut d = Desired::default();
        d.networks.insert("n1".into(), net());
        d.sandboxes.insert("s1".into(), s);
        let mut o = Observed::default();
        let up = |index, master| Link {
            index,
            up: true,
            mtu: 1450,
            master,
            ..Default::default()
        };
        o.links.insert("br-n1".into(), up(10, None));
        o.links.insert(ep.host_ifname(), up(11, Some(10)));
        let mut vx = up(12, Some(10));
        vx.vxlan = Some(crate::kernel::link::VxlanParams {
            vni: Some(4096),
            local: Some("192.168.205.10".parse().unwrap()),
            port: Some(4789),
            learning: Some(false),
        });
        o.links.insert("vx-4096".into(), vx);
        let mut inside = up(2, None);
        inside.mac = Some(ep.mac);
        inside.addrs = vec![(ep.ip, 24)];
        o.namespaces.insert(
            "ns1".into(),
            Namespace {
                inode: 7,
                links: BTreeMap::from([("eth0".to_string(), inside)]),
                inspected: true,
                ..Default::default()
            },
        );
        let peer_mac = [2, 0x42, 10, 0, 0, 3];
        let vtep: Ipv4Addr = "192.168.205.11".parse().unwrap();
        o.peers.insert(
            "vx-4096".into(),
            (
                [FdbEntry {
                    mac: peer_mac,
                    dst: vtep,
                }]
                .into(),
                [NeighEntry {
                    ip: "10.0.0.3".parse().unwrap(),
                    mac: peer_mac,
                }]
                .into(),
            ),
        );
        o.firewall = Some(Some(Default::default()));
        let q = Question {
            sandbox_id: "s1".into(),
            network_id: "n1".into(),
            peer_ip: Some("10.0.0.3".parse().unwrap()),
            remote: Some((peer_mac, vtep)),
            outside: false,
        };
        let f = Facts {
            underlay: "192.168.205.10".parse().unwrap(),
            underlay_mtu: 1500,
            forwarding: true,
            synced: true,
            dnat: Some(BTreeSet::new()),
            proxies: Default::default(),
        };
        (d, o, q, f)
    }

    fn broken(h: &[Hop]) -> Vec<&str> {
        h.iter()
            .filter(|h| h.state == State::Broken)
            .map(|h| h.name.as_str())
            .collect()
    }

    #[test]
    fn a_healthy_overlay_endpoint_is_all_ok() {
        let (d, o, q, f) = world();
        let hops = path(&d, &o, &Plan::default(), &f, &q);
        assert!(broken(&hops).is_empty(), "{hops:#?}");
        assert!(hops.iter().any(|h| h.name == "fdb 02:42:0a:00:00:03 on vx-4096"));
    }

    #[test]
    fn each_break_names_its_hop() {
        let (d, o, q, f) = world();
        let mut o1 = o.clone();
        o1.peers.get_mut("vx-4096").unwrap().0.clear();
        assert_eq!(
            broken(&path(&d, &o1, &Plan::default(), &f, &q)),
            ["fdb 02:42:0a:00:00:03 on vx-4096"]
        );
        let mut o2 = o.clone();
        o2.peers.get_mut("vx-4096").unwrap().1.clear();
        assert_eq!(
            broken(&path(&d, &o2, &Plan::default(), &f, &q)),
            ["neighbour 10.0.0.3 on vx-4096"]
        );
        let mut o3 = o.clone();
        o3.links.get_mut("bve1e1e1e1e1e1").unwrap().master = None;
        let h = path(&d, &o3, &Plan::default(), &f, &q);
        assert_eq!(broken(&h), ["bve1e1e1e1e1e1 on bridge br-n1"]);
        assert!(h.iter().any(|h| h.detail.contains("nomaster")));
        let mut o4 = o.clone();
        o4.namespaces
            .get_mut("ns1")
            .unwrap()
            .links
            .get_mut("eth0")
            .unwrap()
            .addrs
            .clear();
        assert_eq!(
            broken(&path(&d, &o4, &Plan::default(), &f, &q)),
            ["address 10.0.0.2/24 on eth0", "route to 10.0.0.3"]
        );
        let mut o5 = o.clone();
        o5.links.get_mut("bve1e1e1e1e1e1").unwrap().up = false;
        assert_eq!(
            broken(&path(&d, &o5, &Plan::default(), &f, &q)),
            ["veth bve1e1e1e1e1e1"]
        );
        let mut o6 = o;
        o6.namespaces.clear();
        assert_eq!(
            broken(&path(&d, &o6, &Plan::default(), &f, &q)),
            ["namespace ns1"]
        );
    }

    #[test]
    fn an_unknown_sandbox_is_one_broken_hop() {
        let (d, o, mut q, f) = world();
        q.sandbox_id = "nope".into();
        let h = path(&d, &o, &Plan::default(), &f, &q);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].state, State::Broken);
    }

    #[test]
    fn differences_say_what_is_missing() {
        let (d, mut o, _, _) = world();
        let (fdb, neigh) = o.peers["vx-4096"].clone();
        o.peers.get_mut("vx-4096").unwrap().0.clear();
        let plan = Plan {
            actions: vec![Action::SyncPeers {
                network_id: "n1".into(),
                vxlan: "vx-4096".into(),
                fdb,
                neigh,
                bridged: Default::default(),
            }],
            ..Default::default()
        };
        let diff = differences(&d, &o, &plan);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].object, "peers vx-4096");
        assert!(
            diff[0]
                .change
                .contains("missing fdb 02:42:0a:00:00:03 dst 192.168.205.11"),
            "{diff:?}"
        );
    }
}
