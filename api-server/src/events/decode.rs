//! From etcd changes to events: a pure function of a key, its new and
//! previous values, unit-tested. Keys that are bookkeeping (names, IPAM,
//! ports, subnets, VNIs, guards, leadership) give no event.
use std::collections::{BTreeMap, HashMap};

use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord, Phase, SandboxRecord};

/// One event, as the stream sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `network`, `sandbox`, `node` or `repair`.
    pub kind: &'static str,
    pub action: String,
    pub id: String,
    pub name: String,
    pub node: String,
    /// Network name: a network event's own, a (dis)connect's, a sandbox's first.
    pub network: String,
    pub revision: i64,
    pub time_nanos: i64,
    pub attributes: BTreeMap<String, String>,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Written; `first` when the key did not exist before (version 1).
    Put {
        value: &'a [u8],
        prev: Option<&'a [u8]>,
        first: bool,
    },
    /// Deleted (by a request, or its lease ran out).
    Delete { prev: Option<&'a [u8]> },
}

/// Turns changes under one prefix into events; remembers network names
/// so events about endpoints and sandboxes name their networks.
#[derive(Debug, Default)]
pub struct Decoder {
    root: String,
    networks: HashMap<String, String>,
}

fn parse<T: serde::de::DeserializeOwned>(b: Option<&[u8]>) -> Option<T> {
    serde_json::from_slice(b?).ok()
}

impl Decoder {
    /// `root`: the key layout's root (`/berth/v1/`); `networks`: id → name
    /// of the networks that exist where the stream starts.
    pub fn new(root: &str, networks: HashMap<String, String>) -> Self {
        Self {
            root: root.to_string(),
            networks,
        }
    }

    fn network_name(&self, id: &str) -> String {
        self.networks.get(id).cloned().unwrap_or_else(|| short(id))
    }

    /// The events one change of `key` (full key) at `revision` means.
    pub fn decode(&mut self, key: &str, change: Change<'_>, revision: i64) -> Vec<Event> {
        let Some(rel) = key.strip_prefix(&self.root) else {
            return Vec::new();
        };
        let mut parts = rel.split('/');
        let (Some(kind), rest) = (parts.next(), parts.collect::<Vec<_>>()) else {
            return Vec::new();
        };
        let mut out = match (kind, rest.as_slice(), change) {
            ("networks", [_], c) => self.network(c),
            ("sandboxes", [_], c) => self.sandbox(c),
            ("endpoints", [_, _], c) => self.endpoint(c),
            ("nodes", [_], c) => node(c),
            ("alive", [name], c) => alive(name, c),
            ("events", ["repair"], Change::Put { value, .. }) => repair(value),
            _ => Vec::new(),
        };
        for e in &mut out {
            e.revision = revision;
        }
        out
    }

    fn network(&mut self, c: Change<'_>) -> Vec<Event> {
        let (action, rec) = match c {
            Change::Put {
                value, first: true, ..
            } => ("create", parse::<NetworkRecord>(Some(value))),
            Change::Delete { prev } => ("remove", parse::<NetworkRecord>(prev)),
            Change::Put { .. } => return Vec::new(),
        };
        let Some(n) = rec else { return Vec::new() };
        self.networks.insert(n.id.clone(), n.name.clone());
        let mut attributes = BTreeMap::from([
            ("driver".to_string(), n.driver.to_string()),
            ("scope".to_string(), n.scope.to_string()),
        ]);
        if let Some(s) = n.subnet {
            attributes.insert("subnet".into(), s.to_string());
        }
        vec![Event {
            kind: "network",
            action: action.into(),
            id: n.id,
            name: n.name.clone(),
            network: n.name,
            attributes,
            ..Default::default()
        }]
    }

