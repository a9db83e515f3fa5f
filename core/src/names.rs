//! Names of networks, sandboxes, nodes and aliases, validated as Docker does.
use crate::Invalid;
use crate::limits::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES};
use crate::model::{DEFAULT_BRIDGE, GW_BRIDGE, HOST_VETH_PREFIX, VXLAN_PREFIX};

/// Longest network or sandbox name. A sandbox name becomes a network
/// namespace file and a hostname, so 63 keeps it a valid DNS label length.
pub const MAX_NAME_LEN: usize = 63;

/// Checks `value` against Docker's name rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// at most [`MAX_NAME_LEN`] characters.
pub fn validate_name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        // Only the start of it: the request may carry megabytes.
        let start: String = value.chars().take(MAX_NAME_LEN).collect();
        return Err(Invalid::new(
            field,
            format!(
                "\"{}…\" is longer than {MAX_NAME_LEN} characters",
                start.escape_debug()
            ),
        ));
    }
    let mut chars = value.chars();
    let first = chars.next().unwrap_or(' ');
    if !first.is_ascii_alphanumeric() {
        return Err(Invalid::new(
            field,
            format!("{value:?} must start with a letter or digit"),
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(Invalid::new(
            field,
            format!("{value:?} contains {bad:?}; only [a-zA-Z0-9_.-] are allowed"),
        ));
    }
    Ok(())
}

/// Checks a label key: non-empty, printable, no whitespace, at most
/// [`MAX_LABEL_KEY_BYTES`] bytes; values may be anything up to
/// [`MAX_LABEL_VALUE_BYTES`]. A key too long is not echoed back.
pub fn validate_label(key: &str, value: &str) -> Result<(), Invalid> {
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(Invalid::new(
            "label",
            format!("a key of {} bytes, at most {MAX_LABEL_KEY_BYTES}", key.len()),
        ));
    }
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            "label",
            format!("key {key:?} must be 1-{MAX_LABEL_KEY_BYTES} printable characters without spaces"),
        ));
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(Invalid::new(
            "label",
            format!(
                "value of {key:?} is {} bytes, at most {MAX_LABEL_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Longest Linux interface name (`IFNAMSIZ` − 1 bytes).
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks an interface name that berth hands to the kernel and writes into its
/// firewall rules: 1-15 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
///
/// Stricter than the kernel, which takes any byte but `/`, `:` and spaces:
/// nftables reads a trailing `*` as a wildcard (`e*` would match every
/// `eth…`), even in its JSON input, and quotes, braces or `;` have no business
/// in a device name.
pub fn validate_ifname(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > MAX_IFNAME_LEN {
        return Err(Invalid::new(
            field,
            format!(
                "{value:?} is longer than {MAX_IFNAME_LEN} bytes (the kernel's limit for interface names)"
            ),
        ));
    }
    if value == "." || value == ".." {
        return Err(Invalid::new(field, format!("{value:?} is not an interface name")));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(Invalid::new(
            field,
            format!("{value:?} contains {bad:?}; only [A-Za-z0-9_.-] are allowed in interface names"),
        ));
    }
    Ok(())
}

/// Checks a bridge name a user chose (`com.docker.network.bridge.name`): a
/// valid [interface name](validate_ifname) that is none of the devices berth
/// names itself: the built-in bridges (`berth0`, `berth_gwbridge`, which their
/// built-in networks get without this option) and the prefixes of the host
/// veths (`bv`) and VXLAN devices (`vx-`).
pub fn validate_bridge_name(field: &str, value: &str) -> Result<(), Invalid> {
    validate_ifname(field, value)?;
    let reserved = |why: String| Err(Invalid::new(field, format!("{value:?} {why}")));
    if value == DEFAULT_BRIDGE.2 {
        return reserved(format!(
            "is reserved for the bridge of the built-in network {}",
            DEFAULT_BRIDGE.0
        ));
    }
    if value == GW_BRIDGE {
        return reserved("is reserved for the gateway bridge of overlay sandboxes".into());
    }
    if value.starts_with(HOST_VETH_PREFIX) {
        return reserved(format!(
            "uses the prefix {HOST_VETH_PREFIX}, reserved for berth's veths"
        ));
    }
    if value.starts_with(VXLAN_PREFIX) {
        return reserved(format!(
            "uses the prefix {VXLAN_PREFIX}, reserved for berth's VXLAN devices"
        ));
    }
    Ok(())
}

/// Checks a container runtime's container id (CNI's rule: a letter or
/// digit, then letters, digits, `_`, `.` or `-`), at most 1024 bytes.
pub fn validate_container_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > 1024 {
        return Err(Invalid::new(
            field,
            format!("{} bytes, at most 1024", value.len()),
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || value
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        let start: String = value.chars().take(64).collect();
        return Err(Invalid::new(
            field,
            format!(
                "{:?} must be a letter or digit followed by [A-Za-z0-9_.-]",
                start.escape_debug().to_string()
            ),
        ));
    }
    Ok(())
}

/// The sandbox names berth derives for a runtime's attachment, in the order
/// to try them: `<origin>-<first 12 of the container id>`, then with the
/// whole id (as much as fits) should the short one be another container's;
/// `-<ifname>` appended unless the interface is `eth0`. Every one is a
/// valid [sandbox name](validate_name) for a valid container id and ifname.
pub fn external_sandbox_names(origin: &str, container_id: &str, ifname: &str) -> Vec<String> {
    let suffix = if ifname == "eth0" {
        String::new()
    } else {
        format!("-{ifname}")
    };
    let room = MAX_NAME_LEN - origin.len() - 1 - suffix.len();
    let short: String = container_id.chars().take(12.min(room)).collect();
    let long: String = container_id.chars().take(room).collect();
    let mut out = vec![format!("{origin}-{short}{suffix}")];
    if long != short {
        out.push(format!("{origin}-{long}{suffix}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_names() {
        let id = "3f1c0e2a9b7d44aa0011223344556677";
        assert_eq!(
            external_sandbox_names("cni", id, "eth0"),
            ["cni-3f1c0e2a9b7d", &format!("cni-{id}")]
        );
        assert_eq!(external_sandbox_names("cni", "abc", "net1"), ["cni-abc-net1"]);
        let long = "a".repeat(1024);
        for n in external_sandbox_names("docker", &long, "eth12345678901") {
            assert!(validate_name("name", &n).is_ok(), "{n}");
        }
        assert!(validate_container_id("c", id).is_ok());
        assert!(validate_container_id("c", "my_ctr.1-x").is_ok());
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(1025)] {
            assert!(validate_container_id("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_names() {
        for ok in ["a", "my-bridge", "test1", "A.b_c-9", &"x".repeat(63)] {
            assert!(validate_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "ä", &"x".repeat(64)] {
            let err = validate_name("name", bad).unwrap_err();
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn labels() {
        assert!(validate_label("com.example.team", "net").is_ok());
        assert!(validate_label("", "x").is_err());
        assert!(validate_label("a b", "x").is_err());
        assert!(validate_label(&"k".repeat(255), &"v".repeat(4096)).is_ok());
        let e = validate_label("k", &"v".repeat(4097)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid label: value of \"k\" is 4097 bytes, at most 4096"
        );
        let e = validate_label(&"k".repeat(100_000), "v").unwrap_err();
        assert_eq!(e.to_string(), "invalid label: a key of 100000 bytes, at most 255");
    }

    #[test]
    fn long_names_are_not_echoed_whole() {
        let e = validate_name("name", &"x".repeat(1_000_000)).unwrap_err();
        assert!(e.reason.len() < 100, "{e}");
        assert!(e.reason.ends_with("is longer than 63 characters"), "{e}");
    }

    #[test]
    fn ifnames() {
        for ok in [
            "br-0123456789ab",
            "a",
            "eth0",
            "my_br.1",
            "A-Z",
            "..a",
            "-x",
            &"x".repeat(15),
        ] {
            assert!(validate_ifname("bridge", ok).is_ok(), "{ok}");
        }
        // Quotes, wildcards and nft syntax never reach the kernel or the firewall.
        for bad in [
            "",
            ".",
            "..",
            "a\"b",
            "e*",
            "x;y",
            "{",
            "}",
            "a b",
            "a/b",
            "a:b",
            "a\tb",
            "a\nb",
            "\\",
            "ä",
            "$x",
            "br-0123456789abc",
            &"x".repeat(16),
        ] {
            let err = validate_ifname("bridge", bad).unwrap_err();
            assert_eq!(err.field, "bridge", "{bad:?}");
        }
        let err = validate_ifname("f", "e*").unwrap_err();
        assert!(err.reason.contains("'*'"), "{err}");
        let err = validate_ifname("f", &"x".repeat(16)).unwrap_err();
        assert!(err.reason.contains("15 bytes"), "{err}");
        assert!(
            validate_ifname("f", &"é".repeat(8)).is_err(),
            "16 bytes, none allowed"
        );
    }

    #[test]
    fn bridge_names_berth_reserves() {
        for ok in ["br-test", "docker1", "b", "vx", "v-x", "berth1", "berth_gw"] {
            assert!(validate_bridge_name("f", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("berth0", "built-in network bridge"),
            ("berth_gwbridge", "gateway bridge"),
            ("bv1", "uses the prefix bv, reserved for berth's veths"),
            ("bv", "prefix bv"),
            (
                "vx-4096",
                "uses the prefix vx-, reserved for berth's VXLAN devices",
            ),
            ("a\"b", "only [A-Za-z0-9_.-]"),
        ] {
            let err = validate_bridge_name("f", bad).unwrap_err();
            assert!(err.reason.contains(why), "{bad}: {err}");
        }
        assert_eq!(
            validate_bridge_name("com.docker.network.bridge.name", "bv1")
                .unwrap_err()
                .to_string(),
            "invalid com.docker.network.bridge.name: \"bv1\" uses the prefix bv, reserved for berth's veths"
        );
    }
}
