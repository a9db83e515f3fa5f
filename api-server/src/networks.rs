//! Networks: create (with subnet, VNI and name taken in one transaction),
//! list, look up, remove, and the built-in `bridge`, `host` and `none`.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::model::{DEFAULT_BRIDGE, Driver, GW_BRIDGE, HOST_NETWORK, NONE_NETWORK, Scope};
use berth_core::names::{validate_label, validate_name};
use berth_core::net;
use berth_core::options::{self, NetworkOptions};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{ApiError, Result};
use crate::ipam;
use crate::page::{Page, PageRequest};
use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord};
use crate::store::{Guard, Op, Store, Write, new_id, now_rfc3339};

/// A validated request to create a network.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: Driver,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub parsed: NetworkOptions,
    /// `--internal`, `--ip-range` and `--aux-address` ([`NetworkSpec::with_addressing`]).
    pub internal: bool,
    pub ip_range: Option<Ipv4Net>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// `--ipv6` with its optional IPv6 subnet and gateway ([`NetworkSpec::with_ipv6`]).
    pub enable_ipv6: bool,
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    builtin: bool,
    bridge: Option<String>,
}

impl NetworkSpec {
    /// Validates a user's request; nothing is touched before this passes.
    pub fn validate(
        name: &str,
        driver: Option<Driver>,
        subnet: &str,
        gateway: &str,
        options: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        validate_name("name", name)?;
        let driver = Driver::for_new_network(driver)?;
        let subnet = match subnet {
            "" => None,
            s => Some(net::parse_subnet("subnet", s)?),
        };
        let gateway = match gateway {
            "" => None,
            g => Some(net::parse_ip("gateway", g)?),
        };
        match (subnet, gateway) {
            (None, Some(_)) => {
                return Err(berth_core::Invalid::new("gateway", "--gateway needs --subnet").into());
            }
            (Some(s), Some(g)) => net::check_gateway(s, g)?,
            _ => {}
        }
        let parsed = NetworkOptions::parse(driver, &options)?;
        berth_core::limits::check_labels(&labels)?;
        for (k, v) in &labels {
            validate_label(k, v)?;
        }
        Ok(Self {
            name: name.to_string(),
            driver,
            subnet,
            gateway,
            options,
            labels,
            bridge: parsed.bridge_name.clone(),
            parsed,
            internal: false,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            enable_ipv6: false,
            subnet6: None,
            gateway6: None,
            builtin: false,
        })
    }

    /// Adds Docker's `--internal`, `--ip-range` and `--aux-address` to a
    /// validated spec: the range and the reserved addresses need `--subnet`
    /// and must lie inside it, as in Docker; an aux address may not be the
    /// gateway or appear twice.
    pub fn with_addressing(
        mut self,
        internal: bool,
        ip_range: &str,
        aux_addresses: BTreeMap<String, String>,
    ) -> Result<Self> {
        let invalid = |field: &str, why: String| -> ApiError { berth_core::Invalid::new(field, why).into() };
        let needs_subnet = |flag: &str| match self.subnet {
            Some(s) if self.driver.has_ipam() => Ok(s),
            _ => Err(invalid(flag, format!("--{flag} needs --subnet"))),
        };
        if !ip_range.is_empty() {
            let subnet = needs_subnet("ip-range")?;
            let range: Ipv4Net = ip_range.parse().map_err(|_| {
                invalid(
                    "ip-range",
                    format!("{ip_range:?} is not an IPv4 CIDR such as 172.20.5.0/24"),
                )
            })?;
            if range.network() != range.addr() {
                return Err(invalid(
                    "ip-range",
                    format!("{ip_range:?} has host bits set; did you mean {}?", range.trunc()),
                ));
            }
            if !subnet.contains(&range) {
                return Err(invalid(
                    "ip-range",
                    format!("{range} is not inside the subnet {subnet}"),
                ));
            }
            let gateway = self.gateway.unwrap_or_else(|| net::default_gateway(subnet));
            if ipam::Range::new(subnet, gateway, Some(range), &[]).count() == 0 {
                return Err(invalid(
                    "ip-range",
                    format!("{range} leaves no address to hand out"),
                ));
            }
            self.ip_range = Some(range);
        }
        if aux_addresses.len() > berth_core::limits::MAX_AUX_ADDRESSES {
            return Err(invalid(
                "aux-address",
                format!(
                    "{} addresses, at most {}",
                    aux_addresses.len(),
                    berth_core::limits::MAX_AUX_ADDRESSES
                ),
            ));
        }
        for (name, value) in aux_addresses {
            let subnet = needs_subnet("aux-address")?;
            validate_name("aux-address", &name)?;
            let ip = net::parse_ip("aux-address", &value)?;
            let gateway = self.gateway.unwrap_or_else(|| net::default_gateway(subnet));
            net::check_assignable("aux-address", subnet, gateway, ip)?;
            if let Some((other, _)) = self.aux_addresses.iter().find(|(_, a)| **a == ip) {
                return Err(invalid(
                    "aux-address",
                    format!("{ip} is given twice ({other} and {name})"),
                ));
            }
            self.aux_addresses.insert(name, ip);
        }
        self.internal = internal;
        Ok(self)
    }

