//! The etcd key layout, in one place. Every key lives under the configured
//! prefix (default `/berth`) followed by `/v1/`.
use std::net::{IpAddr, Ipv4Addr};

use berth_core::model::Scope;
use berth_core::ports::PortMapping;
use ipnet::Ipv4Net;

/// Builds keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

/// The IPAM pool name used for cluster-wide (global scope) networks.
pub const CLUSTER_POOL: &str = "_cluster";

impl Keys {
    /// `prefix` such as `/berth`; a trailing `/` is ignored.
    pub fn new(prefix: &str) -> Self {
        Self {
            root: format!("{}/v1/", prefix.trim_end_matches('/')),
        }
    }

    /// Everything berth stores.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn networks(&self) -> String {
        format!("{}networks/", self.root)
    }
    pub fn network(&self, id: &str) -> String {
        format!("{}networks/{id}", self.root)
    }
    pub fn network_name(&self, name: &str) -> String {
        format!("{}names/networks/{name}", self.root)
    }
    pub fn bridge_name(&self, dev: &str) -> String {
        format!("{}names/bridges/{dev}", self.root)
    }
    pub fn sandbox_name(&self, name: &str) -> String {
        format!("{}names/sandboxes/{name}", self.root)
    }
    pub fn sandbox_names(&self) -> String {
        format!("{}names/sandboxes/", self.root)
    }
    /// Every address of every network.
    pub fn ipam_all(&self) -> String {
        format!("{}ipam/", self.root)
    }
    /// Every published port of every node.
    pub fn ports_all(&self) -> String {
        format!("{}ports/", self.root)
    }
    /// `leader/<role>`: held (bound to its lease) by the replica doing `role`.
    pub fn leader(&self, role: &str) -> String {
        format!("{}leader/{role}", self.root)
    }
    pub fn subnets(&self, scope: Scope) -> String {
        format!("{}subnets/{scope}/", self.root)
    }
    /// `172.18.0.0/16` of network `id` is stored as `subnets/<scope>/172.18.0.0-16/<id>`:
    /// global networks may share a subnet (each overlay is its own L2 domain).
    pub fn subnet(&self, scope: Scope, net: Ipv4Net, network_id: &str) -> String {
        format!(
            "{}subnets/{scope}/{}-{}/{network_id}",
            self.root,
            net.network(),
            net.prefix_len()
        )
    }
    /// IPv6 subnets of dual-stack networks: `subnets6/<scope>/fd42:be47:1::-64/<id>`
    /// (guarded by the same per-scope key as the IPv4 ones).
    pub fn subnets6(&self, scope: Scope) -> String {
        format!("{}subnets6/{scope}/", self.root)
    }
    pub fn subnet6(&self, scope: Scope, net: ipnet::Ipv6Net, network_id: &str) -> String {
        format!(
            "{}subnets6/{scope}/{}-{}/{network_id}",
            self.root,
            net.network(),
            net.prefix_len()
        )
    }
    /// Written by every subnet allocation of `scope`; allocations compare its
    /// revision so two overlapping subnets can never both be taken.
    pub fn subnet_guard(&self, scope: Scope) -> String {
        format!("{}guards/subnets/{scope}", self.root)
    }
    pub fn vnis(&self) -> String {
        format!("{}vni/", self.root)
    }
    pub fn vni(&self, vni: u32) -> String {
        format!("{}vni/{vni}", self.root)
    }
    pub fn sandboxes(&self) -> String {
        format!("{}sandboxes/", self.root)
    }
    pub fn sandbox(&self, id: &str) -> String {
        format!("{}sandboxes/{id}", self.root)
    }
    /// Every node's sandbox index (see [`Keys::node_sandbox`]).
    pub fn node_sandboxes_all(&self) -> String {
        format!("{}node-sandboxes/", self.root)
    }
    /// The sandbox index of one node.
    pub fn node_sandboxes(&self, node: &str) -> String {
        format!("{}node-sandboxes/{node}/", self.root)
    }
    /// `node-sandboxes/<node>/<sandbox-id>` → the sandbox id: written and
    /// deleted in the same transaction as the sandbox record, so a node's
    /// desired state and its load are read from its own keys, not from
    /// every sandbox of the cluster. Not under `nodes/`, whose keys are the
    /// node records (listed as a whole).
    pub fn node_sandbox(&self, node: &str, sandbox_id: &str) -> String {
        format!("{}node-sandboxes/{node}/{sandbox_id}", self.root)
    }
    pub fn endpoints_all(&self) -> String {
        format!("{}endpoints/", self.root)
    }
    pub fn endpoints(&self, network_id: &str) -> String {
        format!("{}endpoints/{network_id}/", self.root)
    }
    pub fn endpoint(&self, network_id: &str, sandbox_id: &str) -> String {
        format!("{}endpoints/{network_id}/{sandbox_id}", self.root)
    }
    /// Addresses of one network in one pool: a node name for local-scope
    /// networks, [`CLUSTER_POOL`] for global ones.
    pub fn ipam_pool(&self, network_id: &str, pool: &str) -> String {
        format!("{}ipam/{network_id}/{pool}/", self.root)
    }
    /// An IPv4 or IPv6 address of the pool (both families share it).
    pub fn ipam(&self, network_id: &str, pool: &str, ip: impl std::fmt::Display) -> String {
        format!("{}ipam/{network_id}/{pool}/{ip}", self.root)
    }
    pub fn ipam_network(&self, network_id: &str) -> String {
        format!("{}ipam/{network_id}/", self.root)
    }
    /// Published ports: `ports/<node>/<proto>/<port>/<IPv4 host address
    /// or 0.0.0.0>` (`0.0.0.0`: all addresses, both families), and
    /// `ports/<node>/<proto>/<port>/v6/<IPv6 host address or ::>` (`::`: all
    /// IPv6 addresses), so the IPv6 bindings of a port are one prefix.
    pub fn port(&self, node: &str, p: &PortMapping) -> String {
        let ip = match p.host_ip {
            None => Ipv4Addr::UNSPECIFIED.to_string(),
            Some(IpAddr::V4(a)) => a.to_string(),
            Some(IpAddr::V6(a)) => format!("v6/{a}"),
        };
        format!("{}ports/{node}/{}/{}/{ip}", self.root, p.proto, p.host_port)
    }
    /// `ports/<node>/<proto>/<port>/v6/`: the IPv6 bindings of one port.
    pub fn port_range6(&self, node: &str, p: &PortMapping) -> String {
        format!("{}ports/{node}/{}/{}/v6/", self.root, p.proto, p.host_port)
    }
    /// `ports/<node>/<proto>/`: every published port of one protocol on a node.
    pub fn ports_of(&self, node: &str, proto: berth_core::ports::Proto) -> String {
        format!("{}ports/{node}/{proto}/", self.root)
    }
    /// Every binding of one node, protocol and port.
    pub fn port_range(&self, node: &str, p: &PortMapping) -> String {
        format!("{}ports/{node}/{}/{}/", self.root, p.proto, p.host_port)
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.root)
    }
    /// `events/repair`: overwritten with each repair action (the events
    /// stream reads its history).
    pub fn repair_event(&self) -> String {
        format!("{}events/repair", self.root)
    }
    /// Present while the node's agent keeps its lease alive.
    pub fn alive_all(&self) -> String {
        format!("{}alive/", self.root)
    }
    pub fn alive(&self, name: &str) -> String {
        format!("{}alive/{name}", self.root)
    }
}

