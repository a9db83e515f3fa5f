//! Limits on what one request may carry, in one place: label, option, alias,
//! link, command, port and network counts and sizes, and the page sizes of
//! list calls. The API server checks every request against them before it
//! reads or writes anything; the CLI checks the ones it can (published port
//! ranges) before it sends a request. A refusal is `INVALID_ARGUMENT` naming
//! the field, what was asked and the limit: `invalid labels: 65 labels, at most 64`.
//!
//! They keep one record small (an etcd value, a node's desired state) and a
//! page of a list far below gRPC's 4 MiB message limit. docs/limits.md has
//! the table and the arithmetic behind the page sizes.
use std::collections::BTreeMap;

use crate::Invalid;

/// Labels on one network.
pub const MAX_LABELS: usize = 64;
/// Bytes of one label key.
pub const MAX_LABEL_KEY_BYTES: usize = 255;
/// Bytes of one label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Bytes of all of one network's label keys and values together.
pub const MAX_LABELS_BYTES: usize = 16 * 1024;

/// Driver options on one network (berth knows 5 keys; others are refused).
pub const MAX_OPTIONS: usize = 16;
/// Bytes of one option key.
pub const MAX_OPTION_KEY_BYTES: usize = 255;
/// Bytes of one option value.
pub const MAX_OPTION_VALUE_BYTES: usize = 256;

/// `--aux-address`es of one network.
pub const MAX_AUX_ADDRESSES: usize = 16;

/// Aliases of one endpoint (`--alias` on `sandbox create` or `network connect`).
pub const MAX_ALIASES: usize = 16;
/// Legacy links of one sandbox (`--link`).
pub const MAX_LINKS: usize = 32;

/// Program name and arguments of one command (`sandbox create -- …`, `exec -- …`).
pub const MAX_COMMAND_ARGS: usize = 256;
/// Bytes of one of them.
pub const MAX_COMMAND_ARG_BYTES: usize = 4096;
/// Bytes of all of them together.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Published ports of one sandbox, each port of a range counted (`-p
/// 8000-8049:8000-8049` is 50). A sandbox is created and removed in one etcd
/// transaction, and etcd allows 128 operations per transaction by default
/// (`--max-txn-ops`): a mapping on one host address costs two compares
/// (that address and all addresses), so 50 ports are 100 of them, with room
/// for the name, the address and the records.
pub const MAX_PORTS: usize = 50;

/// Networks one sandbox is attached to, the gateway bridge of an overlay
/// sandbox included (interfaces `eth0` … `eth15`).
pub const MAX_NETWORKS_PER_SANDBOX: usize = 16;

/// Items in a page of `ListSandboxes` / `ListNetworks` when the request's
/// `page_size` is 0.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Largest `page_size` honoured; larger ones are lowered to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Encoded bytes of the items of one page: a page ends early rather than
/// grow past this (half of gRPC's default 4 MiB message limit).
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Routes a node reports at registration (its own, that subnets must not
/// overlap).
pub const MAX_NODE_ROUTES: usize = 1024;
/// Encoded bytes of one node's whole desired state (`DesiredState`, and
/// `Sync` from the repair loop), which is not paged: 64 MiB, about 1,400 of
/// the largest sandboxes the limits allow or 100,000 typical ones. gRPC's
/// default 4 MiB is passed near 10,000 sandboxes on a node.
pub const MAX_NODE_STATE_BYTES: usize = 64 * 1024 * 1024;

/// Refuses `n` items of `what` when more than `max`:
/// `invalid {field}: {n} {what}, at most {max}`.
pub fn check_count(field: &str, what: &str, n: usize, max: usize) -> Result<(), Invalid> {
    if n > max {
        return Err(Invalid::new(field, format!("{n} {what}, at most {max}")));
    }
    Ok(())
}

/// The count and the total size of a network's labels (each key and value
/// is checked by [`crate::names::validate_label`]).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    check_count("labels", "labels", labels.len(), MAX_LABELS)?;
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    check_count("labels", "bytes of keys and values", bytes, MAX_LABELS_BYTES)
}

/// The count of a network's options and the size of each key and value,
/// before any is parsed (so an error never echoes a huge key).
pub fn check_options(options: &BTreeMap<String, String>) -> Result<(), Invalid> {
    check_count("options", "options", options.len(), MAX_OPTIONS)?;
    for (k, v) in options {
        if k.len() > MAX_OPTION_KEY_BYTES {
            return Err(Invalid::new(
                "option",
                format!("a key of {} bytes, at most {MAX_OPTION_KEY_BYTES}", k.len()),
            ));
        }
        if v.len() > MAX_OPTION_VALUE_BYTES {
            return Err(Invalid::new(
                format!("option {k}"),
                format!("a value of {} bytes, at most {MAX_OPTION_VALUE_BYTES}", v.len()),
            ));
        }
    }
    Ok(())
}

