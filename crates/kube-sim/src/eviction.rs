//! The `pods/eviction` subresource with PodDisruptionBudgets, as the real API server
//! plays it (kubernetes `pkg/registry/core/pod/storage/eviction.go`): a pod that is
//! Pending, terminal or already being deleted is deleted without a budget check; a pod
//! covered by more than one budget is refused (500); otherwise its budget must have
//! been processed at its generation and allow a disruption, which is taken (status
//! `disruptionsAllowed` decremented, the pod recorded in `disruptedPods`) before the
//! pod is deleted; a refused eviction is `429 TooManyRequests`, which drains retry.
//! An unready pod is evicted without taking a disruption while the budget has its
//! desired healthy pods. The budget's status is someone else's job, as in Kubernetes
//! where the disruption controller computes it.

use crate::core::{Core, DeleteOpts, ListOpts};
use crate::error::ApiError;
use serde_json::{Value, json};

/// Refusal because of a budget, shaped like the real server's.
fn too_many_requests(cause: String, retry_after: u64) -> ApiError {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    e.details = Some(json!({
        "causes": [{"reason": "DisruptionBudget", "message": cause}],
        "retryAfterSeconds": retry_after,
    }));
    e
}

fn matches_selector(selector: Option<&Value>, labels: &serde_json::Map<String, Value>) -> bool {
    let Some(sel) = selector.and_then(Value::as_object) else {
        return false;
    };
    let ml = sel.get("matchLabels").and_then(Value::as_object);
    let exprs = sel.get("matchExpressions").and_then(Value::as_array);
    // A nil or empty selector matches nothing here, not everything.
    if ml.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty()) {
        return false;
    }
    let label_ok = ml
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expr_ok = exprs.into_iter().flatten().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = labels.get(key).and_then(Value::as_str);
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => have.is_some_and(|h| values.contains(&h)),
            Some("NotIn") => have.is_none_or(|h| !values.contains(&h)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            _ => false,
        }
    });
    label_ok && expr_ok
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Evicts pod `ns/name`: checks and takes its budget, then deletes it.
pub(crate) fn evict(core: &mut Core, ns: &str, name: &str) -> Result<(), ApiError> {
    let pods = core
        .registry
        .lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod = core.get(&pods, "v1", ns, name)?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    let can_ignore = matches!(phase, "Succeeded" | "Failed" | "Pending") || deleting;
    if !can_ignore
        && let Some(pdbs_def) = core.registry.lookup("policy", "v1", "poddisruptionbudgets")
    {
        let labels = pod
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let list = core.list(&pdbs_def, "v1", Some(ns), &ListOpts::default())?;
        let budgets: Vec<Value> = list
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| matches_selector(p.pointer("/spec/selector"), &labels))
            .cloned()
            .collect();
        if budgets.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = budgets.into_iter().next() {
            take_disruption(core, &pdbs_def, ns, name, &pod, pdb)?;
        }
    }
    core.delete(&pods, "v1", ns, name, &DeleteOpts::default())?;
    Ok(())
}

fn take_disruption(
    core: &mut Core,
    def: &std::sync::Arc<crate::registry::ResourceDef>,
    ns: &str,
    pod_name: &str,
    pod: &Value,
    mut pdb: Value,
) -> Result<(), ApiError> {
    let pdb_name = pdb
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let st = |k: &str| {
        pdb.pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let (healthy, desired, allowed) = (
        st("currentHealthy"),
        st("desiredHealthy"),
        st("disruptionsAllowed"),
    );
    if !pod_ready(pod) && healthy >= desired && desired > 0 {
        return Ok(());
    }
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if st("observedGeneration") < generation {
        return Err(too_many_requests(
            format!("The disruption budget {pdb_name} is still being processed by the server."),
            10,
        ));
    }
    if allowed < 0 {
        return Err(ApiError::forbidden(format!(
            "poddisruptionbudget.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative"
        )));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
            ),
            0,
        ));
    }
    pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !pdb["status"]["disruptedPods"].is_object() {
        pdb["status"]["disruptedPods"] = json!({});
    }
    pdb["status"]["disruptedPods"][pod_name] = json!(crate::util::now_rfc3339());
    core.update(
        def,
        "v1",
        ns,
        &pdb_name,
        "status",
        pdb,
        Some("kube-apiserver"),
    )?;
    Ok(())
}
