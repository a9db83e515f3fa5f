//! The node's own IPv4 routes, which berth's subnets must not shadow: the
//! agent reports them at registration, and the API server's pools skip
//! subnets that overlap them (as Docker skips host routes).
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{Result, io_err, link, nl_err};

/// One route of the node's main table: its destination and the device it
/// leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    pub destination: Ipv4Net,
    pub device: String,
}

/// The unicast routes of the main table, without the default route (it
/// overlaps everything and is what traffic to berth's subnets must not
/// take anyway) and without routes out of berth's own links (marked
/// `berth:…`: the bridges of its networks).
/// Whether a route is in the main table (`RTA_TABLE` when the kernel sent
/// it, the header's 8-bit table otherwise).
pub(crate) fn in_main_table(route: &RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// The routes of `h`'s namespace, which must be the calling thread's (its
/// links are read with [`link::list_here`]).
pub async fn underlay_routes(h: &Handle) -> Result<Vec<NodeRoute>> {
    let links = link::list_here().await?;
    let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = h
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("listing routes"))?;
    let mut out = Vec::new();
    for route in &routes {
        let len = route.header.destination_prefix_length;
        if !in_main_table(route) || len == 0 || route.header.kind != RouteType::Unicast {
            continue;
        }
        let Some(destination) = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Ipv4Net::new(*ip, len).ok(),
            _ => None,
        }) else {
            continue;
        };
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let dev = oif.and_then(|i| links.iter().find(|l| l.index == i));
        if dev.is_some_and(|l| l.alias.as_deref().is_some_and(|a| a.starts_with("berth:"))) {
            continue;
        }
        out.push(NodeRoute {
            destination: destination.trunc(),
            device: dev.map(|l| l.name.clone()).unwrap_or_default(),
        });
    }
    out.sort_by_key(|r| (r.destination, r.device.clone()));
    out.dedup();
    Ok(out)
}

/// [`underlay_routes`] of the namespace this process is in, over a netlink
/// socket of its own.
pub async fn own_underlay_routes() -> Result<Vec<NodeRoute>> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(io_err("opening a netlink socket"))?;
    let task = tokio::spawn(connection);
    let routes = underlay_routes(&handle).await;
    task.abort();
    routes
}
