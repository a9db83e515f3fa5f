//! Docker's remote network driver and remote IPAM driver, served by the
//! agent (`--docker-plugin`) on the node's plugin socket, so unmodified
//! dockerd puts containers on berth networks. The model (docs/docker.md):
//! a Docker network is bound by name to the berth network of that name
//! (created if absent, checked if present); every address dockerd asks for
//! is a berth sandbox of origin docker (same IPAM transactions, ports,
//! names, repair as berth's own), named by a token, realised with no
//! namespace: at Join the plugin makes a veth pair in the node namespace,
//! the host end berth's (marked, on the bridge), the other end handed to
//! dockerd, which moves it into the container. A sweep detaches addresses
//! dockerd no longer holds (killed containers, dockerd restarted).
pub mod dockerd;
pub mod driver;
pub mod ipam;
pub mod protocol;
pub mod server;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::model::SandboxOrigin;
use crate::reconcile::Reconciler;
use dockerd::Dockerd;
use store::{State, Store};

/// The interface name berth's attachment records for a Docker endpoint
/// (dockerd names the container's interface itself: `eth0`, `eth1`, …).
pub const IFNAME: &str = "eth0";

/// A request's failure, as Docker's `Err`/`Error` string.
#[derive(Debug)]
pub struct PluginError(pub String);

