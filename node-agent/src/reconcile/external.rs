//! Sandboxes in container runtimes' namespaces, as the local service
//! ([`crate::local`]) needs them: finding an attachment, checking it
//! against the kernel without changing anything (CNI CHECK), and the queue
//! of attachments whose namespace vanished, which the agent detaches
//! through the API server (level-triggered: every full pass reports them again).
use std::collections::BTreeSet;

use super::executor::Executor;
use super::kernel::KernelExecutor;
use super::observed::Observed;
use super::plan::{self, Inputs, Scope};
use super::report::AgentError;
use super::{PassConfig, Reconciler, observe_request};
use crate::etcfiles;
use crate::model::{External, SandboxOrigin, SandboxSpec};

impl Reconciler {
    /// The attachment of a runtime's container interface, if this node holds it.
    pub async fn attachment(
        &self,
        origin: SandboxOrigin,
        container_id: &str,
        ifname: &str,
    ) -> Option<SandboxSpec> {
        let inner = self.inner.lock().await;
        inner
            .desired
            .get()
            .sandboxes
            .values()
            .find(|s| {
                s.external.as_ref().is_some_and(|x| {
                    x.origin == origin && x.container_id == container_id && x.ifname == ifname
                })
            })
            .cloned()
    }

    /// A network of this node's desired state, by id.
    pub async fn network(&self, id: &str) -> Option<crate::model::NetworkSpec> {
        self.inner.lock().await.desired.get().networks.get(id).cloned()
    }

    /// Whether the agent holds its node's whole desired state (it has heard
    /// from the API server since it started).
    pub async fn synced(&self) -> bool {
        self.inner.lock().await.synced
    }

    /// What differs between the kernel and sandbox `id` as recorded: the
    /// actions a pass would take for it and its conflicts, described; empty
    /// when it is realised as it should be. Changes nothing.
    pub async fn check(&self, id: &str) -> Result<Vec<String>, AgentError> {
        let mut inner = self.inner.lock().await;
        let d = inner.desired.get().clone();
        let Some(s) = d.sandboxes.get(id) else {
            return Err(AgentError::Internal(format!(
                "sandbox {id} is not held by this agent"
            )));
        };
        let nets: BTreeSet<String> = s.endpoints.iter().map(|e| e.network_id.clone()).collect();
        let scope = Scope::sandbox(id, nets);
        let super::Inner {
            owned,
            applied_rules,
            dns_inodes,
            synced,
            ..
        } = &mut *inner;
        let req = observe_request(&d, owned, &scope, None);
        let mut exec = KernelExecutor::new(
            &self.node,
            &self.state,
            &self.dns,
            dns_inodes,
            applied_rules,
            self.underlay,
        );
        let observed: Observed = exec
            .observe(&req)
            .await
            .map_err(|e| AgentError::Internal(format!("observing the node: {}", e.message)))?;
        let config = PassConfig {
            underlay_mtu: self.underlay_mtu,
            local_vtep: self.underlay,
            scan_prefix: None,
            node_resolv: etcfiles::node_resolv_conf(),
            complete: *synced,
        };
        let p = plan::plan(&Inputs {
            desired: &d,
            observed: &observed,
            owned,
            scope: &scope,
            underlay_mtu: config.underlay_mtu,
            local_vtep: config.local_vtep,
            node_resolv: &config.node_resolv,
            applied_rules: exec.applied_rules(),
            complete: config.complete,
        });
        let mut out: Vec<String> = p
            .conflicts
            .iter()
            .filter(|c| c.sandboxes.iter().any(|s| s == id))
            .map(|c| c.message.clone())
            .collect();
        out.extend(
            p.actions
                .iter()
                .filter(|a| a.sandbox() == Some(id))
                .map(|a| format!("{} is not as recorded", a.key())),
        );
        Ok(out)
    }

    /// Queues the attachments of `ids` (sandboxes of the desired state whose
    /// runtime's namespace vanished) for detaching.
    pub(super) fn note_vanished(&self, d: &crate::model::Desired, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut q = self.vanished.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some(x) = d.sandboxes.get(id).and_then(|s| s.external.clone()) {
                tracing::info!(sandbox = %id, netns = %x.netns_path, "the runtime's namespace vanished; detaching");
                q.insert(id.clone(), x);
            }
        }
        drop(q);
        self.vanished_wake.notify_one();
    }

    /// The queued attachments to detach (the queue is emptied).
    pub fn take_vanished(&self) -> Vec<(String, External)> {
        let mut q = self.vanished.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *q).into_iter().collect()
    }

    /// Notified when attachments were queued for detaching.
    pub fn vanished_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.vanished_wake.clone()
    }
}
