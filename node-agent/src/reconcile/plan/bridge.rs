//! Bridges: one per network with an endpoint here, marked
//! `berth:net:<id>`; berth's bridges no network needs any more go.
use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::Ctx;
use crate::reconcile::action::{Action, BridgeAction, ObjectKey, ObjectKind};
use crate::reconcile::observed::{Link, MARK, network_mark};

/// Whether a node link is provably berth's: its marker, or berth's record
/// that it is about to create it (the marker follows the creation).
pub(super) fn owned(ctx: &Ctx<'_>, name: &str, link: &Link) -> bool {
    link.marked() || ctx.inp.owned.bridges.contains(name)
}

fn describe(link: &Link) -> &str {
    link.kind.as_deref().unwrap_or("device")
}

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let observed = ctx.observed();
    for net in ctx.active_in_scope() {
        let mtu = ctx.mtu_of(net);
        let Some(link) = observed.links.get(&net.bridge) else {
            ctx.push(Action::CreateBridge(BridgeAction {
                network: net.clone(),
                mtu,
            }));
            continue;
        };
        if !owned(ctx, &net.bridge, link) || link.kind.as_deref() != Some("bridge") {
            let users = ctx.users_of(&net.id);
            ctx.blocked_networks.insert(net.id.clone());
            ctx.conflict(
                ObjectKey::new(ObjectKind::Bridge, &net.bridge),
                users,
                format!(
                    "{} {} already exists on this node and is not berth's; choose another com.docker.network.bridge.name for network {}",
                    describe(link),
                    net.bridge,
                    net.name
                ),
            );
            continue;
        }
        let addrs = match net.driver {
            Driver::Bridge => vec![(net.gateway, net.subnet.prefix_len())],
            _ => vec![],
        };
        let addrs6 = bridge_addrs6(net);
        if link.alias.as_deref() != Some(network_mark(&net.id).as_str())
            || link.mtu != mtu
            || !link.up
            || link.addrs != addrs
            || link.addrs6 != addrs6
        {
            ctx.push(Action::CreateBridge(BridgeAction {
                network: net.clone(),
                mtu,
            }));
        }
    }
    // Berth's bridges and VXLAN devices that no network here needs.
    if !ctx.inp.complete {
        return;
    }
    let wanted: BTreeSet<String> = ctx
        .desired()
        .active_networks()
        .iter()
        .flat_map(|n| std::iter::once(n.bridge.clone()).chain(n.vxlan_name()))
        .collect();
    let net_mark = format!("{MARK}net:");
    for (name, link) in &observed.links {
        let ours = link.alias.as_deref().is_some_and(|a| a.starts_with(&net_mark))
            || ctx.inp.owned.bridges.contains(name);
        if ours && !wanted.contains(name) && matches!(link.kind.as_deref(), Some("bridge" | "vxlan")) {
            let kind = if link.kind.as_deref() == Some("vxlan") {
                ObjectKind::Vxlan
            } else {
                ObjectKind::Bridge
            };
            ctx.push(Action::RemoveLink {
                ifname: name.clone(),
                kind,
            });
        }
    }
}

/// The IPv6 gateway a bridge holds: a dual-stack bridge network's (an
/// overlay's bridge holds no address, as for IPv4).
pub fn bridge_addrs6(net: &crate::model::NetworkSpec) -> Vec<(std::net::Ipv6Addr, u8)> {
    match (net.driver, net.v6) {
        (Driver::Bridge, Some((subnet, gw))) => vec![(gw, subnet.prefix_len())],
        _ => vec![],
    }
}
