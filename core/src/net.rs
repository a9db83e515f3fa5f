//! IPv4 arithmetic: subnet checks, Docker's address pools, reserved
//! addresses, and the MAC address derived from an IP.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Invalid;

/// Smallest prefix accepted for a network (a /8 is already 16M addresses).
pub const MIN_PREFIX: u8 = 8;
/// Largest prefix accepted: a /30 still has a gateway and one usable address.
pub const MAX_PREFIX: u8 = 30;

/// Parses a subnet in CIDR form; host bits must be zero.
pub fn parse_subnet(field: &str, value: &str) -> Result<Ipv4Net, Invalid> {
    let net: Ipv4Net = value.parse().map_err(|_| {
        Invalid::new(
            field,
            format!("{value:?} is not an IPv4 CIDR such as 172.20.0.0/16"),
        )
    })?;
    if net.network() != net.addr() {
        return Err(Invalid::new(
            field,
            format!("{value:?} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&net.prefix_len()) {
        return Err(Invalid::new(
            field,
            format!("prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"),
        ));
    }
    if net.addr().is_loopback()
        || net.addr().is_multicast()
        || net.addr().is_unspecified()
        || net.addr().octets()[0] >= 224
    {
        return Err(Invalid::new(
            field,
            format!("{value:?} is not a usable unicast range"),
        ));
    }
    Ok(net)
}

/// Parses an IPv4 address.
pub fn parse_ip(field: &str, value: &str) -> Result<Ipv4Addr, Invalid> {
    value
        .parse()
        .map_err(|_| Invalid::new(field, format!("{value:?} is not an IPv4 address")))
}

/// Checks that `ip` may be handed to an endpoint of `subnet` whose gateway is
/// `gateway`: inside the subnet, not its network, broadcast or gateway address.
pub fn check_assignable(
    field: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    ip: Ipv4Addr,
) -> Result<(), Invalid> {
    if !subnet.contains(&ip) {
        return Err(Invalid::new(
            field,
            format!("{ip} is outside the subnet {subnet}"),
        ));
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Invalid::new(
            field,
            format!("{ip} is the network or broadcast address of {subnet}"),
        ));
    }
    if ip == gateway {
        return Err(Invalid::new(field, format!("{ip} is the gateway of {subnet}")));
    }
    Ok(())
}

/// Checks a gateway: inside the subnet, not its network or broadcast address.
pub fn check_gateway(subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<(), Invalid> {
    if !subnet.contains(&gateway) {
        return Err(Invalid::new(
            "gateway",
            format!("{gateway} is outside the subnet {subnet}"),
        ));
    }
    if gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(Invalid::new(
            "gateway",
            format!("{gateway} is the network or broadcast address of {subnet}"),
        ));
    }
    Ok(())
}

/// The default gateway of a subnet: its first host address.
pub fn default_gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Addresses that endpoints may get, lowest first (network, broadcast and
/// gateway excluded).
pub fn assignable(subnet: Ipv4Net, gateway: Ipv4Addr) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    (first..=last)
        .map(Ipv4Addr::from)
        .filter(move |ip| *ip != gateway)
}

/// Whether two subnets share any address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Docker's default local pools for bridge networks, in order:
/// 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16 split into /20s.
/// (172.17.0.0/16 is taken by the built-in `bridge` network.)
pub fn local_pool() -> impl Iterator<Item = Ipv4Net> {
    let a = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid /16"));
    let b = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid /20"));
    a.chain(b)
}

/// Human description of [`local_pool`] for error messages.
pub const LOCAL_POOL_TEXT: &str = "172.17.0.0/16-172.31.0.0/16 and 192.168.0.0/16 in /20s";

/// Docker's global pool for overlay networks: 10.0.0.0/8 split into /24s.
pub fn global_pool() -> impl Iterator<Item = Ipv4Net> {
    (0u32..65536).map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).expect("valid /24"))
}

/// Human description of [`global_pool`] for error messages.
pub const GLOBAL_POOL_TEXT: &str = "10.0.0.0/8 in /24s";

/// The first pool subnet that overlaps none of `taken`.
pub fn first_free(pool: impl Iterator<Item = Ipv4Net>, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    pool.into_iter()
        .find(|cand| !taken.iter().any(|t| overlaps(*cand, *t)))
}

/// The MAC address Docker derives from an IPv4 address: `02:42:` followed by
/// the four address bytes.
pub fn mac_from_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Formats a MAC address as `02:42:ac:11:00:02`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_parsing() {
        assert_eq!(
            parse_subnet("subnet", "172.20.0.0/16").unwrap(),
            net("172.20.0.0/16")
        );
        let e = parse_subnet("subnet", "172.20.0.5/16").unwrap_err();
        assert!(e.reason.contains("172.20.0.0/16"), "{e}");
        assert!(parse_subnet("subnet", "nope").is_err());
        assert!(parse_subnet("subnet", "10.0.0.0/31").is_err());
        assert!(parse_subnet("subnet", "10.0.0.0/7").is_err());
        assert!(parse_subnet("subnet", "127.0.0.0/8").is_err());
        assert!(parse_subnet("subnet", "224.0.0.0/8").is_err());
    }

    #[test]
    fn gateway_and_assignable() {
        let s = net("10.1.0.0/30");
        assert_eq!(default_gateway(s), Ipv4Addr::new(10, 1, 0, 1));
        assert!(check_gateway(s, Ipv4Addr::new(10, 1, 0, 0)).is_err());
        assert!(check_gateway(s, Ipv4Addr::new(10, 1, 0, 3)).is_err());
        assert!(check_gateway(s, Ipv4Addr::new(10, 2, 0, 1)).is_err());
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        assert_eq!(
            assignable(s, gw).collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 1, 0, 2)]
        );
        assert!(check_assignable("ip", s, gw, gw).is_err());
        assert!(check_assignable("ip", s, gw, Ipv4Addr::new(10, 1, 0, 3)).is_err());
        assert!(check_assignable("ip", s, gw, Ipv4Addr::new(10, 1, 0, 2)).is_ok());
    }

    #[test]
    fn pools_follow_docker() {
        let local: Vec<_> = local_pool().collect();
        assert_eq!(local[0], net("172.17.0.0/16"));
        assert_eq!(local[14], net("172.31.0.0/16"));
        assert_eq!(local[15], net("192.168.0.0/20"));
        assert_eq!(local.len(), 15 + 16);
        assert_eq!(global_pool().next().unwrap(), net("10.0.0.0/24"));
        assert_eq!(global_pool().last().unwrap(), net("10.255.255.0/24"));
        let taken = [net("172.17.0.0/16"), net("172.18.5.0/24")];
        assert_eq!(first_free(local_pool(), &taken), Some(net("172.19.0.0/16")));
        assert!(overlaps(net("10.0.0.0/8"), net("10.3.0.0/24")));
        assert!(!overlaps(net("10.0.0.0/24"), net("10.0.1.0/24")));
    }

    #[test]
    fn docker_mac() {
        let mac = mac_from_ip(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(mac), "02:42:ac:11:00:02");
    }
}
