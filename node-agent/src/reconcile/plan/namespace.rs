//! Sandbox namespaces. A namespace is berth's when `lo` inside carries
//! `berth:sb:<sandbox-id>` or berth's record names it with the same inode
//! (or as about to be created). A name that exists and is neither is a
//! conflict: never adopted, never deleted.
use super::Ctx;
use crate::reconcile::action::{Action, ObjectKey, ObjectKind};
use crate::reconcile::observed::{Namespace, sandbox_mark, sandbox_of_mark};

/// The sandbox a namespace provably belongs to, if any.
pub(super) fn owner<'a>(ctx: &'a Ctx<'_>, name: &str, ns: &'a Namespace) -> Option<&'a str> {
    if let Some(id) = ns.marker.as_deref().and_then(sandbox_of_mark) {
        return Some(id);
    }
    let rec = ctx.inp.owned.netns.get(name)?;
    (rec.inode.is_none() || rec.inode == Some(ns.inode)).then_some(rec.sandbox.as_str())
}

pub(super) fn plan(ctx: &mut Ctx<'_>) {
    let observed = ctx.observed();
    let desired = ctx.desired();
    for s in ctx.sandboxes_in_scope() {
        let Some(name) = &s.netns else { continue };
        if ctx.is_blocked(s) {
            continue;
        }
        let Some(ns) = observed.namespaces.get(name) else {
            ctx.creating_ns.insert(name.clone());
            ctx.push(Action::CreateNamespace {
                sandbox_id: s.id.clone(),
                netns: name.clone(),
            });
            continue;
        };
        match owner(ctx, name, ns) {
            Some(id) if id == s.id => {
                if ns.inspected && ns.marker.as_deref() != Some(sandbox_mark(&s.id).as_str()) {
                    // Berth's by its record; the marker is missing (a crash
                    // between creating and marking): finish the creation.
                    ctx.push(Action::CreateNamespace {
                        sandbox_id: s.id.clone(),
                        netns: name.clone(),
                    });
                }
            }
            // A namespace of a sandbox that is gone (its removal was missed):
            // berth's, so it is replaced.
            Some(id) if !desired.sandboxes.contains_key(id) => {
                let old = id.to_string();
                ctx.push(Action::RemoveNamespace {
                    netns: name.clone(),
                    sandbox_id: old,
                });
                ctx.creating_ns.insert(name.clone());
                ctx.push(Action::CreateNamespace {
                    sandbox_id: s.id.clone(),
                    netns: name.clone(),
                });
            }
            _ => ctx.conflict(
                ObjectKey::new(ObjectKind::Namespace, name),
                vec![s.id.clone()],
                format!("network namespace {name} already exists on this node and is not berth's"),
            ),
        }
    }
    // Berth's namespaces that no sandbox wants any more.
    let wanted = |name: &str, id: &str| {
        desired
            .sandboxes
            .get(id)
            .is_some_and(|s| s.netns.as_deref() == Some(name))
    };
    let mut seen = std::collections::BTreeSet::new();
    for (name, rec) in &ctx.inp.owned.netns {
        seen.insert(name.clone());
        if !ctx.inp.scope.has_sandbox(&rec.sandbox)
            || wanted(name, &rec.sandbox)
            || ctx.creating_ns.contains(name)
        {
            continue;
        }
        match observed.namespaces.get(name) {
            // Gone already, or provably still berth's: remove (files and record too).
            None => ctx.push(Action::RemoveNamespace {
                netns: name.clone(),
                sandbox_id: rec.sandbox.clone(),
            }),
            Some(ns) if owner(ctx, name, ns) == Some(rec.sandbox.as_str()) => {
                ctx.push(Action::RemoveNamespace {
                    netns: name.clone(),
                    sandbox_id: rec.sandbox.clone(),
                })
            }
            // Replaced by something else since: only berth's record goes.
            Some(_) => ctx.push(Action::ForgetNamespace { netns: name.clone() }),
        }
    }
    // Marked namespaces without a record (the state file was lost).
    for (name, ns) in &observed.namespaces {
        if seen.contains(name) {
            continue;
        }
        if let Some(id) = ns.marker.as_deref().and_then(sandbox_of_mark)
            && ctx.inp.scope.has_sandbox(id)
            && !wanted(name, id)
            && !ctx.creating_ns.contains(name)
        {
            ctx.push(Action::RemoveNamespace {
                netns: name.clone(),
                sandbox_id: id.to_string(),
            });
        }
    }
}
