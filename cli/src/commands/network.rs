//! `berth network create|ls|inspect|rm|connect|disconnect`.

use anyhow::{Context, Result};
use berth_core::model::Driver;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_proto::v1::{
    ConnectNetworkRequest, CreateNetworkRequest, DisconnectNetworkRequest, InspectNetworkRequest,
    ListNetworksRequest, RemoveNetworkRequest,
};
use tonic::transport::Channel;

use crate::args::{LsArgs, NetworkCommand, NetworkConnectArgs, NetworkCreateArgs, OutputFormat};
use crate::filter::Filters;
use crate::format::Template;
use crate::output;
use crate::views::{self, NetworkSummary};
use crate::{report, status_error, status_message};

/// Runs one `berth network` command.
pub async fn run(channel: Channel, out: OutputFormat, cmd: NetworkCommand) -> Result<i32> {
    let mut client = NetworkServiceClient::new(channel);
    match cmd {
        NetworkCommand::Create(args) => create(&mut client, out, args).await,
        NetworkCommand::Ls(args) => ls(&mut client, out, args).await,
        NetworkCommand::Prune(args) => prune(&mut client, args.force).await,
        NetworkCommand::Inspect(args) => inspect(&mut client, &args.names, args.format.as_deref()).await,
        NetworkCommand::Rm(args) => rm(&mut client, &args.names).await,
        NetworkCommand::Connect(args) => connect(&mut client, args).await,
        NetworkCommand::Disconnect(args) => {
            client
                .disconnect_network(DisconnectNetworkRequest {
                    network: args.network,
                    sandbox: args.sandbox,
                })
                .await
                .map_err(status_error)?;
            Ok(0)
        }
    }
}

/// Splits a flag given once per family (as Docker's `--subnet` and
/// `--gateway`) into its IPv4 and IPv6 values: a value with a `:` is IPv6.
fn by_family(flag: &str, values: &[String]) -> Result<(String, String)> {
    let (v6, v4): (Vec<&String>, Vec<&String>) = values.iter().partition(|v| v.contains(':'));
    if v4.len() > 1 || v6.len() > 1 {
        anyhow::bail!("{flag} may be given at most once per address family (one IPv4, one IPv6)");
    }
    Ok((
        v4.first().map(|s| s.to_string()).unwrap_or_default(),
        v6.first().map(|s| s.to_string()).unwrap_or_default(),
    ))
}

