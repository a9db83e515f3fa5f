//! The phase changes every sandbox operation goes through, each one etcd
//! transaction conditional on the revision it read, and the calls to the
//! owning agent. Records and addresses are deleted only after the agent
//! confirmed (or the node is gone), and only if nothing changed the sandbox
//! since it was marked, so two replicas doing the same thing end in one
//! outcome and nothing is released twice.

use super::{SandboxView, Sandboxes};
use crate::agents::agent_error;
use crate::error::{ApiError, Result};
use crate::ipam;
use crate::store::records::{NodeRecord, Phase};
use crate::store::{Guard, Op, Write, now_rfc3339};

impl Sandboxes {
    /// `creating` → `ready`, if the sandbox is still as recorded (or someone
    /// else, the repair loop, marked it ready meanwhile).
    pub(super) async fn mark_ready(&self, mut view: SandboxView) -> Result<SandboxView> {
        view.record.phase = Phase::Ready;
        view.record.phase_since = now_rfc3339();
        if let Some(generation) = self.put_if_unchanged(&view).await? {
            view.generation = generation;
            return Ok(view);
        }
        match self
            .store
            .get_json::<crate::store::records::SandboxRecord>(&self.store.keys.sandbox(&view.record.id))
            .await?
        {
            Some(now) if now.value.phase == Phase::Ready => {
                view.record = now.value;
                view.generation = now.mod_revision as u64;
                Ok(view)
            }
            _ => Err(ApiError::Aborted(format!(
                "sandbox {} was removed while it was being created",
                view.record.name
            ))),
        }
    }

    /// Finishes a `creating` sandbox whose request was interrupted: realised
    /// by the agent and marked ready (`true`), or undone when the agent
    /// refuses it (`false`). An agent that cannot be reached is an error
    /// (tried again later).
    pub(crate) async fn finish_create(&self, node: &NodeRecord, view: SandboxView) -> Result<bool> {
        match self.agent_ensure(node, &view).await {
            Ok(()) => {
                let view = self.mark_ready(view).await?;
                self.overlay.notify(&view.network_refs(), &node.name).await;
                Ok(true)
            }
            Err(status) => {
                let err = agent_error(&node.name, status);
                if matches!(err, ApiError::Unavailable(_)) {
                    return Err(err);
                }
                if let Some(view) = self.mark_removing(view).await? {
                    self.finish_removal_on(Some(node), view, false).await?;
                }
                Ok(false)
            }
        }
    }

    /// Marks the sandbox and its endpoints `removing` (no longer desired on
    /// its node); `None` when it changed since `view` was read.
    pub(crate) async fn mark_removing(&self, mut view: SandboxView) -> Result<Option<SandboxView>> {
        view.record.phase = Phase::Removing;
        view.record.phase_since = now_rfc3339();
        for (ep, _) in &mut view.endpoints {
            ep.removing = true;
        }
        Ok(self.put_if_unchanged(&view).await?.map(|generation| {
            view.generation = generation;
            view
        }))
    }

    /// Writes the record and endpoints of `view` if the record's revision is
    /// still `view.generation`; returns the new revision.
    async fn put_if_unchanged(&self, view: &SandboxView) -> Result<Option<u64>> {
        let keys = &self.store.keys;
        let r = &view.record;
        let mut ops = vec![Op::put_json(keys.sandbox(&r.id), r)?];
        for (ep, net) in &view.endpoints {
            ops.push(Op::put_json(keys.endpoint(&net.id, &r.id), ep)?);
        }
        Ok(self.commit_if_unchanged(view, ops).await?.map(|rev| rev as u64))
    }

    /// Commits `ops` if the sandbox record is still at `view.generation`
    /// (the one guard of every phase change); the revision of the commit,
    /// `None` when the record changed or is gone.
    pub(super) async fn commit_if_unchanged(&self, view: &SandboxView, ops: Vec<Op>) -> Result<Option<i64>> {
        let guard = Guard::Unchanged(self.store.keys.sandbox(&view.record.id), view.generation as i64);
        let write = ops.into_iter().fold(Write::new().when(guard), Write::then);
        Ok(self.store.write(write).await?.revision())
    }

    /// Asks the owning agent (when its node is known and not gone) to remove
    /// a sandbox marked `removing`, then deletes its records. The agent
    /// failing keeps it `removing` (the repair loop retries) unless `force`.
    pub(crate) async fn finish_removal_on(
        &self,
        node: Option<&NodeRecord>,
        view: SandboxView,
        force: bool,
    ) -> Result<SandboxView> {
        if let Some(node) = node
            && let Err(status) = self.agent_remove(node, &view).await
        {
            if !force {
                return Err(agent_error(&node.name, status));
            }
            tracing::warn!(sandbox = %view.record.name, node = %node.name, "agent unreachable; removing records anyway (--force)");
        }
        self.delete_records(&view).await?;
        self.overlay.notify(&view.network_refs(), &view.record.node).await;
        tracing::info!(sandbox = %view.record.name, "sandbox removed");
        Ok(view)
    }

    /// Deletes every key of a sandbox marked removing at `view.generation`,
    /// in one transaction that holds only if nothing changed it since.
    /// `Ok(false)`: it changed or is gone already (someone else finished).
    pub(crate) async fn delete_records(&self, view: &SandboxView) -> Result<bool> {
        let keys = &self.store.keys;
        let r = &view.record;
        let mut ops = vec![
            Op::delete(keys.sandbox(&r.id)),
            Op::delete(keys.node_sandbox(&r.node, &r.id)),
        ];
        for p in &r.ports {
            ops.push(Op::delete(keys.port(&r.node, p)));
        }
        for (ep, net) in &view.endpoints {
            ops.push(Op::delete(keys.endpoint(&net.id, &r.id)));
            if let Some(ip) = ep.ip {
                ops.push(ipam::release_op(
                    &self.store,
                    &net.id,
                    ipam::pool_for(net, &r.node),
                    ip,
                ));
            }
            if let Some(ip6) = ep.ip6 {
                ops.push(ipam::release_op(
                    &self.store,
                    &net.id,
                    ipam::pool_for(net, &r.node),
                    ip6,
                ));
            }
        }
        // While the record is unchanged these keys are this sandbox's: every
        // one of them is written only together with it. The name may already
        // point at a newer sandbox only if the record were gone.
        ops.push(Op::delete(keys.sandbox_name(&r.name)));
        let deleted = self.commit_if_unchanged(view, ops).await?.is_some();
        if deleted {
            for (ep, net) in &view.endpoints {
                if let Some(ip) = ep.ip {
                    ipam::released(&self.store, &net.id, ipam::pool_for(net, &r.node), ip);
                }
                if let Some(ip6) = ep.ip6 {
                    ipam::released(&self.store, &net.id, ipam::pool_for(net, &r.node), ip6);
                }
            }
        }
        Ok(deleted)
    }

    /// EnsureSandbox on the owning agent, with the peer sets of its overlays.
    pub(crate) async fn agent_ensure(
        &self,
        node: &NodeRecord,
        view: &SandboxView,
    ) -> Result<(), tonic::Status> {
        let peers = self
            .overlay
            .peers_for_node(&node.name, &view.network_refs())
            .await?;
        self.agents.ensure_sandbox(node, view, &peers).await
    }

    /// RemoveSandbox on the owning agent.
    pub(crate) async fn agent_remove(
        &self,
        node: &NodeRecord,
        view: &SandboxView,
    ) -> Result<(), tonic::Status> {
        self.agents.remove_sandbox(node, view).await
    }
}
