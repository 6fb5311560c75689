//! MachineConfigPools: the node rollouts a cloud-config change causes.
//!
//! The cloud config reaches every node's `/etc/kubernetes/cloud.conf` through the
//! machine-config operator: `openshift-config/cloud-provider-config` is copied to
//! `openshift-config-managed/kube-cloud-config`, the operator puts it into the
//! ControllerConfig (machine-config-operator `pkg/operator/sync.go`,
//! `syncCloudConfig`), the controllers render a new MachineConfig per pool, and the
//! daemon on each node cordons, drains, writes the file and reboots, one node at a
//! time per pool (`pkg/daemon/update.go`). vcfm therefore waits, after UpdateConfig
//! and after Cleanup, until every pool reports the new configuration on all its
//! machines, and does not start machine rollouts while a pool is rolling: a drain by
//! the machine API and a reboot by the MCO on the same capacity at once can take
//! down more than either budget allows.
//!
//! A pool is settled when `Updated=True`, neither `Updating` nor `Degraded`, and
//! `machineCount == updatedMachineCount` with no degraded machine, at its current
//! generation (machine-config-operator `pkg/controller/node/status.go`,
//! `calculateStatus`, sets these together).

use crate::error::PhaseError;
use crate::state::Outcome;
use jiff::Timestamp;
use serde_json::Value;
use std::time::Duration;

const GROUP: &str = "machineconfiguration.openshift.io";
const VERSION: &str = "v1";
const KIND: &str = "MachineConfigPool";
const PLURAL: &str = "machineconfigpools";

/// The MachineConfigPool kind, for a dynamic (untyped) API.
pub fn api_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// How often a phase waiting for pools looks again.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Where a pool stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// Every machine runs the pool's configuration.
    Settled,
    /// Still rolling (or not yet started); the text says how far.
    Rolling(String),
    /// A node or the render failed; the text is the pool's own message.
    Degraded(String),
}

fn condition<'a>(pool: &'a Value, type_: &str) -> Option<&'a Value> {
    pool.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

