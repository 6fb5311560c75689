//! Phase 9: delete the pods that read the vSphere configuration and wait until
//! their replacements (pods created after the phase started, not the old ones
//! still terminating) are Ready in every group this cluster has.
//!
//! Progress counts the groups the phase set out to restart: those with pods
//! when it first looked, named in its log, so a restarted controller counts
//! the same ones and a group whose pods are deleted and not yet replaced still
//! counts. A group is done from the step that saw all its new pods Ready, also
//! named in the log and not looked at again: the total stays, progress never
//! falls, and status is written when a group finishes (the waits between are
//! detail, see `transition::DETAIL_REFRESH`).

use super::update_config::phase_start;
use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::pods::{self, PodGroup};
use crate::state::Outcome;
use std::collections::BTreeMap;
use std::time::Duration;
use vcfm_api::{LogLevel, PhaseName, PhaseStatus};

pub struct RestartPods;

/// Log field naming (one per line) the groups the phase set out to restart.
const PLANNED: &str = "restartGroups";
/// Log field naming (one per line) the groups whose new pods were seen Ready.
const RESTARTED: &str = "restartedGroups";

/// The groups named under `key` in this run of the phase's log.
fn recorded(ctx: &PhaseCtx, key: &str) -> Vec<String> {
    let Some(entry) = ctx.migration.status.as_ref().and_then(|s| {
        s.phase_history
            .iter()
            .rev()
            .find(|e| e.phase == PhaseName::RestartPods && e.status == PhaseStatus::Running)
    }) else {
        return vec![];
    };
    let mut out: Vec<String> = vec![];
    for l in &entry.logs {
        for g in l.fields.get(key).into_iter().flat_map(|v| v.lines()) {
            if !out.iter().any(|x| x == g) {
                out.push(g.to_string());
            }
        }
    }
    out
}

/// Logs `groups` under `key`, one line per group in the field, comma-separated in the message.
fn log_groups(ctx: &PhaseCtx, key: &str, what: &str, groups: &[String]) {
    if groups.is_empty() {
        return;
    }
    let fields = BTreeMap::from([(key.to_string(), groups.join("\n"))]);
    let msg = format!(
        "{what} {} pod group(s): {}",
        groups.len(),
        groups.join(", ")
    );
    ctx.log_fields(LogLevel::Info, "pods", msg, fields);
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let planned = recorded(ctx, PLANNED);
    let done = recorded(ctx, RESTARTED);
    let remaining: Vec<PodGroup> = pods::VSPHERE_PODS
        .iter()
        .filter(|g| !done.contains(&g.describe()))
        .copied()
        .collect();
    let st = pods::restart_step(ctx, &remaining, phase_start(ctx)).await?;
    // Pods of a group not counted yet: the first step, or a group whose pods
    // appeared later (a step killed before its status write, the pods then
    // not yet replaced).
    let added: Vec<String> = st
        .seen
        .iter()
        .map(PodGroup::describe)
        .filter(|d| !planned.contains(d))
        .collect();
    let what = if planned.is_empty() {
        "restarting"
    } else {
        "also restarting (pods appeared since the phase began)"
    };
    log_groups(ctx, PLANNED, what, &added);
    if !st.deleted.is_empty() {
        ctx.log(
            LogLevel::Info,
            "pods",
            format!(
                "deleted {} pod(s): {}",
                st.deleted.len(),
                st.deleted.join(", ")
            ),
        );
    }
    let finished: Vec<String> = st.finished.iter().map(PodGroup::describe).collect();
    log_groups(ctx, RESTARTED, "restarted and Ready:", &finished);
    let total = planned.len() + added.len();
    let restarted = done.len() + finished.len();
    if total == 0 {
        return Ok(Outcome::Completed {
            message: "no vSphere-related pods found on this cluster; nothing to restart".into(),
        });
    }
    let mut waiting = st.waiting;
    for g in planned.iter().chain(&added) {
        let seen = st.seen.iter().any(|s| s.describe() == *g);
        if !seen && !done.contains(g) {
            waiting.push(format!(
                "{g} (no pods: their replacements have not appeared yet)"
            ));
        }
    }
    if restarted < total || !waiting.is_empty() {
        return Ok(Outcome::Running {
            progress: (restarted * 100 / total) as i32,
            message: format!("{restarted}/{total} pod group(s) restarted and Ready"),
            waiting_for: waiting,
            recheck: Duration::from_secs(2),
        });
    }
    Ok(Outcome::Completed {
        message: format!("{total} pod group(s) restarted; their new pods are Ready"),
    })
}

impl Steps for RestartPods {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, _ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        Ok(RollbackOutcome::Done(
            "nothing to undo here: the pods are restarted once more after the configuration is restored (rollback of UpdateInfrastructure)".into(),
        ))
    }
}
