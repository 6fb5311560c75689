//! The disruption controller (kubernetes `pkg/controller/disruption/disruption.go`, part
//! of kube-controller-manager, which neither kube-sim nor the real tier's
//! kube-controller-manager runs here): keeps each PodDisruptionBudget's status, which the
//! API server's eviction subresource then enforces.
//!
//! - expected pods: the replicas of the workload the selected pods belong to (the
//!   controller reads its scale), or the number of selected pods for an integer
//!   `minAvailable`;
//! - desired healthy: `minAvailable` (an integer, or a percentage of expected rounded up),
//!   or expected minus `maxUnavailable` (a percentage rounded up);
//! - current healthy: selected pods that are Ready, not being deleted and not recorded in
//!   `disruptedPods` by an eviction the controller has not seen go through yet (entries
//!   expire after two minutes, `DeletionTimeout`);
//! - `disruptionsAllowed` = current − desired healthy, never below 0, with the
//!   `DisruptionAllowed` condition (`SufficientPods` / `InsufficientPods`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, carry_transition_times, run_loop, same_conditions, trigger};
use crate::kapi::{self, call};
use crate::seed::{PodGroup, PodKind};

/// How long an eviction recorded in `disruptedPods` is waited for.
const DELETION_TIMEOUT: i64 = 120;

pub(crate) async fn run(ctx: Ctx, groups: Vec<PodGroup>) {
    let pdbs = kapi::dyn_api(&ctx.client, "policy/v1", "PodDisruptionBudget", None);
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let groups = Arc::new(groups);
    let triggers = vec![super::mcp::dyn_trigger(pdbs.clone()), trigger(pods.clone())];
    run_loop("disruption-controller", &ctx, triggers, || {
        reconcile(ctx.clone(), pdbs.clone(), pods.clone(), groups.clone())
    })
    .await;
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// An int-or-string budget value against `expected`, percentages rounded up.
fn scaled(v: &Value, expected: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((pct * expected + 99) / 100)
        }
        _ => None,
    }
}

/// `(expected, desired healthy)` for a budget spec.
pub(crate) fn budget(spec: &Value, selected: i64, replicas: Option<i64>) -> (i64, i64) {
    if let Some(min) = spec.get("minAvailable") {
        if min.is_number() {
            return (selected, min.as_i64().unwrap_or(0));
        }
        let expected = replicas.unwrap_or(selected);
        return (expected, scaled(min, expected).unwrap_or(expected));
    }
    let expected = replicas.unwrap_or(selected);
    let max = spec
        .get("maxUnavailable")
        .and_then(|v| scaled(v, expected))
        .unwrap_or(0);
    (expected, (expected - max).max(0))
}

async fn reconcile(
    ctx: Ctx,
    pdbs: Api<DynamicObject>,
    pods: Api<Pod>,
    groups: Arc<Vec<PodGroup>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let all = call(pods.list(&ListParams::default())).await.map_err(e)?;
    let now = jiff::Timestamp::now();
    for pdb in call(pdbs.list(&ListParams::default())).await.map_err(e)? {
        let v = serde_json::to_value(&pdb).map_err(|x| x.to_string())?;
        let ns = pdb.namespace().unwrap_or_default();
        let sel: BTreeMap<String, String> = serde_json::from_value(
            v.pointer("/spec/selector/matchLabels")
                .cloned()
                .unwrap_or(json!({})),
        )
        .unwrap_or_default();
        if sel.is_empty() {
            continue;
        }
        let selected: Vec<&Pod> = all
            .items
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| sel.iter().all(|(k, val)| p.labels().get(k) == Some(val)))
            .collect();
        let replicas = groups
            .iter()
            .filter(|g| {
                g.namespace == ns && sel.iter().all(|(k, val)| g.labels.get(k) == Some(val))
            })
            .find_map(|g| match g.kind {
                PodKind::Deployment(n) => i64::try_from(n).ok(),
                _ => None,
            });
        let live = |name: &str| {
            selected
                .iter()
                .any(|p| p.name_any() == name && p.metadata.deletion_timestamp.is_none())
        };
        // Evictions recorded by the API server: kept until the pod is seen going or expires.
        let mut disrupted = serde_json::Map::new();
        for (pod, at) in v
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let age = at
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| now.as_second() - t.as_second());
            let fresh = age.is_some_and(|a| a < DELETION_TIMEOUT);
            if fresh && live(pod) {
                disrupted.insert(pod.clone(), at.clone());
                // Back when the entry expires (a second late at most, never early).
                let left = DELETION_TIMEOUT - age.unwrap_or(0) + 1;
                super::due_in(std::time::Duration::from_secs(left.unsigned_abs()));
            }
        }
        let healthy = selected
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .filter(|p| !disrupted.contains_key(&p.name_any()))
            .count();
        let healthy = i64::try_from(healthy).unwrap_or(i64::MAX);
        let count = i64::try_from(selected.len()).unwrap_or(i64::MAX);
        let (expected, desired) = budget(v.get("spec").unwrap_or(&Value::Null), count, replicas);
        let allowed = (healthy - desired).max(0);
        let cond = if allowed > 0 {
            json!({"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": "",
                "observedGeneration": pdb.metadata.generation, "lastTransitionTime": kapi::now()})
        } else {
            json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
                "observedGeneration": pdb.metadata.generation, "lastTransitionTime": kapi::now()})
        };
        let old = v.get("status").cloned().unwrap_or(json!({}));
        let status = json!({
            "observedGeneration": pdb.metadata.generation,
            "disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": desired,
            "expectedPods": expected, "disruptedPods": disrupted,
            "conditions": carry_transition_times(old.get("conditions").unwrap_or(&Value::Null), json!([cond])),
        });
        let same = [
            "observedGeneration",
            "disruptionsAllowed",
            "currentHealthy",
            "desiredHealthy",
            "expectedPods",
        ]
        .iter()
        .all(|k| old.get(*k) == status.get(*k))
            && old.get("disruptedPods").cloned().unwrap_or(json!({})) == status["disruptedPods"]
            && same_conditions(
                old.get("conditions").unwrap_or(&Value::Null),
                &status["conditions"],
            );
        if !same {
            // Replace disruptedPods wholesale: a merge patch would keep removed entries.
            let mut patch = status.clone();
            if let Some(old_map) = old.get("disruptedPods").and_then(Value::as_object) {
                for k in old_map.keys() {
                    if !disrupted.contains_key(k) {
                        patch["disruptedPods"][k] = Value::Null;
                    }
                }
            }
            let api = kapi::dyn_api(&ctx.client, "policy/v1", "PodDisruptionBudget", Some(&ns));
            kapi::merge_status(&api, &pdb.name_any(), patch)
                .await
                .map_err(e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_round_like_the_disruption_controller() {
        // The ingress operator's router budget: maxUnavailable 50% of 2 replicas.
        assert_eq!(
            budget(&json!({"maxUnavailable": "50%"}), 2, Some(2)),
            (2, 1)
        );
        assert_eq!(
            budget(&json!({"maxUnavailable": "25%"}), 4, Some(4)),
            (4, 3)
        );
        assert_eq!(budget(&json!({"minAvailable": 1}), 3, Some(5)), (3, 1));
        assert_eq!(budget(&json!({"minAvailable": "50%"}), 1, Some(3)), (3, 2));
        assert_eq!(budget(&json!({"maxUnavailable": 1}), 2, None), (2, 1));
    }
}
