//! The arguments of `berth cert …` (certificates for mutual TLS).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `berth cert ...`: files are written to --dir as NAME.crt and NAME.key
/// (the key mode 0600); existing files are kept unless --force.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA: DIR/ca.crt and DIR/ca.key
    Ca(CertCaArgs),
    /// Issue an API server certificate (role spiffe://berth/api): DIR/api.crt, DIR/api.key
    Api(CertApiArgs),
    /// Issue a node agent's certificate (role spiffe://berth/agent/NODE): DIR/agent-NODE.crt, .key
    Agent(CertAgentArgs),
    /// Issue a client (CLI) certificate (role spiffe://berth/client/NAME): DIR/client-NAME.crt, .key
    Client(CertClientArgs),
    /// Issue an etcd certificate without a berth role (etcd members, berth-api's etcd client): DIR/etcd-NAME.crt, .key
    ///
    /// Use a CA of its own for etcd (`berth cert ca --dir pki/etcd`): etcd's
    /// --client-cert-auth admits every certificate its CA signed.
    Etcd(CertEtcdArgs),
}

/// `berth cert etcd`
#[derive(Debug, Args)]
pub struct CertEtcdArgs {
    /// Name of the etcd member or client
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// DNS name or IP address the member is reached at (repeatable, or comma separated; none for a client)
    #[arg(long, value_name = "HOST|IP", value_delimiter = ',')]
    pub san: Vec<String>,

    #[command(flatten)]
    pub common: CertCommon,
}

/// Options every `berth cert` command takes.
#[derive(Debug, Args)]
pub struct CertCommon {
    /// Directory holding ca.crt and ca.key, where the new files are written
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Days the certificate stays valid (default: 3650 for the CA, 825 otherwise)
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: Option<u32>,

    /// File name stem for the new .crt and .key (default: ca, api, agent-NODE, client-NAME)
    #[arg(long, value_name = "STEM")]
    pub out: Option<String>,

    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

/// `berth cert ca`
#[derive(Debug, Args)]
pub struct CertCaArgs {
    /// Common name of the CA
    #[arg(long, value_name = "NAME", default_value = "berth cluster CA")]
    pub name: String,

    #[command(flatten)]
    pub common: CertCommon,
}

/// `berth cert api`
#[derive(Debug, Args)]
pub struct CertApiArgs {
    /// Common name of the certificate (the role is the same for every API server)
    #[arg(long, value_name = "NAME", default_value = "berth-api")]
    pub name: String,

    /// DNS name or IP address clients and agents use to reach this API server (repeatable, or comma separated)
    #[arg(long, value_name = "HOST|IP", required = true, value_delimiter = ',')]
    pub san: Vec<String>,

    #[command(flatten)]
    pub common: CertCommon,
}

/// `berth cert agent`
#[derive(Debug, Args)]
pub struct CertAgentArgs {
    /// The node's name (the agent's --name)
    #[arg(long, value_name = "NAME")]
    pub node: String,

    /// The node's underlay address (and any DNS name) the API server uses to reach the agent (repeatable, or comma separated)
    #[arg(long, value_name = "IP|HOST", required = true, value_delimiter = ',')]
    pub san: Vec<String>,

    #[command(flatten)]
    pub common: CertCommon,
}

/// `berth cert client`
#[derive(Debug, Args)]
pub struct CertClientArgs {
    /// Who holds the certificate (a person or a program)
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// What the holder may do: admin (everything, including exec and node rm),
    /// operator (networks and sandboxes, no exec), viewer (read only)
    #[arg(long, value_name = "ROLE", value_parser = ["admin", "operator", "viewer"], required = true)]
    pub role: String,

    #[command(flatten)]
    pub common: CertCommon,
}
