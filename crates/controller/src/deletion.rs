//! Deleting a migration: vcfm's finalizer and the force-delete annotation.
//!
//! The finalizer goes on before the first phase that changes the cluster
//! (Backup), so that a deletion can roll back what the migration did instead
//! of leaving the CVO at 0, extra credentials and new MachineSets behind.
//! What a deletion does is decided by [`crate::state::decide_deletion`].
//!
//! Finalizer edits are merge patches guarded by the resourceVersion read, so
//! another controller's finalizer added meanwhile is never overwritten (a
//! conflict is a 409, retried by the next reconcile).

use crate::error::Error;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use vcfm_api::VmwareCloudFoundationMigration;

/// Held while the migration has changed the cluster and not yet undone it.
pub const FINALIZER: &str = "migration.openshift.io/rollback-on-delete";

/// `"true"` lets a held deletion go with no rollback (past the point of no
/// return), leaving the cluster as it is and the backup Secret in place.
pub const FORCE_DELETE_ANNOTATION: &str = "migration.openshift.io/force-delete";

type Vcfm = VmwareCloudFoundationMigration;

pub fn has_finalizer(m: &Vcfm) -> bool {
    m.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether the administrator forced the deletion.
pub fn force_requested(m: &Vcfm) -> bool {
    m.annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The command that forces a held deletion, for messages.
pub fn force_command(m: &Vcfm) -> String {
    format!(
        "kubectl annotate vcfm -n {} {} {FORCE_DELETE_ANNOTATION}=true",
        m.namespace().unwrap_or_default(),
        m.name_any()
    )
}

async fn set_finalizers(api: &Api<Vcfm>, m: &Vcfm, list: Vec<String>) -> Result<Vcfm, Error> {
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": m.resource_version(),
            "finalizers": list,
        }
    });
    Ok(api
        .patch(
            &m.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Adds the finalizer unless present; returns the migration as written
/// (`None` when it had it already).
pub async fn ensure_finalizer(api: &Api<Vcfm>, m: &Vcfm) -> Result<Option<Vcfm>, Error> {
    if has_finalizer(m) {
        return Ok(None);
    }
    let mut list = m.finalizers().to_vec();
    list.push(FINALIZER.to_string());
    set_finalizers(api, m, list).await.map(Some)
}

/// Removes the finalizer; the API server then deletes a migration being
/// deleted. Returns the migration as written (`None`: it had no finalizer, or
/// it is gone).
pub async fn remove_finalizer(api: &Api<Vcfm>, m: &Vcfm) -> Result<Option<Vcfm>, Error> {
    if !has_finalizer(m) {
        return Ok(None);
    }
    let list = m
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match set_finalizers(api, m, list).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(None),
        r => r.map(Some),
    }
}
