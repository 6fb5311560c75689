//! Status writes: status subresource only, read-modify-write against the
//! latest object, retried on conflict, so concurrent spec edits (approvals,
//! pause) are never lost and never overwrite status.

use crate::error::Error;
use kube::api::{Api, PostParams};
use vcfm_api::{MigrationStatus, VmwareCloudFoundationMigration};

const ATTEMPTS: u32 = 8;

/// Applies `change` to the latest status and writes it. `change` may run more
/// than once (after a conflict), each time on a freshly read status.
pub async fn update(
    api: &Api<VmwareCloudFoundationMigration>,
    name: &str,
    mut change: impl FnMut(&mut MigrationStatus, Option<i64>),
) -> Result<VmwareCloudFoundationMigration, Error> {
    let mut last_err = None;
    for attempt in 0..ATTEMPTS {
        let mut m = match api.get(name).await {
            Ok(m) => m,
            Err(e) if crate::error::kube_is_transient(&e) => {
                last_err = Some(e);
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
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
        match api.replace_status(name, &PostParams::default(), &m).await {
            Ok(m) => return Ok(m),
            Err(e) if crate::error::kube_is_transient(&e) => {
                last_err = Some(e);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match last_err {
        Some(kube::Error::Api(s)) if s.code == 409 => Err(Error::StatusConflict {
            name: name.to_string(),
            attempts: ATTEMPTS,
        }),
        Some(e) => Err(e.into()),
        None => Err(Error::StatusConflict {
            name: name.to_string(),
            attempts: ATTEMPTS,
        }),
    }
}

fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)))
}
