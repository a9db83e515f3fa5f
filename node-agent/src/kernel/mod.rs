//! The agent's kernel layer: network namespaces, links/addresses/routes over rtnetlink, and sysctls.
//!
//! Everything here talks to the kernel directly (netlink sockets, mount/unshare/setns, /proc/sys);
//! nothing spawns `ip` or `bridge`. Functions are small, typed and idempotent where their name
//! says `ensure_*`; kernel quirks are commented where they bite.
pub mod addr6;
pub mod dump;
pub mod fdb;
pub mod link;
pub mod netns;
pub mod route;
pub mod sysctl;

/// What went wrong in the kernel layer, always with what was being done.
///
/// The message includes the cause (`"adding address 172.17.0.1/16 to berth0: File exists (os error 17)"`),
/// because callers turn these errors into gRPC status messages with `to_string()`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request failed (or the kernel answered with an error code).
    #[error("{op}: {}", describe_netlink(source))]
    Netlink { op: String, source: rtnetlink::Error },
    /// A file or thread operation failed.
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    /// A system call made through nix failed (mount, unshare, setns, statfs).
    #[error("{op}: {source}")]
    Nix { op: String, source: nix::Error },
    /// A kernel object exists under our name but is not what we asked for
    /// (a link that is not a bridge, a bridge that vanished right after creation).
    #[error("{0}")]
    Mismatch(String),
    /// A name berth needs is held by something that is not berth's (e.g. the runtime's own
    /// interface in a runtime's namespace).
    #[error("{0}")]
    Foreign(String),
    /// An argument the kernel would reject or misinterpret (empty or too long names, `/` in names).
    #[error("invalid {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, KernelError>;

impl KernelError {
    /// The errno behind this error, if the kernel gave one (`libc::EEXIST`, `libc::ENODEV`, ...).
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { source, .. } => netlink_errno(source),
            KernelError::Io { source, .. } => source.raw_os_error(),
            KernelError::Nix { source, .. } => Some(*source as i32),
            KernelError::Mismatch(_) | KernelError::Foreign(_) | KernelError::Invalid(_) => None,
        }
    }
}

/// The (positive) errno of a netlink NACK, `None` for other rtnetlink errors.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        // The kernel sends negative errno values in NLMSG_ERROR.
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// rtnetlink's own Display wraps the errno in a long sentence; say just the errno when there is one.
fn describe_netlink(e: &rtnetlink::Error) -> String {
    match netlink_errno(e) {
        Some(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
        None => e.to_string(),
    }
}

/// `map_err` adapter: a failed netlink request while doing `op`.
pub(crate) fn nl_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Netlink { op, source }
}

/// `map_err` adapter: a failed file or thread operation while doing `op`.
pub(crate) fn io_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Io { op, source }
}

/// `map_err` adapter: a failed system call while doing `op`.
pub(crate) fn nix_err(op: impl Into<String>) -> impl FnOnce(nix::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Nix { op, source }
}
