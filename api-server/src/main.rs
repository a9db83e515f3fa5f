//! berth-api: parse the configuration (flags, env, TOML file), set up
//! logging, run the server. A failure is one line on stderr and exit 1.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: berth_api::config::Config = berth_core::config_file::parse();
    let result = match berth_core::logging::init(&config.log, config.log_format) {
        Ok(()) => berth_api::server::run(config).await,
        Err(e) => Err(anyhow::anyhow!("--log: {e}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-api: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