    /// Adds `--ipv6` (dual stack) to a validated spec: an IPv6 subnet and
    /// gateway need `--ipv6` and a bridge or overlay driver; the gateway
    /// needs the subnet and must lie inside it.
    pub fn with_ipv6(mut self, enable: bool, subnet6: &str, gateway6: &str) -> Result<Self> {
        use berth_core::net6;
        let invalid = |field: &str, why: String| -> ApiError { berth_core::Invalid::new(field, why).into() };
        if !enable {
            if !subnet6.is_empty() {
                return Err(invalid("subnet6", format!("IPv6 subnet {subnet6} needs --ipv6")));
            }
            if !gateway6.is_empty() {
                return Err(invalid(
                    "gateway6",
                    format!("IPv6 gateway {gateway6} needs --ipv6"),
                ));
            }
            return Ok(self);
        }
        if !self.driver.has_ipam() {
            return Err(invalid(
                "ipv6",
                format!("--ipv6 needs a bridge or overlay network, not {}", self.driver),
            ));
        }
        let subnet = match subnet6 {
            "" => None,
            s => Some(net6::parse_subnet6("subnet6", s)?),
        };
        let gateway = match gateway6 {
            "" => None,
            g => Some(net6::parse_ip6("gateway6", g)?),
        };
        match (subnet, gateway) {
            (None, Some(_)) => {
                return Err(invalid(
                    "gateway6",
                    "an IPv6 --gateway needs an IPv6 --subnet".into(),
                ));
            }
            (Some(s), Some(g)) => net6::check_gateway6(s, g)?,
            _ => {}
        }
        self.enable_ipv6 = true;
        self.subnet6 = subnet;
        self.gateway6 = gateway;
        Ok(self)
    }

    fn builtin(name: &str, driver: Driver, subnet: Option<Ipv4Net>, bridge: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            driver,
            subnet,
            gateway: None,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            parsed: NetworkOptions::default(),
            internal: false,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            enable_ipv6: false,
            subnet6: None,
            gateway6: None,
            builtin: true,
            bridge: bridge.map(str::to_string),
        }
    }
}

fn name_taken(name: &str) -> ApiError {
    ApiError::AlreadyExists(format!("network with name {name} already exists"))
}

/// The built-in networks every cluster has.
fn builtins() -> Vec<NetworkSpec> {
    let (name, subnet, dev) = DEFAULT_BRIDGE;
    vec![
        NetworkSpec::builtin(name, Driver::Bridge, subnet.parse().ok(), Some(dev)),
        NetworkSpec::builtin(HOST_NETWORK, Driver::Host, None, None),
        NetworkSpec::builtin(NONE_NETWORK, Driver::Null, None, None),
    ]
}

/// Network operations on the store.
#[derive(Clone)]
pub struct Networks {
    store: Store,
}

