//! berth's command-line client: a thin layer that parses the command line,
//! calls the API server over gRPC and prints the answer.

pub mod args;
pub mod commands;
pub mod connect;
pub mod filter;
pub mod format;
pub mod output;
pub mod views;

pub use args::Cli;

use anyhow::Result;
use args::Command;

/// Runs one command; returns the process exit status. An `Err` is a failure
/// to report as `berth: <message>` with status 1.
pub fn run(cli: Cli) -> Result<i32> {
    // `berth cert` works offline: no runtime, no API server.
    let command = match cli.command {
        Command::Cert(cmd) => return commands::cert::run(cmd),
        Command::Completion(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "berth", &mut std::io::stdout());
            return Ok(0);
        }
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = connect::TlsArgs {
        ca: cli.tls_ca,
        cert: cli.tls_cert,
        key: cli.tls_key,
        server_name: cli.tls_server_name,
    };
    runtime.block_on(async move {
        if let Command::Version = command {
            return commands::node::version(&cli.api, &tls, cli.output).await;
        }
        let channel = connect::connect(&cli.api, &tls).await?;
        let out = cli.output;
        match command {
            Command::Network(cmd) => commands::network::run(channel, out, cmd).await,
            Command::Node(cmd) => commands::node::run(channel, out, cmd).await,
            Command::Sandbox(cmd) => commands::sandbox::run(channel, out, cmd).await,
            Command::Exec(args) => commands::sandbox::exec(channel, args).await,
            Command::Events(args) => commands::events::run(channel, out, args).await,
            Command::Doctor(args) => commands::doctor::run(channel, out, args).await,
            Command::Version => Ok(0),
            Command::Cert(cmd) => commands::cert::run(cmd),
            Command::Completion(_) => Ok(0),
        }
    })
}

/// The message of an error as one line, for `berth: <message>`.
pub fn error_line(err: &anyhow::Error) -> String {
    one_line(&format!("{err:#}"))
}

/// The message a failed call reports: the server's message, or the code's
/// description when the server gave none.
pub fn status_message(status: &tonic::Status) -> String {
    let msg = status.message().trim();
    let msg = if msg.is_empty() {
        status.code().description().to_string()
    } else {
        one_line(msg)
    };
    // A transport failure (e.g. a refused TLS handshake) says only
    // "transport error"; the cause is further down the chain.
    let msg = match std::error::Error::source(status).map(connect::error_reason) {
        Some(reason) if reason.starts_with(&msg) => one_line(&reason),
        Some(reason) if !reason.is_empty() && !msg.contains(&reason) => {
            format!(
                "{}: {}",
                msg.trim_end_matches(": transport error"),
                one_line(&reason)
            )
        }
        _ => msg,
    };
    // What a TLS 1.3 client sees when the server rejects its certificate:
    // the alert, or, depending on timing, only the closed connection, which
    // is also what a server that stops mid-request looks like.
    let mtls = "with mutual TLS, it refuses clients without a certificate signed by the cluster CA";
    if msg.contains("received fatal alert") {
        return format!("{msg} (an API server {mtls})");
    }
    let closed = ["connection closed", "broken pipe", "connection reset"];
    if closed.iter().any(|r| msg.contains(r)) {
        return format!("{msg} (the API server closed the connection: it stopped, or, {mtls})");
    }
    msg
}

/// Turns a failed call into an error carrying [`status_message`].
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(status_message(&status))
}

/// Prints `berth: <message>` on stderr for one failure among several
/// (`rm a b c`), where the command goes on and exits 1 at the end.
pub fn report(message: &str) {
    eprintln!("berth: {}", one_line(message));
}

/// Follows the page tokens of a list call: the first page has none, the
/// last answers none. A server that hands out a token twice would have
/// the CLI loop forever; that is an error instead.
#[derive(Debug, Default)]
pub struct Pages {
    next: Option<String>,
    seen: std::collections::HashSet<String>,
    done: bool,
}

impl Pages {
    /// The token for the next request, or `None` after the last page.
    pub fn next_token(&mut self) -> Option<String> {
        (!self.done).then(|| self.next.take().unwrap_or_default())
    }

    /// Records a response's `next_page_token`.
    pub fn got(&mut self, token: String) -> Result<()> {
        if token.is_empty() {
            self.done = true;
        } else if !self.seen.insert(token.clone()) {
            anyhow::bail!("the API server returned the page token {token:?} twice");
        } else {
            self.next = Some(token);
        }
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn status_messages() {
        assert_eq!(
            status_message(&Status::not_found("no such network: nope")),
            "no such network: nope"
        );
        assert_eq!(
            status_message(&Status::new(Code::Unavailable, "")),
            Code::Unavailable.description()
        );
        assert_eq!(status_message(&Status::internal("two\nlines")), "two lines");
    }

    #[test]
    fn pages_end_on_an_empty_token_and_never_loop() {
        let mut p = Pages::default();
        assert_eq!(p.next_token().as_deref(), Some(""));
        p.got("a".into()).unwrap();
        assert_eq!(p.next_token().as_deref(), Some("a"));
        p.got("b".into()).unwrap();
        assert_eq!(p.next_token().as_deref(), Some("b"));
        p.got(String::new()).unwrap();
        assert_eq!(p.next_token(), None);
        let mut p = Pages::default();
        p.got("a".into()).unwrap();
        assert!(p.got("a".into()).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn error_lines() {
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&err), "outer: inner");
    }
}
