//! `ls --filter KEY=VALUE`, as Docker's: values of one key are ORed,
//! different keys ANDed; `name` matches a part of the name, `id` a prefix
//! of the id, every other key the whole value. Filtering is done here, on
//! what `ls` already fetched (the API has no server-side filter).
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use berth_proto::v1::{Network, NetworkScope, Node, Sandbox, SandboxPhase};

use crate::output::origin_label;
use crate::views::{driver_name, node_status, origin_name};

/// The keys each listing takes.
pub const NETWORK_KEYS: &[&str] = &["name", "id", "driver", "scope", "label"];
pub const SANDBOX_KEYS: &[&str] = &["name", "id", "network", "node", "status", "origin"];
pub const NODE_KEYS: &[&str] = &["name", "status"];

/// Parsed filters: key → the values asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Checks the keys against `keys` (what `what` takes).
    pub fn parse(raw: &[(String, String)], keys: &[&str], what: &str) -> Result<Self> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in raw {
            if !keys.contains(&k.as_str()) {
                bail!("invalid filter {k:?}: {what} filters by {}", keys.join(", "));
            }
            out.entry(k.clone()).or_default().push(v.clone());
        }
        Ok(Self(out))
    }

    /// Whether every key has a value `test` accepts (no filter: true).
    fn all(&self, test: impl Fn(&str, &str) -> bool) -> bool {
        self.0.iter().all(|(k, values)| values.iter().any(|v| test(k, v)))
    }

    pub fn network(&self, n: &Network) -> bool {
        self.all(|k, v| match k {
            "name" => n.name.contains(v),
            "id" => n.id.starts_with(&v.to_ascii_lowercase()),
            "driver" => driver_name(n) == v,
            "scope" => scope_name(n) == v,
            "label" => match v.split_once('=') {
                Some((lk, lv)) => n.labels.get(lk).is_some_and(|x| x == lv),
                None => n.labels.contains_key(v),
            },
            _ => false,
        })
    }

    pub fn sandbox(&self, s: &Sandbox) -> bool {
        self.all(|k, v| match k {
            "name" => s.name.contains(v),
            "id" => s.id.starts_with(&v.to_ascii_lowercase()),
            "network" => s.endpoints.iter().any(|e| {
                e.network_name == v || (v.len() >= 4 && e.network_id.starts_with(&v.to_ascii_lowercase()))
            }),
            "node" => s.node == v,
            "status" => phase_name(s) == v,
            "origin" => origin_name(s) == v || origin_label(s) == v,
            _ => false,
        })
    }

    pub fn node(&self, n: &Node) -> bool {
        self.all(|k, v| match k {
            "name" => n.name.contains(v),
            "status" => node_status(n) == v,
            _ => false,
        })
    }
}

fn scope_name(n: &Network) -> &'static str {
    match NetworkScope::try_from(n.scope) {
        Ok(NetworkScope::Local) => "local",
        Ok(NetworkScope::Global) => "global",
        _ => "",
    }
}

/// A sandbox's phase as `status=` names it: creating, ready, removing.
pub fn phase_name(s: &Sandbox) -> &'static str {
    match SandboxPhase::try_from(s.phase) {
        Ok(SandboxPhase::Creating) => "creating",
        Ok(SandboxPhase::Removing) => "removing",
        _ => "ready",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn net(name: &str, id: &str, driver: i32) -> Network {
        Network {
            name: name.into(),
            id: id.into(),
            driver,
            scope: NetworkScope::Local as i32,
            labels: [("team".to_string(), "blue".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones() {
        let e = Filters::parse(&kv(&[("colour", "x")]), NETWORK_KEYS, "network ls").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid filter \"colour\": network ls filters by name, id, driver, scope, label"
        );
    }

    #[test]
    fn one_key_ors_two_keys_and() {
        let a = net("front", "abcd01", 1);
        let b = net("back", "ef0102", 2);
        let f = Filters::parse(&kv(&[("name", "fro"), ("name", "ack")]), NETWORK_KEYS, "x").unwrap();
        assert!(f.network(&a) && f.network(&b));
        let f = Filters::parse(&kv(&[("name", "ack"), ("driver", "bridge")]), NETWORK_KEYS, "x").unwrap();
        assert!(!f.network(&a) && !f.network(&b));
        let f = Filters::parse(&kv(&[("id", "ABCD"), ("scope", "local")]), NETWORK_KEYS, "x").unwrap();
        assert!(f.network(&a) && !f.network(&b));
        let f = Filters::parse(&kv(&[("label", "team=blue")]), NETWORK_KEYS, "x").unwrap();
        assert!(f.network(&a));
        let f = Filters::parse(&kv(&[("label", "team=red")]), NETWORK_KEYS, "x").unwrap();
        assert!(!f.network(&a));
        assert!(Filters::default().network(&a));
    }
}
