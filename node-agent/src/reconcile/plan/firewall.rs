//! berth's nftables table: masquerade and isolation for every bridge
//! network here, DNAT for published ports; `route_localnet` on bridges
//! with published ports (127.0.0.1:PORT from the node). Applied again when
//! the wanted rules changed, or when the kernel's table does not hold them
//! (flushed or deleted by hand), which full passes check.
use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::Ctx;
use crate::nft::{self, BridgeRules, PortRule};
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
    let stale_cache = ctx.inp.applied_rules != Some(&ruleset);
    let kernel_differs = observed
        .firewall
        .as_ref()
        .is_some_and(|have| have.clone().unwrap_or_default() != ruleset.rule_counts());
    let localnet_off = !localnet.is_subset(&observed.localnet);
    if stale_cache || kernel_differs || localnet_off {
        ctx.push(Action::ApplyFirewall {
            rules: ruleset,
            localnet,
        });
    }
}
