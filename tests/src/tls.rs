//! Test helpers for mutual TLS: a cluster PKI made with the real `berth
//! cert` commands, the TLS flags for each process, and gRPC calls made from
//! inside a test network namespace (a thread that has entered it), so tests
//! can talk to TCP ports that exist only there.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::bin;

/// A CA and certificates in a temporary directory, made by `berth cert`.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A new CA (`berth cert ca`).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-pki").tempdir()?;
        let pki = Self { dir };
        pki.cert(&["ca"])?;
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `berth cert ARGS… --dir DIR`.
    pub fn cert(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(bin("berth"))
            .arg("cert")
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "berth cert {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `STEM.crt` and `STEM.key`.
    pub fn pair(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(format!("{stem}.crt")),
            self.dir.path().join(format!("{stem}.key")),
        )
    }

    /// `--tls-ca CA --tls-cert STEM.crt --tls-key STEM.key`.
    pub fn flags(&self, stem: &str) -> Vec<String> {
        let (crt, key) = self.pair(stem);
        [
            "--tls-ca".to_string(),
            self.ca().display().to_string(),
            "--tls-cert".to_string(),
            crt.display().to_string(),
            "--tls-key".to_string(),
            key.display().to_string(),
        ]
        .to_vec()
    }

    /// A client configuration trusting this CA and presenting `stem`'s
    /// certificate (none for `None`).
    pub fn client_tls(&self, stem: Option<&str>) -> ClientTlsConfig {
        let ca = Certificate::from_pem(std::fs::read(self.ca()).expect("ca.crt"));
        let mut cfg = ClientTlsConfig::new().ca_certificate(ca);
        if let Some(stem) = stem {
            let (crt, key) = self.pair(stem);
            cfg = cfg.identity(Identity::from_pem(
                std::fs::read(crt).expect("crt"),
                std::fs::read(key).expect("key"),
            ));
        }
        cfg
    }
}

/// Runs the future `f` makes on a new thread that first enters network
/// namespace `ns` (`/run/netns/NS`), with its own single-threaded runtime,
/// so every socket it opens lives in that namespace.
pub fn in_netns<F, Fut, T>(ns: &str, f: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
        .join()
        .expect("thread in netns")
    })
}

/// A lazily connected channel to `url` with `tls` (none: plain HTTP/2);
/// connection failures show up as the status of the first call.
pub fn channel(url: &str, tls: Option<ClientTlsConfig>) -> Channel {
    let mut ep = Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).expect("tls config");
    }
    ep.connect_lazy()
}
