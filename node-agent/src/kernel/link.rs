//! Links, IPv4 addresses and default routes over rtnetlink: bridges, veth pairs into sandboxes, VXLAN devices.
//!
//! One small typed function per kernel operation; the `ensure_*` functions compare what the kernel
//! has with what was asked, change only what differs (info log) and say so at debug when nothing
//! did, so calling them again after an agent restart does not disturb traffic.
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth,
    InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    LinkVxlan, RouteMessageBuilder,
};
use tracing::{debug, info};

use super::{KernelError, Result, netlink_errno, netns, nl_err};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A link as the kernel reports it (`RTM_GETLINK`).
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: `"bridge"`, `"veth"`, `"vxlan"`, ...; `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// `IFLA_MASTER`: the bridge this link is a port of.
    pub master: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`), whatever the carrier.
    pub up: bool,
    /// IPv4 addresses with prefix length. [`list`] and [`get`] leave this empty (it costs another
    /// dump); fill it with [`ipv4_addrs`].
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// `IFLA_LINK`: for a veth, the ifindex of its peer *in the peer's namespace*. The kernel
    /// omits the attribute when that index equals the link's own, so this is then `Some(index)`.
    pub link: Option<u32>,
    /// `IFLA_IFALIAS`: berth's ownership marker on links it creates (`berth:…`).
    pub alias: Option<String>,
    /// VXLAN parameters, for VXLAN devices.
    pub vxlan: Option<VxlanParams>,
    /// `IFLA_BRPORT_ISOLATED` of a bridge port; `None` when the link is not a bridge port.
    pub isolated: Option<bool>,
    /// Bridge port flag `learning` (`IFLA_BRPORT_LEARNING`), for bridge ports.
    pub port_learning: Option<bool>,
}

