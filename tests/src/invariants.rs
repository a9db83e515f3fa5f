//! The invariants of a converged cluster, shared by the fault matrix
//! (`tests/tests/faults.rs`) and the soak (`tests/tests/soak.rs`): the
//! records under berth's prefix parsed by kind ([`state`]), and one checker
//! ([`consistent`]) of every invariant between records, keys and kernels.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::cluster::{Cluster, in_ns_ok};

/// The records under berth's prefix, by kind, parsed.
pub struct State {
    pub sandboxes: BTreeMap<String, Value>,
    pub endpoints: Vec<Value>,
    pub networks: BTreeMap<String, Value>,
    /// (network id, pool, ip) → owner endpoint id; the pool is the node for
    /// local networks (each node has its own addresses), `_cluster` for overlays.
    pub ipam: BTreeMap<(String, String, String), String>,
    /// key → owner sandbox id
    pub ports: BTreeMap<String, String>,
    pub names: BTreeMap<String, String>,
    pub vnis: BTreeMap<String, String>,
    /// network name → network id (`names/networks/`)
    pub network_names: BTreeMap<String, String>,
    /// bridge device → network id (`names/bridges/`)
    pub bridge_names: BTreeMap<String, String>,
    /// (scope, subnet as `a.b.c.d/len`, network id), from `subnets/`
    pub subnets: BTreeSet<(String, String, String)>,
    /// node name → its record
    pub nodes: BTreeMap<String, Value>,
    /// (node, sandbox id) → the key's value (the sandbox id), from the
    /// node index `node-sandboxes/<node>/<id>`
    pub node_index: BTreeMap<(String, String), String>,
}

pub fn state(c: &Cluster) -> State {
    let mut s = State {
        sandboxes: BTreeMap::new(),
        endpoints: Vec::new(),
        networks: BTreeMap::new(),
        ipam: BTreeMap::new(),
        ports: BTreeMap::new(),
        names: BTreeMap::new(),
        vnis: BTreeMap::new(),
        network_names: BTreeMap::new(),
        bridge_names: BTreeMap::new(),
        subnets: BTreeSet::new(),
        nodes: BTreeMap::new(),
        node_index: BTreeMap::new(),
    };
    for (k, v) in c.etcd_dump() {
        let parts: Vec<&str> = k.trim_start_matches("/berth/v1/").split('/').collect();
        let json = || serde_json::from_str::<Value>(&v).unwrap_or(Value::Null);
        match parts.as_slice() {
            ["sandboxes", id] => {
                s.sandboxes.insert(id.to_string(), json());
            }
            ["endpoints", _, _] => s.endpoints.push(json()),
            ["networks", id] => {
                s.networks.insert(id.to_string(), json());
            }
            ["ipam", net, pool, ip] => {
                s.ipam
                    .insert((net.to_string(), pool.to_string(), ip.to_string()), v.clone());
            }
            ["ports", ..] => {
                s.ports.insert(k.clone(), v.clone());
            }
            ["names", "sandboxes", name] => {
                s.names.insert(name.to_string(), v.clone());
            }
            ["vni", vni] => {
                s.vnis.insert(vni.to_string(), v.clone());
            }
            ["names", "networks", name] => {
                s.network_names.insert(name.to_string(), v.clone());
            }
            ["names", "bridges", dev] => {
                s.bridge_names.insert(dev.to_string(), v.clone());
            }
            ["subnets", scope, cidr, id] => {
                s.subnets
                    .insert((scope.to_string(), cidr.replacen('-', "/", 1), id.to_string()));
            }
            ["nodes", name] => {
                s.nodes.insert(name.to_string(), json());
            }
            ["node-sandboxes", node, id] => {
                s.node_index.insert((node.to_string(), id.to_string()), v.clone());
            }
            _ => {}
        }
    }
    s
}

/// Field `f` of a record as a string (empty when absent).
fn str_of(v: &Value, f: &str) -> String {
    v[f].as_str().unwrap_or_default().to_string()
}

