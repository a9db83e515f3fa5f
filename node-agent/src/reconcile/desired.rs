//! The node's desired state as the agent holds it, merged from commands
//! and from full snapshots pulled from the API server. Every sandbox spec
//! carries its generation (the etcd revision of its record): an older spec
//! never replaces a newer one, a snapshot read before a command does not
//! undo it, and a removed sandbox (ids are never reused) never comes back.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{Desired, NetworkSpec, PeerSet, SandboxSpec};

/// How long a removed sandbox id is remembered.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Why a command was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The sandbox was removed; the command is late.
    Removed,
    /// The agent holds a newer generation of the sandbox.
    Older { have: u64, got: u64 },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Removed => write!(f, "the sandbox was removed; this command is stale"),
            Refused::Older { have, got } => {
                write!(
                    f,
                    "stale command: generation {got} is older than generation {have} held"
                )
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct DesiredStore {
    desired: Desired,
    /// Network id → how many endpoints of the held sandboxes use it, kept
    /// with every change so dropping unused networks costs O(networks),
    /// not O(sandboxes).
    users: HashMap<String, usize>,
    /// Removed sandbox ids, with when they were removed.
    tombstones: HashMap<String, Instant>,
    /// Revision of the last snapshot taken.
    snapshot_revision: u64,
}

impl DesiredStore {
    pub fn get(&self) -> &Desired {
        &self.desired
    }

    pub fn snapshot_revision(&self) -> u64 {
        self.snapshot_revision
    }

    /// Takes one sandbox's spec (with the networks and peer sets it needs).
    pub fn ensure(
        &mut self,
        sandbox: SandboxSpec,
        networks: Vec<NetworkSpec>,
        peers: Vec<(String, PeerSet)>,
    ) -> Result<(), Refused> {
        if self.tombstones.contains_key(&sandbox.id) {
            return Err(Refused::Removed);
        }
        if let Some(have) = self.desired.sandboxes.get(&sandbox.id)
            && have.generation > sandbox.generation
        {
            return Err(Refused::Older {
                have: have.generation,
                got: sandbox.generation,
            });
        }
        for n in networks {
            self.desired.networks.insert(n.id.clone(), n);
        }
        for (id, set) in peers {
            self.accept_peers(&id, set);
        }
        self.count(&sandbox, true);
        if let Some(old) = self.desired.sandboxes.insert(sandbox.id.clone(), sandbox) {
            self.count(&old, false);
        }
        self.drop_unused_networks();
        Ok(())
    }

    /// Counts (or uncounts) the endpoints of `s` as users of their networks.
    fn count(&mut self, s: &SandboxSpec, add: bool) {
        for ep in &s.endpoints {
            if add {
                *self.users.entry(ep.network_id.clone()).or_default() += 1;
            } else if let Some(n) = self.users.get_mut(&ep.network_id) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&ep.network_id);
                }
            }
        }
    }

    /// Forgets a sandbox for good; returns its spec if it was held.
    pub fn remove(&mut self, id: &str) -> Option<SandboxSpec> {
        self.tombstones.retain(|_, t| t.elapsed() < TOMBSTONE_TTL);
        self.tombstones.insert(id.to_string(), Instant::now());
        let spec = self.desired.sandboxes.remove(id);
        if let Some(s) = &spec {
            self.count(s, false);
        }
        self.drop_unused_networks();
        spec
    }

    /// Stores a peer set unless the one held is newer; says whether it was taken.
    pub fn accept_peers(&mut self, network_id: &str, set: PeerSet) -> bool {
        if self
            .desired
            .peers
            .get(network_id)
            .is_some_and(|have| have.revision > set.revision)
        {
            return false;
        }
        self.desired.peers.insert(network_id.to_string(), set);
        true
    }

    /// Replaces the state with a snapshot read at `revision`, keeping what
    /// commands brought that is newer than it.
    pub fn snapshot(&mut self, mut snap: Desired, revision: u64) {
        for id in self.tombstones.keys() {
            snap.sandboxes.remove(id);
        }
        for (id, have) in &self.desired.sandboxes {
            let keep_ours = match snap.sandboxes.get(id) {
                // Ensured after the snapshot was read.
                None => have.generation > revision,
                Some(theirs) => have.generation > theirs.generation,
            };
            if keep_ours {
                for ep in &have.endpoints {
                    if let Some(n) = self.desired.networks.get(&ep.network_id) {
                        snap.networks.entry(n.id.clone()).or_insert_with(|| n.clone());
                    }
                }
                snap.sandboxes.insert(id.clone(), have.clone());
            }
        }
        for (id, set) in &self.desired.peers {
            if snap
                .peers
                .get(id)
                .is_none_or(|theirs| theirs.revision < set.revision)
            {
                snap.peers.insert(id.clone(), set.clone());
            }
        }
        self.desired = snap;
        self.users.clear();
        let sandboxes = std::mem::take(&mut self.desired.sandboxes);
        for s in sandboxes.values() {
            self.count(s, true);
        }
        self.desired.sandboxes = sandboxes;
        self.snapshot_revision = self.snapshot_revision.max(revision);
        self.drop_unused_networks();
    }

    /// Networks and peer sets no sandbox here uses any more.
    fn drop_unused_networks(&mut self) {
        let users = &self.users;
        self.desired.networks.retain(|id, _| users.contains_key(id));
        self.desired.peers.retain(|id, _| users.contains_key(id));
        self.desired.pruned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SandboxMode;

    fn sandbox(id: &str, generation: u64) -> SandboxSpec {
        SandboxSpec {
            id: id.into(),
            name: id.into(),
            mode: SandboxMode::None,
            netns: Some(id.into()),
            endpoints: vec![],
            command: vec![],
            ports: vec![],
            links: vec![],
            generation,
            external: None,
        }
    }

    #[test]
    fn older_generations_and_removed_sandboxes_lose() {
        let mut d = DesiredStore::default();
        d.ensure(sandbox("a", 5), vec![], vec![]).unwrap();
        assert_eq!(
            d.ensure(sandbox("a", 4), vec![], vec![]),
            Err(Refused::Older { have: 5, got: 4 })
        );
        d.ensure(sandbox("a", 6), vec![], vec![]).unwrap();
        assert_eq!(d.get().sandboxes["a"].generation, 6);
        d.remove("a");
        assert_eq!(d.ensure(sandbox("a", 9), vec![], vec![]), Err(Refused::Removed));
        assert!(d.get().sandboxes.is_empty());
    }

    fn on(id: &str, generation: u64, networks: &[&str]) -> SandboxSpec {
        let mut s = sandbox(id, generation);
        s.endpoints = networks
            .iter()
            .map(|n| crate::model::EndpointSpec {
                id: format!("{id}-{n}"),
                network_id: n.to_string(),
                ifname: "eth0".into(),
                ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
                prefix: 24,
                ip6: None,
                mac: [0; 6],
                default_route: false,
                aliases: vec![],
            })
            .collect();
        s
    }

    fn net(id: &str) -> NetworkSpec {
        NetworkSpec {
            id: id.into(),
            name: id.into(),
            driver: berth_core::model::Driver::Bridge,
            bridge: format!("br-{id}"),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            mtu: 0,
            icc: true,
            masquerade: true,
            internal: false,
            vni: None,
            v6: None,
        }
    }

    /// Networks go when their last user does (counted, not found by a
    /// walk over every sandbox), and stay while one is left.
    #[test]
    fn networks_live_as_long_as_their_users() {
        let mut d = DesiredStore::default();
        d.ensure(on("a", 1, &["x", "y"]), vec![net("x"), net("y")], vec![])
            .unwrap();
        d.ensure(on("b", 2, &["x"]), vec![net("x")], vec![]).unwrap();
        let ids = |d: &DesiredStore| d.get().networks.keys().cloned().collect::<Vec<_>>();
        assert_eq!(ids(&d), ["x", "y"]);
        assert_eq!(d.get().active_networks().len(), 2);
        // a leaves y: y goes, x stays (b uses it).
        d.ensure(on("a", 3, &["x"]), vec![net("x")], vec![]).unwrap();
        assert_eq!(ids(&d), ["x"]);
        d.remove("a");
        assert_eq!(ids(&d), ["x"]);
        d.remove("b");
        assert!(ids(&d).is_empty());
        // A snapshot counts its sandboxes afresh.
        let mut snap = Desired::default();
        snap.networks.insert("x".into(), net("x"));
        snap.networks.insert("unused".into(), net("unused"));
        snap.sandboxes.insert("c".into(), on("c", 9, &["x"]));
        d.snapshot(snap, 10);
        assert_eq!(ids(&d), ["x"]);
        d.remove("c");
        assert!(ids(&d).is_empty());
    }

    #[test]
    fn a_snapshot_does_not_undo_newer_commands() {
        let mut d = DesiredStore::default();
        d.ensure(sandbox("new", 12), vec![], vec![]).unwrap(); // after the snapshot's revision
        d.ensure(sandbox("old", 3), vec![], vec![]).unwrap(); // before it, and gone from it
        d.ensure(sandbox("changed", 11), vec![], vec![]).unwrap(); // newer than the snapshot's copy
        d.remove("gone");
        d.accept_peers(
            "ov",
            PeerSet {
                revision: 9,
                ..Default::default()
            },
        );
        let mut snap = Desired::default();
        for s in [sandbox("gone", 2), sandbox("kept", 4), sandbox("changed", 7)] {
            snap.sandboxes.insert(s.id.clone(), s);
        }
        snap.peers.insert(
            "ov".into(),
            PeerSet {
                revision: 7,
                ..Default::default()
            },
        );
        d.snapshot(snap, 10);
        let ids: Vec<&str> = d.get().sandboxes.keys().map(String::as_str).collect();
        assert_eq!(ids, ["changed", "kept", "new"]);
        assert_eq!(d.get().sandboxes["changed"].generation, 11);
        assert!(d.get().peers.is_empty(), "no sandbox uses ov, so its peers go");
    }
}
