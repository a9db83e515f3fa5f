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
}
