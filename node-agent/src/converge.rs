//! The convergence loop: a full pass on every period (pulling the node's
//! desired state from the API server first; with the state held if the
//! API server cannot be reached), and soon after anything asks for one: a
//! failed command or pass, or netlink reporting that a link or address
//! berth wants went away.
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use crate::config::Config;
use crate::reconcile::Reconciler;
use crate::registration;

/// Shortest time between two passes asked for by events (a burst of
/// events, or a failure that repeats, gives one pass per interval).
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// How long to wait after an event for the rest of its burst.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Runs forever.
pub async fn run(config: Config, reconciler: Arc<Reconciler>, channel: Channel) {
    let period = Duration::from_secs(config.resync_period);
    let wake = reconciler.wake();
    let mut failures = 0u32;
    loop {
        // After failures, retry sooner than the period (but not in a tight loop).
        let wait = if failures > 0 {
            (MIN_INTERVAL * 2u32.pow(failures.min(4))).min(period)
        } else {
            period
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
        }
        let pulling = std::time::Instant::now();
        let res = match registration::pull(&channel, &config, reconciler.netns_prefix()).await {
            Ok((desired, revision)) => {
                tracing::debug!(
                    sandboxes = desired.sandboxes.len(),
                    pull_ms = pulling.elapsed().as_millis() as u64,
                    "pulled the desired state"
                );
                reconciler.sync(desired, revision).await
            }
            Err(e) => {
                tracing::warn!(node = %config.name, error = %e, "cannot pull the desired state; converging to the state held");
                let held = reconciler.full_pass().await;
                held.and(Err(e))
            }
        };
        match res {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(node = %config.name, error = %e, "convergence pass left errors; retrying soon");
            }
        }
        tokio::time::sleep(MIN_INTERVAL.saturating_sub(DEBOUNCE)).await;
    }
}
