//! The integration-test harness: starts a real etcd, real `berth-api` and
//! `berth-agent` processes, and runs the real `berth` CLI. Every process is
//! stopped and every directory removed when its guard drops, on failure too.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

pub mod cluster;
pub mod invariants;
pub mod tls;
pub mod unix;

/// Where the workspace's binaries are: `$BERTH_BIN_DIR`, else the cargo
/// target directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test binary lives in target/<profile>/deps")
}

/// Path of a workspace binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (tests/run does)",
        p.display()
    );
    p
}

/// A loopback TCP port that was free a moment ago.
/// A loopback TCP port free now, for a server a test starts. Taken below
/// the kernel's ephemeral range: a port freed inside it can be taken by any
/// outgoing connection (an etcd client's, say) before the server binds it,
/// which failed a test with "Address already in use". Each call starts
/// from a different place (process id, a counter), so tests running at once
/// rarely try the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const FROM: u32 = 10_000;
    let span = ephemeral_from.saturating_sub(FROM).max(1);
    let start = std::process::id().wrapping_mul(7919) + N.fetch_add(1, Ordering::Relaxed) * 131;
    (0..span)
        .map(|i| FROM + (start + i) % span)
        .find(|&p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok())
        .map(|p| p as u16)
        .expect("a free loopback port below the ephemeral range")
}

/// A name unique to this process and call, for prefixes and namespaces.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to a new file `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        Self::spawn_into(name, cmd, log, out)
    }

    /// Like [`Proc::spawn`], appending to `log` (a restarted process keeps
    /// its earlier output).
    pub fn spawn_append(name: &str, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        Self::spawn_into(name, cmd, log, out)
    }

    fn spawn_into(name: &str, cmd: &mut Command, log: PathBuf, out: std::fs::File) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL at once, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private etcd (Debian's etcd-server) on loopback ports with its own data dir.
pub struct Etcd {
    pub url: String,
    peer_url: String,
    proc: Proc,
    dir: TempDir,
}

/// A single-member etcd serving clients on `url`, peers on `peer_url`.
pub fn etcd_command(data_dir: &Path, url: &str, peer_url: &str) -> Command {
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "test"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", url, "--advertise-client-urls", url])
        .args([
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
        ])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .args(["--logger", "zap", "--log-level", "warn"]);
    cmd
}

impl Etcd {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-etcd").tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = etcd_command(&dir.path().join("data"), &url, &peer_url);
        let proc = Proc::spawn("etcd", &mut cmd, dir.path().join("etcd.log"))?;
        let mut etcd = Self {
            url,
            peer_url,
            proc,
            dir,
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let ready = wait_until(Duration::from_secs(20), || {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.url, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        if !ready || !self.proc.alive() {
            bail!("etcd did not become healthy:\n{}", self.proc.log());
        }
        Ok(())
    }

    /// Stops etcd (SIGTERM); its data and ports stay for [`Etcd::restart`].
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts etcd again on the same URLs and data, and waits until healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        let mut cmd = etcd_command(&self.dir.path().join("data"), &self.url, &self.peer_url);
        self.proc = Proc::spawn_append("etcd", &mut cmd, self.dir.path().join("etcd.log"))?;
        self.wait_healthy()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Keys under `prefix`, via etcdctl.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "get", "--prefix", "--keys-only", prefix])
            .output()
            .expect("etcdctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The value of one key, via etcdctl.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "get", "--print-value-only", key])
            .output()
            .expect("etcdctl");
        let s = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (!s.is_empty()).then_some(s)
    }
}

/// A running `berth-api` on its own prefix, TCP port and Unix socket.
pub struct ApiServer {
    pub prefix: String,
    pub tcp: String,
    pub socket: PathBuf,
    pub proc: Proc,
    _dir: TempDir,
}

impl ApiServer {
    /// Starts berth-api against `etcd` under `prefix` and waits until it serves.
    pub fn start(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Result<Self> {
        let api = Self::spawn(etcd, prefix, extra)?;
        api.wait_ready()?;
        Ok(api)
    }

    /// Starts berth-api without waiting for it.
    pub fn spawn(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-api").tempdir()?;
        let port = free_port();
        let tcp = format!("127.0.0.1:{port}");
        let socket = dir.path().join("api.sock");
        let mut cmd = Command::new(bin("berth-api"));
        cmd.args([
            "--etcd-endpoints",
            &etcd.url,
            "--etcd-prefix",
            prefix,
            "--listen",
            &tcp,
        ])
        .arg("--socket")
        .arg(&socket)
        .args(["--log", "info,berth_api=debug"])
        .args(extra);
        let proc = Proc::spawn("berth-api", &mut cmd, dir.path().join("api.log"))?;
        Ok(Self {
            prefix: prefix.to_string(),
            tcp,
            socket,
            proc,
            _dir: dir,
        })
    }

    pub fn wait_ready(&self) -> Result<()> {
        let ok = wait_until(Duration::from_secs(20), || {
            self.socket.exists() && self.cli(&["network", "ls"]).status.success()
        });
        if !ok {
            bail!("berth-api did not come up:\n{}", self.proc.log());
        }
        Ok(())
    }

    /// The `--api` value for the CLI (the Unix socket).
    pub fn api_arg(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.tcp)
    }

    /// Runs `berth --api <this server> ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.api_arg(), args)
    }

    /// Runs the CLI and returns stdout, failing the test with stderr otherwise.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        expect_ok(self.cli(args), args, || self.proc.log())
    }

    /// Runs the CLI with `--output json` and parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(&self.cli_ok(&json_args(args)), args)
    }

    /// A gRPC channel to the server's TCP port.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connecting to berth-api")
    }
}

/// A running `berth-agent` in the current network namespace (registration
/// only: it listens on loopback and reports `address`, to which nothing is sent).
pub struct Agent {
    pub name: String,
    pub proc: Proc,
    _dir: TempDir,
}

impl Agent {
    pub fn start(api: &ApiServer, name: &str, address: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-agent").tempdir()?;
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(bin("berth-agent"));
        cmd.args([
            "--name",
            name,
            "--address",
            address,
            "--api",
            &api.url(),
            "--listen",
            &listen,
        ])
        .args(["--advertise-url", &format!("http://{listen}")])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--local-socket")
        .arg(dir.path().join("agent.sock"))
        .args(["--log", "debug"]);
        let proc = Proc::spawn("berth-agent", &mut cmd, dir.path().join("agent.log"))?;
        Ok(Self {
            name: name.to_string(),
            proc,
            _dir: dir,
        })
    }
}

/// Runs `berth --api API ARGS…`.
pub fn run_cli(api: &str, args: &[&str]) -> Output {
    Command::new(bin("berth"))
        .arg("--api")
        .arg(api)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running berth")
}

/// stdout of a successful CLI call; otherwise fails the test with its
/// stderr and `logs()`.
pub fn expect_ok(out: Output, args: &[&str], logs: impl FnOnce() -> String) -> String {
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--output json` followed by `args`.
pub fn json_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    all
}

/// Parses a CLI call's JSON output.
pub fn parse_json(out: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("berth {args:?}: not JSON ({e}): {out}"))
}

/// stderr of a finished command, trimmed.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}
