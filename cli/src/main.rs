//! `berth`: parse the command line (flags, env, TOML file), run it, report a
//! failure on one line.

fn main() {
    let cli: berth_cli::Cli = berth_core::config_file::parse();
    if let Err(e) = cli.check_limits() {
        e.exit();
    }
    let code = match berth_cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {}", berth_cli::error_line(&err));
            1
        }
    };
    std::process::exit(code);
}
