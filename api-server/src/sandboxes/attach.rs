//! Connecting a sandbox to one more network and disconnecting it. Connect
//! records the endpoint and its address with the sandbox's new network list
//! in one transaction (the agent converges to it even if the API server
//! dies right after). Disconnect records its intent first: the sandbox no
//! longer lists the network and the endpoint is marked `removing`; the
//! endpoint and its address go only once the agent confirmed. A failed
//! connect is undone the same way.
use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::names::validate_name;
use berth_core::net::{format_mac, mac_from_ip};

use super::{SandboxView, Sandboxes, agent_error, ifname_free};
use crate::error::{ApiError, Result};
use crate::ipam::{self, Allocated};
use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord, Phase, SandboxMode};
use crate::store::{Guard, Op, Write, new_id};

impl Sandboxes {
    /// Attaches a sandbox to one more network (the next free `ethN`).
    pub async fn connect(
        &self,
        network: &str,
        sandbox: &str,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        aliases: Vec<String>,
    ) -> Result<EndpointRecord> {
        super::limits::check_aliases(&aliases)?;
        for a in &aliases {
            validate_name("alias", a)?;
        }
        // Independent reads, in parallel; network errors are reported first.
        let (network, current) = tokio::join!(self.networks.find(network), self.find_record(sandbox));
        let (network, current) = (network?, current?);
        let record = current.value.clone();
        if !network.driver.has_ipam() {
            return Err(ApiError::FailedPrecondition(format!(
                "sandboxes cannot be connected to the {} network",
                network.name
            )));
        }
        if record.mode != SandboxMode::Namespace {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox {} is in {} mode and cannot join other networks",
                record.name,
                record.mode.as_str()
            )));
        }
        if record.phase != Phase::Ready {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox {} is {}; try again when it is ready",
                record.name,
                record.phase.as_str()
            )));
        }
        if record.networks.contains(&network.id) {
            return Err(ApiError::AlreadyExists(format!(
                "sandbox {} is already connected to network {}",
                record.name, network.name
            )));
        }
        super::limits::check_one_more_network(&record.name, record.networks.len())?;
        let (before, node) = tokio::join!(self.view(record.clone()), self.nodes.get(&record.node));
        let (mut before, node) = (before?, node?);
        before.generation = current.mod_revision as u64;
        let used: Vec<&str> = before.endpoints.iter().map(|(e, _)| e.ifname.as_str()).collect();
        if !node.ready {
            return Err(ApiError::FailedPrecondition(format!(
                "node {} is not ready",
                record.node
            )));
        }
        let mut endpoint = EndpointRecord {
            id: new_id(),
            network_id: network.id.clone(),
            sandbox_id: record.id.clone(),
            sandbox_name: record.name.clone(),
            node: record.node.clone(),
            ip: None,
            ip6: None,
            mac: String::new(),
            ifname: ifname_free(&used),
            aliases,
            removing: false,
        };
        let mut updated = record.clone();
        updated.networks.push(network.id.clone());
        let keys = &self.store.keys;
        let sandbox_key = keys.sandbox(&record.id);
        let pool = ipam::pool_for(&network, &record.node).to_string();
        let res = ipam::allocate_ip(&self.store, &network, &pool, ip, ip6, &endpoint.id, |ip, ip6| {
            let mut ep = endpoint.clone();
            ep.ip = Some(ip);
            ep.ip6 = ip6;
            ep.mac = format_mac(mac_from_ip(ip));
            Ok(Write::new()
                .when(Guard::Unchanged(sandbox_key.clone(), current.mod_revision))
                .then(Op::put_json(sandbox_key.clone(), &updated)?)
                .then(Op::put_json(keys.endpoint(&network.id, &record.id), &ep)?))
        })
        .await?;
        let Allocated::Committed(got, got6, generation) = res else {
            return Err(ApiError::Aborted(format!(
                "sandbox {} changed while connecting it; try again",
                record.name
            )));
        };
        endpoint.ip = Some(got);
        endpoint.ip6 = got6;
        endpoint.mac = format_mac(mac_from_ip(got));
        let mut view = before.clone();
        view.record = updated;
        view.generation = generation as u64;
        view.endpoints.push((endpoint.clone(), network.clone()));
        // The other nodes learn of the endpoint (recorded above) while its
        // own node makes it: the answer waits for both, not one after the other.
        let these = [&network];
        let (ensured, ()) = tokio::join!(
            self.agent_ensure(&node.record, &view),
            self.overlay.notify(&these, &record.node)
        );
        if let Err(status) = ensured {
            // Undo through the disconnect path (the peers are told again):
            // the address is released once the agent confirmed the sandbox without it.
            if let Err(e) = self.detach(view, &network).await {
                tracing::warn!(sandbox = %record.name, error = %e, "undoing the connect is left for the repair loop");
            }
            return Err(agent_error(&node.record.name, status));
        }
        tracing::info!(sandbox = %record.name, network = %network.name, ip = %got, "sandbox connected");
        Ok(endpoint)
    }

    /// Detaches a sandbox from a network.
    pub async fn disconnect(&self, network: &str, sandbox: &str) -> Result<()> {
        let (network, current) = tokio::join!(self.networks.find(network), self.find_record(sandbox));
        let (network, current) = (network?, current?);
        let record = current.value.clone();
        if !record.networks.contains(&network.id) {
            return Err(ApiError::NotFound {
                kind: "endpoint of sandbox",
                name: format!("{} on network {}", record.name, network.name),
            });
        }
        if record.mode != SandboxMode::Namespace {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox {} cannot leave the {} network",
                record.name, network.name
            )));
        }
        if record.phase != Phase::Ready {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox {} is {}; try again when it is ready",
                record.name,
                record.phase.as_str()
            )));
        }
        let mut view = self.view(record.clone()).await?;
        view.generation = current.mod_revision as u64;
        self.detach(view, &network).await?;
        tracing::info!(sandbox = %record.name, network = %network.name, "sandbox disconnected");
        Ok(())
    }

    /// Takes `network`'s endpoint out of the sandbox `view` (read at
    /// `view.generation`): records the intent, has the agent realise the
    /// sandbox without it, then deletes the endpoint and releases its
    /// address. The overlay peers forget the endpoint meanwhile (marked
    /// removing, it is no member any more).
    pub(crate) async fn detach(&self, view: SandboxView, network: &NetworkRecord) -> Result<()> {
        let keys = &self.store.keys;
        let r = &view.record;
        let Some((mut ep, _)) = view.endpoints.iter().find(|(_, n)| n.id == network.id).cloned() else {
            return Ok(());
        };
        let mut after = view.clone();
        after.record.networks.retain(|n| n != &network.id);
        after.endpoints.retain(|(_, n)| n.id != network.id);
        ep.removing = true;
        let ep_key = keys.endpoint(&network.id, &r.id);
        let ops = vec![
            Op::put_json(keys.sandbox(&r.id), &after.record)?,
            Op::put_json(ep_key, &ep)?,
        ];
        let (marked, node) = tokio::join!(self.commit_if_unchanged(&view, ops), self.nodes.get(&r.node));
        let Some(marked) = marked? else {
            return Err(ApiError::Aborted(format!(
                "sandbox {} changed meanwhile; try again",
                r.name
            )));
        };
        after.generation = marked as u64;
        let these = [network];
        let node = node?;
        let (done, ()) = tokio::join!(
            self.finish_detach_on(&node.record, &after, &ep, network, marked),
            self.overlay.notify(&these, &r.node)
        );
        done
    }

    /// The agent realises `after` (the sandbox without the endpoint `ep`,
    /// marked removing at revision `marked`); then the endpoint and its
    /// address go, if the endpoint is still as marked.
    pub(crate) async fn finish_detach(
        &self,
        after: &SandboxView,
        ep: &EndpointRecord,
        network: &NetworkRecord,
        marked: i64,
    ) -> Result<()> {
        let node = self.nodes.get(&after.record.node).await?;
        self.finish_detach_on(&node.record, after, ep, network, marked)
            .await
    }

    /// [`Self::finish_detach`] with the sandbox's node already read.
    async fn finish_detach_on(
        &self,
        node: &NodeRecord,
        after: &SandboxView,
        ep: &EndpointRecord,
        network: &NetworkRecord,
        marked: i64,
    ) -> Result<()> {
        let keys = &self.store.keys;
        self.agent_ensure(node, after)
            .await
            .map_err(|s| agent_error(&after.record.node, s))?;
        let ep_key = keys.endpoint(&network.id, &after.record.id);
        let mut write = Write::new()
            .when(Guard::Unchanged(ep_key.clone(), marked))
            .then(Op::delete(ep_key));
        if let Some(ip) = ep.ip {
            write = write.then(ipam::release_op(
                &self.store,
                &network.id,
                ipam::pool_for(network, &after.record.node),
                ip,
            ));
        }
        if let Some(ip6) = ep.ip6 {
            write = write.then(ipam::release_op(
                &self.store,
                &network.id,
                ipam::pool_for(network, &after.record.node),
                ip6,
            ));
        }
        if self.store.write(write).await?.committed() {
            let pool = ipam::pool_for(network, &after.record.node);
            if let Some(ip) = ep.ip {
                ipam::released(&self.store, &network.id, pool, ip);
            }
            if let Some(ip6) = ep.ip6 {
                ipam::released(&self.store, &network.id, pool, ip6);
            }
        }
        Ok(())
    }
}
