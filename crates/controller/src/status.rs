//! Status writes: status subresource only, guarded by the resourceVersion of
//! the object the change was computed on, re-read and retried on conflict, so
//! concurrent spec edits (approvals, pause) are never lost and never
//! overwrite status.

use crate::error::Error;
use kube::api::{Api, PostParams};
use vcfm_api::{MigrationStatus, VmwareCloudFoundationMigration};

const ATTEMPTS: u32 = 8;

/// Applies `change` to the status of `base` (the migration as the reconcile
/// read it, from the watch cache) and writes it with `base`'s
/// resourceVersion; skips the write when nothing changed. On a conflict the
/// object is read again and `change` runs again on the fresh status, so it
/// may run more than once.
pub async fn update(
    api: &Api<VmwareCloudFoundationMigration>,
    base: &VmwareCloudFoundationMigration,
    mut change: impl FnMut(&mut MigrationStatus, Option<i64>),
) -> Result<VmwareCloudFoundationMigration, Error> {
    let name = base.metadata.name.clone().unwrap_or_default();
    let mut last_err = None;
    let mut current = Some(base.clone());
    for attempt in 0..ATTEMPTS {
        let mut m = match current.take() {
            Some(m) => m,
            None => match api.get(&name).await {
                Ok(m) => m,
                Err(e) if crate::error::kube_is_transient(&e) => {
                    last_err = Some(e);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
        };
        let before = m.status.clone();
        let mut st = m.status.take().unwrap_or_default();
        change(&mut st, m.metadata.generation);
        st.observed_generation = m.metadata.generation;
        if before.as_ref() == Some(&st) {
            m.status = Some(st);
            return Ok(m);
        }
        m.status = Some(st);
        match api.replace_status(&name, &PostParams::default(), &m).await {
            Ok(m) => return Ok(m),
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