/// The last path segment of a key.
pub fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The host address of a published port from the last segment of its key
/// ([`Keys::port`]): `0.0.0.0` is all addresses (`None`), `::` all IPv6
/// addresses.
pub fn port_host_ip(segment: &str) -> Option<IpAddr> {
    match segment.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if a.is_unspecified() => None,
        ip => Some(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/berth/");
        assert_eq!(k.network("abc"), "/berth/v1/networks/abc");
        assert_eq!(
            k.subnet(Scope::Local, "172.18.0.0/16".parse().unwrap(), "n1"),
            "/berth/v1/subnets/local/172.18.0.0-16/n1"
        );
        assert_eq!(
            k.ipam("n", "node1", Ipv4Addr::new(10, 0, 0, 2)),
            "/berth/v1/ipam/n/node1/10.0.0.2"
        );
        assert_eq!(last_segment("/berth/v1/ipam/n/node1/10.0.0.2"), "10.0.0.2");
        assert_eq!(k.node_sandbox("node1", "ab"), "/berth/v1/node-sandboxes/node1/ab");
        assert!(
            k.node_sandbox("node1", "ab")
                .starts_with(&k.node_sandboxes("node1"))
        );
        assert!(!k.node_sandboxes("node1").starts_with(&k.nodes()));
    }
}
