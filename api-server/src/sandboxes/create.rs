//! Creating a sandbox: checked against the cluster (network, node, links,
//! ports), recorded `creating` with its name, endpoints, addresses (the
//! overlay's gateway-bridge address too), ports and the node's index key
//! (`node-sandboxes/<node>/<id>`) in one transaction, then
//! realised by the owning agent and marked `ready`. A failed agent call
//! undoes the create through the removal path, so addresses are released
//! only once the agent confirmed the kernel objects are gone.
use std::net::Ipv4Addr;

use berth_core::model::Driver;
use berth_core::net::{format_mac, mac_from_ip};
use berth_core::ports::PortMapping;

use super::{SandboxSpec, SandboxView, Sandboxes, mode_of, port_free};
use crate::agents::agent_error;
use crate::error::{ApiError, Result};
use crate::ipam::{self, Allocated};
use crate::store::records::{
    EndpointRecord, NetworkRecord, NodeRecord, Phase, SandboxMode, SandboxOrigin, SandboxRecord,
};
use crate::store::{Guard, Op, Write, new_id, now_rfc3339};

/// What recording a new sandbox came to.
enum Recorded {
    Done(Box<SandboxView>),
    /// The gateway-bridge address picked was taken meanwhile: pick again.
    GatewayTaken,
}

