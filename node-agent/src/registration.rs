//! Registration with the API server and the heartbeat that keeps this
//! node's lease (and so its "ready" status) alive. Heals by itself: an agent
//! whose lease lapsed (the API server said NOT_FOUND, or heartbeats failed
//! for longer than the lease's TTL, e.g. while the API server or etcd was
//! down) registers again as soon as it can, converges, and is ready again.
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

use std::sync::Arc;

use crate::config::Config;
use crate::model::{self, Desired};
use crate::reconcile::Reconciler;

/// The channel to the API server, connected lazily and reconnecting by
/// itself (`tls`: the CA and this agent's certificate, for `https://`).
pub fn api_channel(config: &Config, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(config.api.clone())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// The node's desired state and the etcd revision it was read at.
pub async fn pull(channel: &Channel, config: &Config, netns_prefix: &str) -> Result<(Desired, u64), String> {
    let mut client = RegistryServiceClient::new(channel.clone())
        .max_decoding_message_size(berth_core::limits::MAX_NODE_STATE_BYTES);
    let state = client
        .desired_state(pb::DesiredStateRequest {
            node: config.name.clone(),
        })
        .await
        .map_err(|s| format!("fetching the desired state: {}", s.message()))?
        .into_inner();
    let desired = model::desired_from_proto(&state, netns_prefix).map_err(|e| e.to_string())?;
    Ok((desired, state.revision))
}

/// Pulls the desired state and converges to it, retrying until the API
/// server answers (a partial failure is reported by `Status`).
async fn first_sync(channel: &Channel, config: &Config, reconciler: &Reconciler) {
    let mut delay = Duration::from_millis(200);
    loop {
        match pull(channel, config, reconciler.netns_prefix()).await {
            Ok((desired, revision)) => {
                if let Err(e) = reconciler.sync(desired, revision).await {
                    tracing::error!(node = %config.name, error = %e, "full pass left errors");
                }
                return;
            }
            Err(e) => tracing::warn!(node = %config.name, error = %e, "first sync failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// This node's own routes, which berth's subnets must not overlap; none
/// (with a warning) when they cannot be read.
async fn own_routes() -> Vec<pb::NodeRoute> {
    match crate::kernel::route::own_underlay_routes().await {
        Ok(routes) => routes
            .into_iter()
            .take(berth_core::limits::MAX_NODE_ROUTES)
            .map(|r| pb::NodeRoute {
                destination: r.destination.to_string(),
                device: r.device,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this node's routes; registering without them");
            Vec::new()
        }
    }
}

/// The first wait after a failed heartbeat.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// Registers, converges, then heartbeats every third of the lease TTL.
/// Never returns.
pub async fn keep_registered(config: Config, reconciler: Arc<Reconciler>, channel: Channel) {
    let mut client = RegistryServiceClient::new(channel.clone());
    let mut backoff = Duration::from_millis(200);
    loop {
        let req = pb::RegisterRequest {
            name: config.name.clone(),
            address: config.address.to_string(),
            agent_url: config.agent_url(),
            mtu: config.mtu,
            routes: own_routes().await,
        };
        let (lease, ttl) = match client.register(req).await {
            Ok(r) => {
                let r = r.into_inner();
                tracing::info!(node = %config.name, lease = r.lease_id, ttl = r.ttl_seconds, "registered with the API server");
                (r.lease_id, Duration::from_secs(u64::from(r.ttl_seconds.max(1))))
            }
            Err(s) => {
                tracing::warn!(node = %config.name, error = %s.message(), "registration failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        first_sync(&channel, &config, &reconciler).await;
        let period = ttl / 3;
        let mut last_ok = Instant::now();
        // The first heartbeat (right after the sync) makes the node ready.
        let mut delay = Duration::ZERO;
        let mut retry = HEARTBEAT_RETRY;
        loop {
            tokio::time::sleep(delay).await;
            let hb = pb::HeartbeatRequest {
                name: config.name.clone(),
                lease_id: lease,
            };
            match client.heartbeat(hb).await {
                Ok(_) => {
                    last_ok = Instant::now();
                    delay = period;
                    retry = HEARTBEAT_RETRY;
                    tracing::debug!(node = %config.name, "heartbeat");
                }
                Err(s) if s.code() == Code::NotFound => {
                    tracing::warn!(node = %config.name, error = %s.message(), "lease lapsed; registering again");
                    break;
                }
                Err(s) if last_ok.elapsed() >= ttl => {
                    tracing::warn!(node = %config.name, error = %s.message(), "no heartbeat for longer than the lease; registering again");
                    break;
                }
                // A failed heartbeat is retried soon (HEARTBEAT_RETRY, doubling, at
                // most the period): waiting a whole period would spend a
                // third of the lease on one lost packet or API restart.
                Err(s) => {
                    delay = retry.min(period);
                    retry = (retry * 2).min(period);
                    tracing::warn!(node = %config.name, error = %s.message(), retry_in = ?delay, "heartbeat failed");
                }
            }
        }
    }
}
