//! `berth`: parse the command line, run it, report a failure on one line.

use clap::Parser;

fn main() {
    let cli = berth_cli::Cli::parse();
    let code = match berth_cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {}", berth_cli::error_line(&err));
            1
        }
    };
    std::process::exit(code);
}
