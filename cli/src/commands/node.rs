//! `berth node ls|rm`.

use anyhow::Result;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{ListNodesRequest, RemoveNodeRequest, VersionRequest};
use tonic::transport::Channel;

use crate::args::{NodeCommand, OutputFormat};
use crate::output;
use crate::views::NodeView;
use crate::{report, status_error, status_message};

/// Runs one `berth node` command.
pub async fn run(channel: Channel, out: OutputFormat, cmd: NodeCommand) -> Result<i32> {
    let mut client = NodeServiceClient::new(channel);
    match cmd {
        NodeCommand::Ls(args) => {
            let filters = crate::filter::Filters::parse(&args.filter, crate::filter::NODE_KEYS, "node ls")?;
            let template = args
                .format
                .as_deref()
                .map(crate::format::Template::parse)
                .transpose()?;
            let mut nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .nodes;
            nodes.retain(|n| filters.node(n));
            if args.quiet {
                for n in &nodes {
                    output::print(&n.name)?;
                }
                return Ok(0);
            }
            if let Some(t) = &template {
                let docs: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
                let sample = NodeView::from(&berth_proto::v1::Node::default());
                crate::format::print(t, &sample, &docs, "node ls")?;
                return Ok(0);
            }
            match out {
                OutputFormat::Table => output::print(&output::nodes_table(&nodes))?,
                OutputFormat::Json => {
                    let docs: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
                    output::print_json(&docs)?
                }
            }
            Ok(0)
        }
        NodeCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                let request = RemoveNodeRequest {
                    name: name.clone(),
                    force: args.force,
                };
                match client.remove_node(request).await {
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

/// One side of `berth version`.
#[derive(Debug, serde::Serialize)]
struct VersionView {
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "ApiVersion")]
    api_version: String,
    #[serde(rename = "Os")]
    os: String,
    #[serde(rename = "Arch")]
    arch: String,
}

impl VersionView {
    fn lines(&self, title: &str) -> String {
        format!(
            "{title}:\n Version:      {}\n API version:  {}\n OS/Arch:      {}/{}",
            self.version, self.api_version, self.os, self.arch
        )
    }
}

/// `berth version`: the client's version, then the server's (as `docker
/// version`, the client's is printed even when the server is unreachable).
pub async fn version(api: &str, tls: &crate::connect::TlsArgs, out: OutputFormat) -> Result<i32> {
    let client = VersionView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: "berth.v1".to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    };
    if out == OutputFormat::Table {
        output::print(&client.lines("Client"))?;
    }
    let server = async {
        let channel = crate::connect::connect(api, tls).await?;
        let v = NodeServiceClient::new(channel)
            .version(VersionRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        anyhow::Ok(VersionView {
            version: v.version,
            api_version: v.api_version,
            os: v.os,
            arch: v.arch,
        })
    }
    .await;
    match (out, server) {
        (OutputFormat::Table, Ok(s)) => output::print(&s.lines("Server"))?,
        (OutputFormat::Json, Ok(s)) => {
            output::print_json(&serde_json::json!({"Client": client, "Server": s}))?
        }
        (OutputFormat::Json, Err(e)) => {
            output::print_json(&serde_json::json!({"Client": client}))?;
            return Err(e);
        }
        (OutputFormat::Table, Err(e)) => return Err(e),
    }
    Ok(0)
}
