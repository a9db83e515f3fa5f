//! berth-api's configuration: flags, each with a `BERTH_*` environment
//! variable and a key in the optional TOML file (`--config`); see
//! docs/configuration.md. Precedence: flag > env > file > default.
use std::net::SocketAddr;
use std::path::PathBuf;

use berth_core::ports::PortRange;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-api",
    version,
    about = "berth's API server: keeps the cluster's network state in etcd and drives the node agents",
    args_override_self = true
)]
pub struct Config {
    /// TOML file with defaults for any flag below (keys are the flag names, e.g. `etcd-prefix`).
    #[arg(long, env = "BERTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// etcd client URLs, comma separated.
    #[arg(
        long,
        env = "BERTH_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Prefix of every key berth writes in etcd.
    #[arg(long, env = "BERTH_ETCD_PREFIX", default_value = "/berth")]
    pub etcd_prefix: String,

    /// TCP address for the gRPC API (agents and remote CLIs), e.g.
    /// `0.0.0.0:7420` with TLS. Empty (the default): no TCP listener, only
    /// the Unix socket, so nothing is served unauthenticated by default.
    #[arg(long, env = "BERTH_API_LISTEN", default_value = "")]
    pub listen: String,

    /// Address (IP:PORT) of the Prometheus metrics exporter, plain HTTP
    /// (`GET /metrics`). Empty (the default): no exporter. Metrics carry
    /// counts, node names and RPC names, no sandbox names (docs/metrics.md).
    #[arg(
        long,
        env = "BERTH_METRICS_LISTEN",
        value_name = "IP:PORT",
        default_value = ""
    )]
    pub metrics_listen: String,

    /// Unix socket for the gRPC API (local CLI). Empty disables it.
    #[arg(long, env = "BERTH_API_SOCKET", default_value = "/run/berth/api.sock")]
    pub socket: PathBuf,

    /// Group of the Unix socket (a name or a GID): the socket is created
    /// with mode 0660, and its members (with root and this user) are admins.
    /// Default: this process's group.
    #[arg(
        long,
        env = "BERTH_API_SOCKET_GROUP",
        value_name = "GROUP",
        default_value = ""
    )]
    pub socket_group: String,

    /// Serve --listen without TLS on a non-loopback address, and use plain
    /// http:// etcd endpoints beyond loopback. Anyone who reaches the port
    /// controls the cluster; logged as a warning at every start.
    #[arg(long, env = "BERTH_INSECURE")]
    pub insecure: bool,

    /// Seconds a node stays ready without a heartbeat from its agent.
    #[arg(long, env = "BERTH_NODE_TTL", default_value_t = 10)]
    pub node_ttl: u32,

    /// Seconds between passes of the repair loop (run by one elected
    /// replica): interrupted creates, removals, disconnects and node
    /// removals are finished or undone, keys without an owner freed.
    #[arg(long, env = "BERTH_REPAIR_PERIOD", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub repair_period: u64,

    /// Host ports no sandbox may publish on any node, comma separated:
    /// PORT, START-END, TCP unless `/udp` follows. berth-api's own TCP port,
    /// each node's agent port and VXLAN's 4789/udp are always reserved too.
    #[arg(
        long,
        env = "BERTH_RESERVED_PORTS",
        value_delimiter = ',',
        value_name = "PORT[-END][/tcp|/udp],...",
        default_value = crate::sandboxes::DEFAULT_RESERVED_PORTS
    )]
    pub reserved_ports: Vec<PortRange>,

    /// Host ports berth chooses from for `-p PORT` (no host port) and `-P`:
    /// START-END, both protocols; Linux's default ephemeral range.
    #[arg(
        long,
        env = "BERTH_EPHEMERAL_PORTS",
        value_name = "START-END",
        default_value = crate::sandboxes::DEFAULT_EPHEMERAL_PORTS
    )]
    pub ephemeral_ports: crate::sandboxes::EphemeralPorts,

    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `info` or `berth_api=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,

    /// Log format: `text` (coloured only when stderr is a terminal) or
    /// `json` (one object per line; see docs/configuration.md).
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = berth_core::logging::LogFormat::Text)]
    pub log_format: berth_core::logging::LogFormat,

    /// Cluster CA certificate (PEM). With --tls-cert and --tls-key, turns on
    /// mutual TLS on --listen and towards the agents.
    #[arg(long, env = "BERTH_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// This API server's certificate (PEM, role spiffe://berth/api), served
    /// to clients and presented to agents.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// CA that signs client certificates (CLI, agents); default: --tls-ca.
    #[arg(long, env = "BERTH_CLIENT_CA", value_name = "PATH")]
    pub client_ca: Option<PathBuf>,

    /// CA certificate that signed etcd's server certificates (PEM); turns on
    /// TLS to etcd (use https:// endpoints).
    #[arg(long, env = "BERTH_ETCD_CA", value_name = "PATH")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate for etcd (PEM), for etcd's --client-cert-auth.
    #[arg(long, env = "BERTH_ETCD_CERT", value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,

    /// The private key of --etcd-cert (PEM).
    #[arg(long, env = "BERTH_ETCD_KEY", value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,
}

impl Config {
    /// The TCP address to listen on, if any.
    pub fn tcp(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.listen.parse().map_err(|e| {
            anyhow::anyhow!("--listen {:?}: {e}", self.listen)
        })?))
    }

    /// Refuses a plain TCP listener or plain etcd endpoints beyond loopback
    /// unless `--insecure`; returns the warnings to log when `--insecure` is
    /// what allowed them (none when TLS is on).
    pub fn check_plain(&self, tls: bool) -> anyhow::Result<Vec<String>> {
        let mut warnings = Vec::new();
        if let Some(addr) = self.tcp()?
            && !tls
        {
            berth_core::tls::check_plain_listener("berth-api", "--listen", addr, self.insecure)?;
            if !addr.ip().is_loopback() {
                warnings.push(format!(
                    "--insecure: serving {addr} without TLS; anyone who reaches it can run commands on every node"
                ));
            }
        }
        for e in &self.etcd_endpoints {
            let Some(rest) = e.strip_prefix("http://") else {
                continue;
            };
            let host = rest.split('/').next().unwrap_or(rest);
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                continue;
            }
            if !self.insecure {
                anyhow::bail!(
                    "refusing plain --etcd-endpoints {e}: etcd holds the whole cluster state; \
                     use https:// with --etcd-ca, --etcd-cert and --etcd-key (docs/security.md), \
                     a loopback endpoint, or pass --insecure"
                );
            }
            warnings.push(format!("--insecure: etcd endpoint {e} without TLS"));
        }
        Ok(warnings)
    }

    /// The Unix socket to listen on, if any.
    pub fn unix(&self) -> Option<&std::path::Path> {
        (!self.socket.as_os_str().is_empty()).then_some(self.socket.as_path())
    }
}

#[cfg(test)]
mod tests {
    use berth_core::config_file::try_parse_from;
    use berth_core::ports::{PortRange, Proto};

    use super::Config;

    fn reserved(args: &[&str]) -> Result<Vec<String>, String> {
        try_parse_from::<Config, _, _>(std::iter::once("berth-api").chain(args.iter().copied()))
            .map(|c| c.reserved_ports.iter().map(PortRange::to_string).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reserved_ports_flag_and_file() {
        assert_eq!(reserved(&[]).unwrap(), ["22/tcp", "2379/tcp", "2380/tcp"]);
        assert_eq!(
            reserved(&["--reserved-ports", "22,30000-30010,53/udp"]).unwrap(),
            ["22/tcp", "30000-30010/tcp", "53/udp"]
        );
        let e = reserved(&["--reserved-ports", "22,http"]).unwrap_err();
        assert!(
            e.contains("invalid value 'http'") && e.contains("is not a port"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.toml");
        std::fs::write(&file, "reserved-ports = [\"2222\", \"4000-4001/udp\"]\n").unwrap();
        let f = file.display().to_string();
        assert_eq!(
            reserved(&["--config", &f]).unwrap(),
            ["2222/tcp", "4000-4001/udp"]
        );
        std::fs::write(&file, "reserved-ports = \"22,99999\"\n").unwrap();
        let e = reserved(&["--config", &f]).unwrap_err();
        assert!(e.contains("key 'reserved-ports'"), "{e}");
        assert_eq!(PortRange::one(22, Proto::Tcp).to_string(), "22/tcp");
    }
}
