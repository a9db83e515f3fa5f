//! Kernel parameters under `/proc/sys`, read and written in the network namespace of the calling thread.
//!
//! QUIRK: `/proc/sys/net/*` shows the network namespace of the *thread that opens the file*
//! (checked on this kernel by `tests/kernel.rs`: a thread that has `setns`'d into another
//! namespace sees that namespace's values, while the other threads of the process still see their
//! own). To act on a namespace the process is not in, call these from
//! [`super::netns::run_in`]. (`/proc/net`, by contrast, is `/proc/self/net` and follows the
//! thread-group leader; that is not used here.)
use std::io::ErrorKind;
use std::path::PathBuf;

use tracing::{debug, info};

use super::{KernelError, Result, io_err};

/// `/proc/sys/` + `key` with dots turned into slashes (`net.ipv4.ip_forward`). A key that already
/// contains `/` is taken as a path below `/proc/sys` as is, which is how interface names with dots
/// (`eth0.100`) are spelled: `net/ipv4/conf/eth0.100/forwarding`.
pub fn path(key: &str) -> Result<PathBuf> {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let bad = relative.is_empty()
        || relative.starts_with('/')
        || relative.split('/').any(|part| part.is_empty() || part == "..");
    if bad {
        return Err(KernelError::Invalid(format!("sysctl key {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(relative))
}

/// The current value, surrounding whitespace trimmed (multi-value keys keep their inner tabs).
pub fn get(key: &str) -> Result<String> {
    let file = path(key)?;
    let value = std::fs::read_to_string(&file).map_err(io_err(format!("reading sysctl {key}")))?;
    Ok(value.trim().to_owned())
}

/// Writes `value` when it differs from the current one; returns whether it changed anything.
/// Values are compared word by word, so `"32768 60999"` matches `"32768\t60999"`.
pub fn set(key: &str, value: &str) -> Result<bool> {
    let file = path(key)?;
    let current = match std::fs::read_to_string(&file) {
        Ok(current) => current,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(KernelError::Mismatch(format!(
                "sysctl {key} does not exist in this network namespace"
            )));
        }
        Err(e) => return Err(io_err(format!("reading sysctl {key}"))(e)),
    };
    if current.split_whitespace().eq(value.split_whitespace()) {
        debug!(key, value, "sysctl already set");
        return Ok(false);
    }
    std::fs::write(&file, value).map_err(io_err(format!("writing {value:?} to sysctl {key}")))?;
    info!(key, value, previous = current.trim(), "set sysctl");
    Ok(true)
}
