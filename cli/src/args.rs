//! The command line: clap structs for every command and the value parsers for
//! `KEY=VALUE`, `--link NAME[:ALIAS]` and `-p [HOST_IP:]HOST_PORT:PORT[/PROTO]`.

use std::net::IpAddr;
use std::path::PathBuf;

use berth_core::limits::MAX_PORTS;
use berth_proto::v1::{Link, PortMapping, PortProtocol};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

mod cert;
pub use cert::*;

/// Where the CLI looks for the API server when neither `--api` nor `BERTH_API` is set.
pub const DEFAULT_API: &str = "unix:///run/berth/api.sock";

/// berth: container networking for a cluster of Linux machines.
///
/// Creates networks (bridge, overlay), sandboxes (network namespaces), attaches
/// them, publishes ports and runs commands inside sandboxes, through the berth
/// API server.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    /// Address of the API server: unix:///PATH, unix:PATH, /PATH, http://HOST:PORT or HOST:PORT
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_API",
        value_name = "ADDR",
        default_value = DEFAULT_API
    )]
    pub api: String,

    /// Output format: tables for people, json for scripts
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_OUTPUT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// Cluster CA certificate (PEM) that signed the API server's certificate; needed for https
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_TLS_CA",
        value_name = "PATH"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM, role spiffe://berth/client/NAME) for an API server with mutual TLS
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_TLS_CERT",
        value_name = "PATH"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_TLS_KEY",
        value_name = "PATH"
    )]
    pub tls_key: Option<PathBuf>,

    /// Name to verify the API server's certificate against (default: the host of --api)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,

    /// TOML file with defaults for the global options (keys: api, output, tls-ca, tls-cert, tls-key, tls-server-name)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BERTH_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Checks what clap cannot see flag by flag: the ports of every `-p`
    /// of `sandbox create` together (at most [`MAX_PORTS`]). An error
    /// exits with status 2 like clap's own, before any call.
    pub fn check_limits(&self) -> Result<(), clap::Error> {
        if let Command::Sandbox(SandboxCommand::Create(args)) = &self.command {
            let ports: usize = args.publish.iter().chain(&args.expose).map(|p| p.0.len()).sum();
            if ports > MAX_PORTS {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--publish: {ports} ports in all, at most {MAX_PORTS} per sandbox"),
                ));
            }
        }
        Ok(())
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns (ids and names for create/rm)
    Table,
    /// JSON documents
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage networks (create, ls, inspect, rm, connect, disconnect)
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage the cluster's nodes (ls, rm)
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage sandboxes: network namespaces on a node (create, ls, inspect, rm)
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Run a command in a sandbox's network namespace and stream its output
    Exec(ExecArgs),
    /// Stream what happens in the cluster (networks, sandboxes, nodes, repairs), as docker events
    Events(crate::commands::events::EventsArgs),
    /// Find what is broken: every node's differences from its desired state, or the hops of a path (read-only)
    Doctor(DoctorArgs),
    /// Show the client's and the API server's versions
    Version,
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell (no API call)
    Completion(CompletionArgs),
    /// Create the cluster CA and certificates for API servers, agents and clients (no API call)
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `berth network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network and print its id
    Create(NetworkCreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove every user-defined network that no sandbox uses
    Prune(PruneArgs),
    /// Show networks in detail, with their attached sandboxes, as JSON
    Inspect(InspectArgs),
    /// Remove networks
    #[command(visible_alias = "remove")]
    Rm(NamesArgs),
    /// Attach a sandbox to a network
    Connect(NetworkConnectArgs),
    /// Detach a sandbox from a network
    Disconnect(NetworkDisconnectArgs),
}

/// `berth network create`
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Network driver: bridge (one node) or overlay (VXLAN across nodes)
    #[arg(short, long, value_name = "DRIVER", default_value = "bridge")]
    pub driver: String,

    /// Subnet in CIDR form (default: the next free one from the pool); give it
    /// twice, once per family, with --ipv6 (an IPv6 one such as fd00:1::/64)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,

    /// Gateway address (default: the first address of the subnet); once per family
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,

    /// Dual stack: an IPv6 subnet besides the IPv4 one (bridge and overlay)
    #[arg(long)]
    pub ipv6: bool,

    /// Driver option, e.g. com.docker.network.bridge.enable_icc=false (repeatable)
    #[arg(short, long = "opt", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub opt: Vec<(String, String)>,

    /// Label to attach to the network (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,

    /// No way out: no masquerade, no default route, no published ports
    #[arg(long)]
    pub internal: bool,

    /// Hand out automatic addresses only from this part of the subnet (needs --subnet)
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,

    /// Reserve an address of the subnet, never handed out (needs --subnet; repeatable)
    #[arg(long = "aux-address", value_name = "NAME=IP", value_parser = parse_key_value)]
    pub aux_address: Vec<(String, String)>,

    /// Name of the new network
    pub name: String,
}

/// One or more network or sandbox names (or ids).
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Names or ids (a unique id prefix is enough)
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

/// `berth network connect`
#[derive(Debug, Args)]
pub struct NetworkConnectArgs {
    /// IPv4 address for the sandbox on this network (default: the next free one)
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,

    /// IPv6 address on a dual-stack network (default: the next free one)
    #[arg(long, value_name = "IPV6")]
    pub ip6: Option<String>,

    /// Extra name the sandbox answers to on this network (repeatable)
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,

    /// Network name or id
    pub network: String,

    /// Sandbox name or id
    pub sandbox: String,
}

/// `berth network disconnect`
#[derive(Debug, Args)]
pub struct NetworkDisconnectArgs {
    /// Network name or id
    pub network: String,

    /// Sandbox name or id
    pub sandbox: String,
}

/// `berth node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes and whether their agents are ready
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove nodes from the cluster
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
}

