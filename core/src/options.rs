//! Network options, under Docker's keys so Docker users' habits carry over.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::Invalid;
use crate::model::Driver;
use crate::names::validate_bridge_name;

pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const MTU: &str = "com.docker.network.driver.mtu";

/// Every option key berth knows, with the drivers it applies to.
pub const KNOWN: &[(&str, &[Driver])] = &[
    (BRIDGE_NAME, &[Driver::Bridge]),
    (ENABLE_ICC, &[Driver::Bridge]),
    (ENABLE_IP_MASQUERADE, &[Driver::Bridge]),
    (HOST_BINDING_IPV4, &[Driver::Bridge]),
    (MTU, &[Driver::Bridge, Driver::Overlay]),
];

/// The options of one network, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    pub bridge_name: Option<String>,
    pub enable_icc: bool,
    pub enable_ip_masquerade: bool,
    pub host_binding_ipv4: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            bridge_name: None,
            enable_icc: true,
            enable_ip_masquerade: true,
            host_binding_ipv4: None,
            mtu: None,
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Invalid> {
    match v {
        "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(Invalid::new(
            format!("option {key}"),
            format!("{v:?} is not true or false"),
        )),
    }
}

impl NetworkOptions {
    /// Parses `options` for a network of `driver`; unknown keys and keys of
    /// other drivers are refused.
    pub fn parse(driver: Driver, options: &BTreeMap<String, String>) -> Result<Self, Invalid> {
        crate::limits::check_options(options)?;
        let mut out = NetworkOptions::default();
        for (k, v) in options {
            let Some((_, drivers)) = KNOWN.iter().find(|(key, _)| key == k) else {
                let keys: Vec<_> = KNOWN.iter().map(|(k, _)| *k).collect();
                return Err(Invalid::new(
                    "option",
                    format!("unknown option {k:?} (known: {})", keys.join(", ")),
                ));
            };
            if !drivers.contains(&driver) {
                return Err(Invalid::new(
                    "option",
                    format!("option {k:?} does not apply to driver {driver}"),
                ));
            }
            match k.as_str() {
                BRIDGE_NAME => {
                    // Named by the key alone: "invalid com.docker.network.bridge.name: …".
                    validate_bridge_name(BRIDGE_NAME, v)?;
                    out.bridge_name = Some(v.clone());
                }
                ENABLE_ICC => out.enable_icc = parse_bool(k, v)?,
                ENABLE_IP_MASQUERADE => out.enable_ip_masquerade = parse_bool(k, v)?,
                HOST_BINDING_IPV4 => {
                    out.host_binding_ipv4 = Some(v.parse().map_err(|_| {
                        Invalid::new(format!("option {k}"), format!("{v:?} is not an IPv4 address"))
                    })?)
                }
                MTU => {
                    let mtu: u32 = v
                        .parse()
                        .map_err(|_| Invalid::new(format!("option {k}"), format!("{v:?} is not a number")))?;
                    if !(68..=65535).contains(&mtu) {
                        return Err(Invalid::new(
                            format!("option {k}"),
                            format!("{mtu} is outside 68-65535"),
                        ));
                    }
                    out.mtu = Some(mtu);
                }
                _ => unreachable!("every KNOWN key is matched above"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_known_keys() {
        let o = NetworkOptions::parse(
            Driver::Bridge,
            &opts(&[(ENABLE_ICC, "false"), (MTU, "1400"), (BRIDGE_NAME, "br-test")]),
        )
        .unwrap();
        assert!(!o.enable_icc);
        assert!(o.enable_ip_masquerade);
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.bridge_name.as_deref(), Some("br-test"));
    }

    #[test]
    fn refuses_unknown_and_bad_values() {
        let e = NetworkOptions::parse(Driver::Bridge, &opts(&[("foo", "1")])).unwrap_err();
        assert!(e.reason.contains("unknown option"), "{e}");
        assert!(NetworkOptions::parse(Driver::Bridge, &opts(&[(MTU, "20")])).is_err());
        assert!(NetworkOptions::parse(Driver::Bridge, &opts(&[(ENABLE_ICC, "maybe")])).is_err());
        assert!(NetworkOptions::parse(Driver::Bridge, &opts(&[(BRIDGE_NAME, "way-too-long-name")])).is_err());
        assert!(NetworkOptions::parse(Driver::Overlay, &opts(&[(ENABLE_ICC, "false")])).is_err());
        assert!(NetworkOptions::parse(Driver::Overlay, &opts(&[(MTU, "1400")])).is_ok());
    }

    #[test]
    fn refuses_hostile_and_reserved_bridge_names() {
        let refused = |name: &str| {
            NetworkOptions::parse(Driver::Bridge, &opts(&[(BRIDGE_NAME, name)])).expect_err(name)
        };
        for name in ["a\"b", "e*", "x;y", "{", "", ".", "..", "a b", "0123456789abcdef"] {
            let e = refused(name);
            assert_eq!(e.field, BRIDGE_NAME, "{name:?}: {e}");
        }
        assert!(refused("e*").reason.contains("only [A-Za-z0-9_.-]"));
        assert!(
            refused("0123456789abcdef")
                .reason
                .contains("longer than 15 bytes")
        );
        for (name, why) in [
            ("berth0", "reserved for the bridge of the built-in network"),
            ("berth_gwbridge", "reserved for the gateway bridge"),
            ("bv1", "reserved for berth's veths"),
            ("vx-10", "reserved for berth's VXLAN devices"),
        ] {
            let e = refused(name);
            assert_eq!(e.field, BRIDGE_NAME);
            assert!(e.reason.contains(why), "{name}: {e}");
        }
        assert_eq!(
            refused("bv1").to_string(),
            "invalid com.docker.network.bridge.name: \"bv1\" uses the prefix bv, reserved for berth's veths"
        );
    }
}