async fn create(
    client: &mut NetworkServiceClient<Channel>,
    out: OutputFormat,
    args: NetworkCreateArgs,
) -> Result<i32> {
    let driver: Driver = args.driver.parse()?;
    let (subnet, subnet6) = by_family("--subnet", &args.subnet)?;
    let (gateway, gateway6) = by_family("--gateway", &args.gateway)?;
    let request = CreateNetworkRequest {
        name: args.name,
        driver: views::driver_value(driver),
        subnet,
        gateway,
        enable_ipv6: args.ipv6,
        subnet6,
        gateway6,
        options: args.opt.into_iter().collect(),
        labels: args.label.into_iter().collect(),
        internal: args.internal,
        ip_range: args.ip_range.unwrap_or_default(),
        aux_addresses: args.aux_address.into_iter().collect(),
    };
    let network = client
        .create_network(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .network
        .context("the API server returned no network")?;
    match out {
        OutputFormat::Table => output::print(&network.id)?,
        OutputFormat::Json => output::print_json(&NetworkSummary::from(&network))?,
    }
    Ok(0)
}

async fn list_all(client: &mut NetworkServiceClient<Channel>) -> Result<Vec<berth_proto::v1::Network>> {
    let mut networks = Vec::new();
    let mut pages = crate::Pages::default();
    while let Some(page_token) = pages.next_token() {
        let page = client
            .list_networks(ListNetworksRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        networks.extend(page.networks);
        pages.got(page.next_page_token)?;
    }
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(networks)
}

async fn ls(client: &mut NetworkServiceClient<Channel>, out: OutputFormat, args: LsArgs) -> Result<i32> {
    let filters = Filters::parse(&args.filter, crate::filter::NETWORK_KEYS, "network ls")?;
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut networks = list_all(client).await?;
    networks.retain(|n| filters.network(n));
    if args.quiet {
        for n in &networks {
            output::print(&n.id.chars().take(12).collect::<String>())?;
        }
        return Ok(0);
    }
    if let Some(t) = &template {
        let docs: Vec<NetworkSummary> = networks.iter().map(NetworkSummary::from).collect();
        let sample = NetworkSummary::from(&berth_proto::v1::Network::default());
        crate::format::print(t, &sample, &docs, "network ls")?;
        return Ok(0);
    }
    match out {
        OutputFormat::Table => output::print(&output::networks_table(&networks))?,
        OutputFormat::Json => {
            let docs: Vec<NetworkSummary> = networks.iter().map(NetworkSummary::from).collect();
            output::print_json(&docs)?
        }
    }
    Ok(0)
}

/// Prints every network found, then the errors of those not found (exit 1), like docker.
async fn inspect(
    client: &mut NetworkServiceClient<Channel>,
    names: &[String],
    format: Option<&str>,
) -> Result<i32> {
    let template = format.map(Template::parse).transpose()?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let request = InspectNetworkRequest {
            name_or_id: name.clone(),
        };
        match client.inspect_network(request).await {
            Ok(response) => {
                let response = response.into_inner();
                match response.network {
                    Some(network) => docs.push(views::network_inspect(&network, &response.endpoints)),
                    None => errors.push(format!("the API server returned no network for {name}")),
                }
            }
            Err(status) => errors.push(status_message(&status)),
        }
    }
    match &template {
        Some(t) => {
            let sample = views::network_inspect(&berth_proto::v1::Network::default(), &[]);
            crate::format::print(t, &sample, &docs, "network inspect")?
        }
        None => output::print_json(&docs)?,
    }
    for err in &errors {
        report(err);
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// `network prune`: removes every user-defined network; the server refuses
/// those with endpoints (FAILED_PRECONDITION), which are kept silently, as
/// Docker keeps networks in use. Prints the removed names.
async fn prune(client: &mut NetworkServiceClient<Channel>, force: bool) -> Result<i32> {
    use std::io::IsTerminal;
    if !force {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "network prune removes every unused network: pass --force (stdin is not a terminal to ask)"
            );
        }
        eprint!(
            "WARNING! This will remove all user-defined networks not used by any sandbox.\nAre you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let mut removed = Vec::new();
    let mut failed = false;
    for n in list_all(client).await?.into_iter().filter(|n| !n.builtin) {
        let request = RemoveNetworkRequest {
            name_or_id: n.id.clone(),
        };
        match client.remove_network(request).await {
            Ok(_) => removed.push(n.name),
            Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {}
            Err(s) => {
                report(&status_message(&s));
                failed = true;
            }
        }
    }
    if !removed.is_empty() {
        output::print(&format!("Deleted Networks:\n{}", removed.join("\n")))?;
    }
    Ok(i32::from(failed))
}

/// Removes each network, printing its name; goes on past failures, exit 1 if any.
async fn rm(client: &mut NetworkServiceClient<Channel>, names: &[String]) -> Result<i32> {
    let mut failed = false;
    for name in names {
        let request = RemoveNetworkRequest {
            name_or_id: name.clone(),
        };
        match client.remove_network(request).await {
            Ok(_) => output::print(name)?,
            Err(status) => {
                report(&status_message(&status));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

async fn connect(client: &mut NetworkServiceClient<Channel>, args: NetworkConnectArgs) -> Result<i32> {
    client
        .connect_network(ConnectNetworkRequest {
            network: args.network,
            sandbox: args.sandbox,
            ip: args.ip.unwrap_or_default(),
            aliases: args.aliases,
            ip6: args.ip6.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?;
    Ok(0)
}
