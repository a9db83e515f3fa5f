//! Running processes inside a sandbox: `berth exec` (output streamed back)
//! and the detached COMMAND of `sandbox create`. The child enters the
//! sandbox's network namespace and a private mount namespace where the
//! sandbox's `/etc/netns/NAME/*` files cover `/etc/*` and `/sys` shows the
//! sandbox's interfaces, as `ip netns exec` does, but without spawning `ip`.
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Where a process should run.
#[derive(Debug, Clone)]
pub struct Target {
    /// `/run/netns/NAME`, or `None` for the node's own namespace (host mode).
    pub netns: Option<PathBuf>,
    /// `/etc/netns/NAME`, whose files cover the ones in `/etc`.
    pub etc_dir: Option<PathBuf>,
}

/// Everything the child needs, prepared before fork so the code between
/// fork and exec only makes system calls (no allocation).
struct Prepared {
    netns: Option<OwnedFd>,
    binds: Vec<(CString, CString)>,
    new_session: bool,
}

fn prepare(target: &Target, new_session: bool) -> std::io::Result<Prepared> {
    let netns = match &target.netns {
        Some(p) => Some(OwnedFd::from(std::fs::File::open(p)?)),
        None => None,
    };
    let mut binds = Vec::new();
    if let Some(dir) = &target.etc_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let dst = Path::new("/etc").join(e.file_name());
            if dst.exists() {
                binds.push((cstring(&e.path())?, cstring(&dst)?));
            }
        }
    }
    Ok(Prepared {
        netns,
        binds,
        new_session,
    })
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// Builds a command that runs `argv` in `target`.
pub fn command(
    target: &Target,
    argv: &[String],
    new_session: bool,
) -> std::io::Result<tokio::process::Command> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let prepared = prepare(target, new_session)?;
    let mut std_cmd = std::process::Command::new(prog);
    std_cmd.args(args);
    install_pre_exec(&mut std_cmd, prepared);
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(false);
    Ok(cmd)
}

#[allow(unsafe_code)]
fn install_pre_exec(cmd: &mut std::process::Command, p: Prepared) {
    let sys = c"/sys";
    let sysfs = c"sysfs";
    let root = c"/";
    // SAFETY: the closure runs between fork and exec in the child. It only
    // makes raw system calls on data prepared before the fork (file
    // descriptors and C strings owned by the closure); it does not allocate
    // or take locks.
    unsafe {
        cmd.pre_exec(move || {
            if p.new_session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let Some(fd) = &p.netns else { return Ok(()) };
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Keep our mounts from propagating back to the node.
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (src, dst) in &p.binds {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
            }
            // /sys of the new network namespace, so tools reading
            // /sys/class/net see the sandbox's interfaces. Best effort.
            if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) == 0 {
                libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null());
            }
            Ok(())
        });
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell a
/// recorded PID from a reused one.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Stops a detached command's process group: SIGTERM, then SIGKILL after
/// `grace`. Does nothing when the PID now belongs to another process.
pub async fn stop_group(pid: u32, started: u64, grace: std::time::Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if start_time(pid) != Some(started) {
        return;
    }
    let pgid = Pid::from_raw(pid as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if start_time(pid) != Some(started) || is_zombie(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}
