//! The administrator's commands. Each changes only the migration's spec
//! (where users may write); the controller does the rest.

use anyhow::{Context as _, bail};
use kube::api::{Api, Patch, PatchParams};
use std::fmt::Write as _;
use std::path::Path;
use vcfm_api::{MigrationState, PhaseName, PhaseStatus, VmwareCloudFoundationMigration};

type Vcfm = VmwareCloudFoundationMigration;

/// A client from an explicit kubeconfig, or the usual discovery (KUBECONFIG,
/// ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found (set KUBECONFIG or --kubeconfig)")?,
    };
    Ok(kube::Client::try_from(config)?)
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn get(api: &Api<Vcfm>, ns: &str, name: &str) -> anyhow::Result<Vcfm> {
    match api.get(name).await {
        Ok(m) => Ok(m),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            bail!("migration {ns}/{name} not found (list them with `kubectl get vcfm -A`)")
        }
        Err(e) => Err(e.into()),
    }
}

/// Patches the spec with optimistic concurrency: a concurrent edit makes the
/// server refuse the stale write, and the change is re-applied to the fresh object.
async fn patch_spec(
    api: &Api<Vcfm>,
    ns: &str,
    name: &str,
    mut change: impl FnMut(&Vcfm) -> anyhow::Result<Option<serde_json::Value>>,
) -> anyhow::Result<bool> {
    for _ in 0..5 {
        let m = get(api, ns, name).await?;
        let Some(spec_patch) = change(&m)? else {
            return Ok(false);
        };
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": m.metadata.resource_version },
            "spec": spec_patch,
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 422 => {
                bail!("the API server rejected the change: {}", e.message)
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("migration {ns}/{name} kept changing under us; try again")
}

pub async fn approve(
    client: kube::Client,
    ns: &str,
    name: &str,
    phase: Option<&str>,
) -> anyhow::Result<String> {
    let api: Api<Vcfm> = Api::namespaced(client, ns);
    let mut chosen = None;
    let changed = patch_spec(&api, ns, name, |m| {
        let p = match phase {
            Some(p) => p.parse::<PhaseName>()?,
            None => {
                let cur = m.status.as_ref().and_then(|s| s.current_phase_state.as_ref());
                match cur {
                    Some(c) if c.status == PhaseStatus::WaitingForApproval => c.name,
                    _ => bail!("no phase of {ns}/{name} is waiting for approval; name one: `vcfm approve {name} PHASE`"),
                }
            }
        };
        chosen = Some(p);
        if m.spec.approved_phases.contains(&p) {
            return Ok(None);
        }
        let mut list = m.spec.approved_phases.clone();
        list.push(p);
        Ok(Some(serde_json::json!({ "approvedPhases": list })))
    })
    .await?;
    let p = chosen.map(|p| p.to_string()).unwrap_or_default();
    Ok(if changed {
        format!("approved {p} for {ns}/{name}")
    } else {
        format!("{p} was already approved for {ns}/{name}")
    })
}

pub async fn set_state(
    client: kube::Client,
    ns: &str,
    name: &str,
    state: MigrationState,
) -> anyhow::Result<String> {
    let api: Api<Vcfm> = Api::namespaced(client, ns);
    let changed = patch_spec(&api, ns, name, |m| {
        if state == MigrationState::Running && is_failed(m) {
            bail!(
                "{ns}/{name} has failed; `vcfm resume` only continues a paused or pending migration. Fix the cause named in the Failed condition (`vcfm status {name}`), then run `vcfm retry {name}`"
            );
        }
        if state == MigrationState::Rollback {
            let st = m.status.clone().unwrap_or_default();
            if let Some(p) = vcfm_controller::state::started_phases(&st).into_iter().find(|p| p.is_past_point_of_no_return()) {
                bail!(
                    "rollback refused: {ns}/{name} has started {p}, past the point of no return (the control plane is moving to the target vCenter); restoring the source configuration would strand the new masters"
                );
            }
            if st.rollback.is_some() {
                bail!("{ns}/{name} has already rolled back (or is rolling back); a migration rolls back at most once");
            }
        }
        if m.spec.state == state {
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "state": state })))
    })
    .await?;
    let verb = match state {
        MigrationState::Paused => "paused",
        MigrationState::Running => "resumed",
        MigrationState::Rollback => "rollback requested for",
        MigrationState::Pending => "reset",
    };
    Ok(if changed {
        format!("{verb} {ns}/{name}")
    } else {
        format!("{ns}/{name} already has state {state:?}")
    })
}

fn is_failed(m: &Vcfm) -> bool {
    m.status.as_ref().and_then(|s| s.phase) == Some(vcfm_api::MigrationPhase::Failed)
}

