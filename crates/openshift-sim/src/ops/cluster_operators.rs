//! ClusterOperators: those that watch the Infrastructure or the cloud-provider config go
//! Progressing `operator_notice` after each change, for `operator_progressing`; etcd, kube-apiserver and
//! control-plane-machine-set are Progressing while masters are replaced; `machine-config`
//! is Degraded while the Infrastructure lists more than one vCenter; a faulted operator
//! stays Degraded. Where the real CPMS operator runs, its ClusterOperator is left to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use vcfm_api::openshift::{ClusterOperator, ControlPlaneMachineSet, Infrastructure};

use super::{Ctx, carry_transition_times, run_loop, same_conditions, trigger};
use crate::kapi::{self, call};
use crate::seed::MAPI_NS;

/// Operators that roll out a new revision when the Infrastructure changes.
const INFRA_WATCHERS: &[&str] = &[
    "cloud-controller-manager",
    "kube-apiserver",
    "kube-controller-manager",
    "machine-api",
    "storage",
    "config-operator",
];
/// Operators that roll out when the cloud-provider config changes.
const CLOUD_CONFIG_WATCHERS: &[&str] = &[
    "cloud-controller-manager",
    "kube-controller-manager",
    "storage",
    "machine-config",
];
/// Operators that report the control-plane rollout.
const CONTROL_PLANE_WATCHERS: &[&str] = &[CPMS_OPERATOR, "etcd", "kube-apiserver"];
/// The ClusterOperator the real CPMS operator writes itself where it runs (the real tier):
/// it copies its CPMS's Available/Degraded/Progressing conditions there on every reconcile
/// and rewrites any other content (cluster-control-plane-machine-set-operator
/// `pkg/controllers/controlplanemachineset/cluster_operator.go`), and it reconciles on every
/// change of that ClusterOperator (`controller.go` watches it), so a second writer makes
/// the two rewrite it in turn for as long as the cluster runs.
const CPMS_OPERATOR: &str = "control-plane-machine-set";

#[derive(Default)]
struct State {
    infra_spec: Option<Value>,
    cloud_config: Option<Value>,
    /// Operator → (goes Progressing at, stops at).
    progressing_until: HashMap<&'static str, (Instant, Instant)>,
}

/// Runs the cluster operators until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let cos: Api<ClusterOperator> = Api::all(ctx.client.clone());
    let infra: Api<Infrastructure> = Api::all(ctx.client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "openshift-config");
    let cpms: Api<ControlPlaneMachineSet> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let state: Arc<Mutex<State>> = Arc::default();
    let triggers = vec![
        trigger(cos.clone()),
        trigger(infra.clone()),
        trigger(cms.clone()),
        trigger(cpms.clone()),
    ];
    run_loop("cluster-operators", &ctx, triggers, || {
        reconcile(
            ctx.clone(),
            cos.clone(),
            infra.clone(),
            cms.clone(),
            cpms.clone(),
            state.clone(),
        )
    })
    .await;
}

fn progressing_message(op: &str, version: &str) -> String {
    match op {
        "kube-apiserver" | "kube-controller-manager" | "etcd" => {
            "NodeInstallerProgressing: 1 node is at revision 7; 2 nodes are at revision 8".into()
        }
        "machine-config" => format!("Working towards {version}"),
        "storage" => "VSphereCSIDriverOperatorCRProgressing: VMwareVSphereDriverControllerServiceControllerProgressing: Waiting for Deployment to deploy pods".into(),
        "cloud-controller-manager" => "CloudConfigControllerProgressing: syncing cloud provider config".into(),
        "control-plane-machine-set" => "Observed 1 replica(s) in need of update".into(),
        _ => "Reconciling configuration change".into(),
    }
}

