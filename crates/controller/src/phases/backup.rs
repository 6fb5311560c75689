//! Phase 2: back up everything later phases change, into the migration's
//! backup Secret (not owned by it, so it outlives a forced deletion), before
//! anything is changed.

use super::Phase;
use crate::backup::{BackupStore, clean_for_backup};
use crate::context::PhaseCtx;
use crate::error::{PhaseError, is_not_found};
use crate::openshift::{creds, cvo};
use crate::state::Outcome;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use vcfm_api::LogLevel;
use vcfm_api::openshift::{
    CLUSTER, CPMS_NAME, ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE, MachineSet,
};

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
            let client = ctx.client();
            let store = BackupStore::new(client.clone(), &ctx.migration);
            let source = ctx.recorded_source()?.server.clone();
            let now = ctx.now;
            let mut saved = vec![];

            let infra = Api::<Infrastructure>::all(client.clone())
                .get(CLUSTER)
                .await?;
            saved.push(
                store
                    .save(
                        keys::INFRASTRUCTURE,
                        "config.openshift.io/v1/Infrastructure",
                        CLUSTER,
                        None,
                        &clean_for_backup(to_value(&infra)?),
                        now,
                    )
                    .await?,
            );

            match Api::<CustomResourceDefinition>::all(client.clone())
                .get(INFRA_CRD_NAME)
                .await
            {
                Ok(crd) => saved.push(
                    store
                        .save(
                            keys::INFRASTRUCTURE_CRD,
                            "apiextensions.k8s.io/v1/CustomResourceDefinition",
                            INFRA_CRD_NAME,
                            None,
                            &clean_for_backup(to_value(&crd)?),
                            now,
                        )
                        .await?,
                ),
                Err(e) if is_not_found(&e) => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "Infrastructure CRD not readable; its validation rule cannot be backed up",
                ),
                Err(e) => return Err(e.into()),
            }

            let creds = Api::<Secret>::namespaced(client.clone(), creds::CREDS_NAMESPACE)
                .get(creds::CREDS_NAME)
                .await?;
            saved.push(
                store
                    .save(
                        keys::VSPHERE_CREDS,
                        "v1/Secret",
                        creds::CREDS_NAME,
                        Some(creds::CREDS_NAMESPACE),
                        &clean_for_backup(to_value(&creds)?),
                        now,
                    )
                    .await?,
            );

            let loc = crate::openshift::cloud_config::location(client.clone()).await?;
            let cm = Api::<ConfigMap>::namespaced(client.clone(), CLOUD_CONFIG_NAMESPACE)
                .get(&loc.name)
                .await?;
            saved.push(
                store
                    .save(
                        keys::CLOUD_PROVIDER_CONFIG,
                        "v1/ConfigMap",
                        &loc.name,
                        Some(CLOUD_CONFIG_NAMESPACE),
                        &clean_for_backup(to_value(&cm)?),
                        now,
                    )
                    .await?,
            );

            match Api::<ControlPlaneMachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE)
                .get(CPMS_NAME)
                .await
            {
                Ok(cpms) => saved.push(
                    store
                        .save(
                            keys::CPMS,
                            "machine.openshift.io/v1/ControlPlaneMachineSet",
                            CPMS_NAME,
                            Some(MACHINE_API_NAMESPACE),
                            &clean_for_backup(to_value(&cpms)?),
                            now,
                        )
                        .await?,
                ),
                Err(e) if is_not_found(&e) => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "no ControlPlaneMachineSet openshift-machine-api/cluster to back up",
                ),
                Err(e) => return Err(e.into()),
            }

            let sets = Api::<MachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE)
                .list(&ListParams::default())
                .await?;
            let replicas: serde_json::Map<String, serde_json::Value> = sets
                .items
                .iter()
                .filter(|ms| ms.server().as_deref() == Some(source.as_str()))
                .filter_map(|ms| {
                    Some((
                        ms.metadata.name.clone()?,
                        serde_json::json!(ms.spec.replicas.unwrap_or(0)),
                    ))
                })
                .collect();
            saved.push(
                store
                    .save(
                        keys::MACHINESETS,
                        "machine.openshift.io/v1beta1/MachineSet replicas",
                        "source-machinesets",
                        Some(MACHINE_API_NAMESPACE),
                        &serde_json::Value::Object(replicas),
                        now,
                    )
                    .await?,
            );

            match Api::<Deployment>::namespaced(client.clone(), cvo::NAMESPACE)
                .get(cvo::NAME)
                .await
            {
                Ok(d) => {
                    let r = d.spec.replicas.unwrap_or(1).max(1);
                    saved.push(
                        store
                            .save(
                                keys::CVO,
                                "apps/v1/Deployment replicas",
                                cvo::NAME,
                                Some(cvo::NAMESPACE),
                                &serde_json::json!({ "replicas": r }),
                                now,
                            )
                            .await?,
                    );
                }
                Err(e) if is_not_found(&e) => ctx.log(
                    LogLevel::Warning,
                    "backup",
                    "cluster-version-operator Deployment not found",
                ),
                Err(e) => return Err(e.into()),
            }

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
