//! The size limits of sandbox requests (`berth_core::limits`), checked
//! before any field is parsed: counts first, so a request with 65,535 ports
//! or a megabyte of arguments costs one comparison, not a quadratic clash
//! check and a read per port.
use berth_core::limits::{self, MAX_ALIASES, MAX_LINKS, MAX_NETWORKS_PER_SANDBOX, MAX_PORTS};

use super::SandboxRequest;
use crate::error::Result;

/// Aliases, links, published ports (ranges already expanded) and the command.
pub fn check_create(r: &SandboxRequest) -> Result<()> {
    check_aliases(&r.aliases)?;
    limits::check_count("links", "links", r.links.len(), MAX_LINKS)?;
    limits::check_count("publish", "ports", r.ports.len(), MAX_PORTS)?;
    limits::check_command("command", &r.command)?;
    Ok(())
}

/// Aliases of a new endpoint.
pub fn check_aliases(aliases: &[String]) -> Result<()> {
    Ok(limits::check_count(
        "aliases",
        "aliases",
        aliases.len(),
        MAX_ALIASES,
    )?)
}

/// The networks `sandbox` would be on after one more connect (`attached`
/// now, the gateway bridge of an overlay sandbox included).
pub fn check_one_more_network(sandbox: &str, attached: usize) -> Result<()> {
    Ok(limits::check_count(
        "network",
        &format!("networks for sandbox {sandbox}"),
        attached + 1,
        MAX_NETWORKS_PER_SANDBOX,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use crate::sandboxes::PortRequest;

    fn message(r: Result<()>) -> String {
        match r {
            Err(ApiError::Invalid(e)) => e.to_string(),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn create_limits_at_and_one_over() {
        let ok = SandboxRequest {
            name: "web".into(),
            aliases: (0..MAX_ALIASES).map(|i| format!("a{i}")).collect(),
            links: (0..MAX_LINKS).map(|i| (format!("l{i}"), String::new())).collect(),
            ports: (0..MAX_PORTS as u32)
                .map(|i| PortRequest {
                    host_port: 8000 + i,
                    container_port: 80,
                    ..Default::default()
                })
                .collect(),
            command: vec!["x".repeat(limits::MAX_COMMAND_ARG_BYTES); 4],
            ..Default::default()
        };
        check_create(&ok).unwrap();
        let over = |f: fn(&mut SandboxRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            message(check_create(&r))
        };
        assert_eq!(
            over(|r| r.aliases.push("one-more".into())),
            "invalid aliases: 17 aliases, at most 16"
        );
        assert_eq!(
            over(|r| r.links.push(r.links[0].clone())),
            "invalid links: 33 links, at most 32"
        );
        assert_eq!(
            over(|r| r.ports.push(r.ports[0].clone())),
            "invalid publish: 51 ports, at most 50"
        );
        assert_eq!(
            over(|r| r.command.push("x".into())),
            "invalid command: 16385 bytes in all, at most 16384"
        );
        assert_eq!(
            over(|r| r.command = vec!["a".into(); limits::MAX_COMMAND_ARGS + 1]),
            "invalid command: 257 arguments, at most 256"
        );
        assert_eq!(
            over(|r| r.command = vec!["sh".into(), "y".repeat(limits::MAX_COMMAND_ARG_BYTES + 1)]),
            "invalid command: argument 1 is 4097 bytes, at most 4096"
        );
    }

    #[test]
    fn connect_limits_at_and_one_over() {
        check_one_more_network("web", MAX_NETWORKS_PER_SANDBOX - 1).unwrap();
        assert_eq!(
            message(check_one_more_network("web", MAX_NETWORKS_PER_SANDBOX)),
            "invalid network: 17 networks for sandbox web, at most 16"
        );
        let mut aliases = vec!["a".to_string(); MAX_ALIASES];
        check_aliases(&aliases).unwrap();
        aliases.push("b".into());
        assert_eq!(
            message(check_aliases(&aliases)),
            "invalid aliases: 17 aliases, at most 16"
        );
    }
}