impl Networks {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Every node's own routes, as subnets a new network must not overlap.
    async fn node_routes(&self) -> Result<Vec<ipam::Avoid>> {
        let nodes: Vec<NodeRecord> = self.store.list_json(&self.store.keys.nodes()).await?;
        Ok(nodes
            .iter()
            .flat_map(|n| {
                n.routes.iter().map(|r| ipam::Avoid {
                    subnet: r.destination,
                    what: format!("route {} (dev {}) of node {}", r.destination, r.device, n.name),
                })
            })
            .collect())
    }

    /// Creates a network: name, subnet, VNI and bridge device are taken in one
    /// transaction, retried when another allocation in the same scope wins.
    pub async fn create(&self, spec: NetworkSpec) -> Result<NetworkRecord> {
        let keys = &self.store.keys;
        let scope = spec.driver.scope();
        let name_key = keys.network_name(&spec.name);
        for attempt in 0..ipam::MAX_ATTEMPTS {
            // A taken name is the answer even when the subnet would clash too.
            if self.store.get_string(&name_key).await?.is_some() {
                return Err(name_taken(&spec.name));
            }
            let id = new_id();
            let mut write = Write::new()
                .when(Guard::Absent(name_key.clone()))
                .then(Op::put(name_key.clone(), id.clone()));
            let mut record = NetworkRecord {
                id: id.clone(),
                name: spec.name.clone(),
                driver: spec.driver,
                scope,
                subnet: None,
                gateway: None,
                options: spec.options.clone(),
                labels: spec.labels.clone(),
                created: now_rfc3339(),
                vni: None,
                bridge: None,
                mtu: spec.parsed.mtu,
                builtin: spec.builtin,
                internal: spec.internal,
                ip_range: spec.ip_range,
                aux_addresses: spec.aux_addresses.clone(),
                enable_ipv6: spec.enable_ipv6,
                subnet6: None,
                gateway6: None,
            };
            if spec.driver.has_ipam() {
                let taken = ipam::taken_subnets(&self.store, scope).await?;
                let other_scope = match scope {
                    Scope::Local => Scope::Global,
                    Scope::Global => Scope::Local,
                };
                let other = ipam::taken_subnets(&self.store, other_scope).await?;
                let names = self.names_by_id().await?;
                let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
                // The built-in networks come before any node registers and
                // keep Docker's subnets.
                let avoid = if spec.builtin {
                    Vec::new()
                } else {
                    let mut avoid = self.node_routes().await?;
                    avoid.extend(other.subnets.iter().map(|(net, id)| ipam::Avoid {
                        subnet: *net,
                        what: format!("{net} of {other_scope} network {}", name_of(id)),
                    }));
                    avoid
                };
                let subnet = ipam::choose_subnet(scope, spec.subnet, &taken.subnets, &avoid, name_of)?;
                let guard = keys.subnet_guard(scope);
                let subnet_key = keys.subnet(scope, subnet, &id);
                write = write
                    .when(Guard::Unchanged(
                        keys.subnet_guard(other_scope),
                        other.guard_revision,
                    ))
                    .when(Guard::Unchanged(guard.clone(), taken.guard_revision))
                    .then(Op::put(guard, id.clone()))
                    .when(Guard::Absent(subnet_key.clone()))
                    .then(Op::put(subnet_key, id.clone()));
                record.subnet = Some(subnet);
                record.gateway = Some(spec.gateway.unwrap_or_else(|| net::default_gateway(subnet)));
                if spec.enable_ipv6 {
                    // Read after the guard above: a concurrent allocation in
                    // either scope moves a guard this write compares.
                    let taken6 = ipam::taken_subnets6(&self.store, scope).await?;
                    let avoid6: Vec<_> = ipam::taken_subnets6(&self.store, other_scope)
                        .await?
                        .into_iter()
                        .map(|(n, id)| (n, format!("{other_scope} network {}", name_of(&id))))
                        .collect();
                    let subnet6 = ipam::choose_subnet6(scope, spec.subnet6, &taken6, &avoid6, name_of)?;
                    let key6 = keys.subnet6(scope, subnet6, &id);
                    write = write
                        .when(Guard::Absent(key6.clone()))
                        .then(Op::put(key6, id.clone()));
                    record.subnet6 = Some(subnet6);
                    record.gateway6 = Some(
                        spec.gateway6
                            .unwrap_or_else(|| berth_core::net6::default_gateway6(subnet6)),
                    );
                }
                let bridge = spec.bridge.clone().unwrap_or_else(|| match spec.driver {
                    Driver::Overlay => format!("ov-{}", &id[..12]),
                    _ => format!("br-{}", &id[..12]),
                });
                let bridge_key = keys.bridge_name(&bridge);
                write = write
                    .when(Guard::Absent(bridge_key.clone()))
                    .then(Op::put(bridge_key, id.clone()));
                record.bridge = Some(bridge);
            }
            if spec.driver == Driver::Overlay {
                let vni = ipam::choose_vni(&ipam::taken_vnis(&self.store).await?)?;
                let vni_key = keys.vni(vni);
                write = write
                    .when(Guard::Absent(vni_key.clone()))
                    .then(Op::put(vni_key, id.clone()));
                record.vni = Some(vni);
            }
            let write = write.then(Op::put_json(keys.network(&id), &record)?);
            if self.store.write(write).await?.committed() {
                tracing::info!(network = %record.name, id = %record.id, subnet = ?record.subnet, "network created");
                return Ok(record);
            }
            // Find out which compare failed: a taken name or bridge is final,
            // anything else is a lost race in the scope and worth a retry.
            if self.store.get_string(&name_key).await?.is_some() {
                return Err(name_taken(&spec.name));
            }
            if let Some(bridge) = &spec.bridge
                && let Some(owner) = self.store.get_string(&keys.bridge_name(bridge)).await?
            {
                let names = self.names_by_id().await?;
                return Err(ApiError::FailedPrecondition(format!(
                    "bridge {bridge} is already used by network {}",
                    names.get(&owner).cloned().unwrap_or(owner)
                )));
            }
            tracing::debug!(network = %spec.name, attempt, "network allocation lost a race, retrying");
            crate::metrics::retry("network_create");
        }
        Err(ApiError::Aborted(format!(
            "could not create network {} after {} attempts; try again",
            spec.name,
            ipam::MAX_ATTEMPTS
        )))
    }

