//! The names each sandbox may resolve, for the embedded DNS responder: on
//! user-defined bridge networks and overlays, the names and aliases of every
//! sandbox sharing a network with it (local ones from the desired state,
//! remote ones from the overlay peer sets). The default `bridge` and the
//! gateway bridge have no name resolution, as in Docker. Rebuilt from a full
//! snapshot; a command updates only its sandbox and networks, so its cost
//! does not grow with the node. Lookups only take a read lock.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

use berth_core::model::{DEFAULT_BRIDGE, Driver, GW_BRIDGE};

use crate::dns::Names;
use crate::model::{Desired, NetworkSpec, SandboxSpec};

/// Whether sandboxes on this network resolve each other by name.
pub fn resolves_names(n: &NetworkSpec) -> bool {
    match n.driver {
        Driver::Overlay => true,
        Driver::Bridge => n.name != DEFAULT_BRIDGE.0 && n.name != GW_BRIDGE,
        _ => false,
    }
}

/// Names and addresses (IPv6 on a dual-stack network) of one member of a network.
type Member = (Vec<String>, Ipv4Addr, Option<Ipv6Addr>);

#[derive(Debug, Default)]
struct Index {
    /// Sandbox id → the networks it resolves names on.
    networks_of: HashMap<String, Vec<String>>,
    /// Network id → sandbox id → (lowercase names, address) of that local
    /// member's endpoint.
    local: HashMap<String, HashMap<String, Member>>,
    /// Network id → remote members (from the overlay peer set).
    remote: HashMap<String, Vec<Member>>,
    /// Network id → its name (PTR answers are `SANDBOX.NETWORK.`, as Docker's).
    net_names: HashMap<String, String>,
}

impl Index {
    fn add_sandbox(&mut self, d: &Desired, s: &SandboxSpec) {
        for ep in &s.endpoints {
            let Some(net) = d.networks.get(&ep.network_id) else {
                continue;
            };
            if !resolves_names(net) {
                continue;
            }
            self.networks_of
                .entry(s.id.clone())
                .or_default()
                .push(net.id.clone());
            self.net_names.insert(net.id.clone(), net.name.clone());
            let names = std::iter::once(&s.name)
                .chain(&ep.aliases)
                .map(|n| n.to_ascii_lowercase())
                .collect();
            self.local
                .entry(net.id.clone())
                .or_default()
                .insert(s.id.clone(), (names, ep.ip, ep.ip6.map(|(a, _)| a)));
        }
    }

    fn remove_sandbox(&mut self, id: &str) {
        for net in self.networks_of.remove(id).unwrap_or_default() {
            if let Some(members) = self.local.get_mut(&net) {
                members.remove(id);
                if members.is_empty() {
                    self.local.remove(&net);
                }
            }
        }
    }

    fn set_peers(&mut self, d: &Desired, network_id: &str) {
        self.remote.remove(network_id);
        let Some(set) = d.peers.get(network_id) else {
            return;
        };
        let Some(net) = d.networks.get(network_id).filter(|n| resolves_names(n)) else {
            return;
        };
        self.net_names.insert(net.id.clone(), net.name.clone());
        let members = set
            .peers
            .iter()
            .map(|p| {
                let names = std::iter::once(&p.sandbox_name)
                    .chain(&p.aliases)
                    .map(|n| n.to_ascii_lowercase())
                    .collect();
                (names, p.ip, p.ip6)
            })
            .collect();
        self.remote.insert(network_id.to_string(), members);
    }
}

#[derive(Debug, Default)]
pub struct NameIndex {
    index: RwLock<Index>,
}

