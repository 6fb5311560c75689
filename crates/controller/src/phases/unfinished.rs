//! Preflight's check for traces of an earlier migration that did not finish
//! (force-deleted, or abandoned mid-way): starting over such a cluster would
//! make the new Backup record the half-migrated state as the original.

use crate::backup::{
    BACKUP_LABEL, MIGRATION_UID_ANNOTATION, OUTCOME_ANNOTATION, OUTCOME_COMPLETED,
    OUTCOME_ROLLED_BACK,
};
use crate::conditions::{self, ConditionType};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::cvo;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use vcfm_api::{MigrationPhase, VmwareCloudFoundationMigration};

/// Adds a problem for each trace found: the CVO scaled to 0, more than one
/// vCenter in the Infrastructure, a backup Secret of another migration that
/// neither completed nor rolled back cleanly.
pub async fn check_unfinished_migration(
    ctx: &PhaseCtx,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let client = ctx.client();
    match ctx.cvo_deployment().await.map(|d| cvo::state(&d)) {
        Ok(st) if st.desired == 0 => problems.push(format!(
            "the cluster-version-operator is scaled to 0 (deployment {}/{}), as an unfinished migration leaves it: finish or roll back that migration, or restore it yourself (`oc scale -n {} deployment/{} --replicas=1`), then retry",
            cvo::NAMESPACE,
            cvo::NAME,
            cvo::NAMESPACE,
            cvo::NAME
        )),
        Ok(_) => {}
        Err(PhaseError::Fatal(_)) => {} // reported by the other checks
        Err(e) => return Err(e),
    }

    match ctx.infrastructure().await {
        Ok(Some(infra)) => {
            let servers: Vec<String> = infra.vcenters().iter().map(|v| v.server.clone()).collect();
            if servers.len() > 1 {
                problems.push(format!(
                    "the Infrastructure lists {} vCenters ({}): the cluster is between two vCenters, as an unfinished migration leaves it. Finish that migration or restore the Infrastructure, vsphere-creds and cloud-provider-config from its backup Secret (`oc get secrets -A -l {BACKUP_LABEL}`), then retry",
                    servers.len(),
                    servers.join(", ")
                ));
            }
        }
        Ok(None) => {} // reported by the other checks
        Err(e) => return Err(e),
    }

    let me = &ctx.migration;
    let ns = me.namespace().unwrap_or_else(|| "default".into());
    let backups = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(BACKUP_LABEL))
        .await
        .map_err(|e| PhaseError::from(e).context("listing backup Secrets"))?;
    // This migration's own backup Secret is read from a watch from Backup on.
    crate::backup::BackupStore::of(ctx).start_watch();
    let migrations = Api::<VmwareCloudFoundationMigration>::namespaced(client, &ns);
    for s in backups.items {
        let owner = s.labels().get(BACKUP_LABEL).cloned().unwrap_or_default();
        let uid = s.annotations().get(MIGRATION_UID_ANNOTATION);
        let mine = match uid {
            Some(u) => me.uid().as_ref() == Some(u),
            None => owner == me.name_any(),
        };
        let outcome = s.annotations().get(OUTCOME_ANNOTATION).map(String::as_str);
        if mine || matches!(outcome, Some(OUTCOME_COMPLETED | OUTCOME_ROLLED_BACK)) {
            continue;
        }
        // The migration that wrote it may still exist and have finished cleanly.
        let finished = match migrations.get_opt(&owner).await? {
            Some(m) if uid.is_none_or(|u| m.uid().as_ref() == Some(u)) => {
                m.status.as_ref().is_some_and(|st| {
                    st.phase == Some(MigrationPhase::Completed)
                        || (st.phase == Some(MigrationPhase::RollbackCompleted)
                            && conditions::is_true(&st.conditions, ConditionType::RolledBack))
                })
            }
            _ => false,
        };
        if finished {
            continue;
        }
        problems.push(format!(
            "backup Secret {ns}/{} of migration {owner} is left from a migration that did not finish ({}): the cluster may still hold its changes. Restore the cluster from it or check that nothing is left, then keep a copy and delete the Secret (`oc delete secret -n {ns} {}`) and retry",
            s.name_any(),
            outcome.unwrap_or("deleted or still running without completing or rolling back"),
            s.name_any()
        ));
    }
    Ok(())
}
