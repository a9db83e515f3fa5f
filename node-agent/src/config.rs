//! berth-agent's configuration: flags, each with a `BERTH_*` environment variable.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "berth's node agent: realises this node's share of the cluster network"
)]
pub struct Config {
    /// This node's name in the cluster.
    #[arg(long, env = "BERTH_NODE_NAME")]
    pub name: String,

    /// This node's underlay IPv4 address (VXLAN endpoint, published ports).
    #[arg(long, env = "BERTH_NODE_ADDRESS")]
    pub address: Ipv4Addr,

    /// The API server's gRPC URL.
    #[arg(long, env = "BERTH_API_URL", default_value = "http://127.0.0.1:7420")]
    pub api: String,

    /// Address the agent's gRPC service listens on.
    #[arg(long, env = "BERTH_AGENT_LISTEN", default_value = "0.0.0.0:7421")]
    pub listen: SocketAddr,

    /// URL the API server uses to reach this agent; default http://ADDRESS:PORT of --listen.
    #[arg(long, env = "BERTH_AGENT_URL")]
    pub advertise_url: Option<String>,

    /// Run inside this named network namespace (/run/netns/NAME) instead of
    /// the one the agent was started in. Keeps the shared mount namespace,
    /// unlike `ip netns exec`.
    #[arg(long, env = "BERTH_AGENT_NETNS")]
    pub netns: Option<String>,

    /// Prefix added to the name of every sandbox namespace this agent
    /// creates (tests use it to keep parallel clusters apart).
    #[arg(long, env = "BERTH_NETNS_PREFIX", default_value = "")]
    pub netns_prefix: String,

    /// Underlay MTU reported to the API server.
    #[arg(long, env = "BERTH_NODE_MTU", default_value_t = 1500)]
    pub mtu: u32,

    /// Directory for the agent's own state.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = "/var/lib/berth")]
    pub state_dir: PathBuf,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    pub fn agent_url(&self) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", self.address, self.listen.port()))
    }
}
