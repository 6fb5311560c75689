//! Phase 6: the cluster's VM folder on every target (vCenter, datacenter):
//! `topology.folder`, else `/<dc>/vm/<infraID>`, every missing level, with the
//! ownership tag attached as the installer does.
//!
//! A folder has no description to mark it with, so each missing level is
//! recorded (and persisted) before it is created: a crash in between leaves a
//! record of at most a folder that does not exist, never an unrecorded one.

use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::infra::folder_path;
use crate::openshift::tags::{self, Attach, KIND_FOLDER};
use crate::state::Outcome;
use std::time::Duration;
use vcfm_api::{LogLevel, PhaseName};
use vcfm_vsphere::MoRef;

pub struct CreateFolder;

const PHASE: PhaseName = PhaseName::CreateFolder;

/// `(server, folder path)` for every target failure domain, deduplicated.
pub fn folders(ctx: &PhaseCtx, infra_id: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    for fd in &ctx.migration.spec.failure_domains {
        let f = (fd.server.clone(), folder_path(fd, infra_id));
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// `/DC/vm/a/b` → (`/DC/vm`, [`a`, `b`]).
fn split(path: &str) -> Result<(String, Vec<String>), PhaseError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < 3 || parts[1] != "vm" {
        return Err(PhaseError::fatal(format!(
            "folder path {path:?} must look like /<datacenter>/vm/<folder>[/...]"
        )));
    }
    Ok((
        format!("/{}/vm", parts[0]),
        parts[2..].iter().map(|s| s.to_string()).collect(),
    ))
}

enum Step {
    Ready(MoRef),
    Recorded(String),
}

/// Walks the path level by level, creating recorded levels and recording the
/// first unrecorded missing one.
async fn ensure_levels(
    ctx: &PhaseCtx,
    ledger: &tags::Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    path: &str,
) -> Result<Step, PhaseError> {
    let server = vc.server().to_string();
    let (base, names) = split(path)?;
    let mut parent = vc.find_folder(&base).await?;
    let mut current = base;
    for name in names {
        current = format!("{current}/{name}");
        if let Some(found) = vc.find_by_inventory_path(&current).await? {
            if found.kind != "Folder" {
                return Err(PhaseError::fatal(format!(
                    "target vCenter {server}: {current} is a {}, not a folder: choose another topology.folder",
                    found.kind
                )));
            }
            parent = found;
            continue;
        }
        if !ledger.is_recorded(&server, KIND_FOLDER, &current) {
            ledger.record(&server, KIND_FOLDER, &current, &current);
            return Ok(Step::Recorded(current));
        }
        parent = match vc.create_folder(&parent, &name).await {
            Ok(f) => f,
            Err(e) if e.is_already_exists() => vc.find_folder(&current).await?,
            Err(e) => return Err(e.into()),
        };
        ctx.log(
            LogLevel::Info,
            "folder",
            format!("created folder {current} on {server}"),
        );
    }
    Ok(Step::Ready(parent))
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let infra_id = ctx.recorded_cluster()?.infra_id.clone();
    let wanted = folders(ctx, &infra_id);
    let ledger = super::ledger(ctx, PHASE);
    let mut pending = vec![];
    for (server, path) in &wanted {
        let vc = ctx.target_vcenter(server).await?;
        // Created by CreateTags; recreated here if the vCenter lost it meanwhile.
        let owner = tags::ensure_ownership(&ledger, &vc, &infra_id).await?;
        match ensure_levels(ctx, &ledger, &vc, path).await? {
            Step::Recorded(level) => pending.push(format!("folder {level} on {server}")),
            Step::Ready(folder) => {
                if let Attach::Recorded = tags::attach(&ledger, &vc, &owner, &folder, path).await? {
                    pending.push(format!("tag {} on {path} ({server})", owner.name));
                }
            }
        }
    }
    if !pending.is_empty() {
        return Ok(Outcome::Running {
            progress: 50,
            message: format!("recorded {} object(s) before creating them", pending.len()),
            waiting_for: pending,
            recheck: Duration::from_millis(100),
        });
    }
    let list: Vec<String> = wanted.iter().map(|(s, p)| format!("{p} on {s}")).collect();
    Ok(Outcome::Completed {
        message: format!(
            "VM folder(s) {} exist with ownership tag {infra_id}",
            list.join(", ")
        ),
    })
}

impl Steps for CreateFolder {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        super::undo_created_objects(
            ctx,
            PHASE,
            "folder",
            "no folders created by this migration remain",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_paths_split_into_levels() {
        let (base, names) = split("/DC0/vm/a/b/").unwrap();
        assert_eq!(base, "/DC0/vm");
        assert_eq!(names, ["a", "b"]);
        assert!(split("/DC0/host/a").is_err());
        assert!(split("/DC0/vm").is_err());
    }
}
