//! A sandbox's `/etc/netns/NAME/{hosts,resolv.conf}`: what `ip netns exec`
//! and `berth exec` show the sandbox as `/etc/hosts` and `/etc/resolv.conf`.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Directory of the per-namespace files.
pub const ETC_NETNS: &str = "/etc/netns";

pub fn dir(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

/// The hosts file: localhost, then the sandbox's own addresses with its name,
/// then extra entries (links, peers).
pub fn hosts(name: &str, own: &[Ipv4Addr], extra: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for ip in own {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    for (ip, names) in extra {
        let _ = writeln!(out, "{ip}\t{}", names.join(" "));
    }
    out
}

/// Writes a file only when its content differs; returns whether it wrote.
fn write_if_changed(path: &Path, content: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, path)?;
    Ok(true)
}

/// Makes the sandbox's files exist with this content.
pub fn ensure(netns: &str, hosts_content: &str, resolv_content: &str) -> std::io::Result<()> {
    let d = dir(netns);
    std::fs::create_dir_all(&d)?;
    write_if_changed(&d.join("hosts"), hosts_content)?;
    write_if_changed(&d.join("resolv.conf"), resolv_content)?;
    Ok(())
}

/// The resolver configuration sandboxes get: the node's own, as Docker does
/// for the default bridge.
pub fn node_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// Removes the sandbox's files; missing is fine.
pub fn remove(netns: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir(netns)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let h = hosts(
            "test1",
            &[Ipv4Addr::new(172, 17, 0, 2)],
            &[(Ipv4Addr::new(172, 17, 0, 3), vec!["db".into(), "alias".into()])],
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("172.17.0.2\ttest1\n"));
        assert!(h.contains("172.17.0.3\tdb alias\n"));
    }
}