/// The VXLAN parameters berth sets (and compares) on its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanParams {
    pub vni: Option<u32>,
    pub local: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            master: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            addrs: Vec::new(),
            link: None,
            alias: None,
            vxlan: None,
            isolated: None,
            port_learning: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name.clone_from(name),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => info.alias = Some(alias.clone()),
                LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                LinkAttribute::Controller(master) if *master != 0 => info.master = Some(*master),
                LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
                LinkAttribute::Link(peer) => info.link = Some(*peer),
                LinkAttribute::LinkInfo(infos) => {
                    for item in infos {
                        match item {
                            NlLinkInfo::Kind(kind) => info.kind = Some(kind.to_string()),
                            NlLinkInfo::PortData(InfoPortData::BridgePort(data)) => {
                                let isolated = data.iter().find_map(|d| match d {
                                    InfoBridgePort::Isolated(on) => Some(*on),
                                    _ => None,
                                });
                                info.isolated = Some(isolated.unwrap_or(false));
                                // The kernel's default for a new port is on.
                                let learning = data.iter().find_map(|d| match d {
                                    InfoBridgePort::Learning(on) => Some(*on),
                                    _ => None,
                                });
                                info.port_learning = Some(learning.unwrap_or(true));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if info.kind.as_deref() == Some("vxlan") {
            let (vni, local, port, learning) = vxlan_params(msg);
            info.vxlan = Some(VxlanParams {
                vni,
                local,
                port,
                learning,
            });
        }
        if info.link.is_none() && info.kind.as_deref() == Some("veth") {
            // rtnl_fill_ifinfo only sends IFLA_LINK when it differs from the link's own index.
            info.link = Some(info.index);
        }
        info
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name.contains(['/', ':', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(KernelError::Invalid(format!(
            "interface name {name:?} (1 to {MAX_IFNAME} bytes, no '/', ':' or whitespace)"
        )));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`, for log fields.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every link in the handle's namespace.
///
/// Each message is reduced as it arrives, and the kernel is asked to leave
/// the statistics out: a node with thousands of links would otherwise hold
/// every parsed message at once (tens of MiB for 2,000 veths).
pub async fn list(h: &Handle) -> Result<Vec<LinkInfo>> {
    h.link()
        .get()
        .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
        .execute()
        .map_ok(|m| LinkInfo::from_message(&m))
        .try_collect()
        .await
        .map_err(nl_err("listing links"))
}

/// Every link of the calling thread's namespace, like [`list`] but read one
/// message at a time ([`super::dump`]): for the node's own namespace, whose
/// links grow with its sandboxes.
pub async fn list_here() -> Result<Vec<LinkInfo>> {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    super::dump::dump("listing links", RouteNetlinkMessage::GetLink(msg), |m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(&l)),
        _ => None,
    })
    .await
}

/// The link called `name`, if any.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkInfo>> {
    Ok(get_message(h, name).await?.as_ref().map(LinkInfo::from_message))
}

async fn get_message(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    check_ifname(name)?;
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format!("getting link {name}"))(e)),
    }
}

/// The IPv4 addresses on link `index`, with prefix lengths, in kernel order (primary first).
pub async fn ipv4_addrs(h: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut request = h.address().get().set_link_index_filter(index);
    // The family is honoured by the dump even without strict checking; the index filter is
    // applied by rtnetlink on our side.
    request.message_mut().header.family = AddressFamily::Inet;
    let messages: Vec<_> = request
        .execute()
        .try_collect()
        .await
        .map_err(nl_err(format!("listing addresses of link {index}")))?;
    Ok(messages.iter().filter_map(ipv4_of).collect())
}

/// The IPv4 addresses of link `index` of the calling thread's namespace, the
/// kernel filtering by link ([`super::dump`]): O(that link's addresses), not O(the node's).
pub async fn ipv4_addrs_here(index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut msg = netlink_packet_route::address::AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.index = index;
    super::dump::dump(
        "listing addresses",
        RouteNetlinkMessage::GetAddress(msg),
        move |m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => ipv4_of(&a),
            _ => None,
        },
    )
    .await
}

/// The IPv4 address and prefix length an address message carries. IFA_LOCAL is the
/// interface's own address; IFA_ADDRESS differs only on point-to-point links.
fn ipv4_of(msg: &netlink_packet_route::address::AddressMessage) -> Option<(Ipv4Addr, u8)> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    local.or(address).map(|ip| (ip, msg.header.prefix_len))
}

/// Every IPv4 address in the handle's namespace, by link index (one dump instead of one per link).
pub async fn ipv4_addrs_all(h: &Handle) -> Result<std::collections::HashMap<u32, Vec<(Ipv4Addr, u8)>>> {
    let mut request = h.address().get();
    request.message_mut().header.family = AddressFamily::Inet;
    let mut out: std::collections::HashMap<u32, Vec<(Ipv4Addr, u8)>> = std::collections::HashMap::new();
    let mut messages = request.execute();
    while let Some(msg) = messages.try_next().await.map_err(nl_err("listing addresses"))? {
        if let Some(a) = ipv4_of(&msg) {
            out.entry(msg.header.index).or_default().push(a);
        }
    }
    Ok(out)
}

/// Sets `IFLA_IFALIAS` of link `index` (berth's ownership marker). The kernel ignores the alias
/// in the `RTM_NEWLINK` that creates a link, so it is always set by a second request.
pub async fn set_alias(h: &Handle, index: u32, alias: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(nl_err(format!("marking link {index} as {alias}")))
}

/// Makes link `name`'s alias `alias`; returns whether it changed.
pub async fn ensure_alias(h: &Handle, name: &str, alias: &str) -> Result<bool> {
    let link = get(h, name)
        .await?
        .ok_or_else(|| KernelError::Mismatch(format!("link {name} vanished")))?;
    if link.alias.as_deref() == Some(alias) {
        return Ok(false);
    }
    set_alias(h, link.index, alias).await?;
    debug!(ifname = name, alias, "marked link");
    Ok(true)
}

/// Adds `ip/prefix` to link `index`; `Ok(false)` if exactly that address was already there.
pub async fn add_ipv4(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<bool> {
    match h.address().add(index, IpAddr::V4(ip), prefix).execute().await {
        Ok(()) => Ok(true),
        // IPv4 EEXIST means the same local address *and* prefix on the same link: what we want.
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl_err(format!("adding address {ip}/{prefix} to link {index}"))(e)),
    }
}

/// Removes `ip/prefix` from link `index`; `Ok(false)` if it was not there.
pub async fn del_ipv4(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<bool> {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(ip, prefix)
        .build();
    match h.address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(nl_err(format!(
            "removing address {ip}/{prefix} from link {index}"
        ))(e)),
    }
}

/// Makes `want` the only IPv4 address of the link (`None`: no IPv4 address at all).
/// Returns whether anything changed.
/// `netns` is only for the log lines (`None`: the handle's own namespace, the node's).
async fn ensure_only_ipv4(
    h: &Handle,
    link: &LinkInfo,
    want: Option<(Ipv4Addr, u8)>,
    netns: Option<&str>,
) -> Result<bool> {
    let have = ipv4_addrs(h, link.index).await?;
    let mut changed = false;
    // Remove strays before adding: adding first could make ours a secondary of a stray primary,
    // and deleting a primary deletes its secondaries (unless promote_secondaries is set).
    for &(ip, prefix) in have.iter().filter(|a| Some(**a) != want) {
        if del_ipv4(h, link.index, ip, prefix).await? {
            info!(netns, ifname = %link.name, ip = %ip, prefix, "removed address");
            changed = true;
        }
    }
    if let Some((ip, prefix)) = want
        && !have.contains(&(ip, prefix))
        && add_ipv4(h, link.index, ip, prefix).await?
    {
        info!(netns, ifname = %link.name, ip = %ip, prefix, "added address");
        changed = true;
    }
    Ok(changed)
}

/// Sets the link's MTU.
pub async fn set_mtu(h: &Handle, index: u32, mtu: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(nl_err(format!("setting mtu {mtu} on link {index}")))
}

/// Brings the link up.
pub async fn set_up(h: &Handle, index: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(nl_err(format!("bringing link {index} up")))
}

/// Makes the link a port of bridge `master`.
pub async fn set_master(h: &Handle, index: u32, master: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).controller(master).build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(nl_err(format!("attaching link {index} to {master}")))
}

/// Fixes MTU, master and up on an existing link where they differ; returns whether anything changed.
async fn converge_link(
    h: &Handle,
    link: &LinkInfo,
    mtu: u32,
    master: Option<u32>,
    netns: Option<&str>,
) -> Result<bool> {
    let mut changed = false;
    if link.mtu != mtu {
        set_mtu(h, link.index, mtu).await?;
        info!(netns, ifname = %link.name, mtu, previous = link.mtu, "set mtu");
        changed = true;
    }
    if let Some(master) = master
        && link.master != Some(master)
    {
        set_master(h, link.index, master).await?;
        info!(netns, ifname = %link.name, master, "attached to bridge");
        changed = true;
    }
    if !link.up {
        set_up(h, link.index).await?;
        info!(netns, ifname = %link.name, "set link up");
        changed = true;
    }
    Ok(changed)
}

/// A locally administered unicast MAC with random low bytes (std's hasher keys are random).
fn random_mac() -> [u8; 6] {
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    let b = bits.to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// Makes bridge `name` exist with `mtu`, exactly the IPv4 address `addr` (other IPv4 addresses are
/// removed) and up; returns its ifindex. A link of that name that is not a bridge is a
/// [`KernelError::Mismatch`].
///
/// QUIRK: a bridge created without an explicit MAC takes the lowest MAC of its ports and changes
/// it as ports come and go, which invalidates the gateway's ARP entry in every sandbox on it. So
/// the bridge gets a fixed random MAC at creation (Docker does the same).
pub async fn ensure_bridge(h: &Handle, name: &str, mtu: u32, addr: Option<(Ipv4Addr, u8)>) -> Result<u32> {
    let mut changed = false;
    let bridge = match get(h, name).await? {
        Some(link) => link,
        None => {
            let msg = LinkBridge::new(name)
                .mtu(mtu)
                .address(random_mac().to_vec())
                .build();
            match h.link().add(msg).execute().await {
                Ok(()) => {
                    info!(ifname = name, mtu, "created bridge");
                    changed = true;
                }
                // Someone else created it meanwhile; the checks below decide if it is usable.
                Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err(format!("creating bridge {name}"))(e)),
            }
            get(h, name)
                .await?
                .ok_or_else(|| KernelError::Mismatch(format!("bridge {name} vanished after creation")))?
        }
    };
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(KernelError::Mismatch(format!(
            "link {name} exists but is a {}, not a bridge",
            bridge.kind.as_deref().unwrap_or("device without a kind")
        )));
    }
    // QUIRK: a bridge's MTU set by the user sticks; one never set follows the smallest port MTU.
    changed |= converge_link(h, &bridge, mtu, None, None).await?;
    changed |= ensure_only_ipv4(h, &bridge, addr, None).await?;
    if !changed {
        debug!(ifname = name, "bridge already as desired");
    }
    Ok(bridge.index)
}

/// One endpoint: a veth pair from the node namespace into a sandbox namespace.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// Host end, in the node namespace (the namespace of the `node` handle).
    pub host_name: &'a str,
    /// Bridge ifindex the host end is a port of.
    pub master: u32,
    /// MTU of both ends.
    pub mtu: u32,
    /// Sandbox namespace name (under [`netns::NETNS_DIR`]).
    pub netns: &'a str,
    /// Peer name inside the sandbox (`eth0`, `eth1`, ...).
    pub peer_name: &'a str,
    pub peer_mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// Default route inside the sandbox. `None` leaves the sandbox's routes alone (a second
    /// network's endpoint must not take the default route away from the first).
    pub gateway: Option<Ipv4Addr>,
    /// The namespace is a container runtime's (opened by path): a link there holding the peer's
    /// name is the runtime's, never deleted.
    pub foreign_netns: bool,
}

/// Makes the endpoint `spec` exist; returns whether anything was created or changed.
/// Opens a netlink connection in the sandbox for the duration of the call; use
/// [`ensure_veth_with`] to reuse one.
pub async fn ensure_veth(node: &Handle, spec: &VethSpec<'_>) -> Result<bool> {
    let sandbox = netns::netlink(Some(spec.netns)).await?;
    ensure_veth_with(node, &sandbox, spec).await
}

/// [`ensure_veth`] with a netlink connection already open in the sandbox namespace.
///
/// When the host end is missing, the pair is created by ONE `RTM_NEWLINK` in the node namespace
/// whose peer carries `IFLA_NET_NS_FD`, name, MAC and MTU: the peer is born inside the sandbox
/// (moving a link between namespaces costs ~20 ms here), and the host end is born attached to the
/// bridge and up. Then, through the sandbox connection, the peer is brought up and gets its address
/// and default route.
///
/// When the host end exists and its peer in the sandbox is the right one (name, MAC, and the two
/// ends point at each other through `IFLA_LINK`), only what differs is fixed, so traffic keeps
/// flowing across an agent restart. When the peer is missing or wrong, the pair is recreated.
pub async fn ensure_veth_with(node: &Handle, sandbox: &Handle, spec: &VethSpec<'_>) -> Result<bool> {
    check_ifname(spec.host_name)?;
    check_ifname(spec.peer_name)?;
    if let Some(host) = get(node, spec.host_name).await? {
        if host.kind.as_deref() != Some("veth") {
            return Err(KernelError::Mismatch(format!(
                "link {} exists but is a {}, not a veth",
                spec.host_name,
                host.kind.as_deref().unwrap_or("device without a kind")
            )));
        }
        let peer = get(sandbox, spec.peer_name).await?;
        match peer {
            Some(peer) if is_pair(&host, &peer, spec) => {
                let changed = converge_existing(node, sandbox, &host, &peer, spec).await?;
                if !changed {
                    debug!(netns = spec.netns, ifname = spec.host_name, ip = %spec.addr, "veth already as desired");
                }
                return Ok(changed);
            }
            _ => {
                info!(
                    netns = spec.netns,
                    ifname = spec.host_name,
                    "veth peer missing or wrong; recreating the pair"
                );
                delete(node, spec.host_name).await?;
            }
        }
    }
    match create_veth(node, spec).await {
        Err(e) if e.errno() == Some(libc::EEXIST) && spec.foreign_netns => {
            // Either the host end's name or the peer's is taken; berth's host end is not there,
            // so in a runtime's namespace this is most likely the runtime's own interface.
            return Err(KernelError::Foreign(format!(
                "interface {} already exists in netns {} (or {} on the node) and is not berth's",
                spec.peer_name, spec.netns, spec.host_name
            )));
        }
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            // The host end is gone, so the name clash is inside the sandbox: a stray link holds the
            // peer's name (e.g. a peer whose host end was deleted by hand does not exist any more,
            // but a link created there by someone else might). It is in a namespace we own.
            if delete(sandbox, spec.peer_name).await? {
                info!(
                    netns = spec.netns,
                    ifname = spec.peer_name,
                    "removed stray link holding the peer name"
                );
            }
            create_veth(node, spec).await?;
        }
        other => other?,
    }
    info!(
        netns = spec.netns,
        ifname = spec.host_name,
        peer = spec.peer_name,
        mac = %format_mac(&spec.peer_mac),
        ip = %spec.addr,
        "created veth pair"
    );
    let peer = get(sandbox, spec.peer_name).await?.ok_or_else(|| {
        KernelError::Mismatch(format!(
            "veth peer {} not found in netns {} after creation",
            spec.peer_name, spec.netns
        ))
    })?;
    configure_peer(sandbox, &peer, spec).await?;
    Ok(true)
}

/// Whether `peer` (in the sandbox) is the other end of `host` and looks as `spec` says.
fn is_pair(host: &LinkInfo, peer: &LinkInfo, spec: &VethSpec<'_>) -> bool {
    peer.kind.as_deref() == Some("veth")
        && peer.mac == Some(spec.peer_mac)
        && peer.link == Some(host.index)
        && host.link == Some(peer.index)
}

/// The single RTM_NEWLINK that creates both ends (see [`ensure_veth_with`]).
async fn create_veth(node: &Handle, spec: &VethSpec<'_>) -> Result<()> {
    // The fd must stay open until the kernel has answered.
    let ns = netns::open(spec.netns)?;
    let peer = LinkUnspec::new_with_name(spec.peer_name)
        .address(spec.peer_mac.to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(ns.as_raw_fd())
        // QUIRK: no IFF_UP for the peer here. veth_newlink applies the peer's ifinfomsg flags
        // before the two ends are linked, so opening the peer fails with ENOTCONN ("peer not
        // connected") and the whole RTM_NEWLINK with it. The peer is brought up afterwards.
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_name)
        .mtu(spec.mtu)
        .controller(spec.master) // IFLA_MASTER is honoured on creation
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    let result = node.link().add(msg).execute().await;
    drop(ns);
    let full = result.as_ref().err().and_then(netlink_errno) == Some(libc::EXFULL);
    result.map_err(nl_err(format!(
        "creating veth {} with peer {} in netns {}{}",
        spec.host_name,
        spec.peer_name,
        spec.netns,
        // BR_MAX_PORTS: a network holds at most 1,024 endpoints per node.
        if full {
            " (the network's bridge has 1,024 ports on this node, the kernel's limit)"
        } else {
            ""
        }
    )))?;
    no_ipv6_address(node, spec.host_name).await
}

/// Tells the kernel not to give link `name` an IPv6 link-local address
/// (`addr_gen_mode` none): a bridge port needs no address of its own, and
/// each address and its routes made every later link change on the node
/// cost more (the kernel walks the whole IPv6 routing tree when a link comes
/// up or goes down, and every address dump lists them). Set while the host
/// end has no carrier (its peer is still down), so no address is ever made.
/// The kernel refuses this attribute in the message that creates a link;
/// one without IPv6 refuses it always (then there is nothing to turn off).
pub async fn no_ipv6_address(h: &Handle, name: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_name(name)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
            AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
        ])]))
        .build();
    match h.link().set(msg).execute().await {
        // A kernel without IPv6 makes no address anyway.
        Err(e) if netlink_errno(&e) == Some(libc::EAFNOSUPPORT) => Ok(()),
        other => other.map_err(nl_err(format!("turning off IPv6 addresses of {name}"))),
    }
}

/// Up, address and default route of a freshly created peer (named, MAC and MTU set).
/// Order matters: IPv4 adds the connected route only on an up link, and the default route
/// needs the gateway to be on a connected subnet.
async fn configure_peer(sandbox: &Handle, peer: &LinkInfo, spec: &VethSpec<'_>) -> Result<()> {
    set_up(sandbox, peer.index).await?;
    add_ipv4(sandbox, peer.index, spec.addr, spec.prefix).await?;
    if let Some(gateway) = spec.gateway {
        replace_default_route(sandbox, gateway, Some(peer.index)).await?;
    }
    Ok(())
}

/// Fixes an existing, correctly paired veth where it differs from `spec`.
async fn converge_existing(
    node: &Handle,
    sandbox: &Handle,
    host: &LinkInfo,
    peer: &LinkInfo,
    spec: &VethSpec<'_>,
) -> Result<bool> {
    let mut changed = converge_link(node, host, spec.mtu, Some(spec.master), None).await?;
    changed |= converge_link(sandbox, peer, spec.mtu, None, Some(spec.netns)).await?;
    changed |= ensure_only_ipv4(sandbox, peer, Some((spec.addr, spec.prefix)), Some(spec.netns)).await?;
    if let Some(gateway) = spec.gateway
        && default_route(sandbox).await? != Some((gateway, Some(peer.index)))
    {
        replace_default_route(sandbox, gateway, Some(peer.index)).await?;
        info!(netns = spec.netns, ifname = spec.peer_name, ip = %gateway, "set default route");
        changed = true;
    }
    Ok(changed)
}

/// A veth pair with both ends in the node namespace, for a runtime that
/// moves the peer into its container itself (Docker's remote driver: Join
/// hands dockerd `peer_name`, dockerd moves and renames it). One
/// `RTM_NEWLINK`: the host end born attached to `master` and up, then
/// marked with `alias`; the peer with its MAC and MTU.
/// An existing pair of the same names and MAC is kept (Join replayed).
pub async fn ensure_handoff_veth(
    node: &Handle,
    host_name: &str,
    alias: &str,
    master: u32,
    mtu: u32,
    peer_name: &str,
    peer_mac: [u8; 6],
) -> Result<()> {
    check_ifname(host_name)?;
    check_ifname(peer_name)?;
    if let (Some(host), Some(peer)) = (get(node, host_name).await?, get(node, peer_name).await?)
        && host.kind.as_deref() == Some("veth")
        && peer.mac == Some(peer_mac)
        && peer.link == Some(host.index)
    {
        return Ok(());
    }
    // Leftovers of an earlier attempt (either end) go first.
    delete(node, host_name).await?;
    delete(node, peer_name).await?;
    let peer = LinkUnspec::new_with_name(peer_name)
        .address(peer_mac.to_vec())
        .mtu(mtu)
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name)
        .mtu(mtu)
        .controller(master)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    node.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl_err(format!("creating veth {host_name} with peer {peer_name}")))?;
    let host = get(node, host_name)
        .await?
        .ok_or_else(|| KernelError::Mismatch(format!("veth {host_name} not found after creation")))?;
    set_alias(node, host.index, alias).await?;
    info!(ifname = host_name, peer = peer_name, mac = %format_mac(&peer_mac), "created veth pair for a runtime to move");
    Ok(())
}

/// Whether bridge port `name` is isolated (`IFLA_BRPORT_ISOLATED`); `None` if it is not a bridge port.
pub async fn port_isolated(h: &Handle, name: &str) -> Result<Option<bool>> {
    let Some(msg) = get_message(h, name).await? else {
        return Err(KernelError::Mismatch(format!("link {name} does not exist")));
    };
    for attr in &msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for item in infos {
            if let NlLinkInfo::PortData(InfoPortData::BridgePort(data)) = item {
                let isolated = data.iter().find_map(|d| match d {
                    InfoBridgePort::Isolated(on) => Some(*on),
                    _ => None,
                });
                return Ok(Some(isolated.unwrap_or(false)));
            }
        }
    }
    Ok(None)
}

/// Sets the bridge port flag `isolated` on link `name` (`bridge link set dev NAME isolated on`);
/// returns whether it changed. Isolated ports of a bridge cannot reach each other, only
/// non-isolated ports and the bridge itself (the gateway): Docker's `enable_icc=false` without
/// any firewall rule.
pub async fn set_port_isolated(h: &Handle, name: &str, isolated: bool) -> Result<bool> {
    let Some(link) = get(h, name).await? else {
        return Err(KernelError::Mismatch(format!("link {name} does not exist")));
    };
    match port_isolated(h, name).await? {
        None => return Err(KernelError::Mismatch(format!("link {name} is not a bridge port"))),
        Some(now) if now == isolated => {
            debug!(ifname = name, isolated, "port isolation already set");
            return Ok(false);
        }
        Some(_) => {}
    }
    // Bridge port options go in IFLA_INFO_SLAVE_DATA of an RTM_NEWLINK without NLM_F_CREATE;
    // RTM_SETLINK ignores them.
    let msg = LinkBridgePort::new(link.index).isolated(isolated).build();
    h.link().set_port(msg).execute().await.map_err(nl_err(format!(
        "setting isolated={isolated} on bridge port {name}"
    )))?;
    info!(ifname = name, isolated, "set port isolation");
    Ok(true)
}

/// Sets the bridge port flag `learning` on link `name` (`bridge link set dev NAME learning
/// off`); returns whether it changed. An overlay's VXLAN port runs with it off: the bridge gets
/// a static entry per remote MAC from the peer set instead of learning (and keeping) them.
pub async fn set_port_learning(h: &Handle, name: &str, learning: bool) -> Result<bool> {
    let Some(link) = get(h, name).await? else {
        return Err(KernelError::Mismatch(format!("link {name} does not exist")));
    };
    match link.port_learning {
        None => return Err(KernelError::Mismatch(format!("link {name} is not a bridge port"))),
        Some(now) if now == learning => return Ok(false),
        Some(_) => {}
    }
    let msg = LinkBridgePort::new(link.index).learning(learning).build();
    h.link().set_port(msg).execute().await.map_err(nl_err(format!(
        "setting learning={learning} on bridge port {name}"
    )))?;
    info!(ifname = name, learning, "set port learning");
    Ok(true)
}

/// Deletes the link called `name` (one RTM_DELLINK by name); `Ok(false)` if there is none.
/// Deleting one end of a veth deletes both (this takes ~20 ms: the kernel waits for RCU).
pub async fn delete(h: &Handle, name: &str) -> Result<bool> {
    check_ifname(name)?;
    let msg = LinkUnspec::new_with_name(name).build();
    match h.link().del_with_message(msg).execute().await {
        Ok(()) => {
            info!(ifname = name, "deleted link");
            Ok(true)
        }
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => {
            debug!(ifname = name, "link already absent");
            Ok(false)
        }
        Err(e) => Err(nl_err(format!("deleting link {name}"))(e)),
    }
}

/// Takes a sandbox's interface out of service at once, for [`delete`] to
/// remove afterwards: down (its peer loses carrier, so the bridge stops
/// forwarding to it), no address left (a down interface's IPv4 address is
/// still local to the namespace) and renamed to `bgone<ifindex>` (its
/// `ethN` name is free for the next endpoint). Deleting a veth waits for
/// RCU grace periods, ~20 ms here, mostly outside the RTNL lock; these
/// four requests take well under a millisecond. Returns the link's new
/// name, or `None` when there is no such link.
pub async fn retire(h: &Handle, name: &str) -> Result<Option<String>> {
    use crate::model::RETIRED_PREFIX;
    let Some(link) = get(h, name).await? else {
        return Ok(None);
    };
    if name.starts_with(RETIRED_PREFIX) {
        return Ok(Some(name.to_string()));
    }
    let index = link.index;
    h.link()
        .change(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(nl_err(format!("taking link {name} down")))?;
    for (ip, prefix) in ipv4_addrs(h, index).await? {
        del_ipv4(h, index, ip, prefix).await?;
    }
    for (ip, prefix) in super::addr6::ipv6_addrs(h, index).await? {
        super::addr6::del_ipv6(h, index, ip, prefix).await?;
    }
    let retired = format!("{RETIRED_PREFIX}{index}");
    h.link()
        .change(LinkUnspec::new_with_index(index).name(retired.clone()).build())
        .execute()
        .await
        .map_err(nl_err(format!("renaming link {name} to {retired}")))?;
    Ok(Some(retired))
}

/// The default unicast routes of the main table that `request` (a route
/// dump of one family) lists, in the kernel's order. Without
/// NETLINK_GET_STRICT_CHK the kernel dumps every table; filter on our side.
pub(super) async fn main_default_routes(h: &Handle, request: RouteMessage) -> Result<Vec<RouteMessage>> {
    let routes: Vec<RouteMessage> = h
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("listing routes"))?;
    Ok(routes
        .into_iter()
        .filter(|route| {
            super::route::in_main_table(route)
                && route.header.destination_prefix_length == 0
                && route.header.kind == RouteType::Unicast
        })
        .collect())
}

/// A route's gateway (as `RouteAddress`) and output interface.
pub(super) fn gateway_and_oif(route: &RouteMessage) -> (Option<&RouteAddress>, Option<u32>) {
    let gateway = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => Some(g),
        _ => None,
    });
    let oif = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    (gateway, oif)
}

/// The IPv4 default route of the main table: gateway and output interface. `None` when there is
/// no default route or it has no IPv4 gateway (e.g. multipath or device-only routes).
pub async fn default_route(h: &Handle) -> Result<Option<(Ipv4Addr, Option<u32>)>> {
    let routes = main_default_routes(h, RouteMessageBuilder::<Ipv4Addr>::new().build()).await?;
    Ok(routes.first().and_then(|route| match gateway_and_oif(route) {
        (Some(RouteAddress::Inet(ip)), oif) => Some((*ip, oif)),
        _ => None,
    }))
}

/// The gateway of the IPv4 default route, if any.
pub async fn default_gateway(h: &Handle) -> Result<Option<Ipv4Addr>> {
    Ok(default_route(h).await?.map(|(gateway, _)| gateway))
}

/// `ip route replace default via GATEWAY [dev OIF]`.
async fn replace_default_route(h: &Handle, gateway: Ipv4Addr, oif: Option<u32>) -> Result<()> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway);
    if let Some(oif) = oif {
        builder = builder.output_interface(oif);
    }
    h.route()
        .add(builder.build())
        .replace()
        .execute()
        .await
        .map_err(nl_err(format!("setting default route via {gateway}")))
}

/// Makes the IPv4 default route of the handle's namespace go via `gateway` (replacing one that
/// goes elsewhere). The kernel picks the interface; the gateway must be on a connected subnet.
pub async fn set_default_route(h: &Handle, gateway: Ipv4Addr) -> Result<()> {
    if default_gateway(h).await? == Some(gateway) {
        debug!(ip = %gateway, "default route already set");
        return Ok(());
    }
    replace_default_route(h, gateway, None).await?;
    info!(ip = %gateway, "set default route");
    Ok(())
}

/// VNI, local address, UDP port and learning flag of a VXLAN link message.
fn vxlan_params(msg: &LinkMessage) -> (Option<u32>, Option<Ipv4Addr>, Option<u16>, Option<bool>) {
    let mut params = (None, None, None, None);
    for attr in &msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for item in infos {
            let NlLinkInfo::Data(InfoData::Vxlan(data)) = item else {
                continue;
            };
            for d in data {
                match d {
                    InfoVxlan::Id(id) => params.0 = Some(*id),
                    InfoVxlan::Local(ip) => params.1 = Some(*ip),
                    InfoVxlan::Port(port) => params.2 = Some(*port),
                    InfoVxlan::Learning(learning) => params.3 = Some(*learning),
                    _ => {}
                }
            }
        }
    }
    params
}

/// Makes VXLAN device `name` exist with `vni`, source address `local`, UDP destination port `port`
/// (4789 is IANA's) and learning off (remote MACs come from static FDB entries), with `mtu`, as a
/// port of bridge `master`, up; returns its ifindex. A device with other VXLAN parameters is
/// recreated (the kernel refuses to change most of them in place); a link of that name that is not
/// VXLAN is a [`KernelError::Mismatch`].
pub async fn ensure_vxlan(
    h: &Handle,
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    port: u16,
    mtu: u32,
    master: u32,
) -> Result<u32> {
    if let Some(msg) = get_message(h, name).await? {
        let link = LinkInfo::from_message(&msg);
        if link.kind.as_deref() != Some("vxlan") {
            return Err(KernelError::Mismatch(format!(
                "link {name} exists but is a {}, not a vxlan",
                link.kind.as_deref().unwrap_or("device without a kind")
            )));
        }
        if vxlan_params(&msg) == (Some(vni), Some(local), Some(port), Some(false)) {
            if !converge_link(h, &link, mtu, Some(master), None).await? {
                debug!(ifname = name, vni, "vxlan already as desired");
            }
            return Ok(link.index);
        }
        info!(ifname = name, vni, "vxlan parameters differ; recreating");
        delete(h, name).await?;
    }
    let msg = LinkVxlan::new(name, vni)
        .local(local)
        .port(port)
        .learning(false)
        // Answer ARP for remote endpoints from the neighbour table instead of
        // flooding the request to every node.
        .proxy(true)
        .mtu(mtu)
        .controller(master)
        .up()
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl_err(format!("creating vxlan {name} (vni {vni})")))?;
    info!(ifname = name, vni, ip = %local, port, "created vxlan");
    let link = get(h, name)
        .await?
        .ok_or_else(|| KernelError::Mismatch(format!("vxlan {name} vanished after creation")))?;
    Ok(link.index)
}
