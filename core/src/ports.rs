//! Published ports (`-p [HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`), validated.
use std::fmt;
use std::net::Ipv4Addr;

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
    /// `None`: every address of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
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
            s if s
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::Ipv6Addr>()
                .is_ok() =>
            {
                return Err(Invalid::new(
                    "publish",
                    format!("host address {s}: IPv6 published ports are not supported yet"),
                ));
            }
            s => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                Invalid::new("publish", format!("host address {s:?} is not an IPv4 address"))
            })?),
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
    /// protocol and host port, and the same host address or either on all.
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    /// `0.0.0.0:8080->80/tcp`, as `docker ps` shows it.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.proto
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
