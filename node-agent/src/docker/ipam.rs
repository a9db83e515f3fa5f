//! The remote IPAM driver: pools are berth networks' subnets (or "any"
//! until the network is bound, see docs/docker.md), addresses are berth
//! sandboxes of origin docker allocated by the API server's IPAM.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::protocol::*;
use super::store::{Address, Pool};
use super::{Plugin, PluginError, Result, fail, now, token};

pub fn capabilities() -> Value {
    json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
}

pub fn address_spaces() -> Value {
    json!({"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE})
}

impl Plugin {
    pub async fn request_pool(&self, r: RequestPool) -> Result<Value> {
        if r.v6 {
            return fail("berth: berth networks are IPv4 only; create the network without --ipv6");
        }
        if !r.sub_pool.is_empty() {
            return fail("berth: --ip-range is not supported; berth allocates from the whole subnet");
        }
        if let Some(k) = r.options.keys().next() {
            return fail(format!(
                "berth: unknown --ipam-opt {k:?}: the berth IPAM driver takes none"
            ));
        }
        let subnet = match r.pool.as_str() {
            "" => None,
            p => {
                let net: Ipv4Net = p
                    .parse()
                    .map_err(|_| PluginError(format!("berth: --subnet {p:?} is not an IPv4 CIDR")))?;
                if net.trunc() != net {
                    return fail(format!(
                        "berth: --subnet {p} has host bits set (did you mean {}?)",
                        net.trunc()
                    ));
                }
                Some(net)
            }
        };
        let id = format!("berth-{}", &token()[..16]);
        // The gateway goes in the pool's data, so dockerd asks for it only
        // when --gateway names one; berth's gateway is the subnet's first
        // address unless the network says otherwise (Join tells dockerd).
        let (pool, gateway) = match subnet {
            Some(n) => (
                n.to_string(),
                format!(
                    "{}/{}",
                    Ipv4Addr::from(u32::from(n.network()) + 1),
                    n.prefix_len()
                ),
            ),
            None => (ANY_POOL.to_string(), ANY_POOL.to_string()),
        };
        let mut s = self.state.lock().await;
        s.pools.insert(
            id.clone(),
            Pool {
                subnet: subnet.map(|n| n.to_string()),
                ..Default::default()
            },
        );
        self.save(&s)?;
        tracing::info!(pool = %id, subnet = %pool, "docker pool");
        Ok(json!({"PoolID": id, "Pool": pool, "Data": {DATA_GATEWAY: gateway}}))
    }

    pub async fn release_pool(&self, r: ReleasePool) -> Result<Value> {
        let mut s = self.state.lock().await;
        if s.pools.remove(&r.pool_id).is_some() {
            self.save(&s)?;
        }
        Ok(json!({}))
    }

    pub async fn request_address(&self, r: RequestAddress) -> Result<Value> {
        let (pool, network) = {
            let s = self.state.lock().await;
            let Some(pool) = s.pools.get(&r.pool_id).cloned() else {
                return fail(format!("berth: unknown pool {}", r.pool_id));
            };
            let network = pool.network.clone();
            (pool, network)
        };
        if r.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE) {
            // --gateway: kept for the berth network's creation.
            let Some(subnet) = pool.subnet.as_deref().and_then(|s| s.parse::<Ipv4Net>().ok()) else {
                return fail("berth: --gateway needs --subnet");
            };
            let gw: Ipv4Addr = r.address.parse().map_err(|_| {
                PluginError(format!("berth: --gateway {:?} is not an IPv4 address", r.address))
            })?;
            if !subnet.contains(&gw) {
                return fail(format!("berth: --gateway {gw} is not in --subnet {subnet}"));
            }
            let mut s = self.state.lock().await;
            if let Some(p) = s.pools.get_mut(&r.pool_id) {
                p.gateway = Some(gw.to_string());
            }
            self.save(&s)?;
            return Ok(json!({"Address": format!("{gw}/{}", subnet.prefix_len()), "Data": {}}));
        }
        let Some(network) = network else {
            return fail(format!("berth: pool {} has no docker network yet", r.pool_id));
        };
        let berth_id = self.bind(&network).await?;
        if !r.address.is_empty() && r.address.parse::<Ipv4Addr>().is_err() {
            return fail(format!("berth: --ip {:?} is not an IPv4 address", r.address));
        }
        let token = token();
        // Recorded before berth is asked: an address berth hands out is
        // always one the sweep can find (it frees tokens without endpoints).
        {
            let mut s = self.state.lock().await;
            s.addresses.insert(
                token.clone(),
                Address {
                    pool: r.pool_id.clone(),
                    cidr: String::new(),
                    endpoint: None,
                    since: now(),
                },
            );
            self.save(&s)?;
        }
        let resp = match self.attach(&token, &berth_id, &r.address, vec![]).await {
            Ok(r) => r,
            Err(e) => {
                let mut s = self.state.lock().await;
                s.addresses.remove(&token);
                self.save(&s)?;
                return Err(e);
            }
        };
        let ep = resp
            .sandbox
            .as_ref()
            .and_then(|s| s.endpoints.first())
            .ok_or_else(|| PluginError("berth: the attachment has no endpoint".into()))?;
        let cidr = format!("{}/{}", ep.ip, ep.prefix_len);
        let mut s = self.state.lock().await;
        if let Some(a) = s.addresses.get_mut(&token) {
            a.cidr = cidr.clone();
        }
        self.save(&s)?;
        tracing::info!(ip = %cidr, container = %token, "docker address");
        Ok(json!({"Address": cidr, "Data": {}}))
    }

    pub async fn release_address(&self, r: ReleaseAddress) -> Result<Value> {
        let token = {
            let s = self.state.lock().await;
            let Some(pool) = s.pools.get(&r.pool_id) else {
                return Ok(json!({}));
            };
            if pool.gateway.as_deref() == Some(r.address.as_str()) {
                return Ok(json!({}));
            }
            s.token_of(&r.pool_id, &r.address)
        };
        let Some(token) = token else {
            return Ok(json!({}));
        };
        self.detach(&token).await?;
        let mut s = self.state.lock().await;
        s.addresses.remove(&token);
        s.endpoints.retain(|_, e| e.token != token);
        self.save(&s)?;
        tracing::info!(ip = %r.address, container = %token, "docker address released");
        Ok(json!({}))
    }
}
