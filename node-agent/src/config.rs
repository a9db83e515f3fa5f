//! berth-agent's configuration: flags, each with a `BERTH_*` environment
//! variable and a key in the optional TOML file (`--config`); see
//! docs/configuration.md. Precedence: flag > env > file > default.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "berth's node agent: realises this node's share of the cluster network",
    args_override_self = true
)]
pub struct Config {
    /// TOML file with defaults for any flag below (keys are the flag names, e.g. `state-dir`).
    #[arg(long, env = "BERTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

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

    /// Address (IP:PORT, in the node's namespace) of the Prometheus metrics
    /// exporter, plain HTTP (`GET /metrics`). Empty (the default): no
    /// exporter. Metrics carry counts and the node's name (docs/metrics.md).
    #[arg(
        long,
        env = "BERTH_METRICS_LISTEN",
        value_name = "IP:PORT",
        default_value = ""
    )]
    pub metrics_listen: String,

    /// URL the API server uses to reach this agent; default http://ADDRESS:PORT
    /// of --listen (https:// with TLS).
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

    /// Where sandboxes' DNS queries for names berth does not know go (IP or
    /// IP:PORT, comma separated). Default: the nameservers of this node's
    /// /etc/resolv.conf. `none`: such queries are refused at once.
    #[arg(long, env = "BERTH_DNS_UPSTREAM", value_delimiter = ',')]
    pub dns_upstream: Vec<String>,

    /// Underlay MTU reported to the API server.
    #[arg(long, env = "BERTH_NODE_MTU", default_value_t = 1500)]
    pub mtu: u32,

    /// Unix socket of the agent's local service for container runtimes on
    /// this node (the berth-cni plugin): mode 0600, root's connections only.
    /// Empty disables it.
    #[arg(long, env = "BERTH_LOCAL_SOCKET", default_value = "/run/berth/agent.sock")]
    pub local_socket: PathBuf,

    /// Serve Docker's remote network driver and remote IPAM driver
    /// (`docker network create -d berth --ipam-driver berth …`) on
    /// --docker-plugin-socket; see docs/docker.md.
    #[arg(long, env = "BERTH_DOCKER_PLUGIN")]
    pub docker_plugin: bool,

    /// The plugin socket dockerd discovers (`berth` is the driver's name).
    #[arg(
        long,
        env = "BERTH_DOCKER_PLUGIN_SOCKET",
        default_value = "/run/docker/plugins/berth.sock"
    )]
    pub docker_plugin_socket: PathBuf,

    /// This node's dockerd API (`unix:///PATH`), read for the names of
    /// Docker networks and the endpoints dockerd still holds.
    #[arg(long, env = "BERTH_DOCKER_HOST", default_value = "unix:///run/docker.sock")]
    pub docker_host: String,

    /// Seconds an address handed to dockerd may wait for its endpoint (or a
    /// Docker endpoint dockerd no longer lists may stay) before the plugin's
    /// sweep frees it.
    #[arg(long, env = "BERTH_DOCKER_GRACE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub docker_grace: u64,

    /// Directory for the agent's own state.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = "/var/lib/berth")]
    pub state_dir: PathBuf,

    /// Seconds between full convergence passes (each pulls the node's
    /// desired state from the API server and repairs drift).
    #[arg(long, env = "BERTH_RESYNC_PERIOD", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub resync_period: u64,

    /// Converge at once when netlink reports that a link, address or FDB
    /// entry berth wants was deleted. `false` leaves drift to the period:
    /// with a long --resync-period, a break made by hand stays for
    /// `berth doctor` to find (tests, investigations).
    #[arg(long, env = "BERTH_NETLINK_WATCH", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub netlink_watch: bool,

    /// The libnftables shared library the agent loads to change nftables
    /// in process (a file name searched as dlopen(3) does, or a path).
    /// When it cannot be loaded, the agent spawns `nft` for every change
    /// instead (logged once).
    #[arg(
        long,
        env = "BERTH_LIBNFTABLES",
        default_value = "libnftables.so.1",
        value_name = "LIB"
    )]
    pub libnftables: String,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,

    /// Log format: `text` (coloured only when stderr is a terminal) or
    /// `json` (one object per line; see docs/configuration.md).
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = berth_core::logging::LogFormat::Text)]
    pub log_format: berth_core::logging::LogFormat,

    /// Cluster CA certificate (PEM). With --tls-cert and --tls-key, turns on
    /// mutual TLS for the agent's server and its calls to the API server.
    #[arg(long, env = "BERTH_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// This agent's certificate (PEM, role spiffe://berth/agent/NAME, the
    /// node's address among its IP SANs).
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Serve --listen without TLS on a non-loopback address. Anyone who
    /// reaches the port can run commands as root on this node; logged as a
    /// warning at every start.
    #[arg(long, env = "BERTH_INSECURE")]
    pub insecure: bool,
}

impl Config {
    /// The DNS upstreams from --dns-upstream (see there).
    pub fn dns_upstreams(&self) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        if self.dns_upstream.iter().any(|u| u == "none") {
            return Ok(Vec::new());
        }
        if self.dns_upstream.is_empty() {
            let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            return Ok(crate::dns::DnsServer::upstreams_from_resolv_conf(&conf));
        }
        self.dns_upstream
            .iter()
            .map(|u| {
                u.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| anyhow::anyhow!("--dns-upstream {u:?} is not an IP or IP:PORT"))
            })
            .collect()
    }

    /// Refuses to serve --listen beyond loopback without TLS unless
    /// --insecure (docs/security.md).
    pub fn check_plain(&self) -> anyhow::Result<()> {
        if !self.tls_enabled() {
            berth_core::tls::check_plain_listener("berth-agent", "--listen", self.listen, self.insecure)?;
        }
        Ok(())
    }

    /// Whether the --tls-* flags are given (checked fully at start).
    pub fn tls_enabled(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }

    pub fn agent_url(&self) -> String {
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}:{}", self.address, self.listen.port()))
    }
}