impl Sandboxes {
    /// Creates a sandbox and has its node realise it. Host ports berth
    /// chooses are proposed, then guarded by the create's transaction like
    /// explicit ones; a proposal another create took meanwhile is made again.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxView> {
        if spec.auto_ports.is_empty() {
            return self.create_with_ports(spec).await;
        }
        let node = self.place(spec.node.as_deref()).await?;
        for _ in 0..ipam::MAX_ATTEMPTS {
            let chosen = self
                .choose_host_ports(&node, &spec.ports, &spec.auto_ports)
                .await?;
            let mut concrete = spec.clone();
            concrete.node = Some(node.name.clone());
            concrete.ports.extend(chosen.iter().copied());
            concrete.auto_ports.clear();
            match self.create_with_ports(concrete).await {
                Err(e @ ApiError::FailedPrecondition(_)) => {
                    if self.check_ports(&chosen, &node.name).await.is_ok() {
                        return Err(e);
                    }
                    crate::metrics::retry("sandbox_host_port");
                }
                other => return other,
            }
        }
        Err(ApiError::Aborted(format!(
            "sandbox {} kept losing the race for a free host port; try again",
            spec.name
        )))
    }

    async fn create_with_ports(&self, spec: SandboxSpec) -> Result<SandboxView> {
        // Independent reads, in parallel; network errors are reported first.
        let (network, node) = tokio::join!(
            self.networks.find(&spec.network),
            self.place(spec.node.as_deref())
        );
        let network = network?;
        let mode = mode_of(network.driver);
        if spec.ip6.is_some() && !network.enable_ipv6 {
            return Err(berth_core::Invalid::new(
                "ip6",
                format!(
                    "network {} does not enable IPv6 (create it with --ipv6)",
                    network.name
                ),
            )
            .into());
        }
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
        if !spec.ports.is_empty() && network.internal {
            return Err(berth_core::Invalid::new(
                "publish",
                format!(
                    "network {} is internal: nothing on it can be reached from outside, so it publishes no ports",
                    network.name
                ),
            )
            .into());
        }
        // A port on an IPv6 address only (`[::]`, `[::1]`, `[fd…]`) goes to
        // the sandbox's IPv6 address, which only a dual-stack bridge gives.
        if let Some(p) = spec.ports.iter().chain(&spec.auto_ports).find(|p| p.needs_ipv6())
            && !(network.enable_ipv6 && network.driver == Driver::Bridge)
        {
            return Err(berth_core::Invalid::new(
                "publish",
                format!(
                    "{} is on an IPv6 address, but network {} gives the sandbox no IPv6 address (publish on IPv6 from a dual-stack bridge network: berth network create --ipv6)",
                    p.describe(),
                    network.name
                ),
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
        // Before anything is written (an overlay's gateway bridge network is
        // created on first use, below): a refused request leaves nothing.
        if let Some(ip) = spec.ip {
            ipam::check_requested(&network, ip)?;
        }
        if let Some(ip6) = spec.ip6 {
            ipam::check_requested6(&network, ip6)?;
        }
        let node = node?;
        self.check_links(&spec.links, &node.name).await?;
        self.reserved.check(&node, &spec.ports)?;
        self.check_ports(&spec.ports, &node.name).await?;
        // Overlay sandboxes also get eth1 on the node's gateway bridge for
        // outbound traffic (and their default route through it), as Docker's
        // docker_gwbridge; its address is taken in the same transaction.
        // An internal overlay has no way out, so no gateway bridge either.
        let gw = match network.driver {
            Driver::Overlay if !network.internal => Some(self.networks.ensure_gwbridge().await?),
            _ => None,
        };
        for attempt in 0..ipam::MAX_ATTEMPTS {
            let gw_ip = match &gw {
                Some(net) => {
                    Some(ipam::pick_free(&self.store, net, ipam::pool_for(net, &node.name), attempt).await?)
                }
                None => None,
            };
            let gw_ep = gw.as_ref().zip(gw_ip);
            match self.record_creating(&spec, &network, &node, mode, gw_ep).await {
                Ok(Recorded::Done(view)) => return self.realise(&node, *view).await,
                Ok(Recorded::GatewayTaken) => crate::metrics::retry("sandbox_gateway"),
                Err(e) => {
                    if let Some((net, ip)) = gw_ep {
                        ipam::unpick(&self.store, &net.id, ipam::pool_for(net, &node.name), ip);
                    }
                    return Err(e);
                }
            }
        }
        Err(ApiError::Aborted(format!(
            "sandbox {} kept losing the race for a gateway-bridge address; try again",
            spec.name
        )))
    }

    /// The agent realises the recorded sandbox; then it is ready, or undone.
    async fn realise(&self, node: &NodeRecord, view: SandboxView) -> Result<SandboxView> {
        tracing::info!(sandbox = %view.record.name, node = %node.name, "sandbox recorded");
        // The overlay peers learn of the new endpoints (recorded above)
        // while the node makes them: neither waits for the other. An undone
        // create tells them again (the removal path does).
        let networks: Vec<NetworkRecord> = view.endpoints.iter().map(|(_, n)| n.clone()).collect();
        let refs: Vec<&NetworkRecord> = networks.iter().collect();
        let (ensured, ()) = tokio::join!(
            self.agent_ensure(node, &view),
            self.overlay.notify(&refs, &node.name)
        );
        if let Err(status) = ensured {
            let err = agent_error(&node.name, status);
            self.undo_create(node, view).await;
            return Err(err);
        }
        // A failed mark is undone by the repair loop, which finds the
        // sandbox `creating` and realises it again.
        self.mark_ready(view).await
    }

    /// Rolls a create back: marked removing, removed by the agent, then the
    /// records go. An agent that cannot be reached leaves it `removing` for
    /// the repair loop (its addresses stay taken until then).
    async fn undo_create(&self, node: &NodeRecord, view: SandboxView) {
        let name = view.record.name.clone();
        match self.mark_removing(view).await {
            Ok(Some(view)) => {
                if let Err(e) = self.finish_removal_on(Some(node), view, false).await {
                    tracing::warn!(sandbox = %name, error = %e, "rollback left for the repair loop");
                }
            }
            Ok(None) => tracing::info!(sandbox = %name, "sandbox changed meanwhile; the repair loop decides"),
            Err(e) => tracing::warn!(sandbox = %name, error = %e, "rollback left for the repair loop"),
        }
    }

    /// Records the sandbox `creating`: name, record, endpoints, addresses and
    /// ports in one transaction.
    async fn record_creating(
        &self,
        spec: &SandboxSpec,
        network: &NetworkRecord,
        node: &NodeRecord,
        mode: SandboxMode,
        gw: Option<(&NetworkRecord, Ipv4Addr)>,
    ) -> Result<Recorded> {
        let keys = &self.store.keys;
        let id = new_id();
        let now = now_rfc3339();
        let gw = gw.map(|(net, ip)| {
            let ep = EndpointRecord {
                id: new_id(),
                network_id: net.id.clone(),
                sandbox_id: id.clone(),
                sandbox_name: spec.name.clone(),
                node: node.name.clone(),
                ip: Some(ip),
                ip6: None,
                mac: format_mac(mac_from_ip(ip)),
                ifname: match &spec.external {
                    Some((_, x)) => super::local::gateway_ifname(&x.ifname),
                    None => "eth1".into(),
                },
                aliases: Vec::new(),
                removing: false,
            };
            (ep, net.clone())
        });
        let record = SandboxRecord {
            id: id.clone(),
            name: spec.name.clone(),
            node: node.name.clone(),
            mode,
            // A runtime's namespace goes by its path; berth's by the sandbox's name.
            netns: match &spec.external {
                Some((_, x)) => (!x.netns_path.is_empty()).then(|| x.netns_path.clone()),
                None => (mode != SandboxMode::Host).then(|| spec.name.clone()),
            },
            networks: std::iter::once(network.id.clone())
                .chain(gw.iter().map(|(_, n)| n.id.clone()))
                .collect(),
            command: spec.command.clone(),
            ports: spec.ports.clone(),
            links: spec.links.clone(),
            created: now.clone(),
            phase: Phase::Creating,
            phase_since: now,
            origin: spec.external.as_ref().map_or(SandboxOrigin::Berth, |(o, _)| *o),
            external: spec.external.as_ref().map(|(_, x)| x.clone()),
        };
        let mut endpoint = EndpointRecord {
            id: new_id(),
            network_id: network.id.clone(),
            sandbox_id: id.clone(),
            sandbox_name: spec.name.clone(),
            node: node.name.clone(),
            ip: None,
            ip6: None,
            mac: String::new(),
            ifname: if let Some((_, x)) = &spec.external {
                x.ifname.clone()
            } else if mode == SandboxMode::Namespace {
                "eth0".into()
            } else {
                String::new()
            },
            aliases: spec.aliases.clone(),
            removing: false,
        };
        let name_key = keys.sandbox_name(&spec.name);
        let gw_key = gw
            .as_ref()
            .and_then(|(ep, net)| Some(keys.ipam(&net.id, ipam::pool_for(net, &node.name), ep.ip?)));
        let build = |ep: &EndpointRecord| -> Result<Write> {
            let mut write = Write::new()
                .when(Guard::Absent(name_key.clone()))
                .then(Op::put(name_key.clone(), id.clone()))
                .then(Op::put_json(keys.sandbox(&id), &record)?)
                .then(Op::put(keys.node_sandbox(&node.name, &id), id.clone()))
                .then(Op::put_json(keys.endpoint(&network.id, &id), ep)?);
            if let (Some((gw_ep, gw_net)), Some(gw_key)) = (&gw, &gw_key) {
                write = write
                    .then(Op::put_json(keys.endpoint(&gw_net.id, &id), gw_ep)?)
                    .then(Op::put(gw_key.clone(), gw_ep.id.clone()))
                    .when(Guard::Absent(gw_key.clone()));
            }
            for p in &spec.ports {
                write.guards.extend(port_free(keys, &node.name, p));
                write = write.then(Op::put(keys.port(&node.name, p), id.clone()));
            }
            Ok(write)
        };
        let committed = if network.driver.has_ipam() {
            let pool = ipam::pool_for(network, &node.name).to_string();
            let res = ipam::allocate_ip(
                &self.store,
                network,
                &pool,
                spec.ip,
                spec.ip6,
                &endpoint.id,
                |ip, ip6| {
                    let mut ep = endpoint.clone();
                    ep.ip = Some(ip);
                    ep.ip6 = ip6;
                    ep.mac = format_mac(mac_from_ip(ip));
                    build(&ep)
                },
            )
            .await?;
            match res {
                Allocated::Committed(ip, ip6, revision) => {
                    endpoint.ip = Some(ip);
                    endpoint.ip6 = ip6;
                    endpoint.mac = format_mac(mac_from_ip(ip));
                    Some(revision)
                }
                Allocated::CallerConflict => None,
            }
        } else {
            self.store.write(build(&endpoint)?).await?.revision()
        };
        let Some(generation) = committed else {
            // A name, a port or the gateway address was taken between the
            // checks and the commit.
            if let Some(owner) = self.store.get_string(&name_key).await? {
                let removing = self
                    .store
                    .get_json::<SandboxRecord>(&keys.sandbox(&owner))
                    .await?
                    .is_some_and(|r| r.value.phase == Phase::Removing);
                return Err(ApiError::AlreadyExists(if removing {
                    format!(
                        "sandbox name {} is taken by a sandbox that is being removed; try again shortly",
                        spec.name
                    )
                } else {
                    format!("sandbox name {} is already in use in the cluster", spec.name)
                }));
            }
            self.check_ports(&spec.ports, &node.name).await?;
            if let Some(k) = &gw_key
                && self.store.get_string(k).await?.is_some()
            {
                return Ok(Recorded::GatewayTaken);
            }
            return Err(ApiError::Aborted(format!(
                "sandbox {} lost a race; try again",
                spec.name
            )));
        };
        Ok(Recorded::Done(Box::new(SandboxView {
            record,
            endpoints: std::iter::once((endpoint, network.clone())).chain(gw).collect(),
            generation: generation as u64,
        })))
    }

    /// Refuses ports another sandbox already publishes on the node.
    pub(super) async fn check_ports(&self, ports: &[PortMapping], node: &str) -> Result<()> {
        let keys = &self.store.keys;
        for p in ports {
            for (key, owner) in self.store.list_strings(&keys.port_range(node, p)).await? {
                let ip = crate::store::keys::last_segment(&key);
                let taken = PortMapping {
                    host_ip: crate::store::keys::port_host_ip(ip),
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
}