impl NameIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes the index from the node's desired state (after a full snapshot).
    pub fn rebuild(&self, d: &Desired) {
        let mut idx = Index::default();
        for s in d.sandboxes.values() {
            idx.add_sandbox(d, s);
        }
        for net_id in d.peers.keys() {
            idx.set_peers(d, net_id);
        }
        *self.write() = idx;
    }

    /// Takes one sandbox as `d` now holds it (or forgets it when `d` does
    /// not): O(its endpoints), whatever the node holds.
    pub fn update_sandbox(&self, d: &Desired, id: &str) {
        let mut idx = self.write();
        idx.remove_sandbox(id);
        if let Some(s) = d.sandboxes.get(id) {
            idx.add_sandbox(d, s);
        }
    }

    /// Forgets one sandbox.
    pub fn remove_sandbox(&self, id: &str) {
        self.write().remove_sandbox(id);
    }

    /// Takes one network's remote members as `d` now holds them.
    pub fn update_peers(&self, d: &Desired, network_id: &str) {
        self.write().set_peers(d, network_id);
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
            let local = idx.local.get(net).into_iter().flat_map(|m| m.values());
            let remote = idx.remote.get(net).into_iter().flatten();
            for (names, ip, _) in local.chain(remote) {
                if names.iter().any(|n| n == name) && !out.contains(ip) {
                    out.push(*ip);
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn reverse(&self, sandbox_id: &str, addr: IpAddr) -> Option<Vec<String>> {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for net in idx.networks_of.get(sandbox_id)? {
            let local = idx.local.get(net).into_iter().flat_map(|m| m.values());
            let remote = idx.remote.get(net).into_iter().flatten();
            for (names, ip, ip6) in local.chain(remote) {
                let hit = match addr {
                    IpAddr::V4(a) => a == *ip,
                    IpAddr::V6(a) => Some(a) == *ip6,
                };
                if let (true, Some(name), Some(net_name)) = (hit, names.first(), idx.net_names.get(net)) {
                    let fqdn = format!("{name}.{}", net_name.to_ascii_lowercase());
                    if !out.contains(&fqdn) {
                        out.push(fqdn);
                    }
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn lookup6(&self, sandbox_id: &str, name: &str) -> Vec<Ipv6Addr> {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for net in idx.networks_of.get(sandbox_id).into_iter().flatten() {
            let local = idx.local.get(net).into_iter().flat_map(|m| m.values());
            let remote = idx.remote.get(net).into_iter().flatten();
            for (names, _, ip6) in local.chain(remote) {
                if let Some(ip6) = ip6
                    && names.iter().any(|n| n == name)
                    && !out.contains(ip6)
                {
                    out.push(*ip6);
                }
            }
        }
        out
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
            internal: false,
            vni: None,
            v6: None,
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
                    ip6: None,
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
                    ip6: None,
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
        // PTR: the sandbox's name and the network's, for members of a shared network only.
        assert_eq!(
            idx.reverse("b", "10.1.0.3".parse().unwrap()),
            Some(vec!["test1.my-bridge".to_string()])
        );
        assert_eq!(idx.reverse("c", "10.1.0.3".parse().unwrap()), None);
        assert!(
            idx.reverse("o", "10.0.0.3".parse().unwrap()).is_some(),
            "remote overlay peer"
        );

        // Updated one sandbox and one network at a time, it answers as rebuilt.
        let inc = NameIndex::default();
        let mut partial = Desired {
            networks: d.networks.clone(),
            ..Default::default()
        };
        for (id, s) in &d.sandboxes {
            partial.sandboxes.insert(id.clone(), s.clone());
            inc.update_sandbox(&partial, id);
        }
        partial.peers = d.peers.clone();
        inc.update_peers(&partial, "ov");
        for (sb, name) in [
            ("b", "test1"),
            ("b", "db"),
            ("a", "test3"),
            ("o", "test2"),
            ("b", "lonely"),
        ] {
            assert_eq!(inc.lookup(sb, name), idx.lookup(sb, name), "{sb} -> {name}");
        }
        // b gets a new alias, a leaves: only what changed is redone.
        let mut b = d.sandboxes["b"].clone();
        b.endpoints[0].aliases = vec!["cache".into()];
        partial.sandboxes.insert("b".into(), b);
        inc.update_sandbox(&partial, "b");
        partial.sandboxes.remove("a");
        inc.remove_sandbox("a");
        assert_eq!(inc.lookup("test3", "cache"), None, "lookups are by sandbox id");
        assert_eq!(inc.lookup("b", "test1"), None, "a is gone");
        assert_eq!(inc.lookup("b", "cache"), Some(vec!["10.1.0.2".parse().unwrap()]));
        partial.peers.clear();
        inc.update_peers(&partial, "ov");
        assert_eq!(inc.lookup("o", "test2"), None, "the remote peer is gone");
    }
}