    /// The gateway network of overlay sandboxes, created on first use (local
    /// scope, next free local subnet, masqueraded, `enable_icc=false`).
    pub async fn ensure_gwbridge(&self) -> Result<NetworkRecord> {
        match self.find(GW_BRIDGE).await {
            Ok(n) => return Ok(n),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut spec = NetworkSpec::builtin(GW_BRIDGE, Driver::Bridge, None, Some(GW_BRIDGE));
        spec.options
            .insert(options::ENABLE_ICC.to_string(), "false".to_string());
        spec.parsed.enable_icc = false;
        match self.create(spec).await {
            Ok(n) => Ok(n),
            // Another request created it first.
            Err(ApiError::AlreadyExists(_)) => self.find(GW_BRIDGE).await,
            Err(e) => Err(e),
        }
    }

    /// Makes sure `bridge`, `host` and `none` exist. Safe to run from any
    /// number of API servers at once: only one create per name can win.
    pub async fn ensure_builtins(&self) -> Result<()> {
        for spec in builtins() {
            let name = spec.name.clone();
            match self.create(spec).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            tracing::debug!(network = %name, "built-in network present");
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<NetworkRecord>> {
        let mut nets: Vec<NetworkRecord> = self.store.list_json(&self.store.keys.networks()).await?;
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets)
    }

    /// One page of networks in id order (a range read by key), and
    /// whether more follow.
    pub async fn list_page(&self, page: &PageRequest) -> Result<Page<NetworkRecord>> {
        let read = self
            .store
            .page_json::<NetworkRecord>(&self.store.keys.networks(), &page.after, page.size)
            .await?;
        Ok(Page {
            items: read.items.into_iter().map(|(_, v)| v.value).collect(),
            more: read.more,
        })
    }

    async fn names_by_id(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .store
            .list_json::<NetworkRecord>(&self.store.keys.networks())
            .await?
            .into_iter()
            .map(|n| (n.id, n.name))
            .collect())
    }

    /// A runtime front's network by name (Docker's `network create -d berth
    /// NAME`, run on every node): created from `spec` when there is none of
    /// that name, else checked against it (driver; subnet, gateway and each
    /// option when `spec` names them). Returns the network and whether it
    /// was created here; a concurrent create elsewhere is a bind.
    pub async fn ensure(&self, spec: NetworkSpec) -> Result<(NetworkRecord, bool)> {
        for _ in 0..ipam::MAX_ATTEMPTS {
            let name_key = self.store.keys.network_name(&spec.name);
            if let Some(id) = self.store.get_string(&name_key).await?
                && let Some(rec) = self
                    .store
                    .get_json::<NetworkRecord>(&self.store.keys.network(&id))
                    .await?
            {
                let have = rec.value;
                check_same(&spec, &have)?;
                return Ok((have, false));
            }
            match self.create(spec.clone()).await {
                Ok(rec) => return Ok((rec, true)),
                Err(ApiError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Aborted(format!(
            "network {} was created and removed concurrently; try again",
            spec.name
        )))
    }

    /// Looks a network up by exact name, full id, or unique id prefix (as Docker does).
    pub async fn find(&self, name_or_id: &str) -> Result<NetworkRecord> {
        if name_or_id.is_empty() {
            return Err(berth_core::Invalid::new("network", "must not be empty").into());
        }
        let keys = &self.store.keys;
        if let Some(id) = self.store.get_string(&keys.network_name(name_or_id)).await?
            && let Some(rec) = self.store.get_json::<NetworkRecord>(&keys.network(&id)).await?
        {
            return Ok(rec.value);
        }
        if name_or_id.chars().all(|c| c.is_ascii_hexdigit()) {
            let lower = name_or_id.to_ascii_lowercase();
            let mut found: Vec<NetworkRecord> = self.store.list_json(&keys.network(&lower)).await?;
            match found.len() {
                1 => return Ok(found.remove(0)),
                0 => {}
                n => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "network id prefix {name_or_id} is ambiguous ({n} networks match)"
                    )));
                }
            }
        }
        Err(ApiError::not_found("network", name_or_id))
    }

    /// Endpoints attached to a network, on every node.
    pub async fn endpoints(&self, network_id: &str) -> Result<Vec<EndpointRecord>> {
        self.store.list_json(&self.store.keys.endpoints(network_id)).await
    }

    /// Removes a network that has no endpoints left. The removal compares the
    /// network's endpoint range ("no key under `endpoints/<id>/`"), so an
    /// endpoint created concurrently makes the removal fail instead of orphaning it.
    pub async fn remove(&self, name_or_id: &str) -> Result<NetworkRecord> {
        let keys = &self.store.keys;
        for _ in 0..ipam::MAX_ATTEMPTS {
            let net = self.find(name_or_id).await?;
            if net.builtin {
                return Err(ApiError::FailedPrecondition(format!(
                    "{} is a pre-defined network and cannot be removed",
                    net.name
                )));
            }
            let endpoints = self.endpoints(&net.id).await?;
            if !endpoints.is_empty() {
                let names: Vec<_> = endpoints.iter().map(|e| e.sandbox_name.as_str()).collect();
                return Err(ApiError::FailedPrecondition(format!(
                    "network {} has active endpoints ({})",
                    net.name,
                    names.join(", ")
                )));
            }
            let mut write = Write::new()
                // No endpoint key exists, and the network still does.
                .when(Guard::NoneUnder(keys.endpoints(&net.id)))
                .when(Guard::Present(keys.network(&net.id)))
                .then(Op::delete(keys.network(&net.id)))
                .then(Op::delete(keys.network_name(&net.name)))
                .then(Op::delete_under(keys.ipam_network(&net.id)));
            if let Some(subnet) = net.subnet {
                write = write.then(Op::delete(keys.subnet(net.scope, subnet, &net.id)));
            }
            if let Some(subnet6) = net.subnet6 {
                write = write.then(Op::delete(keys.subnet6(net.scope, subnet6, &net.id)));
            }
            if let Some(bridge) = &net.bridge {
                write = write.then(Op::delete(keys.bridge_name(bridge)));
            }
            if let Some(vni) = net.vni {
                write = write.then(Op::delete(keys.vni(vni)));
            }
            if self.store.write(write).await?.committed() {
                tracing::info!(network = %net.name, id = %net.id, "network removed");
                return Ok(net);
            }
        }
        Err(ApiError::Aborted(format!(
            "network {name_or_id} kept changing; try again"
        )))
    }
}

