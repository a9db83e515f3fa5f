//! Network drivers and scopes, and the built-in networks every cluster has.
use std::fmt;
use std::str::FromStr;

use crate::Invalid;

/// What realises a network on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A Linux bridge per node with NAT to the outside; local scope.
    Bridge,
    /// A Linux bridge per node joined by VXLAN; global scope.
    Overlay,
    /// The node's own network namespace.
    Host,
    /// A namespace with only `lo`.
    Null,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }

    /// Docker's scopes: bridge, host and null networks are defined once but
    /// realised per node (`local`); overlay networks span the cluster (`global`).
    pub fn scope(self) -> Scope {
        match self {
            Driver::Overlay => Scope::Global,
            _ => Scope::Local,
        }
    }

    /// Whether networks of this driver have a subnet and hand out addresses.
    pub fn has_ipam(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Overlay)
    }

    /// The driver of a network a user creates: bridge unless another is
    /// asked for; host and null networks exist once, built in.
    pub fn for_new_network(wanted: Option<Driver>) -> Result<Driver, Invalid> {
        match wanted {
            None | Some(Driver::Bridge) => Ok(Driver::Bridge),
            Some(Driver::Overlay) => Ok(Driver::Overlay),
            Some(d @ (Driver::Host | Driver::Null)) => Err(Invalid::new(
                "driver",
                format!(
                    "only one instance of {:?} network is allowed: use the built-in one",
                    d.as_str()
                ),
            )),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The driver a user names for a new network (`--driver`): empty is
/// bridge, host and null are refused ([`Driver::for_new_network`]).
impl FromStr for Driver {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let named = match s {
            "" => None,
            "bridge" => Some(Driver::Bridge),
            "overlay" => Some(Driver::Overlay),
            "host" => Some(Driver::Host),
            "null" => Some(Driver::Null),
            other => {
                return Err(Invalid::new(
                    "driver",
                    format!("unknown driver {other:?} (use bridge or overlay)"),
                ));
            }
        };
        Driver::for_new_network(named)
    }
}

/// Where a network's addresses are unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Local,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sandbox is attached to its node's network stack (one type for the
/// API server's records and the agent's specs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Its own network namespace with endpoints on bridge or overlay networks.
    Namespace,
    /// The node's own namespace (`--network host`).
    Host,
    /// Its own namespace with only `lo` (`--network none`).
    None,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Namespace => "namespace",
            SandboxMode::Host => "host",
            SandboxMode::None => "none",
        }
    }
}

/// Who asked for a sandbox: berth's own API, or a container runtime through
/// the node's agent (then the network namespace is the runtime's: berth
/// never creates, marks or deletes it, only its own interfaces inside).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxOrigin {
    /// `berth sandbox create` (records written before origins existed too).
    #[default]
    Berth,
    /// The `berth-cni` plugin.
    Cni,
    /// Docker's remote network driver.
    Docker,
}

impl SandboxOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxOrigin::Berth => "berth",
            SandboxOrigin::Cni => "cni",
            SandboxOrigin::Docker => "docker",
        }
    }

    /// Whether the namespace is a runtime's, not one berth names.
    pub fn is_external(self) -> bool {
        self != SandboxOrigin::Berth
    }

    /// Whether a sandbox of this origin is `berth`'s default.
    pub fn is_berth(&self) -> bool {
        *self == SandboxOrigin::Berth
    }
}

impl fmt::Display for SandboxOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name, subnet and bridge device of the default bridge network.
pub const DEFAULT_BRIDGE: (&str, &str, &str) = ("bridge", "172.17.0.0/16", "berth0");
/// Name and bridge device of the per-node gateway network that gives
/// overlay sandboxes outbound access (Docker's `docker_gwbridge`). Created
/// when the first overlay sandbox is, with the next free local subnet.
pub const GW_BRIDGE: &str = "berth_gwbridge";
/// Prefix of the host-side veth of every endpoint (`bv` + 12 hex of its id).
pub const HOST_VETH_PREFIX: &str = "bv";
/// Prefix of the VXLAN device of an overlay network on each node (`vx-` + VNI).
pub const VXLAN_PREFIX: &str = "vx-";
/// Name of the built-in host network.
pub const HOST_NETWORK: &str = "host";
/// Name of the built-in none network.
pub const NONE_NETWORK: &str = "none";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_parse_and_scope() {
        assert_eq!("".parse::<Driver>().unwrap(), Driver::Bridge);
        assert_eq!("overlay".parse::<Driver>().unwrap().scope(), Scope::Global);
        assert_eq!(Driver::Bridge.scope(), Scope::Local);
        assert!("host".parse::<Driver>().is_err());
        let err = "macvlan".parse::<Driver>().unwrap_err();
        assert_eq!(err.field, "driver");
        assert_eq!(serde_json::to_string(&Driver::Null).unwrap(), "\"null\"");
        assert_eq!(
            "null".parse::<Driver>().unwrap_err().to_string(),
            "invalid driver: only one instance of \"null\" network is allowed: use the built-in one"
        );
        assert_eq!(Driver::for_new_network(None).unwrap(), Driver::Bridge);
        assert_eq!(
            Driver::for_new_network(Some(Driver::Overlay)).unwrap(),
            Driver::Overlay
        );
        assert!(Driver::for_new_network(Some(Driver::Host)).is_err());
    }

    /// Records in etcd name the driver in lowercase; every one written so
    /// far must still load.
    #[test]
    fn driver_records_keep_their_encoding() {
        for (d, json) in [
            (Driver::Bridge, "\"bridge\""),
            (Driver::Overlay, "\"overlay\""),
            (Driver::Host, "\"host\""),
            (Driver::Null, "\"null\""),
        ] {
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::from_str::<Driver>(json).unwrap(), d);
        }
    }
}
