//! berth-agent: parse the configuration (flags, env, TOML file), enter the
//! node's namespace if asked, set up logging, run the agent.

fn main() -> anyhow::Result<()> {
    let config: berth_agent::config::Config = berth_core::config_file::parse();
    berth_core::logging::init(&config.log, config.log_format).map_err(|e| anyhow::anyhow!("--log: {e}"))?;
    if let Some(ns) = &config.netns {
        berth_agent::enter_netns(ns)?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(berth_agent::run(config))
}
