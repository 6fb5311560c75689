//! The cluster-version operator: its Deployment's status follows `spec.replicas` after
//! `deployment_ready` (the sim plays the deployment controller for it), and while at least
//! one replica runs it reverts the Infrastructure CRD's vCenter rule to the manifest it was
//! seeded with, `cvo_restore` after someone lifted it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

use super::{Ctx, run_loop, trigger, waited};
use crate::kapi::{self, call};

/// Name of the CRD the CVO guards.
pub(crate) const INFRA_CRD: &str = "infrastructures.config.openshift.io";
const NS: &str = "openshift-cluster-version";
const NAME: &str = "cluster-version-operator";

#[derive(Default)]
struct State {
    /// (generation, replicas) of a pending scale and when it was seen.
    scaling: Option<((i64, i32), Instant)>,
    /// When the lifted rule was first seen.
    lifted_since: Option<Instant>,
}

/// Runs the CVO until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), NS);
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let state: Arc<Mutex<State>> = Arc::default();
    let triggers = vec![trigger(deployments.clone()), trigger(crds.clone())];
    run_loop("cluster-version-operator", &ctx, triggers, || {
        reconcile(
            ctx.clone(),
            deployments.clone(),
            crds.clone(),
            state.clone(),
        )
    })
    .await;
}

/// The `x-kubernetes-validations` on `spec.platformSpec.vsphere.vcenters` of every version.
pub fn vcenter_rules(crd: &Value) -> Vec<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    v.pointer("/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters/x-kubernetes-validations")
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn reconcile(
    ctx: Ctx,
    deployments: Api<Deployment>,
    crds: Api<CustomResourceDefinition>,
    state: Arc<Mutex<State>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let Some(dep) = call(deployments.get_opt(NAME)).await.map_err(e)? else {
        return Ok(());
    };
    let generation = dep.metadata.generation.unwrap_or(1);
    let replicas = dep.spec.replicas.unwrap_or(1);
    let st = dep.status.clone().unwrap_or_default();
    let settled = st.observed_generation == Some(generation)
        && st.replicas.unwrap_or(0) == replicas
        && st.available_replicas.unwrap_or(0) == replicas;
    if !settled {
        let since = {
            let mut s = state.lock().map_err(|e| e.to_string())?;
            match s.scaling {
                Some((key, t)) if key == (generation, replicas) => t,
                _ => {
                    let t = Instant::now();
                    s.scaling = Some(((generation, replicas), t));
                    t
                }
            }
        };
        if waited(since, ctx.delays.deployment_ready) {
            let status = crate::seed::deployment_status(
                generation,
                i64::from(replicas),
                i64::from(replicas),
            );
            kapi::merge_status(&deployments, NAME, status)
                .await
                .map_err(e)?;
            tracing::info!(replicas, "cluster-version-operator deployment scaled");
        }
    }
    let running = st.available_replicas.unwrap_or(0) >= 1 && replicas >= 1;
    if !running {
        state.lock().map_err(|e| e.to_string())?.lifted_since = None;
        return Ok(());
    }
    let Some(crd) = call(crds.get_opt(INFRA_CRD)).await.map_err(e)? else {
        return Ok(());
    };
    let current = serde_json::to_value(&crd).map_err(|e| e.to_string())?;
    if vcenter_rules(&current) == vcenter_rules(&ctx.infra_crd) {
        state.lock().map_err(|e| e.to_string())?.lifted_since = None;
        return Ok(());
    }
    let since = *state
        .lock()
        .map_err(|e| e.to_string())?
        .lifted_since
        .get_or_insert_with(Instant::now);
    if !waited(since, ctx.delays.cvo_restore) {
        return Ok(());
    }
    let mut restored = crd.clone();
    restored.spec =
        serde_json::from_value(ctx.infra_crd.get("spec").cloned().unwrap_or(Value::Null))
            .map_err(|e| e.to_string())?;
    call(crds.replace(INFRA_CRD, &PostParams::default(), &restored))
        .await
        .map_err(e)?;
    tracing::info!("cluster-version-operator restored the Infrastructure CRD");
    state.lock().map_err(|e| e.to_string())?.lifted_since = None;
    Ok(())
}
