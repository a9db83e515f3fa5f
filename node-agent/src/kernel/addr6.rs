//! IPv6 of dual-stack networks over rtnetlink: global addresses (added with
//! `IFA_F_NODAD`, so they are usable at once), the IPv6 default route, and
//! switching IPv6 on for one interface of a sandbox (new namespaces start
//! with it off, see `netns::create`).
//!
//! Link-local addresses (fe80::/10) are the kernel's: never listed as the
//! link's addresses here, never removed.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::route::RouteAddress;
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::info;

use super::{Result, netlink_errno, netns, nl_err, sysctl};

fn is_link_local(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

fn ipv6_of(msg: &AddressMessage) -> Option<(Ipv6Addr, u8)> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        })
        .filter(|ip| !is_link_local(ip))
        .map(|ip| (ip, msg.header.prefix_len))
}

/// The global IPv6 addresses of link `index` of the calling thread's
/// namespace, the kernel filtering by link ([`super::dump`]).
pub async fn ipv6_addrs_here(index: u32) -> Result<Vec<(Ipv6Addr, u8)>> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.index = index;
    super::dump::dump(
        "listing IPv6 addresses",
        netlink_packet_route::RouteNetlinkMessage::GetAddress(msg),
        move |m| match m {
            netlink_packet_route::RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                ipv6_of(&a)
            }
            _ => None,
        },
    )
    .await
}

/// Every global IPv6 address in the handle's namespace, by link index.
pub async fn ipv6_addrs_all(h: &Handle) -> Result<HashMap<u32, Vec<(Ipv6Addr, u8)>>> {
    let mut request = h.address().get();
    request.message_mut().header.family = AddressFamily::Inet6;
    let mut out: HashMap<u32, Vec<(Ipv6Addr, u8)>> = HashMap::new();
    let mut messages = request.execute();
    while let Some(msg) = messages
        .try_next()
        .await
        .map_err(nl_err("listing IPv6 addresses"))?
    {
        if let Some(a) = ipv6_of(&msg) {
            out.entry(msg.header.index).or_default().push(a);
        }
    }
    Ok(out)
}

/// The global IPv6 addresses of link `index`.
pub async fn ipv6_addrs(h: &Handle, index: u32) -> Result<Vec<(Ipv6Addr, u8)>> {
    Ok(ipv6_addrs_all(h).await?.remove(&index).unwrap_or_default())
}

/// Adds `ip/prefix` to link `index` without duplicate address detection
/// (berth's addresses are unique by allocation); `Ok(false)` if it was there.
pub async fn add_ipv6(h: &Handle, index: u32, ip: Ipv6Addr, prefix: u8) -> Result<bool> {
    let mut req = h.address().add(index, IpAddr::V6(ip), prefix);
    let msg = req.message_mut();
    msg.header.flags = AddressHeaderFlags::Nodad;
    msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl_err(format!("adding address {ip}/{prefix} to link {index}"))(e)),
    }
}

/// Removes `ip/prefix` from link `index`; `Ok(false)` if it was not there.
pub async fn del_ipv6(h: &Handle, index: u32, ip: Ipv6Addr, prefix: u8) -> Result<bool> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.attributes.push(AddressAttribute::Address(IpAddr::V6(ip)));
    match h.address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(nl_err(format!(
            "removing address {ip}/{prefix} from link {index}"
        ))(e)),
    }
}

/// Makes `want` the only global IPv6 address of link `index` (`None`: none);
/// returns whether anything changed. `netns` and `ifname` are for the log.
pub async fn ensure_only_ipv6(
    h: &Handle,
    index: u32,
    want: Option<(Ipv6Addr, u8)>,
    netns: Option<&str>,
    ifname: &str,
) -> Result<bool> {
    let have = ipv6_addrs(h, index).await?;
    let mut changed = false;
    for &(ip, prefix) in have.iter().filter(|a| Some(**a) != want) {
        if del_ipv6(h, index, ip, prefix).await? {
            info!(netns, ifname, ip = %ip, prefix, "removed address");
            changed = true;
        }
    }
    if let Some((ip, prefix)) = want
        && !have.contains(&(ip, prefix))
        && add_ipv6(h, index, ip, prefix).await?
    {
        info!(netns, ifname, ip = %ip, prefix, "added address");
        changed = true;
    }
    Ok(changed)
}

/// The IPv6 default route of the main table: gateway and output interface
/// (the first default route with an IPv6 gateway).
pub async fn default_route6(h: &Handle) -> Result<Option<(Ipv6Addr, Option<u32>)>> {
    let routes = super::link::main_default_routes(h, RouteMessageBuilder::<Ipv6Addr>::new().build()).await?;
    Ok(routes
        .iter()
        .find_map(|route| match super::link::gateway_and_oif(route) {
            (Some(RouteAddress::Inet6(ip)), oif) => Some((*ip, oif)),
            _ => None,
        }))
}

/// `ip -6 route replace default via GATEWAY dev OIF`.
pub async fn replace_default_route6(h: &Handle, gateway: Ipv6Addr, oif: u32) -> Result<()> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new()
        .gateway(gateway)
        .output_interface(oif)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(nl_err(format!("setting IPv6 default route via {gateway}")))
}

/// Switches IPv6 on for interface `ifname` of namespace `netns` (off for
/// everything else there) with duplicate address detection off; returns
/// whether anything changed. QUIRK: an address cannot be added while
/// `disable_ipv6` is 1 (EACCES), so this comes first.
pub async fn enable_on(netns: &str, ifname: &str) -> Result<bool> {
    let ifname = ifname.to_owned();
    netns::run_in(netns, move || -> Result<bool> {
        let mut changed = sysctl::set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")?;
        changed |= sysctl::set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
        Ok(changed)
    })
    .await?
}
