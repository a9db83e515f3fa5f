//! Static forwarding entries of a VXLAN device: FDB entries (remote MAC →
//! remote VTEP, plus one all-zero entry per remote VTEP so broadcast and
//! unknown unicast reach every node of the network) and permanent neighbour
//! entries (remote IP → MAC, answered locally because the device runs with
//! `proxy` on, which answers IPv6 neighbour solicitations from them too).
//! Equivalent to `bridge fdb append … dev vx-N dst VTEP` and
//! `ip neigh replace IP lladdr MAC dev vx-N nud permanent`. The overlay
//! bridge learns nothing on its VXLAN port: it gets a static entry per
//! remote MAC instead (`bridge fdb replace MAC dev vx-N master static`), so
//! a departed endpoint leaves no learned entry behind.
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use super::{KernelError, Result, netlink_errno, nl_err};

/// The all-zero MAC: the flooding entry of a VXLAN FDB.
pub const ZERO_MAC: [u8; 6] = [0; 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    /// IPv4, or IPv6 for a dual-stack overlay's endpoint.
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// The link-layer address of a neighbour or FDB message.
pub(crate) fn mac_of(attrs: &[NeighbourAttribute]) -> Option<[u8; 6]> {
    attrs.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
        _ => None,
    })
}

fn dst_of(attrs: &[NeighbourAttribute]) -> Option<Ipv4Addr> {
    attrs.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // In AF_BRIDGE messages the parser cannot know NDA_DST's family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// An AF_BRIDGE neighbour message for `mac` on device `ifindex`.
fn bridge_message(
    ifindex: u32,
    mac: [u8; 6],
    state: NeighbourState,
    flags: NeighbourFlags,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = state;
    m.header.flags = flags;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// The VXLAN device's own (`self`) permanent entry: `mac` → `dst`.
fn fdb_message(ifindex: u32, e: FdbEntry) -> NeighbourMessage {
    let mut m = bridge_message(ifindex, e.mac, NeighbourState::Permanent, NeighbourFlags::Own);
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(e.dst)));
    m
}

/// Permanent FDB entries with a destination on device `ifindex`.
pub async fn fdb_list(h: &Handle, ifindex: u32) -> Result<Vec<FdbEntry>> {
    Ok(fdb_read(h, ifindex).await?.0.into_iter().collect())
}

/// One dump of the bridge-family table, for device `ifindex`: its own
/// (`self`) permanent entries with a destination, and the MACs its bridge
/// forwards to it (`master` entries, static or learned; the port's own
/// local entry is left out).
pub async fn fdb_read(h: &Handle, ifindex: u32) -> Result<(BTreeSet<FdbEntry>, BTreeSet<[u8; 6]>)> {
    // Dump them all and filter here: with ndm_ifindex set in the request
    // this kernel returns nothing for a VXLAN port.
    let req = h.neighbours().get().set_address_family(AddressFamily::Bridge);
    // Filtered as they arrive: the table holds entries of every port.
    let mut msgs = req.execute();
    let (mut own, mut bridged) = (BTreeSet::new(), BTreeSet::new());
    while let Some(m) = msgs
        .try_next()
        .await
        .map_err(nl_err(format!("listing fdb of link {ifindex}")))?
    {
        if m.header.ifindex != ifindex {
            continue;
        }
        let master = m
            .attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::Controller(_)));
        if master && !m.header.flags.contains(NeighbourFlags::Own) {
            if m.header.state != NeighbourState::Permanent
                && let Some(mac) = mac_of(&m.attributes)
            {
                bridged.insert(mac);
            }
        } else if m.header.state == NeighbourState::Permanent
            && let (Some(mac), Some(dst)) = (mac_of(&m.attributes), dst_of(&m.attributes))
        {
            own.insert(FdbEntry { mac, dst });
        }
    }
    Ok((own, bridged))
}

/// The bridge's (`master`) static entry for `mac` on port `ifindex`.
fn port_mac_message(ifindex: u32, mac: [u8; 6]) -> NeighbourMessage {
    bridge_message(ifindex, mac, NeighbourState::Noarp, NeighbourFlags::Controller)
}

