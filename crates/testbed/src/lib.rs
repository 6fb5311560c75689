//! vcfm's one test harness, shared by the controller's end-to-end tests, the `vcfm`
//! binary's tests, the benches and the demo.
//!
//! - The environment: [`openshift_sim::SimCluster`] on the tier `VCFM_TIER` names (`sim`:
//!   kube-sim and every operator simulated; `real`: etcd, kube-apiserver,
//!   kube-controller-manager and the real machine API and CPMS operators), two TLS vcsims.
//! - Seeding: OpenShift is seeded in one place only, by openshift-sim (installer-shaped per
//!   version); this crate adds what an administrator adds before a migration: the
//!   namespace, the target vCenter's credentials Secret and the migration itself.
//! - Driving: [`Env`] runs the controller in-process against the cluster over HTTP, or
//!   [`Binary`] runs the real `vcfm` executable; both wait with deadlines.
//! - Asserting end states: [`ClusterState`] (everything a migration may change),
//!   [`phases::Observed`] (what phases 5–10 touch), [`all_objects`] and
//!   [`vcenter_inventory`] (a read-only run changed nothing).
//!
//! A dev-dependency only (and the demo's): the product crates never link it
//! (`crates/vcfm/tests/product_deps.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A harness fails loudly by design.

mod binary;
pub mod e2e;
mod env;
mod events;
mod inventory;
pub mod phases;
mod requests;
mod state;
mod status;

pub use binary::{Binary, tail};
pub use env::{CONTROLLER_USER, Env, NS, wait_for_migration};
pub use events::{event_notes, wait_event, wait_event_naming};
pub use inventory::{all_objects, assert_same_objects, vcenter_inventory};
pub use requests::{RequestMark, Requests};
pub use state::{ClusterState, VcenterState, assert_same_state, crd_vcenter_rules};
pub use status::*;

/// A loopback port free at the time of asking, for a server a test starts (or, left
/// unused, an address where nothing answers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use openshift_sim::{SimCluster, VcenterInfo};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The migration custom resource.
pub type Vcfm = vcfm_api::VmwareCloudFoundationMigration;

/// Name of the target vCenter's credentials Secret the in-process harness creates.
pub const TARGET_SECRET: &str = "target-vcenter-creds";

/// Logs once per process when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Creates namespace `ns` unless it exists.
pub async fn ensure_namespace(client: &kube::Client, ns: &str) -> Result<(), kube::Error> {
    let n = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The Secret an administrator creates for the migration: `<server>.username` and
/// `<server>.password` of the target vCenter (the keys `kube-system/vsphere-creds` uses).
pub fn target_secret(ns: &str, name: &str, server: &str, user: &str, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            (format!("{server}.username"), user.to_string()),
            (format!("{server}.password"), password.to_string()),
        ])),
        ..Default::default()
    }
}

/// Creates namespace `ns` (unless it exists) and in it the target credentials Secret
/// `name` for `vc` with `creds` (user, password; `vc`'s administrator when `None`).
pub async fn seed_migration_namespace(
    client: &kube::Client,
    ns: &str,
    name: &str,
    vc: &VcenterInfo,
    creds: Option<(&str, &str)>,
) -> Result<(), kube::Error> {
    ensure_namespace(client, ns).await?;
    let (user, password) = creds.unwrap_or((&vc.username, &vc.password));
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &target_secret(ns, name, &vc.server, user, password),
        )
        .await?;
    Ok(())
}

/// Both vcsims' CA certificates, one PEM bundle (what `--vcenter-ca-file` takes).
pub fn vcenter_ca_bundle(sim: &SimCluster) -> std::io::Result<Vec<u8>> {
    let mut ca = std::fs::read(&sim.source().ca_pem_path)?;
    ca.extend(std::fs::read(&sim.target().ca_pem_path)?);
    Ok(ca)
}

/// A failure domain of the migration spec on `vc`'s inventory (folder left to the default).
pub fn failure_domain_spec(name: &str, region: &str, zone: &str, vc: &VcenterInfo) -> Value {
    json!({
        "name": name, "region": region, "zone": zone, "server": vc.server,
        "topology": {"datacenter": vc.datacenter, "computeCluster": vc.compute_cluster,
            "datastore": vc.datastore, "networks": [vc.network],
            "resourcePool": vc.resource_pool, "template": vc.template}
    })
}

/// A migration object named `name` in `ns` with `spec`.
pub fn migration_object(ns: &str, name: &str, spec: Value) -> Result<Vcfm, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "migration.openshift.io/v1alpha1",
        "kind": "VmwareCloudFoundationMigration",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
}
