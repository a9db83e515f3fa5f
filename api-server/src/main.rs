//! berth-api: parse the configuration (flags, env, TOML file), set up
//! logging, run the server.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: berth_api::config::Config = berth_core::config_file::parse();
    berth_core::logging::init(&config.log, config.log_format).map_err(|e| anyhow::anyhow!("--log: {e}"))?;
    berth_api::server::run(config).await
}
