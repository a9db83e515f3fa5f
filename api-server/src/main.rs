//! berth-api: parse the configuration (flags, env, TOML file), set up
//! logging, run the server.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: berth_api::config::Config = berth_core::config_file::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .init();
    berth_api::server::run(config).await
}
