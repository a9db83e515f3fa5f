//! The plugin's own record of what dockerd was told, kept in
//! `<state-dir>/docker.json` (written whole, atomically, on every change)
//! because dockerd keeps using it across restarts of either side: pools
//! (their ids are in dockerd's store), Docker networks bound to berth
//! networks, addresses handed out (each a berth sandbox of origin docker,
//! named by a token) and endpoints (which token, which veth).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    /// `--subnet`; `None`: any (the berth network's, once bound).
    pub subnet: Option<String>,
    /// `--gateway`, when dockerd asked for one.
    pub gateway: Option<String>,
    /// The Docker network it was created for (CreateNetwork links them).
    pub network: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub pool: String,
    /// `overlay` or `bridge`.
    pub driver: String,
    /// `com.docker.network.*` options passed to berth.
    pub options: BTreeMap<String, String>,
    /// The Docker network's name = the berth network's, once learned from dockerd.
    pub name: Option<String>,
    /// The berth network's id, once bound.
    pub berth_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Address {
    pub pool: String,
    /// `A.B.C.D/len`, as answered to dockerd.
    pub cidr: String,
    /// The Docker endpoint it went to (CreateEndpoint).
    pub endpoint: Option<String>,
    /// Unix seconds when handed out.
    pub since: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network: String,
    /// The address's token (the berth sandbox's container id).
    pub token: String,
    /// The berth endpoint's id (host veth `bv<12>`, mark `berth:ep:<id>`).
    pub berth_endpoint: String,
    pub mac: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub pools: BTreeMap<String, Pool>,
    pub networks: BTreeMap<String, Network>,
    /// token → address.
    pub addresses: BTreeMap<String, Address>,
    /// Docker endpoint id → endpoint.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl State {
    /// The token of the address `cidr`'s IP handed out from `pool`.
    pub fn token_of(&self, pool: &str, ip: &str) -> Option<String> {
        self.addresses
            .iter()
            .find(|(_, a)| a.pool == pool && a.cidr.split('/').next() == Some(ip))
            .map(|(t, _)| t.clone())
    }
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("docker.json"),
        }
    }

    pub fn load(&self) -> anyhow::Result<State> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{}: {e}; move it away to start afresh", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", self.path.display())),
        }
    }

    pub fn save(&self, s: &State) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(s).expect("plain data"))?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), State::default());
        let mut s = State::default();
        s.addresses.insert(
            "t1".into(),
            Address {
                pool: "p".into(),
                cidr: "10.0.0.2/24".into(),
                ..Default::default()
            },
        );
        store.save(&s).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.token_of("p", "10.0.0.2").as_deref(), Some("t1"));
        assert_eq!(back.token_of("p", "10.0.0.3"), None);
        assert_eq!(back.token_of("q", "10.0.0.2"), None);
        std::fs::write(dir.path().join("docker.json"), b"{").unwrap();
        assert!(store.load().unwrap_err().to_string().contains("docker.json"));
    }
}
