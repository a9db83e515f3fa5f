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
            _ => {}
        }
    }
    s
}

/// Every invariant of a converged cluster; the first one broken, if any.
pub fn consistent(c: &Cluster) -> Result<(), String> {
    let s = state(c);
    let str_of = |v: &Value, f: &str| v[f].as_str().unwrap_or_default().to_string();
    for (id, r) in &s.sandboxes {
        let phase = r["phase"].as_str().unwrap_or("ready");
        if phase != "ready" {
            return Err(format!("sandbox {} is still {phase}", str_of(r, "name")));
        }
        if s.names.get(&str_of(r, "name")) != Some(id) {
            return Err(format!("sandbox {} has no name key", str_of(r, "name")));
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
    // The kernels: namespaces and host veths exactly as recorded.
    let want_ns: BTreeSet<String> = s
        .sandboxes
        .values()
        .filter_map(|r| r["netns"].as_str().map(|n| c.sandbox_ns(n)))
        .collect();
    let have_ns: BTreeSet<String> = c.sandbox_namespaces().into_iter().collect();
    if want_ns != have_ns {
        return Err(format!("namespaces {have_ns:?}, records say {want_ns:?}"));
    }
    for node in 1..=c.nodes {
        let name = format!("node{node}");
        let want: BTreeSet<String> = s
            .endpoints
            .iter()
            .filter(|e| e["node"] == name.as_str() && e["ifname"].as_str().is_some_and(|i| !i.is_empty()))
            .map(|e| format!("bv{}", &str_of(e, "id")[..12]))
            .collect();
        let links = in_ns_ok(&c.node(node), &["ip", "-o", "link", "show", "type", "veth"]);
        let have: BTreeSet<String> = links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .filter(|n| n.starts_with("bv"))
            .collect();
        if want != have {
            return Err(format!("{name}: host veths {have:?}, records say {want:?}"));
        }
    }
    Ok(())
}