    fn sandbox(&self, c: Change<'_>) -> Vec<Event> {
        let (action, rec) = match c {
            Change::Put {
                value, first: true, ..
            } => ("create", parse::<SandboxRecord>(Some(value))),
            Change::Put { value, prev, .. } => {
                let (Some(now), before) = (parse::<SandboxRecord>(Some(value)), parse::<SandboxRecord>(prev))
                else {
                    return Vec::new();
                };
                if before.is_some_and(|b| b.phase == now.phase) {
                    return Vec::new();
                }
                let action = match now.phase {
                    Phase::Ready => "ready",
                    Phase::Removing => "removing",
                    Phase::Creating => "creating",
                };
                (action, Some(now))
            }
            Change::Delete { prev } => ("remove", parse::<SandboxRecord>(prev)),
        };
        let Some(s) = rec else { return Vec::new() };
        let networks: Vec<String> = s.networks.iter().map(|n| self.network_name(n)).collect();
        let mut attributes = BTreeMap::from([
            ("mode".to_string(), s.mode.as_str().to_string()),
            ("phase".to_string(), s.phase.as_str().to_string()),
        ]);
        if !networks.is_empty() {
            attributes.insert("networks".into(), networks.join(","));
        }
        vec![Event {
            kind: "sandbox",
            action: action.into(),
            id: s.id,
            name: s.name,
            node: s.node,
            network: networks.first().cloned().unwrap_or_default(),
            attributes,
            ..Default::default()
        }]
    }

    fn endpoint(&self, c: Change<'_>) -> Vec<Event> {
        let (action, rec) = match c {
            Change::Put {
                value, first: true, ..
            } => ("connect", parse::<EndpointRecord>(Some(value))),
            Change::Delete { prev } => ("disconnect", parse::<EndpointRecord>(prev)),
            Change::Put { .. } => return Vec::new(),
        };
        let Some(ep) = rec else { return Vec::new() };
        let mut attributes = BTreeMap::from([("network_id".to_string(), ep.network_id.clone())]);
        if let Some(ip) = ep.ip {
            attributes.insert("ip".into(), ip.to_string());
        }
        if !ep.ifname.is_empty() {
            attributes.insert("ifname".into(), ep.ifname.clone());
        }
        vec![Event {
            kind: "sandbox",
            action: action.into(),
            network: self.network_name(&ep.network_id),
            id: ep.sandbox_id,
            name: ep.sandbox_name,
            node: ep.node,
            attributes,
            ..Default::default()
        }]
    }
}

fn node(c: Change<'_>) -> Vec<Event> {
    let (action, rec) = match c {
        Change::Put {
            value, first: true, ..
        } => ("register", parse::<NodeRecord>(Some(value))),
        Change::Put { value, prev, .. } => {
            let (Some(now), before) = (parse::<NodeRecord>(Some(value)), parse::<NodeRecord>(prev)) else {
                return Vec::new();
            };
            if now.removing && !before.is_some_and(|b| b.removing) {
                ("removing", Some(now))
            } else {
                return Vec::new();
            }
        }
        Change::Delete { prev } => ("remove", parse::<NodeRecord>(prev)),
    };
    let Some(n) = rec else { return Vec::new() };
    vec![Event {
        kind: "node",
        action: action.into(),
        id: n.name.clone(),
        name: n.name.clone(),
        node: n.name,
        attributes: BTreeMap::from([("address".to_string(), n.address.to_string())]),
        ..Default::default()
    }]
}

/// `alive/<node>` lives while the agent's lease does.
fn alive(name: &str, c: Change<'_>) -> Vec<Event> {
    let action = match c {
        Change::Put { first: true, .. } => "ready",
        Change::Delete { .. } => "down",
        Change::Put { .. } => return Vec::new(),
    };
    vec![Event {
        kind: "node",
        action: action.into(),
        id: name.into(),
        name: name.into(),
        node: name.into(),
        ..Default::default()
    }]
}

/// `events/repair`: `{"action": …, "sandbox"?, "node"?, "network"?, "key"?, "replica"}`.
fn repair(value: &[u8]) -> Vec<Event> {
    let Some(mut rec) = parse::<BTreeMap<String, String>>(Some(value)) else {
        return Vec::new();
    };
    let Some(action) = rec.remove("action") else {
        return Vec::new();
    };
    let sandbox = rec.get("sandbox").cloned().unwrap_or_default();
    let node = rec.get("node").cloned().unwrap_or_default();
    vec![Event {
        kind: "repair",
        action,
        id: String::new(),
        name: if sandbox.is_empty() { node.clone() } else { sandbox },
        node,
        network: rec.get("network").cloned().unwrap_or_default(),
        attributes: rec,
        ..Default::default()
    }]
}

