//! The CNI spec's side of the plugin (spec 1.0.0 and 1.1.0, 0.4.0 results
//! too): the environment, the network configuration on stdin, the result
//! and the error JSON, the well-known error codes. Plain serde types; the
//! spec's are small enough not to need a crate.
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The spec versions this plugin speaks, oldest first (VERSION lists them).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest, used when the configuration names none.
pub const LATEST: &str = "1.1.0";

/// The well-known error codes of the spec (and berth's own, 100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// berth refused: a name, address or port is taken.
    pub const TAKEN: u32 = 100;
    /// berth refused: the cluster or node is not in a state that allows it.
    pub const REFUSED: u32 = 101;
    /// berth's address pool is exhausted.
    pub const EXHAUSTED: u32 = 102;
    /// Anything else berth answered.
    pub const OTHER: u32 = 999;
}

/// A plugin error, printed as the spec's error JSON on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// The verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// What the runtime puts in the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl Env {
    /// Reads the `CNI_*` variables.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: std::env::var("CNI_COMMAND").ok(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    pub fn command(&self) -> Result<Command, CniError> {
        match self.command.as_deref() {
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("VERSION") => Ok(Command::Version),
            Some("STATUS") => Ok(Command::Status),
            Some("GC") => Ok(Command::Gc),
            None | Some("") => Err(CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND is not set: berth-cni is a CNI plugin, run by a container runtime (ADD, DEL, CHECK, VERSION, STATUS, GC)",
            )),
            Some(other) => Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?} (ADD, DEL, CHECK, VERSION, STATUS or GC)"),
            )),
        }
    }

    /// A variable that must be set for this verb.
    pub fn require<'a>(&self, name: &str, value: &'a str) -> Result<&'a str, CniError> {
        if value.is_empty() {
            return Err(CniError::new(code::INVALID_ENV, format!("{name} is not set")));
        }
        Ok(value)
    }
}

/// `CNI_ARGS`: `KEY=VALUE;…`. Only `IP` is used; `IgnoreUnknown=1` lets
/// others pass (runtimes send Kubernetes' keys), otherwise they are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub ip: Option<String>,
    pub mac: Option<String>,
}

impl Args {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut out = Args::default();
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                ));
            };
            match k {
                "IP" => out.ip = Some(v.to_string()),
                "MAC" => out.mac = Some(v.to_string()),
                "IgnoreUnknown" => ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true"),
                _ => unknown.push(k.to_string()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_ARGS: unknown keys {} (berth-cni takes IP; add IgnoreUnknown=1 to pass others)",
                    unknown.join(", ")
                ),
            ));
        }
        Ok(out)
    }
}

/// One `runtimeConfig.portMappings` entry (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// One of the runtime's attachments in a GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The berth network (bridge or overlay) to attach to.
    #[serde(default)]
    pub network: String,
    /// The node agent's local socket; default `$BERTH_AGENT_SOCKET`, then `/run/berth/agent.sock`.
    #[serde(rename = "agent_socket", default)]
    pub agent_socket: Option<String>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin and checks the version (the one the result speaks).
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("the network configuration on stdin is not valid JSON: {e}"),
            )
        })?;
        if !conf.cni_version.is_empty() && !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {} is not supported by berth-cni (it speaks {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    pub fn version(&self) -> &str {
        if self.cni_version.is_empty() {
            LATEST
        } else {
            &self.cni_version
        }
    }

    /// The berth network, which every verb but VERSION, STATUS and GC needs.
    pub fn network(&self) -> Result<&str, CniError> {
        if self.network.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "network configuration {:?} has no \"network\": name the berth network to attach to, e.g. {{\"type\": \"berth\", \"network\": \"demo\"}}",
                    self.name
                ),
            ));
        }
        Ok(&self.network)
    }
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// CIDR notation: `10.0.0.2/24`.
    pub address: String,
    pub gateway: Option<String>,
    /// Index into the interfaces.
    pub interface: usize,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// An ADD's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

impl AddResult {
    /// The result JSON in `version`'s shape (0.4.0 results give each IP a
    /// `version`), merged after a previous plugin's result in the chain.
    pub fn to_json(&self, version: &str, prev: Option<&Value>) -> Value {
        let mut interfaces: Vec<Value> = prev
            .and_then(|p| p["interfaces"].as_array().cloned())
            .unwrap_or_default();
        let offset = interfaces.len();
        interfaces.extend(self.interfaces.iter().map(|i| json!(i)));
        let mut ips: Vec<Value> = prev
            .and_then(|p| p["ips"].as_array().cloned())
            .unwrap_or_default();
        ips.extend(self.ips.iter().map(|ip| {
            let mut v = json!({"address": ip.address, "interface": ip.interface + offset});
            if let Some(gw) = &ip.gateway {
                v["gateway"] = json!(gw);
            }
            if version == "0.4.0" {
                v["version"] = json!(if ip.address.contains(':') { "6" } else { "4" });
            }
            v
        }));
        let mut routes: Vec<Value> = prev
            .and_then(|p| p["routes"].as_array().cloned())
            .unwrap_or_default();
        routes.extend(self.routes.iter().map(|r| json!(r)));
        let mut out = json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
        });
        let mut dns = prev
            .map(|p| p["dns"].clone())
            .filter(|d| d.is_object())
            .unwrap_or(json!({}));
        if !self.nameservers.is_empty() {
            dns["nameservers"] = json!(self.nameservers);
        }
        if !self.search.is_empty() {
            dns["search"] = json!(self.search);
        }
        out["dns"] = dns;
        out
    }
}

/// VERSION's answer.
pub fn version_json(version: &str) -> Value {
    json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let a = Args::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;IP=10.0.0.9").unwrap();
        assert_eq!(a.ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(Args::parse("").unwrap(), Args::default());
        let e = Args::parse("FOO=1").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("FOO"), "{}", e.msg);
        assert!(Args::parse("IP").is_err());
    }

    #[test]
    fn conf() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"demo","type":"berth","network":"demo",
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#,
        )
        .unwrap();
        assert_eq!((c.version(), c.network().unwrap()), ("1.0.0", "demo"));
        assert_eq!(c.runtime_config.port_mappings[0].host_port, 8080);
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","network":"d","agent_socket":"/run/x.sock"}"#).unwrap();
        assert_eq!(c.agent_socket.as_deref(), Some("/run/x.sock"));
        let e = NetConf::parse(br#"{"cniVersion":"0.3.1"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, code::DECODE_FAILURE);
        let e = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"berth"}"#)
            .unwrap()
            .network()
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
    }

    #[test]
    fn results_per_version_and_chained() {
        let r = AddResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:0a:00:00:02".into(),
                sandbox: "/run/netns/x".into(),
            }],
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: 0,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            nameservers: vec!["127.0.0.11".into()],
            search: vec![],
        };
        let v = r.to_json("1.0.0", None);
        assert_eq!(
            v["ips"][0],
            json!({"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0})
        );
        assert_eq!(v["dns"]["nameservers"][0], "127.0.0.11");
        assert_eq!(r.to_json("0.4.0", None)["ips"][0]["version"], "4");
        let prev = json!({"interfaces": [{"name": "lo0"}], "ips": [], "dns": {"domain": "x"}});
        let v = r.to_json("1.1.0", Some(&prev));
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["dns"]["domain"], "x");
        let e = CniError::new(7, "bad").with_details("why");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"})
        );
    }
}