/// `berth node rm`
#[derive(Debug, Args)]
pub struct NodeRmArgs {
    /// Remove the node even while its agent is ready
    #[arg(short, long)]
    pub force: bool,

    /// Node names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `berth sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox (a network namespace on a node) and print its id
    Create(SandboxCreateArgs),
    /// List sandboxes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show sandboxes in detail as JSON
    Inspect(InspectArgs),
    /// Remove sandboxes
    #[command(visible_alias = "remove")]
    Rm(SandboxRmArgs),
}

/// `berth sandbox create`
#[derive(Debug, Args)]
pub struct SandboxCreateArgs {
    /// Node to create the sandbox on (default: any ready node)
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,

    /// Network to attach: a network name or id, or `host` / `none` for those modes
    #[arg(long, value_name = "NET", default_value = "bridge")]
    pub network: String,

    /// IPv4 address on the network (default: the next free one)
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,

    /// IPv6 address on a dual-stack network (default: the next free one)
    #[arg(long, value_name = "IPV6")]
    pub ip6: Option<String>,

    /// Extra name the sandbox answers to on the network (repeatable)
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,

    /// Legacy link to another sandbox, reachable as ALIAS (default: its name) (repeatable)
    #[arg(long = "link", value_name = "NAME[:ALIAS]", value_parser = parse_link)]
    pub links: Vec<Link>,

    /// Publish a port: [HOST_IP:]HOST_PORT:PORT[/tcp|/udp] (HOST_IP IPv4 or [IPv6]: [::] all IPv6 addresses, [::1] through a proxy; none: both families); ranges like 8000-8010:8000-8010; PORT or HOST_IP::PORT for a host port berth chooses (repeatable)
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOST_IP:]HOST_PORT:PORT[/PROTO]",
        value_parser = parse_publish
    )]
    pub publish: Vec<PublishSpec>,

    /// Publish every --expose'd port on a host port berth chooses (berth-api's --ephemeral-ports)
    #[arg(short = 'P', long = "publish-all", requires = "expose")]
    pub publish_all: bool,

    /// A container port for -P to publish: PORT[-END][/tcp|/udp] (repeatable; needs -P: berth records no exposed ports)
    #[arg(long = "expose", value_name = "PORT[/PROTO]", value_parser = parse_expose, requires = "publish_all")]
    pub expose: Vec<PublishSpec>,

    /// Name of the new sandbox (unique in the cluster)
    pub name: String,

    /// Command to start, detached, inside the sandbox (after `--`)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `berth sandbox rm`