/// The number of arguments of a command, the size of each and of all.
pub fn check_command(field: &str, argv: &[String]) -> Result<(), Invalid> {
    check_count(field, "arguments", argv.len(), MAX_COMMAND_ARGS)?;
    if let Some((i, a)) = argv
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_COMMAND_ARG_BYTES)
    {
        return Err(Invalid::new(
            field,
            format!(
                "argument {i} is {} bytes, at most {MAX_COMMAND_ARG_BYTES}",
                a.len()
            ),
        ));
    }
    let total: usize = argv.iter().map(String::len).sum();
    check_count(field, "bytes in all", total, MAX_COMMAND_BYTES)
}

/// The page size a list call uses for a request's `page_size`.
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, value_len: usize) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i:03}"), "v".repeat(value_len)))
            .collect()
    }

    #[test]
    fn counts() {
        assert!(check_count("aliases", "aliases", MAX_ALIASES, MAX_ALIASES).is_ok());
        let e = check_count("aliases", "aliases", MAX_ALIASES + 1, MAX_ALIASES).unwrap_err();
        assert_eq!(e.to_string(), "invalid aliases: 17 aliases, at most 16");
    }

    #[test]
    fn label_count_and_bytes() {
        assert!(check_labels(&labels(MAX_LABELS, 1)).is_ok());
        assert_eq!(
            check_labels(&labels(MAX_LABELS + 1, 1)).unwrap_err().to_string(),
            "invalid labels: 65 labels, at most 64"
        );
        // 4 keys of 4 bytes: values of 4092 bytes fill 16 KiB exactly.
        assert!(check_labels(&labels(4, 4092)).is_ok());
        assert_eq!(
            check_labels(&{
                let mut l = labels(4, 4092);
                l.insert("k".into(), String::new());
                l
            })
            .unwrap_err()
            .to_string(),
            "invalid labels: 16385 bytes of keys and values, at most 16384"
        );
    }

    #[test]
    fn option_count_and_sizes() {
        let opts = |n: usize, key_len: usize, value_len: usize| -> BTreeMap<String, String> {
            (0..n)
                .map(|i| (format!("{i:0>key_len$}"), "v".repeat(value_len)))
                .collect()
        };
        assert!(check_options(&opts(MAX_OPTIONS, 2, MAX_OPTION_VALUE_BYTES)).is_ok());
        assert_eq!(
            check_options(&opts(MAX_OPTIONS + 1, 2, 1))
                .unwrap_err()
                .to_string(),
            "invalid options: 17 options, at most 16"
        );
        assert!(check_options(&opts(1, MAX_OPTION_KEY_BYTES, 1)).is_ok());
        let e = check_options(&opts(1, MAX_OPTION_KEY_BYTES + 1, 1)).unwrap_err();
        assert_eq!(e.to_string(), "invalid option: a key of 256 bytes, at most 255");
        let e = check_options(&opts(1, 2, MAX_OPTION_VALUE_BYTES + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option 00: a value of 257 bytes, at most 256"
        );
    }

    #[test]
    fn command_args_and_bytes() {
        let args = |n: usize, len: usize| vec!["a".repeat(len); n];
        assert!(check_command("command", &args(MAX_COMMAND_ARGS, 1)).is_ok());
        assert_eq!(
            check_command("command", &args(MAX_COMMAND_ARGS + 1, 1))
                .unwrap_err()
                .to_string(),
            "invalid command: 257 arguments, at most 256"
        );
        assert!(check_command("command", &args(1, MAX_COMMAND_ARG_BYTES)).is_ok());
        assert_eq!(
            check_command("command", &["sh".into(), "x".repeat(MAX_COMMAND_ARG_BYTES + 1)])
                .unwrap_err()
                .to_string(),
            "invalid command: argument 1 is 4097 bytes, at most 4096"
        );
        assert!(check_command("command", &args(4, MAX_COMMAND_ARG_BYTES)).is_ok());
        let mut over = args(4, MAX_COMMAND_ARG_BYTES);
        over.push("x".into());
        assert_eq!(
            check_command("command", &over).unwrap_err().to_string(),
            "invalid command: 16385 bytes in all, at most 16384"
        );
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(MAX_PAGE_SIZE as u32), MAX_PAGE_SIZE);
        assert_eq!(page_size(u32::MAX), MAX_PAGE_SIZE);
    }
}