/// Every invariant of a converged cluster; the first one broken, if any.
/// Records and keys ([`records_consistent`]), then every node's kernel
/// ([`kernels_consistent`]).
pub fn consistent(c: &Cluster) -> Result<(), String> {
    let s = state(c);
    records_consistent(&s)?;
    kernels_consistent(c, &s)
}

/// Sandboxes, endpoints and networks against their keys: every IPAM, port,
/// name, node-index, VNI, network-name, bridge-name and subnet key has
/// exactly one owner and every owner its keys; no address is on two endpoints.
fn records_consistent(s: &State) -> Result<(), String> {
    for (id, r) in &s.sandboxes {
        let phase = r["phase"].as_str().unwrap_or("ready");
        if phase != "ready" {
            return Err(format!("sandbox {} is still {phase}", str_of(r, "name")));
        }
        if s.names.get(&str_of(r, "name")) != Some(id) {
            return Err(format!("sandbox {} has no name key", str_of(r, "name")));
        }
        if s.node_index.get(&(str_of(r, "node"), id.clone())) != Some(id) {
            return Err(format!(
                "sandbox {} has no node index key on {}",
                str_of(r, "name"),
                str_of(r, "node")
            ));
        }
    }
    for (node, id) in s.node_index.keys() {
        if !s.sandboxes.get(id).is_some_and(|r| r["node"] == node.as_str()) {
            return Err(format!(
                "node index key {node}/{id} points at no sandbox on {node}"
            ));
        }
    }
    for (name, id) in &s.names {
        if !s.sandboxes.contains_key(id) {
            return Err(format!("name {name} points at no sandbox"));
        }
    }
    let mut endpoint_ids = BTreeSet::new();
    let mut ips: BTreeSet<(String, String, String)> = BTreeSet::new();
    for e in &s.endpoints {
        let (sb, net, id) = (str_of(e, "sandbox_id"), str_of(e, "network_id"), str_of(e, "id"));
        let Some(r) = s.sandboxes.get(&sb) else {
            return Err(format!("endpoint {id} of a sandbox that is gone"));
        };
        if e["removing"].as_bool() == Some(true) {
            return Err(format!("endpoint {id} is still being removed"));
        }
        if !r["networks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == net.as_str()))
        {
            return Err(format!("endpoint {id} on a network its sandbox does not list"));
        }
        if let Some(ip) = e["ip"].as_str() {
            let global = s.networks.get(&net).is_some_and(|n| n["scope"] == "global");
            let pool = if global {
                "_cluster".to_string()
            } else {
                str_of(e, "node")
            };
            let key = (net.clone(), pool, ip.to_string());
            if !ips.insert(key.clone()) {
                return Err(format!("address {ip} is on two endpoints of network {net}"));
            }
            if s.ipam.get(&key) != Some(&id) {
                return Err(format!("endpoint {id} does not own its address {ip}"));
            }
            // A dual-stack network's IPv6 address: same pool, same transaction.
            if let Some(ip6) = e["ip6"].as_str() {
                let key6 = (key.0.clone(), key.1.clone(), ip6.to_string());
                if !ips.insert(key6.clone()) {
                    return Err(format!("address {ip6} is on two endpoints of network {net}"));
                }
                if s.ipam.get(&key6) != Some(&id) {
                    return Err(format!("endpoint {id} does not own its address {ip6}"));
                }
            }
        }
        endpoint_ids.insert(id);
    }
    for (id, r) in &s.sandboxes {
        for net in r["networks"].as_array().into_iter().flatten() {
            if !s
                .endpoints
                .iter()
                .any(|e| e["sandbox_id"] == id.as_str() && e["network_id"] == *net)
            {
                return Err(format!(
                    "sandbox {} lists a network without an endpoint",
                    str_of(r, "name")
                ));
            }
        }
    }
    for ((net, _, ip), owner) in &s.ipam {
        if !endpoint_ids.contains(owner) {
            return Err(format!("address {ip} of network {net} has no owner"));
        }
    }
    for (key, owner) in &s.ports {
        if !s.sandboxes.contains_key(owner) {
            return Err(format!("port {key} has no owner"));
        }
    }
    for (vni, net) in &s.vnis {
        let matches = s
            .networks
            .get(net)
            .is_some_and(|n| n["vni"].as_u64().map(|v| v.to_string()).as_ref() == Some(vni));
        if !matches {
            return Err(format!("vni {vni} has no network"));
        }
    }
    for (id, n) in &s.networks {
        if let Some(vni) = n["vni"].as_u64()
            && s.vnis.get(&vni.to_string()) != Some(id)
        {
            return Err(format!("network {} has no vni key", str_of(n, "name")));
        }
    }
    network_keys_consistent(s)
}

/// Every network has its name, bridge-name and subnet keys, and every such
/// key names a network that has it.
fn network_keys_consistent(s: &State) -> Result<(), String> {
    for (name, id) in &s.network_names {
        if !s.networks.get(id).is_some_and(|n| n["name"] == name.as_str()) {
            return Err(format!("network name {name} points at no network of that name"));
        }
    }
    for (dev, id) in &s.bridge_names {
        if !s.networks.get(id).is_some_and(|n| n["bridge"] == dev.as_str()) {
            return Err(format!("bridge name {dev} points at no network with that bridge"));
        }
    }
    for (scope, cidr, id) in &s.subnets {
        if !s
            .networks
            .get(id)
            .is_some_and(|n| n["subnet"] == cidr.as_str() && n["scope"] == scope.as_str())
        {
            return Err(format!("subnet {cidr} ({scope}) has no network {id}"));
        }
    }
    for (id, n) in &s.networks {
        let name = str_of(n, "name");
        if s.network_names.get(&name) != Some(id) {
            return Err(format!("network {name} has no name key"));
        }
        if let Some(dev) = n["bridge"].as_str()
            && s.bridge_names.get(dev) != Some(id)
        {
            return Err(format!("network {name} has no key for its bridge {dev}"));
        }
        if let Some(cidr) = n["subnet"].as_str() {
            let key = (str_of(n, "scope"), cidr.to_string(), id.clone());
            if !s.subnets.contains(&key) {
                return Err(format!("network {name} has no key for its subnet {cidr}"));
            }
        }
    }
    Ok(())
}

/// Names of the links of `kind` (veth, bridge, vxlan) in namespace `ns`.
fn links(ns: &str, kind: &str) -> BTreeSet<String> {
    in_ns_ok(ns, &["ip", "-o", "link", "show", "type", kind])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// Every node's kernel as the records say: sandbox namespaces, host veths,
/// the bridges and VXLAN devices of the networks with an endpoint on the
/// node (and no others of berth's), and on every VXLAN device exactly the
/// remote endpoints' FDB and neighbour entries plus one all-zero FDB entry
/// per remote node hosting the network.
fn kernels_consistent(c: &Cluster, s: &State) -> Result<(), String> {
    let want_ns: BTreeSet<String> = s
        .sandboxes
        .values()
        .filter_map(|r| r["netns"].as_str().map(|n| c.sandbox_ns(n)))
        .collect();
    let have_ns: BTreeSet<String> = c.sandbox_namespaces().into_iter().collect();
    if want_ns != have_ns {
        return Err(format!("namespaces {have_ns:?}, records say {want_ns:?}"));
    }
    // Inside each sandbox: exactly its endpoints' interfaces (a departed
    // endpoint's, renamed `bgone…` while its deletion runs, is gone too).
    for (id, r) in &s.sandboxes {
        let Some(netns) = r["netns"].as_str().filter(|_| r["external"].is_null()) else {
            continue;
        };
        let want: BTreeSet<String> = s
            .endpoints
            .iter()
            .filter(|e| e["sandbox_id"] == id.as_str())
            .filter_map(|e| e["ifname"].as_str().filter(|i| !i.is_empty()).map(String::from))
            .collect();
        let have = links(&c.sandbox_ns(netns), "veth");
        if want != have {
            return Err(format!(
                "sandbox {}: interfaces {have:?}, records say {want:?}",
                str_of(r, "name")
            ));
        }
    }
    for node in 1..=c.nodes {
        let name = format!("node{node}");
        let want: BTreeSet<String> = s
            .endpoints
            .iter()
            .filter(|e| e["node"] == name.as_str() && e["ifname"].as_str().is_some_and(|i| !i.is_empty()))
            .map(|e| format!("bv{}", &str_of(e, "id")[..12]))
            .collect();
        let have: BTreeSet<String> = links(&c.node(node), "veth")
            .into_iter()
            .filter(|n| n.starts_with("bv"))
            .collect();
        if want != have {
            return Err(format!("{name}: host veths {have:?}, records say {want:?}"));
        }
        devices_consistent(c, s, node)?;
        ports_consistent(c, s, node)?;
    }
    Ok(())
}

/// Node `node`'s published IPv4 ports in berth's DNAT maps, as (host
/// address or "", protocol, host port): exactly those of the sandbox
/// records on the node (an element left for a removed sandbox, or one
/// missing for a recorded port, is an inconsistency).
fn ports_consistent(c: &Cluster, s: &State, node: usize) -> Result<(), String> {
    let name = format!("node{node}");
    let mut want = BTreeSet::new();
    for r in s.sandboxes.values().filter(|r| r["node"] == name.as_str()) {
        for p in r["ports"].as_array().into_iter().flatten() {
            let host = p["host_ip"].as_str().unwrap_or_default();
            if host.contains(':') {
                continue; // IPv6: the ip6 table's
            }
            want.insert((
                host.to_string(),
                str_of(p, "proto"),
                p["host_port"].as_u64().unwrap_or(0),
            ));
        }
    }
    let out = crate::cluster::in_ns(&c.node(node), &["nft", "-j", "list", "table", "ip", "berth"]);
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut have = BTreeSet::new();
    for item in listing["nftables"].as_array().into_iter().flatten() {
        let m = &item["map"];
        if !matches!(m["name"].as_str(), Some("any_dnat_ip" | "addr_dnat_ip")) {
            continue;
        }
        for e in m["elem"].as_array().into_iter().flatten() {
            let key: Vec<&Value> = e[0]["concat"].as_array().into_iter().flatten().collect();
            let (host, rest) = match key.len() {
                3 => (key[0].as_str().unwrap_or_default().to_string(), &key[1..]),
                _ => (String::new(), &key[..]),
            };
            if let [proto, port] = rest {
                let proto = proto.as_str().unwrap_or_default().to_string();
                have.insert((host, proto, port.as_u64().unwrap_or(0)));
            }
        }
    }
    if want != have {
        return Err(format!(
            "{name}: published ports in nftables {have:?}, records say {want:?}"
        ));
    }
    Ok(())
}

/// Node `node`'s bridges, VXLAN devices and overlay peer entries.
fn devices_consistent(c: &Cluster, s: &State, node: usize) -> Result<(), String> {
    let name = format!("node{node}");
    let ns = c.node(node);
    let here = |e: &&Value| e["ifname"].as_str().is_some_and(|i| !i.is_empty());
    let local: BTreeSet<&str> = s
        .endpoints
        .iter()
        .filter(here)
        .filter(|e| e["node"] == name.as_str())
        .filter_map(|e| e["network_id"].as_str())
        .collect();
    let recorded: BTreeSet<&str> = s.networks.values().filter_map(|n| n["bridge"].as_str()).collect();
    let ours = |d: &String| recorded.contains(d.as_str()) || d.starts_with("br-") || d.starts_with("ov-");
    let mut want_bridges = BTreeSet::new();
    let mut want_vx = BTreeSet::new();
    for id in &local {
        let Some(n) = s.networks.get(*id) else {
            continue; // an endpoint of a missing network: reported by the records check
        };
        if let Some(dev) = n["bridge"].as_str() {
            want_bridges.insert(dev.to_string());
        }
        if let Some(vni) = n["vni"].as_u64() {
            want_vx.insert(format!("vx-{vni}"));
        }
    }
    let have_bridges: BTreeSet<String> = links(&ns, "bridge").into_iter().filter(ours).collect();
    if want_bridges != have_bridges {
        return Err(format!(
            "{name}: bridges {have_bridges:?}, records say {want_bridges:?}"
        ));
    }
    let have_vx: BTreeSet<String> = links(&ns, "vxlan")
        .into_iter()
        .filter(|d| d.starts_with("vx-"))
        .collect();
    if want_vx != have_vx {
        return Err(format!(
            "{name}: VXLAN devices {have_vx:?}, records say {want_vx:?}"
        ));
    }
    for id in &local {
        let Some(vni) = s.networks.get(*id).and_then(|n| n["vni"].as_u64()) else {
            continue;
        };
        let dev = format!("vx-{vni}");
        let mut want_fdb = BTreeSet::new();
        let mut want_neigh = BTreeSet::new();
        for e in s.endpoints.iter().filter(here) {
            if e["network_id"] != *id || e["node"] == name.as_str() {
                continue;
            }
            let vtep = s.nodes.get(&str_of(e, "node")).map(|n| str_of(n, "address"));
            let Some(vtep) = vtep else {
                return Err(format!("endpoint {} is on an unknown node", str_of(e, "id")));
            };
            want_fdb.insert((str_of(e, "mac"), vtep.clone()));
            want_fdb.insert(("00:00:00:00:00:00".to_string(), vtep));
            if let Some(ip) = e["ip"].as_str() {
                want_neigh.insert((ip.to_string(), str_of(e, "mac")));
            }
            // A dual-stack overlay's endpoint: its IPv6 entry, same MAC.
            if let Some(ip6) = e["ip6"].as_str() {
                want_neigh.insert((ip6.to_string(), str_of(e, "mac")));
            }
        }
        let fdb = in_ns_ok(&ns, &["bridge", "fdb", "show", "dev", &dev]);
        let have_fdb: BTreeSet<(String, String)> = fdb
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let at = w.iter().position(|x| *x == "dst")?;
                Some((w[0].to_string(), w.get(at + 1)?.to_string()))
            })
            .collect();
        if want_fdb != have_fdb {
            return Err(format!(
                "{name}: FDB of {dev} {have_fdb:?}, records say {want_fdb:?}"
            ));
        }
        // The bridge's entries on the VXLAN port: one static entry per remote
        // endpoint, nothing learned (the port's own local entry aside).
        let want_bridged: BTreeSet<String> = want_fdb
            .iter()
            .map(|(mac, _)| mac.clone())
            .filter(|m| m != "00:00:00:00:00:00")
            .collect();
        let have_bridged: BTreeSet<String> = fdb
            .lines()
            .filter(|l| l.contains(" master ") && !l.contains(" permanent"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        if want_bridged != have_bridged {
            return Err(format!(
                "{name}: bridge entries on {dev} {have_bridged:?}, records say {want_bridged:?}"
            ));
        }
        let neigh = in_ns_ok(&ns, &["ip", "neigh", "show", "dev", &dev]);
        let have_neigh: BTreeSet<(String, String)> = neigh
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let at = w.iter().position(|x| *x == "lladdr")?;
                Some((w[0].to_string(), w.get(at + 1)?.to_string()))
            })
            .collect();
        if want_neigh != have_neigh {
            return Err(format!(
                "{name}: neighbours of {dev} {have_neigh:?}, records say {want_neigh:?}"
            ));
        }
    }
    Ok(())
}
