//! `berth node ls|rm`.

use anyhow::Result;
use berth_proto::v1::node_service_client::NodeServiceClient;
use berth_proto::v1::{ListNodesRequest, RemoveNodeRequest};
use tonic::transport::Channel;

use crate::args::{NodeCommand, OutputFormat};
use crate::output;
use crate::views::NodeView;
use crate::{report, status_error, status_message};

/// Runs one `berth node` command.
pub async fn run(channel: Channel, out: OutputFormat, cmd: NodeCommand) -> Result<i32> {
    let mut client = NodeServiceClient::new(channel);
    match cmd {
        NodeCommand::Ls => {
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .nodes;
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