#[derive(Debug, Args)]
pub struct SandboxRmArgs {
    /// Force the removal (e.g. when the sandbox's node cannot be reached)
    #[arg(short, long)]
    pub force: bool,

    /// Sandbox names or ids
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

/// `ls` of networks, sandboxes and nodes.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only print ids (12 characters; names for nodes), one a line
    #[arg(short, long)]
    pub quiet: bool,

    /// Only what matches KEY=VALUE (repeatable; one key's values ORed, keys ANDed). Networks: name, id, driver, scope, label; sandboxes: name, id, network, node, status, origin; nodes: name, status
    #[arg(short, long = "filter", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub filter: Vec<(String, String)>,

    /// Print each item through a template: {{.Field}}, {{json .}}, text with \t; `table ` first for a header and columns (fields: the --output json keys)
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

/// `inspect` of networks and sandboxes.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print each one through a template instead of the JSON array: {{.Field}}, {{json .}}, text with \t
    #[arg(short, long, value_name = "TEMPLATE")]
    pub format: Option<String>,

    /// Names or ids
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

/// `berth doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Sandbox (name or id) whose endpoints, or path to TARGET, to walk; without it, every node's differences
    #[arg(value_name = "SANDBOX")]
    pub sandbox: Option<String>,

    /// The other end: a sandbox (name or id) or an IPv4 address
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
}

/// `berth network prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(short, long)]
    pub force: bool,
}

