//! The remote network driver: CreateNetwork links a pool to a Docker
//! network and binds it to the berth network of its name; CreateEndpoint
//! links an address to its endpoint (and publishes `-p` through berth);
//! Join makes the veth pair whose container end dockerd moves in.
use std::collections::BTreeMap;

use berth_proto::v1 as pb;
use serde_json::{Value, json};

use super::protocol::*;
use super::store::{Endpoint, Network};
use super::{Plugin, PluginError, Result, fail};
use crate::model::host_ifname;

pub fn capabilities() -> Value {
    // "global" is refused by dockerd without swarm; addresses are cluster-wide anyway.
    json!({"Scope": "local", "ConnectivityScope": "global"})
}

/// `-o` options: `berth.driver` and berth's own `com.docker.network.*` keys
/// (berth checks their values); anything else is refused.
fn parse_options(generic: Option<&Value>) -> Result<(String, BTreeMap<String, String>)> {
    let mut driver = "overlay".to_string();
    let mut options = BTreeMap::new();
    let Some(map) = generic.and_then(Value::as_object) else {
        return Ok((driver, options));
    };
    for (k, v) in map {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match k.as_str() {
            "berth.driver" => match v.as_str() {
                "overlay" | "bridge" => driver = v,
                _ => return fail(format!("berth: -o berth.driver={v:?}: use overlay or bridge")),
            },
            _ if k.starts_with("com.docker.network.") => {
                options.insert(k.clone(), v);
            }
            _ => {
                return fail(format!(
                    "berth: unknown option -o {k}: berth takes berth.driver=overlay|bridge and com.docker.network.* options"
                ));
            }
        }
    }
    Ok((driver, options))
}

/// `-p` bindings as berth port mappings.
fn ports(options: &BTreeMap<String, Value>) -> Result<Vec<pb::PortMapping>> {
    let Some(v) = options.get(PORTMAP).filter(|v| !v.is_null()) else {
        return Ok(vec![]);
    };
    let list: Vec<PortBinding> =
        serde_json::from_value(v.clone()).map_err(|e| PluginError(format!("berth: port bindings: {e}")))?;
    let mut out = Vec::new();
    for b in list {
        let protocol = match b.proto {
            6 => pb::PortProtocol::Tcp,
            17 => pb::PortProtocol::Udp,
            p => return fail(format!("berth: port protocol {p} is not supported (tcp or udp)")),
        };
        if b.host_port == 0 {
            return fail(format!(
                "berth: -p {}: name the host port (HOST:CONTAINER); berth does not pick one",
                b.port
            ));
        }
        if b.host_port_end != 0 && b.host_port_end != b.host_port {
            return fail("berth: -p with a range of host ports is not supported");
        }
        out.push(pb::PortMapping {
            host_ip: if b.host_ip == "0.0.0.0" {
                String::new()
            } else {
                b.host_ip
            },
            host_port: b.host_port.into(),
            container_port: b.port.into(),
            protocol: protocol as i32,
        });
    }
    Ok(out)
}

/// The container end's name in the node namespace until dockerd moves it.
fn peer_name(endpoint_id: &str) -> String {
    format!("bd{}", &endpoint_id[..endpoint_id.len().min(12)])
}