impl<E: std::fmt::Display> From<E> for PluginError {
    fn from(e: E) -> Self {
        PluginError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, PluginError>;

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(PluginError(msg.into()))
}

pub struct Plugin {
    pub node: String,
    pub channel: Channel,
    pub dockerd: Dockerd,
    pub reconciler: Arc<Reconciler>,
    pub underlay_mtu: u32,
    /// How long an address may wait for its endpoint before the sweep frees it.
    pub grace: Duration,
    store: Store,
    state: Mutex<State>,
}

/// An API server error in the words dockerd shows (`berth: …`).
fn api_err(s: tonic::Status) -> PluginError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => PluginError(format!(
            "berth: the berth API server cannot be reached: {}",
            s.message()
        )),
        _ => PluginError(format!("berth: {}", s.message())),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh token naming one address (the berth sandbox's container id).
fn token() -> String {
    let mut b = [0u8; 32];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

impl Plugin {
    pub fn new(
        node: String,
        channel: Channel,
        dockerd: Dockerd,
        reconciler: Arc<Reconciler>,
        underlay_mtu: u32,
        grace: Duration,
        state_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let store = Store::new(&state_dir);
        let state = store.load()?;
        Ok(Self {
            node,
            channel,
            dockerd,
            reconciler,
            underlay_mtu,
            grace,
            store,
            state: Mutex::new(state),
        })
    }

    fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel.clone())
    }

    fn save(&self, s: &State) -> Result<()> {
        self.store
            .save(s)
            .map_err(|e| PluginError(format!("berth: saving the plugin's state: {e}")))
    }

    /// Binds Docker network `id` to its berth network (by the name dockerd
    /// gives it): created if absent, checked if present. Returns the berth
    /// network's id.
    pub async fn bind(&self, id: &str) -> Result<String> {
        let (net, pool) = {
            let s = self.state.lock().await;
            let Some(net) = s.networks.get(id).cloned() else {
                return fail(format!(
                    "berth: docker network {id} was not created through this plugin"
                ));
            };
            if let Some(b) = &net.berth_id {
                return Ok(b.clone());
            }
            let pool = s.pools.get(&net.pool).cloned().unwrap_or_default();
            (net, pool)
        };
        let name = match self.dockerd.network(id).await {
            Ok(Some(info)) => info.name,
            Ok(None) => return fail(format!("berth: dockerd does not know network {id} yet")),
            Err(e) => {
                return fail(format!(
                    "berth: asking dockerd for the name of network {id}: {e} (see --docker-host)"
                ));
            }
        };
        let driver = match net.driver.as_str() {
            "bridge" => pb::NetworkDriver::Bridge,
            _ => pb::NetworkDriver::Overlay,
        };
        let resp = self
            .registry()
            .ensure_network(pb::EnsureNetworkRequest {
                node: self.node.clone(),
                name: name.clone(),
                driver: driver as i32,
                subnet: pool.subnet.clone().unwrap_or_default(),
                gateway: pool.gateway.clone().unwrap_or_default(),
                options: net.options.clone().into_iter().collect(),
                labels: [("com.docker.network.id".to_string(), id.to_string())].into(),
            })
            .await
            .map_err(|s| {
                PluginError(format!(
                    "berth: docker network {name} cannot be berth network {name}: {}",
                    s.message()
                ))
            })?
            .into_inner();
        let berth = resp.network.unwrap_or_default();
        tracing::info!(network = %name, created = resp.created, subnet = %berth.subnet, "docker network bound to its berth network");
        let mut s = self.state.lock().await;
        if let Some(n) = s.networks.get_mut(id) {
            n.name = Some(name);
            n.berth_id = Some(berth.id.clone());
        }
        self.save(&s)?;
        Ok(berth.id)
    }

    /// Binds in the background, soon after CreateNetwork answered (dockerd
    /// stores the network only then), so the berth network exists before
    /// the first container and a mismatch is in the log at once.
    pub fn bind_soon(self: &Arc<Self>, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match me.bind(&id).await {
                    Ok(_) => return,
                    Err(e) if e.0.contains("does not know network") => continue,
                    Err(e) => {
                        tracing::warn!(network = %id, error = %e.0, "binding a docker network; containers on it will be refused with this error");
                        return;
                    }
                }
            }
        });
    }

    /// Records address `ip` (or any, when empty) of berth network
    /// `berth_id` for `token`, with `ports`.
    async fn attach(
        &self,
        token: &str,
        berth_id: &str,
        ip: &str,
        ports: Vec<pb::PortMapping>,
    ) -> Result<pb::AttachLocalResponse> {
        Ok(self
            .registry()
            .attach_local(pb::AttachLocalRequest {
                node: self.node.clone(),
                origin: pb::SandboxOrigin::Docker as i32,
                container_id: token.to_string(),
                netns_path: String::new(),
                netns_inode: 0,
                ifname: IFNAME.to_string(),
                network: berth_id.to_string(),
                ip: ip.to_string(),
                ports,
                aliases: vec![],
            })
            .await
            .map_err(api_err)?
            .into_inner())
    }

    async fn detach(&self, token: &str) -> Result<()> {
        self.registry()
            .detach_local(pb::DetachLocalRequest {
                node: self.node.clone(),
                origin: pb::SandboxOrigin::Docker as i32,
                container_id: token.to_string(),
                ifname: IFNAME.to_string(),
            })
            .await
            .map_err(api_err)?;
        Ok(())
    }

    /// Frees what dockerd no longer holds: addresses without an endpoint
    /// past `--docker-grace`, endpoints dockerd does not list any more, and berth
    /// sandboxes of origin docker on this node the plugin has no record of.
    /// Only while dockerd answers (a stopped dockerd holds its containers).
    pub async fn sweep(&self) -> Result<usize> {
        let have = self
            .registry()
            .list_local(pb::ListLocalRequest {
                node: self.node.clone(),
                origin: pb::SandboxOrigin::Docker as i32,
            })
            .await
            .map_err(api_err)?
            .into_inner()
            .sandboxes;
        let snapshot = self.state.lock().await.clone();
        // Docker's endpoints per network, as dockerd lists them now.
        let mut live = std::collections::BTreeSet::new();
        for id in snapshot.networks.keys() {
            match self.dockerd.network(id).await {
                Ok(Some(info)) => live.extend(info.endpoints),
                Ok(None) => {}
                Err(e) => return fail(format!("dockerd: {e}")),
            }
        }
        let now = now();
        let mut gone = Vec::new();
        for s in &have {
            let token = &s.container_id;
            let keep = match snapshot.addresses.get(token) {
                Some(a) => match &a.endpoint {
                    Some(ep) => live.contains(ep) || now.saturating_sub(a.since) < self.grace.as_secs(),
                    None => now.saturating_sub(a.since) < self.grace.as_secs(),
                },
                // Not in the plugin's record (it was lost): after the grace
                // from the sandbox's creation.
                None => {
                    let created = time::OffsetDateTime::parse(
                        &s.created,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_or(0, |t| t.unix_timestamp().max(0) as u64);
                    now.saturating_sub(created) < self.grace.as_secs()
                }
            };
            if !keep {
                gone.push(token.clone());
            }
        }
        // The plugin's records of addresses berth no longer has (removed
        // with `berth sandbox rm`, or an attach that never completed).
        {
            let held: std::collections::BTreeSet<&str> =
                have.iter().map(|s| s.container_id.as_str()).collect();
            let mut st = self.state.lock().await;
            let before = st.addresses.len();
            let grace = self.grace.as_secs();
            st.addresses
                .retain(|t, a| held.contains(t.as_str()) || now.saturating_sub(a.since) < grace);
            if st.addresses.len() != before {
                let tokens: std::collections::BTreeSet<String> = st.addresses.keys().cloned().collect();
                st.endpoints.retain(|_, e| tokens.contains(&e.token));
                self.save(&st)?;
            }
        }
        for token in &gone {
            tracing::info!(container = %token, "docker no longer holds this address; detaching");
            self.detach(token).await?;
            let mut st = self.state.lock().await;
            if let Some(a) = st.addresses.remove(token)
                && let Some(ep) = a.endpoint
                && let Some(e) = st.endpoints.remove(&ep)
            {
                let _ = self.remove_veth(&e.berth_endpoint).await;
            }
            self.save(&st)?;
        }
        Ok(gone.len())
    }

    async fn remove_veth(&self, berth_endpoint: &str) -> Result<()> {
        let h = crate::kernel::netns::netlink(None).await?;
        crate::kernel::link::delete(&h, &crate::model::host_ifname(berth_endpoint)).await?;
        Ok(())
    }

    /// The berth attachment of `token`, as the agent holds it.
    async fn attachment(&self, token: &str) -> Option<crate::model::SandboxSpec> {
        self.reconciler
            .attachment(SandboxOrigin::Docker, token, IFNAME)
            .await
    }
}

/// Sweeps every `period` (see [`Plugin::sweep`]); runs forever.
pub async fn sweep_forever(plugin: Arc<Plugin>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        match plugin.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "freed addresses docker no longer holds"),
            Err(e) => tracing::debug!(error = %e.0, "docker sweep skipped"),
        }
    }
}
