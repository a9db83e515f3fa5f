//! Sandboxes: create (name, record, endpoint and address in one etcd
//! transaction, then the owning agent), connect, disconnect, remove, exec,
//! and the desired state of a node. A failed agent call rolls back what the
//! request recorded and answers UNAVAILABLE.
mod attach;
mod limits;
mod page;
mod reserved;
mod state;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use berth_core::model::Driver;
use berth_core::names::validate_name;
use berth_core::net::{format_mac, mac_from_ip, parse_ip};
use berth_core::ports::PortMapping;
use berth_proto::v1 as pb;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::agents::{Agents, agent_error};
use crate::error::{ApiError, Result};
use crate::grpc::convert;
use crate::ipam::{self, Allocated};
use crate::networks::Networks;
use crate::nodes::Nodes;
use crate::overlay::Overlay;
use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord, SandboxMode, SandboxRecord};
use crate::store::{Store, new_id, now_rfc3339, to_json};

pub use self::reserved::{DEFAULT_RESERVED_PORTS, ReservedPorts};

/// A validated request to create a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub name: String,
    pub node: Option<String>,
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    pub ports: Vec<PortMapping>,
    pub links: Vec<(String, String)>,
}

impl SandboxSpec {
    pub fn validate(r: &pb::CreateSandboxRequest) -> Result<Self> {
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
        for a in &r.aliases {
            validate_name("alias", a)?;
        }
        let mut links = Vec::new();
        for l in &r.links {
            validate_name("link", &l.name)?;
            if !l.alias.is_empty() {
                validate_name("link alias", &l.alias)?;
            }
            links.push((l.name.clone(), l.alias.clone()));
        }
        let ports = r
            .ports
            .iter()
            .map(|p| PortMapping::validate(&p.host_ip, p.host_port, p.container_port, &p.protocol))
            .collect::<Result<Vec<_>, _>>()?;
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
            aliases: r.aliases.clone(),
            command: r.command.clone(),
            ports,
            links,
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
    pub fn to_proto(&self) -> pb::Sandbox {
        pb::Sandbox {
            generation: self.generation,
            ..convert::sandbox(&self.record, &self.endpoints)
        }
    }

    fn networks(&self) -> Vec<pb::Network> {
        self.endpoints.iter().map(|(_, n)| convert::network(n)).collect()
    }

    fn network_refs(&self) -> Vec<&NetworkRecord> {
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

/// Compares that hold while nothing else publishes `p` on `node`.
fn port_free(keys: &crate::store::Keys, node: &str, p: &PortMapping) -> Vec<Compare> {
    match p.host_ip {
        // All addresses: no binding of that port at all.
        None => vec![Compare::create_revision(keys.port_range(node, p), CompareOp::Equal, 0).with_prefix()],
        // One address: neither the same address nor all addresses.
        Some(_) => vec![
            Compare::create_revision(keys.port(node, p), CompareOp::Equal, 0),
            Compare::create_revision(
                keys.port(node, &PortMapping { host_ip: None, ..*p }),
                CompareOp::Equal,
                0,
            ),
        ],
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
}

impl Sandboxes {
    pub fn new(store: Store, networks: Networks, nodes: Nodes, agents: Agents) -> Self {
        let overlay = Overlay::new(store.clone(), nodes.clone(), agents.clone());
        Self {
            store,
            networks,
            nodes,
            agents,
            overlay,
            reserved: ReservedPorts::default(),
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
        let mut load: HashMap<String, usize> = HashMap::new();
        for s in self
            .store
            .list_json::<SandboxRecord>(&self.store.keys.sandboxes())
            .await?
        {
            *load.entry(s.node).or_default() += 1;
        }
        Ok(ready
            .into_iter()
            .min_by_key(|n| (load.get(&n.name).copied().unwrap_or(0), n.name.clone()))
            .expect("non-empty"))
    }

    /// Creates a sandbox and has its node realise it.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxView> {
        // Independent reads, in parallel; network errors are reported first.
        let (network, node) = tokio::join!(
            self.networks.find(&spec.network),
            self.place(spec.node.as_deref())
        );
        let network = network?;
        let mode = mode_of(network.driver);
        if spec.ip.is_some() && !network.driver.has_ipam() {
            return Err(
                berth_core::Invalid::new("ip", format!("network {} has no addresses", network.name)).into(),
            );
        }
        if !spec.aliases.is_empty() && !network.driver.has_ipam() {
            return Err(berth_core::Invalid::new(
                "alias",
                format!(
                    "network-scoped aliases need a bridge or overlay network, not {}",
                    network.name
                ),
            )
            .into());
        }
        if !spec.ports.is_empty() && mode != SandboxMode::Namespace {
            return Err(berth_core::Invalid::new(
                "publish",
                format!("ports cannot be published on the {} network", network.name),
            )
            .into());
        }
        if !spec.links.is_empty() && network.name != berth_core::model::DEFAULT_BRIDGE.0 {
            return Err(berth_core::Invalid::new(
                "link",
                "--link works on the default bridge network only; use a user-defined network and names",
            )
            .into());
        }
        let node = node?;
        self.check_links(&spec.links, &node.name).await?;
        self.reserved.check(&node, &spec.ports)?;
        self.check_ports(&spec.ports, &node.name).await?;
        // Overlay sandboxes also get eth1 on the node's gateway bridge for
        // outbound traffic (and their default route through it), as Docker's
        // docker_gwbridge. Its address is taken first and released again if
        // the rest of the create fails.
        let gw = match network.driver {
            Driver::Overlay => Some(self.gw_endpoint(&node.name, &spec.name).await?),
            _ => None,
        };
        let res = self.create_with(spec, network, node, mode, gw.clone()).await;
        if res.is_err()
            && let Some((ep, net)) = &gw
            && let Some(ip) = ep.ip
        {
            let release = ipam::release_op(&self.store, &net.id, ipam::pool_for(net, &ep.node), ip);
            if let Err(e) = self.store.txn(Txn::new().and_then([release])).await {
                tracing::error!(error = %e, "could not release the gateway bridge address");
            }
        }
        res
    }

    /// Takes an address on the gateway bridge for a new overlay sandbox.
    async fn gw_endpoint(&self, node: &str, sandbox_name: &str) -> Result<(EndpointRecord, NetworkRecord)> {
        let gw = self.networks.ensure_gwbridge().await?;
        let id = new_id();
        let pool = ipam::pool_for(&gw, node).to_string();
        let Allocated::Committed(ip, _) =
            ipam::allocate_ip(&self.store, &gw, &pool, None, &id, |_| (vec![], vec![])).await?
        else {
            return Err(ApiError::Internal(
                "gateway address allocation conflicted with itself".into(),
            ));
        };
        Ok((
            EndpointRecord {
                id,
                network_id: gw.id.clone(),
                sandbox_id: String::new(),
                sandbox_name: sandbox_name.to_string(),
                node: node.to_string(),
                ip: Some(ip),
                mac: format_mac(mac_from_ip(ip)),
                ifname: "eth1".into(),
                aliases: Vec::new(),
            },
            gw,
        ))
    }

    async fn create_with(
        &self,
        spec: SandboxSpec,
        network: NetworkRecord,
        node: NodeRecord,
        mode: SandboxMode,
        gw: Option<(EndpointRecord, NetworkRecord)>,
    ) -> Result<SandboxView> {
        let keys = &self.store.keys;
        let id = new_id();
        let gw = gw.map(|(mut ep, net)| {
            ep.sandbox_id = id.clone();
            (ep, net)
        });
        let record = SandboxRecord {
            id: id.clone(),
            name: spec.name.clone(),
            node: node.name.clone(),
            mode,
            netns: (mode != SandboxMode::Host).then(|| spec.name.clone()),
            networks: std::iter::once(network.id.clone())
                .chain(gw.iter().map(|(_, n)| n.id.clone()))
                .collect(),
            command: spec.command.clone(),
            ports: spec.ports.clone(),
            links: spec.links.clone(),
            created: now_rfc3339(),
        };
        let mut endpoint = EndpointRecord {
            id: new_id(),
            network_id: network.id.clone(),
            sandbox_id: id.clone(),
            sandbox_name: spec.name.clone(),
            node: node.name.clone(),
            ip: None,
            mac: String::new(),
            ifname: if mode == SandboxMode::Namespace {
                "eth0".into()
            } else {
                String::new()
            },
            aliases: spec.aliases.clone(),
        };
        let name_key = keys.sandbox_name(&spec.name);
        let build = |ep: &EndpointRecord| -> Result<(Vec<Compare>, Vec<TxnOp>)> {
            let mut ops = vec![
                TxnOp::put(name_key.clone(), id.clone(), None),
                TxnOp::put(keys.sandbox(&id), to_json(&record)?, None),
                TxnOp::put(keys.endpoint(&network.id, &id), to_json(ep)?, None),
            ];
            if let Some((gw_ep, gw_net)) = &gw {
                ops.push(TxnOp::put(keys.endpoint(&gw_net.id, &id), to_json(gw_ep)?, None));
            }
            let mut compares = vec![Compare::create_revision(name_key.clone(), CompareOp::Equal, 0)];
            for p in &spec.ports {
                compares.extend(port_free(keys, &node.name, p));
                ops.push(TxnOp::put(keys.port(&node.name, p), id.clone(), None));
            }
            Ok((compares, ops))
        };
        let committed = if network.driver.has_ipam() {
            let pool = ipam::pool_for(&network, &node.name).to_string();
            let mut encode_err = None;
            let res = ipam::allocate_ip(&self.store, &network, &pool, spec.ip, &endpoint.id, |ip| {
                let mut ep = endpoint.clone();
                ep.ip = Some(ip);
                ep.mac = format_mac(mac_from_ip(ip));
                match build(&ep) {
                    Ok(parts) => parts,
                    Err(e) => {
                        encode_err = Some(e);
                        (
                            vec![Compare::create_revision(name_key.clone(), CompareOp::Less, 0)],
                            vec![],
                        )
                    }
                }
            })
            .await?;
            if let Some(e) = encode_err {
                return Err(e);
            }
            match res {
                Allocated::Committed(ip, revision) => {
                    endpoint.ip = Some(ip);
                    endpoint.mac = format_mac(mac_from_ip(ip));
                    Some(revision)
                }
                Allocated::CallerConflict => None,
            }
        } else {
            let (compares, ops) = build(&endpoint)?;
            let resp = self.store.txn(Txn::new().when(compares).and_then(ops)).await?;
            resp.succeeded()
                .then(|| resp.header().map_or(0, |h| h.revision()))
        };
        let Some(generation) = committed else {
            // A name or a port was taken between the checks and the commit.
            if self.store.get_string(&name_key).await?.is_some() {
                return Err(ApiError::AlreadyExists(format!(
                    "sandbox name {} is already in use in the cluster",
                    spec.name
                )));
            }
            self.check_ports(&spec.ports, &node.name).await?;
            return Err(ApiError::Aborted(format!(
                "sandbox {} lost a race; try again",
                spec.name
            )));
        };
        let view = SandboxView {
            record,
            endpoints: std::iter::once((endpoint, network)).chain(gw).collect(),
            generation: generation as u64,
        };
        tracing::info!(sandbox = %view.record.name, node = %node.name, "sandbox recorded");
        if let Err(status) = self.ensure_on_agent(&node, &view).await {
            self.forget(&view).await;
            let _ = self.remove_on_agent(&node, &view).await;
            return Err(agent_error(&node.name, status));
        }
        self.overlay.notify(&view.network_refs(), &node.name).await;
        Ok(view)
    }

    /// Refuses ports another sandbox already publishes on the node.
    async fn check_ports(&self, ports: &[PortMapping], node: &str) -> Result<()> {
        let keys = &self.store.keys;
        for p in ports {
            for (key, owner) in self.store.list_strings(&keys.port_range(node, p)).await? {
                let ip = crate::store::keys::last_segment(&key);
                let taken = PortMapping {
                    host_ip: ip.parse().ok().filter(|ip: &Ipv4Addr| !ip.is_unspecified()),
                    ..*p
                };
                if taken.clashes(p) {
                    let who = self
                        .store
                        .get_json::<SandboxRecord>(&keys.sandbox(&owner))
                        .await?
                        .map(|r| r.value.name)
                        .unwrap_or(owner);
                    return Err(ApiError::FailedPrecondition(format!(
                        "port {} is already published on {node} by sandbox {who} ({})",
                        p.describe(),
                        taken.describe()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Link targets must exist on the same node (legacy links are local).
    async fn check_links(&self, links: &[(String, String)], node: &str) -> Result<()> {
        for (name, _) in links {
            let target = match self.find_record(name).await {
                Ok(t) => t.value,
                Err(ApiError::NotFound { .. }) => {
                    return Err(ApiError::not_found("sandbox to link", name));
                }
                Err(e) => return Err(e),
            };
            if target.node != node {
                return Err(ApiError::FailedPrecondition(format!(
                    "cannot link to {name}: it runs on {}, links work within one node",
                    target.node
                )));
            }
        }
        Ok(())
    }

    async fn ensure_on_agent(&self, node: &NodeRecord, view: &SandboxView) -> Result<(), tonic::Status> {
        let peers = self
            .overlay
            .peers_for_node(&node.name, &view.network_refs())
            .await?;
        let mut client = self.agents.client(node).map_err(tonic::Status::from)?;
        client
            .ensure_sandbox(pb::EnsureSandboxRequest {
                sandbox: Some(view.to_proto()),
                networks: view.networks(),
                peers,
            })
            .await?;
        Ok(())
    }

    async fn remove_on_agent(&self, node: &NodeRecord, view: &SandboxView) -> Result<(), tonic::Status> {
        let mut client = self.agents.client(node).map_err(tonic::Status::from)?;
        let record = &view.record;
        client
            .remove_sandbox(pb::RemoveAgentSandboxRequest {
                sandbox_id: record.id.clone(),
                netns: record.netns.clone().unwrap_or_default(),
                generation: view.generation,
            })
            .await?;
        Ok(())
    }

    /// Deletes every key of a sandbox (rollback and removal).
    async fn forget(&self, view: &SandboxView) {
        if let Err(e) = self.delete_records(view).await {
            tracing::error!(sandbox = %view.record.name, error = %e, "could not delete sandbox records");
        }
    }

    async fn delete_records(&self, view: &SandboxView) -> Result<()> {
        let keys = &self.store.keys;
        let r = &view.record;
        let mut ops = vec![TxnOp::delete(keys.sandbox(&r.id), None)];
        for p in &r.ports {
            ops.push(TxnOp::delete(keys.port(&r.node, p), None));
        }
        for (ep, net) in &view.endpoints {
            ops.push(TxnOp::delete(keys.endpoint(&net.id, &r.id), None));
            if let Some(ip) = ep.ip {
                ops.push(ipam::release_op(
                    &self.store,
                    &net.id,
                    ipam::pool_for(net, &r.node),
                    ip,
                ));
            }
        }
        // The name goes only if it still points at this sandbox: a nested
        // transaction keeps it all one round trip.
        let name_key = keys.sandbox_name(&r.name);
        ops.push(TxnOp::txn(
            Txn::new()
                .when([Compare::value(name_key.clone(), CompareOp::Equal, r.id.clone())])
                .and_then([TxnOp::delete(name_key, None)]),
        ));
        self.store.txn(Txn::new().and_then(ops)).await?;
        Ok(())
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

    async fn view(&self, record: SandboxRecord) -> Result<SandboxView> {
        let mut endpoints = Vec::new();
        for net_id in &record.networks {
            let ep = self
                .store
                .get_json::<EndpointRecord>(&self.store.keys.endpoint(net_id, &record.id))
                .await?;
            let net = self
                .store
                .get_json::<NetworkRecord>(&self.store.keys.network(net_id))
                .await?;
            if let (Some(ep), Some(net)) = (ep, net) {
                endpoints.push((ep.value, net.value));
            }
        }
        Ok(SandboxView {
            record,
            endpoints,
            generation: 0,
        })
    }

    /// Every sandbox (optionally only those on `node`), with endpoints.
    pub async fn list(&self, node: Option<&str>) -> Result<Vec<SandboxView>> {
        Ok(self.list_at(node).await?.0)
    }

    /// Like [`Sandboxes::list`], every record read at one etcd revision, which is returned.
    pub async fn list_at(&self, node: Option<&str>) -> Result<(Vec<SandboxView>, i64)> {
        let keys = &self.store.keys;
        let (mut records, revision) = self
            .store
            .list_json_versioned::<SandboxRecord>(&keys.sandboxes(), None)
            .await?;
        records.retain(|r| node.is_none_or(|n| r.value.node == n));
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

    /// Removes a sandbox: the agent tears it down, then its records go. When
    /// the agent cannot be reached the removal fails, unless `force`, in
    /// which case the node cleans up at its next full sync.
    pub async fn remove(&self, name_or_id: &str, force: bool) -> Result<SandboxView> {
        let view = self.find(name_or_id).await?;
        match self.nodes.get(&view.record.node).await {
            Ok(node) => {
                if let Err(status) = self.remove_on_agent(&node.record, &view).await {
                    if !force {
                        return Err(agent_error(&node.record.name, status));
                    }
                    tracing::warn!(sandbox = %view.record.name, node = %node.record.name, "agent unreachable; removing records anyway (--force)");
                }
            }
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.delete_records(&view).await?;
        self.overlay.notify(&view.network_refs(), &view.record.node).await;
        tracing::info!(sandbox = %view.record.name, "sandbox removed");
        Ok(view)
    }

    /// Where and how to run a command for `berth exec`.
    pub async fn exec_target(&self, sandbox: &str) -> Result<(NodeRecord, pb::AgentExecRequest)> {
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
            pb::AgentExecRequest {
                netns: view.record.netns.clone().unwrap_or_default(),
                command: Vec::new(),
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
        let ok = pb::CreateSandboxRequest {
            name: "test1".into(),
            ..Default::default()
        };
        let spec = SandboxSpec::validate(&ok).unwrap();
        assert_eq!(spec.network, "bridge");
        let bad = |f: fn(&mut pb::CreateSandboxRequest)| {
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
