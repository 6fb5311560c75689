//! The two simulated vCenters: what a migration spec needs to know about them, and how the
//! simulated operators reach them (TLS verified against each simulator's CA, shared sessions).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vcfm_vsphere::sim::Vcsim;
use vcfm_vsphere::{Client, ClientConfig, Credentials, SessionCache, TlsOptions};

/// What a test or the demo needs to describe one simulated vCenter in a migration spec.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VcenterInfo {
    /// Server name (a loopback IPv4 address, port 443), as it appears in the Infrastructure.
    pub server: String,
    /// Administrator user.
    pub username: String,
    /// Administrator password (deliberately wrong under [`crate::WrongCredentials::Target`]).
    pub password: String,
    /// PEM file of the CA that signed the server certificate.
    pub ca_pem_path: PathBuf,
    /// Datacenter name (`DC0`).
    pub datacenter: String,
    /// Compute cluster path (`/DC0/host/DC0_C0`).
    pub compute_cluster: String,
    /// Datastore path (`/DC0/datastore/LocalDS_0`).
    pub datastore: String,
    /// Network (port group) name (`VM Network`).
    pub network: String,
    /// Resource pool path (`/DC0/host/DC0_C0/Resources`).
    pub resource_pool: String,
    /// RHCOS template path (`/DC0/vm/rhcos-template`).
    pub template: String,
    /// The cluster's VM folder on this vCenter (`/DC0/vm/<infraID>`); it exists on the
    /// source only, a migration creates it on the target.
    pub folder: String,
}

impl VcenterInfo {
    pub(crate) fn from_sim(sim: &Vcsim, infra_id: &str) -> Self {
        let inv = sim.inventory();
        let dc_path = inv
            .datacenters
            .first()
            .cloned()
            .unwrap_or_else(|| "/DC0".into());
        let dc = dc_path.trim_start_matches('/').to_string();
        let first_under = |list: &[String], fallback: String| {
            list.iter()
                .find(|p| p.starts_with(&format!("{dc_path}/")))
                .cloned()
                .unwrap_or(fallback)
        };
        let network = inv
            .networks
            .iter()
            .find(|n| n.ends_with("/VM Network"))
            .or(inv.networks.first())
            .map(|n| n.rsplit('/').next().unwrap_or(n).to_string())
            .unwrap_or_else(|| "VM Network".into());
        let compute_cluster = first_under(&inv.clusters, format!("{dc_path}/host/{dc}_C0"));
        // The compute cluster's own root pool, as the installer writes it: the machine
        // controller takes the pool's owner as the cluster whose networks it searches
        // (machine-api-operator pkg/controller/vsphere/reconciler.go getNetworkDevices), and
        // a standalone host's pool (vcsim lists DC0_H0's first) breaks the clone.
        let cluster_pool = format!("{compute_cluster}/Resources");
        let resource_pool = if inv.resource_pools.contains(&cluster_pool) {
            cluster_pool
        } else {
            first_under(&inv.resource_pools, cluster_pool)
        };
        Self {
            server: sim.server().to_string(),
            username: sim.username().to_string(),
            password: sim.password().to_string(),
            ca_pem_path: sim.ca_pem_path().to_path_buf(),
            compute_cluster,
            datastore: first_under(&inv.datastores, format!("{dc_path}/datastore/LocalDS_0")),
            network,
            resource_pool,
            template: sim
                .template_paths()
                .first()
                .cloned()
                .unwrap_or_else(|| format!("{dc_path}/vm/rhcos-template")),
            folder: format!("{dc_path}/vm/{infra_id}"),
            datacenter: dc,
        }
    }
}

/// Reaches the simulated vCenters by server name with whatever credentials an operator read
/// from a Secret, like the real operators do; unknown servers are unreachable.
#[derive(Clone, Default)]
pub(crate) struct Vcenters {
    trust: Arc<HashMap<String, Vec<u8>>>,
    cache: SessionCache,
}

impl std::fmt::Debug for Vcenters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcenters")
            .field("servers", &self.trust.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vcenters {
    pub(crate) fn new(trust: HashMap<String, Vec<u8>>) -> Self {
        Self {
            trust: Arc::new(trust),
            cache: SessionCache::default(),
        }
    }

    /// A (cached) client for `server` as `user`; the error text is what an operator reports.
    pub(crate) fn client(
        &self,
        server: &str,
        user: &str,
        password: &str,
    ) -> Result<Client, String> {
        let ca = self.trust.get(server).ok_or_else(|| {
            format!(
                "failed to connect to vCenter {server}: dial tcp {server}:443: no route to host"
            )
        })?;
        let mut cfg = ClientConfig::new(server, Credentials::new(user, password))
            .with_tls(TlsOptions::with_ca_pem(ca.clone()))
            .with_timeout(Duration::from_secs(20));
        cfg.connect_timeout = Duration::from_secs(5);
        cfg.task_poll_interval = Duration::from_millis(20);
        self.cache.client(cfg).map_err(|e| e.to_string())
    }

    pub(crate) async fn logout_all(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.cache.logout_all()).await;
    }
}
