//! Sandboxes: create (name, record, endpoint and address in one etcd
//! transaction, then the owning agent), connect, disconnect, remove, exec,
//! and the desired state of a node. A failed agent call rolls back what the
//! request recorded and answers UNAVAILABLE.
mod attach;
mod create;
mod hostports;
mod lifecycle;
mod limits;
pub mod local;
mod page;
mod remove;
mod reserved;
mod state;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_core::model::Driver;
use berth_core::names::validate_name;
use berth_core::net::parse_ip;
use berth_core::ports::PortMapping;

use crate::agents::{Agents, agent_error};
use crate::error::{ApiError, Result};
use crate::networks::Networks;
use crate::nodes::Nodes;
use crate::overlay::Overlay;
use crate::store::records::{
    EndpointRecord, ExternalRef, NetworkRecord, NodeRecord, SandboxMode, SandboxOrigin, SandboxRecord,
};
use crate::store::{Guard, Store};

pub use self::hostports::{DEFAULT_EPHEMERAL_PORTS, EphemeralPorts};
pub use self::reserved::{DEFAULT_RESERVED_PORTS, ReservedPorts};
pub use self::state::NodeState;

/// A request to create a sandbox as it arrived, not validated yet (the
/// gRPC edge builds it from the proto request).
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    pub name: String,
    /// Empty: placed by the API server.
    pub node: String,
    /// Empty: the default bridge.
    pub network: String,
    /// Empty: the next free address.
    pub ip: String,
    /// Empty: the next free IPv6 address on a dual-stack network.
    pub ip6: String,
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    pub ports: Vec<PortRequest>,
    /// (sandbox name, alias); the alias may be empty.
    pub links: Vec<(String, String)>,
}

/// One `--publish` of a [`SandboxRequest`], not validated yet.
#[derive(Debug, Clone, Default)]
pub struct PortRequest {
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: String,
}

/// Where and how the owning agent runs a command in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// Empty: the node's own namespace (host mode).
    pub netns: String,
    /// Whose `/etc/netns/<name>/` files the command sees.
    pub sandbox_name: String,
}

/// A validated request to create a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub name: String,
    pub node: Option<String>,
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<std::net::Ipv6Addr>,
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    pub ports: Vec<PortMapping>,
    /// Mappings whose host port berth chooses (host port 0 in the request):
    /// from `--ephemeral-ports`, at create, guarded like `ports`.
    pub auto_ports: Vec<PortMapping>,
    pub links: Vec<(String, String)>,
    /// Set for an attachment of a runtime's namespace (AttachLocal).
    pub external: Option<(SandboxOrigin, ExternalRef)>,
}

impl SandboxSpec {
    pub fn validate(r: &SandboxRequest) -> Result<Self> {
        limits::check_create(r)?;
        validate_name("name", &r.name)?;
        let node = match r.node.as_str() {
            "" => None,
            n => {
                validate_name("node", n)?;
                Some(n.to_string())
            }
        };
        let ip = match r.ip.as_str() {
            "" => None,
            s => Some(parse_ip("ip", s)?),
        };
        let ip6 = match r.ip6.as_str() {
            "" => None,
            s => Some(berth_core::net6::parse_ip6("ip6", s)?),
        };
        for a in &r.aliases {
            validate_name("alias", a)?;
        }
        let mut links = Vec::new();
        for (name, alias) in &r.links {
            validate_name("link", name)?;
            if !alias.is_empty() {
                validate_name("link alias", alias)?;
            }
            links.push((name.clone(), alias.clone()));
        }
        // Host port 0: berth chooses one at create (`-p PORT`); validated
        // as an explicit mapping otherwise.
        let (mut ports, mut auto_ports) = (Vec::new(), Vec::new());
        for p in &r.ports {
            let host = if p.host_port == 0 { 1 } else { p.host_port };
            let m = PortMapping::validate(&p.host_ip, host, p.container_port, &p.protocol)?;
            if p.host_port == 0 {
                auto_ports.push(PortMapping { host_port: 0, ..m });
            } else {
                ports.push(m);
            }
        }
        berth_core::ports::check_distinct(&ports)?;
        if r.command.first().is_some_and(|c| c.is_empty()) {
            return Err(berth_core::Invalid::new("command", "the program name is empty").into());
        }
        Ok(Self {
            name: r.name.clone(),
            node,
            network: if r.network.is_empty() {
                "bridge".into()
            } else {
                r.network.clone()
            },
            ip,
            ip6,
            aliases: r.aliases.clone(),
            command: r.command.clone(),
            ports,
            auto_ports,
            links,
            external: None,
        })
    }
}

/// A sandbox with its endpoints and their networks, in attach order.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub record: SandboxRecord,
    pub endpoints: Vec<(EndpointRecord, NetworkRecord)>,
    /// The etcd revision of the sandbox record (what agents compare).
    pub generation: u64,
}

impl SandboxView {
    /// The networks of its endpoints, in attach order.
    pub fn network_refs(&self) -> Vec<&NetworkRecord> {
        self.endpoints.iter().map(|(_, n)| n).collect()
    }
}

