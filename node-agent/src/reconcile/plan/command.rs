//! Detached commands: started once per sandbox, after everything else of
//! it exists. One that exits stays exited (Docker's restart policy `no`);
//! one whose namespace is recreated is started again inside the new one.
//! Commands of sandboxes that are gone are stopped.
use super::Ctx;
use crate::reconcile::action::Action;

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let desired = ctx.desired();
    let observed = ctx.observed();
    for s in ctx.sandboxes_in_scope() {
        if s.command.is_empty() || ctx.is_blocked(s) {
            continue;
        }
        let recreated = s.netns.as_ref().is_some_and(|n| ctx.creating_ns.contains(n));
        match observed.commands.get(&s.id) {
            None => ctx.push(Action::StartCommand { sandbox: s.clone() }),
            Some(_) if recreated => {
                ctx.push(Action::StopCommand {
                    sandbox_id: s.id.clone(),
                });
                ctx.push(Action::StartCommand { sandbox: s.clone() });
            }
            Some(_) => {}
        }
    }
    for id in observed.commands.keys() {
        if ctx.inp.scope.has_sandbox(id) && !desired.sandboxes.contains_key(id) {
            ctx.push(Action::StopCommand {
                sandbox_id: id.clone(),
            });
        }
    }
}
