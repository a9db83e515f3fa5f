//! The embedded DNS responder's socket inside each sandbox that resolves
//! names (user-defined bridge networks and overlays). A socket lives in
//! one namespace: a recreated namespace needs a new one.
use super::Ctx;
use super::etc::resolves_names;
use crate::reconcile::action::Action;

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let desired = ctx.desired();
    let observed = ctx.observed();
    for s in ctx.sandboxes_in_scope() {
        let Some(netns) = &s.netns else { continue };
        if ctx.is_blocked(s) || !resolves_names(desired, s) {
            continue;
        }
        let current = observed.namespaces.get(netns).map(|n| n.inode);
        let serving = observed.dns.get(&s.id).copied();
        if ctx.creating_ns.contains(netns) || serving.is_none() || serving != current {
            ctx.push(Action::ServeDns {
                sandbox_id: s.id.clone(),
                netns: netns.clone(),
            });
        }
    }
    for id in observed.dns.keys() {
        if !ctx.inp.scope.has_sandbox(id) {
            continue;
        }
        let keep = desired
            .sandboxes
            .get(id)
            .is_some_and(|s| !ctx.blocked.contains(id) && resolves_names(desired, s));
        if !keep {
            ctx.push(Action::StopDns {
                sandbox_id: id.clone(),
            });
        }
    }
}
