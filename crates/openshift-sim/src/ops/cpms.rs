//! The control-plane machine set operator: Inactive does nothing; Active with
//! `RollingUpdate` replaces outdated masters one at a time (surge one, wait for it to be
//! Running with a Ready node, delete one outdated master, wait for it to go); `OnDelete`
//! only replaces masters someone deleted. Status counters are the truth at the generation
//! the operator last observed. A deleted CPMS comes back Inactive, generated from the
//! masters, as the real generator does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use vcfm_api::openshift::{ControlPlaneMachineSet, Infrastructure, Machine, VSphereFailureDomain};

use super::{Ctx, carry_transition_times, run_loop, same_conditions, trigger};
use crate::kapi::{self, call};
use crate::seed::{CPMS_FINALIZER, MAPI_NS};

#[derive(Default)]
struct State {
    /// When each generation was first seen (observation is delayed by `cpms_observe`).
    seen: HashMap<i64, Instant>,
    /// When the CPMS was first found missing.
    missing_since: Option<Instant>,
}

/// Runs the operator until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let cpms: Api<ControlPlaneMachineSet> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let infra: Api<Infrastructure> = Api::all(ctx.client.clone());
    let state = Arc::new(Mutex::new(State::default()));
    let triggers = vec![
        trigger(cpms.clone()),
        trigger(machines.clone()),
        trigger(infra.clone()),
    ];
    run_loop("control-plane-machine-set-operator", &ctx, triggers, || {
        // Sim tier only (the real tier runs the real component): polls, as it reads
        // vCenter state no watch reports and keeps timers of its own.
        super::due_in(ctx.delays.resync);
        reconcile(
            ctx.clone(),
            cpms.clone(),
            machines.clone(),
            infra.clone(),
            state.clone(),
        )
    })
    .await;
}

/// Trailing `-<n>` of a master's name: its index (slot) in the control plane.
fn index_of(name: &str) -> Option<usize> {
    name.rsplit('-').next()?.parse().ok()
}

fn provider_value(m: &Machine) -> Option<&Value> {
    m.spec.spec.provider_spec.as_ref()?.value.as_ref()
}

fn is_ready(m: &Machine) -> bool {
    m.metadata.deletion_timestamp.is_none()
        && m.phase() == "Running"
        && m.status.as_ref().is_some_and(|s| s.node_ref.is_some())
}

/// The template's provider spec with a failure domain's topology injected, as the real
/// operator's vSphere failure-domain code does.
pub(crate) fn inject(mut value: Value, fd: &VSphereFailureDomain, infra_id: &str) -> Value {
    let t = &fd.topology;
    let dc = t.datacenter.trim_start_matches('/').to_string();
    if !value.get("workspace").is_some_and(Value::is_object) {
        value["workspace"] = json!({});
    }
    let ws = &mut value["workspace"];
    ws["server"] = json!(fd.server);
    ws["datacenter"] = json!(dc);
    ws["datastore"] = json!(t.datastore);
    ws["resourcePool"] = json!(
        t.resource_pool
            .clone()
            .unwrap_or_else(|| format!("{}/Resources", t.compute_cluster))
    );
    ws["folder"] = json!(
        t.folder
            .clone()
            .unwrap_or_else(|| format!("/{dc}/vm/{infra_id}"))
    );
    // The template's last path element: the real operator injects the bare name
    // (cluster-control-plane-machine-set-operator `pkg/machineproviders/providers/openshift/
    // machine/v1beta1/providerconfig/vsphere.go`, `InjectFailureDomain`), as the installer
    // writes it into the masters (installer `pkg/asset/machines/vsphere/machines.go`).
    value["template"] = json!(
        t.template
            .as_deref()
            .map(|p| bare_template(p).to_string())
            .unwrap_or_else(|| format!("{infra_id}-rhcos-{}-{}", fd.region, fd.zone))
    );
    let devices: Vec<Value> = t
        .networks
        .iter()
        .map(|n| json!({"networkName": n}))
        .collect();
    if !value.get("network").is_some_and(Value::is_object) {
        value["network"] = json!({});
    }
    value["network"]["devices"] = json!(devices);
    value
}

