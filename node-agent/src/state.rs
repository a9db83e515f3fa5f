//! What the agent has created on this node, beside the markers on the
//! objects themselves: namespaces with their inode (a namespace marker is
//! inside the namespace and costs a thread to read), the names of links it
//! is about to create (the marker is set right after creation), and
//! detached commands. Kept in `<state-dir>/owned.json`, written atomically
//! (temporary file, fsync, rename, fsync of the directory). A missing or
//! corrupt file is reported as such, never read as "nothing": the agent then
//! rebuilds its record from the markers.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    /// Network namespace name → the sandbox berth made it for.
    #[serde(default)]
    pub netns: BTreeMap<String, NsRecord>,
    /// Links (bridges, VXLAN devices) berth creates in the node namespace;
    /// recorded before the creation.
    #[serde(default)]
    pub bridges: BTreeSet<String>,
    /// Sandbox id → detached command.
    #[serde(default)]
    pub commands: BTreeMap<String, Detached>,
    /// Sandbox id → berth's interfaces in a container runtime's namespace
    /// (recorded before they are created; the namespace itself is never berth's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external: BTreeMap<String, ExternalRecord>,
}

/// berth's endpoints in a runtime's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRecord {
    pub netns_path: String,
    /// The namespace's inode when attached (0: not known).
    #[serde(default)]
    pub inode: u64,
    /// Host veth name → endpoint id (its marker is `berth:ep:<id>`).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

/// A namespace berth made (or is about to make: no inode yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "NsRecordFile")]
pub struct NsRecord {
    pub sandbox: String,
    pub inode: Option<u64>,
}

/// The record as files hold it; earlier agents wrote only the sandbox id.
#[derive(Deserialize)]
#[serde(untagged)]
enum NsRecordFile {
    Full { sandbox: String, inode: Option<u64> },
    Id(String),
}

impl From<NsRecordFile> for NsRecord {
    fn from(f: NsRecordFile) -> Self {
        match f {
            NsRecordFile::Full { sandbox, inode } => Self { sandbox, inode },
            NsRecordFile::Id(sandbox) => Self { sandbox, inode: None },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub pid: u32,
    pub start_time: u64,
}

/// What loading the state file found.
#[derive(Debug)]
pub enum Loaded {
    Found(Owned),
    /// No file: a first start, or a lost file.
    Missing,
    /// A file that does not parse (kept beside as `owned.json.corrupt`).
    Corrupt(String),
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

    pub fn load(&self) -> Loaded {
        match std::fs::read(self.file()) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(owned) => Loaded::Found(owned),
                Err(e) => {
                    let _ = std::fs::rename(self.file(), self.dir.join("owned.json.corrupt"));
                    Loaded::Corrupt(e.to_string())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::Missing,
            Err(e) => Loaded::Corrupt(e.to_string()),
        }
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, owned: &Owned) -> std::io::Result<()> {
        let tmp = self.dir.join("owned.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(owned).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, self.file())?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path()).unwrap();
        assert!(matches!(s.load(), Loaded::Missing));
        let mut o = Owned::default();
        o.netns.insert(
            "test1".into(),
            NsRecord {
                sandbox: "id1".into(),
                inode: Some(4026532),
            },
        );
        o.bridges.insert("berth0".into());
        o.commands.insert(
            "id1".into(),
            Detached {
                pid: 42,
                start_time: 7,
            },
        );
        s.save(&o).unwrap();
        assert!(matches!(s.load(), Loaded::Found(ref l) if *l == o));
        std::fs::write(dir.path().join("owned.json"), b"{\"netns\": {\"x\"").unwrap();
        assert!(matches!(s.load(), Loaded::Corrupt(_)));
        assert!(dir.path().join("owned.json.corrupt").exists());
        assert!(matches!(s.load(), Loaded::Missing));
    }

    #[test]
    fn reads_the_earlier_format() {
        let o: Owned = serde_json::from_str(r#"{"netns":{"t1":"id1"},"bridges":["berth0"]}"#).unwrap();
        assert_eq!(
            o.netns["t1"],
            NsRecord {
                sandbox: "id1".into(),
                inode: None
            }
        );
    }
}
