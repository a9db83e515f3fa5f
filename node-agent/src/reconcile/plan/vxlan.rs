//! VXLAN devices of overlay networks (VNI, local VTEP, port 4789, learning
//! off, a port of the network's bridge that learns nothing) and their static
//! FDB and neighbour entries, and the bridge's static entries for the remote
//! MACs: exactly the network's current peer set.
use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::Ctx;
use crate::kernel::fdb::{self, FdbEntry, NeighEntry};
use crate::kernel::link::VxlanParams;
use crate::reconcile::action::{Action, ObjectKey, ObjectKind};
use crate::reconcile::observed::network_mark;

/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// The entries a VXLAN device needs for a peer set.
pub fn wanted_entries(set: &crate::model::PeerSet) -> (BTreeSet<FdbEntry>, BTreeSet<NeighEntry>) {
    let fdb = set
        .peers
        .iter()
        .map(|p| FdbEntry {
            mac: p.mac,
            dst: p.vtep,
        })
        .chain(set.vteps.iter().map(|v| FdbEntry {
            mac: fdb::ZERO_MAC,
            dst: *v,
        }))
        .collect();
    let neigh = set
        .peers
        .iter()
        .flat_map(|p| {
            std::iter::once(NeighEntry {
                ip: p.ip.into(),
                mac: p.mac,
            })
            .chain(p.ip6.map(|ip6| NeighEntry {
                ip: ip6.into(),
                mac: p.mac,
            }))
        })
        .collect();
    (fdb, neigh)
}

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let observed = ctx.observed();
    let local = ctx.inp.local_vtep;
    for net in ctx.active_in_scope() {
        let (Driver::Overlay, Some(vni), Some(name)) = (net.driver, net.vni, net.vxlan_name()) else {
            continue;
        };
        if ctx.blocked_networks.contains(&net.id) {
            continue;
        }
        let mtu = ctx.mtu_of(net);
        let bridge = observed.links.get(&net.bridge).map(|l| l.index);
        let want = VxlanParams {
            vni: Some(vni),
            local: Some(local),
            port: Some(VXLAN_PORT),
            learning: Some(false),
        };
        let ensure = match observed.links.get(&name) {
            None => true,
            Some(link)
                if !super::bridge::owned(ctx, &name, link) || link.kind.as_deref() != Some("vxlan") =>
            {
                let users = ctx.users_of(&net.id);
                ctx.blocked_networks.insert(net.id.clone());
                ctx.conflict(
                    ObjectKey::new(ObjectKind::Vxlan, &name),
                    users,
                    format!("link {name} already exists on this node and is not berth's"),
                );
                continue;
            }
            Some(link) => {
                link.vxlan != Some(want)
                    || link.alias.as_deref() != Some(network_mark(&net.id).as_str())
                    || link.master.is_none()
                    || link.master != bridge
                    || link.mtu != mtu
                    || link.port_learning != Some(false)
                    || !link.up
            }
        };
        if ensure {
            ctx.push(Action::EnsureVxlan {
                network: net.clone(),
                mtu,
                vxlan: name.clone(),
                vni,
            });
        }
        let set = ctx.desired().peers.get(&net.id).cloned().unwrap_or_default();
        let (fdb, neigh) = wanted_entries(&set);
        let bridged: BTreeSet<[u8; 6]> = set.peers.iter().map(|p| p.mac).collect();
        let have = observed.peers.get(&name);
        if ensure
            || have.is_none_or(|(f, n)| *f != fdb || *n != neigh)
            || observed.bridged.get(&name) != Some(&bridged)
        {
            ctx.push(Action::SyncPeers {
                network_id: net.id.clone(),
                vxlan: name,
                fdb,
                neigh,
                bridged,
            });
        }
    }
}
