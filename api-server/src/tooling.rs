//! gRPC tooling on berth-api's listeners: server reflection (v1 and
//! v1alpha, so grpcurl, buf curl and grpcio's tools all work) that lists
//! only the services this server serves, and a `grpc.health.v1` service
//! that follows etcd: NOT_SERVING while berth-api cannot reach it.
use std::time::Duration;

use berth_proto::v1::diagnostics_service_server::DiagnosticsServiceServer;
use berth_proto::v1::event_service_server::EventServiceServer;
use berth_proto::v1::network_service_server::NetworkServiceServer;
use berth_proto::v1::node_service_server::NodeServiceServer;
use berth_proto::v1::registry_service_server::RegistryServiceServer;
use berth_proto::v1::sandbox_service_server::SandboxServiceServer;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_reflection::server::{v1, v1alpha};

use crate::events::EventApi;
use crate::grpc::doctor::DiagnosticsApi;
use crate::grpc::network::NetworkApi;
use crate::grpc::node::NodeApi;
use crate::grpc::sandbox::SandboxApi;
use crate::store::Store;

/// berth's services served by berth-api (the agent's AgentService is not).
pub const API_SERVICES: [&str; 6] = [
    <NetworkServiceServer<NetworkApi> as NamedService>::NAME,
    <SandboxServiceServer<SandboxApi> as NamedService>::NAME,
    <NodeServiceServer<NodeApi> as NamedService>::NAME,
    <EventServiceServer<EventApi> as NamedService>::NAME,
    <DiagnosticsServiceServer<DiagnosticsApi> as NamedService>::NAME,
    <RegistryServiceServer<NodeApi> as NamedService>::NAME,
];

/// How often the health service asks etcd, and how long one ask may take.
pub const ETCD_CHECK_PERIOD: Duration = Duration::from_secs(2);
const ETCD_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Reflection v1 and v1alpha listing exactly `served` (names as in
/// `NamedService::NAME`) and [`TOOLING_SERVICES`]; berth's other services
/// are not even describable, every message type is.
pub fn reflection(
    served: &[&str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(berth_proto::descriptors_serving(served))
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for name in served.iter().copied().chain(TOOLING_SERVICES) {
            b = b.with_service_name(name);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Health and both reflection versions: served next to berth's services.
pub const TOOLING_SERVICES: [&str; 3] = [
    <HealthServer<HealthService> as NamedService>::NAME,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The health statuses of one berth-api, shared by its listeners.
#[derive(Clone)]
pub struct ApiHealth {
    reporter: HealthReporter,
}

impl ApiHealth {
    /// All services SERVING (berth-api starts only after etcd answered).
    pub async fn new() -> Self {
        let health = Self {
            reporter: HealthReporter::new(),
        };
        health.set(ServingStatus::Serving).await;
        health
    }

    /// A `grpc.health.v1.Health` server reading these statuses.
    pub fn service(&self) -> HealthServer<impl Health> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Sets the API's services and the whole server ("") to `status`.
    pub async fn set(&self, status: ServingStatus) {
        for name in API_SERVICES.iter().copied().chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Asks etcd every [`ETCD_CHECK_PERIOD`] and reports the API's services
    /// NOT_SERVING while it does not answer, SERVING again once it does.
    pub async fn follow_etcd(self, store: Store) {
        let mut serving = true;
        let mut tick = tokio::time::interval(ETCD_CHECK_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = store.ping(ETCD_CHECK_TIMEOUT).await;
            match (&result, serving) {
                (Err(e), true) => {
                    tracing::warn!(error = %e, "etcd unreachable: health is NOT_SERVING");
                    self.set(ServingStatus::NotServing).await;
                }
                (Ok(()), false) => {
                    tracing::info!("etcd reachable again: health is SERVING");
                    self.set(ServingStatus::Serving).await;
                }
                _ => {}
            }
            serving = result.is_ok();
        }
    }
}