fn mode_of(driver: Driver) -> SandboxMode {
    match driver {
        Driver::Host => SandboxMode::Host,
        Driver::Null => SandboxMode::None,
        Driver::Bridge | Driver::Overlay => SandboxMode::Namespace,
    }
}

/// Guards that hold while nothing else publishes `p` on `node`.
fn port_free(keys: &crate::store::Keys, node: &str, p: &PortMapping) -> Vec<Guard> {
    let all = keys.port(node, &PortMapping { host_ip: None, ..*p });
    match p.host_ip {
        // All addresses: no binding of that port at all.
        None => vec![Guard::NoneUnder(keys.port_range(node, p))],
        // All IPv6 addresses: no IPv6 binding, nor all addresses.
        Some(IpAddr::V6(a)) if a.is_unspecified() => {
            vec![Guard::NoneUnder(keys.port_range6(node, p)), Guard::Absent(all)]
        }
        // One IPv6 address: neither it, nor all IPv6 addresses, nor all addresses.
        Some(IpAddr::V6(_)) => vec![
            Guard::Absent(keys.port(node, p)),
            Guard::Absent(keys.port(
                node,
                &PortMapping {
                    host_ip: Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                    ..*p
                },
            )),
            Guard::Absent(all),
        ],
        // One IPv4 address: neither the same address nor all addresses.
        Some(IpAddr::V4(_)) => vec![Guard::Absent(keys.port(node, p)), Guard::Absent(all)],
    }
}

fn ifname_free(used: &[&str]) -> String {
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(&n.as_str()))
        .unwrap_or_else(|| "eth0".into())
}

#[derive(Clone)]
pub struct Sandboxes {
    store: Store,
    networks: Networks,
    nodes: Nodes,
    agents: Agents,
    overlay: Overlay,
    reserved: ReservedPorts,
    ephemeral: EphemeralPorts,
}

