//! What the agent has created on this node and must be able to find again
//! after a restart: namespaces (their names are the users' sandbox names, so
//! no prefix marks them), bridges (users may name them) and detached
//! commands. Kept in `<state-dir>/owned.json`, written atomically.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    /// Network namespace name → sandbox id.
    #[serde(default)]
    pub netns: BTreeMap<String, String>,
    #[serde(default)]
    pub bridges: BTreeSet<String>,
    /// Sandbox id → detached command.
    #[serde(default)]
    pub commands: BTreeMap<String, Detached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub pid: u32,
    pub start_time: u64,
}

/// Loads and saves [`Owned`] in a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("logs"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("owned.json")
    }

    pub fn log_file(&self, sandbox: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{sandbox}.log"))
    }

    pub fn load(&self) -> Owned {
        match std::fs::read(self.file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "state file unreadable; starting from an empty record");
                Owned::default()
            }),
            Err(_) => Owned::default(),
        }
    }

    pub fn save(&self, owned: &Owned) -> std::io::Result<()> {
        let tmp = self.dir.join("owned.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(owned).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, self.file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path()).unwrap();
        assert_eq!(s.load(), Owned::default());
        let mut o = Owned::default();
        o.netns.insert("test1".into(), "id1".into());
        o.bridges.insert("berth0".into());
        o.commands.insert(
            "id1".into(),
            Detached {
                pid: 42,
                start_time: 7,
            },
        );
        s.save(&o).unwrap();
        assert_eq!(s.load(), o);
    }
}
