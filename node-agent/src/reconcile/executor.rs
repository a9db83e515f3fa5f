//! The small interface between a pass and the node: look ([`Executor::observe`]),
//! change one object ([`Executor::execute`]), keep berth's record
//! ([`Executor::persist`]). The kernel implements it in [`super::kernel`];
//! tests implement it with an in-memory node.
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use super::action::Action;
use super::observed::Observed;
use super::report::ObjectError;
use crate::nft::Ruleset;
use crate::state::{Detached, Owned};

/// What a pass needs to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveRequest {
    /// Links of the node namespace to read by name; `None`: all of them
    /// (full passes). A command's pass reads only its own, so its cost does
    /// not grow with the number of sandboxes on the node.
    pub links: Option<BTreeSet<String>>,
    /// Namespaces to look inside (links, marker, default route).
    pub inspect: BTreeSet<String>,
    /// Namespaces whose existence and inode matter (berth's, maybe to remove).
    pub stat: BTreeSet<String>,
    /// Every namespace whose name starts with this, markers read: rebuilding
    /// berth's record after the state file was lost.
    pub scan_prefix: Option<String>,
    /// VXLAN devices whose FDB and neighbour entries to read.
    pub vxlans: BTreeSet<String>,
    /// Whether to read berth's nftables table from the kernel.
    pub firewall: bool,
    /// Namespaces whose `/etc/netns` files to read.
    pub etc: BTreeSet<String>,
    /// Recorded detached commands, to check whether they still run.
    pub commands: BTreeMap<String, Detached>,
    /// Desired host-mode sandboxes (their commands run in the node's namespace).
    pub host_sandboxes: BTreeSet<String>,
    /// Sandboxes whose DNS responder to check; `None`: every one (full passes).
    pub dns: Option<BTreeSet<String>>,
}

/// What an action left that berth's record must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// A namespace now exists with this inode.
    Namespace {
        inode: u64,
    },
    /// A detached command was started.
    Command(Detached),
}

pub trait Executor {
    fn observe(&mut self, req: &ObserveRequest)
    -> impl Future<Output = Result<Observed, ObjectError>> + Send;
    /// Changes one object. `owned` is berth's record as it stands (e.g. the
    /// PID of a command to stop).
    fn execute(
        &mut self,
        action: &Action,
        owned: &Owned,
    ) -> impl Future<Output = Result<Effect, ObjectError>> + Send;
    /// Writes berth's record durably.
    fn persist(&mut self, owned: &Owned) -> Result<(), ObjectError>;
    /// The ruleset the last successful firewall apply installed, if any.
    fn applied_rules(&self) -> Option<&Ruleset>;
}
