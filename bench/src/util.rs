//! Small helpers: child processes killed by PID on drop, polling, running
//! `ip`/`nft` for the lab's own set-up, and spawning inside a namespace.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_agent::kernel::netns;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process this bench started: SIGTERM (then SIGKILL) by its PID
/// and reaped on drop, on failure too.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self::adopt(child, log))
    }

    /// Takes over an already started child.
    pub fn adopt(child: Child, log: &Path) -> Self {
        Self {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to this child only.
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits up to `timeout` for the child to exit; true when it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// SIGTERM, up to 5 s, then SIGKILL; always reaped.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if !self.wait_exit(Duration::from_secs(5))
            && let Some(mut c) = self.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The child's captured exit, after it was asked to stop with `sig`.
    pub fn finish_with(&mut self, sig: Signal, timeout: Duration) {
        self.signal(sig);
        if !self.wait_exit(timeout) {
            self.stop();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every `every` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, every: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs a set-up command (never on a timed path) and fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS` (lab set-up and the hand-built data-plane paths only).
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).map(drop)
}

/// Feeds `script` to `nft -f -` inside namespace `ns`.
pub async fn nft_in(ns: &str, script: &str) -> Result<()> {
    let script = script.to_string();
    let out = in_ns(ns, move || {
        use std::io::Write;
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(script.as_bytes())?;
        child.wait_with_output()
    })
    .await??;
    if !out.status.success() {
        bail!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Writes a sysctl inside namespace `ns` (`/proc/sys/net` is per namespace
/// of the opening thread).
pub async fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_ns(ns, move || std::fs::write(&path, value)).await??;
    Ok(())
}

/// Runs `f` on a throwaway thread inside `/run/netns/NS`; processes it spawns
/// are born in that namespace (no `nsenter` in between).
pub async fn in_ns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    netns::run_in(ns, f)
        .await
        .with_context(|| format!("running in netns {ns}"))
}

/// The PATH a peer's plugin runs with (its environment is otherwise only
/// what the caller gives).
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `program args` to its exit from a thread inside namespace `ns`,
/// with only `env` (and [`PLUGIN_PATH`]) as environment and `stdin` on its
/// standard input, as a runtime execs a network plugin; the time from the
/// spawn to the exit, and what it printed.
pub async fn exec_timed_in(
    ns: &str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
) -> Result<(Duration, std::process::Output)> {
    use std::io::Write;
    let run = move || -> std::io::Result<_> {
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", PLUGIN_PATH)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(&stdin)?;
        let out = child.wait_with_output()?;
        Ok((start.elapsed(), out))
    };
    Ok(in_ns(ns, run).await??)
}

/// Starts `program args` inside namespace `ns` as a guarded child.
pub async fn spawn_in(ns: &str, name: &str, program: &str, args: &[&str], log: &Path) -> Result<Proc> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let child = in_ns(ns, move || {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    })
    .await?
    .with_context(|| format!("starting {name} in {ns}"))?;
    Ok(Proc::adopt(child, log))
}

/// Runs `program args` inside namespace `ns` to completion; stdout on success.
pub async fn output_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let p = program.to_string();
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = in_ns(ns, move || Command::new(p).args(a).stdin(Stdio::null()).output())
        .await?
        .with_context(|| format!("running {program} in {ns}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} in {ns}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Milliseconds of a duration, as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
