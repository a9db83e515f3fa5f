//! Published ports (`-p [HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`), validated.
//! The host address is IPv4 or IPv6: none (`-p 8080:80`, or `0.0.0.0`) is
//! every address of the node in both families, `[::]` every IPv6 address
//! only, any other address that one address.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// `None`: every address of the node, IPv4 and IPv6; `Some(::)`:
    /// every IPv6 address of the node; otherwise that one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

fn port(field: &str, p: u32) -> Result<u16, Invalid> {
    match u16::try_from(p) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Invalid::new(field, format!("{p} is not a port (1-65535)"))),
    }
}

impl PortMapping {
    pub fn validate(
        host_ip: &str,
        host_port: u32,
        container_port: u32,
        proto: &str,
    ) -> Result<Self, Invalid> {
        let host_ip = match host_ip {
            "" | "0.0.0.0" => None,
            s => {
                let bare = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
                let ip: IpAddr = bare.parse().map_err(|_| {
                    Invalid::new("publish", format!("host address {s:?} is not an IP address"))
                })?;
                if let IpAddr::V6(v6) = ip
                    && let Some(v4) = v6.to_ipv4_mapped()
                {
                    return Err(Invalid::new(
                        "publish",
                        format!("host address {s}: write the IPv4-mapped address as {v4}"),
                    ));
                }
                if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
                    return Err(Invalid::new(
                        "publish",
                        format!("host address {s} is not a unicast address"),
                    ));
                }
                Some(ip)
            }
        };
        let proto = match proto {
            "" | "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            p => {
                return Err(Invalid::new(
                    "publish",
                    format!("protocol {p:?} is not tcp or udp"),
                ));
            }
        };
        Ok(Self {
            host_ip,
            host_port: port("publish host port", host_port)?,
            container_port: port("publish port", container_port)?,
            proto,
        })
    }

    /// Two mappings clash when they would both receive the same packets: same
    /// protocol and host port, and overlapping host addresses: the same
    /// address, or either on all addresses (both families), or `::` and an
    /// IPv6 address. IPv4 and IPv6 addresses never overlap.
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (None, _) | (_, None) => true,
                (Some(IpAddr::V6(a)), Some(IpAddr::V6(b))) => {
                    a == b || a.is_unspecified() || b.is_unspecified()
                }
                (Some(a), Some(b)) => a == b,
            }
    }

    /// Whether the mapping is published on the node's IPv4 addresses.
    pub fn on_ipv4(&self) -> bool {
        !matches!(self.host_ip, Some(IpAddr::V6(_)))
    }

    /// Whether the mapping is published on the node's IPv6 addresses (all
    /// of them, `[::]` or one), given a target with an IPv6 address.
    pub fn on_ipv6(&self) -> bool {
        !matches!(self.host_ip, Some(IpAddr::V4(_)))
    }

    /// Whether the mapping needs the target to have an IPv6 address: it is
    /// published on IPv6 only (`[::]` or one IPv6 address).
    pub fn needs_ipv6(&self) -> bool {
        matches!(self.host_ip, Some(IpAddr::V6(_)))
    }

    /// Whether the mapping is on `[::1]`, which the kernel cannot DNAT
    /// (IPv6 has no `route_localnet`): the agent proxies it in userland.
    pub fn on_ipv6_loopback(&self) -> bool {
        self.host_ip == Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    /// The host address as inspect shows it (Docker's `HostIp`): `0.0.0.0`
    /// for all addresses, `::` for all IPv6 addresses.
    pub fn host_ip_text(&self) -> String {
        self.host_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .to_string()
    }

    /// `0.0.0.0:8080->80/tcp`, `[::1]:8080->80/tcp`, as `docker ps` shows it.
    pub fn describe(&self) -> String {
        let host = match self.host_ip {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            _ => self.host_ip_text(),
        };
        format!(
            "{host}:{}->{}/{}",
            self.host_port, self.container_port, self.proto
        )
    }
}

/// The UDP port of berth's VXLAN devices (IANA's), on every node's
/// underlay address: never publishable, or overlay traffic would be DNAT-ed
/// into a sandbox.
pub const VXLAN_UDP_PORT: u16 = 4789;

/// A port or an inclusive range of one protocol, as `berth-api
/// --reserved-ports` takes them: `22`, `2379-2380`, `4789/udp` (TCP unless
/// `/udp` is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
    pub proto: Proto,
}

impl PortRange {
    /// One port.
    pub fn one(port: u16, proto: Proto) -> Self {
        Self {
            start: port,
            end: port,
            proto,
        }
    }

