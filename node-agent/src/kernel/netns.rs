//! Named network namespaces under `/run/netns` (iproute2's layout) and netlink connections bound to one.
//!
//! A network namespace belongs to a *thread*: `unshare(CLONE_NEWNET)` and `setns` move only the
//! calling thread, and a socket lives in the namespace of the thread that created it. So every
//! operation that needs another namespace runs on a fresh `std::thread` that exits afterwards;
//! the async runtime's worker threads never change namespace.
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rtnetlink::{Handle, LinkUnspec};
use tracing::{debug, info};

use super::{KernelError, Result, io_err, nix_err, nl_err};

/// Where named namespaces are bind-mounted, so `ip netns exec NAME ...` finds them.
pub const NETNS_DIR: &str = "/run/netns";

/// The namespace file of `name` (`/run/netns/NAME`). A name that is an
/// absolute path is a container runtime's namespace file, used as it is
/// (only ever opened and inspected, never created or deleted: those take
/// names only).
pub fn path(name: &str) -> PathBuf {
    if name.starts_with('/') {
        return PathBuf::from(name);
    }
    Path::new(NETNS_DIR).join(name)
}

/// Rejects what is neither a name [`check_name`] takes nor an absolute
/// path without `..` components.
fn check_ref(name: &str) -> Result<()> {
    if !name.starts_with('/') {
        return check_name(name);
    }
    if name.len() > 4096 || name.contains('\0') || name.split('/').any(|c| c == "..") {
        return Err(KernelError::Invalid(format!("netns path {name:?}")));
    }
    Ok(())
}

/// Checks that `path` is a network namespace (an nsfs file that `setns`
/// accepts as one) and returns its inode. Used for a runtime's namespace
/// before berth attaches anything to it.
pub async fn verify_net(path: &str) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    check_ref(path)?;
    let p = self::path(path);
    if !is_nsfs(&p) {
        return Err(KernelError::Mismatch(format!(
            "{} is not a namespace file (no nsfs mount there)",
            p.display()
        )));
    }
    let file = File::open(&p).map_err(io_err(format!("opening {}", p.display())))?;
    let inode = file
        .metadata()
        .map_err(io_err(format!("reading {}", p.display())))?
        .ino();
    let shown = p.display().to_string();
    on_fresh_thread(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::Mismatch(format!("{shown} is not a network namespace (setns: {e})")))
    })
    .await?;
    Ok(inode)
}

/// Rejects names that would escape [`NETNS_DIR`] or that no file can have.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(KernelError::Invalid(format!("netns name {name:?}")));
    }
    if name.len() > 255 {
        return Err(KernelError::Invalid(format!(
            "netns name {name:?}: longer than 255 bytes"
        )));
    }
    Ok(())
}

/// Whether `name` exists as a namespace: its file is an nsfs bind mount, not a leftover empty file.
pub fn exists(name: &str) -> bool {
    check_ref(name).is_ok() && is_nsfs(&path(name))
}

fn is_nsfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Creates the named namespace with `lo` up and `lo`'s alias set to `mark` (berth's ownership
/// marker). `Ok(false)` when it already exists.
///
/// Done as `ip netns add` does it, but without forking: a fresh thread makes the mode-0 file,
/// unshares its network namespace, brings `lo` up and marks it through a netlink socket opened
/// there, and only then bind-mounts `/proc/thread-self/ns/net` onto the file. So a named namespace
/// is never visible without its marker: a crash before the mount leaves only a plain file (removed
/// by the next attempt), and the namespace dies with the thread. Concurrent calls for the *same*
/// name are the caller's to serialise.
pub async fn create(name: &str, mark: &str) -> Result<bool> {
    check_name(name)?;
    let file = path(name);
    if is_nsfs(&file) {
        debug!(netns = name, "netns already exists");
        return Ok(false);
    }
    // A plain file here is a leftover of a creation that died between open and mount.
    match std::fs::remove_file(&file) {
        Ok(()) => info!(netns = name, "removed stale netns file"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("removing stale {}", file.display()))(e)),
    }
    let runtime = tokio::runtime::Handle::current();
    let target = file.clone();
    let mark = mark.to_owned();
    let ns_name = name.to_owned();
    on_fresh_thread(move || {
        prepare_dir()?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&target)
            .map_err(io_err(format!("creating {}", target.display())))?;
        let made = (|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(nix_err("unsharing the network namespace"))?;
            // From here on this thread is inside the new namespace. IPv6 is
            // off for its interfaces unless their endpoint is on a dual-stack
            // network (`addr6::enable_on` switches it on for that one): an
            // IPv4 endpoint then sends no DAD/MLD announcements, which every
            // port of a busy bridge would otherwise receive (visible in
            // profiles of bulk creates).
            for conf in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
            let (connection, handle) = {
                let _enter = runtime.enter(); // the socket registers with the caller's reactor
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(io_err("opening a netlink socket in the new netns"))?;
                (connection, handle)
            };
            let task = runtime.spawn(connection);
            // QUIRK: `lo` is always ifindex 1 in a new namespace (LOOPBACK_IFINDEX).
            let res = runtime.block_on(async {
                handle
                    .link()
                    .change(LinkUnspec::new_with_index(1).up().alias(mark.as_str()).build())
                    .execute()
                    .await
            });
            drop(handle);
            task.abort();
            res.map_err(nl_err(format!("bringing lo up in netns {ns_name}")))?;
            // `/proc/self` would name the thread-group leader's namespace, not this thread's.
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(nix_err(format!(
                "bind-mounting the new netns onto {}",
                target.display()
            )))
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&target);
        }
        made
    })
    .await?;
    info!(netns = name, "created netns");
    Ok(true)
}

