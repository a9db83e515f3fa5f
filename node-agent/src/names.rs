//! The names each sandbox may resolve, for the embedded DNS responder: on
//! user-defined bridge networks and overlays, the names and aliases of every
//! sandbox sharing a network with it (local ones from the desired state,
//! remote ones from the overlay peer sets). The default `bridge` and the
//! gateway bridge have no name resolution, as in Docker. Rebuilt after every
//! change; lookups only take a read lock.
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use berth_core::model::{DEFAULT_BRIDGE, Driver, GW_BRIDGE};

use crate::dns::Names;
use crate::model::{Desired, NetworkSpec};

/// Whether sandboxes on this network resolve each other by name.
pub fn resolves_names(n: &NetworkSpec) -> bool {
    match n.driver {
        Driver::Overlay => true,
        Driver::Bridge => n.name != DEFAULT_BRIDGE.0 && n.name != GW_BRIDGE,
        _ => false,
    }
}

#[derive(Debug, Default)]
struct Index {
    /// Sandbox id → the networks it resolves names on.
    networks_of: HashMap<String, Vec<String>>,
    /// Network id → (lowercase names, address) of every member.
    members: HashMap<String, Vec<(Vec<String>, Ipv4Addr)>>,
}

#[derive(Debug, Default)]
pub struct NameIndex {
    index: RwLock<Index>,
}

impl NameIndex {
    /// Recomputes the index from the node's desired state.
    pub fn rebuild(&self, d: &Desired) {
        let mut idx = Index::default();
        for s in d.sandboxes.values() {
            for ep in &s.endpoints {
                let Some(net) = d.networks.get(&ep.network_id) else {
                    continue;
                };
                if !resolves_names(net) {
                    continue;
                }
                idx.networks_of
                    .entry(s.id.clone())
                    .or_default()
                    .push(net.id.clone());
                let names = std::iter::once(&s.name)
                    .chain(&ep.aliases)
                    .map(|n| n.to_ascii_lowercase())
                    .collect();
                idx.members
                    .entry(net.id.clone())
                    .or_default()
                    .push((names, ep.ip));
            }
        }
        for (net_id, set) in &d.peers {
            if !d.networks.get(net_id).is_some_and(resolves_names) {
                continue;
            }
            let members = idx.members.entry(net_id.clone()).or_default();
            for p in &set.peers {
                let names = std::iter::once(&p.sandbox_name)
                    .chain(&p.aliases)
                    .map(|n| n.to_ascii_lowercase())
                    .collect();
                members.push((names, p.ip));
            }
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = idx;
    }

    /// Whether the sandbox resolves names on any of its networks.
    pub fn serves(&self, sandbox_id: &str) -> bool {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .networks_of
            .contains_key(sandbox_id)
    }
}

impl Names for NameIndex {
    fn lookup(&self, sandbox_id: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for net in idx.networks_of.get(sandbox_id)? {
            for (names, ip) in idx.members.get(net).into_iter().flatten() {
                if names.iter().any(|n| n == name) && !out.contains(ip) {
                    out.push(*ip);
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointSpec, Peer, PeerSet, SandboxMode, SandboxSpec};

    fn net(id: &str, name: &str, driver: Driver) -> NetworkSpec {
        NetworkSpec {
            id: id.into(),
            name: name.into(),
            driver,
            bridge: format!("br-{id}"),
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            mtu: 0,
            icc: true,
            masquerade: true,
            vni: None,
        }
    }

    fn sandbox(id: &str, name: &str, eps: &[(&str, [u8; 4], &[&str])]) -> SandboxSpec {
        SandboxSpec {
            id: id.into(),
            name: name.into(),
            mode: SandboxMode::Namespace,
            netns: Some(name.into()),
            generation: 1,
            external: None,
            endpoints: eps
                .iter()
                .enumerate()
                .map(|(i, (n, ip, aliases))| EndpointSpec {
                    id: format!("{id}{i}0000000000000"),
                    network_id: n.to_string(),
                    ifname: format!("eth{i}"),
                    ip: Ipv4Addr::from(*ip),
                    prefix: 24,
                    mac: [0; 6],
                    default_route: i == 0,
                    aliases: aliases.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            command: vec![],
            ports: vec![],
            links: vec![],
        }
    }

    #[test]
    fn resolves_only_shared_user_networks() {
        let mut d = Desired::default();
        for n in [
            net("def", "bridge", Driver::Bridge),
            net("mine", "my-bridge", Driver::Bridge),
            net("ov", "demo", Driver::Overlay),
        ] {
            d.networks.insert(n.id.clone(), n);
        }
        d.sandboxes.insert(
            "a".into(),
            sandbox(
                "a",
                "test1",
                &[("def", [172, 17, 0, 2], &[]), ("mine", [10, 1, 0, 3], &["db"])],
            ),
        );
        d.sandboxes
            .insert("b".into(), sandbox("b", "test3", &[("mine", [10, 1, 0, 2], &[])]));
        d.sandboxes.insert(
            "c".into(),
            sandbox("c", "lonely", &[("def", [172, 17, 0, 3], &[])]),
        );
        d.sandboxes
            .insert("o".into(), sandbox("o", "o1", &[("ov", [10, 0, 0, 2], &[])]));
        d.peers.insert(
            "ov".into(),
            PeerSet {
                revision: 1,
                peers: vec![Peer {
                    ip: "10.0.0.3".parse().unwrap(),
                    mac: [0; 6],
                    vtep: "192.168.205.11".parse().unwrap(),
                    sandbox_name: "test2".into(),
                    aliases: vec![],
                }],
                vteps: Default::default(),
            },
        );
        let idx = NameIndex::default();
        idx.rebuild(&d);
        assert_eq!(idx.lookup("b", "test1"), Some(vec!["10.1.0.3".parse().unwrap()]));
        assert_eq!(idx.lookup("b", "db"), Some(vec!["10.1.0.3".parse().unwrap()]));
        assert_eq!(idx.lookup("a", "test3"), Some(vec!["10.1.0.2".parse().unwrap()]));
        assert_eq!(idx.lookup("b", "lonely"), None, "not on a shared network");
        assert!(!idx.serves("c"), "default bridge only: no embedded DNS");
        assert_eq!(idx.lookup("c", "test1"), None);
        assert_eq!(
            idx.lookup("o", "test2"),
            Some(vec!["10.0.0.3".parse().unwrap()]),
            "remote overlay peer"
        );
        assert_eq!(idx.lookup("o", "test1"), None);
    }
}
