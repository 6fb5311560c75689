//! The differential test: the same migration on the sim tier (kube-sim, every operator
//! simulated) and on the real tier (real kube-apiserver, machine API and CPMS operator)
//! must end in the same observable state. A difference means the simulator disagrees
//! with the component it stands for (or the product behaves differently against it).
//! Runs with the real tier's binaries (`make real-parts`), whatever `VCFM_TIER` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::{Scenario, Tier};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use vcfm_api::MigrationPhase;

const WORKERS: u32 = 2;

/// What a migration leaves behind, with per-run names (infraID, vCenter addresses,
/// generated suffixes) replaced by stable tokens.
async fn migrate(tier: Tier) -> BTreeMap<&'static str, Value> {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        multi_vcenter_day2_gate: true,
        tier,
        real_operators: tier == Tier::Real,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.create_migration("move", env.spec(FD, WORKERS, false))
        .await;
    let m = env.wait_terminal("move", Duration::from_secs(300)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{tier:?}: {}",
        summary(&m)
    );
    let st = env.snapshot().await;
    let infra = env.sim.infra_id().to_string();
    let src = env.sim.source().server.clone();
    let tgt = env.sim.target().server.clone();
    env.shutdown().await;

    let norm = |v: &Value| -> Value {
        let text = v
            .to_string()
            .replace(&infra, "INFRA")
            .replace(&src, "SOURCE")
            .replace(&tgt, "TARGET");
        serde_json::from_str(&text).unwrap()
    };
    // Generated names end in a random suffix; what a user compares is how many of each
    // role live on each vCenter.
    let role = |name: &str| {
        if name.contains("-master-") {
            "master"
        } else if name.contains("-infra-") {
            "infra"
        } else {
            "worker"
        }
    };
    let mut machines: BTreeMap<String, usize> = BTreeMap::new();
    for (name, server) in &st.machines {
        let site = if *server == tgt { "target" } else { "source" };
        *machines
            .entry(format!("{} on {site}", role(name)))
            .or_default() += 1;
    }
    let vms = |vms: &BTreeMap<String, usize>| {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for (name, n) in vms {
            if name.starts_with(&infra) {
                *out.entry(role(name).to_string()).or_default() += n;
            }
        }
        json!(out)
    };
    let machinesets: BTreeMap<String, Value> = st
        .machinesets
        .iter()
        .map(|(k, v)| (k.replace(&infra, "INFRA"), norm(v)))
        .collect();
    let creds: Vec<String> = st
        .creds
        .keys()
        .map(|k| k.replace(&src, "SOURCE").replace(&tgt, "TARGET"))
        .collect();
    BTreeMap::from([
        ("Infrastructure spec", norm(&st.infrastructure_spec)),
        (
            "Infrastructure CRD vcenters rule",
            st.crd_vcenter_rules.clone(),
        ),
        ("vsphere-creds keys", json!(creds)),
        ("cloud-provider-config", norm(&json!(st.cloud_config))),
        ("ControlPlaneMachineSet spec", norm(&st.cpms_spec)),
        ("MachineSets", json!(machinesets)),
        ("Machines by role and vCenter", json!(machines)),
        ("Nodes", json!(st.nodes.len())),
        ("CVO replicas", json!(st.cvo_replicas)),
        ("source VMs by role", vms(&st.source.vms)),
        ("target VMs by role", vms(&st.target.vms)),
        ("target folders", norm(&json!(st.target.folders))),
        ("target categories", norm(&json!(st.target.categories))),
        ("target tags", norm(&json!(st.target.tags))),
        ("source tags", norm(&json!(st.source.tags))),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_ends_the_same_on_the_sim_and_the_real_tier() {
    let sim = migrate(Tier::Sim).await;
    let real = migrate(Tier::Real).await;
    let differences: Vec<String> = sim
        .iter()
        .filter(|(k, v)| real.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}:\n  sim:  {v}\n  real: {}",
                real.get(k).cloned().unwrap_or(Value::Null)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "the tiers disagree:\n{}",
        differences.join("\n")
    );
}
