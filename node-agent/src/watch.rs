//! Netlink events of the node namespace: when a link or an IPv4 address
//! that berth wants goes away (deleted by hand, a device gone), or an
//! FDB/neighbour entry on one of its VXLAN devices, ask the convergence
//! loop for a pass at once instead of waiting for the period.
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use berth_core::model::VXLAN_PREFIX;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::NeighbourState;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::Notify;

/// Receive buffer of the event socket.
const RCVBUF: usize = 8 << 20;

/// Subscribes to link, address and neighbour events and wakes `wake` when a
/// wanted link, its address, or an FDB entry on it is deleted. Runs until
/// the socket fails.
pub async fn run(wanted: Arc<RwLock<BTreeSet<String>>>, wake: Arc<Notify>) -> std::io::Result<()> {
    let (mut conn, _handle, mut messages) = new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Neigh,
    ])?;
    // A bulk create or a namespace teardown sends thousands of events at
    // once; with the default buffer (208 KiB) the kernel dropped some
    // ("netlink socket buffer full" with 2,000 sandboxes on a node), and a
    // dropped deletion is only seen by the next periodic pass.
    let socket = conn.socket_mut().socket_mut();
    if let Err(e) = nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF) {
        tracing::warn!(error = %e, "cannot enlarge the netlink watcher's receive buffer");
    }
    tokio::spawn(conn);
    // ifindex → link name (address and neighbour messages carry only the
    // index): from a dump, then from the events.
    let mut names: std::collections::HashMap<u32, String> = crate::kernel::link::list_here()
        .await
        .map_err(std::io::Error::other)?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    while let Some((msg, _)) = messages.next().await {
        let NetlinkPayload::InnerMessage(m) = msg.payload else {
            continue;
        };
        let is_wanted = |n: &str| wanted.read().unwrap_or_else(|e| e.into_inner()).contains(n);
        let trigger = match m {
            RouteNetlinkMessage::NewLink(l) => {
                if let Some(name) = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }) {
                    names.insert(l.header.index, name);
                }
                false
            }
            RouteNetlinkMessage::DelLink(l) => {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                names.remove(&l.header.index);
                name.is_some_and(|n| is_wanted(&n))
            }
            RouteNetlinkMessage::DelAddress(a) => names.get(&a.header.index).is_some_and(|n| is_wanted(n)),
            RouteNetlinkMessage::DelNeighbour(n) => {
                // berth programs FDB and neighbour entries on its VXLAN
                // devices only, all permanent. The kernel's own entries —
                // the ARP/ND cache of bridges and host veths, and the
                // NOARP multicast entries (ff02::16, solicited-node) every
                // IPv6 interface gets — come and go with its garbage
                // collector: each new interface pushes the table past
                // gc_thresh, so a bulk create deleted thousands of them and
                // woke a full pass every 0.5 s. (A deletion by hand
                // notifies NUD_FAILED or, for FDB entries, NUD_PERMANENT.)
                n.header.state != NeighbourState::Noarp
                    && names
                        .get(&n.header.ifindex)
                        .is_some_and(|name| name.starts_with(VXLAN_PREFIX) && is_wanted(name))
            }
            _ => false,
        };
        if trigger {
            tracing::info!("a link berth wants changed; converging now");
            wake.notify_one();
        }
    }
    Ok(())
}
