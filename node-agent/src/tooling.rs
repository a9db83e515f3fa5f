//! gRPC tooling on the agent's listener: `grpc.health.v1` and server
//! reflection, v1 and v1alpha (grpcurl 1.8 speaks only v1alpha), both for
//! the agent's own service only: it does not list or describe berth-api's
//! services.
use berth_proto::v1::agent_service_server::AgentServiceServer;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::AgentApi;

/// berth's services the agent serves.
pub const AGENT_SERVICES: [&str; 1] = [<AgentServiceServer<AgentApi> as NamedService>::NAME];

/// Health and both reflection versions, served next to [`AGENT_SERVICES`].
pub const TOOLING_SERVICES: [&str; 3] = [
    <HealthServer<HealthService> as NamedService>::NAME,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Adds health and reflection to `server`; the caller adds the agent's
/// service to the returned router. The agent's service is NOT_SERVING until
/// the node has converged, and again whenever it has not (see [`follow_convergence`]).
pub async fn with_tooling<L: Clone>(server: &mut Server<L>) -> anyhow::Result<(Router<L>, HealthReporter)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<AgentServiceServer<AgentApi>>().await;
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(berth_proto::descriptors_serving(&AGENT_SERVICES))
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for name in AGENT_SERVICES.iter().chain(&TOOLING_SERVICES) {
            b = b.with_service_name(*name);
        }
        b
    };
    let router = server
        .add_service(health_service)
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?);
    Ok((router, health))
}

/// Keeps the agent's health in step with its convergence: SERVING while
/// the last full pass left no error and no object is failing. Runs forever.
pub async fn follow_convergence(
    health: HealthReporter,
    reconciler: std::sync::Arc<crate::reconcile::Reconciler>,
) {
    let mut serving = None;
    loop {
        let converged = reconciler.status().await.converged;
        if serving != Some(converged) {
            if converged {
                health.set_serving::<AgentServiceServer<AgentApi>>().await;
            } else {
                health.set_not_serving::<AgentServiceServer<AgentApi>>().await;
            }
            serving = Some(converged);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
