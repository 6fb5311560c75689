//! Status writes: status subresource only, guarded by the resourceVersion of
//! the object the change was computed on, re-read and retried on conflict, so
//! concurrent spec edits (approvals, pause) are never lost and never
//! overwrite status.

use crate::error::Error;
use kube::api::{Api, PostParams};
use std::borrow::Cow;
use vcfm_api::{MigrationStatus, VmwareCloudFoundationMigration};

const ATTEMPTS: u32 = 8;

/// Writes the status `change` computes from the status of `base` (the
/// migration as the reconcile read it, from the watch cache) with `base`'s
/// resourceVersion; skips the write when nothing changed, returning `base`
/// itself (no copy: this runs on every reconcile, most of which change
/// nothing). On a conflict the object is read again and `change` runs again
/// on the fresh status, so it may run more than once.
pub async fn update<'a>(
    api: &Api<VmwareCloudFoundationMigration>,
    base: &'a VmwareCloudFoundationMigration,
    mut change: impl FnMut(&MigrationStatus, Option<i64>) -> MigrationStatus,
) -> Result<Cow<'a, VmwareCloudFoundationMigration>, Error> {
    let name = base.metadata.name.clone().unwrap_or_default();
    let mut last_err = None;
    // What the last failed write was computed on is stale: read it again.
    let mut fresh: Option<VmwareCloudFoundationMigration> = None;
    let mut stale = false;
    let empty = MigrationStatus::default();
    for attempt in 0..ATTEMPTS {
        if stale {
            match api.get(&name).await {
                Ok(m) => fresh = Some(m),
                Err(e) if crate::error::kube_is_transient(&e) => {
                    last_err = Some(e);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let m = fresh.as_ref().unwrap_or(base);
        let mut st = change(m.status.as_ref().unwrap_or(&empty), m.metadata.generation);
        st.observed_generation = m.metadata.generation;
        if m.status.as_ref() == Some(&st) {
            return Ok(match fresh {
                Some(f) => Cow::Owned(f),
                None => Cow::Borrowed(base),
            });
        }
        let next = VmwareCloudFoundationMigration {
            metadata: m.metadata.clone(),
            spec: m.spec.clone(),
            status: Some(st),
        };
        stale = true;
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(m) => return Ok(Cow::Owned(m)),
            // Computed on a version someone else has since replaced: read
            // again at once (no backoff: the fresh read is the remedy).
            Err(kube::Error::Api(s)) if s.code == 409 => {
                last_err = Some(kube::Error::Api(s));
            }
            Err(e) if crate::error::kube_is_transient(&e) => {
                last_err = Some(e);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match last_err {
        Some(kube::Error::Api(s)) if s.code == 409 => Err(Error::StatusConflict {
            name,
            attempts: ATTEMPTS,
        }),
        Some(e) => Err(e.into()),
        None => Err(Error::StatusConflict {
            name,
            attempts: ATTEMPTS,
        }),
    }
}

fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)))
}