/// A static entry in the bridge of port `ifindex`: frames to `mac` go out
/// of that port (`bridge fdb replace MAC dev PORT master static`).
pub async fn port_mac_add(h: &Handle, ifindex: u32, mac: [u8; 6]) -> Result<()> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(port_mac_message(ifindex, mac)));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let mut handle = h.clone();
    let mut resp = handle.request(req).map_err(nl_err("sending bridge fdb add"))?;
    while let Some(msg) = resp.next().await {
        if let NetlinkPayload::Error(err) = msg.payload
            && err.code.is_some()
        {
            return Err(KernelError::Netlink {
                op: format!("adding bridge fdb {} on port {ifindex}", fmt_mac(&mac)),
                source: rtnetlink::Error::NetlinkError(err),
            });
        }
    }
    Ok(())
}

/// Deletes the bridge's entry for `mac` on port `ifindex` (static or
/// learned); a missing one is success.
pub async fn port_mac_del(h: &Handle, ifindex: u32, mac: [u8; 6]) -> Result<()> {
    match h.neighbours().del(port_mac_message(ifindex, mac)).execute().await {
        Err(err) if matches!(netlink_errno(&err), Some(libc::ENOENT)) => Ok(()),
        res => res.map_err(nl_err(format!(
            "deleting bridge fdb {} on port {ifindex}",
            fmt_mac(&mac)
        ))),
    }
}

/// Adds an FDB entry; `append` allows several destinations for one MAC
/// (the all-zero flooding entry). An existing identical entry is success.
pub async fn fdb_add(h: &Handle, ifindex: u32, e: FdbEntry) -> Result<()> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, e)));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut handle = h.clone();
    let mut resp = handle.request(req).map_err(nl_err("sending fdb add"))?;
    while let Some(msg) = resp.next().await {
        if let NetlinkPayload::Error(err) = msg.payload {
            let e2 = rtnetlink::Error::NetlinkError(err);
            if netlink_errno(&e2) == Some(libc::EEXIST) {
                return Ok(());
            }
            return Err(KernelError::Netlink {
                op: format!("adding fdb {} dst {}", fmt_mac(&e.mac), e.dst),
                source: e2,
            });
        }
    }
    Ok(())
}

/// Deletes one FDB entry; a missing one is success.
pub async fn fdb_del(h: &Handle, ifindex: u32, e: FdbEntry) -> Result<()> {
    match h.neighbours().del(fdb_message(ifindex, e)).execute().await {
        Err(err) if matches!(netlink_errno(&err), Some(libc::ENOENT)) => Ok(()),
        res => res.map_err(nl_err(format!("deleting fdb {} dst {}", fmt_mac(&e.mac), e.dst))),
    }
}

/// Permanent IPv4 and IPv6 neighbour entries on device `ifindex`.
pub async fn neigh_list(h: &Handle, ifindex: u32) -> Result<Vec<NeighEntry>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = h.neighbours().get().set_address_family(family);
        req.message_mut().header.ifindex = ifindex;
        let msgs: Vec<NeighbourMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(nl_err(format!("listing neighbours of link {ifindex}")))?;
        out.extend(
            msgs.into_iter()
                .filter(|m| m.header.ifindex == ifindex && m.header.state == NeighbourState::Permanent)
                .filter_map(|m| {
                    let ip = m.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                        _ => None,
                    })?;
                    Some(NeighEntry {
                        ip,
                        mac: mac_of(&m.attributes)?,
                    })
                }),
        );
    }
    Ok(out)
}

/// Sets a permanent neighbour entry (replacing one for the same IP).
pub async fn neigh_replace(h: &Handle, ifindex: u32, e: NeighEntry) -> Result<()> {
    h.neighbours()
        .add(ifindex, e.ip)
        .link_layer_address(&e.mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl_err(format!(
            "setting neighbour {} lladdr {}",
            e.ip,
            fmt_mac(&e.mac)
        )))
}

/// Deletes a neighbour entry; a missing one is success.
pub async fn neigh_del(h: &Handle, ifindex: u32, e: NeighEntry) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = ifindex;
    let (family, dst) = match e.ip {
        IpAddr::V4(ip) => (AddressFamily::Inet, NeighbourAddress::Inet(ip)),
        IpAddr::V6(ip) => (AddressFamily::Inet6, NeighbourAddress::Inet6(ip)),
    };
    m.header.family = family;
    m.attributes.push(NeighbourAttribute::Destination(dst));
    match h.neighbours().del(m).execute().await {
        Err(err) if matches!(netlink_errno(&err), Some(libc::ENOENT)) => Ok(()),
        res => res.map_err(nl_err(format!("deleting neighbour {}", e.ip))),
    }
}

fn fmt_mac(mac: &[u8; 6]) -> String {
    super::link::format_mac(mac)
}