/// Asks the controller to run the failed phase again, by writing a new
/// `spec.retryToken` (the current time). Approvals and other spec edits never
/// retry a failure; this is the one way to.
pub async fn retry(client: kube::Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let api: Api<Vcfm> = Api::namespaced(client, ns);
    let mut phase = None;
    patch_spec(&api, ns, name, |m| {
        let st = m.status.clone().unwrap_or_default();
        if st.rollback.is_some() {
            bail!("{ns}/{name} has rolled back (or is rolling back); nothing to retry. Create a new migration to try again");
        }
        if !is_failed(m) {
            let now = st.phase.map(|p| p.to_string()).unwrap_or_else(|| "Pending".into());
            let hint = if m.spec.state == MigrationState::Paused {
                format!("; it is paused: continue it with `vcfm resume {name}`")
            } else {
                String::new()
            };
            bail!("{ns}/{name} has not failed (phase {now}): nothing to retry{hint}");
        }
        if m.spec.state == MigrationState::Rollback {
            bail!("{ns}/{name} has been asked to roll back; a retry would contradict that");
        }
        phase = vcfm_controller::state::failed_phase(&st);
        let token = jiff::Timestamp::now().to_string();
        Ok(Some(serde_json::json!({
            "retryToken": token,
            "state": MigrationState::Running,
        })))
    })
    .await?;
    let p = phase.map(|p| format!(" {p}")).unwrap_or_default();
    Ok(format!(
        "asked {ns}/{name} to retry its failed phase{p}; follow it with `vcfm status {name}`"
    ))
}

fn ago(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Human-readable status, ending with what to do next.
pub async fn status(client: kube::Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let api: Api<Vcfm> = Api::namespaced(client, ns);
    let m = get(&api, ns, name).await?;
    let st = m.status.clone().unwrap_or_default();
    let mut o = String::new();
    let phase = st
        .phase
        .map(|p| p.to_string())
        .unwrap_or_else(|| "Pending".into());
    writeln!(o, "Migration:  {ns}/{name}")?;
    writeln!(
        o,
        "State:      {:?} ({:?} approval)",
        m.spec.state, m.spec.approval_mode
    )?;
    writeln!(o, "Phase:      {phase}")?;
    if let Some(src) = &st.source_vcenter {
        writeln!(
            o,
            "Source:     {} (datacenter {})",
            src.server, src.datacenter
        )?;
    }
    writeln!(o, "Target:     {}", m.target_servers().join(", "))?;
    if let Some(c) = &st.current_phase_state {
        writeln!(
            o,
            "Current:    {} ({}/15) {:?} {}%",
            c.name,
            c.name.number(),
            c.status,
            c.progress
        )?;
        if !c.message.is_empty() {
            writeln!(o, "            {}", c.message)?;
        }
        for w in &c.waiting_for {
            writeln!(o, "  waiting for: {w}")?;
        }
    }
    writeln!(o, "\nHistory:")?;
    if st.phase_history.is_empty() {
        writeln!(o, "  (nothing has run yet)")?;
    }
    for e in &st.phase_history {
        writeln!(
            o,
            "  {:<22} {:<15} {} → {}  {}",
            e.phase.as_str(),
            format!("{:?}", e.status),
            ago(e.start_time.as_ref()),
            ago(e.completion_time.as_ref()),
            e.message
        )?;
    }
    if !st.conditions.is_empty() {
        writeln!(o, "\nConditions:")?;
        for c in &st.conditions {
            writeln!(
                o,
                "  {:<20} {:<6} {}: {}",
                c.type_, c.status, c.reason, c.message
            )?;
        }
    }
    if !st.warnings.is_empty() {
        writeln!(o, "\nCheck before continuing:")?;
        for w in &st.warnings {
            writeln!(o, "  - {w}")?;
        }
    }
    writeln!(o, "\nNext: {}", next_step(&m))?;
    Ok(o)
}

fn next_step(m: &Vcfm) -> String {
    let name = m.metadata.name.as_deref().unwrap_or("");
    let st = m.status.clone().unwrap_or_default();
    use vcfm_api::MigrationPhase as P;
    match st.phase {
        Some(P::Completed) => "nothing: the migration is complete.".into(),
        Some(P::RollbackCompleted) => "nothing: the migration was rolled back; delete it, fix the cause and create a new one to try again.".into(),
        Some(P::RollingBack) => "wait: the rollback is running.".into(),
        Some(P::Failed) => {
            if vcfm_controller::state::failed_phase(&st) == Some(vcfm_api::PhaseName::Preflight) {
                format!("fix the problems named in the Failed condition, then `vcfm retry {name}` to run Preflight again.")
            } else if vcfm_controller::state::started_phases(&st).iter().any(|p| p.is_past_point_of_no_return()) {
                format!("fix the cause named in the Failed condition, then `vcfm retry {name}`; automatic rollback is not possible past the point of no return.")
            } else if m.spec.rollback_on_failure {
                "wait for the automatic rollback.".into()
            } else {
                format!("fix the cause named in the Failed condition, then `vcfm retry {name}`; or undo the completed phases with `vcfm rollback {name}`.")
            }
        }
        _ => match m.spec.state {
            MigrationState::Pending => format!("start it with `vcfm resume {name}`."),
            MigrationState::Paused => format!("continue with `vcfm resume {name}`."),
            MigrationState::Rollback => "wait: the rollback request is being processed.".into(),
            MigrationState::Running => match &st.current_phase_state {
                Some(c) if c.status == PhaseStatus::WaitingForApproval => format!("review, then `vcfm approve {name} {}`.", c.name),
                Some(c) if !c.waiting_for.is_empty() => format!("wait for {}.", c.waiting_for.join(", ")),
                _ => "wait: the controller is working.".into(),
            },
        },
    }
}
