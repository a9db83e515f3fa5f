//! berth-api: parse the configuration, set up logging, run the server.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = berth_api::config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .init();
    berth_api::server::run(config).await
}