/// An id as `ls` shows it (12 characters).
pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/berth/v1/";

    fn put<'a>(value: &'a str, prev: Option<&'a str>) -> Change<'a> {
        Change::Put {
            value: value.as_bytes(),
            prev: prev.map(str::as_bytes),
            first: prev.is_none(),
        }
    }

    fn sandbox(phase: &str) -> String {
        format!(
            r#"{{"id":"s1","name":"web","node":"node1","mode":"namespace","networks":["n1"],"created":"","phase":"{phase}"}}"#
        )
    }

    #[test]
    fn networks_sandboxes_endpoints() {
        let mut d = Decoder::new(ROOT, HashMap::new());
        let net = r#"{"id":"n1","name":"mynet","driver":"bridge","scope":"local","subnet":"172.18.0.0/16","created":""}"#;
        let e = d.decode("/berth/v1/networks/n1", put(net, None), 7);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].kind, e[0].action.as_str(), e[0].name.as_str()),
            ("network", "create", "mynet")
        );
        assert_eq!(e[0].revision, 7);
        assert_eq!(e[0].attributes["subnet"], "172.18.0.0/16");

        let e = d.decode("/berth/v1/sandboxes/s1", put(&sandbox("creating"), None), 8);
        assert_eq!(
            (e[0].action.as_str(), e[0].node.as_str(), e[0].network.as_str()),
            ("create", "node1", "mynet")
        );
        let creating = sandbox("creating");
        let e = d.decode(
            "/berth/v1/sandboxes/s1",
            put(&sandbox("ready"), Some(&creating)),
            9,
        );
        assert_eq!(e[0].action, "ready");
        let ready = sandbox("ready");
        assert!(
            d.decode("/berth/v1/sandboxes/s1", put(&ready, Some(&ready)), 10)
                .is_empty()
        );
        let e = d.decode(
            "/berth/v1/sandboxes/s1",
            Change::Delete {
                prev: Some(ready.as_bytes()),
            },
            11,
        );
        assert_eq!((e[0].action.as_str(), e[0].name.as_str()), ("remove", "web"));

        let ep = r#"{"id":"e","network_id":"n1","sandbox_id":"s1","sandbox_name":"web","node":"node1","ip":"172.18.0.2"}"#;
        let e = d.decode("/berth/v1/endpoints/n1/s1", put(ep, None), 12);
        assert_eq!(
            (e[0].action.as_str(), e[0].network.as_str()),
            ("connect", "mynet")
        );
        assert_eq!(e[0].attributes["ip"], "172.18.0.2");
        let e = d.decode(
            "/berth/v1/endpoints/n1/s1",
            Change::Delete {
                prev: Some(ep.as_bytes()),
            },
            13,
        );
        assert_eq!(e[0].action, "disconnect");
        let e = d.decode(
            "/berth/v1/networks/n1",
            Change::Delete {
                prev: Some(net.as_bytes()),
            },
            14,
        );
        assert_eq!(e[0].action, "remove");
        // A delete whose previous value etcd no longer has says nothing.
        assert!(
            d.decode("/berth/v1/networks/n2", Change::Delete { prev: None }, 15)
                .is_empty()
        );
    }

    #[test]
    fn nodes_repairs_and_bookkeeping() {
        let mut d = Decoder::new(ROOT, HashMap::new());
        let e = d.decode("/berth/v1/alive/node2", put("1", None), 3);
        assert_eq!(
            (e[0].kind, e[0].action.as_str(), e[0].node.as_str()),
            ("node", "ready", "node2")
        );
        let e = d.decode("/berth/v1/alive/node2", Change::Delete { prev: None }, 4);
        assert_eq!(e[0].action, "down");
        let rep = r#"{"action":"removal_finished","sandbox":"web","node":"node1","replica":"h:1"}"#;
        let e = d.decode("/berth/v1/events/repair", put(rep, Some(rep)), 5);
        assert_eq!(
            (e[0].kind, e[0].action.as_str(), e[0].name.as_str()),
            ("repair", "removal_finished", "web")
        );
        for key in [
            "ipam/n1/node1/172.18.0.2",
            "names/sandboxes/web",
            "leader/repair",
            "ports/node1/tcp/80/0.0.0.0",
        ] {
            assert!(
                d.decode(&format!("{ROOT}{key}"), put("x", None), 6).is_empty(),
                "{key}"
            );
        }
        assert!(d.decode("/other/v1/networks/n1", put("{}", None), 6).is_empty());
    }
}
