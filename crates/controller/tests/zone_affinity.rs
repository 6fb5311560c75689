//! Issue 13 item 8: a target failure domain that is a vm-host zone (`regionAffinity`
//! ComputeCluster, `zoneAffinity` HostGroup, as the Infrastructure API describes one).
//! The migration writes the affinity into the Infrastructure, the new workers carry the
//! zone's VM group in `workspace.vmGroup`, and the machine controller adds each new VM to
//! that group (machine-api-operator `pkg/controller/vsphere/reconciler.go`
//! `modifyVMGroup`). Preflight refuses the zone, changing nothing, when the cluster's
//! FeatureGate lacks `VSphereHostVMGroupZonal` or the target cluster lacks the groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::{Scenario, Site, Tier};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use vcfm_api::MigrationPhase;

const WORKERS: u32 = 2;
const VM_GROUP: &str = "vcfm-zone-a-vms";
const HOST_GROUP: &str = "vcfm-zone-a-hosts";
const RULE: &str = "vcfm-zone-a-rule";

fn deadline() -> Duration {
    match Tier::from_env() {
        Tier::Sim => Duration::from_secs(240),
        Tier::Real => Duration::from_secs(900),
    }
}

/// Makes the zone in the target compute cluster, as an administrator does beforehand:
/// host group of the cluster's hosts, empty VM group, mandatory VM-host rule.
async fn create_zone(env: &Env) -> vcfm_vsphere::MoRef {
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let cluster = vc
        .find_cluster(&env.sim.target().compute_cluster)
        .await
        .unwrap();
    let hosts = vc.cluster_hosts(&cluster).await.unwrap();
    assert!(!hosts.is_empty(), "the target cluster has hosts");
    vc.create_drs_zone(&cluster, VM_GROUP, HOST_GROUP, &hosts, RULE)
        .await
        .unwrap();
    cluster
}

/// The migration spec with the target failure domain made a host-group zone.
fn zonal_spec(env: &Env) -> Value {
    let mut spec = env.spec(FD, WORKERS, false);
    let fd = spec["failureDomains"][0].as_object_mut().unwrap();
    fd.insert("regionAffinity".into(), json!({"type": "ComputeCluster"}));
    fd.insert(
        "zoneAffinity".into(),
        json!({"type": "HostGroup", "hostGroup": {"vmGroup": VM_GROUP, "hostGroup": HOST_GROUP, "vmHostRule": RULE}}),
    );
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_group_zone_migration_puts_the_new_workers_in_its_vm_group() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        host_vm_group_zonal_gate: true,
        ..Scenario::default()
    })
    .await;
    let cluster = create_zone(&env).await;
    env.spawn_controller();
    env.create_migration("zonal", zonal_spec(&env)).await;
    let m = env.wait_terminal("zonal", deadline()).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );

    let state = env.snapshot().await;
    // The usual end state, except that the new workers name the target's own VM group.
    let findings: Vec<String> = migrated_findings(&env, &state, WORKERS as usize)
        .into_iter()
        .filter(|f| !f.contains("names a VM group of the source"))
        .collect();
    assert!(findings.is_empty(), "{findings:#?}\n{}", summary(&m));

    // The Infrastructure failure domain carries the affinity as the spec says.
    let fds = state.infrastructure_spec["platformSpec"]["vsphere"]["failureDomains"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fd = fds.iter().find(|f| f["name"] == FD).expect("target domain");
    assert_eq!(fd["regionAffinity"], json!({"type": "ComputeCluster"}));
    assert_eq!(
        fd["zoneAffinity"],
        json!({"type": "HostGroup", "hostGroup": {"vmGroup": VM_GROUP, "hostGroup": HOST_GROUP, "vmHostRule": RULE}})
    );

    // Every recreated MachineSet asks for the zone's VM group.
    assert!(!state.machinesets.is_empty());
    for (name, ms) in &state.machinesets {
        assert_eq!(
            ms["template"]["spec"]["providerSpec"]["value"]["workspace"]["vmGroup"],
            json!(VM_GROUP),
            "MachineSet {name}: {ms}"
        );
    }

    // And every new worker VM is a member of the group on the target vCenter.
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let drs = vc.drs_groups(&cluster).await.unwrap();
    let members = drs.vm_group(VM_GROUP).expect("the VM group").to_vec();
    let names: BTreeSet<String> = if members.is_empty() {
        BTreeSet::new()
    } else {
        vc.retrieve_properties("VirtualMachine", &members, &["name"])
            .await
            .unwrap()
            .iter()
            .filter_map(|o| o.str("name").map(str::to_string))
            .collect()
    };
    let workers: BTreeSet<String> = state
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-worker-"))
        .cloned()
        .collect();
    assert_eq!(workers.len(), WORKERS as usize, "{:?}", state.target);
    assert!(
        workers.is_subset(&names),
        "worker VMs {workers:?} are not all in VM group {VM_GROUP}: {names:?}"
    );
    // The zone itself is left as the administrator made it.
    let rule = drs.rule(RULE).expect("the rule");
    assert_eq!(
        (rule.vm_group.as_str(), rule.affine_host_group.as_str()),
        (VM_GROUP, HOST_GROUP)
    );
    env.shutdown().await;
}

/// Creates the zonal migration, waits for Preflight to fail, and checks the contract:
/// every string of `must_mention` in the status and in a PhaseFailed Event, and nothing
/// changed in the cluster or on either vCenter.
async fn expect_refused(env: &mut Env, must_mention: &[&str]) {
    let before = env.snapshot().await;
    env.spawn_controller();
    env.create_migration("zonal", zonal_spec(env)).await;
    let m = env
        .wait(
            "zonal",
            "Preflight to fail",
            Duration::from_secs(120),
            |m| phase_of(m) == Some(MigrationPhase::Failed),
        )
        .await;
    let msg = m
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.starts_with("Preflight failed"), "{msg}");
    for s in must_mention {
        assert!(msg.contains(s), "the message must mention {s:?}: {msg}");
    }
    testbed::wait_event_naming(
        &env.client,
        NS,
        Some("zonal"),
        "PhaseFailed",
        must_mention,
        Duration::from_secs(10),
    )
    .await;
    env.stop_controller().await;
    assert_same_state(
        &before,
        &env.snapshot().await,
        "after the refused Preflight",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_a_zone_without_the_feature_gate_and_changes_nothing() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    create_zone(&env).await;
    expect_refused(
        &mut env,
        &[
            FD,
            "VSphereHostVMGroupZonal",
            "Remove regionAffinity and zoneAffinity",
        ],
    )
    .await;
    // Both gates are looked up in the one FeatureGate Preflight read (issue 16).
    if env.sim.real().is_none() {
        let gets: u64 = env
            .sim
            .kube()
            .stats()
            .snapshot()
            .iter()
            .filter(|(k, _)| {
                k.user == CONTROLLER_USER
                    && k.verb == "get"
                    && k.resource == "config.openshift.io/featuregates"
            })
            .map(|(_, n)| n)
            .sum();
        assert_eq!(gets, 1, "FeatureGate reads of the one Preflight run");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_a_zone_whose_groups_are_missing_on_the_target() {
    let mut env = Env::start(Scenario {
        workers: 1,
        host_vm_group_zonal_gate: true,
        ..Scenario::default()
    })
    .await;
    expect_refused(
        &mut env,
        &[
            &format!("VM group {VM_GROUP:?}"),
            &format!("host group {HOST_GROUP:?}"),
            &format!("VM-host rule {RULE:?}"),
        ],
    )
    .await;
    env.shutdown().await;
}