impl Sandboxes {
    /// The network operations it works with.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    pub fn new(store: Store, networks: Networks, nodes: Nodes, agents: Agents) -> Self {
        let overlay = Overlay::new(store.clone(), agents.clone());
        Self {
            store,
            networks,
            nodes,
            agents,
            overlay,
            reserved: ReservedPorts::default(),
            ephemeral: EphemeralPorts::default(),
        }
    }

    /// The ready node for a new sandbox: the one asked for, or the ready node
    /// with the fewest sandboxes.
    async fn place(&self, wanted: Option<&str>) -> Result<NodeRecord> {
        if let Some(name) = wanted {
            let node = self.nodes.get(name).await?;
            if !node.ready {
                return Err(ApiError::FailedPrecondition(format!("node {name} is not ready")));
            }
            return Ok(node.record);
        }
        let ready: Vec<NodeRecord> = self
            .nodes
            .list()
            .await?
            .into_iter()
            .filter(|n| n.ready)
            .map(|n| n.record)
            .collect();
        if ready.is_empty() {
            return Err(ApiError::FailedPrecondition(
                "no ready node to place the sandbox on".into(),
            ));
        }
        // One count-only read of every ready node's index at one revision:
        // etcd counts the keys in its in-memory index and sends numbers, so
        // placement reads no record, whatever the cluster holds.
        let prefixes: Vec<String> = ready
            .iter()
            .map(|n| self.store.keys.node_sandboxes(&n.name))
            .collect();
        let load = self.store.count_under(&prefixes).await?;
        Ok(ready
            .into_iter()
            .zip(load)
            .min_by_key(|(n, load)| (*load, n.name.clone()))
            .map(|(n, _)| n)
            .expect("non-empty"))
    }

    /// Looks a sandbox up by name, full id or unique id prefix.
    pub async fn find(&self, name_or_id: &str) -> Result<SandboxView> {
        let found = self.find_record(name_or_id).await?;
        let mut view = self.view(found.value).await?;
        view.generation = found.mod_revision as u64;
        Ok(view)
    }

    async fn find_record(&self, name_or_id: &str) -> Result<crate::store::Versioned<SandboxRecord>> {
        if name_or_id.is_empty() {
            return Err(berth_core::Invalid::new("sandbox", "must not be empty").into());
        }
        let keys = &self.store.keys;
        if let Some(id) = self.store.get_string(&keys.sandbox_name(name_or_id)).await?
            && let Some(rec) = self.store.get_json::<SandboxRecord>(&keys.sandbox(&id)).await?
        {
            return Ok(rec);
        }
        if name_or_id.len() >= 4 && name_or_id.chars().all(|c| c.is_ascii_hexdigit()) {
            let ids = self
                .store
                .list_keys(&keys.sandbox(&name_or_id.to_ascii_lowercase()))
                .await?;
            if ids.len() == 1
                && let Some(rec) = self.store.get_json::<SandboxRecord>(&ids[0]).await?
            {
                return Ok(rec);
            }
        }
        Err(ApiError::not_found("sandbox", name_or_id))
    }

    /// The record of network `id`, if it exists.
    pub(crate) async fn network_record(&self, id: &str) -> Result<Option<NetworkRecord>> {
        Ok(self
            .store
            .get_json::<NetworkRecord>(&self.store.keys.network(id))
            .await?
            .map(|v| v.value))
    }

    /// A record with its endpoints and their networks.
    pub(crate) async fn view_of(&self, record: SandboxRecord) -> Result<SandboxView> {
        self.view(record).await
    }

    async fn view(&self, record: SandboxRecord) -> Result<SandboxView> {
        // Every read at once (one round trip, not two per network).
        let keys = &self.store.keys;
        let id = &record.id;
        let reads = record.networks.iter().map(|net_id| async move {
            let (ep_key, net_key) = (keys.endpoint(net_id, id), keys.network(net_id));
            let (ep, net) = tokio::join!(
                self.store.get_json::<EndpointRecord>(&ep_key),
                self.store.get_json::<NetworkRecord>(&net_key)
            );
            Ok::<_, ApiError>((ep?, net?))
        });
        let endpoints = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .filter_map(|pair| match pair {
                (Some(ep), Some(net)) => Some((ep.value, net.value)),
                _ => None,
            })
            .collect();
        Ok(SandboxView {
            record,
            endpoints,
            generation: 0,
        })
    }

    /// Every sandbox (optionally only those on `node`, read through its
    /// index), with endpoints.
    pub async fn list(&self, node: Option<&str>) -> Result<Vec<SandboxView>> {
        match node {
            Some(n) => Ok(self.list_node(n).await?.0),
            None => Ok(self.list_all().await?.0),
        }
    }

    /// Every sandbox of the cluster, every record read at one etcd
    /// revision, which is returned (the repair loop's whole-state pass).
    pub async fn list_all(&self) -> Result<(Vec<SandboxView>, i64)> {
        let keys = &self.store.keys;
        let (records, revision) = self
            .store
            .list_json_versioned::<SandboxRecord>(&keys.sandboxes(), None)
            .await?;
        let networks: HashMap<String, NetworkRecord> = self
            .store
            .list_json_versioned::<NetworkRecord>(&keys.networks(), Some(revision))
            .await?
            .0
            .into_iter()
            .map(|n| (n.value.id.clone(), n.value))
            .collect();
        let mut endpoints: HashMap<(String, String), EndpointRecord> = HashMap::new();
        for ep in self
            .store
            .list_json_versioned::<EndpointRecord>(&keys.endpoints_all(), Some(revision))
            .await?
            .0
            .into_iter()
            .map(|v| v.value)
        {
            endpoints.insert((ep.network_id.clone(), ep.sandbox_id.clone()), ep);
        }
        let mut out: Vec<SandboxView> = records
            .into_iter()
            .map(|versioned| {
                let generation = versioned.mod_revision as u64;
                let record = versioned.value;
                let eps = record
                    .networks
                    .iter()
                    .filter_map(|nid| {
                        let ep = endpoints.get(&(nid.clone(), record.id.clone()))?;
                        Some((ep.clone(), networks.get(nid)?.clone()))
                    })
                    .collect();
                SandboxView {
                    record,
                    endpoints: eps,
                    generation,
                }
            })
            .collect();
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok((out, revision))
    }

    /// Where and how to run a command for `berth exec`.
    pub async fn exec_target(&self, sandbox: &str) -> Result<(NodeRecord, ExecTarget)> {
        let view = self.find(sandbox).await?;
        let node = self.nodes.get(&view.record.node).await?;
        if !node.ready {
            return Err(ApiError::FailedPrecondition(format!(
                "node {} is not ready",
                node.record.name
            )));
        }
        Ok((
            node.record,
            ExecTarget {
                netns: view.record.netns.clone().unwrap_or_default(),
                sandbox_name: view.record.name.clone(),
            },
        ))
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_interface_name() {
        assert_eq!(ifname_free(&[]), "eth0");
        assert_eq!(ifname_free(&["eth0", "eth1"]), "eth2");
        assert_eq!(ifname_free(&["eth1"]), "eth0");
    }

    #[test]
    fn spec_validation() {
        let ok = SandboxRequest {
            name: "test1".into(),
            ..Default::default()
        };
        let spec = SandboxSpec::validate(&ok).unwrap();
        assert_eq!(spec.network, "bridge");
        let bad = |f: fn(&mut SandboxRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            SandboxSpec::validate(&r).unwrap_err()
        };
        assert!(matches!(bad(|r| r.name = "a b".into()), ApiError::Invalid(_)));
        assert!(matches!(bad(|r| r.ip = "1.2.3".into()), ApiError::Invalid(_)));
        assert!(matches!(bad(|r| r.node = "-x".into()), ApiError::Invalid(_)));
        assert!(matches!(
            bad(|r| r.aliases = vec!["".into()]),
            ApiError::Invalid(_)
        ));
        assert!(matches!(
            bad(|r| r.command = vec!["".into()]),
            ApiError::Invalid(_)
        ));
    }
}