/// Why existing network `have` is not the one `want` asks for, if it is not.
fn check_same(want: &NetworkSpec, have: &NetworkRecord) -> Result<()> {
    let mut diffs = Vec::new();
    if want.driver != have.driver {
        diffs.push(format!("driver {} (asked: {})", have.driver, want.driver));
    }
    if let Some(s) = want.subnet
        && have.subnet != Some(s)
    {
        diffs.push(format!(
            "subnet {} (asked: {s})",
            have.subnet.map_or("none".to_string(), |s| s.to_string())
        ));
    }
    if let Some(g) = want.gateway
        && have.gateway != Some(g)
    {
        diffs.push(format!(
            "gateway {} (asked: {g})",
            have.gateway.map_or("none".to_string(), |g| g.to_string())
        ));
    }
    for (k, v) in &want.options {
        if have.options.get(k) != Some(v) {
            diffs.push(format!(
                "option {k}={} (asked: {v})",
                have.options.get(k).map_or("unset", String::as_str)
            ));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(ApiError::FailedPrecondition(format!(
        "berth network {} exists with {}; remove it or ask for the same",
        have.name,
        diffs.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: Option<Driver> = Some(Driver::Bridge);

    fn spec(name: &str, driver: Option<Driver>, subnet: &str, gw: &str) -> Result<NetworkSpec> {
        NetworkSpec::validate(name, driver, subnet, gw, BTreeMap::new(), BTreeMap::new())
    }

    #[test]
    fn validation() {
        assert!(spec("my-bridge", BRIDGE, "", "").is_ok());
        assert_eq!(spec("n", None, "", "").unwrap().driver, Driver::Bridge);
        assert!(spec("-bad", BRIDGE, "", "").is_err());
        assert!(spec("n", Some(Driver::Host), "", "").is_err());
        assert!(spec("n", Some(Driver::Null), "", "").is_err());
        assert!(spec("n", BRIDGE, "", "172.20.0.1").is_err());
        assert!(spec("n", BRIDGE, "172.20.0.0/16", "172.21.0.1").is_err());
        assert!(spec("n", BRIDGE, "172.20.0.0/16", "172.20.0.0").is_err());
        let s = spec("n", Some(Driver::Overlay), "10.9.0.0/24", "10.9.0.254").unwrap();
        assert_eq!(s.driver, Driver::Overlay);
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        let mut labels = BTreeMap::new();
        labels.insert("bad key".to_string(), "v".to_string());
        assert!(NetworkSpec::validate("n", None, "", "", BTreeMap::new(), labels).is_err());
    }

    #[test]
    fn binding_checks_what_was_asked() {
        let have = |driver: Driver| NetworkRecord {
            id: "a".repeat(64),
            name: "demo".into(),
            driver,
            scope: driver.scope(),
            subnet: "10.0.0.0/24".parse().ok(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            options: [("com.docker.network.driver.mtu".to_string(), "1400".to_string())].into(),
            labels: BTreeMap::new(),
            created: String::new(),
            vni: Some(4096),
            bridge: None,
            mtu: None,
            builtin: false,
            internal: false,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            enable_ipv6: false,
            subnet6: None,
            gateway6: None,
        };
        let ov = Some(Driver::Overlay);
        // Nothing asked beyond the driver: any subnet, gateway and options bind.
        assert!(check_same(&spec("demo", ov, "", "").unwrap(), &have(Driver::Overlay)).is_ok());
        assert!(
            check_same(
                &spec("demo", ov, "10.0.0.0/24", "").unwrap(),
                &have(Driver::Overlay)
            )
            .is_ok()
        );
        let e = check_same(&spec("demo", ov, "", "").unwrap(), &have(Driver::Bridge)).unwrap_err();
        assert!(e.to_string().contains("driver bridge (asked: overlay)"), "{e}");
        let e = check_same(
            &spec("demo", ov, "10.0.1.0/24", "").unwrap(),
            &have(Driver::Overlay),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("subnet 10.0.0.0/24 (asked: 10.0.1.0/24)"),
            "{e}"
        );
        let e = check_same(
            &spec("demo", ov, "10.0.0.0/24", "10.0.0.9").unwrap(),
            &have(Driver::Overlay),
        )
        .unwrap_err();
        assert!(e.to_string().contains("gateway 10.0.0.1"), "{e}");
        let opts = |v: &str| {
            NetworkSpec::validate(
                "demo",
                ov,
                "",
                "",
                [("com.docker.network.driver.mtu".to_string(), v.to_string())].into(),
                BTreeMap::new(),
            )
            .unwrap()
        };
        assert!(check_same(&opts("1400"), &have(Driver::Overlay)).is_ok());
        let e = check_same(&opts("1300"), &have(Driver::Overlay)).unwrap_err();
        assert!(matches!(e, ApiError::FailedPrecondition(_)), "{e}");
        assert!(
            e.to_string()
                .contains("option com.docker.network.driver.mtu=1400"),
            "{e}"
        );
    }

    #[test]
    fn label_and_option_limits() {
        use berth_core::limits::{MAX_LABELS, MAX_OPTION_VALUE_BYTES};
        let invalid = |r: Result<NetworkSpec>| match r {
            Err(ApiError::Invalid(e)) => e.to_string(),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        };
        let labels = |n: usize| -> BTreeMap<String, String> {
            (0..n).map(|i| (format!("l{i}"), "v".into())).collect()
        };
        assert!(NetworkSpec::validate("n", None, "", "", BTreeMap::new(), labels(MAX_LABELS)).is_ok());
        assert_eq!(
            invalid(NetworkSpec::validate(
                "n",
                None,
                "",
                "",
                BTreeMap::new(),
                labels(MAX_LABELS + 1)
            )),
            "invalid labels: 65 labels, at most 64"
        );
        let big = BTreeMap::from([
            ("a".to_string(), "v".repeat(4096)),
            ("b".into(), "v".repeat(4096)),
        ]);
        let mut over = big.clone();
        over.insert("c".into(), "v".repeat(4096));
        over.insert("d".into(), "v".repeat(4096));
        assert!(NetworkSpec::validate("n", None, "", "", BTreeMap::new(), big).is_ok());
        assert_eq!(
            invalid(NetworkSpec::validate("n", None, "", "", BTreeMap::new(), over)),
            "invalid labels: 16388 bytes of keys and values, at most 16384"
        );
        let opts = |v: String| BTreeMap::from([(options::BRIDGE_NAME.to_string(), v)]);
        assert_eq!(
            invalid(NetworkSpec::validate(
                "n",
                None,
                "",
                "",
                opts("x".repeat(MAX_OPTION_VALUE_BYTES + 1)),
                BTreeMap::new()
            )),
            "invalid option com.docker.network.bridge.name: a value of 257 bytes, at most 256"
        );
        let many: BTreeMap<String, String> = (0..17).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            invalid(NetworkSpec::validate("n", None, "", "", many, BTreeMap::new())),
            "invalid options: 17 options, at most 16"
        );
    }
}