/// A provider spec whose template is reduced to its name: the real operator takes a path
/// and a bare name of the same template as equal (`providerconfig/vsphere.go`, `Diff`,
/// `getTemplateName`), so an installer's master is not replaced for it.
fn template_by_name(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(t) = v.get("template").and_then(Value::as_str) {
        v["template"] = json!(bare_template(t));
    }
    v
}

/// A template path's last element (a bare name is its own).
fn bare_template(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn condition(t: &str, s: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": s, "reason": reason, "message": message, "lastTransitionTime": kapi::now()})
}

async fn reconcile(
    ctx: Ctx,
    cpms_api: Api<ControlPlaneMachineSet>,
    machines: Api<Machine>,
    infra_api: Api<Infrastructure>,
    state: Arc<Mutex<State>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let Some(cpms) = call(cpms_api.get_opt("cluster")).await.map_err(e)? else {
        let since = {
            let mut st = state.lock().map_err(|e| e.to_string())?;
            *st.missing_since.get_or_insert_with(Instant::now)
        };
        if since.elapsed() >= ctx.delays.cpms_recreate {
            regenerate(&ctx, &machines, &infra_api).await?;
            state.lock().map_err(|e| e.to_string())?.missing_since = None;
        }
        return Ok(());
    };
    state.lock().map_err(|e| e.to_string())?.missing_since = None;
    if cpms.metadata.deletion_timestamp.is_some() {
        return kapi::remove_finalizer(
            &cpms_api,
            "cluster",
            cpms.resource_version().as_deref(),
            cpms.finalizers(),
            CPMS_FINALIZER,
        )
        .await
        .map_err(e);
    }
    if !cpms.finalizers().iter().any(|f| f == CPMS_FINALIZER) {
        let mut fins = cpms.finalizers().to_vec();
        fins.push(CPMS_FINALIZER.into());
        kapi::merge(
            &cpms_api,
            "cluster",
            json!({"metadata": {"finalizers": fins}}),
        )
        .await
        .map_err(e)?;
    }
    if cpms.spec.state.as_deref() != Some("Active") {
        return Ok(());
    }
    let generation = cpms.metadata.generation.unwrap_or(0);
    let first_seen = *state
        .lock()
        .map_err(|e| e.to_string())?
        .seen
        .entry(generation)
        .or_insert_with(Instant::now);
    if first_seen.elapsed() < ctx.delays.cpms_observe {
        return Ok(());
    }

    let desired_replicas = usize::try_from(cpms.spec.replicas.unwrap_or(3).max(0)).unwrap_or(3);
    let selector = cpms.spec.selector.clone().unwrap_or_default().match_labels;
    let all = call(machines.list(&ListParams::default()))
        .await
        .map_err(e)?;
    let masters: Vec<&Machine> = all
        .items
        .iter()
        .filter(|m| {
            !selector.is_empty() && selector.iter().all(|(k, v)| m.labels().get(k) == Some(v))
        })
        .collect();
    let live: Vec<&Machine> = masters
        .iter()
        .copied()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live.iter().filter(|m| is_ready(m)).count();

    // Resolve failure domains through the Infrastructure.
    let infra = call(infra_api.get("cluster")).await.map_err(e)?;
    let names: Vec<String> = cpms
        .failure_domain_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut fds: Vec<VSphereFailureDomain> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for n in &names {
        match infra.failure_domains().iter().find(|fd| &fd.name == n) {
            Some(fd) => fds.push(fd.clone()),
            None => unknown.push(n.clone()),
        }
    }
    let template = cpms
        .spec
        .template
        .as_ref()
        .and_then(|t| t.machines_v1beta1.clone())
        .unwrap_or_default();
    let template_value = template
        .spec
        .as_ref()
        .and_then(|s| s.provider_spec.as_ref())
        .and_then(|p| p.value.clone())
        .unwrap_or(json!({}));
    let base_status = |updated: usize, conditions: Value| {
        json!({"observedGeneration": generation, "replicas": live.len(), "readyReplicas": ready,
            "updatedReplicas": updated,
            "unavailableReplicas": desired_replicas.saturating_sub(ready),
            "conditions": conditions})
    };
    if !unknown.is_empty() || fds.is_empty() {
        let msg = if unknown.is_empty() {
            "no failure domains are defined in the control plane machine set template".to_string()
        } else {
            format!(
                "failure domain(s) {} not found in infrastructure cluster spec.platformSpec.vsphere.failureDomains",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let conds = json!([
            condition(
                "Available",
                if ready >= desired_replicas {
                    "True"
                } else {
                    "False"
                },
                "AllReplicasAvailable",
                ""
            ),
            condition(
                "Degraded",
                "True",
                "FailureDomainsMismatch",
                &format!("error reconciling control plane machine set: {msg}")
            ),
            condition("Progressing", "False", "OperatorDegraded", ""),
        ]);
        return write_status(&cpms_api, &cpms, base_status(0, conds)).await;
    }
    let desired_for =
        |idx: usize| inject(template_value.clone(), &fds[idx % fds.len()], &ctx.infra_id);
    let is_updated = |m: &Machine| {
        index_of(&m.name_any()).is_some_and(|i| {
            provider_value(m).map(template_by_name) == Some(template_by_name(&desired_for(i)))
        })
    };
    let updated_ready = live.iter().filter(|m| is_ready(m) && is_updated(m)).count();

    // Roll.
    let rolling = cpms.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let mut degraded: Option<String> = None;
    for idx in 0..desired_replicas {
        let at: Vec<&Machine> = masters
            .iter()
            .copied()
            .filter(|m| index_of(&m.name_any()) == Some(idx))
            .collect();
        let live_at: Vec<&Machine> = at
            .iter()
            .copied()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .collect();
        let outdated: Vec<&Machine> = live_at.iter().copied().filter(|m| !is_updated(m)).collect();
        let fresh: Vec<&Machine> = live_at.iter().copied().filter(|m| is_updated(m)).collect();
        if let Some(f) = fresh.iter().find(|m| m.phase() == "Failed") {
            let why = f
                .status
                .as_ref()
                .and_then(|s| s.error_message.clone())
                .unwrap_or_default();
            degraded = Some(format!(
                "machine {} failed to provision: {why}",
                f.name_any()
            ));
            break;
        }
        if live_at.is_empty() {
            if at.is_empty() {
                create_replacement(&ctx, &template, desired_for(idx), idx).await?;
            }
            break;
        }
        if outdated.is_empty() || !rolling {
            continue;
        }
        // Surge of one machine (cluster-control-plane-machine-set-operator
        // `pkg/controllers/controlplanemachineset/updates.go`, `reconcileMachineRollingUpdate`:
        // `maxSurge := 1`, the existing surge counted first): an index still holding two
        // machines, its old one draining, blocks every other (drains honour
        // PodDisruptionBudgets and take as long as their pods).
        let other_busy = masters.iter().any(|m| {
            index_of(&m.name_any()).is_some_and(|i| {
                i != idx
                    && masters
                        .iter()
                        .filter(|o| index_of(&o.name_any()) == Some(i))
                        .count()
                        > 1
            })
        });
        if other_busy {
            break;
        }
        if fresh.is_empty() {
            create_replacement(&ctx, &template, desired_for(idx), idx).await?;
            break;
        }
        if fresh.iter().all(|m| is_ready(m)) {
            for old in &outdated {
                if let Some(d) = ctx.faults.api_outage_during_cpms_rollout
                    && let Some(faults) = &ctx.api_faults
                    && !ctx.outage_fired.swap(true, Ordering::SeqCst)
                {
                    tracing::info!(?d, "fault: API outage during control-plane rollout");
                    faults.outage(d);
                    return Ok(());
                }
                kapi::delete_ignore_missing(&machines, &old.name_any())
                    .await
                    .map_err(e)?;
            }
        }
        break;
    }
    let all_updated = updated_ready >= desired_replicas && live.len() == desired_replicas;
    let conds = json!([
        condition(
            "Available",
            if ready >= desired_replicas {
                "True"
            } else {
                "False"
            },
            if ready >= desired_replicas {
                "AllReplicasAvailable"
            } else {
                "UnavailableReplicas"
            },
            &if ready >= desired_replicas {
                String::new()
            } else {
                format!("Missing {} available replica(s)", desired_replicas - ready)
            }
        ),
        match &degraded {
            Some(m) => condition("Degraded", "True", "UnmanagedNodes", m),
            None => condition("Degraded", "False", "AsExpected", ""),
        },
        if all_updated {
            condition("Progressing", "False", "AllReplicasUpdated", "")
        } else {
            condition(
                "Progressing",
                "True",
                "NeedsUpdateReplicas",
                &format!(
                    "Observed {} replica(s) in need of update",
                    desired_replicas.saturating_sub(updated_ready)
                ),
            )
        },
    ]);
    write_status(&cpms_api, &cpms, base_status(updated_ready, conds)).await
}

async fn write_status(
    api: &Api<ControlPlaneMachineSet>,
    cpms: &ControlPlaneMachineSet,
    mut status: Value,
) -> Result<(), String> {
    let current = serde_json::to_value(&cpms.status).unwrap_or(Value::Null);
    let old_conds = current.get("conditions").cloned().unwrap_or(Value::Null);
    status["conditions"] = carry_transition_times(&old_conds, status["conditions"].take());
    let counters = [
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "unavailableReplicas",
    ];
    let changed = counters
        .iter()
        .any(|k| current.get(*k).unwrap_or(&json!(0)) != status.get(*k).unwrap_or(&json!(0)))
        || !same_conditions(&old_conds, &status["conditions"]);
    if changed {
        kapi::merge_status(api, "cluster", status)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn create_replacement(
    ctx: &Ctx,
    template: &vcfm_api::openshift::CpmsMachineTemplate,
    provider: Value,
    idx: usize,
) -> Result<(), String> {
    let name = format!("{}-master-{}-{idx}", ctx.infra_id, kapi::suffix(5));
    let labels = template
        .metadata
        .clone()
        .map(|m| m.labels)
        .unwrap_or_default();
    let mut spec =
        serde_json::to_value(template.spec.clone().unwrap_or_default()).unwrap_or(json!({}));
    spec["providerSpec"] = json!({"value": provider});
    let obj = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": MAPI_NS, "labels": labels},
        "spec": spec});
    tracing::info!(machine = %name, "control plane: creating replacement");
    kapi::create(&ctx.client, &obj)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Recreates an Inactive CPMS from the current masters (the operator's generator).
async fn regenerate(
    ctx: &Ctx,
    machines: &Api<Machine>,
    infra_api: &Api<Infrastructure>,
) -> Result<(), String> {
    let all = call(machines.list(&ListParams::default()))
        .await
        .map_err(|e| e.to_string())?;
    let mut masters: Vec<&Machine> = all
        .items
        .iter()
        .filter(|m| {
            m.metadata.deletion_timestamp.is_none()
                && m.labels()
                    .get(vcfm_api::openshift::LABEL_ROLE)
                    .map(String::as_str)
                    == Some("master")
        })
        .collect();
    masters.sort_by_key(|m| std::cmp::Reverse(m.metadata.creation_timestamp.clone().map(|t| t.0)));
    let Some(newest) = masters.first() else {
        return Ok(());
    };
    let infra = call(infra_api.get("cluster"))
        .await
        .map_err(|e| e.to_string())?;
    let servers: Vec<(String, String)> = masters
        .iter()
        .filter_map(|m| {
            let ps = m.spec.spec.provider_spec.as_ref()?.vsphere().ok()??;
            let ws = ps.workspace?;
            Some((
                ws.server.unwrap_or_default(),
                ws.datacenter.unwrap_or_default(),
            ))
        })
        .collect();
    let mut names: Vec<String> = infra
        .failure_domains()
        .iter()
        .filter(|fd| {
            servers
                .iter()
                .any(|(s, dc)| *s == fd.server && *dc == fd.topology.datacenter)
        })
        .map(|fd| fd.name.clone())
        .collect();
    if names.is_empty() {
        names = infra
            .failure_domains()
            .iter()
            .map(|fd| fd.name.clone())
            .collect();
    }
    let value = provider_value(newest).cloned().unwrap_or(json!({}));
    let replicas = u32::try_from(masters.len().max(3)).unwrap_or(3);
    let mut obj = crate::seed::cpms(&ctx.infra_id, replicas, value, &names, false);
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    tracing::info!("control plane machine set regenerated (Inactive)");
    kapi::create(&ctx.client, &obj)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
