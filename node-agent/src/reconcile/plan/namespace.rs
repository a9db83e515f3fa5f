//! Sandbox namespaces. A namespace is berth's when `lo` inside carries
//! `berth:sb:<sandbox-id>` or berth's record names it with the same inode
//! (or as about to be created). A name that exists and is neither is a
//! conflict: never adopted, never deleted.
//!
//! A runtime's namespace (CNI, Docker: the sandbox has an `external` spec)
//! is never berth's: it is not created, marked or deleted, only watched.
//! When its path is gone or holds another namespace (another inode) the
//! sandbox is reported vanished, to be detached through the API server;
//! berth's interfaces inside one that is no longer wanted are removed by
//! their host ends, by berth's record of them.
use super::Ctx;
use crate::reconcile::action::{Action, ObjectKey, ObjectKind};
use crate::reconcile::observed::{Namespace, endpoint_mark, sandbox_mark, sandbox_of_mark};

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
        if let Some(x) = &s.external {
            let attached = observed.namespaces.get(name).map(|ns| ns.inode);
            let expected = match ctx.inp.owned.external.get(&s.id) {
                Some(r) if r.inode != 0 => r.inode,
                _ => x.inode,
            };
            if attached.is_none() || (expected != 0 && attached != Some(expected)) {
                let what = if attached.is_none() {
                    "is gone"
                } else {
                    "now holds another namespace"
                };
                ctx.plan.vanished.push(s.id.clone());
                ctx.conflict(
                    ObjectKey::new(ObjectKind::Namespace, name),
                    vec![s.id.clone()],
                    format!(
                        "network namespace {name} of container {} {what}; its attachment is being removed",
                        x.container_id
                    ),
                );
            }
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
    for (name, rec) in &ctx.inp.owned.netns {
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
    // berth's interfaces in runtimes' namespaces that no sandbox wants.
    for (id, rec) in &ctx.inp.owned.external {
        if !ctx.inp.scope.has_sandbox(id) || desired.sandboxes.contains_key(id) {
            continue;
        }
        for (host, ep) in &rec.links {
            let ours = observed
                .links
                .get(host)
                .is_some_and(|l| l.alias.as_deref() == Some(endpoint_mark(ep).as_str()));
            if ours {
                ctx.push(Action::RemoveLink {
                    ifname: host.clone(),
                    kind: ObjectKind::Endpoint,
                });
            }
        }
        ctx.push(Action::ForgetExternal {
            sandbox_id: id.clone(),
            netns: rec.netns_path.clone(),
        });
    }
    // Marked namespaces without a record (the state file was lost).
    for (name, ns) in &observed.namespaces {
        if ctx.inp.owned.netns.contains_key(name) {
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
