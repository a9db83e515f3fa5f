//! The agent's side of mutual TLS: its certificate (role
//! `spiffe://berth/agent/<node>`, served to the API server and presented to
//! it when registering), and the rule that only API servers may call the
//! agent: every AgentService RPC from any other certificate is
//! PERMISSION_DENIED, so neither a client nor another node's agent can run
//! commands here or rewire this node's network.
use anyhow::bail;
use berth_core::tls::{Role, RoleCheck, Tls, TlsFiles};

use crate::config::Config;

/// Loads and checks `--tls-*`: the certificate must be this node's. Also
/// checks that the URLs agree with the choice (https with TLS, http without).
pub fn load(config: &Config) -> anyhow::Result<Option<Tls>> {
    let files = TlsFiles::from_flags(
        config.tls_ca.as_deref(),
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
    )?;
    let url = config.agent_url();
    let Some(files) = files else {
        if config.api.starts_with("https://") {
            bail!(
                "--api {}: https needs --tls-ca, --tls-cert and --tls-key",
                config.api
            );
        }
        if url.starts_with("https://") {
            bail!("--advertise-url {url}: https needs --tls-ca, --tls-cert and --tls-key");
        }
        return Ok(None);
    };
    let tls = files.load()?;
    tls.expect_role(&Role::Agent(config.name.clone()), &files.cert)?;
    if !config.api.starts_with("https://") {
        bail!(
            "--api {}: use an https:// URL with --tls-* (the API server's TCP port speaks TLS)",
            config.api
        );
    }
    if !url.starts_with("https://") {
        bail!("--advertise-url {url}: use an https:// URL with --tls-* (this agent serves TLS)");
    }
    Ok(Some(tls))
}

/// Who may call AgentService: API servers only.
pub fn agent_check(tls: bool) -> RoleCheck {
    RoleCheck::new(tls, "the agent API", "an api server certificate", |r| {
        matches!(r, Role::Api)
    })
}