async fn reconcile(
    ctx: Ctx,
    cos: Api<ClusterOperator>,
    infra_api: Api<Infrastructure>,
    cms: Api<ConfigMap>,
    cpms_api: Api<ControlPlaneMachineSet>,
    state: Arc<Mutex<State>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let infra = call(infra_api.get_opt("cluster")).await.map_err(e)?;
    let cloud = call(cms.get_opt("cloud-provider-config"))
        .await
        .map_err(e)?;
    let cpms = call(cpms_api.get_opt("cluster")).await.map_err(e)?;
    let vcenters = infra.as_ref().map(|i| i.vcenters().len()).unwrap_or(0);
    let rolling = cpms
        .as_ref()
        .is_some_and(|c| c.spec.state.as_deref() == Some("Active") && !c.rollout_complete());
    let cpms_degraded = cpms.as_ref().and_then(|c| {
        let st = c.status.as_ref()?;
        vcfm_api::openshift::find_condition(&st.conditions, "Degraded")
            .filter(|d| d.status == "True")
            .map(|d| d.message.clone().unwrap_or_default())
    });
    // Zonal cluster, untagged failure domains (see `zone_tags`): vCenter tags, which no
    // watch reports, so a zonal cluster is checked again every resync (the problem
    // detector rechecks periodically too).
    let untagged = match &infra {
        Some(i) => {
            if i.failure_domains().len() >= 2 {
                super::due_in(ctx.delays.resync);
            }
            super::zone_tags::untagged_domains(&ctx, i).await
        }
        None => vec![],
    };
    let now = Instant::now();
    let active: HashMap<&'static str, bool> = {
        let mut st = state.lock().map_err(|e| e.to_string())?;
        let infra_spec = infra
            .as_ref()
            .map(|i| serde_json::to_value(&i.spec).unwrap_or(Value::Null));
        let cloud_data = cloud.as_ref().map(|c| json!(c.data));
        let from = now + ctx.delays.operator_notice;
        let until = (from, from + ctx.delays.operator_progressing);
        if st.infra_spec.is_some() && st.infra_spec != infra_spec {
            for op in INFRA_WATCHERS {
                st.progressing_until.insert(op, until);
            }
        }
        if st.cloud_config.is_some() && st.cloud_config != cloud_data {
            for op in CLOUD_CONFIG_WATCHERS {
                st.progressing_until.insert(op, until);
            }
        }
        st.infra_spec = infra_spec;
        st.cloud_config = cloud_data;
        st.progressing_until.retain(|_, (_, end)| *end > now);
        // Back when an operator starts or stops Progressing.
        for (start, end) in st.progressing_until.values() {
            if *start > now {
                super::due_at(*start);
            }
            super::due_at(*end);
        }
        st.progressing_until
            .iter()
            .filter(|(_, (start, _))| *start <= now)
            .map(|(k, _)| (*k, true))
            .collect()
    };
    let list = call(cos.list(&ListParams::default())).await.map_err(e)?;
    for co in list {
        let name = co.name_any();
        if ctx.real_operators && name == CPMS_OPERATOR {
            continue;
        }
        let progressing = (active.contains_key(name.as_str())
            || (rolling && CONTROL_PLANE_WATCHERS.contains(&name.as_str())))
        .then(|| progressing_message(&name, &ctx.version));
        let degraded = if ctx.faults.degraded_operator.as_deref() == Some(name.as_str()) {
            Some("simulated fault: operator reports Degraded".to_string())
        } else if name == "control-plane-machine-set"
            && let Some(msg) = cpms_degraded.clone()
        {
            Some(msg)
        } else if name == "storage" && !untagged.is_empty() {
            Some(format!(
                "VSphereProblemDetectorControllerDegraded: CheckZoneTags failed: {}",
                untagged.join("; ")
            ))
        } else if name == "machine-config" && vcenters > 1 {
            Some(format!(
                "Unable to apply {}: error during syncRequiredMachineConfigPools: [context deadline exceeded, error pool master is not ready, retrying. Status: (pool degraded: true total: 3, ready 0, updated: 0, unavailable: 3)]: the cloud provider configuration lists {vcenters} vCenters",
                ctx.version
            ))
        } else {
            None
        };
        let old = co
            .status
            .as_ref()
            .map(|s| serde_json::to_value(&s.conditions).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        let new = carry_transition_times(
            &old,
            crate::seed::co_conditions(progressing.as_deref(), degraded.as_deref()),
        );
        if !same_conditions(&old, &new) {
            kapi::merge_status(&cos, &name, json!({"conditions": new}))
                .await
                .map_err(e)?;
        }
    }
    Ok(())
}