impl Plugin {
    pub async fn create_network(self: &std::sync::Arc<Self>, r: CreateNetwork) -> Result<Value> {
        tracing::debug!(network = %r.network_id, options = ?r.options, "docker CreateNetwork");
        if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
            return fail("berth: berth networks are IPv4 only");
        }
        let (driver, options) = parse_options(r.options.get(GENERIC))?;
        let data = r.ipv4_data.unwrap_or_default();
        let [d] = data.as_slice() else {
            return fail("berth: a berth network has exactly one IPv4 subnet");
        };
        let subnet = (d.pool != ANY_POOL).then(|| d.pool.clone());
        let mut s = self.state.lock().await;
        if let Some(n) = s.networks.get(&r.network_id) {
            // Replayed (dockerd restarted): the same answer.
            if n.driver == driver && n.options == options {
                return Ok(json!({}));
            }
        }
        // The pool dockerd asked for just before, for this subnet (pools
        // not yet linked with the same subnet are interchangeable).
        let pool = s
            .pools
            .iter()
            .find(|(_, p)| p.network.is_none() && p.subnet == subnet)
            .map(|(id, _)| id.clone());
        let Some(pool) = pool else {
            return fail(
                "berth: the network's pool did not come from the berth IPAM driver: add --ipam-driver berth",
            );
        };
        if let Some(p) = s.pools.get_mut(&pool) {
            p.network = Some(r.network_id.clone());
        }
        s.networks.insert(
            r.network_id.clone(),
            Network {
                pool,
                driver,
                options,
                name: None,
                berth_id: None,
            },
        );
        self.save(&s)?;
        drop(s);
        self.bind_soon(r.network_id);
        Ok(json!({}))
    }

    pub async fn delete_network(&self, r: NetworkOnly) -> Result<Value> {
        let mut s = self.state.lock().await;
        if let Some(n) = s.networks.remove(&r.network_id) {
            tracing::info!(network = ?n.name, "docker network removed (the berth network stays)");
            self.save(&s)?;
        }
        Ok(json!({}))
    }

    pub async fn create_endpoint(&self, r: CreateEndpoint) -> Result<Value> {
        tracing::debug!(endpoint = %r.endpoint_id, options = ?r.options, "docker CreateEndpoint");
        let iface = r.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return fail("berth: berth networks are IPv4 only");
        }
        let (pool, berth_id) = {
            let s = self.state.lock().await;
            let Some(n) = s.networks.get(&r.network_id) else {
                return fail(format!("berth: unknown docker network {}", r.network_id));
            };
            (n.pool.clone(), n.berth_id.clone())
        };
        let Some(berth_id) = berth_id else {
            return fail("berth: the network is not bound to a berth network");
        };
        let ip = iface.address.split('/').next().unwrap_or_default().to_string();
        let Some(token) = self.state.lock().await.token_of(&pool, &ip) else {
            return fail(format!(
                "berth: address {} was not handed out by berth",
                iface.address
            ));
        };
        let mut sandbox = self.attachment(&token).await;
        let ports = ports(&r.options)?;
        if !ports.is_empty() {
            // Ports are the sandbox's: the address's sandbox is recorded
            // again with them (same address), under berth's port checks.
            self.detach(&token).await?;
            if let Err(e) = self.attach(&token, &berth_id, &ip, ports).await {
                // The address without ports again, for dockerd's ReleaseAddress.
                let _ = self.attach(&token, &berth_id, &ip, vec![]).await;
                return Err(e);
            }
            sandbox = self.attachment(&token).await;
        }
        let Some(sandbox) = sandbox else {
            return fail(format!(
                "berth: the attachment of {ip} is not on this node's agent"
            ));
        };
        let ep = sandbox
            .endpoints
            .first()
            .ok_or_else(|| PluginError("berth: the attachment has no endpoint".into()))?;
        let mac = crate::kernel::link::format_mac(&ep.mac);
        if !iface.mac_address.is_empty() && !iface.mac_address.eq_ignore_ascii_case(&mac) {
            return fail(format!(
                "berth: --mac-address is not supported (berth derives {mac} from the address)"
            ));
        }
        let mut s = self.state.lock().await;
        s.endpoints.insert(
            r.endpoint_id.clone(),
            Endpoint {
                network: r.network_id.clone(),
                token: token.clone(),
                berth_endpoint: ep.id.clone(),
                mac: mac.clone(),
            },
        );
        if let Some(a) = s.addresses.get_mut(&token) {
            a.endpoint = Some(r.endpoint_id.clone());
        }
        self.save(&s)?;
        let mac_out = if iface.mac_address.is_empty() {
            mac
        } else {
            String::new()
        };
        Ok(json!({"Interface": {"MacAddress": mac_out}}))
    }

    pub async fn delete_endpoint(&self, r: EndpointRef) -> Result<Value> {
        let mut s = self.state.lock().await;
        if let Some(e) = s.endpoints.remove(&r.endpoint_id) {
            if let Some(a) = s.addresses.get_mut(&e.token) {
                a.endpoint = None;
            }
            self.save(&s)?;
            drop(s);
            self.remove_links(&e).await?;
        }
        Ok(json!({}))
    }

    /// The host ends of the endpoint's veths (the kernel removes the peers).
    async fn remove_links(&self, e: &Endpoint) -> Result<()> {
        self.remove_veth(&e.berth_endpoint).await?;
        if let Some(s) = self.attachment(&e.token).await {
            for ep in s.endpoints.iter().skip(1) {
                self.remove_veth(&ep.id).await?;
            }
        }
        Ok(())
    }

    pub async fn join(self: &std::sync::Arc<Self>, r: Join, dockerd_pid: i32) -> Result<Value> {
        let Some(e) = self.state.lock().await.endpoints.get(&r.endpoint_id).cloned() else {
            return fail(format!("berth: unknown endpoint {}", r.endpoint_id));
        };
        let Some(sandbox) = self.attachment(&e.token).await else {
            return fail("berth: the endpoint's attachment is not on this node's agent");
        };
        let ep = sandbox
            .endpoints
            .first()
            .ok_or_else(|| PluginError("berth: the attachment has no endpoint".into()))?;
        let Some(net) = self.reconciler.network(&ep.network_id).await else {
            return fail("berth: the endpoint's network is not on this node's agent");
        };
        let h = crate::kernel::netns::netlink(None).await?;
        // The bridge is realised with the sandbox; a pass may still be on it.
        let mut bridge = None;
        for _ in 0..50 {
            if let Some(b) = crate::kernel::link::get(&h, &net.bridge).await? {
                bridge = Some(b);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let Some(bridge) = bridge else {
            return fail(format!(
                "berth: bridge {} of network {} is not on this node",
                net.bridge, net.name
            ));
        };
        let mtu = crate::reconcile::plan::mtu_of(&net, self.underlay_mtu);
        let peer = peer_name(&r.endpoint_id);
        crate::kernel::link::ensure_handoff_veth(
            &h,
            &host_ifname(&ep.id),
            &crate::reconcile::observed::endpoint_mark(&ep.id),
            bridge.index,
            mtu,
            &peer,
            ep.mac,
        )
        .await?;
        tracing::info!(ifname = %peer, ip = %ep.ip, sandbox = %sandbox.name, netns = %r.sandbox_key, "docker join");
        // A bridge network's gateway is on the node; an overlay's is not
        // (overlays touch no routing table): there the container's second
        // interface, on berth_gwbridge, carries the default route, added
        // once dockerd has made the container's namespace.
        let gateway = match net.driver {
            // An internal network gives no way out, so no default route.
            berth_core::model::Driver::Bridge if net.internal => String::new(),
            berth_core::model::Driver::Bridge => net.gateway.to_string(),
            _ => {
                if let Some(gw) = sandbox.endpoints.get(1).cloned() {
                    let me = self.clone();
                    let key = r.sandbox_key.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.attach_gateway(&gw, dockerd_pid, &key).await {
                            tracing::warn!(netns = %key, error = %e.0, "the overlay container gets no outbound interface");
                        }
                    });
                }
                String::new()
            }
        };
        Ok(serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: peer,
                dst_prefix: "eth".into(),
            },
            gateway,
            disable_gateway_service: true,
        })?)
    }

    /// The overlay container's interface on the node's gateway bridge
    /// (berth_gwbridge: outbound masquerade, published ports), inside the
    /// container's namespace, as berth's own overlay sandboxes have it.
    /// dockerd binds the namespace at `key` only when the container starts,
    /// after Join; it is reached through dockerd's root (`/proc/PID/root`).
    async fn attach_gateway(&self, gw: &crate::model::EndpointSpec, pid: i32, key: &str) -> Result<()> {
        let Some(net) = self.reconciler.network(&gw.network_id).await else {
            return fail("berth: the gateway bridge network is not on this node's agent");
        };
        if !key.starts_with('/') || key.split('/').any(|c| c == "..") {
            return fail(format!("berth: sandbox key {key:?} is not an absolute path"));
        }
        let path = if pid > 0 {
            format!("/proc/{pid}/root{key}")
        } else {
            key.to_string()
        };
        let start = std::time::Instant::now();
        loop {
            // The namespace is there once its file is a namespace (nsfs).
            if crate::kernel::netns::verify_net(&path).await.is_ok() {
                break;
            }
            if start.elapsed() > std::time::Duration::from_secs(30) {
                return fail(format!(
                    "berth: container namespace {key} did not appear within 30 s"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let h = crate::kernel::netns::netlink(None).await?;
        let Some(bridge) = crate::kernel::link::get(&h, &net.bridge).await? else {
            return fail(format!("berth: bridge {} is not on this node", net.bridge));
        };
        let host = host_ifname(&gw.id);
        crate::kernel::link::ensure_veth(
            &h,
            &crate::kernel::link::VethSpec {
                host_name: &host,
                master: bridge.index,
                mtu: crate::reconcile::plan::mtu_of(&net, self.underlay_mtu),
                netns: &path,
                peer_name: &gw.ifname,
                peer_mac: gw.mac,
                addr: gw.ip,
                prefix: gw.prefix,
                gateway: Some(net.gateway),
                foreign_netns: true,
            },
        )
        .await?;
        crate::kernel::link::ensure_alias(&h, &host, &crate::reconcile::observed::endpoint_mark(&gw.id))
            .await?;
        tracing::info!(netns = %key, ifname = %gw.ifname, ip = %gw.ip, "overlay container's gateway interface");
        Ok(())
    }

    pub async fn leave(&self, r: EndpointRef) -> Result<Value> {
        let e = self.state.lock().await.endpoints.get(&r.endpoint_id).cloned();
        if let Some(e) = e {
            self.remove_links(&e).await?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_ports() {
        let (d, o) = parse_options(None).unwrap();
        assert_eq!((d.as_str(), o.len()), ("overlay", 0));
        let g = json!({"berth.driver": "bridge", "com.docker.network.driver.mtu": "1400"});
        let (d, o) = parse_options(Some(&g)).unwrap();
        assert_eq!(d, "bridge");
        assert_eq!(o["com.docker.network.driver.mtu"], "1400");
        assert!(
            parse_options(Some(&json!({"berth.driver": "macvlan"})))
                .unwrap_err()
                .0
                .contains("berth.driver")
        );
        assert!(
            parse_options(Some(&json!({"foo": "1"})))
                .unwrap_err()
                .0
                .contains("unknown option -o foo")
        );
        let opts: BTreeMap<String, Value> = [(
            PORTMAP.to_string(),
            json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]),
        )]
        .into();
        let p = ports(&opts).unwrap();
        assert_eq!((p[0].host_port, p[0].container_port), (8080, 80));
        let opts: BTreeMap<String, Value> = [(
            PORTMAP.to_string(),
            json!([{"Proto": 6, "Port": 80, "HostPort": 0}]),
        )]
        .into();
        assert!(ports(&opts).unwrap_err().0.contains("name the host port"));
        assert_eq!(peer_name("0123456789abcdef"), "bd0123456789ab");
    }
}
