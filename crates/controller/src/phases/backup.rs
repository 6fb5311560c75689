//! Phase 2: back up everything later phases change, into the migration's
//! backup Secret (not owned by it, so it outlives a forced deletion), before
//! anything is changed.

use super::Phase;
use crate::backup::{BackupStore, Entry, clean_for_backup};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::infra::Crd;
use crate::openshift::{creds, cvo};
use crate::state::Outcome;
use futures::future::BoxFuture;
use vcfm_api::LogLevel;
use vcfm_api::openshift::{CLUSTER, CPMS_NAME, MACHINE_API_NAMESPACE};

pub struct Backup;

/// Keys of the backup Secret; phases restore by these names.
pub mod keys {
    pub const INFRASTRUCTURE: &str = "infrastructure.json";
    pub const INFRASTRUCTURE_CRD: &str = "infrastructures-crd.json";
    pub const VSPHERE_CREDS: &str = "vsphere-creds.json";
    pub const CLOUD_PROVIDER_CONFIG: &str = "cloud-provider-config.json";
    pub const CPMS: &str = "controlplanemachineset.json";
    pub const MACHINESETS: &str = "machineset-replicas.json";
    pub const CVO: &str = "cvo-replicas.json";
    /// What vcfm wrote to each object (see [`crate::undo`]), for rollback.
    pub const VSPHERE_CREDS_CHANGES: &str = "vsphere-creds.changes.json";
    pub const INFRASTRUCTURE_CHANGES: &str = "infrastructure.changes.json";
    pub const CLOUD_PROVIDER_CONFIG_CHANGES: &str = "cloud-provider-config.changes.json";
}

pub const CLOUD_CONFIG_NAMESPACE: &str = "openshift-config";
pub const INFRA_CRD_NAME: &str = "infrastructures.config.openshift.io";

fn to_value<T: serde::Serialize>(t: &T) -> Result<serde_json::Value, PhaseError> {
    serde_json::to_value(t).map_err(|e| PhaseError::fatal(e.to_string()))
}

impl Phase for Backup {
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(async move {
            let store = BackupStore::of(ctx);
            let source = ctx.recorded_source()?.server.clone();
            let now = ctx.now;
            let mut entries = vec![];

            // Read from the watch caches: nothing has changed these objects
            // yet (vcfm changes them only in later phases), so a copy a few
            // events behind is still the original.
            let infra = ctx
                .infrastructure()
                .await?
                .ok_or_else(|| PhaseError::fatal("Infrastructure cluster does not exist"))?;
            entries.push(Entry {
                key: keys::INFRASTRUCTURE,
                resource_type: "config.openshift.io/v1/Infrastructure",
                name: CLUSTER,
                namespace: None,
                object: clean_for_backup(to_value(&infra)?),
            });

            match Crd::of(ctx).read(false).await? {
                Some(crd) => entries.push(Entry {
                    key: keys::INFRASTRUCTURE_CRD,
                    resource_type: "apiextensions.k8s.io/v1/CustomResourceDefinition",
                    name: INFRA_CRD_NAME,
                    namespace: None,
                    object: clean_for_backup(crd),
                }),
                None => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "Infrastructure CRD not readable; its validation rule cannot be backed up",
                ),
            }

            let creds = ctx
                .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
                .await?
                .ok_or_else(|| {
                    PhaseError::fatal(format!(
                        "Secret {}/{} does not exist",
                        creds::CREDS_NAMESPACE,
                        creds::CREDS_NAME
                    ))
                })?;
            entries.push(Entry {
                key: keys::VSPHERE_CREDS,
                resource_type: "v1/Secret",
                name: creds::CREDS_NAME,
                namespace: Some(creds::CREDS_NAMESPACE),
                object: clean_for_backup(to_value(&creds)?),
            });

            let loc = crate::openshift::cloud_config::Location::of(Some(&infra));
            let cm = ctx
                .config_map(CLOUD_CONFIG_NAMESPACE, &loc.name)
                .await?
                .ok_or_else(|| {
                    PhaseError::fatal(format!(
                        "ConfigMap {CLOUD_CONFIG_NAMESPACE}/{} does not exist (Infrastructure spec.cloudConfig names it)",
                        loc.name
                    ))
                })?;
            entries.push(Entry {
                key: keys::CLOUD_PROVIDER_CONFIG,
                resource_type: "v1/ConfigMap",
                name: &loc.name,
                namespace: Some(CLOUD_CONFIG_NAMESPACE),
                object: clean_for_backup(to_value(&cm)?),
            });

            let cpms = ctx
                .control_plane_machine_sets()
                .await?
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some(CPMS_NAME));
            match cpms {
                Some(cpms) => entries.push(Entry {
                    key: keys::CPMS,
                    resource_type: "machine.openshift.io/v1/ControlPlaneMachineSet",
                    name: CPMS_NAME,
                    namespace: Some(MACHINE_API_NAMESPACE),
                    object: clean_for_backup(to_value(&cpms)?),
                }),
                None => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "no ControlPlaneMachineSet openshift-machine-api/cluster to back up",
                ),
            }

            let sets = ctx.machine_sets().await?;
            let replicas: serde_json::Map<String, serde_json::Value> = sets
                .iter()
                .filter(|ms| ms.server().as_deref() == Some(source.as_str()))
                .filter_map(|ms| {
                    Some((
                        ms.metadata.name.clone()?,
                        serde_json::json!(ms.spec.replicas.unwrap_or(0)),
                    ))
                })
                .collect();
            entries.push(Entry {
                key: keys::MACHINESETS,
                resource_type: "machine.openshift.io/v1beta1/MachineSet replicas",
                name: "source-machinesets",
                namespace: Some(MACHINE_API_NAMESPACE),
                object: serde_json::Value::Object(replicas),
            });

            match ctx.cvo_deployment_opt().await? {
                Some(d) => {
                    let r = d.spec.replicas.unwrap_or(1).max(1);
                    entries.push(Entry {
                        key: keys::CVO,
                        resource_type: "apps/v1/Deployment replicas",
                        name: cvo::NAME,
                        namespace: Some(cvo::NAMESPACE),
                        object: serde_json::json!({ "replicas": r }),
                    });
                }
                None => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "cluster-version-operator Deployment not found",
                ),
            }

            // One write: all of them or (after a crash) none, each key kept
            // as first written when this step runs again.
            let saved = store.save_all(entries, now).await?;

            let n = saved.len();
            for m in &saved {
                ctx.log(
                    LogLevel::Info,
                    "backup",
                    format!(
                        "backed up {} {} as {}/{} (hmac {})",
                        m.resource_type,
                        m.name,
                        m.secret_name,
                        m.key,
                        &m.hmac_sha256[..12]
                    ),
                );
            }
            ctx.record(|u| u.backups = saved);
            Ok(Outcome::Completed {
                message: format!(
                    "{n} objects backed up to Secret {}",
                    crate::backup::secret_name(ctx.name())
                ),
            })
        })
    }
}
