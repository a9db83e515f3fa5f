//! berth-agent: parse the configuration (flags, env, TOML file), refuse an
//! unauthenticated listener, enter the node's namespace if asked, set up
//! logging, run the agent. A failure is one line on stderr and exit 1.

fn main() -> std::process::ExitCode {
    berth_agent::limit_malloc_arenas();
    let config: berth_agent::config::Config = berth_core::config_file::parse();
    match start(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(config: berth_agent::config::Config) -> anyhow::Result<()> {
    // Before anything else: no namespace entered, no state written.
    config.check_plain()?;
    berth_core::logging::init(&config.log, config.log_format).map_err(|e| anyhow::anyhow!("--log: {e}"))?;
    if config.insecure && !config.tls_enabled() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "--insecure: serving the agent API without TLS; anyone who reaches it can run commands as root on this node"
        );
    }
    if let Some(ns) = &config.netns {
        berth_agent::enter_netns(ns)?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(berth_agent::run(config))
}
