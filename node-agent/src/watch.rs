//! Netlink events of the node namespace: when a link or an IPv4 address
//! that berth wants goes away (deleted by hand, a device gone), or an
//! FDB/neighbour entry on one of its VXLAN devices, ask the convergence
//! loop for a pass at once instead of waiting for the period. What berth
//! deletes itself is not drift: a pass takes the links it stops wanting out
//! of the wanted set before it deletes them, and registers the FDB and
//! neighbour entries it deletes ([`OwnDeletions`]).
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use berth_core::model::VXLAN_PREFIX;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::Notify;

/// Deletions berth makes itself on its VXLAN devices (peers that left),
/// which the watcher must not take for drift: each one woke a full pass, so
/// every overlay disconnect or removal made every peer run one. An entry is
/// consumed by its event, or forgotten after [`OWN_TTL`]; at most
/// [`OWN_MAX`] are held (beyond that a deletion just wakes a pass).
#[derive(Default)]
pub struct OwnDeletions(Mutex<HashMap<String, Instant>>);

const OWN_TTL: Duration = Duration::from_secs(5);
const OWN_MAX: usize = 65_536;

impl OwnDeletions {
    /// An entry of device `ifindex` with link-layer address `mac`
    /// (bridge-family FDB entries) is about to be deleted.
    pub fn mac(&self, ifindex: u32, mac: [u8; 6]) {
        self.insert(mac_key(ifindex, &mac));
    }

    /// A neighbour entry of device `ifindex` for `ip` is about to be deleted.
    pub fn ip(&self, ifindex: u32, ip: IpAddr) {
        self.insert(ip_key(ifindex, ip));
    }

    fn insert(&self, key: String) {
        let mut own = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        own.retain(|_, at| now.duration_since(*at) < OWN_TTL);
        if own.len() < OWN_MAX {
            own.insert(key, now);
        }
    }

    /// Whether the deletion was berth's (consuming it).
    fn take(&self, key: &str) -> bool {
        let mut own = self.0.lock().unwrap_or_else(|e| e.into_inner());
        own.remove(key).is_some_and(|at| at.elapsed() < OWN_TTL)
    }
}

fn mac_key(ifindex: u32, mac: &[u8]) -> String {
    format!("{ifindex} {mac:02x?}")
}

fn ip_key(ifindex: u32, ip: IpAddr) -> String {
    format!("{ifindex} {ip}")
}

/// Whether a neighbour deletion is one berth made itself.
fn own_deletion(own: &OwnDeletions, n: &NeighbourMessage) -> bool {
    let key = if n.header.family == AddressFamily::Bridge {
        crate::kernel::fdb::mac_of(&n.attributes).map(|mac| mac_key(n.header.ifindex, &mac))
    } else {
        n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                Some(ip_key(n.header.ifindex, IpAddr::V4(*ip)))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                Some(ip_key(n.header.ifindex, IpAddr::V6(*ip)))
            }
            _ => None,
        })
    };
    key.is_some_and(|k| own.take(&k))
}

/// Receive buffer of the event socket.
const RCVBUF: usize = 8 << 20;

/// Subscribes to link, address and neighbour events and wakes `wake` when a
/// wanted link, its address, or an FDB entry on it is deleted. Runs until
/// the socket fails.
pub async fn run(
    wanted: Arc<RwLock<BTreeSet<String>>>,
    own: Arc<OwnDeletions>,
    wake: Arc<Notify>,
) -> std::io::Result<()> {
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
                    && !own_deletion(&own, &n)
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
