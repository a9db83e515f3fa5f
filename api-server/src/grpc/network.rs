//! `berth.v1.NetworkService`: validates requests into domain types and calls
//! [`Networks`].
use berth_proto::v1 as pb;
use berth_proto::v1::network_service_server::NetworkService;
use tonic::{Request, Response, Status};

use super::convert;
use super::page::fit;
use crate::error::ApiError;
use crate::networks::{NetworkSpec, Networks};
use crate::page::PageRequest;
use crate::sandboxes::Sandboxes;

pub struct NetworkApi {
    pub networks: Networks,
    pub sandboxes: Sandboxes,
}

#[tonic::async_trait]
impl NetworkService for NetworkApi {
    #[tracing::instrument(skip_all, fields(network = %req.get_ref().name))]
    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        let r = req.into_inner();
        let spec = NetworkSpec::validate(
            &r.name,
            convert::driver_from_proto(r.driver).map_err(ApiError::from)?,
            &r.subnet,
            &r.gateway,
            r.options.into_iter().collect(),
            r.labels.into_iter().collect(),
        )?
        .with_addressing(r.internal, &r.ip_range, r.aux_addresses.into_iter().collect())?
        .with_ipv6(r.enable_ipv6, &r.subnet6, &r.gateway6)?;
        let net = self.networks.create(spec).await?;
        Ok(Response::new(pb::CreateNetworkResponse {
            network: Some(convert::network(&net)),
        }))
    }

    async fn list_networks(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let r = req.get_ref();
        let page = PageRequest::validate(r.page_size, &r.page_token)?;
        let listed = self.networks.list_page(&page).await?;
        let (networks, next_page_token) = fit(
            listed.items.iter().map(convert::network).collect(),
            listed.more,
            |n| &n.id,
        );
        Ok(Response::new(pb::ListNetworksResponse {
            networks,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().name_or_id))]
    async fn inspect_network(
        &self,
        req: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::InspectNetworkResponse>, Status> {
        let net = self.networks.find(&req.get_ref().name_or_id).await?;
        let eps = self.networks.endpoints(&net.id).await?;
        Ok(Response::new(pb::InspectNetworkResponse {
            network: Some(convert::network(&net)),
            endpoints: eps.iter().map(|e| convert::endpoint(e, &net)).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().name_or_id))]
    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let net = self.networks.remove(&req.get_ref().name_or_id).await?;
        Ok(Response::new(pb::RemoveNetworkResponse { id: net.id }))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().network, sandbox = %req.get_ref().sandbox))]
    async fn connect_network(
        &self,
        req: Request<pb::ConnectNetworkRequest>,
    ) -> Result<Response<pb::ConnectNetworkResponse>, Status> {
        let r = req.into_inner();
        let ip = match r.ip.as_str() {
            "" => None,
            s => Some(berth_core::net::parse_ip("ip", s).map_err(ApiError::from)?),
        };
        let ip6 = match r.ip6.as_str() {
            "" => None,
            s => Some(berth_core::net6::parse_ip6("ip6", s).map_err(ApiError::from)?),
        };
        let ep = self
            .sandboxes
            .connect(&r.network, &r.sandbox, ip, ip6, r.aliases)
            .await?;
        let net = self.networks.find(&ep.network_id).await?;
        Ok(Response::new(pb::ConnectNetworkResponse {
            endpoint: Some(convert::endpoint(&ep, &net)),
        }))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().network, sandbox = %req.get_ref().sandbox))]
    async fn disconnect_network(
        &self,
        req: Request<pb::DisconnectNetworkRequest>,
    ) -> Result<Response<pb::DisconnectNetworkResponse>, Status> {
        let r = req.into_inner();
        self.sandboxes.disconnect(&r.network, &r.sandbox).await?;
        Ok(Response::new(pb::DisconnectNetworkResponse {}))
    }
}
