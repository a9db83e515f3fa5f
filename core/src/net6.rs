//! IPv6 arithmetic for dual-stack networks: subnet and address checks, the
//! ULA pools new networks take their /64 from, and the gateway default.
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::Invalid;

/// Smallest IPv6 prefix accepted (a /48 holds 65,536 /64s).
pub const MIN_PREFIX6: u8 = 48;
/// Largest IPv6 prefix accepted: a /124 still has a gateway and 14 addresses.
pub const MAX_PREFIX6: u8 = 124;
/// Prefix of the subnets taken from the pools.
pub const POOL_PREFIX6: u8 = 64;

/// Local-scope (bridge) IPv6 pool: `fd42:be47:1::/48` in /64s.
pub const LOCAL_POOL6: &str = "fd42:be47:1::/48";
/// Global-scope (overlay) IPv6 pool: `fd42:be47:2::/48` in /64s.
pub const GLOBAL_POOL6: &str = "fd42:be47:2::/48";

/// Human description of [`local_pool6`] for error messages.
pub const LOCAL_POOL6_TEXT: &str = "fd42:be47:1::/48 in /64s";
/// Human description of [`global_pool6`] for error messages.
pub const GLOBAL_POOL6_TEXT: &str = "fd42:be47:2::/48 in /64s";

fn pool(base: &str) -> impl Iterator<Item = Ipv6Net> {
    let base: Ipv6Net = base.parse().expect("valid pool");
    base.subnets(POOL_PREFIX6).expect("a /64 fits a /48")
}

/// The /64s of the local pool, in order.
pub fn local_pool6() -> impl Iterator<Item = Ipv6Net> {
    pool(LOCAL_POOL6)
}

/// The /64s of the global pool, in order.
pub fn global_pool6() -> impl Iterator<Item = Ipv6Net> {
    pool(GLOBAL_POOL6)
}

/// Parses an IPv6 subnet in CIDR form; host bits must be zero.
pub fn parse_subnet6(field: &str, value: &str) -> Result<Ipv6Net, Invalid> {
    let net: Ipv6Net = value.parse().map_err(|_| {
        Invalid::new(
            field,
            format!("{value:?} is not an IPv6 CIDR such as fd00:1::/64"),
        )
    })?;
    if net.network() != net.addr() {
        return Err(Invalid::new(
            field,
            format!("{value:?} has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    if !(MIN_PREFIX6..=MAX_PREFIX6).contains(&net.prefix_len()) {
        return Err(Invalid::new(
            field,
            format!("IPv6 prefix length must be between /{MIN_PREFIX6} and /{MAX_PREFIX6}"),
        ));
    }
    let a = net.addr();
    let link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
    if a.is_loopback() || a.is_multicast() || a.is_unspecified() || link_local || a.to_ipv4_mapped().is_some()
    {
        return Err(Invalid::new(
            field,
            format!("{value:?} is not a usable unicast IPv6 range"),
        ));
    }
    Ok(net)
}

/// Parses an IPv6 address.
pub fn parse_ip6(field: &str, value: &str) -> Result<Ipv6Addr, Invalid> {
    value
        .parse()
        .map_err(|_| Invalid::new(field, format!("{value:?} is not an IPv6 address")))
}

/// Checks a gateway: inside the subnet, not its subnet-router anycast
/// (network) address.
pub fn check_gateway6(subnet: Ipv6Net, gateway: Ipv6Addr) -> Result<(), Invalid> {
    if !subnet.contains(&gateway) {
        return Err(Invalid::new(
            "gateway",
            format!("{gateway} is outside the subnet {subnet}"),
        ));
    }
    if gateway == subnet.network() {
        return Err(Invalid::new(
            "gateway",
            format!("{gateway} is the subnet-router anycast address of {subnet}"),
        ));
    }
    Ok(())
}

/// Checks that `ip` may be handed to an endpoint: inside the subnet, not its
/// network address, not the gateway.
pub fn check_assignable6(
    field: &str,
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    ip: Ipv6Addr,
) -> Result<(), Invalid> {
    if !subnet.contains(&ip) {
        return Err(Invalid::new(
            field,
            format!("{ip} is outside the subnet {subnet}"),
        ));
    }
    if ip == subnet.network() {
        return Err(Invalid::new(
            field,
            format!("{ip} is the subnet-router anycast address of {subnet}"),
        ));
    }
    if ip == gateway {
        return Err(Invalid::new(field, format!("{ip} is the gateway of {subnet}")));
    }
    Ok(())
}

/// The default gateway: the subnet's first address after the network one.
pub fn default_gateway6(subnet: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// Whether two subnets share any address.
pub fn overlaps6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first pool subnet that overlaps none of `taken`.
pub fn first_free6(pool: impl Iterator<Item = Ipv6Net>, taken: &[Ipv6Net]) -> Option<Ipv6Net> {
    pool.into_iter()
        .find(|cand| !taken.iter().any(|t| overlaps6(*cand, *t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_and_checks() {
        assert_eq!(
            parse_subnet6("subnet", "fd00:1::/64").unwrap(),
            net("fd00:1::/64")
        );
        assert!(
            parse_subnet6("subnet", "fd00:1::5/64")
                .unwrap_err()
                .reason
                .contains("fd00:1::/64")
        );
        assert!(parse_subnet6("subnet", "10.0.0.0/24").is_err());
        assert!(parse_subnet6("subnet", "fd00::/32").is_err());
        assert!(parse_subnet6("subnet", "fe80::/64").is_err());
        assert!(parse_subnet6("subnet", "ff02::/64").is_err());
        let s = net("fd00:1::/64");
        let gw = default_gateway6(s);
        assert_eq!(gw, "fd00:1::1".parse::<Ipv6Addr>().unwrap());
        assert!(check_gateway6(s, "fd00:1::".parse().unwrap()).is_err());
        assert!(check_gateway6(s, "fd00:2::1".parse().unwrap()).is_err());
        assert!(check_assignable6("ip6", s, gw, gw).is_err());
        assert!(check_assignable6("ip6", s, gw, "fd00:1::ffff:ffff:ffff:ffff".parse().unwrap()).is_ok());
    }

    #[test]
    fn pools_are_ula_64s_apart_per_scope() {
        assert_eq!(local_pool6().next().unwrap(), net("fd42:be47:1::/64"));
        assert_eq!(global_pool6().next().unwrap(), net("fd42:be47:2::/64"));
        assert_eq!(local_pool6().count(), 65536);
        let taken = [net("fd42:be47:1::/64"), net("fd42:be47:1:1::/80")];
        assert_eq!(
            first_free6(local_pool6(), &taken),
            Some(net("fd42:be47:1:2::/64"))
        );
        assert!(!local_pool6().any(|l| global_pool6().take(4).any(|g| overlaps6(l, g))));
    }
}
