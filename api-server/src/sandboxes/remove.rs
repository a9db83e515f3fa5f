//! Removing a sandbox: marked `removing` first (its node stops wanting it),
//! then the agent tears it down, then the records and addresses go. An
//! agent that cannot be reached leaves the sandbox `removing`; the repair
//! loop finishes it when the agent is back (or `--force` drops the records
//! now and the node cleans up at its next pass).
use super::{SandboxView, Sandboxes};
use crate::error::{ApiError, Result};
use crate::ipam;
use crate::store::records::Phase;

impl Sandboxes {
    pub async fn remove(&self, name_or_id: &str, force: bool) -> Result<SandboxView> {
        for _ in 0..ipam::MAX_ATTEMPTS {
            let view = self.find(name_or_id).await?;
            let view = if view.record.phase == Phase::Removing {
                view
            } else {
                match self.mark_removing(view).await? {
                    Some(v) => v,
                    // Changed meanwhile (a connect, another removal): read again.
                    None => {
                        crate::metrics::retry("sandbox_remove");
                        continue;
                    }
                }
            };
            let node = match self.nodes.get(&view.record.node).await {
                Ok(n) => Some(n.record),
                Err(ApiError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            return self.finish_removal_on(node.as_ref(), view, force).await;
        }
        Err(ApiError::Aborted(format!(
            "sandbox {name_or_id} kept changing; try again"
        )))
    }
}
