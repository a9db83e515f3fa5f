//! The records berth keeps in etcd, stored as JSON so `etcdctl get` is readable.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::model::{Driver, Scope};
use berth_core::ports::PortMapping;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// `<prefix>/v1/networks/<id>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The Linux bridge realising the network on each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub builtin: bool,
    /// `--internal`: no masquerade, no default route, no published ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// `--ip-range`: automatic addresses come only from this part of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// `--aux-address NAME=IP`: never handed out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// `--ipv6`: dual stack, with `subnet6` and `gateway6` besides the IPv4 ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_ipv6: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
}

/// `<prefix>/v1/nodes/<name>`: kept after the agent's lease lapses, so the
/// node shows as not ready and its addresses stay reserved until `node rm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub address: Ipv4Addr,
    pub agent_url: String,
    #[serde(default)]
    pub mtu: u32,
    pub registered: String,
    /// The etcd lease of the node's current registration: only heartbeats
    /// naming it renew anything.
    #[serde(default)]
    pub lease: i64,
    /// `node rm` has started: its sandboxes' records are being deleted (the
    /// repair loop finishes an interrupted removal); the node cannot register.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
    /// The node's own routes, as its agent reported them at registration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<NodeRoute>,
}

/// A route of a node's own namespace (main table, not the default route,
/// not out of berth's bridges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRoute {
    pub destination: Ipv4Net,
    pub device: String,
}

/// `<prefix>/v1/endpoints/<network-id>/<sandbox-id>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 on a dual-stack network (`ipam/<network>/<pool>/<ipv6>` is taken with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Being disconnected (or its sandbox removed): no longer desired on its
    /// node; the record and address go once the agent confirmed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

pub use berth_core::model::{SandboxMode, SandboxOrigin};

/// The runtime's side of a sandbox attached by a runtime front (CNI, Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRef {
    pub container_id: String,
    /// The runtime's namespace on the node (berth never creates or deletes it).
    pub netns_path: String,
    /// Its inode when attached (0: not known).
    #[serde(default)]
    pub netns_inode: u64,
    /// The interface the runtime asked for.
    pub ifname: String,
}

/// `<prefix>/v1/sandboxes/<id>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub node: String,
    pub mode: SandboxMode,
    /// Network namespace name on the node; `None` in host mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Ids of the networks it is attached to, in attach order (eth0 first).
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Legacy links: (sandbox name, alias); the alias may be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(String, String)>,
    pub created: String,
    /// Where the sandbox is in its life: recorded before the agent is asked,
    /// so an interrupted operation is finished or undone by the repair loop.
    #[serde(default)]
    pub phase: Phase,
    /// When the phase was entered (RFC 3339).
    #[serde(default)]
    pub phase_since: String,
    /// Who asked for it (records without the field: berth).
    #[serde(default, skip_serializing_if = "SandboxOrigin::is_berth")]
    pub origin: SandboxOrigin,
    /// For the runtime fronts: the runtime's container and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRef>,
}

/// A sandbox's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Recorded, addresses taken; the owning agent has not confirmed yet.
    Creating,
    /// The owning agent confirmed it (records written before phases existed are ready).
    #[default]
    Ready,
    /// Being removed: no longer desired on its node; records and addresses
    /// go once the agent confirmed the kernel objects are gone.
    Removing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "creating",
            Phase::Ready => "ready",
            Phase::Removing => "removing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Network records as berth has always written them (the driver and
    /// scope in lowercase) load, and are written back byte for byte.
    #[test]
    fn network_records_keep_their_encoding() {
        let stored = [
            r#"{"id":"aa","name":"demo","driver":"overlay","scope":"global","subnet":"10.0.0.0/24","gateway":"10.0.0.1","options":{},"labels":{},"created":"2025-01-01T10:00:00Z","vni":4096,"bridge":"ov-aa","builtin":false}"#,
            r#"{"id":"bb","name":"bridge","driver":"bridge","scope":"local","subnet":"172.17.0.0/16","gateway":"172.17.0.1","options":{},"labels":{},"created":"2025-01-01T10:00:00Z","bridge":"berth0","builtin":true}"#,
            r#"{"id":"cc","name":"none","driver":"null","scope":"local","options":{},"labels":{},"created":"2025-01-01T10:00:00Z","builtin":true}"#,
        ];
        let drivers = [Driver::Overlay, Driver::Bridge, Driver::Null];
        for (json, driver) in stored.iter().zip(drivers) {
            let n: NetworkRecord = serde_json::from_str(json).expect(json);
            assert_eq!(n.driver, driver);
            assert_eq!(n.scope, driver.scope());
            assert_eq!(&serde_json::to_string(&n).unwrap(), json);
        }
        // The oldest records had no options, labels or builtin flag.
        let n: NetworkRecord =
            serde_json::from_str(r#"{"id":"dd","name":"h","driver":"host","scope":"local","created":""}"#)
                .unwrap();
        assert_eq!((n.driver, n.builtin), (Driver::Host, false));
    }
}
