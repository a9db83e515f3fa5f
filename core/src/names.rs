//! Names of networks, sandboxes, nodes and aliases, validated as Docker does.
use crate::Invalid;

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
        return Err(Invalid::new(
            field,
            format!("{value:?} is longer than {MAX_NAME_LEN} characters"),
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

/// Checks a label key: non-empty, printable, no whitespace, at most 255 bytes;
/// values may be anything up to 4 KiB.
pub fn validate_label(key: &str, value: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > 255 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            "label",
            format!("key {key:?} must be 1-255 printable characters without spaces"),
        ));
    }
    if value.len() > 4096 {
        return Err(Invalid::new(
            "label",
            format!("value of {key:?} is longer than 4096 bytes"),
        ));
    }
    Ok(())
}

/// Checks a Linux interface name (at most 15 bytes, no `/`, whitespace or `:`).
pub fn validate_ifname(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty()
        || value.len() > 15
        || value == "."
        || value == ".."
        || value
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Invalid::new(
            field,
            format!("{value:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn labels_and_ifnames() {
        assert!(validate_label("com.example.team", "net").is_ok());
        assert!(validate_label("", "x").is_err());
        assert!(validate_label("a b", "x").is_err());
        assert!(validate_label("k", &"v".repeat(4097)).is_err());
        assert!(validate_ifname("bridge", "br-0123456789ab").is_ok());
        assert!(validate_ifname("bridge", "br-0123456789abc").is_err());
        assert!(validate_ifname("bridge", "a/b").is_err());
    }
}
