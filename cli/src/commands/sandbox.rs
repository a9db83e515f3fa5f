//! `berth sandbox create|ls|inspect|rm` and `berth exec`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use berth_proto::v1::exec_output::Kind;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_proto::v1::{
    CreateSandboxRequest, ExecRequest, InspectSandboxRequest, ListSandboxesRequest, RemoveSandboxRequest,
    Sandbox,
};
use tonic::transport::Channel;

use crate::args::{ExecArgs, OutputFormat, SandboxCommand, SandboxCreateArgs};
use crate::format::Template;
use crate::output;
use crate::views::SandboxView;
use crate::{report, status_error, status_message};

/// Runs one `berth sandbox` command.
pub async fn run(channel: Channel, out: OutputFormat, cmd: SandboxCommand) -> Result<i32> {
    let mut client = SandboxServiceClient::new(channel);
    match cmd {
        SandboxCommand::Create(args) => create(&mut client, out, args).await,
        SandboxCommand::Ls(args) => {
            let filters =
                crate::filter::Filters::parse(&args.filter, crate::filter::SANDBOX_KEYS, "sandbox ls")?;
            let template = args.format.as_deref().map(Template::parse).transpose()?;
            let mut sandboxes = list_all(&mut client).await?;
            sandboxes.retain(|s| filters.sandbox(s));
            if args.quiet {
                for s in &sandboxes {
                    output::print(&s.id.chars().take(12).collect::<String>())?;
                }
                return Ok(0);
            }
            if let Some(t) = &template {
                let docs: Vec<SandboxView> = sandboxes.iter().map(SandboxView::from).collect();
                crate::format::print(t, &SandboxView::from(&Sandbox::default()), &docs, "sandbox ls")?;
                return Ok(0);
            }
            match out {
                OutputFormat::Table => output::print(&output::sandboxes_table(&sandboxes))?,
                OutputFormat::Json => {
                    let docs: Vec<SandboxView> = sandboxes.iter().map(SandboxView::from).collect();
                    output::print_json(&docs)?
                }
            }
            Ok(0)
        }
        SandboxCommand::Inspect(args) => inspect(&mut client, &args.names, args.format.as_deref()).await,
        SandboxCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                let request = RemoveSandboxRequest {
                    name_or_id: name.clone(),
                    force: args.force,
                };
                match client.remove_sandbox(request).await {
                    Ok(_) => output::print(name)?,
                    Err(status) => {
                        report(&status_message(&status));
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
    }
}

/// Every sandbox, page after page, sorted by name.
async fn list_all(client: &mut SandboxServiceClient<Channel>) -> Result<Vec<Sandbox>> {
    let mut all = Vec::new();
    let mut pages = crate::Pages::default();
    while let Some(page_token) = pages.next_token() {
        let page = client
            .list_sandboxes(ListSandboxesRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(page.sandboxes);
        pages.got(page.next_page_token)?;
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

async fn create(
    client: &mut SandboxServiceClient<Channel>,
    out: OutputFormat,
    args: SandboxCreateArgs,
) -> Result<i32> {
    let request = CreateSandboxRequest {
        name: args.name,
        node: args.node.unwrap_or_default(),
        network: args.network,
        ip: args.ip.unwrap_or_default(),
        ip6: args.ip6.unwrap_or_default(),
        aliases: args.aliases,
        links: args.links,
        ports: args
            .publish
            .into_iter()
            .chain(args.expose)
            .flat_map(|spec| spec.0)
            .collect(),
        command: args.command,
    };
    let sandbox = client
        .create_sandbox(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .sandbox
        .context("the API server returned no sandbox")?;
    match out {
        OutputFormat::Table => output::print(&sandbox.id)?,
        OutputFormat::Json => output::print_json(&SandboxView::from(&sandbox))?,
    }
    Ok(0)
}

/// Prints every sandbox found, then the errors of those not found (exit 1).
async fn inspect(
    client: &mut SandboxServiceClient<Channel>,
    names: &[String],
    format: Option<&str>,
) -> Result<i32> {
    let template = format.map(Template::parse).transpose()?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let request = InspectSandboxRequest {
            name_or_id: name.clone(),
        };
        match client.inspect_sandbox(request).await {
            Ok(response) => match response.into_inner().sandbox {
                Some(sandbox) => docs.push(SandboxView::from(&sandbox)),
                None => errors.push(format!("the API server returned no sandbox for {name}")),
            },
            Err(status) => errors.push(status_message(&status)),
        }
    }
    match &template {
        Some(t) => crate::format::print(
            t,
            &SandboxView::from(&Sandbox::default()),
            &docs,
            "sandbox inspect",
        )?,
        None => output::print_json(&docs)?,
    }
    for err in &errors {
        report(err);
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// `berth exec`: streams the command's output as it comes and returns its exit status.
pub async fn exec(channel: Channel, args: ExecArgs) -> Result<i32> {
    let mut client = SandboxServiceClient::new(channel);
    let mut stream = client
        .exec(ExecRequest {
            sandbox: args.sandbox,
            command: args.command,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(status_error)? {
        match message.kind {
            Some(Kind::Stdout(bytes)) => {
                write_all(&mut std::io::stdout().lock(), &bytes).context("cannot write to stdout")?
            }
            Some(Kind::Stderr(bytes)) => {
                write_all(&mut std::io::stderr().lock(), &bytes).context("cannot write to stderr")?
            }
            Some(Kind::ExitCode(code)) => return Ok(code),
            None => {}
        }
    }
    bail!("exec stream ended without an exit status")
}

/// Writes and flushes; a reader that went away (`| head`) is not an error.
fn write_all(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    match w.write_all(bytes).and_then(|()| w.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
