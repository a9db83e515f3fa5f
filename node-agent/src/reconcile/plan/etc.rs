//! `/etc/netns/NAME/{hosts,resolv.conf}`: the sandbox's own name and
//! addresses plus its legacy links in `hosts`; the embedded DNS responder
//! in `resolv.conf` where the sandbox resolves names, the node's otherwise.
use std::net::Ipv4Addr;

use berth_core::model::DEFAULT_BRIDGE;

use super::Ctx;
use crate::etcfiles;
use crate::model::{Desired, SandboxSpec};
use crate::reconcile::action::Action;

/// Whether the sandbox resolves names through the embedded DNS responder.
pub fn resolves_names(d: &Desired, s: &SandboxSpec) -> bool {
    s.endpoints.iter().any(|e| {
        d.networks
            .get(&e.network_id)
            .is_some_and(crate::names::resolves_names)
    })
}

/// The two files' contents for a sandbox.
pub fn contents(d: &Desired, s: &SandboxSpec, node_resolv: &str) -> (String, String) {
    let own: Vec<Ipv4Addr> = s.endpoints.iter().map(|e| e.ip).collect();
    let mut extra = Vec::new();
    for (name, alias) in &s.links {
        // Legacy links point at the target's address on the default bridge.
        let target = d.sandboxes.values().find(|t| &t.name == name).and_then(|t| {
            t.endpoints.iter().find(|e| {
                d.networks
                    .get(&e.network_id)
                    .is_some_and(|n| n.name == DEFAULT_BRIDGE.0)
            })
        });
        if let Some(ep) = target {
            let names = if alias.is_empty() || alias == name {
                vec![name.clone()]
            } else {
                vec![alias.clone(), name.clone()]
            };
            extra.push((ep.ip, names));
        }
    }
    let resolv = if resolves_names(d, s) {
        format!("nameserver {}\nsearch .\noptions ndots:0\n", crate::dns::DNS_ADDR)
    } else {
        node_resolv.to_string()
    };
    (etcfiles::hosts(&s.name, &own, &extra), resolv)
}

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let desired = ctx.desired();
    let observed = ctx.observed();
    // Sandboxes with links follow their targets, so they are always looked at.
    let scope = ctx.inp.scope;
    let linking = desired
        .sandboxes
        .values()
        .filter(|s| !s.links.is_empty() && !scope.has_sandbox(&s.id));
    for s in scope.sandboxes_of(desired).into_iter().chain(linking) {
        let Some(netns) = &s.netns else { continue };
        // A runtime writes its containers' files (berth's DNS goes in its result).
        if ctx.is_blocked(s) || s.external.is_some() {
            continue;
        }
        let (hosts, resolv) = contents(desired, s, ctx.inp.node_resolv);
        // A namespace this pass (re)creates starts without its files.
        let have = (!ctx.creating_ns.contains(netns))
            .then(|| observed.etc.get(netns))
            .flatten();
        if have.is_none_or(|f| f.hosts.as_deref() != Some(&hosts) || f.resolv.as_deref() != Some(&resolv)) {
            ctx.push(Action::WriteEtcFiles {
                netns: netns.clone(),
                hosts,
                resolv,
            });
        }
    }
}