    /// Whether `p`'s host port falls in the range, with the same protocol.
    pub fn covers(&self, p: &PortMapping) -> bool {
        self.proto == p.proto && (self.start..=self.end).contains(&p.host_port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}/{}", self.start, self.proto)
        } else {
            write!(f, "{}-{}/{}", self.start, self.end, self.proto)
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ports, proto) = match s.split_once('/') {
            None => (s, Proto::Tcp),
            Some((ports, "tcp")) => (ports, Proto::Tcp),
            Some((ports, "udp")) => (ports, Proto::Udp),
            Some((_, p)) => return Err(format!("{s:?}: protocol {p:?} is not tcp or udp")),
        };
        let one = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{s:?}: {p:?} is not a port (1-65535)")),
            }
        };
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (one(a)?, one(b)?),
            None => {
                let p = one(ports)?;
                (p, p)
            }
        };
        if start > end {
            return Err(format!("{s:?}: the range ends before it starts"));
        }
        Ok(Self { start, end, proto })
    }
}

/// Refuses a list in which two mappings clash with each other.
pub fn check_distinct(ports: &[PortMapping]) -> Result<(), Invalid> {
    for (i, a) in ports.iter().enumerate() {
        if let Some(b) = ports[i + 1..].iter().find(|b| a.clashes(b)) {
            return Err(Invalid::new(
                "publish",
                format!("{} and {} use the same host port", a.describe(), b.describe()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_clashes() {
        let a = PortMapping::validate("", 8080, 80, "tcp").unwrap();
        assert_eq!(a.describe(), "0.0.0.0:8080->80/tcp");
        let b = PortMapping::validate("192.168.205.10", 8080, 81, "").unwrap();
        let c = PortMapping::validate("192.168.205.11", 8080, 82, "tcp").unwrap();
        let u = PortMapping::validate("", 8080, 80, "udp").unwrap();
        assert!(a.clashes(&b) && b.clashes(&a));
        assert!(!b.clashes(&c), "different host addresses");
        assert!(!a.clashes(&u), "different protocols");
        assert!(check_distinct(&[b, c, u]).is_ok());
        assert!(check_distinct(&[a, c]).is_err());
        assert!(PortMapping::validate("", 0, 80, "tcp").is_err());
        assert!(PortMapping::validate("", 70000, 80, "tcp").is_err());
        assert!(PortMapping::validate("", 80, 80, "sctp").is_err());
        assert!(PortMapping::validate("nope", 80, 80, "tcp").is_err());
    }

    #[test]
    fn ipv6_host_addresses() {
        let all = PortMapping::validate("", 8080, 80, "tcp").unwrap();
        let any6 = PortMapping::validate("[::]", 8080, 80, "tcp").unwrap();
        let lo6 = PortMapping::validate("::1", 8080, 81, "tcp").unwrap();
        let one6 = PortMapping::validate("fd99::10", 8080, 82, "tcp").unwrap();
        let two6 = PortMapping::validate("[fd99::11]", 8080, 83, "tcp").unwrap();
        let v4 = PortMapping::validate("192.168.205.10", 8080, 84, "tcp").unwrap();
        assert_eq!(any6.host_ip, Some("::".parse().unwrap()));
        assert_eq!(any6.describe(), "[::]:8080->80/tcp");
        assert_eq!(lo6.host_ip_text(), "::1");
        assert!(lo6.on_ipv6_loopback() && !one6.on_ipv6_loopback());
        assert!(all.on_ipv4() && all.on_ipv6() && !all.needs_ipv6());
        assert!(!any6.on_ipv4() && any6.needs_ipv6());
        assert!(!v4.on_ipv6() && !v4.needs_ipv6());
        // Families apart, except that all addresses overlaps both.
        assert!(all.clashes(&any6) && all.clashes(&one6) && all.clashes(&v4));
        assert!(any6.clashes(&one6) && any6.clashes(&lo6) && one6.clashes(&any6));
        assert!(!one6.clashes(&two6) && !one6.clashes(&lo6));
        assert!(!v4.clashes(&any6) && !v4.clashes(&one6) && !any6.clashes(&v4));
        assert!(check_distinct(&[v4, one6, two6, lo6]).is_ok());
        assert!(check_distinct(&[v4, any6, one6]).is_err());
        for bad in [
            "[fd99::1",
            "::ffff:10.0.0.1",
            "ff02::1",
            "224.0.0.1",
            "255.255.255.255",
            "[1.2.3.4]x",
        ] {
            assert!(PortMapping::validate(bad, 80, 80, "tcp").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "2379-2380".parse().unwrap();
        assert_eq!(
            r,
            PortRange {
                start: 2379,
                end: 2380,
                proto: Proto::Tcp
            }
        );
        assert_eq!(r.to_string(), "2379-2380/tcp");
        let u: PortRange = "4789/udp".parse().unwrap();
        assert_eq!(u, PortRange::one(4789, Proto::Udp));
        assert_eq!(u.to_string(), "4789/udp");
        assert_eq!(
            "22/tcp".parse::<PortRange>().unwrap(),
            PortRange::one(22, Proto::Tcp)
        );
        let m = |port: u32, proto: &str| PortMapping::validate("", port, 80, proto).unwrap();
        assert!(r.covers(&m(2379, "tcp")) && r.covers(&m(2380, "tcp")));
        assert!(!r.covers(&m(2381, "tcp")) && !r.covers(&m(2379, "udp")));
        for bad in ["", "0", "65536", "x", "22/sctp", "10-5", "1-", "-1"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }
}
