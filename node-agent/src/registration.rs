//! Registration with the API server and the heartbeat that keeps this node's
//! lease (and so its "ready" status) alive.
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

use std::sync::Arc;

use crate::config::Config;
use crate::model;
use crate::reconcile::Reconciler;

/// Registers, converges the node to the desired state the API server holds,
/// then heartbeats every third of the lease TTL; registers (and syncs) again
/// whenever the API server says the lease is gone. Never returns. `tls`:
/// the CA and this agent's certificate, for an `https://` API URL.
pub async fn keep_registered(config: Config, reconciler: Arc<Reconciler>, tls: Option<ClientTlsConfig>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match register_once(&config, tls.as_ref()).await {
            Ok((mut client, lease, ttl)) => {
                backoff = Duration::from_millis(200);
                full_sync(&config, &mut client, &reconciler).await;
                let period = Duration::from_millis(u64::from(ttl.max(1)) * 1000 / 3);
                // The first heartbeat (right after the sync) makes the node ready.
                let mut first = true;
                loop {
                    if !first {
                        tokio::time::sleep(period).await;
                    }
                    first = false;
                    let hb = pb::HeartbeatRequest {
                        name: config.name.clone(),
                        lease_id: lease,
                    };
                    match client.heartbeat(hb).await {
                        Ok(_) => tracing::debug!(node = %config.name, "heartbeat"),
                        Err(s) if s.code() == Code::NotFound => {
                            tracing::warn!(node = %config.name, "lease lapsed; registering again");
                            break;
                        }
                        Err(s) => {
                            tracing::warn!(node = %config.name, error = %s.message(), "heartbeat failed")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %config.name, error = %format!("{e:#}"), "registration failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Fetches the node's desired state and converges to it, retrying until the
/// API server answers (a partial failure is reported by `Status`).
async fn full_sync(config: &Config, client: &mut RegistryServiceClient<Channel>, reconciler: &Reconciler) {
    let mut delay = Duration::from_millis(200);
    loop {
        // Commands applied after this point are newer than the state fetched below.
        let since = reconciler.epoch().await;
        let req = pb::DesiredStateRequest {
            node: config.name.clone(),
        };
        match client.desired_state(req).await {
            Ok(state) => match model::desired_from_proto(state.get_ref(), reconciler.netns_prefix()) {
                Ok(desired) => {
                    if let Err(e) = reconciler.sync(desired, since).await {
                        tracing::error!(node = %config.name, error = %e, "full sync left errors");
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(node = %config.name, error = %e, "desired state unusable");
                    return;
                }
            },
            Err(s) => {
                tracing::warn!(node = %config.name, error = %s.message(), "fetching desired state failed")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn register_once(
    config: &Config,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<(RegistryServiceClient<Channel>, i64, u32)> {
    let mut endpoint = Channel::from_shared(config.api.clone())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client = RegistryServiceClient::new(channel);
    let resp = client
        .register(pb::RegisterRequest {
            name: config.name.clone(),
            address: config.address.to_string(),
            agent_url: config.agent_url(),
            mtu: config.mtu,
        })
        .await?
        .into_inner();
    tracing::info!(node = %config.name, lease = resp.lease_id, ttl = resp.ttl_seconds, "registered with the API server");
    Ok((client, resp.lease_id, resp.ttl_seconds))
}
