//! berth's nftables tables: masquerade and isolation for every bridge
//! network here, DNAT maps whose elements are the published ports;
//! `route_localnet` on bridges with published ports (127.0.0.1:PORT from
//! the node); the `[::1]` proxies. The whole table is replaced when its
//! structure (the bridges) changed or the kernel's does not hold it
//! (flushed or deleted by hand, which full passes check); a port that
//! comes or goes is an element added or deleted. Full passes compare the
//! kernel's elements with the wanted ones (a deleted element is put back,
//! an unknown one in berth's maps removed) and the proxies running with
//! the wanted ones; a command's pass compares with what was last applied.
use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::Ctx;
use crate::nft::{self, BridgeRules, PortElem, PortRule};
use crate::reconcile::action::Action;

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    if !ctx.inp.complete {
        return; // rules for only some of the node's sandboxes would cut the others off
    }
    let desired = ctx.desired();
    // Foreign bridges and blocked sandboxes get no rules: nothing of theirs is touched.
    let rules: Vec<BridgeRules> = desired
        .active_networks()
        .into_iter()
        .filter(|n| n.driver == Driver::Bridge && !ctx.blocked_networks.contains(&n.id))
        .map(|n| BridgeRules {
            bridge: n.bridge.clone(),
            subnet: n.subnet,
            subnet6: n.v6.map(|(s, _)| s),
            masquerade: n.masquerade,
            internal: n.internal,
        })
        .collect();
    let mut ports = Vec::new();
    for s in desired.sandboxes.values().filter(|s| !s.ports.is_empty()) {
        if ctx.blocked.contains(&s.id) {
            continue;
        }
        let Some(ep) = s.primary() else { continue };
        let Some(net) = desired.networks.get(&ep.network_id) else {
            continue;
        };
        if ctx.blocked_networks.contains(&net.id) {
            continue;
        }
        for m in &s.ports {
            ports.push(PortRule {
                mapping: *m,
                target6: ep.ip6.map(|(a, _)| a),
                target: ep.ip,
                bridge: net.bridge.clone(),
            });
        }
    }
    let localnet: BTreeSet<String> = ports.iter().map(|p| p.bridge.clone()).collect();
    let ruleset = nft::render(&rules, &ports);
    let observed = ctx.observed();
    let applied = ctx.inp.applied_rules;
    let localnet_off = !localnet.is_subset(&observed.localnet);
    let structure_kept = applied.is_some_and(|a| a.same_structure(&ruleset));
    let (have, proxies_off) = match &observed.firewall {
        // A full pass: the kernel's tables.
        Some(seen) => {
            let counts = seen.as_ref().map(|s| s.counts.clone()).unwrap_or_default();
            if !structure_kept || counts != ruleset.rule_counts() {
                return ctx.push(Action::ApplyFirewall {
                    rules: ruleset,
                    localnet,
                });
            }
            (
                seen.as_ref().map(|s| s.elements.clone()).unwrap_or_default(),
                &observed.proxies != ruleset.proxies(),
            )
        }
        // A command's pass: what was last applied.
        None => match applied {
            Some(a) if structure_kept => (a.elements().clone(), false),
            _ => {
                return ctx.push(Action::ApplyFirewall {
                    rules: ruleset,
                    localnet,
                });
            }
        },
    };
    let want = ruleset.elements();
    let add: Vec<PortElem> = want.difference(&have).copied().collect();
    let remove: Vec<PortElem> = have.difference(want).copied().collect();
    if !add.is_empty() || !remove.is_empty() || applied != Some(&ruleset) || localnet_off || proxies_off {
        ctx.push(Action::UpdatePorts {
            rules: ruleset,
            add,
            remove,
            localnet,
        });
    }
}