/// `berth completion`
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `berth exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox name or id
    pub sandbox: String,

    /// Command and its arguments (after `--`)
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// The port mappings one `-p` flag stands for (a range gives several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec(pub Vec<PortMapping>);

/// Parses `KEY=VALUE`; the value may be empty, the key may not.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE: missing '='"))?;
    if key.is_empty() {
        return Err(format!("'{s}' is not KEY=VALUE: empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses `--link NAME[:ALIAS]`; the alias is empty when not given.
pub fn parse_link(s: &str) -> Result<Link, String> {
    let (name, alias) = match s.split_once(':') {
        Some((name, alias)) => {
            if alias.is_empty() {
                return Err(format!("'{s}' is not NAME[:ALIAS]: empty alias"));
            }
            (name, alias)
        }
        None => (s, ""),
    };
    if name.is_empty() {
        return Err(format!("'{s}' is not NAME[:ALIAS]: empty name"));
    }
    Ok(Link {
        name: name.to_string(),
        alias: alias.to_string(),
    })
}

/// Parses `-p [HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`, where both ports may be
/// equal-length ranges (`8000-8010:8000-8010`), into one mapping per port.
/// An IPv6 host address is written in brackets: `[::1]:8080:80`.
pub fn parse_publish(s: &str) -> Result<PublishSpec, String> {
    let bad = |why: &str| format!("invalid port mapping '{s}': {why}");

    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, proto)) => match proto {
            "tcp" | "udp" => (spec, proto),
            _ => return Err(bad(&format!("protocol '{proto}' is not tcp or udp"))),
        },
        None => (s, "tcp"),
    };

    // `PORT` alone (or a range): berth chooses the host ports.
    if !spec.is_empty() && spec.chars().all(|c| c.is_ascii_digit() || c == '-') {
        let (start, end) = parse_port_range(spec).map_err(|why| bad(&why))?;
        return auto_ports("", start, end, protocol).map_err(|why| bad(&why));
    }
    let (host_ip, ports) = split_host_ip(spec).map_err(|why| bad(&why))?;
    // `HOST_IP::PORT`: on that address, the host port chosen by berth.
    if !host_ip.is_empty()
        && let Some(container) = ports.strip_prefix(':')
        && !container.contains(':')
    {
        let (start, end) = parse_port_range(container).map_err(|why| bad(&why))?;
        return auto_ports(&host_ip, start, end, protocol).map_err(|why| bad(&why));
    }
    let (host, container) = match ports.split(':').collect::<Vec<_>>()[..] {
        [host, container] => (host, container),
        _ => {
            return Err(bad(
                "expected [HOST_IP:]HOST_PORT:PORT, PORT or HOST_IP::PORT [/tcp|/udp]",
            ));
        }
    };
    if host.is_empty() {
        return Err(bad("missing host port"));
    }
    if container.is_empty() {
        return Err(bad("missing container port"));
    }
    let (host_start, host_end) = parse_port_range(host).map_err(|why| bad(&why))?;
    let (cont_start, cont_end) = parse_port_range(container).map_err(|why| bad(&why))?;
    if host_end - host_start != cont_end - cont_start {
        return Err(bad(&format!(
            "host range {host} and container range {container} have different lengths"
        )));
    }
    // Before expanding: `1-65535:1-65535` is refused here, not built.
    let count = (host_end - host_start + 1) as usize;
    if count > MAX_PORTS {
        return Err(bad(&format!(
            "the range has {count} ports, at most {MAX_PORTS} per sandbox"
        )));
    }

    let mappings = (host_start..=host_end)
        .zip(cont_start..=cont_end)
        .map(|(host_port, container_port)| PortMapping {
            host_ip: host_ip.clone(),
            host_port,
            container_port,
            protocol: PortProtocol::from_name(protocol).unwrap_or(PortProtocol::Tcp) as i32,
        })
        .collect();
    Ok(PublishSpec(mappings))
}

/// Container ports `start..=end` whose host ports berth chooses (host port 0).
fn auto_ports(host_ip: &str, start: u32, end: u32, protocol: &str) -> Result<PublishSpec, String> {
    let count = (end - start + 1) as usize;
    if count > MAX_PORTS {
        return Err(format!(
            "the range has {count} ports, at most {MAX_PORTS} per sandbox"
        ));
    }
    Ok(PublishSpec(
        (start..=end)
            .map(|container_port| PortMapping {
                host_ip: host_ip.to_string(),
                host_port: 0,
                container_port,
                protocol: PortProtocol::from_name(protocol).unwrap_or(PortProtocol::Tcp) as i32,
            })
            .collect(),
    ))
}

/// Parses `--expose PORT[-END][/tcp|/udp]`: container ports for `-P`.
pub fn parse_expose(s: &str) -> Result<PublishSpec, String> {
    let bad = |why: &str| format!("invalid port '{s}': {why}");
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, proto @ ("tcp" | "udp"))) => (spec, proto),
        Some((_, proto)) => return Err(bad(&format!("protocol '{proto}' is not tcp or udp"))),
        None => (s, "tcp"),
    };
    let (start, end) = parse_port_range(spec).map_err(|why| bad(&why))?;
    auto_ports("", start, end, protocol).map_err(|why| bad(&why))
}

/// Splits an optional leading host address off `[HOST_IP:]HOST_PORT:PORT`.
fn split_host_ip(spec: &str) -> Result<(String, &str), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (ip, rest) = rest
            .split_once(']')
            .ok_or_else(|| "missing ']' after the IPv6 host address".to_string())?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| "expected ':' after the host address".to_string())?;
        let addr: std::net::Ipv6Addr = ip.parse().map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
        return Ok((addr.to_string(), rest));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.len() {
        3 => {
            let ip = parts[0];
            let host_ip = if ip.is_empty() {
                String::new()
            } else {
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("'{ip}' is not an IP address"))?
                    .to_string()
            };
            let rest = &spec[ip.len() + 1..];
            Ok((host_ip, rest))
        }
        _ => Ok((String::new(), spec)),
    }
}

/// Parses `PORT` or `START-END` into an inclusive range of valid ports.
fn parse_port_range(s: &str) -> Result<(u32, u32), String> {
    match s.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (parse_port(start)?, parse_port(end)?);
            if start > end {
                return Err(format!("port range {s} ends before it starts"));
            }
            Ok((start, end))
        }
        None => {
            let port = parse_port(s)?;
            Ok((port, port))
        }
    }
}

fn parse_port(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port),
        Ok(_) => Err(format!("port {s} is out of range 1-65535")),
        Err(_) => Err(format!("'{s}' is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(host_ip: &str, host_port: u32, container_port: u32, protocol: &str) -> PortMapping {
        PortMapping {
            host_ip: host_ip.to_string(),
            host_port,
            container_port,
            protocol: PortProtocol::from_name(protocol).expect("tcp or udp") as i32,
        }
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value() {
        assert_eq!(
            parse_key_value("com.docker.network.driver.mtu=1400").unwrap(),
            ("com.docker.network.driver.mtu".into(), "1400".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("novalue").unwrap_err().contains("missing '='"));
        assert!(parse_key_value("=x").unwrap_err().contains("empty key"));
    }

    #[test]
    fn key_value_error_is_a_cli_error() {
        let err = Cli::try_parse_from(["berth", "network", "create", "-o", "bad", "n"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = Cli::try_parse_from(["berth", "network", "create", "--label", "x", "n"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn link() {
        assert_eq!(
            parse_link("test1").unwrap(),
            Link {
                name: "test1".into(),
                alias: "".into()
            }
        );
        assert_eq!(
            parse_link("test1:db").unwrap(),
            Link {
                name: "test1".into(),
                alias: "db".into()
            }
        );
        assert!(parse_link("").is_err());
        assert!(parse_link(":db").is_err());
        assert!(parse_link("test1:").is_err());
    }

    #[test]
    fn publish_simple() {
        assert_eq!(parse_publish("8080:80").unwrap().0, vec![pm("", 8080, 80, "tcp")]);
        assert_eq!(parse_publish("53:53/udp").unwrap().0, vec![pm("", 53, 53, "udp")]);
        assert_eq!(
            parse_publish("8080:80/tcp").unwrap().0,
            vec![pm("", 8080, 80, "tcp")]
        );
    }

    #[test]
    fn publish_host_ip() {
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap().0,
            vec![pm("127.0.0.1", 8080, 80, "tcp")]
        );
        assert_eq!(
            parse_publish("0.0.0.0:5353:53/udp").unwrap().0,
            vec![pm("0.0.0.0", 5353, 53, "udp")]
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap().0,
            vec![pm("::1", 8080, 80, "tcp")]
        );
        assert_eq!(
            parse_publish(":8080:80").unwrap().0,
            vec![pm("", 8080, 80, "tcp")]
        );
    }

    #[test]
    fn publish_ranges() {
        let spec = parse_publish("8000-8010:9000-9010/udp").unwrap().0;
        assert_eq!(spec.len(), 11);
        assert_eq!(spec[0], pm("", 8000, 9000, "udp"));
        assert_eq!(spec[10], pm("", 8010, 9010, "udp"));
        assert!(
            spec.windows(2)
                .all(|w| w[1].host_port == w[0].host_port + 1
                    && w[1].container_port == w[0].container_port + 1)
        );
        assert_eq!(
            parse_publish("10.0.0.1:7000-7001:7000-7001").unwrap().0,
            vec![
                pm("10.0.0.1", 7000, 7000, "tcp"),
                pm("10.0.0.1", 7001, 7001, "tcp")
            ]
        );
        assert_eq!(parse_publish("80-80:80").unwrap().0, vec![pm("", 80, 80, "tcp")]);
    }

    #[test]
    fn publish_with_a_host_port_berth_chooses() {
        assert_eq!(parse_publish("80").unwrap().0, vec![pm("", 0, 80, "tcp")]);
        assert_eq!(parse_publish("53/udp").unwrap().0, vec![pm("", 0, 53, "udp")]);
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap().0,
            vec![pm("127.0.0.1", 0, 80, "tcp")]
        );
        assert_eq!(parse_publish("8000-8002").unwrap().0.len(), 3);
        assert_eq!(
            parse_expose("9000-9001/udp").unwrap().0,
            vec![pm("", 0, 9000, "udp"), pm("", 0, 9001, "udp")]
        );
        assert!(parse_expose("x").is_err());
        assert!(parse_publish("8000-8050").unwrap_err().contains("at most 50"));
    }

    #[test]
    fn publish_errors() {
        let err = |s: &str| parse_publish(s).unwrap_err();
        assert!(err("80/sctp").contains("protocol 'sctp'"));
        assert!(err("0").contains("out of range 1-65535"));
        assert!(parse_publish("::80").is_err());
        assert!(err("1:2:3:4").contains("expected"));
        assert!(err("8080:80/sctp").contains("protocol 'sctp'"));
        assert!(err("8080:80/").contains("protocol ''"));
        assert!(err("0:80").contains("out of range 1-65535"));
        assert!(err("8080:65536").contains("out of range 1-65535"));
        assert!(err("http:80").contains("not a port number"));
        assert!(err(":80").contains("missing host port"));
        assert!(err("80:").contains("missing container port"));
        assert!(err("8000-8010:8000-8005").contains("different lengths"));
        assert!(err("8000-8010:80").contains("different lengths"));
        assert!(err("8010-8000:8010-8000").contains("ends before it starts"));
        assert!(err("300.1.1.1:80:80").contains("not an IP address"));
        assert!(err("[::1:80:80").contains("missing ']'"));
        assert!(err("[::1]8080:80").contains("expected ':'"));
        assert!(err("-8080:80").contains("not a port number"));
    }

    #[test]
    fn publish_port_limit_at_and_one_over() {
        assert_eq!(parse_publish("8000-8049:8000-8049").unwrap().0.len(), MAX_PORTS);
        assert_eq!(
            parse_publish("8000-8050:8000-8050").unwrap_err(),
            "invalid port mapping '8000-8050:8000-8050': the range has 51 ports, at most 50 per sandbox"
        );
        assert!(
            parse_publish("1-65535:1-65535")
                .unwrap_err()
                .contains("the range has 65535 ports, at most 50 per sandbox")
        );
        let parse = |ps: &[&str]| {
            let mut argv = vec!["berth", "sandbox", "create", "web"];
            for p in ps {
                argv.extend(["-p", p]);
            }
            Cli::try_parse_from(argv).unwrap()
        };
        assert!(
            parse(&["8000-8024:8000-8024", "9000-9024:9000-9024"])
                .check_limits()
                .is_ok()
        );
        let err = parse(&["8000-8024:8000-8024", "9000-9025:9000-9025"])
            .check_limits()
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            err.to_string()
                .contains("--publish: 51 ports in all, at most 50 per sandbox"),
            "{err}"
        );
    }

    #[test]
    fn sandbox_create_parses_everything() {
        let cli = Cli::try_parse_from([
            "berth",
            "sandbox",
            "create",
            "web",
            "--node",
            "node1",
            "-p",
            "8080:80",
            "--publish",
            "127.0.0.1:53:53/udp",
            "--link",
            "db:database",
            "--alias",
            "www",
            "--",
            "python3",
            "-m",
            "http.server",
            "80",
        ])
        .unwrap();
        let Command::Sandbox(SandboxCommand::Create(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.name, "web");
        assert_eq!(args.node.as_deref(), Some("node1"));
        assert_eq!(args.network, "bridge");
        assert_eq!(args.publish.len(), 2);
        assert_eq!(args.publish[1].0, vec![pm("127.0.0.1", 53, 53, "udp")]);
        assert_eq!(args.links[0].alias, "database");
        assert_eq!(args.aliases, vec!["www"]);
        assert_eq!(args.command, vec!["python3", "-m", "http.server", "80"]);
    }

    #[test]
    fn exec_takes_the_rest_as_command() {
        let cli = Cli::try_parse_from(["berth", "exec", "test2", "--", "ping", "-c1", "test1"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.sandbox, "test2");
        assert_eq!(args.command, vec!["ping", "-c1", "test1"]);
        assert!(Cli::try_parse_from(["berth", "exec", "test2"]).is_err());
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "berth",
            "network",
            "ls",
            "--output",
            "json",
            "--api",
            "127.0.0.1:7000",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.api, "127.0.0.1:7000");
    }
}