fn is_true(pool: &Value, type_: &str) -> bool {
    condition(pool, type_)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

fn message(pool: &Value, type_: &str) -> String {
    condition(pool, type_)
        .map(|c| {
            let s = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            match (s("reason"), s("message")) {
                (r, m) if !r.is_empty() && !m.is_empty() => format!("{r}: {m}"),
                (r, m) if m.is_empty() => r,
                (_, m) => m,
            }
        })
        .unwrap_or_default()
}

fn count(pool: &Value, field: &str) -> i64 {
    pool.pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The pool's name.
pub fn name(pool: &Value) -> &str {
    pool.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Classifies one pool (as JSON).
pub fn state(pool: &Value) -> PoolState {
    let n = name(pool);
    let machines = count(pool, "machineCount");
    let updated = count(pool, "updatedMachineCount");
    let degraded = count(pool, "degradedMachineCount");
    if is_true(pool, "Degraded") || degraded > 0 {
        let why = ["NodeDegraded", "RenderDegraded", "Degraded"]
            .iter()
            .filter(|t| is_true(pool, t))
            .map(|t| message(pool, t))
            .find(|m| !m.is_empty())
            .unwrap_or_else(|| format!("{degraded} machine(s) degraded"));
        return PoolState::Degraded(format!("MachineConfigPool {n} is Degraded: {why}"));
    }
    if is_true(pool, "Updated")
        && !is_true(pool, "Updating")
        && machines == updated
        && config_caught_up(pool)
    {
        return PoolState::Settled;
    }
    let paused = pool.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let detail = if paused {
        " — the pool is paused (spec.paused): unpause it so its nodes take the new cloud config"
            .to_string()
    } else {
        match message(pool, "Updating") {
            m if m.is_empty() => String::new(),
            m => format!(" ({m})"),
        }
    };
    PoolState::Rolling(format!(
        "MachineConfigPool {n}: {updated}/{machines} machine(s) updated{detail}"
    ))
}

/// Whether the machine-config controller has seen the pool's latest spec and
/// its status names the rendered config the spec asks for.
fn config_caught_up(pool: &Value) -> bool {
    let generation = pool.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = pool
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let target = pool
        .pointer("/spec/configuration/name")
        .and_then(Value::as_str);
    let current = pool
        .pointer("/status/configuration/name")
        .and_then(Value::as_str);
    generation.is_none_or(|g| observed.is_some_and(|o| o >= g))
        && (target.is_none() || target == current)
}

/// Whether a node *configuration* rollout is under way in the pool: a new rendered
/// config not yet on every machine, or a degraded one. Unlike [`state`] this ignores
/// nodes that are merely cordoned or unready (the MCO counts a node drained by the
/// machine API as unavailable, and so the pool as not Updated, until it is gone).
pub fn rollout_state(pool: &Value) -> PoolState {
    match state(pool) {
        PoolState::Rolling(w) => {
            let rolling = count(pool, "updatedMachineCount") < count(pool, "machineCount")
                || !config_caught_up(pool);
            if rolling {
                PoolState::Rolling(w)
            } else {
                PoolState::Settled
            }
        }
        other => other,
    }
}

/// Whether the pool's `Updated` condition last changed at or after `since`: the
/// pool has rolled (or begun to) since then. Pools without machines never
/// transition and count as rolled. A minute of tolerance covers clock skew
/// between this controller and the machine-config controller.
pub fn rolled_since(pool: &Value, since: Timestamp) -> bool {
    if count(pool, "machineCount") == 0 {
        return true;
    }
    let Some(at) = condition(pool, "Updated")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return false;
    };
    at.as_second() + 60 >= since.as_second()
}

/// Every MachineConfigPool as JSON, sorted by name (none where the CRD is
/// absent), from the API (the phases read them from the controller's watch,
/// `PhaseCtx::machine_config_pools`).
pub async fn list(client: kube::Client) -> Result<Vec<Value>, PhaseError> {
    let pools = super::list_dynamic(client, GROUP, VERSION, KIND, PLURAL)
        .await
        .map_err(|e| e.context("listing MachineConfigPools"))?;
    let mut out: Vec<Value> = pools
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    out.sort_by(|a, b| name(a).cmp(name(b)));
    Ok(out)
}

/// What the pools say about going on: `None` when every pool is settled (and,
/// with `rolled_since`, has taken a configuration change made at or after that
/// time), otherwise the `Outcome::Running` for the phase to return.
pub fn verdict(
    pools: &[Value],
    rolled_after: Option<Timestamp>,
    progress: i32,
    doing: &str,
) -> Option<Outcome> {
    judge(pools, state, rolled_after, progress, doing)
}

fn judge(
    pools: &[Value],
    classify: fn(&Value) -> PoolState,
    rolled_after: Option<Timestamp>,
    progress: i32,
    doing: &str,
) -> Option<Outcome> {
    let mut waiting = vec![];
    let mut degraded = vec![];
    for p in pools {
        match classify(p) {
            PoolState::Settled => {
                if let Some(since) = rolled_after
                    && !rolled_since(p, since)
                {
                    waiting.push(format!(
                        "MachineConfigPool {}: the new cloud config has not reached it yet (machine-config operator rendering)",
                        name(p)
                    ));
                }
            }
            PoolState::Rolling(w) => waiting.push(w),
            PoolState::Degraded(d) => degraded.push(d),
        }
    }
    if waiting.is_empty() && degraded.is_empty() {
        return None;
    }
    let mut message =
        format!("{doing}: waiting for the MachineConfigPools to finish rolling their nodes");
    if !degraded.is_empty() {
        message = format!(
            "{message}; {} (see `oc describe mcp` and the machine-config-daemon logs of that node; the phase fails at its deadline unless the pool recovers)",
            degraded.join("; ")
        );
    }
    let mut waiting_for = degraded;
    waiting_for.extend(waiting);
    Some(Outcome::Running {
        progress,
        message,
        waiting_for,
        recheck: RECHECK,
    })
}

/// The wait every machine phase begins with: a pool (of `pools`) rolling its
/// nodes means reboots in progress, so no machine rollout starts or
/// continues beside it.
pub fn gate(pools: &[Value], progress: i32, phase: &str) -> Option<Outcome> {
    judge(
        pools,
        rollout_state,
        None,
        progress,
        &format!("{phase} holds its machine rollout while a node configuration rollout runs"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, machines: i64, updated: i64, conds: &[(&str, &str, &str)]) -> Value {
        let conditions: Vec<Value> = conds
            .iter()
            .map(|(t, s, m)| {
                json!({"type": t, "status": s, "message": m, "reason": "",
                "lastTransitionTime": "2026-01-01T10:00:00Z"})
            })
            .collect();
        json!({"metadata": {"name": name, "generation": 2},
            "spec": {"configuration": {"name": format!("rendered-{name}-b")}},
            "status": {"observedGeneration": 2, "machineCount": machines, "updatedMachineCount": updated,
                "readyMachineCount": updated, "degradedMachineCount": 0,
                "configuration": {"name": format!("rendered-{name}-b")}, "conditions": conditions}})
    }

    #[test]
    fn settled_needs_every_machine_updated_at_the_current_generation() {
        let done = pool(
            "worker",
            3,
            3,
            &[
                ("Updated", "True", ""),
                ("Updating", "False", ""),
                ("Degraded", "False", ""),
            ],
        );
        assert_eq!(state(&done), PoolState::Settled);
        let rolling = pool(
            "worker",
            3,
            1,
            &[
                ("Updated", "False", ""),
                (
                    "Updating",
                    "True",
                    "All nodes are updating to MachineConfig rendered-worker-b",
                ),
            ],
        );
        assert!(
            matches!(state(&rolling), PoolState::Rolling(s) if s.contains("1/3") && s.contains("rendered-worker-b"))
        );
        let mut lagging = done.clone();
        lagging["metadata"]["generation"] = json!(3);
        assert!(
            matches!(state(&lagging), PoolState::Rolling(_)),
            "status of an older generation"
        );
        let mut new_render = done.clone();
        new_render["spec"]["configuration"]["name"] = json!("rendered-worker-c");
        assert!(
            matches!(state(&new_render), PoolState::Rolling(_)),
            "a new rendered config not yet taken"
        );
        let mut paused = rolling.clone();
        paused["spec"]["paused"] = json!(true);
        assert!(matches!(state(&paused), PoolState::Rolling(s) if s.contains("unpause")));
    }

    #[test]
    fn machine_rollouts_wait_for_configuration_rollouts_not_for_drains() {
        // A node cordoned by the machine API's drain: not Updated, but nothing to roll.
        let draining = pool(
            "worker",
            3,
            3,
            &[("Updated", "False", ""), ("Updating", "True", "")],
        );
        assert!(matches!(state(&draining), PoolState::Rolling(_)));
        assert_eq!(rollout_state(&draining), PoolState::Settled);
        let rolling = pool(
            "worker",
            3,
            2,
            &[("Updated", "False", ""), ("Updating", "True", "")],
        );
        assert!(matches!(rollout_state(&rolling), PoolState::Rolling(_)));
        let mut new_render = pool("worker", 3, 3, &[("Updated", "True", "")]);
        new_render["spec"]["configuration"]["name"] = json!("rendered-worker-c");
        assert!(matches!(rollout_state(&new_render), PoolState::Rolling(_)));
    }

    #[test]
    fn a_degraded_pool_reports_its_own_message() {
        let d = pool(
            "master",
            3,
            2,
            &[
                ("Updated", "False", ""),
                ("Degraded", "True", ""),
                (
                    "NodeDegraded",
                    "True",
                    "Node m-1 is reporting: \"failed to drain node\"",
                ),
            ],
        );
        assert!(
            matches!(state(&d), PoolState::Degraded(s) if s.contains("failed to drain node") && s.contains("master"))
        );
        let out = verdict(&[d], None, 50, "UpdateConfig").expect("waits");
        let Outcome::Running {
            message,
            waiting_for,
            ..
        } = out
        else {
            panic!("running")
        };
        assert!(message.contains("failed to drain node"), "{message}");
        assert_eq!(waiting_for.len(), 1);
    }

    #[test]
    fn a_change_must_have_reached_each_pool_with_machines() {
        let done = pool("worker", 3, 3, &[("Updated", "True", "")]);
        let empty = pool("infra", 0, 0, &[("Updated", "True", "")]);
        let before: Timestamp = "2026-01-01T09:00:00Z".parse().expect("ts");
        let after: Timestamp = "2026-01-01T11:00:00Z".parse().expect("ts");
        assert!(verdict(&[done.clone(), empty.clone()], Some(before), 50, "x").is_none());
        let out = verdict(&[done, empty], Some(after), 50, "x").expect("not yet rolled");
        let Outcome::Running { waiting_for, .. } = out else {
            panic!("running")
        };
        assert_eq!(
            waiting_for.len(),
            1,
            "the empty pool never transitions: {waiting_for:?}"
        );
        assert!(waiting_for[0].contains("worker"));
        assert!(
            verdict(&[], Some(after), 50, "x").is_none(),
            "no pools, nothing to wait for"
        );
    }
}
