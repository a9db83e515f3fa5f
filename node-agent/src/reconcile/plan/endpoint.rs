//! Endpoints: a veth pair per endpoint, the host end (`bv` + 12 hex of the
//! endpoint id, marked `berth:ep:<id>`) a port of the network's bridge, the
//! peer (`ethN`) inside the sandbox with its MAC, address and, on the first
//! network, the default route. Interfaces of endpoints that left go; so do
//! berth's host veths that no endpoint wants (full passes).
use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::Ctx;
use crate::model::{EndpointSpec, HOST_VETH_PREFIX, NetworkSpec, RETIRED_PREFIX};
use crate::reconcile::action::{Action, EndpointAction, ObjectKind};
use crate::reconcile::observed::{MARK, Namespace, endpoint_mark};

fn matches(ctx: &Ctx<'_>, ns: Option<&Namespace>, want: &EndpointAction, net: &NetworkSpec) -> bool {
    let observed = ctx.observed();
    let ep = &want.endpoint;
    let (Some(ns), Some(host), Some(bridge)) = (
        ns,
        observed.links.get(&ep.host_ifname()),
        observed.links.get(&net.bridge),
    ) else {
        return false;
    };
    let Some(peer) = ns.links.get(&ep.ifname) else {
        return false;
    };
    host.kind.as_deref() == Some("veth")
        && host.alias.as_deref() == Some(endpoint_mark(&ep.id).as_str())
        && host.master == Some(bridge.index)
        && host.mtu == want.mtu
        && host.up
        && host.isolated == Some(want.isolated)
        && peer.kind.as_deref() == Some("veth")
        && peer.mac == Some(ep.mac)
        && peer.peer == Some(host.index)
        && host.peer == Some(peer.index)
        && peer.addrs == [(ep.ip, ep.prefix)]
        // IPv6 is off on interfaces without an IPv6 address: nothing to compare there.
        && ep.ip6.is_none_or(|a| peer.addrs6 == [a])
        && want
            .gateway6
            .is_none_or(|gw| ns.default_route6 == Some((gw, Some(peer.index))))
        && peer.mtu == want.mtu
        && peer.up
        && want
            .gateway
            .is_none_or(|gw| ns.default_route == Some((gw, Some(peer.index))))
}

fn action(
    ctx: &Ctx<'_>,
    sandbox_id: &str,
    netns: &str,
    ep: &EndpointSpec,
    net: &NetworkSpec,
) -> EndpointAction {
    EndpointAction {
        sandbox_id: sandbox_id.to_string(),
        netns: netns.to_string(),
        endpoint: ep.clone(),
        bridge: net.bridge.clone(),
        mtu: ctx.mtu_of(net),
        isolated: !net.icc,
        gateway: ep.default_route.then_some(net.gateway),
        // Only a bridge network holds its IPv6 gateway on the bridge (an
        // overlay's way out is the gateway bridge, IPv4 only).
        gateway6: match net.v6 {
            Some((_, gw6))
                if ep.default_route && ep.ip6.is_some() && net.driver == Driver::Bridge && !net.internal =>
            {
                Some(gw6)
            }
            _ => None,
        },
        external: external_of(ctx, sandbox_id),
    }
}

fn external_of(ctx: &Ctx<'_>, sandbox_id: &str) -> bool {
    ctx.desired()
        .sandboxes
        .get(sandbox_id)
        .is_some_and(|s| s.external.is_some())
}

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let observed = ctx.observed();
    let desired = ctx.desired();
    for s in ctx.sandboxes_in_scope() {
        let Some(netns) = &s.netns else { continue };
        if ctx.is_blocked(s) {
            continue;
        }
        // A namespace created by this pass has none of its endpoints yet.
        let ns = (!ctx.creating_ns.contains(netns))
            .then(|| observed.namespaces.get(netns))
            .flatten();
        // In a runtime's namespace the other links are the runtime's.
        if let Some(ns) = ns.filter(|_| s.external.is_none()) {
            let wanted: BTreeSet<&str> = s.endpoints.iter().map(|e| e.ifname.as_str()).collect();
            for name in ns.links.keys() {
                // `bgone…`: taken out of service by an earlier pass, still there
                // (its deletion runs, or the agent stopped before it ran).
                if (name.starts_with("eth") && !wanted.contains(name.as_str()))
                    || name.starts_with(RETIRED_PREFIX)
                {
                    ctx.push(Action::RemoveSandboxLink {
                        netns: netns.clone(),
                        ifname: name.clone(),
                    });
                }
            }
        }
        for ep in &s.endpoints {
            let Some(net) = desired.networks.get(&ep.network_id) else {
                continue;
            };
            let want = action(ctx, &s.id, netns, ep, net);
            if !matches(ctx, ns, &want, net) {
                ctx.push(Action::EnsureEndpoint(want));
            }
        }
    }
    if !ctx.inp.scope.is_full() {
        return;
    }
    let mut wanted_hosts = BTreeSet::new();
    for s in desired.sandboxes.values() {
        wanted_hosts.extend(s.endpoints.iter().map(EndpointSpec::host_ifname));
    }
    let ep_mark = format!("{MARK}ep:");
    for (name, link) in &observed.links {
        let berths = link.alias.as_deref().is_some_and(|a| a.starts_with(&ep_mark))
            || (name.starts_with(HOST_VETH_PREFIX) && !link.marked());
        if berths && link.kind.as_deref() == Some("veth") && !wanted_hosts.contains(name) {
            ctx.push(Action::RemoveLink {
                ifname: name.clone(),
                kind: ObjectKind::Endpoint,
            });
        }
    }
}
