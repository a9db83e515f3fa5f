//! Connecting a sandbox to one more network and disconnecting it.
use std::net::Ipv4Addr;

use berth_core::names::validate_name;
use berth_core::net::{format_mac, mac_from_ip};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{Sandboxes, agent_error, ifname_free};
use crate::error::{ApiError, Result};
use crate::ipam::{self, Allocated};
use crate::store::records::{EndpointRecord, SandboxMode};
use crate::store::{new_id, to_json};

impl Sandboxes {
    /// Attaches a sandbox to one more network (the next free `ethN`).
    pub async fn connect(
        &self,
        network: &str,
        sandbox: &str,
        ip: Option<Ipv4Addr>,
        aliases: Vec<String>,
    ) -> Result<EndpointRecord> {
        super::limits::check_aliases(&aliases)?;
        for a in &aliases {
            validate_name("alias", a)?;
        }
        let network = self.networks.find(network).await?;
        let current = self.find_record(sandbox).await?;
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
        if record.networks.contains(&network.id) {
            return Err(ApiError::AlreadyExists(format!(
                "sandbox {} is already connected to network {}",
                record.name, network.name
            )));
        }
        super::limits::check_one_more_network(&record.name, record.networks.len())?;
        let mut before = self.view(record.clone()).await?;
        before.generation = current.mod_revision as u64;
        let used: Vec<&str> = before.endpoints.iter().map(|(e, _)| e.ifname.as_str()).collect();
        let node = self.nodes.get(&record.node).await?;
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
            mac: String::new(),
            ifname: ifname_free(&used),
            aliases,
        };
        let mut updated = record.clone();
        updated.networks.push(network.id.clone());
        let keys = &self.store.keys;
        let sandbox_key = keys.sandbox(&record.id);
        let updated_json = to_json(&updated)?;
        let pool = ipam::pool_for(&network, &record.node).to_string();
        let res = ipam::allocate_ip(&self.store, &network, &pool, ip, &endpoint.id, |ip| {
            let mut ep = endpoint.clone();
            ep.ip = Some(ip);
            ep.mac = format_mac(mac_from_ip(ip));
            (
                vec![Compare::mod_revision(
                    sandbox_key.clone(),
                    CompareOp::Equal,
                    current.mod_revision,
                )],
                vec![
                    TxnOp::put(sandbox_key.clone(), updated_json.clone(), None),
                    TxnOp::put(
                        keys.endpoint(&network.id, &record.id),
                        to_json(&ep).unwrap_or_default(),
                        None,
                    ),
                ],
            )
        })
        .await?;
        let Allocated::Committed(got, generation) = res else {
            return Err(ApiError::Aborted(format!(
                "sandbox {} changed while connecting it; try again",
                record.name
            )));
        };
        endpoint.ip = Some(got);
        endpoint.mac = format_mac(mac_from_ip(got));
        let mut view = before.clone();
        view.record = updated;
        view.generation = generation as u64;
        view.endpoints.push((endpoint.clone(), network.clone()));
        if let Err(status) = self.ensure_on_agent(&node.record, &view).await {
            let rollback = Txn::new().and_then([
                TxnOp::put(sandbox_key, to_json(&record)?, None),
                TxnOp::delete(keys.endpoint(&network.id, &record.id), None),
                ipam::release_op(&self.store, &network.id, &pool, got),
            ]);
            let mut before = before;
            match self.store.txn(rollback).await {
                Ok(resp) => before.generation = resp.header().map_or(0, |h| h.revision()) as u64,
                Err(e) => tracing::error!(sandbox = %record.name, error = %e, "rollback of connect failed"),
            }
            // Put the node back the way it was, as far as it listens.
            let _ = self.ensure_on_agent(&node.record, &before).await;
            return Err(agent_error(&node.record.name, status));
        }
        self.overlay.notify(&[&network], &record.node).await;
        tracing::info!(sandbox = %record.name, network = %network.name, ip = %got, "sandbox connected");
        Ok(endpoint)
    }

    /// Detaches a sandbox from a network: the node first, then the records.
    pub async fn disconnect(&self, network: &str, sandbox: &str) -> Result<()> {
        let network = self.networks.find(network).await?;
        let current = self.find_record(sandbox).await?;
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
        let before = self.view(record.clone()).await?;
        let mut after = before.clone();
        // Newer than the record the agent holds; the record written below
        // (later, so with a higher revision) says the same.
        after.generation = current.mod_revision as u64 + 1;
        after.record.networks.retain(|n| n != &network.id);
        after.endpoints.retain(|(_, n)| n.id != network.id);
        let removed = before
            .endpoints
            .iter()
            .find(|(_, n)| n.id == network.id)
            .map(|(e, _)| e.clone());
        let node = self.nodes.get(&record.node).await?;
        self.ensure_on_agent(&node.record, &after)
            .await
            .map_err(|s| agent_error(&record.node, s))?;
        let keys = &self.store.keys;
        let mut ops = vec![
            TxnOp::put(keys.sandbox(&record.id), to_json(&after.record)?, None),
            TxnOp::delete(keys.endpoint(&network.id, &record.id), None),
        ];
        if let Some(ip) = removed.and_then(|e| e.ip) {
            ops.push(ipam::release_op(
                &self.store,
                &network.id,
                ipam::pool_for(&network, &record.node),
                ip,
            ));
        }
        let ok = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        keys.sandbox(&record.id),
                        CompareOp::Equal,
                        current.mod_revision,
                    )])
                    .and_then(ops),
            )
            .await?
            .succeeded();
        if !ok {
            return Err(ApiError::Aborted(format!(
                "sandbox {} changed while disconnecting it; try again",
                record.name
            )));
        }
        self.overlay.notify(&[&network], &record.node).await;
        tracing::info!(sandbox = %record.name, network = %network.name, "sandbox disconnected");
        Ok(())
    }
}