/// Removes the file `name` when it is what a creation that died between open and mount leaves
/// (an empty regular file, no namespace mounted on it). `Ok(false)` when there is no such file;
/// a mounted namespace or any other file is never touched.
pub fn remove_stale_file(name: &str) -> Result<bool> {
    check_name(name)?;
    let file = path(name);
    let stale = std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_file() && m.len() == 0)
        && !is_nsfs(&file);
    if !stale {
        return Ok(false);
    }
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(format!("removing stale {}", file.display()))(e)),
    }
}

/// The inode of the named namespace (what identifies it while it lives), if it exists.
pub fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if !exists(name) {
        return None;
    }
    std::fs::metadata(path(name)).ok().map(|m| m.ino())
}

/// The directory has been made a shared mount point by this process (see [`prepare_dir`]).
static DIR_PREPARED: Mutex<bool> = Mutex::new(false);

/// Makes [`NETNS_DIR`] exist and be a shared mount point, as iproute2's `netns_add` does, so that
/// namespace mounts made under it propagate to other mount namespaces (e.g. ones made by
/// `ip netns exec` or container runtimes) instead of being stuck in ours. `mount --make-shared`
/// fails with EINVAL when the directory is not a mount point yet; then bind it onto itself first.
fn prepare_dir() -> Result<()> {
    let mut prepared = DIR_PREPARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *prepared {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)
        .map_err(io_err(format!("creating {NETNS_DIR}")))?;
    let mut bound = false;
    loop {
        let shared = nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => break,
            Err(Errno::EINVAL) if !bound => {
                nix::mount::mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(nix_err(format!("bind-mounting {NETNS_DIR} onto itself")))?;
                bound = true;
            }
            Err(e) => return Err(nix_err(format!("making {NETNS_DIR} a shared mount"))(e)),
        }
    }
    *prepared = true;
    Ok(())
}

/// Deletes the named namespace: detaches its mount and removes the file. `Ok(false)` when there
/// was nothing to delete. The kernel tears the namespace (and the links in it) down asynchronously
/// once nothing else holds it.
pub async fn delete(name: &str) -> Result<bool> {
    delete_sync(name)
}

/// [`delete`] for synchronous contexts such as `Drop` guards (it only makes two system calls).
pub fn delete_sync(name: &str) -> Result<bool> {
    check_name(name)?;
    let deleted = remove(&path(name))?;
    if deleted {
        info!(netns = name, "deleted netns");
    } else {
        debug!(netns = name, "netns already absent");
    }
    Ok(deleted)
}

/// `umount2(MNT_DETACH)` then unlink; `Ok(false)` if neither found anything.
fn remove(file: &Path) -> Result<bool> {
    let mut removed = false;
    match nix::mount::umount2(file, MntFlags::MNT_DETACH) {
        Ok(()) => removed = true,
        // EINVAL: not a mount point (a stale file); ENOENT: no file at all.
        Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => return Err(nix_err(format!("unmounting {}", file.display()))(e)),
    }
    match std::fs::remove_file(file) {
        Ok(()) => removed = true,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("removing {}", file.display()))(e)),
    }
    Ok(removed)
}

/// The names in [`NETNS_DIR`], sorted (like `ip netns list`, without checking each is mounted).
pub fn list() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("listing {NETNS_DIR}"))(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {NETNS_DIR}")))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Opens the namespace file, e.g. for `setns` or `IFLA_NET_NS_FD`.
pub fn open(name: &str) -> Result<File> {
    check_ref(name)?;
    let file = path(name);
    File::open(&file).map_err(io_err(format!("opening netns {name}")))
}

/// A netlink route connection in namespace `ns` (`None`: the calling thread's, which for the agent
/// is the process's). Its connection task runs on the caller's tokio runtime and ends when the last
/// clone of the handle is dropped.
pub async fn netlink(ns: Option<&str>) -> Result<Handle> {
    let (connection, handle) = match ns {
        None => {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(io_err("opening a netlink socket"))?;
            (connection, handle)
        }
        Some(name) => {
            let file = open(name)?;
            let runtime = tokio::runtime::Handle::current();
            let name = name.to_owned();
            on_fresh_thread(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(nix_err(format!("entering netns {name}")))?;
                let _enter = runtime.enter(); // the socket registers with the caller's reactor
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(io_err(format!("opening a netlink socket in netns {name}")))?;
                Ok((connection, handle))
            })
            .await?
        }
    };
    tokio::spawn(connection);
    Ok(handle)
}

/// Runs `f` on a fresh thread inside namespace `name` (e.g. [`super::sysctl::set`], which acts on
/// the namespace of the calling thread) and returns its result.
pub async fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = open(name)?;
    let name = name.to_owned();
    on_fresh_thread(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(nix_err(format!("entering netns {name}")))?;
        Ok(f())
    })
    .await
}

/// Runs `f` on a new OS thread that exits afterwards (taking any namespace change with it) and
/// awaits its result without blocking the runtime.
async fn on_fresh_thread<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(io_err("spawning a namespace thread"))?;
    rx.await.map_err(|_| KernelError::Io {
        op: "waiting for a namespace thread".into(),
        source: std::io::Error::other("the thread panicked"),
    })?
}
