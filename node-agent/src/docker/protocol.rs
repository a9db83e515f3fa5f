//! Docker's plugin wire types (`application/vnd.docker.plugins.v1.2+json`):
//! the remote network driver's and the remote IPAM driver's requests and
//! answers, as dockerd 20.10 sends and reads them (Go's field names).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Generic driver options (`-o K=V`) inside CreateNetwork's `Options`.
pub const GENERIC: &str = "com.docker.network.generic";
/// RequestAddress's option marking the network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// A pool's `Data` key carrying its gateway (then dockerd asks for none).
pub const DATA_GATEWAY: &str = "com.docker.network.gateway";
/// Port bindings in CreateEndpoint's and ProgramExternalConnectivity's options.
pub const PORTMAP: &str = "com.docker.network.portmap";
/// The address space berth answers for both scopes.
pub const ADDRESS_SPACE: &str = "berth";
/// A pool without a subnet (`docker network create` without `--subnet`):
/// berth's network's subnet, known only once the network's name is.
pub const ANY_POOL: &str = "0.0.0.0/0";

/// dockerd sends `null` for empty maps.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "null_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkOnly {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
}

/// DeleteEndpoint, EndpointOperInfo, Leave, Revoke/ProgramExternalConnectivity.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    #[serde(deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    pub disable_gateway_service: bool,
}

/// One `-p` binding as dockerd sends it (libnetwork's `types.PortBinding`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// 6 tcp, 17 udp, 132 sctp.
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_empty() {
        let r: RequestAddress =
            serde_json::from_str(r#"{"PoolID":"p","Address":"","Options":null}"#).unwrap();
        assert!(r.options.is_empty());
        let j: Join =
            serde_json::from_str(r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/k","Options":null}"#)
                .unwrap();
        assert_eq!(j.sandbox_key, "/k");
    }
}
